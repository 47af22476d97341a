//! Messages every protocol implements: PROTOCOL_VERSION, PROTOCOL_ATTRIBUTES (raw word) and
//! PROTOCOL_MESSAGE_ATTRIBUTES.

use core::fmt;

use fwipc_transport_api::{Clock, Transport};

use super::agent::Scmi;
use super::error::{self, Malformed};
use super::ids::common;
use super::wire::Reader;

/// A protocol version: major in bits 31:16, minor in 15:0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
}

impl Version {
    /// From the wire word.
    pub const fn from_word(w: u32) -> Self {
        Version {
            major: (w >> 16) as u16,
            minor: w as u16,
        }
    }

    /// The wire word.
    pub const fn word(&self) -> u32 {
        ((self.major as u32) << 16) | self.minor as u32
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Parse a PROTOCOL_VERSION reply.
pub fn parse_version(r: &mut Reader<'_>) -> Result<Version, Malformed> {
    r.u32().map(Version::from_word)
}

/// Parse a `*_NAME_GET` reply: flags, then a 64-byte NUL-terminated name.
pub fn parse_long_name(r: &mut Reader<'_>) -> Result<super::wire::LongName, Malformed> {
    let _flags = r.u32()?;
    super::wire::LongName::read(r)
}

/// Parse a one-word reply.
pub fn parse_word(r: &mut Reader<'_>) -> Result<u32, Malformed> {
    r.u32()
}

impl<T: Transport, C: Clock> Scmi<T, C> {
    /// PROTOCOL_VERSION of any protocol.
    pub fn protocol_version(&self, protocol: u8) -> error::Result<Version> {
        self.cmd(protocol, common::PROTOCOL_VERSION, &[], parse_version)
    }

    /// PROTOCOL_ATTRIBUTES of any protocol, first word only (the typed views decode it fully).
    pub fn protocol_attributes_word(&self, protocol: u8) -> error::Result<u32> {
        self.cmd(protocol, common::PROTOCOL_ATTRIBUTES, &[], parse_word)
    }

    /// PROTOCOL_MESSAGE_ATTRIBUTES: the attributes of `message` (bit 0: FastChannel capable).
    /// `Status(NotFound)` when the platform does not implement it.
    pub fn message_attributes(&self, protocol: u8, message: u8) -> error::Result<u32> {
        self.cmd(
            protocol,
            common::PROTOCOL_MESSAGE_ATTRIBUTES,
            &[u32::from(message)],
            parse_word,
        )
    }

    /// A `*_NAME_GET` command (`message`) for object `id`: the extended (64-byte) name.
    pub fn extended_name(
        &self,
        protocol: u8,
        message: u8,
        id: u32,
    ) -> error::Result<super::wire::LongName> {
        self.cmd(protocol, message, &[id], parse_long_name)
    }

    /// Whether the platform implements `message` of `protocol` (PROTOCOL_MESSAGE_ATTRIBUTES
    /// answered SUCCESS; NOT_FOUND or NOT_SUPPORTED mean no).
    pub fn implements(&self, protocol: u8, message: u8) -> error::Result<bool> {
        use crate::status::ScmiStatus;
        match self.message_attributes(protocol, message) {
            Ok(_) => Ok(true),
            Err(super::ScmiError::Status(ScmiStatus::NotFound | ScmiStatus::NotSupported)) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}
