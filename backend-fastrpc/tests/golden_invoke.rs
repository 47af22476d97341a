//! Must-show: golden bytes of a whole invoke (the 40-byte message and the payload the session
//! wrote) for a call with 2 in-buffers, 1 out-buffer and 1 in-handle: the worked example of the
//! docs/protocols/fastrpc.md §5, replayed through `Session::start` on the simulated bus.

mod common;

use std::sync::{Arc, Mutex};

use fwipc_fastrpc::sim::SimBus;
use fwipc_fastrpc::{Arg, Channel, Domain, PacketChannel, Result};
use fwipc_fastrpc::{Bank, ChannelConfig};

/// Records what the AP sends; never answers.
#[derive(Default)]
struct Recorder(Mutex<Vec<Vec<u8>>>);

impl PacketChannel for Recorder {
    fn send(&self, msg: &[u8]) -> Result<()> {
        self.0.lock().unwrap().push(msg.to_vec());
        Ok(())
    }
    fn try_recv(&self, _buf: &mut [u8]) -> Option<usize> {
        None
    }
}

#[test]
fn golden_invoke_message_and_payload() {
    let bus = SimBus::new();
    let rec = Arc::new(Recorder::default());
    let cfg = ChannelConfig::new(Domain::Cdsp)
        .with_banks(vec![Bank::new(1, 1)])
        .with_contexts(8)
        .with_payloads(1, 4096)
        .with_max_args(4);
    let ch = Channel::new(cfg, rec.clone(), Arc::new(bus.clone())).unwrap();
    // Session 0 → client_id 1, context bank sid 1. Its one payload buffer is the bus's first
    // region: IOVA P = 0x1000_0000, AP VA B = 0x7f00_0000_0000 + P = 0x7f00_1000_0000.
    let s = ch.open_session(common::poll_wait()).unwrap();
    // The shared buffer comes next (after a guard page): IOVA 0x1000_2000, fd 3, 4096 bytes.
    let shared = s.alloc_shared(4096).unwrap();
    assert_eq!((shared.iova(), shared.fd()), (0x1000_2000, 3));

    // The caller's buffers at ascending addresses: in0 (10 B) < in1 (300 B) < out (64 B).
    let mut user = vec![0u8; 0x3000];
    let (lo, hi) = user.split_at_mut(0x2000);
    for (i, b) in lo.iter_mut().enumerate() {
        *b = i as u8;
    }
    let in0 = &lo[..10];
    let in1 = &lo[0x1000..0x1000 + 300];
    let out = &mut hi[..64];
    let t = s
        .start(
            0x20,
            5,
            &[
                Arg::In(in0),
                Arg::In(in1),
                Arg::Out(out),
                Arg::InHandle {
                    buf: &shared,
                    offset: 0,
                    len: 4096,
                },
            ],
            0x42,
        )
        .unwrap();

    let sent = rec.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    #[rustfmt::skip]
    let expected_msg: [u8; 40] = [
        0x01, 0, 0, 0,                     // pid = client_id = session index 0 + 1
        0x42, 0, 0, 0,                     // tid
        0x11, 0, 0, 0, 0, 0, 0, 0,         // ctx = generation 0 << 12 | slot id 1 << 4 | PD 1 (user)
        0x20, 0, 0, 0,                     // handle 0x20
        0x10, 0x01, 0x02, 0x05,            // sc = (5<<24)|(2<<16)|(1<<8)|(1<<4) = 0x05020110
        0x00, 0x00, 0x00, 0x10, 0x01, 0, 0, 0, // addr = P | sid 1 << 32 = 0x1_1000_0000
        0x00, 0x10, 0, 0, 0, 0, 0, 0,      // size = roundup(1216, 4096) = 4096
    ];
    assert_eq!(sent[0], expected_msg);

    let mut payload = vec![0u8; 1216];
    assert!(bus.read(0x1_1000_0000, &mut payload));
    // metalen = 4 * 40 + 384 = 544; copies at ALIGN(544,128) = 640, ALIGN(650) = 768,
    // ALIGN(1068) = 1152; pkt_size 1216.
    #[rustfmt::skip]
    let expected_meta: [u8; 160] = [
        // rpra[0] = {pv = B + 640 = 0x7f00_1000_0280, len 10}
        0x80, 0x02, 0x00, 0x10, 0x00, 0x7f, 0, 0,  0x0a, 0, 0, 0, 0, 0, 0, 0,
        // rpra[1] = {pv = B + 768 = 0x7f00_1000_0300, len 300 = 0x12c}
        0x00, 0x03, 0x00, 0x10, 0x00, 0x7f, 0, 0,  0x2c, 0x01, 0, 0, 0, 0, 0, 0,
        // rpra[2] = {pv = B + 1152 = 0x7f00_1000_0480, len 64}
        0x80, 0x04, 0x00, 0x10, 0x00, 0x7f, 0, 0,  0x40, 0, 0, 0, 0, 0, 0, 0,
        // rpra[3].dma = {fd 3, offset 0, len 4096}
        0x03, 0, 0, 0,  0, 0, 0, 0,  0x00, 0x10, 0, 0,  0, 0, 0, 0,
        // list[i] = {num 1, pgidx i}
        1, 0, 0, 0, 0, 0, 0, 0,  1, 0, 0, 0, 1, 0, 0, 0,
        1, 0, 0, 0, 2, 0, 0, 0,  1, 0, 0, 0, 3, 0, 0, 0,
        // pages[0..2] = {P | 1<<32 = 0x1_1000_0000, 4096} (all copies in the first page)
        0x00, 0x00, 0x00, 0x10, 0x01, 0, 0, 0,  0x00, 0x10, 0, 0, 0, 0, 0, 0,
        0x00, 0x00, 0x00, 0x10, 0x01, 0, 0, 0,  0x00, 0x10, 0, 0, 0, 0, 0, 0,
        0x00, 0x00, 0x00, 0x10, 0x01, 0, 0, 0,  0x00, 0x10, 0, 0, 0, 0, 0, 0,
        // pages[3] = the handle's whole map {0x1000_2000 | 1<<32, 4096}
        0x00, 0x20, 0x00, 0x10, 0x01, 0, 0, 0,  0x00, 0x10, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(&payload[..160], &expected_meta[..]);
    assert!(
        payload[160..640].iter().all(|b| *b == 0),
        "fd/crc lists and padding zeroed"
    );
    assert_eq!(
        &payload[640..650],
        &(0u8..10).collect::<Vec<_>>()[..],
        "in0 copy"
    );
    assert!(payload[650..768].iter().all(|b| *b == 0));
    let in1_expect: Vec<u8> = (0x1000..0x1000 + 300).map(|i: usize| i as u8).collect();
    assert_eq!(&payload[768..1068], &in1_expect[..], "in1 copy");
    assert!(
        payload[1068..1216].iter().all(|b| *b == 0),
        "out area zeroed"
    );
    s.abandon(t);
}
