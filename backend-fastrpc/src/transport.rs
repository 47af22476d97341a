//! [`fwipc_transport_api::Transport`] over a FastRPC session.
//!
//! `Request.target` = `handle << 8 | method` (method ≤ 31; handles < 2^24). A request is one
//! invoke with `sc = MAKEX(0, method, 1, 1, 0, 0)`: in-buffer 0 = the payload, out-buffer 0 =
//! `max_msg_size` bytes; the reply length is the DSP-written `rpra[1].len`; one longer than
//! asked fails the transfer with `Protocol(BadLength)`. The ticket carries the context slot and the 52-bit generation (high bits in `token`,
//! low bits in `generation`). Each transfer needs one of the session's payload buffers, so
//! `caps.max_msg` is the session's payload count.
//!
//! Bulk is the dma-buf path: data travels in a shared buffer (preallocated staging, sent by page,
//! never copied into the payload). Transmit = method [`BULK_PUT`] on the target's handle with
//! in-buffer 0 in the staging buffer; receive = method [`BULK_GET`] with in-buffer 0 = u32
//! length and out-buffer 0 in the staging buffer (the DSP's written length is the actual
//! count). A staging buffer is reused only once no context references it any more (a timed-out
//! bulk keeps it). No notifications (FastRPC has no unsolicited AP-bound messages outside
//! reverse RPC).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::Waker;

use spin::Mutex;

use fwipc_transport_api::{
    BulkDir, BulkRequest, BulkResult, Caps, Error, Request, Result, Stats, Ticket, Transport,
    TxOutcome,
};

use crate::mem::SharedBuf;

use crate::error::FastRpcError;
use crate::session::{Arg, InvokeTicket, Session};
use crate::wire::{metalen, FASTRPC_ALIGN};

/// Bulk transmit method (on the target's handle).
pub(crate) const BULK_PUT: u32 = 3;
/// Bulk receive method (on the target's handle).
pub(crate) const BULK_GET: u32 = 4;
/// Staging buffers (bulk transfers in flight at once).
pub(crate) const BULK_STAGING: usize = 2;
/// Size of each staging buffer (`caps.max_bulk_size`).
pub(crate) const BULK_MAX: usize = 16 * 1024;

struct BulkState {
    idx: usize,
    generation: u64,
    dir: BulkDir,
    buf: Vec<u8>,
    offset: usize,
    len: usize,
    staging: usize,
}

/// The transport.
pub struct FastRpcTransport {
    session: Session,
    max_msg_size: usize,
    staging: Vec<SharedBuf>,
    bulks: Mutex<Vec<Option<BulkState>>>,
    /// How many entries of `bulks` are `Some`; changed only under its lock (`put_bulk`,
    /// `take_bulk_state`), read without it by `mark_txdone`, so an ordinary call's end does not
    /// take the bulk lock.
    bulks_live: AtomicUsize,
}

/// Compose a target.
pub const fn target(handle: u32, method: u32) -> u32 {
    (handle << 8) | (method & 0xff)
}

impl FastRpcTransport {
    /// A transport over `session` carrying payloads up to `max_msg_size` bytes. `TooLarge` if
    /// the session's payload buffers cannot hold such a call.
    pub fn new(session: Session, max_msg_size: usize) -> core::result::Result<Self, FastRpcError> {
        // metalen(2) aligned, then the in copy aligned, then the out area.
        let need = (metalen(2) as u64).div_ceil(FASTRPC_ALIGN) * FASTRPC_ALIGN
            + (max_msg_size as u64).div_ceil(FASTRPC_ALIGN) * FASTRPC_ALIGN
            + max_msg_size as u64;
        let have = session.inner.payloads.region_len() as u64;
        if max_msg_size == 0 || need > have {
            return Err(FastRpcError::TooLarge);
        }
        let mut staging = Vec::with_capacity(BULK_STAGING);
        for _ in 0..BULK_STAGING {
            staging.push(session.alloc_shared(BULK_MAX)?);
        }
        Ok(FastRpcTransport {
            session,
            max_msg_size,
            staging,
            bulks: Mutex::new((0..BULK_STAGING).map(|_| None).collect()),
            bulks_live: AtomicUsize::new(0),
        })
    }

    fn take_bulk_state(&self, t: &InvokeTicket) -> Option<BulkState> {
        let mut b = self.bulks.lock();
        let pos = b.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| s.idx == t.idx && s.generation == t.generation)
        })?;
        // Relaxed: changed under the bulk lock only; see `mark_txdone` for the reader.
        self.bulks_live.fetch_sub(1, Ordering::Relaxed);
        b[pos].take()
    }

    /// Set bulk slot `k` (under the bulk lock), keeping `bulks_live` in step.
    fn put_bulk(&self, k: usize, st: Option<BulkState>) {
        let mut b = self.bulks.lock();
        // Relaxed: changed under the bulk lock only; see `mark_txdone` for the reader.
        match (b[k].is_some(), st.is_some()) {
            (false, true) => self.bulks_live.fetch_add(1, Ordering::Relaxed),
            (true, false) => self.bulks_live.fetch_sub(1, Ordering::Relaxed),
            _ => 0,
        };
        b[k] = st;
    }

    fn start_bulk(&self, req: &BulkRequest, k: usize) -> Result<InvokeTicket> {
        let handle = req.target >> 8;
        let stage = &self.staging[k];
        match req.dir {
            BulkDir::Transmit => {
                stage.write(0, &req.buf[req.offset..req.offset + req.len])?;
                let args = [Arg::InShared {
                    buf: stage,
                    offset: 0,
                    len: req.len,
                }];
                Ok(self.session.start(handle, BULK_PUT, &args, 0)?)
            }
            BulkDir::Receive => {
                let len = (req.len as u32).to_le_bytes();
                let args = [
                    Arg::In(&len),
                    Arg::OutShared {
                        buf: stage,
                        offset: 0,
                        len: req.len,
                    },
                ];
                Ok(self.session.start(handle, BULK_GET, &args, 0)?)
            }
        }
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl Transport for FastRpcTransport {
    fn caps(&self) -> Caps {
        // FastRPC is remote procedure calls only: no one-way messages, endpoints or held
        // receive buffers (docs/datagram.md).
        Caps::new(self.session.payload_capacity(), self.max_msg_size)
            .with_bulk(BULK_MAX)
            .with_polling(true)
    }

    fn send(&self, req: &Request<'_>) -> Result<Ticket> {
        if req.payload.len() > self.max_msg_size {
            return Err(Error::TooLarge);
        }
        let (handle, method) = (req.target >> 8, req.target & 0xff);
        let p = req.payload;
        let args = [
            Arg::In(p),
            Arg::OutLen {
                addr: p.as_ptr() as u64 + p.len() as u64,
                len: self.max_msg_size,
            },
        ];
        let t = self.session.start(handle, method, &args, 0)?;
        Ok(t.to_ticket())
    }

    fn poll_done(&self, ticket: &Ticket) -> Result<bool> {
        Ok(self.session.poll(&InvokeTicket::from_ticket(ticket))?)
    }

    fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize> {
        let t = InvokeTicket::from_ticket(ticket);
        Ok(self.session.status_and_read_out(&t, 0, out)?)
    }

    fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome) {
        let t = InvokeTicket::from_ticket(&ticket);
        // A bulk ended without take_bulk: its buffer goes; the staging buffer stays referenced
        // by the context until the DSP is done with it. Relaxed: if `t` is a bulk, the `bulk`
        // call that made it raised the count before returning it, which happens-before this
        // call (the ticket reached us), and only `t`'s own end lowers it again, so the load
        // reads at least 1. Zero means no bulk is live and `t` is an ordinary call.
        if self.bulks_live.load(Ordering::Relaxed) != 0 {
            drop(self.take_bulk_state(&t));
        }
        self.session.end(t, outcome);
    }

    fn bulk(&self, req: BulkRequest) -> core::result::Result<Ticket, (Error, BulkRequest)> {
        if req.len > BULK_MAX {
            return Err((Error::TooLarge, req));
        }
        if req
            .offset
            .checked_add(req.len)
            .is_none_or(|e| e > req.buf.len())
        {
            return Err((Error::InvalidArgument, req));
        }
        let k = {
            let b = self.bulks.lock();
            // Free: no bulk state, and no context still holding the staging buffer.
            (0..BULK_STAGING).find(|&k| b[k].is_none() && self.staging[k].refs() == 1)
        };
        let Some(k) = k else {
            return Err((Error::Busy, req));
        };
        // Reserve the slot before starting, so a concurrent bulk cannot take it.
        self.put_bulk(
            k,
            Some(BulkState {
                idx: usize::MAX,
                generation: u64::MAX,
                dir: req.dir,
                buf: Vec::new(),
                offset: 0,
                len: 0,
                staging: k,
            }),
        );
        match self.start_bulk(&req, k) {
            Ok(t) => {
                self.put_bulk(
                    k,
                    Some(BulkState {
                        idx: t.idx,
                        generation: t.generation,
                        dir: req.dir,
                        buf: req.buf,
                        offset: req.offset,
                        len: req.len,
                        staging: k,
                    }),
                );
                Ok(t.to_ticket())
            }
            Err(e) => {
                self.put_bulk(k, None);
                Err((e, req))
            }
        }
    }

    fn take_bulk(&self, ticket: Ticket) -> core::result::Result<BulkResult, (Error, Ticket)> {
        let t = InvokeTicket::from_ticket(&ticket);
        match self.session.poll(&t) {
            Ok(true) => {}
            Ok(false) => return Err((Error::Busy, ticket)),
            Err(e) => return Err((e.into(), ticket)),
        }
        if let Err(e) = self.session.status(&t) {
            return Err((e.into(), ticket));
        }
        let Some(mut st) = self.take_bulk_state(&t) else {
            return Err((Error::InvalidArgument, ticket));
        };
        let actual = match st.dir {
            BulkDir::Transmit => st.len,
            BulkDir::Receive => match self.session.read_out(&t, 0, &mut []) {
                Ok(n) => {
                    let dst = &mut st.buf[st.offset..st.offset + n];
                    if let Err(e) = self.staging[st.staging].read(0, dst) {
                        let k = st.staging;
                        self.put_bulk(k, Some(st));
                        return Err((e.into(), ticket));
                    }
                    n
                }
                Err(e) => {
                    let k = st.staging;
                    self.put_bulk(k, Some(st));
                    return Err((e.into(), ticket));
                }
            },
        };
        self.session.finish(t);
        Ok(BulkResult {
            buf: st.buf,
            actual,
        })
    }

    fn register_waker(&self, ticket: &Ticket, waker: &Waker) -> bool {
        // A pull-style link completes only inside poll_done: the waker would never fire.
        self.session.wakes()
            && self
                .session
                .register_waker(&InvokeTicket::from_ticket(ticket), waker)
                .is_ok()
    }

    fn shutdown(&self) -> Result<()> {
        // Shutdown waits as the session's blocking calls do.
        Ok(self.session.shutdown(self.session.call_wait().deadline())?)
    }

    fn stats(&self) -> Stats {
        self.session.stats()
    }
}
