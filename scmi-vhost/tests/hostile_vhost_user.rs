//! Hostile chains through the real vhost-user path: a raw `virtio_drivers` `VirtQueue` (no fwipc
//! agent, so any chain shape it can express is possible) posts malformed command chains to the
//! daemon process, which answers or returns each one, keeps serving, and exits 0 on disconnect
//! with the chains counted in its log. (vhost-device-scmi 0.4's worker thread dies on the
//! first malformed chain.) Every other shape is covered on mock queues in `src/device_tests.rs`.

mod common;

use std::time::Instant;

use bitflags::bitflags;
use harness_vhost_user::{shared_memory, MemfdHal, VhostUserTransport};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceStatus, Transport};

use common::{config_path, Daemon, TIMEOUT};

bitflags! {
    /// Features this raw driver asks for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Features: u64 {
        const P2A_CHANNELS = 1 << 0;
        const VERSION_1 = 1 << 32;
    }
}

const CMDQ: u16 = 0;
const PROTOCOL_ERROR: i32 = -10;
const COMMS_ERROR: i32 = -7;

fn header(protocol: u8, msg: u8, token: u16) -> u32 {
    u32::from(msg) | (u32::from(protocol) << 10) | ((u32::from(token) & 0x3ff) << 18)
}

fn word(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap())
}

struct Raw {
    q: VirtQueue<MemfdHal, 32>,
    t: VhostUserTransport,
}

impl Raw {
    fn new(d: &Daemon) -> Raw {
        let mut t = VhostUserTransport::connect(d.socket(), shared_memory(), TIMEOUT)
            .expect("vhost-user connect");
        let f = t.begin_init(Features::all());
        assert!(f.contains(Features::VERSION_1 | Features::P2A_CHANNELS));
        let q = VirtQueue::new(&mut t, CMDQ, false, false).expect("cmdq");
        t.finish_init();
        assert!(t.get_status().contains(DeviceStatus::DRIVER_OK));
        Raw { q, t }
    }

    /// Post one chain of `req` (device-readable) and `resp` (device-writable) buffers, kick, and
    /// wait for it to come back; the used length.
    fn chain<'a>(&mut self, req: &'a [&'a [u8]], resp: &'a mut [&'a mut [u8]]) -> u32 {
        // SAFETY: the buffers outlive the pop_used below, which is passed the same buffers.
        let id = unsafe { self.q.add(req, resp) }.expect("add");
        if self.q.should_notify() {
            self.t.notify(CMDQ);
        }
        let deadline = Instant::now() + TIMEOUT;
        while !self.q.can_pop() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("the daemon returned the chain in time");
            self.t.wait_call(CMDQ, left).expect("poll");
        }
        // SAFETY: the same buffers as passed to `add` for `id`.
        unsafe { self.q.pop_used(id, req, resp) }.expect("pop_used")
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // Stop the rings before the queue's pages go back to the pool.
        self.t.set_status(DeviceStatus::empty());
    }
}

#[test]
fn malformed_chains_are_answered_or_returned_and_the_daemon_keeps_serving() {
    let mut d = Daemon::spawn(&config_path("configs/linux-guest.toml")).expect("spawn");
    let mut raw = Raw::new(&d);
    let good = header(0x10, 0x0, 1).to_le_bytes();

    // Only a writable buffer: no request. COMMS_ERROR, header 0.
    let mut r = [0xEEu8; 16];
    assert_eq!(raw.chain(&[], &mut [&mut r]), 8);
    assert_eq!((word(&r, 0), word(&r, 1) as i32), (0, COMMS_ERROR));

    // A 2-byte request: PROTOCOL_ERROR.
    let mut r = [0xEEu8; 16];
    assert_eq!(raw.chain(&[&good[..2]], &mut [&mut r]), 8);
    assert_eq!(word(&r, 1) as i32, PROTOCOL_ERROR);

    // A 2 KiB request: PROTOCOL_ERROR, header echoed.
    let mut long = vec![0u8; 2048];
    long[..4].copy_from_slice(&header(0x10, 0x3, 2).to_le_bytes());
    let mut r = [0xEEu8; 16];
    assert_eq!(raw.chain(&[&long], &mut [&mut r]), 8);
    assert_eq!(
        (word(&r, 0), word(&r, 1) as i32),
        (header(0x10, 0x3, 2), PROTOCOL_ERROR)
    );

    // A 4-byte reply buffer: returned unused. (Whether it was written cannot be seen here: the
    // harness bounces device-writable buffers through zeroed pages; the mock-queue tests check
    // it.)
    let mut r = [0xEEu8; 4];
    assert_eq!(raw.chain(&[&good], &mut [&mut r]), 0);

    // Only a readable buffer: returned unused.
    assert_eq!(raw.chain(&[&good], &mut []), 0);

    // Too many descriptors: 1 readable + 17 writable. COMMS_ERROR in the first 8 bytes.
    let mut bufs = [[0xEEu8; 8]; 17];
    let mut refs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    assert_eq!(raw.chain(&[&good], &mut refs), 8);
    assert_eq!(word(&bufs[0], 1) as i32, COMMS_ERROR);

    // Still serving: BASE PROTOCOL_VERSION, request and reply each split in two.
    let mut r1 = [0u8; 6];
    let mut r2 = [0u8; 10];
    assert_eq!(
        raw.chain(&[&good[..1], &good[1..]], &mut [&mut r1, &mut r2]),
        12
    );
    let mut reply = r1.to_vec();
    reply.extend_from_slice(&r2);
    assert_eq!(
        (word(&reply, 0), word(&reply, 1), word(&reply, 2)),
        (header(0x10, 0x0, 1), 0, 0x20000)
    );

    assert!(d.exited().is_none(), "still running");
    drop(raw);
    let st = d
        .wait_exit(TIMEOUT)
        .expect("exits after the front-end hangs up");
    assert_eq!(st.code(), Some(0));
    let log = d.log();
    assert!(
        log.contains("commands: 1, rejected: 4, dropped: 2"),
        "counters in the exit log:\n{log}"
    );
}
