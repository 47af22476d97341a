//! System power management (0x12). Only SYSTEM_POWER_STATE_NOTIFY is read from Linux; the
//! SET/GET message ids come from non-Linux implementations and their payloads are
//! **(unverified)**: SET takes (flags, system_state), GET returns system_state.

use fwipc_transport_api::{Clock, Transport};

use super::agent::Scmi;
use super::common::{parse_word, Version};
use super::error;
use super::ids::{proto, system};

/// Typed view of the system power protocol. Obtain with [`Scmi::system`].
pub struct System<'a, T: Transport, C: Clock> {
    scmi: &'a Scmi<T, C>,
}

impl<T: Transport, C: Clock> Scmi<T, C> {
    /// The system power protocol.
    pub fn system(&self) -> System<'_, T, C> {
        System { scmi: self }
    }
}

impl<T: Transport, C: Clock> System<'_, T, C> {
    /// PROTOCOL_VERSION.
    pub fn version(&self) -> error::Result<Version> {
        self.scmi.protocol_version(proto::SYSTEM)
    }

    /// SYSTEM_POWER_STATE_NOTIFY: SYSTEM_POWER_STATE_NOTIFIER notifications on or off.
    pub fn state_notify(&self, enable: bool) -> error::Result<()> {
        self.scmi
            .cmd_status(proto::SYSTEM, system::STATE_NOTIFY, &[u32::from(enable)])
    }

    /// SYSTEM_POWER_STATE_SET **(payload unverified)**.
    pub fn state_set(&self, flags: u32, system_state: u32) -> error::Result<()> {
        self.scmi
            .cmd_status(proto::SYSTEM, system::STATE_SET, &[flags, system_state])
    }

    /// SYSTEM_POWER_STATE_GET **(payload unverified)**.
    pub fn state_get(&self) -> error::Result<u32> {
        self.scmi
            .cmd(proto::SYSTEM, system::STATE_GET, &[], parse_word)
    }
}
