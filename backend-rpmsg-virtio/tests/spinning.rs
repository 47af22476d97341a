//! `Transport::spinning` over both simulated links: while a caller spins on its reply the link
//! asks for no receive interrupt (the spinning caller receives in `poll_done`), and when the
//! last spinner stops the link asks again and the transport receives what arrived meanwhile,
//! completing and waking every transfer as the interrupt would have
//! (`fwipc_conformance::scenarios::spinning_holds_interrupts`).

use fwipc_conformance::scenarios::spinning_holds_interrupts;
use fwipc_conformance::Verdict;
use fwipc_rpmsg_virtio::sim::{RpmsgFixture, RpmsgRingFixture};

#[test]
fn no_interrupt_while_a_caller_spins_on_the_queues() {
    assert_eq!(spinning_holds_interrupts::<RpmsgFixture>(), Verdict::Pass);
}

#[test]
fn no_interrupt_while_a_caller_spins_on_the_rings() {
    assert_eq!(
        spinning_holds_interrupts::<RpmsgRingFixture>(),
        Verdict::Pass
    );
}
