//! The eventq (queue 1): device-writable buffers pre-posted at setup, filled by the device with
//! one notification or delayed response each, held until `fetch_notification` (or, for a
//! protocol with a bound datagram endpoint, `Datagram::poll_rx`) copies them out, then
//! re-posted (docs/protocols/scmi.md §1.2, §8 item 9). While nobody takes a message its buffer
//! stays out of the ring: the device meets back-pressure instead of losing messages.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::ptr::NonNull;

use fwipc_transport_api::shared_mem::copy_from_shared;
use fwipc_transport_api::ProtocolError;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use super::parse::check_event_header;
use super::ring::{Descriptor, SplitRing, DESC_F_WRITE};
use crate::header::HEADER_LEN;

/// State of one eventq buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EvState {
    /// Not posted (before setup, after teardown).
    Idle,
    /// Posted; the device may write it. Holds the address `Hal::share` returned.
    Posted(PhysAddr),
    /// Returned with a well-formed message of `len` bytes whose header word `hdr` was copied
    /// out and checked once (it is not fetched again), waiting for `fetch_notification`.
    Filled { len: usize, hdr: u32 },
}

/// What a returned eventq buffer held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EvReturn {
    /// A message is queued for `fetch_notification`.
    Queued,
    /// The device returned a buffer it did not hold (duplicate or out of range).
    NotOwned,
    /// The message was malformed; the buffer was re-posted.
    Malformed(ProtocolError),
}

/// Raw, fixed storage for the buffers (the device writes it through the addresses we share).
struct RawBufs {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: plain heap memory owned by this value; accesses are serialised by the channel lock and
// by buffer ownership (we touch a buffer only while the device does not own it).
unsafe impl Send for RawBufs {}

impl Drop for RawBufs {
    fn drop(&mut self) {
        // SAFETY: allocated in `EventQueue::new` with this layout, freed once here.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

pub(crate) struct EventQueue<H: Hal> {
    pub(crate) ring: SplitRing<H>,
    bufs: RawBufs,
    buf_size: usize,
    states: Vec<EvState>,
    /// Filled buffers in arrival order; capacity reserved at setup.
    pending: VecDeque<u16>,
}

impl<H: Hal> EventQueue<H> {
    /// `count` buffers of `buf_size` bytes on `ring` (count ≤ ring size). `None` on allocation
    /// failure.
    pub(crate) fn new(ring: SplitRing<H>, count: usize, buf_size: usize) -> Option<Self> {
        let count = count.min(ring.size() as usize);
        let layout = Layout::from_size_align(count.checked_mul(buf_size)?, 8).ok()?;
        if layout.size() == 0 {
            return None;
        }
        // SAFETY: non-zero size checked above.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some(EventQueue {
            ring,
            bufs: RawBufs { ptr, layout },
            buf_size,
            states: alloc::vec![EvState::Idle; count],
            pending: VecDeque::with_capacity(count),
        })
    }

    pub(crate) fn count(&self) -> usize {
        self.states.len()
    }

    fn buf(&self, i: usize) -> NonNull<[u8]> {
        // In bounds: i < count, and the allocation holds count * buf_size bytes.
        let p = self.bufs.ptr.as_ptr().wrapping_add(i * self.buf_size);
        NonNull::slice_from_raw_parts(NonNull::new(p).unwrap_or(self.bufs.ptr), self.buf_size)
    }

    /// Post buffer `i` if it is idle (not posted, and not holding an unfetched message).
    pub(crate) fn post(&mut self, i: usize) {
        if self.states.get(i) != Some(&EvState::Idle) {
            return;
        }
        let buf = self.buf(i);
        // SAFETY: the buffer is ours (not posted), lives as long as `self`, and is not accessed
        // by us until the device returns it (`take_used`) or the device is reset (`unshare_posted`).
        let paddr = unsafe { H::share(buf, BufferDirection::DeviceToDriver) };
        self.ring.set_desc(
            i as u16,
            Descriptor {
                addr: paddr,
                len: self.buf_size as u32,
                flags: DESC_F_WRITE,
                next: 0,
            },
        );
        self.states[i] = EvState::Posted(paddr);
        self.ring.post(i as u16);
    }

    /// Post every idle buffer (setup, re-initialisation after a reset).
    pub(crate) fn post_all(&mut self) {
        for i in 0..self.count() {
            self.post(i);
        }
    }

    /// Take back buffer `id` from the used ring with device-reported length `len`.
    pub(crate) fn take_used(&mut self, id: u32, len: u32) -> EvReturn {
        let i = id as usize;
        let Some(EvState::Posted(paddr)) = self.states.get(i).copied() else {
            return EvReturn::NotOwned;
        };
        let buf = self.buf(i);
        // SAFETY: `paddr` came from `share` of this very buffer in `post`; the device returned
        // the buffer, so it no longer writes it.
        unsafe { H::unshare(paddr, buf, BufferDirection::DeviceToDriver) };
        self.states[i] = EvState::Idle;
        // With an in-place `Hal` the device can still write the buffer: copy the header out
        // (one fetch) and check the copy.
        let mut hdr = [0u8; HEADER_LEN];
        let n = HEADER_LEN.min(self.buf_size);
        // SAFETY: `n` ≤ buf_size bytes of buffer `i`, which lives as long as `self`; reached only
        // through the byte accessors of `shared_mem`.
        unsafe { copy_from_shared(self.buf(i).as_ptr() as *const u8, &mut hdr[..n]) };
        match check_event_header(hdr, len, self.buf_size) {
            Err(e) => {
                self.post(i);
                EvReturn::Malformed(e)
            }
            Ok((hdr, len)) => {
                self.states[i] = EvState::Filled { len, hdr };
                self.pending.push_back(i as u16);
                EvReturn::Queued
            }
        }
    }

    /// Position (in arrival order) of the oldest queued message whose header word satisfies
    /// `pick`. Bounded: at most one look per eventq buffer.
    pub(crate) fn position(&self, mut pick: impl FnMut(u32) -> bool) -> Option<usize> {
        self.pending.iter().position(|&i| {
            matches!(self.states.get(usize::from(i)), Some(&EvState::Filled { hdr, .. }) if pick(hdr))
        })
    }

    /// Copy the payload (bytes after the header) of the queued message at `pos` (from
    /// [`EventQueue::position`]; 0 is the oldest) into `out`; returns (raw header, payload
    /// length) and re-posts the buffer. `Err(needed)` if `out` is too small (the message stays
    /// queued); `None` if nothing is queued at `pos`.
    pub(crate) fn pop_at(
        &mut self,
        pos: usize,
        out: &mut [u8],
    ) -> Option<Result<(u32, usize), usize>> {
        let i = usize::from(*self.pending.get(pos)?);
        let Some(&EvState::Filled { len, hdr }) = self.states.get(i) else {
            // Unreachable by construction; recover by dropping the entry.
            self.pending.remove(pos);
            return None;
        };
        // `HEADER_LEN ≤ len ≤ buf_size`, checked in `take_used`.
        let n = len.saturating_sub(HEADER_LEN);
        let Some(out) = out.get_mut(..n) else {
            return Some(Err(n));
        };
        let payload = self.buf(i).as_ptr().cast::<u8>().wrapping_add(HEADER_LEN);
        // SAFETY: bytes `HEADER_LEN..len` of buffer `i` (len ≤ buf_size), which lives as long as
        // `self`; reached only through the byte accessors of `shared_mem`.
        unsafe { copy_from_shared(payload, out) };
        self.pending.remove(pos);
        self.states[i] = EvState::Idle;
        self.post(i);
        Some(Ok((hdr, n)))
    }

    /// Drop the queued message at `pos` unread and re-post its buffer; returns its raw header.
    pub(crate) fn discard_at(&mut self, pos: usize) -> Option<u32> {
        let i = usize::from(self.pending.remove(pos)?);
        let hdr = match self.states.get(i) {
            Some(&EvState::Filled { hdr, .. }) => hdr,
            _ => return None,
        };
        self.states[i] = EvState::Idle;
        self.post(i);
        Some(hdr)
    }

    /// After a device reset: un-share every posted buffer (the device no longer owns them).
    /// Messages already received stay queued for `fetch_notification`.
    pub(crate) fn unshare_posted(&mut self) {
        for i in 0..self.count() {
            if let EvState::Posted(paddr) = self.states[i] {
                let buf = self.buf(i);
                // SAFETY: shared in `post`; the device was reset, so it no longer accesses it.
                unsafe { H::unshare(paddr, buf, BufferDirection::DeviceToDriver) };
                self.states[i] = EvState::Idle;
            }
        }
    }

    /// Buffers currently posted.
    pub(crate) fn posted(&self) -> usize {
        self.states
            .iter()
            .filter(|s| matches!(s, EvState::Posted(_)))
            .count()
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use fwipc_transport_api::shared_mem::copy_to_shared;

    use super::*;
    use crate::sim::SimHal;

    /// A notification header word: protocol 0x81, type 3 (notification), message 1.
    const NOTIFY_HDR: u32 = (0x81 << 10) | (3 << 8) | 0x01;

    /// With an in-place `Hal` a hostile device keeps writing an eventq buffer after returning it,
    /// while the driver checks and copies it: both sides copy through `shared_mem`, the device
    /// over the same ranges the driver reads (header, then payload: the same range ends, so each
    /// word is covered the same way, `shared_mem`'s rule), so there is no data race (Miri:
    /// `cargo +nightly miri test -p fwipc-scmi-virtio --lib eventq::tests`; slices over the buffer,
    /// or a device storing byte by byte over the payload the driver copies as words, are
    /// reported as a race) and it parses the header it fetched once.
    #[test]
    fn device_rewriting_a_returned_buffer_is_no_data_race() {
        let ring = SplitRing::<SimHal>::new(4, false).expect("ring");
        let mut q = EventQueue::new(ring, 1, 16).expect("eventq");
        q.post_all();
        let addr = q.buf(0).as_ptr() as *mut u8 as usize;
        let hdr = NOTIFY_HDR.to_le_bytes();
        let write = move |v: u8| {
            let p = addr as *mut u8;
            // SAFETY: bytes 0..4 and 4..16 of the 16-byte buffer 0, alive until `q` is dropped
            // after the scope; the driver copies the same two ranges through `shared_mem`.
            unsafe {
                copy_to_shared(p, &hdr);
                copy_to_shared(p.wrapping_add(HEADER_LEN), &[v; 16 - HEADER_LEN]);
            }
        };
        write(0);
        std::thread::scope(|s| {
            s.spawn(move || {
                for v in 1..=8u8 {
                    write(v);
                }
            });
            assert_eq!(q.take_used(0, 16), EvReturn::Queued);
            let mut out = [0u8; 12];
            assert_eq!(q.pop_at(0, &mut out), Some(Ok((NOTIFY_HDR, 12))));
            assert!(out.iter().all(|&b| b <= 8));
        });
    }
}
