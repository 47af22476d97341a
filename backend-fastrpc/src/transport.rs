//! [`fwipc_transport_api::Transport`] over a FastRPC session.
//!
//! `Request.target` = `handle << 8 | method` (method ≤ 31; handles < 2^24). A request is one
//! invoke with `sc = MAKEX(0, method, 1, 1, 0, 0)`: in-buffer 0 = the payload, out-buffer 0 =
//! `max_msg_size` bytes; the reply length is the DSP-written `rpra[1].len`, clamped to what was
//! asked. The ticket carries the context slot and the 52-bit generation (high bits in `token`,
//! low bits in `generation`). Each transfer needs one of the session's payload buffers, so
//! `caps.max_msg` is the session's payload count. No bulk, no notifications (FastRPC has no
//! unsolicited AP-bound messages outside reverse RPC).

use alloc::boxed::Box;
use core::task::Waker;
use core::time::Duration;

use fwipc_transport_api::{
    Caps, Clock, Deadline, Error, Request, Result, Stats, Ticket, Transport, TxOutcome,
};

use crate::error::FastRpcError;
use crate::session::{Arg, InvokeTicket, Session};
use crate::wire::{metalen, FASTRPC_ALIGN};

/// The transport.
pub struct FastRpcTransport {
    session: Session,
    max_msg_size: usize,
    clock: Box<dyn Clock + Send + Sync>,
    shutdown_timeout: Duration,
}

/// Compose a target.
pub const fn target(handle: u32, method: u32) -> u32 {
    (handle << 8) | (method & 0xff)
}

fn ticket_of(t: InvokeTicket) -> Ticket {
    Ticket::new(
        (t.generation >> 32) as u32,
        t.idx as u32,
        t.generation as u32,
    )
}

fn invoke_ticket(t: &Ticket) -> InvokeTicket {
    InvokeTicket {
        idx: t.slot() as usize,
        generation: (u64::from(t.token()) << 32) | u64::from(t.generation()),
    }
}

impl FastRpcTransport {
    /// A transport over `session` carrying payloads up to `max_msg_size` bytes. `TooLarge` if
    /// the session's payload buffers cannot hold such a call.
    pub fn new(
        session: Session,
        max_msg_size: usize,
        clock: Box<dyn Clock + Send + Sync>,
    ) -> core::result::Result<Self, FastRpcError> {
        // metalen(2) aligned, then the in copy aligned, then the out area.
        let need = (metalen(2) as u64).div_ceil(FASTRPC_ALIGN) * FASTRPC_ALIGN
            + (max_msg_size as u64).div_ceil(FASTRPC_ALIGN) * FASTRPC_ALIGN
            + max_msg_size as u64;
        let have = session.inner.payloads.region_len() as u64;
        if max_msg_size == 0 || need > have {
            return Err(FastRpcError::TooLarge);
        }
        Ok(FastRpcTransport {
            session,
            max_msg_size,
            clock,
            shutdown_timeout: Duration::from_secs(2),
        })
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl Transport for FastRpcTransport {
    fn caps(&self) -> Caps {
        Caps {
            max_msg: self.session.payload_capacity(),
            max_msg_size: self.max_msg_size,
            bulk: false,
            max_bulk_size: 0,
            notifications: false,
            polling: true,
        }
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
        Ok(ticket_of(t))
    }

    fn poll_done(&self, ticket: &Ticket) -> Result<bool> {
        Ok(self.session.poll(&invoke_ticket(ticket))?)
    }

    fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize> {
        let t = invoke_ticket(ticket);
        self.session.status(&t)?;
        Ok(self.session.read_out(&t, 0, out)?)
    }

    fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome) {
        let t = invoke_ticket(&ticket);
        match outcome {
            TxOutcome::Done => self.session.finish(t),
            TxOutcome::TimedOut | TxOutcome::Cancelled => self.session.abandon(t),
        }
    }

    fn register_waker(&self, ticket: &Ticket, waker: &Waker) -> bool {
        self.session
            .register_waker(&invoke_ticket(ticket), waker)
            .is_ok()
    }

    fn shutdown(&self) -> Result<()> {
        let d = Deadline::after(&*self.clock, self.shutdown_timeout);
        Ok(self.session.shutdown(&*self.clock, d)?)
    }

    fn stats(&self) -> Stats {
        self.session.stats()
    }
}
