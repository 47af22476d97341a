//! The sync-slot handshake (spec §7, §3 barrier 7): each side owns one slot holding at most one
//! synchronous message. The sender writes body and size, then the msgid **last** (Release); the
//! receiver Acquire-reads the msgid, reads the message, and releases it by writing PADDING (0)
//! (Release), which the sender Acquire-reads before writing the next one. Generic over [`Word`]
//! so the loom model checks this code.

use crate::sync::{Ordering, Word};

/// Sender: whether our previous message was released (the slot may be overwritten).
pub fn is_free<W: Word>(msgid: &W) -> bool {
    // Acquire: pairs with the receiver's Release in `release`; its reads of the previous
    // message happen-before our overwrite.
    msgid.load(Ordering::Acquire) == 0
}

/// Sender: publish a message whose body and size are already written.
pub fn publish<W: Word>(msgid: &W, id: u32) {
    // Release (barrier 7): body and size are visible before the msgid.
    msgid.store(id, Ordering::Release);
}

/// Receiver: the pending message's msgid, if any.
pub fn pending<W: Word>(msgid: &W) -> Option<u32> {
    // Acquire: pairs with `publish`; the body is visible.
    let v = msgid.load(Ordering::Acquire);
    (v != 0).then_some(v)
}

/// Receiver: hand the slot back (msgid = PADDING).
pub fn release<W: Word>(msgid: &W) {
    // Release (barrier 7): our reads of the message happen-before the sender reuses the slot.
    msgid.store(0, Ordering::Release);
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
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
                publish(&s2.0, 1);
                for _ in 0..2 {
                    if is_free(&s2.0) {
                        s2.1.store(20, Ordering::Relaxed);
                        publish(&s2.0, 2);
                        break;
                    }
                    loom::thread::yield_now();
                }
            });
            let mut got = 0;
            for _ in 0..3 {
                if let Some(id) = pending(&sh.0) {
                    assert_eq!(sh.1.load(Ordering::Relaxed), id * 10, "torn sync message");
                    assert_eq!(id, got + 1, "out of order");
                    got = id;
                    release(&sh.0);
                } else {
                    loom::thread::yield_now();
                }
            }
            sender.join().unwrap();
        });
    }
}
