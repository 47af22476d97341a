//! The state a channel shares with its sessions: configuration, the datagram endpoint, the
//! channel-wide context table (ids are per channel, as in Linux), the session slots (compute
//! context banks), the counters and the receive path.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::AtomicBool;

use spin::Mutex;

use fwipc_transport_api::Counters;

use crate::channel::context::{ContextTable, RxOutcome, MAX_CONTEXTS};
use crate::channel::liveness::Liveness;
use crate::domain::Domain;
use crate::error::{FastRpcError, Result};
use crate::mem::DmaHal;
use crate::packet::PacketChannel;
use crate::wire::{self, CtxIdExt, DSP_ATTRIBUTES};

/// `FASTRPC_MAX_SESSIONS` (14 since 2022).
pub const MAX_SESSIONS: usize = 14;
/// Largest response datagram we read (a v2 response is 24 bytes; anything longer is malformed).
const RX_BUF: usize = 64;

/// Datagrams one [`Channel::poll_rx`](crate::Channel::poll_rx) (and so one
/// [`Session::poll`](crate::Session::poll)) takes at most from a
/// pull-style link. A well-behaved DSP has at most one response per context outstanding, so it
/// never meets the budget; a DSP that keeps sending cannot keep the caller: the rest stays in
/// the link for the next call.
pub const RX_BUDGET: usize = MAX_CONTEXTS;

/// A compute context bank from the DT: stream id and `qcom,nsessions` (clones sharing it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bank {
    /// Stream id (`reg`): rides in bits 32..63 of bus addresses.
    pub sid: u32,
    /// Sessions sharing this bank (≥ 1).
    pub nsessions: u32,
}

/// Channel setup. Everything the steady state needs is allocated from this at setup.
#[derive(Debug, Clone)]
#[non_exhaustive]
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

impl Bank {
    /// Bank `sid` shared by `nsessions` sessions.
    pub const fn new(sid: u32, nsessions: u32) -> Self {
        Bank { sid, nsessions }
    }
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

    /// The same with these context banks.
    #[must_use]
    pub fn with_banks(mut self, banks: Vec<Bank>) -> Self {
        self.banks = banks;
        self
    }

    /// The same with `contexts` invoke contexts.
    #[must_use]
    pub fn with_contexts(mut self, contexts: usize) -> Self {
        self.contexts = contexts;
        self
    }

    /// The same with `per_session` payload buffers of `size` bytes per session.
    #[must_use]
    pub fn with_payloads(mut self, per_session: usize, size: usize) -> Self {
        self.payloads_per_session = per_session;
        self.payload_size = size;
        self
    }

    /// The same with at most `max_args` arguments per call.
    #[must_use]
    pub fn with_max_args(mut self, max_args: usize) -> Self {
        self.max_args = max_args;
        self
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
    /// The invoke contexts; its counters are the channel's.
    pub(crate) ctx: ContextTable,
    sessions: Mutex<Vec<SessionSlot>>,
    /// The DSP side is up (cleared on remote loss until it comes back); see `crate::channel::liveness`.
    pub(crate) up: Liveness,
    /// Responses are pushed by an rx callback (see [`Channel::rx_handler`]), so completions
    /// can wake waiters; with a pull-style link they are only seen when someone polls.
    pub(crate) push_rx: AtomicBool,
    /// GET_DSP_INFO attributes, fetched once per channel.
    pub(crate) dsp_info: Mutex<Option<Box<[u32; DSP_ATTRIBUTES]>>>,
}

impl ChannelInner {
    /// Check `cfg` and set up everything the steady state needs.
    pub(crate) fn new(
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
        Ok(ChannelInner {
            cfg,
            link,
            hal,
            ctx,
            sessions: Mutex::new(sessions),
            up: Liveness::new(),
            push_rx: AtomicBool::new(false),
            dsp_info: Mutex::new(None),
        })
    }

    /// Take the first free session slot: its index and stream id.
    pub(crate) fn take_session_slot(&self) -> Option<(usize, u32)> {
        let mut s = self.sessions.lock();
        let (i, slot) = s.iter_mut().enumerate().find(|(_, x)| !x.in_use)?;
        slot.in_use = true;
        Some((i, slot.sid))
    }

    /// Sessions open right now.
    pub(crate) fn sessions_in_use(&self) -> usize {
        self.sessions.lock().iter().filter(|s| s.in_use).count()
    }

    pub(crate) fn release_session_slot(&self, index: usize) {
        if let Some(s) = self.sessions.lock().get_mut(index) {
            s.in_use = false;
        }
    }

    /// The channel's counters (the context table's).
    pub(crate) fn counters(&self) -> &Counters {
        self.ctx.counters()
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
                Counters::bump(&self.counters().protocol_errors);
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
                Counters::bump(&self.counters().protocol_errors);
                return;
            }
        };
        // Counted by the table: unknown ids, duplicates, late replies, and PD bits that do not
        // match the request (a corrupted header) as protocol errors.
        match self.ctx.complete(rsp.ctx_id(), rsp.retval.get()) {
            RxOutcome::Unknown => {
                log::debug!("fastrpc: response for unknown context {:#x}", rsp.ctx.get());
            }
            RxOutcome::BadPd => {
                log::debug!(
                    "fastrpc: response with foreign PD bits {:#x}",
                    rsp.ctx.get()
                );
            }
            RxOutcome::Completed | RxOutcome::Late | RxOutcome::Duplicate => {}
        }
    }
}
