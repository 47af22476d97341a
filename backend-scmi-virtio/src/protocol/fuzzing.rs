//! Fuzzing entry points: one `fn(&[u8])` per parser of platform input (feature `fuzzing`, used by
//! the fuzz targets in `fuzz/`). None may panic; each is also run over random and structured
//! inputs by the tests below.

use super::multipart::Pager;
use super::notify::Notification;
use super::sensor::{self, SensorValue};
use super::wire::Reader;
use super::{base, common};
use crate::header::Header;
use crate::status::ScmiStatus;

/// A fuzzing entry point.
pub type Entry = fn(&[u8]);

/// Every entry point, by name.
pub const ENTRIES: &[(&str, Entry)] = &[
    ("header", header),
    ("status", status),
    ("version", version),
    ("long_name", long_name),
    ("base_attributes", base_attributes),
    ("base_name", base_name),
    ("base_agent", base_agent),
    ("base_protocol_page", base_protocol_page),
    ("sensor_attributes", sensor_attributes),
    ("sensor_description_page", sensor_description_page),
    ("sensor_axis_page", sensor_axis_page),
    ("sensor_readings", sensor_readings),
    ("sensor_intervals_page", sensor_intervals_page),
    ("sensor_async_readings", sensor_async_readings),
    ("notification", notification),
    ("clock", clock),
    ("perf", perf),
    ("power", power),
    ("reset", reset),
    ("voltage", voltage),
];

/// SCMI header word (first 4 bytes).
pub fn header(b: &[u8]) {
    if let Ok(h) = Header::decode_bytes(b) {
        let _ = Header::decode(h.encode());
    }
}

/// Status word.
pub fn status(b: &[u8]) {
    if let Some(w) = b.first_chunk::<4>() {
        let s = ScmiStatus::from_word(u32::from_le_bytes(*w));
        let _ = (s.raw(), s.errno(), s.name());
    }
}

/// PROTOCOL_VERSION reply.
pub fn version(b: &[u8]) {
    let _ = common::parse_version(&mut Reader::new(b));
}

/// `*_NAME_GET` reply.
pub fn long_name(b: &[u8]) {
    let _ = common::parse_long_name(&mut Reader::new(b));
}

/// Base PROTOCOL_ATTRIBUTES reply.
pub fn base_attributes(b: &[u8]) {
    let _ = base::parse_attributes(&mut Reader::new(b));
}

/// DISCOVER_VENDOR reply.
pub fn base_name(b: &[u8]) {
    let _ = base::parse_name(&mut Reader::new(b));
}

/// DISCOVER_AGENT reply.
pub fn base_agent(b: &[u8]) {
    let _ = base::parse_agent(&mut Reader::new(b));
}

/// DISCOVER_LIST_PROTOCOLS page; the first byte picks the room left (0..=255).
pub fn base_protocol_page(b: &[u8]) {
    let (room, rest) = b.split_first().map_or((0, b), |(r, rest)| (*r, rest));
    let mut out = [0u8; 255];
    let n = usize::from(room);
    let _ = base::parse_protocol_page(&mut Reader::new(rest), &mut out[..n]);
}

/// Sensor PROTOCOL_ATTRIBUTES reply.
pub fn sensor_attributes(b: &[u8]) {
    let _ = sensor::parse_attributes(&mut Reader::new(b));
}

/// SENSOR_DESCRIPTION_GET page (v3 parsing); first byte = advertised sensor count.
pub fn sensor_description_page(b: &[u8]) {
    let (n, rest) = b.split_first().map_or((0, b), |(r, rest)| (*r, rest));
    for v3 in [false, true] {
        let mut pager = Pager::new(Some(u32::from(n)), 4);
        let mut seen = 0u32;
        let _ = sensor::parse_description_page(
            &mut Reader::new(rest),
            v3,
            u32::from(n),
            &mut pager,
            &mut |_| seen += 1,
        );
    }
}

/// SENSOR_AXIS_DESCRIPTION_GET page.
pub fn sensor_axis_page(b: &[u8]) {
    let mut pager = Pager::new(None, 4);
    let _ = sensor::parse_axis_page(&mut Reader::new(b), &mut pager, &mut |_| {});
}

/// SENSOR_READING_GET reply.
pub fn sensor_readings(b: &[u8]) {
    let mut out = [SensorValue::default(); 4];
    let _ = sensor::parse_readings(&mut Reader::new(b), &mut out);
}

/// SENSOR_LIST_UPDATE_INTERVALS page.
pub fn sensor_intervals_page(b: &[u8]) {
    let mut pager = Pager::new(None, 4);
    let _ = sensor::parse_intervals_page(&mut Reader::new(b), &mut pager, &mut |_| {});
}

/// Asynchronous reading delayed-response body.
pub fn sensor_async_readings(b: &[u8]) {
    let mut out = [SensorValue::default(); 4];
    let _ = sensor::parse_async_readings(&mut Reader::new(b), 0, &mut out);
}

/// Notification body; the first two bytes pick protocol and message id.
pub fn notification(b: &[u8]) {
    let (p, m, rest) = match b {
        [p, m, rest @ ..] => (*p, *m, rest),
        _ => return,
    };
    if let Ok(Notification::SensorUpdate(u)) = Notification::decode_body(p, m, rest) {
        for i in 0..u.count.saturating_add(1) {
            let _ = u.value(rest, i);
        }
    }
}

/// Every clock reply parser.
pub fn clock(b: &[u8]) {
    super::clock::fuzz_all(b);
}

/// Every performance reply parser.
pub fn perf(b: &[u8]) {
    super::perf::fuzz_all(b);
}

/// Every power domain reply parser.
pub fn power(b: &[u8]) {
    super::power::fuzz_all(b);
}

/// Every reset reply parser.
pub fn reset(b: &[u8]) {
    super::reset::fuzz_all(b);
}

/// Every voltage reply parser.
pub fn voltage(b: &[u8]) {
    super::voltage::fuzz_all(b);
}

#[cfg(test)]
mod tests {
    use super::ENTRIES;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn entries_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for (_, f) in ENTRIES {
                f(&bytes);
            }
        }
    }

    #[test]
    fn entries_see_structured_inputs() {
        // Seeds that pass the first checks, so the deeper code runs too.
        let mut page = vec![20u8];
        page.extend_from_slice(&(2u32 | (18 << 16)).to_le_bytes());
        for id in 0..2u32 {
            page.extend_from_slice(&id.to_le_bytes());
            page.extend_from_slice(&(1u32 << 8).to_le_bytes());
            page.extend_from_slice(&0u32.to_le_bytes());
            page.extend_from_slice(b"abc\0\0\0\0\0\0\0\0\0\0\0\0\0");
            page.extend_from_slice(&[0u8; 24]);
        }
        for (_, f) in ENTRIES {
            f(&page);
            f(&page[1..]);
            for cut in 0..page.len() {
                f(&page[..cut]);
            }
        }
    }
}
