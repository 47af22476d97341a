//! The vhost-user glue (crate `vhost-user-backend`): features, queues, guest memory, and the
//! worker thread's queue events, handed to [`Device`]. Nothing here returns an error for
//! anything the guest wrote: `vhost-user-backend` stops the worker thread on an error from
//! `handle_event`, which would wedge the device (vhost-device-scmi 0.4 does that).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use fwipc_scmi_virtio::platform::PlatformConfig;
use log::{debug, info, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use vmm_sys_util::timerfd::TimerFd;

use crate::device::{Device, DeviceStats};

/// Command queue index.
pub const CMDQ: u16 = 0;
/// Event queue index.
pub const EVENTQ: u16 = 1;
/// Queues of a virtio-scmi device with P2A channels.
pub const NUM_QUEUES: usize = 2;
/// Largest queue the daemon accepts (what vhost-device-scmi offers; QEMU's virtio-mmio
/// front-ends ask for up to this).
pub const QUEUE_SIZE_MAX: usize = 1024;
/// Device event of the sensor-update timer (0 and 1 are the queues, 2 the exit event).
pub const SENSOR_TIMER: u16 = 3;
/// VIRTIO_SCMI_F_P2A_CHANNELS (Virtio 1.2 §5.17.3): notifications and delayed responses on the
/// event queue.
pub const VIRTIO_SCMI_F_P2A_CHANNELS: u32 = 0;

/// The vhost-user SCMI backend.
pub struct ScmiBackend {
    device: Device,
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
    event_idx: bool,
    exit: (EventConsumer, EventNotifier),
    sensor_timer: Option<TimerFd>,
}

impl ScmiBackend {
    /// A backend serving `cfg`.
    pub fn new(cfg: PlatformConfig) -> io::Result<Self> {
        Ok(ScmiBackend {
            device: Device::new(cfg),
            mem: GuestMemoryAtomic::new(GuestMemoryMmap::new()),
            event_idx: false,
            exit: new_event_consumer_and_notifier(EventFlag::NONBLOCK)?,
            sensor_timer: None,
        })
    }

    /// Arm a periodic timer that emits SENSOR_UPDATE notifications (for sensors whose
    /// continuous updates the agent enabled). Returns the timer's fd, for the caller to register
    /// with the worker's epoll as device event [`SENSOR_TIMER`].
    pub fn start_sensor_timer(&mut self, period: Duration) -> io::Result<std::os::fd::RawFd> {
        let mut t = TimerFd::new()?;
        t.reset(period, Some(period))?;
        let fd = t.as_raw_fd();
        self.sensor_timer = Some(t);
        Ok(fd)
    }

    fn on_sensor_timer(&mut self, vrings: &[VringRwLock]) {
        if let Some(t) = self.sensor_timer.as_mut() {
            // Readable (epoll said so): consume the expirations so the event does not repeat.
            if let Err(e) = t.wait() {
                warn!("sensor timer: {e}");
            }
        }
        if self.device.sensor_tick() > 0 {
            self.on_eventq(vrings);
        }
    }

    /// The device's counters.
    pub fn stats(&self) -> DeviceStats {
        self.device.stats()
    }

    /// Serve the command queue, then deliver what the commands queued for the event queue.
    fn on_cmdq(&mut self, vrings: &[VringRwLock]) {
        if let Some(v) = vrings.get(usize::from(CMDQ)) {
            self.drain(v, |dev, q, m| dev.process_cmdq(q, m));
        }
        self.on_eventq(vrings);
    }

    fn on_eventq(&mut self, vrings: &[VringRwLock]) {
        if self.device.platform().pending_p2a() == 0 {
            return;
        }
        if let Some(v) = vrings.get(usize::from(EVENTQ)) {
            self.drain(v, |dev, q, m| dev.deliver_p2a(q, m));
        }
    }

    /// Run `f` over `vring` until the guest has nothing new (with EVENT_IDX, re-enabling
    /// notifications and checking again closes the race with a driver that just added
    /// buffers), then interrupt the guest if anything was returned and it wants to know.
    fn drain(
        &mut self,
        vring: &VringRwLock,
        mut f: impl FnMut(&mut Device, &mut virtio_queue::Queue, &GuestMemoryMmap) -> usize,
    ) {
        let mem = self.mem.memory();
        let mut state = vring.get_mut();
        if !state.get_queue().ready() {
            // Not set up yet (or stopped): nothing to serve; P2A messages stay queued.
            return;
        }
        let mut used = 0;
        // Bounded: each pass either returns chains or stops; a guest that keeps adding is
        // served for at most this many passes per kick.
        for _ in 0..64 {
            if self.event_idx {
                if let Err(e) = state.disable_notification() {
                    warn!("disable_notification: {e}");
                }
            }
            let n = f(&mut self.device, state.get_queue_mut(), &mem);
            used += n;
            if !self.event_idx {
                break;
            }
            match state.enable_notification() {
                Ok(true) if n > 0 => continue,
                Ok(_) => break,
                Err(e) => {
                    warn!("enable_notification: {e}");
                    break;
                }
            }
        }
        if used == 0 {
            return;
        }
        let notify = if self.event_idx {
            state.needs_notification().unwrap_or(true)
        } else {
            true
        };
        if notify {
            if let Err(e) = state.signal_used_queue() {
                warn!("signal_used_queue: {e}");
            }
        }
    }
}

impl VhostUserBackendMut for ScmiBackend {
    type Vring = VringRwLock;
    type Bitmap = ();

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE_MAX
    }

    /// VERSION_1, EVENT_IDX and P2A channels. Not VIRTIO_F_ACCESS_PLATFORM: over vhost-user the
    /// front-end offers that bit itself (QEMU's `iommu_platform=on`) and translates addresses
    /// before they reach the back-end; a back-end that offers it claims to speak the IOTLB
    /// protocol, and QEMU 10 aborts at start-up (an assertion in its error path) when one does
    /// without it. Guests that negotiate ACCESS_PLATFORM with QEMU work unchanged.
    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_SCMI_F_P2A_CHANNELS)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&mut self, features: u64) {
        let p2a = features & (1 << VIRTIO_SCMI_F_P2A_CHANNELS) != 0;
        info!("driver features {features:#x}: P2A channels {p2a}; platform reset");
        self.device.reset(p2a);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
    }

    fn reset_device(&mut self) {
        info!("device reset");
        self.device.reset(false);
    }

    fn set_event_idx(&mut self, enabled: bool) {
        debug!("EVENT_IDX {enabled}");
        self.event_idx = enabled;
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        debug!("guest memory updated");
        self.mem = mem;
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            warn!("queue {device_event}: unexpected epoll events {evset:?}");
            return Ok(());
        }
        match device_event {
            CMDQ => self.on_cmdq(vrings),
            EVENTQ => self.on_eventq(vrings),
            SENSOR_TIMER => self.on_sensor_timer(vrings),
            other => warn!("unknown device event {other}"),
        }
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        Some((self.exit.0.try_clone().ok()?, self.exit.1.try_clone().ok()?))
    }
}
