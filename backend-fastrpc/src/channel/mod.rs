//! One channel per DSP domain: a [`Channel`] opens sessions on its context banks
//! ([`Channel::open_session`], defined with the session in `crate::session::open`) and takes the
//! DSP's responses (push-style [`Channel::rx_handler`] or pull-style [`Channel::poll_rx`]).
//! The state its sessions share is in `state`, the invoke contexts in `context`, the DSP-up
//! flag in `liveness`.

pub(crate) mod by_domain;
pub(crate) mod context;
pub(crate) mod liveness;
pub(crate) mod state;

use alloc::sync::{Arc, Weak};
use core::sync::atomic::Ordering;

use fwipc_transport_api::Stats;

use crate::channel::state::{ChannelConfig, ChannelInner};
use crate::domain::Domain;
use crate::error::Result;
use crate::mem::DmaHal;
use crate::packet::PacketChannel;

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
        Ok(Channel {
            inner: Arc::new(ChannelInner::new(cfg, link, hal)?),
        })
    }

    /// The domain.
    pub fn domain(&self) -> Domain {
        self.inner.cfg.domain
    }

    /// Sessions open right now.
    pub fn sessions_in_use(&self) -> usize {
        self.inner.sessions_in_use()
    }

    /// The rx callback: one datagram from the DSP. Safe to call from any context (it never
    /// frees memory; the context table defers every release to the waiting side).
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

    /// Drain datagrams from a pull-style link, at most [`RX_BUDGET`](crate::RX_BUDGET) per call. Returns how many
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
        // `crate::channel::liveness` and its loom model.
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
        self.inner.ctx.stats()
    }

    /// Contexts kept only because the DSP may still use them.
    pub fn zombie_contexts(&self) -> usize {
        self.inner.ctx.zombies()
    }
}

#[doc(hidden)]
pub(crate) fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<Channel>();
}
