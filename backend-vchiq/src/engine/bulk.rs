//! Bulk transfers (docs/protocols/vchiq.md §5): per-service transmit/receive queues of 4, the
//! slave's pagelist-based requests and their completion (with fragment copy-back), the master's
//! pairing of local and remote requests and its DMA, size-mismatch aborts, and abort at close.
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
use crate::engine::vchiq::{Inner, LocalBulk, PendingEv, RemoteBulk, Vchiq};
use crate::error::{VResult, VchiqError};
use crate::shared::region::{copy_from_shared, copy_to_shared};
use crate::wire::consts::*;
use crate::wire::header::Header;
use crate::wire::layout::{BulkDonePayload, BulkPayload};
use crate::wire::pagelist::{self, fragment_split, needs_fragment};
use zerocopy::IntoBytes;

type BulkResultT = core::result::Result<(), (VchiqError, Vec<u8>)>;

fn take_bit(mask: &mut u64) -> Option<u32> {
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
            g.bulks_dirty = true;
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
    ) -> VResult {
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
            pagelist: self.region.bus() + pl_off as u32,
            size: e.len as i32,
        };
        let ty = match dir {
            BulkDir::Transmit => MsgType::BulkTx,
            BulkDir::Receive => MsgType::BulkRx,
        };
        if let Err(err) = self.queue_locked(g, ty, h.port() as u32, remote, &[msg.as_bytes()], None)
        {
            pagelist::unmap(&*self.platform, msg.pagelist, addr, e.len);
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
        result: Result<usize, VchiqError>,
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
    fn complete(&self, g: &mut Inner, port: usize, c: BulkCompletion, mode: BulkMode) {
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
    pub fn take_bulk_completion(&self, h: ServiceHandle) -> VResult<Option<BulkCompletion>> {
        let mut g = self.inner.lock();
        Ok(self.service_mut(&mut g, h)?.done.pop_front())
    }

    /// The NoCallback completion with `tag`, if finished.
    pub fn take_bulk_completion_tag(
        &self,
        h: ServiceHandle,
        tag: u64,
    ) -> VResult<Option<BulkCompletion>> {
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
    ) -> VResult<BulkCompletion> {
        self.wait_until(timeout, || {
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
        })
    }
    pub(crate) fn entry_format(&self) -> pagelist::EntryFormat {
        if self.cfg.pagelist_addr36 {
            pagelist::EntryFormat::Addr36
        } else {
            pagelist::EntryFormat::Classic
        }
    }

    // ---------------- master ----------------

    pub(crate) fn remote_bulk_count(&self, g: &Inner, port: usize) -> usize {
        match g.services.get(port) {
            Some(Some(s)) => s.tx.remote.len() + s.rx.remote.len(),
            _ => 0,
        }
    }

    /// Master: a slave request arrived.
    pub(crate) fn master_remote_bulk(
        &self,
        g: &mut Inner,
        h: &Header,
        dir: BulkDir,
        rb: RemoteBulk,
    ) {
        let port = h.dst as usize;
        let Some(Some(s)) = g.services.get_mut(port) else {
            self.protocol_error("bulk for unknown port");
            return;
        };
        if !s.is_open() || s.remoteport != h.src {
            self.protocol_error("bulk for a service not open");
            return;
        }
        let q = s.queue(dir);
        if q.remote.len() >= VCHIQ_NUM_SERVICE_BULKS {
            self.protocol_error("peer bulk queue overflow");
            return;
        }
        q.remote.push_back(rb);
        let local_empty = q.local.is_empty();
        g.bulks_dirty = true;
        if local_empty {
            let size = rb.size.max(0) as usize;
            if let Some(s) = g.services[port].take() {
                Self::push_event(g, &s, PendingEv::RemoteBulkPending { dir, size });
                g.services[port] = Some(s);
            }
        }
    }

    fn send_done(&self, g: &mut Inner, port: usize, remote: u32, dir: BulkDir, actual: i32) {
        // Our transmit completes the slave's RX request: BULK_RX_DONE (docs/protocols/vchiq.md §2
        // direction rule).
        let ty = match dir {
            BulkDir::Transmit => MsgType::BulkRxDone,
            BulkDir::Receive => MsgType::BulkTxDone,
        };
        let p = BulkDonePayload { actual };
        if self
            .queue_locked(g, ty, port as u32, remote, &[p.as_bytes()], None)
            .is_err()
        {
            log::warn!(target: "vchiq", "master: no slot for BULK_DONE");
        }
    }

    /// Master: answer every queued remote request with DONE(−1).
    fn master_abort_remote(&self, g: &mut Inner, port: usize) {
        for dir in [BulkDir::Transmit, BulkDir::Receive] {
            loop {
                let (rb, remote) = match g.services.get_mut(port) {
                    Some(Some(s)) => (s.queue(dir).remote.pop_front(), s.remoteport),
                    _ => (None, 0),
                };
                let Some(rb) = rb else { break };
                // Dummy requests (address 0) get no DONE (docs/protocols/vchiq.md §5).
                if rb.pagelist != 0 {
                    self.send_done(g, port, remote, dir, VCHIQ_BULK_ACTUAL_ABORTED);
                }
            }
        }
    }

    /// Master, close: DONE(−1) for remote requests, ABORTED for local ones, before the CLOSE.
    pub(crate) fn master_abort_bulks(&self, g: &mut Inner, port: usize) {
        self.master_abort_remote(g, port);
        for dir in [BulkDir::Transmit, BulkDir::Receive] {
            loop {
                let e = match g.services.get_mut(port) {
                    Some(Some(s)) => s.queue(dir).local.pop_front(),
                    _ => None,
                };
                let Some(e) = e else { break };
                let mode = e.mode;
                bump(&self.counters.bulks_aborted);
                let c = BulkCompletion {
                    dir,
                    tag: e.tag,
                    buf: e.buf,
                    result: Err(VchiqError::Aborted),
                };
                self.complete(g, port, c, mode);
            }
        }
    }

    /// Master: pair local and remote requests and run the transfers.
    ///
    /// Runs on every poll round, so it scans the services only when a bulk request was queued
    /// since the last scan (`Inner::bulks_dirty`); a scan that leaves a pair it could not run
    /// (no transmit space yet, or a service not open) keeps the scan due.
    pub(crate) fn master_process_bulks(&self) -> usize {
        let mut g = self.inner.lock();
        if !g.bulks_dirty {
            return 0;
        }
        g.bulks_dirty = false;
        let mut n = 0;
        for port in 0..g.services.len() {
            for dir in [BulkDir::Transmit, BulkDir::Receive] {
                loop {
                    let (ready, open) = match g.services.get_mut(port) {
                        Some(Some(s)) => {
                            let open = s.is_open();
                            let q = s.queue(dir);
                            (!q.local.is_empty() && !q.remote.is_empty(), open)
                        }
                        _ => (false, false),
                    };
                    if ready && !open {
                        // Not runnable now; look again on the next round.
                        g.bulks_dirty = true;
                        break;
                    }
                    if !ready {
                        break;
                    }
                    if !self.can_queue(&mut g, 4) {
                        g.bulks_dirty = true;
                        break;
                    }
                    let Some(Some(s)) = g.services.get_mut(port) else {
                        break;
                    };
                    let remote = s.remoteport;
                    let q = s.queue(dir);
                    let (Some(mut e), Some(rb)) = (q.local.pop_front(), q.remote.pop_front())
                    else {
                        break;
                    };
                    let result = if rb.size < 0 || rb.size as usize != e.len {
                        // Observed rule: any size mismatch aborts both sides
                        // (docs/protocols/vchiq.md §5, from the 'func' test; whether the firmware
                        // truncates tx > rx is unverified, so we never truncate).
                        Err(VchiqError::Aborted)
                    } else {
                        self.master_dma(dir, &mut e, rb)
                    };
                    let actual = match result {
                        Ok(a) => a as i32,
                        Err(_) => VCHIQ_BULK_ACTUAL_ABORTED,
                    };
                    if rb.pagelist != 0 {
                        self.send_done(&mut g, port, remote, dir, actual);
                    }
                    match result {
                        Ok(_) => bump(&self.counters.bulks_done),
                        Err(_) => bump(&self.counters.bulks_aborted),
                    }
                    let mode = e.mode;
                    let c = BulkCompletion {
                        dir,
                        tag: e.tag,
                        buf: e.buf,
                        result,
                    };
                    self.complete(&mut g, port, c, mode);
                    n += 1;
                }
            }
        }
        n
    }

    /// Master: the DMA itself, into/out of the slave's pages and fragments.
    fn master_dma(
        &self,
        dir: BulkDir,
        e: &mut LocalBulk,
        rb: RemoteBulk,
    ) -> Result<usize, VchiqError> {
        let pl_size = self.cfg.pagelist_size;
        let Some(pl_off) = self.region.bus_to_offset(rb.pagelist, pl_size) else {
            self.protocol_error("pagelist outside the region");
            return Err(VchiqError::Aborted);
        };
        let v =
            pagelist::parse(&self.region, pl_off, pl_size, self.entry_format()).map_err(|p| {
                self.protocol_error("bad pagelist");
                VchiqError::Protocol(p)
            })?;
        if v.length as usize != e.len {
            self.protocol_error("pagelist length differs from the message");
            return Err(VchiqError::Aborted);
        }
        let cl = self.cfg.cache_line_size;
        let len = e.len;
        let data = &mut e.buf[e.offset..e.offset + len];
        let platform = &*self.platform;
        let region = &self.region;
        let cpu = |bus: u64| -> Result<usize, fwipc_transport_api::ProtocolError> {
            let page = bus & !(VCHIQ_SLOT_SIZE as u64 - 1);
            // Only pages the slave mapped for *this* transfer (the one whose pagelist we
            // walk): a hostile slave cannot steer our copies into another transfer's buffer.
            let p = platform
                .bulk_bus_to_cpu(rb.pagelist, page)
                .ok_or(fwipc_transport_api::ProtocolError::OutOfRange)?;
            // Bulk pages are copied with byte atomics, the region only ever with word atomics
            // (`crate::shared::region`'s one-width rule): a page inside the region is refused.
            if region.overlaps(p, VCHIQ_SLOT_SIZE) {
                return Err(fwipc_transport_api::ProtocolError::OutOfRange);
            }
            Ok(p + (bus - page) as usize)
        };
        let r = match dir {
            // Slave transmit: its WRITE pagelist → our buffer.
            BulkDir::Receive => {
                if v.ty != PAGELIST_WRITE {
                    self.protocol_error("receive paired with a non-WRITE pagelist");
                    return Err(VchiqError::Aborted);
                }
                pagelist::walk(&self.region, &v, |i, bus, c| {
                    let src = cpu(bus)?;
                    // SAFETY: `bulk_bus_to_cpu` returned a page the slave mapped for this transfer
                    // (Platform contract), `c` stays within that page, and the slave does not
                    // touch the buffer until our DONE.
                    unsafe { copy_from_shared(src as *const u8, &mut data[i..i + c]) };
                    Ok(())
                })
            }
            // Slave receive: our buffer → its READ pagelist (+ fragment).
            BulkDir::Transmit => {
                let (head, tail, frag) = if v.ty >= PAGELIST_READ_WITH_FRAGMENTS {
                    let k = (v.ty - PAGELIST_READ_WITH_FRAGMENTS) as usize;
                    if k >= self.cfg.num_fragments {
                        self.protocol_error("fragment index out of range");
                        return Err(VchiqError::Aborted);
                    }
                    let s = fragment_split(v.offset as usize, len, cl);
                    (
                        s.head,
                        s.tail,
                        Some(self.cfg.fragments_offset() + k * self.cfg.fragment_size()),
                    )
                } else if v.ty == PAGELIST_READ {
                    if len > 0
                        && (!(v.offset as usize).is_multiple_of(cl)
                            || !(v.offset as usize + len).is_multiple_of(cl))
                    {
                        // A cache-line-granular DMA here would clobber the neighbours of the
                        // buffer (the arm64 `vchiq_test -f` corruption). Counted so tests catch a
                        // slave that should have used a fragment.
                        bump(&self.counters.unaligned_reads);
                    }
                    (0, 0, None)
                } else {
                    self.protocol_error("transmit paired with a WRITE pagelist");
                    return Err(VchiqError::Aborted);
                };
                if let Some(f) = frag {
                    self.region.write_bytes(f, &data[..head]);
                    self.region.write_bytes(f + cl, &data[len - tail..]);
                }
                let (lo, hi) = (head, len - tail);
                pagelist::walk(&self.region, &v, |i, bus, c| {
                    // Only the middle goes to the pages; head/tail went to the fragment.
                    let (a, b) = (i.max(lo), (i + c).min(hi));
                    if a >= b {
                        return Ok(());
                    }
                    let dst = cpu(bus + (a - i) as u64)?;
                    // SAFETY: as above: a mapped page of the slave's buffer, within bounds.
                    unsafe { copy_to_shared(dst as *mut u8, &data[a..b]) };
                    Ok(())
                })
            }
        };
        // No fence here: the DONE message that tells the slave is published by the Release
        // store of tx_pos, which orders these relaxed DMA writes before it.
        r.map(|()| len).map_err(|p| {
            self.protocol_error("pagelist walk failed");
            VchiqError::Protocol(p)
        })
    }
}
