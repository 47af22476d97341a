//! A minimal SCMI-over-virtio driver written directly on `VirtQueue`, for transport tests.

use std::time::{Duration, Instant};

use bitflags::bitflags;
use harness_vhost_user::{Daemon, MemfdHal, VhostUserTransport};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceStatus, Transport};

use super::TIMEOUT;

pub const BASE: u8 = 0x10;
pub const SENSOR: u8 = 0x15;
pub const NOT_SUPPORTED: i32 = -1;
pub const INVALID_PARAMETERS: i32 = -2;

pub const CMDQ: u16 = 0;
pub const EVENTQ: u16 = 1;
pub const CMDQ_SIZE: usize = 64;
pub const EVENTQ_SIZE: usize = 16;
/// Largest reply we expect (sensor description of a few sensors).
pub const RESP_LEN: usize = 256;
/// Largest P2A message: header + agent + sensor + 3 axes × 4 words.
pub const EVENT_LEN: usize = 64;

bitflags! {
    /// The features this raw driver understands (own type: virtio-drivers drops unknown bits).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Features: u64 {
        const P2A_CHANNELS = 1 << 0;
        const RING_EVENT_IDX = 1 << 29;
        const VERSION_1 = 1 << 32;
    }
}

/// SCMI header: msg_id[7:0] | type[9:8] | protocol_id[17:10] | token[27:18].
pub fn header(protocol: u8, msg: u8, token: u16) -> u32 {
    u32::from(msg) | (u32::from(protocol) << 10) | ((u32::from(token) & 0x3ff) << 18)
}

pub struct Reply {
    pub header: u32,
    pub status: i32,
    pub words: Vec<u32>,
    pub bytes: Vec<u8>,
}

impl Reply {
    fn parse(buf: &[u8]) -> Reply {
        assert!(buf.len() >= 8, "reply too short: {} bytes", buf.len());
        let word = |i: usize| u32::from_le_bytes(buf[i * 4..i * 4 + 4].try_into().unwrap());
        Reply {
            header: word(0),
            status: word(1) as i32,
            words: (2..buf.len() / 4).map(word).collect(),
            bytes: buf[8..].to_vec(),
        }
    }
}

pub fn encode(protocol: u8, msg: u8, token: u16, params: &[u32]) -> Vec<u8> {
    let mut v = header(protocol, msg, token).to_le_bytes().to_vec();
    for p in params {
        v.extend_from_slice(&p.to_le_bytes());
    }
    v
}

/// A raw device: the daemon, the harness transport, a cmdq and optionally an eventq.
pub struct RawScmi {
    pub cmdq: VirtQueue<MemfdHal, CMDQ_SIZE>,
    pub eventq: Option<VirtQueue<MemfdHal, EVENTQ_SIZE>>,
    pub transport: VhostUserTransport,
    pub features: Features,
    next_token: u16,
    /// Call-eventfd signals seen on the cmdq (proves the device signals, not just that we poll).
    pub cmd_signals: u64,
}

impl RawScmi {
    pub fn new(daemon: &Daemon, want: Features) -> RawScmi {
        let mut transport = VhostUserTransport::connect(
            daemon.socket(),
            harness_vhost_user::shared_memory(),
            TIMEOUT,
        )
        .expect("connect");
        let features = transport.begin_init(want);
        assert!(features.contains(Features::VERSION_1));
        let event_idx = features.contains(Features::RING_EVENT_IDX);
        let cmdq = VirtQueue::new(&mut transport, CMDQ, false, event_idx).expect("cmdq");
        let eventq = features
            .contains(Features::P2A_CHANNELS)
            .then(|| VirtQueue::new(&mut transport, EVENTQ, false, event_idx).expect("eventq"));
        transport.finish_init();
        assert!(transport.error().is_none(), "{:?}", transport.error());
        assert!(transport.get_status().contains(DeviceStatus::DRIVER_OK));
        RawScmi {
            cmdq,
            eventq,
            transport,
            features,
            next_token: 0,
            cmd_signals: 0,
        }
    }

    pub fn token(&mut self) -> u16 {
        let t = self.next_token;
        self.next_token = (t + 1) & 0x3ff;
        t
    }

    /// Wait (bounded) until the cmdq has a used entry, sleeping on the call eventfd.
    pub fn wait_cmdq(&mut self, deadline: Instant) {
        while !self.cmdq.can_pop() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("cmdq reply deadline passed"));
            if self.transport.wait_call(CMDQ, left).expect("poll") {
                self.cmd_signals += 1;
            }
        }
    }

    /// Wait for the next cmdq reply *through its used-buffer signal alone*: the call eventfd must
    /// fire (within the deadline), and the reply must then be there. Callers clear stale signals
    /// with [`Self::clear_signals`] before kicking.
    pub fn wait_cmdq_signalled(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            self.transport.wait_call(CMDQ, left).expect("poll"),
            "no used-buffer signal from the device"
        );
        self.cmd_signals += 1;
        assert!(
            self.cmdq.can_pop(),
            "signalled before the used ring was updated"
        );
    }

    /// Consume any pending cmdq signal.
    pub fn clear_signals(&mut self) {
        let _ = self.transport.wait_call(CMDQ, Duration::ZERO);
    }

    /// One command, one reply.
    pub fn call(&mut self, protocol: u8, msg: u8, params: &[u32]) -> Reply {
        let token = self.token();
        let req = encode(protocol, msg, token, params);
        let mut resp = [0u8; RESP_LEN];
        self.clear_signals();
        // SAFETY: `req` and `resp` outlive the pop_used below, which uses the same buffers.
        let desc = unsafe { self.cmdq.add(&[&req], &mut [&mut resp]) }.expect("add");
        if self.cmdq.should_notify() {
            self.transport.notify(CMDQ);
        }
        self.wait_cmdq_signalled(Instant::now() + TIMEOUT);
        // SAFETY: same buffers as passed to `add` for `desc`.
        let len = unsafe { self.cmdq.pop_used(desc, &[&req], &mut [&mut resp]) }.expect("pop");
        let r = Reply::parse(&resp[..len as usize]);
        assert_eq!(r.header, header(protocol, msg, token), "header echoed");
        r
    }

    /// Post one device-writable buffer per slot of `bufs` on the eventq; returns descriptor ids.
    ///
    /// # Safety
    /// `bufs` must stay valid and untouched until each is popped with [`Self::pop_event`].
    pub unsafe fn post_events(&mut self, bufs: &mut [[u8; EVENT_LEN]]) -> Vec<u16> {
        let q = self.eventq.as_mut().expect("eventq negotiated");
        let mut ids = Vec::new();
        for b in bufs.iter_mut() {
            // SAFETY: caller contract.
            ids.push(unsafe { q.add(&[], &mut [&mut b[..]]) }.expect("post event buffer"));
        }
        if q.should_notify() {
            self.transport.notify(EVENTQ);
        }
        ids
    }

    /// Wait (bounded) for the next used eventq buffer; its descriptor id.
    pub fn wait_event(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(id) = self.eventq.as_ref().unwrap().peek_used() {
                return Some(id);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.transport.wait_call(EVENTQ, left).expect("poll");
        }
    }

    /// Pop eventq buffer `id` (must be the next used one).
    ///
    /// # Safety
    /// `buf` must be the buffer posted as `id`.
    pub unsafe fn pop_event(&mut self, id: u16, buf: &mut [u8; EVENT_LEN]) -> usize {
        let q = self.eventq.as_mut().unwrap();
        // SAFETY: caller contract.
        unsafe { q.pop_used(id, &[], &mut [&mut buf[..]]) }.expect("pop event") as usize
    }
}

impl Drop for RawScmi {
    fn drop(&mut self) {
        // Reset (GET_VRING_BASE stops the rings) before the queues' DMA pages are freed, so the
        // daemon cannot write into pages the pool hands to someone else.
        self.transport.set_status(DeviceStatus::empty());
    }
}

/// Little-endian u32 words of `b` (whole words only).
pub fn words(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A NUL-padded 16-byte SCMI name.
pub fn name16(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}
