//! A direct-call [`Transport`] onto a [`PlatformModel`]: `send` runs the platform's command
//! handler at once. For protocol-layer tests and examples without the virtio machinery; it does
//! what the transport contract asks of the real one (header + token, reply matched on token +
//! protocol + message id + type, status split off, P2A via `fetch_notification`) and has knobs
//! to misbehave.
//!
//! Its transfers are on the shared per-transfer state machine,
//! [`fwipc_transport_api::TransferTable`], like every backend's: SCMI's 10-bit tokens
//! ([`TOKEN_MASK`]) with their quarantine, one pool buffer per transfer (the platform writes its
//! reply there), the states, the late replies and the counters. What is its own: the request
//! "wire" the platform reads, the replies held back by [`DirectTransport::set_hold`] (a held
//! reply keeps its transfer's buffer and token until [`DirectTransport::release`] delivers it,
//! or drops it as late when the caller gave up), and the [`ReplyFault`] knobs. A transfer whose
//! reply the platform dropped, or which got a reply naming another transfer, waits until its
//! caller gives up; the platform holds nothing of it then, so it ends there.
//!
//! Not a production transport: everything happens under one lock (the table is
//! [`Exclusive`], behind it).

use alloc::vec;
use alloc::vec::Vec;

use fwipc_transport_api::{
    Caps, Counters, Error, Exclusive, Notification, ProtocolError, Request, Result,
    StartedTransfer, Stats, Ticket, Token, TransferState, TransferTable, Transport, TxOutcome,
};

use super::{Platform, PlatformModel};
use crate::header::{split_target, Header, HEADER_LEN, TOKEN_MASK};

/// Width of SCMI's token (the table's token space).
const TOKEN_BITS: u32 = TOKEN_MASK.count_ones();
/// What a reply carries before its return values: header and status.
const REPLY_HEAD: usize = 8;

/// What the direct transport does to replies, to test the agent against a hostile platform.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ReplyFault {
    /// Deliver as the platform wrote it.
    #[default]
    None,
    /// Keep the header and a SUCCESS status, replace the return values with these bytes.
    ReturnValues(Vec<u8>),
    /// Change the reply's message id (the transport must drop it: the call then times out).
    WrongMessageId,
    /// Change the reply's token.
    WrongToken,
    /// Never answer.
    Drop,
}

/// What became of the platform's answer to one command.
enum Answer {
    /// A reply for this transfer, of this many bytes (in its buffer).
    Reply(usize),
    /// No reply (the platform stays silent).
    Silent,
    /// A reply that does not name this transfer, with its header word (dropped and counted).
    Mismatch(u32),
}

struct Inner<P> {
    platform: P,
    /// The transfers; a reply is written into its transfer's buffer.
    table: TransferTable<(), Exclusive>,
    /// Replies held back by the `hold` knob, by token with their length (at most one per
    /// transfer: reserved at setup for every entry).
    held: Vec<(u32, usize)>,
    hold: bool,
    fault: ReplyFault,
    shutdown: bool,
    /// The request as it goes on the wire (header + payload), for the platform to read.
    req: Vec<u8>,
}

/// The direct-call transport. `max_msg_size` bounds request parameters and reply return values
/// (the platform gets `8 + max_msg_size` writable bytes, like Linux's 136-byte buffers).
pub struct DirectTransport<P: PlatformModel = Platform> {
    inner: spin::Mutex<Inner<P>>,
    max_msg: usize,
    max_msg_size: usize,
}

impl<P: PlatformModel> DirectTransport<P> {
    /// Over `platform`, 16 slots of 128 bytes.
    pub fn new(platform: P) -> Self {
        Self::with_sizes(platform, 16, 128)
    }

    /// Over `platform`, with `max_msg` slots (1 to 1024, SCMI's token space) of `max_msg_size`
    /// bytes.
    pub fn with_sizes(platform: P, max_msg: usize, max_msg_size: usize) -> Self {
        let max_msg = max_msg.clamp(1, 1 << TOKEN_BITS);
        let buf_size = max_msg_size.saturating_add(REPLY_HEAD);
        DirectTransport {
            inner: spin::Mutex::new(Inner {
                platform,
                // Cannot fail: 1 to 1024 entries of at least 8 bytes, 1024 tokens.
                table: TransferTable::new(max_msg, buf_size, TOKEN_BITS)
                    .expect("direct transport: sizes within the table's limits"),
                held: Vec::with_capacity(max_msg),
                hold: false,
                fault: ReplyFault::None,
                shutdown: false,
                req: vec![0; max_msg_size.saturating_add(HEADER_LEN)],
            }),
            max_msg,
            max_msg_size,
        }
    }

    /// Run `f` on the platform (knobs, inspection).
    pub fn with_platform<R>(&self, f: impl FnOnce(&mut P) -> R) -> R {
        f(&mut self.inner.lock().platform)
    }

    /// Hold replies (transfers stay pending) until [`DirectTransport::release`].
    pub fn set_hold(&self, hold: bool) {
        self.inner.lock().hold = hold;
    }

    /// Deliver held replies (those whose transfer was abandoned are dropped and counted late;
    /// their buffer and token are free again).
    pub fn release(&self) {
        let mut g = self.inner.lock();
        let Inner { table, held, .. } = &mut *g;
        for (token, len) in held.drain(..) {
            // The table decides: a transfer still waiting completes, an abandoned one's reply
            // is late (counted) and its entry freed.
            table.on_reply(token, |_| true, |_, _| Ok(len));
        }
        g.hold = false;
    }

    /// Set the reply fault for requests sent from now on.
    pub fn set_fault(&self, fault: ReplyFault) {
        self.inner.lock().fault = fault;
    }
}

/// Apply `fault` to the platform's reply (`len` bytes of `reply`) to the command `header`, then
/// check it the way a transport must: length, header, identity.
fn answer(fault: &ReplyFault, header: Header, reply: &mut [u8], len: usize) -> Answer {
    let mut len = len.min(reply.len());
    match fault {
        ReplyFault::None => {}
        ReplyFault::Drop => len = 0,
        ReplyFault::WrongMessageId => {
            if let Some(b) = reply.first_mut() {
                *b = b.wrapping_add(1);
            }
        }
        ReplyFault::WrongToken => {
            let h = Header {
                token: header.token.wrapping_add(1) & TOKEN_MASK,
                ..header
            };
            if let Some(b) = reply.get_mut(..HEADER_LEN) {
                b.copy_from_slice(&h.to_le_bytes());
            }
        }
        ReplyFault::ReturnValues(v) => {
            let end = REPLY_HEAD.saturating_add(v.len()).min(reply.len());
            if let Some((head, values)) = reply
                .get_mut(..end)
                .and_then(|r| r.split_first_chunk_mut::<REPLY_HEAD>())
            {
                head[..HEADER_LEN].copy_from_slice(&header.to_le_bytes());
                head[HEADER_LEN..].copy_from_slice(&0i32.to_le_bytes());
                values.copy_from_slice(v.get(..values.len()).unwrap_or(&[]));
                len = end;
            }
        }
    }
    if len == 0 {
        return Answer::Silent;
    }
    let reply = reply.get(..len).unwrap_or(&[]);
    match Header::decode_bytes(reply) {
        Ok(h) if h == header && len >= REPLY_HEAD => Answer::Reply(len),
        _ => Answer::Mismatch(reply.first_chunk().map_or(0, |w| u32::from_le_bytes(*w))),
    }
}

impl<P: PlatformModel> Transport for DirectTransport<P> {
    fn caps(&self) -> Caps {
        Caps::new(self.max_msg, self.max_msg_size)
            .with_notifications(true)
            .with_polling(true)
    }

    fn send(&self, req: &Request<'_>) -> Result<Ticket> {
        let (protocol, message) = split_target(req.target).ok_or(Error::InvalidArgument)?;
        if req.payload.len() > self.max_msg_size {
            return Err(Error::TooLarge);
        }
        let mut g = self.inner.lock();
        let Inner {
            platform,
            table,
            held,
            hold,
            fault,
            shutdown,
            req: wire,
        } = &mut *g;
        if *shutdown {
            return Err(Error::Shutdown);
        }
        let n = HEADER_LEN + req.payload.len();
        let Some((hdr, body)) = wire
            .get_mut(..n)
            .and_then(|w| w.split_first_chunk_mut::<HEADER_LEN>())
        else {
            return Err(Error::TooLarge);
        };
        body.copy_from_slice(req.payload);
        // Buffer and token from the table (`Busy`, counted, when either runs out); the token
        // goes in the header.
        let mut header = Header::command(protocol, message, 0);
        let started = table.start_with(|token, _| {
            // Below 2^10: the table's tokens are TOKEN_BITS wide.
            header = Header::command(protocol, message, token.0 as u16);
            Ok(())
        })?;
        *hdr = header.to_le_bytes();
        let ticket = started.ticket();
        let wire = wire.get(..n).unwrap_or(&[]);
        // The platform reads the request and writes its reply into the transfer's buffer.
        let answered = table.inspect(&ticket, |_, buf, _| {
            buf.with_mut(|reply| {
                let len = platform.handle_command(wire, reply);
                answer(fault, header, reply, len)
            })
        });
        let answered = match answered {
            Ok(a) => a,
            Err(e) => {
                table.abort(started);
                return Err(e);
            }
        };
        // Counted as sent by the table (`TransferTable::start_with`; `abort` above takes it off).
        let counters = table.counters();
        match answered {
            Answer::Silent => {}
            Answer::Mismatch(word) => {
                log::warn!("direct transport: reply {word:#x} does not match {header:?}, dropped");
                Counters::bump(&counters.unknown_replies);
            }
            // Never beyond the capacity reserved: one held reply per live transfer.
            Answer::Reply(len) if *hold => held.push((started.token.0, len)),
            Answer::Reply(len) => {
                table.on_reply(started.token.0, |_| true, |_, _| Ok(len));
            }
        }
        Ok(ticket)
    }

    fn poll_done(&self, ticket: &Ticket) -> Result<bool> {
        let g = self.inner.lock();
        if g.shutdown {
            return Err(Error::Shutdown);
        }
        g.table.poll(ticket)
    }

    fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize> {
        let g = self.inner.lock();
        g.table.inspect(ticket, |state, buf, _| {
            let TransferState::Done(len) = state else {
                return Err(Error::InvalidArgument);
            };
            buf.with(|b| {
                let reply = b.get(..len).unwrap_or(&[]);
                let Some((head, values)) = reply.split_first_chunk::<REPLY_HEAD>() else {
                    return Err(Error::Protocol(ProtocolError::Truncated));
                };
                let status = i32::from_le_bytes([head[4], head[5], head[6], head[7]]);
                if status != 0 {
                    return Err(Error::Remote(status));
                }
                let dst = out.get_mut(..values.len()).ok_or(Error::TooLarge)?;
                dst.copy_from_slice(values);
                Ok(values.len())
            })
        })?
    }

    fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome) {
        let mut g = self.inner.lock();
        let Inner { table, held, .. } = &mut *g;
        // Still waiting with no reply held back: the platform dropped it or answered another
        // transfer, and holds nothing of this one.
        let unanswered = table.state(&ticket) == Ok(TransferState::InFlight)
            && !held.iter().any(|&(t, _)| t == ticket.token());
        let started = StartedTransfer {
            token: Token(ticket.token()),
            slot: ticket.slot(),
            generation: ticket.generation(),
        };
        // A held reply's transfer is abandoned: buffer and token stay reserved until `release`.
        if table.finish(ticket, outcome).is_err() {
            log::warn!("direct transport: mark_txdone on a stale ticket {started:?}");
            return;
        }
        if unanswered {
            // Abandoned by `finish` (timed out counted), and no reply can come: free it.
            table.abort(started);
        }
    }

    fn fetch_notification(&self, out: &mut [u8]) -> Result<Option<Notification>> {
        let mut g = self.inner.lock();
        if g.shutdown {
            return Err(Error::Shutdown);
        }
        let Inner {
            platform, table, ..
        } = &mut *g;
        let mut buf = [0u8; 4 + 512];
        loop {
            let Some(n) = platform.next_p2a(&mut buf) else {
                return Ok(None);
            };
            let msg = buf.get(..n.min(buf.len())).unwrap_or(&[]);
            let Some((h, body)) = msg.split_first_chunk::<4>() else {
                Counters::bump(&table.counters().protocol_errors);
                continue;
            };
            let dst = out.get_mut(..body.len()).ok_or(Error::TooLarge)?;
            dst.copy_from_slice(body);
            return Ok(Some(Notification {
                source: u32::from_le_bytes(*h),
                len: body.len(),
            }));
        }
    }

    fn shutdown(&self) -> Result<()> {
        let mut g = self.inner.lock();
        g.shutdown = true;
        // The platform is gone: its held replies with it; every transfer in flight fails,
        // every abandoned one is freed.
        g.held.clear();
        g.table.fail_all(Error::Shutdown);
        Ok(())
    }

    fn stats(&self) -> Stats {
        self.inner.lock().table.stats()
    }
}

#[cfg(test)]
mod tests;
