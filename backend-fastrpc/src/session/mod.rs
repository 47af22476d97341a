//! A session (one compute context bank, one client): the invoke API.
//!
//! Split-phase like the transport API: [`Session::start`] lays the call out in a preallocated
//! payload buffer and queues the 40-byte message, [`Session::poll`] checks for the answer,
//! [`Session::read_out`] copies an out-buffer back (a DSP-written length above what was asked
//! fails the call: the length is never trusted), and [`Session::finish`] / [`Session::abandon`] drop the caller's
//! reference. [`Session::invoke`] is the blocking composition and [`Session::invoke_async`] the
//! future-returning one ([`InvokeFuture`]). Nothing on this path allocates.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use core::task::Waker;

use spin::Mutex;

use fwipc_transport_api::{wait_until, Clock, Counters, Deadline, Lifecycle, TxOutcome};

use crate::channel::context::{Ctx, CtxState, PayloadPool, Shadow};
use crate::channel::state::ChannelInner;
use crate::error::{AeeError, FastRpcError, Result};
use crate::mem::{read_at, SharedBuf};
use crate::session::arg::scalars_for;
use crate::session::proc_state::ProcState;
use crate::wire::payload::MetaView;
use crate::wire::{MetaOffsets, INIT_HANDLE};

pub(crate) mod arg;
mod call_wait;
mod capability;
mod future;
mod marshal;
mod open;
pub(crate) mod proc_state;
pub(crate) mod procctl;

/// The ticket of a call lives with the contexts it names; re-exported here, where calls are.
pub use crate::channel::context::InvokeTicket;
pub use arg::{Arg, PD_ROOT, PD_SENSORS, PD_USER};
pub use call_wait::CallWait;
pub use future::InvokeFuture;
pub use proc_state::PdKind;
pub use procctl::{ATTR_DEBUG, ATTR_UNSIGNED_MODULE};

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
        if let Some(t) = self.inner.ch.ctx.resume(self.inner.index, tid, handle, sc) {
            return Ok((t, true));
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
        // queueing (`crate::channel::liveness`).
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
        // A full table is counted in `busy` by the table.
        let t = ch.ctx.alloc(s.index)?;
        let call = marshal::Call {
            handle,
            sc,
            args,
            tid,
            kernel,
        };
        match self.build_and_send(&t, call) {
            // Counted as sent by the context table (`TransferTable::send_with`).
            Ok(()) => Ok(t),
            Err(e) => {
                if e == FastRpcError::Busy {
                    Counters::bump(&ch.counters().busy);
                }
                ch.ctx.drop_owner(&t, false);
                Err(e)
            }
        }
    }

    pub(crate) fn with_ctx<R>(
        &self,
        t: &InvokeTicket,
        f: impl FnOnce(CtxState, &mut Ctx) -> Result<R>,
    ) -> Result<R> {
        self.inner.ch.ctx.with(t, f)
    }

    /// Whether the DSP answered. `Err` if the call failed without an answer (DSP restart:
    /// `RemoteReset`; teardown: `ChannelDown`). Drains pull-style links first, at most
    /// [`RX_BUDGET`](crate::RX_BUDGET) datagrams (a DSP that keeps sending cannot keep
    /// the caller; the rest is taken by the next call).
    pub fn poll(&self, t: &InvokeTicket) -> Result<bool> {
        self.inner.ch.poll_rx();
        self.with_ctx(t, |state, _| match state {
            CtxState::Done(_) => Ok(true),
            CtxState::Failed(e) => Err(e),
            CtxState::InFlight => Ok(false),
        })
    }

    /// The DSP's status for a finished call: `Ok` for `AEE_SUCCESS`, else `Aee`.
    pub fn status(&self, t: &InvokeTicket) -> Result<()> {
        self.with_ctx(t, |state, _| Self::status_of(state))
    }

    /// [`Session::status`] of a context in `state`.
    fn status_of(state: CtxState) -> Result<()> {
        match state {
            CtxState::Done(0) => Ok(()),
            CtxState::Done(r) => Err(FastRpcError::Aee(AeeError(r))),
            CtxState::Failed(e) => Err(e),
            CtxState::InFlight => Err(FastRpcError::InvalidArgument),
        }
    }

    /// Whether completions arrive by callback (so a registered waker fires); with a pull-style
    /// link the caller must keep polling.
    pub fn wakes(&self) -> bool {
        // Relaxed: see `Channel::rx_handler`.
        self.inner.ch.push_rx.load(Ordering::Relaxed)
    }

    /// Ask for `w` to be woken when the call finishes.
    pub fn register_waker(&self, t: &InvokeTicket, w: &Waker) -> Result<()> {
        self.inner.ch.ctx.register_waker(t, w)
    }

    /// The caller is done: walk the fd list (entries must be descriptors this call passed;
    /// others are counted), then drop the caller's reference.
    pub fn finish(&self, t: InvokeTicket) {
        let ch = &self.inner.ch;
        // The walk and the end under one look at the context.
        ch.ctx.finish_with(&t, |state, c| {
            let sc = c.sc;
            let Ctx { payload, maps, .. } = c;
            if let (CtxState::Done(_), Some(lease)) = (state, payload.as_mut()) {
                if sc.is_empty() {
                    return;
                }
                let Some((region, shadow)) = lease.parts() else {
                    return;
                };
                // The fd list is the one part of the image the kept layout expects others to
                // write (`crate::wire::layout_cache`).
                let Shadow {
                    bytes: shadow,
                    region_current,
                    ..
                } = shadow;
                let off = MetaOffsets::new(sc.len());
                // A private copy of the fd list, and nothing else of the metadata: one word at
                // a time, each read once, up to the first zero word, at most `MAX_FDLIST` words
                // (the list's size). The walk below stops at the same zero word, so it sees
                // exactly the words read here (docs/protocols/fastrpc.md §12.8, §12.9).
                let Some(fds) = shadow.get_mut(off.fdlist..off.crclist) else {
                    return;
                };
                let mut listed = 0;
                for (k, w) in fds.chunks_exact_mut(8).enumerate() {
                    if read_at(&**region, off.fdlist + 8 * k, w).is_err() {
                        return;
                    }
                    if w.iter().all(|&b| b == 0) {
                        break;
                    }
                    listed = k + 1;
                }
                // The whole list the DSP wrote is in the image now: the next call with this
                // layout may rewrite only the DSP's words (`Shadow::region_current`).
                *region_current = true;
                // An empty list (the first word zero, every call that maps no fd): nothing
                // to check, and no need to parse the metadata to walk it.
                if listed == 0 {
                    return;
                }
                let Some(meta) = shadow.get(..off.end) else {
                    return;
                };
                let Ok(v) = MetaView::parse(sc, meta) else {
                    return;
                };
                let _ = v.for_each_fd(|fd| {
                    if !maps.iter().any(|b| b.fd() as u64 == fd) {
                        Counters::bump(&ch.counters().protocol_errors);
                    }
                });
            }
        });
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
                    Counters::bump(&self.inner.ch.counters().timed_out);
                }
                self.inner.ch.ctx.drop_owner(&t, true);
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
            |_| {},
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
        self.complete_answered(t, args)
    }

    /// End an answered call: the DSP's status, the out-buffers of `args` copied back (checked
    /// as [`Session::read_out`] says), then [`Session::finish`]. Shared by the blocking and the
    /// async invoke.
    pub(crate) fn complete_answered(&self, t: InvokeTicket, args: &mut [Arg<'_>]) -> Result<()> {
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
    /// callers inside the API until `deadline` (on the session's clock, pausing as its `Wait`
    /// says), release everything.
    pub fn shutdown(&self, deadline: Deadline) -> Result<()> {
        let clock: &dyn Clock = self.wait.clock();
        let s = &*self.inner;
        s.lc.begin_shutdown();
        // Callers inside the API cannot wake us: the wait for them pauses between looks as the
        // session's `Wait` says (a parker naps). Calls in flight end before and after it.
        let r = s.lc.drain(clock, deadline, self.wait.wait(), || {
            s.ch.ctx
                .fail_inflight(Some(s.index), FastRpcError::ChannelDown);
        });
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
        ch.ctx.stats_with_pool(
            self.inner.payloads.capacity(),
            self.inner.payloads.free_count(),
        )
    }
}
