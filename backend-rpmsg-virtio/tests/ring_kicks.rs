//! When the simulated ring device asks the driver for kicks (virtio 1.2 §2.7.10): not while its
//! remote watches the rings idle in `SimMode::Normal` or is stepped as a polling one
//! (`SimMode::SteppedPolling`), again before the remote sleeps.

use std::time::{Duration, Instant};

use fwipc_rpmsg_virtio::sim::RpmsgRingFixture;
use fwipc_transport_api::fixture::{Fixture, SimMode};
use fwipc_transport_api::Completion;

mod common;
use common::echo_ok;

/// Whether the device asks the driver for kicks again within `limit`.
fn kicks_on_within(fx: &RpmsgRingFixture, limit: Duration) -> bool {
    let start = Instant::now();
    while fx.sim().end().device().polling() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// The remote asks for kicks again within 10 s (`after`: what it did before), and then the next
/// send kicks it and is answered.
fn a_parked_remote_is_kicked(fx: &RpmsgRingFixture, after: &str) {
    assert!(
        kicks_on_within(fx, Duration::from_secs(10)),
        "the remote never asked for kicks again after {after}"
    );
    let kicks = || fx.sim().end().device().kicks();
    let before = kicks();
    echo_ok(fx);
    assert!(kicks() > before, "a send to a parked remote did not kick");
}

/// Back-to-back round trips mostly carry no kick (the remote steps on through one bounded spin
/// with kicks off after each answer); once the spin has run out the remote parks, having asked
/// for kicks again, so the next send kicks, and is answered.
#[test]
fn an_idle_remote_watches_with_kicks_off_then_asks_for_them_before_it_parks() {
    let fx = RpmsgRingFixture::setup(Completion::Polled);
    let kicks = || fx.sim().end().device().kicks();
    echo_ok(&fx);
    let before = kicks();
    let n = 200;
    for _ in 0..n {
        echo_ok(&fx);
    }
    let kicked = kicks() - before;
    assert!(
        kicked < n,
        "every one of {n} back-to-back sends kicked a watching remote"
    );
    // The watch is bounded: the remote turns kicks on again (then looks once more and parks).
    a_parked_remote_is_kicked(&fx, "watching idle");
}

/// A remote that polled (`SimMode::Spin`, kicks off) and is put back in `Normal` asks for kicks
/// again before it parks: the next send kicks.
#[test]
fn a_remote_back_from_spin_asks_for_kicks_before_it_parks() {
    let fx = RpmsgRingFixture::setup(Completion::Polled);
    assert!(fx.remote().set_sim_mode(SimMode::Spin));
    echo_ok(&fx);
    assert!(fx.remote().set_sim_mode(SimMode::Normal));
    a_parked_remote_is_kicked(&fx, "polling");
}

/// One polled 4-byte echo with the remote stepped on this thread until it is answered.
fn stepped_echo_ok(fx: &RpmsgRingFixture) {
    use fwipc_transport_api::{Request, Transport as _, TxOutcome};
    let t = fx.transport();
    let tk = t
        .send(&Request::new(fx.echo_target(), &[1, 2, 3, 4]).polled())
        .expect("send");
    let mut steps = 0;
    while !t.poll_done(&tk).expect("poll_done") {
        assert!(steps < 64, "no reply after 64 steps");
        fx.remote().step();
        steps += 1;
    }
    let mut out = [0u8; 4];
    let n = t.fetch_response(&tk, &mut out).expect("fetch_response");
    t.mark_txdone(tk, TxOutcome::Done);
    assert_eq!(&out[..n], &[!1, !2, !3, !4]);
}

/// Stepped as a polling remote (`SimMode::SteppedPolling`) the device asks for no kicks, as a
/// spinning one does, and every stepped round trip is answered without one; plain
/// `SimMode::Stepped` asks for them again, and each send kicks.
#[test]
fn a_remote_stepped_as_polling_asks_for_no_kicks() {
    let fx = RpmsgRingFixture::setup(Completion::Polled);
    let kicks = || fx.sim().end().device().kicks();
    assert!(fx.remote().set_sim_mode(SimMode::SteppedPolling));
    assert!(fx.sim().end().device().polling());
    stepped_echo_ok(&fx);
    let before = kicks();
    for _ in 0..50 {
        stepped_echo_ok(&fx);
    }
    assert_eq!(kicks(), before, "a remote stepped as polling was kicked");
    assert!(fx.remote().set_sim_mode(SimMode::Stepped));
    assert!(!fx.sim().end().device().polling());
    stepped_echo_ok(&fx);
    let before = kicks();
    for _ in 0..3 {
        stepped_echo_ok(&fx);
    }
    assert_eq!(kicks(), before + 3, "a stepped remote's sends did not kick");
}
