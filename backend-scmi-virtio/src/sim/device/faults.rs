//! Fault control of the simulated device: the knobs tests and the soak turn (reorder, header
//! corruption, refused resets, stopping, hostile used entries and eventq input, floods), its
//! counters, and its [`RemoteControl`] implementation.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{DoubleFetch, Fault, RemoteControl, SimMode};
use virtio_drivers::transport::{DeviceStatus, InterruptStatus};

use super::guest_mem::{atomic_u16, write_used};
use super::{lock, SimDevice};
use crate::platform::{FWIPC_TEST_NOTIFY, FWIPC_TEST_PROTOCOL};
use crate::virtio::ring::vring_need_event;

/// Prefix of garbage ([`RemoteControl::inject_garbage`]) that arms the double-fetch fault
/// ([`SimDevice::rewrite_after_publish`]) instead of being delivered (shared by every simulated
/// remote, [`DoubleFetch`]).
pub use fwipc_transport_api::fixture::DOUBLE_FETCH;

impl SimDevice {
    /// Complete each batch of commands (and each `release` of held replies) in reverse order of
    /// arrival (out-of-order completion).
    pub fn set_reorder(&self, on: bool) {
        lock(&self.sh.dev).reorder = on;
    }

    /// XOR every reply header word with `mask` from now on (0 = off). `1` flips the message
    /// id's low bit: right token, wrong message.
    pub fn set_header_xor(&self, mask: u32) {
        lock(&self.sh.dev).header_xor = mask;
    }

    /// From now on ignore resets (hostile or hung device): a write of status 0 leaves the status,
    /// the rings and every buffer the device holds as they are, so the driver never reads
    /// status 0 back and must not reuse the memory.
    pub fn set_refuse_reset(&self, on: bool) {
        lock(&self.sh.dev).refuse_reset = on;
    }

    /// The double-fetch fault: the next `count` chains the device returns (cmdq replies and eventq
    /// messages) are rewritten right after they are published, before or while the driver reads
    /// them: header word XOR `mask[0..4]`, a reply's status word XOR `mask[4..8]`, and with
    /// `mask[8]` odd a used length beyond the buffer. A driver that reads each byte once and
    /// checks the copy rejects or fails such a transfer (or, if it had already read it, keeps
    /// what it read); it never completes it twice or reads out of bounds. With an identity-mapped
    /// `Hal` (`SimHal`) only: the rewrite lands in memory the driver no longer shares.
    /// [`RemoteControl::inject_garbage`] arms it for garbage starting with [`DOUBLE_FETCH`].
    pub fn rewrite_after_publish(&self, count: u8, mask: [u8; 9]) {
        let mut d = lock(&self.sh.dev);
        d.rewrites = count;
        d.rewrite_mask = mask;
    }

    /// Stop consuming (`true`) or resume (`false`): a hung device that neither takes new chains
    /// from the available rings nor returns any, delivers nothing and signals nothing (no
    /// `DEVICE_NEEDS_RESET`, no interrupt). Chains it already took stay held.
    pub fn set_stop_consuming(&self, on: bool) {
        lock(&self.sh.dev).stopped = on;
        self.kick();
    }

    /// Write a raw element into queue `queue`'s used ring (hostile device): any id, any length.
    pub fn inject_used(&self, queue: u16, id: u32, len: u32) {
        let mut d = lock(&self.sh.dev);
        if usize::from(queue) < 2 {
            d.push_used(usize::from(queue), id, len, &self.sh.isr);
        }
        drop(d);
        self.sh.signal_irq();
    }

    /// A device that keeps publishing: fill every element of queue `queue`'s used ring with
    /// `{id, len: 0}` once, then advance `used.idx` (a Release store each) as fast as it can,
    /// nearly a ring's worth at a time, until `stop` is set, `max` entries are out or `max_time`
    /// has passed; returns how many. The
    /// elements are written once, before any index that covers them, so the flood never writes
    /// an element the driver may be reading. Holds the device lock meanwhile (the device does
    /// nothing else; driver calls that need it wait). Raises a queue interrupt at the start and,
    /// treating the flood as one batch, at the end if `used_event` asks for it (always without
    /// EVENT_IDX, and after 2^16 entries or more, which cover every index). The device's own index moves with it, so replies returned afterwards follow the
    /// flood.
    pub fn flood_used(
        &self,
        queue: u16,
        id: u32,
        max: u64,
        max_time: Duration,
        stop: &AtomicBool,
    ) -> u64 {
        let mut d = lock(&self.sh.dev);
        let Some(q) = d.queues.get_mut(usize::from(queue)) else {
            return 0;
        };
        if !q.ready() {
            return 0;
        }
        let l = q.layout();
        for slot in 0..q.size {
            // SAFETY: inside the live used ring of a configured queue.
            unsafe { write_used(q.device + l.used_ring(slot) as u64, id, 0) };
        }
        // SAFETY: `used.idx` lies inside the live used ring of this queue.
        let used = unsafe { atomic_u16(q.device + l.used_idx() as u64) };
        *lock(&self.sh.isr) |= InterruptStatus::QUEUE_INTERRUPT.bits();
        self.sh.signal_irq();
        let first = q.used_idx;
        let end = Instant::now() + max_time;
        let mut n = 0u64;
        let mut steps = 0u32;
        // Relaxed: a test's stop flag; no data is published with it.
        while n < max && !stop.load(Ordering::Relaxed) {
            steps = steps.wrapping_add(1);
            if steps.is_multiple_of(4096) && Instant::now() >= end {
                break;
            }
            // Nearly a ring's worth per store, so however fast the driver is it never catches up
            // while the flood lasts. Odd (the size is a power of two), so the 16-bit index does
            // not come back to a value the driver just consumed up to after a few wraps.
            let step = q.size.saturating_sub(1).max(1);
            q.used_idx = q.used_idx.wrapping_add(step);
            // Release: the elements written above before any index that covers them.
            used.store(q.used_idx.to_le(), Ordering::Release);
            n += u64::from(step);
        }
        // The whole flood is one batch for interrupt suppression (virtio §2.7.10 allows the
        // device to signal once per batch): with EVENT_IDX, interrupt if the driver asked for
        // an entry inside it, as `push_used` does for one entry; without, always.
        // A flood of 2^16 entries or more covers every 16-bit index, so whatever `used_event`
        // the driver wrote lies inside it; the wrapping test below only holds for shorter
        // batches (virtio §2.7.10 indices are 16-bit). Judged by it, a long flood's interrupt
        // was suppressed whenever the driver had caught up and re-armed mid-flood.
        let raise = if d.event_idx() && n < 1 << 16 {
            // SeqCst fence: our `used.idx` stores before the `used_event` load (see `push_used`).
            fence(Ordering::SeqCst);
            let q = &d.queues[usize::from(queue)];
            // SAFETY: `used_event` lies inside the live driver area of this queue.
            let ue = unsafe { atomic_u16(q.driver + l.used_event() as u64) };
            // Acquire: a hint from the driver (the fence above orders what matters).
            vring_need_event(u16::from_le(ue.load(Ordering::Acquire)), q.used_idx, first)
        } else {
            true
        };
        // Counted like `push_used`'s decisions ([`SimDevice::interrupts`]).
        if raise {
            d.irqs_raised += 1;
            *lock(&self.sh.isr) |= InterruptStatus::QUEUE_INTERRUPT.bits();
            self.sh.signal_irq();
        } else {
            d.irqs_suppressed += 1;
        }
        n
    }

    /// Hostile eventq input: write `bytes` into the next posted eventq buffer and return it
    /// with used length `used_len` (which may exceed the buffer). `false` if none is posted.
    pub fn inject_event(&self, bytes: &[u8], used_len: u32) -> bool {
        let ok = lock(&self.sh.dev).fill_event(bytes, used_len, &self.sh.isr);
        self.sh.signal_irq();
        ok
    }

    /// The platform silently forgets every command in flight (never answered, no
    /// DEVICE_NEEDS_RESET): the driver only learns of it through timeouts.
    pub fn forget_in_flight(&self) {
        let mut d = lock(&self.sh.dev);
        d.forget_in_flight(&self.sh.factory);
    }

    /// Replies currently held (Hold fault).
    pub fn held(&self) -> usize {
        lock(&self.sh.dev).held.len()
    }

    /// Eventq buffers the device holds right now.
    pub fn eventq_buffers(&self) -> usize {
        lock(&self.sh.dev).event_bufs.len()
    }

    /// Malformed chains the device rejected.
    pub fn malformed_chains(&self) -> u64 {
        lock(&self.sh.dev).malformed
    }

    /// Ring or buffer addresses the driver gave outside [`SimDeviceConfig::shared_window`](super::SimDeviceConfig::shared_window)
    /// (each was refused).
    pub fn outside_window(&self) -> u64 {
        lock(&self.sh.dev).outside_window
    }

    /// Kicks (queue notifications) the driver sent.
    pub fn kicks(&self) -> u64 {
        // Relaxed: a statistic.
        self.sh.kicks.load(Ordering::Relaxed)
    }

    /// Queue interrupts the device raised, and those `used_event` suppressed (EVENT_IDX).
    pub fn interrupts(&self) -> (u64, u64) {
        let d = lock(&self.sh.dev);
        (d.irqs_raised, d.irqs_suppressed)
    }

    /// The features the driver wrote.
    pub fn driver_features(&self) -> u64 {
        lock(&self.sh.dev).driver_features
    }

    /// Queue a delayed response (type 2) for the platform to send on the eventq; it waits for
    /// eventq buffers like any P2A message.
    pub fn queue_p2a(&self, protocol: u8, message: u8, payload: &[u8]) {
        lock(&self.sh.dev)
            .model
            .queue_notification(protocol, message, payload);
        self.kick();
    }
}

impl RemoteControl for SimDevice {
    fn set_fault(&self, fault: Fault) {
        lock(&self.sh.dev).fault = fault;
    }

    fn release(&self) {
        {
            let mut d = lock(&self.sh.dev);
            let mut held = std::mem::take(&mut d.held);
            if d.reorder {
                held.reverse();
            }
            for r in held {
                d.deliver(r, &self.sh.isr);
            }
        }
        self.sh.signal_irq();
    }

    fn take_seen_tags(&self) -> Vec<u32> {
        lock(&self.sh.dev).seen.take()
    }

    fn received(&self) -> u64 {
        lock(&self.sh.dev).received
    }

    /// Garbage starting with [`DOUBLE_FETCH`] arms the double-fetch fault instead
    /// ([`SimDevice::rewrite_after_publish`]: the next byte mod 8, plus one, rewrites; the 9
    /// after it the mask, missing bytes 0). Other garbage lands in an eventq buffer and the cmdq
    /// used ring.
    fn inject_garbage(&self, bytes: &[u8]) {
        if let Some(df) = DoubleFetch::parse(bytes) {
            let mut mask = [0u8; 9];
            mask.copy_from_slice(&df.header[..9]);
            self.rewrite_after_publish(df.count, mask);
            return;
        }
        {
            let mut d = lock(&self.sh.dev);
            // Into an eventq buffer, with the garbage's own length (may exceed the buffer).
            d.fill_event(bytes, bytes.len() as u32, &self.sh.isr);
            // Into the cmdq used ring: a raw element, and one in range that is not a chain head.
            // (Duplicates of real heads are the Duplicate fault's and `inject_used`'s job.)
            if bytes.len() >= 8 && d.queues[0].ready() {
                let id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
                d.push_used(0, id, len, &self.sh.isr);
                if let Some(&b) = bytes.get(8) {
                    let size = u32::from(d.queues[0].size);
                    d.push_used(0, (u32::from(b) * 2 + 1) % size, len % 512, &self.sh.isr);
                }
            }
        }
        self.sh.signal_irq();
    }

    /// Used elements already in the ring cannot complete a chain made available after them: the
    /// driver refuses them by position (docs/protocols/scmi.md §8).
    fn garbage_reaches_later_sends(&self) -> bool {
        false
    }

    /// The platform loses its state with commands in flight; the device reports it the virtio
    /// way: DEVICE_NEEDS_RESET plus a configuration-change interrupt (virtio §2.1.2). A driver
    /// that handles it cancels the lost transfers at once; one that does not sees them time out.
    fn reset_remote(&self) {
        {
            let mut d = lock(&self.sh.dev);
            d.forget_in_flight(&self.sh.factory);
            if d.status.contains(DeviceStatus::DRIVER_OK) {
                d.status |= DeviceStatus::DEVICE_NEEDS_RESET;
                self.sh.publish_status(&d);
                *lock(&self.sh.isr) |= InterruptStatus::DEVICE_CONFIGURATION_INTERRUPT.bits();
            }
        }
        self.sh.signal_irq();
    }

    fn set_sim_mode(&self, mode: SimMode) -> bool {
        let wake = || self.sh.wake.notify_all();
        self.sh.mode.request(mode, &wake, Duration::from_secs(5))
    }

    fn step(&self) -> bool {
        let mut d = lock(&self.sh.dev);
        let polling = d.step_polls;
        let kicked = self.sh.serve_as(&mut d, polling);
        drop(d);
        // The interrupt this pass raised, delivered on the stepping thread (no lock held).
        self.sh.run_irq_handler();
        kicked
    }

    fn notify(&self, payload: &[u8]) -> bool {
        lock(&self.sh.dev).model.queue_notification(
            FWIPC_TEST_PROTOCOL,
            FWIPC_TEST_NOTIFY,
            payload,
        );
        self.kick();
        true
    }
}
