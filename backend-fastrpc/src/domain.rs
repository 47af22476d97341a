//! DSP domains (docs/protocols/fastrpc.md §2) with a checked id range.

use crate::error::{FastRpcError, Result};

/// A DSP domain. The id is the driver's domain id; `DOMAIN_COUNT` bounds it (`FASTRPC_DEV_MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Domain {
    /// Audio DSP.
    Adsp = 0,
    /// Modem DSP.
    Mdsp = 1,
    /// Sensors DSP (SLPI).
    Sdsp = 2,
    /// Compute DSP.
    Cdsp = 3,
    /// Second compute DSP.
    Cdsp1 = 4,
}

/// Number of domains (`FASTRPC_DEV_MAX` = 5 since cdsp1). The newer DT labels cdsp2/3 and
/// gdsp0/1 are **(unverified)** in driver support and not accepted.
pub(crate) const DOMAIN_COUNT: u32 = 5;

const ALL: [Domain; DOMAIN_COUNT as usize] = [
    Domain::Adsp,
    Domain::Mdsp,
    Domain::Sdsp,
    Domain::Cdsp,
    Domain::Cdsp1,
];

impl Domain {
    /// Checked conversion: `BadDomain` (`-ECHRNG`) for `id >= DOMAIN_COUNT` (the v5→v6 "domain id
    /// range check" fix: `<`, not `<=`).
    pub fn from_id(id: u32) -> Result<Self> {
        ALL.get(id as usize).copied().ok_or(FastRpcError::BadDomain)
    }

    /// From the DT `label`; `InvalidArgument` for an unknown label (probe's `-EINVAL`).
    pub fn from_label(label: &str) -> Result<Self> {
        ALL.iter()
            .copied()
            .find(|d| d.label() == label)
            .ok_or(FastRpcError::InvalidArgument)
    }

    /// The DT label / device-node suffix.
    pub const fn label(self) -> &'static str {
        match self {
            Domain::Adsp => "adsp",
            Domain::Mdsp => "mdsp",
            Domain::Sdsp => "sdsp",
            Domain::Cdsp => "cdsp",
            Domain::Cdsp1 => "cdsp1",
        }
    }

    /// The domain id.
    pub const fn id(self) -> u32 {
        self as u32
    }

    /// Whether capability queries are allowed (mdsp refuses them with `-ECHRNG`).
    pub fn check_capability_query(self) -> Result<()> {
        if self == Domain::Mdsp {
            Err(FastRpcError::BadDomain)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_is_checked_at_the_bound() {
        assert_eq!(Domain::from_id(3), Ok(Domain::Cdsp));
        assert_eq!(Domain::from_id(4), Ok(Domain::Cdsp1));
        assert_eq!(Domain::from_id(5), Err(FastRpcError::BadDomain));
        assert_eq!(Domain::from_id(u32::MAX), Err(FastRpcError::BadDomain));
        assert_eq!(Domain::from_label("sdsp"), Ok(Domain::Sdsp));
        assert!(Domain::from_label("gdsp0").is_err());
        assert!(Domain::Mdsp.check_capability_query().is_err());
        assert!(Domain::Cdsp.check_capability_query().is_ok());
    }
}
