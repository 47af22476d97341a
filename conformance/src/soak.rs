//! Soak: one backend under `threads` callers for a while, with the simulated remote misbehaving at
//! random through its [`RemoteControl`](crate::RemoteControl) (every [`Fault`], late releases,
//! garbage, resets, unsolicited messages), then shut down. It counts what happened and checks what must hold
//! whatever the remote did (docs/reliability.md, "Invariants"):
//!
//! - every reply a call returns is the echo of its own request (else `wrong_replies`);
//! - no call takes longer than its timeout plus [`SoakConfig::hang_slack`] (else `hangs`), and
//!   every caller and the shutdown return (else `hangs`);
//! - after shutdown the pool is full (else `leaks`, the buffers missing);
//! - nothing panics (`panics`: caught in the callers; the embedder counts panics of other
//!   threads, e.g. the simulator's, with a panic hook).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{Fault, Fixture};
use fwipc_transport_api::{call, Error, StdClock, Transport};

use crate::util::{expected, request, tagged_payload, with_wait, Rng};

/// What a soak run does.
#[derive(Debug, Clone, Copy)]
pub struct SoakConfig {
    /// How long the callers run.
    pub duration: Duration,
    /// Caller threads.
    pub threads: usize,
    /// Seed of every random choice (callers and faults), for reproducible runs.
    pub seed: u64,
    /// Timeout of each call.
    pub call_timeout: Duration,
    /// Time between two remote actions (a fault change, a release, garbage, ...).
    pub fault_period: Duration,
    /// How far past its timeout a call (or the shutdown past its own bound) may return before it
    /// counts as hung.
    pub hang_slack: Duration,
}

impl Default for SoakConfig {
    fn default() -> Self {
        SoakConfig {
            duration: Duration::from_secs(10),
            threads: 4,
            seed: 0x50a4,
            call_timeout: Duration::from_millis(200),
            fault_period: Duration::from_millis(20),
            hang_slack: Duration::from_secs(5),
        }
    }
}

/// What a soak run counted. The invariants hold when `wrong_replies`, `leaks`, `panics` and
/// `hangs` are all 0 ([`SoakReport::clean`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoakReport {
    /// Backend name.
    pub backend: &'static str,
    /// Calls made.
    pub operations: u64,
    /// Calls that returned the right reply.
    pub ok: u64,
    /// Remote actions taken (fault changes, releases, garbage, resets, notifications).
    pub faults_injected: u64,
    /// Calls that returned an error, by kind: `Timeout`.
    pub timeouts: u64,
    /// ... `Busy` or `Retry` (back-pressure).
    pub busy: u64,
    /// ... `Cancelled` (the remote reset) or `Shutdown`.
    pub cancelled: u64,
    /// ... anything else (`Protocol`, `Remote`, ...).
    pub other_errors: u64,
    /// Calls that returned `Ok` with bytes that are not the echo of their request.
    pub wrong_replies: u64,
    /// Pool buffers missing after shutdown (`pool_capacity - pool_free`).
    pub leaks: u64,
    /// Panics caught in the callers.
    pub panics: u64,
    /// Calls or shutdowns that overran their bound, and callers that never returned.
    pub hangs: u64,
    /// How long the shutdown took.
    pub shutdown_time: Duration,
}

impl SoakReport {
    /// Errors the callers saw, all kinds together.
    pub fn errors(&self) -> u64 {
        self.timeouts + self.busy + self.cancelled + self.other_errors
    }

    /// Whether every invariant held.
    pub fn clean(&self) -> bool {
        self.wrong_replies == 0 && self.leaks == 0 && self.panics == 0 && self.hangs == 0
    }
}

/// Counters the callers update.
#[derive(Default)]
struct Tally {
    operations: AtomicU64,
    ok: AtomicU64,
    timeouts: AtomicU64,
    busy: AtomicU64,
    cancelled: AtomicU64,
    other_errors: AtomicU64,
    wrong_replies: AtomicU64,
    panics: AtomicU64,
    hangs: AtomicU64,
}

fn bump(c: &AtomicU64) {
    // Relaxed: statistics, read after the callers are joined (or as a progress estimate).
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    // Relaxed: see `bump`.
    c.load(Ordering::Relaxed)
}

/// One caller: echo calls with random payloads until `stop`.
fn caller<F: Fixture>(fx: &F, cfg: &SoakConfig, seed: u64, stop: &AtomicBool, t: &Tally) {
    let mut rng = Rng::new(seed);
    let clock = StdClock::new();
    let max = fx.transport().max_msg_size().min(64);
    let mut out = vec![0u8; max];
    let mut tag = 0u32;
    // Relaxed: a stop request; nothing is published with it.
    while !stop.load(Ordering::Relaxed) {
        tag = tag.wrapping_add(1);
        let payload = tagged_payload(tag, 4 + rng.below(max.saturating_sub(4) + 1), &mut rng);
        let start = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| {
            with_wait(fx, |w| {
                call(
                    fx.transport(),
                    &clock,
                    &request(fx, &payload),
                    &mut out,
                    cfg.call_timeout,
                    w,
                )
            })
        }));
        bump(&t.operations);
        if start.elapsed() > cfg.call_timeout + cfg.hang_slack {
            bump(&t.hangs);
        }
        match r {
            Err(_) => bump(&t.panics),
            Ok(Ok(n)) if out.get(..n) == Some(&expected(&payload)[..]) => bump(&t.ok),
            Ok(Ok(_)) => bump(&t.wrong_replies),
            Ok(Err(Error::Timeout)) => bump(&t.timeouts),
            Ok(Err(Error::Busy | Error::Retry)) => {
                bump(&t.busy);
                // Back-pressure (e.g. every buffer held by a dropping remote): back off instead
                // of counting millions of refusals.
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(Err(Error::Cancelled | Error::Shutdown)) => bump(&t.cancelled),
            Ok(Err(_)) => bump(&t.other_errors),
        }
    }
}

/// One random remote action; returns whether it was a fault (not a return to `Fault::None`).
fn remote_action<F: Fixture>(fx: &F, rng: &mut Rng, cfg: &SoakConfig) -> bool {
    let r = fx.remote();
    match rng.below(12) {
        // Behave for a while: most of the time the remote works, so calls complete.
        0..=3 => {
            r.set_fault(Fault::None);
            r.release();
            false
        }
        4 => {
            r.set_fault(Fault::Hold);
            true
        }
        5 => {
            r.set_fault(Fault::Drop);
            true
        }
        6 => {
            r.set_fault(Fault::Duplicate);
            true
        }
        7 => {
            r.set_fault(Fault::WrongToken);
            true
        }
        8 => {
            r.set_fault(if rng.below(2) == 0 {
                Fault::CorruptLength
            } else {
                Fault::CorruptHeader
            });
            true
        }
        9 => {
            let max = cfg.call_timeout.as_millis() as usize * 2;
            r.set_fault(Fault::Delay(Duration::from_millis(rng.below(max) as u64)));
            true
        }
        10 => {
            let mut g = vec![0u8; 1 + rng.below(64)];
            rng.fill(&mut g);
            r.inject_garbage(&g);
            true
        }
        _ => {
            if rng.below(4) == 0 {
                r.reset_remote();
            } else {
                let _ = r.notify(b"soak");
            }
            true
        }
    }
}

/// Run one soak of `F` in its first completion mode; `progress` is called about once a second
/// with the counts so far.
pub fn soak<F: Fixture + 'static>(cfg: SoakConfig, progress: &dyn Fn(&SoakReport)) -> SoakReport {
    let mode = F::modes().first().copied().unwrap_or_default();
    let fx = Arc::new(F::setup(mode));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let (done_tx, done_rx) = mpsc::channel::<()>();
    for i in 0..cfg.threads {
        let (fx, stop, tally, done) = (fx.clone(), stop.clone(), tally.clone(), done_tx.clone());
        let seed = cfg.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // Plain threads, not scoped ones: a caller that hangs is counted and left behind
        // instead of hanging the whole run.
        std::thread::spawn(move || {
            caller(&*fx, &cfg, seed, &stop, &tally);
            let _ = done.send(());
        });
    }
    drop(done_tx);
    let snapshot = |faults: u64| SoakReport {
        backend: F::NAME,
        operations: get(&tally.operations),
        ok: get(&tally.ok),
        faults_injected: faults,
        timeouts: get(&tally.timeouts),
        busy: get(&tally.busy),
        cancelled: get(&tally.cancelled),
        other_errors: get(&tally.other_errors),
        wrong_replies: get(&tally.wrong_replies),
        panics: get(&tally.panics),
        hangs: get(&tally.hangs),
        ..SoakReport::default()
    };
    let mut rng = Rng::new(cfg.seed);
    let mut faults = 0u64;
    let start = Instant::now();
    let mut last_progress = start;
    while start.elapsed() < cfg.duration {
        std::thread::sleep(cfg.fault_period);
        let acted = catch_unwind(AssertUnwindSafe(|| remote_action(&*fx, &mut rng, &cfg)));
        match acted {
            Ok(true) => faults += 1,
            Ok(false) => {}
            Err(_) => bump(&tally.panics),
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            progress(&snapshot(faults));
        }
    }
    // Calm the remote, stop the callers and wait for them (bounded).
    fx.remote().set_fault(Fault::None);
    fx.remote().release();
    // Relaxed: see `caller`.
    stop.store(true, Ordering::Relaxed);
    let join_bound = Instant::now() + cfg.call_timeout + cfg.hang_slack;
    let mut joined = 0;
    while joined < cfg.threads {
        let left = join_bound.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) => joined += 1,
            Err(_) => break,
        }
    }
    let mut report = snapshot(faults);
    report.hangs += (cfg.threads - joined) as u64;
    // Shut down on a thread of its own, so a shutdown that never returns is a hang, not a
    // stuck run.
    let (sd_tx, sd_rx) = mpsc::channel();
    let sd_fx = fx.clone();
    let sd_start = Instant::now();
    std::thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(|| {
            let _ = sd_fx.transport().shutdown();
            sd_fx.transport().stats()
        }));
        let _ = sd_tx.send(r);
    });
    match sd_rx.recv_timeout(fx.reply_timeout() + cfg.hang_slack) {
        Ok(Ok(s)) => report.leaks = s.pool_capacity.saturating_sub(s.pool_free),
        Ok(Err(_)) => report.panics += 1,
        Err(_) => report.hangs += 1,
    }
    report.shutdown_time = sd_start.elapsed();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loopback::LoopbackFixture;

    #[test]
    fn a_short_soak_of_the_loopback_is_clean_and_counts() {
        let cfg = SoakConfig {
            duration: Duration::from_millis(600),
            threads: 3,
            ..SoakConfig::default()
        };
        let r = soak::<LoopbackFixture>(cfg, &|_| {});
        assert!(r.clean(), "{r:?}");
        assert!(r.operations > 0 && r.ok > 0, "{r:?}");
        assert!(r.faults_injected > 0, "{r:?}");
        assert_eq!(r.operations, r.ok + r.errors() + r.wrong_replies + r.panics);
    }
}
