use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::{Wake, Waker};

use proptest::prelude::*;

use super::*;

type Table = TransferTable<u32>;

fn echo(payload: &'static [u8]) -> impl FnOnce(&PoolBuf, &mut u32) -> Result<usize> {
    move |b, _| b.write(payload).map(|()| payload.len())
}

struct CountWake(AtomicUsize);

impl Wake for CountWake {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn counting_waker() -> (Arc<CountWake>, Waker) {
    let c = Arc::new(CountWake(AtomicUsize::new(0)));
    (c.clone(), Waker::from(c))
}

#[test]
fn rejects_fewer_tokens_than_transfers() {
    assert_eq!(Table::new(8, 16, 2).err(), Some(Error::InvalidArgument));
    assert!(Table::new(4, 16, 2).is_ok());
}

#[test]
fn reply_completes_and_finish_frees_everything() {
    let t = Table::new(2, 16, 4).unwrap();
    let s = t.start(b"ping", 7).unwrap();
    assert_eq!(u32::from(t.remote_holds(s.slot)), 1, "the buffer is lent");
    t.pool()
        .get(s.slot)
        .unwrap()
        .with(|d| assert_eq!(&d[..4], b"ping"));
    let x = s.ticket();
    assert_eq!(t.poll(&x), Ok(false));
    let r = t.on_reply(s.token.0, |e| *e == 7, echo(b"pong!"));
    assert_eq!(r, ReplyOutcome::Completed);
    assert_eq!(
        u32::from(t.remote_holds(s.slot)),
        0,
        "the reply returns the loan"
    );
    assert_eq!(t.poll(&x), Ok(true));
    let mut out = [0u8; 4];
    assert_eq!(t.fetch(&x, &mut out), Err(Error::TooLarge));
    let mut out = [0u8; 8];
    assert_eq!(t.fetch(&x, &mut out), Ok(5));
    assert_eq!(&out[..5], b"pong!");
    t.finish(x, TxOutcome::Done).unwrap();
    let st = t.stats();
    assert_eq!((st.completed, st.pool_free, st.pool_capacity), (1, 2, 2));
    assert_eq!(t.state(&s.ticket()), Err(Error::InvalidArgument));
}

#[test]
fn poll_never_answers_for_an_earlier_transfer_of_the_entry() {
    let t = Table::new(1, 16, 4).unwrap();
    let a = t.start(b"", 0).unwrap();
    t.on_reply(a.token.0, |_| true, echo(b"a"));
    assert_eq!(t.poll(&a.ticket()), Ok(true));
    t.finish(a.ticket(), TxOutcome::Done).unwrap();
    assert_eq!(t.poll(&a.ticket()), Err(Error::InvalidArgument), "freed");
    let b = t.start(b"", 0).unwrap();
    assert_eq!(b.slot, a.slot, "the same entry again");
    assert_eq!(t.poll(&b.ticket()), Ok(false));
    assert_eq!(
        t.poll(&a.ticket()),
        Err(Error::InvalidArgument),
        "the earlier ticket names an older generation and token"
    );
    let forged = Ticket::new(b.token.0 | 1 << 16, b.slot, b.generation);
    assert_eq!(
        t.poll(&forged),
        Err(Error::InvalidArgument),
        "a token no table issues"
    );
    t.on_reply(b.token.0, |_| true, |_, _| Err(Error::Shutdown));
    assert_eq!(t.poll(&b.ticket()), Err(Error::Shutdown), "failed");
}

#[test]
fn exhaustion_is_busy_and_counted() {
    let t = Table::new(1, 16, 1).unwrap();
    let s = t.start(b"", 0).unwrap();
    assert_eq!(t.start(b"", 0), Err(Error::Busy));
    assert_eq!(t.stats().busy, 1);
    assert_eq!(t.start(&[0; 17], 0), Err(Error::TooLarge));
    t.abort(s);
    assert_eq!(t.pool().free_count(), 1);
    assert_eq!(u32::from(t.remote_holds(s.slot)), 0);
    assert!(t.start(b"", 0).is_ok(), "abort gave buffer and token back");
}

#[test]
fn abort_frees_even_after_a_forged_reply() {
    let t = Table::new(1, 16, 1).unwrap();
    let s = t.start(b"", 0).unwrap();
    // The message never left, yet a reply naming its token arrives.
    assert_eq!(
        t.on_reply(s.token.0, |_| true, echo(b"x")),
        ReplyOutcome::Completed
    );
    t.abort(s);
    assert_eq!(t.state(&s.ticket()), Err(Error::InvalidArgument));
    assert_eq!(t.pool().free_count(), 1);
    assert!(t.start(b"", 0).is_ok(), "buffer and token are back");
}

#[test]
fn abandoned_transfer_keeps_buffer_and_token_until_the_late_reply() {
    let t = Table::new(2, 16, 1).unwrap();
    let s = t.start(b"", 0).unwrap();
    t.finish(s.ticket(), TxOutcome::TimedOut).unwrap();
    assert_eq!(t.stats().timed_out, 1);
    assert_eq!(
        t.pool().free_count(),
        1,
        "the remote still holds the buffer"
    );
    // Both tokens: the quarantined one is not reissued, so the next start takes the other and
    // the one after that finds none.
    let s2 = t.start(b"", 0).unwrap();
    assert_ne!(s2.token, s.token);
    t.abort(s2);
    assert_eq!(
        t.on_reply(s.token.0, |_| true, echo(b"x")),
        ReplyOutcome::Late
    );
    assert_eq!(t.stats().late_replies, 1);
    assert_eq!(t.pool().free_count(), 2);
    assert_eq!(
        t.on_reply(s.token.0, |_| true, echo(b"x")),
        ReplyOutcome::Unknown
    );
    assert_eq!(t.stats().unknown_replies, 1);
}

#[test]
fn a_cancel_is_not_a_timeout() {
    let t = Table::new(1, 16, 1).unwrap();
    let s = t.start(b"", 0).unwrap();
    t.finish(s.ticket(), TxOutcome::Cancelled).unwrap();
    assert_eq!(t.stats().timed_out, 0);
    assert_eq!(t.state(&s.ticket()), Ok(TransferState::Abandoned));
}

#[test]
fn refused_and_duplicate_replies_leave_the_transfer_alone() {
    let t = Table::new(1, 16, 2).unwrap();
    let s = t.start(b"", 5).unwrap();
    assert_eq!(
        t.on_reply(s.token.0, |e| *e == 6, echo(b"x")),
        ReplyOutcome::Rejected
    );
    assert_eq!(t.state(&s.ticket()), Ok(TransferState::InFlight));
    assert_eq!(u32::from(t.remote_holds(s.slot)), 1);
    assert_eq!(
        t.on_reply(s.token.0, |e| *e == 5, echo(b"x")),
        ReplyOutcome::Completed
    );
    assert_eq!(
        t.on_reply(s.token.0, |_| true, echo(b"y")),
        ReplyOutcome::Duplicate
    );
    let st = t.stats();
    assert_eq!((st.protocol_errors, st.duplicate_replies), (1, 1));
    let mut out = [0u8; 1];
    assert_eq!(t.fetch(&s.ticket(), &mut out), Ok(1));
    assert_eq!(out, *b"x");
}

#[test]
fn malformed_reply_fails_the_transfer() {
    let t = Table::new(1, 16, 2).unwrap();
    let s = t.start(b"", 0).unwrap();
    let bad = Error::Protocol(crate::ProtocolError::BadLength);
    assert_eq!(
        t.on_reply(s.token.0, |_| true, |_, _| Err(bad)),
        ReplyOutcome::Failed
    );
    assert_eq!(t.poll(&s.ticket()), Err(bad));
    assert_eq!(t.fetch(&s.ticket(), &mut [0; 4]), Err(bad));
    assert_eq!(u32::from(t.remote_holds(s.slot)), 0);
    t.finish(s.ticket(), TxOutcome::Cancelled).unwrap();
    assert_eq!(t.pool().free_count(), 1);
    assert_eq!(t.stats().protocol_errors, 1);
}

#[test]
fn fail_all_wakes_in_flight_and_frees_abandoned() {
    let t = Table::new(3, 16, 2).unwrap();
    let a = t.start(b"", 0).unwrap();
    let b = t.start(b"", 0).unwrap();
    let c = t.start(b"", 0).unwrap();
    t.on_reply(c.token.0, |_| true, echo(b"c"));
    let (count, w) = counting_waker();
    assert!(t.register_waker(&a.ticket(), &w));
    t.finish(b.ticket(), TxOutcome::TimedOut).unwrap();
    t.fail_all(Error::Shutdown);
    assert_eq!(count.0.load(Ordering::Relaxed), 1);
    assert_eq!(t.poll(&a.ticket()), Err(Error::Shutdown));
    assert_eq!(t.state(&b.ticket()), Err(Error::InvalidArgument));
    assert_eq!(
        t.fetch(&c.ticket(), &mut [0; 1]),
        Ok(1),
        "a reply stays fetchable"
    );
    for i in 0..3 {
        assert_eq!(u32::from(t.remote_holds(i)), 0);
    }
    t.finish(a.ticket(), TxOutcome::Cancelled).unwrap();
    t.finish(c.ticket(), TxOutcome::Done).unwrap();
    assert_eq!(t.pool().free_count(), 3);
}

#[test]
fn reply_wakes_the_registered_waker_once() {
    let t = Table::new(1, 16, 1).unwrap();
    let s = t.start(b"", 0).unwrap();
    let (count, w) = counting_waker();
    assert!(t.register_waker(&s.ticket(), &w));
    assert!(t.register_waker(&s.ticket(), &w));
    t.on_reply(s.token.0, |_| true, echo(b""));
    t.on_reply(s.token.0, |_| true, echo(b""));
    assert_eq!(count.0.load(Ordering::Relaxed), 1);
}

#[test]
fn stale_tickets_are_refused() {
    let t = Table::new(1, 16, 4).unwrap();
    let s = t.start(b"", 0).unwrap();
    t.on_reply(s.token.0, |_| true, echo(b""));
    t.finish(s.ticket(), TxOutcome::Done).unwrap();
    let s2 = t.start(b"", 0).unwrap();
    assert_eq!(s2.slot, s.slot);
    assert_ne!(s2.generation, s.generation);
    let (_, w) = counting_waker();
    assert!(!t.register_waker(&s.ticket(), &w));
    assert_eq!(
        t.finish(s.ticket(), TxOutcome::Done),
        Err(Error::InvalidArgument)
    );
    assert_eq!(t.state(&s2.ticket()), Ok(TransferState::InFlight));
    assert_eq!(t.state(&Ticket::new(0, 9, 0)), Err(Error::InvalidArgument));
}

#[test]
fn take_frees_only_on_ok() {
    let t = Table::new(1, 16, 1).unwrap();
    let s = t.start(b"", 3).unwrap();
    let r: Result<u32> = t.take(&s.ticket(), |st, _| match st {
        TransferState::Done(_) => Ok(0),
        _ => Err(Error::InvalidArgument),
    });
    assert_eq!(r, Err(Error::InvalidArgument));
    t.on_reply(
        s.token.0,
        |_| true,
        |_, e| {
            *e = 42;
            Ok(0)
        },
    );
    assert_eq!(t.take(&s.ticket(), |_, e| Ok(core::mem::take(e))), Ok(42));
    assert_eq!(t.pool().free_count(), 1);
    assert_eq!(t.state(&s.ticket()), Err(Error::InvalidArgument));
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum M {
    InFlight,
    Done,
    Failed,
    Abandoned,
}

#[derive(Debug, Clone)]
enum Op {
    Start,
    Reply(usize, bool),
    Finish(usize, bool),
    FailAll,
    StrayToken(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Start),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Op::Reply(i, ok)),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(i, t)| Op::Finish(i, t)),
        1 => Just(Op::FailAll),
        1 => (0u32..64).prop_map(Op::StrayToken),
    ]
}

/// Operations per model run: fewer under Miri, which interprets every one.
const MODEL_OPS: usize = if cfg!(miri) { 40 } else { 300 };

proptest! {
    /// Against a model: states, buffer ownership, token quarantine and every counter.
    #[test]
    fn matches_model(ops in proptest::collection::vec(op(), 1..MODEL_OPS)) {
        const CAP: usize = 4;
        let t = Table::new(CAP, 8, 3).unwrap();
        // Live transfers: what was started, the model state, whether the caller still holds
        // the ticket.
        let mut live: Vec<(StartedTransfer, M, bool)> = Vec::new();
        let mut want = Stats { pool_capacity: CAP as u64, ..Stats::default() };
        for op in ops {
            match op {
                Op::Start => match t.start(b"r", 0) {
                    Ok(s) => {
                        prop_assert!(live.len() < CAP);
                        prop_assert!(live.iter().all(|(o, _, _)| o.token != s.token));
                        live.push((s, M::InFlight, true));
                        want.sent += 1;
                    }
                    Err(e) => {
                        prop_assert_eq!(e, Error::Busy);
                        prop_assert_eq!(live.len(), CAP);
                        want.busy += 1;
                    }
                },
                Op::Reply(i, ok) if !live.is_empty() => {
                    let i = i % live.len();
                    let (s, m, _) = live[i];
                    let r = t.on_reply(s.token.0, |_| true, |b, _| {
                        if ok { b.write(b"ab").map(|()| 2) } else { Err(Error::Cancelled) }
                    });
                    match m {
                        M::InFlight if ok => {
                            prop_assert_eq!(r, ReplyOutcome::Completed);
                            live[i].1 = M::Done;
                            want.completed += 1;
                        }
                        M::InFlight => {
                            prop_assert_eq!(r, ReplyOutcome::Failed);
                            live[i].1 = M::Failed;
                            want.protocol_errors += 1;
                        }
                        M::Abandoned => {
                            prop_assert_eq!(r, ReplyOutcome::Late);
                            live.swap_remove(i);
                            want.late_replies += 1;
                        }
                        M::Done | M::Failed => {
                            prop_assert_eq!(r, ReplyOutcome::Duplicate);
                            want.duplicate_replies += 1;
                        }
                    }
                }
                Op::Finish(i, timed_out) if live.iter().any(|l| l.2) => {
                    let held: Vec<usize> = (0..live.len()).filter(|&j| live[j].2).collect();
                    let i = held[i % held.len()];
                    let (s, m, _) = live[i];
                    let outcome = if timed_out { TxOutcome::TimedOut } else { TxOutcome::Cancelled };
                    prop_assert_eq!(t.finish(s.ticket(), outcome), Ok(()));
                    match m {
                        M::InFlight => {
                            live[i] = (s, M::Abandoned, false);
                            want.timed_out += u64::from(timed_out);
                        }
                        _ => {
                            live.swap_remove(i);
                        }
                    }
                }
                Op::FailAll => {
                    t.fail_all(Error::Shutdown);
                    live.retain(|l| l.1 != M::Abandoned);
                    for l in live.iter_mut().filter(|l| l.1 == M::InFlight) {
                        l.1 = M::Failed;
                    }
                }
                Op::StrayToken(tok) => {
                    if live.iter().all(|l| l.0.token.0 != tok) {
                        prop_assert_eq!(t.on_reply(tok, |_| true, echo(b"")), ReplyOutcome::Unknown);
                        want.unknown_replies += 1;
                    }
                }
                Op::Reply(..) | Op::Finish(..) => {}
            }
            // `sent` is the backend's to count.
            let mut got = t.stats();
            got.sent = want.sent;
            want.pool_free = (CAP - live.len()) as u64;
            prop_assert_eq!(got, want);
            for (s, m, held) in &live {
                let lent = u32::from(*m == M::InFlight || *m == M::Abandoned);
                prop_assert_eq!(u32::from(t.remote_holds(s.slot)), lent);
                // `poll` agrees with the model whoever holds the ticket.
                let polled = t.poll(&s.ticket());
                let ok = match m {
                    M::InFlight => polled == Ok(false),
                    M::Done => polled == Ok(true),
                    M::Failed => polled.is_err() && polled != Err(Error::InvalidArgument),
                    M::Abandoned => polled == Err(Error::InvalidArgument),
                };
                prop_assert!(ok, "{:?} polled {:?}", m, polled);
                if *held {
                    let st = t.state(&s.ticket()).unwrap();
                    let ok = matches!(
                        (m, st),
                        (M::InFlight, TransferState::InFlight)
                            | (M::Done, TransferState::Done(2))
                            | (M::Failed, TransferState::Failed(_))
                    );
                    prop_assert!(ok, "{:?} vs {:?}", m, st);
                }
            }
        }
    }
}
