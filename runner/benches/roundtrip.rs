//! Round-trip latency of fwipc transports against performance peers, side by side in one process.
//!
//! Method: a→b→a ping-pong, one request in flight, both sides busy-polling (or parking, for the
//! interrupt-mode rows), `ROUNDS` rounds per sample, samples of all peers interleaved so machine
//! noise hits them alike; the median sample is reported as ns per round trip and as a ratio to
//! the floor (two threads ping-ponging one cache line with Acquire/Release). Only ratios are
//! comparable across runs and machines, never absolute times.
//!
//! `cargo bench -p fwipc-runner --bench roundtrip` (add `-- --quick` for a short run).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{call, yield_now, Completion, Request, StdClock, ThreadParker, Wait};

/// A peer: runs `rounds` round trips, returns the elapsed time.
trait Peer {
    fn name(&self) -> String;
    fn run(&mut self, rounds: u64) -> Duration;
}

/// Floor: one cache line bounced between two threads with Acquire/Release.
struct CacheLine {
    flag: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    th: Option<std::thread::JoinHandle<()>>,
}

impl CacheLine {
    fn new() -> Self {
        let flag = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (flag.clone(), stop.clone());
        let th = std::thread::spawn(move || {
            // Acquire/Release on the one shared word: each side's increment publishes the round
            // to the other; Relaxed stop flag (only ends the loop).
            while !s.load(Ordering::Relaxed) {
                let v = f.load(Ordering::Acquire);
                if v % 2 == 1 {
                    f.store(v + 1, Ordering::Release);
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        CacheLine {
            flag,
            stop,
            th: Some(th),
        }
    }
}

impl Peer for CacheLine {
    fn name(&self) -> String {
        "cache line ping-pong (floor)".into()
    }
    fn run(&mut self, rounds: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..rounds {
            let v = self.flag.load(Ordering::Acquire);
            self.flag.store(v + 1, Ordering::Release);
            while self.flag.load(Ordering::Acquire) != v + 2 {
                std::hint::spin_loop();
            }
        }
        start.elapsed()
    }
}

impl Drop for CacheLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.th.take() {
            let _ = t.join();
        }
    }
}

/// crossbeam-channel bounded(1) ping-pong.
struct Crossbeam {
    to: crossbeam_channel::Sender<u64>,
    from: crossbeam_channel::Receiver<u64>,
}

impl Crossbeam {
    fn new() -> Self {
        let (to, rx) = crossbeam_channel::bounded::<u64>(1);
        let (tx, from) = crossbeam_channel::bounded::<u64>(1);
        std::thread::spawn(move || {
            while let Ok(v) = rx.recv() {
                if tx.send(v + 1).is_err() {
                    break;
                }
            }
        });
        Crossbeam { to, from }
    }
}

impl Peer for Crossbeam {
    fn name(&self) -> String {
        "crossbeam-channel bounded(1)".into()
    }
    fn run(&mut self, rounds: u64) -> Duration {
        let start = Instant::now();
        for i in 0..rounds {
            self.to.send(i).unwrap();
            assert_eq!(self.from.recv().unwrap(), i + 1);
        }
        start.elapsed()
    }
}

/// std mpsc ping-pong.
struct StdMpsc {
    to: std::sync::mpsc::SyncSender<u64>,
    from: std::sync::mpsc::Receiver<u64>,
}

impl StdMpsc {
    fn new() -> Self {
        let (to, rx) = std::sync::mpsc::sync_channel::<u64>(1);
        let (tx, from) = std::sync::mpsc::sync_channel::<u64>(1);
        std::thread::spawn(move || {
            while let Ok(v) = rx.recv() {
                if tx.send(v + 1).is_err() {
                    break;
                }
            }
        });
        StdMpsc { to, from }
    }
}

impl Peer for StdMpsc {
    fn name(&self) -> String {
        "std::sync::mpsc sync_channel(1)".into()
    }
    fn run(&mut self, rounds: u64) -> Duration {
        let start = Instant::now();
        for i in 0..rounds {
            self.to.send(i).unwrap();
            assert_eq!(self.from.recv().unwrap(), i + 1);
        }
        start.elapsed()
    }
}

/// A fwipc transport through its conformance fixture: `call()` of a 32-byte echo.
struct Fwipc<F: Fixture> {
    fx: F,
    label: &'static str,
}

impl<F: Fixture> Peer for Fwipc<F> {
    fn name(&self) -> String {
        format!("fwipc {} ({})", F::NAME, self.label)
    }
    fn run(&mut self, rounds: u64) -> Duration {
        let clock = StdClock::new();
        let parker = ThreadParker::new();
        let payload = [0x5au8; 32];
        let mut out = [0u8; 64];
        let polled = self.fx.completion() == Completion::Polled;
        let wait = if polled {
            Wait::SpinThenYield {
                spins: 256,
                relax: &yield_now,
            }
        } else {
            Wait::Completion(&parker)
        };
        let start = Instant::now();
        for _ in 0..rounds {
            let mut req = Request::new(self.fx.echo_target(), &payload);
            if polled {
                req = req.polled();
            }
            let n = call(
                self.fx.transport(),
                &clock,
                &req,
                &mut out,
                Duration::from_secs(5),
                wait,
            )
            .expect("echo");
            assert_eq!(n, 32);
        }
        start.elapsed()
    }
}

// `each_backend!`: the one list of backends (`backends.toml`, read by `build.rs`).
include!(concat!(env!("OUT_DIR"), "/backends.rs"));

fn fwipc<F: Fixture + 'static>(mode: Completion, label: &'static str) -> Box<dyn Peer> {
    Box::new(Fwipc {
        fx: F::setup(mode),
        label,
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (samples, rounds) = if quick { (5, 500) } else { (15, 5000) };
    let mut peers: Vec<Box<dyn Peer>> = vec![
        Box::new(CacheLine::new()),
        Box::new(Crossbeam::new()),
        Box::new(StdMpsc::new()),
    ];
    // Every backend of `backends.toml`, each polled then interrupt-driven.
    let backends = each_backend!(F => [
        fwipc::<F>(Completion::Polled, "polled"),
        fwipc::<F>(Completion::Interrupt, "interrupt"),
    ]);
    peers.extend(backends.into_iter().flatten());
    println!(
        "round-trip latency, {samples} interleaved samples x {rounds} rounds, median; {} cores",
        num_cpus()
    );
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); peers.len()];
    for p in peers.iter_mut() {
        p.run(rounds / 10); // warm-up
    }
    for s in 0..samples {
        for (i, p) in peers.iter_mut().enumerate() {
            let d = p.run(rounds);
            results[i].push(d.as_nanos() as f64 / rounds as f64);
        }
        eprint!("\rsample {}/{samples}", s + 1);
    }
    eprintln!();
    let medians: Vec<f64> = results
        .iter_mut()
        .map(|v| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        })
        .collect();
    let floor = medians[0];
    println!("{:<44} {:>12} {:>10}", "peer", "ns/round", "x floor");
    for (p, m) in peers.iter().zip(&medians) {
        println!("{:<44} {:>12.0} {:>10.2}", p.name(), m, m / floor);
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
