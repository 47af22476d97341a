//! Setting a channel up: [`ScmiVirtio::new`] (virtio 1.2 §3.1.1: feature negotiation, the
//! cmdq, the eventq with its pre-posted buffers, `DRIVER_OK`) and the choice of queue sizes.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicBool, AtomicU64};

use fwipc_transport_api::{Counters, Lifecycle, MsgPool, TokenAllocator};
use virtio_drivers::transport::{DeviceStatus, Transport as VirtioTransport};
use virtio_drivers::Hal;

use super::{ScmiVirtio, State};
use crate::header::HEADER_LEN;
use crate::virtio::config::{ScmiVirtioConfig, MAX_MESSAGES};
use crate::virtio::error::ScmiVirtioError;
use crate::virtio::eventq::EventQueue;
use crate::virtio::features::{ScmiFeatures, CMDQ, EVENTQ};
use crate::virtio::parse::RESP_OVERHEAD;
use crate::virtio::ring::SplitRing;
use crate::virtio::slot::Slot;
use crate::virtio::stall::StallWatch;

/// Largest payload we accept in the configuration.
const MAX_PAYLOAD: usize = 64 * 1024;

fn pick_size(
    wanted: Option<u32>,
    max: u32,
    cap: u32,
    queue: u16,
) -> core::result::Result<u16, ScmiVirtioError> {
    if max == 0 {
        return Err(ScmiVirtioError::QueueUnavailable(queue));
    }
    let size = match wanted {
        Some(w) => w,
        None => {
            // Largest power of two ≤ min(max, cap).
            let m = max.min(cap);
            1 << (31 - m.leading_zeros())
        }
    };
    if size < 2 || !size.is_power_of_two() || size > max || size > 32768 {
        return Err(ScmiVirtioError::BadQueueSize {
            queue,
            wanted: size,
            max,
        });
    }
    Ok(size as u16)
}

impl<H: Hal, T: VirtioTransport> ScmiVirtio<H, T> {
    /// Initialise the device behind `transport` (virtio 1.x §3.1.1) and set up the queues.
    ///
    /// The device is reset first. Fails with [`ScmiVirtioError::LegacyDevice`] if it lacks
    /// `VIRTIO_F_VERSION_1` (status FAILED is set), [`ScmiVirtioError::FeaturesRejected`] if
    /// FEATURES_OK does not stick, and queue/DMA errors; on every failure after feature
    /// negotiation the device is reset again so it no longer references our memory.
    pub fn new(
        mut transport: T,
        config: ScmiVirtioConfig,
    ) -> core::result::Result<Self, ScmiVirtioError> {
        if config.max_msg_size == 0 || config.max_msg_size > MAX_PAYLOAD {
            return Err(ScmiVirtioError::BadConfig);
        }
        transport.set_status(DeviceStatus::empty());
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = ScmiFeatures::from_bits_truncate(transport.read_device_features());
        if !offered.contains(ScmiFeatures::VERSION_1) {
            log::error!("virtio-scmi: legacy device (no VERSION_1) refused");
            transport.set_status(DeviceStatus::FAILED);
            return Err(ScmiVirtioError::LegacyDevice);
        }
        let mut features = ScmiFeatures::VERSION_1;
        if config.p2a && offered.contains(ScmiFeatures::P2A_CHANNELS) {
            features |= ScmiFeatures::P2A_CHANNELS;
        }
        if config.event_idx && offered.contains(ScmiFeatures::RING_EVENT_IDX) {
            features |= ScmiFeatures::RING_EVENT_IDX;
        }
        if offered.contains(ScmiFeatures::ACCESS_PLATFORM) {
            features |= ScmiFeatures::ACCESS_PLATFORM;
        }
        let event_idx = features.contains(ScmiFeatures::RING_EVENT_IDX);
        transport.write_driver_features(features.bits());
        transport.set_status(
            DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK,
        );
        if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
            transport.set_status(DeviceStatus::FAILED);
            return Err(ScmiVirtioError::FeaturesRejected);
        }
        let fail = |t: &mut T, e: ScmiVirtioError| {
            t.set_status(DeviceStatus::empty());
            Err(e)
        };

        // cmdq
        if transport.queue_used(CMDQ) {
            return fail(&mut transport, ScmiVirtioError::QueueUnavailable(CMDQ));
        }
        let max = transport.max_queue_size(CMDQ);
        let size = match pick_size(config.cmdq_size, max, 2 * MAX_MESSAGES as u32, CMDQ) {
            Ok(s) => s,
            Err(e) => return fail(&mut transport, e),
        };
        let Some(cmdq) = SplitRing::<H>::new(size, event_idx) else {
            return fail(&mut transport, ScmiVirtioError::DmaAlloc);
        };
        let (d, a, u) = cmdq.addrs();
        transport.queue_set(CMDQ, size as u32, d, a, u);
        let nslots = (size as usize / 2).min(MAX_MESSAGES);
        let req_cap = HEADER_LEN + config.max_msg_size;
        let resp_cap = RESP_OVERHEAD + config.max_msg_size;
        let pool = match MsgPool::new(nslots, req_cap + resp_cap) {
            Ok(p) => p,
            Err(_) => return fail(&mut transport, ScmiVirtioError::BadConfig),
        };
        let tokens = match TokenAllocator::new(10) {
            Ok(t) => t,
            Err(_) => return fail(&mut transport, ScmiVirtioError::BadConfig),
        };

        // eventq
        let mut eventq = None;
        if features.contains(ScmiFeatures::P2A_CHANNELS) {
            if transport.queue_used(EVENTQ) {
                return fail(&mut transport, ScmiVirtioError::QueueUnavailable(EVENTQ));
            }
            let max = transport.max_queue_size(EVENTQ);
            let size = match pick_size(config.eventq_size, max, MAX_MESSAGES as u32, EVENTQ) {
                Ok(s) => s,
                Err(e) => return fail(&mut transport, e),
            };
            let Some(ring) = SplitRing::<H>::new(size, event_idx) else {
                return fail(&mut transport, ScmiVirtioError::DmaAlloc);
            };
            let (d, a, u) = ring.addrs();
            transport.queue_set(EVENTQ, size as u32, d, a, u);
            let buf_size = config
                .eventq_buf_size
                .unwrap_or(RESP_OVERHEAD + config.max_msg_size)
                .max(RESP_OVERHEAD);
            let count = (size as usize).min(MAX_MESSAGES);
            match EventQueue::new(ring, count, buf_size) {
                Some(q) => eventq = Some(q),
                None => return fail(&mut transport, ScmiVirtioError::DmaAlloc),
            }
        }

        go_live(&mut transport, eventq.as_mut());
        log::debug!(
            "virtio-scmi: features {features:?}, cmdq {size} ({nslots} messages), eventq {}",
            eventq.as_ref().map_or(0, |q| q.count())
        );
        let slots: Box<[Slot]> = (0..nslots).map(|_| Slot::new()).collect();
        Ok(ScmiVirtio {
            lc: Lifecycle::new(),
            counters: Counters::default(),
            pool,
            tokens,
            max_msg_size: config.max_msg_size,
            req_cap,
            resp_cap,
            features,
            cfg: config,
            state: spin::Mutex::new(State {
                transport: ManuallyDrop::new(transport),
                released: false,
                cmdq: Some(cmdq),
                eventq,
                slots,
                deferred: Vec::with_capacity(2 * nslots + 1),
                idle_polls: 0,
                outstanding: 0,
                stall: StallWatch::default(),
                failure: None,
            }),
            irq_pending: AtomicBool::new(false),
            resets: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
        })
    }
}

/// The last step of setting the device up (at `new` and after a reset): `DRIVER_OK`, then the
/// eventq's buffers. Feed the eventq only after DRIVER_OK: vhost-user back-ends drop kicks on
/// rings that are not enabled yet (docs/protocols/virtio.md §4 pitfall 4).
pub(super) fn go_live<H: Hal, T: VirtioTransport>(
    transport: &mut T,
    eventq: Option<&mut EventQueue<H>>,
) {
    transport.set_status(
        DeviceStatus::ACKNOWLEDGE
            | DeviceStatus::DRIVER
            | DeviceStatus::FEATURES_OK
            | DeviceStatus::DRIVER_OK,
    );
    if let Some(q) = eventq {
        q.post_all();
        if q.ring.should_notify() {
            transport.notify(EVENTQ);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_size_selection() {
        // Default: the largest power of two within the device maximum and the cap.
        assert_eq!(pick_size(None, 1024, 2048, 0), Ok(1024));
        assert_eq!(pick_size(None, 4096, 2048, 0), Ok(2048));
        assert_eq!(pick_size(None, 1000, 2048, 0), Ok(512));
        assert_eq!(pick_size(Some(64), 1024, 2048, 1), Ok(64));
        assert_eq!(
            pick_size(None, 0, 2048, 1),
            Err(ScmiVirtioError::QueueUnavailable(1))
        );
        for bad in [0, 1, 3, 96, 2048] {
            assert!(matches!(
                pick_size(Some(bad), 1024, 2048, 0),
                Err(ScmiVirtioError::BadQueueSize { .. })
            ));
        }
    }
}
