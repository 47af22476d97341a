//! The VideoCore side of `vchiq_test -f` (docs/protocols/vchiq.md §8): the `'func'` server's
//! message and bulk script (Part B steps 3–6) and the `'fun2'` alignment server (Part C), as pure
//! state machines.
//!
//! The Part B open/close checks (version negotiation, "no more listeners", AUTOCLOSE) are the VCHIQ
//! core's behaviour and are tested against the core; the handler here only records the
//! `client_id` rule (≠ 0 while open) so a test can assert it.

use alloc::vec::Vec;

use log::warn;

use crate::vchi::fourcc;
use crate::vchi::link::{VcAction, VcService};
use crate::vchi::test_wire::{first_mismatch, fun2_pattern, Fun2Params, GuardedBuf, FUNC_MSG};

/// Server bulk tags of the Part B script.
pub const TAG_RX_1024: u32 = 0x101;
/// Server transmit of 1024 that meets the client's 2048 receive: both abort.
pub const TAG_TX_1024: u32 = 0x102;
/// Server transmit of 2048: completes.
pub const TAG_TX_2048: u32 = 0x103;
/// Server receive queued last, aborted by the client's close.
pub const TAG_RX_LAST: u32 = 0x104;

/// A bulk completion the `'func'` server saw (tag, completed?).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuncEvent {
    /// A DATA message of this length.
    Msg(usize),
    /// Receive completed (tag, bytes).
    RxDone(u32, usize),
    /// Receive aborted.
    RxAborted(u32),
    /// Transmit completed.
    TxDone(u32),
    /// Transmit aborted.
    TxAborted(u32),
    /// The service opened with this client id.
    Opened(i32),
    /// The service closed.
    Closed,
}

/// The server-side events Part B steps 3–6 must produce, in order.
pub const FUNC_EXPECTED_EVENTS: &[FuncEvent] = &[
    FuncEvent::Msg(26),
    FuncEvent::RxDone(TAG_RX_1024, 1024),
    FuncEvent::TxAborted(TAG_TX_1024),
    FuncEvent::TxDone(TAG_TX_2048),
    FuncEvent::RxAborted(TAG_RX_LAST),
];

/// One `'func'` service instance.
#[derive(Debug, Default)]
pub struct FuncServer {
    events: Vec<FuncEvent>,
    /// Times the service was opened with `client_id == 0` (must stay 0: the ARM sends its pid).
    pub zero_client_ids: u32,
}

impl FuncServer {
    /// A fresh server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything seen so far.
    pub fn events(&self) -> &[FuncEvent] {
        &self.events
    }

    /// The events without Opened/Closed (the bulk/message script).
    pub fn script_events(&self) -> Vec<FuncEvent> {
        self.events
            .iter()
            .copied()
            .filter(|e| !matches!(e, FuncEvent::Opened(_) | FuncEvent::Closed))
            .collect()
    }
}

fn fill(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_add(seed)).collect()
}

impl VcService for FuncServer {
    fn fourcc(&self) -> u32 {
        fourcc::FUNC
    }

    fn on_open(&mut self, client_id: i32, _out: &mut Vec<VcAction>) {
        if client_id == 0 {
            self.zero_client_ids += 1;
        }
        self.events.push(FuncEvent::Opened(client_id));
    }

    fn on_close(&mut self, _out: &mut Vec<VcAction>) {
        self.events.push(FuncEvent::Closed);
    }

    fn on_message(&mut self, msg: &[u8], out: &mut Vec<VcAction>) {
        self.events.push(FuncEvent::Msg(msg.len()));
        out.push(VcAction::Reply(msg.to_vec()));
        if msg == FUNC_MSG {
            out.push(VcAction::BulkRx {
                len: 1024,
                tag: TAG_RX_1024,
            });
        }
    }

    fn on_bulk_rx(&mut self, tag: u32, data: Option<&[u8]>, out: &mut Vec<VcAction>) {
        match data {
            Some(d) => {
                self.events.push(FuncEvent::RxDone(tag, d.len()));
                if tag == TAG_RX_1024 {
                    out.push(VcAction::BulkTx {
                        data: fill(1024, 0x10),
                        tag: TAG_TX_1024,
                    });
                }
            }
            None => self.events.push(FuncEvent::RxAborted(tag)),
        }
    }

    fn on_bulk_tx(&mut self, tag: u32, ok: bool, out: &mut Vec<VcAction>) {
        if ok {
            self.events.push(FuncEvent::TxDone(tag));
            if tag == TAG_TX_2048 {
                out.push(VcAction::BulkRx {
                    len: 2048,
                    tag: TAG_RX_LAST,
                });
                out.push(VcAction::Reply(Vec::new()));
            }
        } else {
            self.events.push(FuncEvent::TxAborted(tag));
            if tag == TAG_TX_1024 {
                out.push(VcAction::BulkTx {
                    data: fill(2048, 0x20),
                    tag: TAG_TX_2048,
                });
            }
        }
    }
}

/// Counters of the `'fun2'` server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fun2Stats {
    /// Sub-tests started.
    pub subtests: u64,
    /// Sub-tests whose received data or guards were wrong.
    pub failures: u64,
    /// Malformed sub-test messages.
    pub malformed: u64,
}

/// One `'fun2'` service instance.
#[derive(Debug, Default)]
pub struct Fun2Server {
    pending: Option<Fun2Params>,
    stats: Fun2Stats,
}

impl Fun2Server {
    /// A fresh server.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters.
    pub fn stats(&self) -> Fun2Stats {
        self.stats
    }
}

impl VcService for Fun2Server {
    fn fourcc(&self) -> u32 {
        fourcc::FUN2
    }

    fn on_message(&mut self, msg: &[u8], out: &mut Vec<VcAction>) {
        match Fun2Params::parse(msg) {
            Ok(p) => {
                self.stats.subtests += 1;
                self.pending = Some(p);
                out.push(VcAction::BulkRx {
                    len: p.datalen.get() as usize,
                    tag: p.index.get() as u32,
                });
            }
            Err(e) => {
                self.stats.malformed += 1;
                warn!(target: "vchi::fun2", "bad sub-test message: {e}");
            }
        }
    }

    fn on_bulk_rx(&mut self, tag: u32, data: Option<&[u8]>, out: &mut Vec<VcAction>) {
        let (Some(p), Some(data)) = (self.pending.take(), data) else {
            self.stats.failures += 1;
            return;
        };
        let len = p.datalen.get() as usize;
        // Land the data in a guarded buffer at the requested server alignment, then check the
        // guards and the pattern, as the VideoCore test server does.
        let mut g = GuardedBuf::new(len, p.server_align.get() as usize);
        let n = data.len().min(len);
        g.data_mut()[..n].copy_from_slice(&data[..n]);
        let mut want = alloc::vec![0u8; len];
        fun2_pattern(len, &mut want);
        if data.len() != len
            || g.check_guards().is_err()
            || first_mismatch(g.data(), &want).is_some()
        {
            self.stats.failures += 1;
            warn!(target: "vchi::fun2", "sub-test {} ({len} B) received bad data", p.index.get());
        }
        out.push(VcAction::BulkTx {
            data: g.data().to_vec(),
            tag,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::little_endian::I32;
    use zerocopy::IntoBytes;

    #[test]
    fn fun2_checks_the_pattern() {
        let mut s = Fun2Server::new();
        let p = Fun2Params {
            datalen: I32::new(40),
            server_align: I32::new(3),
            align: I32::new(0),
            index: I32::new(9),
        };
        let mut out = Vec::new();
        s.on_message(p.as_bytes(), &mut out);
        assert_eq!(out, [VcAction::BulkRx { len: 40, tag: 9 }]);
        let mut d = [0u8; 40];
        fun2_pattern(40, &mut d);
        out.clear();
        s.on_bulk_rx(9, Some(&d), &mut out);
        assert_eq!(s.stats().failures, 0);
        assert_eq!(
            out,
            [VcAction::BulkTx {
                data: d.to_vec(),
                tag: 9
            }]
        );
        // Wrong data is a failure.
        s.on_message(p.as_bytes(), &mut out);
        d[0] ^= 1;
        s.on_bulk_rx(9, Some(&d), &mut out);
        assert_eq!(s.stats().failures, 1);
        s.on_message(&[1, 2], &mut out);
        assert_eq!(s.stats().malformed, 1);
    }
}
