//! The conformance fixture: an [`RpmsgTransport`] (driver role) and a [`SimRemote`] (device role)
//! on their in-memory queues.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{DatagramPeer, Fixture, RemoteControl};
use fwipc_transport_api::{Completion, Datagram, StdClock};

use super::queues::{weak, DriverEnd, Queues};
use super::remote::SimRemote;
use crate::transport::{RpmsgConfig, RpmsgTransport};

/// The name the simulated remote announces its echo endpoint under.
pub const ECHO_NAME: &[u8] = b"rpmsg-echo";

/// The transport type the fixture tests.
pub type SimTransport = RpmsgTransport<DriverEnd, StdClock>;

/// A transport and its simulated remote.
pub struct RpmsgFixture {
    transport: Arc<SimTransport>,
    remote: Arc<SimRemote>,
    thread: Option<JoinHandle<()>>,
    mode: Completion,
    echo: u32,
}

impl core::fmt::Debug for RpmsgFixture {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RpmsgFixture")
            .field("mode", &self.mode)
            .field("echo", &self.echo)
            .finish_non_exhaustive()
    }
}

impl RpmsgFixture {
    /// The simulated remote (extra knobs beyond [`RemoteControl`]).
    pub fn sim(&self) -> &SimRemote {
        &self.remote
    }
}

impl Fixture for RpmsgFixture {
    type T = SimTransport;
    const NAME: &'static str = "rpmsg-virtio";

    fn setup(completion: Completion) -> Self {
        let queues = Queues::new();
        let cfg = RpmsgConfig {
            interrupts: completion == Completion::Interrupt,
            ..RpmsgConfig::default()
        };
        let transport = Arc::new(
            RpmsgTransport::new(DriverEnd(queues.clone()), StdClock::new(), cfg)
                .expect("rpmsg transport set-up"),
        );
        if completion == Completion::Interrupt {
            let w = weak(&transport);
            queues.set_irq(move || {
                if let Some(t) = w.upgrade() {
                    t.handle_interrupt();
                }
            });
        }
        let remote = Arc::new(SimRemote::new(queues.clone()));
        let r = remote.clone();
        let thread = std::thread::Builder::new()
            .name("rpmsg-remote".into())
            .spawn(move || r.run())
            .expect("spawn rpmsg remote");
        queues.set_device_thread(thread.thread().clone());
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
        RpmsgFixture {
            transport,
            remote,
            thread: Some(thread),
            mode: completion,
            echo,
        }
    }

    fn modes() -> &'static [Completion] {
        &[Completion::Interrupt, Completion::Polled]
    }

    fn transport(&self) -> &SimTransport {
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

impl Drop for RpmsgFixture {
    fn drop(&mut self) {
        // Release: the remote's Acquire load of `stop` ends its loop.
        self.remote.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
