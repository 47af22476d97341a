//! The service layer over the simulated VideoCore (master role of the same core): open/close
//! handshakes with fourcc and version negotiation (the `vchiq_test -f` part B rules), quotas and
//! back-pressure, the sync slot, bulk modes, abort, interruption, teardown and re-instantiation.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fwipc_vchiq::consts::{make_fourcc, ConnState, Reason, ServiceState};
use fwipc_vchiq::sim::framed_echo::EchoService;
use fwipc_vchiq::sim::SimPair;
use fwipc_vchiq::{
    BulkDir, BulkMode, Config, Deliver, Event, MessageToken, ServiceCtx, ServiceHandle,
    ServiceHandler, ServiceParams, Vchiq, VchiqError,
};

const FUNC: u32 = make_fourcc(*b"func");
const ECHO: u32 = make_fourcc(*b"echo");
const T: Duration = Duration::from_secs(5);

/// One recorded event: reason, message payload, bulk tag.
type Logged = (Option<Reason>, Vec<u8>, u64);

/// Records every event (reason, payload) a service sees.
#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<Logged>>,
    hold: Mutex<Option<Vec<MessageToken>>>,
}

impl Recorder {
    fn holding() -> Arc<Self> {
        let r = Recorder::default();
        *r.hold.lock().unwrap() = Some(Vec::new());
        Arc::new(r)
    }
    fn reasons(&self) -> Vec<Reason> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| e.0)
            .collect()
    }
    fn messages(&self) -> Vec<Vec<u8>> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.0 == Some(Reason::MessageAvailable))
            .map(|e| e.1.clone())
            .collect()
    }
    fn wait_for(&self, pred: impl Fn(&[Reason]) -> bool) {
        let start = Instant::now();
        while !pred(&self.reasons()) {
            assert!(start.elapsed() < T, "timed out; seen {:?}", self.reasons());
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    fn held(&self) -> Vec<MessageToken> {
        self.hold
            .lock()
            .unwrap()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }
}

impl ServiceHandler for Recorder {
    fn callback(&self, _ctx: &ServiceCtx<'_>, ev: Event<'_>) -> Deliver {
        let reason = ev.reason();
        let (data, tag) = match &ev {
            Event::Message(m) => (m.payload().to_vec(), 0),
            Event::Bulk(c) => (Vec::new(), c.tag),
            _ => (Vec::new(), 0),
        };
        self.log.lock().unwrap().push((reason, data, tag));
        if let Event::Message(m) = ev {
            if let Some(h) = self.hold.lock().unwrap().as_mut() {
                h.push(m.token());
                return Deliver::Hold;
            }
        }
        Deliver::Done
    }
}

fn connected() -> SimPair {
    let p = SimPair::new().unwrap();
    p.connect().unwrap();
    p
}

fn until(mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < T, "condition not reached");
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn connect_sets_common_version_and_states() {
    let p = connected();
    assert_eq!(p.slave().conn_state(), ConnState::Connected);
    assert_eq!(p.master().conn_state(), ConnState::Connected);
    assert_eq!(p.slave().version_common(), 8);
    assert!(p.slave().peer_ready() && p.master().peer_ready());
}

#[test]
fn open_version_negotiation_like_vchiq_test_func() {
    let p = connected();
    let server = Arc::new(Recorder::default());
    p.master()
        .add_service_arc(ServiceParams::new(FUNC).version(3, 2), server.clone())
        .unwrap();
    for (v, vmin) in [(0, 0), (1, 1), (4, 4)] {
        let r = p.slave().open_service_wait(
            ServiceParams::new(FUNC).version(v, vmin),
            Arc::new(Recorder::default()),
            T,
        );
        assert_eq!(r, Err(VchiqError::Refused), "version {v}/{vmin}");
    }
    let r = p.slave().open_service_wait(
        ServiceParams::new(make_fourcc(*b"none")),
        Arc::new(Recorder::default()),
        T,
    );
    assert_eq!(r, Err(VchiqError::Refused), "no such service");
    let h = p
        .slave()
        .open_service_wait(
            ServiceParams::new(FUNC).version(3, 3),
            Arc::new(Recorder::default()),
            T,
        )
        .unwrap();
    assert_eq!(
        p.slave().peer_version(h).unwrap(),
        3,
        "OPENACK carries the server version"
    );
    assert_eq!(p.slave().service_state(h).unwrap(), ServiceState::Open);
    server.wait_for(|r| r.contains(&Reason::ServiceOpened));
    // One listener: a second open is refused ("no more listeners").
    let r = p.slave().open_service_wait(
        ServiceParams::new(FUNC).version(3, 3),
        Arc::new(Recorder::default()),
        T,
    );
    assert_eq!(r, Err(VchiqError::Refused));
}

#[test]
fn duplicate_server_needs_same_handler() {
    let p = connected();
    let a: Arc<dyn ServiceHandler> = Arc::new(Recorder::default());
    p.master()
        .add_service_arc(ServiceParams::new(FUNC), a.clone())
        .unwrap();
    p.master()
        .add_service_arc(ServiceParams::new(FUNC), a)
        .unwrap();
    let b: Arc<dyn ServiceHandler> = Arc::new(Recorder::default());
    assert_eq!(
        p.master().add_service_arc(ServiceParams::new(FUNC), b),
        Err(VchiqError::Invalid)
    );
    assert_eq!(
        p.master()
            .add_service(ServiceParams::new(0), Recorder::default()),
        Err(VchiqError::Invalid)
    );
}

#[test]
fn close_handshake_both_sides_and_listen_again() {
    let p = connected();
    let (server, sh) = add_recorded_server(&p);
    let (client, h) = open_recorded(&p);
    until(|| p.master().client_id(sh).unwrap() == 1);
    p.slave().queue_message(h, b"hello").unwrap();
    server.wait_for(|r| r.contains(&Reason::MessageAvailable));
    assert_eq!(server.messages(), vec![b"hello".to_vec()]);
    p.slave().close_service(h).unwrap();
    client.wait_for(|r| r.contains(&Reason::ServiceClosed));
    server.wait_for(|r| r.contains(&Reason::ServiceClosed));
    assert_eq!(p.slave().service_state(h).unwrap(), ServiceState::Closed);
    until(|| p.master().service_state(sh).unwrap() == ServiceState::Listening);
    assert_eq!(
        p.master().client_id(sh).unwrap(),
        0,
        "client id cleared after close"
    );
    assert_eq!(p.slave().queue_message(h, b"x"), Err(VchiqError::Closed));
    p.slave().remove_service(h).unwrap();
    assert_eq!(
        p.slave().service_state(h),
        Err(VchiqError::Invalid),
        "handle is dead"
    );
    // The listener accepts a new client.
    p.slave()
        .open_service_wait(ServiceParams::new(FUNC), Arc::new(Recorder::default()), T)
        .unwrap();
}

#[test]
fn server_without_autoclose_waits_in_closewait() {
    let p = connected();
    let sh = p
        .master()
        .add_service(
            ServiceParams::new(FUNC).auto_close(false),
            Recorder::default(),
        )
        .unwrap();
    let h = p
        .slave()
        .open_service_wait(ServiceParams::new(FUNC), Arc::new(Recorder::default()), T)
        .unwrap();
    p.slave().remove_service(h).unwrap();
    until(|| p.master().service_state(sh).unwrap() == ServiceState::CloseWait);
    p.master().close_service(sh).unwrap();
    assert_eq!(
        p.master().service_state(sh).unwrap(),
        ServiceState::Listening
    );
}

#[test]
fn remote_initiated_close_reaches_client() {
    let p = connected();
    let (echo, _) = EchoService::add_to(p.master(), ServiceParams::new(ECHO)).unwrap();
    let client = Arc::new(Recorder::default());
    let h = p
        .slave()
        .open_service_wait(ServiceParams::new(ECHO), client.clone(), T)
        .unwrap();
    echo.reset(p.master());
    client.wait_for(|r| r.contains(&Reason::ServiceClosed));
    assert_eq!(p.slave().service_state(h).unwrap(), ServiceState::Closed);
}

#[test]
fn message_quota_backpressure_is_retry_then_recovers() {
    let p = connected();
    let server = Recorder::holding();
    p.master()
        .add_service_arc(ServiceParams::new(FUNC), server.clone())
        .unwrap();
    let h = p
        .slave()
        .open_service_wait(
            ServiceParams::new(FUNC).quotas(0, 4),
            Arc::new(Recorder::default()),
            T,
        )
        .unwrap();
    let big = vec![7u8; 2000];
    for _ in 0..4 {
        p.slave().queue_message(h, &big).unwrap();
    }
    assert_eq!(
        p.slave().queue_message(h, &big),
        Err(VchiqError::Retry),
        "message quota"
    );
    // A blocked send gives up at its deadline, and the caller is told.
    let r = p
        .slave()
        .queue_message_wait(h, &big, Duration::from_millis(20));
    assert_eq!(r, Err(VchiqError::Timeout));
    server.wait_for(|r| r.iter().filter(|x| **x == Reason::MessageAvailable).count() == 4);
    assert!(p.slave().stats().retries >= 1);
    // Half the quota sits in a finished slot that recycling returns: no early padding needed.
    assert_eq!(p.slave().stats().quota_pads, 0);
    // The receiver releases the messages: the slots recycle and the quota comes back.
    for t in server.held() {
        p.master().release_message(t).unwrap();
    }
    p.slave().queue_message_wait(h, &big, T).unwrap();
    server.wait_for(|r| r.iter().filter(|x| **x == Reason::MessageAvailable).count() == 5);
}

/// Quota 1 (message and slot) on **both** sides with small pings: Linux returns quota only when
/// the receiver recycles the slot, so the second ping would wait forever in a quiet system (the
/// receiver never finishes the slot the sender is still writing). The sender now closes that
/// slot with PADDING when it is blocked on quota held there; every ping completes.
#[test]
fn quota_one_small_pings_complete_both_directions() {
    let p = connected();
    let ping = make_fourcc(*b"ping");
    p.master()
        .add_service(ServiceParams::new(ping).quotas(1, 1), common::reverse_echo)
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let tx = Mutex::new(tx);
    let h = p
        .slave()
        .open_service_wait(
            ServiceParams::new(ping).quotas(1, 1),
            Arc::new(move |_: &ServiceCtx<'_>, ev: Event<'_>| {
                if let Event::Message(m) = ev {
                    let _ = tx.lock().unwrap().send(m.payload().to_vec());
                }
                Deliver::Done
            }),
            T,
        )
        .unwrap();
    // 300 × 16-byte pings: ~5 slots' worth per direction, so slots wrap and recycle too.
    for i in 0..300u32 {
        let m: Vec<u8> = (0..8).flat_map(|k| [i as u8, k]).collect();
        p.slave()
            .queue_message_wait(h, &m, T)
            .unwrap_or_else(|e| panic!("ping {i} stalled on quota 1: {e:?}"));
        let mut want = m.clone();
        want.reverse();
        assert_eq!(rx.recv_timeout(T).expect("pong"), want, "pong {i}");
    }
    // Both senders really were held at quota 1 and padded their open slot.
    assert!(p.slave().stats().quota_pads > 0, "{:?}", p.slave().stats());
    assert!(
        p.master().stats().quota_pads > 0,
        "{:?}",
        p.master().stats()
    );
    let (msgs, _) = p.slave().quota_use(h).unwrap();
    assert!(msgs <= 1, "message quota 1 respected: {msgs}");
    assert_eq!(p.slave().stats().protocol_errors, 0);
    assert_eq!(p.master().stats().protocol_errors, 0);
}

/// A sender blocked on quota held in its open slot pads that slot once, not on every retry.
#[test]
fn quota_stall_pads_the_open_slot_once() {
    let p = connected();
    let server = Recorder::holding();
    p.master()
        .add_service_arc(ServiceParams::new(FUNC), server.clone())
        .unwrap();
    let h = p
        .slave()
        .open_service_wait(
            ServiceParams::new(FUNC).quotas(0, 1),
            Arc::new(Recorder::default()),
            T,
        )
        .unwrap();
    p.slave().queue_message(h, b"one").unwrap();
    for _ in 0..10 {
        assert_eq!(p.slave().queue_message(h, b"two"), Err(VchiqError::Retry));
    }
    assert_eq!(p.slave().stats().quota_pads, 1);
    // The receiver holds "one": the quota stays used until it is released.
    server.wait_for(|r| r.contains(&Reason::MessageAvailable));
    assert_eq!(p.slave().queue_message(h, b"two"), Err(VchiqError::Retry));
    for t in server.held() {
        p.master().release_message(t).unwrap();
    }
    p.slave().queue_message_wait(h, b"two", T).unwrap();
    server.wait_for(|r| r.iter().filter(|x| **x == Reason::MessageAvailable).count() == 2);
    assert_eq!(server.messages()[1], b"two");
}

/// A handler refused with `Retry` hears `Event::TxSpace` once space comes back, and only then.
#[test]
fn tx_space_event_follows_a_refusal() {
    let p = connected();
    let server = Recorder::holding();
    p.master()
        .add_service_arc(ServiceParams::new(FUNC), server.clone())
        .unwrap();
    let space = Arc::new(AtomicUsize::new(0));
    let s2 = space.clone();
    let h = p
        .slave()
        .open_service_wait(
            ServiceParams::new(FUNC).quotas(0, 1),
            Arc::new(move |_: &ServiceCtx<'_>, ev: Event<'_>| {
                if let Event::TxSpace = ev {
                    s2.fetch_add(1, Ordering::SeqCst);
                }
                Deliver::Done
            }),
            T,
        )
        .unwrap();
    p.slave().queue_message(h, b"one").unwrap();
    server.wait_for(|r| r.contains(&Reason::MessageAvailable));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(space.load(Ordering::SeqCst), 0, "no refusal, no TxSpace");
    assert_eq!(p.slave().queue_message(h, b"two"), Err(VchiqError::Retry));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(space.load(Ordering::SeqCst), 0, "nothing came back yet");
    for t in server.held() {
        p.master().release_message(t).unwrap();
    }
    until(|| space.load(Ordering::SeqCst) == 1);
    p.slave().queue_message(h, b"two").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(space.load(Ordering::SeqCst), 1, "one TxSpace per refusal");
}

/// Synchronous mode: a send refused because the peer still holds our sync slot gets
/// `Event::TxSpace` when the peer releases it (the SYNC_RELEASE event).
#[test]
fn tx_space_after_the_sync_slot_is_released() {
    let p = connected();
    p.master()
        .add_service(
            ServiceParams::new(FUNC).synchronous(true),
            |_: &ServiceCtx<'_>, ev: Event<'_>| {
                if let Event::Message(_) = ev {
                    // Keep the ARM's sync slot busy for a while (released on return).
                    std::thread::sleep(Duration::from_millis(30));
                }
                Deliver::Done
            },
        )
        .unwrap();
    let space = Arc::new(AtomicUsize::new(0));
    let s2 = space.clone();
    let h = p
        .slave()
        .open_service_wait(
            ServiceParams::new(FUNC),
            Arc::new(move |_: &ServiceCtx<'_>, ev: Event<'_>| {
                if let Event::TxSpace = ev {
                    s2.fetch_add(1, Ordering::SeqCst);
                }
                Deliver::Done
            }),
            T,
        )
        .unwrap();
    assert_eq!(p.slave().service_state(h).unwrap(), ServiceState::OpenSync);
    p.slave().queue_message(h, b"first").unwrap();
    assert_eq!(
        p.slave().queue_message(h, b"second"),
        Err(VchiqError::Retry),
        "the VideoCore holds the sync slot for 30 ms"
    );
    until(|| space.load(Ordering::SeqCst) >= 1);
    p.slave().queue_message(h, b"second").unwrap();
}

#[test]
fn held_message_double_release_is_refused() {
    let p = connected();
    let server = Recorder::holding();
    p.master()
        .add_service_arc(ServiceParams::new(FUNC), server.clone())
        .unwrap();
    let h = p
        .slave()
        .open_service_wait(ServiceParams::new(FUNC), Arc::new(Recorder::default()), T)
        .unwrap();
    p.slave().queue_message(h, b"keep me").unwrap();
    server.wait_for(|r| r.contains(&Reason::MessageAvailable));
    let t = server.held()[0];
    p.master().release_message(t).unwrap();
    assert_eq!(p.master().release_message(t), Err(VchiqError::Invalid));
}

#[test]
fn slot_quota_limits_one_service_not_the_other() {
    let p = connected();
    let server = Recorder::holding();
    p.master()
        .add_service_arc(ServiceParams::new(FUNC), server.clone())
        .unwrap();
    p.master()
        .add_service_arc(ServiceParams::new(ECHO), Arc::new(EchoService::new()))
        .unwrap();
    let h = p
        .slave()
        .open_service_wait(
            ServiceParams::new(FUNC).quotas(2, 0),
            Arc::new(Recorder::default()),
            T,
        )
        .unwrap();
    let full = vec![1u8; 4088];
    p.slave().queue_message(h, &full).unwrap();
    p.slave().queue_message(h, &full).unwrap();
    assert_eq!(
        p.slave().queue_message(h, &full),
        Err(VchiqError::Retry),
        "slot quota 2"
    );
    // Another service still gets through.
    let echo_client = Arc::new(Recorder::default());
    let e = p
        .slave()
        .open_service_wait(ServiceParams::new(ECHO), echo_client.clone(), T)
        .unwrap();
    let mut framed = vec![0u8; 8];
    framed[0] = 9;
    p.slave().queue_message(e, &framed).unwrap();
    echo_client.wait_for(|r| r.contains(&Reason::MessageAvailable));
    assert_eq!(p.slave().quota_use(h).unwrap(), (2, 2));
}

#[test]
fn synchronous_service_uses_the_sync_slots() {
    let p = connected();
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    p.master()
        .add_service(
            ServiceParams::new(FUNC).synchronous(true),
            move |ctx: &ServiceCtx<'_>, ev: Event<'_>| {
                if let Event::Message(m) = ev {
                    c2.fetch_add(1, Ordering::SeqCst);
                    let mut r = m.payload().to_vec();
                    r.reverse();
                    let _ = ctx.vchiq.queue_message(ctx.handle, &r);
                }
                Deliver::Done
            },
        )
        .unwrap();
    let client = Arc::new(Recorder::default());
    let h = p
        .slave()
        .open_service_wait(ServiceParams::new(FUNC), client.clone(), T)
        .unwrap();
    assert_eq!(p.slave().service_state(h).unwrap(), ServiceState::OpenSync);
    let sent_before = p.slave().stats().msgs_sent;
    for i in 0..20u8 {
        let msg = [i, 1, 2];
        p.slave().queue_message_wait(h, &msg, T).unwrap();
        client.wait_for(|r| {
            r.iter().filter(|x| **x == Reason::MessageAvailable).count() == i as usize + 1
        });
    }
    assert_eq!(client.messages().last().unwrap(), &vec![2, 1, 19]);
    assert_eq!(count.load(Ordering::SeqCst), 20);
    // None of it went through the normal slots' tx stream.
    assert_eq!(p.slave().stats().msgs_sent - sent_before, 20);
    // Bulk transfers are refused in OPENSYNC.
    let r = p
        .slave()
        .bulk_transmit(h, vec![0; 8], 0, 8, 1, BulkMode::Callback);
    assert_eq!(r.unwrap_err().0, VchiqError::Invalid);
}

/// A VideoCore-side service that queues the bulks the test tells it to, and records events.
struct BulkServer {
    rec: Recorder,
    plan: Mutex<Vec<(BulkDir, usize, u64)>>,
}

impl ServiceHandler for BulkServer {
    fn callback(&self, ctx: &ServiceCtx<'_>, ev: Event<'_>) -> Deliver {
        if let Event::RemoteBulkPending { .. } = ev {
            for (dir, len, tag) in self.plan.lock().unwrap().drain(..) {
                let r = match dir {
                    BulkDir::Transmit => ctx.vchiq.bulk_transmit(
                        ctx.handle,
                        vec![0xAB; len],
                        0,
                        len,
                        tag,
                        BulkMode::Callback,
                    ),
                    BulkDir::Receive => ctx.vchiq.bulk_receive(
                        ctx.handle,
                        vec![0; len],
                        0,
                        len,
                        tag,
                        BulkMode::Callback,
                    ),
                };
                assert!(r.is_ok());
            }
            return Deliver::Done;
        }
        self.rec.callback(ctx, ev)
    }
}

/// Runs a [`BulkServer`] with `plan` as the master's `FUNC` service: the server and its handle.
fn bulk_server(p: &SimPair, plan: Vec<(BulkDir, usize, u64)>) -> (Arc<BulkServer>, ServiceHandle) {
    let server = Arc::new(BulkServer {
        rec: Recorder::default(),
        plan: Mutex::new(plan),
    });
    let sh = p
        .master()
        .add_service_arc(ServiceParams::new(FUNC), server.clone())
        .unwrap();
    (server, sh)
}

/// Adds a `FUNC` server with a [`Recorder`] on the master: the recorder and the master's handle.
fn add_recorded_server(p: &SimPair) -> (Arc<Recorder>, ServiceHandle) {
    let server = Arc::new(Recorder::default());
    let sh = p
        .master()
        .add_service_arc(ServiceParams::new(FUNC), server.clone())
        .unwrap();
    (server, sh)
}

/// Opens the master's `FUNC` service from the slave with a [`Recorder`]: the recorder and the
/// slave's handle.
fn open_recorded(p: &SimPair) -> (Arc<Recorder>, ServiceHandle) {
    let client = Arc::new(Recorder::default());
    let h = p
        .slave()
        .open_service_wait(ServiceParams::new(FUNC), client.clone(), T)
        .unwrap();
    (client, h)
}

#[test]
fn bulk_size_mismatch_aborts_both_sides() {
    // vchiq_test -f step 4: server tx 1024 vs client rx 2048 → both ABORTED; 2048/2048 → DONE.
    let p = connected();
    let (server, _) = bulk_server(&p, vec![(BulkDir::Transmit, 1024, 0x102)]);
    let (client, h) = open_recorded(&p);
    p.slave()
        .bulk_receive(h, vec![0; 2048], 0, 2048, 0x1002, BulkMode::Callback)
        .unwrap();
    client.wait_for(|r| r.contains(&Reason::BulkReceiveAborted));
    server
        .rec
        .wait_for(|r| r.contains(&Reason::BulkTransmitAborted));
    server
        .plan
        .lock()
        .unwrap()
        .push((BulkDir::Transmit, 2048, 0x103));
    p.slave()
        .bulk_receive(h, vec![0; 2048], 0, 2048, 0x1003, BulkMode::Callback)
        .unwrap();
    client.wait_for(|r| r.contains(&Reason::BulkReceiveDone));
    server
        .rec
        .wait_for(|r| r.contains(&Reason::BulkTransmitDone));
    let tags: Vec<u64> = client
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.0 != Some(Reason::ServiceOpened))
        .map(|e| e.2)
        .collect();
    assert_eq!(tags, vec![0x1002, 0x1003]);
}

#[test]
fn close_aborts_queued_bulks_with_callbacks() {
    let p = connected();
    let (server, sh) = bulk_server(&p, vec![]);
    let (client, h) = open_recorded(&p);
    // Unpaired on both sides.
    p.slave()
        .bulk_receive(h, vec![0; 2048], 0, 2048, 0x1004, BulkMode::Callback)
        .unwrap();
    p.slave()
        .bulk_transmit(h, vec![1; 16], 0, 16, 0x2001, BulkMode::Callback)
        .unwrap();
    until(|| p.master().quota_use(sh).is_ok());
    p.master()
        .bulk_receive(sh, vec![0; 100], 0, 100, 0x104, BulkMode::Callback)
        .unwrap_or(());
    p.slave().remove_service(h).unwrap();
    client.wait_for(|r| r.contains(&Reason::ServiceClosed));
    let r = client.reasons();
    assert!(
        r.contains(&Reason::BulkReceiveAborted) && r.contains(&Reason::BulkTransmitAborted),
        "{r:?}"
    );
    let closed_at = r.iter().position(|x| *x == Reason::ServiceClosed).unwrap();
    assert_eq!(closed_at, r.len() - 1, "ABORTED before CLOSED");
    server.rec.wait_for(|r| r.contains(&Reason::ServiceClosed));
    assert_eq!(p.bus().mapped_pages(), 0);
}

#[test]
fn blocking_bulk_is_interruptible_and_resumable() {
    let p = connected();
    let (server, _) = bulk_server(&p, vec![]);
    let (_client, h) = open_recorded(&p);
    p.slave()
        .bulk_transmit(h, vec![5; 16], 0, 16, 7, BulkMode::NoCallback)
        .unwrap();
    // The peer never pairs it: the waiter gives up at its deadline, the transfer stays queued.
    let r = p.slave().wait_bulk(h, 7, Duration::from_millis(20));
    assert_eq!(r.unwrap_err(), VchiqError::Timeout);
    assert!(p.slave().bulk_pending(h, 7));
    // Now the peer pairs it (a receive of 16 on its side); waiting again completes (WAITING).
    server
        .plan
        .lock()
        .unwrap()
        .push((BulkDir::Receive, 16, 0x55));
    // Nudge: a second transmit makes the server see a pending remote bulk again.
    p.slave()
        .bulk_transmit(h, vec![6; 16], 0, 16, 8, BulkMode::NoCallback)
        .unwrap();
    let c = p.slave().wait_bulk(h, 7, T).unwrap();
    assert_eq!(c.result, Ok(16));
    assert_eq!(c.dir, BulkDir::Transmit);
    server
        .rec
        .wait_for(|r| r.contains(&Reason::BulkReceiveDone));
}

#[test]
fn teardown_aborts_everything_then_new_instance_on_same_region() {
    let mut p = connected();
    let (_server, _) = bulk_server(&p, vec![]);
    let (client, h) = open_recorded(&p);
    p.slave()
        .bulk_receive(h, vec![0; 4096], 3, 4000, 1, BulkMode::Callback)
        .unwrap();
    p.slave()
        .bulk_transmit(h, vec![0; 100], 0, 100, 2, BulkMode::Callback)
        .unwrap();
    p.shutdown().unwrap();
    let r = client.reasons();
    assert!(
        r.contains(&Reason::BulkReceiveAborted)
            && r.contains(&Reason::BulkTransmitAborted)
            && r.contains(&Reason::ServiceClosed),
        "{r:?}"
    );
    assert_eq!(p.slave().queue_message(h, b"x"), Err(VchiqError::Shutdown));
    assert_eq!(p.slave().conn_state(), ConnState::Dead);
    assert_eq!(p.bus().mapped_pages(), 0);
    // A new pair on the same memory works.
    let mem = p.region().clone();
    drop(p);
    let p2 = SimPair::on_region(mem, Config::default(), true).unwrap();
    p2.master()
        .add_service_arc(ServiceParams::new(ECHO), Arc::new(EchoService::new()))
        .unwrap();
    p2.connect().unwrap();
    let c2 = Arc::new(Recorder::default());
    let h2 = p2
        .slave()
        .open_service_wait(ServiceParams::new(ECHO), c2.clone(), T)
        .unwrap();
    let mut framed = vec![0u8; 12];
    framed[4] = 4;
    p2.slave().queue_message(h2, &framed).unwrap();
    c2.wait_for(|r| r.contains(&Reason::MessageAvailable));
    assert_eq!(c2.messages()[0][8..], [0xFF; 4]);
}

#[test]
fn two_instances_side_by_side() {
    let pairs: Vec<SimPair> = (0..2).map(|_| connected()).collect();
    let recs: Vec<Arc<Recorder>> = pairs
        .iter()
        .map(|p| {
            p.master()
                .add_service_arc(ServiceParams::new(ECHO), Arc::new(EchoService::new()))
                .unwrap();
            Arc::new(Recorder::default())
        })
        .collect();
    let hs: Vec<ServiceHandle> = pairs
        .iter()
        .zip(&recs)
        .map(|(p, r)| {
            p.slave()
                .open_service_wait(ServiceParams::new(ECHO), r.clone(), T)
                .unwrap()
        })
        .collect();
    for round in 0..50u8 {
        for (i, (p, h)) in pairs.iter().zip(&hs).enumerate() {
            let mut m = vec![0u8; 9];
            m[4] = 1;
            m[8] = round ^ (i as u8 * 0x80);
            p.slave().queue_message_wait(*h, &m, T).unwrap();
        }
    }
    for (i, r) in recs.iter().enumerate() {
        r.wait_for(|x| x.iter().filter(|y| **y == Reason::MessageAvailable).count() == 50);
        let got: Vec<u8> = r.messages().iter().map(|m| !m[8]).collect();
        assert_eq!(
            got,
            (0..50u8).map(|x| x ^ (i as u8 * 0x80)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn doorbell_rings_only_when_armed() {
    let p = connected();
    p.master()
        .add_service_arc(ServiceParams::new(ECHO), Arc::new(EchoService::new()))
        .unwrap();
    let r = Arc::new(Recorder::default());
    let h = p
        .slave()
        .open_service_wait(ServiceParams::new(ECHO), r.clone(), T)
        .unwrap();
    // Let both workers go idle: they arm their events and sleep on the doorbell.
    std::thread::sleep(Duration::from_millis(50));
    let before = p.rings();
    let m = vec![0u8; 8];
    p.slave().queue_message(h, &m).unwrap();
    r.wait_for(|x| x.iter().filter(|y| **y == Reason::MessageAvailable).count() == 1);
    let mid = p.rings();
    assert!(
        mid.0 > before.0,
        "the sleeping VideoCore was woken by the doorbell: {before:?} {mid:?}"
    );
    for _ in 0..200 {
        p.slave().queue_message_wait(h, &m, T).unwrap();
    }
    r.wait_for(|x| x.iter().filter(|y| **y == Reason::MessageAvailable).count() == 201);
    let after = p.rings();
    // Rings happen only for armed events: at most one per signal (message + recycle).
    assert!(after.0 - mid.0 <= 2 * 200 + 64, "{mid:?} {after:?}");
}

#[allow(dead_code)]
fn _assert_send_sync(v: &Vchiq) -> &(dyn Send + Sync) {
    v
}

#[test]
fn keepalive_use_is_acknowledged_and_no_pointers_in_shared_state() {
    use fwipc_vchiq::consts::MsgType;
    use fwipc_vchiq::sim::internals::header::make_msgid;
    let p = connected();
    let before = p.master().stats().msgs_received;
    // The VideoCore asks the ARM not to suspend (REMOTE_USE); the ARM answers REMOTE_USE_ACTIVE.
    let mut raw = make_msgid(MsgType::RemoteUse, 0, 0).to_le_bytes().to_vec();
    raw.extend_from_slice(&0u32.to_le_bytes());
    fwipc_vchiq::sim::internals::queue_raw(p.master(), &raw).unwrap();
    until(|| p.master().stats().msgs_received > before);
    assert_eq!(p.slave().stats().protocol_errors, 0);
    // The remote_event third word (once a semaphore pointer, docs/protocols/vchiq.md §1/§9 item 12)
    // stays zero in both shared states; nothing host-sized leaks into slot zero.
    let snapshot = {
        let r = p.region().region(fwipc_vchiq::sim::SIM_REGION_BUS).unwrap();
        let mut b = vec![0u8; 4096];
        assert!(r.read_bytes(0, &mut b));
        b
    };
    for base in [0x20usize, 0x194] {
        for ev in [0x10usize, 0x20, 0x30, 0x3C] {
            let o = base + ev + 8;
            assert_eq!(
                &snapshot[o..o + 4],
                &[0, 0, 0, 0],
                "event unused word at {o:#x}"
            );
        }
    }
}

#[test]
fn open_needs_connection_and_remove_server_frees_it() {
    let p = SimPair::new().unwrap();
    // Before CONNECT: servers are HIDDEN, clients cannot open.
    let server = Arc::new(Recorder::default());
    let sh = p
        .master()
        .add_service_arc(ServiceParams::new(FUNC), server.clone())
        .unwrap();
    assert_eq!(p.master().service_state(sh).unwrap(), ServiceState::Hidden);
    assert_eq!(
        p.slave()
            .open_service(ServiceParams::new(FUNC), Recorder::default()),
        Err(VchiqError::NotConnected)
    );
    p.connect().unwrap();
    assert_eq!(
        p.master().service_state(sh).unwrap(),
        ServiceState::Listening
    );
    let client = Arc::new(Recorder::default());
    let h = p
        .slave()
        .open_service_wait(ServiceParams::new(FUNC), client.clone(), T)
        .unwrap();
    // Removing a connected server closes the client and frees the port (it does not listen again).
    until(|| p.master().client_id(sh).unwrap_or(0) == 1);
    p.master().remove_service(sh).unwrap();
    client.wait_for(|r| r.contains(&Reason::ServiceClosed));
    until(|| p.master().service_state(sh).is_err());
    assert_eq!(p.slave().service_state(h).unwrap(), ServiceState::Closed);
    let r = p
        .slave()
        .open_service_wait(ServiceParams::new(FUNC), Arc::new(Recorder::default()), T);
    assert_eq!(r, Err(VchiqError::Refused), "no listener any more");
}

#[test]
fn nocallback_bulks_are_polled() {
    let p = connected();
    let (_server, _) = bulk_server(&p, vec![(BulkDir::Transmit, 64, 1)]);
    let (client, h) = open_recorded(&p);
    assert!(p.slave().take_bulk_completion(h).unwrap().is_none());
    p.slave()
        .bulk_receive(h, vec![0; 64], 0, 64, 9, BulkMode::NoCallback)
        .unwrap();
    let start = Instant::now();
    let c = loop {
        if let Some(c) = p.slave().take_bulk_completion(h).unwrap() {
            break c;
        }
        assert!(start.elapsed() < T, "NoCallback bulk never completed");
        std::thread::yield_now();
    };
    assert_eq!((c.tag, c.dir, c.result), (9, BulkDir::Receive, Ok(64)));
    assert!(c.buf.iter().all(|&b| b == 0xAB));
    // NoCallback completions are not delivered to the handler.
    assert!(!client.reasons().contains(&Reason::BulkReceiveDone));
    // A full queue is back-pressure, with the buffer handed back.
    for t in 0..4 {
        p.slave()
            .bulk_transmit(h, vec![0; 8], 0, 8, 100 + t, BulkMode::NoCallback)
            .unwrap();
    }
    let (e, buf) = p
        .slave()
        .bulk_transmit(h, vec![1; 8], 0, 8, 200, BulkMode::NoCallback)
        .unwrap_err();
    assert_eq!((e, buf.len()), (VchiqError::Retry, 8));
    let (e, _) = p
        .slave()
        .bulk_transmit(h, vec![1; 8], 4, 8, 201, BulkMode::NoCallback)
        .unwrap_err();
    assert_eq!(e, VchiqError::Invalid, "range outside the buffer");
}

/// The receive path keeps the handler of the service its last message went to (no reference
/// count per message), but never keeps a removed service's handler alive: once the port is
/// freed, whether the server was connected (freed when the close completes) or listening
/// (freed at once), the handler's only reference is its owner's again.
#[test]
fn a_removed_services_handler_is_not_kept_by_the_receive_path() {
    for connected_at_removal in [true, false] {
        let p = connected();
        let (server, sh) = add_recorded_server(&p);
        let (client, h) = open_recorded(&p);
        until(|| p.master().client_id(sh).unwrap_or(0) == 1);
        for m in [b"one", b"two"] {
            p.slave().queue_message(h, m).unwrap();
        }
        until(|| server.messages().len() == 2);
        if !connected_at_removal {
            p.slave().close_service(h).unwrap();
            client.wait_for(|r| r.contains(&Reason::ServiceClosed));
            until(|| p.master().service_state(sh).unwrap() == ServiceState::Listening);
        }
        p.master().remove_service(sh).unwrap();
        until(|| p.master().service_state(sh).is_err());
        let start = Instant::now();
        while Arc::strong_count(&server) != 1 {
            assert!(
                start.elapsed() < T,
                "connected at removal {connected_at_removal}: the removed server's handler is \
                 still referenced {} times besides its owner",
                Arc::strong_count(&server) - 1
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}
