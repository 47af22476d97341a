//! P2A messages as receive-only datagram endpoints (docs/datagram.md): binding rules, the split
//! between endpoints and `fetch_notification`, per-protocol order, and hostile eventq input.

use fwipc_scmi_virtio::sim::{ScmiFixture, SimDeviceConfig, PEER_NOTIFY_MESSAGE};
use fwipc_scmi_virtio::virtio::DGRAM_ENDPOINTS;
use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{Bind, Completion, Datagram, Endpoint, Error, RxAction, Transport};

mod common;
use common::eventually;

/// Everything queued for `ep`, as (header word, payload).
fn drain(fx: &ScmiFixture, ep: &Endpoint, out: &mut Vec<(u32, Vec<u8>)>) {
    fx.transport()
        .poll_rx(ep, usize::MAX, &mut |rx| {
            out.push((rx.src, rx.data.to_vec()));
            RxAction::Release
        })
        .expect("poll_rx");
}

#[test]
fn caps_and_binding_rules() {
    let fx = ScmiFixture::setup(Completion::Polled);
    let t = fx.transport();
    let caps = t.caps();
    assert!(caps.rx_hold && caps.notifications);
    assert!(!caps.one_way && !caps.zero_copy && !caps.endpoints && !caps.name_service);
    assert_eq!(t.bind(Bind::Addr(0x0f)).err(), Some(Error::InvalidArgument));
    assert_eq!(
        t.bind(Bind::Addr(0x100)).err(),
        Some(Error::InvalidArgument)
    );
    assert_eq!(
        t.bind(Bind::Name(b"clock")).err(),
        Some(Error::NotSupported)
    );
    let clock = t.bind(Bind::Addr(0x14)).expect("bind the clock protocol");
    assert_eq!(t.bind(Bind::Addr(0x14)).err(), Some(Error::InvalidArgument));
    let any = t.bind(Bind::Any).expect("bind any");
    assert_eq!(
        any.addr(),
        0x80,
        "Any takes the lowest free vendor protocol"
    );
    assert_eq!(t.send_to(&any, 0, b"x"), Err(Error::NotSupported));
    let mut rest = Vec::new();
    for _ in 2..DGRAM_ENDPOINTS {
        rest.push(t.bind(Bind::Any).expect("bind"));
    }
    assert_eq!(t.bind(Bind::Any).err(), Some(Error::Busy), "table full");
    for ep in rest {
        t.unbind(ep).unwrap();
    }
    let stale = Endpoint::new(clock.index(), clock.generation(), clock.addr());
    t.unbind(clock).unwrap();
    assert_eq!(
        t.poll_rx(&stale, 1, &mut |_| RxAction::Release),
        Err(Error::InvalidArgument)
    );
    t.unbind(any).unwrap();
}

#[test]
fn without_p2a_there_is_no_datagram_side() {
    let cfg = SimDeviceConfig {
        offer_p2a: false,
        ..SimDeviceConfig::default()
    };
    let fx = ScmiFixture::with_config(Completion::Polled, ScmiFixture::DEFAULT_CMDQ, cfg);
    assert!(!fx.transport().caps().rx_hold);
    assert_eq!(
        fx.transport().bind(Bind::Any).err(),
        Some(Error::NotSupported)
    );
}

/// Interleaved notifications of a bound and an unbound protocol: the bound one's reach its
/// endpoint in order (with their headers as source), the other's stay for
/// `fetch_notification`, in order too; unbinding hands the protocol back to `fetch_notification`.
#[test]
fn bound_protocols_go_to_endpoints_the_rest_to_fetch_notification() {
    for mode in [Completion::Polled, Completion::Interrupt] {
        let fx = ScmiFixture::setup(mode);
        let t = fx.transport();
        let ep = t.bind(Bind::Addr(0x90)).unwrap();
        for i in 0..20u32 {
            let dev = fx.device();
            let proto = if i % 2 == 0 { 0x90 } else { 0x91 };
            assert!(eventually(|| dev
                .emit_notification(proto, i as u8, &i.to_le_bytes())
                .is_ok()));
        }
        // `fetch_notification` first: it must leave the bound protocol's messages alone.
        let mut fetched = Vec::new();
        let mut out = [0u8; 128];
        assert!(eventually(|| {
            while let Some(n) = t.fetch_notification(&mut out).unwrap() {
                fetched.push((n.source, out[..n.len].to_vec()));
            }
            fetched.len() >= 10
        }));
        let want: Vec<(u32, Vec<u8>)> = (1..20u32)
            .step_by(2)
            .map(|i| ((0x91 << 10) | (3 << 8) | i, i.to_le_bytes().to_vec()))
            .collect();
        assert_eq!(fetched, want, "{mode:?}: fetch_notification keeps the rest");
        let mut got = Vec::new();
        assert!(eventually(|| {
            drain(&fx, &ep, &mut got);
            got.len() >= 10
        }));
        let want: Vec<(u32, Vec<u8>)> = (0..20u32)
            .step_by(2)
            .map(|i| ((0x90 << 10) | (3 << 8) | i, i.to_le_bytes().to_vec()))
            .collect();
        assert_eq!(got, want, "{mode:?}: endpoint order and sources");
        assert_eq!(t.datagram_stats().received, 10);

        t.unbind(ep).unwrap();
        fx.device()
            .emit_notification(0x90, PEER_NOTIFY_MESSAGE, b"free")
            .unwrap();
        let mut n = None;
        assert!(eventually(|| {
            n = t.fetch_notification(&mut out).unwrap();
            n.is_some()
        }));
        assert_eq!(&out[..n.unwrap().len], b"free");
    }
}

/// Hostile eventq input for a bound protocol: a payload longer than a receive buffer is dropped
/// and counted, malformed headers are counted as protocol errors, and the endpoint keeps working.
#[test]
fn hostile_eventq_input_for_a_bound_protocol_is_counted_never_delivered() {
    let fx = ScmiFixture::setup(Completion::Polled);
    let t = fx.transport();
    let ep = t.bind(Bind::Addr(0x90)).unwrap();
    let max = t.caps().max_msg_size;
    let hdr = ((0x90u32 << 10) | (3 << 8)).to_le_bytes();
    // Header + max + 4 bytes: fits the eventq buffer (8 + max), not a receive buffer (max).
    let mut long = hdr.to_vec();
    long.resize(4 + max + 4, 0xee);
    // (`eventually`: the device thread collects the posted eventq buffers when it runs.)
    let dev = fx.device();
    assert!(eventually(|| dev.inject_event(&long, long.len() as u32)));
    // A command-type header and a used length beyond the buffer.
    assert!(eventually(
        || dev.inject_event(&(0x90u32 << 10).to_le_bytes(), 4)
    ));
    assert!(eventually(|| dev.inject_event(&hdr, 100_000)));
    let mut got = Vec::new();
    assert!(eventually(|| {
        drain(&fx, &ep, &mut got);
        t.datagram_stats().dropped == 1 && t.stats().protocol_errors >= 2
    }));
    assert!(got.is_empty(), "nothing hostile delivered: {got:?}");
    fx.device().emit_notification(0x90, 7, b"ok").unwrap();
    assert!(eventually(|| {
        drain(&fx, &ep, &mut got);
        !got.is_empty()
    }));
    assert_eq!(got, [((0x90 << 10) | (3 << 8) | 7, b"ok".to_vec())]);
    let mut out = [0u8; 256];
    assert_eq!(t.fetch_notification(&mut out).unwrap(), None);
}
