//! The [`Transport`] implementation of [`ScmiVirtio`]: send, poll, fetch, mark done, wakers,
//! notifications, shutdown, statistics.

use core::ptr::NonNull;
use core::task::Waker;

use fwipc_transport_api::shared_mem::{copy_from_shared, copy_to_shared};
use fwipc_transport_api::{
    Caps, Counters, Error, Notification, ProtocolError, Request, Result, Stats, Ticket, Transport,
    TxOutcome,
};
use virtio_drivers::transport::{DeviceStatus, Transport as VirtioTransport};
use virtio_drivers::{BufferDirection, Hal};

use super::{ScmiVirtio, State, STATUS_POLL_PERIOD};
use crate::header::{split_target, Header, HEADER_LEN};
use crate::virtio::features::{ScmiFeatures, CMDQ, EVENTQ};
use crate::virtio::parse::{RESP_OVERHEAD, RESP_UNWRITTEN};
use crate::virtio::ring::{Descriptor, DESC_F_NEXT, DESC_F_WRITE};
use crate::virtio::slot::{Outcome, Owner, PollStatus};

impl<H: Hal, T: VirtioTransport + Send> Transport for ScmiVirtio<H, T> {
    fn caps(&self) -> Caps {
        // Receive-only datagram endpoints per protocol (`datagram.rs`, docs/datagram.md): held
        // receive buffers, no one-way or zero-copy send, no names, no name service.
        let p2a = self.features.contains(ScmiFeatures::P2A_CHANNELS);
        Caps::new(self.pool.capacity(), self.max_msg_size)
            .with_notifications(p2a)
            .with_polling(true)
            .with_rx_hold(p2a)
    }

    fn send(&self, req: &Request<'_>) -> Result<Ticket> {
        let _g = self.lc.acquire()?;
        let (proto, msg) = split_target(req.target).ok_or(Error::InvalidArgument)?;
        let len = req.payload.len();
        if len > self.max_msg_size {
            return Err(Error::TooLarge);
        }
        // The pool and the token allocator are only touched under the channel lock, so the
        // interrupt pass (which returns buffers and tokens) never waits for their locks (irq_gate).
        let mut st = self.lock();
        if self.check_stall(&mut st) {
            return Err(Error::Shutdown);
        }
        let buf = self
            .pool
            .alloc()
            .inspect_err(|_| Counters::bump(&self.counters.busy))?;
        let token = self
            .tokens
            .alloc()
            .inspect_err(|_| Counters::bump(&self.counters.busy))?;
        let hdr = Header::command(proto, msg, token.0 as u16).encode();
        // Once per send: every `dma_ptr` takes the buffer's lock.
        let base = buf.dma_ptr();
        // SAFETY: header + payload (`len` ≤ max_msg_size) fit the request area and the sentinel
        // the response area of pool buffer `buf`, which we hold; with an in-place `Hal` that
        // memory is device-reachable, so it is written only through the byte accessors of
        // `shared_mem` (docs/reliability.md, "Invariants" item 1).
        unsafe {
            copy_to_shared(base, &hdr.to_le_bytes());
            copy_to_shared(base.wrapping_add(HEADER_LEN), req.payload);
            copy_to_shared(
                base.wrapping_add(self.req_cap),
                &RESP_UNWRITTEN.to_le_bytes(),
            );
        }
        let req_len = HEADER_LEN + len;
        let (req_area, resp_area) =
            self.areas(NonNull::new(base).unwrap_or(NonNull::dangling()), req_len);
        let i = buf.index() as usize;

        let State {
            transport,
            cmdq,
            slots,
            outstanding,
            ..
        } = &mut *st;
        let Some(ring) = cmdq.as_mut() else {
            let _ = self.tokens.release(token);
            drop(buf);
            return Err(Error::Shutdown);
        };
        let slot = &mut slots[i];
        // SAFETY: both areas lie inside pool buffer `i`, which never moves and which we now own
        // (fresh from the pool). From here until the device returns the chain (`drain_cmdq`) or
        // is reset (`shutdown`) we do not touch them: the device's pool loan taken below keeps
        // the buffer from being recycled even if the caller gives up.
        let shared = unsafe {
            [
                H::share(req_area, BufferDirection::DriverToDevice),
                H::share(resp_area, BufferDirection::DeviceToDriver),
            ]
        };
        if shared.contains(&0) {
            // A bouncing Hal out of shared memory (physical address 0 is virtio-drivers' failure
            // value): undo and report back-pressure; nothing was posted.
            for (p, (area, dir)) in shared.iter().zip([
                (req_area, BufferDirection::DriverToDevice),
                (resp_area, BufferDirection::DeviceToDriver),
            ]) {
                if *p != 0 {
                    // SAFETY: shared just above with these arguments; the device never saw it.
                    unsafe { H::unshare(*p, area, dir) };
                }
            }
            let _ = self.tokens.release(token);
            drop(buf);
            drop(st);
            Counters::bump(&self.counters.busy);
            return Err(Error::Busy);
        }
        let _loan = buf.lend();
        slot.owner = Owner::Device;
        *outstanding += 1;
        slot.poll = match req.completion {
            fwipc_transport_api::Completion::Polled => PollStatus::Polling,
            fwipc_transport_api::Completion::Interrupt => PollStatus::NotPolled,
        };
        slot.generation = slot.generation.wrapping_add(1);
        slot.token = token;
        slot.hdr = hdr;
        slot.outcome = Outcome::Pending;
        slot.waker = None;
        slot.shared = shared;
        slot.req_len = req_len;
        slot.local = Some(buf);
        let head = (2 * i) as u16;
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
        ring.post(head);
        if ring.should_notify() {
            transport.notify(CMDQ);
        }
        let ticket = Ticket::new(token.0, i as u32, slot.generation);
        drop(st);
        Counters::bump(&self.counters.sent);
        Ok(ticket)
    }

    fn poll_done(&self, ticket: &Ticket) -> Result<bool> {
        // After shutdown began the ring is not touched any more, but a transfer whose reply had
        // already arrived still reports done, so `fetch_response` can deliver it: a shutdown
        // racing a completed call loses nothing. Pending transfers were failed with `Shutdown`.
        let user = self.lc.acquire();
        let r = {
            let mut st = self.lock();
            let i = self.slot_index(&st, ticket)?;
            // Polled transfers (and every transfer when nothing calls `complete`,
            // `ScmiVirtioConfig::interrupts` false) also watch the device status below.
            let polled = st.slots[i].poll == PollStatus::Polling || !self.cfg.interrupts;
            if user.is_ok() && st.slots[i].outcome == Outcome::Pending {
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
            }
            if user.is_ok() && st.slots[i].outcome == Outcome::Pending {
                // Any waiter (a `Wait::Completion` one re-polls at least every 100 ms) sees a
                // stalled device, polled or not.
                self.check_stall(&mut st);
            }
            match st.slots[i].outcome {
                Outcome::Pending => user.map(|_| false),
                Outcome::Failed(e @ (Error::Shutdown | Error::Cancelled)) => Err(e),
                _ => Ok(true),
            }
        };
        r
    }

    fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize> {
        let st = self.lock();
        let i = self.slot_index(&st, ticket)?;
        let slot = &st.slots[i];
        let len = match slot.outcome {
            Outcome::Pending => return Err(Error::InvalidArgument),
            Outcome::Failed(e) => return Err(e),
            Outcome::Reply { len } => len,
        };
        let Some(buf) = slot.local.as_ref() else {
            return Err(Error::InvalidArgument);
        };
        // `len` was validated by `check_reply_header`: RESP_OVERHEAD ≤ len ≤ resp_cap.
        let n = len
            .checked_sub(RESP_OVERHEAD)
            .ok_or(Error::Protocol(ProtocolError::BadLength))?;
        let resp = Self::resp_ptr(buf, self.req_cap);
        let mut status = [0u8; 4];
        // SAFETY: bytes 4..8 and RESP_OVERHEAD..len of the response area (len ≤ resp_cap) of pool
        // buffer `buf`, which the slot's reference keeps alive; reached only through the byte
        // accessors of `shared_mem`, each fetched once.
        unsafe { copy_from_shared(resp.wrapping_add(HEADER_LEN), &mut status) };
        let status = i32::from_le_bytes(status);
        if status != 0 {
            return Err(Error::Remote(status));
        }
        let dst = out.get_mut(..n).ok_or(Error::TooLarge)?;
        // SAFETY: as above.
        unsafe { copy_from_shared(resp.wrapping_add(RESP_OVERHEAD), dst) };
        Ok(n)
    }

    fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome) {
        {
            let mut st = self.lock();
            let Ok(i) = self.slot_index(&st, &ticket) else {
                log::warn!("virtio-scmi: mark_txdone with a stale ticket {ticket:?}");
                return;
            };
            let slot = &mut st.slots[i];
            // The caller's buffer goes back to the pool here, under the channel lock (irq_gate).
            drop(slot.local.take());
            slot.waker = None;
            if outcome == TxOutcome::TimedOut {
                Counters::bump(&self.counters.timed_out);
            }
            if slot.device_owned() {
                // The device still owns the buffer: keep it (and the token) until it comes back
                // (late reply) or the device is reset. Linux: POLLING → POLL_TIMEOUT.
                slot.owner = Owner::Abandoned;
                if slot.poll == PollStatus::Polling {
                    slot.poll = PollStatus::PollTimeout;
                }
            } else {
                slot.poll = PollStatus::NotPolled;
                let _ = self.tokens.release(slot.token);
            }
        }
    }

    fn register_waker(&self, ticket: &Ticket, waker: &Waker) -> bool {
        if !self.cfg.interrupts || self.lc.acquire().is_err() {
            // No interrupt path: nobody would wake the waiter; it polls instead.
            return false;
        }
        let mut st = self.lock();
        let Ok(i) = self.slot_index(&st, ticket) else {
            return false;
        };
        let slot = &mut st.slots[i];
        if slot.poll != PollStatus::NotPolled {
            // Polled transfers are completed by their poller; nobody wakes them.
            return false;
        }
        if slot.outcome == Outcome::Pending {
            match &slot.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => slot.waker = Some(waker.clone()),
            }
        }
        true
    }

    fn fetch_notification(&self, out: &mut [u8]) -> Result<Option<Notification>> {
        let _g = self.lc.acquire()?;
        let mut st = self.lock();
        // Polled mode has no interrupt path: look at the ring ourselves (bounded; the rest is
        // taken at our lock release).
        if self.drain_eventq(&mut st) {
            self.flag_backlog();
        }
        let State {
            eventq, transport, ..
        } = &mut *st;
        let Some(q) = eventq.as_mut() else {
            return Ok(None);
        };
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
    }

    fn shutdown(&self) -> Result<()> {
        self.shutdown_impl()
    }

    fn stats(&self) -> Stats {
        // The pool's free count under the channel lock, like every pool access (irq_gate).
        let free = {
            let _st = self.lock();
            self.pool.free_count()
        };
        self.counters.snapshot(self.pool.capacity(), free)
    }
}
