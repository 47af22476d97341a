//! Bulk transfers (docs/protocols/vchiq.md §5): per-service transmit/receive queues of 4, the
//! slave's pagelist-based requests and their completion (with fragment copy-back), completions
//! and abort at close. The master's side (pairing and DMA) is in `bulk_master.rs`.
//!
//! Modes: [`BulkMode::Callback`] delivers [`crate::Event::Bulk`]; [`BulkMode::NoCallback`] keeps
//! the completion for [`Vchiq::take_bulk_completion`]; blocking is [`Vchiq::wait_bulk`] on top
//! of that, interruptible (the transfer stays queued and can be waited for again, like the C
//! API's WAITING mode, or aborted by closing the service).

use alloc::vec::Vec;

use core::time::Duration;

use crate::config::Role;
use crate::engine::counters::bump;
use crate::engine::service::{BulkCompletion, BulkDir, BulkMode, ServiceHandle};
use crate::engine::vchiq::{Inner, LocalBulk, PendingEv, Vchiq};
use crate::error::{Result, VchiqError};
use crate::wire::consts::*;
use crate::wire::header::Header;
use crate::wire::layout::BulkPayload;
use crate::wire::pagelist::{self, fragment_split, needs_fragment};
use zerocopy::little_endian::{I32, U32};
use zerocopy::IntoBytes;

type BulkResultT = core::result::Result<(), (VchiqError, Vec<u8>)>;

/// Take the lowest set bit of `mask` (clearing it): its index, or `None` when none is set.
pub(super) fn take_bit(mask: &mut u64) -> Option<u32> {
    if *mask == 0 {
        return None;
    }
    let i = mask.trailing_zeros();
    *mask &= !(1u64 << i);
    Some(i)
}

impl Vchiq {
    /// Transmit `buf[offset..offset+len]` to the peer. The buffer is owned by the transfer until
    /// it comes back in the [`BulkCompletion`]. On error it is returned at once.
    ///
    /// `Retry` when the service's queue (4) or the pagelists are full; `Invalid` for a bad range
    /// or an OPENSYNC service; `Closed` if not open.
    pub fn bulk_transmit(
        &self,
        h: ServiceHandle,
        buf: Vec<u8>,
        offset: usize,
        len: usize,
        tag: u64,
        mode: BulkMode,
    ) -> BulkResultT {
        self.bulk_queue(h, BulkDir::Transmit, buf, offset, len, tag, mode)
    }

    /// Receive into `buf[offset..offset+len]`. Any offset and length: unaligned cache-line
    /// edges use a fragment (see [`crate::wire::pagelist`]). See [`Vchiq::bulk_transmit`].
    pub fn bulk_receive(
        &self,
        h: ServiceHandle,
        buf: Vec<u8>,
        offset: usize,
        len: usize,
        tag: u64,
        mode: BulkMode,
    ) -> BulkResultT {
        self.bulk_queue(h, BulkDir::Receive, buf, offset, len, tag, mode)
    }

    #[allow(clippy::too_many_arguments)]
    fn bulk_queue(
        &self,
        h: ServiceHandle,
        dir: BulkDir,
        buf: Vec<u8>,
        offset: usize,
        len: usize,
        tag: u64,
        mode: BulkMode,
    ) -> BulkResultT {
        if let Err(e) = self.check_alive() {
            return Err((e, buf));
        }
        if offset.checked_add(len).is_none_or(|e| e > buf.len()) {
            return Err((VchiqError::Invalid, buf));
        }
        if len > self.cfg.max_bulk_size() {
            return Err((VchiqError::TooLarge, buf));
        }
        let mut g = self.inner.lock();
        let s = match self.service(&g, h) {
            Ok(s) => s,
            Err(e) => return Err((e, buf)),
        };
        match s.state {
            ServiceState::Open => {}
            // Bulk transfers are refused in OPENSYNC (docs/protocols/vchiq.md §7).
            ServiceState::OpenSync => return Err((VchiqError::Invalid, buf)),
            _ => return Err((VchiqError::Closed, buf)),
        }
        let remote = s.remoteport;
        let queued = match dir {
            BulkDir::Transmit => s.tx.local.len(),
            BulkDir::Receive => s.rx.local.len(),
        };
        if queued >= VCHIQ_NUM_SERVICE_BULKS {
            bump(&self.counters.retries);
            Self::mark_tx_blocked(&mut g, h);
            return Err((VchiqError::Retry, buf));
        }
        let mut entry = LocalBulk {
            tag,
            buf,
            offset,
            len,
            mode,
            pagelist: u32::MAX,
            fragment: None,
        };
        if self.role == Role::Slave {
            if let Err(e) = self.slave_submit(&mut g, h, remote, dir, &mut entry) {
                if e == VchiqError::Retry {
                    bump(&self.counters.retries);
                    Self::mark_tx_blocked(&mut g, h);
                }
                return Err((e, entry.buf));
            }
        }
        let pending_remote = {
            let Ok(s) = self.service_mut(&mut g, h) else {
                return Err((VchiqError::Closed, entry.buf));
            };
            let q = s.queue(dir);
            q.local.push_back(entry);
            let pending_remote = !q.remote.is_empty();
            g.mark_bulk_port(h.port());
            pending_remote
        };
        drop(g);
        if self.role == Role::Master && pending_remote {
            self.kick();
        }
        Ok(())
    }

    /// Slave: pagelist (+ fragment), then BULK_TX/RX.
    fn slave_submit(
        &self,
        g: &mut Inner,
        h: ServiceHandle,
        remote: u32,
        dir: BulkDir,
        e: &mut LocalBulk,
    ) -> Result {
        let addr = e.buf.as_ptr() as usize + e.offset;
        let cl = self.cfg.cache_line_size;
        if !self.can_queue(g, 8) {
            return Err(VchiqError::Retry);
        }
        let pl = take_bit(&mut g.pagelists_free).ok_or(VchiqError::Retry)?;
        let mut frag = None;
        if dir == BulkDir::Receive
            && needs_fragment(addr, e.len, cl)
            // Relaxed: a test switch.
            && !self.no_fragments.load(core::sync::atomic::Ordering::Relaxed)
        {
            match take_bit(&mut g.fragments_free) {
                Some(k) => frag = Some(k),
                None => {
                    g.pagelists_free |= 1 << pl;
                    return Err(VchiqError::Retry);
                }
            }
        }
        let ty = match (dir, frag) {
            (BulkDir::Transmit, _) => PAGELIST_WRITE,
            (BulkDir::Receive, None) => PAGELIST_READ,
            (BulkDir::Receive, Some(k)) => PAGELIST_READ_WITH_FRAGMENTS + k as u16,
        };
        let pl_off = self.cfg.pagelists_offset() + pl as usize * self.cfg.pagelist_size;
        let free = |g: &mut Inner| {
            g.pagelists_free |= 1 << pl;
            if let Some(k) = frag {
                g.fragments_free |= 1 << k;
            }
        };
        if let Err(err) = pagelist::build(
            &self.region,
            &*self.platform,
            pl_off,
            self.cfg.pagelist_size,
            addr,
            e.len,
            ty,
            self.entry_format(),
        ) {
            free(g);
            return Err(err);
        }
        match dir {
            // Cacheable transmit data written back before the VideoCore reads it.
            BulkDir::Transmit => self.platform.dma_clean(addr, e.len),
            // Receive: write back and invalidate the whole lines the VideoCore will DMA into
            // *before* it does (Linux's `dma_map_sg(DMA_FROM_DEVICE)`): otherwise a dirty line
            // evicted during the transfer overwrites its data, and a clean one can be refetched
            // early. Only the whole-line middle: partial head/tail lines go through the fragment
            // (the VideoCore never writes them in the buffer), and we must not touch lines we
            // share with neighbouring data. Without a fragment (aligned, or the test switch) the
            // range is the whole buffer. `slave_finish` invalidates the middle again after DONE.
            BulkDir::Receive => {
                let split = match frag {
                    Some(_) => fragment_split(addr % VCHIQ_SLOT_SIZE, e.len, cl),
                    None => pagelist::FragmentSplit { head: 0, tail: 0 },
                };
                let mid_len = e.len - split.head - split.tail;
                if mid_len > 0 {
                    self.platform
                        .dma_clean_invalidate(addr + split.head, mid_len);
                }
            }
        }
        let msg = BulkPayload {
            pagelist: U32::new(self.region.bus() + pl_off as u32),
            size: I32::new(e.len as i32),
        };
        let ty = match dir {
            BulkDir::Transmit => MsgType::BulkTx,
            BulkDir::Receive => MsgType::BulkRx,
        };
        if let Err(err) = self.queue_locked(g, ty, h.port() as u32, remote, &[msg.as_bytes()], None)
        {
            pagelist::unmap(&*self.platform, msg.pagelist.get(), addr, e.len);
            free(g);
            return Err(err);
        }
        e.pagelist = pl;
        e.fragment = frag;
        Ok(())
    }

    /// Slave: BULK_x_DONE completes the head of the `dir` queue.
    pub(crate) fn slave_bulk_done(&self, g: &mut Inner, h: &Header, dir: BulkDir, actual: i32) {
        let port = h.dst as usize;
        let entry = match g.services.get_mut(port) {
            Some(Some(s)) if s.remoteport == h.src => s.queue(dir).local.pop_front(),
            _ => None,
        };
        let Some(e) = entry else {
            self.protocol_error("BULK_x_DONE with nothing queued");
            return;
        };
        let result = if actual == VCHIQ_BULK_ACTUAL_ABORTED {
            Err(VchiqError::Aborted)
        } else if actual < 0 || actual as usize > e.len {
            self.protocol_error("BULK_x_DONE actual out of range");
            Err(VchiqError::Aborted)
        } else {
            Ok(actual as usize)
        };
        let mode = e.mode;
        let c = self.slave_finish(g, e, dir, result);
        self.complete(g, port, c, mode);
    }

    /// Slave: unmap, copy fragments back, free the pagelist and fragment.
    fn slave_finish(
        &self,
        g: &mut Inner,
        mut e: LocalBulk,
        dir: BulkDir,
        result: Result<usize>,
    ) -> BulkCompletion {
        let addr = e.buf.as_ptr() as usize + e.offset;
        let cl = self.cfg.cache_line_size;
        if e.pagelist != u32::MAX {
            let pl_off = self.cfg.pagelists_offset() + e.pagelist as usize * self.cfg.pagelist_size;
            let owner = self.region.bus().wrapping_add(pl_off as u32);
            pagelist::unmap(&*self.platform, owner, addr, e.len);
            g.pagelists_free |= 1 << e.pagelist;
        }
        if let (BulkDir::Receive, Ok(actual)) = (dir, result) {
            let page_off = addr % VCHIQ_SLOT_SIZE;
            let split = match e.fragment {
                Some(_) => fragment_split(page_off, actual, cl),
                None => pagelist::FragmentSplit { head: 0, tail: 0 },
            };
            // Invalidate only whole lines we own (docs/protocols/vchiq.md §5 fix 2: exact range,
            // never the page).
            let mid_start = addr + split.head;
            let mid_len = actual - split.head - split.tail;
            if mid_len > 0 {
                self.platform.dma_invalidate(mid_start, mid_len);
            }
            if let Some(k) = e.fragment {
                let frag = self.cfg.fragments_offset() + k as usize * self.cfg.fragment_size();
                let o = e.offset;
                if split.head > 0 {
                    self.region.read_bytes(frag, &mut e.buf[o..o + split.head]);
                }
                if split.tail > 0 {
                    let t = o + actual - split.tail;
                    self.region
                        .read_bytes(frag + cl, &mut e.buf[t..t + split.tail]);
                }
            }
        }
        if let Some(k) = e.fragment {
            g.fragments_free |= 1 << k;
        }
        match result {
            Ok(_) => bump(&self.counters.bulks_done),
            Err(_) => bump(&self.counters.bulks_aborted),
        }
        BulkCompletion {
            dir,
            tag: e.tag,
            buf: e.buf,
            result,
        }
    }

    /// Deliver a completion by the entry's mode.
    pub(crate) fn complete(&self, g: &mut Inner, port: usize, c: BulkCompletion, mode: BulkMode) {
        // A bulk queue entry (and its pagelist/fragment) came free: services refused with
        // `Retry` hear about it ([`crate::Event::TxSpace`]).
        g.tx_freed = true;
        let Some(Some(s)) = g.services.get_mut(port) else {
            return;
        };
        match mode {
            BulkMode::NoCallback => s.done.push_back(c),
            BulkMode::Callback => {
                if let Some(s) = g.services[port].take() {
                    Self::push_event(g, &s, PendingEv::Bulk(c));
                    g.services[port] = Some(s);
                }
            }
        }
    }

    /// Abort every local entry of a service (close / remove), delivering ABORTED.
    pub(crate) fn abort_local_bulks(&self, g: &mut Inner, port: usize) {
        for dir in [BulkDir::Transmit, BulkDir::Receive] {
            loop {
                let e = match g.services.get_mut(port) {
                    Some(Some(s)) => s.queue(dir).local.pop_front(),
                    _ => None,
                };
                let Some(e) = e else { break };
                let mode = e.mode;
                let c = if self.role == Role::Slave {
                    self.slave_finish(g, e, dir, Err(VchiqError::Aborted))
                } else {
                    bump(&self.counters.bulks_aborted);
                    BulkCompletion {
                        dir,
                        tag: e.tag,
                        buf: e.buf,
                        result: Err(VchiqError::Aborted),
                    }
                };
                self.complete(g, port, c, mode);
            }
        }
        if self.role == Role::Master {
            // Remote entries that arrived after our CLOSE: answer DONE(−1) (best effort).
            self.master_abort_remote(g, port);
        }
    }

    /// The oldest NoCallback completion of a service.
    pub fn take_bulk_completion(&self, h: ServiceHandle) -> Result<Option<BulkCompletion>> {
        let mut g = self.inner.lock();
        Ok(self.service_mut(&mut g, h)?.done.pop_front())
    }

    /// The NoCallback completion with `tag`, if finished.
    pub fn take_bulk_completion_tag(
        &self,
        h: ServiceHandle,
        tag: u64,
    ) -> Result<Option<BulkCompletion>> {
        let mut g = self.inner.lock();
        let s = self.service_mut(&mut g, h)?;
        Ok(s.done
            .iter()
            .position(|c| c.tag == tag)
            .and_then(|i| s.done.remove(i)))
    }

    /// Whether a NoCallback transfer with `tag` is still queued.
    pub fn bulk_pending(&self, h: ServiceHandle, tag: u64) -> bool {
        let g = self.inner.lock();
        self.service(&g, h).is_ok_and(|s| {
            s.tx.local
                .iter()
                .chain(s.rx.local.iter())
                .any(|e| e.tag == tag && e.mode == BulkMode::NoCallback)
        })
    }

    /// Blocking mode: poll the instance, pausing the configured way ([`crate::Config::wait`]),
    /// until the NoCallback transfer `tag` completes. `Timeout` once `timeout` passed: the
    /// transfer stays queued; call again to resume waiting, or close the service to abort it. A
    /// completion that was aborted is returned as `Ok` with `result == Err(Aborted)`; an unknown
    /// tag is `Invalid`.
    pub fn wait_bulk(
        &self,
        h: ServiceHandle,
        tag: u64,
        timeout: Duration,
    ) -> Result<BulkCompletion> {
        self.wait_until(timeout, || self.bulk_check(h, tag))
    }

    /// One look for the NoCallback transfer `tag` of [`Vchiq::wait_bulk`] and its async form:
    /// `Some` with its completion (taken) or an error, `None` while it is still queued.
    pub(crate) fn bulk_check(&self, h: ServiceHandle, tag: u64) -> Option<Result<BulkCompletion>> {
        {
            // One lock for both checks: a completion moving from the queue to `done` in
            // between must not look like an unknown tag.
            let mut g = self.inner.lock();
            let s = match self.service_mut(&mut g, h) {
                Ok(s) => s,
                Err(e) => return Some(Err(e)),
            };
            if let Some(i) = s.done.iter().position(|c| c.tag == tag) {
                if let Some(c) = s.done.remove(i) {
                    return Some(Ok(c));
                }
            }
            let queued =
                s.tx.local
                    .iter()
                    .chain(s.rx.local.iter())
                    .any(|e| e.tag == tag && e.mode == BulkMode::NoCallback);
            if queued {
                None
            } else {
                Some(Err(VchiqError::Invalid))
            }
        }
    }
    pub(crate) fn entry_format(&self) -> pagelist::EntryFormat {
        if self.cfg.pagelist_addr36 {
            pagelist::EntryFormat::Addr36
        } else {
            pagelist::EntryFormat::Classic
        }
    }
}
