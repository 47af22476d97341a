//! The SCMI protocol layer over any [`fwipc_transport_api::Transport`]: the [`Scmi`](crate::protocol::Scmi) agent
//! (bounded waits, delayed responses matched on token + protocol + message id, notification
//! dispatch to a fixed subscriber table) and typed views of each protocol: [`Scmi::base`](crate::protocol::Scmi::base),
//! [`Scmi::sensor`](crate::protocol::Scmi::sensor), [`Scmi::clock`](crate::protocol::Scmi::clock), [`Scmi::perf`](crate::protocol::Scmi::perf), [`Scmi::power`](crate::protocol::Scmi::power), [`Scmi::reset`](crate::protocol::Scmi::reset),
//! [`Scmi::voltage`](crate::protocol::Scmi::voltage), [`Scmi::system`](crate::protocol::Scmi::system).
//!
//! # Transport contract
//!
//! `Request::target` = `(protocol_id << 8) | message_id`, payload = the parameters (LE words);
//! the transport adds header and token and accepts only a reply echoing the header;
//! `fetch_response` returns the return values after the status word, or `Err(Remote(status))`;
//! `Ticket::token()` is the 10-bit wire token; P2A messages come from `fetch_notification` as
//! `Notification { source: raw header, len }` with the bytes after the header. The virtio
//! transport ([`crate::virtio::ScmiVirtio`]) and `crate::platform::direct::DirectTransport`
//! both implement it.
//!
//! # What this layer does (docs/protocols/scmi.md §8)
//!
//! * Deadlines: every synchronous reply waits at most [`Config::command_timeout`](crate::protocol::Config::command_timeout) (default 60 s,
//!   Linux's virtio value), every delayed response [`Config::delayed_timeout`](crate::protocol::Config::delayed_timeout), which
//!   [`Scmi::new`](crate::protocol::Scmi::new) refuses to be shorter (item 2). [`Scmi::command_raw_timeout`](crate::protocol::Scmi::command_raw_timeout) overrides per
//!   call.
//! * Every length the platform sends is checked by a bounds-checked [`wire::Reader`](crate::protocol::wire::Reader); fixed parts
//!   are zerocopy layouts with asserted sizes; names must be NUL-terminated within 16/64 bytes;
//!   entry ids must be below the advertised count; fixed-size notifications must be exact
//!   (item 3). Parse failures are a typed [`Malformed`](crate::protocol::Malformed) and counted in [`AgentStats`](crate::protocol::AgentStats). Entry
//!   points for fuzzers: `fuzzing` (doc-hidden).
//! * Delayed responses are matched on token + protocol + message id + type (item 4); the command's
//!   transfer (and so its token) stays open until the delayed response arrives or times out, so
//!   no other command can take the token meanwhile (item 5); a delayed response that arrives
//!   before the synchronous reply is kept, a late or mismatched one is counted and dropped
//!   (item 8).
//! * Multi-part enumerations go through [`multipart::Pager`](crate::protocol::multipart::Pager): stop on returned = 0, reject
//!   index + returned > total and "remaining" claims past the total, cap the rounds (item 7).
//! * Every status maps to a typed [`crate::status::ScmiStatus`] keeping the raw code (item 13).
//! * Notification tokens are ignored; notifications are dispatched by protocol + message id.
//! * No global state: two agents over two transports are independent (item 1).
//!
//! # Threads and callbacks
//!
//! `Scmi` is `Sync` when its transport is. P2A messages are taken by [`Scmi::pump`](crate::protocol::Scmi::pump) (called by
//! the asynchronous commands while they wait, and by the embedder, e.g. after an eventq
//! interrupt); subscribers run inside `pump` with the P2A lock held, so a callback must be short
//! and must not pump, subscribe, or issue asynchronous commands (spin locks: that would
//! deadlock).
//!
//! ```
//! use fwipc_scmi_virtio::platform::{Platform, PlatformConfig, direct::DirectTransport};
//! use fwipc_scmi_virtio::protocol::{Config, Scmi};
//! use fwipc_transport_api::StdClock;
//! use core::time::Duration;
//!
//! let platform = Platform::new(PlatformConfig::vhost_device_scmi_like(1));
//! let cfg = Config::default().with_timeouts(Duration::from_secs(1), Duration::from_secs(2));
//! let scmi = Scmi::new(DirectTransport::new(platform), StdClock::new(), cfg).unwrap();
//! assert_eq!(scmi.base().version().unwrap().major, 2);
//! assert_eq!(scmi.base().vendor().unwrap(), "rust-vmm");
//! // DISCOVER_AGENT is not implemented by vhost-device-scmi: a typed status, raw code kept.
//! let e = scmi.base().discover_agent(0).unwrap_err();
//! assert_eq!(e.status().unwrap().raw(), -1);
//! ```

mod agent;
pub mod base;
pub mod clock;
mod common;
pub(crate) mod describe;
mod error;
pub mod futures;
pub mod ids;
pub mod multipart;
pub mod notify;
mod p2a;
pub mod perf;
pub mod power;
pub mod reset;
pub mod sensor;
pub mod system;
pub mod voltage;
pub mod wire;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use agent::{AgentStats, Config, Scmi, MAX_P2A, MAX_REPLY, PUMP_BUDGET};
pub use base::Discovery;
pub use common::Version;
pub use error::{Malformed, Result, ScmiError};
pub use futures::ScmiFutures;
pub use p2a::{Callback, Event, Filter, SubscriptionId};
pub use wire::{LongName, Name, ShortName};
