//! A hostile platform and a hostile agent: total status mapping (docs/protocols/scmi.md §8 item
//! 13), replies with the wrong identity (item 4), fuzzed replies into every parser (item 3), a
//! platform that never panics (item 11), and two platforms side by side (item 1).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use fwipc_scmi_virtio::header::Header;
use fwipc_scmi_virtio::platform::direct::{DirectTransport, ReplyFault};
use fwipc_scmi_virtio::platform::{Platform, PlatformConfig, PlatformModel, SensorConfig};
use fwipc_scmi_virtio::protocol::sensor::SensorValue;
use fwipc_scmi_virtio::protocol::{Scmi, ScmiError};
use fwipc_scmi_virtio::status::ScmiStatus;
use fwipc_transport_api::{Error, StdClock, Transport};
use proptest::prelude::*;

/// Answers every command with one status and no return values.
struct StatusPlatform(i32);

impl PlatformModel for StatusPlatform {
    fn handle_command(&mut self, req: &[u8], resp: &mut [u8]) -> usize {
        let (Some(h), Some(out)) = (req.get(..4), resp.get_mut(..8)) else {
            return 0;
        };
        out[..4].copy_from_slice(h);
        out[4..8].copy_from_slice(&self.0.to_le_bytes());
        8
    }
    fn next_p2a(&mut self, _buf: &mut [u8]) -> Option<usize> {
        None
    }
    fn queue_notification(&mut self, _p: u8, _m: u8, _b: &[u8]) {}
}

/// A platform whose eventq carries the given raw (header, body) messages.
struct RawP2a(std::collections::VecDeque<(u32, Vec<u8>)>);

impl PlatformModel for RawP2a {
    fn handle_command(&mut self, _req: &[u8], _resp: &mut [u8]) -> usize {
        0
    }
    fn next_p2a(&mut self, buf: &mut [u8]) -> Option<usize> {
        let (h, body) = self.0.pop_front()?;
        let n = 4 + body.len();
        buf.get_mut(..4)?.copy_from_slice(&h.to_le_bytes());
        buf.get_mut(4..n)?.copy_from_slice(&body);
        Some(n)
    }
    fn queue_notification(&mut self, _p: u8, _m: u8, _b: &[u8]) {}
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn every_status_maps_to_a_typed_error_keeping_the_code(raw in any::<i32>()) {
        let t = DirectTransport::new(StatusPlatform(raw));
        let scmi = Scmi::new(t, StdClock::new(), cfg()).unwrap();
        match scmi.base().implementation_version() {
            Ok(_) => prop_assert_eq!(raw, 0),
            Err(ScmiError::Status(s)) => {
                prop_assert_eq!(s.raw(), raw);
                prop_assert_eq!(s, ScmiStatus::from_raw(raw));
                prop_assert_eq!(Error::from(ScmiError::Status(s)), Error::Remote(raw));
            }
            // SUCCESS with no return values: a truncated reply.
            Err(e) => prop_assert!(raw == 0 && matches!(e, ScmiError::Malformed(_)), "{e:?}"),
        }
    }

    #[test]
    fn platform_never_panics_on_any_request(
        req in proptest::collection::vec(any::<u8>(), 0..160),
        resp_len in 0usize..200,
        hdr in any::<u32>(),
        use_hdr in any::<bool>(),
    ) {
        let mut p = Platform::new(PlatformConfig::full());
        let mut req = req;
        if use_hdr && req.len() >= 4 {
            // Aim at real protocols so the handlers, not just the decoder, are exercised.
            let h = hdr & 0x0003_FCFF & !(0x3 << 8);
            let proto = 0x10 + ((hdr >> 10) % 9);
            let h = (h & !(0xFF << 10)) | (proto << 10);
            req[..4].copy_from_slice(&h.to_le_bytes());
        }
        let mut resp = vec![0u8; resp_len];
        let n = p.handle_command(&req, &mut resp);
        prop_assert!(n <= resp.len());
        if resp_len >= 8 {
            prop_assert!(n >= 8);
            prop_assert_eq!(&resp[..4], &req.get(..4).map(|h| h.to_vec()).unwrap_or(vec![0;4])[..]);
            let status = i32::from_le_bytes(resp[4..8].try_into().unwrap());
            if status != 0 {
                prop_assert_eq!(n, 8, "non-SUCCESS replies carry the status only");
            }
        }
        let mut buf = [0u8; 64];
        while p.next_p2a(&mut buf).is_some() {}
    }

    /// Well-formed headers and whole-word parameters of plausible values, so the handlers'
    /// logic (not only the length checks) meets hostile input.
    #[test]
    fn platform_never_panics_on_structured_requests(
        cmds in proptest::collection::vec(
            (
                prop_oneof![Just(0x10u8), 0x11u8..=0x17, Just(0x81u8), any::<u8>()],
                0u8..=0x10,
                proptest::collection::vec(
                    prop_oneof![0u32..8, Just(u32::MAX), Just(1 << 31), any::<u32>()],
                    0..=4,
                ),
                8usize..=136,
            ),
            1..40,
        ),
        p2a in any::<bool>(),
        remaining_forever in any::<bool>(),
    ) {
        let mut pc = PlatformConfig::full();
        pc.p2a = p2a;
        pc.quirks.remaining_forever = remaining_forever;
        pc.p2a_capacity = 4;
        let mut p = Platform::new(pc);
        for (proto, msg, words, space) in cmds {
            let mut req = Header::command(proto, msg, 7).to_le_bytes().to_vec();
            for w in &words {
                req.extend_from_slice(&w.to_le_bytes());
            }
            let mut resp = vec![0u8; space];
            let n = p.handle_command(&req, &mut resp);
            prop_assert!((8..=space).contains(&n));
            prop_assert_eq!(&resp[..4], &req[..4]);
            let status = i32::from_le_bytes(resp[4..8].try_into().unwrap());
            if status != 0 {
                prop_assert_eq!(n, 8);
            }
            p.sensor_tick();
        }
        let mut buf = [0u8; 40];
        while p.next_p2a(&mut buf).is_some() {}
        let mut big = [0u8; 512];
        while p.next_p2a(&mut big).is_some() {}
        prop_assert_eq!(p.pending_p2a(), 0);
    }

    #[test]
    fn fuzzed_replies_give_typed_errors(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let scmi = direct_sized(PlatformConfig::full(), 4, 128, cfg());
        scmi.transport().set_fault(ReplyFault::ReturnValues(bytes));
        let ok_or_typed = |r: Result<(), ScmiError>| match r {
            Ok(()) | Err(ScmiError::Malformed(_)) | Err(ScmiError::BufferTooSmall) => Ok(()),
            Err(e) => Err(e),
        };
        let mut v = [SensorValue::default(); 4];
        let results = [
            ok_or_typed(scmi.base().version().map(drop)),
            ok_or_typed(scmi.base().attributes().map(drop)),
            ok_or_typed(scmi.base().vendor().map(drop)),
            ok_or_typed(scmi.base().discover_agent(1).map(drop)),
            ok_or_typed(scmi.base().protocols().map(drop)),
            ok_or_typed(scmi.sensor().attributes().map(drop)),
            ok_or_typed(scmi.sensor().descriptions(|_| {}).map(drop)),
            ok_or_typed(scmi.sensor().axis_descriptions(2, None, |_| {}).map(drop)),
            ok_or_typed(scmi.sensor().reading_axes(0, &mut v).map(drop)),
            ok_or_typed(scmi.sensor().config_get(0).map(drop)),
            ok_or_typed(scmi.sensor().update_intervals(0, |_| {}).map(drop)),
            ok_or_typed(scmi.power().extended_name(0).map(drop)),
            ok_or_typed(scmi.clock().attributes(0).map(drop)),
            ok_or_typed(scmi.clock().describe_rates(0, |_| {}).map(drop)),
            ok_or_typed(scmi.clock().rate_get(0).map(drop)),
            ok_or_typed(scmi.perf().protocol_attributes().map(drop)),
            ok_or_typed(scmi.perf().domain_attributes(0).map(drop)),
            ok_or_typed(scmi.perf().describe_levels(0, |_| {}).map(drop)),
            ok_or_typed(scmi.perf().limits_get(0).map(drop)),
            ok_or_typed(scmi.power().protocol_attributes().map(drop)),
            ok_or_typed(scmi.power().domain_attributes(0).map(drop)),
            ok_or_typed(scmi.reset().domain_attributes(0).map(drop)),
            ok_or_typed(scmi.voltage().domain_attributes(0).map(drop)),
            ok_or_typed(scmi.voltage().describe_levels(0, |_| {}).map(drop)),
            ok_or_typed(scmi.voltage().level_get(0).map(drop)),
        ];
        for (i, r) in results.iter().enumerate() {
            prop_assert!(r.is_ok(), "command {}: {:?}", i, r);
        }
    }

    /// Random P2A traffic through the whole pump path: never a panic, every message accounted.
    #[test]
    fn random_p2a_traffic_is_accounted(
        msgs in proptest::collection::vec(
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64)),
            0..40,
        ),
    ) {
        let n = msgs.len();
        let q: std::collections::VecDeque<_> = msgs.into_iter().collect();
        let scmi = Scmi::new(DirectTransport::new(RawP2a(q)), StdClock::new(), cfg()).unwrap();
        let (log, cb) = recorder();
        scmi.subscribe(fwipc_scmi_virtio::protocol::Filter::ALL, cb).unwrap();
        let mut taken = 0;
        loop {
            let k = scmi.pump();
            if k == 0 { break; }
            taken += k;
        }
        prop_assert_eq!(taken, n);
        let st = scmi.stats();
        prop_assert_eq!(st.bad_p2a + st.notifications + st.unexpected_delayed, n as u64);
        prop_assert_eq!(log.lock().unwrap().len() as u64, st.notifications);
        for (p, m, b) in log.lock().unwrap().iter() {
            let _ = fwipc_scmi_virtio::protocol::notify::Notification::decode_body(*p, *m, b);
        }
    }

}

#[test]
fn reply_with_right_token_but_wrong_message_id_is_dropped() {
    let scmi = direct_sized(
        PlatformConfig::full(),
        4,
        128,
        cfg().with_timeouts(Duration::from_millis(50), Duration::from_millis(50)),
    );
    scmi.transport().set_fault(ReplyFault::WrongMessageId);
    assert_eq!(
        scmi.base().vendor().unwrap_err(),
        ScmiError::Transport(Error::Timeout)
    );
    scmi.transport().set_fault(ReplyFault::WrongToken);
    assert_eq!(
        scmi.base().vendor().unwrap_err(),
        ScmiError::Transport(Error::Timeout)
    );
    let st = scmi.transport().stats();
    assert_eq!(st.unknown_replies, 2);
    assert_eq!(st.completed, 0);
    scmi.transport().set_fault(ReplyFault::None);
    assert_eq!(scmi.base().vendor().unwrap(), "fwipc");
}

#[test]
fn names_without_nul_are_rejected() {
    let scmi = direct(PlatformConfig::full());
    scmi.transport()
        .set_fault(ReplyFault::ReturnValues(b"0123456789abcdef".to_vec()));
    assert_eq!(
        scmi.base().vendor().unwrap_err(),
        ScmiError::Malformed(fwipc_scmi_virtio::protocol::Malformed::BadName)
    );
    assert_eq!(scmi.stats().malformed_replies, 1);
}

#[test]
fn two_platforms_concurrently_without_cross_talk() {
    let mk = |vendor: &str, base: i64| {
        let mut pc = PlatformConfig::with_sensors(0);
        pc.vendor = vendor.to_string();
        pc.sensors = vec![SensorConfig::scalar("t", 2, base)];
        Arc::new(direct(pc))
    };
    let a = mk("alpha", 1_000_000);
    let b = mk("beta", 2_000_000);
    let mut hs = Vec::new();
    for (scmi, vendor, base) in [
        (a.clone(), "alpha", 1_000_000i64),
        (b.clone(), "beta", 2_000_000),
    ] {
        for _ in 0..2 {
            let s = scmi.clone();
            hs.push(std::thread::spawn(move || {
                for _ in 0..300 {
                    assert_eq!(s.base().vendor().unwrap(), vendor);
                    let v = s.sensor().reading(0).unwrap().value;
                    assert!((base..base + 256).contains(&v), "{vendor}: {v}");
                }
            }));
        }
    }
    for h in hs {
        h.join().unwrap();
    }
    // Each platform saw exactly its own agent's commands.
    for s in [&a, &b] {
        let cmds = s.transport().with_platform(|p| p.stats().commands);
        assert_eq!(cmds, 2 * 300 * 2);
        assert_eq!(s.transport().stats().sent, cmds);
    }
}

#[test]
fn header_hygiene_on_the_platform() {
    // Reserved bits or a P2A type in a command: NOT_SUPPORTED, header echoed.
    let mut p = Platform::new(PlatformConfig::full());
    let mut resp = [0u8; 16];
    for w in [0x1000_0003u32 | (0x10 << 10), 0x0000_0203 | (0x10 << 10)] {
        let n = p.handle_command(&w.to_le_bytes(), &mut resp);
        assert_eq!(n, 8);
        assert_eq!(u32::from_le_bytes(resp[..4].try_into().unwrap()), w);
        assert_eq!(i32::from_le_bytes(resp[4..8].try_into().unwrap()), -1);
    }
    // Exact parameter length (vhost-device-scmi requires 4 + 4·n).
    let h = Header::command(0x10, 0x6, 1).to_le_bytes();
    let mut req = h.to_vec();
    req.extend_from_slice(&[0, 0, 0, 0, 0]);
    assert_eq!(p.handle_command(&req, &mut resp), 8);
    assert_eq!(i32::from_le_bytes(resp[4..8].try_into().unwrap()), -10);
}
