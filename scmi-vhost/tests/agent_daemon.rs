//! fwipc's own agent against fwipc's own daemon, both sides real: the daemon binary this package
//! builds serves `configs/linux-guest.toml` (what the Linux test guest sees) or `tests/full.toml`
//! (larger than any single reply), and fwipc's unmodified `Scmi` agent over `ScmiVirtio` drives
//! it through the vhost-user harness (memfd guest memory, kick/call eventfds). Every protocol:
//! Base discovery, Sensor, Clock, Performance, Power, Reset, Voltage, System power; paginated
//! listings; delayed responses and notifications on the event queue; a clean exit on disconnect.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fwipc_scmi_virtio::protocol::clock::RateDescription;
use fwipc_scmi_virtio::protocol::ids::{clock, perf as perf_ids, power, proto, voltage};
use fwipc_scmi_virtio::protocol::notify::Notification;
use fwipc_scmi_virtio::protocol::voltage::LevelDescription;
use fwipc_scmi_virtio::protocol::{Event, Filter, ScmiError};
use fwipc_scmi_virtio::status::ScmiStatus;
use fwipc_scmi_virtio::virtio::ScmiFeatures;

use common::{Fixture, TIMEOUT};

/// The protocols a platform with every kind of object lists, in the daemon's order.
const ALL_PROTOCOLS: [u8; 7] = [
    proto::POWER,
    proto::SYSTEM,
    proto::PERF,
    proto::CLOCK,
    proto::SENSOR,
    proto::RESET,
    proto::VOLTAGE,
];

#[test]
fn linux_guest_config_every_protocol() {
    let fx = Fixture::start("configs/linux-guest.toml");
    let scmi = fx.agent();
    assert!(scmi
        .transport()
        .features()
        .contains(ScmiFeatures::P2A_CHANNELS));

    // Base: what the Linux SCMI core prints at probe.
    let d = scmi.base().discover().expect("base discovery");
    assert_eq!((d.version.major, d.version.minor), (2, 0));
    assert_eq!(d.vendor, "fwipc");
    assert_eq!(d.sub_vendor.expect("sub-vendor"), "linux-test");
    assert_eq!(d.implementation_version, 0x0001_0000);
    assert_eq!(d.protocols.as_slice(), &ALL_PROTOCOLS);

    // Sensors: names, units (°C and V, both ×10^-3), constant readings.
    let s = scmi.sensor();
    let list = s.descriptions_vec().expect("sensor list");
    let seen: Vec<(String, u8, i8)> = list
        .iter()
        .map(|d| {
            (
                d.name.as_str().unwrap_or("?").to_string(),
                d.unit(),
                d.unit_exponent(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("soc-temp".to_string(), 2, -3),
            ("vdd-core".to_string(), 5, -3)
        ]
    );
    for _ in 0..3 {
        assert_eq!(s.reading(0).expect("soc-temp").value, 45_000);
        assert_eq!(s.reading(1).expect("vdd-core").value, 900);
    }

    // Clocks: names, rates, a rate change that round-trips.
    let c = scmi.clock();
    assert_eq!(c.protocol_attributes().expect("clock attrs").num_clocks, 2);
    assert_eq!(c.attributes(0).expect("clock 0").name, "uart-clk");
    assert_eq!(c.attributes(1).expect("clock 1").name, "cpu-clk");
    let mut rates = Vec::new();
    let desc = c.describe_rates(0, |r| rates.push(r)).expect("uart rates");
    assert_eq!(
        (desc, rates.as_slice()),
        (RateDescription::Discrete { count: 1 }, &[24_000_000][..])
    );
    assert_eq!(c.rate_get(0).expect("uart rate"), 24_000_000);
    let mut rates = Vec::new();
    c.describe_rates(1, |r| rates.push(r)).expect("cpu rates");
    assert_eq!(rates, [600_000_000, 1_200_000_000, 1_800_000_000]);
    assert_eq!(c.rate_get(1).expect("cpu rate"), 600_000_000);
    c.rate_set(1, 1_200_000_000, 0).expect("set 1.2 GHz");
    assert_eq!(c.rate_get(1).expect("cpu rate"), 1_200_000_000);
    // Not a rate of the clock, rounded down (no rounding flags): 1.2 GHz again.
    c.rate_set(1, 1_500_000_000, 0).expect("set 1.5 GHz");
    assert_eq!(c.rate_get(1).expect("cpu rate"), 1_200_000_000);

    // Performance: levels, level set/get, limits.
    let p = scmi.perf();
    let a = p.domain_attributes(0).expect("perf domain");
    assert_eq!(a.name, "cpu-perf");
    assert_eq!(
        (a.sustained_freq_khz, a.sustained_perf_level),
        (1_800_000, 1_800_000)
    );
    let mut levels = Vec::new();
    p.describe_levels(0, |l| levels.push((l.perf, l.power, l.latency_us)))
        .expect("perf levels");
    assert_eq!(
        levels,
        [
            (600_000, 300, 50),
            (1_200_000, 700, 50),
            (1_800_000, 1200, 50)
        ]
    );
    assert_eq!(p.level_get(0).expect("level"), 600_000);
    p.level_set(0, 1_800_000).expect("level set");
    assert_eq!(p.level_get(0).expect("level"), 1_800_000);
    p.limits_set(0, 1_200_000, 600_000).expect("limits");
    assert_eq!(p.limits_get(0).expect("limits"), (1_200_000, 600_000));
    assert_eq!(
        p.level_get(0).expect("level"),
        1_200_000,
        "clamped to the limit"
    );
    assert_eq!(
        p.level_set(0, 1_800_000).err(),
        Some(ScmiError::Status(ScmiStatus::OutOfRange))
    );

    // Power domains: initial states as configured, set/get.
    let pw = scmi.power();
    assert_eq!(pw.protocol_attributes().expect("power").num_domains, 2);
    assert_eq!(pw.domain_attributes(0).expect("pd 0").name, "gpu-pd");
    assert_eq!(pw.state_get(0).expect("gpu-pd"), power::STATE_OFF);
    assert_eq!(pw.state_get(1).expect("vpu-pd"), power::STATE_ON);
    pw.state_set(0, power::STATE_ON).expect("gpu on");
    assert_eq!(pw.state_get(0).expect("gpu-pd"), power::STATE_ON);

    // Reset domains: a synchronous reset, assert/deassert, an asynchronous one (its completion
    // is a delayed response on the event queue).
    let r = scmi.reset();
    assert_eq!(r.num_domains().expect("resets"), 2);
    let a0 = r.domain_attributes(0).expect("reset 0");
    assert_eq!((a0.name.as_str(), a0.latency_us), (Some("eth-reset"), 10));
    r.reset(0, 1, 0).expect("autonomous reset");
    r.assert(0).expect("assert");
    r.deassert(0).expect("deassert");
    let before = scmi.stats().delayed_responses;
    r.reset_async(1, 0)
        .expect("asynchronous reset of usb-reset");
    assert_eq!(scmi.stats().delayed_responses, before + 1);

    // Voltage: the one level of vdd-io, config and level set/get.
    let v = scmi.voltage();
    assert_eq!(v.num_domains().expect("voltage"), 1);
    assert_eq!(v.domain_attributes(0).expect("vdd-io").name, "vdd-io");
    let mut lv = Vec::new();
    let desc = v.describe_levels(0, |l| lv.push(l)).expect("levels");
    assert_eq!(
        (desc, lv.as_slice()),
        (LevelDescription::Discrete { count: 1 }, &[1_800_000][..])
    );
    assert_eq!(v.level_get(0).expect("level"), 1_800_000);
    v.level_set(0, 1_800_000).expect("level set");
    assert_eq!(
        v.level_set(0, 1_700_000).err(),
        Some(ScmiError::Status(ScmiStatus::OutOfRange))
    );
    assert_eq!(v.config_get(0).expect("config"), voltage::CONFIG_ON);
    v.config_set(0, voltage::CONFIG_OFF).expect("off");
    assert_eq!(v.config_get(0).expect("config"), voltage::CONFIG_OFF);

    // System power.
    let sp = scmi.system();
    assert_eq!(sp.version().expect("system version").major, 1);
    assert_eq!(sp.state_get().expect("state"), 3, "power up");
    sp.state_set(0, 4).expect("suspend");
    assert_eq!(sp.state_get().expect("state"), 4);

    assert_eq!(scmi.stats().malformed_replies, 0);
    let st = fx.disconnect();
    assert_eq!(st.map(|s| s.code()), Some(Some(0)), "daemon exit status");
}

#[test]
fn every_listing_is_paginated_to_the_agents_buffer() {
    let fx = Fixture::start("tests/full.toml");
    let scmi = fx.agent();
    let d = scmi.base().discover().expect("discovery");
    assert_eq!((d.vendor.as_str(), d.num_agents), (Some("fwipc-test"), 2));
    assert_eq!(d.protocols.as_slice(), &ALL_PROTOCOLS);
    assert_eq!(
        scmi.base().discover_agent(2).expect("agent 2").name,
        "modem"
    );

    // 7 sensor descriptors (28 bytes each) do not fit one 128-byte reply.
    let calls = scmi.stats().commands;
    let list = scmi.sensor().descriptions_vec().expect("sensors");
    assert!(
        scmi.stats().commands - calls >= 2,
        "more than one page ({} commands)",
        scmi.stats().commands - calls
    );
    assert_eq!(list.len(), 7);
    for (i, s) in list.iter().take(6).enumerate() {
        assert_eq!(s.name, format!("temp{i}").as_str());
        assert_eq!(
            scmi.sensor().reading(s.id).expect("reading").value,
            40_000 + 1000 * i as i64
        );
    }
    // An asynchronous reading: the value comes back as a delayed response.
    assert!(list[6].async_read());
    let mut out = [Default::default(); 1];
    assert_eq!(scmi.sensor().reading_async(6, &mut out).expect("async"), 1);
    assert_eq!(out[0].value, 1500);

    // 20 discrete rates of 8 bytes: pages of at most 14.
    let calls = scmi.stats().commands;
    let mut rates = Vec::new();
    scmi.clock()
        .describe_rates(0, |r| rates.push(r))
        .expect("rates");
    assert!(scmi.stats().commands - calls >= 2);
    assert_eq!(
        rates,
        (1..=20).map(|i| i * 100_000_000).collect::<Vec<u64>>()
    );
    assert_eq!(
        scmi.clock().describe_rates(1, |_| {}).expect("range"),
        RateDescription::Range {
            min: 1_000_000,
            max: 48_000_000,
            step: 1_000_000
        }
    );
    assert_eq!(scmi.clock().rate_get(1).expect("rate"), 24_000_000);
    scmi.clock()
        .rate_set(1, 12_500_000, 0)
        .expect("rounded down");
    assert_eq!(scmi.clock().rate_get(1).expect("rate"), 12_000_000);

    // 16 performance levels of 12 bytes.
    let calls = scmi.stats().commands;
    let mut levels = Vec::new();
    scmi.perf()
        .describe_levels(0, |l| levels.push(l.perf))
        .expect("levels");
    assert!(scmi.stats().commands - calls >= 2);
    assert_eq!(levels, (1..=16).map(|i| i * 100_000).collect::<Vec<u32>>());

    // 40 voltage levels of 4 bytes, and a segmented range.
    let calls = scmi.stats().commands;
    let mut lv = Vec::new();
    scmi.voltage()
        .describe_levels(0, |l| lv.push(l))
        .expect("levels");
    assert!(scmi.stats().commands - calls >= 2);
    assert_eq!(
        lv,
        (0..40).map(|i| 600_000 + 25_000 * i).collect::<Vec<i32>>()
    );
    assert_eq!(
        scmi.voltage().describe_levels(1, |_| {}).expect("range"),
        LevelDescription::Range {
            min: 1_650_000,
            max: 3_600_000,
            step: 50_000
        }
    );
    // An asynchronous level change completes with a delayed response.
    assert_eq!(
        scmi.voltage()
            .level_set_async(0, 1_000_000)
            .expect("async level"),
        1_000_000
    );
    assert_eq!(scmi.voltage().level_get(0).expect("level"), 1_000_000);

    // A name longer than the 16-byte field comes from *_NAME_GET.
    assert_eq!(
        scmi.power().extended_name(0).expect("long name"),
        "a-power-domain-with-a-long-name-past-15-bytes"
    );
    assert_eq!(scmi.stats().malformed_replies, 0);
    let st = fx.disconnect();
    assert_eq!(st.map(|s| s.code()), Some(Some(0)), "daemon exit status");
}

#[test]
fn notifications_arrive_on_the_event_queue() {
    let fx = Fixture::start("configs/linux-guest.toml");
    let scmi = fx.agent();
    let got: Arc<Mutex<Vec<Notification>>> = Arc::default();
    for filter in [
        Filter::exact(proto::CLOCK, clock::N_RATE_CHANGED),
        Filter::exact(proto::PERF, perf_ids::N_LEVEL_CHANGED),
        Filter::exact(proto::POWER, power::N_STATE_CHANGED),
    ] {
        let sink = got.clone();
        scmi.subscribe(
            filter,
            Arc::new(move |ev: &Event<'_>| {
                if let Ok(n) = Notification::decode(ev) {
                    sink.lock().unwrap().push(n);
                }
            }),
        )
        .expect("subscribe");
    }
    scmi.clock().rate_notify(1, true).expect("clock notify on");
    scmi.perf().notify_level(0, true).expect("perf notify on");
    scmi.power().state_notify(1, true).expect("power notify on");
    scmi.clock()
        .rate_set(1, 1_800_000_000, 0)
        .expect("rate set");
    scmi.perf().level_set(0, 1_200_000).expect("level set");
    scmi.power()
        .state_set(1, power::STATE_OFF)
        .expect("state set");
    let deadline = Instant::now() + TIMEOUT;
    while got.lock().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "notifications missing: {:?}; daemon log:\n{}",
            got.lock().unwrap(),
            fx.daemon.log()
        );
        scmi.pump();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        *got.lock().unwrap(),
        [
            Notification::ClockRateChanged {
                agent_id: 0,
                clock_id: 1,
                rate: 1_800_000_000
            },
            Notification::PerfLevelChanged {
                agent_id: 0,
                domain_id: 0,
                level: 1_200_000
            },
            Notification::PowerStateChanged {
                agent_id: 0,
                domain_id: 1,
                state: power::STATE_OFF
            },
        ]
    );
    // Switched off: no more.
    scmi.clock()
        .rate_notify(1, false)
        .expect("clock notify off");
    scmi.clock().rate_set(1, 600_000_000, 0).expect("rate set");
    std::thread::sleep(Duration::from_millis(50));
    scmi.pump();
    assert_eq!(got.lock().unwrap().len(), 3);
    let st = fx.disconnect();
    assert_eq!(st.map(|s| s.code()), Some(Some(0)), "daemon exit status");
}

#[test]
fn malformed_requests_get_statuses_and_the_daemon_keeps_serving() {
    let fx = Fixture::start("configs/linux-guest.toml");
    let scmi = fx.agent();
    // Wrong parameter counts, unknown messages and protocols, ids out of range.
    let mut reply = [0u8; 64];
    for (protocol, message, params, status) in [
        (
            proto::CLOCK,
            clock::RATE_GET,
            &[0u32, 1][..],
            ScmiStatus::ProtocolError,
        ),
        (proto::CLOCK, 0x7F, &[][..], ScmiStatus::NotSupported),
        (0x42, 0, &[][..], ScmiStatus::NotSupported),
        (
            proto::CLOCK,
            clock::RATE_GET,
            &[9][..],
            ScmiStatus::NotFound,
        ),
    ] {
        let bytes: Vec<u8> = params.iter().flat_map(|w| w.to_le_bytes()).collect();
        let err = scmi
            .command_raw(protocol, message, &bytes, &mut reply)
            .err();
        assert_eq!(
            err,
            Some(ScmiError::Status(status)),
            "{protocol:#x}/{message:#x}"
        );
    }
    assert_eq!(scmi.base().vendor().expect("still serving"), "fwipc");
    let st = fx.disconnect();
    assert_eq!(st.map(|s| s.code()), Some(Some(0)), "daemon exit status");
}

#[test]
fn periodic_sensor_updates_once_enabled() {
    let fx = Fixture::start("tests/full.toml");
    let scmi = fx.agent();
    let got: Arc<Mutex<Vec<(u32, i64)>>> = Arc::default();
    let sink = got.clone();
    scmi.subscribe(
        Filter::exact(proto::SENSOR, 0x1),
        Arc::new(move |ev: &Event<'_>| {
            if let Ok(Notification::SensorUpdate(u)) = Notification::decode(ev) {
                let v = u.value(ev.payload, 0).map_or(-1, |v| v.value);
                sink.lock().unwrap().push((u.sensor_id, v));
            }
        }),
    )
    .expect("subscribe");
    // The timer runs, but nothing is sent before the agent asks.
    std::thread::sleep(Duration::from_millis(60));
    scmi.pump();
    assert!(got.lock().unwrap().is_empty(), "no update before enabling");
    scmi.sensor()
        .continuous_update_notify(2, true)
        .expect("updates on for temp2");
    let deadline = Instant::now() + TIMEOUT;
    while got.lock().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "SENSOR_UPDATE missing; log:\n{}",
            fx.daemon.log()
        );
        scmi.pump();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(got.lock().unwrap().iter().all(|u| *u == (2, 42_000)));
    scmi.sensor()
        .continuous_update_notify(2, false)
        .expect("updates off");
    // Let what was sent before the switch-off drain (no growth for 100 ms: five timer periods),
    // then nothing more may come.
    let deadline = Instant::now() + TIMEOUT;
    let mut last = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        scmi.pump();
        let n = got.lock().unwrap().len();
        if n == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "updates keep coming after disabling"
        );
        last = n;
    }
    std::thread::sleep(Duration::from_millis(100));
    scmi.pump();
    assert_eq!(got.lock().unwrap().len(), last, "no updates once disabled");
    let st = fx.disconnect();
    assert_eq!(st.map(|s| s.code()), Some(Some(0)), "daemon exit status");
}

/// The daemon is killed while the agent keeps calling: the call in flight (or the next one) ends
/// with `Cancelled` or `Shutdown` well before the agent's timeout, never `Timeout`, and every
/// later call fails with `Shutdown` at once.
#[test]
fn killed_daemon_fails_calls_fast_with_a_distinct_error() {
    let mut fx = Fixture::start("configs/linux-guest.toml");
    let scmi = fx.shared_agent();
    assert_eq!(scmi.base().vendor().expect("vendor"), "fwipc");
    let (first, took) = std::thread::scope(|s| {
        let caller = s.spawn(|| loop {
            let start = Instant::now();
            match scmi.base().attributes() {
                Ok(_) => continue,
                Err(e) => return (e, start.elapsed()),
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        fx.daemon.kill().expect("kill daemon");
        caller.join().expect("caller panicked")
    });
    assert!(
        matches!(
            first,
            ScmiError::Transport(fwipc_transport_api::Error::Cancelled)
                | ScmiError::Transport(fwipc_transport_api::Error::Shutdown)
        ),
        "first failure: {first:?}"
    );
    assert!(took < TIMEOUT / 2, "first failure took {took:?}");
    let start = Instant::now();
    assert_eq!(
        scmi.base().version().map(|v| v.word()),
        Err(ScmiError::Transport(fwipc_transport_api::Error::Shutdown))
    );
    assert!(start.elapsed() < Duration::from_millis(500));
    let s = fwipc_transport_api::Transport::stats(scmi.transport());
    assert_eq!(s.pool_free, s.pool_capacity, "{s:?}");
}
