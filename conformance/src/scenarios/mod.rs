//! The scenarios. Each is a plain generic function that panics (with a message naming the backend)
//! when the behaviour is broken, and returns a [`Verdict`] otherwise.

mod bulk;
mod datagram;
mod faults;
mod messaging;
mod spinning;
mod teardown;

pub use bulk::bulk_integrity;
pub use datagram::{name_service, one_way_ordering, rx_hold_exhaustion, zero_copy_ownership};
pub use faults::{
    dropped_reply, dropped_transfer, hostile_input, pool_exhaustion, reset_mid_flight,
    timeout_late_reply,
};
pub use messaging::{concurrent_senders, fifo_ordering, notifications, roundtrip, sim_modes};
pub use spinning::spinning_holds_interrupts;
pub use teardown::teardown_in_flight;

use fwipc_transport_api::fixture::Fixture;

/// Outcome of a scenario that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every assertion held.
    Pass,
    /// The backend lacks the capability the scenario tests (e.g. bulk on SCMI); says which.
    NotApplicable(&'static str),
}

impl core::fmt::Display for Verdict {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Verdict::Pass => f.write_str("pass"),
            Verdict::NotApplicable(why) => write!(f, "n/a ({why})"),
        }
    }
}

/// One named scenario, instantiated for a fixture.
pub type Scenario = (&'static str, fn() -> Verdict);

/// Every scenario for fixture `F`, in the order the runner prints them.
pub fn suite<F: Fixture + 'static>() -> Vec<Scenario> {
    vec![
        ("roundtrip", roundtrip::<F> as fn() -> Verdict),
        ("fifo_ordering", fifo_ordering::<F>),
        ("concurrent_senders", concurrent_senders::<F>),
        ("timeout_late_reply", timeout_late_reply::<F>),
        ("dropped_transfer", dropped_transfer::<F>),
        ("pool_exhaustion", pool_exhaustion::<F>),
        ("teardown_in_flight", teardown_in_flight::<F>),
        ("bulk_integrity", bulk_integrity::<F>),
        ("hostile_input", hostile_input::<F>),
        ("dropped_reply", dropped_reply::<F>),
        ("reset_mid_flight", reset_mid_flight::<F>),
        ("notifications", notifications::<F>),
        ("sim_modes", sim_modes::<F>),
        ("one_way_ordering", one_way_ordering::<F>),
        ("rx_hold_exhaustion", rx_hold_exhaustion::<F>),
        ("zero_copy_ownership", zero_copy_ownership::<F>),
        ("name_service", name_service::<F>),
    ]
}
