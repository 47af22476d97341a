//! The steady-state invoke path (start → response → poll → read_out → finish) allocates
//! nothing: checked with a counting global allocator on the calling thread.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use fwipc_fastrpc::sim::SimBus;
use fwipc_fastrpc::wire::CtxId;
use fwipc_fastrpc::{Arg, Channel, Domain, PacketChannel, Result};
use fwipc_fastrpc::{Bank, ChannelConfig};

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A link that only counts (no allocation).
#[derive(Default)]
struct CountLink(AtomicUsize);
impl PacketChannel for CountLink {
    fn send(&self, _msg: &[u8]) -> Result<()> {
        // Relaxed: a test counter.
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn try_recv(&self, _buf: &mut [u8]) -> Option<usize> {
        None
    }
}

#[test]
fn invoke_path_allocates_nothing() {
    let bus = SimBus::new();
    let link = Arc::new(CountLink::default());
    let cfg = ChannelConfig::new(Domain::Cdsp)
        .with_banks(vec![Bank::new(1, 1)])
        .with_contexts(8)
        .with_payloads(2, 8192)
        .with_max_args(8);
    let ch = Channel::new(cfg, link.clone(), Arc::new(bus)).unwrap();
    let s = ch.open_session(common::poll_wait()).unwrap();
    let shared = s.alloc_shared(4096).unwrap();
    let input = [7u8; 300];
    let mut out = [0u8; 64];
    let mut run = |count: bool| {
        COUNTING.with(|c| c.set(count));
        for _ in 0..50 {
            let t = s
                .start(
                    0x20,
                    3,
                    &[
                        Arg::In(&input),
                        Arg::Out(&mut out),
                        Arg::InHandle {
                            buf: &shared,
                            offset: 0,
                            len: 16,
                        },
                    ],
                    0,
                )
                .unwrap();
            let id = CtxId::new(t.slot() as u8 + 1, t.generation(), s.pd());
            let mut rsp = [0u8; 16];
            rsp[..8].copy_from_slice(&id.0.to_le_bytes());
            ch.handle_packet(&rsp);
            assert!(s.poll(&t).unwrap());
            s.status(&t).unwrap();
            let mut dst = [0u8; 64];
            assert_eq!(s.read_out(&t, 0, &mut dst).unwrap(), 64);
            s.finish(t);
        }
        COUNTING.with(|c| c.set(false));
    };
    run(false); // warm-up
    ALLOCS.with(|a| a.set(0));
    run(true);
    assert_eq!(ALLOCS.with(|a| a.get()), 0, "steady-state invoke allocated");
    // Relaxed: a test counter.
    assert_eq!(link.0.load(Ordering::Relaxed), 100);
    assert_eq!(s.payload_free(), 2);
    // The counter does see allocations (the test can fail).
    COUNTING.with(|c| c.set(true));
    let v = std::hint::black_box(vec![1u8; 10]);
    COUNTING.with(|c| c.set(false));
    drop(v);
    assert_eq!(ALLOCS.with(|a| a.get()), 1);
}
