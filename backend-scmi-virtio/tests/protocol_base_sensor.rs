//! Base discovery and the sensor protocol against a platform shaped exactly like
//! vhost-device-scmi 0.4 (docs/protocols/scmi.md §6, docs/protocols/virtio.md §2).

mod common;

use common::*;
use fwipc_scmi_virtio::platform::PlatformConfig;
use fwipc_scmi_virtio::protocol::ids::{base, proto, sensor};
use fwipc_scmi_virtio::protocol::notify::Notification;
use fwipc_scmi_virtio::protocol::{Filter, ScmiError};
use fwipc_scmi_virtio::status::ScmiStatus;

#[test]
fn base_discovery_like_vhost_device_scmi() {
    let scmi = direct(PlatformConfig::vhost_device_scmi_like(1));
    let b = scmi.base();
    let v = b.version().unwrap();
    assert_eq!((v.major, v.minor), (2, 0));
    let a = b.attributes().unwrap();
    assert_eq!((a.num_protocols, a.num_agents), (1, 0));
    assert_eq!(b.vendor().unwrap(), "rust-vmm");
    assert_eq!(b.implementation_version().unwrap(), 0);
    assert_eq!(
        b.sub_vendor().unwrap_err(),
        ScmiError::Status(ScmiStatus::NotSupported)
    );
    let e = b.discover_agent(0).unwrap_err();
    assert_eq!(e.status().map(|s| s.raw()), Some(-1));
    assert_eq!(b.protocols().unwrap().as_slice(), &[proto::SENSOR]);
    assert_eq!(b.message_attributes(base::DISCOVER_VENDOR).unwrap(), 0);
    assert_eq!(
        b.message_attributes(base::DISCOVER_AGENT).unwrap_err(),
        ScmiError::Status(ScmiStatus::NotFound)
    );
    assert!(!scmi.implements(proto::BASE, base::DISCOVER_AGENT).unwrap());
    assert!(scmi.implements(proto::SENSOR, sensor::READING_GET).unwrap());
    // A protocol the platform lacks.
    assert_eq!(
        scmi.protocol_version(proto::CLOCK).unwrap_err(),
        ScmiError::Status(ScmiStatus::NotSupported)
    );
}

#[test]
fn sensor_description_config_reading_like_vhost_device_scmi() {
    let scmi = direct(PlatformConfig::vhost_device_scmi_like(2));
    let s = scmi.sensor();
    assert_eq!(s.version().unwrap().major, 3);
    let attrs = s.attributes().unwrap();
    assert_eq!(attrs.num_sensors, 2);
    assert_eq!(attrs.max_pending, 0);
    let d = s.descriptions_vec().unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].name, "fake");
    assert_eq!(d[1].name, "fake1");
    assert_eq!(d[0].num_axes(), 3);
    assert!(d[0].continuous_notify());
    assert!(!d[0].async_read());
    assert_eq!(d[0].id, 0);
    assert_eq!(d[1].id, 1);

    // Disabled until CONFIG_SET bit 0; reading while disabled: INVALID_PARAMETERS.
    assert_eq!(s.config_get(0).unwrap(), 0);
    assert_eq!(
        s.reading(0).unwrap_err(),
        ScmiError::Status(ScmiStatus::InvalidParameters)
    );
    // Only bit 0 is accepted.
    assert_eq!(
        s.config_set(0, 2).unwrap_err(),
        ScmiError::Status(ScmiStatus::NotSupported)
    );
    s.set_enabled(0, true).unwrap();
    assert_eq!(s.config_get(0).unwrap(), 1);
    let mut v = [Default::default(); 3];
    assert_eq!(s.reading_axes(0, &mut v).unwrap(), 3);
    // As the daemon: first reading [0, 100, 200], then the counter bumps.
    assert_eq!(v[0].value, 0);
    assert_eq!(v[0].value + 100, v[1].value);
    assert_eq!(v[0].value + 200, v[2].value);
    let first = v[0].value;
    assert_eq!(
        s.reading(0).unwrap().value,
        first + 1,
        "counter bumps per read"
    );

    // Asynchronous reads are refused (no async support advertised).
    let mut out = [Default::default(); 3];
    assert_eq!(
        s.reading_async(0, &mut out).unwrap_err(),
        ScmiError::Status(ScmiStatus::NotSupported)
    );

    let axes = s.axis_descriptions_vec(0, Some(3)).unwrap();
    let names: Vec<String> = axes.iter().map(|a| a.name.to_string()).collect();
    assert_eq!(names, ["acc_X", "acc_Y", "acc_Z"]);
    assert_eq!(axes[2].attributes_high & 0xFF, 89);
    // Each axis carries its unit (m/s²); the multi-axis sensor itself reports none.
    let units: Vec<(u8, i8)> = axes.iter().map(|a| (a.unit(), a.unit_exponent())).collect();
    assert_eq!(units, [(89, 0); 3]);
    assert_eq!(s.descriptions_vec().unwrap()[0].unit(), 0);
    // Unknown total: taken from the first reply.
    assert_eq!(s.axis_descriptions_vec(0, None).unwrap().len(), 3);

    // Unknown sensor.
    assert!(matches!(s.config_get(7), Err(ScmiError::Status(_))));
}

#[test]
fn continuous_update_notify_tolerates_extra_word_and_notifications_arrive() {
    let mut pc = PlatformConfig::vhost_device_scmi_like(1);
    pc.quirks.notify_reply_extra_word = true;
    let scmi = direct(pc);
    let (log, cb) = recorder();
    let id = scmi
        .subscribe(Filter::exact(proto::SENSOR, sensor::N_UPDATE), cb)
        .unwrap();
    let s = scmi.sensor();
    s.set_enabled(0, true).unwrap();
    s.continuous_update_notify(0, true).unwrap();
    // The extra word after the status is ignored.
    s.continuous_update_notify(0, false).unwrap();
    s.continuous_update_notify(0, true).unwrap();
    assert_eq!(scmi.transport().with_platform(|p| p.sensor_tick()), 1);
    assert_eq!(scmi.pump(), 1);
    let got = log.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let (p, m, body) = &got[0];
    let ev_header = fwipc_scmi_virtio::header::Header::decode(0x5701).unwrap();
    assert_eq!((*p, *m), (ev_header.protocol_id, ev_header.message_id));
    match Notification::decode_body(*p, *m, body).unwrap() {
        Notification::SensorUpdate(u) => {
            assert_eq!((u.agent_id, u.sensor_id, u.count), (0, 0, 3));
            let v0 = u.value(body, 0).unwrap().value;
            assert_eq!(u.value(body, 2).unwrap().value, v0 + 200);
            assert!(u.value(body, 3).is_none());
        }
        other => panic!("{other:?}"),
    }
    assert!(scmi.unsubscribe(id));
    assert!(!scmi.unsubscribe(id));
    scmi.transport().with_platform(|p| p.sensor_tick());
    assert_eq!(scmi.pump(), 1);
    assert_eq!(log.lock().unwrap().len(), 1);
    assert_eq!(scmi.stats().unclaimed_notifications, 1);
}

#[test]
fn v2_sensor_readings_are_8_bytes() {
    let mut pc = PlatformConfig::with_sensors(2);
    pc.sensor_version = 0x20000;
    let scmi = direct(pc);
    let s = scmi.sensor();
    let v = s.reading(1).unwrap();
    assert_eq!(v.value, 1000);
    assert_eq!(v.timestamp, 0);
}

#[test]
fn extended_scalar_descriptor_and_timestamps() {
    let scmi = direct(PlatformConfig::full());
    let s = scmi.sensor();
    let d = s.descriptions_vec().unwrap();
    assert_eq!(d.len(), 3);
    assert!(d[0].extended());
    assert_eq!(d[0].power, Some(1000));
    let r = d[0].range.unwrap();
    assert_eq!((r.min, r.max), (45_000 - 1_000_000, 45_000 + 1_000_000));
    assert_eq!(d[0].num_trip_points(), 2);
    assert!(d[0].async_read());
    assert_eq!(d[1].range, None);
    let v = s.reading(0).unwrap();
    assert_eq!(v.timestamp, 1);
    assert_eq!(s.reading(0).unwrap().timestamp, 2);
    s.trip_point_config(0, (1 << 4) | 3, 50_000).unwrap();
    assert_eq!(
        s.trip_point_config(0, (2 << 4) | 3, 50_000).unwrap_err(),
        ScmiError::Status(ScmiStatus::InvalidParameters)
    );
    let (log, cb) = recorder();
    scmi.subscribe(Filter::protocol(proto::SENSOR), cb).unwrap();
    s.trip_point_notify(0, true).unwrap();
    assert!(scmi.transport().with_platform(|p| p.sensor_trip(0, 0x11)));
    scmi.pump();
    let got = log.lock().unwrap().clone();
    assert_eq!(
        Notification::decode_body(got[0].0, got[0].1, &got[0].2).unwrap(),
        Notification::TripPoint {
            agent_id: 0,
            sensor_id: 0,
            desc: 0x11
        }
    );
}

#[test]
fn full_platform_base_discovery() {
    let scmi = direct(PlatformConfig::full());
    let b = scmi.base();
    assert_eq!(b.vendor().unwrap(), "fwipc");
    assert_eq!(b.sub_vendor().unwrap(), "sim");
    let a = b.discover_agent(1).unwrap();
    assert_eq!((a.id, a.name.as_str()), (1, Some("OSPM")));
    assert_eq!(b.discover_agent(0).unwrap().name, "platform");
    assert_eq!(
        b.discover_agent(9).unwrap_err(),
        ScmiError::Status(ScmiStatus::NotFound)
    );
    b.notify_errors(true).unwrap();
    let (log, cb) = recorder();
    scmi.subscribe(Filter::ALL, cb).unwrap();
    assert!(scmi
        .transport()
        .with_platform(|p| p.raise_error_event(true, &[7, 8])));
    scmi.pump();
    let got = log.lock().unwrap().clone();
    assert_eq!(
        Notification::decode_body(got[0].0, got[0].1, &got[0].2).unwrap(),
        Notification::BaseError {
            agent_id: 0,
            error_status: (1 << 31) | 2
        }
    );
}

#[test]
fn discover_in_one_call() {
    let d = direct(PlatformConfig::full()).base().discover().unwrap();
    assert_eq!(d.vendor, "fwipc");
    assert_eq!(d.sub_vendor.unwrap(), "sim");
    assert_eq!(d.num_agents, 1);
    assert_eq!(d.protocols.as_slice().len(), 8);
    let v = direct(PlatformConfig::vhost_device_scmi_like(3))
        .base()
        .discover()
        .unwrap();
    assert_eq!(v.sub_vendor, None);
    assert_eq!(v.implementation_version, 0);
}

#[test]
fn discover_agent_checks_the_returned_id() {
    let scmi = direct(PlatformConfig::full());
    assert_eq!(scmi.base().discover_agent(u32::MAX).unwrap().id, 1);
    let mut reply = 5u32.to_le_bytes().to_vec();
    reply.extend_from_slice(b"other\0\0\0\0\0\0\0\0\0\0\0");
    scmi.transport()
        .set_fault(fwipc_scmi_virtio::platform::direct::ReplyFault::ReturnValues(reply));
    assert_eq!(
        scmi.base().discover_agent(1).unwrap_err(),
        ScmiError::Malformed(fwipc_scmi_virtio::protocol::Malformed::IdMismatch)
    );
    assert!(format!("{scmi:?}").contains("malformed_replies: 1"));
}
