//! Protocol and message identifiers (docs/protocols/scmi.md §4), shared by the agent and the
//! simulated platform.
#![allow(missing_docs)]

/// Protocol ids.
pub mod proto {
    pub const BASE: u8 = 0x10;
    pub const POWER: u8 = 0x11;
    pub const SYSTEM: u8 = 0x12;
    pub const PERF: u8 = 0x13;
    pub const CLOCK: u8 = 0x14;
    pub const SENSOR: u8 = 0x15;
    pub const RESET: u8 = 0x16;
    pub const VOLTAGE: u8 = 0x17;
    pub const POWERCAP: u8 = 0x18;
    pub const PINCTRL: u8 = 0x19;
    /// The fwipc test protocol (vendor range 0x80..=0xFF) the simulated platform implements for
    /// the conformance suite.
    pub const FWIPC_TEST: u8 = 0x81;
}

/// Messages every protocol implements.
pub mod common {
    pub const PROTOCOL_VERSION: u8 = 0x0;
    pub const PROTOCOL_ATTRIBUTES: u8 = 0x1;
    pub const PROTOCOL_MESSAGE_ATTRIBUTES: u8 = 0x2;
}

/// Base protocol (0x10).
pub mod base {
    pub const DISCOVER_VENDOR: u8 = 0x3;
    pub const DISCOVER_SUB_VENDOR: u8 = 0x4;
    pub const DISCOVER_IMPLEMENTATION_VERSION: u8 = 0x5;
    pub const DISCOVER_LIST_PROTOCOLS: u8 = 0x6;
    pub const DISCOVER_AGENT: u8 = 0x7;
    pub const NOTIFY_ERRORS: u8 = 0x8;
    /// Notification: BASE_ERROR_EVENT.
    pub const N_ERROR_EVENT: u8 = 0x0;
}

/// Power domain management (0x11).
pub mod power {
    pub const DOMAIN_ATTRIBUTES: u8 = 0x3;
    pub const STATE_SET: u8 = 0x4;
    pub const STATE_GET: u8 = 0x5;
    pub const STATE_NOTIFY: u8 = 0x6;
    pub const NAME_GET: u8 = 0x8;
    /// Notification: POWER_STATE_CHANGED.
    pub const N_STATE_CHANGED: u8 = 0x0;
    /// Generic ON state.
    pub const STATE_ON: u32 = 0;
    /// Generic OFF state (bit 30: type off).
    pub const STATE_OFF: u32 = 0x4000_0000;
}

/// System power management (0x12). SET/GET ids come from non-Linux implementations and their
/// payloads are **(unverified)**.
pub mod system {
    pub const STATE_SET: u8 = 0x3;
    pub const STATE_GET: u8 = 0x4;
    pub const STATE_NOTIFY: u8 = 0x5;
    /// Notification: SYSTEM_POWER_STATE_NOTIFIER.
    pub const N_STATE_NOTIFIER: u8 = 0x0;
}

/// Performance domain management (0x13).
pub mod perf {
    pub const DOMAIN_ATTRIBUTES: u8 = 0x3;
    pub const DESCRIBE_LEVELS: u8 = 0x4;
    pub const LIMITS_SET: u8 = 0x5;
    pub const LIMITS_GET: u8 = 0x6;
    pub const LEVEL_SET: u8 = 0x7;
    pub const LEVEL_GET: u8 = 0x8;
    pub const NOTIFY_LIMITS: u8 = 0x9;
    pub const NOTIFY_LEVEL: u8 = 0xA;
    pub const NAME_GET: u8 = 0xC;
    /// Notification: PERFORMANCE_LIMITS_CHANGED.
    pub const N_LIMITS_CHANGED: u8 = 0x0;
    /// Notification: PERFORMANCE_LEVEL_CHANGED.
    pub const N_LEVEL_CHANGED: u8 = 0x1;
}

/// Clock management (0x14).
pub mod clock {
    pub const ATTRIBUTES: u8 = 0x3;
    pub const DESCRIBE_RATES: u8 = 0x4;
    pub const RATE_SET: u8 = 0x5;
    pub const RATE_GET: u8 = 0x6;
    pub const CONFIG_SET: u8 = 0x7;
    pub const NAME_GET: u8 = 0x8;
    pub const RATE_NOTIFY: u8 = 0x9;
    /// Notification: CLOCK_RATE_CHANGED.
    pub const N_RATE_CHANGED: u8 = 0x0;
}

/// Sensor management (0x15).
pub mod sensor {
    pub const DESCRIPTION_GET: u8 = 0x3;
    pub const TRIP_POINT_NOTIFY: u8 = 0x4;
    pub const TRIP_POINT_CONFIG: u8 = 0x5;
    pub const READING_GET: u8 = 0x6;
    pub const AXIS_DESCRIPTION_GET: u8 = 0x7;
    pub const LIST_UPDATE_INTERVALS: u8 = 0x8;
    pub const CONFIG_GET: u8 = 0x9;
    pub const CONFIG_SET: u8 = 0xA;
    pub const CONTINUOUS_UPDATE_NOTIFY: u8 = 0xB;
    /// Notification: SENSOR_TRIP_POINT_EVENT.
    pub const N_TRIP_POINT_EVENT: u8 = 0x0;
    /// Notification: SENSOR_UPDATE.
    pub const N_UPDATE: u8 = 0x1;
}

/// Reset domain management (0x16).
pub mod reset {
    pub const DOMAIN_ATTRIBUTES: u8 = 0x3;
    pub const RESET: u8 = 0x4;
    pub const NOTIFY: u8 = 0x5;
    pub const NAME_GET: u8 = 0x6;
    /// Notification: RESET_ISSUED.
    pub const N_ISSUED: u8 = 0x0;
    /// RESET flags: autonomous reset.
    pub const FLAG_AUTONOMOUS: u32 = 1 << 0;
    /// RESET flags: explicit assert (clear = de-assert).
    pub const FLAG_ASSERT: u32 = 1 << 1;
    /// RESET flags: asynchronous (delayed response).
    pub const FLAG_ASYNC: u32 = 1 << 2;
}

/// Voltage domain management (0x17).
pub mod voltage {
    pub const DOMAIN_ATTRIBUTES: u8 = 0x3;
    pub const DESCRIBE_LEVELS: u8 = 0x4;
    pub const CONFIG_SET: u8 = 0x5;
    pub const CONFIG_GET: u8 = 0x6;
    pub const LEVEL_SET: u8 = 0x7;
    pub const LEVEL_GET: u8 = 0x8;
    pub const NAME_GET: u8 = 0x9;
    /// Architectural config: off.
    pub const CONFIG_OFF: u32 = 0x0;
    /// Architectural config: on.
    pub const CONFIG_ON: u32 = 0x7;
}

/// The fwipc test protocol.
pub mod test {
    /// ECHO: returns the parameters with every byte inverted.
    pub const ECHO: u8 = 0x03;
    /// The notification message id the simulated platform sends for `RemoteControl::notify`.
    pub const N_NOTIFY: u8 = 0x00;
}
