//! VCHIQ-specific datagram behaviour beyond the conformance scenarios: one-way frames go to the
//! bound endpoint instead of the notification queue, the receive pool bounds what the core takes
//! before the remote meets `Retry`, and shutdown gives every held message back.

use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{Bind, Completion, Error, RxAction, Transport};
use fwipc_vchiq::sim::VchiqFixture;
use fwipc_vchiq::transport::DGRAM_RX_BUFS;

fn until(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn one_way_frames_are_datagrams_only_while_bound() {
    let fx = VchiqFixture::setup(Completion::Interrupt);
    let (d, peer) = fx.datagram().unwrap();
    let t = fx.transport();
    let ep = d.bind(Bind::Any).unwrap();
    assert_eq!(
        d.bind(Bind::Any).err(),
        Some(Error::InvalidArgument),
        "one service, one endpoint"
    );
    assert_eq!(d.bind(Bind::Name(b"echo")).err(), Some(Error::NotSupported));
    peer.send(ep.addr(), b"dgram").unwrap();
    let mut got = Vec::new();
    assert!(until(|| {
        d.poll_rx(&ep, usize::MAX, &mut |rx| {
            got.push(rx.data.to_vec());
            RxAction::Release
        })
        .unwrap();
        !got.is_empty()
    }));
    assert_eq!(got, vec![b"dgram".to_vec()]);
    let mut out = [0u8; 64];
    assert_eq!(t.fetch_notification(&mut out).unwrap(), None);
    d.unbind(ep).unwrap();
    assert!(fx.remote().notify(b"note"));
    assert!(until(|| t.fetch_notification(&mut out).unwrap().is_some()));
    assert_eq!(&out[..4], b"note");
}

#[test]
fn the_receive_pool_bounds_what_the_core_takes() {
    let fx = VchiqFixture::setup(Completion::Interrupt);
    let (d, peer) = fx.datagram().unwrap();
    let ep = d.bind(Bind::Any).unwrap();
    let mut held = Vec::new();
    let mut sent = 0u32;
    loop {
        match peer.send(ep.addr(), &sent.to_le_bytes()) {
            Ok(()) => sent += 1,
            Err(Error::Retry) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 100_000, "no back-pressure");
    }
    assert!(until(|| {
        d.poll_rx(&ep, usize::MAX, &mut |rx| {
            held.push(rx.hold);
            RxAction::Hold
        })
        .unwrap();
        held.len() >= DGRAM_RX_BUFS
    }));
    std::thread::sleep(Duration::from_millis(20));
    d.poll_rx(&ep, usize::MAX, &mut |_| {
        panic!("delivered past the receive pool")
    })
    .unwrap();
    assert_eq!(held.len(), DGRAM_RX_BUFS);
    assert!(
        sent as usize > DGRAM_RX_BUFS,
        "the remote's slots queue more"
    );
    assert!(d.datagram_stats().rx_backpressure > 0);
    fx.transport().shutdown().unwrap();
    assert_eq!(d.datagram_stats().held, 0);
    for h in held {
        assert_eq!(d.release_rx(h), Err(Error::InvalidArgument));
    }
    assert_eq!(d.send_to(&ep, peer.addr(), b"x"), Err(Error::Shutdown));
}
