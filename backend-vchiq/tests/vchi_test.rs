//! `vchiq_test` through the real VCHIQ core (docs/protocols/vchiq.md §8): the VideoCore's 'echo',
//! 'func' and 'fun2' servers run on the master instance; the client routines run on the slave.
//! Messages go through the slots, bulks through pagelists, fragments and the master's DMA.

use std::sync::Arc;

use fwipc_vchiq::sim::vchi::echo_server::EchoServer;
use fwipc_vchiq::sim::vchi::func_server::{
    Fun2Server, FuncEvent, FuncServer, FUNC_EXPECTED_EVENTS,
};
use fwipc_vchiq::sim::vchi::pair::PolledPair;
use fwipc_vchiq::vchi::fourcc;
use fwipc_vchiq::vchi::link::ServiceLink;
use fwipc_vchiq::vchi::service_host::VcServiceHost;
use fwipc_vchiq::vchi::test_client::{
    bulk_echo, bulk_echo_pipelined, ctrl, fun2_subtest, fun2_subtests, func_script, ping,
    ping_suite, FUNC_CLIENT_EXPECTED,
};
use fwipc_vchiq::vchi::test_wire::ctrl_message;
use fwipc_vchiq::vchi::VchiError;
use fwipc_vchiq::{Config, ServiceParams, VchiqError};

type Host<S> = Arc<VcServiceHost<S, fn() -> S>>;

/// A pair with 8 'echo' listeners (as the VideoCore has), connected.
fn echo_pair() -> (PolledPair, Host<EchoServer>) {
    let mut p = PolledPair::new(Config::default()).unwrap();
    let params = ServiceParams::new(fourcc::ECHO).version(3, 1);
    let make: fn() -> EchoServer = EchoServer::new;
    let (host, _) = p.add_vc_service(params, make).unwrap();
    for _ in 1..8 {
        p.add_listener(params, &host).unwrap();
    }
    p.connect().unwrap();
    (p, host)
}

fn echo_client() -> ServiceParams {
    ServiceParams::new(fourcc::ECHO).version(3, 3)
}

#[test]
fn ping_round_trips() {
    let (p, _host) = echo_pair();
    let mut l = p.open(echo_client(), 8).unwrap();
    let x = ping(&mut l, 10, 10, 5).unwrap();
    assert_eq!((x.sent, x.received), (105, 55));
    ping_suite(&mut l, 20).unwrap();
    assert_eq!(p.slave().stats().protocol_errors, 0);
    l.close().unwrap();
}

#[test]
fn ctrl_echo_of_every_size_class() {
    let (p, host) = echo_pair();
    let mut l = p.open(echo_client(), 4).unwrap();
    for size in [4, 5, 64, 1000, 4087, 4088] {
        ctrl(&mut l, size, 20).unwrap();
    }
    // Enough traffic to wrap the slot queue several times (31 data slots per side).
    ctrl(&mut l, 4088, 200).unwrap();
    assert!(p.slave().stats().slots_recycled > 64);
    let mut msgs = 0;
    host.for_each(|_, s| msgs += s.stats().messages);
    assert_eq!(msgs, 6 * 20 + 200);
    // A short or unknown message is answered with an error string, and the link goes on.
    l.send(&[1, 2]).unwrap();
    let mut b = [0u8; 64];
    let n = l.recv(&mut b).unwrap();
    assert!(b[..n].starts_with(b"vchiq_test"));
    ctrl(&mut l, 8, 1).unwrap();
    l.close().unwrap();
}

#[test]
fn eight_listeners_then_no_more() {
    let (p, _host) = echo_pair();
    let links: Vec<_> = (0..8).map(|_| p.open(echo_client(), 2).unwrap()).collect();
    let ninth = p.open(echo_client(), 2).map(|_| ());
    assert_eq!(ninth, Err(VchiError::Core(VchiqError::Refused)));
    for l in links {
        l.close().unwrap();
    }
    // Auto-close listeners are back: another client gets in.
    let mut l = p.open(echo_client(), 2).unwrap();
    ctrl(&mut l, 16, 3).unwrap();
}

#[test]
fn bulk_echo_verified() {
    let (p, host) = echo_pair();
    let mut l = p.open(echo_client(), 4).unwrap();
    for (bs, iters) in [(64, 4), (1000, 3), (4096, 3), (65536, 2), (4093, 2)] {
        let x = bulk_echo(&mut l, bs, iters).unwrap();
        assert_eq!(x.bulk_rx_bytes, (bs * iters as usize) as u64);
    }
    let mut blocks = 0;
    host.for_each(|_, s| blocks += s.stats().bulk_tx);
    assert_eq!(blocks, 4 + 3 + 3 + 2 + 2);
    assert_eq!(p.master().stats().protocol_errors, 0);
    l.close().unwrap();
}

fn func_pair() -> (PolledPair, Host<FuncServer>, fwipc_vchiq::ServiceHandle) {
    let mut p = PolledPair::new(Config::default()).unwrap();
    let make: fn() -> FuncServer = FuncServer::new;
    let params = ServiceParams::new(fourcc::FUNC)
        .version(fourcc::FUNC_VERSION, fourcc::FUNC_VERSION_MIN)
        .auto_close(true);
    let (host, h) = p.add_vc_service(params, make).unwrap();
    p.connect().unwrap();
    (p, host, h)
}

#[test]
fn func_part_b_version_negotiation_and_listeners() {
    let (p, host, server) = func_pair();
    let func = |v, m| ServiceParams::new(fourcc::FUNC).version(v, m);
    // 0/0, 1/1 and 4/4 are refused by the version rule; 3/3 opens.
    for (v, m) in [(0, 0), (1, 1), (4, 4)] {
        assert_eq!(
            p.open(func(v, m), 2).map(|_| ()),
            Err(VchiError::Core(VchiqError::Refused)),
            "{v}/{m}"
        );
    }
    let l1 = p.open(func(3, 3), 2).unwrap();
    assert_ne!(
        p.master().client_id(server).unwrap(),
        0,
        "client_id != 0 while open"
    );
    // The server adds a second listener without AUTOCLOSE.
    let second = p
        .add_listener(
            ServiceParams::new(fourcc::FUNC)
                .version(fourcc::FUNC_VERSION, fourcc::FUNC_VERSION_MIN)
                .auto_close(false),
            &host,
        )
        .unwrap();
    // 'none' does not exist; the second open succeeds, a third finds no listener.
    assert!(p
        .open(ServiceParams::new(fourcc::make_fourcc(b"none")), 2)
        .is_err());
    let l2 = p.open(func(3, 3), 2).unwrap();
    assert!(p.open(func(3, 3), 2).is_err(), "no more listeners");
    l2.close().unwrap();
    p.settle();
    // Without AUTOCLOSE the listener waits in CLOSEWAIT until the server closes it explicitly.
    assert!(
        p.open(func(3, 3), 2).is_err(),
        "CLOSEWAIT listener must not accept"
    );
    p.master().close_service(second).unwrap();
    let l2 = p.open(func(3, 3), 2).unwrap();
    l2.close().unwrap();
    l1.close().unwrap();
    p.settle();
    assert_eq!(
        p.master().client_id(server).unwrap(),
        0,
        "client_id == 0 after close"
    );
}

#[test]
fn func_part_b_message_and_bulk_script() {
    let (p, host, _) = func_pair();
    let mut l = p
        .open(ServiceParams::new(fourcc::FUNC).version(3, 3), 4)
        .unwrap();
    let ev = func_script(&mut l).unwrap();
    assert_eq!(ev, FUNC_CLIENT_EXPECTED);
    // Step 6: closing aborts the server's last queued receive, then the service closes.
    l.close().unwrap();
    p.settle();
    let retired = host.take_retired();
    assert_eq!(retired.len(), 1);
    let s = &retired[0];
    assert_eq!(s.script_events(), FUNC_EXPECTED_EVENTS);
    assert!(matches!(s.events().first(), Some(FuncEvent::Opened(id)) if *id != 0));
    assert_eq!(s.events().last(), Some(&FuncEvent::Closed));
    assert_eq!(s.zero_client_ids, 0);
}

#[test]
fn fun2_alignment_table_over_fragments() {
    let mut p = PolledPair::new(Config::default()).unwrap();
    let make: fn() -> Fun2Server = Fun2Server::new;
    let (host, _) = p
        .add_vc_service(ServiceParams::new(fourcc::FUN2).version(3, 2), make)
        .unwrap();
    p.connect().unwrap();
    let mut l = p
        .open(ServiceParams::new(fourcc::FUN2).version(3, 3), 4)
        .unwrap();
    let mut n = 0;
    // One full iteration of the table (vchiq_test -f 1): 5184 sub-tests.
    for sub in fun2_subtests() {
        fun2_subtest(&mut l, sub).unwrap_or_else(|e| panic!("sub-test {}: {e}", sub.index.get()));
        n += 1;
    }
    assert_eq!(n, 5184);
    let mut failures = 0;
    host.for_each(|_, s| failures += s.stats().failures);
    assert_eq!(failures, 0);
    assert_eq!(p.master().stats().unaligned_reads, 0);
    l.close().unwrap();
}

#[test]
fn func_part_a_api_checks() {
    // Duplicate 'func' servers with the same handler succeed, with a different one fail; a double
    // remove fails; the message size limit is 4088.
    let mut p = PolledPair::new(Config::default()).unwrap();
    let make: fn() -> FuncServer = FuncServer::new;
    let params = ServiceParams::new(fourcc::FUNC).version(3, 2);
    let (host, _) = p.add_vc_service(params, make).unwrap();
    let h2 = p.add_listener(params, &host).unwrap();
    let other: Host<FuncServer> = Arc::new(VcServiceHost::new(make));
    assert_eq!(
        p.master().add_service_arc(params, other).map(|_| ()),
        Err(VchiqError::Invalid)
    );
    p.master().remove_service(h2).unwrap();
    assert!(p.master().remove_service(h2).is_err(), "double remove");
    p.connect().unwrap();
    let mut l = p
        .open(ServiceParams::new(fourcc::FUNC).version(3, 3), 2)
        .unwrap();
    assert_eq!(
        l.send(&[0u8; 4089]),
        Err(VchiError::Core(VchiqError::TooLarge))
    );
    l.send(&[0u8; 4088]).unwrap();
    let mut b = vec![0u8; 4088];
    assert_eq!(l.recv(&mut b), Ok(4088));
}

#[test]
fn signal_test_blocking_bulk_given_up_then_aborted_by_close() {
    // vchiq_test -i: a blocking 16-byte transmit that nobody receives, then close. Our pump gives
    // up (the C API's interrupted wait); the close aborts the transfer, and the service is usable
    // again afterwards.
    let (p, _host) = echo_pair();
    let mut l = p.open(echo_client(), 2).unwrap();
    assert_eq!(
        fwipc_vchiq::vchi::link::BulkLink::bulk_transmit(&mut l, &[7u8; 16]),
        Err(VchiError::Transport(fwipc_transport_api::Error::Timeout))
    );
    let before = p.slave().stats().bulks_aborted;
    l.close().unwrap();
    p.settle();
    assert_eq!(p.slave().stats().bulks_aborted, before + 1);
    let mut l = p.open(echo_client(), 2).unwrap();
    bulk_echo(&mut l, 16, 2).unwrap();
}

#[test]
fn hostile_videocore_replies_over_the_core() {
    use fwipc_vchiq::sim::vchi::SmemServer;
    use fwipc_vchiq::vchi::link::{VcAction, VcService};
    use fwipc_vchiq::vchi::smem_wire::SmemAllocType;
    use fwipc_vchiq::vchi::Smem;
    // A VideoCore that garbles: before each real reply it sends junk, a truncated reply for the
    // right transaction, a forged RELEASED and a reply for another transaction.
    struct Garbler(SmemServer, u32);
    impl VcService for Garbler {
        fn fourcc(&self) -> u32 {
            fourcc::SMEM
        }
        fn on_message(&mut self, m: &[u8], out: &mut Vec<VcAction>) {
            self.1 += 1;
            out.push(VcAction::Reply(vec![0xEE; 3]));
            out.push(VcAction::Reply(0x8000_000Bu32.to_le_bytes().to_vec()));
            out.push(VcAction::Reply(vec![0x11; 64]));
            self.0.on_message(m, out);
        }
    }
    let mut p = PolledPair::new(Config::default()).unwrap();
    let make: fn() -> Garbler = || Garbler(SmemServer::new(0x1000_0000, 1 << 20), 0);
    p.add_vc_service(ServiceParams::new(fourcc::SMEM), make)
        .unwrap();
    p.connect().unwrap();
    let mut smem = Smem::connect(p.open(ServiceParams::new(fourcc::SMEM), 8).unwrap(), 2).unwrap();
    let h = smem.alloc(4096, SmemAllocType::Cached, 0, b"x").unwrap();
    smem.free(h).unwrap();
    let st = smem.stats();
    // 3 requests (CLIENT_VERSION, ALLOC, FREE): each saw 3 junk messages, all dropped and counted.
    assert_eq!(st.malformed + st.stray_replies, 9);
    assert!(st.malformed >= 6);
    assert_eq!(
        p.slave().stats().protocol_errors,
        0,
        "junk is VCHI-level, not VCHIQ-level"
    );
}

#[test]
fn back_pressure_both_ways_keeps_order() {
    // 20 full-slot ECHOs sent before reading any reply, into a 1-message client inbox: the
    // client refuses deliveries (the core holds them in their slots), the VideoCore's echo
    // service hits its slot quota (15) and defers its replies, and the client's own sends stall
    // on its quota until the VideoCore releases. Every reply still arrives, in order.
    let (p, host) = echo_pair();
    let mut l = p.open(echo_client(), 1).unwrap();
    let msgs: Vec<Vec<u8>> = (0..20).map(|i| ctrl_message(i, 4088)).collect();
    for m in &msgs {
        l.send(m).unwrap();
    }
    let mut b = vec![0u8; 4088];
    for m in &msgs {
        let n = l.recv(&mut b).unwrap();
        assert_eq!(&b[..n], &m[..]);
    }
    assert!(
        l.inbox().refused_total() > 0,
        "client-side back-pressure not exercised"
    );
    assert!(
        host.deferred() > 0,
        "VideoCore-side back-pressure not exercised"
    );
    assert_eq!(host.pending_actions(), 0);
    let x = ping(&mut l, 1000, 0, 2).unwrap();
    assert_eq!(x.received, 2002);
    l.close().unwrap();
}

#[test]
fn fun2_catches_a_cache_line_size_mismatch() {
    // Negative control (docs/protocols/vchiq.md §5 cause 1): the ARM uses 32-byte fragments, the
    // VideoCore 64-byte ones. Nothing in slot zero tells them apart; only the data at unaligned
    // edges goes wrong, and the fun2 checks must see it.
    let mut slave_cfg = Config::default();
    slave_cfg.cache_line_size = 32;
    let mut master_cfg = Config::default();
    master_cfg.cache_line_size = 64;
    let mut p = PolledPair::with_configs(slave_cfg, master_cfg).unwrap();
    let make: fn() -> Fun2Server = Fun2Server::new;
    p.add_vc_service(ServiceParams::new(fourcc::FUN2).version(3, 2), make)
        .unwrap();
    p.connect().unwrap();
    let mut l = p
        .open(ServiceParams::new(fourcc::FUN2).version(3, 3), 4)
        .unwrap();
    let mut failed = 0;
    let mut first_err = None;
    for sub in fun2_subtests().step_by(13) {
        if let Err(e) = fun2_subtest(&mut l, sub) {
            failed += 1;
            first_err.get_or_insert(e);
        }
    }
    assert!(failed > 0, "a fragment-size mismatch went unnoticed");
    assert!(
        matches!(
            first_err,
            Some(VchiError::Verify { .. } | VchiError::DmaOverrun { .. })
        ),
        "{first_err:?}"
    );
}

#[test]
fn dropping_a_link_closes_its_service() {
    let (p, _host) = echo_pair();
    // Occupy all 8 listeners, then drop the links: each drop starts the close handshake, and
    // once the core has run it the listeners accept again.
    let links: Vec<_> = (0..8).map(|_| p.open(echo_client(), 2).unwrap()).collect();
    assert!(p.open(echo_client(), 2).is_err());
    drop(links);
    p.settle();
    let again: Vec<_> = (0..8).map(|_| p.open(echo_client(), 2).unwrap()).collect();
    assert_eq!(again.len(), 8);
}

#[test]
fn bulk_echo_with_two_each_way_in_flight() {
    let (p, host) = echo_pair();
    let mut l = p.open(echo_client(), 4).unwrap();
    for (bs, iters) in [(4096, 10), (5001, 7), (100_000, 3)] {
        let x = bulk_echo_pipelined(&mut l, bs, iters).unwrap();
        assert_eq!(x.bulk_rx_bytes, (bs * iters as usize) as u64);
    }
    let mut blocks = 0;
    host.for_each(|_, s| blocks += s.stats().bulk_tx);
    assert_eq!(blocks, 20);
    l.close().unwrap();
}

#[test]
fn videocore_handler_can_close_the_service() {
    use fwipc_vchiq::vchi::link::{VcAction, VcService};
    // A VideoCore service that answers "bye" and then closes on the message "quit".
    #[derive(Default)]
    struct Quitter;
    impl VcService for Quitter {
        fn fourcc(&self) -> u32 {
            fourcc::make_fourcc(b"quit")
        }
        fn on_message(&mut self, m: &[u8], out: &mut Vec<VcAction>) {
            if m == b"quit" {
                out.push(VcAction::Reply(b"bye".to_vec()));
                out.push(VcAction::Close);
            } else {
                out.push(VcAction::Reply(m.to_vec()));
            }
        }
    }
    let mut p = PolledPair::new(Config::default()).unwrap();
    let make: fn() -> Quitter = Quitter::default;
    let params = ServiceParams::new(fourcc::make_fourcc(b"quit"));
    p.add_vc_service(params, make).unwrap();
    p.connect().unwrap();
    let mut l = p.open(params, 4).unwrap();
    l.send(b"hi").unwrap();
    let mut b = [0u8; 16];
    assert_eq!(l.recv(&mut b), Ok(2));
    l.send(b"quit").unwrap();
    assert_eq!(l.recv(&mut b), Ok(3));
    assert_eq!(&b[..3], b"bye");
    // Then the close arrives: the link reports it, and sends fail.
    assert_eq!(l.recv(&mut b), Err(VchiError::Core(VchiqError::Closed)));
    assert!(l.send(b"more").is_err());
    // The auto-close listener takes a new client.
    let mut l2 = p.open(params, 4).unwrap();
    l2.send(b"again").unwrap();
    assert_eq!(l2.recv(&mut b), Ok(5));
}

mod differential {
    //! The loopback is a model of the service semantics the VCHI layer relies on; here the real
    //! core (slots, pagelists, the master's pairing) must agree with it on random bulk pairings,
    //! including the size-mismatch rule (docs/protocols/vchiq.md §5: any mismatch aborts both
    //! sides).
    use super::*;
    use fwipc_vchiq::sim::vchi::loopback::Loopback;
    use fwipc_vchiq::vchi::link::{BulkLink, VcAction, VcService};
    use proptest::prelude::*;

    /// A VideoCore service whose bulks are driven by the client's messages:
    /// `[0, len]` = queue a receive of `len`; `[1, len, seed]` = transmit `len` bytes of `seed+i`.
    /// Every completion is reported back as a message `[kind, tag, ok, len]`.
    #[derive(Default)]
    struct Sink;

    fn word(m: &[u8], i: usize) -> u32 {
        m.get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    }

    fn report(kind: u32, tag: u32, ok: bool, len: usize) -> VcAction {
        let mut r = Vec::new();
        for w in [kind, tag, ok as u32, len as u32] {
            r.extend_from_slice(&w.to_le_bytes());
        }
        VcAction::Reply(r)
    }

    impl VcService for Sink {
        fn fourcc(&self) -> u32 {
            fourcc::make_fourcc(b"sink")
        }
        fn on_message(&mut self, m: &[u8], out: &mut Vec<VcAction>) {
            let len = word(m, 1) as usize;
            match word(m, 0) {
                0 => out.push(VcAction::BulkRx { len, tag: 7 }),
                _ => {
                    let seed = word(m, 2) as u8;
                    let data = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
                    out.push(VcAction::BulkTx { data, tag: 9 });
                }
            }
        }
        fn on_bulk_rx(&mut self, tag: u32, data: Option<&[u8]>, out: &mut Vec<VcAction>) {
            out.push(report(0, tag, data.is_some(), data.map_or(0, |d| d.len())));
        }
        fn on_bulk_tx(&mut self, tag: u32, ok: bool, out: &mut Vec<VcAction>) {
            out.push(report(1, tag, ok, 0));
        }
    }

    /// One exchange: the VideoCore queues `vc_len` in direction `vc_rx`, the client the other
    /// way with `cl_len`. Returns (client result, VideoCore's completion report).
    fn exchange<L: BulkLink>(
        l: &mut L,
        vc_rx: bool,
        vc_len: u32,
        cl_len: usize,
    ) -> (Result<Vec<u8>, VchiError>, Vec<u8>) {
        let mut m = Vec::new();
        for w in [u32::from(!vc_rx), vc_len, 5] {
            m.extend_from_slice(&w.to_le_bytes());
        }
        l.send(&m).unwrap();
        let r = if vc_rx {
            let data: Vec<u8> = (0..cl_len).map(|i| i as u8 ^ 0x5A).collect();
            l.bulk_transmit(&data).map(|()| data)
        } else {
            let mut buf = vec![0u8; cl_len];
            l.bulk_receive(&mut buf).map(|n| buf[..n].to_vec())
        };
        let mut rep = vec![0u8; 64];
        let n = l.recv(&mut rep).unwrap();
        rep.truncate(n);
        (r, rep)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn core_agrees_with_the_model(
            ops in proptest::collection::vec((any::<bool>(), 1u32..9000, 0i32..3), 1..12),
        ) {
            let mut p = PolledPair::new(Config::default()).unwrap();
            let make: fn() -> Sink = Sink::default;
            let params = ServiceParams::new(fourcc::make_fourcc(b"sink"));
            p.add_vc_service(params, make).unwrap();
            p.connect().unwrap();
            let mut core = p.open(params, 4).unwrap();
            let mut model = Loopback::open(Sink, 1);
            for (vc_rx, vc_len, delta) in ops {
                // delta 0: equal sizes; ±: a mismatch of a few bytes either way.
                let cl_len = match delta {
                    0 => vc_len as usize,
                    1 => vc_len as usize + 3,
                    _ => (vc_len as usize).saturating_sub(1).max(1),
                };
                let a = exchange(&mut model, vc_rx, vc_len, cl_len);
                let b = exchange(&mut core, vc_rx, vc_len, cl_len);
                prop_assert_eq!(&a, &b, "vc_rx={} vc_len={} cl_len={}", vc_rx, vc_len, cl_len);
                prop_assert_eq!(a.0.is_ok(), cl_len == vc_len as usize);
            }
        }
    }
}

#[test]
fn client_message_quota_of_one_with_full_slot_messages() {
    // vchiq_test -m 1. The message quota is returned only when the receiver recycles the slot
    // holding the message (docs/protocols/vchiq.md §4; Linux does the same), so with quota 1 a
    // message must end its slot for the next one to go: 4088-byte messages do. (Small messages
    // under quota 1 would stall for good in a quiet system; the default quota, 15 x 256, is a whole
    // number of slots' worth of minimal messages for that reason.)
    let (p, _host) = echo_pair();
    let mut l = p.open(echo_client().quotas(0, 1), 4).unwrap();
    let before = p.slave().stats().retries;
    let msgs: Vec<Vec<u8>> = (0..4).map(|i| ctrl_message(i, 4088)).collect();
    for m in &msgs {
        l.send(m).unwrap();
    }
    let mut b = vec![0u8; 4088];
    for m in &msgs {
        let n = l.recv(&mut b).unwrap();
        assert_eq!(&b[..n], &m[..]);
    }
    assert!(
        p.slave().stats().retries > before,
        "the quota never pushed back"
    );
    ctrl(&mut l, 4088, 20).unwrap();
}
