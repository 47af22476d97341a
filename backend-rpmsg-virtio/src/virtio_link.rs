//! [`VirtioLink`]: the [`Link`] over a real rpmsg virtio device (id 7), driver role, the way
//! Linux's `virtio_rpmsg_bus` sets it up (docs/protocols/rpmsg.md §1 and §6): two virtqueues
//! (0 = receive, 1 = transmit) of equal size, one buffer of 512 bytes per descriptor, every
//! buffer the driver's own (DMA memory from the `Hal`), all receive buffers posted before
//! `DRIVER_OK`, transmit buffers taken back lazily from the transmit used ring when sending
//! (no transmit interrupts), `VIRTIO_RPMSG_F_NS` negotiated when the device offers it.
//!
//! The rings are `fwipc_virtio::ring::SplitRing`, hardened against a hostile device;
//! initialisation and reset are `fwipc_virtio::negotiate`. The device is not trusted: every used
//! element is range-checked (an id outside the queue is dropped, a length beyond the buffer is
//! clamped, a transmit buffer returned twice is ignored; each counted in [`LinkStats`]), buffer
//! bytes are copied through `fwipc_transport_api::shared_mem` into private memory before anyone
//! parses them, and every drain of a used ring is bounded by a budget. A device that sets
//! `DEVICE_NEEDS_RESET` is reset and set up again in place, and the transport told that the
//! frames in flight are lost (docs/protocols/rpmsg.md §6).
//!
//! ```
//! use fwipc_rpmsg_virtio::sim::RingDevice;
//! use fwipc_rpmsg_virtio::{RpmsgConfig, RpmsgTransport, VirtioLink, VirtioLinkConfig};
//! use fwipc_transport_api::StdClock;
//! use fwipc_virtio::hal::IdentityHal;
//!
//! // A simulated rpmsg device (feature `sim`). On a guest: `fwipc_virtio::mmio::MmioTransport`
//! // of the device tree's `virtio,mmio` node whose device id is 7, and the guest's `Hal`.
//! let dev = RingDevice::new(true);
//! let link = VirtioLink::<IdentityHal, _, _>::new(
//!     dev.transport(),
//!     StdClock::new(),
//!     VirtioLinkConfig::default(),
//! )?;
//! assert_eq!(link.queue_size(), 256);
//! let cfg = RpmsgConfig {
//!     name_service: link.name_service(),
//!     ..RpmsgConfig::default()
//! };
//! // The transport announces its notification endpoint through the rings at once.
//! let t = RpmsgTransport::new(link, StdClock::new(), cfg)?;
//! assert_eq!(t.link().tx_free(), 255);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem::{ManuallyDrop, MaybeUninit};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use core::time::Duration;

use fwipc_transport_api::shared_mem::{copy_from_shared_uninit, copy_to_shared};
use fwipc_transport_api::{Clock, SharedTxBufs, TxLoan};
use fwipc_virtio::negotiate::{
    self, ResetOutcome, F_ACCESS_PLATFORM, F_RING_EVENT_IDX, F_VERSION_1,
};
use fwipc_virtio::ring::{Descriptor, DmaRegion, RingError, SplitRing, DESC_F_WRITE};
use spin::Mutex;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{BufferDirection, Hal};

use crate::addr::{BUF_SIZE, HDR_SIZE, MAX_PAYLOAD, VIRTIO_RPMSG_F_NS};
use crate::link::{Link, LinkError};
use crate::role::{VQ_DRIVER_RX, VQ_DRIVER_TX};
use crate::virtio_link_error::{Counters, LinkStats, VirtioLinkError};

/// Buffers per direction at most: Linux's `MAX_RPMSG_NUM_BUFS` (512) split in half.
pub const MAX_BUFS_PER_QUEUE: u16 = 256;

/// How the link is set up. `Default` gives Linux's choices.
#[derive(Debug, Clone, Copy)]
pub struct VirtioLinkConfig {
    /// Entries (= buffers) per queue; `None` = the device's maximum, at most
    /// [`MAX_BUFS_PER_QUEUE`]. Rounded down to a power of two.
    pub queue_size: Option<u16>,
    /// Negotiate `VIRTIO_F_RING_EVENT_IDX` when offered.
    pub event_idx: bool,
    /// How long a device reset may take before it counts as unconfirmed.
    pub reset_timeout: Duration,
    /// Whether the embedder takes the receive queue's interrupt (and calls
    /// `RpmsgTransport::handle_interrupt` from it). `false`, for a polled transport
    /// (`RpmsgConfig::interrupts` false): the receive queue asks the device for no interrupts
    /// (`VIRTQ_AVAIL_F_NO_INTERRUPT`, or with `EVENT_IDX` a `used_event` never re-armed;
    /// virtio 1.2 §2.7.10), so a drain that finds it empty re-arms nothing behind a full
    /// barrier, and [`Link::receive`] does not read and acknowledge the interrupt status.
    /// Default `true`.
    pub interrupts: bool,
}

impl Default for VirtioLinkConfig {
    fn default() -> Self {
        VirtioLinkConfig {
            queue_size: None,
            event_idx: true,
            reset_timeout: Duration::from_millis(100),
            interrupts: true,
        }
    }
}

/// One direction: its ring, its buffers (buffer `i` is descriptor `i`), and which ones the
/// device holds.
struct Queue<H: Hal> {
    ring: SplitRing<H>,
    bufs: DmaRegion<H>,
    device_owned: Vec<bool>,
    /// Transmit only: buffers the driver holds (a stack, capacity reserved).
    free: Vec<u16>,
    /// Transmit only: buffers loaned out for a zero-copy send (neither free nor the device's).
    loaned: Vec<bool>,
    /// How many are loaned.
    loans: usize,
}

impl<H: Hal> Queue<H> {
    fn new(size: u16, event_idx: bool, dir: BufferDirection) -> Option<Self> {
        let n = usize::from(size);
        Some(Queue {
            ring: SplitRing::new(size, event_idx)?,
            bufs: DmaRegion::new(n * BUF_SIZE, dir)?,
            device_owned: alloc::vec![false; n],
            free: Vec::with_capacity(n),
            loaned: alloc::vec![false; n],
            loans: 0,
        })
    }

    fn buf_desc(&self, i: u16, len: u32, flags: u16) -> Descriptor {
        Descriptor {
            addr: self.bufs.paddr() + (usize::from(i) * BUF_SIZE) as u64,
            len,
            flags,
            next: 0,
        }
    }

    /// Post every receive buffer (device-writable, 512 bytes).
    fn post_all_rx(&mut self) {
        for i in 0..self.ring.size() {
            let d = self.buf_desc(i, BUF_SIZE as u32, DESC_F_WRITE);
            self.ring.set_desc(i, d);
            self.device_owned[usize::from(i)] = true;
            self.ring.post(i);
        }
    }

    /// Every transmit buffer back on the free list, except those loaned out (their loans give
    /// them back).
    fn free_all_tx(&mut self) {
        self.free.clear();
        let loaned = &self.loaned;
        self.free.extend(
            (0..self.ring.size())
                .rev()
                .filter(|&i| !loaned[usize::from(i)]),
        );
        self.device_owned.fill(false);
    }

    /// A loan of transmit buffer `i` ends: the buffer is the driver's again (`true`), or it was
    /// not loaned (`false`).
    fn end_loan(&mut self, i: u16) -> bool {
        match self.loaned.get_mut(usize::from(i)) {
            Some(l) if *l => {
                *l = false;
                self.loans -= 1;
                true
            }
            _ => false,
        }
    }
}

/// How many of `tx`'s buffers may be loaned at once: a quarter (at least one).
fn max_loans<H: Hal>(tx: &Queue<H>) -> usize {
    usize::from(tx.ring.size() / 4).max(1)
}

/// The transmit side, shared with the loans of its buffers: a loan that outlives the link keeps
/// the memory alive, and gives its buffer back here when dropped.
struct TxSide<H: Hal> {
    /// `ManuallyDrop`: after an unconfirmed reset the memory must never be freed (`Drop`).
    q: Mutex<ManuallyDrop<Queue<H>>>,
    /// Set when the link is dropped after a confirmed reset: the device no longer touches the
    /// memory, and the last owner (the link or a loan) frees it.
    freeable: AtomicBool,
}

impl<H: Hal> Drop for TxSide<H> {
    fn drop(&mut self) {
        // Acquire: pairs with the Release store in `VirtioLink::drop`.
        if self.freeable.load(Ordering::Acquire) {
            // SAFETY: `freeable` is set only after a confirmed device reset, so the device no
            // longer accesses the ring or the buffers; this is the last owner, and the queue is
            // dropped exactly once, here.
            unsafe { ManuallyDrop::drop(self.q.get_mut()) };
        }
    }
}

impl<H: Hal + 'static> SharedTxBufs for TxSide<H> {
    fn capacity(&self) -> usize {
        MAX_PAYLOAD
    }

    fn write(&self, idx: u32, offset: usize, data: &[u8]) {
        let q = self.q.lock();
        let Some(i) = u16::try_from(idx).ok().filter(|&i| i < q.ring.size()) else {
            return;
        };
        if offset + data.len() > MAX_PAYLOAD || !q.loaned[usize::from(i)] {
            return;
        }
        let Some(p) = q.bufs.at(usize::from(i) * BUF_SIZE + HDR_SIZE + offset) else {
            return;
        };
        // SAFETY: the bytes lie inside buffer `i` (`HDR_SIZE + offset + data.len() <= BUF_SIZE`,
        // `i < size`, region of `size * BUF_SIZE` bytes), which is loaned (the driver's: neither
        // posted nor free); byte copies, as the device may read it once published.
        unsafe { copy_to_shared(p, data) };
    }

    fn give_back(&self, idx: u32) {
        let mut q = self.q.lock();
        let Ok(i) = u16::try_from(idx) else { return };
        if q.end_loan(i) {
            q.free.push(i);
        }
    }
}

const UP: u8 = 0;
const DOWN: u8 = 1;
/// The device did not confirm a reset: it may still own every buffer; nothing is reused or
/// freed.
const QUARANTINED: u8 = 2;

/// What [`VirtioLink::take_down`] did.
enum TakenDown<'a, H: Hal, T> {
    /// The link was not running: nothing.
    NotUp,
    /// The reset was not confirmed: the link is quarantined.
    Quarantined,
    /// The device confirmed the reset; the receive, transmit and transport locks, held.
    Reset(
        spin::MutexGuard<'a, ManuallyDrop<Queue<H>>>,
        spin::MutexGuard<'a, ManuallyDrop<Queue<H>>>,
        spin::MutexGuard<'a, T>,
    ),
}

/// The rpmsg [`Link`] over a virtio device's two virtqueues. See the module documentation.
pub struct VirtioLink<H: Hal, T: Transport, C: Clock> {
    transport: Mutex<T>,
    clock: C,
    cfg: VirtioLinkConfig,
    features: u64,
    /// `ManuallyDrop`: after an unconfirmed reset the memory must never be freed (`Drop`).
    rx: Mutex<ManuallyDrop<Queue<H>>>,
    tx: Arc<TxSide<H>>,
    state: AtomicU8,
    counters: Counters,
    /// The link reset the device (and set it up again, or gave it up) since
    /// [`Link::take_device_reset`] last looked: the frames in flight then are lost.
    reinitialised: AtomicBool,
    /// Receive passes that found the ring empty, counted toward the next look at the device
    /// status of a link without interrupts ([`STATUS_LOOK_EVERY`]). Written with a load and a
    /// store (a lost count only delays a look).
    empty_drains: AtomicU32,
}

/// A link without interrupts reads the device status (is `DEVICE_NEEDS_RESET` set?) once every
/// this many receive passes that found nothing: a status read is a register access, a trap to
/// the hypervisor on a guest, where a pass that finds the ring empty costs a few loads.
pub const STATUS_LOOK_EVERY: u32 = 1024;

impl<H: Hal, T: Transport, C: Clock> core::fmt::Debug for VirtioLink<H, T, C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VirtioLink")
            .field("features", &self.features)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The end of a device's set-up, at [`VirtioLink::new`] and after a reset
/// ([`VirtioLink::reinitialise`]): both rings handed to the device, every receive buffer
/// posted, `DRIVER_OK`, and the receive queue kicked if it asks (Linux prepares the kick before
/// `DRIVER_OK` and notifies after it).
fn go_live<H: Hal, T: Transport>(t: &mut T, rx: &mut Queue<H>, tx: &Queue<H>) {
    for (qi, q) in [(VQ_DRIVER_RX, &*rx), (VQ_DRIVER_TX, tx)] {
        let (d, a, u) = q.ring.addrs();
        t.queue_set(qi, u32::from(q.ring.size()), d, a, u);
    }
    rx.post_all_rx();
    let kick = rx.ring.should_notify();
    negotiate::driver_ok(t);
    if kick {
        t.notify(VQ_DRIVER_RX);
    }
}

fn pick_size(want: Option<u16>, max_rx: u32, max_tx: u32) -> Option<u16> {
    let max = max_rx.min(max_tx).min(u32::from(MAX_BUFS_PER_QUEUE));
    let n = want.map_or(max, |w| u32::from(w).min(max));
    if n == 0 {
        return None;
    }
    // Round down to a power of two (`SplitRing` needs one).
    u16::try_from(1u32 << (31 - n.leading_zeros())).ok()
}

impl<H: Hal, T: Transport, C: Clock> VirtioLink<H, T, C> {
    /// Reset and initialise the rpmsg device behind `transport` (Virtio 1.2 §3.1.1), set up both
    /// queues with their buffers, post the receive buffers, set `DRIVER_OK` and kick the receive
    /// queue. `VIRTIO_F_VERSION_1` is required; `VIRTIO_RPMSG_F_NS`, `VIRTIO_F_RING_EVENT_IDX`
    /// (unless `cfg.event_idx` is false) and `VIRTIO_F_ACCESS_PLATFORM` are taken when offered.
    pub fn new(mut transport: T, clock: C, cfg: VirtioLinkConfig) -> Result<Self, VirtioLinkError> {
        if transport.device_type() != DeviceType::Rpmsg {
            return Err(VirtioLinkError::WrongDevice);
        }
        if negotiate::reset(&mut transport, &clock, cfg.reset_timeout) == ResetOutcome::Unconfirmed
        {
            return Err(VirtioLinkError::ResetUnconfirmed);
        }
        let mut optional = (1u64 << VIRTIO_RPMSG_F_NS) | F_ACCESS_PLATFORM;
        if cfg.event_idx {
            optional |= F_RING_EVENT_IDX;
        }
        let features = negotiate::negotiate(&mut transport, F_VERSION_1, optional)
            .map_err(VirtioLinkError::Negotiation)?;
        let fail = |t: &mut T, e| {
            t.set_status(virtio_drivers::transport::DeviceStatus::FAILED);
            Err(e)
        };
        for q in [VQ_DRIVER_RX, VQ_DRIVER_TX] {
            if transport.queue_used(q) {
                return fail(&mut transport, VirtioLinkError::QueueUnavailable(q));
            }
        }
        let max_rx = transport.max_queue_size(VQ_DRIVER_RX);
        let max_tx = transport.max_queue_size(VQ_DRIVER_TX);
        let Some(size) = pick_size(cfg.queue_size, max_rx, max_tx) else {
            let q = if max_rx == 0 {
                VQ_DRIVER_RX
            } else {
                VQ_DRIVER_TX
            };
            return fail(&mut transport, VirtioLinkError::QueueUnavailable(q));
        };
        let event_idx = features & F_RING_EVENT_IDX != 0;
        let (Some(mut rx), Some(mut tx)) = (
            Queue::<H>::new(size, event_idx, BufferDirection::DeviceToDriver),
            Queue::<H>::new(size, event_idx, BufferDirection::DriverToDevice),
        ) else {
            return fail(&mut transport, VirtioLinkError::DmaAlloc);
        };
        tx.free_all_tx();
        // Transmit buffers are taken back when a sender needs one: no transmit interrupts
        // (Linux's `rpmsg_probe` disables the transmit queue's callback likewise).
        tx.ring.suppress_interrupts();
        if !cfg.interrupts {
            // Nobody takes the receive interrupt either: `receive` is called by pollers.
            rx.ring.suppress_interrupts();
        }
        go_live(&mut transport, &mut rx, &tx);
        Ok(VirtioLink {
            transport: Mutex::new(transport),
            clock,
            cfg,
            features,
            rx: Mutex::new(ManuallyDrop::new(rx)),
            tx: Arc::new(TxSide {
                q: Mutex::new(ManuallyDrop::new(tx)),
                freeable: AtomicBool::new(false),
            }),
            state: AtomicU8::new(UP),
            counters: Counters::default(),
            reinitialised: AtomicBool::new(false),
            empty_drains: AtomicU32::new(0),
        })
    }

    /// The negotiated feature bits.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Whether `VIRTIO_RPMSG_F_NS` was negotiated (set `RpmsgConfig::name_service` from it).
    pub fn name_service(&self) -> bool {
        self.features & (1u64 << VIRTIO_RPMSG_F_NS) != 0
    }

    /// Buffers per direction.
    pub fn queue_size(&self) -> u16 {
        self.rx.lock().ring.size()
    }

    /// What the device did wrong so far.
    pub fn stats(&self) -> LinkStats {
        self.counters.snapshot()
    }

    /// Whether a reset was not confirmed: every buffer stays quarantined (never reused, never
    /// freed, also not on drop).
    pub fn quarantined(&self) -> bool {
        // Acquire: pairs with the Release stores in `take_down` and `reinitialise`.
        self.state.load(Ordering::Acquire) == QUARANTINED
    }

    /// Transmit buffers the driver holds right now (the rest are with the device).
    pub fn tx_free(&self) -> usize {
        self.tx.q.lock().free.len()
    }

    /// Transmit buffers loaned out right now ([`Link::loan`]).
    pub fn tx_loans(&self) -> usize {
        self.tx.q.lock().loans
    }

    /// At most this many transmit buffers are loaned at once (a quarter of them), so loans
    /// never starve calls and name-service messages.
    pub fn max_tx_loans(&self) -> usize {
        max_loans(&self.tx.q.lock())
    }

    /// Take a free transmit buffer (reclaiming from the used ring when none is left).
    fn take_tx(&self, tx: &mut Queue<H>) -> Option<u16> {
        if tx.free.is_empty() {
            self.reclaim_tx(tx);
        }
        let i = tx.free.pop();
        if i.is_none() {
            Counters::bump(&self.counters.tx_exhausted);
        }
        i
    }

    /// Publish transmit buffer `i` holding `len` bytes and notify the device if it asks.
    fn publish_tx(&self, mut tx: spin::MutexGuard<'_, ManuallyDrop<Queue<H>>>, i: u16, len: usize) {
        let d = tx.buf_desc(i, len as u32, 0);
        tx.ring.set_desc(i, d);
        tx.device_owned[usize::from(i)] = true;
        tx.ring.post(i);
        let kick = tx.ring.should_notify();
        drop(tx);
        if kick {
            self.kick(VQ_DRIVER_TX);
        }
    }

    /// Run `f` on the transport (interrupt acknowledgement, status reads). `f` must not use
    /// this link (its lock is held: a send from `f` would wait for it forever).
    pub fn with_transport<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.transport.lock())
    }

    /// Take a free transmit buffer, let `write` fill its first `len` bytes, and publish it
    /// (`Link::send` and `Link::send_parts`). `write` gets the buffer's start, valid for `len`
    /// bytes (at most [`BUF_SIZE`], checked here) and the driver's until published, and must
    /// write no further than `len` bytes, only through `shared_mem`'s accessors.
    fn send_copied(&self, len: usize, write: impl FnOnce(*mut u8)) -> Result<(), LinkError> {
        if !self.up() {
            return Err(LinkError::Down);
        }
        if len > BUF_SIZE {
            log::error!("rpmsg link: frame of {len} bytes exceeds a buffer");
            return Err(LinkError::NoBuffer);
        }
        let mut tx = self.tx.q.lock();
        let Some(i) = self.take_tx(&mut tx) else {
            return Err(LinkError::NoBuffer);
        };
        let off = usize::from(i) * BUF_SIZE;
        let Some(p) = tx.bufs.at(off) else {
            tx.free.push(i);
            return Err(LinkError::NoBuffer);
        };
        // Buffer `i` lies inside the transmit region (`i < size`, region of `size * BUF_SIZE`
        // bytes, `len <= BUF_SIZE`) and is the driver's (on the free list: the device returned
        // it or never had it).
        write(p);
        self.publish_tx(tx, i, len);
        Ok(())
    }

    fn up(&self) -> bool {
        // Acquire: pairs with the Release stores in `take_down` and `reinitialise`.
        self.state.load(Ordering::Acquire) == UP
    }

    /// Take back transmit buffers the device has read: at most one ring's worth of used
    /// elements (the budget; the device controls how many it publishes).
    fn reclaim_tx(&self, tx: &mut Queue<H>) {
        let n = tx.ring.size();
        for _ in 0..n {
            match tx.ring.pop_used() {
                Ok(None) => return,
                Ok(Some(e)) => {
                    let Some(i) = u16::try_from(e.id).ok().filter(|&i| i < n) else {
                        Counters::bump(&self.counters.bad_id);
                        continue;
                    };
                    let owned = &mut tx.device_owned[usize::from(i)];
                    if !*owned {
                        Counters::bump(&self.counters.not_owned);
                        continue;
                    }
                    *owned = false;
                    tx.free.push(i);
                }
                Err(RingError::IndexJump { .. }) => Counters::bump(&self.counters.index_jumps),
                Err(_) => Counters::bump(&self.counters.index_jumps),
            }
        }
        if tx.ring.has_used() {
            Counters::bump(&self.counters.budget_hits);
        }
    }

    fn kick(&self, queue: u16) {
        self.transport.lock().notify(queue);
    }

    /// Take a running link down and reset its device (for [`Link::reset`] and
    /// [`VirtioLink::reinitialise`]). Once down the device was reset already, and once
    /// quarantined it stays so: only a running link is taken down. A confirmed reset gives every
    /// buffer back to the driver and returns the three locks, still held; an unconfirmed one
    /// quarantines the link.
    fn take_down(&self) -> TakenDown<'_, H, T> {
        // AcqRel: later sends and receives see the link down before the reset starts (Release);
        // pairs with an earlier reset's stores (Acquire).
        if self
            .state
            .compare_exchange(UP, DOWN, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return TakenDown::NotUp;
        }
        // Lock order: rx, tx, transport (as everywhere: the queue locks are never taken while
        // the transport lock is held).
        let mut rx = self.rx.lock();
        let mut tx = self.tx.q.lock();
        let mut t = self.transport.lock();
        match negotiate::reset(&mut *t, &self.clock, self.cfg.reset_timeout) {
            ResetOutcome::Confirmed => {
                // The device no longer touches anything: every buffer is the driver's again.
                rx.device_owned.fill(false);
                tx.free_all_tx();
                TakenDown::Reset(rx, tx, t)
            }
            ResetOutcome::Unconfirmed => {
                // Release: as above.
                self.state.store(QUARANTINED, Ordering::Release);
                TakenDown::Quarantined
            }
        }
    }

    /// Read the device status; if the device set `DEVICE_NEEDS_RESET`, reset and re-initialise
    /// it in place ([`VirtioLink::reinitialise`]).
    fn check_device(&self) {
        let status = self.transport.lock().get_status();
        if status.contains(DeviceStatus::DEVICE_NEEDS_RESET) {
            log::warn!("rpmsg link: the device needs a reset; resetting it");
            self.reinitialise();
        }
    }

    /// Reset the device and set it up again with the same features, rings and buffers
    /// (virtio 1.2 §2.1.2: a driver that sees `DEVICE_NEEDS_RESET` resets the device before
    /// using it again). Every buffer comes back to the driver with the reset: frames the device
    /// held are lost, which [`Link::take_device_reset`] tells the transport. A reset the device
    /// does not confirm quarantines the link (as [`Link::reset`]); a device that refuses the
    /// features it accepted before is marked `FAILED` and the link stays down. Either way the
    /// transport hears of it the same way, and its sends fail from then on.
    fn reinitialise(&self) {
        let (mut rx, mut tx, mut t) = match self.take_down() {
            TakenDown::NotUp => return,
            TakenDown::Quarantined => {
                log::error!(
                    "rpmsg link: the device did not confirm its reset; buffers quarantined"
                );
                self.reinitialised.store(true, Ordering::Release);
                return;
            }
            TakenDown::Reset(rx, tx, t) => (rx, tx, t),
        };
        // The same features as at `new`, all required now: a device that no longer offers one
        // changed under us (`negotiate` leaves it FAILED).
        if negotiate::negotiate(&mut *t, self.features, 0).is_err() {
            log::error!("rpmsg link: the device refused its features after the reset; link down");
            self.reinitialised.store(true, Ordering::Release);
            return;
        }
        // The rings back to their first state (interrupt suppression kept), then live again as
        // in `new`.
        rx.ring.reset();
        tx.ring.reset();
        go_live(&mut *t, &mut rx, &tx);
        Counters::bump(&self.counters.device_resets);
        // Release: the transport's `take_device_reset` (Acquire) sees the link up again.
        self.reinitialised.store(true, Ordering::Release);
        // Release: later sends and receives see the re-initialised queues.
        self.state.store(UP, Ordering::Release);
    }
}

impl<H: Hal + 'static, T: Transport + Send, C: Clock + Send> Link for VirtioLink<H, T, C> {
    fn send(&self, frame: &[u8]) -> Result<(), LinkError> {
        self.send_copied(frame.len(), |p| {
            // SAFETY: `send_copied`'s contract: `p` is the start of a transmit buffer the driver
            // holds, valid for `frame.len()` bytes; byte copies, as the device reads it.
            unsafe { copy_to_shared(p, frame) }
        })
    }

    fn send_parts(&self, hdr: &[u8; HDR_SIZE], payload: &[u8]) -> Result<(), LinkError> {
        self.send_copied(HDR_SIZE + payload.len(), |p| {
            // SAFETY: as in `send`, for `HDR_SIZE + payload.len()` bytes: the header at the
            // start, the payload after it.
            unsafe {
                copy_to_shared(p, hdr);
                copy_to_shared(p.wrapping_add(HDR_SIZE), payload);
            }
        })
    }

    fn loan(&self) -> Result<TxLoan, LinkError> {
        if !self.up() {
            return Err(LinkError::Down);
        }
        let mut tx = self.tx.q.lock();
        if tx.loans >= max_loans(&tx) {
            return Err(LinkError::NoBuffer);
        }
        let Some(i) = self.take_tx(&mut tx) else {
            return Err(LinkError::NoBuffer);
        };
        tx.loaned[usize::from(i)] = true;
        tx.loans += 1;
        drop(tx);
        let bufs: Arc<dyn SharedTxBufs> = self.tx.clone();
        Ok(TxLoan::shared(bufs, u32::from(i)))
    }

    fn send_loan(&self, hdr: &[u8; HDR_SIZE], loan: TxLoan) -> Result<(), (LinkError, TxLoan)> {
        if !self.up() {
            return Err((LinkError::Down, loan));
        }
        let (idx, len) = loan
            .into_shared(&*self.tx)
            .map_err(|l| (LinkError::Unsupported, l))?;
        let mut tx = self.tx.q.lock();
        // The loan was ours, so `idx` is a transmit buffer marked loaned.
        let found = u16::try_from(idx)
            .ok()
            .filter(|&i| tx.loaned.get(usize::from(i)) == Some(&true))
            .and_then(|i| Some((i, tx.bufs.at(usize::from(i) * BUF_SIZE)?)));
        let Some((i, p)) = found else {
            drop(tx);
            log::error!("rpmsg link: send of transmit buffer {idx}, which is not loaned");
            // Handed back: its drop finds nothing to give back.
            return Err((LinkError::Unsupported, TxLoan::shared(self.tx.clone(), idx)));
        };
        tx.end_loan(i);
        // SAFETY: the header lies at the start of buffer `i` (`i < size`: `end_loan` found it),
        // which is the driver's (its loan just ended, it is not posted); byte copies, as the
        // device reads it once published.
        unsafe { copy_to_shared(p, hdr) };
        self.publish_tx(tx, i, HDR_SIZE + len.min(MAX_PAYLOAD));
        Ok(())
    }

    // Inlined into the transport's receive pass: left to the compiler, it stopped being inlined
    // when the receive ring's pause (`pause_interrupts`) was added, which cost 65 instructions
    // per round trip (docs/benchmarks.md, "Instruction counts per round trip").
    #[inline]
    fn receive(&self, budget: usize, sink: &mut dyn FnMut(&[u8])) -> usize {
        if !self.up() {
            return 0;
        }
        if self.cfg.interrupts {
            let isr = self.transport.lock().ack_interrupt();
            if isr.contains(InterruptStatus::DEVICE_CONFIGURATION_INTERRUPT) {
                self.check_device();
                if !self.up() {
                    // Given up on (quarantined, or features refused): nothing to drain.
                    return 0;
                }
            }
        }
        // Not zeroed: a drain that finds nothing (most polls) costs no 512-byte fill, and a frame
        // is read only as far as its copy wrote.
        let mut frame = [MaybeUninit::<u8>::uninit(); BUF_SIZE];
        let mut taken = 0;
        let mut reposted = false;
        // The lock of the look that found the ring empty, kept for the end of the drain (one
        // pass of the lock fewer per drain).
        let mut emptied = None;
        // One iteration per used element (good or bad): bounded by `budget` whatever the device
        // publishes.
        for _ in 0..budget {
            let mut rx = self.rx.lock();
            let e = match rx.ring.pop_used() {
                Ok(None) => {
                    emptied = Some(rx);
                    break;
                }
                Ok(Some(e)) => e,
                Err(_) => {
                    Counters::bump(&self.counters.index_jumps);
                    continue;
                }
            };
            let n = rx.ring.size();
            let Some(i) = u16::try_from(e.id).ok().filter(|&i| i < n) else {
                Counters::bump(&self.counters.bad_id);
                continue;
            };
            let len = if e.len as usize > BUF_SIZE {
                Counters::bump(&self.counters.bad_len);
                BUF_SIZE
            } else {
                e.len as usize
            };
            let Some(p) = rx.bufs.at(usize::from(i) * BUF_SIZE) else {
                continue;
            };
            // SAFETY: buffer `i` lies inside the receive region (`i < size`, `len <= BUF_SIZE`);
            // the device may still write it (a hostile one), so it is copied byte by byte into
            // private memory and parsed from there.
            let got = unsafe { copy_from_shared_uninit(p, &mut frame[..len]) };
            // The copy is taken: the buffer goes straight back to the device (same descriptor).
            rx.device_owned[usize::from(i)] = true;
            rx.ring.post(i);
            reposted = true;
            drop(rx);
            sink(got);
            taken += 1;
        }
        let emptied_ring = emptied.is_some();
        if emptied_ring && taken == 0 && !self.cfg.interrupts {
            // Relaxed: a count toward the next look, nothing rides on it.
            let n = self.empty_drains.load(Ordering::Relaxed).wrapping_add(1);
            self.empty_drains.store(n, Ordering::Relaxed);
            if n.is_multiple_of(STATUS_LOOK_EVERY) {
                drop(emptied);
                self.check_device();
                return 0;
            }
        }
        let mut rx = emptied.unwrap_or_else(|| self.rx.lock());
        // Elements published after the drain found the ring empty are not a budget hit: the
        // empty `pop_used` re-armed the interrupt for them.
        if !emptied_ring && rx.ring.has_used() {
            // Stopped at the budget: the next call takes the rest; make sure the device's next
            // element raises an interrupt to cause that call.
            Counters::bump(&self.counters.budget_hits);
            rx.ring.arm_for_next_used();
        }
        let kick = reposted && rx.ring.should_notify();
        drop(rx);
        if kick {
            self.kick(VQ_DRIVER_RX);
        }
        taken
    }

    /// `bad_id + not_owned + index_jumps` ([`LinkStats`]); a length clamped (`bad_len`) reaches
    /// the frame parser, which counts the frame if it is malformed.
    fn faults(&self) -> u64 {
        let s = self.stats();
        s.bad_id + s.not_owned + s.index_jumps
    }

    /// [`LinkStats::tx_exhausted`].
    fn tx_exhausted(&self) -> u64 {
        self.stats().tx_exhausted
    }

    /// [`LinkStats::budget_hits`] (receive and transmit-reclaim drains).
    fn budget_hits(&self) -> u64 {
        self.stats().budget_hits
    }

    /// The receive ring's `SplitRing::pause_interrupts` (nothing once the link is down; a
    /// device reset ends a pause).
    fn pause_interrupts(&self) {
        if self.up() {
            self.rx.lock().ring.pause_interrupts();
        }
    }

    /// The receive ring's `SplitRing::resume_interrupts`: asked for again, then whether used
    /// elements wait.
    fn resume_interrupts(&self) -> bool {
        self.up() && self.rx.lock().ring.resume_interrupts()
    }

    fn take_device_reset(&self) -> bool {
        // A load first (almost always false); Acquire on the swap pairs with the Release store
        // in `reinitialise`.
        self.reinitialised.load(Ordering::Relaxed)
            && self.reinitialised.swap(false, Ordering::Acquire)
    }

    fn reset(&self) {
        let _ = self.take_down();
    }
}

impl<H: Hal, T: Transport, C: Clock> Drop for VirtioLink<H, T, C> {
    fn drop(&mut self) {
        let t = self.transport.get_mut();
        // Acquire: pairs with the Release stores in `take_down` (and we own `self` now anyway).
        let mut quarantined = self.state.load(Ordering::Acquire) == QUARANTINED;
        if !quarantined {
            quarantined = negotiate::reset(t, &self.clock, self.cfg.reset_timeout)
                == ResetOutcome::Unconfirmed;
        }
        if quarantined {
            // The device may still write the rings and buffers: never give the memory back.
            log::error!("rpmsg link: dropped with an unconfirmed reset; its DMA memory is leaked");
            return;
        }
        // SAFETY: the reset was confirmed, so the device no longer accesses the rings or the
        // buffers; the receive queue is dropped exactly once, here, and never used again.
        unsafe { ManuallyDrop::drop(self.rx.get_mut()) };
        // Release: pairs with the Acquire load in `TxSide::drop`, which frees the transmit side
        // when its last owner (this link or a loan still out) goes.
        self.tx.freeable.store(true, Ordering::Release);
    }
}
