//! A DSP that keeps sending (issue 12 finding 6): `Session::poll` (and `Channel::poll_rx`) take
//! at most `RX_BUDGET` datagrams from a pull-style link per call and leave the rest for the next
//! call, so the caller always gets control back.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fwipc_fastrpc::sim::SimBus;
use fwipc_fastrpc::{Bank, ChannelConfig, RX_BUDGET};
use fwipc_fastrpc::{Channel, Domain, PacketChannel, Result};

/// Datagrams the endless link hands out before it runs dry: ends the test on a driver whose
/// receive loop is unbounded (it returns only then).
const CAP: u64 = 1_000_000;

/// Accepts every send; every `try_recv` returns another (malformed, 3-byte) datagram, up to
/// [`CAP`].
#[derive(Default)]
struct Endless {
    handed: AtomicU64,
}

impl PacketChannel for Endless {
    fn send(&self, _msg: &[u8]) -> Result<()> {
        Ok(())
    }
    fn try_recv(&self, buf: &mut [u8]) -> Option<usize> {
        // Relaxed: a counter read by the test thread after the call.
        if self.handed.fetch_add(1, Ordering::Relaxed) >= CAP {
            return None;
        }
        let n = buf.len().min(3);
        buf[..n].fill(0xee);
        Some(n)
    }
}

#[test]
fn poll_returns_while_the_dsp_keeps_sending() {
    let link = Arc::new(Endless::default());
    let cfg = ChannelConfig::new(Domain::Cdsp)
        .with_banks(vec![Bank::new(1, 1)])
        .with_contexts(8)
        .with_payloads(1, 4096)
        .with_max_args(4);
    let ch = Channel::new(cfg, link.clone(), Arc::new(SimBus::new())).unwrap();
    let s = ch.open_session(common::poll_wait()).unwrap();
    let t = s.start(0x20, 5, &[], 0).unwrap();
    for round in 0..3u64 {
        // Relaxed: see `Endless`.
        let before = link.handed.load(Ordering::Relaxed);
        assert!(!s.poll(&t).unwrap(), "nothing answered the call");
        let taken = link.handed.load(Ordering::Relaxed) - before;
        assert!(
            taken <= RX_BUDGET as u64,
            "round {round}: one poll took {taken} datagrams (budget {RX_BUDGET})"
        );
        assert!(taken > 0, "round {round}: the poll looked at the link");
    }
    assert_eq!(
        ch.stats().protocol_errors,
        3 * RX_BUDGET as u64,
        "each malformed datagram counted once"
    );
    assert_eq!(
        ch.poll_rx(),
        RX_BUDGET,
        "the channel's own drain is bounded too"
    );
    s.abandon(t);
}
