//! The loopback remote: a thread running the echo service with fault knobs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fwipc_transport_api::fixture::{echo_reply_byte, Fault, RemoteControl, SimMode, SimModeSwitch};
use fwipc_transport_api::{BulkDir, SpinBudget};
use spin::Mutex;
use zerocopy::IntoBytes;

use super::transport::{ReqRecord, Shared, MAX_MSG_SIZE};
use super::wire::{ReplyRecord, KIND_REPLY, MAGIC, RECORD_SIZE};

struct State {
    fault: Fault,
    held: Vec<ReqRecord>,
    dropped: Vec<ReqRecord>,
    /// Last bulk data received, sent back on the next bulk receive.
    stored: Vec<u8>,
}

/// The remote side; `RemoteControl` for the fixture.
pub(crate) struct Remote {
    shared: Arc<Shared>,
    state: Mutex<State>,
    /// Whether `state.fault` is other than `Fault::None`: without one, a request is served
    /// without a look at the state (its one lock is taken once per request, by `answer`).
    faulted: AtomicBool,
    pub stop: AtomicBool,
    mode: SimModeSwitch,
}

impl Remote {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Remote {
            shared,
            state: Mutex::new(State {
                fault: Fault::None,
                held: Vec::with_capacity(super::MAX_MSG),
                dropped: Vec::with_capacity(super::MAX_MSG),
                stored: Vec::with_capacity(1 << 20),
            }),
            faulted: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            mode: SimModeSwitch::new(),
        }
    }

    /// The remote thread's loop: serve requests and bulk ops until stopped.
    pub(crate) fn run(&self) {
        let idle = SpinBudget::new();
        // Acquire: pairs with the Release store in the fixture's drop; nothing else is published.
        while !self.stop.load(Ordering::Acquire) {
            match self.mode.take_for(&self.shared.remote_wake) {
                SimMode::Normal => {
                    // Idle: serve a little longer before parking (bounded, then park as before).
                    if !idle.spin_until(|| self.serve(), std::thread::yield_now) {
                        std::thread::park_timeout(Duration::from_millis(2));
                    }
                }
                SimMode::Spin => {
                    if !self.serve() {
                        std::hint::spin_loop();
                    }
                }
                SimMode::Stepped | SimMode::SteppedPolling => self.mode.idle(),
            }
        }
    }

    /// One pass: serve a request and a bulk operation, if any.
    fn serve(&self) -> bool {
        self.serve_one() | self.serve_bulk()
    }

    fn serve_one(&self) -> bool {
        // Copied out, the slot left as it is: a take would write the slot's line, which the
        // transport's next push would then fetch back (docs/benchmarks.md, "Cache lines per
        // round trip").
        let Some(rec) = self.shared.requests.pop_with(|r| *r) else {
            return false;
        };
        // Acquire: pairs with the Release in `set_fault`. A fault set after this load is one set
        // after the request was served; the fault itself is read under the lock.
        let fault = if self.faulted.load(Ordering::Acquire) {
            let mut st = self.state.lock();
            match st.fault {
                // A request that is not answered now is counted and logged now (under
                // `remote_lock`, where the log is), inside the state lock's critical section
                // that puts it in `held`/`dropped`: a test that saw the count and calls
                // `release()` waits for that section, so finds it held. An answered one is
                // counted and logged by `answer`, which has its buffer in hand anyway.
                Fault::Hold | Fault::Drop => {
                    {
                        let mut log = self.shared.remote_lock.lock();
                        log.received += 1;
                        if let Some(buf) = self.shared.table.pool().get(rec.slot) {
                            buf.with(|d| log.tags.log(d));
                        }
                    }
                    if st.fault == Fault::Hold {
                        st.held.push(rec);
                    } else {
                        st.dropped.push(rec);
                    }
                    return true;
                }
                f => f,
            }
        } else {
            Fault::None
        };
        if let Fault::Delay(d) = fault {
            std::thread::sleep(d);
        }
        self.answer(rec, fault, true);
        true
    }

    /// Write the echo reply into the request's buffer and post a reply record (or a faulty one).
    /// Buffer and ring are touched under `remote_lock`, and only while the transfer still lends
    /// the buffer ([`Shared::lent`]): a request taken before a remote reset or a shutdown is not
    /// answered, so its reply can neither land in a buffer handed out again nor complete a later
    /// transfer that reuses its token. A `fresh` request (just taken off the queue, not a held
    /// one let go) is counted in `received` and its tag goes to the tag log, both kept under
    /// `remote_lock` ([`RemoteLog`](super::transport::RemoteLog)), before the reply is posted (a
    /// caller that has the reply finds the tag logged).
    fn answer(&self, rec: ReqRecord, fault: Fault, fresh: bool) {
        {
            let mut log = self.shared.remote_lock.lock();
            // Acquire: pairs with the Release in shutdown; once dead, buffers are not ours.
            if self.shared.dead.load(Ordering::Acquire) || !self.shared.lent(&rec) {
                log.received += u64::from(fresh);
                return;
            }
            let Some(buf) = self.shared.table.pool().get(rec.slot) else {
                log.received += u64::from(fresh);
                return;
            };
            let len = buf.len();
            // The request's first bytes, copied out before the echo overwrites them.
            let head = buf.with_mut(|d| {
                let head = d.first_chunk::<4>().copied();
                d[..len].iter_mut().for_each(|b| *b = echo_reply_byte(*b));
                head
            });
            if fresh {
                log.received += 1;
                if let Some(head) = head {
                    log.tags.log(&head);
                }
            }
            let mut r = ReplyRecord {
                magic: MAGIC,
                token: rec.token,
                slot: rec.slot,
                len: len as u32,
                kind: KIND_REPLY,
            };
            match fault {
                Fault::WrongToken => r.token ^= 0x80,
                Fault::CorruptLength => r.len = MAX_MSG_SIZE as u32 + 1000,
                Fault::CorruptHeader => r.magic ^= 0x0100_0000,
                _ => {}
            }
            self.push(r);
            if fault == Fault::Duplicate {
                self.push(r);
            }
        }
        self.interrupt();
    }

    /// Queue a reply record (no interrupt).
    fn push(&self, r: ReplyRecord) {
        let mut raw = [0u8; RECORD_SIZE];
        raw.copy_from_slice(r.as_bytes());
        self.push_raw(raw);
    }

    fn push_raw(&self, raw: [u8; RECORD_SIZE]) {
        if !self.shared.replies.push(raw) {
            log::warn!("loopback remote: reply ring full, record dropped");
        }
    }

    /// In interrupt mode, "raise the interrupt": the transport drains its rings (unless a
    /// caller spins: `Shared::raise_irq`).
    fn interrupt(&self) {
        self.shared.raise_irq();
    }

    fn serve_bulk(&self) -> bool {
        let Some(mut op) = self.shared.bulk_out.pop() else {
            return false;
        };
        {
            let _in = self.shared.remote_lock.lock();
            // Acquire: see `answer`.
            if self.shared.dead.load(Ordering::Acquire) {
                return true;
            }
            let mut st = self.state.lock();
            match op.dir {
                BulkDir::Transmit => {
                    st.stored.clear();
                    st.stored
                        .extend_from_slice(&op.buf[op.offset..op.offset + op.len]);
                    op.actual = op.len;
                }
                BulkDir::Receive => {
                    let n = st.stored.len().min(op.len);
                    op.buf[op.offset..op.offset + n].copy_from_slice(&st.stored[..n]);
                    op.actual = n;
                }
            }
            // Under the fence too: a remote reset drops it rather than let it complete a later
            // transfer with the same token.
            // Never full: one entry per bulk in flight.
            let queued = self.shared.bulk_back.push(op);
            debug_assert!(queued);
        }
        self.interrupt();
        true
    }
}

impl RemoteControl for Remote {
    fn set_fault(&self, fault: Fault) {
        let mut st = self.state.lock();
        st.fault = fault;
        // Release: a remote that sees the flag sees the fault (it reads it under the lock
        // anyway); stored under the lock, so the flag follows the order of the `set_fault`s.
        self.faulted.store(fault != Fault::None, Ordering::Release);
    }

    fn release(&self) {
        let held: Vec<ReqRecord> = core::mem::take(&mut self.state.lock().held);
        for rec in held {
            // Logged when it was held.
            self.answer(rec, Fault::None, false);
        }
    }

    fn take_seen_tags(&self) -> Vec<u32> {
        self.shared.remote_lock.lock().tags.take()
    }

    fn received(&self) -> u64 {
        self.shared.remote_lock.lock().received
    }

    fn inject_garbage(&self, bytes: &[u8]) {
        let mut raw = [0u8; RECORD_SIZE];
        let n = bytes.len().min(RECORD_SIZE);
        raw[..n].copy_from_slice(&bytes[..n]);
        // Half of the garbage gets a valid magic so the token/length checks are exercised too.
        if bytes.first().is_some_and(|b| b & 1 == 1) {
            raw[..4].copy_from_slice(&MAGIC.to_le_bytes());
        }
        self.push_raw(raw);
        self.interrupt();
    }

    /// The remote forgets everything (held and dropped requests, the fault) and gives every
    /// buffer back: transfers in flight fail with `Cancelled`, later calls go through
    /// ([`Shared::remote_reset`]).
    fn reset_remote(&self) {
        {
            let mut st = self.state.lock();
            st.held.clear();
            st.dropped.clear();
            st.fault = Fault::None;
            // Release: as in `set_fault`.
            self.faulted.store(false, Ordering::Release);
        }
        self.shared.remote_reset();
    }

    fn set_sim_mode(&self, mode: SimMode) -> bool {
        let wake = || self.shared.remote_wake.wake();
        self.mode.request(mode, &wake, Duration::from_secs(5))
    }

    fn step(&self) -> bool {
        self.serve()
    }

    fn notify(&self, payload: &[u8]) -> bool {
        if payload.len() > MAX_MSG_SIZE {
            return false;
        }
        let mut data = [0u8; MAX_MSG_SIZE];
        data[..payload.len()].copy_from_slice(payload);
        let mut q = self.shared.notes.lock();
        if q.len() == q.capacity() {
            return false;
        }
        q.push_back((data, payload.len()));
        true
    }
}
