//! Counters every backend keeps, and their snapshot.

use crate::sync::{AtomicU64, Ordering};

/// A snapshot of a transport's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Messages queued.
    pub sent: u64,
    /// Transfers that completed with a reply.
    pub completed: u64,
    /// Transfers the caller gave up on.
    pub timed_out: u64,
    /// Replies that arrived after their transfer was given up on (dropped).
    pub late_replies: u64,
    /// Replies with no matching transfer (dropped).
    pub unknown_replies: u64,
    /// Second replies for one transfer (dropped).
    pub duplicate_replies: u64,
    /// Malformed remote messages (dropped).
    pub protocol_errors: u64,
    /// `send` calls refused with `Busy`.
    pub busy: u64,
    /// Buffers in the pool.
    pub pool_capacity: u64,
    /// Buffers free right now.
    pub pool_free: u64,
}

/// The live counters behind [`Stats`], for backends to embed.
#[derive(Debug, Default)]
pub struct Counters {
    /// See [`Stats::sent`].
    pub sent: AtomicU64,
    /// See [`Stats::completed`].
    pub completed: AtomicU64,
    /// See [`Stats::timed_out`].
    pub timed_out: AtomicU64,
    /// See [`Stats::late_replies`].
    pub late_replies: AtomicU64,
    /// See [`Stats::unknown_replies`].
    pub unknown_replies: AtomicU64,
    /// See [`Stats::duplicate_replies`].
    pub duplicate_replies: AtomicU64,
    /// See [`Stats::protocol_errors`].
    pub protocol_errors: AtomicU64,
    /// See [`Stats::busy`].
    pub busy: AtomicU64,
}

impl Counters {
    /// Add one to `c`.
    pub fn bump(c: &AtomicU64) {
        // Relaxed: independent statistics counters; nothing is published through them.
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Snapshot with the given pool occupancy.
    pub fn snapshot(&self, pool_capacity: usize, pool_free: usize) -> Stats {
        // Relaxed: see `bump`.
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            sent: r(&self.sent),
            completed: r(&self.completed),
            timed_out: r(&self.timed_out),
            late_replies: r(&self.late_replies),
            unknown_replies: r(&self.unknown_replies),
            duplicate_replies: r(&self.duplicate_replies),
            protocol_errors: r(&self.protocol_errors),
            busy: r(&self.busy),
            pool_capacity: pool_capacity as u64,
            pool_free: pool_free as u64,
        }
    }
}
