//! The slot recycle queue (docs/protocols/vchiq.md §1 "Recycle", §3 barriers 5/6 and gap (b)).
//!
//! The *receiver* hands a finished slot back by writing its index into the sender's
//! `slot_queue[slot_queue_recycle & 63]` and then advancing `slot_queue_recycle`. The *sender*
//! walks from its private `slot_queue_available` up to `slot_queue_recycle`. Generic over [`Word`]
//! so the loom model checks this code.

use crate::sync::{Barriers, Ordering, Word};
use crate::wire::consts::VCHIQ_SLOT_QUEUE_MASK;

/// The peer's `slot_queue_recycle` claims slots we never handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRecycle;

/// Receiver: append `slot` to the owner's queue at index `idx`, our private count of slots
/// recycled (we are the only legitimate writer of `recycle`, so we keep the authoritative copy and
/// never trust the shared word: the owner could scribble it). Returns the next index.
pub fn push<W: Word, B: Barriers + ?Sized>(
    queue: &[W],
    recycle: &W,
    slot: u32,
    idx: u32,
    bar: &B,
) -> u32 {
    if let Some(w) = queue.get((idx & VCHIQ_SLOT_QUEUE_MASK) as usize) {
        // Relaxed: published by the Release store of `recycle` below.
        w.store(slot, Ordering::Relaxed);
    }
    let next = idx.wrapping_add(1);
    // mb (for the VideoCore): the Release below orders our reads of the slot and the entry
    // store only within our coherence domain. Toward a bus master outside it, the reads must
    // also complete before the index that lets it overwrite the slot (a load→store order, so a
    // full barrier, `dsb sy`, not just a write barrier).
    bar.mb();
    // Release (docs/protocols/vchiq.md §3 gap (b)): the queue entry, and every read we made of the
    // slot's contents, happen-before the sender's Acquire load of `recycle`, so it never reads a
    // stale entry and never overwrites the slot while we may still read it.
    recycle.store(next, Ordering::Release);
    next
}

/// Sender: the next recycled slot, if any. `available` is the sender's private
/// `slot_queue_available`; `limit` is the furthest it may legitimately advance (the queue index of
/// the slot the sender is writing in): a hostile peer cannot hand back slots we never used.
/// Returns `Err(BadRecycle)` when the peer's `recycle` is out of range (protocol error).
pub fn pop<W: Word, B: Barriers + ?Sized>(
    queue: &[W],
    recycle: &W,
    available: u32,
    limit: u32,
    bar: &B,
) -> Result<Option<u32>, BadRecycle> {
    // Acquire (docs/protocols/vchiq.md §3 gap (b), barrier 6 "rmb after each slot index"): pairs
    // with the receiver's Release; the entry and the receiver's finished reads of the slot are
    // ordered before us.
    let end = recycle.load(Ordering::Acquire);
    if end == available {
        return Ok(None);
    }
    // Wrapping distance checks: the peer may only recycle slots we have started.
    let pending = end.wrapping_sub(available);
    let allowed = limit.wrapping_sub(available);
    if pending > allowed || pending > VCHIQ_SLOT_QUEUE_MASK + 1 {
        return Err(BadRecycle);
    }
    // rmb (docs/protocols/vchiq.md §3 barrier 6, "rmb after each slot index", for the VideoCore):
    // the entry and the slot are read after the index, for a writer outside our coherence domain
    // too.
    bar.rmb();
    let slot = queue
        .get((available & VCHIQ_SLOT_QUEUE_MASK) as usize)
        // Relaxed: ordered by the Acquire load above.
        .map(|w| w.load(Ordering::Relaxed))
        .ok_or(BadRecycle)?;
    // No fence after the entry. The last part of barrier 6 (docs/protocols/vchiq.md §3), a "full
    // barrier before publishing slot_queue_available", would order the caller's quota scan of the
    // old slot before a local sender overwrites it; nothing needs it: `slot_queue_available` is
    // private (under the core lock, never read by the peer), the scan and the later overwrite are
    // accesses by us to the same words (same-location coherence: a read is never satisfied by a
    // later store of the same thread, nor can that store become visible to anyone first), and the
    // receiver's reads of the slot are ordered before our overwrite by the Release/Acquire of
    // `recycle` (and its `mb`).
    Ok(Some(slot))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::Fences;
    use core::sync::atomic::AtomicU32;

    #[test]
    fn push_pop_in_order_and_hostile_jump_rejected() {
        let q: [AtomicU32; 64] = core::array::from_fn(|_| AtomicU32::new(0));
        let rec = AtomicU32::new(31);
        let i = push(&q, &rec, 34, 31, &Fences);
        assert_eq!(push(&q, &rec, 35, i, &Fences), 33);
        assert_eq!(pop(&q, &rec, 31, 40, &Fences), Ok(Some(34)));
        assert_eq!(pop(&q, &rec, 32, 40, &Fences), Ok(Some(35)));
        assert_eq!(pop(&q, &rec, 33, 40, &Fences), Ok(None));
        rec.store(1000, Ordering::Relaxed);
        assert_eq!(pop(&q, &rec, 33, 40, &Fences), Err(BadRecycle));
    }

    /// push: entry, mb, index (the receiver's reads of the slot complete before the VideoCore
    /// may reuse it); pop: index, rmb, entry.
    #[test]
    fn barriers_between_entry_and_index() {
        use crate::shared::remote_event::tests::{LogBarriers, LogWord, Op};
        let log = core::cell::RefCell::new(Vec::new());
        let w = |name| LogWord {
            name,
            v: AtomicU32::new(0),
            log: &log,
        };
        let q = [w("entry0"), w("entry1")];
        let rec = w("recycle");
        push(&q, &rec, 7, 0, &LogBarriers(&log));
        assert_eq!(
            log.take(),
            [Op::Store("entry0", 7), Op::Mb, Op::Store("recycle", 1)]
        );
        assert_eq!(pop(&q, &rec, 0, 1, &LogBarriers(&log)), Ok(Some(7)));
        assert_eq!(
            log.take(),
            [Op::Load("recycle"), Op::Rmb, Op::Load("entry0")]
        );
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Fences;
    use loom::sync::atomic::AtomicU32;
    use loom::sync::Arc;

    /// Receiver reads a slot and recycles it; the sender pops it and reuses it. The receiver's
    /// read always sees the old message (never the sender's next one), and the sender only ever
    /// sees entries the receiver wrote.
    #[test]
    fn loom_recycle_queue() {
        loom::model(|| {
            // queue[4], recycle index starting at 2 (slots 10, 11 initially queued).
            let sh = Arc::new((
                [
                    AtomicU32::new(10),
                    AtomicU32::new(11),
                    AtomicU32::new(0xDEAD),
                    AtomicU32::new(0xDEAD),
                ],
                AtomicU32::new(2),
                // slot 10's contents (message generation).
                AtomicU32::new(1),
            ));
            let s2 = sh.clone();
            let receiver = loom::thread::spawn(move || {
                let seen = s2.2.load(Ordering::Relaxed);
                // The receiver's CLAIMED marker set and cleared in the header (rx.rs), before
                // it recycles the slot.
                s2.2.store(seen | 0x8000_0000, Ordering::Relaxed);
                s2.2.store(seen, Ordering::Relaxed);
                push(&s2.0, &s2.1, 10, 2, &Fences);
                seen
            });
            // One pop racing the push: either nothing yet, or exactly the pushed entry.
            match pop(&sh.0, &sh.1, 2, 3, &Fences) {
                Ok(Some(slot)) => {
                    assert_eq!(slot, 10, "stale queue entry");
                    // The caller's quota scan of the recycled slot (no fence between it and the
                    // overwrite below): sees the header as the receiver left it.
                    assert_eq!(sh.2.load(Ordering::Relaxed), 1, "scan saw a stale header");
                    // Reuse the slot: write the next message.
                    sh.2.store(2, Ordering::Relaxed);
                }
                Ok(None) => {}
                Err(BadRecycle) => panic!("bad range"),
            }
            let seen = receiver.join().unwrap();
            assert_eq!(
                seen, 1,
                "receiver saw the slot overwritten before it recycled it"
            );
        });
    }
}
