//! The sync-slot handshake (docs/protocols/vchiq.md §7, §3 barrier 7): each side owns one slot
//! holding at most one synchronous message. The sender writes body and size, then the msgid
//! **last** (Release); the receiver Acquire-reads the msgid, reads the message, and releases it by
//! writing PADDING (0) (Release), which the sender Acquire-reads before writing the next one.
//! Generic over [`Word`] so the loom model checks this code.

use crate::sync::{Barriers, Ordering, Word};

/// Sender: whether our previous message was released (the slot may be overwritten).
pub fn is_free<W: Word, B: Barriers + ?Sized>(msgid: &W, bar: &B) -> bool {
    // Acquire: pairs with the receiver's Release in `release`; its reads of the previous
    // message happen-before our overwrite.
    let free = msgid.load(Ordering::Acquire) == 0;
    // rmb (for the VideoCore): our overwrite is not speculated ahead of seeing the release.
    bar.rmb();
    free
}

/// Sender: publish a message whose body and size are already written.
pub fn publish<W: Word, B: Barriers + ?Sized>(msgid: &W, id: u32, bar: &B) {
    // wmb (barrier 7, for the VideoCore): body and size reach it before the msgid.
    bar.wmb();
    // Release (barrier 7): body and size are visible before the msgid.
    msgid.store(id, Ordering::Release);
}

/// Receiver: the pending message's msgid, if any.
pub fn pending<W: Word, B: Barriers + ?Sized>(msgid: &W, bar: &B) -> Option<u32> {
    // Acquire: pairs with `publish`; the body is visible.
    let v = msgid.load(Ordering::Acquire);
    // rmb (docs/protocols/vchiq.md §3 barrier 4, for the VideoCore): size and body are read after
    // the msgid.
    bar.rmb();
    (v != 0).then_some(v)
}

/// Receiver: hand the slot back (msgid = PADDING).
pub fn release<W: Word, B: Barriers + ?Sized>(msgid: &W, bar: &B) {
    // mb (barrier 7, for the VideoCore): our *reads* of the message complete before it may
    // overwrite the slot (load→store order: a full barrier).
    bar.mb();
    // Release (barrier 7): our reads of the message happen-before the sender reuses the slot.
    msgid.store(0, Ordering::Release);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::shared::remote_event::tests::{LogBarriers, LogWord, Op};
    use core::sync::atomic::AtomicU32;

    /// publish: wmb then msgid; pending: msgid then rmb; release: mb then msgid = 0.
    #[test]
    fn barriers_around_the_msgid() {
        let log = core::cell::RefCell::new(Vec::new());
        let id = LogWord {
            name: "msgid",
            v: AtomicU32::new(0),
            log: &log,
        };
        let bar = LogBarriers(&log);
        publish(&id, 5, &bar);
        assert_eq!(log.take(), [Op::Wmb, Op::Store("msgid", 5)]);
        assert_eq!(pending(&id, &bar), Some(5));
        assert_eq!(log.take(), [Op::Load("msgid"), Op::Rmb]);
        release(&id, &bar);
        assert_eq!(log.take(), [Op::Mb, Op::Store("msgid", 0)]);
        assert!(is_free(&id, &bar));
        assert_eq!(log.take(), [Op::Load("msgid"), Op::Rmb]);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Fences;
    use loom::sync::atomic::AtomicU32;
    use loom::sync::Arc;

    /// Two messages through one sync slot: the receiver always reads the body that belongs to
    /// the msgid it saw, and gets them in order.
    #[test]
    fn loom_sync_slot_handshake() {
        loom::model(|| {
            let sh = Arc::new((AtomicU32::new(0), AtomicU32::new(0)));
            let s2 = sh.clone();
            let sender = loom::thread::spawn(move || {
                // The slot starts free (init marks it released locally), so the first message
                // goes without a check. (This also keeps loom able to see a stale body: loom
                // 0.7 misses message-passing reorderings when the writer loaded the flag
                // location before storing it.)
                s2.1.store(10, Ordering::Relaxed);
                publish(&s2.0, 1, &Fences);
                for _ in 0..2 {
                    if is_free(&s2.0, &Fences) {
                        s2.1.store(20, Ordering::Relaxed);
                        publish(&s2.0, 2, &Fences);
                        break;
                    }
                    loom::thread::yield_now();
                }
            });
            let mut got = 0;
            for _ in 0..3 {
                if let Some(id) = pending(&sh.0, &Fences) {
                    assert_eq!(sh.1.load(Ordering::Relaxed), id * 10, "torn sync message");
                    assert_eq!(id, got + 1, "out of order");
                    got = id;
                    release(&sh.0, &Fences);
                } else {
                    loom::thread::yield_now();
                }
            }
            sender.join().unwrap();
        });
    }
}
