//! One channel per DSP domain: the datagram endpoint, the channel-wide context table (ids are
//! per channel, as in Linux), the table of sessions (compute context banks) and the receive path.

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;

use fwipc_transport_api::{Counters, Stats};

use crate::call_wait::CallWait;
use crate::context::{ContextTable, PayloadPool, RxOutcome, MAX_CONTEXTS};
use crate::domain::Domain;
use crate::error::{FastRpcError, Result};
use crate::liveness::Liveness;
use crate::mem::DmaHal;
use crate::packet::PacketChannel;
use crate::session::{Session, SessionInner};
use crate::wire::{self, CtxIdExt};

/// `FASTRPC_MAX_SESSIONS` (14 since 2022).
pub const MAX_SESSIONS: usize = 14;
/// Largest response datagram we read (a v2 response is 24 bytes; anything longer is malformed).
const RX_BUF: usize = 64;

/// Datagrams one [`Channel::poll_rx`] (and so one [`Session::poll`]) takes at most from a
/// pull-style link. A well-behaved DSP has at most one response per context outstanding, so it
/// never meets the budget; a DSP that keeps sending cannot keep the caller: the rest stays in
/// the link for the next call.
pub const RX_BUDGET: usize = MAX_CONTEXTS;

/// A compute context bank from the DT: stream id and `qcom,nsessions` (clones sharing it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bank {
    /// Stream id (`reg`): rides in bits 32..63 of bus addresses.
    pub sid: u32,
    /// Sessions sharing this bank (≥ 1).
    pub nsessions: u32,
}

/// Channel setup. Everything the steady state needs is allocated from this at setup.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// The DSP domain.
    pub domain: Domain,
    /// Context banks; expanded by `nsessions` and capped at [`MAX_SESSIONS`] in total.
    pub banks: Vec<Bank>,
    /// Invoke contexts of the channel (1..=255).
    pub contexts: usize,
    /// Payload buffers per session (calls one session may have in flight).
    pub payloads_per_session: usize,
    /// Size of each payload buffer (a page multiple).
    pub payload_size: usize,
    /// Largest argument count per call.
    pub max_args: usize,
    /// The channel is secure (no `qcom,non-secure-domain`): it also has a `-secure` node, and
    /// clients of its plain node may only create unsigned PDs.
    pub secure: bool,
}

impl ChannelConfig {
    /// A small default for `domain`: one bank (sid 1) with 4 sessions, 64 contexts, 16
    /// payloads of 16 KiB per session, 16 arguments per call.
    pub fn new(domain: Domain) -> Self {
        ChannelConfig {
            domain,
            banks: alloc::vec![Bank {
                sid: 1,
                nsessions: 4
            }],
            contexts: 64,
            payloads_per_session: 16,
            payload_size: 16 * 1024,
            max_args: 16,
            secure: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct SessionSlot {
    sid: u32,
    in_use: bool,
}

pub(crate) struct ChannelInner {
    pub(crate) cfg: ChannelConfig,
    pub(crate) link: Arc<dyn PacketChannel>,
    pub(crate) hal: Arc<dyn DmaHal>,
    pub(crate) ctx: ContextTable,
    sessions: Mutex<Vec<SessionSlot>>,
    pub(crate) counters: Counters,
    /// The DSP side is up (cleared on remote loss until it comes back); see `crate::liveness`.
    pub(crate) up: Liveness,
    /// Responses are pushed by an rx callback (see [`Channel::rx_handler`]), so completions
    /// can wake waiters; with a pull-style link they are only seen when someone polls.
    pub(crate) push_rx: AtomicBool,
    /// GET_DSP_INFO attributes, fetched once per channel.
    pub(crate) dsp_info: Mutex<Option<alloc::boxed::Box<[u32; crate::capability::DSP_ATTRIBUTES]>>>,
}

/// A FastRPC channel to one DSP. Cheap to clone.
#[derive(Clone)]
pub struct Channel {
    pub(crate) inner: Arc<ChannelInner>,
}

impl Channel {
    /// Set up a channel over `link`, allocating DSP memory through `hal`.
    pub fn new(
        cfg: ChannelConfig,
        link: Arc<dyn PacketChannel>,
        hal: Arc<dyn DmaHal>,
    ) -> Result<Self> {
        if cfg.contexts == 0
            || cfg.contexts > MAX_CONTEXTS
            || cfg.payloads_per_session == 0
            || cfg.payloads_per_session > usize::from(u16::MAX)
            || cfg.max_args == 0
            || cfg.max_args > 540
            || cfg.payload_size < wire::metalen(cfg.max_args)
        {
            return Err(FastRpcError::InvalidArgument);
        }
        // Expand banks by nsessions, capped at the fixed table size (the 2022 overrun lesson).
        let mut sessions = Vec::with_capacity(MAX_SESSIONS);
        for b in &cfg.banks {
            if b.nsessions == 0 || b.sid == 0 {
                return Err(FastRpcError::InvalidArgument);
            }
            for _ in 0..b.nsessions {
                if sessions.len() == MAX_SESSIONS {
                    log::warn!("fastrpc: more than {MAX_SESSIONS} sessions configured, capped");
                    break;
                }
                sessions.push(SessionSlot {
                    sid: b.sid,
                    in_use: false,
                });
            }
        }
        if sessions.is_empty() {
            return Err(FastRpcError::InvalidArgument);
        }
        let ctx = ContextTable::new(cfg.contexts, cfg.max_args)?;
        Ok(Channel {
            inner: Arc::new(ChannelInner {
                cfg,
                link,
                hal,
                ctx,
                sessions: Mutex::new(sessions),
                counters: Counters::default(),
                up: Liveness::new(),
                push_rx: AtomicBool::new(false),
                dsp_info: Mutex::new(None),
            }),
        })
    }

    /// The domain.
    pub fn domain(&self) -> Domain {
        self.inner.cfg.domain
    }

    /// Open a session on the channel's main node (`fastrpc-<domain>-secure` for a secure
    /// channel, `fastrpc-<domain>` otherwise): the first free one, `Busy` when none is (nothing
    /// leaked). Allocates the session's payload buffers on its context bank.
    /// Its blocking calls wait as `wait` says ([`Session::with_wait`] makes a handle that
    /// waits otherwise).
    pub fn open_session(&self, wait: CallWait) -> Result<Session> {
        self.open(self.inner.cfg.secure, wait)
    }

    /// Open a session on the plain (non-secure) node of a secure channel: such a client may
    /// only create unsigned PDs.
    pub fn open_session_nonsecure(&self, wait: CallWait) -> Result<Session> {
        self.open(false, wait)
    }

    fn open(&self, secure_node: bool, wait: CallWait) -> Result<Session> {
        let (index, sid) = {
            let mut s = self.inner.sessions.lock();
            let Some((i, slot)) = s.iter_mut().enumerate().find(|(_, x)| !x.in_use) else {
                return Err(FastRpcError::Busy);
            };
            slot.in_use = true;
            (i, slot.sid)
        };
        let cfg = &self.inner.cfg;
        let mut regions = Vec::with_capacity(cfg.payloads_per_session);
        for _ in 0..cfg.payloads_per_session {
            match self.inner.hal.alloc(sid, cfg.payload_size) {
                Some(r) => regions.push(r),
                None => {
                    self.inner.release_session_slot(index);
                    return Err(FastRpcError::NoMemory);
                }
            }
        }
        let s = Session::new(
            self.inner.clone(),
            index as u16,
            sid,
            PayloadPool::new(regions),
            wait,
        );
        s.set_node(secure_node, self.inner.cfg.secure);
        Ok(s)
    }

    /// Sessions open right now.
    pub fn sessions_in_use(&self) -> usize {
        self.inner
            .sessions
            .lock()
            .iter()
            .filter(|s| s.in_use)
            .count()
    }

    /// The rx callback: one datagram from the DSP. Safe to call from any context (it never
    /// frees memory; see [`crate::context`]).
    pub fn handle_packet(&self, bytes: &[u8]) {
        self.inner.handle_packet(bytes)
    }

    /// A callback for push-style links, holding the channel weakly.
    pub fn rx_handler(&self) -> impl Fn(&[u8]) + Send + Sync + 'static {
        // Relaxed: a capability flag read by `register_waker`; no data is published with it.
        self.inner.push_rx.store(true, Ordering::Relaxed);
        let w: Weak<ChannelInner> = Arc::downgrade(&self.inner);
        move |b: &[u8]| {
            if let Some(c) = w.upgrade() {
                c.handle_packet(b)
            }
        }
    }

    /// Drain datagrams from a pull-style link, at most [`RX_BUDGET`] per call. Returns how many
    /// were taken.
    pub fn poll_rx(&self) -> usize {
        self.inner.poll_rx()
    }

    /// The DSP went away (rpmsg remove / subsystem restart): every pending call finishes with
    /// `RemoteReset`, new calls fail with `ChannelDown` until [`Channel::remote_up`].
    pub fn remote_down(&self) {
        // Clear `up`, then sweep every slot under its lock. No new call slips in after the
        // sweep because of those slot locks (a starter sets `inflight` under its slot lock and
        // re-checks `up` after queueing), not because of any ordering on `up`: see
        // `crate::liveness` and its loom model.
        let n = self.inner.up.down_and_sweep(&self.inner.ctx);
        log::warn!(
            "fastrpc {}: DSP down, {n} call(s) failed",
            self.domain().label()
        );
        self.inner.ctx.reap();
    }

    /// The DSP is back (re-probe).
    pub fn remote_up(&self) {
        self.inner.up.set_up();
    }

    /// Finish deferred releases.
    pub fn reap(&self) -> usize {
        self.inner.ctx.reap()
    }

    /// Channel-wide counters (pool fields: contexts).
    pub fn stats(&self) -> Stats {
        self.inner.ctx.reap();
        self.inner
            .counters
            .snapshot(self.inner.ctx.capacity(), self.inner.ctx.free_count())
    }

    /// Contexts kept only because the DSP may still use them.
    pub fn zombie_contexts(&self) -> usize {
        self.inner.ctx.zombies()
    }
}

impl ChannelInner {
    pub(crate) fn release_session_slot(&self, index: usize) {
        if let Some(s) = self.sessions.lock().get_mut(index) {
            s.in_use = false;
        }
    }

    pub(crate) fn poll_rx(&self) -> usize {
        let mut buf = [0u8; RX_BUF];
        let mut n = 0;
        while n < RX_BUDGET {
            let Some(len) = self.link.try_recv(&mut buf) else {
                break;
            };
            n += 1;
            if len > RX_BUF {
                Counters::bump(&self.counters.protocol_errors);
                continue;
            }
            self.handle_packet(&buf[..len]);
        }
        if n == RX_BUDGET {
            log::debug!("fastrpc: rx budget of {RX_BUDGET} datagrams met; the rest waits");
        }
        n
    }

    pub(crate) fn handle_packet(&self, bytes: &[u8]) {
        let rsp = match wire::parse_rsp(bytes) {
            Ok(r) => r,
            Err(e) => {
                log::debug!("fastrpc: dropped malformed response ({e})");
                Counters::bump(&self.counters.protocol_errors);
                return;
            }
        };
        let counters = &self.counters;
        self.ctx
            .complete(rsp.ctx_id(), rsp.retval.get(), |o| match o {
                RxOutcome::Completed => Counters::bump(&counters.completed),
                RxOutcome::Late => Counters::bump(&counters.late_replies),
                RxOutcome::Duplicate => Counters::bump(&counters.duplicate_replies),
                RxOutcome::Unknown => {
                    log::debug!("fastrpc: response for unknown context {:#x}", rsp.ctx.get());
                    Counters::bump(&counters.unknown_replies)
                }
                // PD bits that do not match the request: a corrupted header.
                RxOutcome::BadPd => Counters::bump(&counters.protocol_errors),
            });
    }
}

#[doc(hidden)]
pub(crate) fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<Channel>();
    f::<SessionInner>();
}
