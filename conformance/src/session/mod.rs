//! A hostile-remote session driven by bytes: the stateful fuzz targets' body (one per backend in
//! `fuzz/`, `*_session`), also run over random bytes in the tests.
//!
//! The bytes are a script of operations on one fixture: send, poll, step the remote (the
//! simulators run in [`SimMode::Stepped`] when they can, so a script replays exactly), let the
//! clock run (calls past their deadline are given up: `mark_txdone(TimedOut)`, their replies
//! arrive late), switch the remote's fault, release held replies, inject garbage, reset the
//! remote, send unsolicited messages, and shut down in the middle. It asserts what must hold
//! whatever the remote does (docs/reliability.md, "Invariants"):
//!
//! - a transfer completes exactly once: once `poll_done` reports it finished (done or failed) it
//!   keeps saying so, and a reply it returns is the echo of its own request, or, once the script
//!   armed the remote's double-fetch fault ([`DoubleFetch`], garbage starting with
//!   [`DOUBLE_FETCH`](fwipc_transport_api::fixture::DOUBLE_FETCH)), one copy of that echo as the
//!   remote rewrote it after publishing it (every byte as first written or as rewritten, the
//!   same length; counted in [`SessionStats::rewritten`]), or, where the remote rewrote the
//!   reply's length word as well (FastRPC's out length), that copy at the rewritten length,
//!   which must not exceed the reply buffer (see `rewritten_len`); never anything else, except
//!   for a transfer in flight while raw garbage from the remote was waiting to be read (sent
//!   before the garbage, or, where [`RemoteControl::garbage_reaches_later_sends`](fwipc_transport_api::fixture::RemoteControl::garbage_reaches_later_sends) says so, after
//!   it and before the next poll drained it): the garbage can be a completion the remote forged
//!   for it (an SCMI used element naming its chain with a length of its choosing, a FastRPC
//!   answer naming its context), and the transport cannot tell a forged completion from a real
//!   one, so its reply is not checked against the echo (counted in
//!   [`SessionStats::forgeable`]); every other invariant holds for it. The same holds for a
//!   transfer on an entry (`Ticket::slot`) that such a transfer ended on earlier: a forged
//!   completion can end a transfer whose buffer the remote still holds (a held or not yet served
//!   SCMI chain), and the remote's late write then lands in the buffer's next transfer, which no
//!   driver can prevent without an IOMMU; and likewise for a transfer on an entry where a
//!   transfer was given up while the remote held it, once raw garbage followed (the garbage can
//!   forge the late completion that hands the held buffer back);
//! - shutdown returns within the fixture's reply timeout (plus slack for a loaded machine);
//! - after shutdown every pool buffer is back.
//!
//! Where the fixture has a datagram side, the script drives it too (`datagram`, with its own
//! invariants).

mod datagram;

use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{echo_reply, DoubleFetch, Fault, Fixture, SimMode};
use fwipc_transport_api::{
    Completion, Deadline, ManualClock, Request, Ticket, Transport, TxOutcome,
};

/// Operations of one script, at most: a session stays short enough for a fuzzer.
const MAX_OPS: usize = 256;
/// Remote steps one "step" operation runs, at most.
const MAX_STEPS: u8 = 16;
/// How long a shutdown may take past the fixture's reply timeout before it counts as hung.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(2);

/// One transfer of the script.
struct Live {
    ticket: Ticket,
    payload: Vec<u8>,
    deadline: Deadline,
    /// In flight while raw garbage was waiting to be read (a forged completion may end it), or
    /// sent on an entry a forgeable transfer ended on (the remote may still write its buffer).
    forgeable: bool,
}

/// The entries (`Ticket::slot`) whose buffer the remote may still hold after the transport
/// reused it: a later transfer on one of them is forgeable too, for the rest of the session.
/// Two ways in: a forgeable transfer ended there (a forged completion ended the transfer, not
/// the remote), or a transfer given up there while the remote held it (`abandoned`) and raw
/// garbage came after, which can forge the late completion that gives its buffer back.
#[derive(Default)]
struct Poisoned {
    poisoned: std::collections::BTreeSet<u32>,
    /// Entries of transfers given up while pending: their buffers stay with the remote until
    /// it answers, or until garbage forges that it did.
    abandoned: std::collections::BTreeSet<u32>,
}

impl Poisoned {
    /// `x` ends: remember its entry if a forged completion may have ended it.
    fn ended(&mut self, x: &Live) {
        if x.forgeable {
            self.poisoned.insert(x.ticket.slot());
        }
    }

    /// `x` is given up while pending: the remote may hold its buffer.
    fn abandoned(&mut self, x: &Live) {
        self.ended(x);
        self.abandoned.insert(x.ticket.slot());
    }

    /// Raw garbage from the remote: it can name any buffer the remote holds, so every entry
    /// given up so far may be handed back for reuse before the remote's late answer.
    fn garbage(&mut self) {
        self.poisoned.extend(self.abandoned.iter().copied());
    }

    fn contains(&self, t: &Ticket) -> bool {
        self.poisoned.contains(&t.slot())
    }
}

/// What one session did (for tests that check a script reaches what it aims at).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Transfers sent.
    pub sent: u32,
    /// Replies fetched (each checked to be the echo of its request).
    pub replies: u32,
    /// Transfers that finished with an error (cancelled, shut down, corrupt reply, ...).
    pub failed: u32,
    /// Transfers given up at their deadline.
    pub timed_out: u32,
    /// Of `replies`, those that were a copy of the echo the remote rewrote after publishing it
    /// (the double-fetch fault): opaque payload bytes the transport cannot check, delivered as
    /// one consistent copy.
    pub rewritten: u32,
    /// Datagrams the remote delivered to our endpoints (the datagram operations).
    pub datagrams: u32,
    /// Of `replies`, those of transfers a completion forged by the remote may have ended (in
    /// flight while its raw garbage was waiting to be read): not checked against the echo.
    pub forgeable: u32,
}

/// Reads the script.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (b, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        b
    }
}

/// The length a double-fetch order gives a reply of `len` bytes where the remote rewrites the
/// reply's length word (FastRPC's `rpra[i].len`, `SimDsp::rewrite_after_answer`): `len` XOR
/// the order's first 8 header bytes, little-endian; `None` where the order leaves lengths alone
/// (those bytes all zero). Backends whose length words the driver checks against the buffer
/// (SCMI-virtio's used length) fail such a reply instead.
fn rewritten_len(df: &DoubleFetch, len: usize) -> Option<u64> {
    let mut mask = [0u8; 8];
    mask.copy_from_slice(&df.header[..8]);
    let mask = u64::from_le_bytes(mask);
    (mask != 0).then_some(len as u64 ^ mask)
}

/// What a reply `out` to `payload` is: `Some(false)` the echo, `Some(true)` a copy of the echo
/// rewritten by one of the double-fetch orders `armed` (its bytes, or its length to one that
/// fits the `max`-byte reply buffer: bytes up to the shorter of the two lengths as written or
/// as rewritten, those past the echo whatever the buffer held), `None` anything else. A
/// rewritten length above `max` must fail the transfer, so a reply of any length is wrong then.
fn classify(payload: &[u8], out: &[u8], armed: &[DoubleFetch], max: usize) -> Option<bool> {
    let mut want = vec![0u8; payload.len()];
    echo_reply(payload, &mut want);
    if out == want.as_slice() {
        return Some(false);
    }
    let consistent = |df: &DoubleFetch, n: usize| {
        want[..n]
            .iter()
            .zip(&out[..n])
            .enumerate()
            .all(|(i, (&s, &g))| g == s || g == df.rewrite_body_byte(i, s))
    };
    armed
        .iter()
        .any(|df| {
            df.is_rewrite_of(&want, out)
                || rewritten_len(df, want.len()).is_some_and(|l| {
                    l <= max as u64
                        && l == out.len() as u64
                        && consistent(df, out.len().min(want.len()))
                })
        })
        .then_some(true)
}

/// Poll `x` once; if it finished, check its reply (against the double-fetch orders `armed` so
/// far), check that it stays finished, and end it (noting its entry in `poisoned`). Gives `x`
/// back if it is still pending.
fn poll_and_end<T: Transport>(
    t: &T,
    x: Live,
    armed: &[DoubleFetch],
    st: &mut SessionStats,
    poisoned: &mut Poisoned,
) -> Option<Live> {
    let r = t.poll_done(&x.ticket);
    match r {
        Ok(false) => return Some(x),
        Ok(true) => {
            let mut out = vec![0u8; t.max_msg_size()];
            match t.fetch_response(&x.ticket, &mut out) {
                Ok(_) if x.forgeable => {
                    st.replies += 1;
                    st.forgeable += 1;
                }
                Ok(n) => {
                    let rewritten = classify(&x.payload, &out[..n], armed, out.len())
                        .unwrap_or_else(|| {
                            panic!(
                                "a reply that is not the echo of its request: {:?} for {:?} ({:?})",
                                &out[..n],
                                x.payload,
                                x.ticket
                            )
                        });
                    st.replies += 1;
                    st.rewritten += u32::from(rewritten);
                }
                Err(_) => st.failed += 1,
            }
        }
        Err(_) => st.failed += 1,
    }
    assert_eq!(
        t.poll_done(&x.ticket),
        r,
        "a finished transfer changed its outcome"
    );
    let outcome = match r {
        Ok(_) => TxOutcome::Done,
        Err(_) => TxOutcome::Cancelled,
    };
    poisoned.ended(&x);
    t.mark_txdone(x.ticket, outcome);
    None
}

/// Run the script `data` against a fresh `F` (see the module docs). Panics when an invariant
/// breaks.
pub fn hostile_session<F: Fixture>(data: &[u8]) -> SessionStats {
    let mut st = SessionStats::default();
    let mut s = Script(data);
    let mode = if s.byte().unwrap_or(0) & 1 == 0 {
        Completion::Interrupt
    } else {
        Completion::Polled
    };
    let mode = if F::modes().contains(&mode) {
        mode
    } else {
        F::modes().first().copied().unwrap_or_default()
    };
    let fx = F::setup(mode);
    let stepped = fx.remote().set_sim_mode(SimMode::Stepped);
    let t = fx.transport();
    let mut dg = datagram::DgramSession::new(&fx, t.caps());
    let clock = ManualClock::new();
    let mut live: Vec<Live> = Vec::new();
    // The double-fetch orders the script gave the remote.
    let mut armed: Vec<DoubleFetch> = Vec::new();
    // Raw garbage was injected and no poll has drained it since (see `Live::forgeable`), and
    // whether such garbage can complete a transfer sent after it.
    let mut garbage_pending = false;
    let garbage_reaches_later = fx.remote().garbage_reaches_later_sends();
    let mut poisoned = Poisoned::default();
    let mut shut = false;
    for _ in 0..MAX_OPS {
        let Some(op) = s.byte() else { break };
        let arg = s.byte().unwrap_or(0);
        match op % 12 {
            0 | 1 => {
                let len = usize::from(arg).min(t.max_msg_size());
                let payload = s.bytes(len).to_vec();
                let req = Request::new(fx.echo_target(), &payload);
                let req = match mode {
                    Completion::Polled => req.polled(),
                    Completion::Interrupt => req,
                };
                if let Ok(ticket) = t.send(&req) {
                    st.sent += 1;
                    let timeout = Duration::from_millis(u64::from(arg) + 1);
                    let forgeable =
                        garbage_pending && garbage_reaches_later || poisoned.contains(&ticket);
                    live.push(Live {
                        ticket,
                        payload,
                        deadline: Deadline::after(&clock, timeout),
                        forgeable,
                    });
                }
            }
            2 | 3 => {
                if stepped {
                    for _ in 0..arg % MAX_STEPS + 1 {
                        if !fx.remote().step() {
                            break;
                        }
                    }
                }
            }
            4 => {
                if !live.is_empty() {
                    let x = live.swap_remove(usize::from(arg) % live.len());
                    live.extend(poll_and_end(t, x, &armed, &mut st, &mut poisoned));
                    // That poll drained what the remote had sent.
                    garbage_pending = false;
                }
            }
            5 => {
                // The clock runs: every transfer past its deadline is given up.
                clock.advance(Duration::from_millis(u64::from(arg)));
                let (due, keep): (Vec<Live>, Vec<Live>) =
                    live.drain(..).partition(|x| x.deadline.expired(&clock));
                live = keep;
                // A poll drains what the remote had sent (as in op 4).
                garbage_pending &= due.is_empty();
                for x in due {
                    if let Some(x) = poll_and_end(t, x, &armed, &mut st, &mut poisoned) {
                        st.timed_out += 1;
                        // Abandoned: a forged completion may still free its buffer.
                        poisoned.abandoned(&x);
                        t.mark_txdone(x.ticket, TxOutcome::TimedOut);
                    }
                }
            }
            6 => fx.remote().set_fault(match arg % 8 {
                0 => Fault::None,
                k => {
                    dg.iter_mut().for_each(|d| d.taint());
                    match k {
                        0 => Fault::None,
                        1 => Fault::Hold,
                        2 => Fault::Drop,
                        3 => Fault::Duplicate,
                        4 => Fault::WrongToken,
                        5 => Fault::CorruptLength,
                        6 => Fault::CorruptHeader,
                        // A real delay would make the script depend on timing; the stepped
                        // remote answers when stepped anyway.
                        _ => Fault::Delay(Duration::ZERO),
                    }
                }
            }),
            7 => fx.remote().release(),
            8 => {
                let g = s.bytes(usize::from(arg) % 64 + 1).to_vec();
                match DoubleFetch::parse(&g) {
                    Some(df) => armed.push(df),
                    None => {
                        garbage_pending = true;
                        live.iter_mut().for_each(|x| x.forgeable = true);
                        poisoned.garbage();
                    }
                }
                dg.iter_mut().for_each(|d| d.taint());
                fx.remote().inject_garbage(&g);
            }
            9 => {
                dg.iter_mut().for_each(|d| d.taint());
                fx.remote().reset_remote();
            }
            10 => {
                let note = s.bytes(usize::from(arg) % 16);
                // An unsolicited message may reach a bound endpoint (SCMI's P2A endpoints).
                dg.iter_mut().for_each(|d| d.expect(note));
                let _ = fx.remote().notify(note);
                let _ = t.fetch_notification(&mut [0u8; 64]);
            }
            _ => {
                // Shutdown in the middle of whatever is in flight; otherwise a datagram
                // operation (one that reads no further script bytes).
                if arg & 3 == 0 {
                    shut = true;
                    break;
                }
                if let Some(d) = dg.as_mut() {
                    d.op(arg >> 2);
                }
            }
        }
    }
    // Give the remote its own thread back, so a shutdown that waits for it is answered.
    if stepped {
        fx.remote().set_sim_mode(SimMode::Normal);
    }
    if !shut {
        fx.remote().set_fault(Fault::None);
        fx.remote().release();
    }
    let start = Instant::now();
    let _ = t.shutdown();
    let took = start.elapsed();
    assert!(
        took < fx.reply_timeout() + SHUTDOWN_SLACK,
        "shutdown took {took:?}"
    );
    for x in live {
        assert!(
            poll_and_end(t, x, &armed, &mut st, &mut poisoned).is_none(),
            "a transfer still pending after shutdown"
        );
    }
    if let Some(d) = dg {
        st.datagrams = d.delivered;
        d.finish();
    }
    let pool = t.stats();
    assert_eq!(
        pool.pool_free, pool.pool_capacity,
        "pool not full after shutdown"
    );
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loopback::LoopbackFixture;
    use crate::util::Rng;
    use fwipc_transport_api::fixture::DOUBLE_FETCH;

    /// A reply counts as rewritten only as one copy of the echo under an armed order: the same
    /// length, each byte as written or as rewritten; anything else is a wrong reply.
    #[test]
    fn only_a_consistent_copy_of_the_rewritten_echo_is_accepted() {
        let garbage = [&DOUBLE_FETCH[..], &[0], &[0; 16], &[0x0f, 0xf0]].concat();
        let df = DoubleFetch::parse(&garbage).expect("an order");
        assert_eq!((df.count, df.body.as_slice()), (1, &[0x0f, 0xf0][..]));
        let req = [1u8, 2, 3, 4];
        let echo = [!1u8, !2, !3, !4];
        let armed = [df];
        assert_eq!(classify(&req, &echo, &armed, 64), Some(false));
        let all = [
            echo[0] ^ 0x0f,
            echo[1] ^ 0xf0,
            echo[2] ^ 0x0f,
            echo[3] ^ 0xf0,
        ];
        assert_eq!(classify(&req, &all, &armed, 64), Some(true));
        // Read while the remote was rewriting: some bytes old, some new.
        let torn = [echo[0], echo[1] ^ 0xf0, echo[2], echo[3]];
        assert_eq!(classify(&req, &torn, &armed, 64), Some(true));
        assert_eq!(classify(&req, &all, &[], 64), None, "nothing armed");
        assert_eq!(
            classify(&req, &all[..3], &armed, 64),
            None,
            "another length"
        );
        let foreign = [echo[0] ^ 0x01, echo[1], echo[2], echo[3]];
        assert_eq!(
            classify(&req, &foreign, &armed, 64),
            None,
            "a byte never written"
        );
        assert_eq!(DoubleFetch::parse(&garbage[1..]), None, "no magic");
    }

    /// An order that rewrites the length word (first 8 header bytes not zero): a reply at the
    /// rewritten length is accepted while it fits the reply buffer, with its bytes up to the
    /// shorter length as written or rewritten; at any other length, or when the rewritten
    /// length exceeds the buffer (the driver must fail the transfer then), it is wrong.
    #[test]
    fn a_rewritten_length_is_accepted_only_where_it_fits_the_buffer() {
        let order = |mask: u64| {
            let garbage = [&DOUBLE_FETCH[..], &[0], &mask.to_le_bytes()[..], &[0; 8]].concat();
            [DoubleFetch::parse(&garbage).expect("an order")]
        };
        let req = [1u8, 2, 3, 4];
        let echo = [!1u8, !2, !3, !4];
        // 4 ^ 6 = 2: shortened.
        assert_eq!(classify(&req, &echo[..2], &order(6), 64), Some(true));
        assert_eq!(classify(&req, &echo[..3], &order(6), 64), None);
        assert_eq!(classify(&req, &[0, 0], &order(6), 64), None, "not the echo");
        // 4 ^ 12 = 8: lengthened within the buffer, bytes past the echo unchecked.
        let long = [echo[0], echo[1], echo[2], echo[3], 9, 9, 9, 9];
        assert_eq!(classify(&req, &long, &order(12), 64), Some(true));
        // 4 ^ 0x44 = 64: exactly the buffer; 4 ^ 0x84 = 128: beyond it, so a reply of the
        // buffer's size (a driver clamping the length) is wrong.
        let full = [echo.as_slice(), &[0; 60]].concat();
        assert_eq!(classify(&req, &full, &order(0x44), 64), Some(true));
        assert_eq!(classify(&req, &full, &order(0x84), 64), None);
        assert_eq!(classify(&req, &echo[..2], &[], 64), None, "nothing armed");
    }

    #[test]
    fn random_scripts_on_the_loopback_keep_the_invariants() {
        let mut rng = Rng::new(12);
        let mut total = SessionStats::default();
        for _ in 0..64 {
            let mut script = vec![0u8; 1 + rng.below(400)];
            rng.fill(&mut script);
            let st = hostile_session::<LoopbackFixture>(&script);
            assert_eq!(st.sent, st.replies + st.failed + st.timed_out, "{st:?}");
            total.sent += st.sent;
            total.replies += st.replies;
        }
        assert!(total.sent > 0 && total.replies > 0, "{total:?}");
    }
}
