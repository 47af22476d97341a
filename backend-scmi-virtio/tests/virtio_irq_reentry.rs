//! The interrupt entry point against the code it interrupts.
//!
//! On bare metal the device's interrupt can arrive on the CPU that is in the middle of `send`,
//! holding the channel lock. The transport below makes that happen deterministically: its
//! `notify` (which `send` calls with the channel lock held, to kick the device) waits until the
//! simulated device has answered and raised its interrupt, then runs the "interrupt handler"
//! (`ScmiVirtio::complete`) right there, before returning to `send`.
//!
//! A `complete` that waits for the channel lock deadlocks here (the watchdog turns that into a
//! failure); the interrupt-safe one records the interrupt and the lock holder runs the pass at
//! release, so the transfer is complete as soon as `send` returns, with no other interrupt.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use fwipc_scmi_virtio::sim::{
    EchoPlatform, IrqLine, SimDevice, SimDeviceConfig, SimHal, SimTransport,
};
use fwipc_scmi_virtio::virtio::{ScmiVirtio, ScmiVirtioConfig, CMDQ};
use fwipc_transport_api::fixture::echo_reply;
use fwipc_transport_api::{wait_done, Deadline};
use fwipc_transport_api::{Request, StdClock, ThreadParker, Transport, TxOutcome, Wait};
use virtio_drivers::transport::{
    DeviceStatus, DeviceType, InterruptStatus, Transport as VirtioTransport,
};
use virtio_drivers::PhysAddr;
use zerocopy::{FromBytes, Immutable, IntoBytes};

const ECHO: u32 = (0x81 << 8) | 0x03;

type Handler = Arc<OnceLock<Box<dyn Fn() + Send + Sync>>>;

/// A simulated device whose cmdq kick is followed, on the kicking thread, by the device's
/// interrupt handler.
struct IrqOnKick {
    inner: SimTransport,
    irq: IrqLine,
    handler: Handler,
}

impl VirtioTransport for IrqOnKick {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        self.inner.read_device_features()
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        self.inner.write_driver_features(driver_features)
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        self.inner.notify(queue);
        if queue != CMDQ {
            return;
        }
        if let Some(h) = self.handler.get() {
            // The device answers on its own thread and raises its interrupt; deliver it here,
            // "on this CPU", while `send` still holds the channel lock.
            assert!(
                self.irq.wait(Duration::from_secs(10)),
                "device never interrupted"
            );
            h();
        }
    }
    fn get_status(&self) -> DeviceStatus {
        self.inner.get_status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status)
    }
    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.inner.set_guest_page_size(guest_page_size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.inner.requires_legacy_layout()
    }
    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.inner
            .queue_set(queue, size, descriptors, driver_area, device_area)
    }
    fn queue_unset(&mut self, queue: u16) {
        self.inner.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.inner.read_config_generation()
    }
    fn read_config_space<T: FromBytes + IntoBytes>(
        &self,
        offset: usize,
    ) -> virtio_drivers::Result<T> {
        self.inner.read_config_space(offset)
    }
    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> virtio_drivers::Result<()> {
        self.inner.write_config_space(offset, value)
    }
}

/// Run `f` on its own thread; a deadlock becomes a test failure instead of a hung test run.
fn within<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r,
        Err(_) => panic!("{what}: no progress in 60 s (the interrupt path deadlocked)"),
    }
}

#[test]
fn interrupt_arriving_while_the_sender_holds_the_lock_completes_the_transfer() {
    within("interrupt during send", || {
        // A device that waits for each kick (never watching with kicks off), so every send
        // kicks and `IrqOnKick` delivers its interrupt inside it.
        let dev_cfg = SimDeviceConfig {
            watch_when_idle: false,
            ..SimDeviceConfig::default()
        };
        let dev = SimDevice::start(dev_cfg, || Box::new(EchoPlatform::new()));
        let handler: Handler = Arc::new(OnceLock::new());
        let t = IrqOnKick {
            inner: dev.transport(),
            irq: dev.irq_line(),
            handler: handler.clone(),
        };
        let cfg = ScmiVirtioConfig {
            // One kick per message, so every send delivers its own interrupt.
            event_idx: false,
            ..ScmiVirtioConfig::default()
        };
        let scmi = Arc::new(ScmiVirtio::<SimHal, _>::new(t, cfg).expect("virtio setup"));
        let weak = Arc::downgrade(&scmi);
        let _ = handler.set(Box::new(move || {
            if let Some(s) = weak.upgrade() {
                s.complete();
            }
        }));

        let clock = StdClock::new();
        let parker = ThreadParker::new();
        for i in 0..32u8 {
            let payload = [i, i ^ 0x5A, 7, 9];
            let ticket = scmi.send(&Request::new(ECHO, &payload)).expect("send");
            // No interrupt thread exists: only the interrupt delivered inside `send` (and run by
            // the lock holder at release) can have completed the transfer.
            assert_eq!(
                scmi.poll_done(&ticket),
                Ok(true),
                "message {i} not completed"
            );
            let d = Deadline::after(&clock, Duration::from_secs(1));
            wait_done(&*scmi, &ticket, &clock, d, Wait::Completion(&parker)).expect("done");
            let mut out = [0u8; 16];
            let n = scmi.fetch_response(&ticket, &mut out).expect("reply");
            let mut want = [0u8; 4];
            echo_reply(&payload, &mut want);
            assert_eq!(&out[..n], &want, "message {i}");
            scmi.mark_txdone(ticket, TxOutcome::Done);
        }
        let st = scmi.stats();
        assert_eq!(st.completed, 32);
        assert_eq!(
            st.pool_free, st.pool_capacity,
            "every buffer back in the pool"
        );
        scmi.shutdown().expect("shutdown");
    });
}

#[test]
fn interrupts_from_another_cpu_while_senders_hold_the_lock_lose_nothing() {
    within("concurrent interrupts", || {
        let dev = SimDevice::start(SimDeviceConfig::default(), || Box::new(EchoPlatform::new()));
        let scmi = Arc::new(
            ScmiVirtio::<SimHal, _>::new(dev.transport(), ScmiVirtioConfig::default())
                .expect("virtio setup"),
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The "interrupt CPU": delivers every interrupt, and also fires spuriously, so it often
        // finds the channel lock held by a sender and must leave the pass to the holder.
        let irq = {
            let (scmi, stop, line) = (scmi.clone(), stop.clone(), dev.irq_line());
            thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    line.wait(Duration::from_micros(200));
                    scmi.complete();
                }
            })
        };
        let senders: Vec<_> = (0..2u8)
            .map(|cpu| {
                let scmi = scmi.clone();
                thread::spawn(move || {
                    let clock = StdClock::new();
                    let parker = ThreadParker::new();
                    for i in 0..300u32 {
                        let payload = [cpu, (i & 0xFF) as u8, (i >> 8) as u8, 0xA5];
                        let t = loop {
                            match scmi.send(&Request::new(ECHO, &payload)) {
                                Ok(t) => break t,
                                Err(fwipc_transport_api::Error::Busy) => thread::yield_now(),
                                Err(e) => panic!("send: {e}"),
                            }
                        };
                        let d = Deadline::after(&clock, Duration::from_secs(10));
                        wait_done(&*scmi, &t, &clock, d, Wait::Completion(&parker))
                            .unwrap_or_else(|e| panic!("cpu {cpu} message {i}: {e}"));
                        let mut out = [0u8; 16];
                        let n = scmi.fetch_response(&t, &mut out).expect("reply");
                        let mut want = [0u8; 4];
                        echo_reply(&payload, &mut want);
                        assert_eq!(&out[..n], &want);
                        scmi.mark_txdone(t, TxOutcome::Done);
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().expect("sender");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        dev.irq_line().poke();
        irq.join().expect("irq thread");
        let st = scmi.stats();
        assert_eq!(st.completed, 600);
        assert_eq!(st.pool_free, st.pool_capacity);
        scmi.shutdown().expect("shutdown");
    });
}
