//! The live datagram counters behind [`DatagramStats`], for backends to embed.

use crate::sync::{AtomicU64, Ordering};

use super::{DatagramStats, HoldTable};

/// See [`DatagramStats`]; bump with [`crate::Counters::bump`].
#[derive(Debug, Default)]
pub struct DatagramCounters {
    /// See [`DatagramStats::sent`].
    pub sent: AtomicU64,
    /// See [`DatagramStats::received`].
    pub received: AtomicU64,
    /// See [`DatagramStats::rx_backpressure`].
    pub rx_backpressure: AtomicU64,
    /// See [`DatagramStats::dropped`].
    pub dropped: AtomicU64,
}

impl DatagramCounters {
    /// Snapshot, with the hold counts of `holds`; a backend whose link counts
    /// [`DatagramStats::tx_exhausted`] and [`DatagramStats::rx_budget_hits`] fills them in.
    pub fn snapshot(&self, holds: &HoldTable) -> DatagramStats {
        // Relaxed: independent statistics counters; nothing is published through them.
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DatagramStats {
            sent: r(&self.sent),
            received: r(&self.received),
            held: holds.held(),
            double_releases: holds.double_releases(),
            rx_backpressure: r(&self.rx_backpressure),
            dropped: r(&self.dropped),
            tx_exhausted: 0,
            rx_budget_hits: 0,
        }
    }
}
