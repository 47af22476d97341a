//! The loopback transport (this side).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use fwipc_transport_api::{
    BulkDir, BulkRequest, BulkResult, Caps, Counters, Deadline, Error, Lifecycle, MsgPool,
    Notification, PoolBuf, ProtocolError, Request, Result, Stats, StdClock, Ticket, Token,
    TokenAllocator, Transport, TxOutcome,
};
use spin::Mutex;

use super::dgram_state::DgramState;
use super::wire::{self, ReplyRecord};

/// Transfers in flight at once.
pub const MAX_MSG: usize = 64;
/// Largest payload.
pub const MAX_MSG_SIZE: usize = 256;
const TOKEN_BITS: u32 = 8;
const MAX_BULK: usize = 1 << 20;
const NOTIFY_SLOTS: usize = 32;

/// A request as queued for the remote.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReqRecord {
    pub slot: u32,
    pub token: u32,
    /// The service addressed (the loopback remote runs one echo service and ignores it).
    #[allow(dead_code)]
    pub target: u32,
}

/// A bulk transfer travelling to the remote and back (the buffer moves with it).
pub(crate) struct BulkOp {
    pub token: u32,
    pub dir: BulkDir,
    pub buf: Vec<u8>,
    pub offset: usize,
    pub len: usize,
    pub actual: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Free,
    InFlight,
    Done,
    Failed(Error),
    /// Given up on by the caller while the remote still owns the buffer.
    Abandoned,
    Shut,
}

struct Meta {
    generation: u32,
    state: St,
    token: u32,
    len: usize,
    buf: Option<PoolBuf>,
    waker: Option<Waker>,
    bulk: Option<BulkOp>,
}

/// State shared by the transport and the remote thread.
pub(crate) struct Shared {
    pub pool: MsgPool,
    tokens: TokenAllocator,
    token_map: Box<[AtomicU32]>,
    slots: Box<[Mutex<Meta>]>,
    pub(crate) lc: Lifecycle,
    pub counters: Counters,
    pub requests: Mutex<VecDeque<ReqRecord>>,
    pub replies: Mutex<VecDeque<[u8; 16]>>,
    pub bulk_out: Mutex<VecDeque<BulkOp>>,
    pub bulk_back: Mutex<VecDeque<BulkOp>>,
    pub notes: Mutex<VecDeque<([u8; MAX_MSG_SIZE], usize)>>,
    /// Set when the remote must stop touching shared buffers (shutdown).
    pub dead: AtomicBool,
    /// Held by the remote while it touches a buffer; shutdown takes it to fence the remote out.
    pub remote_lock: Mutex<()>,
    /// Interrupt mode: the remote "raises an interrupt" by calling `process_replies`.
    pub irq: bool,
    pub remote_thread: Mutex<Option<std::thread::Thread>>,
}

/// The loopback transport. Cheap to share across threads (`&self` API).
pub struct LoopbackTransport {
    pub(crate) inner: Arc<Shared>,
    pub(crate) dgram: Arc<DgramState>,
}

impl LoopbackTransport {
    pub(crate) fn new(irq: bool) -> Self {
        let pool = MsgPool::new(MAX_MSG, MAX_MSG_SIZE).expect("static sizes");
        let ntok = 1usize << TOKEN_BITS;
        let slots = (0..MAX_MSG)
            .map(|_| {
                Mutex::new(Meta {
                    generation: 0,
                    state: St::Free,
                    token: 0,
                    len: 0,
                    buf: None,
                    waker: None,
                    bulk: None,
                })
            })
            .collect();
        LoopbackTransport {
            dgram: Arc::new(DgramState::new(MAX_MSG, MAX_MSG_SIZE)),
            inner: Arc::new(Shared {
                pool,
                tokens: TokenAllocator::new(TOKEN_BITS).expect("static width"),
                token_map: (0..ntok).map(|_| AtomicU32::new(0)).collect(),
                slots,
                lc: Lifecycle::new(),
                counters: Counters::default(),
                requests: Mutex::new(VecDeque::with_capacity(MAX_MSG)),
                replies: Mutex::new(VecDeque::with_capacity(4 * MAX_MSG + 64)),
                bulk_out: Mutex::new(VecDeque::with_capacity(MAX_MSG)),
                bulk_back: Mutex::new(VecDeque::with_capacity(MAX_MSG)),
                notes: Mutex::new(VecDeque::with_capacity(NOTIFY_SLOTS)),
                dead: AtomicBool::new(false),
                remote_lock: Mutex::new(()),
                irq,
                remote_thread: Mutex::new(None),
            }),
        }
    }
}

impl Shared {
    fn ring_remote(&self) {
        if let Some(t) = &*self.remote_thread.lock() {
            t.unpark();
        }
    }

    /// Allocate buffer + token and publish the slot as in flight.
    fn start(&self, payload: &[u8]) -> Result<(PoolBuf, Token, u32)> {
        let buf = self
            .pool
            .alloc()
            .inspect_err(|_| Counters::bump(&self.counters.busy))?;
        let token = self
            .tokens
            .alloc()
            .inspect_err(|_| Counters::bump(&self.counters.busy))?;
        buf.write(payload)?;
        let slot = buf.index();
        let generation = {
            let mut m = self.slots[slot as usize].lock();
            m.generation = m.generation.wrapping_add(1);
            m.state = St::InFlight;
            m.token = token.0;
            m.len = 0;
            m.waker = None;
            m.bulk = None;
            m.buf = Some(buf.clone());
            m.generation
        };
        // Release: the slot's metadata (written above under its lock) is complete before a reply
        // handler can find the slot through the map.
        self.token_map[token.0 as usize].store(slot + 1, Ordering::Release);
        Ok((buf, token, generation))
    }

    fn meta(&self, t: &Ticket) -> Result<spin::MutexGuard<'_, Meta>> {
        let m = self
            .slots
            .get(t.slot() as usize)
            .ok_or(Error::InvalidArgument)?
            .lock();
        if m.generation != t.generation() || m.token != t.token() || m.state == St::Free {
            return Err(Error::InvalidArgument);
        }
        Ok(m)
    }

    /// Free a finished slot: token, map entry, local buffer reference.
    fn free(&self, m: &mut Meta) {
        // Release: pairs with the Acquire in `handle_reply`; nothing is published, but the store
        // must not be reordered before our last use of the slot.
        self.token_map[m.token as usize].store(0, Ordering::Release);
        if self.tokens.release(Token(m.token)).is_err() {
            log::error!("loopback: token {} released twice", m.token);
        }
        m.state = St::Free;
        m.buf = None;
        m.waker = None;
        m.bulk = None;
    }

    /// Drain the reply ring (the interrupt handler's work, also run from `poll_done`).
    pub(crate) fn process_replies(&self) {
        loop {
            let rec = self.replies.lock().pop_front();
            let Some(raw) = rec else { break };
            self.handle_reply(&wire::decode(&raw));
        }
        loop {
            let op = self.bulk_back.lock().pop_front();
            let Some(op) = op else { break };
            self.handle_bulk_done(op);
        }
    }

    fn lookup(&self, token: u32) -> Option<u32> {
        // Acquire: pairs with the Release in `start`, so the slot's metadata is visible.
        let s = self.token_map.get(token as usize)?.load(Ordering::Acquire);
        s.checked_sub(1)
    }

    fn handle_reply(&self, r: &ReplyRecord) {
        if r.magic != wire::MAGIC || r.kind != wire::KIND_REPLY {
            Counters::bump(&self.counters.protocol_errors);
            return;
        }
        let Some(slot) = self.lookup(r.token) else {
            Counters::bump(&self.counters.unknown_replies);
            return;
        };
        let mut m = self.slots[slot as usize].lock();
        if m.token != r.token {
            Counters::bump(&self.counters.unknown_replies);
            return;
        }
        match m.state {
            St::InFlight | St::Abandoned => {
                // The reply returns the remote's loan on the buffer.
                if self.pool.reclaim(slot).is_err() {
                    Counters::bump(&self.counters.protocol_errors);
                    return;
                }
                if m.state == St::Abandoned {
                    Counters::bump(&self.counters.late_replies);
                    self.free(&mut m);
                    return;
                }
                if r.len as usize > self.pool.buf_size() {
                    Counters::bump(&self.counters.protocol_errors);
                    m.state = St::Failed(Error::Protocol(ProtocolError::BadLength));
                } else {
                    Counters::bump(&self.counters.completed);
                    m.state = St::Done;
                    m.len = r.len as usize;
                }
                if let Some(w) = m.waker.take() {
                    w.wake();
                }
            }
            St::Done | St::Failed(_) => Counters::bump(&self.counters.duplicate_replies),
            St::Free | St::Shut => Counters::bump(&self.counters.unknown_replies),
        }
    }

    fn handle_bulk_done(&self, op: BulkOp) {
        let Some(slot) = self.lookup(op.token) else {
            Counters::bump(&self.counters.unknown_replies);
            return;
        };
        let mut m = self.slots[slot as usize].lock();
        if self.pool.reclaim(slot).is_err() {
            Counters::bump(&self.counters.protocol_errors);
            return;
        }
        match m.state {
            St::InFlight => {
                Counters::bump(&self.counters.completed);
                m.state = St::Done;
                m.len = op.actual;
                m.bulk = Some(op);
                if let Some(w) = m.waker.take() {
                    w.wake();
                }
            }
            St::Abandoned => {
                Counters::bump(&self.counters.late_replies);
                self.free(&mut m);
            }
            _ => Counters::bump(&self.counters.duplicate_replies),
        }
    }
}

impl Transport for LoopbackTransport {
    fn caps(&self) -> Caps {
        Caps::new(MAX_MSG, MAX_MSG_SIZE)
            .with_bulk(MAX_BULK)
            .with_notifications(true)
            .with_polling(true)
            .with_one_way(true)
            .with_zero_copy(true)
            .with_rx_hold(true)
            .with_endpoints(true)
    }

    fn send(&self, req: &Request<'_>) -> Result<Ticket> {
        let s = &*self.inner;
        let _user = s.lc.acquire()?;
        if req.payload.len() > MAX_MSG_SIZE {
            return Err(Error::TooLarge);
        }
        let (buf, token, generation) = s.start(req.payload)?;
        let slot = buf.lend();
        s.requests.lock().push_back(ReqRecord {
            slot,
            token: token.0,
            target: req.target,
        });
        Counters::bump(&s.counters.sent);
        s.ring_remote();
        Ok(Ticket::new(token.0, slot, generation))
    }

    fn poll_done(&self, ticket: &Ticket) -> Result<bool> {
        let s = &*self.inner;
        s.process_replies();
        let m = s.meta(ticket)?;
        match m.state {
            St::Done | St::Failed(_) => Ok(true),
            St::Shut => Err(Error::Shutdown),
            _ => Ok(false),
        }
    }

    fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize> {
        let m = self.inner.meta(ticket)?;
        match (m.state, &m.buf) {
            (St::Done, Some(buf)) => {
                if m.len > out.len() {
                    return Err(Error::TooLarge);
                }
                buf.with(|d| out[..m.len].copy_from_slice(&d[..m.len]));
                Ok(m.len)
            }
            (St::Failed(e), _) => Err(e),
            (St::Shut, _) => Err(Error::Shutdown),
            _ => Err(Error::InvalidArgument),
        }
    }

    fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome) {
        let s = &*self.inner;
        let Ok(mut m) = s.meta(&ticket) else {
            log::warn!("loopback: mark_txdone on a stale ticket {ticket:?}");
            return;
        };
        match m.state {
            St::InFlight => {
                // The remote still owns the buffer: keep it and the token until it gives them back.
                if outcome == TxOutcome::TimedOut {
                    Counters::bump(&s.counters.timed_out);
                }
                m.state = St::Abandoned;
                m.waker = None;
                m.bulk = None;
            }
            St::Done | St::Failed(_) | St::Shut => s.free(&mut m),
            St::Abandoned | St::Free => {}
        }
    }

    fn register_waker(&self, ticket: &Ticket, waker: &Waker) -> bool {
        if !self.inner.irq {
            return false;
        }
        match self.inner.meta(ticket) {
            Ok(mut m) => {
                if !m.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    m.waker = Some(waker.clone());
                }
                true
            }
            Err(_) => false,
        }
    }

    fn bulk(&self, req: BulkRequest) -> core::result::Result<Ticket, (Error, BulkRequest)> {
        let s = &*self.inner;
        let Ok(_user) = s.lc.acquire() else {
            return Err((Error::Shutdown, req));
        };
        if req.len > MAX_BULK {
            return Err((Error::TooLarge, req));
        }
        if req
            .offset
            .checked_add(req.len)
            .is_none_or(|end| end > req.buf.len())
        {
            return Err((Error::InvalidArgument, req));
        }
        let (buf, token, generation) = match s.start(&[]) {
            Ok(v) => v,
            Err(e) => return Err((e, req)),
        };
        let slot = buf.lend();
        let op = BulkOp {
            token: token.0,
            dir: req.dir,
            buf: req.buf,
            offset: req.offset,
            len: req.len,
            actual: 0,
        };
        s.bulk_out.lock().push_back(op);
        Counters::bump(&s.counters.sent);
        s.ring_remote();
        Ok(Ticket::new(token.0, slot, generation))
    }

    fn take_bulk(&self, ticket: Ticket) -> core::result::Result<BulkResult, (Error, Ticket)> {
        let s = &*self.inner;
        s.process_replies();
        let r = {
            let Ok(mut m) = s.meta(&ticket) else {
                return Err((Error::InvalidArgument, ticket));
            };
            match (m.state, m.bulk.take()) {
                (St::Done, Some(op)) => {
                    s.free(&mut m);
                    Ok(BulkResult {
                        buf: op.buf,
                        actual: op.actual,
                    })
                }
                (St::Shut, _) => Err(Error::Shutdown),
                _ => Err(Error::InvalidArgument),
            }
        };
        r.map_err(|e| (e, ticket))
    }

    fn fetch_notification(&self, out: &mut [u8]) -> Result<Option<Notification>> {
        let mut q = self.inner.notes.lock();
        let Some((data, len)) = q.front() else {
            return Ok(None);
        };
        if *len > out.len() {
            return Err(Error::TooLarge);
        }
        out[..*len].copy_from_slice(&data[..*len]);
        let n = Notification {
            source: 0,
            len: *len,
        };
        q.pop_front();
        Ok(Some(n))
    }

    fn shutdown(&self) -> Result<()> {
        let s = &*self.inner;
        let clock = StdClock::new();
        if s.lc.begin_shutdown() {
            self.dgram.reset();
            {
                // Fence the remote out of the shared buffers, then take back everything it holds
                // (the device-reset step).
                let _fence = s.remote_lock.lock();
                // Release: the remote checks `dead` under `remote_lock`; the lock orders it.
                s.dead.store(true, Ordering::Release);
                s.requests.lock().clear();
                s.replies.lock().clear();
                s.bulk_out.lock().clear();
                s.bulk_back.lock().clear();
            }
            for i in 0..MAX_MSG as u32 {
                while s.pool.remote_holds(i) > 0 {
                    let _ = s.pool.reclaim(i);
                }
            }
            for m in s.slots.iter() {
                let mut m = m.lock();
                match m.state {
                    St::InFlight => {
                        m.state = St::Shut;
                        if let Some(w) = m.waker.take() {
                            w.wake();
                        }
                    }
                    St::Abandoned => s.free(&mut m),
                    _ => {}
                }
            }
            s.ring_remote();
        }
        s.lc.wait_idle(
            &clock,
            Deadline::after(&clock, Duration::from_secs(2)),
            std::thread::yield_now,
        )
    }

    fn stats(&self) -> Stats {
        let s = &*self.inner;
        s.counters.snapshot(s.pool.capacity(), s.pool.free_count())
    }
}
