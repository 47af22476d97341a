//! The device model: what the simulated virtio-scmi device does with the rings (take available
//! chains, check them, run the platform, return used elements, interrupt suppression with
//! `EVENT_IDX`), the held/delayed replies of the fault knobs, and the eventq buffers.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use fwipc_transport_api::fixture::Fault;
use virtio_drivers::transport::{DeviceStatus, InterruptStatus};
use virtio_drivers::PhysAddr;

use super::guest_mem::{atomic_u16, read_desc, read_mem_into, write_mem, write_used};
use super::{lock, Dev, PlatformFactory, QueueCfg, Reply, MAX_DEVICE_BUF, SPARE_MAX};
use crate::header::{Header, HEADER_LEN, RESERVED_MASK};
use crate::platform::{FWIPC_TEST_ECHO, FWIPC_TEST_PROTOCOL};
use crate::virtio::ring::{
    vring_need_event, Descriptor, AVAIL_F_NO_INTERRUPT, DESC_F_NEXT, DESC_F_WRITE,
};
use crate::virtio::ScmiFeatures;

impl Dev {
    pub(super) fn driver_ok(&self) -> bool {
        // A device that signalled DEVICE_NEEDS_RESET processes nothing until reset.
        self.status.contains(DeviceStatus::DRIVER_OK)
            && !self.status.contains(DeviceStatus::DEVICE_NEEDS_RESET)
    }

    /// The platform forgets every command in flight (they are never answered) and restarts.
    pub(super) fn forget_in_flight(&mut self, factory: &PlatformFactory) {
        self.swallowed += (self.held.len() + self.delayed.len()) as u64;
        self.held.clear();
        self.delayed.clear();
        self.model = factory();
    }

    pub(super) fn reset_rings(&mut self) {
        self.queues = [QueueCfg::default(); 2];
        self.held.clear();
        self.delayed.clear();
        self.event_bufs.clear();
        self.driver_features = 0;
        self.rewrites = 0;
    }

    /// Whether the driver accepted `VIRTIO_F_RING_EVENT_IDX`.
    pub(super) fn event_idx(&self) -> bool {
        self.driver_features & ScmiFeatures::RING_EVENT_IDX.bits() != 0
    }

    /// Pop the next available head of queue `qi`, if any. With EVENT_IDX, running out of work
    /// publishes `avail_event` = the next index we will read (ask for a kick as soon as anything
    /// new arrives) and re-checks, so a post racing the publication is never lost.
    pub(super) fn next_avail(&mut self, qi: usize) -> Option<u16> {
        let event_idx = self.event_idx();
        let q = &mut self.queues[qi];
        if !q.ready() {
            return None;
        }
        let l = q.layout();
        // SAFETY: the driver configured this ring (queue_set) and keeps it alive until it
        // resets the device, which takes the device lock we hold.
        let avail = unsafe { atomic_u16(q.driver + l.avail_idx() as u64) };
        // Acquire: pairs with the driver's Release store, so its ring entry and descriptors
        // are visible.
        let mut idx = u16::from_le(avail.load(Ordering::Acquire));
        if idx == q.last_avail && self.polling {
            // The device polls: no notification wanted, nothing to re-check.
            // SAFETY: the live used ring area of this queue, as above.
            unsafe { q.kicks.quiet(q.device, &l, q.last_avail, event_idx) };
            return None;
        }
        if idx == q.last_avail && event_idx {
            // SAFETY: `avail_event` lies inside the live used ring area of this queue.
            let ev = unsafe { atomic_u16(q.device + l.avail_event() as u64) };
            // Release: a hint for the driver. SeqCst fence: the store must be visible before we
            // re-read `avail.idx` (pairs with the driver's fence between its `avail.idx` store
            // and its `avail_event` load): either we see its new entry or it sees our event.
            ev.store(q.last_avail.to_le(), Ordering::Release);
            fence(Ordering::SeqCst);
            // Acquire: as above.
            idx = u16::from_le(avail.load(Ordering::Acquire));
        }
        if idx == q.last_avail {
            return None;
        }
        let slot = q.last_avail & (q.size - 1);
        // SAFETY: as above; the entry is inside the avail ring.
        let entry = unsafe { atomic_u16(q.driver + l.avail_ring(slot) as u64) };
        // Relaxed: ordered by the Acquire load of `avail.idx` above.
        let head = u16::from_le(entry.load(Ordering::Relaxed));
        q.last_avail = q.last_avail.wrapping_add(1);
        Some(head)
    }

    /// Enter or leave polling ([`Dev::polling`](super::Dev)). Returns whether the rings must
    /// be looked at now whatever the kicks: polling just ended, and a post made while the
    /// driver saw kicks suppressed kicked nobody. Leaving asks for kicks again on every queue
    /// ([`KickQuiet::resume`](fwipc_virtio::device_ring::KickQuiet::resume), whose fence
    /// orders that before the look); with `EVENT_IDX` the look runs the rings dry, and
    /// `next_avail`, finding them empty outside polling, publishes `avail_event` with its own
    /// fence and re-check.
    #[inline]
    pub(super) fn set_polling(&mut self, polling: bool) -> bool {
        if self.polling == polling {
            return false;
        }
        self.polling = polling;
        !polling && self.resume_kicks()
    }

    /// [`Dev::set_polling`] leaving polling: ask for kicks again on every queue.
    #[cold]
    fn resume_kicks(&mut self) -> bool {
        let event_idx = self.event_idx();
        for q in self.queues.iter_mut().filter(|q| q.ready()) {
            let l = q.layout();
            // SAFETY: the live used ring area of a configured queue (the caller holds the
            // device lock a reset takes).
            unsafe { q.kicks.resume(q.device, &l, event_idx) };
        }
        true
    }

    /// While polling, watch the command queue's `avail.idx` until the driver posts past what
    /// was taken (returns `true`), `hint` is set (device-side work), or `turns` loads have
    /// passed.
    pub(super) fn watch_avail(&self, turns: u32, hint: &AtomicBool) -> bool {
        let q = &self.queues[0];
        if !self.polling || !q.ready() {
            return false;
        }
        // SAFETY: as in `next_avail` (the caller holds the device lock).
        let avail = unsafe { atomic_u16(q.driver + q.layout().avail_idx() as u64) };
        for _ in 0..turns {
            // Relaxed: both only say "look"; `next_avail`'s Acquire load orders the entry.
            if u16::from_le(avail.load(Ordering::Relaxed)) != q.last_avail {
                return true;
            }
            if hint.load(Ordering::Relaxed) {
                return false;
            }
            std::hint::spin_loop();
        }
        false
    }

    /// Whether `addr..addr + len` lies in the memory the guest shared (always, without a
    /// `shared_window`); counts a refusal.
    pub(super) fn may_touch(&mut self, addr: PhysAddr, len: u64) -> bool {
        let Some((start, size)) = self.cfg.shared_window else {
            return true;
        };
        let inside = addr >= start
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= start.saturating_add(size));
        if !inside {
            self.outside_window += 1;
        }
        inside
    }

    pub(super) fn desc(&self, qi: usize, i: u16) -> Option<Descriptor> {
        let q = &self.queues[qi];
        if i >= q.size {
            return None;
        }
        // SAFETY: `i < size`: inside the live descriptor table of a configured ring.
        Some(unsafe { read_desc(q.desc + 16 * i as u64) })
    }

    /// Return a chain on queue `qi` and mark the interrupt pending (with EVENT_IDX: only if the
    /// driver's `used_event` asks for this entry).
    pub(super) fn push_used(&mut self, qi: usize, id: u32, len: u32, isr: &Mutex<u32>) {
        self.push_used_n(qi, id, len, 1, isr);
    }

    /// `push_used`, with the element written `n` times and published by one `used.idx` store (a
    /// device returning a chain `n` times at once: the driver sees every copy in the same
    /// drain, so a copy can never be taken for a later transfer that reuses the chain).
    pub(super) fn push_used_n(&mut self, qi: usize, id: u32, len: u32, n: u16, isr: &Mutex<u32>) {
        let event_idx = self.event_idx();
        let q = &mut self.queues[qi];
        if !q.ready() {
            return;
        }
        let l = q.layout();
        for _ in 0..n {
            let slot = q.used_idx & (q.size - 1);
            // SAFETY: inside the live used ring of a configured queue.
            unsafe { write_used(q.device + l.used_ring(slot) as u64, id, len) };
            q.used_idx = q.used_idx.wrapping_add(1);
        }
        // SAFETY: as above.
        let used = unsafe { atomic_u16(q.device + l.used_idx() as u64) };
        // Release: the element and the reply bytes written before must be visible to a driver
        // that observes the new index.
        used.store(q.used_idx.to_le(), Ordering::Release);
        if event_idx {
            // SeqCst fence: our `used.idx` store must be visible before we read `used_event`
            // (pairs with the driver's fence between its `used_event` store and its `used.idx`
            // re-read): either it sees the entry or we see its request for an interrupt.
            fence(Ordering::SeqCst);
            // SAFETY: `used_event` lies inside the live driver area of this queue.
            let ue = unsafe { atomic_u16(q.driver + l.used_event() as u64) };
            // Acquire: a hint from the driver (the fence above orders what matters).
            let event = u16::from_le(ue.load(Ordering::Acquire));
            let old = q.used_idx.wrapping_sub(n);
            if !vring_need_event(event, q.used_idx, old) {
                self.irqs_suppressed += 1;
                return;
            }
        } else {
            // Without EVENT_IDX the driver's flags word asks (virtio 1.2 §2.7.10: with
            // `VIRTQ_AVAIL_F_NO_INTERRUPT` set the device should not interrupt).
            // SAFETY: `avail.flags` lies inside the live driver area of this queue.
            let flags = unsafe { atomic_u16(q.driver + l.avail_flags() as u64) };
            // Relaxed: a hint from the driver, read after our `used.idx` store; a flag set
            // or cleared concurrently is taken or missed, as the spec allows.
            if u16::from_le(flags.load(Ordering::Relaxed)) & AVAIL_F_NO_INTERRUPT != 0 {
                self.irqs_suppressed += 1;
                return;
            }
        }
        self.irqs_raised += 1;
        *lock(isr) |= InterruptStatus::QUEUE_INTERRUPT.bits();
    }

    /// Write a reply into its chain and return it.
    pub(super) fn deliver(&mut self, r: Reply, isr: &Mutex<u32>) {
        let n = r.bytes.len().min(r.resp_len as usize);
        // SAFETY: `resp_addr..+resp_len` is the chain's writable descriptor, still owned by
        // the device (the chain has not been returned).
        unsafe { write_mem(r.resp_addr, &r.bytes[..n]) };
        let len = r.used_len.unwrap_or(n as u32);
        // A duplicate is published with the original (see `push_used_n`).
        self.push_used_n(0, u32::from(r.head), len, if r.twice { 2 } else { 1 }, isr);
        self.rewrite_published(0, r.resp_addr, r.resp_len, r.head);
        if self.spare.len() < SPARE_MAX {
            self.spare.push(r.bytes);
        }
    }

    /// Handle every new cmdq chain.
    pub(super) fn process_cmdq(&mut self, isr: &Mutex<u32>) {
        let mut batch = std::mem::take(&mut self.batch);
        while let Some(head) = self.next_avail(0) {
            match self.take_command(head) {
                Ok(Some(r)) => batch.push(r),
                Ok(None) => {}
                Err(()) => {
                    // A malformed chain fails only itself: return it empty.
                    self.malformed += 1;
                    self.push_used(0, u32::from(head), 0, isr);
                }
            }
        }
        if self.reorder {
            batch.reverse();
        }
        for r in batch.drain(..) {
            self.deliver(r, isr);
        }
        self.batch = batch;
    }

    /// Read and answer one command chain; `Ok(None)` if the reply is held back by a fault.
    pub(super) fn take_command(&mut self, head: u16) -> Result<Option<Reply>, ()> {
        let d0 = self.desc(0, head).ok_or(())?;
        if d0.flags & DESC_F_WRITE != 0
            || d0.flags & DESC_F_NEXT == 0
            || d0.len < 4
            || d0.len > MAX_DEVICE_BUF
        {
            return Err(());
        }
        let d1 = self.desc(0, d0.next).ok_or(())?;
        if d1.flags & DESC_F_WRITE == 0 || d1.flags & DESC_F_NEXT != 0 || d1.len > MAX_DEVICE_BUF {
            return Err(());
        }
        if !self.may_touch(d0.addr, u64::from(d0.len))
            || !self.may_touch(d1.addr, u64::from(d1.len))
        {
            return Err(());
        }
        // The device's buffers are reused from command to command: the steady state allocates
        // nothing.
        let mut req = std::mem::take(&mut self.scratch_req);
        // SAFETY: the driver shared `d0` for reading until we return the chain.
        unsafe { read_mem_into(d0.addr, d0.len as usize, &mut req) };
        self.received += 1;
        if let Ok(h) = Header::decode_bytes(&req) {
            if h.protocol_id == FWIPC_TEST_PROTOCOL
                && h.message_id == FWIPC_TEST_ECHO
                && req.len() >= HEADER_LEN + 4
            {
                self.seen.log(&req[HEADER_LEN..]);
            }
        }
        let mut bytes = self.spare.pop().unwrap_or_default();
        bytes.clear();
        bytes.resize(d1.len as usize, 0);
        let n = self.model.handle_command(&req, &mut bytes).min(bytes.len());
        bytes.truncate(n);
        self.scratch_req = req;
        if self.header_xor != 0 && bytes.len() >= 4 {
            let w = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) ^ self.header_xor;
            bytes[..4].copy_from_slice(&w.to_le_bytes());
        }
        let mut r = Reply {
            head,
            bytes,
            resp_addr: d1.addr,
            resp_len: d1.len,
            used_len: None,
            twice: false,
        };
        self.corrupt_toggle = !self.corrupt_toggle;
        match self.fault {
            Fault::None => Ok(Some(r)),
            Fault::Hold => {
                self.held.push(r);
                Ok(None)
            }
            Fault::Drop => {
                self.swallowed += 1;
                Ok(None)
            }
            Fault::Duplicate => {
                r.twice = true;
                Ok(Some(r))
            }
            Fault::WrongToken => {
                if r.bytes.len() >= 4 {
                    let w = u32::from_le_bytes([r.bytes[0], r.bytes[1], r.bytes[2], r.bytes[3]])
                        ^ (1 << 18);
                    r.bytes[..4].copy_from_slice(&w.to_le_bytes());
                }
                Ok(Some(r))
            }
            Fault::CorruptLength => {
                r.used_len = Some(if self.corrupt_toggle { d1.len + 64 } else { 3 });
                Ok(Some(r))
            }
            Fault::CorruptHeader => {
                if r.bytes.len() >= 4 {
                    let w = u32::from_le_bytes([r.bytes[0], r.bytes[1], r.bytes[2], r.bytes[3]]);
                    let w = if self.corrupt_toggle {
                        w | RESERVED_MASK
                    } else {
                        (w & !0x300) | 0x100
                    };
                    r.bytes[..4].copy_from_slice(&w.to_le_bytes());
                }
                Ok(Some(r))
            }
            Fault::Delay(d) => {
                self.delayed.push((Instant::now() + d, r));
                Ok(None)
            }
        }
    }

    /// Collect new eventq buffers.
    pub(super) fn process_eventq(&mut self, isr: &Mutex<u32>) {
        while let Some(head) = self.next_avail(1) {
            match self.desc(1, head) {
                Some(d)
                    if d.flags & DESC_F_WRITE != 0
                        && d.flags & DESC_F_NEXT == 0
                        && d.len <= MAX_DEVICE_BUF
                        && self.may_touch(d.addr, u64::from(d.len)) =>
                {
                    self.event_bufs.push_back((head, d.addr, d.len))
                }
                _ => {
                    self.malformed += 1;
                    self.push_used(1, u32::from(head), 0, isr);
                }
            }
        }
    }

    /// Send pending P2A messages while eventq buffers exist.
    pub(super) fn deliver_p2a(&mut self, isr: &Mutex<u32>) {
        let mut buf = std::mem::take(&mut self.p2a_buf);
        while let Some(&(head, addr, len)) = self.event_bufs.front() {
            buf.clear();
            buf.resize(len as usize, 0);
            let Some(n) = self.model.next_p2a(&mut buf) else {
                break;
            };
            let n = n.min(buf.len());
            self.event_bufs.pop_front();
            // SAFETY: the driver posted this writable buffer and has not got it back.
            unsafe { write_mem(addr, &buf[..n]) };
            self.push_used(1, u32::from(head), n as u32, isr);
        }
        self.p2a_buf = buf;
    }

    /// Write `bytes` into the next posted eventq buffer and return it claiming `used_len`
    /// bytes. `false` if the device holds no eventq buffer.
    pub(super) fn fill_event(&mut self, bytes: &[u8], used_len: u32, isr: &Mutex<u32>) -> bool {
        let Some((head, addr, len)) = self.event_bufs.pop_front() else {
            return false;
        };
        let n = bytes.len().min(len as usize);
        // SAFETY: a posted, writable eventq buffer the device holds.
        unsafe { write_mem(addr, &bytes[..n]) };
        self.push_used(1, u32::from(head), used_len, isr);
        self.rewrite_published(1, addr, len, head);
        true
    }

    /// The double-fetch fault ([`SimDevice::rewrite_after_publish`](super::SimDevice::rewrite_after_publish)):
    /// right after returning chain `head` on queue `qi` (its used element and `used.idx` are
    /// published), flip bytes of what the driver is about to read, or is reading right now on
    /// another thread: the buffer's header word (XOR the mask's bytes 0..4) and, for a cmdq
    /// reply, its status word (bytes 4..8); if byte 8 is odd the used element's length is
    /// rewritten to one beyond the buffer. Each rewrite is a read-modify-write through the
    /// shared-memory accessors (byte atomics), racing the driver's own byte reads.
    fn rewrite_published(&mut self, qi: usize, addr: PhysAddr, len: u32, head: u16) {
        if self.rewrites == 0 || len < 8 {
            return;
        }
        self.rewrites -= 1;
        let mask = self.rewrite_mask;
        let words = if qi == 0 { 8 } else { 4 };
        let mut b = [0u8; 8];
        // SAFETY: the first `words` (≤ 8 ≤ len) bytes of the buffer just returned; with the
        // identity-mapped `SimHal` its memory lives as long as the driver's pool or eventq, and
        // every agent reaches it through byte atomics. A hostile write after the return: the
        // driver must read each byte once and check what it read.
        unsafe { read_mem_into(addr, words, &mut self.scratch_req) };
        for (i, x) in b.iter_mut().take(words).enumerate() {
            *x = self.scratch_req[i] ^ mask[i];
        }
        // SAFETY: as above.
        unsafe { write_mem(addr, &b[..words]) };
        let q = &self.queues[qi];
        if mask[8] & 1 == 1 && q.ready() {
            let slot = q.used_idx.wrapping_sub(1) & (q.size - 1);
            // SAFETY: inside the live used ring of a configured queue (the element just
            // published).
            unsafe {
                write_used(
                    q.device + q.layout().used_ring(slot) as u64,
                    u32::from(head),
                    len.saturating_add(1),
                )
            };
        }
    }

    pub(super) fn deliver_due(&mut self, isr: &Mutex<u32>) {
        if self.delayed.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= now {
                let (_, r) = self.delayed.remove(i);
                self.deliver(r, isr);
            } else {
                i += 1;
            }
        }
    }

    pub(super) fn next_due(&self) -> Option<Instant> {
        self.delayed.iter().map(|(t, _)| *t).min()
    }
}
