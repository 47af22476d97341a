//! The loopback conformance fixture.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use fwipc_transport_api::fixture::{DatagramPeer, Fixture, RemoteControl};
use fwipc_transport_api::{Completion, Datagram};

use super::datagram::LoopbackPeer;
use super::remote::Remote;
use super::transport::LoopbackTransport;

/// A loopback transport and its remote thread.
pub struct LoopbackFixture {
    transport: LoopbackTransport,
    remote: Arc<Remote>,
    thread: Option<JoinHandle<()>>,
    mode: Completion,
    peer: LoopbackPeer,
}

impl Fixture for LoopbackFixture {
    type T = LoopbackTransport;
    const NAME: &'static str = "loopback";

    fn setup(completion: Completion) -> Self {
        let transport = LoopbackTransport::new(completion == Completion::Interrupt);
        let remote = Arc::new(Remote::new(transport.inner.clone()));
        let r = remote.clone();
        let thread = std::thread::Builder::new()
            .name("loopback-remote".into())
            .spawn(move || r.run())
            .expect("spawn loopback remote");
        // Set once, here (a second fixture has its own transport).
        if !transport
            .inner
            .remote_wake
            .set_thread(thread.thread().clone())
        {
            log::warn!("loopback: the remote's thread is set already");
        }
        LoopbackFixture {
            peer: LoopbackPeer::new(transport.dgram.clone()),
            transport,
            remote,
            thread: Some(thread),
            mode: completion,
        }
    }

    fn modes() -> &'static [Completion] {
        &[Completion::Interrupt, Completion::Polled]
    }

    fn transport(&self) -> &LoopbackTransport {
        &self.transport
    }

    fn echo_target(&self) -> u32 {
        1
    }

    fn completion(&self) -> Completion {
        self.mode
    }

    fn remote(&self) -> &dyn RemoteControl {
        &*self.remote
    }

    fn datagram(&self) -> Option<(&dyn Datagram, &dyn DatagramPeer)> {
        Some((&self.transport, &self.peer))
    }
}

impl Drop for LoopbackFixture {
    fn drop(&mut self) {
        // Release: the remote's Acquire load of `stop` ends its loop.
        self.remote.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
