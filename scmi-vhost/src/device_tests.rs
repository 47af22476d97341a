//! The device's queue handling driven directly with `virtio-queue`'s mock split queues over a
//! `GuestMemoryMmap`: good requests, pagination to the posted buffer, scattered buffers, and
//! every kind of hostile chain (bad lengths, wrong directions, too short, too long, a reply
//! buffer too small, buffers outside guest memory, loops, random garbage). Each case checks the
//! reply or the used length 0, the counters, and that a good request afterwards is still served.

use std::path::Path;

use fwipc_scmi_virtio::header::Header;
use fwipc_scmi_virtio::platform::PlatformModel;
use fwipc_scmi_virtio::protocol::ids::{base, clock, common, proto, sensor};
use fwipc_scmi_virtio::status::code;
use virtio_bindings::bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::chain::ChainError;
use crate::device::{Device, DeviceStats};

const MEM_SIZE: usize = 0x10_0000;
/// Buffers live from here on (the rings sit at 0).
const BUF: u64 = 0x8_0000;
const QSIZE: u16 = 64;

fn device() -> Device {
    let text = include_str!("../configs/linux-guest.toml");
    let cfg = crate::config::parse(Path::new("linux-guest.toml"), text).expect("config");
    let mut d = Device::new(cfg.platform);
    d.reset(true);
    d
}

/// One descriptor: (address, length, device-writable).
#[derive(Clone, Copy)]
struct D(u64, u32, bool);

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// A mock split queue in `mem` (rings at 0, buffers from [`BUF`]), and the chains posted so far.
struct Rig<'a> {
    mem: &'a GuestMemoryMmap,
    vq: MockSplitQueue<'a, GuestMemoryMmap>,
    next_desc: u16,
    next_buf: u64,
}

impl<'a> Rig<'a> {
    fn new(mem: &'a GuestMemoryMmap) -> Self {
        Rig {
            mem,
            vq: MockSplitQueue::new(mem, QSIZE),
            next_desc: 0,
            next_buf: BUF,
        }
    }

    fn vq(&self) -> &MockSplitQueue<'a, GuestMemoryMmap> {
        &self.vq
    }

    fn queue(&self) -> Queue {
        self.vq().create_queue::<Queue>().unwrap()
    }

    /// A fresh buffer of `len` bytes (0x100-aligned), filled with `fill`.
    fn buf(&mut self, len: u32, fill: &[u8]) -> u64 {
        let a = self.next_buf;
        self.next_buf += (u64::from(len) + 0xFF) & !0xFF;
        self.mem.write_slice(fill, GuestAddress(a)).unwrap();
        a
    }

    /// Post a chain made of `descs` (NEXT flags and links set here); returns its head.
    fn post(&mut self, descs: &[D]) -> u16 {
        let head = self.next_desc;
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let last = i + 1 == descs.len();
                let mut flags = if last { 0 } else { VRING_DESC_F_NEXT as u16 };
                if d.2 {
                    flags |= VRING_DESC_F_WRITE as u16;
                }
                RawDescriptor::from(SplitDescriptor::new(
                    d.0,
                    d.1,
                    flags,
                    if last { 0 } else { head + i as u16 + 1 },
                ))
            })
            .collect();
        self.vq().add_desc_chains(&raw, head).unwrap();
        self.next_desc += descs.len() as u16;
        head
    }

    /// Post a command: the request in one readable descriptor, a reply buffer of `room` bytes.
    /// Returns (head, reply address).
    fn command(&mut self, req: &[u8], room: u32) -> (u16, u64) {
        let r = self.buf(req.len() as u32, req);
        let w = self.buf(room, &vec![0xEE; room as usize]);
        (
            self.post(&[D(r, req.len() as u32, false), D(w, room, true)]),
            w,
        )
    }

    fn used(&self) -> Vec<(u32, u32)> {
        let vq = self.vq();
        let n = vq.used().idx().load();
        (0..n)
            .map(|i| {
                let e = vq.used().ring().ref_at(usize::from(i)).unwrap().load();
                (e.id(), e.len())
            })
            .collect()
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

fn req(protocol: u8, message: u8, token: u16, params: &[u32]) -> Vec<u8> {
    let mut v = Header::command(protocol, message, token)
        .to_le_bytes()
        .to_vec();
    for p in params {
        v.extend_from_slice(&p.to_le_bytes());
    }
    v
}

fn word(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap())
}

fn status(b: &[u8]) -> i32 {
    word(b, 1) as i32
}

/// Serve a good BASE PROTOCOL_VERSION after whatever came before: the device still works.
fn still_serves(rig: &mut Rig<'_>, dev: &mut Device, q: &mut Queue) {
    let r = req(proto::BASE, common::PROTOCOL_VERSION, 77, &[]);
    let (head, w) = rig.command(&r, 64);
    dev.process_cmdq(q, rig.mem);
    let used = rig.used();
    assert_eq!(used.last(), Some(&(u32::from(head), 12)));
    let reply = rig.read(w, 12);
    assert_eq!(&reply[..4], &r[..4]);
    assert_eq!((status(&reply), word(&reply, 2)), (0, 0x20000));
}

#[test]
fn a_good_request_is_answered_with_header_status_and_values() {
    let mem = memory();
    let (mut rig, mut dev) = (Rig::new(&mem), device());
    let mut q = rig.queue();
    let r = req(proto::BASE, base::DISCOVER_VENDOR, 5, &[]);
    let (head, w) = rig.command(&r, 128);
    assert_eq!(dev.process_cmdq(&mut q, rig.mem), 1);
    assert_eq!(rig.used(), [(u32::from(head), 24)]);
    let reply = rig.read(w, 24);
    assert_eq!(&reply[..4], &r[..4]);
    assert_eq!(status(&reply), 0);
    assert_eq!(&reply[8..14], b"fwipc\0");
    // Nothing written past the reply.
    assert_eq!(rig.read(w + 24, 4), [0xEE; 4]);
    assert_eq!(dev.stats().commands, 1);
}

#[test]
fn listings_are_paginated_to_the_posted_reply_buffer() {
    let mem = memory();
    let (mut rig, mut dev) = (Rig::new(&mem), device());
    let mut q = rig.queue();
    // SENSOR_DESCRIPTION_GET: header, status, flags, then 28-byte descriptors. Room for one.
    let r = req(proto::SENSOR, sensor::DESCRIPTION_GET, 1, &[0]);
    let (_, w) = rig.command(&r, 8 + 4 + 28 + 27);
    dev.process_cmdq(&mut q, rig.mem);
    let reply = rig.read(w, 40);
    assert_eq!(status(&reply), 0);
    let flags = word(&reply, 2);
    assert_eq!(
        (flags & 0xFFF, flags >> 16),
        (1, 1),
        "1 returned, 1 remaining"
    );
    assert_eq!(rig.used()[0].1, 40);
    // CLOCK_DESCRIBE_RATES of cpu-clk (3 rates of 8 bytes) into room for 2.
    let r = req(proto::CLOCK, clock::DESCRIBE_RATES, 2, &[1, 0]);
    let (_, w) = rig.command(&r, 8 + 4 + 16);
    dev.process_cmdq(&mut q, rig.mem);
    let reply = rig.read(w, 28);
    let flags = word(&reply, 2);
    assert_eq!((flags & 0xFFF, flags >> 16), (2, 1));
    assert_eq!(
        (word(&reply, 3), word(&reply, 5)),
        (600_000_000, 1_200_000_000)
    );
}

#[test]
fn scattered_request_and_reply_buffers_are_gathered_and_filled() {
    let mem = memory();
    let (mut rig, mut dev) = (Rig::new(&mem), device());
    let mut q = rig.queue();
    let r = req(proto::BASE, base::DISCOVER_SUB_VENDOR, 9, &[]);
    let r1 = rig.buf(2, &r[..2]);
    let r2 = rig.buf(2, &r[2..]);
    let w1 = rig.buf(6, &[0; 6]);
    let w2 = rig.buf(10, &[0; 10]);
    let w3 = rig.buf(64, &[0; 64]);
    let head = rig.post(&[
        D(r1, 2, false),
        D(r2, 2, false),
        D(w1, 6, true),
        D(w2, 10, true),
        D(w3, 64, true),
    ]);
    dev.process_cmdq(&mut q, rig.mem);
    assert_eq!(rig.used(), [(u32::from(head), 24)]);
    let mut reply = rig.read(w1, 6);
    reply.extend(rig.read(w2, 10));
    reply.extend(rig.read(w3, 8));
    assert_eq!(&reply[..4], &r[..4]);
    assert_eq!(status(&reply), 0);
    assert_eq!(&reply[8..19], b"linux-test\0");
}

#[test]
fn bad_request_lengths_get_protocol_error() {
    let mem = memory();
    let (mut rig, mut dev) = (Rig::new(&mem), device());
    let mut q = rig.queue();
    // Shorter than a header: no header to echo (0), PROTOCOL_ERROR.
    let (h1, w1) = rig.command(&[1, 2], 16);
    // Longer than any message (2 KiB of readable bytes).
    let mut long = req(proto::BASE, common::PROTOCOL_VERSION, 3, &[]);
    long.resize(2048, 0);
    let (h2, w2) = rig.command(&long, 16);
    // A readable length of 2 GiB: rejected on its length, never read or allocated.
    let r = rig.buf(4, &req(proto::BASE, 0, 4, &[]));
    let w3 = rig.buf(16, &[0; 16]);
    let h3 = rig.post(&[D(r, 0x8000_0000, false), D(w3, 16, true)]);
    // 4 GiB - 1 then 16 more: the chain's total no longer fits 32 bits, so virtio-queue ends
    // the chain before the reply buffer; without one the chain is returned unused.
    let w3b = rig.buf(16, &[0xEE; 16]);
    let h3b = rig.post(&[D(r, u32::MAX, false), D(w3b, 16, true)]);
    // Parameters of the wrong length reach the platform: PROTOCOL_ERROR from the model.
    let (h4, w4) = rig.command(&req(proto::CLOCK, clock::RATE_GET, 5, &[0, 0]), 16);
    dev.process_cmdq(&mut q, rig.mem);
    assert_eq!(
        rig.used(),
        [
            (u32::from(h1), 8),
            (u32::from(h2), 8),
            (u32::from(h3), 8),
            (u32::from(h3b), 0),
            (u32::from(h4), 8)
        ]
    );
    assert_eq!(rig.read(w3b, 16), [0xEE; 16]);
    let a = rig.read(w1, 8);
    assert_eq!((word(&a, 0), status(&a)), (0, code::PROTOCOL_ERROR));
    let b = rig.read(w2, 8);
    assert_eq!(
        &b[..4],
        &long[..4],
        "the header is echoed when it can be read"
    );
    assert_eq!(status(&b), code::PROTOCOL_ERROR);
    let c = rig.read(w3, 8);
    assert_eq!(status(&c), code::PROTOCOL_ERROR);
    let d = rig.read(w4, 8);
    assert_eq!(status(&d), code::PROTOCOL_ERROR);
    assert_eq!(
        dev.stats(),
        DeviceStats {
            commands: 1,
            rejected: 3,
            dropped: 1,
            ..DeviceStats::default()
        }
    );
    still_serves(&mut rig, &mut dev, &mut q);
}

#[test]
fn wrong_descriptor_directions_are_answered_or_dropped() {
    let mem = memory();
    let (mut rig, mut dev) = (Rig::new(&mem), device());
    let mut q = rig.queue();
    let r = req(proto::BASE, common::PROTOCOL_VERSION, 6, &[]);
    // Writable before readable: COMMS_ERROR into the writable buffer.
    let w1 = rig.buf(16, &[0xEE; 16]);
    let r1 = rig.buf(4, &r);
    let h1 = rig.post(&[D(w1, 16, true), D(r1, 4, false)]);
    // Readable, writable, readable again.
    let r2 = rig.buf(4, &r);
    let w2 = rig.buf(16, &[0xEE; 16]);
    let r2b = rig.buf(4, &r);
    let h2 = rig.post(&[D(r2, 4, false), D(w2, 16, true), D(r2b, 4, false)]);
    // Only a writable descriptor: no request; answered, header 0.
    let w3 = rig.buf(16, &[0xEE; 16]);
    let h3 = rig.post(&[D(w3, 16, true)]);
    // Only readable descriptors: no reply buffer; returned unused.
    let r4 = rig.buf(4, &r);
    let h4 = rig.post(&[D(r4, 4, false), D(r4, 4, false)]);
    dev.process_cmdq(&mut q, rig.mem);
    assert_eq!(
        rig.used(),
        [
            (u32::from(h1), 8),
            (u32::from(h2), 8),
            (u32::from(h3), 8),
            (u32::from(h4), 0)
        ]
    );
    for w in [w1, w2, w3] {
        assert_eq!(status(&rig.read(w, 8)), code::COMMS_ERROR);
    }
    assert_eq!(word(&rig.read(w2, 8), 0), word(&r, 0), "header echoed");
    assert_eq!(word(&rig.read(w3, 8), 0), 0);
    assert_eq!(
        (
            dev.stats().rejected,
            dev.stats().dropped,
            dev.stats().commands
        ),
        (3, 1, 0)
    );
    still_serves(&mut rig, &mut dev, &mut q);
}

#[test]
fn chains_too_short_or_too_long() {
    let mem = memory();
    let (mut rig, mut dev) = (Rig::new(&mem), device());
    let mut q = rig.queue();
    let r = req(proto::BASE, common::PROTOCOL_VERSION, 7, &[]);
    // Too short: a single readable descriptor (nothing to reply into): dropped.
    let r1 = rig.buf(4, &r);
    let h1 = rig.post(&[D(r1, 4, false)]);
    // Too short: a zero-length request and a reply buffer: answered PROTOCOL_ERROR.
    let w2 = rig.buf(16, &[0; 16]);
    let h2 = rig.post(&[D(r1, 0, false), D(w2, 16, true)]);
    // Too long: 1 readable + 16 writable descriptors (17 > 16): COMMS_ERROR in the first 8
    // writable bytes.
    let r3 = rig.buf(4, &r);
    let w3 = rig.buf(16 * 16, &[0xEE; 256]);
    let mut long = vec![D(r3, 4, false)];
    long.extend((0..16).map(|i| D(w3 + 16 * i, 16, true)));
    let h3 = rig.post(&long);
    // Too long, all readable: dropped.
    let h4 = rig.post(&vec![D(r3, 4, false); 20]);
    dev.process_cmdq(&mut q, rig.mem);
    assert_eq!(
        rig.used(),
        [
            (u32::from(h1), 0),
            (u32::from(h2), 8),
            (u32::from(h3), 8),
            (u32::from(h4), 0)
        ]
    );
    let b = rig.read(w2, 8);
    assert_eq!(status(&b), code::PROTOCOL_ERROR);
    let c = rig.read(w3, 16);
    assert_eq!((word(&c, 0), status(&c)), (word(&r, 0), code::COMMS_ERROR));
    assert_eq!(&c[8..], &[0xEE; 8], "nothing written past the error reply");
    assert_eq!((dev.stats().rejected, dev.stats().dropped), (2, 2));
    still_serves(&mut rig, &mut dev, &mut q);
}

#[test]
fn a_reply_buffer_too_small() {
    let mem = memory();
    let (mut rig, mut dev) = (Rig::new(&mem), device());
    let mut q = rig.queue();
    let r = req(proto::BASE, base::DISCOVER_VENDOR, 8, &[]);
    // Less than header + status: returned unused, nothing written.
    let (h1, w1) = rig.command(&r, 7);
    // A zero-length reply buffer.
    let (h2, _) = rig.command(&r, 0);
    // Room for header + status but not the vendor name: the model answers COMMS_ERROR.
    let (h3, w3) = rig.command(&r, 8);
    // A bad chain whose reply buffer is too small even for the error: dropped.
    let (h4, w4) = rig.command(&[1], 4);
    dev.process_cmdq(&mut q, rig.mem);
    assert_eq!(
        rig.used(),
        [
            (u32::from(h1), 0),
            (u32::from(h2), 0),
            (u32::from(h3), 8),
            (u32::from(h4), 0)
        ]
    );
    assert_eq!(rig.read(w1, 7), [0xEE; 7]);
    assert_eq!(rig.read(w4, 4), [0xEE; 4]);
    let c = rig.read(w3, 8);
    assert_eq!((&c[..4], status(&c)), (&r[..4], code::COMMS_ERROR));
    assert_eq!(
        (
            dev.stats().commands,
            dev.stats().dropped,
            dev.stats().rejected
        ),
        (1, 3, 0)
    );
    still_serves(&mut rig, &mut dev, &mut q);
}

#[test]
fn buffers_outside_guest_memory() {
    let mem = memory();
    let (mut rig, mut dev) = (Rig::new(&mem), device());
    let mut q = rig.queue();
    let r = req(proto::BASE, common::PROTOCOL_VERSION, 9, &[]);
    let outside = MEM_SIZE as u64 - 2;
    // The request straddles the end of guest memory: COMMS_ERROR (header unreadable: 0).
    let w1 = rig.buf(16, &[0; 16]);
    let h1 = rig.post(&[D(outside, 4, false), D(w1, 16, true)]);
    // The reply buffer does: returned unused.
    let r2 = rig.buf(4, &r);
    let h2 = rig.post(&[D(r2, 4, false), D(outside, 64, true)]);
    // Far outside (the top of the 64-bit space).
    let h3 = rig.post(&[D(u64::MAX - 3, 4, false), D(u64::MAX - 100, 64, true)]);
    dev.process_cmdq(&mut q, rig.mem);
    assert_eq!(
        rig.used(),
        [(u32::from(h1), 8), (u32::from(h2), 0), (u32::from(h3), 0)]
    );
    let a = rig.read(w1, 8);
    assert_eq!((word(&a, 0), status(&a)), (0, code::COMMS_ERROR));
    assert_eq!((dev.stats().rejected, dev.stats().dropped), (1, 2));
    still_serves(&mut rig, &mut dev, &mut q);
}

#[test]
fn descriptor_loops_and_bad_indirect_tables_end() {
    let mem = memory();
    let (mut rig, mut dev) = (Rig::new(&mem), device());
    let mut q = rig.queue();
    // A descriptor whose `next` is itself: the walk stops (virtio-queue's TTL, then ours).
    let r = rig.buf(4, &req(proto::BASE, 0, 1, &[]));
    let head = rig.next_desc;
    let raw = RawDescriptor::from(SplitDescriptor::new(r, 4, VRING_DESC_F_NEXT as u16, head));
    rig.vq().add_desc_chains(&[raw], head).unwrap();
    rig.next_desc += 1;
    // An indirect descriptor pointing at a table of garbage outside memory.
    let h2 = rig.next_desc;
    let raw = RawDescriptor::from(SplitDescriptor::new(
        MEM_SIZE as u64 * 4,
        16 * 4,
        VRING_DESC_F_INDIRECT as u16,
        0,
    ));
    rig.vq().add_desc_chains(&[raw], h2).unwrap();
    rig.next_desc += 1;
    dev.process_cmdq(&mut q, rig.mem);
    assert_eq!(rig.used(), [(u32::from(head), 0), (u32::from(h2), 0)]);
    assert_eq!(dev.stats().dropped, 2);
    still_serves(&mut rig, &mut dev, &mut q);
}

#[test]
fn random_chains_never_panic_and_every_chain_is_returned() {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let mem = memory();
        let (mut rig, mut dev) = (Rig::new(&mem), device());
        let mut q = rig.queue();
        let chains = 1 + rnd() % 8;
        let mut posted = 0;
        for _ in 0..chains {
            let n = 1 + (rnd() % 5) as usize;
            if usize::from(rig.next_desc) + n > usize::from(QSIZE) {
                break;
            }
            let descs: Vec<D> = (0..n)
                .map(|_| {
                    let addr = match rnd() % 4 {
                        0 => rnd(),
                        _ => BUF + rnd() % 0x1000,
                    };
                    let len = match rnd() % 4 {
                        0 => rnd() as u32,
                        _ => (rnd() % 200) as u32,
                    };
                    D(addr, len, rnd() % 2 == 0)
                })
                .collect();
            // Random request bytes where the readable descriptors point.
            let junk: Vec<u8> = (0..0x1100).map(|_| rnd() as u8).collect();
            rig.mem.write_slice(&junk, GuestAddress(BUF)).unwrap();
            rig.post(&descs);
            posted += 1;
        }
        let served = dev.process_cmdq(&mut q, rig.mem);
        assert_eq!(served, posted, "round {round}");
        assert_eq!(rig.used().len(), posted, "round {round}");
        let s = dev.stats();
        assert_eq!(
            (s.commands + s.rejected + s.dropped) as usize,
            posted,
            "round {round}"
        );
        still_serves(&mut rig, &mut dev, &mut q);
    }
}

#[test]
fn notifications_go_into_event_buffers_and_bad_event_buffers_are_returned() {
    let mem = memory();
    let (mut rig, mut dev) = (Rig::new(&mem), device());
    let mut eq = rig.queue();
    // A readable event buffer (wrong direction), a 2-byte one (too small for a header), then a
    // good one.
    let a = rig.buf(64, &[0; 64]);
    let h1 = rig.post(&[D(a, 64, false)]);
    let h2 = rig.post(&[D(a, 2, true)]);
    let b = rig.buf(64, &[0; 64]);
    let h3 = rig.post(&[D(b, 64, true)]);
    // Nothing pending: no buffer is taken.
    assert_eq!(dev.deliver_p2a(&mut eq, rig.mem), 0);
    dev.platform_mut()
        .queue_notification(proto::CLOCK, 0, &[1, 2, 3, 4]);
    assert_eq!(dev.deliver_p2a(&mut eq, rig.mem), 3);
    assert_eq!(
        rig.used(),
        [(u32::from(h1), 0), (u32::from(h2), 0), (u32::from(h3), 8)]
    );
    let m = rig.read(b, 8);
    let h = Header::decode_bytes(&m).unwrap();
    assert_eq!((h.protocol_id, h.message_id), (proto::CLOCK, 0));
    assert_eq!(&m[4..], &[1, 2, 3, 4]);
    assert_eq!(
        (dev.stats().bad_event_buffers, dev.stats().p2a_delivered),
        (2, 1)
    );
}

#[test]
fn a_delayed_response_waits_for_an_event_buffer_it_fits() {
    let mem = memory();
    let (mut rig, mut dev) = (Rig::new(&mem), device());
    let mut cq = rig.queue();
    // Asynchronous reset of usb-reset (domain 1, async in the config): reply now, delayed
    // response on the event queue.
    let r = req(proto::RESET, 0x4, 12, &[1, 1 << 2, 0]);
    let (_, w) = rig.command(&r, 16);
    dev.process_cmdq(&mut cq, rig.mem);
    assert_eq!(status(&rig.read(w, 8)), 0);
    assert_eq!(dev.platform().pending_p2a(), 1);
    // A second rig for the event queue (separate rings in the same kind of memory).
    let ev_mem = memory();
    let mut ev = Rig::new(&ev_mem);
    let mut eq = ev.queue();
    let small = ev.buf(8, &[0; 8]);
    ev.post(&[D(small, 8, true)]);
    assert_eq!(dev.deliver_p2a(&mut eq, ev.mem), 0, "12 bytes do not fit 8");
    assert!(ev.used().is_empty(), "the small buffer stays in the ring");
    assert_eq!(dev.platform().pending_p2a(), 1);
    // The driver cannot shrink what it posted; a fresh queue with a big enough buffer.
    let ev_mem2 = memory();
    let mut ev = Rig::new(&ev_mem2);
    let mut eq = ev.queue();
    let big = ev.buf(64, &[0; 64]);
    let head = ev.post(&[D(big, 64, true)]);
    assert_eq!(dev.deliver_p2a(&mut eq, ev.mem), 1);
    assert_eq!(ev.used(), [(u32::from(head), 12)]);
    let m = ev.read(big, 12);
    let h = Header::decode_bytes(&m).unwrap();
    assert_eq!(
        (h.protocol_id, h.message_id, h.token),
        (proto::RESET, 4, 12)
    );
    assert_eq!((status(&m), word(&m, 2)), (0, 1));
}

#[test]
fn chain_errors_map_to_scmi_statuses() {
    assert_eq!(ChainError::RequestTooShort.status(), code::PROTOCOL_ERROR);
    assert_eq!(ChainError::RequestTooLong.status(), code::PROTOCOL_ERROR);
    assert_eq!(
        ChainError::ReadableAfterWritable.status(),
        code::COMMS_ERROR
    );
    assert_eq!(ChainError::TooManyDescriptors.status(), code::COMMS_ERROR);
}

#[test]
fn feature_negotiation_without_p2a_refuses_notifications() {
    let mem = memory();
    let (mut rig, mut dev) = (Rig::new(&mem), device());
    dev.reset(false);
    let mut q = rig.queue();
    let (_, w) = rig.command(&req(proto::CLOCK, clock::RATE_NOTIFY, 1, &[0, 1]), 16);
    dev.process_cmdq(&mut q, rig.mem);
    assert_eq!(status(&rig.read(w, 8)), code::NOT_SUPPORTED);
}
