//! The crate's one error type.

use core::fmt;

/// Everything that can go wrong in this crate: probing a virtio-mmio header, constructing a
/// transport, reading a flattened device tree, or negotiating features
/// ([`negotiate`](crate::negotiate)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The register block does not start with the virtio-mmio magic value `0x7472_6976`
    /// (`"virt"`); it holds the value read.
    BadMagic(u32),
    /// A legacy (version 1) virtio-mmio device. Only the modern (version 2) register layout of
    /// Virtio 1.2 §4.2.2 is supported; QEMU offers it with `-global virtio-mmio.force-legacy=false`.
    LegacyDevice,
    /// A header version that is neither 1 nor 2; it holds the value read.
    UnsupportedVersion(u32),
    /// Device id 0: an empty virtio-mmio slot (Virtio 1.2 §4.2.2: "a placeholder").
    NoDevice,
    /// The register region is smaller than the 0x100 bytes of virtio-mmio registers; it holds the
    /// size given.
    RegionTooSmall(usize),
    /// The register block address is not 4-byte aligned.
    Misaligned,
    /// The device tree blob is malformed; it holds the reason.
    DeviceTree(&'static str),
    /// The device does not offer feature bits the driver requires; it holds the missing bits.
    MissingFeatures(u64),
    /// The device cleared `FEATURES_OK` after the driver wrote this feature set (Virtio 1.2
    /// §3.1.1 step 6): it does not support the subset.
    FeaturesRejected(u64),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadMagic(m) => write!(f, "bad virtio-mmio magic {m:#x} (expected 0x74726976)"),
            Error::LegacyDevice => f.write_str(
                "legacy (version 1) virtio-mmio device; only version 2 (modern) is supported",
            ),
            Error::UnsupportedVersion(v) => write!(f, "unsupported virtio-mmio version {v}"),
            Error::NoDevice => f.write_str("empty virtio-mmio slot (device id 0)"),
            Error::RegionTooSmall(size) => write!(
                f,
                "virtio-mmio region of {size:#x} bytes is smaller than the 0x100-byte register block"
            ),
            Error::Misaligned => f.write_str("virtio-mmio register block is not 4-byte aligned"),
            Error::DeviceTree(why) => write!(f, "device tree: {why}"),
            Error::MissingFeatures(m) => {
                write!(f, "virtio device lacks required features {m:#x}")
            }
            Error::FeaturesRejected(a) => {
                write!(f, "virtio device refused features {a:#x} (FEATURES_OK not set)")
            }
        }
    }
}

impl core::error::Error for Error {}

/// `Result` with this crate's [`Error`].
pub type Result<T = ()> = core::result::Result<T, Error>;
