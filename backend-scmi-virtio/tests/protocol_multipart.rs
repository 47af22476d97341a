//! Multi-part replies: pagination to the writable space (docs/protocols/scmi.md §8 item 11),
//! bounded loops (item 7), DISCOVER_LIST_PROTOCOLS with ≥ 5 protocols (item 12).

mod common;

use common::*;
use fwipc_scmi_virtio::platform::PlatformConfig;
use fwipc_scmi_virtio::protocol::ids::proto;
use fwipc_scmi_virtio::protocol::{Malformed, ScmiError};
use fwipc_transport_api::Transport;

#[test]
fn description_of_20_sensors_through_136_byte_buffers_takes_at_least_5_rounds() {
    // 128-byte return values (136 with header + status): (128 - 4) / 28 = 4 per reply.
    let scmi = direct_sized(PlatformConfig::with_sensors(20), 16, 128, cfg());
    let before = scmi.transport().stats().sent;
    let d = scmi.sensor().descriptions_vec().unwrap();
    let sent = scmi.transport().stats().sent - before;
    assert_eq!(d.len(), 20);
    for (i, s) in d.iter().enumerate() {
        assert_eq!(s.id as usize, i);
        assert_eq!(s.name.to_string(), format!("s{i}"));
    }
    // PROTOCOL_VERSION + PROTOCOL_ATTRIBUTES + the DESCRIPTION_GET rounds.
    let rounds = sent - 2;
    assert!(rounds >= 5, "only {rounds} rounds");
    assert_eq!(rounds, 5);
}

#[test]
fn vhost_style_no_pagination_fails_with_comms_error() {
    let mut pc = PlatformConfig::with_sensors(5);
    pc.quirks.no_pagination = true;
    let scmi = direct(pc);
    let e = scmi.sensor().descriptions_vec().unwrap_err();
    assert_eq!(e.status().map(|s| s.raw()), Some(-7));
}

#[test]
fn remaining_one_forever_is_bounded_everywhere() {
    let mut pc = PlatformConfig::full();
    pc.quirks.remaining_forever = true;
    let scmi = direct(pc);
    let start = scmi.transport().stats().sent;
    assert_eq!(
        scmi.sensor().descriptions_vec().unwrap_err(),
        ScmiError::Malformed(Malformed::NoProgress)
    );
    assert_eq!(
        scmi.sensor().axis_descriptions_vec(2, Some(3)).unwrap_err(),
        ScmiError::Malformed(Malformed::NoProgress)
    );
    // Total unknown in advance: fixed by the first reply (3 + 1), then the lie is caught.
    assert_eq!(
        scmi.sensor().axis_descriptions_vec(2, None).unwrap_err(),
        ScmiError::Malformed(Malformed::NoProgress)
    );
    assert!(matches!(
        scmi.clock().describe_rates(0, |_| {}).unwrap_err(),
        ScmiError::Malformed(Malformed::NoProgress)
    ));
    assert!(matches!(
        scmi.sensor().update_intervals(0, |_| {}).unwrap_err(),
        ScmiError::Malformed(Malformed::NoProgress)
    ));
    assert!(matches!(
        scmi.perf().describe_levels(0, |_| {}).unwrap_err(),
        ScmiError::Malformed(Malformed::NoProgress)
    ));
    assert!(matches!(
        scmi.voltage().describe_levels(0, |_| {}).unwrap_err(),
        ScmiError::Malformed(Malformed::NoProgress)
    ));
    let used = scmi.transport().stats().sent - start;
    assert!(used < 40, "{used} commands: loops not bounded tightly");
    assert!(scmi.stats().malformed_replies >= 7);
}

#[test]
fn round_cap_stops_long_enumerations() {
    let mut c = cfg();
    c.max_rounds = 2;
    let scmi = direct_sized(PlatformConfig::with_sensors(20), 16, 128, c);
    assert_eq!(
        scmi.sensor().descriptions_vec().unwrap_err(),
        ScmiError::Malformed(Malformed::TooManyRounds)
    );
}

#[test]
fn list_protocols_with_8_protocols_round_trips_in_every_page_size() {
    let expected = [
        proto::POWER,
        proto::SYSTEM,
        proto::PERF,
        proto::CLOCK,
        proto::SENSOR,
        proto::RESET,
        proto::VOLTAGE,
        proto::FWIPC_TEST,
    ];
    for max_entries in [0usize, 1, 3, 4, 5] {
        let mut pc = PlatformConfig::full();
        pc.quirks.max_entries_per_reply = max_entries;
        let scmi = direct(pc);
        let before = scmi.transport().stats().sent;
        let l = scmi.base().protocols().unwrap();
        assert_eq!(l.as_slice(), &expected, "page size {max_entries}");
        let rounds = scmi.transport().stats().sent - before - 1;
        let want = if max_entries == 0 {
            1
        } else {
            expected.len().div_ceil(max_entries)
        };
        assert_eq!(rounds as usize, want);
    }
    // Small transport buffers paginate too: 8-byte return values = count + one packed word.
    let scmi = direct_sized(PlatformConfig::full(), 4, 8, cfg());
    assert_eq!(scmi.base().protocols().unwrap().as_slice(), &expected);
}

#[test]
fn vhost_packing_defect_is_visible() {
    // vhost-device-scmi packs id i into word i % 4: with 8 protocols the ids collide.
    let mut pc = PlatformConfig::full();
    pc.quirks.list_protocols_bad_packing = true;
    let scmi = direct(pc);
    let l = scmi.base().protocols().unwrap();
    assert_ne!(
        l.as_slice()[4..],
        [
            proto::SENSOR,
            proto::RESET,
            proto::VOLTAGE,
            proto::FWIPC_TEST
        ]
    );
}

#[test]
fn discrete_and_segmented_descriptions() {
    let scmi = direct_sized(PlatformConfig::full(), 16, 32, cfg());
    let mut rates = Vec::new();
    let d = scmi.clock().describe_rates(0, |r| rates.push(r)).unwrap();
    assert_eq!(
        d,
        fwipc_scmi_virtio::protocol::clock::RateDescription::Discrete { count: 6 }
    );
    assert_eq!(rates[5], 5_000_000_000, "64-bit rates as (low, high)");
    let r = scmi.clock().describe_rates(1, |_| panic!("range")).unwrap();
    assert!(matches!(
        r,
        fwipc_scmi_virtio::protocol::clock::RateDescription::Range { min: 1_000_000, .. }
    ));
    let mut levels = Vec::new();
    assert_eq!(
        scmi.perf().describe_levels(0, |l| levels.push(*l)).unwrap(),
        12
    );
    assert_eq!(levels[11].perf, 1200);
    let mut iv = Vec::new();
    assert_eq!(
        scmi.sensor().update_intervals(0, |w| iv.push(w)).unwrap(),
        fwipc_scmi_virtio::protocol::sensor::IntervalDescription::Discrete { count: 10 }
    );
    assert_eq!(iv[9] >> 5, 2000);
    assert_eq!(iv[9] & 0x1F, 0x1D, "exponent -3");
    assert_eq!(
        scmi.sensor().update_intervals(1, |_| {}).unwrap_err(),
        ScmiError::Status(fwipc_scmi_virtio::status::ScmiStatus::NotSupported)
    );
    let mut uv = Vec::new();
    scmi.voltage().describe_levels(0, |l| uv.push(l)).unwrap();
    assert_eq!(uv[0], -50_000, "negative levels are legal");
    assert_eq!(uv.len(), 6);
    assert_eq!(
        scmi.voltage().describe_levels(1, |_| {}).unwrap(),
        fwipc_scmi_virtio::protocol::voltage::LevelDescription::Range {
            min: 1_650_000,
            max: 3_600_000,
            step: 50_000
        }
    );
}

mod list_protocols_proptest {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// Any set of 5..=200 protocol ids round-trips through DISCOVER_LIST_PROTOCOLS (byte
        /// i % 4 of word i / 4) whatever the page size and transport buffer.
        #[test]
        fn list_round_trips(
            ids in proptest::collection::btree_set(0x11u8..=0xFF, 5..=200),
            max_entries in 0usize..=9,
            words in 2usize..=32,
        ) {
            let ids: Vec<u8> = ids.into_iter().rev().collect();
            let pc = PlatformConfig {
                test_protocol: false,
                extra_protocols: ids.clone(),
                quirks: fwipc_scmi_virtio::platform::Quirks {
                    max_entries_per_reply: max_entries,
                    ..Default::default()
                },
                ..PlatformConfig::default()
            };
            let scmi = direct_sized(pc, 4, words * 4, cfg());
            let l = scmi.base().protocols().unwrap();
            prop_assert_eq!(l.as_slice(), &ids[..]);
            prop_assert_eq!(scmi.protocol_version(ids[0]).unwrap().major, 1);
        }
    }
}
