//! A hostile slave rewrites a pagelist to point at another transfer's page (issue 12 finding 9):
//! the simulated VideoCore (the master role) must copy only into pages the slave mapped for the
//! transfer it serves, so the rewritten transfer is aborted and the other buffer is untouched.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fwipc_vchiq::consts::make_fourcc;
use fwipc_vchiq::sim::{SimPair, SIM_REGION_BUS};
use fwipc_vchiq::{BulkCompletion, BulkMode, Config, Deliver, Event, ServiceParams, VchiqError};

const FUNC: u32 = make_fourcc(*b"func");
const PAGE: usize = 4096;
const T: Duration = Duration::from_secs(5);

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < T, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A 2-page buffer and the offset at which one whole page starts in it, filled with `fill`.
fn page_buffer(fill: u8) -> (Vec<u8>, usize) {
    let buf = vec![fill; 2 * PAGE];
    let off = (PAGE - buf.as_ptr() as usize % PAGE) % PAGE;
    (buf, off)
}

#[test]
fn master_copies_only_into_pages_of_the_transfer_it_serves() {
    let cfg = Config::default();
    let p = SimPair::with_config(cfg, true).unwrap();
    p.connect().unwrap();
    // The VideoCore's service: remembers its handle, queues nothing by itself.
    let mh = Arc::new(Mutex::new(None));
    {
        let mh = mh.clone();
        p.master()
            .add_service(
                ServiceParams::new(FUNC),
                move |ctx: &fwipc_vchiq::ServiceCtx<'_>, _ev: Event<'_>| {
                    *mh.lock().unwrap() = Some(ctx.handle);
                    Deliver::Done
                },
            )
            .unwrap();
    }
    let done: Arc<Mutex<Vec<BulkCompletion>>> = Arc::default();
    let d2 = done.clone();
    let h = p
        .slave()
        .open_service_wait(
            ServiceParams::new(FUNC),
            Arc::new(move |_: &fwipc_vchiq::ServiceCtx<'_>, ev: Event<'_>| {
                if let Event::Bulk(c) = ev {
                    d2.lock().unwrap().push(c);
                }
                Deliver::Done
            }),
            T,
        )
        .unwrap();
    // Two receives of one whole page each: A (tag 1) then B (tag 2), each with its own
    // pagelist (the first two free ones) and one mapped page.
    let (a, a_off) = page_buffer(0x11);
    let (b, b_off) = page_buffer(0x22);
    p.slave()
        .bulk_receive(h, a, a_off, PAGE, 1, BulkMode::Callback)
        .unwrap();
    p.slave()
        .bulk_receive(h, b, b_off, PAGE, 2, BulkMode::Callback)
        .unwrap();
    until("the VideoCore's service to hear from us", || {
        mh.lock().unwrap().is_some()
    });
    // The hostile slave: A's pagelist entry now names B's page (same run length, offset 0).
    let r = p.region().region(SIM_REGION_BUS).unwrap();
    let pl_a = cfg.pagelists_offset();
    let pl_b = pl_a + cfg.pagelist_size;
    let b_entry = r.load(pl_b + 8, Ordering::SeqCst);
    r.store(pl_a + 8, b_entry, Ordering::SeqCst);
    let errors = p.master().stats().protocol_errors;
    // The VideoCore transmits one page for the head of the queue (A).
    let mh = mh.lock().unwrap().unwrap();
    p.master()
        .bulk_transmit(mh, vec![0xAB; PAGE], 0, PAGE, 0x77, BulkMode::NoCallback)
        .unwrap();
    until("A to complete", || !done.lock().unwrap().is_empty());
    // Then 8 bytes for B: a size mismatch aborts it, and B's buffer comes back as it is.
    p.master()
        .bulk_transmit(mh, vec![0xCD; 8], 0, 8, 0x78, BulkMode::NoCallback)
        .unwrap();
    until("B to complete", || done.lock().unwrap().len() == 2);
    let done = std::mem::take(&mut *done.lock().unwrap());
    let (ca, cb) = (&done[0], &done[1]);
    assert_eq!((ca.tag, cb.tag), (1, 2));
    assert!(
        cb.buf[b_off..b_off + PAGE].iter().all(|&x| x == 0x22),
        "the VideoCore wrote into B's page while serving A"
    );
    assert_eq!(
        ca.result,
        Err(VchiqError::Aborted),
        "A named a page not mapped for it"
    );
    assert!(ca.buf[a_off..a_off + PAGE].iter().all(|&x| x == 0x11));
    assert!(
        p.master().stats().protocol_errors > errors,
        "the steering attempt is counted"
    );
    assert_eq!(p.bus().mapped_pages(), 0, "every page unmapped");
}
