//! One generic echo round trip, run unchanged against every fwipc backend, in every completion
//! mode each transport says it supports.
//!
//! ```text
//! cargo run --release -p fwipc-runner --example every_backend
//! ```
//!
//! Every backend ships a simulated remote behind the same trait,
//! [`fwipc_transport_api::fixture::Fixture`]: `F::setup(mode)` builds this side's transport
//! wired for a completion mode, connected to a simulated remote that runs an *echo* service
//! (the reply is the request with every byte inverted, see [`echo_reply`]). The application code,
//! [`echo_roundtrip`], only sees `&T where T: Transport`, so it is the same code for a virtio
//! queue, a VCHIQ slot ring or a FastRPC invoke.
//!
//! Completion modes: [`Completion::Interrupt`] (the embedder's interrupt handler or the backend's
//! worker completes transfers and wakes waiters) is the default every transport serves
//! ([`Caps`] has no flag for it); [`Completion::Polled`] is offered when `caps().polling` is set.
//! Waiting uses [`fwipc_transport_api::call`] with [`Wait::Completion`] (park the thread until
//! the transport's waker fires) in interrupt mode and [`Wait::Poll`] (busy-poll `poll_done`) in
//! polled mode.
//!
//! Prints a backend × mode table; exits 1 if any cell failed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{echo_reply, Fixture};
use fwipc_transport_api::{call, Caps, Completion, Parker, Request, StdClock, Transport, Wait};

/// Payload sizes each round trip set sends (clamped to the transport's `max_msg_size`).
const SIZES: [usize; 6] = [0, 1, 4, 33, 100, usize::MAX];

/// Send one echo request per size in [`SIZES`] to `target` in completion mode `mode`, wait with
/// `wait`, and check every reply byte against [`echo_reply`]. Returns how many round trips
/// passed; the first failure ends the run with a description.
fn echo_roundtrip<T: Transport + ?Sized>(
    t: &T,
    target: u32,
    mode: Completion,
    wait: Wait<'_>,
    timeout: Duration,
) -> Result<usize, String> {
    let clock = StdClock::new();
    let max = t.max_msg_size();
    let mut reply = vec![0u8; max];
    let mut done = 0;
    for (i, size) in SIZES.iter().map(|s| (*s).min(max)).enumerate() {
        let req: Vec<u8> = (0..size).map(|k| (k * 7 + i) as u8).collect();
        let mut r = Request::new(target, &req);
        if mode == Completion::Polled {
            r = r.polled();
        }
        let n = call(t, &clock, &r, &mut reply, timeout, wait)
            .map_err(|e| format!("{size}-byte request: {e}"))?;
        let mut want = vec![0u8; size];
        echo_reply(&req, &mut want);
        if reply[..n] != want[..] {
            return Err(format!(
                "{size}-byte request: reply of {n} bytes differs from the expected echo"
            ));
        }
        done += 1;
    }
    // Every buffer must be back in the pool once the transfers are finished.
    let s = t.stats();
    if s.pool_free != s.pool_capacity {
        return Err(format!(
            "{} of {} pool buffers still in use",
            s.pool_capacity - s.pool_free,
            s.pool_capacity
        ));
    }
    Ok(done)
}

/// A [`Parker`] for this thread that counts how often the transport woke it, so the table can
/// show whether interrupt mode really wakes the caller (rather than `call` falling back to short
/// naps and polling).
struct CountingParker {
    waker: Waker,
    wakes: Arc<WakeCounter>,
}

struct WakeCounter {
    thread: std::thread::Thread,
    count: AtomicU64,
}

impl Wake for WakeCounter {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        // Relaxed: a statistic, read after the round trips by the same thread.
        self.count.fetch_add(1, Ordering::Relaxed);
        self.thread.unpark();
    }
}

impl CountingParker {
    fn new() -> Self {
        let wakes = Arc::new(WakeCounter {
            thread: std::thread::current(),
            count: AtomicU64::new(0),
        });
        CountingParker {
            waker: Waker::from(wakes.clone()),
            wakes,
        }
    }
    fn wakes(&self) -> u64 {
        // Relaxed: see `wake_by_ref`.
        self.wakes.count.load(Ordering::Relaxed)
    }
}

impl Parker for CountingParker {
    fn waker(&self) -> &Waker {
        &self.waker
    }
    fn park_timeout(&self, timeout: Duration) {
        std::thread::park_timeout(timeout);
    }
}

/// One cell of the table.
struct Cell {
    backend: &'static str,
    mode: Completion,
    result: Result<String, String>,
    time: Duration,
}

/// The completion modes `caps` claims: interrupt always, polled when `caps.polling`.
fn claimed_modes(caps: &Caps) -> Vec<Completion> {
    let mut m = vec![Completion::Interrupt];
    if caps.polling {
        m.push(Completion::Polled);
    }
    m
}

/// Build a fixture, turning a setup panic into an error (`Fixture::setup` cannot fail otherwise).
fn setup<F: Fixture>(mode: Completion) -> Result<F, String> {
    catch_unwind(AssertUnwindSafe(|| F::setup(mode))).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into());
        format!("setup failed: {msg}")
    })
}

/// Run every claimed mode of backend `F`; one cell per mode.
fn run_backend<F: Fixture>(cells: &mut Vec<Cell>) {
    // The caps come from the transport itself, built in the default (interrupt) mode.
    let caps = match setup::<F>(Completion::Interrupt) {
        Ok(f) => f.transport().caps(),
        Err(e) => {
            cells.push(Cell {
                backend: F::NAME,
                mode: Completion::Interrupt,
                result: Err(e),
                time: Duration::ZERO,
            });
            return;
        }
    };
    println!(
        "{}: caps: max_msg {}, max_msg_size {}, polling {}, bulk {}, notifications {}",
        F::NAME,
        caps.max_msg,
        caps.max_msg_size,
        caps.polling,
        caps.bulk,
        caps.notifications
    );
    for mode in claimed_modes(&caps) {
        let start = Instant::now();
        let result = (|| {
            if !F::modes().contains(&mode) {
                return Err(format!(
                    "caps claim {mode:?}, but the fixture does not list it in Fixture::modes()"
                ));
            }
            // A fresh pair wired for this mode (interrupt thread or not).
            let f = setup::<F>(mode)?;
            let timeout = f.reply_timeout().min(Duration::from_secs(2));
            let t = f.transport();
            match mode {
                Completion::Interrupt => {
                    let parker = CountingParker::new();
                    let n = echo_roundtrip(
                        t,
                        f.echo_target(),
                        mode,
                        Wait::Completion(&parker),
                        timeout,
                    )?;
                    Ok(format!("{n} round trips, woken {} times", parker.wakes()))
                }
                Completion::Polled => {
                    let n = echo_roundtrip(t, f.echo_target(), mode, Wait::Poll, timeout)?;
                    Ok(format!("{n} round trips"))
                }
            }
        })();
        cells.push(Cell {
            backend: F::NAME,
            mode,
            result,
            time: start.elapsed(),
        });
    }
}

// `each_backend!`: the one list of backends (`backends.toml`, read by the runner's `build.rs`).
include!(concat!(env!("OUT_DIR"), "/backends.rs"));

fn main() {
    let mut cells = Vec::new();
    // Every backend of `backends.toml`, in its order.
    each_backend!(F => run_backend::<F>(&mut cells));

    println!();
    println!(
        "{:<12} | {:<9} | {:<6} | {:>7} | detail",
        "backend", "mode", "result", "time"
    );
    println!("{}", "-".repeat(72));
    for c in &cells {
        let (verdict, detail) = match &c.result {
            Ok(d) => ("ok", d.as_str()),
            Err(e) => ("FAILED", e.as_str()),
        };
        println!(
            "{:<12} | {:<9} | {:<6} | {:>4} ms | {}",
            c.backend,
            format!("{:?}", c.mode),
            verdict,
            c.time.as_millis(),
            detail
        );
    }
    let failed = cells.iter().filter(|c| c.result.is_err()).count();
    println!();
    println!("{} cells, {failed} failed", cells.len());
    if failed > 0 {
        std::process::exit(1);
    }
}
