//! [`Loopback`]: a [`BulkLink`] that drives a [`VcService`] in-process, with the VCHIQ service
//! semantics the handlers rely on (in-order DATA, master-side bulk pairing, size mismatch aborts
//! both sides, docs/protocols/vchiq.md §5) but no slot memory. It is the reference model the
//! clients are unit tested against; `tests/vchi_*.rs` run the same routines over the real core.
//!
//! Blocking calls that could never complete (nothing to receive, no matching bulk queued) return
//! `Transport(Timeout)` instead of hanging; an aborted bulk is `Core(Aborted)` and a closed link
//! `Core(Closed)`, as over the core.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use fwipc_transport_api::{Error, ProtocolError};

use crate::error::VchiqError;

use crate::vchi::error::VchiError;
use crate::vchi::link::{BulkLink, BulkPipeline, ServiceLink, VcAction, VcService, MAX_MSG_SIZE};

/// A finished pipelined bulk: (actual length, buffer) or its error.
type BulkOutcome = Result<(usize, Vec<u8>), VchiError>;

/// An in-process link to one VideoCore-side handler.
pub struct Loopback<S: VcService> {
    server: S,
    inbox: VecDeque<Vec<u8>>,
    vc_rx: VecDeque<(usize, u32)>,
    vc_tx: VecDeque<(Vec<u8>, u32)>,
    closed: bool,
    /// Pipelined client bulks waiting for a partner: (tag, buffer).
    cl_tx: VecDeque<(u64, Vec<u8>)>,
    cl_rx: VecDeque<(u64, Vec<u8>)>,
    done: Vec<(u64, BulkOutcome)>,
    next_tag: u64,
}

impl<S: VcService> Loopback<S> {
    /// Open the service with `client_id` (non-zero, as the ARM sends its pid).
    pub fn open(server: S, client_id: i32) -> Self {
        let mut l = Loopback {
            server,
            inbox: VecDeque::new(),
            vc_rx: VecDeque::new(),
            vc_tx: VecDeque::new(),
            closed: false,
            cl_tx: VecDeque::new(),
            cl_rx: VecDeque::new(),
            done: Vec::new(),
            next_tag: 1,
        };
        let mut out = Vec::new();
        l.server.on_open(client_id, &mut out);
        l.apply(out);
        l
    }

    /// The handler.
    pub fn server(&self) -> &S {
        &self.server
    }

    /// The handler, mutable (to act as the VideoCore, e.g. write into a block).
    pub fn server_mut(&mut self) -> &mut S {
        &mut self.server
    }

    /// Close from the ARM side: outstanding VideoCore bulks are aborted (docs/protocols/vchiq.md §5
    /// "abort at close"), then the handler is told.
    pub fn close(&mut self) {
        let mut out = Vec::new();
        while let Some((_, tag)) = self.vc_rx.pop_front() {
            self.server.on_bulk_rx(tag, None, &mut out);
        }
        while let Some((_, tag)) = self.vc_tx.pop_front() {
            self.server.on_bulk_tx(tag, false, &mut out);
        }
        self.server.on_close(&mut out);
        self.closed = true;
    }

    /// Messages waiting for the client.
    pub fn pending_messages(&self) -> usize {
        self.inbox.len()
    }

    fn apply(&mut self, out: Vec<VcAction>) {
        for a in out {
            match a {
                VcAction::Reply(m) if !self.closed => self.inbox.push_back(m),
                VcAction::BulkRx { len, tag } if !self.closed => self.vc_rx.push_back((len, tag)),
                VcAction::BulkTx { data, tag } if !self.closed => self.vc_tx.push_back((data, tag)),
                VcAction::Close if !self.closed => self.close(),
                // Anything a handler asks for after the close is dropped, as the core would.
                _ => {}
            }
        }
    }

    fn check_open(&self) -> Result<(), VchiError> {
        if self.closed {
            Err(VchiError::Core(VchiqError::Closed))
        } else {
            Ok(())
        }
    }
}

impl<S: VcService> ServiceLink for Loopback<S> {
    fn send(&mut self, payload: &[u8]) -> Result<(), VchiError> {
        self.check_open()?;
        if payload.len() > MAX_MSG_SIZE {
            return Err(VchiError::TooLarge);
        }
        let mut out = Vec::new();
        self.server.on_message(payload, &mut out);
        self.apply(out);
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, VchiError> {
        let m = self
            .inbox
            .pop_front()
            .ok_or(VchiError::Transport(Error::Timeout))?;
        let dst = buf
            .get_mut(..m.len())
            .ok_or(VchiError::Protocol(ProtocolError::BadLength))?;
        dst.copy_from_slice(&m);
        Ok(m.len())
    }

    fn try_recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, VchiError> {
        if self.inbox.is_empty() {
            return Ok(None);
        }
        self.recv(buf).map(Some)
    }
}

impl<S: VcService> Loopback<S> {
    /// Let the handler act on its own (the VideoCore initiating something): `f` gets the handler
    /// and an action list, which is then carried out.
    pub fn vc_act(&mut self, f: impl FnOnce(&mut S, &mut Vec<VcAction>)) {
        let mut out = Vec::new();
        f(&mut self.server, &mut out);
        self.apply(out);
    }
}

impl<S: VcService> Loopback<S> {
    /// Pair queued client bulks with the handler's, in order, until neither side can move.
    fn pair_pipelined(&mut self) {
        loop {
            if !self.cl_tx.is_empty() && !self.vc_rx.is_empty() {
                let (tag, data) = self.cl_tx.pop_front().unwrap_or_default();
                let r = self.bulk_transmit(&data).map(|_| (data.len(), data));
                self.done.push((tag, r));
                continue;
            }
            if !self.cl_rx.is_empty() && !self.vc_tx.is_empty() {
                let (tag, mut buf) = self.cl_rx.pop_front().unwrap_or_default();
                let r = self.bulk_receive(&mut buf).map(|n| (n, buf));
                self.done.push((tag, r));
                continue;
            }
            return;
        }
    }
}

impl<S: VcService> BulkPipeline for Loopback<S> {
    fn submit_transmit(&mut self, data: Vec<u8>) -> Result<u64, VchiError> {
        self.check_open()?;
        let tag = self.next_tag;
        self.next_tag += 1;
        self.cl_tx.push_back((tag, data));
        self.pair_pipelined();
        Ok(tag)
    }

    fn submit_receive(&mut self, buf: Vec<u8>) -> Result<u64, VchiError> {
        self.check_open()?;
        let tag = self.next_tag;
        self.next_tag += 1;
        self.cl_rx.push_back((tag, buf));
        self.pair_pipelined();
        Ok(tag)
    }

    fn complete(&mut self, tag: u64) -> Result<(usize, Vec<u8>), VchiError> {
        self.pair_pipelined();
        let i = self
            .done
            .iter()
            .position(|(t, _)| *t == tag)
            .ok_or(VchiError::Transport(Error::Timeout))?;
        self.done.swap_remove(i).1
    }
}

impl<S: VcService> BulkLink for Loopback<S> {
    fn bulk_transmit(&mut self, data: &[u8]) -> Result<(), VchiError> {
        self.check_open()?;
        let (len, tag) = self
            .vc_rx
            .pop_front()
            .ok_or(VchiError::Transport(Error::Timeout))?;
        let mut out = Vec::new();
        if len != data.len() {
            self.server.on_bulk_rx(tag, None, &mut out);
            self.apply(out);
            return Err(VchiError::Core(VchiqError::Aborted));
        }
        self.server.on_bulk_rx(tag, Some(data), &mut out);
        self.apply(out);
        Ok(())
    }

    fn bulk_receive(&mut self, buf: &mut [u8]) -> Result<usize, VchiError> {
        self.check_open()?;
        let (data, tag) = self
            .vc_tx
            .pop_front()
            .ok_or(VchiError::Transport(Error::Timeout))?;
        let mut out = Vec::new();
        if data.len() != buf.len() {
            self.server.on_bulk_tx(tag, false, &mut out);
            self.apply(out);
            return Err(VchiError::Core(VchiqError::Aborted));
        }
        buf.copy_from_slice(&data);
        self.server.on_bulk_tx(tag, true, &mut out);
        self.apply(out);
        Ok(data.len())
    }
}
