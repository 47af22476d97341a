//! The VCHI clients with the simulated VideoCore in its own thread: the master polls and
//! answers concurrently with the client threads polling the slave, so every handshake (events,
//! tx_pos publication, recycling, bulk DMA) runs across real threads.

use std::time::Duration;

use fwipc_vchiq::sim::vchi::echo_server::EchoServer;
use fwipc_vchiq::sim::vchi::func_server::Fun2Server;
use fwipc_vchiq::sim::vchi::pair::PolledPair;
use fwipc_vchiq::sim::vchi::SmemServer;
use fwipc_vchiq::vchi::fourcc;
use fwipc_vchiq::vchi::smem_wire::SmemAllocType;
use fwipc_vchiq::vchi::test_client::{bulk_echo, ctrl, fun2_subtest, fun2_subtests, ping};
use fwipc_vchiq::vchi::Smem;
use fwipc_vchiq::{Config, ServiceParams};

const T: Duration = Duration::from_secs(20);

fn pair() -> PolledPair {
    let mut p = PolledPair::new(Config::default()).unwrap();
    let echo: fn() -> EchoServer = EchoServer::new;
    let params = ServiceParams::new(fourcc::ECHO).version(3, 1);
    let (host, _) = p.add_vc_service(params, echo).unwrap();
    for _ in 1..4 {
        p.add_listener(params, &host).unwrap();
    }
    let smem: fn() -> SmemServer = || SmemServer::new(0x2000_0000, 1 << 20);
    p.add_vc_service(ServiceParams::new(fourcc::SMEM).version(1, 0), smem)
        .unwrap();
    let fun2: fn() -> Fun2Server = Fun2Server::new;
    p.add_vc_service(ServiceParams::new(fourcc::FUN2).version(3, 2), fun2)
        .unwrap();
    p.connect().unwrap();
    p
}

#[test]
fn echo_bulk_and_smem_with_a_videocore_thread() {
    let p = pair();
    p.with_videocore_thread(|p| {
        let mut l = p
            .open_threaded(ServiceParams::new(fourcc::ECHO).version(3, 3), 4, T)
            .unwrap();
        ping(&mut l, 10, 10, 20).unwrap();
        ctrl(&mut l, 4088, 100).unwrap();
        bulk_echo(&mut l, 70_000, 4).unwrap();
        l.close().unwrap();
        let link = p
            .open_threaded(ServiceParams::new(fourcc::SMEM).version(1, 1), 4, T)
            .unwrap();
        let mut smem = Smem::connect(link, 4).unwrap();
        for i in 1..50u32 {
            let h = smem.alloc(i * 100, SmemAllocType::Cached, 0, b"t").unwrap();
            smem.free(h).unwrap();
        }
        smem.into_link().close().unwrap();
    });
    assert_eq!(p.slave().stats().protocol_errors, 0);
    assert_eq!(p.master().stats().protocol_errors, 0);
}

#[test]
fn concurrent_clients_on_one_slave() {
    let p = pair();
    p.with_videocore_thread(|p| {
        std::thread::scope(|s| {
            for t in 0..3 {
                s.spawn(move || {
                    let mut l = p
                        .open_threaded(ServiceParams::new(fourcc::ECHO).version(3, 3), 4, T)
                        .unwrap();
                    ctrl(&mut l, 100 + t * 1000, 60).unwrap();
                    bulk_echo(&mut l, 3000 + t, 3).unwrap();
                    l.close().unwrap();
                });
            }
            s.spawn(|| {
                let mut l = p
                    .open_threaded(ServiceParams::new(fourcc::FUN2).version(3, 3), 4, T)
                    .unwrap();
                for sub in fun2_subtests().step_by(41) {
                    fun2_subtest(&mut l, sub).unwrap();
                }
                l.close().unwrap();
            });
        });
    });
    assert_eq!(p.slave().stats().protocol_errors, 0);
    assert_eq!(p.master().stats().protocol_errors, 0);
}

/// `vchiq_test -p`-style timing (run with `--ignored --nocapture`): µs per SYNC round trip and
/// per bulk echo, VideoCore in its own thread. A measurement, not a check; numbers depend on the
/// machine (the figures in the crate README were taken on 2 cores).
#[test]
#[ignore]
fn ping_timing_report() {
    use fwipc_vchiq::vchi::test_client::ping;
    use std::time::Instant;
    let p = pair();
    p.with_videocore_thread(|p| {
        let mut l = p
            .open_threaded(ServiceParams::new(fourcc::ECHO).version(3, 3), 8, T)
            .unwrap();
        ping(&mut l, 0, 0, 200).unwrap(); // warm-up
        for (a, o) in [(0, 0), (1, 0), (10, 0), (0, 10), (10, 10)] {
            let iters = 2000;
            let t = Instant::now();
            ping(&mut l, a, o, iters).unwrap();
            let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
            eprintln!("ping async={a:<3} oneway={o:<3}: {us:8.2} us/iter");
        }
        for size in [64usize, 1024, 4088] {
            let iters = 2000;
            let t = Instant::now();
            ctrl(&mut l, size, iters).unwrap();
            let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
            eprintln!("ctrl echo {size:>5} B   : {us:8.2} us/iter");
        }
        for bs in [4096usize, 65536, 1 << 20] {
            let iters = 50;
            let t = Instant::now();
            bulk_echo(&mut l, bs, iters).unwrap();
            let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
            let mbs = (2 * bs) as f64 / us;
            eprintln!("bulk echo {bs:>8} B: {us:8.2} us/iter ({mbs:.0} MB/s both ways)");
        }
    });
}
