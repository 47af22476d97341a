//! Measure the simulated pair: transport echo round trip (interrupt = worker threads woken by
//! the doorbell; polled = caller spins) and bulk transmit+receive throughput.
//!
//! `cargo run --release -p fwipc-vchiq --example vchiq_rtt`

use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{
    call, BulkDir, BulkRequest, Completion, Request, StdClock, Transport, Wait,
};
use fwipc_vchiq::sim::VchiqFixture;

fn rtt(mode: Completion, size: usize, iters: u32) -> Duration {
    let f = VchiqFixture::setup(mode);
    let clock = StdClock::new();
    let req = vec![0x5Au8; size];
    let mut out = vec![0u8; 4096];
    let relax = || std::thread::yield_now();
    let wait = Wait::SpinThenYield {
        spins: 1000,
        relax: &relax,
    };
    let mut one = || {
        let mut r = Request::new(f.echo_target(), &req);
        if mode == Completion::Polled {
            r = r.polled();
        }
        call(
            f.transport(),
            &clock,
            &r,
            &mut out,
            Duration::from_secs(5),
            wait,
        )
        .unwrap();
    };
    for _ in 0..iters / 10 {
        one();
    }
    let t = Instant::now();
    for _ in 0..iters {
        one();
    }
    t.elapsed() / iters
}

fn bulk(len: usize, iters: u32) -> f64 {
    let f = VchiqFixture::setup(Completion::Interrupt);
    let t = f.transport();
    let data = vec![0xA5u8; len];
    let start = Instant::now();
    for _ in 0..iters {
        let tx = t
            .bulk(BulkRequest {
                target: f.echo_target(),
                dir: BulkDir::Transmit,
                buf: data.clone(),
                offset: 0,
                len,
            })
            .unwrap();
        let rx = t
            .bulk(BulkRequest {
                target: f.echo_target(),
                dir: BulkDir::Receive,
                buf: vec![0; len],
                offset: 0,
                len,
            })
            .unwrap();
        for tk in [&tx, &rx] {
            while !t.poll_done(tk).unwrap() {
                std::hint::spin_loop();
            }
        }
        t.take_bulk(tx).unwrap();
        assert_eq!(t.take_bulk(rx).unwrap().actual, len);
    }
    (2 * len as u64 * iters as u64) as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Process CPU time (user + system) in clock ticks, from /proc (Linux).
fn cpu_ticks() -> u64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    {
        // Idle: both workers must sleep on their doorbells, not spin.
        let _f = VchiqFixture::setup(Completion::Interrupt);
        std::thread::sleep(Duration::from_millis(100));
        let c0 = cpu_ticks();
        std::thread::sleep(Duration::from_secs(1));
        println!("idle pair: {} CPU ticks (1/100 s) in 1 s", cpu_ticks() - c0);
    }
    for size in [0usize, 64, 1024, 4072] {
        let i = rtt(Completion::Interrupt, size, 2000);
        let p = rtt(Completion::Polled, size, 2000);
        println!(
            "echo {size:>5} B: interrupt {:>8.1} us, polled {:>8.1} us",
            i.as_secs_f64() * 1e6,
            p.as_secs_f64() * 1e6
        );
    }
    for len in [4096usize, 65536, 1 << 20] {
        println!(
            "bulk {len:>8} B tx+rx: {:>8.1} MB/s",
            bulk(len, if len > 65536 { 20 } else { 200 })
        );
    }
}
