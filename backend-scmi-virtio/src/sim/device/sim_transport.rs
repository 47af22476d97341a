//! [`SimTransport`]: the driver's view of the simulated device's register file (a virtio-drivers
//! `Transport`): status, features, queue configuration, kicks, the interrupt status.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::PhysAddr;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::{lock, QueueCfg, Shared};
use crate::virtio::{ScmiFeatures, VIRTIO_ID_SCMI};

/// The driver's side of a [`SimDevice`](super::SimDevice): a virtio-drivers `Transport` over the simulated
/// register file.
pub struct SimTransport {
    pub(super) sh: Arc<Shared>,
}

impl core::fmt::Debug for SimTransport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimTransport").finish_non_exhaustive()
    }
}

impl SimTransport {
    /// The virtio device id (32, SCMI), which `device_type()` cannot express.
    pub fn device_id(&self) -> u32 {
        VIRTIO_ID_SCMI
    }
}

impl Transport for SimTransport {
    /// virtio-drivers' `DeviceType` has no SCMI (32) variant; this placeholder is never used by
    /// `ScmiVirtio`. Use [`SimTransport::device_id`].
    fn device_type(&self) -> DeviceType {
        DeviceType::Sound
    }

    fn read_device_features(&mut self) -> u64 {
        let d = lock(&self.sh.dev);
        let mut f = ScmiFeatures::empty();
        if d.cfg.offer_version_1 {
            f |= ScmiFeatures::VERSION_1;
        }
        if d.cfg.offer_p2a {
            f |= ScmiFeatures::P2A_CHANNELS;
        }
        if d.cfg.offer_event_idx {
            f |= ScmiFeatures::RING_EVENT_IDX;
        }
        if d.cfg.offer_access_platform {
            f |= ScmiFeatures::ACCESS_PLATFORM;
        }
        f.bits()
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        lock(&self.sh.dev).driver_features = driver_features;
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        let d = lock(&self.sh.dev);
        match queue {
            0 => d.cfg.queue_max,
            1 if d.cfg.offer_p2a => d.cfg.queue_max,
            _ => 0,
        }
    }

    /// A kick takes no lock the device thread holds while it serves: on a spinning device the
    /// device lock's line would move to the driver and back once per request.
    fn notify(&mut self, _queue: u16) {
        // SeqCst: one half of the handshake with the device thread's `sleeping` store and its
        // re-check of `kicks` (see `device_thread`); also a Release for `take_kick`'s Acquire.
        self.sh.kicks.fetch_add(1, Ordering::SeqCst);
        self.sh.hint();
        // A wake-up is a system call: only when the device thread sleeps, or is about to, on
        // `wake`. SeqCst: the other half of the handshake.
        if self.sh.sleeping.load(Ordering::SeqCst) {
            // Through the device lock: the thread holds it from its re-check of `kicked` until
            // its wait releases it, so the notify cannot fall in between and be lost.
            drop(lock(&self.sh.dev));
            self.sh.wake.notify_all();
        }
    }

    fn get_status(&self) -> DeviceStatus {
        // Without the device lock (see `Shared::status`). Acquire: pairs with the Release in
        // `Shared::publish_status`, so a reset read as done is done.
        DeviceStatus::from_bits_retain(self.sh.status.load(Ordering::Acquire))
    }

    fn set_status(&mut self, status: DeviceStatus) {
        let mut d = lock(&self.sh.dev);
        if status.is_empty() && d.refuse_reset {
            return;
        }
        if status.is_empty() {
            // Reset: after this returns the device no longer touches guest memory (the thread
            // only does so under this lock).
            d.reset_rings();
            *lock(&self.sh.isr) = 0;
        }
        d.status = status;
        self.sh.publish_status(&d);
    }

    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}

    fn requires_legacy_layout(&self) -> bool {
        false
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        let mut d = lock(&self.sh.dev);
        let bytes = u64::from(size);
        // Descriptor table, driver (avail) and device (used) areas, as the split ring lays them
        // out (Virtio 1.2 §2.7): 16, 2 and 8 bytes per entry plus 6-byte headers/trailers.
        let areas = [
            (descriptors, 16 * bytes),
            (driver_area, 6 + 2 * bytes),
            (device_area, 6 + 8 * bytes),
        ];
        if !areas.iter().all(|&(a, l)| d.may_touch(a, l)) {
            // A ring the host may not touch is never configured: the queue stays unusable.
            return;
        }
        if let Some(q) = d.queues.get_mut(usize::from(queue)) {
            *q = QueueCfg {
                size: size as u16,
                desc: descriptors,
                driver: driver_area,
                device: device_area,
                last_avail: 0,
                used_idx: 0,
                ..QueueCfg::default()
            };
        }
    }

    fn queue_unset(&mut self, queue: u16) {
        let mut d = lock(&self.sh.dev);
        if let Some(q) = d.queues.get_mut(usize::from(queue)) {
            *q = QueueCfg::default();
        }
        if queue == 1 {
            d.event_bufs.clear();
        }
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        lock(&self.sh.dev)
            .queues
            .get(usize::from(queue))
            .is_some_and(|q| q.desc != 0)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        let mut isr = lock(&self.sh.isr);
        InterruptStatus::from_bits_retain(std::mem::take(&mut *isr))
    }

    fn read_config_generation(&self) -> u32 {
        0
    }

    fn read_config_space<T: FromBytes + IntoBytes>(
        &self,
        _offset: usize,
    ) -> virtio_drivers::Result<T> {
        Err(virtio_drivers::Error::ConfigSpaceMissing)
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        _offset: usize,
        _value: T,
    ) -> virtio_drivers::Result<()> {
        Err(virtio_drivers::Error::ConfigSpaceMissing)
    }
}
