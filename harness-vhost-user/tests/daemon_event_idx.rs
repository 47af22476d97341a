//! `VIRTIO_F_RING_EVENT_IDX` against the real vhost-device-scmi: the unmodified backend
//! negotiates it (the daemon offers bit 29; virtio-queue then honours `used_event` before
//! signalling the call eventfd and reads our kicks against `avail_event`), and drives more than
//! 65 536 requests through the cmdq, in pipelined batches whose windows straddle the u16 wrap of
//! both ring indices, in interrupt mode (a wrong `used_event` means no interrupt: the waits time
//! out) and polled mode. Every reply is checked: SENSOR_READING_GET on the fake sensor returns a
//! per-read counter, so each reply must carry exactly the counter of its place in the sequence.

mod common;

use std::time::Instant;

use fwipc_scmi_virtio::virtio::{ScmiFeatures, ScmiVirtioConfig};
use fwipc_transport_api::{Completion, Ticket, Transport};

use common::backend::BackendFixture;
use common::scenarios::{self, counter_of, finish, le_words, SENSOR_READING_GET};

/// Requests per mode: past the u16 wrap of the avail and used indices, with margin for the
/// setup commands.
const TOTAL: u32 = 66_000 + 1024;

#[test]
fn backend_event_idx_across_u16_wrap() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        let Some(fx) = BackendFixture::start(mode, ScmiVirtioConfig::default()) else {
            return;
        };
        let t = fx.chan();
        assert!(
            t.features().contains(ScmiFeatures::RING_EVENT_IDX),
            "{mode:?}: EVENT_IDX negotiated with the daemon: {:?}",
            t.features()
        );
        assert_ne!(
            t.with_transport(|vt| vt.driver_features()) & (1 << 29),
            0,
            "SET_FEATURES carried bit 29"
        );
        let c0 = scenarios::enable_sensor(&fx);
        let payload = le_words(&[0, 0]);
        let cap = t.max_msg() as u32;
        assert!(cap >= 256, "{cap}");
        let (mut n, mut batches, mut seed) = (0u32, 0u32, 0x2545_f491u32);
        let start = Instant::now();
        while n < TOTAL {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            // Mostly small batches (many kick/interrupt decisions), sometimes the whole cmdq.
            let size = match seed % 8 {
                0 => cap,
                1..=3 => 1,
                _ => 1 + (seed >> 3) % 64,
            }
            .min(TOTAL - n);
            // Around the wrap (the avail index is `n` plus the two setup commands): first one
            // batch that straddles it, then lock-step single requests, where the daemon is idle
            // at every post, so every kick decision across 65535 -> 0 must say "kick" (a
            // wrap-unsafe comparison stalls here and the wait fails), then batches again.
            let size = match n {
                65_000..65_300 => 400,
                65_400..65_700 => 1,
                _ => size,
            }
            .min(TOTAL - n);
            let tickets: Vec<Ticket> = (0..size)
                .map(|i| {
                    t.send(&scenarios::request(&fx, SENSOR_READING_GET, &payload))
                        .unwrap_or_else(|e| panic!("{mode:?}: send {} of batch {batches}: {e}", i))
                })
                .collect();
            for tk in tickets {
                let r = finish(&fx, tk).unwrap_or_else(|e| {
                    panic!("{mode:?}: request {n} (batch {batches} of {size}): {e}")
                });
                n += 1;
                assert_eq!(
                    counter_of(&r),
                    c0.wrapping_add(n as u8),
                    "{mode:?}: reply to request {n} (batch {batches})"
                );
            }
            batches += 1;
        }
        eprintln!(
            "{mode:?}: {n} requests in {batches} pipelined batches with EVENT_IDX in {:?}",
            start.elapsed()
        );
        let s = t.stats();
        assert!(s.completed > u64::from(TOTAL), "{s:?}");
        assert_eq!(
            (s.protocol_errors, s.unknown_replies, s.duplicate_replies),
            (0, 0, 0),
            "{s:?}"
        );
        scenarios::assert_pool_full(&fx, "after the wrap");
    }
}
