//! [`SimDevice`]: the register file of a simulated virtio device (status, features, queue
//! addresses, interrupt status) and [`SimTransport`], the driver's view of it as a virtio-drivers
//! `Transport`. The device model (a backend's simulated remote) owns the behaviour: it reads the
//! rings through [`SimDevice::with_queue`] ([`DeviceQueue`]) and raises the interrupt with
//! [`SimDevice::raise_irq`]; a kick runs the hook given to [`SimDevice::on_notify`].
//!
//! Reset (status 0) forgets every queue under the same lock `with_queue` holds, so once
//! `set_status(0)` returns the model no longer touches driver memory, unless
//! [`SimDevice::refuse_reset`] makes the device ignore resets (a device that never completes
//! one, Virtio 1.2 §2.4).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use fwipc_transport_api::sync::CachePadded;
use spin::Mutex;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::PhysAddr;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::device_ring::{DeviceQueue, QueueAddrs};
use crate::negotiate::F_RING_EVENT_IDX;

/// Static properties of a simulated device.
#[derive(Debug, Clone, Copy)]
pub struct SimDeviceConfig {
    /// Virtio device id (reported by [`SimTransport::device_type`] when virtio-drivers names it).
    pub device_id: u32,
    /// Offered feature bits.
    pub features: u64,
    /// Number of virtqueues.
    pub queues: u16,
    /// `max_queue_size` of every queue.
    pub queue_max: u32,
}

type Hook = Box<dyn Fn(u16) + Send + Sync>;

struct Regs {
    driver_features: u64,
    queues: Vec<Option<DeviceQueue>>,
    refuse_reset: bool,
    refuse_features_ok: bool,
    /// The model polls its queues ([`SimDevice::set_polling`]); queues configured later poll too.
    polling: bool,
}

/// What the model uses on every pass: the register lock and the status.
struct RegFile {
    regs: Mutex<Regs>,
    /// The device status register (`DeviceStatus` bits), outside the lock: a driver without
    /// interrupts looks at it now and then (`DEVICE_NEEDS_RESET`?), and one that took the
    /// register lock for that would queue behind a model polling its rings under it. Written
    /// only under the register lock, with the transition it makes (a reset forgets the queues
    /// before status 0 is stored); read by the driver without it.
    status: AtomicU32,
}

struct Inner {
    cfg: SimDeviceConfig,
    /// The register lock and the status, on lines of their own: a polling model takes the lock
    /// and reads the status on every pass over its rings, and a word the driver writes (`isr`,
    /// the counters) beside them would move their line to the driver's core and back on every
    /// interrupt or kick.
    file: CachePadded<RegFile>,
    /// Set once ([`SimDevice::on_notify`]), read on every kick: a `Once` read is one Acquire
    /// load, where a lock and a shared handle cost three read-modify-writes per kick.
    notify: spin::Once<Hook>,
    /// The interrupt status register, outside `regs`: the device raises it and the driver
    /// acknowledges it on every interrupt, and a driver that took the register lock for that
    /// would queue behind a device model polling its rings under it.
    isr: AtomicU32,
    status_reads: AtomicU64,
    kicks: AtomicU64,
}

impl Inner {
    /// The status register with `order` (see [`RegFile::status`] for who writes it).
    /// `#[inline]`, as `regs`: both are called from `SimDevice::with_queue`, which is generic
    /// and so compiled in the model's crate, where a call without it is not inlined (a call
    /// each, some 27 instructions a pass; docs/benchmarks/changes.md).
    #[inline]
    fn status_now(&self, order: Ordering) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.file.status.load(order))
    }

    /// The register lock, taken.
    #[inline]
    fn regs(&self) -> spin::MutexGuard<'_, Regs> {
        self.file.regs.lock()
    }

    /// The status, read by a holder of the register lock (`_held` proves it).
    #[inline]
    fn status_locked(&self, _held: &spin::MutexGuard<'_, Regs>) -> DeviceStatus {
        // Relaxed: written only under the register lock, which the caller holds.
        self.status_now(Ordering::Relaxed)
    }

    /// Store the status, under the register lock (`_held` proves it), after the transition it
    /// records.
    #[inline]
    fn store_status(&self, _held: &spin::MutexGuard<'_, Regs>, status: DeviceStatus) {
        // Release: pairs with the Acquire in `SimTransport::get_status`, so a driver that sees
        // the status sees what the device did before storing it (a reset's forgetting of the
        // queues).
        self.file.status.store(status.bits(), Ordering::Release);
    }
}

/// A simulated device's register file, shared by the driver's [`SimTransport`] and the model.
#[derive(Clone)]
pub struct SimDevice {
    inner: Arc<Inner>,
}

impl core::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimDevice")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl SimDevice {
    /// A device in reset state.
    pub fn new(cfg: SimDeviceConfig) -> Self {
        SimDevice {
            inner: Arc::new(Inner {
                cfg,
                file: CachePadded::new(RegFile {
                    regs: Mutex::new(Regs {
                        driver_features: 0,
                        queues: (0..cfg.queues).map(|_| None).collect(),
                        refuse_reset: false,
                        refuse_features_ok: false,
                        polling: false,
                    }),
                    status: AtomicU32::new(0),
                }),
                notify: spin::Once::new(),
                isr: AtomicU32::new(0),
                status_reads: AtomicU64::new(0),
                kicks: AtomicU64::new(0),
            }),
        }
    }

    /// The model polls every queue (`true`, a busy-polling device: it asks the driver for no
    /// kicks, [`DeviceQueue::set_polling`]) or not any more (`false`: it asks for them again,
    /// and must look at its queues once more whatever the kicks).
    pub fn set_polling(&self, on: bool) {
        let mut r = self.inner.regs();
        r.polling = on;
        for q in r.queues.iter_mut().flatten() {
            q.set_polling(on);
        }
    }

    /// Whether the model polls its queues now ([`SimDevice::set_polling`]): the driver is asked
    /// for no kicks.
    pub fn polling(&self) -> bool {
        self.inner.regs().polling
    }

    /// The driver's view (any number of them share this register file).
    pub fn transport(&self) -> SimTransport {
        SimTransport { dev: self.clone() }
    }

    /// The configuration.
    pub fn config(&self) -> SimDeviceConfig {
        self.inner.cfg
    }

    /// Run `hook(queue)` on every driver notification (called without any lock held). Set
    /// once: `false`, and `hook` is dropped, if a hook is set already.
    pub fn on_notify(&self, hook: impl Fn(u16) + Send + Sync + 'static) -> bool {
        let mut set = false;
        self.inner.notify.call_once(|| {
            set = true;
            Box::new(hook)
        });
        set
    }

    /// Ignore writes of status 0 from now on (`true`): resets are never confirmed.
    pub fn refuse_reset(&self, on: bool) {
        self.inner.regs().refuse_reset = on;
    }

    /// Clear `FEATURES_OK` whenever the driver sets it (`true`): the device refuses every subset.
    pub fn refuse_features_ok(&self, on: bool) {
        self.inner.regs().refuse_features_ok = on;
    }

    /// The features the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.inner.regs().driver_features
    }

    /// Whether the driver set `DRIVER_OK` (and the device has not been reset since).
    pub fn driver_ok(&self) -> bool {
        // Acquire: as in `SimTransport::get_status`.
        self.inner
            .status_now(Ordering::Acquire)
            .contains(DeviceStatus::DRIVER_OK)
    }

    /// How often the driver read the status register.
    pub fn status_reads(&self) -> u64 {
        // Relaxed: a statistics counter.
        self.inner.status_reads.load(Ordering::Relaxed)
    }

    /// How often the driver notified a queue.
    pub fn kicks(&self) -> u64 {
        // Relaxed: a statistics counter.
        self.inner.kicks.load(Ordering::Relaxed)
    }

    /// Run `f` on queue `queue` if the driver set it up and `DRIVER_OK` is set, under the
    /// register lock (a reset waits for it, so `f` may touch driver memory). `None` otherwise,
    /// and while the device needs a reset ([`SimDevice::signal_needs_reset`]).
    pub fn with_queue<R>(&self, queue: u16, f: impl FnOnce(&mut DeviceQueue) -> R) -> Option<R> {
        let mut regs = self.inner.regs();
        let status = self.inner.status_locked(&regs);
        if !status.contains(DeviceStatus::DRIVER_OK)
            || status.contains(DeviceStatus::DEVICE_NEEDS_RESET)
        {
            return None;
        }
        regs.queues.get_mut(usize::from(queue))?.as_mut().map(f)
    }

    /// The device fails the way virtio 1.2 §2.1.2 lets it say so: `DEVICE_NEEDS_RESET` in the
    /// status and the configuration-change bit in the interrupt status. Until the driver resets
    /// it, the device touches no queue ([`SimDevice::with_queue`] returns `None`). The caller
    /// runs the driver's interrupt handler itself, as after [`SimDevice::raise_irq`]. `false`
    /// if the device was not running (no `DRIVER_OK`).
    pub fn signal_needs_reset(&self) -> bool {
        let regs = self.inner.regs();
        let status = self.inner.status_locked(&regs);
        if !status.contains(DeviceStatus::DRIVER_OK) {
            return false;
        }
        self.inner
            .store_status(&regs, status | DeviceStatus::DEVICE_NEEDS_RESET);
        // Release: pairs with the driver's Acquire in `ack_interrupt`; the status it then reads
        // (`get_status`) is the one stored above.
        self.inner.isr.fetch_or(
            InterruptStatus::DEVICE_CONFIGURATION_INTERRUPT.bits(),
            Ordering::Release,
        );
        true
    }

    /// Set the queue-interrupt bit (the driver's `ack_interrupt` clears it). The caller runs the
    /// driver's interrupt handler itself, after this and outside `with_queue`.
    pub fn raise_irq(&self) {
        // Release: pairs with the driver's Acquire in `ack_interrupt`; the used elements are
        // published by the ring's own index store before this.
        self.inner
            .isr
            .fetch_or(InterruptStatus::QUEUE_INTERRUPT.bits(), Ordering::Release);
    }
}

/// The driver's view of a [`SimDevice`]: a virtio-drivers `Transport`.
#[derive(Debug, Clone)]
pub struct SimTransport {
    dev: SimDevice,
}

impl SimTransport {
    /// The register file behind this transport.
    pub fn device(&self) -> &SimDevice {
        &self.dev
    }
}

impl Transport for SimTransport {
    /// The configured id if virtio-drivers names it, else `Sound` (a placeholder; drivers of
    /// unnamed ids check [`SimDeviceConfig::device_id`]).
    fn device_type(&self) -> DeviceType {
        DeviceType::try_from(self.dev.inner.cfg.device_id).unwrap_or(DeviceType::Sound)
    }

    fn read_device_features(&mut self) -> u64 {
        self.dev.inner.cfg.features
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        self.dev.inner.regs().driver_features = driver_features;
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        if queue < self.dev.inner.cfg.queues {
            self.dev.inner.cfg.queue_max
        } else {
            0
        }
    }

    fn notify(&mut self, queue: u16) {
        // Relaxed: a statistics counter.
        self.dev.inner.kicks.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = self.dev.inner.notify.get() {
            h(queue);
        }
    }

    fn get_status(&self) -> DeviceStatus {
        // Relaxed: a statistics counter.
        self.dev.inner.status_reads.fetch_add(1, Ordering::Relaxed);
        // Without the register lock (see `RegFile::status`). Acquire: pairs with the Release
        // stores in `set_status` and `SimDevice::signal_needs_reset`, so what the device did
        // before storing the status read here (a reset's forgetting of the queues) is done.
        self.dev.inner.status_now(Ordering::Acquire)
    }

    fn set_status(&mut self, status: DeviceStatus) {
        let mut r = self.dev.inner.regs();
        if status.is_empty() {
            if r.refuse_reset {
                return;
            }
            for q in r.queues.iter_mut() {
                *q = None;
            }
            // Relaxed: under the register lock with the reset; a raise racing a reset is a
            // device's interrupt from before it (the driver tolerates a spurious one).
            self.dev.inner.isr.store(0, Ordering::Relaxed);
            r.driver_features = 0;
        }
        let mut status = status;
        if r.refuse_features_ok {
            status.remove(DeviceStatus::FEATURES_OK);
        }
        let was = self.dev.inner.status_locked(&r);
        if status.contains(DeviceStatus::DRIVER_OK) && !was.contains(DeviceStatus::DRIVER_OK) {
            // The device starts using the queues the driver configured.
            let event_idx = r.driver_features & F_RING_EVENT_IDX != 0;
            let polling = r.polling;
            for q in r.queues.iter_mut().flatten() {
                let addrs = q.addrs();
                // SAFETY: addresses the driver configured with `queue_set` for rings laid out by
                // `SplitRing` in this address space; they stay allocated until the driver resets
                // the device, which forgets them under this lock.
                if let Some(mut n) = unsafe { DeviceQueue::new(addrs, event_idx) } {
                    n.set_polling(polling);
                    *q = n;
                }
            }
        }
        self.dev.inner.store_status(&r, status);
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
        let addrs = QueueAddrs {
            size: u16::try_from(size).unwrap_or(0),
            desc: descriptors,
            driver: driver_area,
            device: device_area,
        };
        let mut r = self.dev.inner.regs();
        if let Some(q) = r.queues.get_mut(usize::from(queue)) {
            // SAFETY: as in `set_status`; re-created with the negotiated EVENT_IDX at DRIVER_OK.
            *q = unsafe { DeviceQueue::new(addrs, false) };
        }
    }

    fn queue_unset(&mut self, queue: u16) {
        if let Some(q) = self.dev.inner.regs().queues.get_mut(usize::from(queue)) {
            *q = None;
        }
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.dev
            .inner
            .regs()
            .queues
            .get(usize::from(queue))
            .is_some_and(Option::is_some)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        // Acquire: pairs with the Release in `raise_irq`.
        InterruptStatus::from_bits_truncate(self.dev.inner.isr.swap(0, Ordering::Acquire))
    }

    fn read_config_generation(&self) -> u32 {
        0
    }

    /// The simulated devices have no configuration space (rpmsg has none either).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hal::IdentityHal;
    use crate::ring::SplitRing;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc as StdArc;
    use std::time::{Duration, Instant};

    /// A running device with one queue of 4 over `ring`.
    fn running(ring: &SplitRing<IdentityHal>) -> (SimDevice, SimTransport) {
        let dev = SimDevice::new(SimDeviceConfig {
            device_id: 7,
            features: 0,
            queues: 1,
            queue_max: 4,
        });
        let mut t = dev.transport();
        let (desc, driver, device) = ring.addrs();
        t.queue_set(0, 4, desc, driver, device);
        t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::DRIVER_OK);
        (dev, t)
    }

    /// The driver reads the status while the model holds the register lock (as a polling model
    /// does on every pass over its rings), and sees every status change the device makes.
    #[test]
    fn the_status_is_read_without_waiting_for_the_model() {
        let ring = SplitRing::<IdentityHal>::new(4, false).unwrap();
        let (dev, t) = running(&ring);
        let holding = StdArc::new(AtomicBool::new(false));
        let read = StdArc::new(AtomicBool::new(false));
        let model = {
            let (dev, holding, read) = (dev.clone(), holding.clone(), read.clone());
            std::thread::spawn(move || {
                dev.with_queue(0, |_| {
                    holding.store(true, Ordering::SeqCst);
                    let until = Instant::now() + Duration::from_secs(5);
                    while !read.load(Ordering::SeqCst) && Instant::now() < until {
                        std::thread::yield_now();
                    }
                    read.load(Ordering::SeqCst)
                })
            })
        };
        while !holding.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let status = t.get_status();
        read.store(true, Ordering::SeqCst);
        assert_eq!(
            model.join().unwrap(),
            Some(true),
            "the status read waited for the model to let go of the register lock"
        );
        assert!(status.contains(DeviceStatus::DRIVER_OK));
        assert_eq!(dev.status_reads(), 1);

        assert!(dev.signal_needs_reset());
        assert!(t.get_status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
        assert!(
            dev.with_queue(0, |_| ()).is_none(),
            "a failed device serves nothing"
        );
        let mut t = t;
        t.set_status(DeviceStatus::empty());
        assert_eq!(t.get_status(), DeviceStatus::empty(), "reset");
        assert!(!dev.driver_ok());
        assert!(
            dev.with_queue(0, |_| ()).is_none(),
            "the reset forgot the queue"
        );
    }
}
