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

/// A bus, a channel on it whose DSP never answers ([`Silent`]), and a session of that channel
/// with one 4 KiB payload buffer ([`PAYLOAD`]).
fn one_payload_session() -> (SimBus, Channel, crate::Session) {
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
    (bus, ch, s)
}

/// A payload region left dirty by earlier calls (0xEE everywhere, fd list included) gets its
/// metadata rewritten whole, the fd and CRC lists zeroed, and the in-buffer copied; the padding
/// and the out-buffer space keep their bytes (the AP does not write them).
#[test]
fn only_metadata_and_in_copies_reach_the_region() {
    let (bus, _ch, s) = one_payload_session();
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

/// Answer the call `t` as the DSP does (retval 0), without a DSP: the response datagram for
/// its context id (slot + 1, generation, PD 1).
fn answer(ch: &Channel, t: &crate::InvokeTicket) {
    let id = crate::channel::context::CtxId::new(t.slot() as u8 + 1, t.generation(), 1);
    let mut rsp = [0u8; 16];
    rsp[..8].copy_from_slice(&id.0.to_le_bytes());
    ch.handle_packet(&rsp);
}

/// A call of the same shape as the finished call before it on the same payload buffer writes
/// only the words a DSP writes during a call (the out-buffer's length, the fd-list words its
/// list reached) and its in-buffer; a call after one that was not finished (ended without the
/// fd-list walk) writes the whole metadata again (docs/protocols/fastrpc.md §12.9, "What a
/// repeated call rewrites").
#[test]
fn a_repeated_finished_call_rewrites_only_the_dsp_words() {
    let (bus, ch, s) = one_payload_session();
    let mut user = vec![0u8; 0x2000];
    let (lo, hi) = user.split_at_mut(0x1000);
    lo[..10].copy_from_slice(b"0123456789");
    let read = || {
        let mut p = [0u8; 4096];
        assert!(bus.read(PAYLOAD, &mut p));
        p
    };

    // Call 1: the whole metadata.
    let t = s
        .start(0x20, 3, &[Arg::In(&lo[..10]), Arg::Out(&mut hi[..64])], 0)
        .unwrap();
    let laid = read();
    // The DSP writes back a shorter out length (rpra[1].len, bytes 24..32) and a two-word fd
    // list (bytes 80..96; metalen 464, docs/protocols/fastrpc.md §5), then answers.
    assert!(bus.write(PAYLOAD + 24, &7u64.to_le_bytes()));
    assert!(bus.write(
        PAYLOAD + 80,
        &[3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]
    ));
    answer(&ch, &t);
    assert!(s.poll(&t).unwrap());
    let mut out = [0u8; 64];
    assert_eq!(s.read_out(&t, 0, &mut out), Ok(7));
    s.finish(t);

    // Everything but what the DSP wrote is left as call 1 wrote it; marking it shows which
    // bytes call 2 writes.
    let mut marked = read();
    for (i, b) in marked[..464].iter_mut().enumerate() {
        if !(24..32).contains(&i) && !(80..96).contains(&i) {
            *b = 0xEE;
        }
    }
    assert!(bus.write(PAYLOAD, &marked[..464]));
    lo[..10].copy_from_slice(b"abcdefghij");
    let t = s
        .start(0x20, 3, &[Arg::In(&lo[..10]), Arg::Out(&mut hi[..64])], 0)
        .unwrap();
    let p = read();
    assert_eq!(&p[24..32], &laid[24..32], "the out length is rewritten");
    assert!(
        p[80..96].iter().all(|&b| b == 0),
        "the fd words are zero again"
    );
    assert_eq!(&p[512..522], b"abcdefghij", "the in-buffer is copied");
    for (i, &b) in p[..464].iter().enumerate() {
        if !(24..32).contains(&i) && !(80..96).contains(&i) {
            assert_eq!(b, 0xEE, "byte {i} of the metadata was written again");
        }
    }

    // Call 2 answered but ended without its fd-list walk: call 3 writes the whole metadata.
    answer(&ch, &t);
    s.end(t, fwipc_transport_api::TxOutcome::Cancelled);
    let t = s
        .start(0x20, 3, &[Arg::In(&lo[..10]), Arg::Out(&mut hi[..64])], 0)
        .unwrap();
    assert_eq!(&read()[..464], &laid[..464], "the whole metadata again");
    s.abandon(t);
}
