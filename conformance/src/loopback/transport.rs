//! The loopback transport (this side).

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use fwipc_transport_api::fixture::{RemoteWake, SlotQueue, TagLog};
use fwipc_transport_api::sync::CachePadded;
use fwipc_transport_api::{
    BulkDir, BulkRequest, BulkResult, Caps, Counters, Deadline, Error, Lifecycle, Notification,
    ProtocolError, Request, Result, Spinners, StartedTransfer, Stats, StdClock, Ticket,
    TransferState, TransferTable, Transport, TxOutcome,
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
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReqRecord {
    pub slot: u32,
    pub token: u32,
    /// The transfer's generation: with `slot` and `token` it names exactly one transfer, so a
    /// record left over from before a remote reset is told apart ([`Shared::lent`]).
    pub generation: u32,
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

/// An empty operation: what a [`SlotQueue`] slot holds when no operation is queued there.
impl Default for BulkOp {
    fn default() -> Self {
        BulkOp {
            token: 0,
            dir: BulkDir::Transmit,
            buf: Vec::new(),
            offset: 0,
            len: 0,
            actual: 0,
        }
    }
}

/// The loopback's part of a transfer's table entry.
#[derive(Default)]
pub(crate) struct Part {
    /// A bulk transfer's buffer, once it is back from the remote.
    bulk: Option<BulkOp>,
}

/// State shared by the transport and the remote thread.
///
/// What one side writes on every round trip is kept off the lines the other side reads
/// (`CachePadded`): the caller's admission count (`lc`), the spinning hint (`spinners`,
/// `irq_paused`) and the remote's lock (`remote_lock`) each have lines of their own, so neither
/// side's write takes a line the other is about to read (docs/benchmarks/changes.md, "The core's
/// written words off the lines the other side reads"). The rest is written rarely or never.
pub(crate) struct Shared {
    /// The transfers.
    pub table: TransferTable<Part>,
    pub(crate) lc: CachePadded<Lifecycle>,
    pub requests: SlotQueue<ReqRecord>,
    pub replies: SlotQueue<[u8; wire::RECORD_SIZE]>,
    pub bulk_out: SlotQueue<BulkOp>,
    pub bulk_back: SlotQueue<BulkOp>,
    /// Bulk transfers sent and not yet taken off `bulk_back`: while 0, `process_replies` does not
    /// lock `bulk_back`. An upper bound (a shutdown drops queued ones without counting down).
    pub(crate) bulks_out: AtomicUsize,
    pub notes: Mutex<VecDeque<([u8; MAX_MSG_SIZE], usize)>>,
    /// Set when the remote must stop touching shared buffers (shutdown).
    pub dead: AtomicBool,
    /// Held by the remote while it touches a buffer; shutdown takes it to fence the remote out.
    /// It also keeps the remote's count and tag log of the requests it took, which every answer
    /// updates while it holds the lock anyway.
    pub remote_lock: CachePadded<Mutex<RemoteLog>>,
    /// Interrupt mode: the remote "raises an interrupt" by calling `process_replies`.
    pub irq: bool,
    /// Callers spinning on their replies now ([`Transport::spinning`]), kept under this lock
    /// with `irq_paused` so two callers' hints cannot pass each other.
    pub(crate) spinners: CachePadded<Mutex<Spinners>>,
    /// Set while a caller spins: the remote raises no interrupt, and the spinners drain the
    /// rings in `poll_done` on their own cores (an interrupt handler on the remote's thread
    /// would complete the transfer there, and the caller's poll would then pull the entry,
    /// the token's and the counters' lines back one by one).
    pub(crate) irq_paused: CachePadded<AtomicBool>,
    /// The remote's thread, set once by the fixture; woken by every send while it may park
    /// ([`RemoteWake`]: no lock, no read-modify-write while the remote spins or is stepped).
    pub remote_wake: RemoteWake,
}

/// The remote's record of the requests it took off the request queue, under
/// [`Shared::remote_lock`].
pub(crate) struct RemoteLog {
    /// Requests taken off the request queue (see `Remote::answer` for when one is counted).
    pub received: u64,
    /// The tags of the echo requests taken.
    pub tags: TagLog,
}

/// The loopback transport. Cheap to share across threads (`&self` API).
pub struct LoopbackTransport {
    pub(crate) inner: Arc<Shared>,
    pub(crate) dgram: Arc<DgramState>,
}

impl LoopbackTransport {
    pub(crate) fn new(irq: bool) -> Self {
        LoopbackTransport {
            dgram: Arc::new(DgramState::new(MAX_MSG, MAX_MSG_SIZE)),
            inner: Arc::new(Shared {
                table: TransferTable::new(MAX_MSG, MAX_MSG_SIZE, TOKEN_BITS).expect("static sizes"),
                lc: CachePadded::new(Lifecycle::new()),
                requests: SlotQueue::with_capacity(MAX_MSG),
                replies: SlotQueue::with_capacity(4 * MAX_MSG + 64),
                bulk_out: SlotQueue::with_capacity(MAX_MSG),
                bulk_back: SlotQueue::with_capacity(MAX_MSG),
                bulks_out: AtomicUsize::new(0),
                notes: Mutex::new(VecDeque::with_capacity(NOTIFY_SLOTS)),
                dead: AtomicBool::new(false),
                remote_lock: CachePadded::new(Mutex::new(RemoteLog {
                    received: 0,
                    tags: TagLog::new(),
                })),
                irq,
                spinners: CachePadded::new(Mutex::new(Spinners::new())),
                irq_paused: CachePadded::new(AtomicBool::new(false)),
                remote_wake: RemoteWake::new(),
            }),
        }
    }
}

impl Shared {
    fn ring_remote(&self) {
        self.remote_wake.wake();
    }

    /// Whether the remote still holds the buffer of the transfer `rec` names (in flight, or
    /// given up on and waiting for its late reply). Called under `remote_lock`, which a remote
    /// reset ([`Shared::remote_reset`]) also holds, so the answer stays true while the remote
    /// touches the buffer.
    pub(crate) fn lent(&self, rec: &ReqRecord) -> bool {
        let t = Ticket::new(rec.token, rec.slot, rec.generation);
        matches!(
            self.table.state(&t),
            Ok(TransferState::InFlight | TransferState::Abandoned)
        )
    }

    /// The remote lost its state (a remote reset): it gives every buffer back, as a device
    /// reset does. Under `remote_lock`, so the remote thread is not touching a buffer: the queued
    /// requests, replies and bulk operations are dropped (none may complete a later transfer
    /// that reuses a token), every transfer in flight fails with `Cancelled` (its waiter is woken
    /// at once), every abandoned one is freed; the channel stays up and later calls go through.
    pub(crate) fn remote_reset(&self) {
        let _fence = self.remote_lock.lock();
        self.requests.clear();
        self.replies.clear();
        self.bulk_out.clear();
        self.bulk_back.clear();
        self.table.fail_all(Error::Cancelled);
    }

    /// The remote's interrupt, raised after it queued a reply or finished a bulk operation:
    /// the handler's work ([`Shared::process_replies`]) in interrupt mode, unless a caller
    /// spins (`irq_paused`), which drains the rings itself.
    pub(crate) fn raise_irq(&self) {
        if !self.irq {
            return;
        }
        // Relaxed: a first look. Not paused (the common case): raise; raising is never wrong.
        if self.irq_paused.load(Ordering::Relaxed) {
            // SeqCst fence: what was just queued is visible before we read the pause again
            // (store, then load; paired with the fence in `spinning` between the last spinner's
            // ending the pause and its drain): either that drain finds what was queued, or we
            // see the pause ended and raise.
            fence(Ordering::SeqCst);
            // Relaxed: ordered by the fence above.
            if self.irq_paused.load(Ordering::Relaxed) {
                return;
            }
        }
        self.process_replies();
    }

    /// Drain the reply ring (the interrupt handler's work, also run from `poll_done`).
    pub(crate) fn process_replies(&self) {
        // One lock per reply; the pop that finds the queue empty takes none (a look at the next
        // slot's stamp). At most a queue's worth per pass, however fast the remote refills it;
        // what is left, and a reply queued after the last look, is the next pass's (the remote's
        // interrupt or the caller's next poll).
        for _ in 0..self.replies.capacity() {
            // Copied out, the slot left unwritten (as the remote's `serve_one`).
            let Some(raw) = self.replies.pop_with(|r| *r) else {
                break;
            };
            self.handle_reply(&wire::decode(&raw));
        }
        // Relaxed: the count only saves a lock. A bulk is counted before it is queued for the
        // remote, so the remote's interrupt (which follows its taking the bulk under the queue's
        // lock) and the sender's own polls see it; another thread's poll that misses a count
        // is only a poll that found nothing.
        if self.bulks_out.load(Ordering::Relaxed) == 0 {
            return;
        }
        for _ in 0..self.bulk_back.capacity() {
            let Some(op) = self.bulk_back.pop() else {
                break;
            };
            // Relaxed: as above; every op on `bulk_back` was counted when it was sent.
            self.bulks_out.fetch_sub(1, Ordering::Relaxed);
            self.handle_bulk_done(op);
        }
    }

    fn handle_reply(&self, r: &ReplyRecord) {
        if r.magic != wire::MAGIC || r.kind != wire::KIND_REPLY {
            Counters::bump(&self.table.counters().protocol_errors);
            return;
        }
        // The remote wrote the reply into the buffer in place; only its length travels here, and
        // the record names that buffer as well as the token: a record whose two names disagree
        // is refused (a wrong token must not complete the transfer that holds it).
        let max = self.table.pool().buf_size();
        self.table.on_reply_named(
            r.token,
            r.slot,
            |_| true,
            |_, _| {
                let len = r.len as usize;
                if len > max {
                    return Err(Error::Protocol(ProtocolError::BadLength));
                }
                Ok(len)
            },
        );
    }

    fn handle_bulk_done(&self, op: BulkOp) {
        self.table.on_reply(
            op.token,
            |_| true,
            |_, part| {
                let actual = op.actual;
                part.bulk = Some(op);
                Ok(actual)
            },
        );
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
        let started = s
            .table
            .start_with(|_, buf| buf.write(req.payload).map(|()| Part { bulk: None }))?;
        // Never full: at most `MAX_MSG` transfers are in flight, one record each.
        let queued = s.requests.push(ReqRecord {
            slot: started.slot,
            token: started.token.0,
            generation: started.generation,
            target: req.target,
        });
        debug_assert!(queued);
        // Counted as sent by the table (`TransferTable::start_with`).
        s.ring_remote();
        Ok(started.ticket())
    }

    fn poll_done(&self, ticket: &Ticket) -> Result<bool> {
        let s = &*self.inner;
        s.process_replies();
        match s.table.state(ticket)? {
            TransferState::Failed(Error::Shutdown) => Err(Error::Shutdown),
            TransferState::Done(_) | TransferState::Failed(_) => Ok(true),
            _ => Ok(false),
        }
    }

    fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize> {
        self.inner.table.fetch(ticket, out)
    }

    fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome) {
        let (token, slot) = (ticket.token(), ticket.slot());
        if self.inner.table.finish(ticket, outcome).is_err() {
            log::warn!("loopback: mark_txdone on a stale ticket (token {token}, slot {slot})");
        }
    }

    fn register_waker(&self, ticket: &Ticket, waker: &Waker) -> bool {
        if !self.inner.irq {
            return false;
        }
        self.inner.table.register_waker(ticket, waker)
    }

    /// While any caller spins, the remote raises no interrupt (the spinners drain the rings in
    /// `poll_done`, completing every caller's transfer there); when the last one stops, the
    /// interrupt is back and what arrived meanwhile, which raised none, is drained here.
    fn spinning(&self, _ticket: &Ticket, on: bool) {
        let s = &*self.inner;
        // Without interrupts the remote raises none anyway.
        if !s.irq {
            return;
        }
        let mut spinners = s.spinners.lock();
        if on {
            if spinners.enter() {
                // Relaxed: a hint; an interrupt raised before the remote sees it costs a drain.
                s.irq_paused.store(true, Ordering::Relaxed);
            }
            return;
        }
        let last = spinners.leave();
        if last {
            // Relaxed, then a SeqCst fence: the pause's end is visible before the drain below
            // looks at the ring (pairs with the fence in `Shared::raise_irq`).
            s.irq_paused.store(false, Ordering::Relaxed);
            fence(Ordering::SeqCst);
        }
        drop(spinners);
        if last {
            s.process_replies();
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
        let started: StartedTransfer = match s.table.start(&[], Part::default()) {
            Ok(v) => v,
            Err(e) => return Err((e, req)),
        };
        let op = BulkOp {
            token: started.token.0,
            dir: req.dir,
            buf: req.buf,
            offset: req.offset,
            len: req.len,
            actual: 0,
        };
        // Relaxed: see `process_replies`; counted before the remote can see the bulk.
        s.bulks_out.fetch_add(1, Ordering::Relaxed);
        // Never full: as `requests` in `send`.
        let queued = s.bulk_out.push(op);
        debug_assert!(queued);
        s.ring_remote();
        Ok(started.ticket())
    }

    fn take_bulk(&self, ticket: Ticket) -> core::result::Result<BulkResult, (Error, Ticket)> {
        let s = &*self.inner;
        s.process_replies();
        let r = s
            .table
            .take(&ticket, |state, part| match (state, part.bulk.take()) {
                (TransferState::Done(_), Some(op)) => Ok(BulkResult {
                    buf: op.buf,
                    actual: op.actual,
                }),
                (TransferState::Failed(Error::Shutdown), _) => Err(Error::Shutdown),
                _ => Err(Error::InvalidArgument),
            });
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
        let began = s.lc.begin_shutdown();
        if began {
            self.dgram.reset();
            {
                // Fence the remote out of the shared buffers, then take back everything it holds
                // (the device-reset step).
                let _fence = s.remote_lock.lock();
                // Release: the remote checks `dead` under `remote_lock`; the lock orders it.
                s.dead.store(true, Ordering::Release);
                s.requests.clear();
                s.replies.clear();
                s.bulk_out.clear();
                s.bulk_back.clear();
            }
            s.ring_remote();
        }
        let deadline = Deadline::after(&clock, Duration::from_secs(2));
        let wait = fwipc_transport_api::Wait::SpinThenYield {
            spins: 0,
            relax: &fwipc_transport_api::yield_now,
        };
        if !began {
            return s.lc.wait_idle(&clock, deadline, wait);
        }
        // Every loan is a transfer's: in-flight ones end with Shutdown (before and after the
        // wait for users), abandoned ones are freed.
        s.lc.drain(&clock, deadline, wait, || s.table.fail_all(Error::Shutdown))
    }

    fn stats(&self) -> Stats {
        let s = &*self.inner;
        s.table.stats()
    }
}
