//! The device's side of a split virtqueue (Virtio 1.2 §2.7), for simulated devices that share
//! the driver's address space (an identity-mapped `Hal` such as
//! [`IdentityHal`](crate::hal::IdentityHal)): read the available ring the driver publishes, read
//! its descriptors, copy buffer contents in and out, publish used elements.
//!
//! Every word is accessed with the same width and atomicity as [`SplitRing`](crate::ring::SplitRing)
//! uses on the driver side (16-bit ring indices and entries, the descriptor's 32/32/32/16/16-bit
//! fields, the used element's two 32-bit words), and buffer bytes only through
//! [`fwipc_transport_api::shared_mem`], so no Rust reference to shared memory exists on either
//! side and a racing access is never a data race (docs/reliability.md, "Invariants" item 1).
//! The driver is not trusted either: a descriptor index outside the table and a buffer shorter
//! than the copy, or of the wrong direction, are refused.

use core::mem::MaybeUninit;
use core::sync::atomic::{fence, AtomicU16, AtomicU32, Ordering};

use fwipc_transport_api::shared_mem::{copy_from_shared_uninit, copy_to_shared};
use virtio_drivers::PhysAddr;

use crate::ring::{vring_need_event, Descriptor, RingLayout, UsedElem, USED_F_NO_NOTIFY};

/// The addresses and size the driver configured for one queue (`queue_set`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueAddrs {
    /// Entries (a power of two).
    pub size: u16,
    /// Descriptor table.
    pub desc: PhysAddr,
    /// Driver area (available ring).
    pub driver: PhysAddr,
    /// Device area (used ring).
    pub device: PhysAddr,
}

impl QueueAddrs {
    /// Whether the queue is configured (non-zero addresses, power-of-two size).
    pub fn ready(&self) -> bool {
        self.desc != 0 && self.driver != 0 && self.device != 0 && self.size.is_power_of_two()
    }
}

/// The device's view of one queue: the configured addresses and the device's own indices.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceQueue {
    addrs: QueueAddrs,
    /// Next available index to read.
    last_avail: u16,
    /// `avail.idx` as last read: the entries up to it are known available (that Acquire load
    /// made them visible), so [`DeviceQueue::next_avail`] reads `avail.idx` again only once it
    /// has taken them all, as vhost's `avail_idx` shadow does. A queue the driver keeps full
    /// of buffers for the device (a receive queue) then costs no look at the line the driver
    /// writes on every re-post.
    avail_seen: u16,
    /// Our copy of `used.idx`.
    used_idx: u16,
    /// `VIRTIO_F_RING_EVENT_IDX` negotiated.
    event_idx: bool,
    /// The device polls this queue ([`DeviceQueue::set_polling`]).
    polling: bool,
    /// Its request for no kicks while it does.
    kicks: KickQuiet,
}

/// A polling device's request for no kicks on one queue (virtio 1.2 §2.7.10), made the way a
/// busy-polling vhost back-end makes it: with `EVENT_IDX`, `avail_event` half the index space
/// ahead of what the device has taken, moved on after a quarter of it ([`vring_need_event`] is
/// true only for an event among the posts of one kick decision, so no post reaches it before
/// then); without, `VIRTQ_USED_F_NO_NOTIFY` in `used.flags`. A kick that comes anyway (the
/// driver read the word before the store) costs a device that polls nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct KickQuiet {
    on: bool,
    far_event: u16,
}

impl KickQuiet {
    /// Ask for no kicks, or keep asking: call when a poll found the ring empty at `last_avail`.
    /// Stores only when the request is new or must move on.
    ///
    /// # Safety
    /// `device` must be the device area of a live ring laid out as `layout`, in this address
    /// space (physical address == virtual address), which the driver accesses only atomically.
    pub unsafe fn quiet(
        &mut self,
        device: PhysAddr,
        layout: &RingLayout,
        last_avail: u16,
        event_idx: bool,
    ) {
        if event_idx {
            if self.on && self.far_event.wrapping_sub(last_avail) >= 0x4000 {
                return;
            }
            self.far_event = last_avail.wrapping_add(0x8000);
            // SAFETY: `avail_event` lies inside the device area (caller's contract).
            let ev = unsafe { word16(device + layout.avail_event() as u64) };
            // Release: a hint for the driver (no data rides on it).
            ev.store(self.far_event.to_le(), Ordering::Release);
        } else if !self.on {
            // SAFETY: `used.flags` lies inside the device area (caller's contract).
            let flags = unsafe { word16(device + layout.used_flags() as u64) };
            // Release: as above.
            flags.store(USED_F_NO_NOTIFY.to_le(), Ordering::Release);
        }
        self.on = true;
    }

    /// Ask for kicks again; returns whether they were suppressed. Without `EVENT_IDX` this
    /// clears `VIRTQ_USED_F_NO_NOTIFY`; with it, the next poll that finds the ring empty, not
    /// polling any more, publishes `avail_event` (with its fence and re-check). The caller must
    /// look at the available ring once more whatever the kicks (a post made while the driver
    /// saw kicks suppressed kicked nobody); the full fence orders the flag's store before that
    /// look (pairs with the driver's fence in `SplitRing::should_notify` between its
    /// `avail.idx` store and its read of the flags): the look finds the post or the driver
    /// finds the flag clear and kicks.
    ///
    /// # Safety
    /// As [`KickQuiet::quiet`].
    pub unsafe fn resume(
        &mut self,
        device: PhysAddr,
        layout: &RingLayout,
        event_idx: bool,
    ) -> bool {
        if !self.on {
            return false;
        }
        self.on = false;
        if !event_idx {
            // SAFETY: `used.flags` lies inside the device area (caller's contract).
            let flags = unsafe { word16(device + layout.used_flags() as u64) };
            // Release: a hint; the fence below orders what matters.
            flags.store(0, Ordering::Release);
        }
        fence(Ordering::SeqCst);
        true
    }
}

/// # Safety
/// `addr` must be a live, 2-byte aligned 16-bit ring word the driver accesses only atomically.
unsafe fn word16<'a>(addr: PhysAddr) -> &'a AtomicU16 {
    // SAFETY: guaranteed by the caller; identity mapping (module docs).
    unsafe { AtomicU16::from_ptr(addr as usize as *mut u16) }
}

/// # Safety
/// As [`word16`], for a 4-byte aligned 32-bit word.
unsafe fn word32<'a>(addr: PhysAddr) -> &'a AtomicU32 {
    // SAFETY: guaranteed by the caller.
    unsafe { AtomicU32::from_ptr(addr as usize as *mut u32) }
}

impl DeviceQueue {
    /// A device view of a queue the driver configured.
    ///
    /// # Safety
    /// `addrs` must describe rings laid out as [`RingLayout`] says, in memory of this address
    /// space (physical address == virtual address) that stays allocated while this value is
    /// used, and accessed by the driver only as `SplitRing` does. `None` if `addrs` is not
    /// [`ready`](QueueAddrs::ready).
    pub unsafe fn new(addrs: QueueAddrs, event_idx: bool) -> Option<Self> {
        addrs.ready().then_some(DeviceQueue {
            addrs,
            last_avail: 0,
            avail_seen: 0,
            used_idx: 0,
            event_idx,
            polling: false,
            kicks: KickQuiet::default(),
        })
    }

    /// The device polls this queue (`true`): it asks the driver for no kicks ([`KickQuiet`])
    /// whenever [`DeviceQueue::next_avail`] finds the ring empty. `false` asks for them again;
    /// the caller then looks at the ring once more, whatever the kicks.
    pub fn set_polling(&mut self, on: bool) {
        if self.polling == on {
            return;
        }
        self.polling = on;
        if !on {
            let l = self.layout();
            // SAFETY: the device area of a configured ring (constructor contract).
            unsafe { self.kicks.resume(self.addrs.device, &l, self.event_idx) };
        }
    }

    /// The configured addresses.
    pub fn addrs(&self) -> QueueAddrs {
        self.addrs
    }

    /// The device's `used.idx` (the next used element goes to this index).
    pub fn used_idx(&self) -> u16 {
        self.used_idx
    }

    fn layout(&self) -> RingLayout {
        RingLayout::new(self.addrs.size)
    }

    /// The next head the driver made available, if any. `avail.idx` is read only when the
    /// entries seen available at its last read are all taken. With EVENT_IDX, running out
    /// publishes `avail_event` = the next index we will read and re-checks, so a post racing it
    /// is seen.
    pub fn next_avail(&mut self) -> Option<u16> {
        let l = self.layout();
        if self.avail_seen == self.last_avail {
            // SAFETY: `avail.idx` of a configured ring (constructor contract).
            let avail = unsafe { word16(self.addrs.driver + l.avail_idx() as u64) };
            // Acquire: pairs with the driver's Release store in `SplitRing::post`, so its ring
            // entries and descriptors up to `idx` are visible (also to the later calls that
            // take them without this load).
            let mut idx = u16::from_le(avail.load(Ordering::Acquire));
            if idx == self.last_avail && self.polling {
                // SAFETY: the device area of a configured ring (constructor contract).
                unsafe {
                    self.kicks
                        .quiet(self.addrs.device, &l, self.last_avail, self.event_idx)
                };
                return None;
            }
            if idx == self.last_avail && self.event_idx {
                // SAFETY: `avail_event` lies inside the device area (constructor contract).
                let ev = unsafe { word16(self.addrs.device + l.avail_event() as u64) };
                // Release: a hint. SeqCst fence: the store is visible before we re-read
                // `avail.idx` (pairs with the fence in `SplitRing::should_notify`, Virtio 1.2
                // §2.7.10): either we see the driver's new entry or it sees our event index.
                ev.store(self.last_avail.to_le(), Ordering::Release);
                fence(Ordering::SeqCst);
                // Acquire: as above.
                idx = u16::from_le(avail.load(Ordering::Acquire));
            }
            if idx == self.last_avail {
                return None;
            }
            self.avail_seen = idx;
        }
        let slot = self.last_avail & (self.addrs.size - 1);
        // SAFETY: `slot < size`: inside the available ring.
        let entry = unsafe { word16(self.addrs.driver + l.avail_ring(slot) as u64) };
        // Relaxed: ordered by the Acquire load of `avail.idx` that saw this entry available.
        let head = u16::from_le(entry.load(Ordering::Relaxed));
        self.last_avail = self.last_avail.wrapping_add(1);
        Some(head)
    }

    /// Descriptor `i`, or `None` if `i` is outside the table.
    pub fn desc(&self, i: u16) -> Option<Descriptor> {
        if i >= self.addrs.size {
            return None;
        }
        let p = self.addrs.desc + 16 * u64::from(i);
        // SAFETY: `i < size`: inside the live descriptor table, 16-byte aligned entries; the
        // driver writes these fields with atomics of the same widths (`SplitRing::set_desc`).
        let (lo, hi, len, flags, next) = unsafe {
            (
                word32(p),
                word32(p + 4),
                word32(p + 8),
                word16(p + 12),
                word16(p + 14),
            )
        };
        // Relaxed (all): ordered by the Acquire load of `avail.idx` in `next_avail`.
        Some(Descriptor {
            addr: u64::from(u32::from_le(lo.load(Ordering::Relaxed)))
                | (u64::from(u32::from_le(hi.load(Ordering::Relaxed))) << 32),
            len: u32::from_le(len.load(Ordering::Relaxed)),
            flags: u16::from_le(flags.load(Ordering::Relaxed)),
            next: u16::from_le(next.load(Ordering::Relaxed)),
        })
    }

    /// Publish a used element (`id`, `len`: whatever the caller says, hostile tests included)
    /// and advance `used.idx`. Returns whether the driver wants an interrupt for it (always
    /// without EVENT_IDX; the flags word is not consulted, as drivers here never set it).
    pub fn push_used(&mut self, id: u32, len: u32) -> bool {
        let l = self.layout();
        let slot = self.used_idx & (self.addrs.size - 1);
        let e = self.addrs.device + l.used_ring(slot) as u64;
        let elem = UsedElem { id, len };
        // SAFETY: `slot < size`: inside the used ring, 4-byte aligned words, read by the driver
        // with 32-bit atomics (`SplitRing::pop_used`).
        let (wid, wlen) = unsafe { (word32(e), word32(e + 4)) };
        // Relaxed (both): published by the Release store of `used.idx` below.
        wid.store(elem.id.to_le(), Ordering::Relaxed);
        wlen.store(elem.len.to_le(), Ordering::Relaxed);
        self.used_idx = self.used_idx.wrapping_add(1);
        self.publish_used_idx(self.used_idx)
    }

    /// Store `idx` as `used.idx` without writing elements (a hostile device jumping the index);
    /// returns whether the driver wants an interrupt. [`push_used`](Self::push_used) uses it
    /// with the next index.
    pub fn publish_used_idx(&mut self, idx: u16) -> bool {
        let l = self.layout();
        let old = self.used_idx.wrapping_sub(1);
        self.used_idx = idx;
        // SAFETY: `used.idx` of the configured device area.
        let used = unsafe { word16(self.addrs.device + l.used_idx() as u64) };
        // Release: the element and the buffer bytes written before are visible to a driver that
        // observes the new index (pairs with the Acquire in `SplitRing::device_used_idx`).
        used.store(idx.to_le(), Ordering::Release);
        if !self.event_idx {
            // SeqCst fence: as below, for the flag word.
            fence(Ordering::SeqCst);
            // SAFETY: `avail.flags` of the configured driver area.
            let flags = unsafe { word16(self.addrs.driver + l.avail_flags() as u64) };
            // Acquire: a hint (the fence orders what matters).
            return u16::from_le(flags.load(Ordering::Acquire)) & crate::ring::AVAIL_F_NO_INTERRUPT
                == 0;
        }
        // SeqCst fence: our `used.idx` store is visible before we read `used_event` (pairs with
        // the fence in `SplitRing::pop_used`): either the driver sees the entry or we see its
        // request for an interrupt.
        fence(Ordering::SeqCst);
        // SAFETY: `used_event` lies inside the driver area.
        let ue = unsafe { word16(self.addrs.driver + l.used_event() as u64) };
        // Acquire: a hint (the fence above orders what matters).
        let event = u16::from_le(ue.load(Ordering::Acquire));
        vring_need_event(event, idx, old)
    }

    /// Copy the first `out.len()` bytes of the driver buffer `d` (device-readable) into `out`,
    /// which need not be initialised (a receive buffer is not zeroed first); the bytes copied.
    /// `None` if the descriptor is shorter than `out` or is device-writable.
    pub fn read_buf<'o>(
        &self,
        d: &Descriptor,
        out: &'o mut [MaybeUninit<u8>],
    ) -> Option<&'o mut [u8]> {
        if (d.len as usize) < out.len() || d.flags & crate::ring::DESC_F_WRITE != 0 || d.addr == 0 {
            return None;
        }
        // SAFETY: the driver posted `d` (readable, at least `out.len()` bytes) and keeps it
        // until we return the chain; buffer bytes are accessed only through the byte accessors.
        Some(unsafe { copy_from_shared_uninit(d.addr as usize as *const u8, out) })
    }

    /// Copy `data` into the driver buffer `d` (device-writable). `None` if it does not fit or
    /// the descriptor is not device-writable.
    pub fn write_buf(&self, d: &Descriptor, data: &[u8]) -> Option<()> {
        if (d.len as usize) < data.len() || d.flags & crate::ring::DESC_F_WRITE == 0 || d.addr == 0
        {
            return None;
        }
        // SAFETY: as `read_buf`, for a writable buffer of at least `data.len()` bytes.
        unsafe { copy_to_shared(d.addr as usize as *mut u8, data) };
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hal::IdentityHal;
    use crate::ring::{SplitRing, DESC_F_WRITE};

    fn pair(event_idx: bool) -> (SplitRing<IdentityHal>, DeviceQueue) {
        let ring = SplitRing::<IdentityHal>::new(4, event_idx).unwrap();
        let dq = device_of(&ring, event_idx);
        (ring, dq)
    }

    /// A fresh device view of `ring` (as after a device reset).
    fn device_of(ring: &SplitRing<IdentityHal>, event_idx: bool) -> DeviceQueue {
        let (desc, driver, device) = ring.addrs();
        let addrs = QueueAddrs {
            size: 4,
            desc,
            driver,
            device,
        };
        // SAFETY: `ring` was laid out by `SplitRing` in this address space (identity-mapped Hal)
        // and outlives the device view in every test.
        unsafe { DeviceQueue::new(addrs, event_idx) }.unwrap()
    }

    /// A device-readable descriptor of `buf`.
    fn readable(buf: &mut [u8; 8]) -> Descriptor {
        Descriptor {
            addr: buf.as_mut_ptr() as u64,
            len: 8,
            flags: 0,
            next: 0,
        }
    }

    /// A driver that suppressed interrupts is never asked for one, also after drains that found
    /// the ring empty (which re-arm `used_event` otherwise); one that did not is, every time.
    #[test]
    fn suppressed_interrupts_are_not_asked_for() {
        for event_idx in [false, true] {
            for suppress in [false, true] {
                let (mut ring, mut dq) = pair(event_idx);
                if suppress {
                    ring.suppress_interrupts();
                }
                let mut buf = [0u8; 8];
                for round in 0..10 {
                    ring.set_desc(0, readable(&mut buf));
                    ring.post(0);
                    assert_eq!(dq.next_avail(), Some(0));
                    assert_eq!(
                        dq.push_used(0, 0),
                        !suppress,
                        "event_idx {event_idx}, suppressed {suppress}, round {round}"
                    );
                    assert_eq!(ring.pop_used(), Ok(Some(UsedElem { id: 0, len: 0 })));
                    assert_eq!(ring.pop_used(), Ok(None));
                }
            }
        }
    }

    /// `avail.idx` is read again only once the entries it showed are all taken: here it is made
    /// to say "nothing available" while two entries it showed before are left, and those two
    /// still come out; only then is it read, and found as it was left.
    #[test]
    fn avail_idx_is_read_again_only_when_what_it_showed_is_taken() {
        for event_idx in [false, true] {
            let (mut ring, mut dq) = pair(event_idx);
            let mut bufs = [[0u8; 8]; 3];
            for (i, b) in bufs.iter_mut().enumerate() {
                ring.set_desc(i as u16, readable(b));
                ring.post(i as u16);
            }
            let (_, driver, _) = ring.addrs();
            let l = RingLayout::new(4);
            // SAFETY: `avail.idx` of the live ring `ring` laid out (identity-mapped).
            let avail = unsafe { word16(driver + l.avail_idx() as u64) };
            assert_eq!(dq.next_avail(), Some(0));
            avail.store(1u16.to_le(), Ordering::Release);
            assert_eq!(dq.next_avail(), Some(1), "event_idx {event_idx}");
            assert_eq!(dq.next_avail(), Some(2), "event_idx {event_idx}");
            avail.store(3u16.to_le(), Ordering::Release);
            assert_eq!(dq.next_avail(), None, "event_idx {event_idx}");
            let mut fourth = [0u8; 8];
            ring.set_desc(3, readable(&mut fourth));
            ring.post(3);
            assert_eq!(dq.next_avail(), Some(3), "event_idx {event_idx}");
        }
    }

    /// A paused queue asks for no interrupt, also across drains that find the ring empty (which
    /// re-arm `used_event` otherwise); resuming asks again, reports the elements published
    /// meanwhile (which asked for none), and the device's next element interrupts. Resuming
    /// without a pause only looks; a reset ends a pause.
    #[test]
    fn a_paused_queue_asks_for_no_interrupts_until_it_resumes() {
        for event_idx in [false, true] {
            let (mut ring, mut dq) = pair(event_idx);
            let mut buf = [0u8; 8];
            let mut serve = |ring: &mut SplitRing<IdentityHal>, dq: &mut DeviceQueue| {
                ring.set_desc(0, readable(&mut buf));
                ring.post(0);
                assert_eq!(dq.next_avail(), Some(0));
                dq.push_used(0, 0)
            };
            assert!(
                !ring.resume_interrupts(),
                "event_idx {event_idx}: nothing to end"
            );
            ring.pause_interrupts();
            for round in 0..5 {
                assert!(
                    !serve(&mut ring, &mut dq),
                    "event_idx {event_idx}, round {round}"
                );
                assert_eq!(ring.pop_used(), Ok(Some(UsedElem { id: 0, len: 0 })));
                assert_eq!(ring.pop_used(), Ok(None));
            }
            // Published while paused, not yet taken: resuming reports it.
            assert!(!serve(&mut ring, &mut dq), "event_idx {event_idx}: paused");
            assert!(
                ring.resume_interrupts(),
                "event_idx {event_idx}: element not reported"
            );
            assert_eq!(ring.pop_used(), Ok(Some(UsedElem { id: 0, len: 0 })));
            assert_eq!(ring.pop_used(), Ok(None));
            assert!(
                serve(&mut ring, &mut dq),
                "event_idx {event_idx}: resumed, no interrupt"
            );
            assert_eq!(ring.pop_used(), Ok(Some(UsedElem { id: 0, len: 0 })));
            assert_eq!(ring.pop_used(), Ok(None));

            ring.pause_interrupts();
            ring.reset();
            let mut dq = device_of(&ring, event_idx);
            for round in 0..3 {
                assert!(
                    serve(&mut ring, &mut dq),
                    "event_idx {event_idx}: reset, no interrupt at round {round}"
                );
                assert_eq!(ring.pop_used(), Ok(Some(UsedElem { id: 0, len: 0 })));
                assert_eq!(ring.pop_used(), Ok(None));
            }
        }
    }

    /// A device that polls asks for no kicks ([`KickQuiet`]): with and without `EVENT_IDX`, no
    /// post after its first empty poll kicks, across the 16-bit wrap and the moves of the far
    /// `avail_event`; once it stops polling, its next empty poll asks again and the next post
    /// kicks.
    #[test]
    fn a_polling_device_asks_for_no_kicks() {
        let rounds = if cfg!(miri) { 300 } else { 70_000u32 };
        for event_idx in [false, true] {
            let (mut ring, mut dq) = pair(event_idx);
            let mut buf = [0u8; 8];
            ring.set_desc(0, readable(&mut buf));
            dq.set_polling(true);
            assert_eq!(dq.next_avail(), None);
            for round in 0..rounds {
                ring.post(0);
                assert!(
                    !ring.should_notify(),
                    "event_idx {event_idx}: a kick asked for at round {round}"
                );
                assert_eq!(dq.next_avail(), Some(0));
                assert_eq!(dq.next_avail(), None);
                dq.push_used(0, 0);
                assert!(ring.pop_used().unwrap().is_some());
            }
            dq.set_polling(false);
            assert_eq!(dq.next_avail(), None);
            ring.post(0);
            assert!(
                ring.should_notify(),
                "event_idx {event_idx}: no kick asked for after polling"
            );
        }
    }

    /// The driver stores only the descriptor fields and ring entries that changed, so what it
    /// compares against is the memory, not a copy of its own: a descriptor or a ring entry the
    /// device overwrote is written again by the next post with the same values, and the device
    /// reads the driver's chain, every lap of the ring.
    #[test]
    fn a_repost_restores_what_the_device_overwrote() {
        let (mut ring, mut dq) = pair(false);
        let mut buf = [5u8; 8];
        let (desc_table, avail, _) = ring.addrs();
        for lap in 0..3u16 {
            for slot in 0..4u16 {
                let n = lap * 4 + slot;
                if n > 0 {
                    // The device scribbles over descriptor 0's address, length and flags, and
                    // over the ring entry the next post goes into (`avail.ring[slot]`, after
                    // `flags` and `idx`).
                    // SAFETY: identity-mapped ring memory of `ring`, alive for the test; 4- and
                    // 2-byte aligned fields, accessed atomically as the driver accesses them.
                    unsafe {
                        let d = desc_table as usize as *mut u32;
                        AtomicU32::from_ptr(d).store(0xdead_0000 | u32::from(n), Ordering::Relaxed);
                        AtomicU32::from_ptr(d.add(2)).store(1, Ordering::Relaxed);
                        AtomicU16::from_ptr(d.add(3) as *mut u16).store(0xffff, Ordering::Relaxed);
                        let e = (avail as usize + 4 + 2 * usize::from(slot)) as *mut u16;
                        AtomicU16::from_ptr(e).store(3, Ordering::Relaxed);
                    }
                }
                ring.set_desc(0, readable(&mut buf));
                ring.post(0);
                assert_eq!(dq.next_avail(), Some(0), "lap {lap} slot {slot}");
                let d = dq.desc(0).unwrap();
                assert_eq!((d.addr, d.len, d.flags), (buf.as_mut_ptr() as u64, 8, 0));
                let mut got = [MaybeUninit::uninit(); 8];
                assert_eq!(dq.read_buf(&d, &mut got).as_deref(), Some(&[5; 8][..]));
                let _ = dq.push_used(0, 0);
                assert_eq!(ring.pop_used(), Ok(Some(UsedElem { id: 0, len: 0 })));
            }
        }
    }

    /// Driver posts, the device walks the same memory, answers, the driver pops it raw.
    #[test]
    fn driver_and_device_views_agree() {
        for event_idx in [false, true] {
            let (mut ring, mut dq) = pair(event_idx);
            let mut out_buf = [7u8; 8];
            let mut in_buf = [0u8; 8];
            ring.set_desc(
                2,
                Descriptor {
                    addr: out_buf.as_mut_ptr() as u64,
                    len: 8,
                    flags: 0,
                    next: 0,
                },
            );
            ring.set_desc(
                3,
                Descriptor {
                    addr: in_buf.as_mut_ptr() as u64,
                    len: 8,
                    flags: DESC_F_WRITE,
                    next: 0,
                },
            );
            ring.post(2);
            ring.post(3);
            assert!(ring.should_notify());
            assert_eq!(dq.next_avail(), Some(2));
            assert_eq!(dq.next_avail(), Some(3));
            assert_eq!(dq.next_avail(), None);
            let d = dq.desc(2).unwrap();
            let mut got = [MaybeUninit::uninit(); 8];
            assert_eq!(dq.read_buf(&d, &mut got).as_deref(), Some(&[7; 8][..]));
            assert_eq!(dq.write_buf(&d, &[1]), None, "read-only buffer refused");
            let w = dq.desc(3).unwrap();
            assert_eq!(
                dq.read_buf(&w, &mut got).as_deref(),
                None,
                "writable buffer is not read"
            );
            assert_eq!(dq.write_buf(&w, &[9; 9]), None, "longer than the buffer");
            assert_eq!(dq.write_buf(&w, &[9; 4]), Some(()));
            assert!(dq.desc(4).is_none());
            // The driver has not consumed anything: `used_event` 0 asks for the first entry.
            assert!(dq.push_used(3, 4));
            assert_eq!(ring.pop_used(), Ok(Some(UsedElem { id: 3, len: 4 })));
            assert_eq!(ring.pop_used(), Ok(None));
            assert_eq!(&in_buf[..4], &[9; 4]);
            // A hostile jump of the used index is reported by the driver's ring.
            dq.publish_used_idx(dq.used_idx.wrapping_add(40));
            assert!(ring.pop_used().is_err());
        }
    }
}
