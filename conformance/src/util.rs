//! Helpers shared by the scenarios.

use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{echo_reply, Fixture};
use fwipc_transport_api::{
    call, wait_done, yield_now, Completion, Deadline, Request, Result, StdClock, Ticket, Transport,
    TxOutcome, Wait,
};

/// A deterministic xorshift generator (no dependency, reproducible failures).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}

/// A payload of `len` bytes whose first 4 bytes (if room) are `tag`, rest pseudo-random.
pub(crate) fn tagged_payload(tag: u32, len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut p = vec![0u8; len];
    rng.fill(&mut p);
    let n = len.min(4);
    p[..n].copy_from_slice(&tag.to_le_bytes()[..n]);
    p
}

pub(crate) fn expected(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; payload.len()];
    echo_reply(payload, &mut out);
    out
}

pub(crate) fn request<'a, F: Fixture>(fx: &F, payload: &'a [u8]) -> Request<'a> {
    let r = Request::new(fx.echo_target(), payload);
    match fx.completion() {
        Completion::Polled => r.polled(),
        Completion::Interrupt => r,
    }
}

/// The waiting strategy for the fixture's mode: completion (park) for interrupt mode, spin-then-
/// yield for polled mode.
pub(crate) fn with_wait<F: Fixture, R>(fx: &F, f: impl FnOnce(Wait<'_>) -> R) -> R {
    match fx.completion() {
        Completion::Polled => f(Wait::SpinThenYield {
            spins: 64,
            relax: &yield_now,
        }),
        Completion::Interrupt => {
            let parker = fwipc_transport_api::ThreadParker::new();
            f(Wait::Completion(&parker))
        }
    }
}

/// One echo call; returns the reply bytes.
pub(crate) fn echo<F: Fixture>(fx: &F, payload: &[u8], timeout: Duration) -> Result<Vec<u8>> {
    let clock = StdClock::new();
    let mut out = vec![0u8; fx.transport().max_msg_size().max(payload.len())];
    let n = with_wait(fx, |w| {
        call(
            fx.transport(),
            &clock,
            &request(fx, payload),
            &mut out,
            timeout,
            w,
        )
    })?;
    out.truncate(n);
    Ok(out)
}

/// Echo and check the reply matches.
pub(crate) fn echo_ok<F: Fixture>(fx: &F, payload: &[u8]) {
    let got = echo(fx, payload, fx.reply_timeout())
        .unwrap_or_else(|e| panic!("{}: echo of {} bytes failed: {e}", F::NAME, payload.len()));
    assert_eq!(
        got,
        expected(payload),
        "{}: reply does not match request",
        F::NAME
    );
}

/// Wait for a ticket, fetch, mark done; returns the reply.
pub(crate) fn finish<F: Fixture>(fx: &F, ticket: Ticket, timeout: Duration) -> Result<Vec<u8>> {
    let clock = StdClock::new();
    let t = fx.transport();
    let r = with_wait(fx, |w| {
        wait_done(t, &ticket, &clock, Deadline::after(&clock, timeout), w)
    });
    let mut out = vec![0u8; t.max_msg_size()];
    let fetched = r.and_then(|()| t.fetch_response(&ticket, &mut out));
    t.mark_txdone(ticket, TxOutcome::after_wait(&r));
    out.truncate(fetched?);
    Ok(out)
}

/// Wait until `cond` holds or `timeout` passes; returns whether it held.
pub(crate) fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Assert every pool buffer is back on the free list (waiting for asynchronous returns).
pub(crate) fn assert_pool_full<F: Fixture>(fx: &F, when: &str) {
    let t = fx.transport();
    let ok = eventually(fx.reply_timeout(), || {
        let s = t.stats();
        s.pool_free == s.pool_capacity
    });
    let s = t.stats();
    assert!(
        ok,
        "{}: pool not full {when}: {} of {} free ({s:?})",
        F::NAME,
        s.pool_free,
        s.pool_capacity
    );
}

/// Sum of the counters that record dropped remote input.
pub(crate) fn dropped_input(s: &fwipc_transport_api::Stats) -> u64 {
    s.protocol_errors + s.unknown_replies + s.duplicate_replies + s.late_replies
}
