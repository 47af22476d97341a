//! The fragment / offset sweep (issue 4 "must show"): bulk receives at every cache-line offset
//! 0..64 (and across a page boundary) with sizes around the line and page boundaries, through the
//! real pagelist + fragment path against the simulated VideoCore, byte-exact, with 0xFE guard
//! bytes on both sides that must survive (the staging driver's `vchiq_test -f 1` corruption on
//! arm64 overwrote exactly those). Plus a negative control showing the check can fail.

use std::sync::Arc;
use std::time::Duration;

use fwipc_vchiq::consts::make_fourcc;
use fwipc_vchiq::sim::framed_echo::EchoService;
use fwipc_vchiq::sim::SimPair;
use fwipc_vchiq::{
    BulkMode, Config, Deliver, Event, ServiceCtx, ServiceHandle, ServiceParams, Vchiq,
};

const ECHO: u32 = make_fourcc(*b"echo");
const SIZES: &[usize] = &[
    1, 2, 31, 32, 33, 63, 64, 65, 127, 128, 129, 4095, 4096, 4097, 8191, 8193,
];

fn pair(cfg: Config) -> (SimPair, ServiceHandle) {
    let pair = SimPair::with_config(cfg, true).unwrap();
    pair.master()
        .add_service_arc(ServiceParams::new(ECHO), Arc::new(EchoService::new()))
        .unwrap();
    pair.connect().unwrap();
    let h = pair
        .slave()
        .open_service_wait(
            ServiceParams::new(ECHO),
            Arc::new(|_: &ServiceCtx<'_>, _: Event<'_>| Deliver::Done),
            Duration::from_secs(5),
        )
        .unwrap();
    (pair, h)
}

fn wait(v: &Vchiq, h: ServiceHandle, tag: u64) -> fwipc_vchiq::BulkCompletion {
    v.wait_bulk(h, tag, Duration::from_secs(5))
        .expect("bulk completes")
}

/// Transmit a pattern, receive it back at an address ≡ `residue` (mod `modulo`) inside a
/// buffer with at least 64 guard bytes (0xFE) on each side; check byte-exact and the guards.
fn echo_at(v: &Vchiq, h: ServiceHandle, residue: usize, modulo: usize, len: usize, tag: u64) {
    let pattern: Vec<u8> = (0..len)
        .map(|i| if i % 32 == 0 { (i / 32) as u8 } else { i as u8 })
        .collect();
    v.bulk_transmit(h, pattern.clone(), 0, len, tag, BulkMode::NoCallback)
        .unwrap();
    let mut buf = vec![0xFEu8; 64 + modulo + len + 64];
    let base = buf.as_ptr() as usize + 64;
    let offset = 64 + (residue + modulo - base % modulo) % modulo;
    assert_eq!((buf.as_ptr() as usize + offset) % modulo, residue % modulo);
    buf[offset..offset + len].fill(0);
    v.bulk_receive(h, buf, offset, len, tag + 1, BulkMode::NoCallback)
        .unwrap();
    let tx = wait(v, h, tag);
    assert_eq!(tx.result, Ok(len));
    let rx = wait(v, h, tag + 1);
    assert_eq!(rx.result, Ok(len), "residue {residue} len {len}");
    let b = &rx.buf;
    assert!(
        b[..offset].iter().all(|&x| x == 0xFE),
        "head guard clobbered: residue {residue} len {len}"
    );
    assert!(
        b[offset + len..].iter().all(|&x| x == 0xFE),
        "tail guard clobbered: residue {residue} len {len}"
    );
    if b[offset..offset + len] != pattern[..] {
        let first = (0..len).find(|&i| b[offset + i] != pattern[i]).unwrap();
        panic!("data mismatch at byte {first}: residue {residue} len {len}");
    }
}

fn sweep(cfg: Config) {
    let (pair, h) = pair(cfg);
    let v = pair.slave();
    let mut tag = 0;
    for &len in SIZES {
        // Every address residue modulo the largest cache line (64).
        for residue in 0..64 {
            echo_at(v, h, residue, 64, len, tag);
            tag += 2;
        }
        // Starting just before a page boundary (the transfer crosses it).
        for back in [1usize, 2, 31, 32, 33, 63, 64] {
            echo_at(v, h, 4096 - back, 4096, len, tag);
            tag += 2;
        }
    }
    let m = pair.master().stats();
    assert_eq!(
        m.unaligned_reads, 0,
        "the slave sent an unaligned READ without a fragment"
    );
    assert_eq!(m.protocol_errors, 0);
    assert_eq!(pair.bus().mapped_pages(), 0, "every page unmapped");
    assert!(v.stats().bulks_done >= 2 * 71 * SIZES.len() as u64);
    // Exact-range cache maintenance (docs/protocols/vchiq.md §5 fix 2): only whole lines are ever
    // invalidated.
    let c = pair.bus().cache_ops();
    assert!(c.invalidates > 0 && c.cleans > 0, "{c:?}");
    assert_eq!(c.partial_line_invalidates, 0, "{c:?}");
}

#[test]
fn fragment_offset_sweep_cl64_byte_exact() {
    sweep(Config::default());
}

#[test]
fn fragment_offset_sweep_cl32_byte_exact() {
    let mut cfg = Config::default();
    cfg.cache_line_size = 32;
    sweep(cfg);
}

/// The same sweep with Pi 4 "36-bit" pagelists and the bulk buffers mapped above 4 GiB.
#[test]
fn fragment_offset_sweep_addr36_byte_exact() {
    let mut cfg = Config::default();
    cfg.pagelist_addr36 = true;
    sweep(cfg);
}

/// Negative control: with fragments turned off, unaligned receives are caught by the simulated
/// VideoCore (on hardware, the cache-line DMA would clobber the guard bytes).
#[test]
fn without_fragments_the_hazard_is_detected() {
    let (pair, h) = pair(Config::default());
    let v = pair.slave();
    fwipc_vchiq::sim::internals::set_fragments_enabled(v, false);
    echo_at(v, h, 0, 64, 4096, 0);
    echo_at(v, h, 0, 64, 128, 2);
    assert_eq!(
        pair.master().stats().unaligned_reads,
        0,
        "aligned receives need no fragment"
    );
    echo_at(v, h, 1, 64, 100, 4);
    assert_eq!(pair.master().stats().unaligned_reads, 1);
    echo_at(v, h, 0, 64, 100, 6);
    assert_eq!(pair.master().stats().unaligned_reads, 2, "unaligned tail");
    assert!(
        pair.bus().cache_ops().partial_line_invalidates >= 2,
        "partial-line invalidates seen"
    );
}
