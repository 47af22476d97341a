//! A hostile VideoCore driving the shared region directly (no simulator thread): it keeps firing
//! our events, keeps publishing PADDING, or rewrites its `slot_queue` while we parse a slot.
//! `poll()` and the teardown must return within their budgets and deadlines, and the receiver must
//! keep the slot index it read when it entered the slot (docs/protocols/vchiq.md §1, §3).
//!
//! The hostile acts from inside the ARM side's own barriers (a `Platform` whose `mb` re-fires our
//! `trigger` right after `take` cleared it, and whose `rmb` publishes one more message right after
//! the receiver read `tx_pos`), so the interleavings that livelock the old loops happen every
//! time, not by chance of scheduling.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use fwipc_transport_api::StdClock;
use fwipc_vchiq::consts::{MsgType, VCHIQ_SLOT_MASK, VCHIQ_SLOT_QUEUE_MASK, VCHIQ_SLOT_SIZE};
use fwipc_vchiq::sim::internals::header::make_msgid;
use fwipc_vchiq::sim::internals::layout::off;
use fwipc_vchiq::{
    Config, Deliver, Event, OwnedRegion, Platform, Region, ServiceCtx, ServiceParams, Vchiq,
    POLL_MAX_ROUNDS,
};

const BUS: u32 = 0x4000_0000;

/// The master's platform: the master instance only initialises its half and never runs.
struct Passive;

// SAFETY: `map_page` never hands out a bus address, so there is nothing to keep mapped.
unsafe impl Platform for Passive {
    fn ring_doorbell(&self) {}
    fn map_page(&self, _cpu_page: usize) -> Option<u32> {
        None
    }
}

/// The ARM side's platform, with the hostile VideoCore behind its barriers.
struct Hostile {
    r: Region,
    /// Re-fire the ARM's `trigger` at every full barrier.
    fire: Arc<AtomicBool>,
    /// Publish one more PADDING at every read barrier.
    pad: Arc<AtomicBool>,
}

impl Hostile {
    fn fire_trigger(&self) {
        // Release: like a peer's `remote_event::signal`.
        self.r.store(
            off::SLAVE + off::TRIGGER + off::EV_FIRED,
            1,
            Ordering::Release,
        );
    }
}

/// The hostile VideoCore's transmit side: one 8-byte PADDING at its `tx_pos`, then `tx_pos`
/// published past it. It reads the slot index from its own `slot_queue`, which the ARM refills as
/// it recycles, so it can go on for ever.
fn publish_padding(r: &Region) {
    let tx = r.load(off::MASTER + off::TX_POS, Ordering::Relaxed);
    let qi = ((tx >> 12) & VCHIQ_SLOT_QUEUE_MASK) as usize;
    let slot = r.load(off::MASTER + off::SLOT_QUEUE + 4 * qi, Ordering::Acquire);
    let base = slot as usize * VCHIQ_SLOT_SIZE + (tx & VCHIQ_SLOT_MASK) as usize;
    r.store(base, make_msgid(MsgType::Padding, 0, 0), Ordering::Relaxed);
    r.store(base + 4, 0, Ordering::Relaxed);
    // Release: the header before the position that covers it.
    r.store(
        off::MASTER + off::TX_POS,
        tx.wrapping_add(8),
        Ordering::Release,
    );
}

// SAFETY: `map_page` never hands out a bus address; the barriers are at least the defaults.
unsafe impl Platform for Hostile {
    fn ring_doorbell(&self) {}
    fn map_page(&self, _cpu_page: usize) -> Option<u32> {
        None
    }
    fn rmb(&self) {
        std::sync::atomic::fence(Ordering::Acquire);
        // Acquire: pairs with the test's Release when it turns the hostile on.
        if self.pad.load(Ordering::Acquire) {
            publish_padding(&self.r);
        }
    }
    fn mb(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        // Acquire: pairs with the test's Release when it turns the hostile on.
        if self.fire.load(Ordering::Acquire) {
            self.fire_trigger();
        }
    }
}

struct Setup {
    slave: Arc<Vchiq>,
    master: Vchiq,
    r: Region,
    fire: Arc<AtomicBool>,
    pad: Arc<AtomicBool>,
}

impl Setup {
    fn new() -> Setup {
        let cfg = Config::default();
        let mem = OwnedRegion::new(cfg.region_size()).unwrap();
        let fire = Arc::new(AtomicBool::new(false));
        let pad = Arc::new(AtomicBool::new(false));
        let pf = Hostile {
            r: mem.region(BUS).unwrap(),
            fire: fire.clone(),
            pad: pad.clone(),
        };
        let slave = Arc::new(
            Vchiq::new_slave(
                mem.region(BUS).unwrap(),
                Box::new(pf),
                cfg,
                Box::new(StdClock::new()),
            )
            .unwrap(),
        );
        // Initialises the VideoCore half (its slot queue); never polled afterwards.
        let master = Vchiq::new_master(
            mem.region(BUS).unwrap(),
            Box::new(Passive),
            cfg,
            Box::new(StdClock::new()),
        )
        .unwrap();
        Setup {
            slave,
            master,
            r: mem.region(BUS).unwrap(),
            fire,
            pad,
        }
    }

    /// Turn the hostile on: `fire` keeps our trigger set, `pad` keeps `tx_pos` one message ahead.
    fn hostile(&self, fire: bool, pad: bool) {
        if pad {
            publish_padding(&self.r);
        }
        if fire {
            self.hostile_fire_once();
        }
        // Release: pairs with the Acquire loads in `Hostile`.
        self.pad.store(pad, Ordering::Release);
        self.fire.store(fire, Ordering::Release);
    }

    fn hostile_fire_once(&self) {
        self.r.store(
            off::SLAVE + off::TRIGGER + off::EV_FIRED,
            1,
            Ordering::Release,
        );
    }

    fn calm(&self) {
        // Release: pairs with the Acquire loads in `Hostile`.
        self.pad.store(false, Ordering::Release);
        self.fire.store(false, Ordering::Release);
    }
}

/// Run `f` on a thread; `Some(elapsed)` if it finished within `limit`. Afterwards the hostile is
/// calmed so that a call that did not return (the old, unbounded loops) does, and the thread is
/// joined either way.
fn finishes_within<T: Send + 'static>(
    s: &Setup,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<(T, Duration)> {
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    let th = std::thread::spawn(move || {
        let v = f();
        let _ = tx.send((v, t0.elapsed()));
    });
    let r = rx.recv_timeout(limit).ok();
    s.calm();
    th.join().unwrap();
    r
}

#[test]
fn poll_returns_while_peer_keeps_firing() {
    let s = Setup::new();
    s.hostile(true, false);
    let v = s.slave.clone();
    let r = finishes_within(&s, Duration::from_secs(10), move || {
        (0..3).map(|_| v.poll()).sum::<usize>()
    });
    assert!(
        r.is_some(),
        "poll() did not return while the peer kept setting `fired`"
    );
    let st = s.slave.stats();
    assert_eq!(
        st.poll_budget_exhausted, 3,
        "each call stops at its round budget ({POLL_MAX_ROUNDS}) and counts it"
    );
    // The rest is not lost: our trigger stays fired, so a worker does not go to sleep on it.
    assert!(!s.slave.prepare_sleep());
    s.slave.after_wake();
    // A calm peer: the next poll finishes without touching the budget.
    s.slave.poll();
    assert_eq!(s.slave.stats().poll_budget_exhausted, 3);
    drop(s.master);
}

#[test]
fn poll_returns_while_peer_keeps_padding() {
    let s = Setup::new();
    s.hostile(false, true);
    let v = s.slave.clone();
    let r = finishes_within(&s, Duration::from_secs(10), move || v.poll());
    let (parsed, _) = r.expect("poll() did not return while the peer kept publishing PADDING");
    assert_eq!(
        parsed,
        fwipc_vchiq::POLL_MAX_MSGS,
        "one call parses its budget"
    );
    let st = s.slave.stats();
    assert_eq!(st.poll_budget_exhausted, 1);
    assert_eq!(st.protocol_errors, 0, "PADDING is legal, only endless");
    // Work left (one message is still published): the worker must not sleep.
    assert!(!s.slave.prepare_sleep());
    s.slave.after_wake();
    // The slots we left were recycled to the peer as we went (it kept writing into them).
    assert!(s.slave.poll() >= 1);
}

#[test]
fn shutdown_returns_within_deadline_against_hostile_peer() {
    let s = Setup::new();
    // A real CONNECT from the (otherwise passive) VideoCore, then an OPEN it never answers.
    s.master.connect().unwrap();
    s.slave.connect().unwrap();
    s.slave.poll();
    assert!(s.slave.is_connected());
    let h = s
        .slave
        .open_service(
            ServiceParams::new(fwipc_vchiq::consts::make_fourcc(*b"hstl")),
            |_: &ServiceCtx<'_>, _: Event<'_>| Deliver::Done,
        )
        .unwrap();
    assert!(s.slave.service_state(h).is_ok());
    // Now the peer turns hostile: keeps firing and keeps padding, never sends the CLOSE.
    s.hostile(true, true);
    let v = s.slave.clone();
    let deadline = Duration::from_millis(300);
    let r = finishes_within(&s, Duration::from_secs(10), move || v.shutdown(deadline));
    let (res, took) = r.expect("shutdown did not return while the peer kept firing and padding");
    assert_eq!(res, Err(fwipc_vchiq::VchiqError::Timeout));
    assert!(
        took < deadline + Duration::from_secs(3),
        "shutdown took {took:?} for a {deadline:?} deadline"
    );
    assert!(s.slave.stats().poll_budget_exhausted >= 1);
    assert_eq!(s.slave.conn_state(), fwipc_vchiq::consts::ConnState::Dead);
}

/// docs/protocols/vchiq.md §1: the receiver fixes the slot when `rx_pos` enters it. The peer
/// rewrites `slot_queue[0]` after the first message of slot A was parsed, pointing it at its slot
/// B, which holds a header the parser would reject. The rest of slot A must still be parsed from
/// A, and A (not B) recycled when the receiver leaves it.
#[test]
fn slot_queue_rewritten_mid_slot_is_not_refetched() {
    let s = Setup::new();
    let r = &s.r;
    let q = off::MASTER + off::SLOT_QUEUE;
    let slot_a = r.load(q, Ordering::Relaxed);
    let slot_b = r.load(q + 4, Ordering::Relaxed);
    assert_ne!(slot_a, slot_b);
    let recycle0 = r.load(off::MASTER + off::SLOT_QUEUE_RECYCLE, Ordering::Relaxed);
    let a = slot_a as usize * VCHIQ_SLOT_SIZE;
    let b = slot_b as usize * VCHIQ_SLOT_SIZE;
    // Message 1 in A: an 8-byte PADDING at offset 0.
    r.store(a, make_msgid(MsgType::Padding, 0, 0), Ordering::Relaxed);
    r.store(a + 4, 0, Ordering::Relaxed);
    r.store(off::MASTER + off::TX_POS, 8, Ordering::Release);
    s.slave.poll();
    assert_eq!(s.slave.stats().protocol_errors, 0);

    // Mid-slot: the peer points slot_queue[0] at B. B holds garbage at offset 8 (unknown type);
    // A holds a PADDING covering the rest of the slot.
    r.store(q, slot_b, Ordering::Relaxed);
    r.store(b + 8, 0xFE00_0000, Ordering::Relaxed);
    r.store(b + 12, 0, Ordering::Relaxed);
    r.store(a + 8, make_msgid(MsgType::Padding, 0, 0), Ordering::Relaxed);
    r.store(a + 12, (VCHIQ_SLOT_SIZE - 16) as u32, Ordering::Relaxed);
    r.store(
        off::MASTER + off::TX_POS,
        VCHIQ_SLOT_SIZE as u32,
        Ordering::Release,
    );
    s.slave.poll();

    assert_eq!(
        s.slave.stats().protocol_errors,
        0,
        "the rest of slot A was parsed from slot B"
    );
    assert_eq!(
        r.load(off::MASTER + off::SLOT_QUEUE_RECYCLE, Ordering::Acquire),
        recycle0.wrapping_add(1),
        "leaving the slot recycles exactly one slot"
    );
    let idx = (recycle0 & VCHIQ_SLOT_QUEUE_MASK) as usize;
    assert_eq!(
        r.load(q + 4 * idx, Ordering::Relaxed),
        slot_a,
        "the slot recycled is the one entered (A), not the rewritten entry (B)"
    );
}

/// docs/protocols/vchiq.md §1 "Recycle": a slot may be written again only after the receiver
/// recycled it. The peer points a later stream position at a slot in which our client still holds
/// a message: the receiver must not reset that slot's counts (which would recycle it under the
/// held message) but skip the position as malformed, and recycle the slot once, on release.
#[test]
fn peer_reusing_a_slot_with_a_held_message_is_refused() {
    let s = Setup::new();
    let fourcc = fwipc_vchiq::consts::make_fourcc(*b"hold");
    let server = s
        .master
        .add_service(
            ServiceParams::new(fourcc),
            |_: &ServiceCtx<'_>, _: Event<'_>| Deliver::Done,
        )
        .unwrap();
    s.master.connect().unwrap();
    s.slave.connect().unwrap();
    s.slave.poll();
    s.master.poll();
    assert!(s.slave.is_connected() && s.master.is_connected());
    let held = Arc::new(std::sync::Mutex::new(None));
    let h2 = held.clone();
    let h = s
        .slave
        .open_service(
            ServiceParams::new(fourcc),
            move |_: &ServiceCtx<'_>, ev: Event<'_>| match ev {
                Event::Message(m) => {
                    *h2.lock().unwrap() = Some(m.token());
                    Deliver::Hold
                }
                _ => Deliver::Done,
            },
        )
        .unwrap();
    s.master.poll(); // OPEN -> OPENACK
    s.slave.poll();
    assert_eq!(s.slave.open_status(h), Ok(true));
    s.master.queue_message(server, b"keep me").unwrap();
    s.slave.poll();
    let token = held
        .lock()
        .unwrap()
        .take()
        .expect("message delivered and held");

    let r = &s.r;
    let q = off::MASTER + off::SLOT_QUEUE;
    let slot_a = r.load(q, Ordering::Relaxed);
    let recycle0 = r.load(off::MASTER + off::SLOT_QUEUE_RECYCLE, Ordering::Relaxed);
    let errors0 = s.slave.stats().protocol_errors;
    // The hostile VideoCore pads out slot A, then points the next queue entry at A again and
    // publishes a PADDING there (over our held message).
    let tx = r.load(off::MASTER + off::TX_POS, Ordering::Relaxed);
    assert!(tx < VCHIQ_SLOT_SIZE as u32, "still in the first slot");
    let a = slot_a as usize * VCHIQ_SLOT_SIZE;
    r.store(
        a + tx as usize,
        make_msgid(MsgType::Padding, 0, 0),
        Ordering::Relaxed,
    );
    r.store(
        a + tx as usize + 4,
        VCHIQ_SLOT_SIZE as u32 - tx - 8,
        Ordering::Relaxed,
    );
    r.store(q + 4, slot_a, Ordering::Relaxed);
    r.store(a, make_msgid(MsgType::Padding, 0, 0), Ordering::Relaxed);
    r.store(a + 4, (VCHIQ_SLOT_SIZE - 8) as u32, Ordering::Relaxed);
    r.store(
        off::MASTER + off::TX_POS,
        2 * VCHIQ_SLOT_SIZE as u32,
        Ordering::Release,
    );
    s.slave.poll();

    assert_eq!(
        s.slave.stats().protocol_errors,
        errors0 + 1,
        "the reuse is reported"
    );
    assert_eq!(
        r.load(off::MASTER + off::SLOT_QUEUE_RECYCLE, Ordering::Acquire),
        recycle0,
        "slot A was recycled while a message in it is still held"
    );
    // Releasing the held message recycles A, exactly once.
    assert_eq!(s.slave.release_message(token), Ok(()));
    assert_eq!(
        r.load(off::MASTER + off::SLOT_QUEUE_RECYCLE, Ordering::Acquire),
        recycle0.wrapping_add(1)
    );
    let idx = (recycle0 & VCHIQ_SLOT_QUEUE_MASK) as usize;
    assert_eq!(r.load(q + 4 * idx, Ordering::Relaxed), slot_a);
}

/// A reply whose frame length lies (one byte more than it carries) fails its transfer with
/// `BadLength` at once, through the same `frame` parser the fuzzer runs, and is counted.
#[test]
fn reply_with_lying_length_fails_its_transfer() {
    use fwipc_transport_api::{
        call, Completion, Error, ProtocolError, Request, StdClock, Transport, Wait,
    };
    use fwipc_vchiq::consts::make_fourcc;
    use fwipc_vchiq::sim::SimPair;
    use fwipc_vchiq::transport::VchiqTransport;
    use fwipc_vchiq::{Deliver, Event, ServiceCtx, ServiceParams};

    let fourcc = make_fourcc(*b"liar");
    let pair = SimPair::new().unwrap();
    pair.master()
        .add_service(
            ServiceParams::new(fourcc),
            |ctx: &ServiceCtx<'_>, ev: Event<'_>| {
                if let Event::Message(m) = ev {
                    let mut reply = m.payload().to_vec();
                    // Keep the token (bytes 0..4), claim one byte more than follows.
                    let len = (reply.len() - 8) as u32 + 1;
                    reply[4..8].copy_from_slice(&len.to_le_bytes());
                    ctx.vchiq.queue_message(ctx.handle, &reply).unwrap();
                }
                Deliver::Done
            },
        )
        .unwrap();
    pair.connect().unwrap();
    let t = VchiqTransport::open(
        pair.slave().clone(),
        ServiceParams::new(fourcc),
        Completion::Interrupt,
        4,
        Duration::from_secs(5),
    )
    .unwrap();
    let mut out = [0u8; 64];
    let r = call(
        &t,
        &StdClock::new(),
        &Request::new(fourcc, b"hello"),
        &mut out,
        Duration::from_secs(5),
        Wait::Poll,
    );
    assert_eq!(r, Err(Error::Protocol(ProtocolError::BadLength)));
    assert_eq!(t.stats().protocol_errors, 1);
    let s = t.stats();
    assert_eq!(s.pool_free, s.pool_capacity);
}
