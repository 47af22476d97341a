//! SCMI status codes (the signed 32-bit word after the header of every response and delayed
//! response) and their total mapping to typed errors (docs/protocols/scmi.md §3.3 and §8 item 13).
//!
//! Every `i32` maps to exactly one [`ScmiStatus`](crate::status::ScmiStatus), and the raw code is always recoverable with
//! [`ScmiStatus::raw`](crate::status::ScmiStatus::raw), so nothing the platform says is lost.
//!
//! ```
//! use fwipc_scmi_virtio::status::ScmiStatus;
//! use fwipc_transport_api::Error;
//! assert_eq!(ScmiStatus::check(0), Ok(()));
//! let e = ScmiStatus::check(-11).unwrap_err();
//! assert_eq!(e, ScmiStatus::InUse);
//! assert_eq!(Error::from(e), Error::Remote(-11));
//! assert_eq!(ScmiStatus::from_raw(-200), ScmiStatus::Vendor(-200));
//! assert_eq!(ScmiStatus::from_raw(-200).raw(), -200);
//! ```

use core::fmt;

/// Raw status values.
pub mod code {
    #![allow(missing_docs)]
    pub const SUCCESS: i32 = 0;
    pub const NOT_SUPPORTED: i32 = -1;
    pub const INVALID_PARAMETERS: i32 = -2;
    pub const DENIED: i32 = -3;
    pub const NOT_FOUND: i32 = -4;
    pub const OUT_OF_RANGE: i32 = -5;
    pub const BUSY: i32 = -6;
    pub const COMMS_ERROR: i32 = -7;
    pub const GENERIC_ERROR: i32 = -8;
    pub const HARDWARE_ERROR: i32 = -9;
    pub const PROTOCOL_ERROR: i32 = -10;
    pub const IN_USE: i32 = -11;
    /// SCMI v4.0 **(unverified)**.
    pub const PARTIAL: i32 = -12;
    /// Last value of the reserved range (−13 ..= −127 reserved; below −127 vendor-specific).
    pub const RESERVED_LAST: i32 = -127;
}

/// Linux errno values of the SCMI errno table (positive).
pub mod errno {
    #![allow(missing_docs)]
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const EINVAL: i32 = 22;
    pub const ERANGE: i32 = 34;
    pub const ECOMM: i32 = 70;
    pub const EPROTO: i32 = 71;
    pub const EOPNOTSUPP: i32 = 95;
    pub const EREMOTEIO: i32 = 121;
}

/// A status word as the platform sent it, classified. Total over `i32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScmiStatus {
    /// 0.
    Success,
    /// −1.
    NotSupported,
    /// −2.
    InvalidParameters,
    /// −3.
    Denied,
    /// −4.
    NotFound,
    /// −5.
    OutOfRange,
    /// −6.
    Busy,
    /// −7.
    CommsError,
    /// −8.
    GenericError,
    /// −9.
    HardwareError,
    /// −10.
    ProtocolError,
    /// −11 (Xen, Zephyr, firmware headers; absent from mainline Linux's table).
    InUse,
    /// −12, SCMI v4.0 **(unverified)**.
    Partial,
    /// −13 ..= −127: reserved by the specification.
    Reserved(i32),
    /// Below −127: vendor-specific.
    Vendor(i32),
    /// Positive values: not defined by the specification.
    Undefined(i32),
}

impl ScmiStatus {
    /// Classify a raw status word.
    pub const fn from_raw(raw: i32) -> ScmiStatus {
        match raw {
            code::SUCCESS => ScmiStatus::Success,
            code::NOT_SUPPORTED => ScmiStatus::NotSupported,
            code::INVALID_PARAMETERS => ScmiStatus::InvalidParameters,
            code::DENIED => ScmiStatus::Denied,
            code::NOT_FOUND => ScmiStatus::NotFound,
            code::OUT_OF_RANGE => ScmiStatus::OutOfRange,
            code::BUSY => ScmiStatus::Busy,
            code::COMMS_ERROR => ScmiStatus::CommsError,
            code::GENERIC_ERROR => ScmiStatus::GenericError,
            code::HARDWARE_ERROR => ScmiStatus::HardwareError,
            code::PROTOCOL_ERROR => ScmiStatus::ProtocolError,
            code::IN_USE => ScmiStatus::InUse,
            code::PARTIAL => ScmiStatus::Partial,
            r if r >= code::RESERVED_LAST && r < 0 => ScmiStatus::Reserved(r),
            r if r < code::RESERVED_LAST => ScmiStatus::Vendor(r),
            r => ScmiStatus::Undefined(r),
        }
    }

    /// Classify the raw little-endian status word.
    pub const fn from_word(w: u32) -> ScmiStatus {
        ScmiStatus::from_raw(w as i32)
    }

    /// The raw code, exactly as received.
    pub const fn raw(self) -> i32 {
        match self {
            ScmiStatus::Success => code::SUCCESS,
            ScmiStatus::NotSupported => code::NOT_SUPPORTED,
            ScmiStatus::InvalidParameters => code::INVALID_PARAMETERS,
            ScmiStatus::Denied => code::DENIED,
            ScmiStatus::NotFound => code::NOT_FOUND,
            ScmiStatus::OutOfRange => code::OUT_OF_RANGE,
            ScmiStatus::Busy => code::BUSY,
            ScmiStatus::CommsError => code::COMMS_ERROR,
            ScmiStatus::GenericError => code::GENERIC_ERROR,
            ScmiStatus::HardwareError => code::HARDWARE_ERROR,
            ScmiStatus::ProtocolError => code::PROTOCOL_ERROR,
            ScmiStatus::InUse => code::IN_USE,
            ScmiStatus::Partial => code::PARTIAL,
            ScmiStatus::Reserved(r) | ScmiStatus::Vendor(r) | ScmiStatus::Undefined(r) => r,
        }
    }

    /// `Ok(())` for SUCCESS, the classified status otherwise.
    pub const fn check(raw: i32) -> Result<(), ScmiStatus> {
        match ScmiStatus::from_raw(raw) {
            ScmiStatus::Success => Ok(()),
            s => Err(s),
        }
    }

    /// Whether this is SUCCESS.
    pub const fn is_success(self) -> bool {
        matches!(self, ScmiStatus::Success)
    }

    /// The positive Linux errno (0 for SUCCESS), per the table in docs/protocols/scmi.md §3.3.
    /// IN_USE maps to EIO as in mainline Linux (a posted v4.0 patch uses EPERM, merge
    /// **unverified**); PARTIAL to EINVAL as in that patch **(unverified)**; everything outside the
    /// table to EIO.
    pub const fn errno(self) -> i32 {
        match self {
            ScmiStatus::Success => 0,
            ScmiStatus::NotSupported => errno::EOPNOTSUPP,
            ScmiStatus::InvalidParameters => errno::EINVAL,
            ScmiStatus::Denied => errno::EACCES,
            ScmiStatus::NotFound => errno::ENOENT,
            ScmiStatus::OutOfRange => errno::ERANGE,
            ScmiStatus::Busy => errno::EBUSY,
            ScmiStatus::CommsError => errno::ECOMM,
            ScmiStatus::GenericError => errno::EIO,
            ScmiStatus::HardwareError => errno::EREMOTEIO,
            ScmiStatus::ProtocolError => errno::EPROTO,
            ScmiStatus::InUse => errno::EIO,
            ScmiStatus::Partial => errno::EINVAL,
            ScmiStatus::Reserved(_) | ScmiStatus::Vendor(_) | ScmiStatus::Undefined(_) => {
                errno::EIO
            }
        }
    }

    /// The specification's name, or a class name for codes outside the table.
    pub const fn name(self) -> &'static str {
        match self {
            ScmiStatus::Success => "SUCCESS",
            ScmiStatus::NotSupported => "NOT_SUPPORTED",
            ScmiStatus::InvalidParameters => "INVALID_PARAMETERS",
            ScmiStatus::Denied => "DENIED",
            ScmiStatus::NotFound => "NOT_FOUND",
            ScmiStatus::OutOfRange => "OUT_OF_RANGE",
            ScmiStatus::Busy => "BUSY",
            ScmiStatus::CommsError => "COMMS_ERROR",
            ScmiStatus::GenericError => "GENERIC_ERROR",
            ScmiStatus::HardwareError => "HARDWARE_ERROR",
            ScmiStatus::ProtocolError => "PROTOCOL_ERROR",
            ScmiStatus::InUse => "IN_USE",
            ScmiStatus::Partial => "PARTIAL",
            ScmiStatus::Reserved(_) => "reserved status",
            ScmiStatus::Vendor(_) => "vendor-specific status",
            ScmiStatus::Undefined(_) => "undefined positive status",
        }
    }
}

impl fmt::Display for ScmiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SCMI {} ({})", self.name(), self.raw())
    }
}

impl From<i32> for ScmiStatus {
    fn from(raw: i32) -> Self {
        ScmiStatus::from_raw(raw)
    }
}

impl From<ScmiStatus> for i32 {
    fn from(s: ScmiStatus) -> Self {
        s.raw()
    }
}

/// A non-success status becomes `Error::Remote(raw)`. (SUCCESS is never an error; converting it
/// yields `Remote(0)`, which callers should not produce.)
impl From<ScmiStatus> for fwipc_transport_api::Error {
    fn from(s: ScmiStatus) -> Self {
        fwipc_transport_api::Error::Remote(s.raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let t: [(i32, ScmiStatus, i32); 13] = [
            (0, ScmiStatus::Success, 0),
            (-1, ScmiStatus::NotSupported, 95),
            (-2, ScmiStatus::InvalidParameters, 22),
            (-3, ScmiStatus::Denied, 13),
            (-4, ScmiStatus::NotFound, 2),
            (-5, ScmiStatus::OutOfRange, 34),
            (-6, ScmiStatus::Busy, 16),
            (-7, ScmiStatus::CommsError, 70),
            (-8, ScmiStatus::GenericError, 5),
            (-9, ScmiStatus::HardwareError, 121),
            (-10, ScmiStatus::ProtocolError, 71),
            (-11, ScmiStatus::InUse, 5),
            (-12, ScmiStatus::Partial, 22),
        ];
        for (raw, s, e) in t {
            assert_eq!(ScmiStatus::from_raw(raw), s);
            assert_eq!(s.raw(), raw);
            assert_eq!(s.errno(), e, "{s}");
        }
        assert_eq!(ScmiStatus::from_raw(-13), ScmiStatus::Reserved(-13));
        assert_eq!(ScmiStatus::from_raw(-127), ScmiStatus::Reserved(-127));
        assert_eq!(ScmiStatus::from_raw(-128), ScmiStatus::Vendor(-128));
        assert_eq!(ScmiStatus::from_raw(i32::MIN), ScmiStatus::Vendor(i32::MIN));
        assert_eq!(ScmiStatus::from_raw(1), ScmiStatus::Undefined(1));
        assert_eq!(ScmiStatus::from_word(0xFFFF_FFF5), ScmiStatus::InUse);
        assert_eq!(
            fwipc_transport_api::Error::from(ScmiStatus::InUse),
            fwipc_transport_api::Error::Remote(-11)
        );
    }

    proptest! {
        #[test]
        fn total_and_lossless(raw in any::<i32>()) {
            let s = ScmiStatus::from_raw(raw);
            prop_assert_eq!(s.raw(), raw);
            prop_assert_eq!(ScmiStatus::check(raw).is_ok(), raw == 0);
            prop_assert_eq!(fwipc_transport_api::Error::from(s), fwipc_transport_api::Error::Remote(raw));
            prop_assert!(s.errno() >= 0);
            prop_assert_eq!(s.errno() == 0, raw == 0);
        }
    }
}
