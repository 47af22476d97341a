//! Errors of the virtio-scmi transport layer.

use core::fmt;

use fwipc_transport_api::{Error, ProtocolError};

/// Why [`super::ScmiVirtio::new`] (or the device) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScmiVirtioError {
    /// The device does not offer `VIRTIO_F_VERSION_1` (a legacy device); refused like Linux with
    /// `ARM_SCMI_TRANSPORT_VIRTIO_VERSION1_COMPLIANCE=y`.
    LegacyDevice,
    /// The device did not accept our features (FEATURES_OK did not stick).
    FeaturesRejected,
    /// A virtqueue is already in use, or the device's maximum size is 0.
    QueueUnavailable(u16),
    /// The configured queue size is not a power of two, or the device's maximum is smaller.
    BadQueueSize {
        /// Queue index.
        queue: u16,
        /// Size asked for.
        wanted: u32,
        /// Device maximum.
        max: u32,
    },
    /// The Hal could not allocate DMA memory for a ring.
    DmaAlloc,
    /// A configuration value is out of range (message size 0 or too large, etc.).
    BadConfig,
    /// The transport was shut down.
    ShutDown,
    /// The device never read back status 0 after a reset (virtio 1.2 §2.4): it may still access
    /// the rings and every buffer it held, so they stay quarantined (leaked on purpose, counted
    /// by [`super::ScmiVirtio::quarantined_buffers`]) and the channel is dead.
    ResetUnconfirmed,
    /// The device held requests and returned nothing for
    /// [`super::ScmiVirtioConfig::stall_timeout`] without signalling anything: it is treated as
    /// gone (status `FAILED`, virtio 1.2 §2.1.1), everything it can still reach is quarantined as
    /// after [`Self::ResetUnconfirmed`], and the channel is dead.
    DeviceStalled,
    /// The device returned something malformed (counted; the transfer fails with this).
    Protocol(ProtocolError),
}

impl fmt::Display for ScmiVirtioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LegacyDevice => {
                f.write_str("virtio-scmi: device lacks VIRTIO_F_VERSION_1 (legacy device refused)")
            }
            Self::FeaturesRejected => {
                f.write_str("virtio-scmi: device rejected the negotiated features")
            }
            Self::QueueUnavailable(q) => write!(f, "virtio-scmi: virtqueue {q} unavailable"),
            Self::BadQueueSize { queue, wanted, max } => {
                write!(
                    f,
                    "virtio-scmi: queue {queue} size {wanted} invalid (device max {max})"
                )
            }
            Self::DmaAlloc => f.write_str("virtio-scmi: DMA allocation failed"),
            Self::BadConfig => f.write_str("virtio-scmi: invalid configuration"),
            Self::ShutDown => f.write_str("virtio-scmi: transport shut down"),
            Self::ResetUnconfirmed => f.write_str(
                "virtio-scmi: device reset unconfirmed; its buffers and rings are quarantined",
            ),
            Self::DeviceStalled => f.write_str(
                "virtio-scmi: device stopped consuming requests; its buffers and rings are quarantined",
            ),
            Self::Protocol(p) => write!(f, "virtio-scmi: {p}"),
        }
    }
}

impl core::error::Error for ScmiVirtioError {}

impl From<ScmiVirtioError> for Error {
    fn from(e: ScmiVirtioError) -> Self {
        match e {
            ScmiVirtioError::DmaAlloc => Error::NoMemory,
            ScmiVirtioError::ShutDown | ScmiVirtioError::DeviceStalled => Error::Shutdown,
            ScmiVirtioError::ResetUnconfirmed => Error::Timeout,
            ScmiVirtioError::Protocol(p) => Error::Protocol(p),
            ScmiVirtioError::LegacyDevice | ScmiVirtioError::FeaturesRejected => {
                Error::NotSupported
            }
            ScmiVirtioError::QueueUnavailable(_)
            | ScmiVirtioError::BadQueueSize { .. }
            | ScmiVirtioError::BadConfig => Error::InvalidArgument,
        }
    }
}
