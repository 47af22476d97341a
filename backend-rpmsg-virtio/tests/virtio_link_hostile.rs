//! The ring link against a hostile or stuck device: used elements with out-of-range ids and
//! lengths, transmit buffers returned twice or never, a flood of used elements, a reset that never
//! completes. Each is a typed error or a counter, never a panic or an unbounded loop, and the
//! link keeps working afterwards where the device lets it.

use std::time::{Duration, Instant};

use fwipc_rpmsg_virtio::addr::{BUF_SIZE, HDR_SIZE};
use fwipc_rpmsg_virtio::role::{VQ_DRIVER_RX, VQ_DRIVER_TX};
use fwipc_rpmsg_virtio::sim::{RingDevice, RpmsgRingFixture, RING_QUEUE_MAX};
use fwipc_rpmsg_virtio::virtio_link::MAX_BUFS_PER_QUEUE;
use fwipc_rpmsg_virtio::{Link, LinkError, RpmsgConfig, DGRAM_RX_BUFS};
use fwipc_transport_api::fixture::{Fault, Fixture, SimMode};
use fwipc_transport_api::{
    call, Completion, Datagram, Error, Request, StdClock, Transport, TxOutcome, Wait,
};
use virtio_drivers::transport::{InterruptStatus, Transport as _};

mod common;
use common::ring_link_with;

fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn echo(fx: &RpmsgRingFixture, timeout: Duration) -> fwipc_transport_api::Result<usize> {
    let mut out = [0u8; 4];
    let req = Request::new(fx.echo_target(), &[1, 2, 3, 4]).polled();
    call(
        fx.transport(),
        &StdClock::new(),
        &req,
        &mut out,
        timeout,
        Wait::Poll,
    )
}

fn echo_ok(fx: &RpmsgRingFixture) {
    assert_eq!(echo(fx, Duration::from_secs(5)).expect("echo"), 4);
}

fn dev(fx: &RpmsgRingFixture) -> &RingDevice {
    fx.sim().end()
}

/// The traffic really crosses the rings: the device took every frame from the driver's
/// transmit ring and answered each through its receive ring (a fixture that bypassed the rings
/// would leave both used indices where they were). Kicks are no evidence: a remote that watches
/// the rings asks for none.
#[test]
fn traffic_goes_through_the_rings() {
    let fx = RpmsgRingFixture::setup(Completion::Interrupt);
    let link = fx.transport().link();
    assert_eq!(link.queue_size(), MAX_BUFS_PER_QUEUE);
    assert!(link.name_service());
    let used = |q: u16| {
        dev(&fx)
            .device()
            .with_queue(q, |q| q.used_idx())
            .expect("queue set up")
    };
    let (tx, rx) = (used(VQ_DRIVER_TX), used(VQ_DRIVER_RX));
    for _ in 0..300 {
        echo_ok(&fx);
    }
    assert!(used(VQ_DRIVER_TX).wrapping_sub(tx) >= 300, "frames sent");
    assert!(
        used(VQ_DRIVER_RX).wrapping_sub(rx) >= 300,
        "frames answered"
    );
    // More round trips than buffers per direction: buffers were returned and reused.
    assert_eq!(link.stats(), Default::default());
}

#[test]
fn out_of_range_used_ids_are_dropped_and_counted() {
    let fx = RpmsgRingFixture::setup(Completion::Polled);
    let link = fx.transport().link();
    let before = fx.transport().stats().protocol_errors;
    for id in [RING_QUEUE_MAX, u32::from(u16::MAX) + 1, u32::MAX] {
        assert!(dev(&fx).inject_used(VQ_DRIVER_RX, id, 16));
    }
    fx.transport().handle_interrupt();
    assert_eq!(link.stats().bad_id, 3);
    // The link's counts reach the transport's statistics.
    assert_eq!(fx.transport().stats().protocol_errors, before + 3);
    echo_ok(&fx);
}

#[test]
fn used_lengths_beyond_the_buffer_are_clamped_and_counted() {
    let fx = RpmsgRingFixture::setup(Completion::Polled);
    let link = fx.transport().link();
    // Buffer 0 is the device's (posted); whatever it holds is parsed from a private copy of at
    // most 512 bytes.
    for len in [BUF_SIZE as u32 + 1, u32::MAX] {
        assert!(dev(&fx).inject_used(VQ_DRIVER_RX, 0, len));
    }
    // A length shorter than the header is a typed wire error in the node, not a link matter.
    assert!(dev(&fx).inject_used(VQ_DRIVER_RX, 1, HDR_SIZE as u32 - 1));
    fx.transport().handle_interrupt();
    assert_eq!(link.stats().bad_len, 2);
    assert!(fx.transport().stats().protocol_errors >= 1);
    echo_ok(&fx);
}

/// A device that takes every transmit buffer and returns none: sends fail at once with
/// `NoBuffer` (counted), a call fails instead of hanging, and buffers it then returns (once) are
/// usable again; one returned twice or never given is counted and ignored.
#[test]
fn device_that_never_returns_transmit_buffers() {
    let fx = RpmsgRingFixture::setup(Completion::Polled);
    let link = fx.transport().link();
    dev(&fx).hold_tx(true);
    let frame = [0u8; HDR_SIZE];
    let mut sent = 0;
    while link.send(&frame) == Ok(()) {
        sent += 1;
        assert!(
            sent <= usize::from(MAX_BUFS_PER_QUEUE),
            "more sends than buffers"
        );
    }
    assert_eq!(link.send(&frame), Err(LinkError::NoBuffer));
    assert!(link.stats().tx_exhausted >= 2);
    assert_eq!(
        fx.transport().datagram_stats().tx_exhausted,
        link.stats().tx_exhausted,
        "the transport reports the link's exhausted sends"
    );
    assert_eq!(link.tx_free(), 0);
    let start = Instant::now();
    assert!(echo(&fx, Duration::from_millis(100)).is_err());
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(eventually(|| dev(&fx).held() >= sent as u64));
    // Return buffer 5 twice and a buffer that does not exist.
    assert!(dev(&fx).inject_used(VQ_DRIVER_TX, 5, 0));
    assert!(dev(&fx).inject_used(VQ_DRIVER_TX, 5, 0));
    assert!(dev(&fx).inject_used(VQ_DRIVER_TX, 4096, 0));
    assert_eq!(link.send(&frame), Ok(()));
    let s = link.stats();
    assert_eq!((s.not_owned, s.bad_id), (1, 1));
    assert_eq!(link.send(&frame), Err(LinkError::NoBuffer));
}

/// `used.idx` jumping far ahead: the ring resynchronises, the jump is counted, the drain stays
/// within its budget.
#[test]
fn used_index_jump_is_counted_and_bounded() {
    let fx = RpmsgRingFixture::setup(Completion::Polled);
    let link = fx.transport().link();
    assert!(dev(&fx).jump_used_idx(VQ_DRIVER_RX, 1000));
    let start = Instant::now();
    fx.transport().handle_interrupt();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(link.stats().index_jumps >= 1);
    assert!(dev(&fx).jump_used_idx(VQ_DRIVER_TX, 40_000));
    dev(&fx).hold_tx(true);
    let frame = [0u8; HDR_SIZE];
    while link.send(&frame).is_ok() {}
    assert!(link.stats().index_jumps >= 2);
}

/// A device that keeps publishing used elements: one interrupt pass takes at most the
/// transport's receive budget (the configured one, or fewer when fewer datagram receive buffers
/// are free: `DGRAM_RX_BUFS`) and reports the rest as a budget hit; the next passes take the
/// rest.
#[test]
fn a_flood_of_used_elements_is_drained_in_bounded_passes() {
    let fx = RpmsgRingFixture::setup(Completion::Polled);
    assert!(fx.remote().set_sim_mode(SimMode::Stepped));
    let link = fx.transport().link();
    let budget = RpmsgConfig::default().rx_budget.min(DGRAM_RX_BUFS);
    let flood = (budget + budget / 2).min(usize::from(MAX_BUFS_PER_QUEUE) - 1);
    for i in 0..flood {
        assert!(dev(&fx).inject_used(VQ_DRIVER_RX, i as u32, 0));
    }
    fx.transport().handle_interrupt();
    assert_eq!(link.stats().budget_hits, 1);
    assert_eq!(
        fx.transport().datagram_stats().rx_budget_hits,
        1,
        "the transport reports the link's budget hits"
    );
    fx.transport().handle_interrupt();
    assert_eq!(
        link.stats().budget_hits,
        1,
        "the second pass emptied the ring"
    );
    assert!(fx.remote().set_sim_mode(SimMode::Normal));
    echo_ok(&fx);
}

/// With `RING_EVENT_IDX`, a drain that stopped at its budget still gets the device's next
/// interrupt (the backlog is not stranded behind a stale `used_event`). A polled transport over
/// a link that asks for receive interrupts (the polled fixture's link asks for none, below).
#[test]
fn budget_hit_rearms_the_interrupt() {
    let fx = RpmsgRingFixture::with_link_interrupts(Completion::Polled, true);
    assert!(fx.remote().set_sim_mode(SimMode::Stepped));
    let link = fx.transport().link();
    let budget = RpmsgConfig::default().rx_budget.min(DGRAM_RX_BUFS);
    for _ in 0..budget + 8 {
        dev(&fx).send(&[0u8; HDR_SIZE]).expect("a receive buffer");
    }
    fx.transport().handle_interrupt();
    assert_eq!(link.stats().budget_hits, 1);
    let _ = link.with_transport(|t| t.ack_interrupt());
    dev(&fx).send(&[0u8; HDR_SIZE]).expect("a receive buffer");
    let isr = link.with_transport(|t| t.ack_interrupt());
    assert!(
        isr.contains(InterruptStatus::QUEUE_INTERRUPT),
        "the device's next element must interrupt"
    );
    assert!(fx.remote().set_sim_mode(SimMode::Normal));
    echo_ok(&fx);
}

/// A device that never completes a reset: shutdown returns in bounded time, the link reports
/// its buffers quarantined and refuses traffic (dropping it leaks the memory instead of freeing
/// what the device may still write).
#[test]
fn reset_never_confirmed_quarantines_the_buffers() {
    let fx = RpmsgRingFixture::setup(Completion::Polled);
    let link = fx.transport().link();
    dev(&fx).device().refuse_reset(true);
    let start = Instant::now();
    let _ = fx.transport().shutdown();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(link.quarantined());
    assert_eq!(link.send(&[0u8; HDR_SIZE]), Err(LinkError::Down));
    assert_eq!(link.receive(8, &mut |_| panic!("nothing is received")), 0);
}

/// A confirmed reset (shutdown) gives every buffer back to the driver.
#[test]
fn confirmed_reset_takes_every_buffer_back() {
    let fx = RpmsgRingFixture::setup(Completion::Polled);
    let link = fx.transport().link();
    dev(&fx).hold_tx(true);
    while link.send(&[0u8; HDR_SIZE]).is_ok() {}
    fx.transport().shutdown().expect("shutdown");
    assert!(!link.quarantined());
    assert_eq!(link.tx_free(), usize::from(MAX_BUFS_PER_QUEUE));
    assert!(!dev(&fx).device().driver_ok());
}

/// Transmit buffers are reclaimed when a sender needs one, so the link asks the device not to
/// interrupt for their completion (`VIRTQ_AVAIL_F_NO_INTERRUPT`, or `used_event` out of reach
/// with `EVENT_IDX`), also after reclaiming drains; the receive queue still interrupts.
#[test]
fn transmit_completions_ask_for_no_interrupt() {
    for event_idx in [false, true] {
        let (link, dev) = ring_link_with(
            event_idx,
            fwipc_rpmsg_virtio::VirtioLinkConfig {
                queue_size: Some(4),
                ..Default::default()
            },
        );
        let frame = [0u8; HDR_SIZE];
        // More sends than buffers: the link reclaims (drains the used ring) on the way.
        for round in 0..12 {
            link.send(&frame).unwrap();
            let wants = dev
                .device()
                .with_queue(VQ_DRIVER_TX, |q| {
                    let head = q.next_avail().unwrap();
                    q.push_used(u32::from(head), 0)
                })
                .unwrap();
            assert!(!wants, "event_idx {event_idx}, round {round}: asked for");
        }
        let rx_wants = dev
            .device()
            .with_queue(VQ_DRIVER_RX, |q| {
                let head = q.next_avail().unwrap();
                q.push_used(u32::from(head), 0)
            })
            .unwrap();
        assert!(rx_wants, "event_idx {event_idx}: receive interrupts off");
    }
}

/// A polled transport's link asks the device for no receive interrupts
/// (`VirtioLinkConfig::interrupts` false, as the polled fixture sets it): frames the device
/// hands over raise none. Over a link that asks for them, the same frames do.
#[test]
fn a_polled_link_asks_for_no_receive_interrupts() {
    for link_interrupts in [false, true] {
        let fx = RpmsgRingFixture::with_link_interrupts(Completion::Polled, link_interrupts);
        assert!(fx.remote().set_sim_mode(SimMode::Stepped));
        let link = fx.transport().link();
        let _ = link.with_transport(|t| t.ack_interrupt());
        for _ in 0..3 {
            dev(&fx).send(&[0u8; HDR_SIZE]).expect("a receive buffer");
        }
        let isr = link.with_transport(|t| t.ack_interrupt());
        assert_eq!(
            isr.contains(InterruptStatus::QUEUE_INTERRUPT),
            link_interrupts,
            "receive interrupts raised (the link asked for them: {link_interrupts})"
        );
        fx.transport().handle_interrupt();
        assert!(fx.remote().set_sim_mode(SimMode::Normal));
        echo_ok(&fx);
    }
}

/// A device that fails and says so (`DEVICE_NEEDS_RESET` with a configuration-change interrupt,
/// virtio 1.2 §2.1.2) is reset and set up again in place: a transfer in flight ends with
/// `Cancelled` at once, not at its caller's timeout, the reset is counted, and the link carries
/// traffic again. With interrupts the configuration interrupt tells the link; a polled link
/// reads the status every `STATUS_LOOK_EVERY` receive passes that find nothing.
#[test]
fn a_device_that_needs_a_reset_is_reset_and_works_again() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let fx = RpmsgRingFixture::setup(mode);
        let t = fx.transport();
        echo_ok(&fx);
        fx.remote().set_fault(Fault::Hold);
        let req = Request::new(fx.echo_target(), b"held").polled();
        let tk = t.send(&req).unwrap();
        assert!(eventually(|| fx.remote().received() >= 2), "{mode:?}");
        assert!(
            dev(&fx).signal_needs_reset(),
            "{mode:?}: the device was running"
        );
        let mut r = t.poll_done(&tk);
        assert!(
            eventually(|| {
                r = t.poll_done(&tk);
                r != Ok(false)
            }),
            "{mode:?}: the transfer outlived the device reset"
        );
        assert_eq!(r, Err(Error::Cancelled), "{mode:?}");
        t.mark_txdone(tk, TxOutcome::Cancelled);
        assert_eq!(t.link().stats().device_resets, 1, "{mode:?}");
        assert_eq!(t.peer_resets(), 1, "{mode:?}");
        assert!(dev(&fx).device().driver_ok(), "{mode:?}: set up again");
        fx.remote().set_fault(Fault::None);
        echo_ok(&fx);
        assert_eq!(t.stats().pool_free, t.stats().pool_capacity, "{mode:?}");
    }
}

/// A device that asks for a reset and then never confirms it leaves the link quarantined, as a
/// shutdown's unconfirmed reset does: the transfer in flight ends with `Cancelled`, nothing more
/// is sent (`Shutdown`) or received, and no buffer is reused.
#[test]
fn a_device_that_needs_a_reset_and_never_confirms_it_is_quarantined() {
    let fx = RpmsgRingFixture::setup(Completion::Interrupt);
    let t = fx.transport();
    fx.remote().set_fault(Fault::Hold);
    let req = Request::new(fx.echo_target(), b"held").polled();
    let tk = t.send(&req).unwrap();
    assert!(eventually(|| fx.remote().received() >= 1));
    dev(&fx).device().refuse_reset(true);
    assert!(dev(&fx).signal_needs_reset());
    let link = t.link();
    assert!(eventually(|| link.quarantined()));
    assert_eq!(link.stats().device_resets, 0);
    assert_eq!(link.send(&[0u8; HDR_SIZE]), Err(LinkError::Down));
    let mut r = t.poll_done(&tk);
    assert!(eventually(|| {
        r = t.poll_done(&tk);
        r != Ok(false)
    }));
    assert_eq!(r, Err(Error::Cancelled));
    t.mark_txdone(tk, TxOutcome::Cancelled);
    assert_eq!(t.send(&req).map(|_| ()), Err(Error::Shutdown));
}
