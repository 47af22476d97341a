use alloc::sync::Arc;

use super::*;

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
