//! Feature bits negotiated with a virtio-scmi device (Virtio 1.2 §5.17; docs/protocols/scmi.md §1).
//!
//! Our own bitflags type, because virtio-drivers' `Transport::begin_init` computes
//! `F::from_bits_truncate(device_features)`, which silently drops the device-specific bits its
//! common `Feature` type does not name (P2A_CHANNELS is bit 0).

use bitflags::bitflags;
use fwipc_virtio::negotiate;

bitflags! {
    /// virtio-scmi feature bits this driver knows.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct ScmiFeatures: u64 {
        /// `VIRTIO_SCMI_F_P2A_CHANNELS`: the device has an eventq (notifications / delayed
        /// responses).
        const P2A_CHANNELS = 1 << 0;
        /// `VIRTIO_SCMI_F_SHARED_MEMORY`: statistics shared memory. Never negotiated (not
        /// implemented; docs/protocols/scmi.md §8 item 10).
        const SHARED_MEMORY = 1 << 1;
        /// `VIRTIO_F_RING_EVENT_IDX`: `used_event`/`avail_event` notification suppression
        /// (negotiated when offered unless `ScmiVirtioConfig::event_idx` is false).
        const RING_EVENT_IDX = negotiate::F_RING_EVENT_IDX;
        /// `VIRTIO_F_VERSION_1`: required (a legacy device is refused).
        const VERSION_1 = negotiate::F_VERSION_1;
        /// `VIRTIO_F_ACCESS_PLATFORM` (Virtio 1.2 §6): the device reaches driver memory through
        /// the platform's DMA translation (an IOMMU, or the shared-memory rules of a protected
        /// VM). Accepted whenever offered, as the specification asks: every address this driver
        /// gives the device already comes from the `Hal` (`dma_alloc`/`share`), never from a raw
        /// pointer, so a `Hal` that bounces through an explicitly shared pool is all such a
        /// platform needs.
        const ACCESS_PLATFORM = negotiate::F_ACCESS_PLATFORM;
    }
}

/// The virtio device id of an SCMI device. virtio-drivers' `DeviceType` has no variant for it,
/// so embedders check the id with their own transport before calling `ScmiVirtio::new`.
pub const VIRTIO_ID_SCMI: u32 = 32;
/// Virtqueue index of the command queue.
pub const CMDQ: u16 = 0;
/// Virtqueue index of the event queue (present only with P2A_CHANNELS).
pub const EVENTQ: u16 = 1;
