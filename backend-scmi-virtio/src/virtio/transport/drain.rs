//! Taking what the device returned: the cmdq and eventq drains (each bounded by one ring's
//! worth, see [`ScmiVirtio`]'s "Budgets"), reply validation, and the backlog flag.

use core::sync::atomic::Ordering;

use fwipc_transport_api::shared_mem::copy_from_shared;
use fwipc_transport_api::{Counters, Error, PoolBuf, ReplyOutcome, Result};
use virtio_drivers::transport::Transport as VirtioTransport;
use virtio_drivers::{BufferDirection, Hal};

use super::{ScmiVirtio, State};
use crate::virtio::eventq::{EvReturn, EventQueue};
use crate::virtio::features::EVENTQ;
use crate::virtio::parse::{check_reply_header, cmdq_slot};
use crate::virtio::ring::{RingError, SplitRing};
use crate::virtio::slot::ScmiPart;

/// Used entries one drain of `ring` takes at most: one ring's worth. A well-behaved device never
/// has more outstanding (every used entry returns a buffer we posted, and a drain posts none
/// except to replace a malformed event), so only a device that keeps publishing meets it.
fn drain_budget<H: Hal>(ring: &SplitRing<H>) -> usize {
    usize::from(ring.size())
}

impl<H: Hal, T: VirtioTransport> ScmiVirtio<H, T> {
    /// Give back to the driver a chain the device returned (or that a reset took back):
    /// un-share both areas of message buffer `buf`.
    pub(in crate::virtio) fn unshare(&self, buf: &PoolBuf, part: &ScmiPart) {
        let (req, resp) = self.areas(Self::base_ptr(buf), part.req_len);
        // SAFETY: these are the areas shared in `send` (same buffer, same lengths, addresses
        // returned by `share` then); the device returned the chain or was reset, so it no
        // longer accesses them. The pool buffer never moves.
        unsafe {
            H::unshare(part.shared[1], resp, BufferDirection::DeviceToDriver);
            H::unshare(part.shared[0], req, BufferDirection::DriverToDevice);
        }
    }

    /// Process the used cmdq entries, at most one ring's worth (`drain_budget`). Runs under the
    /// channel lock, from the IRQ path or a poller. `true` if the budget ran out (entries may be
    /// left; the caller flags them for the next pass).
    pub(in crate::virtio) fn drain_cmdq(&self, st: &mut State<H, T>) -> bool {
        let State {
            cmdq,
            table,
            deferred,
            outstanding,
            posted_at,
            used_seen,
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
            // The position of the element `pop_used` returns (see `State::used_seen`).
            let pos = *used_seen;
            let e = match ring.pop_used() {
                Ok(Some(e)) => {
                    *used_seen += 1;
                    // Whatever it returned, the device is consuming (see `stall.rs`).
                    stall.progress();
                    e
                }
                Ok(None) => break,
                Err(e) => {
                    // `RingError::IndexJump` (the only kind today): the ring resynchronised to
                    // the newest `size` elements, skipping the others.
                    if let RingError::IndexJump { claimed } = e {
                        *used_seen += u64::from(claimed.saturating_sub(ring.size()));
                    }
                    log::warn!("virtio-scmi: cmdq: {e}");
                    Counters::bump(&table.counters().protocol_errors);
                    continue;
                }
            };
            let Some(i) = cmdq_slot(e.id, self.max_msg) else {
                log::warn!("virtio-scmi: cmdq used id {} is not a chain head", e.id);
                Counters::bump(&table.counters().protocol_errors);
                continue;
            };
            if posted_at.get(i).is_some_and(|&p| pos < p) {
                // Published before this chain was made available (see `State::posted_at`):
                // not its completion; the chain stays with the device.
                log::warn!(
                    "virtio-scmi: cmdq used element {pos} for chain {} predates the chain",
                    e.id
                );
                Counters::bump(&table.counters().protocol_errors);
                continue;
            }
            // The table counts the outcome: a chain the device did not hold is a duplicate, the
            // late reply of an abandoned transfer frees its buffer and token.
            let (outcome, waker) = table.on_reply_at(
                i as u32,
                |buf, part| {
                    self.unshare(buf, part);
                    part.returned();
                },
                |buf, part| self.validate_reply(buf, part, e.len),
            );
            match outcome {
                ReplyOutcome::Duplicate => {
                    log::warn!(
                        "virtio-scmi: cmdq chain {} returned but not in flight",
                        e.id
                    );
                    continue;
                }
                ReplyOutcome::Late => {
                    log::debug!("virtio-scmi: late reply for message {i} dropped")
                }
                _ => {}
            }
            *outstanding = outstanding.saturating_sub(1);
            if let Some(w) = waker {
                deferred.push(w);
            }
        }
        false
    }

    /// Check a returned reply against what we sent (docs/protocols/scmi.md §8 items 3 and 4):
    /// its length, or the error the transfer fails with (the table counts either).
    pub(in crate::virtio) fn validate_reply(
        &self,
        buf: &PoolBuf,
        part: &ScmiPart,
        used_len: u32,
    ) -> Result<usize> {
        // With an in-place `Hal` the device can still write the buffer: copy the header out and
        // check the copy (docs/reliability.md, "Invariants" item 1).
        let mut hdr = [0u8; 4];
        // SAFETY: the response area starts at `req_cap` inside pool buffer `buf` (capacity
        // `req_cap + resp_cap`, resp_cap ≥ 8), which the table keeps reserved; it is reached
        // only through the byte accessors of `shared_mem`.
        unsafe { copy_from_shared(Self::resp_ptr(buf, self.req_cap), &mut hdr) };
        check_reply_header(part.hdr, hdr, used_len, self.resp_cap).map_err(|e| {
            log::warn!(
                "virtio-scmi: reply to header {:#x} rejected: {e:?} (used length {used_len})",
                part.hdr
            );
            Error::Protocol(e.protocol_error())
        })
    }

    /// Take the returned eventq buffers, at most one ring's worth (`drain_budget`). `true` if
    /// the budget ran out (entries may be left; the caller flags them for the next pass).
    pub(in crate::virtio) fn drain_eventq(&self, st: &mut State<H, T>) -> bool {
        let State {
            eventq,
            transport,
            table,
            ..
        } = st;
        let Some(q) = eventq.as_mut() else {
            return false;
        };
        let counters = table.counters();
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
                    Counters::bump(&counters.protocol_errors);
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
                    Counters::bump(&counters.protocol_errors);
                }
                EvReturn::Malformed(p) => {
                    log::warn!("virtio-scmi: malformed eventq message ({p})");
                    Counters::bump(&counters.protocol_errors);
                    reposted = true;
                }
            }
        }
        if reposted && q.ring.should_notify() {
            transport.notify(EVENTQ);
        }
        exhausted
    }

    /// Under the channel lock: take what the device returned on the eventq (flagging a met
    /// budget for the next pass), then run `f` over the eventq and the transport. `None` when
    /// there is no eventq (P2A not negotiated). The one opening of every eventq reader
    /// (`fetch_notification`, the datagram pump).
    pub(in crate::virtio) fn with_eventq<R>(
        &self,
        f: impl FnOnce(&mut EventQueue<H>, &mut T) -> R,
    ) -> Option<R> {
        let mut st = self.lock();
        if self.drain_eventq(&mut st) {
            self.flag_backlog();
        }
        let State {
            eventq, transport, ..
        } = &mut *st;
        eventq.as_mut().map(|q| f(q, &mut **transport))
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
