//! The receive side (the "slot handler"): walks the peer's stream from `rx_pos` to the peer's
//! `tx_pos`, decodes each header with bounds checks, runs the service state machine for control
//! messages, hands DATA to the service handler, claims/releases messages and recycles finished
//! slots back to the peer. Also the sync slot (docs/protocols/vchiq.md §7).
//!
//! The peer is treated as hostile: every index it wrote is range-checked against the partition
//! *we* computed, malformed headers are counted and skipped (to the slot end when their size
//! cannot be trusted), and nothing here panics or reads outside the region.

use core::sync::atomic::Ordering;

use alloc::sync::Arc;
use zerocopy::FromBytes;

use crate::config::Role;
use crate::engine::counters::bump_serialized;
use crate::engine::service::{BulkDir, Deliver, Event, Message, MessageToken, ServiceHandle};
use crate::engine::vchiq::{
    Inner, PendingEv, RemoteBulk, RxSlot, ServiceCtx, ServiceHandler, Vchiq,
};
use crate::error::{Result, VchiqError};
use crate::shared::recycle;
use crate::shared::sync_slot;
use crate::wire::consts::*;
use crate::wire::header::{make_msgid, Header};
use crate::wire::layout::{off, BulkDonePayload, BulkPayload, OpenAckPayload, OpenPayload};
use zerocopy::IntoBytes;

/// What one step of the parser produced.
enum RxStep {
    /// Nothing (more) to do now.
    Idle,
    /// One message handled under the lock.
    Handled,
    /// A DATA message for a handler (delivered with no lock held).
    Deliver {
        handler: Arc<dyn ServiceHandler>,
        handle: ServiceHandle,
        slot: u32,
        offset: u32,
        size: u32,
    },
}

impl Vchiq {
    /// Parse the peer's stream: at most `*budget` messages (PADDING included), each one taken
    /// off `*budget`. The peer controls how far `tx_pos` runs ahead and can keep moving it, so
    /// this loop ends at the budget even if the stream never does (the caller leaves the rest
    /// for its next call).
    ///
    /// Called with the `inner` lock held (`g`) and returns with it held, as the poll round's
    /// steps before and after it want it: one acquisition serves the round's bookkeeping and the
    /// parser's first step, and another a delivered message's bookkeeping, the parser's next
    /// step and the round's work after it. The lock is dropped around handlers and between
    /// control messages, so a long stream never keeps other callers out.
    pub(crate) fn rx_poll<'a>(
        &'a self,
        mut g: spin::MutexGuard<'a, Inner>,
        scratch: &mut [u8],
        budget: &mut usize,
    ) -> (usize, spin::MutexGuard<'a, Inner>) {
        let mut n = 0;
        loop {
            if *budget == 0 || g.rx_stalled {
                return (n, g);
            }
            let step = self.rx_step(&mut g);
            let pending = !g.pending.is_empty();
            match step {
                RxStep::Idle => return (n, g),
                RxStep::Handled => {
                    n += 1;
                    *budget -= 1;
                    drop(g);
                    g = self.inner.lock();
                }
                RxStep::Deliver {
                    handler,
                    handle,
                    slot,
                    offset,
                    size,
                } => {
                    drop(g);
                    // Events queued by earlier control messages (OPENED) go first. Those are
                    // pushed under the lock `rx_step` held, so `pending` saw them (an event
                    // pushed from elsewhere since requests a poll round of its own).
                    if pending {
                        self.dispatch_pending();
                    }
                    let len = size as usize;
                    let base = slot as usize * VCHIQ_SLOT_SIZE + offset as usize;
                    let Some(buf) = scratch.get_mut(..len) else {
                        return (n, self.inner.lock());
                    };
                    self.region.read_bytes(base + VCHIQ_HEADER_SIZE, buf);
                    let token = MessageToken {
                        slot,
                        offset,
                        handle,
                        sync: false,
                    };
                    let ctx = ServiceCtx {
                        vchiq: self,
                        handle,
                    };
                    let d = handler.callback(
                        &ctx,
                        Event::Message(Message {
                            payload: buf,
                            token,
                        }),
                    );
                    *budget -= 1;
                    g = self.inner.lock();
                    g.keep_handler(handle.port(), handler);
                    match d {
                        Deliver::Retry => {
                            g.rx_stalled = true;
                            // The handler ran (it may have queued, padded and signalled the
                            // peer): that is work, so a polled driver does not mistake this
                            // round for quiescence. Bounded: the stall flag keeps the message
                            // from being redelivered until an event fires.
                            return (n + 1, g);
                        }
                        Deliver::Hold => {
                            // Claim: one more user of the slot; mark the header CLAIMED in the
                            // sender's slot (guards against double release,
                            // docs/protocols/vchiq.md §1).
                            if let Some(rs) = g.rx_slots.get_mut(slot as usize) {
                                rs.use_count += 1;
                            }
                            if let Some(w) = self.region.word(base) {
                                // Relaxed load/store, no RMW (exclusives are unreliable on the
                                // non-cacheable region; the sender does not write a published
                                // header again before we recycle the slot). The bit is only a
                                // marker; our private counts decide.
                                let v = w.load(Ordering::Relaxed);
                                w.store(v | VCHIQ_MSGID_CLAIMED, Ordering::Relaxed);
                            }
                        }
                        Deliver::Done => {}
                    }
                    self.rx_advance(&mut g, slot, crate::wire::header::stride(len) as u32);
                    n += 1;
                }
            }
        }
    }

    fn rx_advance(&self, g: &mut Inner, slot: u32, st: u32) {
        g.rx_pos = g.rx_pos.wrapping_add(st);
        if g.rx_pos & VCHIQ_SLOT_MASK == 0 {
            // Leaving the slot: drop the receiver's own reference; the next slot's index is read
            // when we enter it.
            g.rx_slot = None;
            self.release_slot_ref(g, slot);
        }
    }

    fn release_slot_ref(&self, g: &mut Inner, slot: u32) {
        let Some(rs) = g.rx_slots.get_mut(slot as usize) else {
            return;
        };
        rs.release_count += 1;
        if rs.release_count == rs.use_count {
            *rs = RxSlot::default();
            self.recycle_slot(g, slot);
        }
    }

    /// Hand a finished slot back to the peer (docs/protocols/vchiq.md §1 "Recycle").
    fn recycle_slot(&self, g: &mut Inner, slot: u32) {
        let (Some(queue), Some(rec)) = (
            self.region
                .words(self.remote_off + off::SLOT_QUEUE, VCHIQ_MAX_SLOTS_PER_SIDE),
            self.region.word(self.remote_off + off::SLOT_QUEUE_RECYCLE),
        ) else {
            return;
        };
        g.remote_recycle = recycle::push(queue, rec, slot, g.remote_recycle, &*self.platform);
        self.signal_remote(off::RECYCLE);
    }

    /// Release a message a handler kept with [`Deliver::Hold`]. `Invalid` on a double release.
    pub fn release_message(&self, t: MessageToken) -> Result {
        let mut g = self.inner.lock();
        if t.sync {
            return Err(VchiqError::Invalid);
        }
        if !self.remote_part.owns_data(t.slot) || t.offset as usize >= VCHIQ_SLOT_SIZE {
            return Err(VchiqError::Invalid);
        }
        let base = t.slot as usize * VCHIQ_SLOT_SIZE + t.offset as usize;
        let w = self.region.word(base).ok_or(VchiqError::Invalid)?;
        // Relaxed load/store under our lock (no RMW on the non-cacheable region): the CLAIMED
        // bit is a double-release guard; the slot's lifetime is decided by our private counts.
        let old = w.load(Ordering::Relaxed);
        w.store(old & !VCHIQ_MSGID_CLAIMED, Ordering::Relaxed);
        if old & VCHIQ_MSGID_CLAIMED == 0 {
            return Err(VchiqError::Invalid);
        }
        self.release_slot_ref(&mut g, t.slot);
        drop(g);
        Ok(())
    }

    /// One parser step (lock held).
    fn rx_step(&self, g: &mut Inner) -> RxStep {
        // Acquire (docs/protocols/vchiq.md §3 barriers 2 and 4): pairs with the peer's Release
        // store of tx_pos, so every header and payload it covers is visible.
        let tx = self
            .region
            .load(self.remote_off + off::TX_POS, Ordering::Acquire);
        // rmb (docs/protocols/vchiq.md §3 barrier 4, Linux's rmb after reading `remote->tx_pos`):
        // the slot queue, headers and payload are read after tx_pos, also for a writer outside our
        // coherence domain (the VideoCore).
        self.platform.rmb();
        if tx == g.rx_pos {
            return RxStep::Idle;
        }
        let avail = tx.wrapping_sub(g.rx_pos);
        if avail > (VCHIQ_MAX_SLOTS_PER_SIDE * VCHIQ_SLOT_SIZE) as u32 {
            self.protocol_error("peer tx_pos out of range");
            g.rx_stalled = true;
            return RxStep::Idle;
        }
        let offset = g.rx_pos & VCHIQ_SLOT_MASK;
        let rest = VCHIQ_SLOT_SIZE as u32 - offset;
        // The slot index is fetched from the peer's slot_queue once, on entering the slot, and
        // kept for every message in it (docs/protocols/vchiq.md §1 "Stream positions"): the peer
        // can rewrite the entry at any time, and a second read mid-slot would parse (and later
        // recycle) a different slot than the one whose use count we set up.
        let slot = match g.rx_slot {
            Some(slot) => slot,
            None => {
                let qi = ((g.rx_pos >> 12) & VCHIQ_SLOT_QUEUE_MASK) as usize;
                // Relaxed: ordered by the Acquire load of tx_pos.
                let slot = self.region.load(
                    self.remote_off + off::SLOT_QUEUE + 4 * qi,
                    Ordering::Relaxed,
                );
                if offset != 0 || !self.remote_part.owns_data(slot) {
                    // `offset != 0` without a current slot cannot happen (we enter at offset 0
                    // and every skip lands on a slot boundary); treat it like a bad entry.
                    self.protocol_error("peer slot_queue entry outside its partition");
                    if rest <= avail {
                        g.rx_pos = g.rx_pos.wrapping_add(rest);
                        return RxStep::Handled;
                    }
                    g.rx_stalled = true;
                    return RxStep::Idle;
                }
                let Some(rs) = g.rx_slots.get_mut(slot as usize) else {
                    // `owns_data` keeps `slot` below `total_slots`, the length of `rx_slots`.
                    self.protocol_error("peer slot_queue entry outside the region");
                    g.rx_stalled = true;
                    return RxStep::Idle;
                };
                if rs.use_count != 0 {
                    // The peer wrote into a slot we have not recycled yet (a client still holds
                    // a message in it, docs/protocols/vchiq.md §1 "Recycle": "only then may the
                    // slot be written again"). Resetting its counts would recycle it under the
                    // held message; skip this stream position instead, as for a bad entry.
                    self.protocol_error("peer reused a slot we have not recycled");
                    if rest <= avail {
                        g.rx_pos = g.rx_pos.wrapping_add(rest);
                        return RxStep::Handled;
                    }
                    g.rx_stalled = true;
                    return RxStep::Idle;
                }
                *rs = RxSlot {
                    use_count: 1,
                    release_count: 0,
                };
                g.rx_slot = Some(slot);
                slot
            }
        };
        let base = slot as usize * VCHIQ_SLOT_SIZE + offset as usize;
        // Relaxed header loads: ordered after the Acquire load of tx_pos above (and its rmb),
        // which the peer Release-stored after writing this header; any value is range-checked
        // by `Header::decode` and `avail`.
        let msgid = self.region.load(base, Ordering::Relaxed);
        let size = self.region.load(base + 4, Ordering::Relaxed);
        let h = match Header::decode(msgid, size, offset as usize) {
            Ok(h) if h.stride() as u32 <= avail => h,
            Ok(_) | Err(_) => {
                self.protocol_error("bad message header");
                // The size cannot be trusted: skip the rest of the slot.
                if rest <= avail {
                    g.rx_pos = g.rx_pos.wrapping_add(rest);
                    g.rx_slot = None;
                    self.release_slot_ref(g, slot);
                    return RxStep::Handled;
                }
                g.rx_stalled = true;
                return RxStep::Idle;
            }
        };
        let st = h.stride() as u32;
        let mut payload = [0u8; 12];
        let plen = (h.size as usize).min(12);
        self.region
            .read_bytes(base + VCHIQ_HEADER_SIZE, &mut payload[..plen]);
        let done = match h.ty {
            MsgType::Data => {
                bump_serialized(&self.counters.msgs_received);
                let port = h.dst as usize;
                match g.services.get(port) {
                    Some(Some(s)) if s.state == ServiceState::Open && s.remoteport == h.src => {
                        let handle = s.handle;
                        if let Some(handler) = g.take_handler(port) {
                            return RxStep::Deliver {
                                handler,
                                handle,
                                slot,
                                offset,
                                size: h.size,
                            };
                        }
                        true
                    }
                    _ => {
                        log::debug!(target: "vchiq", "{:?}: DATA for port {} dropped (not open)", self.role, h.dst);
                        true
                    }
                }
            }
            MsgType::Padding => true,
            _ => {
                bump_serialized(&self.counters.msgs_received);
                self.handle_control(g, &h, &payload[..plen])
            }
        };
        if !done {
            // Stalled on our own transmit side (no slot for the reply): re-parse later, when the
            // peer recycles a slot (its recycle signal wakes us).
            return RxStep::Idle;
        }
        self.rx_advance(g, slot, st);
        RxStep::Handled
    }

    /// A control message. Returns `false` to leave it in place (no slot for our reply yet).
    fn handle_control(&self, g: &mut Inner, h: &Header, p: &[u8]) -> bool {
        match h.ty {
            MsgType::Connect => {
                // Relaxed: slot zero's version was written before both sides initialised.
                let vw = self.region.load(off::VERSION_WORD, Ordering::Relaxed);
                g.version_common = vw as u16 as i16;
                g.peer_connect_seen = true;
                if g.conn == ConnState::Connecting {
                    g.conn = ConnState::Connected;
                }
                true
            }
            MsgType::Open => self.parse_open(g, h, p),
            MsgType::OpenAck => {
                let version = OpenAckPayload::read_from_bytes(p).map_or(0, |a| a.version.get());
                self.open_acked(g, h, version, false);
                true
            }
            MsgType::Close => self.parse_close(g, h),
            MsgType::BulkRx | MsgType::BulkTx => {
                if self.role != Role::Master {
                    self.protocol_error("BULK_RX/TX sent to the slave");
                    return true;
                }
                let Ok(b) = BulkPayload::read_from_bytes(p) else {
                    self.protocol_error("short BULK_RX/TX");
                    return true;
                };
                // The peer's RX is served by our transmit queue and vice versa
                // (docs/protocols/vchiq.md §5).
                let dir = if h.ty == MsgType::BulkRx {
                    BulkDir::Transmit
                } else {
                    BulkDir::Receive
                };
                self.master_remote_bulk(
                    g,
                    h,
                    dir,
                    RemoteBulk {
                        pagelist: b.pagelist.get(),
                        size: b.size.get(),
                    },
                );
                true
            }
            MsgType::BulkRxDone | MsgType::BulkTxDone => {
                if self.role != Role::Slave {
                    self.protocol_error("BULK_x_DONE sent to the master");
                    return true;
                }
                let Ok(d) = BulkDonePayload::read_from_bytes(p) else {
                    self.protocol_error("short BULK_x_DONE");
                    return true;
                };
                // BULK_RX_DONE completes our receive queue (docs/protocols/vchiq.md §2 direction
                // rule).
                let dir = if h.ty == MsgType::BulkRxDone {
                    BulkDir::Receive
                } else {
                    BulkDir::Transmit
                };
                self.slave_bulk_done(g, h, dir, d.actual.get());
                true
            }
            MsgType::RemoteUse => {
                if !self.can_queue(g, 0) {
                    return false;
                }
                let _ = self.queue_locked(g, MsgType::RemoteUseActive, 0, 0, &[], None);
                true
            }
            // Legacy suspend and keepalive bookkeeping: parsed and ignored
            // (docs/protocols/vchiq.md §9 item 2).
            MsgType::Pause
            | MsgType::Resume
            | MsgType::RemoteRelease
            | MsgType::RemoteUseActive
            | MsgType::Padding
            | MsgType::Data => true,
        }
    }

    fn parse_open(&self, g: &mut Inner, h: &Header, p: &[u8]) -> bool {
        let Ok(req) = OpenPayload::read_from_bytes(p) else {
            self.protocol_error("short OPEN");
            return true;
        };
        if !self.can_queue(g, 2) {
            return false;
        }
        let fourcc = req.fourcc.get() as u32;
        let port = g.services.iter().position(|s| {
            s.as_ref().is_some_and(|s| {
                s.is_server && s.params.fourcc == fourcc && s.state == ServiceState::Listening
            })
        });
        let Some(port) = port else {
            log::debug!(target: "vchiq", "OPEN {:?}: no listener", fourcc_bytes(fourcc));
            let _ = self.queue_locked(g, MsgType::Close, 0, h.src, &[], None);
            return true;
        };
        let (version, vmin, want_sync) = {
            let s = g.services[port]
                .as_ref()
                .map(|s| (s.params.version, s.params.version_min, s.params.synchronous));
            s.unwrap_or((0, 0, false))
        };
        if version < req.version_min.get() || req.version.get() < vmin {
            log::debug!(target: "vchiq", "OPEN {:?}: version mismatch", fourcc_bytes(fourcc));
            let _ = self.queue_locked(g, MsgType::Close, 0, h.src, &[], None);
            return true;
        }
        let sync = want_sync && g.version_common >= VCHIQ_VERSION_SYNCHRONOUS_MODE;
        let ack = OpenAckPayload {
            version: version.into(),
        };
        let r = if sync {
            self.queue_sync_locked(g, MsgType::OpenAck, port as u32, h.src, &[ack.as_bytes()])
        } else {
            self.queue_locked(
                g,
                MsgType::OpenAck,
                port as u32,
                h.src,
                &[ack.as_bytes()],
                None,
            )
        };
        if r.is_err() {
            return false;
        }
        if let Some(Some(s)) = g.services.get_mut(port) {
            s.remoteport = h.src;
            s.client_id = req.client_id.get();
            s.peer_version = req.version.get();
            s.sync = sync;
            s.state = if sync {
                ServiceState::OpenSync
            } else {
                ServiceState::Open
            };
        }
        if let Some(s) = g.services[port].take() {
            Self::push_event(g, &s, PendingEv::Opened);
            g.services[port] = Some(s);
        }
        true
    }

    fn open_acked(&self, g: &mut Inner, h: &Header, version: i16, sync: bool) {
        let Some(Some(s)) = g.services.get_mut(h.dst as usize) else {
            self.protocol_error("OPENACK for unknown port");
            return;
        };
        if s.state != ServiceState::Opening {
            // A close crossing the OPENACK is a legitimate race (we closed while OPENING); any
            // other state is the peer's mistake.
            if s.state == ServiceState::CloseSent {
                log::debug!(target: "vchiq", "OPENACK crossed our CLOSE on port {}", h.dst);
            } else {
                self.protocol_error("OPENACK in wrong state");
            }
            return;
        }
        s.remoteport = h.src;
        s.peer_version = version;
        s.sync = sync;
        s.state = if sync {
            ServiceState::OpenSync
        } else {
            ServiceState::Open
        };
        if let Some(s) = g.services[h.dst as usize].take() {
            Self::push_event(g, &s, PendingEv::Opened);
            g.services[h.dst as usize] = Some(s);
        }
    }

    fn parse_close(&self, g: &mut Inner, h: &Header) -> bool {
        // dst 0: a client that never saw our OPENACK; match by its port
        // (docs/protocols/vchiq.md §4).
        let port = if h.dst == 0 {
            g.services.iter().position(|s| {
                s.as_ref()
                    .is_some_and(|s| s.is_open() && s.remoteport == h.src)
            })
        } else {
            Some(h.dst as usize)
        };
        let Some(port) = port else {
            log::debug!(target: "vchiq", "CLOSE from {} matches nothing", h.src);
            return true;
        };
        let Some(Some(s)) = g.services.get(port) else {
            log::debug!(target: "vchiq", "CLOSE for free port {port}");
            return true;
        };
        let (state, remote) = (s.state, s.remoteport);
        match state {
            ServiceState::Opening => {
                // Refused.
                if let Some(Some(s)) = g.services.get_mut(port) {
                    s.refused = true;
                }
                self.close_complete(g, port);
            }
            ServiceState::Open | ServiceState::OpenSync => {
                if remote != h.src {
                    self.protocol_error("CLOSE from the wrong port");
                    return true;
                }
                let dones = if self.role == Role::Master {
                    self.remote_bulk_count(g, port)
                } else {
                    0
                };
                if !self.can_queue(g, dones * 16 + 8) {
                    return false;
                }
                if self.role == Role::Master {
                    self.master_abort_bulks(g, port);
                }
                if let Some(Some(s)) = g.services.get_mut(port) {
                    s.state = ServiceState::CloseRecvd;
                }
                let _ = self.queue_locked(g, MsgType::Close, port as u32, remote, &[], None);
                self.close_complete(g, port);
            }
            ServiceState::CloseSent => self.close_complete(g, port),
            _ => log::debug!(target: "vchiq", "CLOSE in state {state:?} ignored"),
        }
        true
    }

    // ---------------- sync slot (docs/protocols/vchiq.md §7) ----------------

    /// Send through our sync slot: `Retry` while the peer still holds the previous message.
    pub(crate) fn queue_sync_locked(
        &self,
        g: &mut Inner,
        ty: MsgType,
        src: u32,
        dst: u32,
        parts: &[&[u8]],
    ) -> Result {
        let _ = g;
        let size: usize = parts.iter().map(|p| p.len()).sum();
        if size > VCHIQ_MAX_MSG_SIZE {
            return Err(VchiqError::TooLarge);
        }
        let base = self.local_part.sync as usize * VCHIQ_SLOT_SIZE;
        let Some(msgid_word) = self.region.word(base) else {
            return Err(VchiqError::Invalid);
        };
        if !sync_slot::is_free(msgid_word, &*self.platform) {
            return Err(VchiqError::Retry);
        }
        let mut o = base + VCHIQ_HEADER_SIZE;
        for p in parts {
            self.region.write_bytes(o, p);
            o += p.len();
        }
        self.region.store(base + 4, size as u32, Ordering::Relaxed);
        // Relaxed body and size above: published by the Release in `sync_slot::publish`.
        sync_slot::publish(msgid_word, make_msgid(ty, src, dst), &*self.platform);
        self.signal_remote(off::SYNC_TRIGGER);
        bump_serialized(&self.counters.msgs_sent);
        Ok(())
    }

    fn sync_release(&self) {
        let base = self.remote_part.sync as usize * VCHIQ_SLOT_SIZE;
        if let Some(w) = self.region.word(base) {
            sync_slot::release(w, &*self.platform);
        }
        self.signal_remote(off::SYNC_RELEASE);
    }

    /// Whether the peer's sync slot holds a message, by one look at its msgid. A look that
    /// finds none stands for [`Vchiq::sync_poll`]'s, which would do nothing: Relaxed is enough
    /// for that, since a zero publishes nothing (the round's event `take` already ordered what
    /// the peer signalled before it), and a message that lands after the look is one that lands
    /// after `sync_poll`'s, taken on its SYNC_TRIGGER's round. A look that finds one leads to
    /// `sync_poll`, which reads the msgid again with its barriers.
    pub(crate) fn sync_slot_full(&self) -> bool {
        let base = self.remote_part.sync as usize * VCHIQ_SLOT_SIZE;
        self.region
            .word(base)
            // Relaxed: see above.
            .is_some_and(|w| w.load(Ordering::Relaxed) != 0)
    }

    /// The peer's sync slot: at most one message.
    pub(crate) fn sync_poll(&self, scratch: &mut [u8]) -> usize {
        let base = self.remote_part.sync as usize * VCHIQ_SLOT_SIZE;
        let Some(msgid) = self
            .region
            .word(base)
            .and_then(|w| sync_slot::pending(w, &*self.platform))
        else {
            return 0;
        };
        // Relaxed: ordered by the Acquire (and rmb) of the msgid in `sync_slot::pending`; the
        // peer wrote the size before its Release of the msgid. Checked by `Header::decode`.
        let size = self.region.load(base + 4, Ordering::Relaxed);
        let h = match Header::decode(msgid, size, 0) {
            Ok(h) => h,
            Err(_) => {
                self.protocol_error("bad sync header");
                self.sync_release();
                return 1;
            }
        };
        bump_serialized(&self.counters.msgs_received);
        match h.ty {
            MsgType::OpenAck => {
                let mut p = [0u8; 2];
                let n = (h.size as usize).min(2);
                self.region.read_bytes(base + 8, &mut p[..n]);
                let v = if n == 2 { i16::from_le_bytes(p) } else { 0 };
                let mut g = self.inner.lock();
                self.open_acked(&mut g, &h, v, true);
                drop(g);
                self.sync_release();
                1
            }
            MsgType::Data => {
                let target = {
                    let g = self.inner.lock();
                    match g.services.get(h.dst as usize) {
                        Some(Some(s))
                            if s.state == ServiceState::OpenSync && s.remoteport == h.src =>
                        {
                            Some((s.handler.clone(), s.handle))
                        }
                        _ => None,
                    }
                };
                let Some((handler, handle)) = target else {
                    self.sync_release();
                    return 1;
                };
                self.dispatch_pending();
                let len = h.size as usize;
                let Some(buf) = scratch.get_mut(..len) else {
                    return 0;
                };
                self.region.read_bytes(base + 8, buf);
                let token = MessageToken {
                    slot: self.remote_part.sync,
                    offset: 0,
                    handle,
                    sync: true,
                };
                let ctx = ServiceCtx {
                    vchiq: self,
                    handle,
                };
                // Sync messages are released when the callback returns (Hold acts as Done: the
                // single sync slot must not stay blocked by a held message).
                match handler.callback(
                    &ctx,
                    Event::Message(Message {
                        payload: buf,
                        token,
                    }),
                ) {
                    Deliver::Retry => 0,
                    Deliver::Done | Deliver::Hold => {
                        self.sync_release();
                        1
                    }
                }
            }
            _ => {
                self.sync_release();
                1
            }
        }
    }
}
