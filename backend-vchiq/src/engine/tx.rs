//! The transmit side: reserving space in our slots (padding, slot entry), per-service message and
//! slot quotas with the global data quota (docs/protocols/vchiq.md §4 "Quota / flow control"),
//! writing the message and publishing `tx_pos`, and the recycle scan that returns quota
//! (`process_free_queue`).
//!
//! Every refusal is a typed [`VchiqError::Retry`]: nothing was queued, call again after the peer
//! makes progress. The core never sleeps.

use core::sync::atomic::{AtomicU32, Ordering};

use core::time::Duration;

use crate::engine::counters::{bump, bump_serialized};
use crate::engine::service::ServiceHandle;
use crate::engine::vchiq::{Inner, Vchiq};
use crate::error::{Result, VchiqError};
use crate::shared::recycle;
use crate::wire::consts::*;
use crate::wire::header::{make_msgid, stride, Header};
use crate::wire::layout::off;

impl Vchiq {
    /// Queue a DATA message on an open service. `Retry` on back-pressure (slot, quota or sync slot
    /// busy), `Closed` if the service is not open, `TooLarge` beyond 4088 bytes.
    ///
    /// ```
    /// # use fwipc_vchiq::sim::SimPair;
    /// # use fwipc_vchiq::{ServiceParams, Event, Deliver, consts::make_fourcc};
    /// let pair = SimPair::new().unwrap();
    /// // A VideoCore-side service that answers "pong".
    /// pair.master().add_service(ServiceParams::new(make_fourcc(*b"ping")), |ctx: &fwipc_vchiq::ServiceCtx<'_>, ev: Event<'_>| {
    ///     if let Event::Message(_) = ev {
    ///         ctx.vchiq.queue_message(ctx.handle, b"pong").unwrap();
    ///     }
    ///     Deliver::Done
    /// }).unwrap();
    /// pair.connect().unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let h = pair.slave().open_service_wait(
    ///     ServiceParams::new(make_fourcc(*b"ping")),
    ///     std::sync::Arc::new(move |_: &fwipc_vchiq::ServiceCtx<'_>, ev: Event<'_>| {
    ///         if let Event::Message(m) = ev { tx.lock().unwrap().send(m.payload().to_vec()).unwrap(); }
    ///         Deliver::Done
    ///     }),
    ///     std::time::Duration::from_secs(5),
    /// ).unwrap();
    /// pair.slave().queue_message(h, b"ping").unwrap();
    /// assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), b"pong");
    /// ```
    pub fn queue_message(&self, h: ServiceHandle, payload: &[u8]) -> Result {
        self.queue_message_parts(h, &[payload])
    }

    /// Queue a DATA message gathered from several parts (the VCHI element list).
    pub fn queue_message_parts(&self, h: ServiceHandle, parts: &[&[u8]]) -> Result {
        self.check_alive()?;
        let size: usize = parts.iter().map(|p| p.len()).sum();
        if size > VCHIQ_MAX_MSG_SIZE {
            return Err(VchiqError::TooLarge);
        }
        let mut g = self.inner.lock();
        let s = self.service(&g, h)?;
        let (port, remote, state) = (h.port(), s.remoteport, s.state);
        let r = match state {
            ServiceState::Open => self.queue_locked(
                &mut g,
                MsgType::Data,
                port as u32,
                remote,
                parts,
                Some(port),
            ),
            ServiceState::OpenSync => {
                self.queue_sync_locked(&mut g, MsgType::Data, port as u32, remote, parts)
            }
            _ => Err(VchiqError::Closed),
        };
        if r == Err(VchiqError::Retry) {
            bump(&self.counters.retries);
            Self::mark_tx_blocked(&mut g, h);
        }
        r
    }

    /// Like [`Vchiq::queue_message`], but on back-pressure polls the instance and pauses the
    /// configured way ([`crate::Config::wait`]) until it fits; `Timeout` once `timeout` passed
    /// (nothing queued then).
    pub fn queue_message_wait(
        &self,
        h: ServiceHandle,
        payload: &[u8],
        timeout: Duration,
    ) -> Result {
        self.wait_until(timeout, || match self.queue_message(h, payload) {
            Err(VchiqError::Retry) => None,
            r => Some(r),
        })
    }
    /// Write one message into our slots and publish it. Caller holds the lock. `data_port` =
    /// Some(port) applies the DATA quotas.
    pub(crate) fn queue_locked(
        &self,
        g: &mut Inner,
        ty: MsgType,
        src: u32,
        dst: u32,
        parts: &[&[u8]],
        data_port: Option<usize>,
    ) -> Result {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        if size > VCHIQ_MAX_MSG_SIZE {
            return Err(VchiqError::TooLarge);
        }
        if self.loan_blocks(g) {
            // A slot loan is out: nothing may be written behind it (tx_loan.rs).
            return Err(VchiqError::Retry);
        }
        let st = stride(size) as u32;
        if let Some(port) = data_port {
            self.admit_data(g, port, st)?;
        }
        let hdr_off = self.reserve_space(g, st)?;
        // Body first, then size, then msgid. Relaxed: all published by the Release store of tx_pos
        // below (docs/protocols/vchiq.md §3 barrier 2: the receiver never sees a tx_pos covering an
        // unwritten header).
        let mut o = hdr_off + VCHIQ_HEADER_SIZE;
        for p in parts {
            self.region.write_bytes(o, p);
            o += p.len();
        }
        match data_port {
            Some(port) => self.write_data_header(g, hdr_off, port, dst, size),
            None => {
                self.region
                    .store(hdr_off + 4, size as u32, Ordering::Relaxed);
                self.region
                    .store(hdr_off, make_msgid(ty, src, dst), Ordering::Relaxed);
                g.tx_pos = g.tx_pos.wrapping_add(st);
                self.publish_tx_pos(g);
                bump_serialized(&self.counters.msgs_sent);
            }
        }
        log::trace!(target: "vchiq", "{:?} tx {ty:?} {src}->{dst} size {size}", self.role);
        Ok(())
    }

    /// The queue index of the slot a message of stride `st` written next will end in.
    fn end_index(g: &Inner, st: u32) -> u32 {
        let in_slot = g.tx_pos & VCHIQ_SLOT_MASK;
        if in_slot != 0 && VCHIQ_SLOT_SIZE as u32 - in_slot < st {
            (g.tx_pos >> 12).wrapping_add(1)
        } else {
            g.tx_pos.wrapping_add(st - 1) >> 12
        }
    }

    /// The DATA quotas for a message of stride `st` from `port` written next
    /// (docs/protocols/vchiq.md §4): `Retry` when one refuses it, `Invalid` for an unknown port.
    pub(crate) fn admit_data(&self, g: &mut Inner, port: usize, st: u32) -> Result {
        let end_index = Self::end_index(g, st);
        if g.quotas.get(port).is_none() {
            return Err(VchiqError::Invalid);
        }
        if Self::quota_blocked(g, port, end_index).is_some() {
            // Quota comes back only from recycled slots; take any the peer already returned.
            self.process_free_queue_locked(g);
            if let Some(only_in_open_slot) = Self::quota_blocked(g, port, end_index) {
                if only_in_open_slot {
                    // Better than Linux (docs/protocols/vchiq.md §4): the quota we wait for is
                    // held only by messages in the slot we are still writing, which the
                    // receiver cannot finish and recycle while we wait, so a quota smaller than
                    // one slot's worth of messages would stall forever in a quiet system. Close
                    // the slot with PADDING and publish, so the receiver finishes and recycles
                    // it and the quota returns. At most once per stall: the next attempt finds
                    // `tx_pos` on a slot boundary. The wire protocol is unchanged: a receiver
                    // cannot tell this PADDING from the one a sender writes before a message
                    // that does not fit. (unverified on hardware: that the VPU firmware as
                    // receiver recycles such a slot like any other; nothing on the wire
                    // distinguishes it.)
                    self.pad_current_slot(g);
                }
                return Err(VchiqError::Retry);
            }
        }
        Ok(())
    }

    /// Finish a DATA message of `size` bytes from `port` to `dst` whose payload is written at
    /// `hdr_off` (= the current `tx_pos`): its header (size, then msgid), the quota accounting,
    /// and the publication of the new `tx_pos`.
    pub(crate) fn write_data_header(
        &self,
        g: &mut Inner,
        hdr_off: usize,
        port: usize,
        dst: u32,
        size: usize,
    ) {
        // Relaxed: published by the Release store of tx_pos in `publish_tx_pos`.
        self.region
            .store(hdr_off + 4, size as u32, Ordering::Relaxed);
        self.region.store(
            hdr_off,
            make_msgid(MsgType::Data, port as u32, dst),
            Ordering::Relaxed,
        );
        let end_index = g.tx_pos >> 12;
        g.tx_pos = g.tx_pos.wrapping_add(stride(size) as u32);
        if let Some(q) = g.quotas.get_mut(port) {
            q.message_use_count += 1;
            if end_index != q.previous_tx_index {
                q.previous_tx_index = end_index;
                q.slot_use_count += 1;
                q.open_slot_msgs = 0;
            }
            q.open_slot_msgs += 1;
        }
        if end_index != g.previous_data_index {
            g.previous_data_index = end_index;
            g.data_use_count += 1;
        }
        self.publish_tx_pos(g);
        bump_serialized(&self.counters.msgs_sent);
    }

    /// Whether a DATA message for `port` ending in queue index `end_index` is refused by a quota
    /// (docs/protocols/vchiq.md §4 (a)-(c)). `Some(true)` when the blocking quota is held only by
    /// DATA in the slot currently being written (so only padding it out lets the receiver recycle
    /// it).
    ///
    /// Padding is needed only when *all* of the blocking quota sits in the open slot: quota held
    /// in older (finished) slots comes back when the receiver recycles them, so then we just
    /// wait, as Linux does, and waste no slot space.
    fn quota_blocked(g: &Inner, port: usize, end_index: u32) -> Option<bool> {
        let q = g.quotas.get(port)?;
        let cur = g.tx_pos >> 12;
        let open_slot = g.tx_pos & VCHIQ_SLOT_MASK != 0;
        // (a) global data quota: one slot is always left for control messages.
        if end_index != g.previous_data_index && g.data_use_count >= g.data_quota {
            return Some(open_slot && g.previous_data_index == cur && g.data_use_count <= 1);
        }
        let ours_open = open_slot && q.previous_tx_index == cur;
        // (b) per-service message quota.
        if q.message_use_count >= q.message_quota {
            return Some(ours_open && q.message_use_count <= q.open_slot_msgs);
        }
        // (c) per-service slot quota.
        if end_index != q.previous_tx_index && q.slot_use_count >= q.slot_quota {
            return Some(ours_open && q.slot_use_count <= 1);
        }
        None
    }

    /// Fill the rest of the current slot with one PADDING message and publish `tx_pos` (now on a
    /// slot boundary). No-op on a boundary.
    fn pad_current_slot(&self, g: &mut Inner) {
        let in_slot = g.tx_pos & VCHIQ_SLOT_MASK;
        if in_slot == 0 {
            return;
        }
        let space = VCHIQ_SLOT_SIZE as u32 - in_slot;
        let hdr = self.tx_offset(g);
        // PADDING fills the slot exactly (strides are multiples of 8: room for a header).
        // Relaxed: published by the Release store of tx_pos in `publish_tx_pos`.
        self.region.store(hdr + 4, space - 8, Ordering::Relaxed);
        self.region.store(hdr, 0, Ordering::Relaxed);
        g.tx_pos = g.tx_pos.wrapping_add(space);
        bump(&self.counters.quota_pads);
        self.publish_tx_pos(g);
    }

    fn publish_tx_pos(&self, g: &Inner) {
        // wmb (docs/protocols/vchiq.md §3 barrier 2, Linux's wmb before `local->tx_pos`): payload
        // and header reach the VideoCore, outside our coherence domain, before the new tx_pos.
        self.platform.wmb();
        // Release (docs/protocols/vchiq.md §3 barrier 2): payload and header stores above
        // happen-before the peer's Acquire load of tx_pos.
        self.region
            .store(self.local_off + off::TX_POS, g.tx_pos, Ordering::Release);
        self.signal_remote(off::TRIGGER);
    }

    /// Region offset for a message of `st` bytes, padding the current slot and entering a new
    /// one as needed. `Retry` when no free slot (after publishing the padded position so the
    /// peer can finish and recycle the slot).
    pub(crate) fn reserve_space(&self, g: &mut Inner, st: u32) -> Result<usize> {
        if self.loan_blocks(g) {
            return Err(VchiqError::Retry);
        }
        let in_slot = g.tx_pos & VCHIQ_SLOT_MASK;
        if in_slot != 0 && VCHIQ_SLOT_SIZE as u32 - in_slot < st {
            // The message does not fit: pad (and publish, so the peer can finish the slot).
            let space = VCHIQ_SLOT_SIZE as u32 - in_slot;
            let hdr = self.tx_offset(g);
            // Relaxed: published by the Release store of tx_pos in `publish_tx_pos`.
            self.region.store(hdr + 4, space - 8, Ordering::Relaxed);
            self.region.store(hdr, 0, Ordering::Relaxed);
            g.tx_pos = g.tx_pos.wrapping_add(space);
            self.publish_tx_pos(g);
        }
        if g.tx_pos & VCHIQ_SLOT_MASK == 0 {
            // Entering a new slot: reclaim recycled ones first.
            self.process_free_queue_locked(g);
            let q = g.tx_pos >> 12;
            if (g.slot_queue_available.wrapping_sub(q) as i32) <= 0 {
                return Err(VchiqError::Retry);
            }
        }
        Ok(self.tx_offset(g))
    }

    fn tx_offset(&self, g: &Inner) -> usize {
        let slot = g.tx_slot_queue[((g.tx_pos >> 12) & VCHIQ_SLOT_QUEUE_MASK) as usize];
        slot as usize * VCHIQ_SLOT_SIZE + (g.tx_pos & VCHIQ_SLOT_MASK) as usize
    }

    /// Whether a control message of `size` bytes can be queued right now (used before mutating
    /// state while handling a peer message, so a stall leaves the message to be re-parsed).
    pub(crate) fn can_queue(&self, g: &mut Inner, size: usize) -> bool {
        if self.loan_blocks(g) {
            return false;
        }
        let st = stride(size) as u32;
        let in_slot = g.tx_pos & VCHIQ_SLOT_MASK;
        let needs_new = in_slot == 0 || VCHIQ_SLOT_SIZE as u32 - in_slot < st;
        if !needs_new {
            return true;
        }
        self.process_free_queue_locked(g);
        let next = if in_slot == 0 {
            g.tx_pos >> 12
        } else {
            (g.tx_pos >> 12).wrapping_add(1)
        };
        (g.slot_queue_available.wrapping_sub(next) as i32) > 0
    }

    /// Recycled slots → quota back, slot available (docs/protocols/vchiq.md §1 "Recycle"). Returns
    /// slots reclaimed.
    ///
    /// Every poll round asks, and a slot comes back once per some hundred small messages: the
    /// answer "none" is one load here, inlined into the caller; the walk is out of line.
    #[inline]
    pub(crate) fn process_free_queue_locked(&self, g: &mut Inner) -> usize {
        let Some(rec) = self.region.word(self.local_off + off::SLOT_QUEUE_RECYCLE) else {
            return 0;
        };
        // Relaxed: only decides whether to walk; `recycle::pop`'s Acquire load of the same word
        // is the one that orders the entries read after it. "Nothing recycled" reads nothing
        // else, so it needs no order.
        if rec.load(Ordering::Relaxed) == g.slot_queue_available {
            return 0;
        }
        self.process_free_queue_walk(g, rec)
    }

    /// [`Vchiq::process_free_queue_locked`]'s walk over the recycled slots; `rec` is our
    /// `slot_queue_recycle` word.
    #[inline(never)]
    fn process_free_queue_walk(&self, g: &mut Inner, rec: &AtomicU32) -> usize {
        let Some(queue) = self
            .region
            .words(self.local_off + off::SLOT_QUEUE, VCHIQ_MAX_SLOTS_PER_SIDE)
        else {
            return 0;
        };
        // The furthest the peer may recycle: the recycle index started at the number of data
        // slots, and only slots we have left (tx_pos past their end) can have been finished by
        // the receiver.
        let limit = (g.tx_pos >> 12).wrapping_add(self.local_part.data_slots());
        let mut n = 0;
        loop {
            match recycle::pop(queue, rec, g.slot_queue_available, limit, &*self.platform) {
                Ok(None) => break,
                Err(recycle::BadRecycle) => {
                    self.protocol_error("slot_queue_recycle out of range");
                    break;
                }
                Ok(Some(slot)) => {
                    if !self.local_part.owns_data(slot) {
                        self.protocol_error("recycled slot not ours");
                        break;
                    }
                    self.scan_recycled_slot(g, slot);
                    // A slot (and the quota its messages held) came back.
                    g.tx_freed = true;
                    let idx = (g.slot_queue_available & VCHIQ_SLOT_QUEUE_MASK) as usize;
                    g.tx_slot_queue[idx] = slot;
                    g.slot_queue_available = g.slot_queue_available.wrapping_add(1);
                    bump_serialized(&self.counters.slots_recycled);
                    n += 1;
                }
            }
        }
        n
    }

    /// Return the quota held by the DATA messages in a recycled slot: −1 message per message,
    /// −1 slot per service per slot, −1 data slot if any DATA.
    fn scan_recycled_slot(&self, g: &mut Inner, slot: u32) {
        for w in g.scan_found.iter_mut() {
            *w = 0;
        }
        // The slot's words under one bounds check (a slot holds a hundred small messages, two
        // words of each read here).
        let Some(words) = self
            .region
            .words(slot as usize * VCHIQ_SLOT_SIZE, VCHIQ_SLOT_SIZE / 4)
        else {
            self.protocol_error("recycled slot outside the region");
            return;
        };
        // Relaxed: the slot is ours and was handed back through the Acquire in recycle::pop.
        let load = |i: usize| words.get(i).map_or(0, |w| w.load(Ordering::Relaxed));
        let mut pos = 0usize;
        let mut data_found = false;
        while pos < VCHIQ_SLOT_SIZE {
            let msgid = load(pos / 4);
            let size = load(pos / 4 + 1);
            let Ok(h) = Header::decode(msgid, size, pos) else {
                self.protocol_error("corrupt header in recycled slot");
                break;
            };
            if h.ty == MsgType::Data {
                let port = h.src as usize;
                if let Some(q) = g.quotas.get_mut(port) {
                    q.message_use_count = q.message_use_count.saturating_sub(1);
                    let (w, b) = (port / 64, port % 64);
                    if g.scan_found[w] & (1 << b) == 0 {
                        g.scan_found[w] |= 1 << b;
                        q.slot_use_count = q.slot_use_count.saturating_sub(1);
                    }
                }
                data_found = true;
            }
            pos += h.stride();
        }
        if data_found {
            g.data_use_count = g.data_use_count.saturating_sub(1);
        }
    }

    /// Slot quota left for a service (diagnostics / tests).
    pub fn quota_use(&self, h: ServiceHandle) -> Result<(u32, u32)> {
        let g = self.inner.lock();
        self.service(&g, h)?;
        let q = g.quotas[h.port()];
        Ok((q.message_use_count, q.slot_use_count))
    }
}

impl Vchiq {
    /// Test/simulator hook (hostile peer): write `bytes` verbatim where the next message header
    /// would go (header words included, nothing validated), zero the rest of that slot and move
    /// to the next slot, then publish. Lets a simulated VideoCore send corrupt headers and random
    /// garbage through the real slot path.
    #[cfg(any(feature = "sim", test))]
    pub(crate) fn queue_raw(&self, bytes: &[u8]) -> Result {
        self.check_alive()?;
        if bytes.len() > VCHIQ_SLOT_SIZE {
            return Err(VchiqError::TooLarge);
        }
        let mut g = self.inner.lock();
        let st = ((bytes.len().max(VCHIQ_HEADER_SIZE) + 7) & !7) as u32;
        let hdr_off = self.reserve_space(&mut g, st)?;
        self.region.write_bytes(hdr_off, bytes);
        let used = hdr_off % VCHIQ_SLOT_SIZE + bytes.len();
        self.region
            .zero(hdr_off + bytes.len(), VCHIQ_SLOT_SIZE - used);
        g.tx_pos = (g.tx_pos | VCHIQ_SLOT_MASK).wrapping_add(1);
        self.publish_tx_pos(&g);
        Ok(())
    }
}
