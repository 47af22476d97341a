//! VCHIQ-specific datagram behaviour beyond the conformance scenarios: one-way frames go to the
//! bound endpoint instead of the notification queue, the receive pool bounds what the core takes
//! before the remote meets `Retry`, and shutdown gives every held message back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{Bind, Completion, Error, ManualClock, RxAction, Transport};
use fwipc_vchiq::sim::VchiqFixture;
use fwipc_vchiq::transport::{DGRAM_RX_BUFS, SLOT_LOAN_LIFETIME};

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

/// A zero-copy loan is space in our own slot that nothing may pass: while it is out every other
/// send of the instance is refused with `Retry` (nothing reaches the remote), the loaned message
/// arrives first once sent, and the refused sends go through after it.
/// The transport's side reads a clock only the test moves: a loan's lifetime passes when the test
/// says, however slowly the run goes (an interpreter, a loaded machine).
fn fixture_on_manual_clock() -> (VchiqFixture, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let fx = VchiqFixture::try_setup_with_clock(Completion::Interrupt, Box::new(clock.clone()))
        .expect("vchiq fixture setup");
    (fx, clock)
}

#[test]
fn a_slot_loan_holds_back_every_other_send_until_it_is_sent() {
    let (fx, clock) = fixture_on_manual_clock();
    let (d, peer) = fx.datagram().unwrap();
    let ep = d.bind(Bind::Any).unwrap();
    let mut loan = d.loan(&ep).unwrap();
    assert!(loan.is_shared(), "the loan is slot memory");
    assert_eq!(d.loan(&ep).err(), Some(Error::Retry), "one loan at a time");
    assert_eq!(d.send_to(&ep, ep.addr(), b"second"), Err(Error::Retry));
    // Short of its lifetime the loan still holds every other send back.
    clock.advance(SLOT_LOAN_LIFETIME - Duration::from_millis(1));
    assert_eq!(d.send_to(&ep, ep.addr(), b"second"), Err(Error::Retry));
    loan.write(0, b"first").unwrap();
    loan.set_len(5).unwrap();
    d.send_loan(&ep, ep.addr(), loan)
        .map_err(|(e, _)| e)
        .unwrap();
    d.send_to(&ep, ep.addr(), b"second").unwrap();
    let mut got = Vec::new();
    assert!(until(|| {
        got.extend(peer.take_received());
        got.len() >= 2
    }));
    let got: Vec<Vec<u8>> = got.into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, [b"first".to_vec(), b"second".to_vec()]);
}

/// A loan kept past `SLOT_LOAN_LIFETIME` is discarded by the next sender that needs the slots:
/// that send goes through, the stale loan's writes are dropped and its send fails with `Timeout`
/// (handed back, still its length), and nothing of it reaches the remote.
#[test]
fn an_expired_slot_loan_gives_way_and_its_send_fails() {
    let (fx, clock) = fixture_on_manual_clock();
    let (d, peer) = fx.datagram().unwrap();
    let ep = d.bind(Bind::Any).unwrap();
    let mut loan = d.loan(&ep).unwrap();
    loan.write(0, b"stale").unwrap();
    loan.set_len(5).unwrap();
    clock.advance(SLOT_LOAN_LIFETIME);
    d.send_to(&ep, ep.addr(), b"fresh").unwrap();
    loan.write(0, b"STALE").unwrap();
    let (e, back) = d.send_loan(&ep, ep.addr(), loan).unwrap_err();
    assert_eq!(e, Error::Timeout);
    assert_eq!(back.len(), 5);
    drop(back);
    d.send_to(&ep, ep.addr(), b"after").unwrap();
    let mut got = Vec::new();
    assert!(until(|| {
        got.extend(peer.take_received());
        got.len() >= 2
    }));
    std::thread::sleep(Duration::from_millis(20));
    got.extend(peer.take_received());
    let got: Vec<Vec<u8>> = got.into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, [b"fresh".to_vec(), b"after".to_vec()]);
    // A new loan works again.
    drop(d.loan(&ep).unwrap());
}

/// Shutdown with a loan out: the loan is discarded first, so the service closes at once instead
/// of the shutdown waiting out its close; the loan's writes are dropped, dropping it afterwards
/// is harmless, and no new loan is given.
#[test]
fn shutdown_with_a_slot_loan_out() {
    let fx = VchiqFixture::setup(Completion::Interrupt);
    let (d, _peer) = fx.datagram().unwrap();
    let ep = d.bind(Bind::Any).unwrap();
    let mut loan = d.loan(&ep).unwrap();
    let h = fx.transport().service();
    fx.transport().shutdown().unwrap();
    // The shutdown waits (2 s at most) until the service is closed and goes on either way: a
    // loan still holding the slot would keep the CLOSE from being sent and the service open.
    assert!(
        fx.transport().vchiq().service_state(h).is_err(),
        "the service is closed when shutdown returns"
    );
    loan.write(0, b"late").unwrap();
    loan.set_len(4).unwrap();
    let (e, back) = d.send_loan(&ep, ep.addr(), loan).unwrap_err();
    assert_eq!(e, Error::Shutdown);
    drop(back);
    assert_eq!(d.loan(&ep).err(), Some(Error::Shutdown));
}
