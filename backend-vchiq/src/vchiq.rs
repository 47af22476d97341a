//! The instance: one [`Vchiq`] per shared region and role (no globals, docs/protocols/vchiq.md §9
//! item 11). Holds the private protocol state behind one lock, initialises slot zero and the shared
//! states (`init_slots`/`init_state`, docs/protocols/vchiq.md §1/§6), and runs the poll loop that
//! the embedder's interrupt handler or worker calls when its doorbell rings.
//!
//! Locking: `inner` (a spin lock) guards all private state; service handlers are always called
//! with no lock held. `poll_gate` makes the receive path single-threaded (one poller at a time; a
//! concurrent `poll` records a request the running one is guaranteed to see before it stops, see
//! `poll_gate.rs`).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::config::{Config, Partition, Role};
use crate::consts::*;
use crate::error::{VResult, VchiqError};
use crate::layout::{off, SlotZero};
use crate::platform::Platform;
use crate::poll_gate::PollGate;
use crate::region::Region;
use crate::remote_event::{self, EventRef};
use crate::service::{
    BulkCompletion, BulkDir, Deliver, Event, Quota, Service, ServiceCtx, ServiceHandle,
    ServiceHandler,
};

/// Receiver-private slot reference counts (docs/protocols/vchiq.md §1 "Slot use/release counts").
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RxSlot {
    pub use_count: u32,
    pub release_count: u32,
}

/// An event waiting to be delivered with no lock held.
pub(crate) enum PendingEv {
    Opened,
    Closed,
    Bulk(BulkCompletion),
    RemoteBulkPending { dir: BulkDir, size: usize },
    TxSpace,
}

pub(crate) struct Pending {
    pub handler: Arc<dyn ServiceHandler>,
    pub handle: ServiceHandle,
    pub ev: PendingEv,
}

/// Private protocol state (guarded by `Vchiq::inner`).
pub(crate) struct Inner {
    pub conn: ConnState,
    pub peer_connect_seen: bool,
    pub version_common: i16,
    // ---- transmit side ----
    pub tx_pos: u32,
    pub slot_queue_available: u32,
    /// Private copy of our validated slot queue (the peer writes the shared one on recycle).
    pub tx_slot_queue: [u32; VCHIQ_MAX_SLOTS_PER_SIDE],
    pub data_use_count: u32,
    pub data_quota: u32,
    pub previous_data_index: u32,
    // ---- receive side ----
    pub rx_pos: u32,
    /// The peer's slot the receiver is in, read from `remote.slot_queue` once, when `rx_pos`
    /// enters it, and used for every message in it (`None` between slots). The peer can rewrite
    /// its `slot_queue` at any time: reading the entry again per message would be a double fetch
    /// (docs/protocols/vchiq.md §1 "Stream positions", "Slot use/release counts").
    pub rx_slot: Option<u32>,
    pub rx_slots: Vec<RxSlot>,
    pub rx_stalled: bool,
    /// Our private count of the peer's slots we recycled (authoritative `slot_queue_recycle`).
    pub remote_recycle: u32,
    // ---- services ----
    pub services: Vec<Option<Service>>,
    pub quotas: Vec<Quota>,
    pub handle_seq: u32,
    pub scan_found: Vec<u64>,
    // ---- bulk resources ----
    pub pagelists_free: u64,
    pub fragments_free: u64,
    // ---- deferred callbacks ----
    pub pending: VecDeque<Pending>,
    /// Transmit resources were returned since the last poll round (see [`Event::TxSpace`]).
    pub tx_freed: bool,
    /// Master: a bulk request was queued (local or remote) since `master_process_bulks` last
    /// found nothing it could pair, so its scan of every service is due again.
    pub bulks_dirty: bool,
}

/// Counters of one instance.
#[derive(Debug, Default)]
pub struct VchiqCounters {
    /// Malformed input from the peer (dropped, never a panic).
    pub protocol_errors: AtomicU64,
    /// Messages queued.
    pub msgs_sent: AtomicU64,
    /// Messages parsed from the peer.
    pub msgs_received: AtomicU64,
    /// Operations refused with `Retry` (back-pressure).
    pub retries: AtomicU64,
    /// Our slots the peer gave back.
    pub slots_recycled: AtomicU64,
    /// Bulks completed.
    pub bulks_done: AtomicU64,
    /// Bulks aborted.
    pub bulks_aborted: AtomicU64,
    /// Slots closed early with PADDING because a sender was blocked on a quota held by messages
    /// in that slot (see `queue_message`).
    pub quota_pads: AtomicU64,
    /// Master: READ pagelists without fragments whose ends were not cache-line aligned (on real
    /// hardware this is the arm64 `vchiq_test -f` data corruption).
    pub unaligned_reads: AtomicU64,
    /// [`Vchiq::poll`] calls that stopped at their budget ([`POLL_MAX_ROUNDS`] rounds or
    /// [`POLL_MAX_MSGS`] messages) with work left: a peer that keeps signalling or keeps
    /// publishing messages. The rest is left for the next call.
    pub poll_budget_exhausted: AtomicU64,
}

/// A snapshot of [`VchiqCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VchiqStats {
    /// See [`VchiqCounters::protocol_errors`].
    pub protocol_errors: u64,
    /// See [`VchiqCounters::msgs_sent`].
    pub msgs_sent: u64,
    /// See [`VchiqCounters::msgs_received`].
    pub msgs_received: u64,
    /// See [`VchiqCounters::retries`].
    pub retries: u64,
    /// See [`VchiqCounters::slots_recycled`].
    pub slots_recycled: u64,
    /// See [`VchiqCounters::bulks_done`].
    pub bulks_done: u64,
    /// See [`VchiqCounters::bulks_aborted`].
    pub bulks_aborted: u64,
    /// See [`VchiqCounters::quota_pads`].
    pub quota_pads: u64,
    /// See [`VchiqCounters::unaligned_reads`].
    pub unaligned_reads: u64,
    /// See [`VchiqCounters::poll_budget_exhausted`].
    pub poll_budget_exhausted: u64,
}

pub(crate) fn bump(c: &AtomicU64) {
    // Relaxed: independent statistics counter.
    c.fetch_add(1, Ordering::Relaxed);
}

/// One VCHIQ instance over a shared region, in one role.
///
/// The same type is the ARM (slave, [`Vchiq::new_slave`]) and the VideoCore (master,
/// [`Vchiq::new_master`]). A VideoCore-side service is any [`ServiceHandler`] registered with
/// [`Vchiq::add_service`]; an ARM client opens it with [`Vchiq::open_service`]. Both then use
/// [`Vchiq::queue_message`] and the bulk calls. Handlers run from [`Vchiq::poll`] with no lock
/// held, so they may call back into the instance.
///
/// ```
/// use std::time::Duration;
/// use fwipc_vchiq::consts::make_fourcc;
/// use fwipc_vchiq::sim::SimPair;
/// use fwipc_vchiq::{BulkDir, BulkMode, Deliver, Event, ServiceCtx, ServiceParams};
///
/// let pair = SimPair::new().unwrap(); // region + slave + master, each with a worker thread
/// let fourcc = make_fourcc(*b"demo");
/// // VideoCore side: answer each message with its length; fill every ARM receive with 0xAB.
/// pair.master()
///     .add_service(ServiceParams::new(fourcc).version(2, 1), |ctx: &ServiceCtx<'_>, ev: Event<'_>| {
///         match ev {
///             Event::Message(m) => {
///                 let n = m.payload().len() as u32;
///                 ctx.vchiq.queue_message(ctx.handle, &n.to_le_bytes()).unwrap();
///             }
///             Event::RemoteBulkPending { dir: BulkDir::Transmit, size } => {
///                 let _ = ctx.vchiq.bulk_transmit(ctx.handle, vec![0xAB; size], 0, size, 0, BulkMode::Callback);
///             }
///             _ => {}
///         }
///         Deliver::Done
///     })
///     .unwrap();
/// pair.connect().unwrap();
///
/// // ARM side: open (version negotiation), send, and a blocking bulk receive at an odd offset.
/// let (tx, rx) = std::sync::mpsc::channel();
/// let tx = std::sync::Mutex::new(tx);
/// let arm = pair.slave();
/// let h = arm
///     .open_service_blocking(ServiceParams::new(fourcc).version(2, 2), move |_: &ServiceCtx<'_>, ev: Event<'_>| {
///         if let Event::Message(m) = ev {
///             tx.lock().unwrap().send(m.payload().to_vec()).unwrap();
///         }
///         Deliver::Done
///     }, Duration::from_secs(5))
///     .unwrap();
/// arm.queue_message(h, b"hello").unwrap();
/// assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 5u32.to_le_bytes());
///
/// arm.bulk_receive(h, vec![0; 100], 3, 90, 7, BulkMode::NoCallback).unwrap();
/// let t0 = std::time::Instant::now(); // bounded: give up (Interrupted) after 5 s
/// let done = arm.wait_bulk(h, 7, &|| t0.elapsed() > Duration::from_secs(5), &mut || std::thread::yield_now()).unwrap();
/// assert_eq!(done.result, Ok(90));
/// assert!(done.buf[3..93].iter().all(|&b| b == 0xAB));
/// assert_eq!(done.buf[2], 0);
/// assert_eq!(done.buf[93], 0);
/// ```
pub struct Vchiq {
    pub(crate) region: Region,
    pub(crate) platform: Box<dyn Platform>,
    pub(crate) cfg: Config,
    pub(crate) role: Role,
    pub(crate) local_off: usize,
    pub(crate) remote_off: usize,
    pub(crate) local_part: Partition,
    pub(crate) remote_part: Partition,
    pub(crate) inner: spin::Mutex<Inner>,
    /// The poller's scratch buffer; only the [`PollGate`] holder locks it (never contended).
    pub(crate) poll_lock: spin::Mutex<Vec<u8>>,
    pub(crate) poll_gate: PollGate,
    pub(crate) dead: AtomicBool,
    pub(crate) no_fragments: AtomicBool,
    pub(crate) counters: VchiqCounters,
}

impl core::fmt::Debug for Vchiq {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Vchiq")
            .field("role", &self.role)
            .field("region", &self.region)
            .finish()
    }
}

impl Vchiq {
    /// The ARM side: writes slot zero (`init_slots`) and our shared state (`init_state`), then
    /// sets `initialised`. The embedder then hands `region.bus()` to the VPU (firmware property
    /// tag [`RPI_FIRMWARE_VCHIQ_INIT`]) and waits for [`Vchiq::peer_ready`].
    ///
    /// On real hardware this can happen once per boot (the VPU cannot re-connect,
    /// docs/protocols/vchiq.md §6); a new instance on the same region re-initialises slot zero,
    /// which the simulator supports.
    pub fn new_slave(region: Region, platform: Box<dyn Platform>, cfg: Config) -> VResult<Vchiq> {
        cfg.validate()?;
        if region.len() < cfg.region_size() {
            return Err(VchiqError::NoMemory);
        }
        // Owner re-initialisation: zero slot zero (the whole first slot).
        region.zero(0, VCHIQ_SLOT_SIZE);
        let r = &region;
        // Relaxed stores throughout (also the master's in `new_master` and `build`): published by
        // the Release store of `initialised` in `build`.
        r.store(off::MAGIC, VCHIQ_MAGIC, Ordering::Relaxed);
        r.store(
            off::VERSION_WORD,
            (VCHIQ_VERSION as u16 as u32) | ((VCHIQ_VERSION_MIN as u16 as u32) << 16),
            Ordering::Relaxed,
        );
        r.store(
            off::SLOT_ZERO_SIZE,
            core::mem::size_of::<SlotZero>() as u32,
            Ordering::Relaxed,
        );
        r.store(off::SLOT_SIZE, VCHIQ_SLOT_SIZE as u32, Ordering::Relaxed);
        r.store(off::MAX_SLOTS, VCHIQ_MAX_SLOTS as u32, Ordering::Relaxed);
        r.store(
            off::MAX_SLOTS_PER_SIDE,
            VCHIQ_MAX_SLOTS_PER_SIDE as u32,
            Ordering::Relaxed,
        );
        r.store(
            off::PLATFORM_DATA0,
            region.bus() + cfg.fragments_offset() as u32,
            Ordering::Relaxed,
        );
        r.store(
            off::PLATFORM_DATA1,
            cfg.num_fragments as u32,
            Ordering::Relaxed,
        );
        for (role, base) in [(Role::Master, off::MASTER), (Role::Slave, off::SLAVE)] {
            let p = cfg.partition(role);
            r.store(base + off::SLOT_FIRST, p.first, Ordering::Relaxed);
            r.store(base + off::SLOT_LAST, p.last, Ordering::Relaxed);
            r.store(base + off::SLOT_SYNC, p.sync, Ordering::Relaxed);
        }
        Self::build(region, platform, cfg, Role::Slave)
    }

    /// The VideoCore side (our simulator, or a VPU written in Rust): validates slot zero written
    /// by the slave, lowers `version` to the common one and sets up the master half.
    pub fn new_master(region: Region, platform: Box<dyn Platform>, cfg: Config) -> VResult<Vchiq> {
        cfg.validate()?;
        if region.len() < cfg.region_size() {
            return Err(VchiqError::NoMemory);
        }
        let r = &region;
        // Acquire: pairs with the slave's Release store of `initialised`: slot zero is complete.
        if r.load(off::SLAVE + off::INITIALISED, Ordering::Acquire) == 0 {
            return Err(VchiqError::NotConnected);
        }
        // rmb (for a slave outside our coherence domain): slot zero is read after the flag.
        platform.rmb();
        // Relaxed loads: ordered by the Acquire above.
        let ld = |o| r.load(o, Ordering::Relaxed);
        let vw = ld(off::VERSION_WORD);
        let (version, version_min) = (vw as u16 as i16, (vw >> 16) as u16 as i16);
        let sizes_ok = ld(off::MAGIC) == VCHIQ_MAGIC
            && ld(off::SLOT_ZERO_SIZE) == core::mem::size_of::<SlotZero>() as u32
            && ld(off::SLOT_SIZE) == VCHIQ_SLOT_SIZE as u32
            && ld(off::MAX_SLOTS) == VCHIQ_MAX_SLOTS as u32
            && ld(off::MAX_SLOTS_PER_SIDE) == VCHIQ_MAX_SLOTS_PER_SIDE as u32
            && version >= VCHIQ_VERSION_MIN
            && version_min <= VCHIQ_VERSION
            && ld(off::PLATFORM_DATA0) == region.bus() + cfg.fragments_offset() as u32
            && ld(off::PLATFORM_DATA1) == cfg.num_fragments as u32;
        let parts_ok = [(Role::Master, off::MASTER), (Role::Slave, off::SLAVE)]
            .iter()
            .all(|&(role, base)| {
                let p = cfg.partition(role);
                ld(base + off::SLOT_FIRST) == p.first
                    && ld(base + off::SLOT_LAST) == p.last
                    && ld(base + off::SLOT_SYNC) == p.sync
            });
        if !sizes_ok || !parts_ok {
            log::error!(target: "vchiq", "master: slot zero rejected");
            return Err(VchiqError::BadPeer);
        }
        let common = version.min(VCHIQ_VERSION);
        // Relaxed (this store and the master half below): published by our own `initialised`
        // Release in `build` and by the Release of the tx_pos that carries our CONNECT, which
        // the slave Acquire-reads before it reads `version` (rx.rs `handle_control`).
        r.store(
            off::VERSION_WORD,
            (common as u16 as u32) | ((version_min as u16 as u32) << 16),
            Ordering::Relaxed,
        );
        // The master half may hold state from a previous instance: reset it.
        region.zero(
            off::MASTER,
            core::mem::size_of::<crate::layout::SharedState>(),
        );
        let p = cfg.partition(Role::Master);
        r.store(off::MASTER + off::SLOT_FIRST, p.first, Ordering::Relaxed);
        r.store(off::MASTER + off::SLOT_LAST, p.last, Ordering::Relaxed);
        r.store(off::MASTER + off::SLOT_SYNC, p.sync, Ordering::Relaxed);
        Self::build(region, platform, cfg, Role::Master)
    }

    fn build(
        region: Region,
        platform: Box<dyn Platform>,
        cfg: Config,
        role: Role,
    ) -> VResult<Vchiq> {
        let (local_off, remote_off) = match role {
            Role::Slave => (off::SLAVE, off::MASTER),
            Role::Master => (off::MASTER, off::SLAVE),
        };
        let other = match role {
            Role::Slave => Role::Master,
            Role::Master => Role::Slave,
        };
        let local_part = cfg.partition(role);
        let remote_part = cfg.partition(other);
        let n = local_part.data_slots();
        let r = &region;
        // init_state: our slot queue, recycle index, tx_pos, debug[0]; the sync slot is empty.
        let mut tx_slot_queue = [0u32; VCHIQ_MAX_SLOTS_PER_SIDE];
        for (i, q) in tx_slot_queue.iter_mut().enumerate() {
            let s = if (i as u32) < n {
                local_part.first + i as u32
            } else {
                0
            };
            *q = s;
            r.store(local_off + off::SLOT_QUEUE + 4 * i, s, Ordering::Relaxed);
        }
        r.store(local_off + off::SLOT_QUEUE_RECYCLE, n, Ordering::Relaxed);
        r.store(local_off + off::TX_POS, 0, Ordering::Relaxed);
        r.store(local_off + off::DEBUG, DEBUG_MAX as u32, Ordering::Relaxed);
        for ev in [
            off::TRIGGER,
            off::RECYCLE,
            off::SYNC_TRIGGER,
            off::SYNC_RELEASE,
        ] {
            r.store(local_off + ev + off::EV_ARMED, 0, Ordering::Relaxed);
            r.store(local_off + ev + off::EV_FIRED, 0, Ordering::Relaxed);
        }
        let sync_hdr = local_part.sync as usize * VCHIQ_SLOT_SIZE;
        r.store(sync_hdr, 0, Ordering::Relaxed);
        r.store(sync_hdr + 4, 0, Ordering::Relaxed);
        // wmb (for the VideoCore): the stores above reach it before `initialised`.
        platform.wmb();
        // Release: everything above is visible to a peer that Acquire-reads `initialised` = 1
        // (the owner sets it last, docs/protocols/vchiq.md §1).
        r.store(local_off + off::INITIALISED, 1, Ordering::Release);

        let max = cfg.max_services;
        let mut quotas = vec![Quota::new(); max];
        for q in quotas.iter_mut() {
            q.slot_quota = n / 2;
            q.message_quota = core::cmp::min(n / 2 * 256, 65535);
        }
        let inner = Inner {
            conn: ConnState::Disconnected,
            peer_connect_seen: false,
            version_common: VCHIQ_VERSION,
            tx_pos: 0,
            slot_queue_available: n,
            tx_slot_queue,
            data_use_count: 0,
            data_quota: n - 1,
            previous_data_index: u32::MAX,
            rx_pos: 0,
            rx_slot: None,
            rx_slots: vec![RxSlot::default(); cfg.total_slots],
            rx_stalled: false,
            remote_recycle: remote_part.data_slots(),
            services: (0..max).map(|_| None).collect(),
            quotas,
            handle_seq: 1,
            scan_found: vec![0u64; max.div_ceil(64)],
            pagelists_free: mask(cfg.num_pagelists),
            fragments_free: mask(cfg.num_fragments),
            pending: VecDeque::with_capacity(64),
            tx_freed: false,
            bulks_dirty: false,
        };
        log::debug!(target: "vchiq", "{role:?} initialised: data slots {}..={}", local_part.first, local_part.last);
        Ok(Vchiq {
            region,
            platform,
            cfg,
            role,
            local_off,
            remote_off,
            local_part,
            remote_part,
            inner: spin::Mutex::new(inner),
            poll_lock: spin::Mutex::new(vec![0u8; VCHIQ_SLOT_SIZE]),
            poll_gate: PollGate::new(),
            dead: AtomicBool::new(false),
            no_fragments: AtomicBool::new(false),
            counters: VchiqCounters::default(),
        })
    }

    /// Test hook: turn fragment use off, to show that the fragment tests detect the resulting
    /// cache-line corruption hazard (the master counts `unaligned_reads`). Never for production.
    #[doc(hidden)]
    pub fn set_fragments_enabled_for_test(&self, on: bool) {
        // Relaxed: a test switch read at bulk submission.
        self.no_fragments.store(!on, Ordering::Relaxed);
    }

    /// This instance's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether the peer has initialised its half (`remote.initialised`).
    pub fn peer_ready(&self) -> bool {
        // Acquire: pairs with the peer's Release store of `initialised`.
        let ready = self
            .region
            .load(self.remote_off + off::INITIALISED, Ordering::Acquire)
            != 0;
        // rmb (for the VideoCore): the peer's half is read after the flag.
        self.platform.rmb();
        ready
    }

    /// Counters snapshot.
    pub fn stats(&self) -> VchiqStats {
        let c = &self.counters;
        // Relaxed: statistics.
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VchiqStats {
            protocol_errors: r(&c.protocol_errors),
            msgs_sent: r(&c.msgs_sent),
            msgs_received: r(&c.msgs_received),
            retries: r(&c.retries),
            slots_recycled: r(&c.slots_recycled),
            bulks_done: r(&c.bulks_done),
            bulks_aborted: r(&c.bulks_aborted),
            quota_pads: r(&c.quota_pads),
            unaligned_reads: r(&c.unaligned_reads),
            poll_budget_exhausted: r(&c.poll_budget_exhausted),
        }
    }

    pub(crate) fn protocol_error(&self, what: &str) {
        bump(&self.counters.protocol_errors);
        log::warn!(target: "vchiq", "{:?}: protocol error: {what}", self.role);
    }

    /// The connection state.
    pub fn conn_state(&self) -> ConnState {
        self.inner.lock().conn
    }

    /// The common protocol version (valid once connected).
    pub fn version_common(&self) -> i16 {
        self.inner.lock().version_common
    }

    /// Whether both CONNECTs were exchanged.
    pub fn is_connected(&self) -> bool {
        self.conn_state() == ConnState::Connected
    }

    /// Send CONNECT (non-blocking). Hidden servers start listening. Completion is seen through
    /// [`Vchiq::is_connected`] after the peer's CONNECT is parsed by [`Vchiq::poll`].
    pub fn connect(&self) -> VResult {
        self.check_alive()?;
        if !self.peer_ready() {
            return Err(VchiqError::NotConnected);
        }
        let mut g = self.inner.lock();
        if g.conn != ConnState::Disconnected {
            return Ok(());
        }
        self.queue_locked(&mut g, MsgType::Connect, 0, 0, &[], None)?;
        for s in g.services.iter_mut().flatten() {
            if s.state == ServiceState::Hidden {
                s.state = ServiceState::Listening;
            }
        }
        g.conn = if g.peer_connect_seen {
            ConnState::Connected
        } else {
            ConnState::Connecting
        };
        Ok(())
    }

    pub(crate) fn check_alive(&self) -> VResult {
        // Acquire: pairs with the Release store in `mark_dead`.
        if self.dead.load(Ordering::Acquire) {
            Err(VchiqError::Shutdown)
        } else {
            Ok(())
        }
    }

    // ---- events and doorbells ----

    pub(crate) fn ev_words(
        &self,
        base: usize,
        ev: usize,
    ) -> Option<EventRef<'_, core::sync::atomic::AtomicU32>> {
        Some(EventRef {
            armed: self.region.word(base + ev + off::EV_ARMED)?,
            fired: self.region.word(base + ev + off::EV_FIRED)?,
        })
    }

    /// Signal one of the peer's events (`remote->X`), ringing its doorbell if it is armed.
    pub(crate) fn signal_remote(&self, ev: usize) {
        if let Some(e) = self.ev_words(self.remote_off, ev) {
            remote_event::signal(e, &*self.platform, || self.platform.ring_doorbell());
        }
    }

    /// Before the worker sleeps: arm our four events. Returns `true` if it may sleep until the
    /// doorbell rings, `false` if something is already pending (poll again instead).
    pub fn prepare_sleep(&self) -> bool {
        if self.poll_gate.requested() {
            return false;
        }
        let mut may_sleep = true;
        for ev in [
            off::SYNC_TRIGGER,
            off::SYNC_RELEASE,
            off::TRIGGER,
            off::RECYCLE,
        ] {
            if let Some(e) = self.ev_words(self.local_off, ev) {
                may_sleep &= remote_event::arm(e, &*self.platform);
            }
        }
        may_sleep
    }

    /// After the worker woke from its doorbell: disarm our events (only the sleeper does this;
    /// see [`remote_event::disarm`]).
    pub fn after_wake(&self) {
        for ev in [
            off::SYNC_TRIGGER,
            off::SYNC_RELEASE,
            off::TRIGGER,
            off::RECYCLE,
        ] {
            if let Some(e) = self.ev_words(self.local_off, ev) {
                remote_event::disarm(e);
            }
        }
    }

    /// Ask for another poll round (e.g. after a handler returned [`Deliver::Retry`]): a local
    /// signal of our trigger plus the platform's `request_poll`.
    pub fn kick(&self) {
        self.inner.lock().rx_stalled = false;
        if let Some(e) = self.ev_words(self.local_off, off::TRIGGER) {
            remote_event::signal_local(e);
        }
        self.poll_gate.request();
        self.platform.request_poll();
    }

    /// Process everything pending: recycled slots, the peer's messages (handlers run here, with
    /// no lock held), the sync slot, bulk transfers (master), deferred callbacks. Non-blocking; call it from the
    /// doorbell interrupt's bottom half or a worker, or from a polling loop. Returns the units of
    /// work done.
    ///
    /// One poller at a time: a call that finds another thread polling returns 0 at once, and
    /// that thread is guaranteed to run another round for it before it returns (see
    /// `poll_gate`), so calling `poll` only from an interrupt's bottom half never leaves work
    /// until the next doorbell.
    ///
    /// Bounded: the peer writes `fired` and `tx_pos`, so it could keep a loop of "until nothing
    /// fired and nothing was parsed" busy for ever. One call runs at most [`POLL_MAX_ROUNDS`]
    /// rounds and parses at most [`POLL_MAX_MSGS`] messages. When it stops with work left it
    /// counts [`VchiqCounters::poll_budget_exhausted`], leaves our `trigger` fired (so a worker's
    /// [`Vchiq::prepare_sleep`] refuses to sleep) and calls the platform's `request_poll`, so the
    /// rest is done by the next call, never lost.
    pub fn poll(&self) -> usize {
        if !self.poll_gate.enter() {
            return 0;
        }
        let mut budget = PollBudget {
            rounds: POLL_MAX_ROUNDS,
            msgs: POLL_MAX_MSGS,
            exhausted: false,
        };
        let mut total = 0;
        loop {
            total += self.poll_rounds(&mut budget);
            if budget.exhausted {
                // Open the gate without consuming a pending request: it stays visible to
                // `prepare_sleep` and to the next `poll` (see `PollGate::leave_keep_request`).
                self.poll_gate.leave_keep_request();
                bump(&self.counters.poll_budget_exhausted);
                log::debug!(target: "vchiq", "{:?}: poll budget exhausted, work left for the next call", self.role);
                if let Some(e) = self.ev_words(self.local_off, off::TRIGGER) {
                    remote_event::signal_local(e);
                }
                self.platform.request_poll();
                break;
            }
            // `true`: a request arrived after our last round; we still hold the gate.
            if !self.poll_gate.leave() {
                break;
            }
        }
        total
    }

    /// `poll`'s loop, with the gate held. Stops with `budget.exhausted` set when a further round
    /// was due but the budget is spent.
    fn poll_rounds(&self, budget: &mut PollBudget) -> usize {
        let mut scratch = self.poll_lock.lock();
        let mut total = 0;
        loop {
            if budget.rounds == 0 || budget.msgs == 0 {
                budget.exhausted = true;
                break;
            }
            budget.rounds -= 1;
            let again = self.poll_gate.take_request();
            let mut fired = false;
            let mut sync_released = false;
            for ev in [
                off::SYNC_TRIGGER,
                off::SYNC_RELEASE,
                off::TRIGGER,
                off::RECYCLE,
            ] {
                if let Some(e) = self.ev_words(self.local_off, ev) {
                    let f = remote_event::take(e, &*self.platform);
                    sync_released |= f && ev == off::SYNC_RELEASE;
                    fired |= f;
                }
            }
            if fired || again {
                let mut g = self.inner.lock();
                // A handler's Retry (or a stall) is re-tried on the next event
                // (docs/protocols/vchiq.md §4: "the message stays in place and is re-parsed on the
                // next trigger").
                g.rx_stalled = false;
                // The peer released our sync slot: a sync-mode sender may go again.
                g.tx_freed |= sync_released;
            }
            let mut work = 0;
            work += self.process_free_queue();
            work += self.sync_poll(&mut scratch);
            work += self.rx_poll(&mut scratch, &mut budget.msgs);
            if self.role == Role::Master {
                work += self.master_process_bulks();
            }
            self.notify_tx_space();
            work += self.dispatch_pending();
            total += work;
            if work == 0 && !again && !fired {
                break;
            }
            // Acquire: pairs with `mark_dead`'s Release; a dead instance stops polling once idle
            // (a late `false` costs one more round).
            if self.dead.load(Ordering::Acquire) && work == 0 {
                break;
            }
        }
        total
    }

    /// Deliver deferred events, one at a time, with no lock held.
    pub(crate) fn dispatch_pending(&self) -> usize {
        let mut n = 0;
        loop {
            let Some(p) = self.inner.lock().pending.pop_front() else {
                return n;
            };
            n += 1;
            let ctx = ServiceCtx {
                vchiq: self,
                handle: p.handle,
            };
            let ev = match p.ev {
                PendingEv::Opened => Event::Opened,
                PendingEv::Closed => Event::Closed,
                PendingEv::Bulk(c) => Event::Bulk(c),
                PendingEv::RemoteBulkPending { dir, size } => {
                    Event::RemoteBulkPending { dir, size }
                }
                PendingEv::TxSpace => Event::TxSpace,
            };
            let _: Deliver = p.handler.callback(&ctx, ev);
        }
    }

    /// Remember that service `h` was refused with `Retry`, so it hears [`Event::TxSpace`].
    pub(crate) fn mark_tx_blocked(g: &mut Inner, h: ServiceHandle) {
        if let Some(Some(s)) = g.services.get_mut(h.port()) {
            if s.handle == h {
                s.tx_blocked = true;
            }
        }
    }

    /// If transmit resources came back, queue [`Event::TxSpace`] for every service refused
    /// since. Bounded: a refusal arms it once, and only returned resources fire it (a handler
    /// refused again inside its `TxSpace` callback waits for the next real return).
    fn notify_tx_space(&self) {
        let mut g = self.inner.lock();
        if !core::mem::take(&mut g.tx_freed) {
            return;
        }
        let g = &mut *g;
        for s in g.services.iter_mut().flatten() {
            if core::mem::take(&mut s.tx_blocked) {
                g.pending.push_back(Pending {
                    handler: s.handler.clone(),
                    handle: s.handle,
                    ev: PendingEv::TxSpace,
                });
            }
        }
    }

    pub(crate) fn push_event(g: &mut Inner, s: &Service, ev: PendingEv) {
        g.pending.push_back(Pending {
            handler: s.handler.clone(),
            handle: s.handle,
            ev,
        });
    }

    /// Mark the instance dead: every later call fails with `Shutdown`.
    pub(crate) fn mark_dead(&self) {
        // Release: pairs with the Acquire in `check_alive`.
        self.dead.store(true, Ordering::Release);
        self.inner.lock().conn = ConnState::Dead;
    }
}

/// Rounds one [`Vchiq::poll`] call runs at most (each takes the four events, drains the free
/// queue, the sync slot, the peer's stream up to the message budget, and the deferred events).
pub const POLL_MAX_ROUNDS: usize = 64;

/// Messages of the peer's stream (PADDING included) one [`Vchiq::poll`] call parses at most. More
/// than a whole default window of the smallest messages (31 data slots × 512 eight-byte messages,
/// docs/protocols/vchiq.md §1), so a well-behaved peer's backlog is still drained in one call.
pub const POLL_MAX_MSGS: usize = 16384;

/// What is left of one `poll` call's budget.
struct PollBudget {
    rounds: usize,
    msgs: usize,
    exhausted: bool,
}

fn mask(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}
