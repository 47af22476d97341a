//! The seams between the VCHI clients/handlers and the VCHIQ core.
//!
//! * ARM side: a client ([`crate::vchi::Smem`], [`crate::vchi::test_client`]) talks to one open
//!   service through [`ServiceLink`] (DATA messages) and [`BulkLink`] (blocking bulk transfers).
//!   The core's service handle implements them (see `tests/vchi_*.rs` for the adapter); the
//!   `crate::sim::vchi::loopback` implements them without slots for unit tests.
//! * VideoCore side: a service handler is a pure state machine, [`VcService`]: it is given each
//!   DATA message and each bulk completion and answers with [`VcAction`]s that the simulated
//!   VideoCore (the core in master role) carries out.

use alloc::vec::Vec;

use super::error::VchiError;

/// The largest DATA payload of one VCHIQ message (docs/protocols/vchiq.md §0).
pub const MAX_MSG_SIZE: usize = 4088;

/// One open VCHIQ service, from a client's point of view.
pub trait ServiceLink {
    /// Queue one DATA message to the peer (`payload.len() <= MAX_MSG_SIZE`).
    fn send(&mut self, payload: &[u8]) -> Result<(), VchiError>;
    /// Wait for the next DATA message from the peer, copy it into `buf` and return its length.
    /// A message longer than `buf` must be reported as
    /// `VchiError::Protocol(ProtocolError::BadLength)` (and consumed), never truncated silently.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, VchiError>;
    /// Like [`ServiceLink::recv`] but never waits: `Ok(None)` when nothing has arrived.
    fn try_recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, VchiError>;
}

/// Blocking bulk transfers on an open service (the slave side: the master runs the DMA).
pub trait BulkLink: ServiceLink {
    /// Transmit `data`; returns when the master has completed (paired it with a receive).
    fn bulk_transmit(&mut self, data: &[u8]) -> Result<(), VchiError>;
    /// Receive into `buf`; returns the actual length on completion.
    fn bulk_receive(&mut self, buf: &mut [u8]) -> Result<usize, VchiError>;
}

/// Bulk transfers kept in flight (vchiq_test -b keeps 2 transmits and 2 receives queued):
/// submit now, collect the completion later. Buffers are moved in and come back with the
/// completion.
pub trait BulkPipeline: ServiceLink {
    /// Queue a transmit of all of `data`; returns its tag.
    fn submit_transmit(&mut self, data: Vec<u8>) -> Result<u64, VchiError>;
    /// Queue a receive filling all of `buf`; returns its tag.
    fn submit_receive(&mut self, buf: Vec<u8>) -> Result<u64, VchiError>;
    /// Wait for the transfer `tag`: the actual length and the buffer.
    fn complete(&mut self, tag: u64) -> Result<(usize, Vec<u8>), VchiError>;
}

/// What a VideoCore-side service handler asks the simulated VideoCore to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcAction {
    /// Queue this DATA message to the client.
    Reply(Vec<u8>),
    /// Queue a bulk receive of `len` bytes; `tag` comes back in [`VcService::on_bulk_rx`].
    BulkRx {
        /// Bytes to receive.
        len: usize,
        /// Handler's own tag (the `userdata` of the C API).
        tag: u32,
    },
    /// Queue a bulk transmit; `tag` comes back in [`VcService::on_bulk_tx`].
    BulkTx {
        /// Bytes to transmit.
        data: Vec<u8>,
        /// Handler's own tag.
        tag: u32,
    },
    /// Close the service from this side.
    Close,
}

/// A service handler running on the (simulated) VideoCore.
pub trait VcService {
    /// The fourcc this handler serves.
    fn fourcc(&self) -> u32;
    /// A client opened the service (`client_id` from the OPEN payload).
    fn on_open(&mut self, _client_id: i32, _out: &mut Vec<VcAction>) {}
    /// The service was closed.
    fn on_close(&mut self, _out: &mut Vec<VcAction>) {}
    /// One DATA message from the client.
    fn on_message(&mut self, msg: &[u8], out: &mut Vec<VcAction>);
    /// A bulk receive completed with `data` (`None` = aborted).
    fn on_bulk_rx(&mut self, _tag: u32, _data: Option<&[u8]>, _out: &mut Vec<VcAction>) {}
    /// A bulk transmit completed (`ok == false` = aborted).
    fn on_bulk_tx(&mut self, _tag: u32, _ok: bool, _out: &mut Vec<VcAction>) {}
}

impl<T: VcService + ?Sized> VcService for alloc::boxed::Box<T> {
    fn fourcc(&self) -> u32 {
        (**self).fourcc()
    }
    fn on_open(&mut self, client_id: i32, out: &mut Vec<VcAction>) {
        (**self).on_open(client_id, out)
    }
    fn on_close(&mut self, out: &mut Vec<VcAction>) {
        (**self).on_close(out)
    }
    fn on_message(&mut self, msg: &[u8], out: &mut Vec<VcAction>) {
        (**self).on_message(msg, out)
    }
    fn on_bulk_rx(&mut self, tag: u32, data: Option<&[u8]>, out: &mut Vec<VcAction>) {
        (**self).on_bulk_rx(tag, data, out)
    }
    fn on_bulk_tx(&mut self, tag: u32, ok: bool, out: &mut Vec<VcAction>) {
        (**self).on_bulk_tx(tag, ok, out)
    }
}
