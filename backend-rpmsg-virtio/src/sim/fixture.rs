//! The conformance fixtures: an [`RpmsgTransport`] (driver role) and a [`SimRemote`] (device role)
//! on their in-memory queues ([`RpmsgFixture`]) or on real virtio rings ([`RpmsgRingFixture`]:
//! a [`VirtioLink`] and a [`RingDevice`] sharing the ring memory). One fixture body, two
//! [`SimLinks`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{DatagramPeer, Fixture, RemoteControl};
use fwipc_transport_api::{Completion, Datagram, StdClock};

use fwipc_virtio::hal::IdentityHal;
use fwipc_virtio::sim_device::SimTransport as VirtioSimTransport;

use super::queues::{weak, DeviceEnd, DriverEnd, Queues};
use super::remote::SimRemote;
use super::remote_end::RemoteEnd;
use super::ring_device::RingDevice;
use crate::link::Link;
use crate::transport::{RpmsgConfig, RpmsgTransport};
use crate::virtio_link::{VirtioLink, VirtioLinkConfig};

/// The name the simulated remote announces its echo endpoint under.
pub const ECHO_NAME: &[u8] = b"rpmsg-echo";

/// The transport type [`RpmsgFixture`] tests.
pub type SimTransport = RpmsgTransport<DriverEnd, StdClock>;
/// The driver's link of [`RpmsgRingFixture`]: the ring link over the simulated device.
pub type RingDriver = VirtioLink<IdentityHal, VirtioSimTransport, StdClock>;
/// The transport type [`RpmsgRingFixture`] tests.
pub type RingTransport = RpmsgTransport<RingDriver, StdClock>;

/// The two ends of the buffers a fixture runs on.
pub trait SimLinks: Send + Sync + 'static {
    /// Backend name in reports.
    const NAME: &'static str;
    /// The driver's link.
    type Driver: Link;
    /// The device's end.
    type Device: RemoteEnd;
    /// Both ends, connected, and whether the name service is on; `interrupts`: whether the
    /// transport over them takes interrupts (`RpmsgConfig::interrupts`).
    fn build(interrupts: bool) -> (Self::Driver, Self::Device, bool);
}

/// The in-memory queues.
#[derive(Debug)]
pub enum QueueLinks {}

impl SimLinks for QueueLinks {
    const NAME: &'static str = "rpmsg-virtio";
    type Driver = DriverEnd;
    type Device = DeviceEnd;
    fn build(_interrupts: bool) -> (DriverEnd, DeviceEnd, bool) {
        let q = Queues::new();
        (DriverEnd(q.clone()), DeviceEnd(q), true)
    }
}

/// Real split virtqueues in shared memory: [`VirtioLink`] (driver) and [`RingDevice`] (device).
#[derive(Debug)]
pub enum RingLinks {}

impl SimLinks for RingLinks {
    const NAME: &'static str = "rpmsg-virtio-ring";
    type Driver = RingDriver;
    type Device = RingDevice;
    fn build(interrupts: bool) -> (RingDriver, RingDevice, bool) {
        let dev = RingDevice::new(true);
        let link = VirtioLink::new(
            dev.transport(),
            StdClock::new(),
            VirtioLinkConfig {
                interrupts,
                ..VirtioLinkConfig::default()
            },
        )
        .expect("rpmsg ring link set-up");
        let ns = link.name_service();
        (link, dev, ns)
    }
}

/// The fixture on the in-memory queues.
pub type RpmsgFixture = RpmsgFixtureOf<QueueLinks>;
/// The fixture on real virtio rings.
pub type RpmsgRingFixture = RpmsgFixtureOf<RingLinks>;

/// A transport and its simulated remote, on the buffers `K` builds.
pub struct RpmsgFixtureOf<K: SimLinks> {
    transport: Arc<RpmsgTransport<K::Driver, StdClock>>,
    remote: Arc<SimRemote<K::Device>>,
    thread: Option<JoinHandle<()>>,
    mode: Completion,
    echo: u32,
}

impl<K: SimLinks> core::fmt::Debug for RpmsgFixtureOf<K> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RpmsgFixture")
            .field("mode", &self.mode)
            .field("echo", &self.echo)
            .finish_non_exhaustive()
    }
}

impl<K: SimLinks> RpmsgFixtureOf<K> {
    /// The simulated remote (extra knobs beyond [`RemoteControl`]).
    pub fn sim(&self) -> &SimRemote<K::Device> {
        &self.remote
    }

    /// A fixture in `completion` mode whose link asks for receive interrupts or not
    /// (`link_interrupts`; [`Fixture::setup`] asks for them exactly in interrupt mode): a polled
    /// transport over a link that takes interrupts, for tests of the link's interrupt requests.
    pub fn with_link_interrupts(completion: Completion, link_interrupts: bool) -> Self {
        let (driver, device, name_service) = K::build(link_interrupts);
        let cfg = RpmsgConfig {
            interrupts: completion == Completion::Interrupt,
            name_service,
            ..RpmsgConfig::default()
        };
        let transport = Arc::new(
            RpmsgTransport::new(driver, StdClock::new(), cfg).expect("rpmsg transport set-up"),
        );
        if completion == Completion::Interrupt {
            let w = weak(&transport);
            device.set_irq(Box::new(move || {
                if let Some(t) = w.upgrade() {
                    t.handle_interrupt();
                }
            }));
        }
        let remote = Arc::new(SimRemote::new(device));
        let r = remote.clone();
        let thread = std::thread::Builder::new()
            .name("rpmsg-remote".into())
            .spawn(move || r.run())
            .expect("spawn rpmsg remote");
        remote.end().set_device_thread(thread.thread().clone());
        thread.thread().unpark();
        // Both announcements must have crossed before the suite starts.
        let start = Instant::now();
        let echo = loop {
            transport.handle_interrupt();
            if let (Some(e), Some(_)) = (transport.service(ECHO_NAME), remote.driver_notify_addr())
            {
                break e;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "rpmsg: name-service announcements did not cross"
            );
            std::thread::sleep(Duration::from_micros(200));
        };
        RpmsgFixtureOf {
            transport,
            remote,
            thread: Some(thread),
            mode: completion,
            echo,
        }
    }
}

impl<K: SimLinks> Fixture for RpmsgFixtureOf<K> {
    type T = RpmsgTransport<K::Driver, StdClock>;
    const NAME: &'static str = K::NAME;

    fn setup(completion: Completion) -> Self {
        Self::with_link_interrupts(completion, completion == Completion::Interrupt)
    }

    fn modes() -> &'static [Completion] {
        &[Completion::Interrupt, Completion::Polled]
    }

    fn transport(&self) -> &Self::T {
        &self.transport
    }

    fn echo_target(&self) -> u32 {
        self.echo
    }

    fn completion(&self) -> Completion {
        self.mode
    }

    fn remote(&self) -> &dyn RemoteControl {
        &*self.remote
    }

    fn datagram(&self) -> Option<(&dyn Datagram, &dyn DatagramPeer)> {
        Some((&*self.transport, &*self.remote))
    }
}

impl<K: SimLinks> Drop for RpmsgFixtureOf<K> {
    fn drop(&mut self) {
        // Release: the remote's Acquire load of `stop` ends its loop.
        self.remote.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
