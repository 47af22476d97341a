//! A session (one compute context bank, one client): the invoke API.
//!
//! Split-phase like the transport API: [`Session::start`] lays the call out in a preallocated
//! payload buffer and queues the 40-byte message, [`Session::poll`] checks for the answer,
//! [`Session::read_out`] copies an out-buffer back (clamped to what was asked: the DSP-written
//! length is never trusted), and [`Session::finish`] / [`Session::abandon`] drop the caller's
//! reference. [`Session::invoke`] is the blocking composition. Nothing on this path allocates.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use core::task::Waker;

use spin::Mutex;
use zerocopy::IntoBytes;

use fwipc_transport_api::{
    wait_until, Clock, Counters, Deadline, Lifecycle, ProtocolError, TxOutcome,
};

use crate::call_wait::CallWait;
use crate::channel::ChannelInner;
use crate::context::{CtxId, CtxState, OutRec, PayloadPool};
use crate::error::{AeeError, FastRpcError, Result};
use crate::layout::{layout, BufDesc, BufSource, HandleDesc, Olap, NOT_INLINE};
use crate::mem::{read_at, write_at, SharedBuf};
use crate::payload::MetaView;
use crate::procctl::ProcState;
use crate::scalars::Scalars;
use crate::wire::{FastRpcMsg, MetaOffsets, INIT_HANDLE};

/// PD bits: root PD / audio attach.
pub const PD_ROOT: u8 = 0;
/// PD bits: dynamic user PD.
pub const PD_USER: u8 = 1;
/// PD bits: sensors PD attach.
pub const PD_SENSORS: u8 = 2;

/// One argument of a call. Order must be: in-buffers, out-buffers, in-handles, out-handles
/// (the scalars order); `start` refuses anything else.
#[derive(Debug)]
pub enum Arg<'a> {
    /// In-buffer, copied into the payload.
    In(&'a [u8]),
    /// Out-buffer, copied back from the payload by [`Session::invoke`].
    Out(&'a mut [u8]),
    /// Out-buffer of `len` bytes kept in the payload until [`Session::read_out`]; `addr` is the
    /// caller's notional address (only used to order the inline copies, as Linux does).
    OutLen {
        /// Ordering address.
        addr: u64,
        /// Length.
        len: usize,
    },
    /// In-buffer living in a shared buffer (sent by page, not copied).
    InShared {
        /// The buffer.
        buf: &'a SharedBuf,
        /// Offset.
        offset: usize,
        /// Length.
        len: usize,
    },
    /// Out-buffer living in a shared buffer (the DSP writes it directly).
    OutShared {
        /// The buffer.
        buf: &'a SharedBuf,
        /// Offset.
        offset: usize,
        /// Length.
        len: usize,
    },
    /// In-handle: a shared buffer passed by descriptor.
    InHandle {
        /// The buffer.
        buf: &'a SharedBuf,
        /// Offset.
        offset: u32,
        /// Length.
        len: u32,
    },
    /// Out-handle.
    OutHandle {
        /// The buffer.
        buf: &'a SharedBuf,
        /// Offset.
        offset: u32,
        /// Length.
        len: u32,
    },
}

impl Arg<'_> {
    fn class(&self) -> usize {
        match self {
            Arg::In(_) | Arg::InShared { .. } => 0,
            Arg::Out(_) | Arg::OutLen { .. } | Arg::OutShared { .. } => 1,
            Arg::InHandle { .. } => 2,
            Arg::OutHandle { .. } => 3,
        }
    }
}

/// The scalars `args` imply for `method` (checked).
pub fn scalars_for(method: u32, args: &[Arg<'_>]) -> Result<Scalars> {
    let mut counts = [0u32; 4];
    let mut last = 0;
    for a in args {
        let c = a.class();
        if c < last {
            return Err(FastRpcError::InvalidArgument);
        }
        last = c;
        counts[c] += 1;
    }
    Scalars::new(method, counts[0], counts[1], counts[2], counts[3])
}

/// A call in flight. Not `Clone`: finished exactly once.
#[derive(Debug, PartialEq, Eq)]
pub struct InvokeTicket {
    pub(crate) idx: usize,
    pub(crate) generation: u64,
}

impl InvokeTicket {
    /// Context slot index.
    pub fn slot(&self) -> usize {
        self.idx
    }
    /// Context generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

pub(crate) struct SessionInner {
    pub(crate) ch: Arc<ChannelInner>,
    pub(crate) index: u16,
    pub(crate) sid: u32,
    pub(crate) payloads: Arc<PayloadPool>,
    pub(crate) pd: AtomicU8,
    pub(crate) lc: Lifecycle,
    pub(crate) next_fd: AtomicI32,
    pub(crate) proc: Mutex<ProcState>,
    /// Opened on the plain node of a secure channel: unsigned PDs only.
    pub(crate) unsigned_only: core::sync::atomic::AtomicBool,
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        // Teardown: the DSP may no longer touch this session's memory (the PD is released and
        // the bank detached), so in-flight contexts are failed and their buffers released.
        // Contexts of this session whose tickets were never finished are released too.
        self.ch.ctx.release_session(self.index);
        self.ch.ctx.reap();
        self.ch.release_session_slot(self.index as usize);
    }
}

/// A session: one client of a channel on one context bank, with the [`CallWait`] its blocking
/// calls use. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<SessionInner>,
    wait: CallWait,
}

impl Session {
    pub(crate) fn new(
        ch: Arc<ChannelInner>,
        index: u16,
        sid: u32,
        payloads: Arc<PayloadPool>,
        wait: CallWait,
    ) -> Self {
        Session {
            wait,
            inner: Arc::new(SessionInner {
                ch,
                index,
                sid,
                payloads,
                pd: AtomicU8::new(PD_USER),
                lc: Lifecycle::new(),
                next_fd: AtomicI32::new(3),
                proc: Mutex::new(ProcState::default()),
                unsigned_only: core::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// How this session's blocking calls wait.
    pub fn call_wait(&self) -> &CallWait {
        &self.wait
    }

    /// A handle on the same session whose blocking calls wait as `wait` says (another timeout,
    /// another pause); this handle keeps its own.
    #[must_use]
    pub fn with_wait(&self, wait: CallWait) -> Session {
        Session {
            inner: self.inner.clone(),
            wait,
        }
    }

    pub(crate) fn set_node(&self, secure_node: bool, channel_secure: bool) {
        // Relaxed: set once before the session is shared.
        self.inner
            .unsigned_only
            .store(channel_secure && !secure_node, Ordering::Relaxed);
    }

    /// Whether this client may only create unsigned PDs (plain node of a secure channel).
    pub fn unsigned_only(&self) -> bool {
        // Relaxed: see `set_node`.
        self.inner.unsigned_only.load(Ordering::Relaxed)
    }

    /// Stream id of the session's context bank.
    pub fn sid(&self) -> u32 {
        self.inner.sid
    }

    /// The wire client id (`session index + 1`, the recent-kernel `client_id`).
    pub fn client_id(&self) -> i32 {
        i32::from(self.inner.index) + 1
    }

    /// PD bits sent in context ids.
    pub fn pd(&self) -> u8 {
        // Relaxed: a plain value set by process control before calls that depend on it.
        self.inner.pd.load(Ordering::Relaxed)
    }

    pub(crate) fn set_pd(&self, pd: u8) {
        // Relaxed: see `pd`.
        self.inner.pd.store(pd, Ordering::Relaxed)
    }

    /// Payload buffers of this session (calls it may have in flight).
    pub fn payload_capacity(&self) -> usize {
        self.inner.payloads.capacity()
    }

    /// Payload buffers free right now (after finishing deferred releases).
    pub fn payload_free(&self) -> usize {
        self.inner.ch.ctx.reap();
        self.inner.payloads.free_count()
    }

    /// Allocate a shared buffer (the dma-buf role) of `size` bytes on this session's bank.
    /// A control-path allocation.
    pub fn alloc_shared(&self, size: usize) -> Result<SharedBuf> {
        let r = self
            .inner
            .ch
            .hal
            .alloc(self.inner.sid, size)
            .ok_or(FastRpcError::NoMemory)?;
        // Relaxed: a unique-number counter.
        let fd = self.inner.next_fd.fetch_add(1, Ordering::Relaxed);
        Ok(SharedBuf::new(fd, self.inner.sid, r))
    }

    /// Queue a call of `method` on `handle`. User calls on the init handle are refused.
    pub fn start(
        &self,
        handle: u32,
        method: u32,
        args: &[Arg<'_>],
        tid: i32,
    ) -> Result<InvokeTicket> {
        self.start_inner(handle, method, args, tid, false)
    }

    /// Like [`Session::start`], but first looks for an abandoned call of this session with the
    /// same `tid`, handle and scalars (a retry after a timeout or signal) and resumes it instead
    /// of sending the call again. Returns the ticket and whether it was resumed. The in-buffers
    /// of a resumed call are the original ones (already with the DSP). A call still pending on
    /// the DSP is kept until the retry (or teardown); one whose late answer already arrived is
    /// kept only until the next reap (any later call on the channel), after which a retry is a
    /// new call.
    pub fn start_or_resume(
        &self,
        handle: u32,
        method: u32,
        args: &[Arg<'_>],
        tid: i32,
    ) -> Result<(InvokeTicket, bool)> {
        let sc = scalars_for(method, args)?;
        if let Some((idx, generation)) = self.inner.ch.ctx.resume(self.inner.index, tid, handle, sc)
        {
            return Ok((InvokeTicket { idx, generation }, true));
        }
        self.start(handle, method, args, tid).map(|t| (t, false))
    }

    pub(crate) fn start_inner(
        &self,
        handle: u32,
        method: u32,
        args: &[Arg<'_>],
        tid: i32,
        kernel: bool,
    ) -> Result<InvokeTicket> {
        let s = &*self.inner;
        let ch = &*s.ch;
        let _user = s.lc.acquire().map_err(|_| FastRpcError::ChannelDown)?;
        // An early refusal only; a sweep racing this call is handled by the re-check after
        // queueing (`crate::liveness`).
        if !ch.up.is_up() {
            return Err(FastRpcError::ChannelDown);
        }
        if handle == INIT_HANDLE && !kernel {
            return Err(FastRpcError::PermissionDenied);
        }
        let sc = scalars_for(method, args)?;
        if args.len() > ch.ctx.max_args() {
            return Err(FastRpcError::TooLarge);
        }
        ch.ctx.reap();
        let (idx, generation) = ch.ctx.alloc(s.index).inspect_err(|_| {
            Counters::bump(&ch.counters.busy);
        })?;
        match self.build_and_send(idx, generation, handle, sc, args, tid, kernel) {
            Ok(()) => {
                Counters::bump(&ch.counters.sent);
                Ok(InvokeTicket { idx, generation })
            }
            Err(e) => {
                if e == FastRpcError::Busy {
                    Counters::bump(&ch.counters.busy);
                }
                ch.ctx.drop_owner(idx, generation, false);
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn build_and_send(
        &self,
        idx: usize,
        generation: u64,
        handle: u32,
        sc: Scalars,
        args: &[Arg<'_>],
        tid: i32,
        kernel: bool,
    ) -> Result<()> {
        let s = &*self.inner;
        let ch = &*s.ch;
        let slot = ch.ctx.slot(idx).ok_or(FastRpcError::InvalidArgument)?;
        let mut c = slot.lock();
        let mut lease = s.payloads.take().ok_or(FastRpcError::Busy)?;
        c.maps.clear();
        c.bufs.clear();
        c.handles.clear();
        c.outs.clear();
        let sid_bits = u64::from(s.sid) << 32;
        for (i, a) in args.iter().enumerate() {
            let shared_ok = |buf: &SharedBuf, off: usize, len: usize| {
                buf.sid() == s.sid && off.checked_add(len).is_some_and(|e| e <= buf.len())
            };
            match a {
                Arg::In(d) => c.bufs.push(BufDesc {
                    ptr: d.as_ptr() as u64,
                    len: d.len() as u64,
                    src: BufSource::Copy,
                }),
                Arg::Out(d) => {
                    c.bufs.push(BufDesc {
                        ptr: d.as_ptr() as u64,
                        len: d.len() as u64,
                        src: BufSource::Copy,
                    });
                    c.outs.push(OutRec {
                        slot: i as u16,
                        off: 0,
                        len: d.len() as u64,
                    });
                }
                Arg::OutLen { addr, len } => {
                    c.bufs.push(BufDesc {
                        ptr: *addr,
                        len: *len as u64,
                        src: BufSource::Copy,
                    });
                    c.outs.push(OutRec {
                        slot: i as u16,
                        off: 0,
                        len: *len as u64,
                    });
                }
                Arg::InShared { buf, offset, len } | Arg::OutShared { buf, offset, len } => {
                    if !shared_ok(buf, *offset, *len) {
                        return Err(FastRpcError::InvalidArgument);
                    }
                    c.bufs.push(BufDesc {
                        ptr: buf.va() + *offset as u64,
                        len: *len as u64,
                        src: BufSource::Mapped {
                            bus: buf.bus_addr(),
                            va_start: buf.va(),
                            size: buf.len() as u64,
                        },
                    });
                    c.maps.push((*buf).clone());
                    if matches!(a, Arg::OutShared { .. }) {
                        c.outs.push(OutRec {
                            slot: i as u16,
                            off: NOT_INLINE,
                            len: *len as u64,
                        });
                    }
                }
                Arg::InHandle { buf, offset, len } | Arg::OutHandle { buf, offset, len } => {
                    if !shared_ok(buf, *offset as usize, *len as usize) {
                        return Err(FastRpcError::InvalidArgument);
                    }
                    c.handles.push(HandleDesc {
                        fd: buf.fd(),
                        offset: *offset,
                        len: *len,
                        map: Some((buf.bus_addr(), buf.len() as u64)),
                    });
                    c.maps.push((*buf).clone());
                }
            }
        }
        let nb = c.bufs.len();
        // Within the capacity reserved at setup (`max_args`): no allocation.
        c.olaps.resize(nb, Olap::default());
        c.inline_off.resize(nb, 0);
        let (region, shadow) = lease.parts();
        let (va, bus) = (region.va(), region.iova() | sid_bits);
        // The call is built in the lease's private shadow (no slice of DSP-shared memory may
        // exist, see `crate::mem`), then copied into the region in one pass.
        let placed = {
            let cx = &mut *c;
            let placed = layout(
                sc,
                &cx.bufs,
                &cx.handles,
                &mut cx.olaps,
                shadow,
                va,
                bus,
                &mut cx.inline_off,
            );
            if let Ok(p) = &placed {
                for (i, a) in args.iter().enumerate() {
                    if let Arg::In(d) = a {
                        let o = cx.inline_off[i];
                        if o != NOT_INLINE {
                            let o = o as usize;
                            let dst = shadow
                                .get_mut(o..o + d.len())
                                .ok_or(FastRpcError::InvalidArgument)?;
                            dst.copy_from_slice(d);
                        }
                    }
                }
                // `layout` checked `pkt_size <= shadow.len() == region.len()`.
                write_at(&**region, 0, &shadow[..p.pkt_size])?;
            }
            placed
        };
        let placed = placed?;
        for k in 0..c.outs.len() {
            let i = c.outs[k].slot as usize;
            if c.outs[k].off != NOT_INLINE {
                c.outs[k].off = c.inline_off[i];
            }
        }
        let pd = self.pd();
        let id = CtxId::new((idx + 1) as u8, generation, pd);
        let msg = FastRpcMsg {
            pid: if kernel { 0 } else { self.client_id() }.into(),
            tid: tid.into(),
            ctx: id.0.into(),
            handle: handle.into(),
            sc: sc.0.into(),
            addr: if sc.is_empty() { 0 } else { bus }.into(),
            size: if sc.is_empty() { 0 } else { placed.msg_size }.into(),
        };
        c.sc = sc;
        c.handle = handle;
        c.tid = tid;
        c.pd = pd;
        c.payload = Some(lease);
        c.state = CtxState::InFlight;
        // The in-flight reference is taken before the message can reach the DSP.
        c.inflight = true;
        drop(c);
        // No fence here: `PacketChannel::send` is itself a release of every payload write
        // sequenced before it (its documented contract; rpmsg's virtqueue publication on
        // hardware, the link mutex in the simulator). A `fence(Release)` would pair with
        // nothing: the DSP reads no atomic of ours that this fence could order.
        if let Err(e) = ch.link.send(msg.as_bytes()) {
            let mut c = slot.lock();
            if c.inflight {
                c.inflight = false;
                c.state = CtxState::Failed(e);
            }
            return Err(e);
        }
        // A DSP loss that swept the table between our `up` check and the queueing above would
        // have missed this context: fail it ourselves. Correct because `inflight` was set under
        // the slot lock the sweep also takes (`crate::liveness`, model-checked there).
        ch.up.recheck_after_queue(&ch.ctx, idx);
        Ok(())
    }

    fn with_ctx<R>(
        &self,
        t: &InvokeTicket,
        f: impl FnOnce(&mut crate::context::Ctx) -> Result<R>,
    ) -> Result<R> {
        let slot = self
            .inner
            .ch
            .ctx
            .slot(t.idx)
            .ok_or(FastRpcError::InvalidArgument)?;
        let mut c = slot.lock();
        if c.generation != t.generation || !c.owner {
            return Err(FastRpcError::InvalidArgument);
        }
        f(&mut c)
    }

    /// Whether the DSP answered. `Err` if the call failed without an answer (DSP restart:
    /// `RemoteReset`; teardown: `ChannelDown`). Drains pull-style links first, at most
    /// [`RX_BUDGET`](crate::channel::RX_BUDGET) datagrams (a DSP that keeps sending cannot keep
    /// the caller; the rest is taken by the next call).
    pub fn poll(&self, t: &InvokeTicket) -> Result<bool> {
        self.inner.ch.poll_rx();
        self.with_ctx(t, |c| match c.state {
            CtxState::Done(_) => Ok(true),
            CtxState::Failed(e) => Err(e),
            _ => Ok(false),
        })
    }

    /// The DSP's status for a finished call: `Ok` for `AEE_SUCCESS`, else `Aee`.
    pub fn status(&self, t: &InvokeTicket) -> Result<()> {
        self.with_ctx(t, |c| match c.state {
            CtxState::Done(0) => Ok(()),
            CtxState::Done(r) => Err(FastRpcError::Aee(AeeError(r))),
            CtxState::Failed(e) => Err(e),
            _ => Err(FastRpcError::InvalidArgument),
        })
    }

    /// Whether completions arrive by callback (so a registered waker fires); with a pull-style
    /// link the caller must keep polling.
    pub fn wakes(&self) -> bool {
        // Relaxed: see `Channel::rx_handler`.
        self.inner.ch.push_rx.load(Ordering::Relaxed)
    }

    /// Ask for `w` to be woken when the call finishes.
    pub fn register_waker(&self, t: &InvokeTicket, w: &Waker) -> Result<()> {
        self.with_ctx(t, |c| {
            match &mut c.waker {
                Some(old) => old.clone_from(w),
                None => c.waker = Some(w.clone()),
            }
            Ok(())
        })
    }

    /// Copy out-buffer `k` (0-based among out-buffers) of a finished call into `dst`; returns
    /// its length `min(asked, DSP-written)`. `TooLarge` if `dst` is shorter. For a shared
    /// out-buffer nothing is copied (the data is in the buffer; `dst` may be empty).
    pub fn read_out(&self, t: &InvokeTicket, k: usize, dst: &mut [u8]) -> Result<usize> {
        let ch = &self.inner.ch;
        self.with_ctx(t, |c| {
            if !matches!(c.state, CtxState::Done(_)) {
                return Err(FastRpcError::InvalidArgument);
            }
            let rec = *c.outs.get(k).ok_or(FastRpcError::InvalidArgument)?;
            let sc = c.sc;
            let lease = c.payload.as_mut().ok_or(FastRpcError::InvalidArgument)?;
            // No fence: the DSP's payload writes are ordered before its response by the
            // `PacketChannel` contract (receipt is an acquire of everything the DSP wrote
            // before sending), and we observed the response under this context's lock.
            let (region, shadow) = lease.parts();
            let meta = MetaOffsets::new(sc.len()).end;
            // Parse a private copy of the metadata (read once, then checked): the DSP may
            // still be writing the region if it is misbehaving.
            let shadow = shadow
                .get_mut(..meta)
                .ok_or(FastRpcError::InvalidArgument)?;
            read_at(&**region, 0, shadow)?;
            let v = MetaView::parse(sc, shadow)?;
            let dsp_len = v.rpra(rec.slot as usize)?.len.get();
            if dsp_len > rec.len {
                Counters::bump(&ch.counters.protocol_errors);
            }
            let n = dsp_len.min(rec.len) as usize;
            if rec.off != NOT_INLINE {
                let dst = dst.get_mut(..n).ok_or(FastRpcError::TooLarge)?;
                let o = usize::try_from(rec.off).map_err(|_| ProtocolError::OutOfRange)?;
                read_at(&**region, o, dst).map_err(|_| ProtocolError::OutOfRange)?;
            }
            Ok(n)
        })
    }

    /// The caller is done: walk the fd list (entries must be descriptors this call passed;
    /// others are counted), then drop the caller's reference.
    pub fn finish(&self, t: InvokeTicket) {
        let ch = &self.inner.ch;
        let _ = self.with_ctx(&t, |c| {
            let sc = c.sc;
            let crate::context::Ctx {
                state,
                payload,
                maps,
                ..
            } = c;
            if let (CtxState::Done(_), Some(lease)) = (*state, payload.as_mut()) {
                if sc.is_empty() {
                    return Ok(());
                }
                let (region, shadow) = lease.parts();
                let meta = MetaOffsets::new(sc.len()).end;
                // A private copy of the metadata, as in `read_out`.
                let Some(shadow) = shadow.get_mut(..meta) else {
                    return Ok(());
                };
                if read_at(&**region, 0, shadow).is_err() {
                    return Ok(());
                }
                let Ok(v) = MetaView::parse(sc, shadow) else {
                    return Ok(());
                };
                let _ = v.for_each_fd(|fd| {
                    if !maps.iter().any(|b| b.fd() as u64 == fd) {
                        Counters::bump(&ch.counters.protocol_errors);
                    }
                });
            }
            Ok(())
        });
        ch.ctx.drop_owner(t.idx, t.generation, false);
    }

    /// The caller gives up (timeout, signal). The context keeps its payload and maps until the
    /// DSP answers or the session is torn down. Counted as a timeout.
    pub fn abandon(&self, t: InvokeTicket) {
        self.end(t, TxOutcome::TimedOut);
    }

    /// End a call with the outcome of waiting for it (pick it with [`TxOutcome::after_wait`]):
    /// `Done` finishes it ([`Session::finish`]); `TimedOut` abandons it, counted as a timeout;
    /// `Cancelled` abandons it uncounted. An abandoned context keeps its payload and maps until
    /// the DSP answers or the session is torn down.
    pub fn end(&self, t: InvokeTicket, outcome: TxOutcome) {
        match outcome {
            TxOutcome::Done => self.finish(t),
            TxOutcome::TimedOut | TxOutcome::Cancelled => {
                if outcome == TxOutcome::TimedOut {
                    Counters::bump(&self.inner.ch.counters.timed_out);
                }
                self.inner.ch.ctx.drop_owner(t.idx, t.generation, true);
            }
        }
    }

    /// Wait, as this session's [`CallWait`] says, until the DSP answered `t`, the call failed
    /// (`Err`), or `deadline` passed (`Err(Timeout)`). Does not end the call.
    pub fn wait_for(&self, t: &InvokeTicket, deadline: Deadline) -> Result<()> {
        let w = &self.wait;
        let done = wait_until(
            || self.poll(t),
            |waker| self.wakes() && self.register_waker(t, waker).is_ok(),
            w.clock(),
            deadline,
            w.wait(),
        )?;
        if done {
            Ok(())
        } else {
            Err(FastRpcError::Timeout)
        }
    }

    /// Blocking call: start, wait as the session's [`CallWait`] says, copy out-buffers back,
    /// finish. On timeout the call is abandoned (buffers kept until the DSP answers).
    pub fn invoke(&self, handle: u32, method: u32, args: &mut [Arg<'_>]) -> Result<()> {
        self.invoke_inner(handle, method, args, false, None)
    }

    /// [`Session::invoke`] for thread `tid` that resumes this thread's abandoned call of the
    /// same method instead of re-sending it (see [`Session::start_or_resume`]).
    pub fn invoke_resumable(
        &self,
        handle: u32,
        method: u32,
        args: &mut [Arg<'_>],
        tid: i32,
    ) -> Result<()> {
        self.invoke_inner(handle, method, args, false, Some(tid))
    }

    pub(crate) fn invoke_inner(
        &self,
        handle: u32,
        method: u32,
        args: &mut [Arg<'_>],
        kernel: bool,
        resume_tid: Option<i32>,
    ) -> Result<()> {
        let t = match resume_tid {
            Some(tid) => self.start_or_resume(handle, method, args, tid)?.0,
            None => self.start_inner(handle, method, args, 0, kernel)?,
        };
        let waited = self.wait_for(&t, self.wait.deadline());
        if let Err(e) = waited {
            self.end(t, TxOutcome::after_wait(&Err(e.into())));
            return Err(e);
        }
        let st = self.status(&t);
        let mut r = st;
        if st.is_ok() {
            let mut k = 0;
            for a in args.iter_mut() {
                match a {
                    Arg::Out(d) => {
                        if let Err(e) = self.read_out(&t, k, d) {
                            r = Err(e);
                        }
                        k += 1;
                    }
                    Arg::OutLen { .. } | Arg::OutShared { .. } => k += 1,
                    _ => {}
                }
            }
        }
        self.end(t, TxOutcome::Done);
        r
    }

    /// Tear the session down: refuse new calls, fail calls in flight (`ChannelDown`), wait for
    /// callers inside the API until `deadline`, release everything.
    pub fn shutdown(&self, deadline: Deadline) -> Result<()> {
        let clock: &dyn Clock = self.wait.clock();
        let s = &*self.inner;
        s.lc.begin_shutdown();
        s.ch.ctx
            .fail_inflight(Some(s.index), FastRpcError::ChannelDown);
        let r = s.lc.wait_idle(clock, deadline, || {});
        s.ch.ctx.reap();
        r.map_err(|_| FastRpcError::Timeout)
    }

    /// Whether the session still admits calls.
    pub fn is_open(&self) -> bool {
        self.inner.lc.is_ready()
    }

    /// The channel's counters (pool fields: this session's payload buffers).
    pub fn stats(&self) -> fwipc_transport_api::Stats {
        let ch = &self.inner.ch;
        ch.ctx.reap();
        ch.counters.snapshot(
            self.inner.payloads.capacity(),
            self.inner.payloads.free_count(),
        )
    }
}
