//! The VCHI clients against the core's own threaded simulator ([`backend_vchiq::sim::SimPair`]):
//! the VideoCore runs in its worker thread and sleeps on its doorbell between polls, so every
//! exchange here depends on the remote_event arm/signal/doorbell handshake (a lost wake-up hangs
//! and fails the deadline).

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_vchiq::sim::SimPair;
use backend_vchiq::vchi::core_link::{CoreLink, VcServiceHost};
use backend_vchiq::vchi::echo_server::EchoServer;
use backend_vchiq::vchi::fourcc;
use backend_vchiq::vchi::smem_wire::SmemAllocType;
use backend_vchiq::vchi::test_client::{bulk_echo, ctrl, ping};
use backend_vchiq::vchi::{Smem, SmemServer, VchiError};
use backend_vchiq::{Config, ServiceParams, Vchiq};

/// Polled-mode slave pump: poll, then nap briefly; give up after 20 s.
fn pump(slave: &Vchiq) -> impl FnMut() -> Result<(), VchiError> + '_ {
    let start = Instant::now();
    move || {
        if slave.poll() == 0 {
            if start.elapsed() > Duration::from_secs(20) {
                return Err(VchiError::Transport(fwipc_transport_api::Error::Timeout));
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        Ok(())
    }
}

#[test]
fn smem_and_echo_against_the_threaded_videocore() {
    let pair = SimPair::with_config(Config::default(), false).unwrap();
    let smem_host: Arc<VcServiceHost<SmemServer, fn() -> SmemServer>> =
        Arc::new(VcServiceHost::new(|| SmemServer::new(0x2000_0000, 1 << 20)));
    pair.master()
        .add_service_arc(
            ServiceParams::new(fourcc::SMEM).version(1, 0),
            smem_host.clone(),
        )
        .unwrap();
    let echo: fn() -> EchoServer = EchoServer::new;
    pair.master()
        .add_service_arc(
            ServiceParams::new(fourcc::ECHO).version(3, 1),
            Arc::new(VcServiceHost::new(echo)),
        )
        .unwrap();
    pair.connect().unwrap();
    let slave: &Vchiq = pair.slave();

    let link = CoreLink::open(
        slave,
        ServiceParams::new(fourcc::SMEM).version(1, 1),
        4,
        pump(slave),
    )
    .unwrap();
    let mut smem = Smem::connect(link, 4).unwrap();
    let hs: Vec<_> = (1..20u32)
        .map(|i| smem.alloc(i * 512, SmemAllocType::Cached, 0, b"w").unwrap())
        .collect();
    for h in hs {
        smem.free(h).unwrap();
    }
    smem.into_link().close().unwrap();
    smem_host.for_each(|_, _| panic!("closed instance still live"));
    assert_eq!(smem_host.take_retired().len(), 1);

    let mut l = CoreLink::open(
        slave,
        ServiceParams::new(fourcc::ECHO).version(3, 3),
        8,
        pump(slave),
    )
    .unwrap();
    ping(&mut l, 2, 2, 50).unwrap();
    ctrl(&mut l, 1000, 50).unwrap();
    bulk_echo(&mut l, 10_000, 4).unwrap();
    l.close().unwrap();
    let (to_vpu, _) = pair.rings();
    assert!(to_vpu > 0, "the VideoCore slept and was woken by doorbells");
    assert_eq!(pair.slave().stats().protocol_errors, 0);
    assert_eq!(pair.master().stats().protocol_errors, 0);
}
