//! [`CoreLink`] (ARM side): a [`ServiceLink`]/[`BulkLink`] over one open client service of a
//! [`Vchiq`] instance. Received DATA is copied into an [`Inbox`] of buffers allocated when the
//! service is opened (a full inbox makes the core keep the message in its slot and redeliver it:
//! back-pressure, no allocation on the receive path). Blocking calls poll the instance and pause
//! between polls the way the link was opened with (a [`Wait`]: `Poll`, `SpinThenYield`, or
//! `Completion` with a parker; the single-threaded simulator's parker runs the VideoCore), each
//! bounded by the link's timeout on the instance's clock (`Transport(Timeout)` when it passes).
//! Bulk data is staged in one reusable buffer at the caller's page offset (so fragments and
//! pagelists are those of the caller's buffer), with guard bytes around each receive window: a
//! peer that writes outside the window (the cache-line-edge corruption of
//! docs/protocols/vchiq.md §5) is reported as `DmaOverrun`. The VideoCore-side counterpart is
//! [`crate::vchi::service_host::VcServiceHost`].

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use core::time::Duration;

use fwipc_transport_api::{Error, ProtocolError, Wait};

use super::error::VchiError;
use super::link::{BulkLink, BulkPipeline, ServiceLink, MAX_MSG_SIZE};
use crate::engine::service::{
    BulkCompletion, BulkDir, BulkMode, Deliver, Event, ServiceHandle, ServiceParams,
};
use crate::engine::vchiq::{ServiceCtx, ServiceHandler, Vchiq};
use crate::error::VchiqError;

impl From<VchiqError> for VchiError {
    fn from(e: VchiqError) -> Self {
        VchiError::Core(e)
    }
}

#[derive(Debug)]
struct Ring {
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    head: usize,
    count: usize,
    opened: bool,
    closed: bool,
    /// A delivery was refused (ring full) since the last pop: the core holds it for a `kick`.
    refused: bool,
    refused_total: u64,
}

/// Bounded, preallocated receive queue of one client service.
#[derive(Debug)]
pub struct Inbox {
    ring: spin::Mutex<Ring>,
}

impl Inbox {
    /// `depth` buffers of [`MAX_MSG_SIZE`] bytes.
    pub fn new(depth: usize) -> Self {
        let depth = depth.max(1);
        Inbox {
            ring: spin::Mutex::new(Ring {
                bufs: (0..depth).map(|_| vec![0u8; MAX_MSG_SIZE]).collect(),
                lens: vec![0; depth],
                head: 0,
                count: 0,
                opened: false,
                closed: false,
                refused: false,
                refused_total: 0,
            }),
        }
    }

    fn push(&self, payload: &[u8]) -> bool {
        let mut r = self.ring.lock();
        let depth = r.bufs.len();
        if r.count == depth || payload.len() > MAX_MSG_SIZE {
            r.refused = true;
            r.refused_total += 1;
            return false;
        }
        let i = (r.head + r.count) % depth;
        r.bufs[i][..payload.len()].copy_from_slice(payload);
        r.lens[i] = payload.len();
        r.count += 1;
        true
    }

    /// Take the oldest message into `out`: `None` if empty; a message longer than `out` is
    /// consumed and reported as `BadLength`. The flag says a delivery was refused meanwhile (the
    /// caller must `kick` the core to have it redelivered).
    fn pop(&self, out: &mut [u8]) -> Option<(Result<usize, VchiError>, bool)> {
        let mut r = self.ring.lock();
        if r.count == 0 {
            return None;
        }
        let refused = core::mem::take(&mut r.refused);
        let i = r.head;
        let n = r.lens[i];
        r.head = (r.head + 1) % r.bufs.len();
        r.count -= 1;
        let res = match out.get_mut(..n) {
            Some(dst) => {
                dst.copy_from_slice(&r.bufs[i][..n]);
                Ok(n)
            }
            None => Err(VchiError::Protocol(ProtocolError::BadLength)),
        };
        Some((res, refused))
    }

    /// Deliveries refused because the inbox was full (back-pressure events).
    pub fn refused_total(&self) -> u64 {
        self.ring.lock().refused_total
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.ring.lock().count
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes checked on each side of a bulk receive window.
pub const DMA_GUARD: usize = 32;
/// Their value before the transfer.
pub const GUARD_BYTE: u8 = 0xFF;

struct InboxHandler(Arc<Inbox>);

impl ServiceHandler for InboxHandler {
    fn callback(&self, _ctx: &ServiceCtx<'_>, event: Event<'_>) -> Deliver {
        match event {
            Event::Opened => self.0.ring.lock().opened = true,
            Event::Closed => self.0.ring.lock().closed = true,
            Event::Message(m) => {
                if !self.0.push(m.payload()) {
                    // Full: the core keeps it in its slot and redelivers after `kick`.
                    return Deliver::Retry;
                }
            }
            // Bulks are submitted in NoCallback mode and collected by the blocking calls.
            // The blocking calls retry sends themselves, polling the instance.
            Event::Bulk(_) | Event::RemoteBulkPending { .. } | Event::TxSpace => {}
        }
        Deliver::Done
    }
}

/// A client service of a [`Vchiq`] instance as a blocking [`BulkLink`].
pub struct CoreLink<'v> {
    vchiq: &'v Vchiq,
    handle: ServiceHandle,
    inbox: Arc<Inbox>,
    /// How the blocking calls pause between polls.
    wait: Wait<'v>,
    /// The bound of each blocking call.
    timeout: Duration,
    next_tag: u64,
    /// The bulk buffer, lent to the core for each transfer and returned with its completion:
    /// reused, so steady-state bulks of a size seen before allocate nothing.
    spare: Vec<u8>,
    /// `close` already removed the service.
    removed: bool,
}

impl Drop for CoreLink<'_> {
    /// Dropping an open link starts closing its service (the CLOSE goes out now; the core
    /// completes the handshake on later polls). Use [`CoreLink::close`] to wait for it.
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.vchiq.remove_service(self.handle);
        }
    }
}

impl<'v> CoreLink<'v> {
    /// Open the peer's service `params.fourcc` and wait until it is open (or refused:
    /// `Core(Refused)`). `depth` bounds the messages buffered for [`ServiceLink::recv`]. Every
    /// blocking call of the link polls the instance, pauses the `wait` way between polls and
    /// gives up with `Transport(Timeout)` after `timeout`.
    pub fn open(
        vchiq: &'v Vchiq,
        params: ServiceParams,
        depth: usize,
        wait: Wait<'v>,
        timeout: Duration,
    ) -> Result<Self, VchiError> {
        let inbox = Arc::new(Inbox::new(depth));
        let handle = vchiq.open_service(params, InboxHandler(inbox.clone()))?;
        let link = CoreLink {
            vchiq,
            handle,
            inbox,
            wait,
            timeout,
            next_tag: 1,
            spare: Vec::new(),
            removed: false,
        };
        // Dropping the link on failure removes the service.
        link.block(|| match vchiq.open_status(handle) {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(e) => Some(Err(e.into())),
        })?;
        Ok(link)
    }

    /// The one waiting loop of the link: `check` until it answers, polling the instance and
    /// pausing between polls; `Transport(Timeout)` after the link's timeout.
    fn block<T>(
        &self,
        check: impl FnMut() -> Option<Result<T, VchiError>>,
    ) -> Result<T, VchiError> {
        self.vchiq.wait_until_with(
            self.wait,
            self.timeout,
            VchiError::Transport(Error::Timeout),
            check,
        )
    }

    /// The core's handle of this service.
    pub fn handle(&self) -> ServiceHandle {
        self.handle
    }

    /// The receive queue.
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// Close the service and wait until the close completes (the peer's CLOSE arrived); the
    /// port is then freed.
    pub fn close(mut self) -> Result<(), VchiError> {
        let (vchiq, handle) = (self.vchiq, self.handle);
        self.block(|| match vchiq.remove_service(handle) {
            Err(VchiqError::Retry) => None,
            Err(e) => Some(Err(e.into())),
            Ok(()) => Some(Ok(())),
        })?;
        self.removed = true;
        let inbox = self.inbox.clone();
        self.block(|| inbox.ring.lock().closed.then_some(Ok(())))
    }

    /// Place a `len`-byte window in the spare buffer at the same offset within a page as
    /// `addr` (the caller's buffer), so the core sees the caller's alignment: its pagelist and
    /// cache-line fragments are exactly those of a zero-copy transfer into the caller's memory.
    /// The window has [`DMA_GUARD`] bytes of [`GUARD_BYTE`] on each side. Returns the window's
    /// offset in `spare`. Allocates only when the spare must grow.
    fn place(&mut self, addr: usize, len: usize) -> usize {
        const PAGE: usize = 4096;
        self.spare.clear();
        self.spare.reserve(len + PAGE + 2 * DMA_GUARD);
        let base = self.spare.as_ptr() as usize + DMA_GUARD;
        let off = DMA_GUARD + (addr % PAGE + PAGE - base % PAGE) % PAGE;
        self.spare.resize(off + len + DMA_GUARD, GUARD_BYTE);
        off
    }

    /// After a receive into `spare[off..off+len]`: the first guard byte the peer overwrote.
    fn damaged_guard(&self, off: usize, len: usize) -> Option<isize> {
        let before = &self.spare[off - DMA_GUARD..off];
        if let Some(i) = before.iter().position(|&b| b != GUARD_BYTE) {
            return Some(i as isize - DMA_GUARD as isize);
        }
        let after = self.spare.get(off + len..off + len + DMA_GUARD)?;
        after
            .iter()
            .position(|&b| b != GUARD_BYTE)
            .map(|i| (len + i) as isize)
    }

    /// Run one blocking bulk of `spare[off..off+len]` (already filled for a transmit); returns
    /// the actual length. The buffer is back in `self.spare` afterwards, unless the transfer is
    /// still queued (the wait timed out), in which case the core keeps it.
    fn bulk(&mut self, dir: BulkDir, off: usize, len: usize) -> Result<usize, VchiError> {
        let tag = self.next_tag;
        self.next_tag += 1;
        let buf = core::mem::take(&mut self.spare);
        if let Err((e, back)) = self.submit_tagged(dir, tag, buf, off, len) {
            if let Some(back) = back {
                self.spare = back;
            }
            return Err(e);
        }
        let c = self.wait_completion(tag)?;
        self.spare = c.buf;
        c.result.map_err(Into::into)
    }

    /// Wait for the completion of the NoCallback bulk `tag`.
    fn wait_completion(&self, tag: u64) -> Result<BulkCompletion, VchiError> {
        let (vchiq, handle) = (self.vchiq, self.handle);
        self.block(|| match vchiq.take_bulk_completion_tag(handle, tag) {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => None,
            Err(e) => Some(Err(e.into())),
        })
    }

    /// Submit one NoCallback bulk of `buf[off..off + len]` as `tag`, retrying back-pressure the
    /// link's way. On failure the buffer comes back (the core keeps only an accepted transfer's).
    #[allow(clippy::type_complexity)]
    fn submit_tagged(
        &self,
        dir: BulkDir,
        tag: u64,
        buf: Vec<u8>,
        off: usize,
        len: usize,
    ) -> Result<(), (VchiError, Option<Vec<u8>>)> {
        let (vchiq, handle) = (self.vchiq, self.handle);
        let mut held = Some(buf);
        let r = self.block(|| {
            let buf = held.take()?;
            let r = match dir {
                BulkDir::Transmit => {
                    vchiq.bulk_transmit(handle, buf, off, len, tag, BulkMode::NoCallback)
                }
                BulkDir::Receive => {
                    vchiq.bulk_receive(handle, buf, off, len, tag, BulkMode::NoCallback)
                }
            };
            match r {
                Ok(()) => Some(Ok(())),
                Err((VchiqError::Retry, back)) => {
                    held = Some(back);
                    None
                }
                Err((e, back)) => {
                    held = Some(back);
                    Some(Err(e.into()))
                }
            }
        });
        r.map_err(|e| (e, held))
    }
}

impl ServiceLink for CoreLink<'_> {
    fn send(&mut self, payload: &[u8]) -> Result<(), VchiError> {
        let (vchiq, handle) = (self.vchiq, self.handle);
        self.block(|| match vchiq.queue_message(handle, payload) {
            Err(VchiqError::Retry) => None,
            r => Some(r.map_err(Into::into)),
        })
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, VchiError> {
        let (vchiq, inbox) = (self.vchiq, self.inbox.clone());
        self.block(|| {
            // (After a refused delivery, `try_pop` kicks the core to redeliver it.)
            if let Some(r) = try_pop(vchiq, &inbox, buf) {
                return Some(r);
            }
            if inbox.ring.lock().closed {
                return Some(Err(VchiError::Core(VchiqError::Closed)));
            }
            None
        })
    }

    fn try_recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, VchiError> {
        if self.inbox.is_empty() {
            // Non-blocking: one poll of our side, no wait.
            self.vchiq.poll();
        }
        try_pop(self.vchiq, &self.inbox, buf).transpose()
    }
}

/// Take the next buffered message; a refused delivery behind it is redelivered (`kick`).
fn try_pop(vchiq: &Vchiq, inbox: &Inbox, buf: &mut [u8]) -> Option<Result<usize, VchiError>> {
    let (r, refused) = inbox.pop(buf)?;
    if refused {
        vchiq.kick();
    }
    Some(r)
}

impl BulkLink for CoreLink<'_> {
    fn bulk_transmit(&mut self, data: &[u8]) -> Result<(), VchiError> {
        let off = self.place(data.as_ptr() as usize, data.len());
        self.spare[off..off + data.len()].copy_from_slice(data);
        self.bulk(BulkDir::Transmit, off, data.len()).map(|_| ())
    }

    fn bulk_receive(&mut self, buf: &mut [u8]) -> Result<usize, VchiError> {
        let off = self.place(buf.as_ptr() as usize, buf.len());
        let n = self.bulk(BulkDir::Receive, off, buf.len())?;
        if let Some(offset) = self.damaged_guard(off, buf.len()) {
            return Err(VchiError::DmaOverrun { offset });
        }
        let n = n.min(buf.len()).min(self.spare.len().saturating_sub(off));
        buf[..n].copy_from_slice(&self.spare[off..off + n]);
        Ok(n)
    }
}

impl BulkPipeline for CoreLink<'_> {
    fn submit_transmit(&mut self, data: Vec<u8>) -> Result<u64, VchiError> {
        self.submit(BulkDir::Transmit, data)
    }

    fn submit_receive(&mut self, buf: Vec<u8>) -> Result<u64, VchiError> {
        self.submit(BulkDir::Receive, buf)
    }

    fn complete(&mut self, tag: u64) -> Result<(usize, Vec<u8>), VchiError> {
        let c = self.wait_completion(tag)?;
        match c.result {
            Ok(n) => Ok((n, c.buf)),
            Err(e) => Err(e.into()),
        }
    }
}

impl CoreLink<'_> {
    fn submit(&mut self, dir: BulkDir, buf: Vec<u8>) -> Result<u64, VchiError> {
        let tag = self.next_tag;
        self.next_tag += 1;
        let len = buf.len();
        self.submit_tagged(dir, tag, buf, 0, len)
            .map(|()| tag)
            .map_err(|(e, _)| e)
    }
}
