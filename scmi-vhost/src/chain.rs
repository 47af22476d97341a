//! One descriptor chain, checked before use: the descriptors are copied out of the ring once
//! (at most [`DESCRIPTORS_MAX`] + 1 of them: the walk stops there), then every question about
//! the chain (its directions, its lengths, whether guest memory holds it) is answered from that
//! private copy, and every access to the buffers goes through `vm-memory`'s bounds-checked
//! `read_slice`/`write_slice`.
//!
//! A command chain is one or more device-readable descriptors (the request: header and
//! parameters) followed by one or more device-writable descriptors (the reply); an event chain
//! is device-writable descriptors only (Virtio 1.2 §2.7.4, §5.17.6).

use std::fmt;

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// Most descriptors a chain may have. The Linux driver and fwipc's agent use two per command
/// and one per event buffer; a few more allow for scattered buffers.
pub const DESCRIPTORS_MAX: usize = 16;
/// Longest request read (header + parameters). The longest SCMI command of the protocols served
/// carries 4 parameter words; anything longer than this is not a message.
pub const REQUEST_MAX: usize = 1024;

/// What is wrong with a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainError {
    /// More than [`DESCRIPTORS_MAX`] descriptors.
    TooManyDescriptors,
    /// A device-readable descriptor after a device-writable one.
    ReadableAfterWritable,
    /// A device-readable descriptor in an event chain.
    ReadableEventBuffer,
    /// No device-readable descriptor: no request.
    NoRequest,
    /// Fewer readable bytes than a message header.
    RequestTooShort,
    /// More readable bytes than [`REQUEST_MAX`].
    RequestTooLong,
    /// No device-writable descriptor.
    NoReplyBuffer,
    /// Less writable space than header + status.
    ReplyTooSmall,
    /// A readable descriptor lies (partly) outside guest memory.
    Unreadable,
    /// A writable descriptor lies (partly) outside guest memory.
    Unwritable,
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChainError::TooManyDescriptors => "more than 16 descriptors",
            ChainError::ReadableAfterWritable => {
                "a device-readable descriptor after a writable one"
            }
            ChainError::ReadableEventBuffer => "a device-readable descriptor in an event buffer",
            ChainError::NoRequest => "no device-readable descriptor",
            ChainError::RequestTooShort => "request shorter than a message header",
            ChainError::RequestTooLong => "request longer than 1024 bytes",
            ChainError::NoReplyBuffer => "no device-writable descriptor",
            ChainError::ReplyTooSmall => "reply buffer smaller than header + status",
            ChainError::Unreadable => "request outside guest memory",
            ChainError::Unwritable => "reply buffer outside guest memory",
        })
    }
}

/// One descriptor, copied out of the ring.
#[derive(Debug, Clone, Copy)]
struct Seg {
    addr: GuestAddress,
    len: u32,
    writable: bool,
}

/// A descriptor chain popped from a queue, copied and classified.
#[derive(Debug)]
pub struct CmdChain {
    /// Head descriptor index (what goes back in the used ring).
    pub head: u16,
    segs: Vec<Seg>,
    too_many: bool,
}

impl CmdChain {
    /// Copy the chain's descriptors (stopping after [`DESCRIPTORS_MAX`] + 1; `virtio-queue`
    /// already stops at the queue size, at a loop and at a bad `next` index).
    pub fn walk<M>(dc: DescriptorChain<M>) -> Self
    where
        M: std::ops::Deref,
        M::Target: GuestMemory,
    {
        let head = dc.head_index();
        let mut segs = Vec::with_capacity(4);
        let mut too_many = false;
        for d in dc {
            if segs.len() == DESCRIPTORS_MAX {
                too_many = true;
                break;
            }
            segs.push(Seg {
                addr: d.addr(),
                len: d.len(),
                writable: d.is_write_only(),
            });
        }
        CmdChain {
            head,
            segs,
            too_many,
        }
    }

    fn readable(&self) -> impl Iterator<Item = &Seg> {
        self.segs.iter().take_while(|s| !s.writable)
    }

    fn writable(&self) -> impl Iterator<Item = &Seg> {
        self.segs.iter().filter(|s| s.writable)
    }

    /// Readable bytes before the first writable descriptor.
    pub fn request_len(&self) -> u64 {
        self.readable().map(|s| u64::from(s.len)).sum()
    }

    /// Writable bytes.
    pub fn reply_room(&self) -> u64 {
        self.writable().map(|s| u64::from(s.len)).sum()
    }

    /// What makes this command chain unusable, before its memory is touched (lengths and
    /// directions). The reply buffer's size is checked by the caller.
    pub fn problem(&self) -> Option<ChainError> {
        if self.too_many {
            return Some(ChainError::TooManyDescriptors);
        }
        let first_w = self.segs.iter().position(|s| s.writable);
        if let Some(w) = first_w {
            if self.segs.iter().skip(w).any(|s| !s.writable) {
                return Some(ChainError::ReadableAfterWritable);
            }
        }
        if first_w == Some(0) || self.segs.is_empty() {
            return Some(ChainError::NoRequest);
        }
        let len = self.request_len();
        if len < 4 {
            return Some(ChainError::RequestTooShort);
        }
        if len > REQUEST_MAX as u64 {
            return Some(ChainError::RequestTooLong);
        }
        None
    }

    /// What makes this event chain unusable.
    pub fn event_problem(&self) -> Option<ChainError> {
        if self.too_many {
            return Some(ChainError::TooManyDescriptors);
        }
        if self.segs.iter().any(|s| !s.writable) {
            return Some(ChainError::ReadableEventBuffer);
        }
        if self.reply_room() < 4 {
            // Not even a message header fits.
            return Some(ChainError::ReplyTooSmall);
        }
        None
    }

    /// Copy the request (every readable descriptor, in order) into `out`. Call only when
    /// [`Self::problem`] found nothing (the length is then at most [`REQUEST_MAX`]).
    pub fn read_request<M: GuestMemory>(
        &self,
        mem: &M,
        out: &mut Vec<u8>,
    ) -> Result<(), ChainError> {
        out.clear();
        for s in self.readable() {
            let start = out.len();
            let len = s.len as usize;
            if start + len > REQUEST_MAX {
                return Err(ChainError::RequestTooLong);
            }
            out.resize(start + len, 0);
            mem.read_slice(&mut out[start..], s.addr)
                .map_err(|_| ChainError::Unreadable)?;
        }
        Ok(())
    }

    /// The request's header word, if at least 4 readable bytes lead the chain and guest memory
    /// holds them (used to address an error reply).
    pub fn header<M: GuestMemory>(&self, mem: &M) -> Option<u32> {
        let mut h = [0u8; 4];
        let mut got = 0;
        for s in self.readable() {
            let take = (s.len as usize).min(4 - got);
            mem.read_slice(&mut h[got..got + take], s.addr).ok()?;
            got += take;
            if got == 4 {
                return Some(u32::from_le_bytes(h));
            }
        }
        None
    }

    /// Scatter `data` over the writable descriptors, in order. Fails if it does not fit or a
    /// descriptor lies outside guest memory (a partial reply may then have been written; the
    /// caller reports used length 0).
    pub fn write_reply<M: GuestMemory>(&self, mem: &M, data: &[u8]) -> Result<(), ChainError> {
        let mut rest = data;
        for s in self.writable() {
            if rest.is_empty() {
                break;
            }
            let n = rest.len().min(s.len as usize);
            let (now, later) = rest.split_at(n);
            mem.write_slice(now, s.addr)
                .map_err(|_| ChainError::Unwritable)?;
            rest = later;
        }
        if rest.is_empty() {
            Ok(())
        } else {
            Err(ChainError::ReplyTooSmall)
        }
    }
}
