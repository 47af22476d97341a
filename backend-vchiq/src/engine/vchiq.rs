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
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fwipc_transport_api::Clock;

use crate::config::{Config, Partition, Role};
use crate::engine::counters::{bump, VchiqCounters, VchiqStats};
use crate::engine::poll_gate::{GateCell, PollGate};
use crate::engine::service::{
    BulkCompletion, BulkDir, BulkMode, Deliver, Event, ServiceHandle, ServiceParams,
};
use crate::engine::wakers::FutureWakers;
use crate::error::{Result, VchiqError};
use crate::platform::Platform;
use crate::shared::region::Region;
use crate::shared::remote_event::{self, EventRef};
use crate::wire::consts::*;
use crate::wire::layout::off;

/// The context of a callback.
pub struct ServiceCtx<'a> {
    /// The instance (queue messages, bulks, close from inside the callback).
    pub vchiq: &'a Vchiq,
    /// The service the event is for.
    pub handle: ServiceHandle,
}

/// A service's callbacks. Called from [`Vchiq::poll`] with no internal lock held, so it may call
/// back into the instance. For the master role this is the pluggable VideoCore-side service.
pub trait ServiceHandler: Send + Sync {
    /// One event. The return value matters only for [`Event::Message`].
    fn callback(&self, ctx: &ServiceCtx<'_>, event: Event<'_>) -> Deliver;
}

impl<F> ServiceHandler for F
where
    F: Fn(&ServiceCtx<'_>, Event<'_>) -> Deliver + Send + Sync,
{
    fn callback(&self, ctx: &ServiceCtx<'_>, event: Event<'_>) -> Deliver {
        self(ctx, event)
    }
}

/// Per-port quota record (docs/protocols/vchiq.md §4), persistent across services reusing the port.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    pub message_quota: u32,
    pub slot_quota: u32,
    pub message_use_count: u32,
    pub slot_use_count: u32,
    pub previous_tx_index: u32,
    /// DATA messages of this port in the slot `previous_tx_index` (our open slot while
    /// `tx_pos` is inside it): when they are all the message quota in use, only padding that
    /// slot can bring the quota back.
    pub open_slot_msgs: u32,
}

impl Quota {
    pub(crate) const fn new() -> Self {
        Quota {
            message_quota: 0,
            slot_quota: 0,
            message_use_count: 0,
            slot_use_count: 0,
            previous_tx_index: u32::MAX,
            open_slot_msgs: 0,
        }
    }
}

/// A local bulk waiting for (slave: the master's DONE; master: a remote partner).
#[derive(Debug)]
pub(crate) struct LocalBulk {
    pub tag: u64,
    pub buf: Vec<u8>,
    pub offset: usize,
    pub len: usize,
    pub mode: BulkMode,
    /// Slave: pagelist index in the region.
    pub pagelist: u32,
    /// Slave receive: fragment index used, if any.
    pub fragment: Option<u32>,
}

/// Master: a slave request {pagelist bus address, size}.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteBulk {
    pub pagelist: u32,
    pub size: i32,
}

/// One direction's bulk queue of a service.
#[derive(Debug)]
pub(crate) struct BulkQueue {
    pub local: VecDeque<LocalBulk>,
    pub remote: VecDeque<RemoteBulk>,
}

impl BulkQueue {
    fn new() -> Self {
        BulkQueue {
            local: VecDeque::with_capacity(VCHIQ_NUM_SERVICE_BULKS),
            remote: VecDeque::with_capacity(VCHIQ_NUM_SERVICE_BULKS),
        }
    }
}

/// A service record (one per port in use).
pub(crate) struct Service {
    pub handle: ServiceHandle,
    pub state: ServiceState,
    pub params: ServiceParams,
    /// Server (public fourcc) vs client.
    pub is_server: bool,
    pub remoteport: u32,
    pub client_id: i32,
    pub peer_version: i16,
    pub sync: bool,
    pub handler: Arc<dyn ServiceHandler>,
    /// remove_service was called: free the port once the close completes.
    pub remove_pending: bool,
    /// Open refused by the peer.
    pub refused: bool,
    pub tx: BulkQueue,
    pub rx: BulkQueue,
    /// NoCallback completions waiting for the owner.
    pub done: VecDeque<BulkCompletion>,
    /// A send, bulk or close was refused with `Retry` since the last [`Event::TxSpace`].
    pub tx_blocked: bool,
}

impl Service {
    pub(crate) fn new(
        handle: ServiceHandle,
        state: ServiceState,
        params: ServiceParams,
        is_server: bool,
        handler: Arc<dyn ServiceHandler>,
    ) -> Self {
        Service {
            handle,
            state,
            params,
            is_server,
            remoteport: VCHIQ_PORT_FREE,
            client_id: 0,
            peer_version: 0,
            sync: false,
            handler,
            remove_pending: false,
            refused: false,
            tx: BulkQueue::new(),
            rx: BulkQueue::new(),
            done: VecDeque::with_capacity(2 * VCHIQ_NUM_SERVICE_BULKS),
            tx_blocked: false,
        }
    }

    pub(crate) fn queue(&mut self, dir: BulkDir) -> &mut BulkQueue {
        match dir {
            BulkDir::Transmit => &mut self.tx,
            BulkDir::Receive => &mut self.rx,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, ServiceState::Open | ServiceState::OpenSync)
    }
}

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
    /// The handler the stream's last DATA message went to, kept for the next one
    /// ([`Inner::take_handler`]): a stream of messages for one service hands its handler to
    /// each callback without a reference count taken and given back per message. Taken out
    /// while its callback runs (the callback holds it, so a service removed meanwhile keeps its
    /// handler alive until the callback returns); dropped when its service's port is freed.
    pub handler_cache: Option<Arc<dyn ServiceHandler>>,
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
    /// The slot loan out, if any (`tx_loan.rs`).
    pub loan: crate::engine::slot_loan::LoanState,
    /// Master: ports with a bulk request queued (local or remote) that `master_process_bulks`
    /// has not yet paired or found unpairable, one bit per port ([`Inner::mark_bulk_port`]).
    /// Only these are looked at, not every service.
    pub bulk_ports: Vec<u64>,
    /// Whether any bit of `bulk_ports` is set (a round with no bulk work looks at this only).
    pub bulks_dirty: bool,
    /// Whether a service was refused with `Retry` (`tx_blocked`) since `notify_tx_space` last
    /// looked, so only then does it walk the services.
    pub tx_blocked_any: bool,
}

impl Inner {
    /// The handler of service `port` for a delivery outside the lock: the cached one if it is
    /// that service's (taken out of the cache, no reference count touched), else a new
    /// reference to it. `None` if the port holds no service. Give it back with
    /// [`Inner::keep_handler`] once the callback returned.
    pub(crate) fn take_handler(&mut self, port: usize) -> Option<Arc<dyn ServiceHandler>> {
        let s = self.services.get(port)?.as_ref()?;
        match self.handler_cache.take() {
            Some(h) if Arc::ptr_eq(&h, &s.handler) => Some(h),
            // Another service's: it goes (the next delivery to that one takes a reference
            // again).
            _ => Some(s.handler.clone()),
        }
    }

    /// A delivery's handler back from its callback: cached for the next message if service
    /// `port` still has it, dropped otherwise (the service was removed or given another
    /// handler while the callback ran; nothing else keeps the handler alive for it then).
    pub(crate) fn keep_handler(&mut self, port: usize, h: Arc<dyn ServiceHandler>) {
        let current =
            matches!(self.services.get(port), Some(Some(s)) if Arc::ptr_eq(&s.handler, &h));
        if current {
            self.handler_cache = Some(h);
        }
    }

    /// Forget the cached handler if it is `h` (its service's port is being freed): the cache
    /// never keeps a removed service's handler alive.
    pub(crate) fn forget_handler(&mut self, h: &Arc<dyn ServiceHandler>) {
        if self
            .handler_cache
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, h))
        {
            self.handler_cache = None;
        }
    }

    /// A bulk request was queued on `port` (local or remote): the master looks at it on its
    /// next round.
    pub(crate) fn mark_bulk_port(&mut self, port: usize) {
        if let Some(w) = self.bulk_ports.get_mut(port / 64) {
            *w |= 1 << (port % 64);
            self.bulks_dirty = true;
        }
    }
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
///     .open_service_wait(ServiceParams::new(fourcc).version(2, 2), std::sync::Arc::new(move |_: &ServiceCtx<'_>, ev: Event<'_>| {
///         if let Event::Message(m) = ev {
///             tx.lock().unwrap().send(m.payload().to_vec()).unwrap();
///         }
///         Deliver::Done
///     }), Duration::from_secs(5))
///     .unwrap();
/// arm.queue_message(h, b"hello").unwrap();
/// assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 5u32.to_le_bytes());
///
/// arm.bulk_receive(h, vec![0; 100], 3, 90, 7, BulkMode::NoCallback).unwrap();
/// // Bounded: `Timeout` after 5 s, waiting the way the pair's `Config::wait` says.
/// let done = arm.wait_bulk(h, 7, Duration::from_secs(5)).unwrap();
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
    /// The poller's scratch buffer; only the [`PollGate`] holder reaches it.
    pub(crate) poll_scratch: GateCell<Vec<u8>>,
    pub(crate) poll_gate: PollGate,
    pub(crate) dead: AtomicBool,
    pub(crate) no_fragments: AtomicBool,
    pub(crate) counters: VchiqCounters,
    /// The clock of the blocking calls' deadlines (see [`Vchiq::wait_until`]).
    pub(crate) clock: Box<dyn Clock + Send + Sync>,
    /// The wakers of pending futures, woken by `poll` (`engine/wakers.rs`).
    pub(crate) wakers: FutureWakers,
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
    /// Test hook: turn fragment use off, to show that the fragment tests detect the resulting
    /// cache-line corruption hazard (the master counts `unaligned_reads`). Never for production.
    #[cfg(feature = "sim")]
    pub(crate) fn set_fragments_enabled_for_test(&self, on: bool) {
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
    pub fn connect(&self) -> Result {
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

    pub(crate) fn check_alive(&self) -> Result {
        // Acquire: pairs with the Release store in `mark_dead`.
        if self.dead.load(Ordering::Acquire) {
            Err(VchiqError::Shutdown)
        } else {
            Ok(())
        }
    }

    // ---- events and doorbells ----

    /// The words of the shared state at `base` (`local_off` or `remote_off`), under one bounds
    /// check for all of its fields; [`Vchiq::event_of`] picks an event out of them.
    pub(crate) fn state_words(&self, base: usize) -> Option<&[core::sync::atomic::AtomicU32]> {
        self.region.words(
            base,
            core::mem::size_of::<crate::wire::layout::SharedState>() / 4,
        )
    }

    /// Event `ev` (an `off::` event offset) of a shared state's words ([`Vchiq::state_words`]):
    /// no further bounds check where `ev` is a constant.
    #[inline]
    pub(crate) fn event_of(
        state: &[core::sync::atomic::AtomicU32],
        ev: usize,
    ) -> Option<EventRef<'_, core::sync::atomic::AtomicU32>> {
        // Both words as one pair: `fired` is the word after `armed` (asserted in
        // `crate::wire::layout`).
        let i = (ev + off::EV_ARMED) / 4;
        match state.get(i..i + 2)? {
            [armed, fired] => Some(EventRef { armed, fired }),
            _ => None,
        }
    }

    /// Event `ev` of the shared state at `base`, for a caller that looks at one event (a poll
    /// round, which looks at four, takes the state's words once: [`Vchiq::state_words`]).
    pub(crate) fn ev_words(
        &self,
        base: usize,
        ev: usize,
    ) -> Option<EventRef<'_, core::sync::atomic::AtomicU32>> {
        Self::event_of(self.state_words(base)?, ev)
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
    /// see `remote_event::disarm`).
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
    /// signal of our trigger, a request at the poll gate, and the platform's `request_poll`
    /// unless a poller holds the gate.
    ///
    /// A poller holding the gate when the request lands runs another round for it, or, stopped
    /// at its budget, calls `request_poll` itself (`PollGate::request`); asking the platform
    /// as well would only wake a worker (on the simulator, a futex system call) for a round
    /// that is already due. That is the common case of a handler queueing a bulk transfer or
    /// a message from its callback, which runs inside `poll`. The round that takes the request
    /// also clears a receive stall (`rx_stalled`), so the kick need not take the lock for it.
    pub fn kick(&self) {
        if let Some(e) = self.ev_words(self.local_off, off::TRIGGER) {
            remote_event::signal_local(e);
        }
        if !self.poll_gate.request() {
            self.platform.request_poll();
        }
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
                g.tx_blocked_any = true;
            }
        }
    }

    /// If transmit resources came back, queue [`Event::TxSpace`] for every service refused
    /// since. Bounded: a refusal arms it once, and only returned resources fire it (a handler
    /// refused again inside its `TxSpace` callback waits for the next real return).
    pub(crate) fn notify_tx_space(g: &mut Inner) {
        if !core::mem::take(&mut g.tx_freed) || !core::mem::take(&mut g.tx_blocked_any) {
            return;
        }
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
        // Pending futures learn it on their next poll.
        self.wakers.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU32;

    /// `event_of` finds each of our four events' `armed` and `fired` words where the wire layout
    /// puts them in a shared state, as `ev_words` does through the region, and nothing outside
    /// the state's words.
    #[test]
    fn event_of_picks_each_events_words_out_of_the_state() {
        let n = core::mem::size_of::<crate::wire::layout::SharedState>() / 4;
        let state: Vec<AtomicU32> = (0..n).map(|i| AtomicU32::new(i as u32)).collect();
        for ev in [
            off::TRIGGER,
            off::RECYCLE,
            off::SYNC_TRIGGER,
            off::SYNC_RELEASE,
        ] {
            let e = Vchiq::event_of(&state, ev).expect("inside the state");
            // Relaxed: a single-threaded test.
            assert_eq!(
                e.armed.load(Ordering::Relaxed) as usize,
                (ev + off::EV_ARMED) / 4
            );
            assert_eq!(
                e.fired.load(Ordering::Relaxed) as usize,
                (ev + off::EV_FIRED) / 4
            );
        }
        // A state cut short before the event's `fired` word.
        let cut = (off::SYNC_RELEASE + off::EV_FIRED) / 4;
        assert!(Vchiq::event_of(&state[..cut], off::SYNC_RELEASE).is_none());
        assert!(Vchiq::event_of(&[], off::TRIGGER).is_none());
    }
}
