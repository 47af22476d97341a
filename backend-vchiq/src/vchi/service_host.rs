//! [`VcServiceHost`] (VideoCore side): a core [`ServiceHandler`] that runs one [`VcService`]
//! state machine per open service and carries out its [`VcAction`]s. Actions the core refuses
//! with back-pressure (`Retry`) stay queued in order until the core reports
//! [`crate::Event::TxSpace`] (transmit space came back; delivered from `poll`, so no run loop has
//! to call anything) or an explicit [`VcServiceHost::flush`]; while some are queued, new messages
//! are answered with `Deliver::Retry` so replies never overtake each other.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;

use log::warn;

use super::link::{VcAction, VcService};
use crate::engine::service::{BulkDir, BulkMode, Deliver, Event, ServiceHandle};
use crate::engine::vchiq::{ServiceCtx, ServiceHandler, Vchiq};
use crate::error::VchiqError;

struct Instance<S> {
    service: S,
    outbox: VecDeque<VcAction>,
}

/// Runs a [`VcService`] per open service on the VideoCore side of a [`Vchiq`] (master role).
/// One host can back several listeners of the same fourcc (the core requires one handler per
/// fourcc); each open gets a fresh state machine from `make`.
pub struct VcServiceHost<S, F: Fn() -> S> {
    make: F,
    instances: spin::Mutex<BTreeMap<u32, Instance<S>>>,
    retired: spin::Mutex<VecDeque<S>>,
    deferred: core::sync::atomic::AtomicU64,
}

/// Closed instances kept for inspection ([`VcServiceHost::take_retired`]).
const RETIRED_KEEP: usize = 16;

impl<S: VcService + Send, F: Fn() -> S + Send + Sync> VcServiceHost<S, F> {
    /// A host creating handlers with `make`.
    pub fn new(make: F) -> Self {
        VcServiceHost {
            make,
            instances: spin::Mutex::new(BTreeMap::new()),
            retired: spin::Mutex::new(VecDeque::new()),
            deferred: core::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Run `f` on the handler of service `h` (to inspect it or act as the VideoCore).
    pub fn with<R>(&self, h: ServiceHandle, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        self.instances
            .lock()
            .get_mut(&h.raw())
            .map(|i| f(&mut i.service))
    }

    /// Let the handler of open service `h` act on its own (the VideoCore initiating something):
    /// the actions `f` pushes are queued and carried out by the next [`Self::flush`]. `false` if
    /// no such service is open.
    pub fn act(&self, h: ServiceHandle, f: impl FnOnce(&mut S, &mut Vec<VcAction>)) -> bool {
        let mut map = self.instances.lock();
        let Some(inst) = map.get_mut(&h.raw()) else {
            return false;
        };
        let mut out = Vec::new();
        f(&mut inst.service, &mut out);
        inst.outbox.extend(out);
        true
    }

    /// Handles of the open services this host serves.
    pub fn handles(&self) -> Vec<ServiceHandle> {
        self.instances
            .lock()
            .keys()
            .map(|&h| ServiceHandle::from_raw(h))
            .collect()
    }

    /// Run `f` on every live handler.
    pub fn for_each(&self, mut f: impl FnMut(ServiceHandle, &mut S)) {
        for (&h, i) in self.instances.lock().iter_mut() {
            f(ServiceHandle::from_raw(h), &mut i.service);
        }
    }

    /// The handlers of services that closed, oldest first (the last 16).
    pub fn take_retired(&self) -> Vec<S> {
        self.retired.lock().drain(..).collect()
    }

    /// Times an action was deferred because the core answered `Retry` (back-pressure events).
    pub fn deferred(&self) -> u64 {
        // Relaxed: a statistics counter.
        self.deferred.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Actions still waiting for the core (back-pressure).
    pub fn pending_actions(&self) -> usize {
        self.instances.lock().values().map(|i| i.outbox.len()).sum()
    }

    /// Retry queued actions now; returns how many were carried out. Optional: the core's
    /// [`crate::Event::TxSpace`] already retries them whenever transmit space comes back (use
    /// this after [`Self::act`], which only queues).
    pub fn flush(&self, vchiq: &Vchiq) -> usize {
        let mut done = 0;
        let mut unblocked = false;
        for (&h, inst) in self.instances.lock().iter_mut() {
            let before = inst.outbox.len();
            done += self.drain(vchiq, ServiceHandle::from_raw(h), &mut inst.outbox);
            unblocked |= before > 0 && inst.outbox.is_empty();
        }
        if unblocked {
            // Messages answered with Retry while we were blocked: redeliver them.
            vchiq.kick();
        }
        done
    }

    fn drain(&self, vchiq: &Vchiq, h: ServiceHandle, outbox: &mut VecDeque<VcAction>) -> usize {
        let mut done = 0;
        while let Some(a) = outbox.front() {
            let r = match a {
                VcAction::Reply(m) => vchiq.queue_message(h, m),
                VcAction::BulkRx { len, tag } => vchiq
                    .bulk_receive(
                        h,
                        vec![0u8; *len],
                        0,
                        *len,
                        u64::from(*tag),
                        BulkMode::Callback,
                    )
                    .map_err(|(e, _)| e),
                VcAction::BulkTx { data, tag } => vchiq
                    .bulk_transmit(
                        h,
                        data.clone(),
                        0,
                        data.len(),
                        u64::from(*tag),
                        BulkMode::Callback,
                    )
                    .map_err(|(e, _)| e),
                VcAction::Close => vchiq.close_service(h),
            };
            match r {
                Err(VchiqError::Retry) => {
                    // Relaxed: a statistics counter.
                    self.deferred
                        .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                    break;
                }
                Err(e) => warn!(target: "vchi::host", "action {a:?} failed: {e}"),
                Ok(()) => {}
            }
            outbox.pop_front();
            done += 1;
        }
        done
    }
}

impl<S: VcService + Send, F: Fn() -> S + Send + Sync> ServiceHandler for VcServiceHost<S, F> {
    fn callback(&self, ctx: &ServiceCtx<'_>, event: Event<'_>) -> Deliver {
        let mut map = self.instances.lock();
        let key = ctx.handle.raw();
        let inst = map.entry(key).or_insert_with(|| Instance {
            service: (self.make)(),
            outbox: VecDeque::new(),
        });
        let was_blocked = !inst.outbox.is_empty();
        self.drain(ctx.vchiq, ctx.handle, &mut inst.outbox);
        let mut out = Vec::new();
        match event {
            Event::TxSpace => {
                // The core says transmit space came back: the drain above carried out what now
                // fits (no `flush` needed). If the outbox emptied, messages answered `Retry`
                // while it was blocked are redelivered on the next poll round.
                if was_blocked && inst.outbox.is_empty() {
                    ctx.vchiq.kick();
                }
                return Deliver::Done;
            }
            Event::Opened => {
                let cid = ctx.vchiq.client_id(ctx.handle).unwrap_or(0);
                inst.service.on_open(cid, &mut out);
            }
            Event::Closed => {
                inst.service.on_close(&mut out);
                // A listener is reused by the next client: start it afresh. Nothing can be sent on
                // a closed service, so its remaining actions are dropped.
                if let Some(old) = map.remove(&key) {
                    let mut r = self.retired.lock();
                    if r.len() == RETIRED_KEEP {
                        r.pop_front();
                    }
                    r.push_back(old.service);
                }
                return Deliver::Done;
            }
            Event::Message(m) => {
                if !inst.outbox.is_empty() {
                    return Deliver::Retry;
                }
                inst.service.on_message(m.payload(), &mut out);
            }
            Event::Bulk(c) => {
                let tag = c.tag as u32;
                match c.dir {
                    BulkDir::Receive => {
                        let data = match &c.result {
                            Ok(n) => Some(&c.buf[..(*n).min(c.buf.len())]),
                            Err(_) => None,
                        };
                        inst.service.on_bulk_rx(tag, data, &mut out);
                    }
                    BulkDir::Transmit => inst.service.on_bulk_tx(tag, c.result.is_ok(), &mut out),
                }
            }
            Event::RemoteBulkPending { .. } => {}
        }
        inst.outbox.extend(out);
        self.drain(ctx.vchiq, ctx.handle, &mut inst.outbox);
        Deliver::Done
    }
}
