//! rpmsg-specific datagram behaviour beyond the conformance scenarios: how far back-pressure
//! reaches (receive buffers, then the ring), binding rules, and shutdown with buffers held.

use fwipc_rpmsg_virtio::addr::NS_ADDR;
use fwipc_rpmsg_virtio::frame::{parse_frame, write_frame};
use fwipc_rpmsg_virtio::sim::{DeviceEnd, DriverEnd, Queues, RpmsgFixture, PEER_ADDR, QUEUE_BUFS};
use fwipc_rpmsg_virtio::{Link, RpmsgConfig, DGRAM_RX_BUFS};
use fwipc_transport_api::fixture::{DatagramPeer, Fixture};
use fwipc_transport_api::{Bind, Completion, Datagram, Error, RxAction, StdClock, Transport};

fn fixture() -> RpmsgFixture {
    RpmsgFixture::setup(Completion::Interrupt)
}

#[test]
fn held_buffers_stall_the_ring_then_the_peer() {
    let fx = fixture();
    let (d, peer) = fx.datagram().unwrap();
    let ep = d.bind(Bind::Any).unwrap();
    let mut sent = 0usize;
    while peer.send(ep.addr(), &(sent as u32).to_le_bytes()).is_ok() {
        sent += 1;
        assert!(sent <= DGRAM_RX_BUFS + QUEUE_BUFS, "no back-pressure");
    }
    // Every receive buffer filled, then the whole ring: nothing dropped.
    assert_eq!(sent, DGRAM_RX_BUFS + QUEUE_BUFS);
    let mut held = Vec::new();
    d.poll_rx(&ep, usize::MAX, &mut |rx| {
        held.push(rx.hold);
        RxAction::Hold
    })
    .unwrap();
    assert_eq!(held.len(), DGRAM_RX_BUFS);
    let s = d.datagram_stats();
    assert_eq!((s.held, s.dropped), (DGRAM_RX_BUFS as u64, 0));
    assert!(s.rx_backpressure > 0);
    for h in held {
        d.release_rx(h).unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..100 {
        d.poll_rx(&ep, usize::MAX, &mut |rx| {
            got.push(u32::from_le_bytes(rx.data.try_into().unwrap()));
            RxAction::Release
        })
        .unwrap();
        if got.len() == sent - DGRAM_RX_BUFS {
            break;
        }
    }
    let want: Vec<u32> = (DGRAM_RX_BUFS as u32..sent as u32).collect();
    assert_eq!(got, want);
}

#[test]
fn binding_rules() {
    let fx = fixture();
    let (d, _) = fx.datagram().unwrap();
    let a = d.bind(Bind::Addr(0x500)).unwrap();
    assert_eq!(a.addr(), 0x500);
    assert_eq!(
        d.bind(Bind::Addr(0x500)).err(),
        Some(Error::InvalidArgument)
    );
    assert_eq!(
        d.bind(Bind::Addr(NS_ADDR)).err(),
        Some(Error::InvalidArgument)
    );
    assert_eq!(d.bind(Bind::Name(b"")).err(), Some(Error::InvalidArgument));
    assert_eq!(
        d.bind(Bind::Name(&[b'x'; 32])).err(),
        Some(Error::InvalidArgument)
    );
    // A message to an address nobody bound is counted, not delivered.
    let before = fx.transport().stats().unknown_replies;
    fx.sim().send(0x777, b"nobody").unwrap();
    let mut n = 0;
    d.poll_rx(&a, usize::MAX, &mut |_| {
        n += 1;
        RxAction::Release
    })
    .unwrap();
    assert_eq!(n, 0);
    assert_eq!(fx.transport().stats().unknown_replies, before + 1);
    let stale = fwipc_transport_api::Endpoint::new(a.index(), a.generation(), a.addr());
    d.unbind(a).unwrap();
    assert_eq!(
        d.send_to(&stale, PEER_ADDR, b"x"),
        Err(Error::InvalidArgument)
    );
    assert_eq!(d.unbind(stale), Err(Error::InvalidArgument));
}

#[test]
fn shutdown_releases_held_buffers() {
    let fx = fixture();
    let (d, peer) = fx.datagram().unwrap();
    let ep = d.bind(Bind::Any).unwrap();
    for i in 0..4u32 {
        peer.send(ep.addr(), &i.to_le_bytes()).unwrap();
    }
    let mut held = Vec::new();
    d.poll_rx(&ep, usize::MAX, &mut |rx| {
        held.push(rx.hold);
        RxAction::Hold
    })
    .unwrap();
    assert_eq!(held.len(), 4);
    fx.transport().shutdown().unwrap();
    assert_eq!(d.datagram_stats().held, 0);
    for h in held {
        assert_eq!(d.release_rx(h), Err(Error::InvalidArgument));
    }
    assert_eq!(d.send_to(&ep, PEER_ADDR, b"late"), Err(Error::Shutdown));
}

/// A transport on the in-memory queues without a remote thread, and the device's end.
fn bare() -> (
    fwipc_rpmsg_virtio::RpmsgTransport<DriverEnd, StdClock>,
    DeviceEnd,
) {
    let q = Queues::new();
    let cfg = RpmsgConfig {
        name_service: false,
        interrupts: false,
        ..RpmsgConfig::default()
    };
    let t = fwipc_rpmsg_virtio::RpmsgTransport::new(DriverEnd(q.clone()), StdClock::new(), cfg)
        .unwrap();
    (t, DeviceEnd(q))
}

/// One datagram each way through `d`, copied and zero-copy.
fn each_way<D: Datagram>(d: D, dev: &DeviceEnd) {
    let ep = d.bind(Bind::Any).unwrap();
    let mut f = [0u8; 512];
    let n = write_frame(&mut f, PEER_ADDR, ep.addr(), b"in").unwrap();
    dev.send(&f[..n]).unwrap();
    let mut out = [0u8; 512];
    let got = d.recv(&ep, &mut out).unwrap().unwrap();
    assert_eq!((got.src, &out[..got.len]), (PEER_ADDR, &b"in"[..]));
    d.send_to(&ep, PEER_ADDR, b"copied").unwrap();
    let mut loan = d.loan(&ep).unwrap();
    loan.write(0, b"loaned").unwrap();
    loan.set_len(6).unwrap();
    d.send_loan(&ep, PEER_ADDR, loan).unwrap();
    let mut sent = Vec::new();
    dev.receive(usize::MAX, &mut |f| {
        let h = parse_frame(f).unwrap();
        sent.push(h.payload(f).to_vec());
    });
    assert_eq!(sent, [b"copied".to_vec(), b"loaned".to_vec()]);
    assert_eq!(d.datagram_stats().sent, 2);
    d.unbind(ep).unwrap();
}

#[test]
fn shared_handles_forward_the_datagram_side() {
    let (t, dev) = bare();
    each_way(&t, &dev);
    let (t, dev) = bare();
    each_way(std::sync::Arc::new(t), &dev);
    let (t, dev) = bare();
    each_way(Box::new(t), &dev);
}
