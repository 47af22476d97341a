//! The poll word in every state: `poll` answers without the entry's lock exactly for the
//! transfer in flight on the entry, and its answers are the locked path's.

use super::in_flight;
use crate::transfer_table::{Exclusive, Generations, Shared, TransferTable};
use crate::transport::Ticket;
use crate::{Error, TxOutcome};

type Table = TransferTable<u32>;

/// `poll`'s answer for `x`, and whether it came from the poll word.
fn polled(t: &Table, x: &Ticket) -> (crate::Result<bool>, bool) {
    assert!(t.words_mirror_entries());
    (t.poll(x), t.in_flight_unlocked(x))
}

#[test]
fn the_word_packs_generation_and_token_and_refuses_wide_tokens() {
    assert_eq!(in_flight(0, 0), 1);
    assert_eq!(in_flight(2, 3), (2 << 32) | (3 << 1) | 1);
    assert_eq!(in_flight(u32::MAX, (1 << 31) - 1), u64::MAX);
    assert_eq!(
        in_flight(1, 1 << 31),
        0,
        "a token wider than 31 bits is never published"
    );
}

#[test]
fn fresh_in_flight_and_done() {
    let t = Table::new(1, 8, 4).unwrap();
    // A fresh (free) entry: generation 0, token 0, nothing in flight.
    assert_eq!(
        polled(&t, &Ticket::new(0, 0, 0)),
        (Err(Error::InvalidArgument), false)
    );
    let s = t.start(b"a", 0).unwrap();
    let x = s.ticket();
    assert_eq!(polled(&t, &x), (Ok(false), true));
    // Another token or generation on the same entry: refused under the lock.
    let other_token = Ticket::new(s.token.0 ^ 1, s.slot, s.generation);
    assert_eq!(
        polled(&t, &other_token),
        (Err(Error::InvalidArgument), false)
    );
    let other_gen = Ticket::new(s.token.0, s.slot, s.generation + 1);
    assert_eq!(polled(&t, &other_gen), (Err(Error::InvalidArgument), false));
    let out_of_range = Ticket::new(s.token.0, 1, s.generation);
    assert_eq!(
        polled(&t, &out_of_range),
        (Err(Error::InvalidArgument), false)
    );
    let r = t.on_reply(s.token.0, |_| true, |b, _| b.write(b"b").map(|()| 1));
    assert_eq!(r, crate::ReplyOutcome::Completed);
    assert_eq!(polled(&t, &x), (Ok(true), false));
    t.finish(s.ticket(), TxOutcome::Done).unwrap();
    assert_eq!(polled(&t, &x), (Err(Error::InvalidArgument), false));
}

#[test]
fn failed_and_failed_lent() {
    let t = Table::new(2, 8, 4).unwrap();
    let a = t.start(b"a", 0).unwrap();
    let r = t.on_reply(a.token.0, |_| true, |_, _| Err(Error::Cancelled));
    assert_eq!(r, crate::ReplyOutcome::Failed);
    assert_eq!(polled(&t, &a.ticket()), (Err(Error::Cancelled), false));
    let b = t.start(b"b", 0).unwrap();
    t.fail_pending(Error::Shutdown, drop);
    assert_eq!(polled(&t, &b.ticket()), (Err(Error::Shutdown), false));
    // The reply still comes (the buffer back); the outcome stays.
    t.on_reply_at(b.slot, |_, _| {}, |_, _| Ok(0));
    assert_eq!(polled(&t, &b.ticket()), (Err(Error::Shutdown), false));
    t.fail_all(Error::Shutdown);
    assert!(t.words_mirror_entries());
}

#[test]
fn abandoned_is_not_pollable_and_its_late_reply_frees_it() {
    let t = Table::new(1, 8, 4).unwrap();
    let s = t.start(b"a", 0).unwrap();
    t.finish(s.ticket(), TxOutcome::TimedOut).unwrap();
    assert_eq!(
        polled(&t, &s.ticket()),
        (Err(Error::InvalidArgument), false)
    );
    let r = t.on_reply(s.token.0, |_| true, |_, _| Ok(0));
    assert_eq!(r, crate::ReplyOutcome::Late);
    assert_eq!(
        polled(&t, &s.ticket()),
        (Err(Error::InvalidArgument), false)
    );
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
    assert_eq!(
        polled(&t, &first.ticket()),
        (Err(Error::InvalidArgument), false)
    );
    t.on_reply(second.token.0, |_| true, |_, _| Ok(0));
    t.finish(second.ticket(), TxOutcome::Done).unwrap();
    let third = t.start(b"a", 0).unwrap();
    assert_eq!((third.slot, third.token), (first.slot, first.token));
    assert_ne!(third.generation, first.generation);
    assert_eq!(
        polled(&t, &first.ticket()),
        (Err(Error::InvalidArgument), false)
    );
    assert_eq!(
        polled(&t, &second.ticket()),
        (Err(Error::InvalidArgument), false)
    );
    assert_eq!(polled(&t, &third.ticket()), (Ok(false), true));
    // Taken (a bulk transfer ending), the entry is free again.
    t.take(&third.ticket(), |_, _| Ok(())).unwrap();
    assert_eq!(
        polled(&t, &third.ticket()),
        (Err(Error::InvalidArgument), false)
    );
    // And undone before it was sent.
    let fourth = t.start(b"a", 0).unwrap();
    assert_eq!(polled(&t, &fourth.ticket()), (Ok(false), true));
    t.abort(fourth);
    assert_eq!(
        polled(&t, &fourth.ticket()),
        (Err(Error::InvalidArgument), false)
    );
}

#[test]
fn an_exclusive_table_always_takes_the_entry() {
    let t = TransferTable::<u32, Exclusive>::new(1, 8, 4).unwrap();
    let s = t.start(b"a", 0).unwrap();
    assert_eq!(t.poll(&s.ticket()), Ok(false));
    assert!(!t.in_flight_unlocked(&s.ticket()));
}

#[test]
fn generations_reserved_reaped_resumed_and_released() {
    let t = TransferTable::<u8, Shared, Generations>::with_generations(1, u64::MAX, || 0).unwrap();
    let s = t.reserve(|p| {
        *p = 1;
        Ok(())
    });
    let s = s.unwrap();
    let x = s.ticket();
    let id = (u64::from(s.token.0) << 32) | u64::from(s.generation);
    let polled = |x: &Ticket| {
        assert!(t.words_mirror_entries());
        (t.poll(x), t.in_flight_unlocked(x))
    };
    // Reserved counts as in flight (as `state` says).
    assert_eq!(polled(&x), (Ok(false), true));
    t.send_with(&x, |_| Ok::<(), ()>(())).unwrap().unwrap();
    assert_eq!(polled(&x), (Ok(false), true));
    // Abandoned, then its late reply: reaped, not pollable.
    t.finish(s.ticket(), TxOutcome::Cancelled).unwrap();
    assert_eq!(polled(&x), (Err(Error::InvalidArgument), false));
    t.on_reply_id(s.slot, id, |_| true, |_, _| Ok(2));
    assert_eq!(polled(&x), (Err(Error::InvalidArgument), false));
    // Resumed with its outcome.
    let back = t.resume(|p| *p == 1).unwrap();
    assert_eq!(polled(&back.ticket()), (Ok(true), false));
    t.finish(back.ticket(), TxOutcome::Done).unwrap();
    // Abandoned in flight and resumed in flight: pollable again, without the lock.
    let s = t.reserve(|p| {
        *p = 2;
        Ok(())
    });
    let s = s.unwrap();
    let x = s.ticket();
    t.send_with(&x, |_| Ok::<(), ()>(())).unwrap().unwrap();
    t.finish(s.ticket(), TxOutcome::Cancelled).unwrap();
    assert_eq!(polled(&x), (Err(Error::InvalidArgument), false));
    let back = t.resume(|p| *p == 2).unwrap();
    assert_eq!(polled(&back.ticket()), (Ok(false), true));
    // A sweep fails it; a release frees it.
    t.reclaim_where(Error::Shutdown, |_| true, |_, _, _| {}, drop);
    assert_eq!(polled(&back.ticket()), (Err(Error::Shutdown), false));
    assert_eq!(t.release_where(|_| true), 1);
    assert_eq!(polled(&back.ticket()), (Err(Error::InvalidArgument), false));
    // A sent transfer whose message never left fails.
    let x = t.reserve(|_| Ok(())).unwrap().ticket();
    t.send_with(&x, |_| Ok::<(), ()>(())).unwrap().unwrap();
    assert!(t.fail_sent(&x, Error::Cancelled, |_| {}));
    assert_eq!(polled(&x), (Err(Error::Cancelled), false));
}
