//! A direct-call [`Transport`] onto a [`PlatformModel`]: `send` runs the platform's command
//! handler at once on a fixed slot table. For protocol-layer tests and examples without the
//! virtio machinery; it does what the transport contract asks of the real one (header + token,
//! reply matched on token + protocol + message id + type, status split off, P2A via
//! `fetch_notification`) and has knobs to misbehave.
//!
//! Not a production transport: everything happens under one lock.

use alloc::vec;
use alloc::vec::Vec;

use fwipc_transport_api::{
    Caps, Counters, Error, Notification, ProtocolError, Request, Result, Stats, Ticket, Transport,
    TxOutcome,
};

use super::{Platform, PlatformModel};
use crate::header::{split_target, Header, HEADER_LEN, TOKEN_MASK};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Sent, no (valid) reply yet.
    Sent,
    /// Reply ready but held back by the `hold` knob.
    Held,
    Done,
}

struct Slot {
    state: SlotState,
    generation: u32,
    header: Header,
    reply: Vec<u8>,
    reply_len: usize,
}

struct Inner<P> {
    platform: P,
    slots: Vec<Slot>,
    next_token: u16,
    hold: bool,
    fault: ReplyFault,
    shutdown: bool,
    req: Vec<u8>,
}

/// The direct-call transport. `max_msg_size` bounds request parameters and reply return values
/// (the platform gets `8 + max_msg_size` writable bytes, like Linux's 136-byte buffers).
pub struct DirectTransport<P: PlatformModel = Platform> {
    inner: spin::Mutex<Inner<P>>,
    counters: Counters,
    max_msg: usize,
    max_msg_size: usize,
}

impl<P: PlatformModel> DirectTransport<P> {
    /// Over `platform`, 16 slots of 128 bytes.
    pub fn new(platform: P) -> Self {
        Self::with_sizes(platform, 16, 128)
    }

    /// Over `platform`, with `max_msg` slots of `max_msg_size` bytes.
    pub fn with_sizes(platform: P, max_msg: usize, max_msg_size: usize) -> Self {
        let max_msg = max_msg.clamp(1, 1024);
        DirectTransport {
            inner: spin::Mutex::new(Inner {
                platform,
                slots: (0..max_msg)
                    .map(|_| Slot {
                        state: SlotState::Free,
                        generation: 0,
                        header: Header::command(0, 0, 0),
                        reply: vec![0; max_msg_size + 8],
                        reply_len: 0,
                    })
                    .collect(),
                next_token: 0,
                hold: false,
                fault: ReplyFault::None,
                shutdown: false,
                req: vec![0; max_msg_size + HEADER_LEN],
            }),
            counters: Counters::default(),
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

    /// Deliver held replies (those whose transfer was abandoned are dropped and counted late).
    pub fn release(&self) {
        let mut g = self.inner.lock();
        g.hold = false;
        for s in g.slots.iter_mut() {
            if s.state == SlotState::Held {
                s.state = SlotState::Done;
            }
        }
    }

    /// Set the reply fault for requests sent from now on.
    pub fn set_fault(&self, fault: ReplyFault) {
        self.inner.lock().fault = fault;
    }

    fn slot_of<'a>(inner: &'a mut Inner<P>, t: &Ticket) -> Option<&'a mut Slot> {
        let s = inner.slots.get_mut(t.slot() as usize)?;
        (s.generation == t.generation() && s.state != SlotState::Free).then_some(s)
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
        if g.shutdown {
            return Err(Error::Shutdown);
        }
        let Some(idx) = g.slots.iter().position(|s| s.state == SlotState::Free) else {
            Counters::bump(&self.counters.busy);
            return Err(Error::Busy);
        };
        // Next token not used by a live slot (quarantine: a slot is live until mark_txdone).
        let mut token = g.next_token;
        for _ in 0..=TOKEN_MASK {
            let live = g
                .slots
                .iter()
                .any(|s| s.state != SlotState::Free && s.header.token == token);
            if !live {
                break;
            }
            token = (token + 1) & TOKEN_MASK;
        }
        g.next_token = (token + 1) & TOKEN_MASK;
        let header = Header::command(protocol, message, token);
        let inner = &mut *g;
        let n = HEADER_LEN + req.payload.len();
        let Some(dst) = inner.req.get_mut(..n) else {
            return Err(Error::TooLarge);
        };
        let (hdr, body) = dst.split_at_mut(HEADER_LEN);
        hdr.copy_from_slice(&header.to_le_bytes());
        body.copy_from_slice(req.payload);
        let hold = inner.hold;
        let fault = inner.fault.clone();
        let Some(slot) = inner.slots.get_mut(idx) else {
            return Err(Error::Busy);
        };
        slot.generation = slot.generation.wrapping_add(1);
        slot.header = header;
        slot.state = SlotState::Sent;
        let reqb = inner.req.get(..n).unwrap_or(&[]);
        let mut len = inner.platform.handle_command(reqb, &mut slot.reply);
        Counters::bump(&self.counters.sent);
        match &fault {
            ReplyFault::None => {}
            ReplyFault::Drop => len = 0,
            ReplyFault::WrongMessageId => {
                if let Some(b) = slot.reply.get_mut(0) {
                    *b = b.wrapping_add(1);
                }
            }
            ReplyFault::WrongToken => {
                let t = header.token.wrapping_add(1) & TOKEN_MASK;
                let h = Header { token: t, ..header };
                if let Some(b) = slot.reply.get_mut(..4) {
                    b.copy_from_slice(&h.to_le_bytes());
                }
            }
            ReplyFault::ReturnValues(v) => {
                let end = (8 + v.len()).min(slot.reply.len());
                if let Some(dst) = slot.reply.get_mut(..end) {
                    dst[..4].copy_from_slice(&header.to_le_bytes());
                    dst[4..8].copy_from_slice(&0i32.to_le_bytes());
                    let k = end - 8;
                    dst[8..].copy_from_slice(&v[..k]);
                }
                len = end;
            }
        }
        slot.reply_len = len.min(slot.reply.len());
        // Validate the reply the way a transport must: length, header, identity.
        if len == 0 {
            return Ok(Ticket::new(u32::from(token), idx as u32, slot.generation));
        }
        let ok = match Header::decode_bytes(slot.reply.get(..slot.reply_len).unwrap_or(&[])) {
            Ok(h) => h == header && slot.reply_len >= 8,
            Err(_) => false,
        };
        if ok {
            slot.state = if hold {
                SlotState::Held
            } else {
                SlotState::Done
            };
            Counters::bump(&self.counters.completed);
        } else {
            log::warn!("direct transport: reply does not match {header:?}, dropped");
            Counters::bump(&self.counters.unknown_replies);
        }
        Ok(Ticket::new(u32::from(token), idx as u32, slot.generation))
    }

    fn poll_done(&self, ticket: &Ticket) -> Result<bool> {
        let mut g = self.inner.lock();
        if g.shutdown {
            return Err(Error::Shutdown);
        }
        match Self::slot_of(&mut g, ticket) {
            Some(s) => Ok(s.state == SlotState::Done),
            None => Err(Error::InvalidArgument),
        }
    }

    fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize> {
        let mut g = self.inner.lock();
        let s = Self::slot_of(&mut g, ticket).ok_or(Error::InvalidArgument)?;
        if s.state != SlotState::Done {
            return Err(Error::InvalidArgument);
        }
        let reply = s.reply.get(..s.reply_len).unwrap_or(&[]);
        let Some(status) = reply.get(4..8) else {
            return Err(Error::Protocol(ProtocolError::Truncated));
        };
        let status = i32::from_le_bytes([status[0], status[1], status[2], status[3]]);
        if status != 0 {
            return Err(Error::Remote(status));
        }
        let values = reply.get(8..).unwrap_or(&[]);
        let dst = out.get_mut(..values.len()).ok_or(Error::TooLarge)?;
        dst.copy_from_slice(values);
        Ok(values.len())
    }

    fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome) {
        let mut g = self.inner.lock();
        if let Some(s) = Self::slot_of(&mut g, &ticket) {
            if outcome != TxOutcome::Done {
                Counters::bump(&self.counters.timed_out);
                if s.state == SlotState::Held {
                    Counters::bump(&self.counters.late_replies);
                }
            }
            s.state = SlotState::Free;
        }
    }

    fn fetch_notification(&self, out: &mut [u8]) -> Result<Option<Notification>> {
        let mut g = self.inner.lock();
        if g.shutdown {
            return Err(Error::Shutdown);
        }
        let mut buf = [0u8; 4 + 512];
        loop {
            let Some(n) = g.platform.next_p2a(&mut buf) else {
                return Ok(None);
            };
            let msg = buf.get(..n.min(buf.len())).unwrap_or(&[]);
            let Some((h, body)) = msg.split_first_chunk::<4>() else {
                Counters::bump(&self.counters.protocol_errors);
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
        for s in g.slots.iter_mut() {
            s.state = SlotState::Free;
        }
        Ok(())
    }

    fn stats(&self) -> Stats {
        let g = self.inner.lock();
        let free = g
            .slots
            .iter()
            .filter(|s| s.state == SlotState::Free)
            .count();
        self.counters.snapshot(g.slots.len(), free)
    }
}
