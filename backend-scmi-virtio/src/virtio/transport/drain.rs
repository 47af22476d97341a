//! Taking what the device returned: the cmdq and eventq drains (each bounded by one ring's
//! worth, see [`ScmiVirtio`]'s "Budgets"), reply validation, and the backlog flag.

use core::sync::atomic::Ordering;

use fwipc_transport_api::shared_mem::copy_from_shared;
use fwipc_transport_api::{Counters, Error};
use virtio_drivers::transport::Transport as VirtioTransport;
use virtio_drivers::{BufferDirection, Hal};

use super::{ScmiVirtio, State};
use crate::virtio::eventq::EvReturn;
use crate::virtio::features::EVENTQ;
use crate::virtio::parse::{check_reply_header, cmdq_slot, ReplyError};
use crate::virtio::ring::SplitRing;
use crate::virtio::slot::{Outcome, Owner, PollStatus, Slot};

/// Used entries one drain of `ring` takes at most: one ring's worth. A well-behaved device never
/// has more outstanding (every used entry returns a buffer we posted, and a drain posts none
/// except to replace a malformed event), so only a device that keeps publishing meets it.
fn drain_budget<H: Hal>(ring: &SplitRing<H>) -> usize {
    usize::from(ring.size())
}

impl<H: Hal, T: VirtioTransport> ScmiVirtio<H, T> {
    /// Give back to the driver a chain the device returned (or that a reset took back):
    /// un-share both areas. The slot must be device-owned.
    pub(in crate::virtio) fn unshare_slot(&self, slot: &Slot, i: usize) {
        // The caller's handle when it still has one (no lookup, no count to take and drop); a
        // lookup for a transfer the caller gave up on.
        let looked_up;
        let buf = match slot.local.as_ref() {
            Some(b) => b,
            None => match self.pool.get(i as u32) {
                Some(b) => {
                    looked_up = b;
                    &looked_up
                }
                None => {
                    log::error!("virtio-scmi: slot {i} device-owned but not allocated");
                    return;
                }
            },
        };
        let (req, resp) = self.areas(Self::base_ptr(buf), slot.req_len);
        // SAFETY: these are the areas shared in `send` (same buffer, same lengths, addresses
        // returned by `share` then); the device returned the chain or was reset, so it no
        // longer accesses them. The pool buffer never moves.
        unsafe {
            H::unshare(slot.shared[1], resp, BufferDirection::DeviceToDriver);
            H::unshare(slot.shared[0], req, BufferDirection::DriverToDevice);
        }
    }

    /// Process the used cmdq entries, at most one ring's worth (`drain_budget`). Runs under the
    /// channel lock, from the IRQ path or a poller. `true` if the budget ran out (entries may be
    /// left; the caller flags them for the next pass).
    pub(in crate::virtio) fn drain_cmdq(&self, st: &mut State<H, T>) -> bool {
        let State {
            cmdq,
            slots,
            deferred,
            outstanding,
            stall,
            ..
        } = st;
        let Some(ring) = cmdq.as_mut() else {
            return false;
        };
        let mut budget = drain_budget(ring);
        loop {
            if budget == 0 {
                return true;
            }
            budget -= 1;
            let e = match ring.pop_used() {
                Ok(Some(e)) => {
                    // Whatever it returned, the device is consuming (see `stall.rs`).
                    stall.progress();
                    e
                }
                Ok(None) => break,
                Err(e) => {
                    // `RingError::IndexJump` (the only kind today): the ring resynchronised.
                    log::warn!("virtio-scmi: cmdq: {e}");
                    Counters::bump(&self.counters.protocol_errors);
                    continue;
                }
            };
            let Some(i) = cmdq_slot(e.id, slots.len()) else {
                log::warn!("virtio-scmi: cmdq used id {} is not a chain head", e.id);
                Counters::bump(&self.counters.protocol_errors);
                continue;
            };
            let slot = &mut slots[i];
            if !slot.device_owned() {
                log::warn!(
                    "virtio-scmi: cmdq chain {} returned but not in flight",
                    e.id
                );
                Counters::bump(&self.counters.duplicate_replies);
                continue;
            }
            self.unshare_slot(slot, i);
            *outstanding = outstanding.saturating_sub(1);
            if slot.owner == Owner::Abandoned {
                // Late reply of a transfer whose caller gave up: drop it, free buffer and token.
                log::debug!("virtio-scmi: late reply for token {} dropped", slot.token.0);
                Counters::bump(&self.counters.late_replies);
                slot.owner = Owner::Driver;
                slot.poll = PollStatus::NotPolled;
                let _ = self.tokens.release(slot.token);
                let _ = self.pool.reclaim(i as u32);
                continue;
            }
            slot.owner = Owner::Driver;
            slot.outcome = self.validate_reply(slot, e.len);
            if slot.poll == PollStatus::Polling {
                slot.poll = PollStatus::PollDone;
            }
            if let Some(w) = slot.waker.take() {
                deferred.push(w);
            }
            // Drop the device's reference; the caller's (`local`) keeps the buffer.
            let _ = self.pool.reclaim(i as u32);
        }
        false
    }

    /// Check a returned reply against what we sent (docs/protocols/scmi.md §8 items 3 and 4),
    /// counting a rejection.
    pub(in crate::virtio) fn validate_reply(&self, slot: &Slot, used_len: u32) -> Outcome {
        let Some(buf) = slot.local.as_ref() else {
            return Outcome::Failed(Error::Shutdown);
        };
        // With an in-place `Hal` the device can still write the buffer: copy the header out and
        // check the copy (docs/reliability.md, "Invariants" item 1).
        let mut hdr = [0u8; 4];
        // SAFETY: the response area starts at `req_cap` inside pool buffer `buf` (capacity
        // `req_cap + resp_cap`, resp_cap ≥ 8), which the caller's reference keeps alive; it is
        // reached only through the byte accessors of `shared_mem`.
        unsafe { copy_from_shared(Self::resp_ptr(buf, self.req_cap), &mut hdr) };
        let r = check_reply_header(slot.hdr, hdr, used_len, self.resp_cap);
        match r {
            Ok(len) => {
                Counters::bump(&self.counters.completed);
                Outcome::Reply { len }
            }
            Err(e) => {
                log::warn!(
                    "virtio-scmi: reply for token {} rejected: {e:?} (used length {used_len})",
                    slot.token.0
                );
                Counters::bump(if e == ReplyError::WrongToken {
                    &self.counters.unknown_replies
                } else {
                    &self.counters.protocol_errors
                });
                Outcome::Failed(Error::Protocol(e.protocol_error()))
            }
        }
    }

    /// Take the returned eventq buffers, at most one ring's worth (`drain_budget`). `true` if
    /// the budget ran out (entries may be left; the caller flags them for the next pass).
    pub(in crate::virtio) fn drain_eventq(&self, st: &mut State<H, T>) -> bool {
        let State {
            eventq, transport, ..
        } = st;
        let Some(q) = eventq.as_mut() else {
            return false;
        };
        let mut reposted = false;
        let mut budget = drain_budget(&q.ring);
        let mut exhausted = false;
        loop {
            if budget == 0 {
                exhausted = true;
                break;
            }
            budget -= 1;
            let e = match q.ring.pop_used() {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(e) => {
                    // `RingError::IndexJump` (the only kind today): the ring resynchronised.
                    log::warn!("virtio-scmi: eventq: {e}");
                    Counters::bump(&self.counters.protocol_errors);
                    continue;
                }
            };
            match q.take_used(e.id, e.len) {
                EvReturn::Queued => {}
                EvReturn::NotOwned => {
                    log::warn!(
                        "virtio-scmi: eventq buffer {} returned but not posted",
                        e.id
                    );
                    Counters::bump(&self.counters.protocol_errors);
                }
                EvReturn::Malformed(p) => {
                    log::warn!("virtio-scmi: malformed eventq message ({p})");
                    Counters::bump(&self.counters.protocol_errors);
                    reposted = true;
                }
            }
        }
        if reposted && q.ring.should_notify() {
            transport.notify(EVENTQ);
        }
        exhausted
    }

    /// A drain met its budget: flag the rest as an interrupt request, so the release of the
    /// channel lock (this caller's or the next one's) takes it; nothing is lost even when no
    /// further interrupt comes (with `EVENT_IDX` the device raises none while entries we have not
    /// consumed are pending).
    pub(in crate::virtio) fn flag_backlog(&self) {
        // Relaxed: set under the channel lock; the releasing holder reads it after its SeqCst
        // fence (irq_gate's Dekker handshake), and any later holder takes the lock after us.
        self.irq_pending.store(true, Ordering::Relaxed);
    }
}
