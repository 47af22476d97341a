//! The SCMI protocol layer over any [`fwipc_transport_api::Transport`]: the [`Scmi`] agent
//! (bounded waits, delayed responses matched on token + protocol + message id, notification
//! dispatch to a fixed subscriber table) and typed views of each protocol.
//!
//! ```
//! use backend_scmi_virtio::platform::{Platform, PlatformConfig, direct::DirectTransport};
//! use backend_scmi_virtio::protocol::{Config, Scmi};
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
mod error;
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

#[doc(hidden)]
pub mod fuzzing;

pub use agent::{AgentStats, Config, Scmi, WaitPolicy, MAX_P2A, MAX_REPLY};
pub use base::Discovery;
pub use common::Version;
pub use error::{Malformed, ScmiError, ScmiResult};
pub use p2a::{Callback, Event, Filter, SubscriptionId};
pub use wire::{LongName, Name, ShortName};
