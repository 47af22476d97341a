//! Setting a channel up: [`ScmiVirtio::new`] (virtio 1.2 §3.1.1: feature negotiation, the
//! cmdq, the eventq with its pre-posted buffers, `DRIVER_OK`) and the choice of queue sizes.

use alloc::vec::Vec;
use core::mem::ManuallyDrop;
use core::sync::atomic::{AtomicBool, AtomicU64};

use fwipc_transport_api::{Lifecycle, Spinners, TransferTable};
use fwipc_virtio::negotiate::{self, ResetOutcome, StatusReadClock};
use virtio_drivers::transport::Transport as VirtioTransport;
use virtio_drivers::Hal;

use super::{ScmiDgram, ScmiVirtio, State};
use crate::header::HEADER_LEN;
use crate::virtio::config::{ScmiVirtioConfig, MAX_MESSAGES};
use crate::virtio::error::ScmiVirtioError;
use crate::virtio::eventq::EventQueue;
use crate::virtio::features::{ScmiFeatures, CMDQ, EVENTQ};
use crate::virtio::parse::RESP_OVERHEAD;
use crate::virtio::ring::SplitRing;
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
    /// The device is reset first and features are negotiated, both through
    /// `fwipc_virtio::negotiate`: `VIRTIO_F_VERSION_1` required; `VIRTIO_SCMI_F_P2A_CHANNELS`
    /// (if [`ScmiVirtioConfig::p2a`]), `VIRTIO_F_RING_EVENT_IDX` (if
    /// [`ScmiVirtioConfig::event_idx`]) and `VIRTIO_F_ACCESS_PLATFORM` taken when offered.
    /// Fails with [`ScmiVirtioError::ResetUnconfirmed`] if the device does not read back status 0
    /// within [`ScmiVirtioConfig::reset_timeout`] (nothing has been given to it yet),
    /// [`ScmiVirtioError::LegacyDevice`] if it lacks `VIRTIO_F_VERSION_1` (status FAILED is set),
    /// [`ScmiVirtioError::FeaturesRejected`] if FEATURES_OK does not stick (status FAILED is
    /// set), and queue/DMA errors; on every failure after feature negotiation the device is reset
    /// again so it no longer references our memory.
    pub fn new(
        mut transport: T,
        config: ScmiVirtioConfig,
    ) -> core::result::Result<Self, ScmiVirtioError> {
        if config.max_msg_size == 0 || config.max_msg_size > MAX_PAYLOAD {
            return Err(ScmiVirtioError::BadConfig);
        }
        if !reset_device(&mut transport, &config) {
            return Err(ScmiVirtioError::ResetUnconfirmed);
        }
        let mut optional = ScmiFeatures::ACCESS_PLATFORM;
        if config.p2a {
            optional |= ScmiFeatures::P2A_CHANNELS;
        }
        if config.event_idx {
            optional |= ScmiFeatures::RING_EVENT_IDX;
        }
        let features = match negotiate::negotiate(
            &mut transport,
            ScmiFeatures::VERSION_1.bits(),
            optional.bits(),
        ) {
            Ok(bits) => ScmiFeatures::from_bits_truncate(bits),
            Err(fwipc_virtio::Error::MissingFeatures(_)) => {
                log::error!("virtio-scmi: legacy device (no VERSION_1) refused");
                return Err(ScmiVirtioError::LegacyDevice);
            }
            Err(_) => return Err(ScmiVirtioError::FeaturesRejected),
        };
        let event_idx = features.contains(ScmiFeatures::RING_EVENT_IDX);
        // Every failure below comes before DRIVER_OK, and a device must not use any buffer or
        // ring before DRIVER_OK (Virtio 1.2 §2.1.2), so the rings dropped on the way out
        // were never the device's. The reset (bounded, as at the start) forgets the queue
        // addresses we did give it; whether it was confirmed changes nothing we own.
        let fail = |t: &mut T, e: ScmiVirtioError| {
            if !reset_device(t, &config) {
                log::warn!(
                    "virtio-scmi: reset after a failed setup unconfirmed (nothing was lent)"
                );
            }
            Err(e)
        };
        // Datagram state first: nothing after `go_live` may fail.
        let Ok(dgram) = ScmiDgram::new(config.max_msg_size) else {
            return fail(&mut transport, ScmiVirtioError::BadConfig);
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
        let Some(mut cmdq) = SplitRing::<H>::new(size, event_idx) else {
            return fail(&mut transport, ScmiVirtioError::DmaAlloc);
        };
        if !config.interrupts {
            // Nothing takes an interrupt: ask the device to raise none (`poll_done` drains).
            cmdq.suppress_interrupts();
        }
        let (d, a, u) = cmdq.addrs();
        transport.queue_set(CMDQ, size as u32, d, a, u);
        let nslots = (size as usize / 2).min(MAX_MESSAGES);
        let req_cap = HEADER_LEN + config.max_msg_size;
        let resp_cap = RESP_OVERHEAD + config.max_msg_size;
        // 10-bit tokens (Linux `MSG_TOKEN_MAX`), quarantined while the device holds the buffer.
        let table = match TransferTable::new(nslots, req_cap + resp_cap, 10) {
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
            let Some(mut ring) = SplitRing::<H>::new(size, event_idx) else {
                return fail(&mut transport, ScmiVirtioError::DmaAlloc);
            };
            if !config.interrupts {
                // As the cmdq's (`fetch_notification` and `poll_rx` drain).
                ring.suppress_interrupts();
            }
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
        Ok(ScmiVirtio {
            lc: Lifecycle::new(),
            max_msg: nslots,
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
                table,
                deferred: Vec::with_capacity(2 * nslots + 1),
                idle_polls: 0,
                spinners: Spinners::new(),
                outstanding: 0,
                posted_at: alloc::vec![0; nslots],
                used_seen: 0,
                stall: StallWatch::default(),
                failure: None,
            }),
            irq_pending: AtomicBool::new(false),
            resets: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
            dgram,
        })
    }
}

/// Reset the device (`fwipc_virtio::negotiate::reset`) and wait, at most
/// [`ScmiVirtioConfig::reset_timeout`] on the configured clock (without one: on
/// [`StatusReadClock`]), until it reads back status 0. `true` if the reset was confirmed: the
/// device no longer accesses the rings or any buffer it held. `false`: it may still, so the
/// caller must keep all of it quarantined.
pub(super) fn reset_device<T: VirtioTransport>(
    transport: &mut T,
    config: &ScmiVirtioConfig,
) -> bool {
    let outcome = match config.clock.as_deref() {
        Some(clock) => negotiate::reset(transport, clock, config.reset_timeout),
        None => negotiate::reset(transport, &StatusReadClock::default(), config.reset_timeout),
    };
    outcome == ResetOutcome::Confirmed
}

/// The last step of setting the device up (at `new` and after a reset): `DRIVER_OK`, then the
/// eventq's buffers. Feed the eventq only after DRIVER_OK: vhost-user back-ends drop kicks on
/// rings that are not enabled yet (docs/protocols/virtio.md §4 pitfall 4).
pub(super) fn go_live<H: Hal, T: VirtioTransport>(
    transport: &mut T,
    eventq: Option<&mut EventQueue<H>>,
) {
    negotiate::driver_ok(transport);
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

    /// A setup that fails after a queue was given to the device (here the eventq's size) resets
    /// it: status 0 read back, no queue configured, and a later setup succeeds.
    #[cfg(feature = "sim")]
    #[test]
    fn a_setup_failing_after_the_cmdq_leaves_the_device_reset() {
        use crate::sim::{EchoPlatform, SimDevice, SimDeviceConfig, SimHal};
        use virtio_drivers::transport::DeviceStatus;

        let dev = SimDevice::start(SimDeviceConfig::default(), || Box::new(EchoPlatform::new()));
        let bad = ScmiVirtioConfig {
            eventq_size: Some(3),
            ..ScmiVirtioConfig::default()
        };
        let r = ScmiVirtio::<SimHal, _>::new(dev.transport(), bad);
        assert!(matches!(
            r.err(),
            Some(ScmiVirtioError::BadQueueSize { .. })
        ));
        let mut t = dev.transport();
        assert_eq!(t.get_status(), DeviceStatus::empty(), "device reset");
        assert!(
            !t.queue_used(CMDQ),
            "the cmdq given to the device is forgotten"
        );
        assert!(ScmiVirtio::<SimHal, _>::new(dev.transport(), ScmiVirtioConfig::default()).is_ok());
    }

    /// A device that never reads back status 0 is refused before anything is negotiated or
    /// given to it, after `reset_timeout` worth of status reads (no clock configured).
    #[cfg(feature = "sim")]
    #[test]
    fn new_refuses_a_device_whose_reset_never_completes() {
        use crate::sim::{EchoPlatform, SimDevice, SimDeviceConfig, SimHal};
        use core::time::Duration;
        use virtio_drivers::transport::DeviceStatus;

        let dev = SimDevice::start(SimDeviceConfig::default(), || Box::new(EchoPlatform::new()));
        let mut t = dev.transport();
        t.set_status(DeviceStatus::ACKNOWLEDGE);
        dev.set_refuse_reset(true);
        let cfg = ScmiVirtioConfig {
            reset_timeout: Duration::from_millis(10),
            ..ScmiVirtioConfig::default()
        };
        let r = ScmiVirtio::<SimHal, _>::new(dev.transport(), cfg.clone());
        assert_eq!(r.err(), Some(ScmiVirtioError::ResetUnconfirmed));
        assert_eq!(
            t.get_status(),
            DeviceStatus::ACKNOWLEDGE,
            "nothing negotiated"
        );
        dev.set_refuse_reset(false);
        assert!(ScmiVirtio::<SimHal, _>::new(dev.transport(), cfg).is_ok());
    }
}
