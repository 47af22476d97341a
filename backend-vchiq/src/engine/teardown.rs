//! Clean teardown (docs/protocols/vchiq.md §6, §9 item 4): remove every service (CLOSE handshake,
//! bulks ABORTED), poll until the peer answered or the caller's deadline passed, then mark the
//! instance Dead. The region is never "handed back": a slave dropped with bulks still queued leaks
//! their buffers rather than free memory the VPU may still DMA into.

use core::time::Duration;

use fwipc_transport_api::Deadline;

use crate::config::Role;
use crate::engine::vchiq::{PendingEv, Vchiq};
use crate::engine::waiting::WAIT_NAP;
use crate::error::{Result, VchiqError};

impl Vchiq {
    /// Tear down: close and remove every service, poll (pausing the configured way,
    /// [`crate::Config::wait`]) until all are gone or `timeout` passed; leftovers are then aborted
    /// locally. Every handler sees its ABORTED bulks and
    /// CLOSED. Afterwards every call fails with `Shutdown`. `Timeout` if the peer did not answer
    /// in time (the instance is Dead either way). Idempotent.
    pub fn shutdown(&self, timeout: Duration) -> Result {
        if self.check_alive().is_err() {
            return Ok(());
        }
        let mut result = Ok(());
        let deadline = Deadline::after(&*self.clock, timeout);
        let mut polls: u32 = 0;
        loop {
            let handles = self.all_handles();
            if handles.is_empty() {
                break;
            }
            for h in handles {
                // Retry (no slot for the CLOSE) is retried on the next round.
                let _ = self.remove_service(h);
            }
            // The deadline is checked before every poll, and each poll is bounded by its budget
            // (`POLL_MAX_ROUNDS`/`POLL_MAX_MSGS`): a peer that keeps signalling or keeps
            // publishing PADDING cannot hold the teardown past the deadline by more than one
            // bounded poll.
            if deadline.expired(&*self.clock) {
                log::warn!(target: "vchiq", "{:?}: shutdown: peer did not complete the closes", self.role);
                self.force_close_all();
                result = Err(VchiqError::Timeout);
                break;
            }
            self.poll();
            if self.all_handles().is_empty() {
                break;
            }
            polls = polls.saturating_add(1);
            self.cfg.wait.pause(polls, WAIT_NAP);
        }
        // Deliver the last CLOSED/ABORTED events through the normal (single-poller) path; one
        // bounded poll.
        self.poll();
        self.mark_dead();
        log::debug!(target: "vchiq", "{:?}: shut down", self.role);
        result
    }

    /// The peer is gone: complete every service locally.
    fn force_close_all(&self) {
        let mut g = self.inner.lock();
        for port in 0..g.services.len() {
            if g.services[port].is_none() {
                continue;
            }
            if self.role == Role::Slave {
                // The master may still hold our pagelists: do not hand the buffers back.
                if let Some(Some(s)) = g.services.get_mut(port) {
                    for q in [&mut s.tx, &mut s.rx] {
                        for e in q.local.drain(..) {
                            log::warn!(target: "vchiq", "leaking a bulk buffer the peer may still access");
                            core::mem::forget(e.buf);
                        }
                    }
                }
            } else {
                self.abort_local_bulks(&mut g, port);
            }
            if let Some(s) = g.services[port].take() {
                Self::push_event(&mut g, &s, PendingEv::Closed);
                g.forget_handler(&s.handler);
            }
        }
    }
}

impl Drop for Vchiq {
    fn drop(&mut self) {
        if self.role != Role::Slave {
            return;
        }
        let g = self.inner.get_mut();
        for s in g.services.iter_mut().flatten() {
            for q in [&mut s.tx, &mut s.rx] {
                for e in q.local.drain(..) {
                    log::warn!(target: "vchiq", "dropped with a bulk in flight: leaking its buffer");
                    core::mem::forget(e.buf);
                }
            }
        }
    }
}
