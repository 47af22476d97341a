//! The peer-facing barriers and the receive-side cache maintenance, seen from the platform: a
//! recording [`Platform`] wraps the simulator's slave platform and logs every barrier, doorbell
//! and cache operation together with a snapshot of the shared words the slave publishes to the
//! VideoCore. The slave is polled from this thread only, so the log is in the slave's program
//! order. Checked (review points 1 and 2 of docs/memory-ordering.md):
//! - every publication the VideoCore reads (tx_pos, `fired`, `slot_queue_recycle`, the sync
//!   msgids, `initialised`) is preceded, with no other publication in between, by a write or full
//!   barrier (a full one where the slave's *reads* must complete first: recycle, sync release);
//! - every doorbell ring is immediately preceded by a full barrier, with nothing published
//!   between the two;
//! - every bulk receive cleans+invalidates exactly the whole-line middle of the buffer before
//!   the BULK_RX message is published.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fwipc_vchiq::consts::{make_fourcc, VCHIQ_SLOT_SIZE};
use fwipc_vchiq::sim::internals::layout::off;
use fwipc_vchiq::sim::internals::pagelist::fragment_split;
use fwipc_vchiq::sim::{SimPair, SIM_REGION_BUS};
use fwipc_vchiq::{
    BulkDir, BulkMode, Config, Deliver, Event, OwnedRegion, Platform, Region, Role, ServiceCtx,
    ServiceParams,
};
use std::sync::atomic::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Wmb,
    Rmb,
    Mb,
    Ring,
    Clean,
    Invalidate,
    CleanInvalidate(usize, usize),
}

/// The words the slave publishes (by name), as seen when an entry was logged.
type Snap = [(&'static str, u32); 9];

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: Kind,
    snap: Snap,
}

struct Recorder {
    inner: Box<dyn Platform>,
    region: Region,
    words: [(&'static str, usize); 9],
    log: Arc<Mutex<Vec<Entry>>>,
}

impl Recorder {
    fn rec(&self, kind: Kind) {
        let snap = self
            .words
            .map(|(n, o)| (n, self.region.load(o, Ordering::SeqCst)));
        self.log.lock().unwrap().push(Entry { kind, snap });
    }
}

// SAFETY: every translation is delegated to the simulator's platform, which upholds the contract.
unsafe impl Platform for Recorder {
    fn ring_doorbell(&self) {
        self.rec(Kind::Ring);
        self.inner.ring_doorbell()
    }
    fn request_poll(&self) {
        self.inner.request_poll()
    }
    fn map_page(&self, p: usize) -> Option<u32> {
        self.inner.map_page(p)
    }
    fn unmap_page(&self, p: usize) {
        self.inner.unmap_page(p)
    }
    fn bus_to_cpu(&self, b: u32) -> Option<usize> {
        self.inner.bus_to_cpu(b)
    }
    fn map_page_wide(&self, p: usize) -> Option<u64> {
        self.inner.map_page_wide(p)
    }
    fn bus_to_cpu_wide(&self, b: u64) -> Option<usize> {
        self.inner.bus_to_cpu_wide(b)
    }
    fn map_bulk_page(&self, pl: u32, p: usize, wide: bool) -> Option<u64> {
        self.inner.map_bulk_page(pl, p, wide)
    }
    fn unmap_bulk_page(&self, pl: u32, p: usize) {
        self.inner.unmap_bulk_page(pl, p)
    }
    fn bulk_bus_to_cpu(&self, pl: u32, b: u64) -> Option<usize> {
        self.inner.bulk_bus_to_cpu(pl, b)
    }
    fn dma_clean(&self, a: usize, l: usize) {
        self.rec(Kind::Clean);
        self.inner.dma_clean(a, l)
    }
    fn dma_invalidate(&self, a: usize, l: usize) {
        self.rec(Kind::Invalidate);
        self.inner.dma_invalidate(a, l)
    }
    fn dma_clean_invalidate(&self, a: usize, l: usize) {
        self.rec(Kind::CleanInvalidate(a, l));
        self.inner.dma_clean_invalidate(a, l)
    }
    fn wmb(&self) {
        self.rec(Kind::Wmb);
        self.inner.wmb()
    }
    fn rmb(&self) {
        self.rec(Kind::Rmb);
        self.inner.rmb()
    }
    fn mb(&self) {
        self.rec(Kind::Mb);
        self.inner.mb()
    }
}

const ASYNC: u32 = make_fourcc(*b"bara");
const SYNC: u32 = make_fourcc(*b"bars");

/// Whether the change `old → new` of the named word is a publication by the *slave* (the master
/// clears the `fired` words it owns, publishes its own sync msgid and releases ours).
fn slave_publication(name: &str, old: u32, new: u32) -> bool {
    if old == new {
        return false;
    }
    match name {
        n if n.starts_with("fired") => old == 0 && new == 1,
        "sync_msgid_ours" => new != 0,
        "sync_msgid_peer" => new == 0,
        _ => true,
    }
}

/// Names whose publication must follow a *full* barrier (the slave's reads come first).
fn needs_mb(name: &str) -> bool {
    matches!(name, "recycle" | "sync_msgid_peer")
}

fn give_up(s: Duration) -> impl Fn() -> bool {
    let t0 = Instant::now();
    move || t0.elapsed() > s
}

#[test]
fn barriers_precede_every_publication_and_doorbell() {
    let cfg = Config::default();
    let mem = OwnedRegion::new(cfg.region_size()).unwrap();
    let (sp, mp) = (cfg.partition(Role::Slave), cfg.partition(Role::Master));
    let (s, m) = (off::SLAVE, off::MASTER);
    let words = [
        ("initialised", s + off::INITIALISED),
        ("tx_pos", s + off::TX_POS),
        ("recycle", m + off::SLOT_QUEUE_RECYCLE),
        ("fired_trigger", m + off::TRIGGER + off::EV_FIRED),
        ("fired_recycle", m + off::RECYCLE + off::EV_FIRED),
        ("fired_sync_trigger", m + off::SYNC_TRIGGER + off::EV_FIRED),
        ("fired_sync_release", m + off::SYNC_RELEASE + off::EV_FIRED),
        ("sync_msgid_ours", sp.sync as usize * VCHIQ_SLOT_SIZE),
        ("sync_msgid_peer", mp.sync as usize * VCHIQ_SLOT_SIZE),
    ];
    let log = Arc::new(Mutex::new(Vec::new()));
    let (l2, r2) = (log.clone(), mem.region(SIM_REGION_BUS).unwrap());
    let mut pair = SimPair::on_region_wrapped(
        mem,
        cfg,
        false,
        Box::new(move |inner| {
            Box::new(Recorder {
                inner,
                region: r2,
                words,
                log: l2,
            })
        }),
    )
    .unwrap();

    // VideoCore side: echo every message; answer bulk requests of either direction.
    for (fourcc, sync) in [(ASYNC, false), (SYNC, true)] {
        pair.master()
            .add_service(
                ServiceParams::new(fourcc).synchronous(sync),
                |ctx: &ServiceCtx<'_>, ev: Event<'_>| {
                    match ev {
                        Event::Message(msg) => {
                            let _ = ctx.vchiq.queue_message(ctx.handle, msg.payload());
                        }
                        Event::RemoteBulkPending { dir, size } => {
                            let buf = vec![0xA5; size];
                            let _ = match dir {
                                BulkDir::Transmit => ctx.vchiq.bulk_transmit(
                                    ctx.handle,
                                    buf,
                                    0,
                                    size,
                                    0,
                                    BulkMode::NoCallback,
                                ),
                                BulkDir::Receive => ctx.vchiq.bulk_receive(
                                    ctx.handle,
                                    buf,
                                    0,
                                    size,
                                    0,
                                    BulkMode::NoCallback,
                                ),
                            };
                        }
                        _ => {}
                    }
                    Deliver::Done
                },
            )
            .unwrap();
    }
    pair.connect().unwrap();
    let arm = pair.slave().clone();
    let replies = Arc::new(Mutex::new(0usize));
    let open = |fourcc| {
        let r = replies.clone();
        arm.open_service_wait(
            ServiceParams::new(fourcc),
            Arc::new(move |_: &ServiceCtx<'_>, ev: Event<'_>| {
                if let Event::Message(_) = ev {
                    *r.lock().unwrap() += 1;
                }
                Deliver::Done
            }),
            Duration::from_secs(10),
        )
        .unwrap()
    };
    let (ha, hs) = (open(ASYNC), open(SYNC));
    let poll_until = |want: usize| {
        let stop = give_up(Duration::from_secs(10));
        while *replies.lock().unwrap() < want {
            arm.poll();
            assert!(!stop(), "echo replies did not arrive");
            std::thread::yield_now();
        }
    };
    // Enough traffic for both sides to recycle slots (~10 slots each way), plus sync messages.
    let mut want = 0;
    for i in 0..400u32 {
        let msg = [i.to_le_bytes().as_slice(), &[0x5A; 100]].concat();
        arm.queue_message_wait(ha, &msg, Duration::from_secs(10))
            .unwrap();
        want += 1;
        if i % 40 == 0 {
            arm.queue_message_wait(hs, b"sync", Duration::from_secs(10))
                .unwrap();
            want += 1;
            poll_until(want);
            // Let the VideoCore's worker idle past its spin budget (`Backoff`), so it arms its
            // events and sleeps and the next message rings the doorbell checked below.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    poll_until(want);

    // From here on the VideoCore also sets its *own* `fired_trigger` (`kick` when it queues a
    // bulk the slave is waiting for), so that word no longer tells who published.
    let bulk_from = log.lock().unwrap().len();
    // Receives at odd offsets/lengths (fragments) and one aligned; one transmit.
    let cl = cfg.cache_line_size;
    let mut receives = Vec::new();
    for (tag, (offset, len)) in [(3usize, 5000usize), (0, 4096), (64, 1000), (17, 40)]
        .into_iter()
        .enumerate()
    {
        let buf = vec![0u8; offset + len + 64];
        let addr = buf.as_ptr() as usize + offset;
        let tag = tag as u64 + 1;
        arm.bulk_receive(ha, buf, offset, len, tag, BulkMode::NoCallback)
            .unwrap();
        let done = arm.wait_bulk(ha, tag, Duration::from_secs(10)).unwrap();
        assert_eq!(done.result, Ok(len));
        assert!(done.buf[offset..offset + len].iter().all(|&b| b == 0xA5));
        receives.push((addr, len));
    }
    arm.bulk_transmit(ha, vec![1; 3000], 0, 3000, 99, BulkMode::NoCallback)
        .unwrap();
    let done = arm.wait_bulk(ha, 99, Duration::from_secs(10)).unwrap();
    assert_eq!(done.result, Ok(3000));
    pair.shutdown().unwrap();

    let log = log.lock().unwrap().clone();
    let mut published = std::collections::BTreeMap::<&str, usize>::new();
    let (mut rings, mut after_barrier) = (0, 0);
    for (i, w) in log.windows(2).enumerate() {
        let (prev, next) = (w[0], w[1]);
        let changed: Vec<&str> = prev
            .snap
            .iter()
            .zip(next.snap.iter())
            .filter(|((n, a), (_, b))| slave_publication(n, *a, *b))
            .filter(|((n, _), _)| i + 1 < bulk_from || *n != "fired_trigger")
            // The VideoCore initialises its own `slot_queue_recycle` right after the slave's
            // first entry (the wmb before `initialised`): not a slave publication.
            .filter(|((n, _), _)| i > 0 || *n != "recycle")
            .map(|((n, _), _)| *n)
            .collect();
        assert!(
            changed.len() <= 1,
            "entry {i}: {changed:?} published without a barrier between them"
        );
        if let Some(name) = changed.first() {
            *published.entry(name).or_default() += 1;
            let ok = match prev.kind {
                Kind::Mb => true,
                Kind::Wmb => !needs_mb(name),
                _ => false,
            };
            assert!(
                ok,
                "entry {i}: {name} published after {:?}, not after a {} barrier",
                prev.kind,
                if needs_mb(name) { "full" } else { "write" }
            );
            after_barrier += 1;
        }
        if next.kind == Kind::Ring {
            rings += 1;
            assert_eq!(prev.kind, Kind::Mb, "entry {}: ring without mb", i + 1);
            assert!(changed.is_empty(), "entry {}: stored after the mb", i + 1);
        }
    }
    // The workload exercised every publication kind and the doorbell.
    for name in [
        "initialised",
        "tx_pos",
        "recycle",
        "fired_trigger",
        "fired_recycle",
        "fired_sync_trigger",
        "fired_sync_release",
        "sync_msgid_ours",
        "sync_msgid_peer",
    ] {
        assert!(
            published.get(name).copied().unwrap_or(0) > 0,
            "{name} never published: {published:?}"
        );
    }
    assert!(rings > 0 && after_barrier > 0, "{rings} rings");

    // Receive-side cache maintenance: the whole-line middle, before the BULK_RX is published.
    for (addr, len) in receives {
        let split = if addr % cl != 0 || (addr + len) % cl != 0 {
            fragment_split(addr % VCHIQ_SLOT_SIZE, len, cl)
        } else {
            fwipc_vchiq::sim::internals::pagelist::FragmentSplit { head: 0, tail: 0 }
        };
        let mid = len - split.head - split.tail;
        let want = Kind::CleanInvalidate(addr + split.head, mid);
        let at = log.iter().position(|e| e.kind == want);
        if mid == 0 {
            assert!(at.is_none(), "nothing to maintain for a {len}-byte receive");
            continue;
        }
        let at = at.unwrap_or_else(|| panic!("no clean+invalidate {want:?} before the receive"));
        assert_eq!((addr + split.head) % cl, 0);
        assert_eq!(mid % cl, 0, "only whole lines");
        let tx0 = log[at].snap[1].1;
        let tx_then = log[at + 1..]
            .iter()
            .position(|e| e.snap[1].1 != tx0)
            .expect("BULK_RX published");
        assert!(
            log[at + 1..at + 1 + tx_then]
                .iter()
                .all(|e| e.kind != Kind::Ring),
            "maintenance after the BULK_RX reached the VideoCore"
        );
    }
}
