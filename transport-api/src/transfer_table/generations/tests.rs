use alloc::vec::Vec;

use proptest::prelude::*;

use crate::transfer_table::{
    EntryPart, Generations, ReplyOutcome, Shared, StartedTransfer, TransferState, TransferTable,
};
use crate::{Error, Stats, TxOutcome};

/// The backend part of these tests: the session a transfer belongs to.
type Table = TransferTable<u8, Shared, Generations>;

impl EntryPart<Generations> for u8 {
    fn reset(&mut self) {
        *self = 0;
    }
}

fn table(count: usize) -> Table {
    TransferTable::with_generations(count, (1 << 52) - 1, || 0).unwrap()
}

fn wide(s: &StartedTransfer) -> u64 {
    (u64::from(s.token.0) << 32) | u64::from(s.generation)
}

fn reply(t: &Table, s: &StartedTransfer, accept: bool) -> ReplyOutcome {
    t.on_reply_id(s.slot, wide(s), |_| accept, |_, _| Ok(0))
}

fn sent(t: &Table, session: u8) -> StartedTransfer {
    let s = t
        .reserve(|p| {
            *p = session;
            Ok(())
        })
        .unwrap();
    t.send_with(&s.ticket(), |_| Ok::<(), ()>(()))
        .unwrap()
        .unwrap();
    s
}

#[test]
fn ids_are_index_and_a_table_wide_generation() {
    let t = Table::with_generations(2, 0xF, || 0).unwrap();
    let gens: Vec<(u32, u64)> = (0..20)
        .map(|_| {
            let s = sent(&t, 0);
            assert_eq!(reply(&t, &s, true), ReplyOutcome::Completed);
            t.finish(s.ticket(), TxOutcome::Done).unwrap();
            (s.slot, wide(&s))
        })
        .collect();
    // One counter for the table, masked; the lowest free entry first.
    assert!(gens
        .iter()
        .enumerate()
        .all(|(i, &(slot, g))| slot == 0 && g == i as u64 & 0xF));
    assert_eq!(t.tokens_in_use(), 0);
}

#[test]
fn a_reserved_transfer_takes_no_reply_and_finish_frees_it() {
    let t = table(1);
    let s = t.reserve(|_| Ok(())).unwrap();
    assert_eq!(t.state(&s.ticket()), Ok(TransferState::InFlight));
    assert!(!t.remote_holds(s.slot));
    assert_eq!(reply(&t, &s, true), ReplyOutcome::Unknown);
    assert_eq!(t.reserve(|_| Ok(())).err(), Some(Error::Busy));
    t.finish(s.ticket(), TxOutcome::Done).unwrap();
    let st = t.stats();
    assert_eq!((st.unknown_replies, st.busy, st.pool_free), (1, 1, 1));
    // A failing `prepare` leaves nothing reserved.
    assert_eq!(
        t.reserve(|_| Err(Error::TooLarge)).err(),
        Some(Error::TooLarge)
    );
    assert_eq!(t.free_count(), 1);
}

#[test]
fn send_with_lends_only_on_ok() {
    let t = table(1);
    let s = t.reserve(|_| Ok(())).unwrap();
    assert_eq!(t.send_with(&s.ticket(), |_| Err::<(), _>(7)), Ok(Err(7)));
    assert!(!t.remote_holds(s.slot));
    assert_eq!(t.send_with(&s.ticket(), |p| Ok::<_, ()>(*p)), Ok(Ok(0)));
    assert!(t.remote_holds(s.slot));
    assert_eq!(
        t.send_with(&s.ticket(), |_| Ok::<(), ()>(())),
        Err(Error::InvalidArgument),
        "sent already"
    );
}

#[test]
fn a_late_reply_is_reaped_not_freed_and_a_resume_keeps_its_outcome() {
    let t = table(2);
    let s = sent(&t, 1);
    t.finish(s.ticket(), TxOutcome::TimedOut).unwrap();
    assert_eq!(t.zombies(), 1);
    assert_eq!(reply(&t, &s, true), ReplyOutcome::Late);
    assert_eq!(
        (t.zombies(), t.free_count()),
        (0, 1),
        "the reply path never frees"
    );
    assert_eq!(reply(&t, &s, true), ReplyOutcome::Duplicate);
    assert_eq!(
        t.poll(&s.ticket()),
        Err(Error::InvalidArgument),
        "the caller let go"
    );
    let back = t.resume(|p| *p == 1).unwrap();
    assert_eq!(back, s);
    assert_eq!(t.poll(&back.ticket()), Ok(true));
    assert_eq!(t.reap(), 0, "resumed, so not reaped");
    t.finish(back.ticket(), TxOutcome::Done).unwrap();
    assert_eq!(t.free_count(), 2);
    let st = t.stats();
    assert_eq!(
        (st.late_replies, st.duplicate_replies, st.timed_out),
        (1, 1, 1)
    );
}

#[test]
fn sweeps_and_releases_pick_their_transfers() {
    let t = table(4);
    let (a, b, gone) = (sent(&t, 1), sent(&t, 2), sent(&t, 1));
    let building = t.reserve(|p| {
        *p = 1;
        Ok(())
    });
    let building = building.unwrap();
    t.finish(gone.ticket(), TxOutcome::Cancelled).unwrap();
    assert_eq!(
        t.reclaim_where(Error::Shutdown, |p| *p == 1, |_, _, _| {}, drop),
        2
    );
    assert_eq!(t.poll(&a.ticket()), Err(Error::Shutdown));
    assert_eq!(t.poll(&b.ticket()), Ok(false));
    assert_eq!(t.reap(), 1, "the abandoned one, failed");
    assert_eq!(t.release_where(|p| *p == 1), 1, "not the one being built");
    assert_eq!(t.state(&a.ticket()), Err(Error::InvalidArgument));
    assert!(!t.fail_sent(&a.ticket(), Error::Cancelled, |_| {}));
    assert!(t.fail_sent(&b.ticket(), Error::Cancelled, |p| *p = 9));
    assert_eq!(t.poll(&b.ticket()), Err(Error::Cancelled));
    assert!(!t.remote_holds(b.slot));
    t.finish(b.ticket(), TxOutcome::Done).unwrap();
    t.finish(building.ticket(), TxOutcome::Done).unwrap();
    assert_eq!(t.free_count(), 4);
}

/// Model states of a transfer in a table with generations.
#[derive(Debug, Clone, Copy, PartialEq)]
enum M {
    Reserved,
    InFlight,
    Done,
    Failed,
    /// Given up on, the remote still holding it.
    Abandoned,
    /// Given up on and settled (done or failed), waiting for `reap`.
    Reap(bool),
}

#[derive(Debug, Clone)]
enum Op {
    Reserve(u8),
    Send(usize),
    /// A reply to live transfer `i`, with the backend's check passing or not.
    Reply(usize, bool),
    Finish(usize),
    FailSent(usize),
    Reap,
    Sweep(u8),
    Release(u8),
    Resume(u8),
    Stale(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..2).prop_map(Op::Reserve),
        4 => any::<usize>().prop_map(Op::Send),
        6 => (any::<usize>(), proptest::bool::weighted(0.9)).prop_map(|(i, ok)| Op::Reply(i, ok)),
        3 => any::<usize>().prop_map(Op::Finish),
        1 => any::<usize>().prop_map(Op::FailSent),
        2 => Just(Op::Reap),
        1 => (0u8..2).prop_map(Op::Sweep),
        1 => (0u8..2).prop_map(Op::Release),
        2 => (0u8..2).prop_map(Op::Resume),
        1 => any::<usize>().prop_map(Op::Stale),
    ]
}

/// Operations per model run: fewer under Miri, which interprets every one.
const MODEL_OPS: usize = if cfg!(miri) { 40 } else { 300 };

proptest! {
    /// Against a model: reservation, the deferred free, sweeps and releases by session, the
    /// resume, and every counter.
    #[test]
    fn generations_match_model(ops in proptest::collection::vec(op(), 1..MODEL_OPS)) {
        run_model(&ops)?;
    }
}

/// One live transfer: what was started, its session, the model state, whether the caller holds
/// the ticket.
type Live = (StartedTransfer, u8, M, bool);

fn held(live: &[Live], i: usize) -> Option<usize> {
    let h: Vec<usize> = (0..live.len()).filter(|&j| live[j].3).collect();
    (!h.is_empty()).then(|| h[i % h.len()])
}

fn run_model(ops: &[Op]) -> core::result::Result<(), TestCaseError> {
    const CAP: usize = 4;
    let t = table(CAP);
    let mut live: Vec<Live> = Vec::new();
    let mut want = Stats {
        pool_capacity: CAP as u64,
        ..Stats::default()
    };
    for op in ops.iter().cloned() {
        match op {
            Op::Reserve(session) => match t.reserve(|p| {
                *p = session;
                Ok(())
            }) {
                Ok(s) => {
                    prop_assert!(live.len() < CAP);
                    live.push((s, session, M::Reserved, true));
                }
                Err(e) => {
                    prop_assert_eq!(e, Error::Busy);
                    prop_assert_eq!(live.len(), CAP);
                    want.busy += 1;
                }
            },
            Op::Send(i) => {
                if let Some(i) = held(&live, i) {
                    let r = t.send_with(&live[i].0.ticket(), |p| Ok::<u8, ()>(*p));
                    if live[i].2 == M::Reserved {
                        prop_assert_eq!(r, Ok(Ok(live[i].1)));
                        live[i].2 = M::InFlight;
                        want.sent += 1;
                    } else {
                        prop_assert_eq!(r, Err(Error::InvalidArgument));
                    }
                }
            }
            Op::Reply(i, accept) if !live.is_empty() => {
                let i = i % live.len();
                let r = reply(&t, &live[i].0, accept);
                let m = live[i].2;
                match m {
                    M::Reserved => {
                        prop_assert_eq!(r, ReplyOutcome::Unknown);
                        want.unknown_replies += 1;
                    }
                    M::InFlight | M::Abandoned if !accept => {
                        prop_assert_eq!(r, ReplyOutcome::Rejected);
                        want.protocol_errors += 1;
                    }
                    M::InFlight => {
                        prop_assert_eq!(r, ReplyOutcome::Completed);
                        live[i].2 = M::Done;
                        want.completed += 1;
                    }
                    M::Abandoned => {
                        prop_assert_eq!(r, ReplyOutcome::Late);
                        live[i].2 = M::Reap(true);
                        want.late_replies += 1;
                    }
                    M::Done | M::Failed | M::Reap(_) => {
                        prop_assert_eq!(r, ReplyOutcome::Duplicate);
                        want.duplicate_replies += 1;
                    }
                }
            }
            Op::Finish(i) => {
                if let Some(i) = held(&live, i) {
                    prop_assert_eq!(t.finish(live[i].0.ticket(), TxOutcome::Cancelled), Ok(()));
                    if live[i].2 == M::InFlight {
                        live[i].2 = M::Abandoned;
                        live[i].3 = false;
                    } else {
                        live.swap_remove(i);
                    }
                }
            }
            Op::FailSent(i) => {
                if let Some(i) = held(&live, i) {
                    let failed = t.fail_sent(&live[i].0.ticket(), Error::Cancelled, |_| {});
                    prop_assert_eq!(failed, live[i].2 == M::InFlight);
                    if failed {
                        live[i].2 = M::Failed;
                        // Never reached the remote: not sent after all.
                        want.sent -= 1;
                    }
                }
            }
            Op::Reap => {
                let before = live.len();
                live.retain(|l| !matches!(l.2, M::Reap(_)));
                prop_assert_eq!(t.reap(), before - live.len());
            }
            Op::Sweep(session) => {
                let mut n = 0;
                for l in live.iter_mut().filter(|l| l.1 == session) {
                    match l.2 {
                        M::InFlight => l.2 = M::Failed,
                        M::Abandoned => l.2 = M::Reap(false),
                        _ => continue,
                    }
                    n += 1;
                }
                let got = t.reclaim_where(Error::Shutdown, |p| *p == session, |_, _, _| {}, drop);
                prop_assert_eq!(got, n);
            }
            Op::Release(session) => {
                let before = live.len();
                live.retain(|l| l.1 != session || l.2 == M::Reserved);
                prop_assert_eq!(t.release_where(|p| *p == session), before - live.len());
            }
            Op::Resume(session) => {
                // The lowest entry of the session waiting to be resumed.
                let pick = (0..live.len())
                    .filter(|&j| {
                        live[j].1 == session && matches!(live[j].2, M::Abandoned | M::Reap(_))
                    })
                    .min_by_key(|&j| live[j].0.slot);
                let got = t.resume(|p| *p == session);
                match pick {
                    Some(j) => {
                        prop_assert_eq!(got, Some(live[j].0));
                        live[j].2 = match live[j].2 {
                            M::Reap(true) => M::Done,
                            M::Reap(false) => M::Failed,
                            _ => M::InFlight,
                        };
                        live[j].3 = true;
                    }
                    None => prop_assert_eq!(got, None),
                }
            }
            Op::Stale(i) if !live.is_empty() => {
                let s = live[i % live.len()].0;
                let r = t.on_reply_id(s.slot, wide(&s) + 1, |_| true, |_, _| Ok(0));
                prop_assert_eq!(r, ReplyOutcome::Unknown);
                want.unknown_replies += 1;
            }
            Op::Reply(..) | Op::Stale(_) => {}
        }
        want.pool_free = (CAP - live.len()) as u64;
        prop_assert_eq!(t.stats(), want);
        let zombies = live.iter().filter(|l| l.2 == M::Abandoned).count();
        prop_assert_eq!(t.zombies(), zombies);
        for (s, _, m, held) in &live {
            prop_assert_eq!(
                t.remote_holds(s.slot),
                matches!(m, M::InFlight | M::Abandoned)
            );
            let st = t.state(&s.ticket());
            let ok = match (m, st) {
                (M::Reserved | M::InFlight, Ok(TransferState::InFlight)) => *held,
                (M::Done, Ok(TransferState::Done(0)))
                | (M::Failed, Ok(TransferState::Failed(_))) => *held,
                (M::Abandoned, Ok(TransferState::Abandoned)) => !*held,
                // Settled and waiting for `reap`: no ticket reaches it.
                (M::Reap(_), Err(Error::InvalidArgument)) => !*held,
                _ => false,
            };
            prop_assert!(ok, "{:?} (held {}) vs {:?}", m, held, st);
        }
    }
    Ok(())
}
