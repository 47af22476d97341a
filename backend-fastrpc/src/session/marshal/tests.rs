//! What `build_and_send` writes into DSP-shared memory: the whole metadata and the in-buffers'
//! inline copies, nothing else (docs/protocols/fastrpc.md §12.9).

use alloc::sync::Arc;
use alloc::vec;
use core::time::Duration;

use fwipc_transport_api::{StdClock, Wait};

use crate::sim::SimBus;
use crate::{Arg, Bank, CallWait, Channel, ChannelConfig, Domain, PacketChannel, Result};

/// Accepts every message, never answers.
struct Silent;

impl PacketChannel for Silent {
    fn send(&self, _msg: &[u8]) -> Result<()> {
        Ok(())
    }
    fn try_recv(&self, _buf: &mut [u8]) -> Option<usize> {
        None
    }
}

/// The session's one payload region on the bus (the bus's first allocation, context bank 1).
const PAYLOAD: u64 = 0x1_1000_0000;

/// A payload region left dirty by earlier calls (0xEE everywhere, fd list included) gets its
/// metadata rewritten whole, the fd and CRC lists zeroed, and the in-buffer copied; the padding
/// and the out-buffer space keep their bytes (the AP does not write them).
#[test]
fn only_metadata_and_in_copies_reach_the_region() {
    let bus = SimBus::new();
    let cfg = ChannelConfig::new(Domain::Cdsp)
        .with_banks(vec![Bank::new(1, 1)])
        .with_contexts(4)
        .with_payloads(1, 4096)
        .with_max_args(4);
    let ch = Channel::new(cfg, Arc::new(Silent), Arc::new(bus.clone())).unwrap();
    let wait = CallWait::new(
        Arc::new(StdClock::new()),
        Duration::from_secs(2),
        Wait::Poll,
    );
    let s = ch.open_session(wait).unwrap();
    assert!(bus.write(PAYLOAD, &[0xEE; 4096]));

    // In-buffer (10 bytes) below the out-buffer (64 bytes) in the caller's memory.
    let mut user = vec![0u8; 0x2000];
    let (lo, hi) = user.split_at_mut(0x1000);
    for (i, b) in lo.iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(1);
    }
    let t = s
        .start(0x20, 3, &[Arg::In(&lo[..10]), Arg::Out(&mut hi[..64])], 0)
        .unwrap();

    let mut p = [0u8; 4096];
    assert!(bus.read(PAYLOAD, &mut p));
    // Two slots: metalen = 2 × 40 + 384 = 464; the in copy at ALIGN(464, 128) = 512, the out
    // space at ALIGN(522, 128) = 640..704 (docs/protocols/fastrpc.md §5).
    let pv = |i: usize| u64::from_le_bytes(p[16 * i..16 * i + 8].try_into().unwrap());
    let len = |i: usize| u64::from_le_bytes(p[16 * i + 8..16 * i + 16].try_into().unwrap());
    let base = crate::sim::bus::VA_BASE + 0x1000_0000;
    assert_eq!((pv(0), len(0)), (base + 512, 10));
    assert_eq!((pv(1), len(1)), (base + 640, 64));
    assert!(
        p[80..464].iter().all(|&b| b == 0),
        "fd and CRC lists zeroed"
    );
    assert_eq!(&p[512..522], &lo[..10], "in-buffer copied");
    assert!(
        p[464..512].iter().all(|&b| b == 0xEE),
        "padding not written"
    );
    assert!(
        p[522..640].iter().all(|&b| b == 0xEE),
        "padding not written"
    );
    assert!(
        p[640..704].iter().all(|&b| b == 0xEE),
        "out space not written"
    );
    s.abandon(t);
}
