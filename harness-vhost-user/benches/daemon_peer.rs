//! Issue 13 item 1g: the real peer. SCMI SENSOR_READING_GET through vhost-user to
//! `vhost-device-scmi`, by the unmodified fwipc SCMI backend (the `Scmi` agent on `ScmiVirtio`)
//! against a raw `VirtQueue` round trip of the same command with the same daemon (the cost of the
//! ring, the vhost-user daemon and the wake-ups alone). Samples of both interleaved; every figure
//! a ratio to the raw round trip of the same sample, reads per second given for scale.
//!
//! `cargo bench -p harness-vhost-user --bench daemon_peer` (`-- --quick`: fewer rounds). Prints
//! a markdown section; without the daemon (`VHOST_DEVICE_SCMI`), it says so and exits 0.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::backend::BackendFixture;
use common::raw::{header, Features, RawScmi, CMDQ, SENSOR};
use common::{scenarios, TIMEOUT};
use fwipc_scmi_virtio::virtio::ScmiVirtioConfig;
use fwipc_transport_api::Completion;
use harness_vhost_user::{find_daemon, Daemon};
use virtio_drivers::transport::Transport;

/// SENSOR_READING_GET (protocol 0x15, message 6) of sensor 0, synchronous.
const READING_GET: u8 = 0x6;
/// Its reply: header, status, 3 axes × 4 words.
const REPLY_LEN: usize = 4 + 4 + 48;

/// How the raw driver waits for the used buffer.
#[derive(Clone, Copy)]
enum RawWait {
    /// Sleep on the call eventfd (the VMM's interrupt).
    Signalled,
    /// Spin on the used ring, yielding the core between looks.
    Polled,
}

/// `rounds` raw SENSOR_READING_GETs; ns per round trip.
fn raw_reads(s: &mut RawScmi, wait: RawWait, rounds: u64) -> Result<f64, String> {
    let mut req = [0u8; 12];
    req[4..8].copy_from_slice(&0u32.to_le_bytes());
    req[8..12].copy_from_slice(&0u32.to_le_bytes());
    let mut resp = [0u8; REPLY_LEN];
    let start = Instant::now();
    for i in 0..rounds {
        let h = header(SENSOR, READING_GET, (i & 0x3ff) as u16);
        req[..4].copy_from_slice(&h.to_le_bytes());
        s.clear_signals();
        // SAFETY: `req` and `resp` outlive the pop_used below, which names the same buffers.
        let id = unsafe { s.cmdq.add(&[&req], &mut [&mut resp]) }
            .map_err(|e| format!("raw add: {e:?}"))?;
        if s.cmdq.should_notify() {
            s.transport.notify(CMDQ);
        }
        let deadline = Instant::now() + TIMEOUT;
        match wait {
            RawWait::Signalled => s.wait_cmdq(deadline),
            RawWait::Polled => {
                while !s.cmdq.can_pop() {
                    if Instant::now() > deadline {
                        return Err("raw: no reply".into());
                    }
                    std::thread::yield_now();
                }
            }
        }
        // SAFETY: the same buffers as passed to `add` for `id`.
        let len = unsafe { s.cmdq.pop_used(id, &[&req], &mut [&mut resp]) }
            .map_err(|e| format!("raw pop: {e:?}"))?;
        if len as usize != REPLY_LEN || resp[..4] != req[..4] || resp[4..8] != [0; 4] {
            return Err(format!("raw: bad reply ({len} bytes)"));
        }
    }
    Ok(start.elapsed().as_nanos() as f64 / rounds as f64)
}

/// `rounds` SENSOR_READING_GETs through the fwipc agent; ns per read.
fn fwipc_reads(fx: &BackendFixture, rounds: u64) -> Result<f64, String> {
    let s = fx.agent.sensor();
    let start = Instant::now();
    for _ in 0..rounds {
        s.reading(0).map_err(|e| format!("fwipc reading: {e:?}"))?;
    }
    Ok(start.elapsed().as_nanos() as f64 / rounds as f64)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// "median (min–max)".
fn spread(v: &mut [f64]) -> String {
    let m = median(v);
    format!("{m:.2} ({:.2}–{:.2})", v[0], v[v.len() - 1])
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (samples, rounds) = if quick { (3, 200u64) } else { (11, 2_000) };
    println!("\n## (g) Real peer: vhost-device-scmi through vhost-user\n");
    if let Err(e) = find_daemon() {
        println!("Not measured: the daemon is not installed ({e}).");
        return;
    }
    if let Err(e) = run(samples, rounds) {
        println!("\nFAILED: {e}");
        std::process::exit(1);
    }
}

fn run(samples: usize, rounds: u64) -> Result<(), String> {
    let d_sig = Daemon::spawn(&["acc0"], TIMEOUT).map_err(|e| e.to_string())?;
    let d_poll = Daemon::spawn(&["acc0"], TIMEOUT).map_err(|e| e.to_string())?;
    let mut raw_sig = RawScmi::new(&d_sig, Features::VERSION_1 | Features::RING_EVENT_IDX);
    let mut raw_poll = RawScmi::new(&d_poll, Features::VERSION_1 | Features::RING_EVENT_IDX);
    for s in [&mut raw_sig, &mut raw_poll] {
        if s.call(SENSOR, 0xA, &[0, 1]).status != 0 {
            return Err("raw: SENSOR_CONFIG_SET failed".into());
        }
    }
    let irq = BackendFixture::start(Completion::Interrupt, ScmiVirtioConfig::default())
        .ok_or("daemon gone")?;
    let polled = BackendFixture::start(Completion::Polled, ScmiVirtioConfig::default())
        .ok_or("daemon gone")?;
    scenarios::enable_sensor(&irq);
    scenarios::enable_sensor(&polled);
    // Warm-up.
    raw_reads(&mut raw_sig, RawWait::Signalled, rounds / 10)?;
    raw_reads(&mut raw_poll, RawWait::Polled, rounds / 10)?;
    fwipc_reads(&irq, rounds / 10)?;
    fwipc_reads(&polled, rounds / 10)?;
    let (mut r_irq, mut r_poll, mut rate_irq, mut rate_poll, mut rate_raw_s, mut rate_raw_p) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..samples {
        let rs = raw_reads(&mut raw_sig, RawWait::Signalled, rounds)?;
        let fi = fwipc_reads(&irq, rounds)?;
        let rp = raw_reads(&mut raw_poll, RawWait::Polled, rounds)?;
        let fp = fwipc_reads(&polled, rounds)?;
        r_irq.push(fi / rs);
        r_poll.push(fp / rp);
        rate_irq.push(1e9 / fi);
        rate_poll.push(1e9 / fp);
        rate_raw_s.push(1e9 / rs);
        rate_raw_p.push(1e9 / rp);
    }
    println!(
        "SENSOR_READING_GET of the daemon's fake sensor, one request in flight, {samples} \
         interleaved samples × {rounds} reads. The raw round trip is the same command on a bare \
         `VirtQueue` with the same daemon build: the ring, the vhost-user daemon and the wake-ups \
         without fwipc. Interrupt mode: the raw driver sleeps on the call eventfd; fwipc's irq \
         thread does and runs `ScmiVirtio::complete` while the agent spins, then yields, until \
         the transfer is done (the harness's agent configuration). Polled: both look at the \
         used ring, yielding the core between looks. Reads per second are for scale only \
         (absolute rates on a busy machine are noise).\n"
    );
    println!("| completion | fwipc read / raw round trip | fwipc reads/s | raw round trips/s |");
    println!("|---|---:|---:|---:|");
    println!(
        "| interrupt | {} | {:.0} | {:.0} |",
        spread(&mut r_irq),
        median(&mut rate_irq),
        median(&mut rate_raw_s)
    );
    println!(
        "| polled | {} | {:.0} | {:.0} |",
        spread(&mut r_poll),
        median(&mut rate_poll),
        median(&mut rate_raw_p)
    );
    drop(raw_sig);
    drop(raw_poll);
    drop(d_sig);
    drop(d_poll);
    Ok(())
}
