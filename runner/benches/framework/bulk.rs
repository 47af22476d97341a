//! (e) Bulk transfers of 4 KiB, 64 KiB and 1 MiB, both sides in one thread (the remote stepped
//! inline), next to a memcpy of the same size.

use std::hint::black_box;

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{BulkDir, BulkRequest, Transport, TxOutcome};

use crate::plots::Series;
use crate::{median, Bench, Chunked, Pair, MAX_STEPS, R};

/// Sizes measured.
pub const SIZES: [usize; 3] = [4 << 10, 64 << 10, 1 << 20];

/// Round trips per sample for `size` bytes (about 64 MiB moved per sample; `quick` a tenth).
pub fn rounds_for(size: usize, quick: bool) -> u64 {
    let r = ((64usize << 20) / size).clamp(20, 2_000) as u64;
    if quick {
        (r / 10).max(4)
    } else {
        r
    }
}

/// One bulk of `dir` through the transport with the remote stepped inline; the buffer back.
fn one<F: Fixture>(p: &Pair<F>, dir: BulkDir, buf: Vec<u8>) -> R<Vec<u8>> {
    let t = p.fx.transport();
    let len = buf.len();
    let req = BulkRequest {
        target: p.fx.echo_target(),
        dir,
        buf,
        offset: 0,
        len,
    };
    let ticket = t
        .bulk(req)
        .map_err(|(e, _)| format!("bulk {dir:?} {len}: {e:?}"))?;
    let mut steps = 0;
    loop {
        p.step_remote();
        match t.poll_done(&ticket) {
            Ok(true) => break,
            Ok(false) if steps < MAX_STEPS => steps += 1,
            r => {
                t.mark_txdone(ticket, TxOutcome::Cancelled);
                return Err(format!("bulk {dir:?} {len}: not done ({r:?})"));
            }
        }
    }
    match t.take_bulk(ticket) {
        Ok(r) if r.actual == len => Ok(r.buf),
        Ok(r) => Err(format!("bulk {dir:?} {len}: moved {}", r.actual)),
        Err((e, ticket)) => {
            t.mark_txdone(ticket, TxOutcome::Cancelled);
            Err(format!("bulk {dir:?} {len}: {e:?}"))
        }
    }
}

/// `rounds` bulk round trips of `size` bytes (transmit, then receive the same bytes back);
/// ns per round trip (median chunk). The first round checks the bytes.
pub fn bulk_round<F: Fixture>(p: &Pair<F>, size: usize, rounds: u64) -> R<f64> {
    let mut tx: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut rx = vec![0u8; size];
    tx = one(p, BulkDir::Transmit, tx)?;
    rx = one(p, BulkDir::Receive, rx)?;
    if rx != tx {
        return Err(format!(
            "bulk {size}: received bytes differ from those sent"
        ));
    }
    let mut c = Chunked::new(rounds);
    for _ in 0..rounds {
        tx = one(p, BulkDir::Transmit, tx)?;
        rx = one(p, BulkDir::Receive, rx)?;
        c.tick();
    }
    Ok(c.median())
}

/// The same bytes moved by memcpy: two copies of `size` (there and back) per round; ns per round
/// (median chunk).
pub fn memcpy_round(size: usize, rounds: u64) -> f64 {
    let a = vec![0x5au8; size];
    let mut b = vec![0u8; size];
    let mut d = vec![0u8; size];
    let mut c = Chunked::new(rounds);
    for _ in 0..rounds {
        black_box(&mut b).copy_from_slice(black_box(&a));
        black_box(&mut d).copy_from_slice(black_box(&b));
        c.tick();
    }
    c.median()
}

/// The same two copies done one relaxed `AtomicU8` access per byte, which cannot be
/// vectorised: the floor of a byte-wise atomic copy made of byte accesses only (how
/// `fwipc_transport_api::shared_mem` copied before its copies moved whole words), next to
/// [`word_atomic_round`]. ns per round (median chunk).
pub fn byte_atomic_round(size: usize, rounds: u64) -> f64 {
    use std::sync::atomic::{AtomicU8, Ordering};
    let a: Vec<AtomicU8> = (0..size).map(|_| AtomicU8::new(0x5a)).collect();
    let b: Vec<AtomicU8> = (0..size).map(|_| AtomicU8::new(0)).collect();
    let mut d = vec![0u8; size];
    let mut c = Chunked::new(rounds);
    for _ in 0..rounds {
        for (x, y) in black_box(&a).iter().zip(black_box(&b)) {
            // Relaxed: a copy, as in the VCHIQ core.
            y.store(x.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        for (x, y) in black_box(&b).iter().zip(black_box(&mut d).iter_mut()) {
            // Relaxed: as above.
            *y = x.load(Ordering::Relaxed);
        }
        c.tick();
    }
    c.median()
}

/// The same two copies through the real accessors every backend uses on memory the remote can
/// write, `fwipc_transport_api::shared_mem`: `copy_to_shared` from a private buffer into the
/// shared one, `copy_from_shared` back out into another private buffer (relaxed `AtomicUsize`
/// per native word, `AtomicU8` for edge bytes; the buffers here are word-aligned, so all words).
/// How VCHIQ bulk moves data into and out of the pages the other side mapped. ns per round
/// (median chunk).
pub fn word_atomic_round(size: usize, rounds: u64) -> f64 {
    use fwipc_transport_api::shared_mem::{copy_from_shared, copy_to_shared};
    use std::sync::atomic::AtomicU64;
    let a = vec![0x5au8; size];
    let b: Vec<AtomicU64> = (0..size.div_ceil(8)).map(|_| AtomicU64::new(0)).collect();
    let mut d = vec![0u8; size];
    let p = b.as_ptr() as *mut u8;
    let mut c = Chunked::new(rounds);
    for _ in 0..rounds {
        // SAFETY: `size` bytes of `b`, alive for the loop, reached by no other thread.
        unsafe { copy_to_shared(black_box(p), black_box(&a)) };
        // SAFETY: as above.
        unsafe { copy_from_shared(black_box(p), black_box(&mut d)) };
        c.tick();
    }
    assert_eq!(d, a, "word-atomic copy: the bytes came back changed");
    c.median()
}

/// A copy floor: ns per round of two copies of `size` bytes, `rounds` rounds.
type CopyRound = fn(usize, u64) -> f64;

/// Runs (e) over the `benches` that have bulk transfers (`samples` samples per size, each next
/// to a memcpy of the same size), prints its section, and returns the plot series (bulk
/// bandwidth as a share of memcpy's, against the size).
pub fn run(
    benches: &[(&str, Option<Box<dyn Bench>>)],
    samples: u64,
    quick: bool,
    failures: &mut Vec<String>,
) -> Vec<Series> {
    println!("\n## (e) Bulk transfers\n");
    println!(
        "Both sides in one thread: a bulk transmit of the size, then a bulk receive of the same \
         bytes back, against two memcpys of the same size in the same sample. Bandwidth as a \
         share of memcpy's (100% = as fast as memcpy; median over {samples} samples; \
         min–max in brackets). *word-atomic copy* is the same two copies through \
         `fwipc_transport_api::shared_mem` (`copy_to_shared` in, `copy_from_shared` out: a \
         relaxed `AtomicUsize` load or store per native word, `AtomicU8` for the bytes at \
         unaligned edges), the way the VCHIQ core copies to and from pages the other side \
         mapped; *byte-atomic copy* the same two copies one relaxed `AtomicU8` access per \
         byte, the floor before the copies were made wide.\n"
    );
    let sizes: Vec<String> = SIZES.iter().map(|&s| size_name(s)).collect();
    println!("| backend | {} |", sizes.join(" | "));
    println!("|---|{}", "---:|".repeat(SIZES.len()));
    let mut series = Vec::new();
    // The floors of copies that may not be vectorised, next to memcpy in the same samples.
    let copies: [(&str, CopyRound); 2] = [
        ("word-atomic copy", word_atomic_round),
        ("byte-atomic copy", byte_atomic_round),
    ];
    for (name, copy) in copies {
        let mut cells = Vec::new();
        let mut points = Vec::new();
        for &size in &SIZES {
            let rounds = rounds_for(size, quick);
            let mut v: Vec<f64> = (0..samples)
                .map(|_| 100.0 * memcpy_round(size, rounds) / copy(size, rounds))
                .collect();
            cells.push(spread_pct(&mut v));
            points.push((size as f64 / 1024.0, median(&mut v)));
        }
        println!("| *{name}* | {} |", cells.join(" | "));
        series.push(Series {
            name: name.into(),
            points,
        });
    }
    for (name, b) in benches {
        let Some(b) = b.as_deref() else { continue };
        if !SIZES.iter().any(|&s| b.has_bulk(s)) {
            continue;
        }
        let mut cells = Vec::new();
        let mut points = Vec::new();
        for &size in &SIZES {
            if !b.has_bulk(size) {
                cells.push("—".to_string());
                continue;
            }
            let rounds = rounds_for(size, quick);
            let mut v = Vec::new();
            for _ in 0..samples {
                let m = memcpy_round(size, rounds);
                match b.bulk_round(size, rounds) {
                    Ok(ns) => v.push(100.0 * m / ns),
                    Err(e) => {
                        failures.push(format!("{name}: bulk: {e}"));
                        break;
                    }
                }
            }
            if v.is_empty() {
                cells.push("failed".into());
                continue;
            }
            let s = spread_pct(&mut v);
            points.push((size as f64 / 1024.0, median(&mut v)));
            cells.push(s);
        }
        println!("| {name} | {} |", cells.join(" | "));
        series.push(Series {
            name: (*name).into(),
            points,
        });
    }
    series
}

/// "64 KiB".
fn size_name(s: usize) -> String {
    if s >= 1 << 20 {
        format!("{} MiB", s >> 20)
    } else {
        format!("{} KiB", s >> 10)
    }
}

/// "median% (min–max%)".
fn spread_pct(v: &mut [f64]) -> String {
    let m = median(v);
    format!("{m:.1}% ({:.1}–{:.1}%)", v[0], v[v.len() - 1])
}
