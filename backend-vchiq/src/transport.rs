//! [`VchiqTransport`]: the fwipc [`Transport`] over one open VCHIQ service.
//!
//! - `Request.target` / `BulkRequest.target` = the service's fourcc (stable across a re-open).
//! - Each request is one DATA message framed by [`crate::wire::frame`] (`{token, len}`); the reply
//!   carries the token back. The token names the transfer by its table token and by its buffer
//!   ([`frame::request_token`]); a reply whose two names disagree is refused. Remote-initiated
//!   messages (token bit 31) are notifications.
//! - `bulk()`/`take_bulk()` map to VCHIQ bulk transmit/receive (callback mode).
//! - A request's pool buffer is *lent* to the remote when sent and reclaimed when its reply
//!   arrives (or the service closes): a timed-out transfer keeps its buffer and token until the late
//!   reply, which is then dropped and counted.
//! - If the remote closes the service (reset), in-flight transfers fail with `Cancelled` and the
//!   transport re-opens the service; sends return `Retry` until it is open again.

use alloc::boxed::Box;
use alloc::sync::{Arc, Weak};
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::Waker;
use core::time::Duration;

use fwipc_transport_api::{
    BulkDir, BulkRequest, BulkResult, Caps, Completion, Counters, Deadline, Error, Lifecycle,
    Notification, Request, Result, Stats, Ticket, TransferTable, Transport, TxOutcome,
};
use zerocopy::IntoBytes;

use crate::engine::service::{
    BulkCompletion, BulkMode, Deliver, Event, ServiceHandle, ServiceParams,
};
use crate::engine::vchiq::{ServiceCtx, ServiceHandler, Vchiq};
use crate::wire::frame::{self, FrameHeader, FRAME_HEADER, MAX_FRAME_PAYLOAD, NOTIFY};

mod datagram;
pub use datagram::{DGRAM_RX_BUFS, SLOT_LOAN_LIFETIME};

const BULK_BIT: u32 = 0x8000_0000;
const N_BULK: usize = 8;
const N_NOTIF: usize = 16;

enum BState {
    Free,
    Pending,
    Done(BulkCompletion),
}

struct BulkSlot {
    state: BState,
    generation: u32,
    waker: Option<Waker>,
}

struct NotifRing {
    bufs: Vec<Box<[u8]>>,
    lens: Vec<usize>,
    head: usize,
    count: usize,
}

struct Shared {
    me: Weak<Shared>,
    params: ServiceParams,
    /// The message transfers (the bulk ones are in `bulks`: their buffers move into the core).
    table: TransferTable<()>,
    bulks: spin::Mutex<Vec<BulkSlot>>,
    notifs: spin::Mutex<NotifRing>,
    lifecycle: Lifecycle,
    handle: AtomicU32,
    /// The datagram endpoint (`transport/datagram.rs`).
    dgram: datagram::DgramSide,
}

/// The fwipc transport over one VCHIQ service.
pub struct VchiqTransport {
    vchiq: Arc<Vchiq>,
    sh: Arc<Shared>,
    completion: Completion,
}

impl core::fmt::Debug for VchiqTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VchiqTransport")
            .field("fourcc", &self.sh.params.fourcc)
            .finish()
    }
}

impl VchiqTransport {
    /// Open `params.fourcc` on a connected instance and wait up to `timeout` for OPENACK
    /// ([`Vchiq::open_service_wait`]: the instance's clock and [`crate::Config::wait`]).
    /// `max_msg` transfers may be in flight.
    pub fn open(
        vchiq: Arc<Vchiq>,
        params: ServiceParams,
        completion: Completion,
        max_msg: usize,
        timeout: Duration,
    ) -> Result<Self> {
        if max_msg > frame::MAX_TRANSFERS {
            return Err(Error::InvalidArgument);
        }
        let table = TransferTable::new(max_msg, MAX_FRAME_PAYLOAD, frame::TOKEN_BITS)?;
        let dgram = datagram::DgramSide::new(params.fourcc, &vchiq)?;
        let sh = Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            params,
            table,
            bulks: spin::Mutex::new(
                (0..N_BULK)
                    .map(|_| BulkSlot {
                        state: BState::Free,
                        generation: 0,
                        waker: None,
                    })
                    .collect(),
            ),
            notifs: spin::Mutex::new(NotifRing {
                bufs: (0..N_NOTIF)
                    .map(|_| vec![0u8; MAX_FRAME_PAYLOAD].into_boxed_slice())
                    .collect(),
                lens: vec![0; N_NOTIF],
                head: 0,
                count: 0,
            }),
            lifecycle: Lifecycle::new(),
            handle: AtomicU32::new(0),
            dgram,
        });
        let h = vchiq.open_service_wait(params, sh.clone(), timeout)?;
        // Relaxed: the handle is a plain value; the service table is guarded by the core's lock.
        sh.handle.store(h.raw(), Ordering::Relaxed);
        Ok(VchiqTransport {
            vchiq,
            sh,
            completion,
        })
    }

    /// The current service handle (changes when the transport re-opens after a remote reset).
    pub fn service(&self) -> ServiceHandle {
        // Relaxed: the handle is a plain value, not a publication; the service table it indexes
        // is guarded by the core's lock, and a stale handle fails there (`Invalid`).
        ServiceHandle::from_raw(self.sh.handle.load(Ordering::Relaxed))
    }

    /// The instance underneath.
    pub fn vchiq(&self) -> &Arc<Vchiq> {
        &self.vchiq
    }

    fn open_handle(&self) -> Result<ServiceHandle> {
        let h = self.service();
        match self.vchiq.open_status(h) {
            Ok(true) => Ok(h),
            // Re-opening after a remote reset: back-pressure, not an error of the caller.
            _ => Err(Error::Retry),
        }
    }

    fn check_target(&self, target: u32) -> Result<()> {
        if target == self.sh.params.fourcc {
            Ok(())
        } else {
            Err(Error::InvalidArgument)
        }
    }
}

impl Shared {
    fn on_reply(&self, msg: &[u8]) {
        // The fuzzed parser (`frame::parse` = `split` + `payload`), in two steps so a reply whose
        // length lies still fails its transfer.
        let Ok((h, rest)) = frame::split(msg) else {
            Counters::bump(&self.table.counters().protocol_errors);
            return;
        };
        let body = frame::payload(&h, rest);
        let word = h.token.get();
        if word & NOTIFY != 0 {
            let Ok(body) = body else {
                Counters::bump(&self.table.counters().protocol_errors);
                return;
            };
            let mut r = self.notifs.lock();
            if r.count == N_NOTIF {
                log::warn!(target: "vchiq", "notification ring full: dropped");
                return;
            }
            let i = (r.head + r.count) % N_NOTIF;
            let n = body.len().min(MAX_FRAME_PAYLOAD);
            r.bufs[i][..n].copy_from_slice(&body[..n]);
            r.lens[i] = n;
            r.count += 1;
            return;
        }
        // A lying length fails the transfer rather than trust either length; a token whose
        // two names disagree completes nothing (counted as a protocol error).
        let (token, slot) = frame::split_request_token(word);
        self.table.on_reply_named(
            token,
            slot,
            |()| true,
            |buf, ()| {
                let body = body.map_err(Error::Protocol)?;
                buf.write(body).map(|()| body.len())
            },
        );
    }

    fn on_bulk(&self, c: BulkCompletion) {
        let idx = (c.tag & 0xFF) as usize;
        let gen = (c.tag >> 8) as u32;
        let mut bs = self.bulks.lock();
        let Some(b) = bs.get_mut(idx) else { return };
        if b.generation != gen || !matches!(b.state, BState::Pending) {
            return;
        }
        b.state = BState::Done(c);
        if let Some(w) = b.waker.take() {
            w.wake();
        }
    }
}

impl ServiceHandler for Shared {
    fn callback(&self, ctx: &ServiceCtx<'_>, event: Event<'_>) -> Deliver {
        match event {
            Event::Message(m) => match self.dgram.offer(ctx.vchiq, &m) {
                Some(d) => return d,
                None => self.on_reply(m.payload()),
            },
            Event::Bulk(c) => self.on_bulk(c),
            Event::Closed => {
                // Relaxed: plain value.
                if ctx.handle.raw() != self.handle.load(Ordering::Relaxed) {
                    return Deliver::Done;
                }
                // Our own shutdown closed it: waiters see Shutdown; otherwise the remote
                // aborted (reset): Cancelled.
                self.table.fail_all(if self.lifecycle.is_shutting_down() {
                    Error::Shutdown
                } else {
                    Error::Cancelled
                });
                let _ = ctx.vchiq.remove_service(ctx.handle);
                if !self.lifecycle.is_shutting_down() {
                    if let Some(me) = self.me.upgrade() {
                        log::info!(target: "vchiq", "transport: service closed by the remote, re-opening");
                        if let Ok(h) = ctx.vchiq.open_service_arc(self.params, me) {
                            self.handle.store(h.raw(), Ordering::Relaxed);
                        }
                    }
                }
            }
            // Busy sends are retried by the caller (`send` maps `Retry` to `Busy`).
            Event::Opened | Event::RemoteBulkPending { .. } | Event::TxSpace => {}
        }
        Deliver::Done
    }
}

impl Transport for VchiqTransport {
    fn caps(&self) -> Caps {
        Caps::new(self.sh.table.pool().capacity(), MAX_FRAME_PAYLOAD)
            .with_bulk(self.vchiq.config().max_bulk_size().min(1 << 20))
            .with_notifications(true)
            .with_polling(true)
            .with_one_way(true)
            .with_zero_copy(true)
            .with_rx_hold(true)
    }

    fn send(&self, req: &Request<'_>) -> Result<Ticket> {
        let _u = self.sh.lifecycle.acquire()?;
        self.check_target(req.target)?;
        if req.payload.len() > MAX_FRAME_PAYLOAD {
            return Err(Error::TooLarge);
        }
        let h = self.open_handle()?;
        // Nothing written into the buffer: the request goes out from the caller's bytes, and the
        // buffer receives the reply.
        let started = self.sh.table.start_with(|_, _| Ok(()))?;
        let hdr = FrameHeader::new(
            frame::request_token(started.token.0, started.slot),
            req.payload.len() as u32,
        );
        match self
            .vchiq
            .queue_message_parts(h, &[hdr.as_bytes(), req.payload])
        {
            // Counted as sent by the table (`TransferTable::start_with`; `abort` below takes
            // it off).
            Ok(()) => Ok(started.ticket()),
            Err(e) => {
                self.sh.table.abort(started);
                Err(e.into())
            }
        }
    }

    fn poll_done(&self, t: &Ticket) -> Result<bool> {
        // Every waiter polls the instance, interrupt-mode ones too: a reply already in the
        // slots completes on the waiter's own context during its spin, without waiting for the
        // bottom half (the worker the doorbell wakes) to be scheduled. `poll` is bounded and
        // safe beside a concurrent one (the poll gate: one runs, the other leaves it a round).
        self.vchiq.poll();
        if t.slot() & BULK_BIT != 0 {
            let bs = self.sh.bulks.lock();
            let b = bs
                .get((t.slot() & !BULK_BIT) as usize)
                .filter(|b| b.generation == t.generation())
                .ok_or(Error::InvalidArgument)?;
            return match &b.state {
                BState::Pending => Ok(false),
                BState::Done(c) if c.result.is_ok() => Ok(true),
                BState::Done(_) => Err(Error::Cancelled),
                BState::Free => Err(Error::InvalidArgument),
            };
        }
        self.sh.table.poll(t)
    }

    fn fetch_response(&self, t: &Ticket, out: &mut [u8]) -> Result<usize> {
        self.sh.table.fetch(t, out)
    }

    fn mark_txdone(&self, t: Ticket, outcome: TxOutcome) {
        // One still in flight keeps its buffer (and token) until the late reply.
        let _ = self.sh.table.finish(t, outcome);
    }

    fn register_waker(&self, t: &Ticket, waker: &Waker) -> bool {
        if self.completion == Completion::Polled {
            return false;
        }
        if t.slot() & BULK_BIT != 0 {
            let mut bs = self.sh.bulks.lock();
            if let Some(b) = bs
                .get_mut((t.slot() & !BULK_BIT) as usize)
                .filter(|b| b.generation == t.generation())
            {
                b.waker = Some(waker.clone());
                return true;
            }
            return false;
        }
        self.sh.table.register_waker(t, waker)
    }

    fn bulk(&self, req: BulkRequest) -> core::result::Result<Ticket, (Error, BulkRequest)> {
        let _u = match self.sh.lifecycle.acquire() {
            Ok(u) => u,
            Err(e) => return Err((e, req)),
        };
        if let Err(e) = self.check_target(req.target) {
            return Err((e, req));
        }
        if req.len > self.caps().max_bulk_size {
            return Err((Error::TooLarge, req));
        }
        let h = match self.open_handle() {
            Ok(h) => h,
            Err(e) => return Err((e, req)),
        };
        let (idx, gen) = {
            let mut bs = self.sh.bulks.lock();
            let Some(idx) = bs.iter().position(|b| matches!(b.state, BState::Free)) else {
                return Err((Error::Busy, req));
            };
            let b = &mut bs[idx];
            b.generation = b.generation.wrapping_add(1) & 0x00FF_FFFF;
            b.state = BState::Pending;
            b.waker = None;
            (idx, b.generation)
        };
        let tag = idx as u64 | ((gen as u64) << 8);
        let BulkRequest {
            target,
            dir,
            buf,
            offset,
            len,
        } = req;
        let r = match dir {
            BulkDir::Transmit => {
                self.vchiq
                    .bulk_transmit(h, buf, offset, len, tag, BulkMode::Callback)
            }
            BulkDir::Receive => {
                self.vchiq
                    .bulk_receive(h, buf, offset, len, tag, BulkMode::Callback)
            }
        };
        match r {
            Ok(()) => Ok(Ticket::new(tag as u32, BULK_BIT | idx as u32, gen)),
            Err((e, buf)) => {
                self.sh.bulks.lock()[idx].state = BState::Free;
                let e = match e {
                    crate::VchiqError::Retry => Error::Busy,
                    e => e.into(),
                };
                Err((
                    e,
                    BulkRequest {
                        target,
                        dir,
                        buf,
                        offset,
                        len,
                    },
                ))
            }
        }
    }

    fn take_bulk(&self, t: Ticket) -> core::result::Result<BulkResult, (Error, Ticket)> {
        if t.slot() & BULK_BIT == 0 {
            return Err((Error::InvalidArgument, t));
        }
        let mut bs = self.sh.bulks.lock();
        let Some(b) = bs
            .get_mut((t.slot() & !BULK_BIT) as usize)
            .filter(|b| b.generation == t.generation())
        else {
            return Err((Error::InvalidArgument, t));
        };
        if !matches!(b.state, BState::Done(_)) {
            return Err((Error::InvalidArgument, t));
        }
        let BState::Done(c) = core::mem::replace(&mut b.state, BState::Free) else {
            return Err((Error::InvalidArgument, t));
        };
        // An aborted transfer gives its buffer back with `actual == 0` (`poll_done` said Cancelled).
        Ok(BulkResult {
            buf: c.buf,
            actual: c.result.unwrap_or(0),
        })
    }

    fn fetch_notification(&self, out: &mut [u8]) -> Result<Option<Notification>> {
        if self.completion == Completion::Polled {
            self.vchiq.poll();
        }
        let mut r = self.sh.notifs.lock();
        if r.count == 0 {
            return Ok(None);
        }
        let i = r.head;
        let len = r.lens[i];
        if out.len() < len {
            return Err(Error::TooLarge);
        }
        out[..len].copy_from_slice(&r.bufs[i][..len]);
        r.head = (r.head + 1) % N_NOTIF;
        r.count -= 1;
        Ok(Some(Notification {
            source: self.sh.params.fourcc,
            len,
        }))
    }

    fn shutdown(&self) -> Result<()> {
        if !self.sh.lifecycle.begin_shutdown() {
            return Ok(());
        }
        // Waiters first learn it is Shutdown (before the close could report Cancelled).
        self.sh.table.fail_all(Error::Shutdown);
        self.dgram_reset();
        // Close the service: the remote aborts our bulks (they come back ABORTED).
        let h = self.service();
        let _ = self.vchiq.remove_service(h);
        // The instance's one waiting loop (pausing as its `Config::wait` says): the deadline is
        // checked before every poll, and each poll is bounded (`POLL_MAX_ROUNDS`,
        // `POLL_MAX_MSGS`), so a hostile VideoCore cannot hold the teardown past it. A timeout
        // here is not an error of the shutdown: what is left is ended below.
        let _ = self.vchiq.wait_until(Duration::from_secs(2), || {
            self.vchiq.service_state(h).is_err().then_some(Ok(()))
        });
        let clock = &*self.vchiq.clock;
        // Whatever is still in flight (a send that raced `begin_shutdown`) ends with Shutdown,
        // before and after the wait for users; every loan comes back. A reply that arrived
        // before shutdown stays fetchable; its buffer goes back to the pool at the caller's
        // `mark_txdone`, as in normal operation.
        self.sh.lifecycle.drain(
            clock,
            Deadline::after(clock, Duration::from_secs(1)),
            fwipc_transport_api::Wait::Poll,
            || self.sh.table.fail_all(Error::Shutdown),
        )
    }

    fn stats(&self) -> Stats {
        let mut s = self.sh.table.stats();
        s.protocol_errors += self.vchiq.stats().protocol_errors;
        s
    }
}

impl Drop for VchiqTransport {
    fn drop(&mut self) {
        let _ = Transport::shutdown(self);
    }
}

#[allow(dead_code)]
const _: () = assert!(FRAME_HEADER == 8);
