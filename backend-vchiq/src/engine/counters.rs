//! The instance's counters ([`VchiqCounters`]) and their snapshot ([`VchiqStats`]).

use core::sync::atomic::{AtomicU64, Ordering};

/// Counters of one instance.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct VchiqCounters {
    /// Malformed input from the peer (dropped, never a panic).
    pub protocol_errors: AtomicU64,
    /// Messages queued. Written only with the instance's `inner` lock held.
    pub msgs_sent: AtomicU64,
    /// Messages parsed from the peer. Written only by the poller holding the poll gate.
    pub msgs_received: AtomicU64,
    /// Operations refused with `Retry` (back-pressure).
    pub retries: AtomicU64,
    /// Our slots the peer gave back. Written only with the instance's `inner` lock held.
    pub slots_recycled: AtomicU64,
    /// Bulks completed.
    pub bulks_done: AtomicU64,
    /// Bulks aborted.
    pub bulks_aborted: AtomicU64,
    /// Slots closed early with PADDING because a sender was blocked on a quota held by messages
    /// in that slot (see `queue_message`).
    pub quota_pads: AtomicU64,
    /// Master: READ pagelists without fragments whose ends were not cache-line aligned (on real
    /// hardware this is the arm64 `vchiq_test -f` data corruption).
    pub unaligned_reads: AtomicU64,
    /// [`Vchiq::poll`](crate::Vchiq::poll) calls that stopped at their budget ([`POLL_MAX_ROUNDS`](crate::POLL_MAX_ROUNDS) rounds or
    /// [`POLL_MAX_MSGS`](crate::POLL_MAX_MSGS) messages) with work left: a peer that keeps signalling or keeps
    /// publishing messages. The rest is left for the next call.
    pub poll_budget_exhausted: AtomicU64,
}

/// A snapshot of [`VchiqCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VchiqStats {
    /// See [`VchiqCounters::protocol_errors`].
    pub protocol_errors: u64,
    /// See [`VchiqCounters::msgs_sent`].
    pub msgs_sent: u64,
    /// See [`VchiqCounters::msgs_received`].
    pub msgs_received: u64,
    /// See [`VchiqCounters::retries`].
    pub retries: u64,
    /// See [`VchiqCounters::slots_recycled`].
    pub slots_recycled: u64,
    /// See [`VchiqCounters::bulks_done`].
    pub bulks_done: u64,
    /// See [`VchiqCounters::bulks_aborted`].
    pub bulks_aborted: u64,
    /// See [`VchiqCounters::quota_pads`].
    pub quota_pads: u64,
    /// See [`VchiqCounters::unaligned_reads`].
    pub unaligned_reads: u64,
    /// See [`VchiqCounters::poll_budget_exhausted`].
    pub poll_budget_exhausted: u64,
}

pub(crate) fn bump(c: &AtomicU64) {
    // Relaxed: independent statistics counter.
    c.fetch_add(1, Ordering::Relaxed);
}

/// [`bump`] for a counter whose writers are serialized by one lock or by the poll gate (its
/// documentation names which): a load and a store, not a read-modify-write. These are bumped
/// once per message, on both sides of every round trip.
pub(crate) fn bump_serialized(c: &AtomicU64) {
    // Relaxed: the writers' lock or gate orders each write after the last (its Acquire/Release
    // pair), so the load reads the previous writer's store and no increment is lost; readers
    // take a snapshot, as with `bump`.
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}
