//! [`ScmiVirtio`]: the SCMI agent's virtio transport, implementing
//! [`fwipc_transport_api::Transport`] over any virtio-drivers `Transport` + `Hal`.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::task::Waker;

use fwipc_transport_api::shared_mem::{copy_from_shared, copy_to_shared};
use fwipc_transport_api::{
    Caps, Counters, Deadline, Error, Lifecycle, MsgPool, Notification, PoolBuf, ProtocolError,
    Request, Result, Stats, Ticket, TokenAllocator, Transport, TxOutcome,
};
use virtio_drivers::transport::{DeviceStatus, Transport as VirtioTransport};
use virtio_drivers::{BufferDirection, Hal};

use super::config::{ScmiVirtioConfig, MAX_MESSAGES};
use super::error::ScmiVirtioError;
use super::eventq::{EvReturn, EventQueue};
use super::features::{ScmiFeatures, CMDQ, EVENTQ};
use super::parse::{check_reply_header, cmdq_slot, ReplyError, RESP_OVERHEAD, RESP_UNWRITTEN};
use super::ring::{Descriptor, SplitRing, DESC_F_NEXT, DESC_F_WRITE};
use super::slot::{Outcome, Owner, PollStatus, Slot};
use crate::header::{split_target, Header, HEADER_LEN};

/// Largest payload we accept in the configuration.
const MAX_PAYLOAD: usize = 64 * 1024;

/// Interrupt passes one release of the channel lock runs at most (so at most this many per
/// [`ScmiVirtio::complete`] call), each draining at most one ring's worth of used entries per
/// queue (see [`ScmiVirtio`]'s "Budgets"). A device that keeps publishing cannot keep the caller:
/// what is left stays flagged for the next lock release, `complete()` or `poll_done`.
pub const IRQ_PASS_BUDGET: usize = 4;

/// Used entries one drain of `ring` takes at most: one ring's worth. A well-behaved device never
/// has more outstanding (every used entry returns a buffer we posted, and a drain posts none
/// except to replace a malformed event), so only a device that keeps publishing meets it.
fn drain_budget<H: Hal>(ring: &SplitRing<H>) -> usize {
    usize::from(ring.size())
}

pub(super) struct State<H: Hal, T: VirtioTransport> {
    /// The embedder's transport. `ManuallyDrop` so [`ScmiVirtio::into_transport`] can move it
    /// out of a value that has a `Drop` impl; dropped by `ScmiVirtio::drop` unless `released`.
    pub(super) transport: ManuallyDrop<T>,
    /// The transport was handed back by `into_transport` (and must not be dropped here).
    released: bool,
    cmdq: Option<SplitRing<H>>,
    eventq: Option<EventQueue<H>>,
    slots: Box<[Slot]>,
    /// Wakers of completed transfers, run after the channel lock is dropped (deferred
    /// processing: a poller or the interrupt pass may complete other callers' transfers).
    /// Capacity reserved at setup, so pushing never allocates.
    pub(super) deferred: Vec<Waker>,
    /// Polls of pending polled transfers that found no used entry since the device status was
    /// last read (see [`STATUS_POLL_PERIOD`]).
    idle_polls: u32,
}

/// A polled transfer whose poller keeps finding nothing reads the device status once per this
/// many such polls (channel-wide): a device that set `DEVICE_NEEDS_RESET` (virtio 1.2 §2.1.2)
/// or whose back-end went away is then reset as the interrupt path would, and the transfer ends
/// with `Cancelled` instead of waiting out its deadline. Not every poll: a status read may be a
/// trapped MMIO access.
pub const STATUS_POLL_PERIOD: u32 = 256;

/// Status reads after writing 0 before a device reset counts as unconfirmed (virtio 1.2 §2.4:
/// the driver waits for the status to read back 0).
pub const RESET_SPINS: u32 = 1_000_000;

/// The SCMI virtio transport (the agent side of a virtio-scmi device, device id 32).
///
/// * `H`: the DMA [`Hal`] (identity on bare metal, bouncing into shared memory under vhost-user).
/// * `T`: the virtio-drivers transport of the device (MMIO, PCI, vhost-user, simulated...).
///   virtio-drivers has no SCMI `DeviceType`; the embedder checks device id 32 itself.
///
/// Setup negotiates `VIRTIO_F_VERSION_1` (a legacy device is refused) and
/// `VIRTIO_SCMI_F_P2A_CHANNELS` if offered and configured; configures the cmdq (queue 0) and,
/// with P2A, the eventq (queue 1) with pre-posted buffers. Each cmdq message is a fixed
/// 2-descriptor chain: `header + parameters` (device-readable, exactly `4 + payload` bytes) and
/// `header + status + return values` (device-writable). `Request::target` is
/// `(protocol_id << 8) | message_id`; the transport allocates a 10-bit token (quarantined while
/// the device owns the buffer), builds the header, and accepts a reply only if it echoes the
/// header exactly (token, protocol, message, type). Completion: call [`ScmiVirtio::complete`]
/// from the device's interrupt handler (interrupt mode), or send [`Request::polled`] requests and
/// poll (`poll_done` then drains the cmdq itself). An interrupt-mode transfer completes only
/// through `complete()` or a poller that happens to dequeue it; without interrupt delivery,
/// send polled requests.
///
/// Wire contract kept for real back-ends (vhost-device-scmi): every cmdq chain is exactly two
/// direct descriptors (no `INDIRECT_DESC`), the readable one exactly `4 + payload` bytes (the
/// protocol layer sends 4-byte parameters, so `4 + 4·n`), the writable one `8 + max_msg_size`;
/// eventq buffers are single writable descriptors of `eventq_buf_size` bytes.
/// `VIRTIO_F_RING_EVENT_IDX` is negotiated when offered (unless [`ScmiVirtioConfig::event_idx`]
/// is false): kicks and interrupts are then suppressed through `avail_event`/`used_event` with
/// wrap-safe comparisons (see [`super::ring`]); otherwise through the flags word. Sizing: messages =
/// min(cmdq size / 2, 1024), eventq buffers = min(eventq size, 1024); nothing is allocated after
/// `new` on the send/complete paths.
///
/// Budgets: a device controls how many used entries it publishes, so every drain is bounded.
/// One drain of a queue takes at most one ring's worth of entries (the queue size; an index jump
/// counts as one); a drain that meets its budget leaves the interrupt request flagged, so the next
/// release of the channel lock (by `complete()`, `poll_done`, `send`, ...) drains on. One
/// `complete()` runs at most [`IRQ_PASS_BUDGET`] passes. A well-behaved device never meets these
/// budgets (see `drain_budget`), so nothing is delayed; a device that keeps publishing costs each
/// call a bounded amount of work and never keeps it.
///
/// Device errors: a configuration interrupt with `DEVICE_NEEDS_RESET` makes `complete()` reset
/// and re-initialise the device; transfers the device held end with `Cancelled`. A polled waiter
/// reads the status itself every [`STATUS_POLL_PERIOD`] polls that find nothing, and does the
/// same. A device that no longer accepts `FEATURES_OK` after the reset (one that is gone, such as
/// a vhost-user back-end whose process died) leaves the channel dead: later sends fail with
/// `Shutdown` at once instead of timing out.
/// [`Transport::shutdown`] (also run on drop) resets the device and takes every buffer back.
///
/// ```
/// use fwipc_scmi_virtio::sim::{EchoPlatform, SimDevice, SimDeviceConfig, SimHal};
/// use fwipc_scmi_virtio::virtio::{ScmiVirtio, ScmiVirtioConfig};
/// use fwipc_transport_api::{call, Request, StdClock, Wait};
/// use std::time::Duration;
///
/// // A simulated virtio-scmi device (own thread, shared-memory rings) hosting an echo platform.
/// let dev = SimDevice::start(SimDeviceConfig::default(), || Box::new(EchoPlatform::new()));
/// let scmi = ScmiVirtio::<SimHal, _>::new(dev.transport(), ScmiVirtioConfig::default())
///     .expect("device setup");
/// // fwipc test protocol 0x81, ECHO 0x03; polled: no interrupt handler needed.
/// let req = Request::new((0x81 << 8) | 0x03, &[1, 2, 3, 4]).polled();
/// let mut out = [0u8; 16];
/// let clock = StdClock::new();
/// let n = call(&scmi, &clock, &req, &mut out, Duration::from_secs(5), Wait::Poll).unwrap();
/// assert_eq!(&out[..n], &[!1u8, !2, !3, !4]);
/// ```
pub struct ScmiVirtio<H: Hal, T: VirtioTransport> {
    pub(super) lc: Lifecycle,
    counters: Counters,
    pool: MsgPool,
    tokens: TokenAllocator,
    max_msg_size: usize,
    /// Bytes of the request area at the start of each pool buffer (`4 + max_msg_size`).
    req_cap: usize,
    /// Bytes of the response area after it (`8 + max_msg_size`).
    resp_cap: usize,
    features: ScmiFeatures,
    cfg: ScmiVirtioConfig,
    /// The channel lock. Taken through `lock()` (whose guard runs pending interrupt passes and
    /// wakers at release); the interrupt path only ever tries it (see `irq_gate`).
    pub(super) state: spin::Mutex<State<H, T>>,
    /// The device interrupted and the pass has not run yet (set by `complete`, consumed by
    /// whoever holds or next takes the channel lock).
    pub(super) irq_pending: AtomicBool,
    /// Device re-initialisations after DEVICE_NEEDS_RESET (or `reset_device`).
    resets: AtomicU64,
    /// Buffers left to a device whose reset was never confirmed (see `quarantine`).
    quarantined: AtomicU64,
}

impl<H: Hal, T: VirtioTransport> core::fmt::Debug for ScmiVirtio<H, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ScmiVirtio")
            .field("features", &self.features)
            .field("max_msg", &self.pool.capacity())
            .field("max_msg_size", &self.max_msg_size)
            .finish()
    }
}

fn pick_size(
    wanted: Option<u32>,
    max: u32,
    cap: u32,
    queue: u16,
) -> core::result::Result<u16, ScmiVirtioError> {
    if max == 0 {
        return Err(ScmiVirtioError::QueueUnavailable(queue));
    }
    let size = match wanted {
        Some(w) => w,
        None => {
            // Largest power of two ≤ min(max, cap).
            let m = max.min(cap);
            1 << (31 - m.leading_zeros())
        }
    };
    if size < 2 || !size.is_power_of_two() || size > max || size > 32768 {
        return Err(ScmiVirtioError::BadQueueSize {
            queue,
            wanted: size,
            max,
        });
    }
    Ok(size as u16)
}

impl<H: Hal, T: VirtioTransport> ScmiVirtio<H, T> {
    /// Initialise the device behind `transport` (virtio 1.x §3.1.1) and set up the queues.
    ///
    /// The device is reset first. Fails with [`ScmiVirtioError::LegacyDevice`] if it lacks
    /// `VIRTIO_F_VERSION_1` (status FAILED is set), [`ScmiVirtioError::FeaturesRejected`] if
    /// FEATURES_OK does not stick, and queue/DMA errors; on every failure after feature
    /// negotiation the device is reset again so it no longer references our memory.
    pub fn new(
        mut transport: T,
        config: ScmiVirtioConfig,
    ) -> core::result::Result<Self, ScmiVirtioError> {
        if config.max_msg_size == 0 || config.max_msg_size > MAX_PAYLOAD {
            return Err(ScmiVirtioError::BadConfig);
        }
        transport.set_status(DeviceStatus::empty());
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = ScmiFeatures::from_bits_truncate(transport.read_device_features());
        if !offered.contains(ScmiFeatures::VERSION_1) {
            log::error!("virtio-scmi: legacy device (no VERSION_1) refused");
            transport.set_status(DeviceStatus::FAILED);
            return Err(ScmiVirtioError::LegacyDevice);
        }
        let mut features = ScmiFeatures::VERSION_1;
        if config.p2a && offered.contains(ScmiFeatures::P2A_CHANNELS) {
            features |= ScmiFeatures::P2A_CHANNELS;
        }
        if config.event_idx && offered.contains(ScmiFeatures::RING_EVENT_IDX) {
            features |= ScmiFeatures::RING_EVENT_IDX;
        }
        if offered.contains(ScmiFeatures::ACCESS_PLATFORM) {
            features |= ScmiFeatures::ACCESS_PLATFORM;
        }
        let event_idx = features.contains(ScmiFeatures::RING_EVENT_IDX);
        transport.write_driver_features(features.bits());
        transport.set_status(
            DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK,
        );
        if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
            transport.set_status(DeviceStatus::FAILED);
            return Err(ScmiVirtioError::FeaturesRejected);
        }
        let fail = |t: &mut T, e: ScmiVirtioError| {
            t.set_status(DeviceStatus::empty());
            Err(e)
        };

        // cmdq
        if transport.queue_used(CMDQ) {
            return fail(&mut transport, ScmiVirtioError::QueueUnavailable(CMDQ));
        }
        let max = transport.max_queue_size(CMDQ);
        let size = match pick_size(config.cmdq_size, max, 2 * MAX_MESSAGES as u32, CMDQ) {
            Ok(s) => s,
            Err(e) => return fail(&mut transport, e),
        };
        let Some(cmdq) = SplitRing::<H>::new(size, event_idx) else {
            return fail(&mut transport, ScmiVirtioError::DmaAlloc);
        };
        let (d, a, u) = cmdq.addrs();
        transport.queue_set(CMDQ, size as u32, d, a, u);
        let nslots = (size as usize / 2).min(MAX_MESSAGES);
        let req_cap = HEADER_LEN + config.max_msg_size;
        let resp_cap = RESP_OVERHEAD + config.max_msg_size;
        let pool = match MsgPool::new(nslots, req_cap + resp_cap) {
            Ok(p) => p,
            Err(_) => return fail(&mut transport, ScmiVirtioError::BadConfig),
        };
        let tokens = match TokenAllocator::new(10) {
            Ok(t) => t,
            Err(_) => return fail(&mut transport, ScmiVirtioError::BadConfig),
        };

        // eventq
        let mut eventq = None;
        if features.contains(ScmiFeatures::P2A_CHANNELS) {
            if transport.queue_used(EVENTQ) {
                return fail(&mut transport, ScmiVirtioError::QueueUnavailable(EVENTQ));
            }
            let max = transport.max_queue_size(EVENTQ);
            let size = match pick_size(config.eventq_size, max, MAX_MESSAGES as u32, EVENTQ) {
                Ok(s) => s,
                Err(e) => return fail(&mut transport, e),
            };
            let Some(ring) = SplitRing::<H>::new(size, event_idx) else {
                return fail(&mut transport, ScmiVirtioError::DmaAlloc);
            };
            let (d, a, u) = ring.addrs();
            transport.queue_set(EVENTQ, size as u32, d, a, u);
            let buf_size = config
                .eventq_buf_size
                .unwrap_or(RESP_OVERHEAD + config.max_msg_size)
                .max(RESP_OVERHEAD);
            let count = (size as usize).min(MAX_MESSAGES);
            match EventQueue::new(ring, count, buf_size) {
                Some(q) => eventq = Some(q),
                None => return fail(&mut transport, ScmiVirtioError::DmaAlloc),
            }
        }

        transport.set_status(
            DeviceStatus::ACKNOWLEDGE
                | DeviceStatus::DRIVER
                | DeviceStatus::FEATURES_OK
                | DeviceStatus::DRIVER_OK,
        );
        // Feed the eventq only after DRIVER_OK: vhost-user back-ends drop kicks on rings that
        // are not enabled yet (docs/protocols/virtio.md §4 pitfall 4).
        if let Some(q) = eventq.as_mut() {
            q.post_all();
            if q.ring.should_notify() {
                transport.notify(EVENTQ);
            }
        }
        log::debug!(
            "virtio-scmi: features {features:?}, cmdq {size} ({nslots} messages), eventq {}",
            eventq.as_ref().map_or(0, |q| q.count())
        );
        let slots: Box<[Slot]> = (0..nslots).map(|_| Slot::new()).collect();
        Ok(ScmiVirtio {
            lc: Lifecycle::new(),
            counters: Counters::default(),
            pool,
            tokens,
            max_msg_size: config.max_msg_size,
            req_cap,
            resp_cap,
            features,
            cfg: config,
            state: spin::Mutex::new(State {
                transport: ManuallyDrop::new(transport),
                released: false,
                cmdq: Some(cmdq),
                eventq,
                slots,
                deferred: Vec::with_capacity(2 * nslots + 1),
                idle_polls: 0,
            }),
            irq_pending: AtomicBool::new(false),
            resets: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
        })
    }

    /// The negotiated features.
    pub fn features(&self) -> ScmiFeatures {
        self.features
    }

    /// Tokens allocated right now (live transfers plus quarantined ones).
    pub fn tokens_in_use(&self) -> u32 {
        // Under the channel lock: the token allocator is only touched with it held (irq_gate).
        let _st = self.lock();
        self.tokens.in_use()
    }

    /// Eventq buffers currently posted to the device (0 without P2A).
    pub fn eventq_posted(&self) -> usize {
        self.lock().eventq.as_ref().map_or(0, |q| q.posted())
    }

    /// Run `f` on the underlying virtio transport (e.g. to read registers); holds the channel
    /// lock, so keep it short.
    pub fn with_transport<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock().transport)
    }

    /// Whether the device has set DEVICE_NEEDS_RESET (virtio §2.1.2). Interrupt-mode embedders
    /// need not ask: [`ScmiVirtio::complete`] reacts to the configuration interrupt itself;
    /// polled embedders check this and call [`ScmiVirtio::reset_device`].
    pub fn needs_reset(&self) -> bool {
        self.lock()
            .transport
            .get_status()
            .contains(DeviceStatus::DEVICE_NEEDS_RESET)
    }

    /// Reset and re-initialise the device with the same features and queues (no allocation).
    /// Every transfer the device held ends with `Cancelled` (its waiter is woken); timed-out
    /// transfers' buffers and tokens are freed; received notifications stay queued.
    pub fn reset_device(&self) -> core::result::Result<(), ScmiVirtioError> {
        let _g = self.lc.acquire().map_err(|_| ScmiVirtioError::ShutDown)?;
        self.reset_locked(&mut self.lock())
    }

    /// Device re-initialisations so far.
    pub fn device_resets(&self) -> u64 {
        // Relaxed: statistics counter.
        self.resets.load(Ordering::Relaxed)
    }

    /// Buffers (cmdq messages and posted eventq buffers) left to a device whose reset was never
    /// confirmed, leaked on purpose with the rings ([`ScmiVirtioError::ResetUnconfirmed`]).
    pub fn quarantined_buffers(&self) -> u64 {
        // Relaxed: statistics counter.
        self.quarantined.load(Ordering::Relaxed)
    }

    pub(super) fn reset_locked(
        &self,
        st: &mut State<H, T>,
    ) -> core::result::Result<(), ScmiVirtioError> {
        // Relaxed: statistics counter.
        self.resets.fetch_add(1, Ordering::Relaxed);
        self.reset_and_reclaim(st, Error::Cancelled)?;
        let State {
            transport,
            cmdq,
            eventq,
            ..
        } = st;
        if cmdq.is_none() {
            return Err(ScmiVirtioError::ShutDown);
        }
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = ScmiFeatures::from_bits_truncate(transport.read_device_features());
        if offered.contains(self.features) {
            transport.write_driver_features(self.features.bits());
            transport.set_status(
                DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK,
            );
        }
        if !offered.contains(self.features)
            || !transport.get_status().contains(DeviceStatus::FEATURES_OK)
        {
            // The device changed under us: the channel is dead (sends now fail `Shutdown`).
            log::error!("virtio-scmi: device refused our features after reset");
            transport.set_status(DeviceStatus::FAILED);
            *cmdq = None;
            *eventq = None;
            return Err(ScmiVirtioError::FeaturesRejected);
        }
        if let Some(r) = cmdq.as_mut() {
            r.reset();
            let (d, a, u) = r.addrs();
            transport.queue_set(CMDQ, u32::from(r.size()), d, a, u);
        }
        if let Some(q) = eventq.as_mut() {
            q.ring.reset();
            let (d, a, u) = q.ring.addrs();
            transport.queue_set(EVENTQ, u32::from(q.ring.size()), d, a, u);
        }
        transport.set_status(
            DeviceStatus::ACKNOWLEDGE
                | DeviceStatus::DRIVER
                | DeviceStatus::FEATURES_OK
                | DeviceStatus::DRIVER_OK,
        );
        if let Some(q) = eventq.as_mut() {
            q.post_all();
            if q.ring.should_notify() {
                transport.notify(EVENTQ);
            }
        }
        Ok(())
    }

    /// Reset the device (it stops touching our memory) and take every buffer back: posted
    /// chains end with `fail` (waiters woken), abandoned ones free their buffer and token.
    ///
    /// If the device never reads back status 0, it may still access the rings and every buffer
    /// it held: those are quarantined instead (see [`Self::quarantine`]) and the result is
    /// [`ScmiVirtioError::ResetUnconfirmed`].
    fn reset_and_reclaim(
        &self,
        st: &mut State<H, T>,
        fail: Error,
    ) -> core::result::Result<(), ScmiVirtioError> {
        st.transport.set_status(DeviceStatus::empty());
        // Virtio 1.2 §2.4: the driver waits for the reset to complete (status reads 0); bounded.
        let mut confirmed = false;
        for _ in 0..RESET_SPINS {
            if st.transport.get_status().is_empty() {
                confirmed = true;
                break;
            }
            core::hint::spin_loop();
        }
        if !confirmed {
            self.quarantine(st, fail);
            return Err(ScmiVirtioError::ResetUnconfirmed);
        }
        let State {
            eventq,
            slots,
            deferred,
            ..
        } = st;
        for (i, slot) in slots.iter_mut().enumerate() {
            if !slot.device_owned() {
                continue;
            }
            self.unshare_slot(slot, i);
            Self::end_device_owned(slot, fail, deferred, &self.tokens);
            let _ = self.pool.reclaim(i as u32);
        }
        if let Some(q) = eventq.as_mut() {
            q.unshare_posted();
        }
        Ok(())
    }

    /// A device-owned slot leaves the device: an abandoned one frees its token, a pending one
    /// ends with `fail` (its waker deferred). The device's pool loan is the caller's business.
    fn end_device_owned(
        slot: &mut Slot,
        fail: Error,
        deferred: &mut Vec<Waker>,
        tokens: &TokenAllocator,
    ) {
        if slot.owner == Owner::Abandoned {
            let _ = tokens.release(slot.token);
            slot.poll = PollStatus::NotPolled;
        } else if slot.outcome == Outcome::Pending {
            slot.outcome = Outcome::Failed(fail);
            if slot.poll == PollStatus::Polling {
                slot.poll = PollStatus::PollDone;
            }
            if let Some(w) = slot.waker.take() {
                deferred.push(w);
            }
        }
        slot.owner = Owner::Driver;
    }

    /// The reset was not confirmed: the device may still read and write every buffer it held and
    /// both rings. Waiters end with `fail`, but nothing the device can reach is un-shared or
    /// reused: each device-owned pool buffer keeps the device's pool loan and a leaked handle
    /// (so the pool memory outlives the channel), and the cmdq ring and the eventq (its ring and
    /// buffers) are leaked. Counted ([`Self::quarantined_buffers`]) and logged. The queues are
    /// gone afterwards, so every later transfer fails with `Shutdown`.
    fn quarantine(&self, st: &mut State<H, T>, fail: Error) {
        let State {
            cmdq,
            eventq,
            slots,
            deferred,
            ..
        } = st;
        let mut n = 0u64;
        for (i, slot) in slots.iter_mut().enumerate() {
            if !slot.device_owned() {
                continue;
            }
            Self::end_device_owned(slot, fail, deferred, &self.tokens);
            // The device's loan is never reclaimed, so the pool never hands buffer `i` out again;
            // the leaked handle keeps the pool's memory alive after the channel is dropped.
            core::mem::forget(self.pool.get(i as u32));
            n += 1;
        }
        if let Some(q) = eventq.take() {
            n += q.posted() as u64;
            core::mem::forget(q);
        }
        if let Some(r) = cmdq.take() {
            core::mem::forget(r);
        }
        // Relaxed: statistics counter.
        self.quarantined.fetch_add(n, Ordering::Relaxed);
        log::error!(
            "virtio-scmi: device reset unconfirmed (status not 0 after {RESET_SPINS} reads); \
             {n} buffers and the rings quarantined, the channel is dead"
        );
    }

    /// See [`Transport::shutdown`]: refuse new transfers, fail in-flight ones with `Shutdown`
    /// and wake their waiters, wait (bounded) for users to leave, reset the device, take every
    /// buffer back and free the queues.
    fn shutdown_impl(&self) -> Result<()> {
        if !self.lc.begin_shutdown() {
            return Ok(());
        }
        // 1. Every transfer in flight ends with Shutdown; wake its waiter.
        {
            let mut st = self.lock();
            let State {
                slots, deferred, ..
            } = &mut *st;
            for slot in slots.iter_mut() {
                if slot.local.is_some() && slot.outcome == Outcome::Pending {
                    slot.outcome = Outcome::Failed(Error::Shutdown);
                    if let Some(w) = slot.waker.take() {
                        deferred.push(w);
                    }
                }
            }
        }
        // 2. Wait (bounded) for the users to leave.
        let waited = match &self.cfg.clock {
            Some(c) => {
                let d = Deadline::after(&**c, self.cfg.shutdown_timeout);
                self.lc.wait_idle(&**c, d, || {})
            }
            None => {
                let mut n = 0u64;
                let limit = self.cfg.shutdown_spins;
                loop {
                    if self.lc.users() == 0 {
                        break Ok(());
                    }
                    n += 1;
                    if n >= limit {
                        log::warn!(
                            "virtio-scmi: shutdown: users still active after {limit} checks"
                        );
                        break Err(Error::Timeout);
                    }
                    core::hint::spin_loop();
                }
            }
        };
        // 3. Reset the device, take every buffer back, free the queues (or quarantine them if
        //    the reset is never confirmed). Done even if a user overstayed: every access is under
        //    the channel lock.
        let reset = {
            let mut st = self.lock();
            let reset = self.reset_and_reclaim(&mut st, Error::Shutdown);
            let State {
                transport,
                cmdq,
                eventq,
                ..
            } = &mut *st;
            if cmdq.is_some() {
                transport.queue_unset(CMDQ);
            }
            if eventq.is_some() {
                transport.queue_unset(EVENTQ);
            }
            *cmdq = None;
            *eventq = None;
            reset
        };
        reset.map_err(Error::from)?;
        waited
    }

    fn slot_index(&self, st: &State<H, T>, t: &Ticket) -> Result<usize> {
        let i = t.slot() as usize;
        match st.slots.get(i) {
            Some(s)
                if s.generation == t.generation()
                    && s.token.0 == t.token()
                    && s.local.is_some() =>
            {
                Ok(i)
            }
            _ => Err(Error::InvalidArgument),
        }
    }

    /// The response area of message buffer `buf` (at `req_cap`).
    fn resp_ptr(buf: &PoolBuf, req_cap: usize) -> *const u8 {
        buf.dma_ptr().wrapping_add(req_cap).cast_const()
    }

    fn base_ptr(buf: &PoolBuf) -> NonNull<u8> {
        NonNull::new(buf.dma_ptr()).unwrap_or(NonNull::dangling())
    }

    fn areas(&self, base: NonNull<u8>, req_len: usize) -> (NonNull<[u8]>, NonNull<[u8]>) {
        let resp = base.as_ptr().wrapping_add(self.req_cap);
        (
            NonNull::slice_from_raw_parts(base, req_len),
            NonNull::slice_from_raw_parts(NonNull::new(resp).unwrap_or(base), self.resp_cap),
        )
    }

    /// Give back to the driver a chain the device returned (or that a reset took back):
    /// un-share both areas. The slot must be device-owned.
    fn unshare_slot(&self, slot: &Slot, i: usize) {
        let Some(buf) = self.pool.get(i as u32) else {
            log::error!("virtio-scmi: slot {i} device-owned but not allocated");
            return;
        };
        let (req, resp) = self.areas(Self::base_ptr(&buf), slot.req_len);
        // SAFETY: these are the areas shared in `send` (same buffer, same lengths, addresses
        // returned by `share` then); the device returned the chain or was reset, so it no
        // longer accesses them. The pool buffer never moves.
        unsafe {
            H::unshare(slot.shared[1], resp, BufferDirection::DeviceToDriver);
            H::unshare(slot.shared[0], req, BufferDirection::DriverToDevice);
        }
    }

    /// Process the used cmdq entries, at most one ring's worth (`drain_budget`). Runs under the
    /// channel lock, from the IRQ path or a poller. `true` if the budget ran out (entries may be
    /// left; the caller flags them for the next pass).
    pub(super) fn drain_cmdq(&self, st: &mut State<H, T>) -> bool {
        let State {
            cmdq,
            slots,
            deferred,
            ..
        } = st;
        let Some(ring) = cmdq.as_mut() else {
            return false;
        };
        let mut budget = drain_budget(ring);
        loop {
            if budget == 0 {
                return true;
            }
            budget -= 1;
            let e = match ring.pop_used() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    // `RingError::IndexJump` (the only kind today): the ring resynchronised.
                    log::warn!("virtio-scmi: cmdq: {e}");
                    Counters::bump(&self.counters.protocol_errors);
                    continue;
                }
            };
            let Some(i) = cmdq_slot(e.id, slots.len()) else {
                log::warn!("virtio-scmi: cmdq used id {} is not a chain head", e.id);
                Counters::bump(&self.counters.protocol_errors);
                continue;
            };
            let slot = &mut slots[i];
            if !slot.device_owned() {
                log::warn!(
                    "virtio-scmi: cmdq chain {} returned but not in flight",
                    e.id
                );
                Counters::bump(&self.counters.duplicate_replies);
                continue;
            }
            self.unshare_slot(slot, i);
            if slot.owner == Owner::Abandoned {
                // Late reply of a transfer whose caller gave up: drop it, free buffer and token.
                log::debug!("virtio-scmi: late reply for token {} dropped", slot.token.0);
                Counters::bump(&self.counters.late_replies);
                slot.owner = Owner::Driver;
                slot.poll = PollStatus::NotPolled;
                let _ = self.tokens.release(slot.token);
                let _ = self.pool.reclaim(i as u32);
                continue;
            }
            slot.owner = Owner::Driver;
            slot.outcome = self.validate_reply(slot, e.len);
            if slot.poll == PollStatus::Polling {
                slot.poll = PollStatus::PollDone;
            }
            if let Some(w) = slot.waker.take() {
                deferred.push(w);
            }
            // Drop the device's reference; the caller's (`local`) keeps the buffer.
            let _ = self.pool.reclaim(i as u32);
        }
        false
    }

    /// Check a returned reply against what we sent (docs/protocols/scmi.md §8 items 3 and 4),
    /// counting a rejection.
    fn validate_reply(&self, slot: &Slot, used_len: u32) -> Outcome {
        let Some(buf) = slot.local.as_ref() else {
            return Outcome::Failed(Error::Shutdown);
        };
        // With an in-place `Hal` the device can still write the buffer: copy the header out and
        // check the copy (docs/reliability.md, "Invariants" item 1).
        let mut hdr = [0u8; 4];
        // SAFETY: the response area starts at `req_cap` inside pool buffer `buf` (capacity
        // `req_cap + resp_cap`, resp_cap ≥ 8), which the caller's reference keeps alive; it is
        // reached only through the byte accessors of `shared_mem`.
        unsafe { copy_from_shared(Self::resp_ptr(buf, self.req_cap), &mut hdr) };
        let r = check_reply_header(slot.hdr, hdr, used_len, self.resp_cap);
        match r {
            Ok(len) => {
                Counters::bump(&self.counters.completed);
                Outcome::Reply { len }
            }
            Err(e) => {
                log::warn!(
                    "virtio-scmi: reply for token {} rejected: {e:?} (used length {used_len})",
                    slot.token.0
                );
                Counters::bump(if e == ReplyError::WrongToken {
                    &self.counters.unknown_replies
                } else {
                    &self.counters.protocol_errors
                });
                Outcome::Failed(Error::Protocol(e.protocol_error()))
            }
        }
    }

    /// Take the returned eventq buffers, at most one ring's worth (`drain_budget`). `true` if
    /// the budget ran out (entries may be left; the caller flags them for the next pass).
    pub(super) fn drain_eventq(&self, st: &mut State<H, T>) -> bool {
        let State {
            eventq, transport, ..
        } = st;
        let Some(q) = eventq.as_mut() else {
            return false;
        };
        let mut reposted = false;
        let mut budget = drain_budget(&q.ring);
        let mut exhausted = false;
        loop {
            if budget == 0 {
                exhausted = true;
                break;
            }
            budget -= 1;
            let e = match q.ring.pop_used() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    // `RingError::IndexJump` (the only kind today): the ring resynchronised.
                    log::warn!("virtio-scmi: eventq: {e}");
                    Counters::bump(&self.counters.protocol_errors);
                    continue;
                }
            };
            match q.take_used(e.id, e.len) {
                EvReturn::Queued => {}
                EvReturn::NotOwned => {
                    log::warn!(
                        "virtio-scmi: eventq buffer {} returned but not posted",
                        e.id
                    );
                    Counters::bump(&self.counters.protocol_errors);
                }
                EvReturn::Malformed(p) => {
                    log::warn!("virtio-scmi: malformed eventq message ({p})");
                    Counters::bump(&self.counters.protocol_errors);
                    reposted = true;
                }
            }
        }
        if reposted && q.ring.should_notify() {
            transport.notify(EVENTQ);
        }
        exhausted
    }

    /// A drain met its budget: flag the rest as an interrupt request, so the release of the
    /// channel lock (this caller's or the next one's) takes it; nothing is lost even when no
    /// further interrupt comes (with `EVENT_IDX` the device raises none while entries we have not
    /// consumed are pending).
    pub(super) fn flag_backlog(&self) {
        // Relaxed: set under the channel lock; the releasing holder reads it after its SeqCst
        // fence (irq_gate's Dekker handshake), and any later holder takes the lock after us.
        self.irq_pending.store(true, Ordering::Relaxed);
    }
}

impl<H: Hal, T: VirtioTransport + Send> Transport for ScmiVirtio<H, T> {
    fn caps(&self) -> Caps {
        // No datagrams (docs/datagram.md): SCMI notifications and delayed responses are
        // unsolicited messages of a protocol, delivered by `fetch_notification`, not endpoints.
        Caps::new(self.pool.capacity(), self.max_msg_size)
            .with_notifications(self.features.contains(ScmiFeatures::P2A_CHANNELS))
            .with_polling(true)
    }

    fn send(&self, req: &Request<'_>) -> Result<Ticket> {
        let _g = self.lc.acquire()?;
        let (proto, msg) = split_target(req.target).ok_or(Error::InvalidArgument)?;
        let len = req.payload.len();
        if len > self.max_msg_size {
            return Err(Error::TooLarge);
        }
        // The pool and the token allocator are only touched under the channel lock, so the
        // interrupt pass (which returns buffers and tokens) never waits for their locks (irq_gate).
        let mut st = self.lock();
        let buf = self
            .pool
            .alloc()
            .inspect_err(|_| Counters::bump(&self.counters.busy))?;
        let token = self
            .tokens
            .alloc()
            .inspect_err(|_| Counters::bump(&self.counters.busy))?;
        let hdr = Header::command(proto, msg, token.0 as u16).encode();
        let base = buf.dma_ptr();
        // SAFETY: header + payload (`len` ≤ max_msg_size) fit the request area and the sentinel
        // the response area of pool buffer `buf`, which we hold; with an in-place `Hal` that
        // memory is device-reachable, so it is written only through the byte accessors of
        // `shared_mem` (docs/reliability.md, "Invariants" item 1).
        unsafe {
            copy_to_shared(base, &hdr.to_le_bytes());
            copy_to_shared(base.wrapping_add(HEADER_LEN), req.payload);
            copy_to_shared(
                Self::resp_ptr(&buf, self.req_cap).cast_mut(),
                &RESP_UNWRITTEN.to_le_bytes(),
            );
        }
        let req_len = HEADER_LEN + len;
        let (req_area, resp_area) = self.areas(Self::base_ptr(&buf), req_len);
        let i = buf.index() as usize;

        let State {
            transport,
            cmdq,
            slots,
            ..
        } = &mut *st;
        let Some(ring) = cmdq.as_mut() else {
            let _ = self.tokens.release(token);
            drop(buf);
            return Err(Error::Shutdown);
        };
        let slot = &mut slots[i];
        // SAFETY: both areas lie inside pool buffer `i`, which never moves and which we now own
        // (fresh from the pool). From here until the device returns the chain (`drain_cmdq`) or
        // is reset (`shutdown`) we do not touch them: the device's pool loan taken below keeps
        // the buffer from being recycled even if the caller gives up.
        let shared = unsafe {
            [
                H::share(req_area, BufferDirection::DriverToDevice),
                H::share(resp_area, BufferDirection::DeviceToDriver),
            ]
        };
        if shared.contains(&0) {
            // A bouncing Hal out of shared memory (physical address 0 is virtio-drivers' failure
            // value): undo and report back-pressure; nothing was posted.
            for (p, (area, dir)) in shared.iter().zip([
                (req_area, BufferDirection::DriverToDevice),
                (resp_area, BufferDirection::DeviceToDriver),
            ]) {
                if *p != 0 {
                    // SAFETY: shared just above with these arguments; the device never saw it.
                    unsafe { H::unshare(*p, area, dir) };
                }
            }
            let _ = self.tokens.release(token);
            drop(buf);
            drop(st);
            Counters::bump(&self.counters.busy);
            return Err(Error::Busy);
        }
        let _loan = buf.lend();
        slot.owner = Owner::Device;
        slot.poll = match req.completion {
            fwipc_transport_api::Completion::Polled => PollStatus::Polling,
            fwipc_transport_api::Completion::Interrupt => PollStatus::NotPolled,
        };
        slot.generation = slot.generation.wrapping_add(1);
        slot.token = token;
        slot.hdr = hdr;
        slot.outcome = Outcome::Pending;
        slot.waker = None;
        slot.shared = shared;
        slot.req_len = req_len;
        slot.local = Some(buf);
        let head = (2 * i) as u16;
        ring.set_desc(
            head,
            Descriptor {
                addr: shared[0],
                len: req_len as u32,
                flags: DESC_F_NEXT,
                next: head + 1,
            },
        );
        ring.set_desc(
            head + 1,
            Descriptor {
                addr: shared[1],
                len: self.resp_cap as u32,
                flags: DESC_F_WRITE,
                next: 0,
            },
        );
        ring.post(head);
        if ring.should_notify() {
            transport.notify(CMDQ);
        }
        let ticket = Ticket::new(token.0, i as u32, slot.generation);
        drop(st);
        Counters::bump(&self.counters.sent);
        Ok(ticket)
    }

    fn poll_done(&self, ticket: &Ticket) -> Result<bool> {
        // After shutdown began the ring is not touched any more, but a transfer whose reply had
        // already arrived still reports done, so `fetch_response` can deliver it: a shutdown
        // racing a completed call loses nothing. Pending transfers were failed with `Shutdown`.
        let user = self.lc.acquire();
        let r = {
            let mut st = self.lock();
            let i = self.slot_index(&st, ticket)?;
            // Polled transfers drain the ring themselves; so does every transfer when nothing
            // calls `complete` (`ScmiVirtioConfig::interrupts` false).
            let polled = st.slots[i].poll == PollStatus::Polling || !self.cfg.interrupts;
            if user.is_ok() && st.slots[i].outcome == Outcome::Pending && polled {
                if st.cmdq.as_ref().is_some_and(|q| q.has_used()) {
                    // Polling: drain the ring ourselves. Other callers' replies dequeued here
                    // are completed too and their wakers run after the lock (deferred
                    // processing). What a flooding device leaves beyond the budget is taken at
                    // our lock release.
                    if self.drain_cmdq(&mut st) {
                        self.flag_backlog();
                    }
                } else {
                    st.idle_polls += 1;
                    if st.idle_polls >= STATUS_POLL_PERIOD {
                        st.idle_polls = 0;
                        if st
                            .transport
                            .get_status()
                            .contains(DeviceStatus::DEVICE_NEEDS_RESET)
                        {
                            log::warn!(
                                "virtio-scmi: device needs reset (seen polling); \
                                 in-flight transfers cancelled"
                            );
                            let _ = self.reset_locked(&mut st);
                        }
                    }
                }
            }
            match st.slots[i].outcome {
                Outcome::Pending => user.map(|_| false),
                Outcome::Failed(e @ (Error::Shutdown | Error::Cancelled)) => Err(e),
                _ => Ok(true),
            }
        };
        r
    }

    fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize> {
        let st = self.lock();
        let i = self.slot_index(&st, ticket)?;
        let slot = &st.slots[i];
        let len = match slot.outcome {
            Outcome::Pending => return Err(Error::InvalidArgument),
            Outcome::Failed(e) => return Err(e),
            Outcome::Reply { len } => len,
        };
        let Some(buf) = slot.local.as_ref() else {
            return Err(Error::InvalidArgument);
        };
        // `len` was validated by `check_reply_header`: RESP_OVERHEAD ≤ len ≤ resp_cap.
        let n = len
            .checked_sub(RESP_OVERHEAD)
            .ok_or(Error::Protocol(ProtocolError::BadLength))?;
        let resp = Self::resp_ptr(buf, self.req_cap);
        let mut status = [0u8; 4];
        // SAFETY: bytes 4..8 and RESP_OVERHEAD..len of the response area (len ≤ resp_cap) of pool
        // buffer `buf`, which the slot's reference keeps alive; reached only through the byte
        // accessors of `shared_mem`, each fetched once.
        unsafe { copy_from_shared(resp.wrapping_add(HEADER_LEN), &mut status) };
        let status = i32::from_le_bytes(status);
        if status != 0 {
            return Err(Error::Remote(status));
        }
        let dst = out.get_mut(..n).ok_or(Error::TooLarge)?;
        // SAFETY: as above.
        unsafe { copy_from_shared(resp.wrapping_add(RESP_OVERHEAD), dst) };
        Ok(n)
    }

    fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome) {
        {
            let mut st = self.lock();
            let Ok(i) = self.slot_index(&st, &ticket) else {
                log::warn!("virtio-scmi: mark_txdone with a stale ticket {ticket:?}");
                return;
            };
            let slot = &mut st.slots[i];
            // The caller's buffer goes back to the pool here, under the channel lock (irq_gate).
            drop(slot.local.take());
            slot.waker = None;
            if outcome == TxOutcome::TimedOut {
                Counters::bump(&self.counters.timed_out);
            }
            if slot.device_owned() {
                // The device still owns the buffer: keep it (and the token) until it comes back
                // (late reply) or the device is reset. Linux: POLLING → POLL_TIMEOUT.
                slot.owner = Owner::Abandoned;
                if slot.poll == PollStatus::Polling {
                    slot.poll = PollStatus::PollTimeout;
                }
            } else {
                slot.poll = PollStatus::NotPolled;
                let _ = self.tokens.release(slot.token);
            }
        }
    }

    fn register_waker(&self, ticket: &Ticket, waker: &Waker) -> bool {
        if !self.cfg.interrupts || self.lc.acquire().is_err() {
            // No interrupt path: nobody would wake the waiter; it polls instead.
            return false;
        }
        let mut st = self.lock();
        let Ok(i) = self.slot_index(&st, ticket) else {
            return false;
        };
        let slot = &mut st.slots[i];
        if slot.poll != PollStatus::NotPolled {
            // Polled transfers are completed by their poller; nobody wakes them.
            return false;
        }
        if slot.outcome == Outcome::Pending {
            match &slot.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => slot.waker = Some(waker.clone()),
            }
        }
        true
    }

    fn fetch_notification(&self, out: &mut [u8]) -> Result<Option<Notification>> {
        let _g = self.lc.acquire()?;
        let mut st = self.lock();
        // Polled mode has no interrupt path: look at the ring ourselves (bounded; the rest is
        // taken at our lock release).
        if self.drain_eventq(&mut st) {
            self.flag_backlog();
        }
        let State {
            eventq, transport, ..
        } = &mut *st;
        let Some(q) = eventq.as_mut() else {
            return Ok(None);
        };
        match q.pop_message(out) {
            None => Ok(None),
            Some(Err(_needed)) => Err(Error::TooLarge),
            Some(Ok((hdr, len))) => {
                if q.ring.should_notify() {
                    transport.notify(EVENTQ);
                }
                Ok(Some(Notification { source: hdr, len }))
            }
        }
    }

    fn shutdown(&self) -> Result<()> {
        self.shutdown_impl()
    }

    fn stats(&self) -> Stats {
        // The pool's free count under the channel lock, like every pool access (irq_gate).
        let free = {
            let _st = self.lock();
            self.pool.free_count()
        };
        self.counters.snapshot(self.pool.capacity(), free)
    }
}

impl<H: Hal, T: VirtioTransport> ScmiVirtio<H, T> {
    /// Shut the channel down (if not done yet: in-flight transfers end, the device is reset, every
    /// buffer is taken back, the queues are unset and their memory freed) and give the virtio
    /// transport back, e.g. to re-initialise the device with a new [`ScmiVirtio::new`] or to hand
    /// it to another driver. The device is left reset (status 0) with no queue configured, so it
    /// references none of this channel's memory. Taking `self` by value means no other user
    /// exists (an `Arc`-shared channel needs `Arc::try_unwrap` first), so the teardown wait ends
    /// at once.
    pub fn into_transport(mut self) -> T {
        let _ = self.shutdown_impl();
        let st = self.state.get_mut();
        st.released = true;
        // SAFETY: `released` was false until the line above (this is the only place that sets
        // it, and it consumes `self`), so the transport has not been taken or dropped; it is
        // taken exactly once here and `Drop` (which runs when `self` goes out of scope below)
        // skips it because `released` is now true. Nothing else reads it afterwards: the channel
        // is shut down and `self` is consumed.
        unsafe { ManuallyDrop::take(&mut st.transport) }
    }
}

impl<H: Hal, T: VirtioTransport> Drop for ScmiVirtio<H, T> {
    fn drop(&mut self) {
        // Idempotent: a no-op after an explicit shutdown. With `&mut self` there are no other
        // users, so the wait ends at once.
        let _ = self.shutdown_impl();
        let st = self.state.get_mut();
        if !st.released {
            // SAFETY: not released, so `into_transport` did not take it; this is the only drop,
            // and `self` (hence the state) is never used again. The device was reset and its
            // queues unset by `shutdown_impl` above, before the transport goes away.
            unsafe { ManuallyDrop::drop(&mut st.transport) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_size_selection() {
        // Default: the largest power of two within the device maximum and the cap.
        assert_eq!(pick_size(None, 1024, 2048, 0), Ok(1024));
        assert_eq!(pick_size(None, 4096, 2048, 0), Ok(2048));
        assert_eq!(pick_size(None, 1000, 2048, 0), Ok(512));
        assert_eq!(pick_size(Some(64), 1024, 2048, 1), Ok(64));
        assert_eq!(
            pick_size(None, 0, 2048, 1),
            Err(ScmiVirtioError::QueueUnavailable(1))
        );
        for bad in [0, 1, 3, 96, 2048] {
            assert!(matches!(
                pick_size(Some(bad), 1024, 2048, 0),
                Err(ScmiVirtioError::BadQueueSize { .. })
            ));
        }
    }
}
