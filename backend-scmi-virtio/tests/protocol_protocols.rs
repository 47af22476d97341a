//! Clock, performance, power, reset, voltage and system power against the simulated platform,
//! including their notifications and delayed responses.

mod common;

use common::*;
use fwipc_scmi_virtio::platform::PlatformConfig;
use fwipc_scmi_virtio::protocol::ids::{power, proto, voltage};
use fwipc_scmi_virtio::protocol::notify::Notification;
use fwipc_scmi_virtio::protocol::{Filter, ScmiError};
use fwipc_scmi_virtio::status::ScmiStatus;

fn decoded(log: &Log) -> Vec<Notification> {
    log.lock()
        .unwrap()
        .iter()
        .map(|(p, m, b)| Notification::decode_body(*p, *m, b).unwrap())
        .collect()
}

#[test]
fn clock_protocol() {
    let scmi = direct(PlatformConfig::full());
    let c = scmi.clock();
    assert_eq!(c.version().unwrap().major, 2);
    let pa = c.protocol_attributes().unwrap();
    assert_eq!(pa.num_clocks, 2);
    let a = c.attributes(0).unwrap();
    assert_eq!(a.name, "cpu_clk");
    assert!(a.enabled());
    assert!(!c.attributes(1).unwrap().enabled());
    c.set_enabled(1, true).unwrap();
    assert!(c.attributes(1).unwrap().enabled());
    assert_eq!(c.rate_get(0).unwrap(), 400_000_000);
    c.rate_set(0, 5_000_000_000, 0).unwrap();
    assert_eq!(c.rate_get(0).unwrap(), 5_000_000_000);
    // Round up (bit 2) and auto (bit 3).
    c.rate_set(0, 150_000_000, 1 << 2).unwrap();
    assert_eq!(c.rate_get(0).unwrap(), 200_000_000);
    c.rate_set(0, 790_000_000, 1 << 3).unwrap();
    assert_eq!(c.rate_get(0).unwrap(), 800_000_000);
    c.rate_set(1, 2_500_000, 0).unwrap();
    assert_eq!(c.rate_get(1).unwrap(), 2_000_000);
    assert_eq!(
        c.rate_set(1, 100, 0).unwrap_err(),
        ScmiError::Status(ScmiStatus::OutOfRange)
    );
    assert_eq!(
        c.attributes(5).unwrap_err(),
        ScmiError::Status(ScmiStatus::NotFound)
    );
    let (log, cb) = recorder();
    scmi.subscribe(Filter::protocol(proto::CLOCK), cb).unwrap();
    c.rate_notify(0, true).unwrap();
    assert_eq!(
        c.rate_set_async(0, 1_200_000_000, 0).unwrap(),
        1_200_000_000
    );
    scmi.pump();
    assert_eq!(
        decoded(&log),
        [Notification::ClockRateChanged {
            agent_id: 0,
            clock_id: 0,
            rate: 1_200_000_000
        }]
    );
    assert_eq!(scmi.stats().delayed_responses, 1);
}

#[test]
fn perf_protocol() {
    let scmi = direct(PlatformConfig::full());
    let p = scmi.perf();
    let pa = p.protocol_attributes().unwrap();
    assert_eq!(pa.num_domains, 1);
    let d = p.domain_attributes(0).unwrap();
    assert_eq!(d.name, "big");
    assert_eq!(d.sustained_perf_level, 1200);
    assert_eq!(p.level_get(0).unwrap(), 600);
    assert_eq!(p.limits_get(0).unwrap(), (1200, 100));
    let (log, cb) = recorder();
    scmi.subscribe(Filter::protocol(proto::PERF), cb).unwrap();
    p.notify_level(0, true).unwrap();
    p.notify_limits(0, true).unwrap();
    p.level_set(0, 900).unwrap();
    assert_eq!(p.level_get(0).unwrap(), 900);
    assert_eq!(
        p.level_set(0, 950).unwrap_err(),
        ScmiError::Status(ScmiStatus::OutOfRange)
    );
    p.limits_set(0, 800, 200).unwrap();
    assert_eq!(
        p.level_get(0).unwrap(),
        800,
        "level clamped into the new limits"
    );
    assert_eq!(
        p.limits_set(0, 0, 0).unwrap_err(),
        ScmiError::Status(ScmiStatus::InvalidParameters)
    );
    scmi.pump();
    assert_eq!(
        decoded(&log),
        [
            Notification::PerfLevelChanged {
                agent_id: 0,
                domain_id: 0,
                level: 900
            },
            Notification::PerfLimitsChanged {
                agent_id: 0,
                domain_id: 0,
                range_max: 800,
                range_min: 200
            },
            Notification::PerfLevelChanged {
                agent_id: 0,
                domain_id: 0,
                level: 800
            },
        ]
    );
}

#[test]
fn power_protocol() {
    let scmi = direct(PlatformConfig::full());
    let pw = scmi.power();
    assert_eq!(pw.protocol_attributes().unwrap().num_domains, 2);
    assert_eq!(pw.domain_attributes(1).unwrap().name, "vpu_pd");
    assert_eq!(pw.state_get(0).unwrap(), power::STATE_OFF);
    let (log, cb) = recorder();
    scmi.subscribe(Filter::exact(proto::POWER, power::N_STATE_CHANGED), cb)
        .unwrap();
    pw.state_notify(0, true).unwrap();
    pw.state_set(0, power::STATE_ON).unwrap();
    assert_eq!(pw.state_get(0).unwrap(), power::STATE_ON);
    scmi.pump();
    assert_eq!(
        decoded(&log),
        [Notification::PowerStateChanged {
            agent_id: 0,
            domain_id: 0,
            state: 0
        }]
    );
}

#[test]
fn reset_protocol() {
    let scmi = direct(PlatformConfig::full());
    let r = scmi.reset();
    assert_eq!(r.num_domains().unwrap(), 2);
    let a = r.domain_attributes(0).unwrap();
    assert!(a.async_reset());
    assert_eq!(a.name, "eth_rst");
    assert_eq!(r.domain_attributes(1).unwrap().latency_us, u32::MAX);
    r.assert(1).unwrap();
    assert_eq!(
        scmi.transport().with_platform(|p| p.reset_asserted(1)),
        Some(true)
    );
    r.deassert(1).unwrap();
    assert_eq!(
        scmi.transport().with_platform(|p| p.reset_asserted(1)),
        Some(false)
    );
    let (log, cb) = recorder();
    scmi.subscribe(Filter::protocol(proto::RESET), cb).unwrap();
    r.notify(0, true).unwrap();
    r.reset_async(0, 0).unwrap();
    assert_eq!(
        r.reset_async(1, 0).unwrap_err(),
        ScmiError::Status(ScmiStatus::NotSupported),
        "domain 1 has no async reset"
    );
    scmi.pump();
    assert_eq!(
        decoded(&log),
        [Notification::ResetIssued {
            agent_id: 0,
            domain_id: 0,
            reset_state: 0
        }]
    );
}

#[test]
fn voltage_protocol() {
    let scmi = direct(PlatformConfig::full());
    let v = scmi.voltage();
    assert_eq!(v.num_domains().unwrap(), 2);
    assert_eq!(v.domain_attributes(0).unwrap().name, "vdd_cpu");
    assert_eq!(v.config_get(0).unwrap(), voltage::CONFIG_ON);
    v.config_set(0, voltage::CONFIG_OFF).unwrap();
    assert_eq!(v.config_get(0).unwrap(), voltage::CONFIG_OFF);
    assert_eq!(v.level_get(0).unwrap(), 900_000);
    v.level_set(0, -50_000).unwrap();
    assert_eq!(v.level_get(0).unwrap(), -50_000);
    assert_eq!(v.level_set_async(0, 1_000_000).unwrap(), 1_000_000);
    assert_eq!(v.level_get(0).unwrap(), 1_000_000);
    v.level_set(1, 3_300_000).unwrap();
    assert_eq!(
        v.level_set(1, 3_310_000).unwrap_err(),
        ScmiError::Status(ScmiStatus::OutOfRange)
    );
    assert_eq!(
        v.level_set_async(1, 1_800_000).unwrap_err(),
        ScmiError::Status(ScmiStatus::NotSupported)
    );
}

#[test]
fn system_power_protocol() {
    let scmi = direct(PlatformConfig::full());
    let s = scmi.system();
    assert_eq!(s.version().unwrap().major, 1);
    let (log, cb) = recorder();
    scmi.subscribe(Filter::protocol(proto::SYSTEM), cb).unwrap();
    s.state_notify(true).unwrap();
    s.state_set(1, 2).unwrap();
    assert_eq!(s.state_get().unwrap(), 2);
    scmi.pump();
    assert_eq!(
        decoded(&log),
        [Notification::SystemPower {
            agent_id: 1,
            flags: 1,
            system_state: 2,
            timeout: None
        }]
    );
}

#[test]
fn without_p2a_notifications_and_async_are_refused_and_hidden() {
    let mut pc = PlatformConfig::full();
    pc.p2a = false;
    let scmi = direct(pc);
    let mut out = [Default::default(); 1];
    assert_eq!(
        scmi.sensor().reading_async(0, &mut out).unwrap_err(),
        ScmiError::Status(ScmiStatus::NotSupported)
    );
    assert_eq!(
        scmi.sensor().continuous_update_notify(0, true).unwrap_err(),
        ScmiError::Status(ScmiStatus::NotSupported)
    );
    assert!(!scmi
        .implements(
            proto::SENSOR,
            fwipc_scmi_virtio::protocol::ids::sensor::CONTINUOUS_UPDATE_NOTIFY
        )
        .unwrap());
    assert!(!scmi.sensor().descriptions_vec().unwrap()[0].async_read());
    assert_eq!(
        scmi.clock().rate_set_async(0, 100_000_000, 0).unwrap_err(),
        ScmiError::Status(ScmiStatus::NotSupported)
    );
    assert_eq!(scmi.sensor().attributes().unwrap().max_pending, 0);
}

#[test]
fn extended_names_through_name_get() {
    let long = "a_power_domain_with_a_long_name";
    let mut pc = PlatformConfig::full();
    pc.power_domains[0].name = long.to_string();
    pc.clocks[0].name = "cpu_cluster0_core_clock".to_string();
    pc.reset_domains[1].name = "x".repeat(80);
    let scmi = direct(pc);
    let a = scmi.power().domain_attributes(0).unwrap();
    assert_eq!(a.name, &long[..15]);
    assert_ne!(a.attributes & (1 << 27), 0);
    assert_eq!(scmi.power().extended_name(0).unwrap(), long);
    assert_eq!(
        scmi.power().domain_attributes(1).unwrap().attributes & (1 << 27),
        0
    );
    assert_ne!(
        scmi.clock().attributes(0).unwrap().attributes & (1 << 29),
        0
    );
    assert_eq!(
        scmi.clock().extended_name(0).unwrap(),
        "cpu_cluster0_core_clock"
    );
    assert_eq!(scmi.reset().extended_name(1).unwrap().as_bytes().len(), 63);
    assert_eq!(scmi.perf().extended_name(0).unwrap(), "big");
    assert_eq!(scmi.voltage().extended_name(1).unwrap(), "vdd_io");
    assert_eq!(
        scmi.voltage().extended_name(9).unwrap_err(),
        ScmiError::Status(ScmiStatus::NotFound)
    );
}
