//! `VIRTIO_F_RING_EVENT_IDX` through the whole transport: negotiation (and the knob that turns it
//! off), and pipelined batches across the u16 ring-index wrap against the simulated device, which
//! implements the device side (publishes `avail_event`, interrupts only as `used_event` asks) and
//! looks at its rings only when kicked, so a wrongly suppressed kick or interrupt stalls a
//! bounded wait and fails the test. The ring-level model test of `vring_need_event` lives beside
//! the code (`virtio::ring::tests`), the hand-driven ring test in `sim::device::tests`.

use std::time::{Duration, Instant};

use fwipc_scmi_virtio::sim::{EchoPlatform, ScmiFixture, SimDevice, SimDeviceConfig, SimHal};
use fwipc_scmi_virtio::virtio::{ScmiFeatures, ScmiVirtio, ScmiVirtioConfig};
use fwipc_transport_api::fixture::{echo_reply, Fixture, RemoteControl};
use fwipc_transport_api::{
    call, wait_done, Completion, Deadline, Request, StdClock, ThreadParker, Ticket, Transport,
    TxOutcome, Wait,
};

const ECHO: u32 = (0x81 << 8) | 0x03;
const EVENT_IDX: u64 = 1 << 29;

fn echo_once<T: Transport>(t: &T, tag: u32) {
    let p = tag.to_le_bytes();
    let mut out = [0u8; 4];
    let n = call(
        t,
        &StdClock::new(),
        &Request::new(ECHO, &p).polled(),
        &mut out,
        Duration::from_secs(5),
        Wait::Poll,
    )
    .unwrap_or_else(|e| panic!("echo {tag}: {e}"));
    assert_eq!(n, 4);
    assert_eq!(out, (!tag).to_le_bytes());
}

/// Negotiated when offered; `ScmiVirtioConfig::event_idx = false` declines it; a device that does
/// not offer it is driven through the flags word. Every combination works with a kick-only
/// device, including the eventq (notifications arrive).
#[test]
fn event_idx_negotiation_and_knob() {
    for (offer, want, expect) in [
        (true, true, true),
        (true, false, false),
        (false, true, false),
    ] {
        let dev = SimDevice::start(
            SimDeviceConfig {
                offer_event_idx: offer,
                ..SimDeviceConfig::default()
            },
            || Box::new(EchoPlatform::new()),
        );
        let cfg = ScmiVirtioConfig {
            event_idx: want,
            cmdq_size: Some(16),
            eventq_size: Some(8),
            ..ScmiVirtioConfig::default()
        };
        let scmi = ScmiVirtio::<SimHal, _>::new(dev.transport(), cfg).unwrap();
        assert_eq!(
            scmi.features().contains(ScmiFeatures::RING_EVENT_IDX),
            expect,
            "offer {offer} want {want}"
        );
        assert_eq!(dev.driver_features() & EVENT_IDX != 0, expect);
        for tag in 0..200 {
            echo_once(&scmi, tag);
        }
        // The eventq: more notifications than buffers, each buffer re-posted after a fetch.
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        for i in 0..20u32 {
            assert!(dev.notify(&i.to_le_bytes()));
        }
        let start = Instant::now();
        while got.len() < 20 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "offer {offer} want {want}: {got:?}"
            );
            match scmi.fetch_notification(&mut buf).unwrap() {
                Some(n) => {
                    assert_eq!(n.len, 4);
                    got.push(u32::from_le_bytes(buf[..4].try_into().unwrap()))
                }
                None => std::thread::yield_now(),
            }
        }
        assert_eq!(got, (0..20).collect::<Vec<_>>());
    }
}

/// Pipelined batches (1..=128 in flight, the cmdq's whole capacity) across the u16 wrap of
/// both ring indices, in interrupt mode (completion needs the device's `used_event`-driven
/// interrupts) and in polled mode; every reply is checked against its own request, and
/// suppression actually happened in both directions.
#[test]
fn pipelined_batches_cross_u16_wrap() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let fx = ScmiFixture::with_config(mode, 256, SimDeviceConfig::default());
        let t = fx.transport();
        assert!(t.features().contains(ScmiFeatures::RING_EVENT_IDX));
        let cap = t.max_msg() as u32;
        assert_eq!(cap, 128);
        let clock = StdClock::new();
        let parker = ThreadParker::new();
        let (mut total, mut seed, mut batches) = (0u32, 0x9e37_79b9u32, 0u32);
        let start = Instant::now();
        while total < 66_000 + 512 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            // Lock-step single requests across the wrap (the device is idle at every post, so
            // each kick decision there must be right), batches everywhere else.
            let n = if (65_400..65_700).contains(&total) {
                1
            } else {
                1 + seed % cap
            };
            let tickets: Vec<(Ticket, u32)> = (0..n)
                .map(|k| {
                    let tag = total + k;
                    let p = tag.to_le_bytes();
                    let r = Request::new(ECHO, &p);
                    let r = match mode {
                        Completion::Polled => r.polled(),
                        Completion::Interrupt => r,
                    };
                    (
                        t.send(&r).unwrap_or_else(|e| panic!("send {tag}: {e}")),
                        tag,
                    )
                })
                .collect();
            for (tk, tag) in tickets {
                let w = match mode {
                    Completion::Polled => Wait::Poll,
                    Completion::Interrupt => Wait::Completion(&parker),
                };
                let d = Deadline::after(&clock, Duration::from_secs(5));
                wait_done(t, &tk, &clock, d, w)
                    .unwrap_or_else(|e| panic!("{mode:?}: request {tag} (batch {batches}): {e}"));
                let mut out = [0u8; 4];
                let r = t.fetch_response(&tk, &mut out);
                t.mark_txdone(tk, TxOutcome::Done);
                assert_eq!(r, Ok(4), "{mode:?}: request {tag}");
                let mut want = [0u8; 4];
                echo_reply(&tag.to_le_bytes(), &mut want);
                assert_eq!(out, want, "{mode:?}: reply to {tag}");
            }
            total += n;
            batches += 1;
        }
        eprintln!(
            "{mode:?}: {total} requests in {batches} batches in {:?}",
            start.elapsed()
        );
        let s = t.stats();
        assert_eq!(s.completed, u64::from(total), "{s:?}");
        assert_eq!(
            (s.protocol_errors, s.unknown_replies, s.duplicate_replies),
            (0, 0, 0)
        );
        assert_eq!(s.pool_free, s.pool_capacity);
        let kicks = fx.device().kicks();
        let (raised, suppressed) = fx.device().interrupts();
        eprintln!("{mode:?}: {kicks} kicks, {raised} interrupts raised, {suppressed} suppressed");
        assert!(
            kicks < u64::from(total),
            "avail_event suppressed some kicks"
        );
        assert!(suppressed > 0, "used_event suppressed some interrupts");
    }
}
