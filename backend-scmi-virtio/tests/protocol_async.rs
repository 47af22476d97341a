//! Delayed responses, notifications and deadlines (docs/protocols/scmi.md §8 items 2, 4, 8, 9).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fwipc_scmi_virtio::header::{Header, MsgType};
use fwipc_scmi_virtio::platform::direct::ReplyFault;
use fwipc_scmi_virtio::platform::PlatformConfig;
use fwipc_scmi_virtio::platform::{direct::DirectTransport, Platform, PlatformModel};
use fwipc_scmi_virtio::protocol::ids::{proto, sensor};
use fwipc_scmi_virtio::protocol::sensor::SensorValue;
use fwipc_scmi_virtio::protocol::{Config, Filter, Scmi, ScmiError};
use fwipc_transport_api::{Error, StdClock, Transport};
use std::collections::VecDeque;

fn short(cmd_ms: u64, delayed_ms: u64) -> Config {
    cfg().with_timeouts(
        Duration::from_millis(cmd_ms),
        Duration::from_millis(delayed_ms),
    )
}

#[test]
fn async_sensor_reading_uses_the_delayed_response() {
    let scmi = direct(PlatformConfig::full());
    let mut v = [SensorValue::default(); 2];
    assert_eq!(scmi.sensor().reading_async(0, &mut v).unwrap(), 1);
    assert_eq!(v[0].value, 45_000);
    assert_eq!(v[0].timestamp, 1);
    let st = scmi.stats();
    assert_eq!(st.delayed_responses, 1);
    assert_eq!(st.unexpected_delayed, 0);
}

#[test]
fn delayed_deadline_may_not_be_shorter_than_the_command_deadline() {
    let t = DirectTransport::new(Platform::new(PlatformConfig::full()));
    let c = cfg().with_timeouts(Duration::from_secs(2), Duration::from_secs(1));
    assert!(matches!(
        Scmi::new(t, StdClock::new(), c),
        Err(ScmiError::InvalidArgument)
    ));
}

#[test]
fn silent_platform_times_out_within_the_deadline() {
    let scmi = direct_sized(PlatformConfig::full(), 16, 128, short(100, 100));
    scmi.transport().set_fault(ReplyFault::Drop);
    let t0 = Instant::now();
    assert_eq!(
        scmi.base().vendor().unwrap_err(),
        ScmiError::Transport(Error::Timeout)
    );
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(100), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(scmi.transport().stats().timed_out, 1);
    scmi.transport().set_fault(ReplyFault::None);
    assert_eq!(scmi.base().vendor().unwrap(), "fwipc");
    assert_eq!(scmi.transport().stats().pool_free, 16);
}

#[test]
fn missing_delayed_response_times_out_and_a_late_one_is_dropped() {
    let scmi = direct_sized(PlatformConfig::full(), 16, 128, short(200, 200));
    scmi.transport().with_platform(|p| p.set_hold_p2a(true));
    let t0 = Instant::now();
    let mut v = [SensorValue::default(); 1];
    assert_eq!(
        scmi.sensor().reading_async(0, &mut v).unwrap_err(),
        ScmiError::Transport(Error::Timeout)
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(scmi.stats().delayed_timeouts, 1);
    // The platform finally sends it: nobody waits any more, so it is counted and dropped.
    scmi.transport().with_platform(|p| p.set_hold_p2a(false));
    assert_eq!(scmi.pump(), 1);
    assert_eq!(scmi.stats().unexpected_delayed, 1);
    // The next asynchronous read is not confused by it.
    assert_eq!(scmi.sensor().reading_async(0, &mut v).unwrap(), 1);
    assert_eq!(v[0].value, 45_000 + 1);
}

#[test]
fn delayed_response_before_the_synchronous_reply_is_kept() {
    let scmi = Arc::new(direct(PlatformConfig::full()));
    scmi.transport().set_hold(true);
    let s2 = scmi.clone();
    let h = std::thread::spawn(move || {
        let mut v = [SensorValue::default(); 1];
        s2.sensor().reading_async(0, &mut v).map(|_| v[0].value)
    });
    // Another thread pumps the eventq while the synchronous reply is still held back: the
    // delayed response arrives first and must wait in its slot.
    let t0 = Instant::now();
    while scmi.stats().delayed_responses == 0 {
        scmi.pump();
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "delayed response never pumped"
        );
        std::thread::yield_now();
    }
    scmi.transport().release();
    assert_eq!(h.join().unwrap().unwrap(), 45_000);
    assert_eq!(scmi.stats().unexpected_delayed, 0);
}

/// Wraps the platform: every delayed response is preceded by a copy with the same token but
/// the message id + 1 (a platform mixing up identities).
struct Twisted {
    inner: Platform,
    queue: VecDeque<(u32, Vec<u8>)>,
}

impl PlatformModel for Twisted {
    fn handle_command(&mut self, req: &[u8], resp: &mut [u8]) -> usize {
        let n = self.inner.handle_command(req, resp);
        let mut buf = [0u8; 256];
        while let Some(k) = self.inner.next_p2a(&mut buf) {
            let h = u32::from_le_bytes(buf[..4].try_into().unwrap());
            let body = buf[4..k].to_vec();
            if let Ok(hd) = Header::decode(h) {
                if hd.msg_type == MsgType::DelayedResponse {
                    let wrong = Header {
                        message_id: hd.message_id.wrapping_add(1),
                        ..hd
                    };
                    self.queue.push_back((wrong.encode(), body.clone()));
                }
            }
            self.queue.push_back((h, body));
        }
        n
    }
    fn next_p2a(&mut self, buf: &mut [u8]) -> Option<usize> {
        let (h, body) = self.queue.pop_front()?;
        let n = 4 + body.len();
        buf.get_mut(..4)?.copy_from_slice(&h.to_le_bytes());
        buf.get_mut(4..n)?.copy_from_slice(&body);
        Some(n)
    }
    fn queue_notification(&mut self, p: u8, m: u8, b: &[u8]) {
        self.inner.queue_notification(p, m, b)
    }
}

#[test]
fn delayed_response_with_wrong_message_id_is_counted_and_dropped() {
    let t = DirectTransport::new(Twisted {
        inner: Platform::new(PlatformConfig::full()),
        queue: VecDeque::new(),
    });
    let scmi = Scmi::new(t, StdClock::new(), cfg()).unwrap();
    let mut v = [SensorValue::default(); 1];
    assert_eq!(scmi.sensor().reading_async(0, &mut v).unwrap(), 1);
    assert_eq!(v[0].value, 45_000);
    let st = scmi.stats();
    assert_eq!((st.delayed_responses, st.unexpected_delayed), (1, 1));
}

#[test]
fn notifications_reach_matching_subscribers_in_order() {
    let scmi = direct(PlatformConfig::full());
    let (all, cb_all) = recorder();
    let (sens, cb_sens) = recorder();
    let (none, cb_none) = recorder();
    scmi.subscribe(Filter::ALL, cb_all).unwrap();
    scmi.subscribe(Filter::exact(proto::SENSOR, sensor::N_UPDATE), cb_sens)
        .unwrap();
    scmi.subscribe(Filter::protocol(proto::VOLTAGE), cb_none)
        .unwrap();
    for i in 0..10u8 {
        scmi.transport()
            .with_platform(|p| p.queue_notification(0x81, 0, &[i; 4]));
    }
    scmi.sensor().set_enabled(2, true).unwrap();
    scmi.sensor().continuous_update_notify(2, true).unwrap();
    scmi.transport().with_platform(|p| p.sensor_tick());
    assert_eq!(scmi.pump(), 11);
    let all = all.lock().unwrap();
    assert_eq!(all.len(), 11);
    for (i, (p, m, b)) in all.iter().take(10).enumerate() {
        assert_eq!((*p, *m, b.as_slice()), (0x81, 0, &[i as u8; 4][..]));
    }
    assert_eq!(sens.lock().unwrap().len(), 1);
    assert!(none.lock().unwrap().is_empty());
    assert_eq!(scmi.stats().notifications, 11);
}

#[test]
fn subscriber_table_is_fixed() {
    let mut c = cfg();
    c.max_subscribers = 2;
    let scmi = direct_sized(PlatformConfig::full(), 4, 128, c);
    let (_l, cb) = recorder();
    let a = scmi.subscribe(Filter::ALL, cb.clone()).unwrap();
    scmi.subscribe(Filter::ALL, cb.clone()).unwrap();
    assert!(scmi.subscribe(Filter::ALL, cb.clone()).is_none());
    assert!(scmi.unsubscribe(a));
    assert!(scmi.subscribe(Filter::ALL, cb).is_some());
}

#[test]
fn pending_delayed_table_full_is_busy() {
    let mut c = short(50, 50);
    c.max_pending_delayed = 0;
    let scmi = direct_sized(PlatformConfig::full(), 4, 128, c);
    let mut v = [SensorValue::default(); 1];
    assert_eq!(
        scmi.sensor().reading_async(0, &mut v).unwrap_err(),
        ScmiError::Transport(Error::Busy)
    );
}

#[test]
fn token_stays_reserved_until_the_delayed_response_arrives() {
    let scmi = Arc::new(direct_sized(
        PlatformConfig::full(),
        4,
        128,
        short(2_000, 10_000),
    ));
    scmi.transport().with_platform(|p| p.set_hold_p2a(true));
    let s2 = scmi.clone();
    let h = std::thread::spawn(move || {
        let mut v = [SensorValue::default(); 1];
        s2.sensor().reading_async(0, &mut v).map(|_| v[0].value)
    });
    // Wait until the synchronous part is done and the agent waits for the delayed response.
    let t0 = Instant::now();
    while scmi.transport().with_platform(|p| p.pending_p2a()) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5));
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(20));
    // 2000 other commands go through the 3 remaining slots; the waiting transfer's slot and token
    // are never reused.
    for _ in 0..2000 {
        scmi.base().implementation_version().unwrap();
        assert_eq!(scmi.transport().stats().pool_free, 3);
    }
    scmi.transport().with_platform(|p| p.set_hold_p2a(false));
    assert_eq!(h.join().unwrap().unwrap(), 45_000);
    assert_eq!(scmi.transport().stats().pool_free, 4);
    assert_eq!(scmi.stats().unexpected_delayed, 0);
}

#[test]
fn delayed_response_larger_than_its_slot_is_an_error_not_a_truncation() {
    let mut c = cfg();
    c.delayed_buf_size = 8; // status + sensor id only: the 16-byte reading does not fit
    let scmi = direct_sized(PlatformConfig::full(), 4, 128, c);
    let mut v = [SensorValue::default(); 1];
    assert_eq!(
        scmi.sensor().reading_async(0, &mut v).unwrap_err(),
        ScmiError::BufferTooSmall
    );
    assert_eq!(scmi.transport().stats().pool_free, 4);
    let mut bad = cfg();
    bad.p2a_buf_size = 4;
    assert!(matches!(
        Scmi::new(
            DirectTransport::new(Platform::new(PlatformConfig::full())),
            StdClock::new(),
            bad
        ),
        Err(ScmiError::InvalidArgument)
    ));
}

#[test]
fn raw_commands_with_their_own_deadline() {
    let scmi = direct(PlatformConfig::full());
    // ECHO of the fwipc test protocol: any length, every byte inverted.
    let mut out = [0u8; 16];
    let n = scmi.command_raw(0x81, 0x3, &[1, 2, 3], &mut out).unwrap();
    assert_eq!(&out[..n], &[!1u8, !2, !3]);
    scmi.transport().set_fault(ReplyFault::Drop);
    let t0 = Instant::now();
    assert_eq!(
        scmi.command_raw_timeout(0x81, 0x3, &[1], &mut out, Duration::from_millis(30))
            .unwrap_err(),
        ScmiError::Transport(Error::Timeout)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "config deadline (5 s) not overridden"
    );
}

#[test]
fn a_callback_that_pumps_does_not_deadlock() {
    let scmi = Arc::new(direct(PlatformConfig::full()));
    let weak = Arc::downgrade(&scmi);
    let inner = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let i2 = inner.clone();
    scmi.subscribe(
        Filter::ALL,
        Arc::new(move |_ev: &fwipc_scmi_virtio::protocol::Event<'_>| {
            if let Some(s) = weak.upgrade() {
                i2.store(s.pump(), std::sync::atomic::Ordering::SeqCst);
            }
        }),
    )
    .unwrap();
    scmi.transport()
        .with_platform(|p| p.queue_notification(0x81, 0, &[1, 2, 3, 4]));
    assert_eq!(scmi.pump(), 1);
    assert_eq!(inner.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A platform whose eventq carries the given raw (header, body) messages.
struct RawP2a(VecDeque<(u32, Vec<u8>)>);

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

#[test]
fn p2a_header_hygiene() {
    let good = Header {
        message_id: 1,
        msg_type: MsgType::Notification,
        protocol_id: 0x15,
        token: 0,
    };
    let msgs = VecDeque::from(vec![
        (good.encode() | 0x1000_0000, vec![0; 4]), // reserved bit
        ((good.encode() & !(3 << 8)) | (1 << 8), vec![0; 4]), // type 1
        (good.encode() & !(3 << 8), vec![0; 4]),   // a command on the eventq
        // A notification with a non-zero token: the token is ignored.
        (
            Header {
                token: 0x155,
                ..good
            }
            .encode(),
            vec![0; 24],
        ),
    ]);
    let scmi = Scmi::new(DirectTransport::new(RawP2a(msgs)), StdClock::new(), cfg()).unwrap();
    let (log, cb) = recorder();
    scmi.subscribe(Filter::exact(0x15, 1), cb).unwrap();
    assert_eq!(scmi.pump(), 4);
    let st = scmi.stats();
    assert_eq!(st.bad_p2a, 3);
    assert_eq!(st.notifications, 1);
    assert_eq!(log.lock().unwrap().len(), 1);
}

/// Waiting for a delayed response pauses the configured way (the agent's one `Wait`): a
/// `SpinThenYield` that never runs out of spins never relaxes, and a `Completion` parker naps
/// between pumps instead of spinning.
#[test]
fn delayed_response_wait_follows_the_configured_wait() {
    use fwipc_transport_api::{Parker, Wait};
    use std::sync::atomic::{AtomicU32, Ordering};

    static RELAXED: AtomicU32 = AtomicU32::new(0);
    fn relax() {
        // Relaxed: a test counter read after the call returns on this thread.
        RELAXED.fetch_add(1, Ordering::Relaxed);
    }
    let mut c = short(100, 100);
    c.wait = Wait::SpinThenYield {
        spins: u32::MAX,
        relax: &relax,
    };
    let scmi = direct_sized(PlatformConfig::full(), 16, 128, c);
    scmi.transport().with_platform(|p| p.set_hold_p2a(true));
    let mut v = [SensorValue::default(); 1];
    assert!(scmi.sensor().reading_async(0, &mut v).is_err());
    assert_eq!(
        RELAXED.load(Ordering::Relaxed),
        0,
        "relaxed before the spins ran out"
    );

    struct Napper(AtomicU32, std::task::Waker);
    impl Parker for Napper {
        fn waker(&self) -> &std::task::Waker {
            &self.1
        }
        fn park_timeout(&self, t: Duration) {
            // Relaxed: a test counter.
            self.0.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(t);
        }
    }
    static NAPPER: std::sync::LazyLock<Napper> =
        std::sync::LazyLock::new(|| Napper(AtomicU32::new(0), std::task::Waker::noop().clone()));
    let mut c = short(100, 100);
    c.wait = Wait::Completion(&*NAPPER);
    let scmi = direct_sized(PlatformConfig::full(), 16, 128, c);
    scmi.transport().with_platform(|p| p.set_hold_p2a(true));
    assert!(scmi.sensor().reading_async(0, &mut v).is_err());
    let naps = NAPPER.0.load(Ordering::Relaxed);
    // 100 ms of 50 µs naps (each at least 50 µs): more than one, far fewer than a spin loop's.
    assert!((2..=2_000).contains(&naps), "{naps} naps");
}
