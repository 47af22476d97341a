//! The VCHI clients against the core's own threaded simulator ([`fwipc_vchiq::sim::SimPair`]):
//! the VideoCore runs in its worker thread and sleeps on its doorbell between polls, so every
//! exchange here depends on the remote_event arm/signal/doorbell handshake (a lost wake-up hangs
//! and fails the deadline).

use std::sync::Arc;
use std::time::Duration;

use fwipc_vchiq::sim::vchi::echo_server::EchoServer;
use fwipc_vchiq::sim::vchi::SmemServer;
use fwipc_vchiq::sim::{SimPair, SIM_WAIT};
use fwipc_vchiq::vchi::core_link::CoreLink;
use fwipc_vchiq::vchi::fourcc;
use fwipc_vchiq::vchi::service_host::VcServiceHost;
use fwipc_vchiq::vchi::smem_wire::SmemAllocType;
use fwipc_vchiq::vchi::test_client::{bulk_echo, ctrl, ping};
use fwipc_vchiq::vchi::Smem;
use fwipc_vchiq::vchi::{VcAction, VcService};
use fwipc_vchiq::{Config, Deliver, Event, ServiceCtx, ServiceParams, Vchiq};

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
        SIM_WAIT,
        Duration::from_secs(20),
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
        SIM_WAIT,
        Duration::from_secs(20),
    )
    .unwrap();
    // Idle long enough for the VideoCore's worker to spend its spin budget, arm its events and
    // sleep: the next request must ring its doorbell to wake it (its own poll requests from
    // inside a poll no longer ring anything, so only a doorbell counts here).
    std::thread::sleep(Duration::from_millis(100));
    let (idle_rings, _) = pair.rings();
    ping(&mut l, 2, 2, 50).unwrap();
    ctrl(&mut l, 1000, 50).unwrap();
    bulk_echo(&mut l, 10_000, 4).unwrap();
    l.close().unwrap();
    let (to_vpu, _) = pair.rings();
    assert!(
        to_vpu > idle_rings,
        "the VideoCore slept and was woken by doorbells"
    );
    assert_eq!(pair.slave().stats().protocol_errors, 0);
    assert_eq!(pair.master().stats().protocol_errors, 0);
}

/// A VideoCore-side service that answers one request with a burst of replies.
struct Burst;

impl VcService for Burst {
    fn fourcc(&self) -> u32 {
        BURST
    }
    fn on_message(&mut self, msg: &[u8], out: &mut Vec<VcAction>) {
        let n = msg.first().copied().unwrap_or(0);
        for i in 0..n {
            out.push(VcAction::Reply(vec![i; 3000]));
        }
    }
}

const BURST: u32 = fwipc_vchiq::consts::make_fourcc(*b"brst");

/// Deferred VideoCore replies under back-pressure on the threaded `SimPair`, whose VideoCore
/// worker only polls (it never calls `VcServiceHost::flush`): a message quota of 2 on the
/// VideoCore side defers most of a 120-reply burst, and the core's `Event::TxSpace` (space came
/// back as the ARM consumed and recycled) carries the rest out, in order.
#[test]
fn deferred_videocore_replies_flow_without_flush_under_backpressure() {
    let pair = SimPair::new().unwrap();
    let make: fn() -> Burst = || Burst;
    let host = Arc::new(VcServiceHost::new(make));
    pair.master()
        .add_service_arc(ServiceParams::new(BURST).quotas(0, 2), host.clone())
        .unwrap();
    pair.connect().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let tx = std::sync::Mutex::new(tx);
    let h = pair
        .slave()
        .open_service_wait(
            ServiceParams::new(BURST),
            Arc::new(move |_: &ServiceCtx<'_>, ev: Event<'_>| {
                if let Event::Message(m) = ev {
                    let _ = tx.lock().unwrap().send(m.payload().to_vec());
                }
                Deliver::Done
            }),
            Duration::from_secs(5),
        )
        .unwrap();
    for round in 0..2u8 {
        pair.slave().queue_message(h, &[120]).unwrap();
        for i in 0..120u8 {
            let m = rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("round {round}: reply {i} stalled in the outbox"));
            assert_eq!(m, vec![i; 3000], "round {round}: reply {i}");
        }
    }
    assert!(host.deferred() > 0, "the burst really was deferred");
    assert_eq!(host.pending_actions(), 0);
    assert_eq!(pair.master().stats().protocol_errors, 0);
}
