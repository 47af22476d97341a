//! # fwipc conformance suite
//!
//! One set of behavioural scenarios, generic over [`Fixture`], that every backend runs: ordering,
//! concurrency, timeouts and late replies, pool exhaustion, teardown with transfers in flight, bulk
//! integrity at odd offsets, hostile remote input, dropped replies, remote reset, notifications,
//! and for datagram transports one-way ordering, RX hold/release under exhaustion, zero-copy
//! buffer ownership and the name service (docs/datagram.md).
//!
//! A backend instantiates the whole suite in its `tests/conformance.rs`:
//!
//! ```ignore
//! fwipc_conformance::conformance_tests!(my_backend::sim::MyFixture);
//! ```
//!
//! which expands to one `#[test]` per scenario, each named `conformance::<scenario>`, so
//! `cargo test --workspace conformance` runs the suite for every backend. The binary
//! (`cargo run --release -p fwipc-runner`) runs the whole backend × scenario matrix.
//!
//! [`session::hostile_session`] is the body of the stateful fuzz targets: a hostile remote driven
//! by a byte script. [`soak`] runs one backend under several callers for a while with the remote misbehaving at
//! random (the runner's `--soak SECONDS`).
//!
//! [`loopback`] is the reference backend: the smallest transport that passes the suite, and the
//! example to copy when porting a new protocol.

#![deny(missing_docs)]
pub mod alloc_count;
pub mod loopback;
pub mod scenarios;
pub mod session;
pub mod soak;
mod util;

pub use fwipc_transport_api::fixture::{Fault, Fixture, RemoteControl};
pub use scenarios::{suite, Scenario, Verdict};

/// Instantiate every conformance scenario as a `#[test]` for a fixture type.
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:ty) => {
        mod conformance {
            $crate::__conformance_scenarios!(
                $fixture;
                roundtrip,
                fifo_ordering,
                concurrent_senders,
                timeout_late_reply,
                dropped_transfer,
                pool_exhaustion,
                teardown_in_flight,
                bulk_integrity,
                hostile_input,
                dropped_reply,
                reset_mid_flight,
                notifications,
                sim_modes,
                one_way_ordering,
                rx_hold_exhaustion,
                zero_copy_ownership,
                name_service
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_scenarios {
    ($fixture:ty; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let v = $crate::scenarios::$name::<$fixture>();
                ::std::println!("{}: {}", ::core::stringify!($name), v);
            }
        )*
    };
}
