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
fn finish_with_looks_at_a_live_transfer_then_ends_it_as_finish_does() {
    let t = Table::new(2, 16, 4).unwrap();
    // A completed transfer: `f` sees its state and part, then the entry is freed.
    let s = t.start(b"ping", 7).unwrap();
    t.on_reply(s.token.0, |_| true, echo(b"pong"));
    let mut seen = None;
    t.finish_with(s.ticket(), TxOutcome::Done, |st, e| {
        seen = Some((st, *e));
        *e = 9;
    })
    .unwrap();
    assert_eq!(seen, Some((TransferState::Done(4), 7)));
    assert_eq!(t.state(&s.ticket()), Err(Error::InvalidArgument), "freed");
    assert_eq!(t.stats().pool_free, 2);
    // Stale now: `f` does not run.
    let mut ran = false;
    assert_eq!(
        t.finish_with(s.ticket(), TxOutcome::Done, |_, _| ran = true),
        Err(Error::InvalidArgument)
    );
    assert!(!ran);
    // Still lent to the remote: abandoned as `finish` does (`f` runs once, before), and an
    // abandoned transfer is not live: a second `finish_with` does not run `f`.
    let a = t.start(b"", 1).unwrap();
    let mut runs = 0;
    t.finish_with(a.ticket(), TxOutcome::TimedOut, |st, _| {
        assert_eq!(st, TransferState::InFlight);
        runs += 1;
    })
    .unwrap();
    assert_eq!(t.stats().timed_out, 1);
    t.finish_with(a.ticket(), TxOutcome::Done, |_, _| runs += 1)
        .unwrap();
    assert_eq!(runs, 1);
    assert_eq!(
        t.stats().pool_free,
        1,
        "the abandoned transfer keeps its buffer"
    );
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

/// A reply that names its transfer twice is taken only when both names are the transfer's: the
/// token of one transfer in flight under the other's buffer index completes neither.
#[test]
fn a_reply_naming_two_transfers_completes_neither() {
    let t = Table::new(2, 16, 4).unwrap();
    let a = t.start(b"", 0).unwrap();
    let b = t.start(b"", 0).unwrap();
    assert_ne!(a.slot, b.slot);
    assert_eq!(
        t.on_reply_named(b.token.0, a.slot, |_| true, echo(b"x")),
        ReplyOutcome::Rejected
    );
    assert_eq!(t.state(&a.ticket()), Ok(TransferState::InFlight));
    assert_eq!(t.state(&b.ticket()), Ok(TransferState::InFlight));
    assert_eq!(t.stats().protocol_errors, 1);
    assert_eq!(
        t.on_reply_named(b.token.0 ^ 0x8, b.slot, |_| true, echo(b"x")),
        ReplyOutcome::Unknown,
        "a token nobody holds"
    );
    assert_eq!(
        t.on_reply_named(b.token.0, b.slot, |_| true, echo(b"y")),
        ReplyOutcome::Completed
    );
    assert_eq!(t.state(&b.ticket()), Ok(TransferState::Done(1)));
    assert_eq!(t.state(&a.ticket()), Ok(TransferState::InFlight));
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

#[test]
fn start_with_writes_the_token_and_undoes_on_error() {
    let t = Table::new(2, 16, 2).unwrap();
    let s = t
        .start_with(|tok, buf| buf.write(&tok.0.to_le_bytes()).map(|()| 5))
        .unwrap();
    t.pool()
        .get(s.slot)
        .unwrap()
        .with(|d| assert_eq!(d[..4], s.token.0.to_le_bytes()));
    assert_eq!(t.take(&s.ticket(), |_, e| Ok(*e)), Ok(5));
    let r = t.start_with(|_, _| Err(Error::Busy));
    assert_eq!(r.err(), Some(Error::Busy));
    let st = t.stats();
    assert_eq!((st.pool_free, st.busy), (2, 0), "undone, not counted");
    assert_eq!(t.tokens_in_use(), 0);
}

#[test]
fn reply_at_gives_back_then_delivers_and_hands_the_waker_over() {
    let t = Table::new(2, 16, 2).unwrap();
    let s = t.start(b"", 1).unwrap();
    let (count, w) = counting_waker();
    assert!(t.register_waker(&s.ticket(), &w));
    let order = core::cell::RefCell::new(Vec::new());
    let (r, waker) = t.on_reply_at(
        s.slot,
        |_, e| {
            order.borrow_mut().push("give back");
            *e = 2;
        },
        |_, e| {
            order.borrow_mut().push("deliver");
            assert_eq!(*e, 2);
            Ok(3)
        },
    );
    assert_eq!(
        (r, order.into_inner()),
        (ReplyOutcome::Completed, vec!["give back", "deliver"])
    );
    assert_eq!(count.0.load(Ordering::Relaxed), 0, "the caller wakes it");
    waker.unwrap().wake();
    assert_eq!(count.0.load(Ordering::Relaxed), 1);
    assert_eq!(t.state(&s.ticket()), Ok(TransferState::Done(3)));
    // The remote returns the buffer again, or one it never had: duplicates.
    let (r, _) = t.on_reply_at(s.slot, |_, _| panic!("not lent"), |_, _| Ok(0));
    assert_eq!(r, ReplyOutcome::Duplicate);
    let (r, _) = t.on_reply_at(1, |_, _| panic!("not lent"), |_, _| Ok(0));
    assert_eq!(r, ReplyOutcome::Duplicate);
    let (r, _) = t.on_reply_at(9, |_, _| {}, |_, _| Ok(0));
    assert_eq!(r, ReplyOutcome::Duplicate);
    assert_eq!(t.stats().duplicate_replies, 3);
    // A late one is given back, not delivered, and frees the entry.
    t.finish(s.ticket(), TxOutcome::Done).unwrap();
    let s = t.start(b"", 0).unwrap();
    t.finish(s.ticket(), TxOutcome::TimedOut).unwrap();
    let mut gave = false;
    let (r, w) = t.on_reply_at(s.slot, |_, _| gave = true, |_, _| panic!("late"));
    assert!(gave && w.is_none());
    assert_eq!(r, ReplyOutcome::Late);
    assert_eq!((t.pool().free_count(), t.tokens_in_use()), (2, 0));
}

#[test]
fn a_reply_naming_another_transfer_counts_as_unknown() {
    let t = Table::new(1, 16, 1).unwrap();
    let s = t.start(b"", 0).unwrap();
    let (r, _) = t.on_reply_at(
        s.slot,
        |_, _| {},
        |_, _| Err(Error::Protocol(ProtocolError::UnknownToken)),
    );
    assert_eq!(r, ReplyOutcome::Failed);
    let st = t.stats();
    assert_eq!((st.unknown_replies, st.protocol_errors), (1, 0));
    assert_eq!(
        t.poll(&s.ticket()),
        Err(Error::Protocol(ProtocolError::UnknownToken))
    );
}

#[test]
fn fail_pending_keeps_the_loan_until_reclaim() {
    let t = Table::new(3, 16, 2).unwrap();
    let a = t.start(b"", 0).unwrap();
    let b = t.start(b"", 0).unwrap();
    let c = t.start(b"", 0).unwrap();
    t.finish(c.ticket(), TxOutcome::TimedOut).unwrap();
    let (count, w) = counting_waker();
    assert!(t.register_waker(&a.ticket(), &w));
    let mut woken = Vec::new();
    t.fail_pending(Error::Shutdown, |w| woken.push(w));
    assert_eq!(woken.len(), 1);
    woken.drain(..).for_each(Waker::wake);
    assert_eq!(count.0.load(Ordering::Relaxed), 1);
    assert_eq!(t.poll(&a.ticket()), Err(Error::Shutdown));
    assert_eq!(t.poll(&b.ticket()), Err(Error::Shutdown));
    assert!(t.remote_holds(a.slot) && t.remote_holds(b.slot));
    // The caller lets go of `a` while the remote still holds its buffer: abandoned, kept.
    t.finish(a.ticket(), TxOutcome::Cancelled).unwrap();
    assert_eq!(t.timed_out_and_free(), (1, 0));
    let mut given = Vec::new();
    t.reclaim_all(
        Error::Cancelled,
        |i, _, _| given.push(i),
        |_| panic!("nothing in flight"),
    );
    given.sort_unstable();
    assert_eq!(given, vec![a.slot, b.slot, c.slot]);
    // `a` and `c` were abandoned: free; `b` keeps its first error.
    assert_eq!(t.poll(&b.ticket()), Err(Error::Shutdown));
    assert_eq!(t.timed_out_and_free(), (1, 2));
    t.finish(b.ticket(), TxOutcome::Cancelled).unwrap();
    assert_eq!((t.pool().free_count(), t.tokens_in_use()), (3, 0));
}

#[test]
fn inspect_sees_live_transfers_only() {
    let t = Table::new(1, 16, 1).unwrap();
    let s = t.start(b"hi", 4).unwrap();
    let r = t.inspect(&s.ticket(), |st, buf, e| {
        *e += 1;
        (st, buf.index(), *e)
    });
    assert_eq!(r, Ok((TransferState::InFlight, s.slot, 5)));
    t.finish(s.ticket(), TxOutcome::TimedOut).unwrap();
    assert_eq!(
        t.inspect(&s.ticket(), |st, _, _| st),
        Err(Error::InvalidArgument),
        "abandoned: the caller let go"
    );
}

#[test]
fn an_exclusive_table_runs_the_same_machine() {
    let t = TransferTable::<u32, Exclusive>::new(1, 16, 1).unwrap();
    let s = t.start(b"", 0).unwrap();
    assert_eq!(t.start(b"", 0).err(), Some(Error::Busy));
    let (r, _) = t.on_reply_at(s.slot, |_, _| {}, echo(b"ok"));
    assert_eq!(r, ReplyOutcome::Completed);
    let mut out = [0u8; 2];
    assert_eq!(t.fetch(&s.ticket(), &mut out), Ok(2));
    t.finish(s.ticket(), TxOutcome::Done).unwrap();
    let st = t.stats();
    assert_eq!((st.completed, st.busy, st.pool_free), (1, 1, 1));
}

impl<E: Default, L: Locking> TransferTable<E, L> {
    fn timed_out_and_free(&self) -> (u64, usize) {
        (self.stats().timed_out, self.pool().free_count())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum M {
    InFlight,
    Done,
    Failed,
    /// Failed by `fail_pending`, the buffer still lent.
    FailedLent,
    Abandoned,
}

#[derive(Debug, Clone)]
enum Op {
    Start,
    /// A reply to live transfer `i % len`, well-formed or not, by entry index or by token.
    Reply(usize, bool, bool),
    Finish(usize, bool),
    /// `abort` of the held transfer `i % held` (its message never left, as far as the
    /// caller knows).
    Abort(usize),
    FailAll,
    FailPending,
    StrayToken(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Start),
        6 => (any::<usize>(), any::<bool>(), any::<bool>())
            .prop_map(|(i, ok, at)| Op::Reply(i, ok, at)),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(i, t)| Op::Finish(i, t)),
        1 => any::<usize>().prop_map(Op::Abort),
        1 => Just(Op::FailAll),
        1 => Just(Op::FailPending),
        1 => (0u32..64).prop_map(Op::StrayToken),
    ]
}

/// Operations per model run: fewer under Miri, which interprets every one.
const MODEL_OPS: usize = if cfg!(miri) { 40 } else { 300 };

proptest! {
    /// Against a model: states, buffer ownership, token quarantine and every counter.
    #[test]
    fn matches_model(ops in proptest::collection::vec(op(), 1..MODEL_OPS)) {
        run_model::<Shared>(&ops)?;
    }

    /// The same model, entries without their own locks.
    #[test]
    fn exclusive_matches_model(ops in proptest::collection::vec(op(), 1..MODEL_OPS)) {
        run_model::<Exclusive>(&ops)?;
    }
}

fn run_model<L: Locking>(ops: &[Op]) -> core::result::Result<(), TestCaseError> {
    const CAP: usize = 4;
    let t = TransferTable::<u32, L>::new(CAP, 8, 3).unwrap();
    // Live transfers: what was started, the model state, whether the caller still holds
    // the ticket.
    let mut live: Vec<(StartedTransfer, M, bool)> = Vec::new();
    let mut want = Stats {
        pool_capacity: CAP as u64,
        ..Stats::default()
    };
    for op in ops.iter().cloned() {
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
            Op::Reply(i, ok, at) if !live.is_empty() => {
                let i = i % live.len();
                let (s, m, _) = live[i];
                // By token, a failure is a malformed reply; by index, one that names another
                // transfer (counted as unknown).
                let fail = if at {
                    Error::Protocol(ProtocolError::UnknownToken)
                } else {
                    Error::Cancelled
                };
                let deliver = |b: &PoolBuf, _: &mut u32| {
                    if ok {
                        b.write(b"ab").map(|()| 2)
                    } else {
                        Err(fail)
                    }
                };
                let r = if at {
                    let mut gave = false;
                    let (r, _) = t.on_reply_at(s.slot, |_, _| gave = true, deliver);
                    prop_assert_eq!(gave, r != ReplyOutcome::Duplicate);
                    r
                } else {
                    t.on_reply(s.token.0, |_| true, deliver)
                };
                match m {
                    M::InFlight if ok => {
                        prop_assert_eq!(r, ReplyOutcome::Completed);
                        live[i].1 = M::Done;
                        want.completed += 1;
                    }
                    M::InFlight => {
                        prop_assert_eq!(r, ReplyOutcome::Failed);
                        live[i].1 = M::Failed;
                        if at {
                            want.unknown_replies += 1;
                        } else {
                            want.protocol_errors += 1;
                        }
                    }
                    M::Abandoned => {
                        prop_assert_eq!(r, ReplyOutcome::Late);
                        live.swap_remove(i);
                        want.late_replies += 1;
                    }
                    // The buffer comes back; by token, the transfer already had its answer.
                    M::FailedLent if at => {
                        prop_assert_eq!(r, ReplyOutcome::Late);
                        live[i].1 = M::Failed;
                        want.late_replies += 1;
                    }
                    M::Done | M::Failed | M::FailedLent => {
                        prop_assert_eq!(r, ReplyOutcome::Duplicate);
                        want.duplicate_replies += 1;
                    }
                }
            }
            Op::Finish(i, timed_out) if live.iter().any(|l| l.2) => {
                let held: Vec<usize> = (0..live.len()).filter(|&j| live[j].2).collect();
                let i = held[i % held.len()];
                let (s, m, _) = live[i];
                let outcome = if timed_out {
                    TxOutcome::TimedOut
                } else {
                    TxOutcome::Cancelled
                };
                prop_assert_eq!(t.finish(s.ticket(), outcome), Ok(()));
                match m {
                    M::InFlight => {
                        live[i] = (s, M::Abandoned, false);
                        want.timed_out += u64::from(timed_out);
                    }
                    M::FailedLent => live[i] = (s, M::Abandoned, false),
                    _ => {
                        live.swap_remove(i);
                    }
                }
            }
            Op::Abort(i) if live.iter().any(|l| l.2) => {
                let held: Vec<usize> = (0..live.len()).filter(|&j| live[j].2).collect();
                let i = held[i % held.len()];
                let (s, m, _) = live.swap_remove(i);
                t.abort(s);
                // A message still on loan is taken off `sent`; one the remote answered (its
                // loan over) stays counted.
                if matches!(m, M::InFlight | M::FailedLent) {
                    want.sent -= 1;
                }
            }
            Op::FailAll => {
                t.fail_all(Error::Shutdown);
                live.retain(|l| l.1 != M::Abandoned);
                for l in live
                    .iter_mut()
                    .filter(|l| matches!(l.1, M::InFlight | M::FailedLent))
                {
                    l.1 = M::Failed;
                }
            }
            Op::FailPending => {
                let mut woken = 0;
                t.fail_pending(Error::Shutdown, |_| woken += 1);
                prop_assert_eq!(woken, 0, "no waker registered");
                for l in live.iter_mut().filter(|l| l.1 == M::InFlight) {
                    l.1 = M::FailedLent;
                }
            }
            Op::StrayToken(tok) => {
                if live.iter().all(|l| l.0.token.0 != tok) {
                    prop_assert_eq!(t.on_reply(tok, |_| true, echo(b"")), ReplyOutcome::Unknown);
                    want.unknown_replies += 1;
                }
            }
            Op::Reply(..) | Op::Finish(..) | Op::Abort(_) => {}
        }
        want.pool_free = (CAP - live.len()) as u64;
        prop_assert_eq!(t.stats(), want);
        for (s, m, held) in &live {
            let lent = u32::from(matches!(m, M::InFlight | M::Abandoned | M::FailedLent));
            prop_assert_eq!(u32::from(t.remote_holds(s.slot)), lent);
            // `poll` agrees with the model whoever holds the ticket.
            let polled = t.poll(&s.ticket());
            let ok = match m {
                M::InFlight => polled == Ok(false),
                M::Done => polled == Ok(true),
                M::Failed | M::FailedLent => {
                    polled.is_err() && polled != Err(Error::InvalidArgument)
                }
                M::Abandoned => polled == Err(Error::InvalidArgument),
            };
            prop_assert!(ok, "{:?} polled {:?}", m, polled);
            if *held {
                let st = t.state(&s.ticket()).unwrap();
                let ok = matches!(
                    (m, st),
                    (M::InFlight, TransferState::InFlight)
                        | (M::Done, TransferState::Done(2))
                        | (M::Failed | M::FailedLent, TransferState::Failed(_))
                );
                prop_assert!(ok, "{:?} vs {:?}", m, st);
                prop_assert_eq!(t.inspect(&s.ticket(), |st, _, _| st), Ok(st));
            }
        }
    }
    Ok(())
}

/// `poll` in every state of a transfer: fresh, in flight (and a ticket with another token or
/// generation), done, failed (also with the buffer still lent), abandoned, freed and reused with
/// the same token one generation on (the old ticket refused), taken, aborted; and a table with
/// generations: reserved, reaped, resumed, swept, released.
mod poll_in_every_state {
    use super::*;
    use crate::transfer_table::Generations;

    #[test]
    fn fresh_in_flight_and_done() {
        let t = Table::new(1, 8, 4).unwrap();
        // A fresh (free) entry: generation 0, token 0, nothing in flight.
        assert_eq!(t.poll(&Ticket::new(0, 0, 0)), Err(Error::InvalidArgument));
        let s = t.start(b"a", 0).unwrap();
        let x = s.ticket();
        assert_eq!(t.poll(&x), Ok(false));
        // Another token or generation on the same entry: refused under the lock.
        let other_token = Ticket::new(s.token.0 ^ 1, s.slot, s.generation);
        assert_eq!(t.poll(&other_token), Err(Error::InvalidArgument));
        let other_gen = Ticket::new(s.token.0, s.slot, s.generation + 1);
        assert_eq!(t.poll(&other_gen), Err(Error::InvalidArgument));
        let out_of_range = Ticket::new(s.token.0, 1, s.generation);
        assert_eq!(t.poll(&out_of_range), Err(Error::InvalidArgument));
        let r = t.on_reply(s.token.0, |_| true, |b, _| b.write(b"b").map(|()| 1));
        assert_eq!(r, ReplyOutcome::Completed);
        assert_eq!(t.poll(&x), Ok(true));
        t.finish(s.ticket(), TxOutcome::Done).unwrap();
        assert_eq!(t.poll(&x), Err(Error::InvalidArgument));
    }

    #[test]
    fn failed_and_failed_lent() {
        let t = Table::new(2, 8, 4).unwrap();
        let a = t.start(b"a", 0).unwrap();
        let r = t.on_reply(a.token.0, |_| true, |_, _| Err(Error::Cancelled));
        assert_eq!(r, ReplyOutcome::Failed);
        assert_eq!(t.poll(&a.ticket()), Err(Error::Cancelled));
        let b = t.start(b"b", 0).unwrap();
        t.fail_pending(Error::Shutdown, drop);
        assert_eq!(t.poll(&b.ticket()), Err(Error::Shutdown));
        // The reply still comes (the buffer back); the outcome stays.
        t.on_reply_at(b.slot, |_, _| {}, |_, _| Ok(0));
        assert_eq!(t.poll(&b.ticket()), Err(Error::Shutdown));
        t.fail_all(Error::Shutdown);
    }

    #[test]
    fn abandoned_is_not_pollable_and_its_late_reply_frees_it() {
        let t = Table::new(1, 8, 4).unwrap();
        let s = t.start(b"a", 0).unwrap();
        t.finish(s.ticket(), TxOutcome::TimedOut).unwrap();
        assert_eq!(t.poll(&s.ticket()), Err(Error::InvalidArgument));
        let r = t.on_reply(s.token.0, |_| true, |_, _| Ok(0));
        assert_eq!(r, ReplyOutcome::Late);
        assert_eq!(t.poll(&s.ticket()), Err(Error::InvalidArgument));
    }

    #[test]
    fn a_freed_and_reused_entry_refuses_the_old_ticket() {
        // One entry and 1-bit tokens: the third transfer has the first one's token again, on the
        // same entry, with a newer generation.
        let t = Table::new(1, 8, 1).unwrap();
        let first = t.start(b"a", 0).unwrap();
        t.on_reply(first.token.0, |_| true, |_, _| Ok(0));
        t.finish(first.ticket(), TxOutcome::Done).unwrap();
        let second = t.start(b"a", 0).unwrap();
        assert_eq!(t.poll(&first.ticket()), Err(Error::InvalidArgument));
        t.on_reply(second.token.0, |_| true, |_, _| Ok(0));
        t.finish(second.ticket(), TxOutcome::Done).unwrap();
        let third = t.start(b"a", 0).unwrap();
        assert_eq!((third.slot, third.token), (first.slot, first.token));
        assert_ne!(third.generation, first.generation);
        assert_eq!(t.poll(&first.ticket()), Err(Error::InvalidArgument));
        assert_eq!(t.poll(&second.ticket()), Err(Error::InvalidArgument));
        assert_eq!(t.poll(&third.ticket()), Ok(false));
        // Taken (a bulk transfer ending), the entry is free again.
        t.take(&third.ticket(), |_, _| Ok(())).unwrap();
        assert_eq!(t.poll(&third.ticket()), Err(Error::InvalidArgument));
        // And undone before it was sent.
        let fourth = t.start(b"a", 0).unwrap();
        assert_eq!(t.poll(&fourth.ticket()), Ok(false));
        t.abort(fourth);
        assert_eq!(t.poll(&fourth.ticket()), Err(Error::InvalidArgument));
    }

    #[test]
    fn generations_reserved_reaped_resumed_and_released() {
        let t =
            TransferTable::<u8, Shared, Generations>::with_generations(1, u64::MAX, || 0).unwrap();
        let s = t.reserve(|p| {
            *p = 1;
            Ok(())
        });
        let s = s.unwrap();
        let x = s.ticket();
        let id = (u64::from(s.token.0) << 32) | u64::from(s.generation);
        // Reserved counts as in flight (as `state` says).
        assert_eq!(t.poll(&x), Ok(false));
        t.send_with(&x, |_| Ok::<(), ()>(())).unwrap().unwrap();
        assert_eq!(t.poll(&x), Ok(false));
        // Abandoned, then its late reply: reaped, not pollable.
        t.finish(s.ticket(), TxOutcome::Cancelled).unwrap();
        assert_eq!(t.poll(&x), Err(Error::InvalidArgument));
        t.on_reply_id(s.slot, id, |_| true, |_, _| Ok(2));
        assert_eq!(t.poll(&x), Err(Error::InvalidArgument));
        // Resumed with its outcome.
        let back = t.resume(|p| *p == 1).unwrap();
        assert_eq!(t.poll(&back.ticket()), Ok(true));
        t.finish(back.ticket(), TxOutcome::Done).unwrap();
        // Abandoned in flight and resumed in flight: pollable again.
        let s = t.reserve(|p| {
            *p = 2;
            Ok(())
        });
        let s = s.unwrap();
        let x = s.ticket();
        t.send_with(&x, |_| Ok::<(), ()>(())).unwrap().unwrap();
        t.finish(s.ticket(), TxOutcome::Cancelled).unwrap();
        assert_eq!(t.poll(&x), Err(Error::InvalidArgument));
        let back = t.resume(|p| *p == 2).unwrap();
        assert_eq!(t.poll(&back.ticket()), Ok(false));
        // A sweep fails it; a release frees it.
        t.reclaim_where(Error::Shutdown, |_| true, |_, _, _| {}, drop);
        assert_eq!(t.poll(&back.ticket()), Err(Error::Shutdown));
        assert_eq!(t.release_where(|_| true), 1);
        assert_eq!(t.poll(&back.ticket()), Err(Error::InvalidArgument));
        // A sent transfer whose message never left fails.
        let x = t.reserve(|_| Ok(())).unwrap().ticket();
        t.send_with(&x, |_| Ok::<(), ()>(())).unwrap().unwrap();
        assert!(t.fail_sent(&x, Error::Cancelled, |_| {}));
        assert_eq!(t.poll(&x), Err(Error::Cancelled));
    }
}

/// An entry's lock and the fields every step reads (the names a ticket is matched on, the
/// state, the buffer) are on its first cache line, whatever the backend's part weighs; the
/// lock comes in front of the entry (the lock shim keeps it so), and every entry starts a line.
/// With the fields in the order Rust picks, or the lock after the entry, a step that matches a
/// ticket would touch two lines.
#[cfg(not(loom))]
#[test]
fn an_entrys_lock_and_hot_fields_share_its_first_line() {
    use core::mem::{offset_of, size_of};
    fn check<E: Default>(what: &str) {
        let table: TransferTable<E> = TransferTable::new(4, 16, 8).unwrap();
        for cell in table.entries.iter() {
            let start = core::ptr::from_ref(&**cell) as usize;
            assert_eq!(start % 64, 0, "{what}: an entry does not start a line");
            let e = locking::Shared::hold(cell);
            let at = core::ptr::from_ref(&*e) as usize - start;
            // Something (the lock word) is in front of the entry, within its first word.
            assert!(
                (1..=8).contains(&at),
                "{what}: the entry is at {at} in its cell"
            );
            type En<E> = Entry<E, ids::Tokens>;
            let hot_end = [
                offset_of!(En<E>, generation) + size_of::<u32>(),
                offset_of!(En<E>, token) + size_of::<u32>(),
                offset_of!(En<E>, state) + size_of::<TransferState>(),
                offset_of!(En<E>, buf) + size_of::<Option<PoolBuf>>(),
                offset_of!(En<E>, lent) + 1,
                offset_of!(En<E>, reap) + 1,
            ]
            .into_iter()
            .max()
            .unwrap();
            assert!(
                at + hot_end <= 64,
                "{what}: the hot fields end at byte {} of the entry's cell",
                at + hot_end
            );
        }
    }
    check::<()>("no part");
    check::<[[u64; 8]; 5]>("a 320-byte part");
}
