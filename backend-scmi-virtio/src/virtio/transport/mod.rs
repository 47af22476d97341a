//! [`ScmiVirtio`]: the SCMI agent's virtio transport, implementing
//! [`fwipc_transport_api::Transport`] over any virtio-drivers `Transport` + `Hal`.
//!
//! Files: this one (the type, its state and accessors), `setup.rs` (`new`), `transport_impl.rs`
//! (the `Transport` implementation), `datagram.rs` (the `Datagram` implementation: P2A messages
//! as receive-only endpoints), `drain.rs` (taking what the device returned),
//! `recovery.rs` (device reset, unconfirmed resets, stalls, quarantine), `shutdown.rs`
//! (teardown, `into_transport`, `Drop`).

use alloc::vec::Vec;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::task::Waker;

use fwipc_transport_api::{Exclusive, Lifecycle, PoolBuf, Spinners, TransferTable};
use virtio_drivers::transport::{DeviceStatus, Transport as VirtioTransport};
use virtio_drivers::Hal;

use super::config::ScmiVirtioConfig;
use super::error::ScmiVirtioError;
use super::eventq::EventQueue;
use super::features::ScmiFeatures;
use super::ring::SplitRing;
use super::slot::ScmiPart;
use super::stall::StallWatch;
use datagram::ScmiDgram;
pub use datagram::{DGRAM_ENDPOINTS, DGRAM_RX_BUFS};

mod datagram;
mod drain;
mod recovery;
mod setup;
mod shutdown;
mod transport_impl;

/// Interrupt passes one release of the channel lock runs at most (so at most this many per
/// [`ScmiVirtio::complete`] call), each draining at most one ring's worth of used entries per
/// queue (see [`ScmiVirtio`]'s "Budgets"). A device that keeps publishing cannot keep the caller:
/// what is left stays flagged for the next lock release, `complete()` or `poll_done`.
pub const IRQ_PASS_BUDGET: usize = 4;

pub(super) struct State<H: Hal, T: VirtioTransport> {
    /// The embedder's transport. `ManuallyDrop` so [`ScmiVirtio::into_transport`] can move it
    /// out of a value that has a `Drop` impl; dropped by `ScmiVirtio::drop` unless `released`.
    pub(super) transport: ManuallyDrop<T>,
    /// The transport was handed back by `into_transport` (and must not be dropped here).
    released: bool,
    cmdq: Option<SplitRing<H>>,
    eventq: Option<EventQueue<H>>,
    /// The cmdq messages: the shared transfer table, with its pool, tokens and counters. Its
    /// entries have no lock of their own: the channel lock guards them, as it guards the rings
    /// (see `irq_gate`).
    table: TransferTable<ScmiPart, Exclusive>,
    /// Wakers of completed transfers, run after the channel lock is dropped (deferred
    /// processing: a poller or the interrupt pass may complete other callers' transfers).
    /// Capacity reserved at setup, so pushing never allocates.
    pub(super) deferred: Vec<Waker>,
    /// Polls of pending polled transfers that found no used entry since the device status was
    /// last read (see [`STATUS_POLL_PERIOD`]).
    idle_polls: u32,
    /// Callers spinning on a cmdq reply now ([`Transport::spinning`]): while any does, the
    /// cmdq asks the device for no interrupts (`transport_impl.rs`, `spinning`).
    ///
    /// [`Transport::spinning`]: fwipc_transport_api::Transport::spinning
    spinners: Spinners,
    /// cmdq chains the device holds (the table's loans).
    outstanding: usize,
    /// Per message: the position (counted as [`State::used_seen`] counts) of the first used
    /// element the device could publish after its chain was made available, read just before
    /// the chain was. A used element at an earlier position was published before the device
    /// could see the chain, so it is not this chain's completion (a hostile device's stale or
    /// forged element naming a head that has since been reused): the drain refuses it and the
    /// chain stays in flight. 64-bit positions, not the ring's 16-bit index: a device may publish
    /// any number of elements between a chain's post and its completion (a flood), and the
    /// comparison must still hold. Capacity reserved at setup.
    posted_at: Vec<u64>,
    /// cmdq used elements the device has published and the drain has moved past, counted
    /// across wraps of the ring's 16-bit index and across the elements an index jump skips.
    used_seen: u64,
    /// Tells a stalled device from a slow one ([`ScmiVirtioConfig::stall_timeout`]).
    stall: StallWatch,
    /// Why the channel is dead, once it is (the queues are gone then).
    failure: Option<ScmiVirtioError>,
}

/// A polled transfer whose poller keeps finding nothing reads the device status once per this
/// many such polls (channel-wide): a device that set `DEVICE_NEEDS_RESET` (virtio 1.2 §2.1.2)
/// or whose back-end went away is then reset as the interrupt path would, and the transfer ends
/// with `Cancelled` instead of waiting out its deadline. Not every poll: a status read may be a
/// trapped MMIO access.
pub const STATUS_POLL_PERIOD: u32 = 256;

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
/// from the device's interrupt handler (interrupt mode), or send [`Request::polled`](fwipc_transport_api::Request::polled) requests and
/// poll (`poll_done` then drains the cmdq itself). An interrupt-mode transfer completes through
/// `complete()`, or through any `poll_done` of a pending transfer, which loads `used.idx` and
/// drains what the device returned: a device that withholds an interrupt it was asked for delays
/// a reply only until its waiter polls again (a `Wait::Completion` waiter at least every 100 ms).
/// Without interrupt delivery, send polled requests (they also watch the device status).
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
/// `Shutdown` at once instead of timing out. A reset counts only once the status reads back 0
/// within [`ScmiVirtioConfig::reset_timeout`]; otherwise everything the device can reach is
/// quarantined and the channel is dead ([`ScmiVirtioError::ResetUnconfirmed`]). A device that
/// signals nothing but stops consuming (requests held, no used element for
/// [`ScmiVirtioConfig::stall_timeout`] on the configured clock) ends the same way
/// ([`ScmiVirtioError::DeviceStalled`]): its transfers end with `Cancelled`, later sends fail
/// with `Shutdown`, each at once. [`ScmiVirtio::failure`] says which.
/// [`Transport::shutdown`](fwipc_transport_api::Transport::shutdown) (also run on drop) resets the device and takes every buffer back.
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
    /// cmdq messages (entries of the transfer table).
    max_msg: usize,
    max_msg_size: usize,
    /// Bytes of the request area at the start of each pool buffer (`4 + max_msg_size`).
    req_cap: usize,
    /// Bytes of the response area after it (`8 + max_msg_size`).
    resp_cap: usize,
    features: ScmiFeatures,
    pub(super) cfg: ScmiVirtioConfig,
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
    /// The datagram side (`datagram.rs`).
    dgram: ScmiDgram,
}

impl<H: Hal, T: VirtioTransport> core::fmt::Debug for ScmiVirtio<H, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ScmiVirtio")
            .field("features", &self.features)
            .field("max_msg", &self.max_msg)
            .field("max_msg_size", &self.max_msg_size)
            .finish()
    }
}

impl<H: Hal, T: VirtioTransport> ScmiVirtio<H, T> {
    /// The negotiated features.
    pub fn features(&self) -> ScmiFeatures {
        self.features
    }

    /// Tokens allocated right now (live transfers plus quarantined ones).
    pub fn tokens_in_use(&self) -> u32 {
        // Under the channel lock, which guards the transfer table (irq_gate).
        self.lock().table.tokens_in_use()
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

    /// Why the channel is dead ([`ScmiVirtioError::ResetUnconfirmed`],
    /// [`ScmiVirtioError::DeviceStalled`], [`ScmiVirtioError::FeaturesRejected`] after a reset);
    /// `None` while it works (and after a plain `shutdown`).
    pub fn failure(&self) -> Option<ScmiVirtioError> {
        self.lock().failure
    }

    /// The response area of message buffer `buf` (at `req_cap`).
    pub(in crate::virtio) fn resp_ptr(buf: &PoolBuf, req_cap: usize) -> *const u8 {
        buf.dma_ptr().wrapping_add(req_cap).cast_const()
    }

    pub(in crate::virtio) fn base_ptr(buf: &PoolBuf) -> NonNull<u8> {
        NonNull::new(buf.dma_ptr()).unwrap_or(NonNull::dangling())
    }

    pub(in crate::virtio) fn areas(
        &self,
        base: NonNull<u8>,
        req_len: usize,
    ) -> (NonNull<[u8]>, NonNull<[u8]>) {
        let resp = base.as_ptr().wrapping_add(self.req_cap);
        (
            NonNull::slice_from_raw_parts(base, req_len),
            NonNull::slice_from_raw_parts(NonNull::new(resp).unwrap_or(base), self.resp_cap),
        )
    }
}
