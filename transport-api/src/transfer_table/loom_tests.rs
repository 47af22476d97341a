use alloc::sync::Arc;

use crate::sync::AtomicBool;

use super::*;

impl EntryPart<Generations> for u8 {
    fn reset(&mut self) {
        *self = 0;
    }
}

/// The caller gives up on a transfer while its reply arrives on another thread: whichever wins,
/// the entry ends free exactly once, with its buffer back in the pool and its token released.
#[test]
fn finish_races_reply() {
    loom::model(|| {
        let t = Arc::new(TransferTable::<()>::new(1, 4, 1).unwrap());
        let s = t.start(b"", ()).unwrap();
        let t2 = t.clone();
        let h = loom::thread::spawn(move || t2.on_reply(s.token.0, |_| true, |_, _| Ok(0)));
        t.finish(s.ticket(), TxOutcome::TimedOut).unwrap();
        let r = h.join().unwrap();
        let st = t.stats();
        match r {
            // The reply came first: `finish` found it done and freed it.
            ReplyOutcome::Completed => assert_eq!((st.completed, st.timed_out), (1, 0)),
            // The caller gave up first: the late reply freed it.
            ReplyOutcome::Late => assert_eq!((st.late_replies, st.timed_out), (1, 1)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(t.pool().free_count(), 1);
        assert_eq!(u32::from(t.remote_holds(s.slot)), 0);
        assert!(t.start(b"", ()).is_ok());
    });
}

/// The channel goes down (`fail_pending`) and the caller lets go while the remote returns the
/// buffer by index (`on_reply_at`): in every order the entry ends free exactly once, its buffer
/// back in the pool and its token released, and the transfer counted once (completed or late).
#[test]
fn reply_at_races_fail_pending_and_finish() {
    loom::model(|| {
        let t = Arc::new(TransferTable::<u32>::new(1, 4, 1).unwrap());
        let s = t.start(b"", 0).unwrap();
        let t2 = t.clone();
        let h = loom::thread::spawn(move || {
            t2.on_reply_at(s.slot, |_, gave| *gave += 1, |_, gave| Ok(*gave as usize))
                .0
        });
        t.fail_pending(Error::Shutdown, drop);
        t.finish(s.ticket(), TxOutcome::Cancelled).unwrap();
        let r = h.join().unwrap();
        assert!(
            matches!(r, ReplyOutcome::Completed | ReplyOutcome::Late),
            "{r:?}"
        );
        let st = t.stats();
        assert_eq!(st.completed + st.late_replies, 1);
        assert_eq!((t.pool().free_count(), t.tokens_in_use()), (1, 0));
        assert!(!t.remote_holds(s.slot));
        assert!(t.start(b"", 0).is_ok());
    });
}

/// The remote's late reply to an abandoned transfer races a retry resuming it: in both orders
/// the retry gets the transfer back with the reply's outcome, and the reply path frees nothing
/// (`reap` finds nothing to free; the entry is the retry's until it finishes it).
#[test]
fn late_reply_races_resume() {
    loom::model(|| {
        let t = Arc::new(
            TransferTable::<u8, Shared, Generations>::with_generations(1, u64::MAX, || 0).unwrap(),
        );
        let s = t
            .reserve(|p| {
                *p = 1;
                Ok(())
            })
            .unwrap();
        t.send_with(&s.ticket(), |_| Ok::<(), ()>(()))
            .unwrap()
            .unwrap();
        t.finish(s.ticket(), TxOutcome::Cancelled).unwrap();
        let t2 = t.clone();
        let id = (u64::from(s.token.0) << 32) | u64::from(s.generation);
        let h = loom::thread::spawn(move || t2.on_reply_id(s.slot, id, |_| true, |_, _| Ok(3)));
        let back = t
            .resume(|p| *p == 1)
            .expect("waiting to be resumed in either order");
        let r = h.join().unwrap();
        assert!(
            matches!(r, ReplyOutcome::Completed | ReplyOutcome::Late),
            "{r:?}"
        );
        assert_eq!(t.reap(), 0);
        assert_eq!(t.poll(&back.ticket()), Ok(true));
        t.finish(back.ticket(), TxOutcome::Done).unwrap();
        assert_eq!(t.free_count(), 1);
    });
}

/// A caller spins on `poll` racing the reply path, until it sees the reply; the owner then frees
/// the entry and reuses it (twice, so the new transfer has the old one's token, one generation
/// on) while the caller spins on the old ticket. The caller never spins for ever: it sees the
/// reply, then the old ticket refused, never taken for the new transfer (which stays in flight,
/// so a `poll` that matched the old ticket to it would keep the caller spinning). Written for a
/// `poll` that answers "in flight" without the entry's lock (docs/benchmarks/changes.md, "A poll word
/// beside the entry lock"), it holds any `poll` to the same answers.
#[test]
fn poll_races_reply_and_reuse() {
    loom::model(|| {
        let t = Arc::new(TransferTable::<()>::new(1, 4, 1).unwrap());
        let seen = Arc::new(AtomicBool::new(false));
        let s = t.start(b"", ()).unwrap();
        let remote = {
            let t = t.clone();
            loom::thread::spawn(move || t.on_reply(s.token.0, |_| true, |_, _| Ok(1)))
        };
        let poller = {
            let (t, seen) = (t.clone(), seen.clone());
            loom::thread::spawn(move || {
                while t.poll(&s.ticket()) != Ok(true) {
                    loom::thread::yield_now();
                }
                // SeqCst: a test handshake, no ordering to reason about.
                seen.store(true, Ordering::SeqCst);
                loop {
                    match t.poll(&s.ticket()) {
                        Ok(true) => loom::thread::yield_now(),
                        r => return r,
                    }
                }
            })
        };
        assert_eq!(remote.join().unwrap(), ReplyOutcome::Completed);
        // SeqCst: as above.
        while !seen.load(Ordering::SeqCst) {
            loom::thread::yield_now();
        }
        t.finish(s.ticket(), TxOutcome::Done).unwrap();
        let between = t.start(b"", ()).unwrap();
        t.on_reply(between.token.0, |_| true, |_, _| Ok(1));
        t.finish(between.ticket(), TxOutcome::Done).unwrap();
        let reused = t.start(b"", ()).unwrap();
        assert_eq!((reused.slot, reused.token), (s.slot, s.token));
        assert_eq!(poller.join().unwrap(), Err(Error::InvalidArgument));
        assert_eq!(t.poll(&reused.ticket()), Ok(false));
    });
}
