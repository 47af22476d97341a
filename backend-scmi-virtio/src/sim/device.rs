//! [`SimDevice`]: a simulated virtio-scmi device. A device thread reads the very descriptor,
//! available and used rings the driver writes (identity-mapped shared memory), hosts a
//! [`PlatformModel`], and raises an interrupt line; [`SimTransport`] is the driver's view of the
//! device's register file (a virtio-drivers `Transport`).
//!
//! Fault knobs ([`Fault`] via [`RemoteControl`], plus [`SimDevice::set_reorder`] and
//! [`SimDevice::inject_used`]): hold replies until released (late replies), drop (never return
//! buffers), duplicate used entries, wrong token, bad used length, corrupt header, delayed and
//! out-of-order completion, platform reset with transfers in flight, garbage in the used rings
//! and eventq buffers, a reset never confirmed ([`SimDevice::set_refuse_reset`]), a device that
//! stops consuming ([`SimDevice::set_stop_consuming`]). Delayed responses and notifications wait in the platform until eventq
//! buffers exist.

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicBool, AtomicU16, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{Fault, RemoteControl, SimMode, SimModeSwitch};
use fwipc_transport_api::shared_mem::{copy_from_shared, copy_to_shared};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::PhysAddr;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::header::{Header, HEADER_LEN, RESERVED_MASK};
use crate::platform::{PlatformModel, FWIPC_TEST_ECHO, FWIPC_TEST_NOTIFY, FWIPC_TEST_PROTOCOL};
use crate::virtio::ring::{vring_need_event, Descriptor, RingLayout, DESC_F_NEXT, DESC_F_WRITE};
use crate::virtio::{ScmiFeatures, VIRTIO_ID_SCMI};

/// Largest buffer the device agrees to read or write (a sanity bound on driver lengths).
const MAX_DEVICE_BUF: u32 = 1 << 20;

/// Builds a fresh platform (at start and at every `reset_remote`).
pub type PlatformFactory = Box<dyn Fn() -> Box<dyn PlatformModel> + Send + Sync>;

/// Static properties of the simulated device.
#[derive(Debug, Clone, Copy)]
pub struct SimDeviceConfig {
    /// `max_queue_size` for both queues.
    pub queue_max: u32,
    /// Offer `VIRTIO_SCMI_F_P2A_CHANNELS` (and expose the eventq).
    pub offer_p2a: bool,
    /// Offer `VIRTIO_F_VERSION_1` (false = a legacy device, which the driver must refuse).
    pub offer_version_1: bool,
    /// Offer `VIRTIO_F_RING_EVENT_IDX`. When negotiated the device implements its side: it
    /// publishes `avail_event` (= the next avail index it will read) whenever it runs out of
    /// work, and raises the queue interrupt only when `used_event` asks for it.
    pub offer_event_idx: bool,
    /// Offer `VIRTIO_F_ACCESS_PLATFORM` (a device behind the platform's DMA translation).
    pub offer_access_platform: bool,
    /// Play the host of a protected VM: the only guest memory it may touch is this window
    /// (`start`, `len`) the guest shared. A ring or buffer address outside it is refused (the
    /// chain is returned empty, like a malformed one) and counted
    /// ([`SimDevice::outside_window`]). `None`: all memory is reachable.
    pub shared_window: Option<(PhysAddr, u64)>,
    /// Look at the available rings only after a kick (like a real vhost back-end), instead of
    /// also on every 20 ms idle tick. A driver that skips a kick the device asked for then
    /// stalls, which a bounded test sees.
    pub kick_only: bool,
}

impl Default for SimDeviceConfig {
    fn default() -> Self {
        SimDeviceConfig {
            queue_max: 2048,
            offer_p2a: true,
            offer_version_1: true,
            offer_event_idx: true,
            offer_access_platform: false,
            shared_window: None,
            kick_only: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct QueueCfg {
    size: u16,
    desc: PhysAddr,
    driver: PhysAddr,
    device: PhysAddr,
    last_avail: u16,
    used_idx: u16,
}

impl QueueCfg {
    fn ready(&self) -> bool {
        self.desc != 0 && self.driver != 0 && self.device != 0 && self.size.is_power_of_two()
    }
    fn layout(&self) -> RingLayout {
        RingLayout::new(self.size)
    }
}

/// A reply the device has computed but not yet returned.
#[derive(Debug)]
struct Reply {
    head: u16,
    bytes: Vec<u8>,
    resp_addr: PhysAddr,
    resp_len: u32,
    /// Used length to report instead of `bytes.len()` (bad-length fault).
    used_len: Option<u32>,
    /// Return the chain twice (duplicate fault).
    twice: bool,
}

struct Dev {
    cfg: SimDeviceConfig,
    status: DeviceStatus,
    driver_features: u64,
    queues: [QueueCfg; 2],
    kicked: bool,
    quit: bool,
    fault: Fault,
    reorder: bool,
    /// XOR applied to every reply header word (e.g. 1 = right token, wrong message id).
    header_xor: u32,
    held: Vec<Reply>,
    delayed: Vec<(Instant, Reply)>,
    /// Chains swallowed by the Drop fault or forgotten by a platform reset.
    swallowed: u64,
    event_bufs: VecDeque<(u16, PhysAddr, u32)>,
    seen: Vec<u32>,
    received: u64,
    malformed: u64,
    /// Ring or buffer addresses outside `cfg.shared_window` (each refused).
    outside_window: u64,
    corrupt_toggle: bool,
    /// Kicks (driver notifications) received.
    kicks: u64,
    /// Queue interrupts raised / suppressed by `used_event`.
    irqs_raised: u64,
    irqs_suppressed: u64,
    /// Ignore a write of status 0 (a device that never completes a reset, virtio 1.2 §2.4).
    refuse_reset: bool,
    /// Stop consuming: take nothing from the available rings and return nothing (a hung device
    /// that signals nothing, not even `DEVICE_NEEDS_RESET`).
    stopped: bool,
    model: Box<dyn PlatformModel>,
    /// Reused buffers (the steady state allocates nothing): the request being read, spent
    /// reply buffers, the batch of replies, the P2A message being built.
    scratch_req: Vec<u8>,
    spare: Vec<Vec<u8>>,
    batch: Vec<Reply>,
    p2a_buf: Vec<u8>,
    /// The device thread waits on `Shared::wake` (a kick must wake it).
    sleeping: bool,
}

/// Spent reply buffers the device keeps for reuse.
const SPARE_MAX: usize = 64;

struct Shared {
    dev: Mutex<Dev>,
    wake: Condvar,
    isr: Mutex<u32>,
    irq: Condvar,
    factory: PlatformFactory,
    /// How the device thread runs ([`RemoteControl::set_sim_mode`]).
    mode: SimModeSwitch,
    /// A kick (or device-side work) since the spinning device thread last looked: lets it spin
    /// without taking the device lock the driver needs.
    kick_hint: AtomicBool,
    /// Threads in [`IrqLine::wait`]; changed and read under the `isr` lock.
    irq_waiters: AtomicUsize,
}

impl Shared {
    /// One pass of the device loop: consume the kick, handle new chains (if kicked, or always
    /// without `kick_only`), deliver what is due, raise the interrupt line. Returns whether it
    /// was kicked.
    fn serve(&self, d: &mut Dev) -> bool {
        // Consume the kick whatever the state (a kick racing a reset must not make us spin).
        let kicked = std::mem::take(&mut d.kicked);
        if d.driver_ok() && !d.stopped {
            if kicked || !d.cfg.kick_only {
                d.process_cmdq(&self.isr);
                d.process_eventq(&self.isr);
            }
            d.deliver_due(&self.isr);
            d.deliver_p2a(&self.isr);
            // Waking the line costs a system call: only when an interrupt thread waits on it
            // (`irq_waiters` changes under the `isr` lock held here).
            let isr = lock(&self.isr);
            // Relaxed: read under the `isr` lock that orders it (see `IrqLine::wait`).
            if *isr != 0 && self.irq_waiters.load(Ordering::Relaxed) > 0 {
                drop(isr);
                self.irq.notify_all();
            }
        }
        kicked
    }

    /// Tell a spinning device thread to look (see `kick_hint`).
    fn hint(&self) {
        // Release: pairs with the Acquire swap in `device_thread`; the device lock orders the
        // state itself, this only says "look".
        self.kick_hint.store(true, Ordering::Release);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking device thread must not take the tests down with poisoned locks.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- guest memory access (identity mapped) -------------------------------------------------
//
// The device side reaches the memory it shares with the driver exactly as the driver does, field
// by field with atomics of the driver's widths (`fwipc_virtio::ring`: descriptors as `u32` address
// halves, `u32` length, `u16` flags and next; avail entries and ring indices as `u16`; used
// elements as two `u32`s) and buffers through `fwipc_transport_api::shared_mem` (bytes). No
// non-atomic or mixed-size access to memory the other side touches, so a race between the two
// (a hostile driver, or a driver reading what we write) is garbage data, never undefined
// behaviour, and Miri over a driver + device test checks both sides
// (docs/reliability.md, "Invariants" item 1).

/// # Safety
/// `addr..addr+len` must be memory the driver shared with the device and still owns for it.
unsafe fn read_mem_into(addr: PhysAddr, len: usize, v: &mut Vec<u8>) {
    v.clear();
    v.resize(len, 0);
    // SAFETY: guaranteed by the caller; every agent reaches those bytes through byte atomics.
    unsafe { copy_from_shared(addr as usize as *const u8, v) };
}

/// # Safety
/// As `read_mem_into`, for writes of `data.len()` bytes.
unsafe fn write_mem(addr: PhysAddr, data: &[u8]) {
    // SAFETY: as in `read_mem_into`.
    unsafe { copy_to_shared(addr as usize as *mut u8, data) };
}

/// # Safety
/// `addr` must point to a live, 2-byte aligned ring field shared with the driver, which
/// accesses it as an `AtomicU16` too.
unsafe fn atomic_u16<'a>(addr: PhysAddr) -> &'a AtomicU16 {
    // SAFETY: guaranteed by the caller.
    unsafe { AtomicU16::from_ptr(addr as usize as *mut u16) }
}

/// # Safety
/// `addr` must point to a live, 4-byte aligned ring field shared with the driver, which
/// accesses it as an `AtomicU32` too.
unsafe fn atomic_u32<'a>(addr: PhysAddr) -> &'a AtomicU32 {
    // SAFETY: guaranteed by the caller.
    unsafe { AtomicU32::from_ptr(addr as usize as *mut u32) }
}

/// # Safety
/// `addr` must point to a descriptor of a live descriptor table (16-byte aligned: the table
/// starts on a page).
unsafe fn read_desc(addr: PhysAddr) -> Descriptor {
    // SAFETY: the fields of one descriptor, each aligned for its width (guaranteed by the
    // caller), accessed with the widths the driver's `set_desc` writes them with.
    let (lo, hi, len, flags, next) = unsafe {
        (
            atomic_u32(addr),
            atomic_u32(addr + 4),
            atomic_u32(addr + 8),
            atomic_u16(addr + 12),
            atomic_u16(addr + 14),
        )
    };
    // Relaxed (all): the Acquire load of `avail.idx` that made this chain available ordered
    // the driver's writes before these reads.
    Descriptor {
        addr: u64::from(u32::from_le(lo.load(Ordering::Relaxed)))
            | u64::from(u32::from_le(hi.load(Ordering::Relaxed))) << 32,
        len: u32::from_le(len.load(Ordering::Relaxed)),
        flags: u16::from_le(flags.load(Ordering::Relaxed)),
        next: u16::from_le(next.load(Ordering::Relaxed)),
    }
}

/// # Safety
/// `addr` must point to an element of a live used ring (4-byte aligned).
unsafe fn write_used(addr: PhysAddr, id: u32, len: u32) {
    // SAFETY: the two words of one element (guaranteed by the caller), with the driver's width.
    let (i, l) = unsafe { (atomic_u32(addr), atomic_u32(addr + 4)) };
    // Relaxed (both): published by the Release store of `used.idx` after them.
    i.store(id.to_le(), Ordering::Relaxed);
    l.store(len.to_le(), Ordering::Relaxed);
}

impl Dev {
    fn driver_ok(&self) -> bool {
        // A device that signalled DEVICE_NEEDS_RESET processes nothing until reset.
        self.status.contains(DeviceStatus::DRIVER_OK)
            && !self.status.contains(DeviceStatus::DEVICE_NEEDS_RESET)
    }

    /// The platform forgets every command in flight (they are never answered) and restarts.
    fn forget_in_flight(&mut self, factory: &PlatformFactory) {
        self.swallowed += (self.held.len() + self.delayed.len()) as u64;
        self.held.clear();
        self.delayed.clear();
        self.model = factory();
    }

    fn reset_rings(&mut self) {
        self.queues = [QueueCfg::default(); 2];
        self.held.clear();
        self.delayed.clear();
        self.event_bufs.clear();
        self.driver_features = 0;
    }

    /// Whether the driver accepted `VIRTIO_F_RING_EVENT_IDX`.
    fn event_idx(&self) -> bool {
        self.driver_features & ScmiFeatures::RING_EVENT_IDX.bits() != 0
    }

    /// Pop the next available head of queue `qi`, if any. With EVENT_IDX, running out of work
    /// publishes `avail_event` = the next index we will read (ask for a kick as soon as anything
    /// new arrives) and re-checks, so a post racing the publication is never lost.
    fn next_avail(&mut self, qi: usize) -> Option<u16> {
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

    /// Whether `addr..addr + len` lies in the memory the guest shared (always, without a
    /// `shared_window`); counts a refusal.
    fn may_touch(&mut self, addr: PhysAddr, len: u64) -> bool {
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

    fn desc(&self, qi: usize, i: u16) -> Option<Descriptor> {
        let q = &self.queues[qi];
        if i >= q.size {
            return None;
        }
        // SAFETY: `i < size`: inside the live descriptor table of a configured ring.
        Some(unsafe { read_desc(q.desc + 16 * i as u64) })
    }

    /// Return a chain on queue `qi` and mark the interrupt pending (with EVENT_IDX: only if the
    /// driver's `used_event` asks for this entry).
    fn push_used(&mut self, qi: usize, id: u32, len: u32, isr: &Mutex<u32>) {
        let event_idx = self.event_idx();
        let q = &mut self.queues[qi];
        if !q.ready() {
            return;
        }
        let l = q.layout();
        let slot = q.used_idx & (q.size - 1);
        // SAFETY: inside the live used ring of a configured queue.
        unsafe { write_used(q.device + l.used_ring(slot) as u64, id, len) };
        q.used_idx = q.used_idx.wrapping_add(1);
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
            let old = q.used_idx.wrapping_sub(1);
            if !vring_need_event(event, q.used_idx, old) {
                self.irqs_suppressed += 1;
                return;
            }
        }
        self.irqs_raised += 1;
        *lock(isr) |= InterruptStatus::QUEUE_INTERRUPT.bits();
    }

    /// Write a reply into its chain and return it.
    fn deliver(&mut self, r: Reply, isr: &Mutex<u32>) {
        let n = r.bytes.len().min(r.resp_len as usize);
        // SAFETY: `resp_addr..+resp_len` is the chain's writable descriptor, still owned by
        // the device (the chain has not been returned).
        unsafe { write_mem(r.resp_addr, &r.bytes[..n]) };
        let len = r.used_len.unwrap_or(n as u32);
        self.push_used(0, u32::from(r.head), len, isr);
        if r.twice {
            self.push_used(0, u32::from(r.head), len, isr);
        }
        if self.spare.len() < SPARE_MAX {
            self.spare.push(r.bytes);
        }
    }

    /// Handle every new cmdq chain.
    fn process_cmdq(&mut self, isr: &Mutex<u32>) {
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
    fn take_command(&mut self, head: u16) -> Result<Option<Reply>, ()> {
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
                let tag = &req[HEADER_LEN..HEADER_LEN + 4];
                self.seen
                    .push(u32::from_le_bytes([tag[0], tag[1], tag[2], tag[3]]));
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
    fn process_eventq(&mut self, isr: &Mutex<u32>) {
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
    fn deliver_p2a(&mut self, isr: &Mutex<u32>) {
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
    fn fill_event(&mut self, bytes: &[u8], used_len: u32, isr: &Mutex<u32>) -> bool {
        let Some((head, addr, len)) = self.event_bufs.pop_front() else {
            return false;
        };
        let n = bytes.len().min(len as usize);
        // SAFETY: a posted, writable eventq buffer the device holds.
        unsafe { write_mem(addr, &bytes[..n]) };
        self.push_used(1, u32::from(head), used_len, isr);
        true
    }

    fn deliver_due(&mut self, isr: &Mutex<u32>) {
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

    fn next_due(&self) -> Option<Instant> {
        self.delayed.iter().map(|(t, _)| *t).min()
    }
}

fn device_thread(sh: Arc<Shared>) {
    let mut d = lock(&sh.dev);
    loop {
        if d.quit {
            return;
        }
        match sh.mode.take() {
            SimMode::Normal => {}
            SimMode::Spin => {
                drop(d);
                // Spin without the lock until the driver kicks (or every 4096 turns, for
                // device-side work such as delayed replies).
                for _ in 0..4096 {
                    // A plain load first: a read-modify-write on every turn would take the
                    // line away from the driver each time. Relaxed: only a hint; Acquire: the
                    // swap pairs with the Release store in `Shared::hint`.
                    if sh.kick_hint.load(Ordering::Relaxed)
                        && sh.kick_hint.swap(false, Ordering::Acquire)
                    {
                        break;
                    }
                    std::hint::spin_loop();
                }
                d = lock(&sh.dev);
                if !d.quit {
                    sh.serve(&mut d);
                }
                continue;
            }
            SimMode::Stepped => {
                // Idle without the lock and off the `wake` condvar: the caller steps.
                drop(d);
                std::thread::sleep(Duration::from_millis(1));
                d = lock(&sh.dev);
                continue;
            }
        }
        let kicked = sh.serve(&mut d);
        if (kicked && d.driver_ok()) || d.kicked || d.quit {
            // Work may have arrived while we processed: look again (the lock is released and
            // re-taken so the driver side is never starved).
            drop(d);
            std::thread::yield_now();
            d = lock(&sh.dev);
            continue;
        }
        let wait = d
            .next_due()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(20))
            .min(Duration::from_millis(20));
        d.sleeping = true;
        d = sh
            .wake
            .wait_timeout(d, wait)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        d.sleeping = false;
    }
}

/// A running simulated virtio-scmi device (its thread stops when this is dropped).
pub struct SimDevice {
    sh: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl core::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimDevice").finish_non_exhaustive()
    }
}

impl SimDevice {
    /// Start a device whose platform is built by `factory` (again at every `reset_remote`).
    pub fn start(
        cfg: SimDeviceConfig,
        factory: impl Fn() -> Box<dyn PlatformModel> + Send + Sync + 'static,
    ) -> Self {
        let factory: PlatformFactory = Box::new(factory);
        let model = factory();
        let sh = Arc::new(Shared {
            dev: Mutex::new(Dev {
                cfg,
                status: DeviceStatus::empty(),
                driver_features: 0,
                queues: [QueueCfg::default(); 2],
                kicked: false,
                quit: false,
                fault: Fault::None,
                reorder: false,
                header_xor: 0,
                held: Vec::new(),
                delayed: Vec::new(),
                swallowed: 0,
                event_bufs: VecDeque::new(),
                seen: Vec::new(),
                received: 0,
                malformed: 0,
                outside_window: 0,
                corrupt_toggle: false,
                kicks: 0,
                irqs_raised: 0,
                irqs_suppressed: 0,
                refuse_reset: false,
                stopped: false,
                model,
                scratch_req: Vec::new(),
                spare: Vec::new(),
                batch: Vec::new(),
                p2a_buf: Vec::new(),
                sleeping: false,
            }),
            wake: Condvar::new(),
            isr: Mutex::new(0),
            irq: Condvar::new(),
            factory,
            mode: SimModeSwitch::new(),
            kick_hint: AtomicBool::new(false),
            irq_waiters: AtomicUsize::new(0),
        });
        let s2 = sh.clone();
        let thread = std::thread::Builder::new()
            .name("sim-virtio-scmi".into())
            .spawn(move || device_thread(s2))
            .expect("spawn device thread");
        SimDevice {
            sh,
            thread: Some(thread),
        }
    }

    /// The driver's view of the device (register file). One per driver.
    pub fn transport(&self) -> SimTransport {
        SimTransport {
            sh: self.sh.clone(),
        }
    }

    /// A handle for an interrupt-delivery thread.
    pub fn irq_line(&self) -> IrqLine {
        IrqLine {
            sh: self.sh.clone(),
        }
    }

    /// Wake the device thread for device-side work (P2A messages queued). Not a driver kick: in
    /// `kick_only` mode it does not make the device look at the available rings.
    fn kick(&self) {
        self.sh.hint();
        self.sh.wake.notify_all();
    }

    /// Complete each batch of commands (and each `release` of held replies) in reverse order of
    /// arrival (out-of-order completion).
    pub fn set_reorder(&self, on: bool) {
        lock(&self.sh.dev).reorder = on;
    }

    /// XOR every reply header word with `mask` from now on (0 = off). `1` flips the message
    /// id's low bit: right token, wrong message.
    pub fn set_header_xor(&self, mask: u32) {
        lock(&self.sh.dev).header_xor = mask;
    }

    /// From now on ignore resets (hostile or hung device): a write of status 0 leaves the status,
    /// the rings and every buffer the device holds as they are, so the driver never reads
    /// status 0 back and must not reuse the memory.
    pub fn set_refuse_reset(&self, on: bool) {
        lock(&self.sh.dev).refuse_reset = on;
    }

    /// Stop consuming (`true`) or resume (`false`): a hung device that neither takes new chains
    /// from the available rings nor returns any, delivers nothing and signals nothing (no
    /// `DEVICE_NEEDS_RESET`, no interrupt). Chains it already took stay held.
    pub fn set_stop_consuming(&self, on: bool) {
        lock(&self.sh.dev).stopped = on;
        self.kick();
    }

    /// Write a raw element into queue `queue`'s used ring (hostile device): any id, any length.
    pub fn inject_used(&self, queue: u16, id: u32, len: u32) {
        let mut d = lock(&self.sh.dev);
        if usize::from(queue) < 2 {
            d.push_used(usize::from(queue), id, len, &self.sh.isr);
        }
        drop(d);
        self.sh.irq.notify_all();
    }

    /// A device that keeps publishing: fill every element of queue `queue`'s used ring with
    /// `{id, len: 0}` once, then advance `used.idx` (a Release store each) as fast as it can,
    /// nearly a ring's worth at a time, until `stop` is set, `max` entries are out or `max_time`
    /// has passed; returns how many. The
    /// elements are written once, before any index that covers them, so the flood never writes
    /// an element the driver may be reading. Holds the device lock meanwhile (the device does
    /// nothing else; driver calls that need it wait). Raises a queue interrupt at the start and,
    /// treating the flood as one batch, at the end if `used_event` asks for it (always without
    /// EVENT_IDX). The device's own index moves with it, so replies returned afterwards follow the
    /// flood.
    pub fn flood_used(
        &self,
        queue: u16,
        id: u32,
        max: u64,
        max_time: Duration,
        stop: &AtomicBool,
    ) -> u64 {
        let mut d = lock(&self.sh.dev);
        let Some(q) = d.queues.get_mut(usize::from(queue)) else {
            return 0;
        };
        if !q.ready() {
            return 0;
        }
        let l = q.layout();
        for slot in 0..q.size {
            // SAFETY: inside the live used ring of a configured queue.
            unsafe { write_used(q.device + l.used_ring(slot) as u64, id, 0) };
        }
        // SAFETY: `used.idx` lies inside the live used ring of this queue.
        let used = unsafe { atomic_u16(q.device + l.used_idx() as u64) };
        *lock(&self.sh.isr) |= InterruptStatus::QUEUE_INTERRUPT.bits();
        self.sh.irq.notify_all();
        let first = q.used_idx;
        let end = Instant::now() + max_time;
        let mut n = 0u64;
        let mut steps = 0u32;
        // Relaxed: a test's stop flag; no data is published with it.
        while n < max && !stop.load(Ordering::Relaxed) {
            steps = steps.wrapping_add(1);
            if steps.is_multiple_of(4096) && Instant::now() >= end {
                break;
            }
            // Nearly a ring's worth per store, so however fast the driver is it never catches up
            // while the flood lasts. Odd (the size is a power of two), so the 16-bit index does
            // not come back to a value the driver just consumed up to after a few wraps.
            let step = q.size.saturating_sub(1).max(1);
            q.used_idx = q.used_idx.wrapping_add(step);
            // Release: the elements written above before any index that covers them.
            used.store(q.used_idx.to_le(), Ordering::Release);
            n += u64::from(step);
        }
        // The whole flood is one batch for interrupt suppression (virtio §2.7.10 allows the
        // device to signal once per batch): with EVENT_IDX, interrupt if the driver asked for
        // an entry inside it, as `push_used` does for one entry; without, always.
        let raise = if d.event_idx() {
            // SeqCst fence: our `used.idx` stores before the `used_event` load (see `push_used`).
            fence(Ordering::SeqCst);
            let q = &d.queues[usize::from(queue)];
            // SAFETY: `used_event` lies inside the live driver area of this queue.
            let ue = unsafe { atomic_u16(q.driver + l.used_event() as u64) };
            // Acquire: a hint from the driver (the fence above orders what matters).
            vring_need_event(u16::from_le(ue.load(Ordering::Acquire)), q.used_idx, first)
        } else {
            true
        };
        if raise {
            *lock(&self.sh.isr) |= InterruptStatus::QUEUE_INTERRUPT.bits();
            self.sh.irq.notify_all();
        }
        n
    }

    /// Hostile eventq input: write `bytes` into the next posted eventq buffer and return it
    /// with used length `used_len` (which may exceed the buffer). `false` if none is posted.
    pub fn inject_event(&self, bytes: &[u8], used_len: u32) -> bool {
        let ok = lock(&self.sh.dev).fill_event(bytes, used_len, &self.sh.isr);
        self.sh.irq.notify_all();
        ok
    }

    /// The platform silently forgets every command in flight (never answered, no
    /// DEVICE_NEEDS_RESET): the driver only learns of it through timeouts.
    pub fn forget_in_flight(&self) {
        let mut d = lock(&self.sh.dev);
        d.forget_in_flight(&self.sh.factory);
    }

    /// Replies currently held (Hold fault).
    pub fn held(&self) -> usize {
        lock(&self.sh.dev).held.len()
    }

    /// Eventq buffers the device holds right now.
    pub fn eventq_buffers(&self) -> usize {
        lock(&self.sh.dev).event_bufs.len()
    }

    /// Malformed chains the device rejected.
    pub fn malformed_chains(&self) -> u64 {
        lock(&self.sh.dev).malformed
    }

    /// Ring or buffer addresses the driver gave outside [`SimDeviceConfig::shared_window`]
    /// (each was refused).
    pub fn outside_window(&self) -> u64 {
        lock(&self.sh.dev).outside_window
    }

    /// Kicks (queue notifications) the driver sent.
    pub fn kicks(&self) -> u64 {
        lock(&self.sh.dev).kicks
    }

    /// Queue interrupts the device raised, and those `used_event` suppressed (EVENT_IDX).
    pub fn interrupts(&self) -> (u64, u64) {
        let d = lock(&self.sh.dev);
        (d.irqs_raised, d.irqs_suppressed)
    }

    /// The features the driver wrote.
    pub fn driver_features(&self) -> u64 {
        lock(&self.sh.dev).driver_features
    }

    /// Queue a delayed response (type 2) for the platform to send on the eventq; it waits for
    /// eventq buffers like any P2A message.
    pub fn queue_p2a(&self, protocol: u8, message: u8, payload: &[u8]) {
        lock(&self.sh.dev)
            .model
            .queue_notification(protocol, message, payload);
        self.kick();
    }
}

impl Drop for SimDevice {
    fn drop(&mut self) {
        lock(&self.sh.dev).quit = true;
        self.sh.wake.notify_all();
        if let Some(t) = self.thread.take() {
            // Bounded: the thread checks `quit` at least every 20 ms; a wedged one is detached
            // (and reported) rather than hanging the caller.
            let _ = super::join_bounded(t, Duration::from_secs(10), "sim-virtio-scmi device");
        }
    }
}

impl RemoteControl for SimDevice {
    fn set_fault(&self, fault: Fault) {
        lock(&self.sh.dev).fault = fault;
    }

    fn release(&self) {
        {
            let mut d = lock(&self.sh.dev);
            let mut held = std::mem::take(&mut d.held);
            if d.reorder {
                held.reverse();
            }
            for r in held {
                d.deliver(r, &self.sh.isr);
            }
        }
        self.sh.irq.notify_all();
    }

    fn take_seen_tags(&self) -> Vec<u32> {
        std::mem::take(&mut lock(&self.sh.dev).seen)
    }

    fn received(&self) -> u64 {
        lock(&self.sh.dev).received
    }

    fn inject_garbage(&self, bytes: &[u8]) {
        {
            let mut d = lock(&self.sh.dev);
            // Into an eventq buffer, with the garbage's own length (may exceed the buffer).
            d.fill_event(bytes, bytes.len() as u32, &self.sh.isr);
            // Into the cmdq used ring: a raw element, and one in range that is not a chain head.
            // (Duplicates of real heads are the Duplicate fault's and `inject_used`'s job.)
            if bytes.len() >= 8 && d.queues[0].ready() {
                let id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
                d.push_used(0, id, len, &self.sh.isr);
                if let Some(&b) = bytes.get(8) {
                    let size = u32::from(d.queues[0].size);
                    d.push_used(0, (u32::from(b) * 2 + 1) % size, len % 512, &self.sh.isr);
                }
            }
        }
        self.sh.irq.notify_all();
    }

    /// The platform loses its state with commands in flight; the device reports it the virtio
    /// way: DEVICE_NEEDS_RESET plus a configuration-change interrupt (virtio §2.1.2). A driver
    /// that handles it cancels the lost transfers at once; one that does not sees them time out.
    fn reset_remote(&self) {
        {
            let mut d = lock(&self.sh.dev);
            d.forget_in_flight(&self.sh.factory);
            if d.status.contains(DeviceStatus::DRIVER_OK) {
                d.status |= DeviceStatus::DEVICE_NEEDS_RESET;
                *lock(&self.sh.isr) |= InterruptStatus::DEVICE_CONFIGURATION_INTERRUPT.bits();
            }
        }
        self.sh.irq.notify_all();
    }

    fn set_sim_mode(&self, mode: SimMode) -> bool {
        let wake = || self.sh.wake.notify_all();
        self.sh.mode.request(mode, &wake, Duration::from_secs(5))
    }

    fn step(&self) -> bool {
        let mut d = lock(&self.sh.dev);
        self.sh.serve(&mut d)
    }

    fn notify(&self, payload: &[u8]) -> bool {
        lock(&self.sh.dev).model.queue_notification(
            FWIPC_TEST_PROTOCOL,
            FWIPC_TEST_NOTIFY,
            payload,
        );
        self.kick();
        true
    }
}

/// The interrupt line of a [`SimDevice`]: an embedder thread waits on it and calls the driver's
/// completion entry point.
#[derive(Clone)]
pub struct IrqLine {
    sh: Arc<Shared>,
}

impl core::fmt::Debug for IrqLine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IrqLine").finish_non_exhaustive()
    }
}

impl IrqLine {
    /// Wait until an interrupt is pending (the driver acknowledges it through
    /// `Transport::ack_interrupt`) or `timeout` passes; returns whether one is pending.
    pub fn wait(&self, timeout: Duration) -> bool {
        let g = lock(&self.sh.isr);
        // Relaxed: changed and read only under the `isr` lock (held here, and released only
        // inside the wait), which orders it against `Shared::serve`.
        self.sh.irq_waiters.fetch_add(1, Ordering::Relaxed);
        let (g, _) = self
            .sh
            .irq
            .wait_timeout_while(g, timeout, |isr| *isr == 0)
            .unwrap_or_else(|e| e.into_inner());
        // Relaxed: as above (the lock is held again).
        self.sh.irq_waiters.fetch_sub(1, Ordering::Relaxed);
        *g != 0
    }

    /// Wake any waiter (e.g. to make it notice a stop flag).
    pub fn poke(&self) {
        self.sh.irq.notify_all();
    }
}

/// The driver's side of a [`SimDevice`]: a virtio-drivers `Transport` over the simulated
/// register file.
pub struct SimTransport {
    sh: Arc<Shared>,
}

impl core::fmt::Debug for SimTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimTransport").finish_non_exhaustive()
    }
}

impl SimTransport {
    /// The virtio device id (32, SCMI), which `device_type()` cannot express.
    pub fn device_id(&self) -> u32 {
        VIRTIO_ID_SCMI
    }
}

impl Transport for SimTransport {
    /// virtio-drivers' `DeviceType` has no SCMI (32) variant; this placeholder is never used by
    /// `ScmiVirtio`. Use [`SimTransport::device_id`].
    fn device_type(&self) -> DeviceType {
        DeviceType::Sound
    }

    fn read_device_features(&mut self) -> u64 {
        let d = lock(&self.sh.dev);
        let mut f = ScmiFeatures::empty();
        if d.cfg.offer_version_1 {
            f |= ScmiFeatures::VERSION_1;
        }
        if d.cfg.offer_p2a {
            f |= ScmiFeatures::P2A_CHANNELS;
        }
        if d.cfg.offer_event_idx {
            f |= ScmiFeatures::RING_EVENT_IDX;
        }
        if d.cfg.offer_access_platform {
            f |= ScmiFeatures::ACCESS_PLATFORM;
        }
        f.bits()
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        lock(&self.sh.dev).driver_features = driver_features;
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        let d = lock(&self.sh.dev);
        match queue {
            0 => d.cfg.queue_max,
            1 if d.cfg.offer_p2a => d.cfg.queue_max,
            _ => 0,
        }
    }

    fn notify(&mut self, _queue: u16) {
        let mut d = lock(&self.sh.dev);
        d.kicked = true;
        d.kicks += 1;
        // A wake-up is a system call: only when the device thread sleeps on `wake` (it sets
        // `sleeping` under the lock we hold, before its wait releases it).
        let sleeping = d.sleeping;
        drop(d);
        self.sh.hint();
        if sleeping {
            self.sh.wake.notify_all();
        }
    }

    fn get_status(&self) -> DeviceStatus {
        lock(&self.sh.dev).status
    }

    fn set_status(&mut self, status: DeviceStatus) {
        let mut d = lock(&self.sh.dev);
        if status.is_empty() && d.refuse_reset {
            return;
        }
        if status.is_empty() {
            // Reset: after this returns the device no longer touches guest memory (the thread
            // only does so under this lock).
            d.reset_rings();
            *lock(&self.sh.isr) = 0;
        }
        d.status = status;
    }

    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}

    fn requires_legacy_layout(&self) -> bool {
        false
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        let mut d = lock(&self.sh.dev);
        let bytes = u64::from(size);
        // Descriptor table, driver (avail) and device (used) areas, as the split ring lays them
        // out (Virtio 1.2 §2.7): 16, 2 and 8 bytes per entry plus 6-byte headers/trailers.
        let areas = [
            (descriptors, 16 * bytes),
            (driver_area, 6 + 2 * bytes),
            (device_area, 6 + 8 * bytes),
        ];
        if !areas.iter().all(|&(a, l)| d.may_touch(a, l)) {
            // A ring the host may not touch is never configured: the queue stays unusable.
            return;
        }
        if let Some(q) = d.queues.get_mut(usize::from(queue)) {
            *q = QueueCfg {
                size: size as u16,
                desc: descriptors,
                driver: driver_area,
                device: device_area,
                last_avail: 0,
                used_idx: 0,
            };
        }
    }

    fn queue_unset(&mut self, queue: u16) {
        let mut d = lock(&self.sh.dev);
        if let Some(q) = d.queues.get_mut(usize::from(queue)) {
            *q = QueueCfg::default();
        }
        if queue == 1 {
            d.event_bufs.clear();
        }
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        lock(&self.sh.dev)
            .queues
            .get(usize::from(queue))
            .is_some_and(|q| q.desc != 0)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        let mut isr = lock(&self.sh.isr);
        InterruptStatus::from_bits_retain(std::mem::take(&mut *isr))
    }

    fn read_config_generation(&self) -> u32 {
        0
    }

    fn read_config_space<T: FromBytes + IntoBytes>(
        &self,
        _offset: usize,
    ) -> virtio_drivers::Result<T> {
        Err(virtio_drivers::Error::ConfigSpaceMissing)
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        _offset: usize,
        _value: T,
    ) -> virtio_drivers::Result<()> {
        Err(virtio_drivers::Error::ConfigSpaceMissing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::hal::SimHal;
    use crate::virtio::ring::SplitRing;

    /// Driver and device racing on the same memory, both through the atomic accessors: the
    /// device serves a round trip over the shared rings while a hostile device-side writer
    /// (this crate's `write_mem`, what the device thread uses) keeps rewriting the reply area
    /// the driver is polling and reading. Under Miri
    /// (`cargo +nightly miri test -p fwipc-scmi-virtio --lib sim::device::tests::hostile`, with
    /// `-Zmiri-permissive-provenance`) any non-atomic or mixed-size access on either side is a
    /// reported data race; natively it checks that the driver returns either the echo or the
    /// hostile bytes, never anything else.
    #[test]
    fn hostile_device_rewriting_a_reply_is_no_data_race() {
        use crate::virtio::{ScmiVirtio, ScmiVirtioConfig};
        use fwipc_transport_api::{Request, Transport};
        let dev = SimDevice::start(SimDeviceConfig::default(), || {
            Box::new(crate::sim::EchoPlatform::new())
        });
        let cfg = ScmiVirtioConfig {
            cmdq_size: Some(4),
            eventq_size: Some(2),
            interrupts: false,
            ..ScmiVirtioConfig::default()
        };
        let scmi = ScmiVirtio::<SimHal, _>::new(dev.transport(), cfg).unwrap();
        let tk = scmi
            .send(&Request::new((0x81 << 8) | 0x03, &[1, 2, 3, 4]).polled())
            .unwrap();
        // The reply area of the chain just posted: its device-writable descriptor.
        let resp = {
            let d = lock(&dev.sh.dev);
            let head = (tk.slot() * 2) as u16;
            // SAFETY: a descriptor of the live cmdq table (the driver posted it above).
            unsafe { read_desc(d.queues[0].desc + 16 * u64::from(head + 1)) }
        };
        assert_eq!(resp.flags & DESC_F_WRITE, DESC_F_WRITE);
        let mut out = [0u8; 8];
        let got = std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..16 {
                    // SAFETY: the reply area's return values (8 + 4 ≤ its length), memory the
                    // driver shared for this chain and keeps alive until `mark_txdone`.
                    unsafe { write_mem(resp.addr + 8, &[0xee; 4]) };
                    std::thread::yield_now();
                }
            });
            let start = Instant::now();
            while !scmi.poll_done(&tk).unwrap() {
                assert!(start.elapsed() < Duration::from_secs(60));
                std::thread::yield_now();
            }
            scmi.fetch_response(&tk, &mut out)
        });
        assert_eq!(got, Ok(4));
        // Each byte is the echo's (inverted) or the hostile writer's.
        for (b, sent) in out[..4].iter().zip([1u8, 2, 3, 4]) {
            assert!(*b == !sent || *b == 0xee, "byte {b:#x}");
        }
        scmi.mark_txdone(tk, fwipc_transport_api::TxOutcome::Done);
        assert_eq!(scmi.shutdown(), Ok(()));
    }

    /// Drive the device's cmdq by hand: a malformed chain (one descriptor, or a readable response)
    /// is returned empty and counted, and fails only itself (docs/protocols/scmi.md §8 item 11).
    #[test]
    fn malformed_chain_fails_only_itself() {
        let dev = SimDevice::start(SimDeviceConfig::default(), || {
            Box::new(crate::sim::EchoPlatform::new())
        });
        let mut t = dev.transport();
        t.set_status(DeviceStatus::empty());
        t.write_driver_features(ScmiFeatures::VERSION_1.bits());
        let mut ring = SplitRing::<SimHal>::new(8, false).unwrap();
        let (d, a, u) = ring.addrs();
        t.queue_set(0, 8, d, a, u);
        t.set_status(
            DeviceStatus::ACKNOWLEDGE
                | DeviceStatus::DRIVER
                | DeviceStatus::FEATURES_OK
                | DeviceStatus::DRIVER_OK,
        );
        let hdr = crate::header::Header::command(0x81, 0x03, 5).encode();
        let mut req = hdr.to_le_bytes().to_vec();
        req.extend_from_slice(&[1, 2, 3, 4]);
        let mut resp = vec![0u8; 16];
        let desc = |addr: u64, len: usize, flags: u16, next: u16| Descriptor {
            addr,
            len: len as u32,
            flags,
            next,
        };
        // The device writes `resp` through this address: derive it from a mutable pointer.
        let (rq, rs) = (req.as_ptr() as u64, resp.as_mut_ptr() as u64);
        // Chain 0: a lone readable descriptor. Chain 2: response marked readable. Chain 4: good.
        ring.set_desc(0, desc(rq, req.len(), 0, 0));
        ring.set_desc(2, desc(rq, req.len(), DESC_F_NEXT, 3));
        ring.set_desc(3, desc(rs, resp.len(), 0, 0));
        ring.set_desc(4, desc(rq, req.len(), DESC_F_NEXT, 5));
        ring.set_desc(5, desc(rs, resp.len(), DESC_F_WRITE, 0));
        for head in [0, 2, 4] {
            ring.post(head);
        }
        t.notify(0);
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < 3 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "device returned {got:?}"
            );
            match ring.pop_used() {
                Ok(Some(e)) => got.push((e.id, e.len)),
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(got, vec![(0, 0), (2, 0), (4, 12)]);
        assert_eq!(dev.malformed_chains(), 2);
        assert_eq!(
            u32::from_le_bytes([resp[0], resp[1], resp[2], resp[3]]),
            hdr
        );
        assert_eq!(&resp[8..12], &[!1u8, !2, !3, !4]);
        t.set_status(DeviceStatus::empty());
    }

    /// EVENT_IDX end to end at ring level across the u16 wrap, with batches: the driver posts
    /// each round as one or two sub-batches (sometimes deciding after the first, always after
    /// the second), kicks only when `should_notify` (wrap-safe `avail_event` check) says so, and
    /// the device (`kick_only`: it looks at the ring only when kicked) must never stall. Replies
    /// are collected only once the whole round is in, so `used_event` stays armed at the
    /// round's first entry and the device must raise exactly one interrupt per round.
    #[test]
    fn event_idx_batches_cross_u16_wrap() {
        const SIZE: u16 = 16;
        const SLOTS: usize = SIZE as usize / 2;
        let dev = SimDevice::start(SimDeviceConfig::default(), || {
            Box::new(crate::sim::EchoPlatform::new())
        });
        let mut t = dev.transport();
        t.set_status(DeviceStatus::empty());
        assert_ne!(
            t.read_device_features() & ScmiFeatures::RING_EVENT_IDX.bits(),
            0
        );
        t.write_driver_features((ScmiFeatures::VERSION_1 | ScmiFeatures::RING_EVENT_IDX).bits());
        let mut ring = SplitRing::<SimHal>::new(SIZE, true).unwrap();
        let (d, a, u) = ring.addrs();
        t.queue_set(0, u32::from(SIZE), d, a, u);
        t.set_status(
            DeviceStatus::ACKNOWLEDGE
                | DeviceStatus::DRIVER
                | DeviceStatus::FEATURES_OK
                | DeviceStatus::DRIVER_OK,
        );
        let mut reqs = [[0u8; 8]; SLOTS];
        let mut resps = [[0u8; 16]; SLOTS];
        let (mut total, mut rounds, mut kicks, mut seed) = (0u32, 0u64, 0u64, 0x2545_f491u32);
        while total < 66_000 + 3 * u32::from(SIZE) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let batch = 1 + (seed as usize % SLOTS);
            let split = (seed >> 8) as usize % batch; // 0 = one sub-batch
            for k in 0..batch {
                let tag = total + k as u32;
                let hdr = crate::header::Header::command(0x81, 0x03, (tag & 0x3ff) as u16);
                reqs[k][..4].copy_from_slice(&hdr.encode().to_le_bytes());
                reqs[k][4..].copy_from_slice(&tag.to_le_bytes());
                resps[k] = [0; 16];
                let head = 2 * k as u16;
                ring.set_desc(
                    head,
                    Descriptor {
                        addr: reqs[k].as_ptr() as u64,
                        len: 8,
                        flags: DESC_F_NEXT,
                        next: head + 1,
                    },
                );
                ring.set_desc(
                    head + 1,
                    Descriptor {
                        addr: resps[k].as_mut_ptr() as u64,
                        len: 16,
                        flags: DESC_F_WRITE,
                        next: 0,
                    },
                );
                ring.post(head);
                if k + 1 == split && (seed >> 16) & 1 == 1 && ring.should_notify() {
                    t.notify(0);
                    kicks += 1;
                }
            }
            if ring.should_notify() {
                t.notify(0);
                kicks += 1;
            }
            // A decision with nothing new posted never kicks.
            assert!(!ring.should_notify());
            let start = Instant::now();
            while ring.device_used_idx().wrapping_sub(ring_last_used(&ring)) < batch as u16 {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "stalled at request {total} (round {rounds}): a needed kick was skipped"
                );
                std::thread::yield_now();
            }
            let mut seen = [false; SLOTS];
            for _ in 0..batch {
                let e = ring.pop_used().unwrap().expect("entry");
                let k = e.id as usize / 2;
                assert!(
                    e.id.is_multiple_of(2) && k < batch && !seen[k],
                    "bad used id {}",
                    e.id
                );
                seen[k] = true;
                assert_eq!(e.len, 12);
                let tag = total + k as u32;
                assert_eq!(&resps[k][..4], &reqs[k][..4]);
                assert_eq!(&resps[k][4..8], &[0; 4]);
                assert_eq!(resps[k][8..12], (!tag).to_le_bytes(), "reply to {tag}");
            }
            assert_eq!(ring.pop_used(), Ok(None));
            total += batch as u32;
            rounds += 1;
        }
        assert!(total > 65_536 + u32::from(SIZE), "indices wrapped");
        assert_eq!(dev.kicks(), kicks);
        assert!(kicks >= rounds, "at least one kick per round");
        let (raised, suppressed) = dev.interrupts();
        assert_eq!(
            raised, rounds,
            "one interrupt per round (used_event honoured)"
        );
        assert_eq!(suppressed, u64::from(total) - rounds);
        t.set_status(DeviceStatus::empty());
    }

    fn ring_last_used(r: &SplitRing<SimHal>) -> u16 {
        r.last_used()
    }
}
