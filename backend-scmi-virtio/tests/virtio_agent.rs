//! The whole stack: the SCMI agent (`protocol::Scmi`) over `ScmiVirtio` over the simulated
//! virtio device hosting the simulated platform, in interrupt and polled mode: discovery,
//! multi-part replies paginated to 136-byte virtio buffers, delayed responses and notifications
//! through the eventq.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;

use fwipc_scmi_virtio::platform::{Platform, PlatformConfig};
use fwipc_scmi_virtio::protocol::{Config, Filter, Scmi};
use fwipc_scmi_virtio::sim::{ScmiFixture, SimDeviceConfig, SimScmi};
use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{
    Caps, Completion, Notification, Request, Result, Stats, StdClock, Ticket, Transport, TxOutcome,
};

/// The fixture's transport, shared, sending every request in the fixture's completion mode.
struct Shared {
    t: Arc<SimScmi>,
    polled: bool,
}

impl Transport for Shared {
    fn caps(&self) -> Caps {
        self.t.caps()
    }
    fn send(&self, req: &Request<'_>) -> Result<Ticket> {
        let r = if self.polled { req.polled() } else { *req };
        self.t.send(&r)
    }
    fn poll_done(&self, ticket: &Ticket) -> Result<bool> {
        self.t.poll_done(ticket)
    }
    fn fetch_response(&self, ticket: &Ticket, out: &mut [u8]) -> Result<usize> {
        self.t.fetch_response(ticket, out)
    }
    fn mark_txdone(&self, ticket: Ticket, outcome: TxOutcome) {
        self.t.mark_txdone(ticket, outcome)
    }
    fn register_waker(&self, ticket: &Ticket, waker: &Waker) -> bool {
        self.t.register_waker(ticket, waker)
    }
    fn spinning(&self, ticket: &Ticket, on: bool) {
        self.t.spinning(ticket, on)
    }
    fn fetch_notification(&self, out: &mut [u8]) -> Result<Option<Notification>> {
        self.t.fetch_notification(out)
    }
    fn shutdown(&self) -> Result<()> {
        self.t.shutdown()
    }
    fn stats(&self) -> Stats {
        self.t.stats()
    }
}

fn stack(mode: Completion, cfg: PlatformConfig) -> (ScmiFixture, Scmi<Shared, StdClock>) {
    let fx = ScmiFixture::with_platform(mode, 64, SimDeviceConfig::default(), move || {
        Box::new(Platform::new(cfg.clone()))
    });
    let shared = Shared {
        t: fx.virtio().clone(),
        polled: mode == Completion::Polled,
    };
    let acfg = Config::default().with_timeouts(Duration::from_secs(5), Duration::from_secs(5));
    let scmi = Scmi::new(shared, StdClock::new(), acfg).expect("agent");
    (fx, scmi)
}

const MODES: [Completion; 2] = [Completion::Interrupt, Completion::Polled];

#[test]
fn discovery_over_virtio() {
    for mode in MODES {
        let (_fx, scmi) = stack(mode, PlatformConfig::full());
        let base = scmi.base();
        assert_eq!(base.version().unwrap().major, 2);
        assert_eq!(base.vendor().unwrap(), "fwipc");
        let attrs = base.attributes().unwrap();
        assert!(attrs.num_protocols >= 5, "{attrs:?}");
        let s = scmi.transport_stats();
        assert_eq!(s.pool_free, s.pool_capacity);
        assert_eq!(s.protocol_errors, 0);
    }
}

/// docs/protocols/scmi.md §8 item 11 through the real transport: DESCRIPTION_GET of 20 sensors
/// through 128-byte payloads (136-byte buffers) completes in several rounds.
#[test]
fn twenty_sensor_descriptions_paginated_through_virtio_buffers() {
    for mode in MODES {
        let (_fx, scmi) = stack(mode, PlatformConfig::with_sensors(20));
        let before = scmi.transport_stats().completed;
        let d = scmi.sensor().descriptions_vec().unwrap();
        assert_eq!(d.len(), 20);
        let rounds = scmi.transport_stats().completed - before;
        assert!(rounds >= 5, "{rounds} rounds");
    }
}

/// A delayed response (type 2) travels the eventq and is matched to its command.
#[test]
fn delayed_response_through_eventq() {
    for mode in MODES {
        let (_fx, scmi) = stack(mode, PlatformConfig::full());
        let rate = scmi.clock().rate_set_async(0, 200_000_000, 0).unwrap();
        assert_eq!(rate, 200_000_000);
        assert_eq!(scmi.clock().rate_get(0).unwrap(), 200_000_000);
        assert_eq!(scmi.stats().delayed_responses, 1);
    }
}

#[test]
fn notifications_reach_subscribers() {
    for mode in MODES {
        let (fx, scmi) = stack(mode, PlatformConfig::full());
        let got = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (g2, c2) = (got.clone(), count.clone());
        scmi.subscribe(
            Filter::exact(0x81, 0),
            Arc::new(move |ev| {
                g2.lock().unwrap().push(ev.payload.to_vec());
                // SeqCst: a test counter; the strongest ordering keeps the reasoning trivial.
                c2.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .unwrap();
        for i in 0..5u32 {
            assert!(fx.remote().notify(&i.to_le_bytes()));
        }
        let end = std::time::Instant::now() + Duration::from_secs(5);
        // SeqCst: see the callback.
        while count.load(Ordering::SeqCst) < 5 {
            assert!(
                std::time::Instant::now() < end,
                "notifications did not arrive"
            );
            scmi.pump();
            std::thread::sleep(Duration::from_millis(1));
        }
        let want: Vec<Vec<u8>> = (0..5u32).map(|i| i.to_le_bytes().to_vec()).collect();
        assert_eq!(*got.lock().unwrap(), want);
    }
}

/// docs/protocols/scmi.md §8 item 9 with a real delayed response: the eventq is full of unfetched
/// notifications when an asynchronous CLOCK_RATE_SET completes; the platform holds the delayed
/// response until a buffer is re-posted, then it arrives with the command's token.
#[test]
fn delayed_response_waits_for_eventq_buffers() {
    let cfg = PlatformConfig {
        p2a_capacity: 256,
        ..PlatformConfig::full()
    };
    let fx = ScmiFixture::with_platform(
        Completion::Interrupt,
        64,
        SimDeviceConfig::default(),
        move || Box::new(Platform::new(cfg.clone())),
    );
    let t = fx.transport();
    let posted = t.eventq_posted();
    for i in 0..posted as u32 {
        assert!(fx.remote().notify(&i.to_le_bytes()));
    }
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while fx.device().eventq_buffers() != 0 || t.eventq_posted() != 0 {
        assert!(std::time::Instant::now() < end, "eventq never filled");
        std::thread::sleep(Duration::from_millis(1));
    }
    // CLOCK (0x14) RATE_SET (5): flags = async, clock 0, 200 MHz.
    let rate: u64 = 200_000_000;
    let mut p = Vec::new();
    for w in [1u32, 0, rate as u32, (rate >> 32) as u32] {
        p.extend_from_slice(&w.to_le_bytes());
    }
    let tk = t.send(&Request::new(0x1405, &p).polled()).unwrap();
    let token = tk.token();
    let clock = StdClock::new();
    fwipc_transport_api::wait_done(
        t,
        &tk,
        &clock,
        fwipc_transport_api::Deadline::after(&clock, Duration::from_secs(5)),
        fwipc_transport_api::Wait::Poll,
    )
    .unwrap();
    assert_eq!(
        t.fetch_response(&tk, &mut [0u8; 16]),
        Ok(0),
        "synchronous part: SUCCESS"
    );
    t.mark_txdone(tk, TxOutcome::Done);
    std::thread::sleep(Duration::from_millis(20));
    let mut buf = [0u8; 64];
    let mut notes = 0;
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let delayed = loop {
        assert!(
            std::time::Instant::now() < end,
            "delayed response never arrived"
        );
        let Some(n) = t.fetch_notification(&mut buf).unwrap() else {
            continue;
        };
        let h = fwipc_scmi_virtio::header::Header::decode(n.source).unwrap();
        if h.msg_type == fwipc_scmi_virtio::header::MsgType::DelayedResponse {
            break h;
        }
        notes += 1;
    };
    assert_eq!(
        notes, posted,
        "every notification came first, the delayed response after a refill"
    );
    assert_eq!(
        (
            delayed.protocol_id,
            delayed.message_id,
            u32::from(delayed.token)
        ),
        (0x14, 5, token)
    );
}

/// The typed agent takes a transport the fixture keeps as well: `Arc<T>` and `&T` are
/// transports (they forward every call), so a fixture's shared transport drives `Scmi` directly.
#[test]
fn the_agent_runs_over_a_shared_fixture_transport() {
    let fx = ScmiFixture::with_config(Completion::Polled, 16, Default::default());
    let by_arc = Scmi::new(
        fx.virtio().clone(),
        StdClock::new(),
        Config::default().polled(),
    )
    .unwrap();
    let by_ref = Scmi::new(&**fx.virtio(), StdClock::new(), Config::default().polled()).unwrap();
    assert_eq!(
        by_arc.base().vendor().unwrap(),
        by_ref.base().vendor().unwrap()
    );
    let sent = fx.virtio().stats().sent;
    assert!(
        sent >= 2,
        "both agents' commands went through the fixture's transport ({sent})"
    );
    assert_eq!(by_arc.transport().stats(), fx.virtio().stats());
}
