//! The [`Transport`] implementation of [`ScmiVirtio`]: send, poll, fetch, mark done, wakers,
//! notifications, shutdown, statistics.

use core::ptr::NonNull;
use core::task::Waker;

use fwipc_transport_api::shared_mem::{copy_from_shared, copy_to_shared};
use fwipc_transport_api::{
    Caps, Counters, Error, Notification, ProtocolError, Request, Result, Stats, Ticket,
    TransferState, Transport, TxOutcome,
};
use virtio_drivers::transport::{DeviceStatus, Transport as VirtioTransport};
use virtio_drivers::{BufferDirection, Hal};

use super::{ScmiVirtio, State, STATUS_POLL_PERIOD};
use crate::header::{split_target, Header, HEADER_LEN};
use crate::virtio::features::{ScmiFeatures, CMDQ, EVENTQ};
use crate::virtio::parse::{sentinel_needed, RESP_OVERHEAD, RESP_UNWRITTEN};
use crate::virtio::ring::{Descriptor, DESC_F_NEXT, DESC_F_WRITE};
use crate::virtio::slot::{PollStatus, ScmiPart};

impl<H: Hal, T: VirtioTransport + Send> Transport for ScmiVirtio<H, T> {
    fn caps(&self) -> Caps {
        // Receive-only datagram endpoints per protocol (`datagram.rs`, docs/datagram.md): held
        // receive buffers, no one-way or zero-copy send, no names, no name service.
        let p2a = self.features.contains(ScmiFeatures::P2A_CHANNELS);
        Caps::new(self.max_msg, self.max_msg_size)
            .with_notifications(p2a)
            .with_polling(true)
            .with_rx_hold(p2a)
    }

    fn send(&self, req: &Request<'_>) -> Result<Ticket> {
        let (proto, msg) = split_target(req.target).ok_or(Error::InvalidArgument)?;
        let len = req.payload.len();
        if len > self.max_msg_size {
            return Err(Error::TooLarge);
        }
        // The transfer table (pool and tokens with it) is only touched under the channel lock,
        // so the interrupt pass (which returns buffers and tokens) never waits for a lock of its
        // own (irq_gate).
        let mut st = self.lock();
        // Admitted under the channel lock, which shutdown takes before it ends what is in
        // flight (`shutdown_impl`): no users count to raise and drop per call.
        self.lc.admit_locked()?;
        if self.check_stall(&mut st) {
            return Err(Error::Shutdown);
        }
        let req_len = HEADER_LEN + len;
        let State {
            transport,
            cmdq,
            table,
            outstanding,
            posted_at,
            used_seen,
            ..
        } = &mut *st;
        let dead = cmdq.is_none();
        let mut share_failed = false;
        let mut posted = [0; 2];
        let started = table.start_with(|token, buf| {
            if dead {
                return Err(Error::Shutdown);
            }
            let hdr = Header::command(proto, msg, token.0 as u16).encode();
            // Once per send (the slot's address, read without its lock).
            let base = buf.dma_ptr();
            // SAFETY: header + payload (`len` ≤ max_msg_size) fit the request area and a header
            // word the response area of pool buffer `buf`, which the table reserved for us;
            // with an in-place `Hal` that memory is device-reachable, so it is read and written
            // only through the accessors of `shared_mem` (docs/reliability.md, "Invariants"
            // item 1).
            unsafe {
                copy_to_shared(base, &hdr.to_le_bytes());
                copy_to_shared(base.wrapping_add(HEADER_LEN), req.payload);
                // The response area still holds the last response's header (or the sentinel,
                // or zeros): a chain the device returns without writing it fails the header
                // check with it in place, unless it is the very header sent now (the same
                // token, protocol and message, the token having wrapped). Only then is the
                // sentinel written, so the area's line is not taken from the device's cache
                // on every send (docs/protocols/scmi.md §8 item 4).
                let resp = base.wrapping_add(self.req_cap);
                let mut old = [0u8; 4];
                copy_from_shared(resp, &mut old);
                if sentinel_needed(u32::from_le_bytes(old), hdr) {
                    copy_to_shared(resp, &RESP_UNWRITTEN.to_le_bytes());
                }
            }
            let (req_area, resp_area) =
                self.areas(NonNull::new(base).unwrap_or(NonNull::dangling()), req_len);
            // SAFETY: both areas lie inside the pool buffer, which never moves and which the
            // table reserved for this transfer. From here until the device returns the chain
            // (`drain_cmdq`) or is reset (`reset_and_reclaim`) we do not touch them: the table
            // keeps the buffer lent to the device even if the caller gives up.
            let shared = unsafe {
                [
                    H::share(req_area, BufferDirection::DriverToDevice),
                    H::share(resp_area, BufferDirection::DeviceToDriver),
                ]
            };
            if shared.contains(&0) {
                // A bouncing Hal out of shared memory (physical address 0 is virtio-drivers'
                // failure value): undo and report back-pressure; nothing was posted.
                for (p, (area, dir)) in shared.iter().zip([
                    (req_area, BufferDirection::DriverToDevice),
                    (resp_area, BufferDirection::DeviceToDriver),
                ]) {
                    if *p != 0 {
                        // SAFETY: shared just above with these arguments; the device never saw
                        // it.
                        unsafe { H::unshare(*p, area, dir) };
                    }
                }
                share_failed = true;
                return Err(Error::Busy);
            }
            posted = shared;
            Ok(ScmiPart {
                poll: match req.completion {
                    fwipc_transport_api::Completion::Polled => PollStatus::Polling,
                    fwipc_transport_api::Completion::Interrupt => PollStatus::NotPolled,
                },
                hdr,
                shared,
                req_len,
            })
        });
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                if share_failed {
                    Counters::bump(&table.counters().busy);
                }
                return Err(e);
            }
        };
        let Some(ring) = cmdq.as_mut() else {
            // Not reached: `start_with` refused a dead channel above.
            table.abort(started);
            return Err(Error::Shutdown);
        };
        let shared = posted;
        *outstanding += 1;
        let head = (2 * started.slot) as u16;
        ring.set_desc(
            head,
            Descriptor {
                addr: shared[0],
                len: req_len as u32,
                flags: DESC_F_NEXT,
                next: head + 1,
            },
        );
        ring.set_desc(
            head + 1,
            Descriptor {
                addr: shared[1],
                len: self.resp_cap as u32,
                flags: DESC_F_WRITE,
                next: 0,
            },
        );
        // Before the chain is published: no completion of it can sit below this position.
        if let Some(p) = posted_at.get_mut(started.slot as usize) {
            let published = ring.device_used_idx().wrapping_sub(ring.last_used());
            *p = *used_seen + u64::from(published);
        }
        ring.post(head);
        if ring.should_notify() {
            transport.notify(CMDQ);
        }
        // Counted as sent by the table (`TransferTable::start_with`).
        Ok(started.ticket())
    }

    fn poll_done(&self, ticket: &Ticket) -> Result<bool> {
        // After shutdown began the ring is not touched any more, but a transfer whose reply had
        // already arrived still reports done, so `fetch_response` can deliver it: a shutdown
        // racing a completed call loses nothing. Pending transfers were failed with `Shutdown`.
        let mut st = self.lock();
        // Under the channel lock, as in `send`.
        let admitted = self.lc.admit_locked();
        let (mut state, poll) = st.table.inspect(ticket, |s, _, p| (s, p.poll))?;
        // Polled transfers (and every transfer when nothing calls `complete`,
        // `ScmiVirtioConfig::interrupts` false) also watch the device status below.
        let polled = poll == PollStatus::Polling || !self.cfg.interrupts;
        if admitted.is_ok() && matches!(state, TransferState::InFlight) {
            // Every pending waiter looks at `used.idx` (one load) and drains what is there,
            // interrupt-mode ones too: a device that withholds an interrupt it was asked for
            // (or one lost on the way) cannot make a reply sitting in the used ring time out.
            // Under the channel lock, as the interrupt pass drains, so the two never race;
            // the pass that the interrupt may still bring finds the ring empty.
            if st.cmdq.as_ref().is_some_and(|q| q.has_used()) {
                // Drain the ring ourselves. Other callers' replies dequeued here are
                // completed too and their wakers run after the lock (deferred processing).
                // What a flooding device leaves beyond the budget is taken at our lock
                // release.
                if self.drain_cmdq(&mut st) {
                    self.flag_backlog();
                }
            } else if polled {
                st.idle_polls += 1;
                if st.idle_polls >= STATUS_POLL_PERIOD {
                    st.idle_polls = 0;
                    if st
                        .transport
                        .get_status()
                        .contains(DeviceStatus::DEVICE_NEEDS_RESET)
                    {
                        log::warn!(
                            "virtio-scmi: device needs reset (seen polling); \
                             in-flight transfers cancelled"
                        );
                        let _ = self.reset_locked(&mut st);
                    }
                }
            }
            state = st.table.state(ticket)?;
            if matches!(state, TransferState::InFlight) {
                // Any waiter (a `Wait::Completion` one re-polls at least every 100 ms) sees a
                // stalled device, polled or not.
                self.check_stall(&mut st);
                state = st.table.state(ticket)?;
            }
        }
        match state {
            TransferState::InFlight => admitted.map(|_| false),
            TransferState::Failed(e @ (Error::Shutdown | Error::Cancelled)) => Err(e),
            TransferState::Done(_) | TransferState::Failed(_) => Ok(true),
            TransferState::Free | TransferState::Abandoned => Err(Error::InvalidArgument),
        }
    }

    fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize> {
        let st = self.lock();
        st.table.inspect(ticket, |state, buf, _| {
            let len = match state {
                TransferState::Done(len) => len,
                TransferState::Failed(e) => return Err(e),
                _ => return Err(Error::InvalidArgument),
            };
            // `len` was validated by `check_reply_header`: RESP_OVERHEAD ≤ len ≤ resp_cap.
            let n = len
                .checked_sub(RESP_OVERHEAD)
                .ok_or(Error::Protocol(ProtocolError::BadLength))?;
            let resp = Self::resp_ptr(buf, self.req_cap);
            let mut status = [0u8; 4];
            // SAFETY: bytes 4..8 and RESP_OVERHEAD..len of the response area (len ≤ resp_cap)
            // of pool buffer `buf`, which the table keeps reserved until `mark_txdone`; reached
            // only through the byte accessors of `shared_mem`, each fetched once.
            unsafe { copy_from_shared(resp.wrapping_add(HEADER_LEN), &mut status) };
            let status = i32::from_le_bytes(status);
            if status != 0 {
                return Err(Error::Remote(status));
            }
            let dst = out.get_mut(..n).ok_or(Error::TooLarge)?;
            // SAFETY: as above.
            unsafe { copy_from_shared(resp.wrapping_add(RESP_OVERHEAD), dst) };
            Ok(n)
        })?
    }

    fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome) {
        let st = self.lock();
        // The buffer goes back to the pool here, under the channel lock (irq_gate), unless the
        // device still holds it: then the table keeps it (and the token) until it comes back
        // (late reply) or the device is reset. Linux: POLLING → POLL_TIMEOUT.
        if st.table.remote_holds(ticket.slot()) {
            let _ = st.table.inspect(&ticket, |state, _, p| {
                if matches!(state, TransferState::InFlight) && p.poll == PollStatus::Polling {
                    p.poll = PollStatus::PollTimeout;
                }
            });
        }
        let (slot, generation) = (ticket.slot(), ticket.generation());
        if st.table.finish(ticket, outcome).is_err() {
            log::warn!("virtio-scmi: mark_txdone with a stale ticket (message {slot}, generation {generation})");
        }
    }

    fn register_waker(&self, ticket: &Ticket, waker: &Waker) -> bool {
        if !self.cfg.interrupts {
            // No interrupt path: nobody would wake the waiter; it polls instead.
            return false;
        }
        let st = self.lock();
        // Under the channel lock, as in `send`; after shutdown began nothing wakes it.
        if self.lc.admit_locked().is_err() {
            return false;
        }
        match st.table.inspect(ticket, |s, _, p| (s, p.poll)) {
            Err(_) => false,
            // Polled transfers are completed by their poller; nobody wakes them.
            Ok((_, poll)) if poll != PollStatus::NotPolled => false,
            Ok((TransferState::InFlight, _)) => st.table.register_waker(ticket, waker),
            Ok(_) => true,
        }
    }

    /// While any caller spins, the cmdq asks the device for no interrupts
    /// (`SplitRing::pause_interrupts`: `VIRTQ_AVAIL_F_NO_INTERRUPT`, or `used_event` far behind
    /// with `EVENT_IDX`; virtio 1.2 §2.7.7, §2.7.10): the spinning callers drain the ring in
    /// `poll_done`, completing and waking every caller's transfer there, so the interrupt pass
    /// would find nothing. When the last one stops, the cmdq asks again and drains what the
    /// device published meanwhile, which raised no interrupt. Under the channel lock, as every
    /// ring access; nothing once the cmdq is gone (shutdown, a quarantined device). A recovery
    /// reset ends a pause (the zeroed rings ask for every interrupt), which costs only the
    /// interrupts until the next first spinner.
    fn spinning(&self, _ticket: &Ticket, on: bool) {
        // Without interrupts the cmdq asks for none already (setup).
        if !self.cfg.interrupts {
            return;
        }
        let mut st = self.lock();
        if on {
            if st.spinners.enter() {
                if let Some(q) = st.cmdq.as_mut() {
                    q.pause_interrupts();
                }
            }
            return;
        }
        if st.spinners.leave()
            && st.cmdq.as_mut().is_some_and(|q| q.resume_interrupts())
            && self.drain_cmdq(&mut st)
        {
            self.flag_backlog();
        }
    }

    fn fetch_notification(&self, out: &mut [u8]) -> Result<Option<Notification>> {
        let _g = self.lc.acquire()?;
        // Polled mode has no interrupt path: `with_eventq` looks at the ring itself (bounded;
        // the rest is taken at our lock release).
        self.with_eventq(|q, transport| {
            // Messages of protocols with a bound datagram endpoint are `poll_rx`'s.
            let Some(pos) = q.position(|hdr| !self.dgram.claims(hdr)) else {
                return Ok(None);
            };
            match q.pop_at(pos, out) {
                None => Ok(None),
                Some(Err(_needed)) => Err(Error::TooLarge),
                Some(Ok((hdr, len))) => {
                    if q.ring.should_notify() {
                        transport.notify(EVENTQ);
                    }
                    Ok(Some(Notification { source: hdr, len }))
                }
            }
        })
        .unwrap_or(Ok(None))
    }

    fn shutdown(&self) -> Result<()> {
        self.shutdown_impl()
    }

    fn stats(&self) -> Stats {
        // Under the channel lock, like every access to the transfer table (irq_gate).
        self.lock().table.stats()
    }
}
