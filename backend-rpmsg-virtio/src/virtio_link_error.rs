//! The ring link's error layer and its counters of hostile device behaviour.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// Why a [`VirtioLink`](crate::virtio_link::VirtioLink) could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VirtioLinkError {
    /// The transport's device is not an rpmsg device (id 7).
    WrongDevice,
    /// The device did not confirm the initial reset; nothing was given to it.
    ResetUnconfirmed,
    /// Feature negotiation failed (a required feature missing, or `FEATURES_OK` refused).
    Negotiation(fwipc_virtio::Error),
    /// Queue `0` or `1` is missing, already in use, or of a size the ring cannot use.
    QueueUnavailable(u16),
    /// The `Hal` could not allocate ring or buffer memory.
    DmaAlloc,
}

impl fmt::Display for VirtioLinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtioLinkError::WrongDevice => f.write_str("rpmsg link: not an rpmsg device (id 7)"),
            VirtioLinkError::ResetUnconfirmed => {
                f.write_str("rpmsg link: device did not confirm its reset")
            }
            VirtioLinkError::Negotiation(e) => write!(f, "rpmsg link: {e}"),
            VirtioLinkError::QueueUnavailable(q) => {
                write!(f, "rpmsg link: virtqueue {q} unavailable")
            }
            VirtioLinkError::DmaAlloc => f.write_str("rpmsg link: DMA allocation failed"),
        }
    }
}

impl core::error::Error for VirtioLinkError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            VirtioLinkError::Negotiation(e) => Some(e),
            _ => None,
        }
    }
}

/// What a hostile or stuck device did, counted (each event also dropped the element).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) bad_id: AtomicU64,
    pub(crate) bad_len: AtomicU64,
    pub(crate) not_owned: AtomicU64,
    pub(crate) index_jumps: AtomicU64,
    pub(crate) tx_exhausted: AtomicU64,
    pub(crate) budget_hits: AtomicU64,
    pub(crate) device_resets: AtomicU64,
}

/// What a device did wrong, counted by a [`VirtioLink`](crate::virtio_link::VirtioLink).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Used elements naming a descriptor outside the queue (dropped).
    pub bad_id: u64,
    /// Used lengths beyond the 512-byte buffer (clamped).
    pub bad_len: u64,
    /// Used transmit elements for buffers the device did not hold (a duplicate; dropped).
    pub not_owned: u64,
    /// `used.idx` advanced by more than the ring holds (the ring resynchronised).
    pub index_jumps: u64,
    /// Sends refused because the device held every transmit buffer.
    pub tx_exhausted: u64,
    /// Receive passes that stopped at their budget with entries still waiting.
    pub budget_hits: u64,
    /// Times the device set `DEVICE_NEEDS_RESET` and the link reset and re-initialised it in
    /// place (virtio 1.2 §2.1.2).
    pub device_resets: u64,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        // Relaxed: statistics counters; nothing is published through them.
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LinkStats {
        // Relaxed (all): statistics counters.
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LinkStats {
            bad_id: r(&self.bad_id),
            bad_len: r(&self.bad_len),
            not_owned: r(&self.not_owned),
            index_jumps: r(&self.index_jumps),
            tx_exhausted: r(&self.tx_exhausted),
            budget_hits: r(&self.budget_hits),
            device_resets: r(&self.device_resets),
        }
    }
}
