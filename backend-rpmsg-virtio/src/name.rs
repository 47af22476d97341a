//! A service name as the name service carries it: 1 to 31 bytes, no NUL, stored in the 32-byte
//! NUL-padded form of `rpmsg_ns_msg.name`.

use crate::addr::NAME_SIZE;
use crate::error::WireError;

/// A validated service name (copied out of remote memory; never a view of it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name {
    bytes: [u8; NAME_SIZE],
    len: u8,
}

impl Name {
    /// `s` as a name: `BadName` if empty, longer than 31 bytes, or containing a NUL.
    pub fn new(s: &[u8]) -> Result<Self, WireError> {
        if s.is_empty() || s.len() >= NAME_SIZE || s.contains(&0) {
            return Err(WireError::BadName);
        }
        let mut bytes = [0u8; NAME_SIZE];
        bytes[..s.len()].copy_from_slice(s);
        Ok(Name {
            bytes,
            len: s.len() as u8,
        })
    }

    /// Parse the 32-byte wire field: the name ends at the first NUL, which must exist (Linux
    /// truncates an unterminated name to 31 bytes; we refuse it) and must not be the first byte.
    pub fn from_wire(field: &[u8; NAME_SIZE]) -> Result<Self, WireError> {
        let end = field
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::BadName)?;
        Name::new(&field[..end])
    }

    /// The name's bytes (without NUL).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The 32-byte NUL-padded wire field.
    pub fn wire(&self) -> [u8; NAME_SIZE] {
        self.bytes
    }
}

impl core::fmt::Debug for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match core::str::from_utf8(self.as_bytes()) {
            Ok(s) => write!(f, "Name({s:?})"),
            Err(_) => write!(f, "Name({:02x?})", self.as_bytes()),
        }
    }
}
