//! Bulk transfers, the master's (VideoCore's) side (docs/protocols/vchiq.md §5): pairing the
//! slave's remote requests with local ones, the DMA through the slave's pagelists, BULK_x_DONE,
//! size-mismatch aborts and abort at close.

use crate::engine::bulk::take_bit;
use crate::engine::counters::bump;
use crate::engine::service::{BulkCompletion, BulkDir};
use crate::engine::vchiq::{Inner, LocalBulk, PendingEv, RemoteBulk, Vchiq};
use crate::error::VchiqError;
use crate::wire::consts::*;
use crate::wire::header::Header;
use crate::wire::layout::BulkDonePayload;
use crate::wire::pagelist::{self, fragment_split};
use fwipc_transport_api::shared_mem::{copy_from_shared, copy_to_shared};
use fwipc_transport_api::ProtocolError;
use zerocopy::IntoBytes;

impl Vchiq {
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
        g.mark_bulk_port(port);
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
        let p = BulkDonePayload {
            actual: actual.into(),
        };
        if self
            .queue_locked(g, ty, port as u32, remote, &[p.as_bytes()], None)
            .is_err()
        {
            log::warn!(target: "vchiq", "master: no slot for BULK_DONE");
        }
    }

    /// Master: answer every queued remote request with DONE(−1).
    pub(crate) fn master_abort_remote(&self, g: &mut Inner, port: usize) {
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
    /// Runs on every poll round, so it looks only at the ports a bulk request was queued on
    /// since (`Inner::bulk_ports`), in port order, and at nothing when there are none
    /// (`Inner::bulks_dirty`). A port left with a pair it could not run (no transmit space yet,
    /// or a service not open) stays marked for the next round.
    pub(crate) fn master_process_bulks(&self, g: &mut Inner) -> usize {
        if !core::mem::take(&mut g.bulks_dirty) {
            return 0;
        }
        let mut n = 0;
        for w in 0..g.bulk_ports.len() {
            // Taken word by word: a port marked while this one is processed (its bit ORed back
            // into the word) is kept for the next round.
            let mut bits = core::mem::take(&mut g.bulk_ports[w]);
            while let Some(b) = take_bit(&mut bits) {
                let port = w * 64 + b as usize;
                if !self.master_process_port(g, port, &mut n) {
                    g.mark_bulk_port(port);
                }
            }
        }
        n
    }

    /// [`Vchiq::master_process_bulks`] for one port: runs every pair it can, adding them to `n`.
    /// `false`: a pair is left that could not run now, look again on the next round.
    /// Not inlined: a round with no bulk work never calls it, and inlined it would make the
    /// poll loop too large to be inlined into `poll` itself (85 more instructions per message
    /// round trip, measured).
    #[inline(never)]
    fn master_process_port(&self, g: &mut Inner, port: usize, n: &mut usize) -> bool {
        let mut done = true;
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
                if !ready {
                    break;
                }
                if !open || !self.can_queue(g, 4) {
                    // Not runnable now; look again on the next round.
                    done = false;
                    break;
                }
                let Some(Some(s)) = g.services.get_mut(port) else {
                    break;
                };
                let remote = s.remoteport;
                let q = s.queue(dir);
                let (Some(mut e), Some(rb)) = (q.local.pop_front(), q.remote.pop_front()) else {
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
                    self.send_done(g, port, remote, dir, actual);
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
                self.complete(g, port, c, mode);
                *n += 1;
            }
        }
        done
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
        // The CPU address of `bus` and how many of the `c` bytes from it on are contiguous there
        // (at least one): one platform lookup per run the slave mapped, not per page.
        let cpu = |bus: u64, c: usize| -> Result<(usize, usize), ProtocolError> {
            const PAGE: usize = VCHIQ_SLOT_SIZE;
            let page = bus & !(PAGE as u64 - 1);
            let off = (bus - page) as usize;
            let want = (off + c).div_ceil(PAGE);
            // Only pages the slave mapped for *this* transfer (the one whose pagelist we
            // walk): a hostile slave cannot steer our copies into another transfer's buffer.
            let (p, n) = platform
                .bulk_bus_to_cpu_run(rb.pagelist, page, want)
                .ok_or(ProtocolError::OutOfRange)?;
            if n == 0 || n > want {
                return Err(ProtocolError::OutOfRange);
            }
            // Bulk pages are copied with `shared_mem`'s byte-wise atomic copies (native words
            // inside, bytes at the edges), the region only ever with `u32` word atomics
            // (`crate::shared::region`'s one-width rule): a page inside the region is refused.
            if region.overlaps(p, n * PAGE) {
                return Err(ProtocolError::OutOfRange);
            }
            Ok((p + off, (n * PAGE - off).min(c)))
        };
        let r = match dir {
            // Slave transmit: its WRITE pagelist → our buffer.
            BulkDir::Receive => {
                if v.ty != PAGELIST_WRITE {
                    self.protocol_error("receive paired with a non-WRITE pagelist");
                    return Err(VchiqError::Aborted);
                }
                pagelist::walk(&self.region, &v, |i, bus, c| {
                    let mut done = 0;
                    while done < c {
                        let (src, k) = cpu(bus + done as u64, c - done)?;
                        let at = i + done;
                        // SAFETY: `bulk_bus_to_cpu_run` returned pages the slave mapped for this
                        // transfer, contiguous in CPU memory (Platform contract), the `k` bytes
                        // stay within them, and the slave does not touch the buffer until our
                        // DONE.
                        unsafe { copy_from_shared(src as *const u8, &mut data[at..at + k]) };
                        done += k;
                    }
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
                    let (mut a, b) = (i.max(lo), (i + c).min(hi));
                    while a < b {
                        let (dst, k) = cpu(bus + (a - i) as u64, b - a)?;
                        // SAFETY: as above: mapped pages of the slave's buffer, within bounds.
                        unsafe { copy_to_shared(dst as *mut u8, &data[a..a + k]) };
                        a += k;
                    }
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
