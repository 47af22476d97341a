//! When the simulated ring device asks the driver for kicks (virtio 1.2 §2.7.10): not while its
//! remote watches the rings idle in `SimMode::Normal`, again before the remote sleeps.

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
