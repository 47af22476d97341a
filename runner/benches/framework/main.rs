//! What fwipc itself costs per round trip, separated from the simulators' sleeps and the OS
//! scheduler (issue 13, items 1a–1f; 1g is `harness-vhost-user/benches/daemon_peer.rs`).
//!
//! - **(a) framework cost**: the remote is stepped inline, on the caller's thread
//!   ([`SimMode::Stepped`] + [`RemoteControl::step`]): no OS wake-up, no sleep, no second core.
//!   A 32-byte echo round trip (send → remote step → `poll_done` → `fetch_response` →
//!   `mark_txdone`), in total and per step.
//! - **(b) two threads, spinning remote**: the remote's own thread spins ([`SimMode::Spin`]),
//!   the caller spins on `poll_done` (polled completion).
//! - **(c) two threads, parked remote** ([`parked`]): interrupt-style completion next to
//!   crossbeam-channel and iceoryx2, placed by the scheduler and with one core per side
//!   ([`placement`]).
//! - **(d) pipelined throughput** ([`pipeline`]) at 1, 8, 64 and the maximum in flight, and the
//!   VCHIQ round trip against the number of open services ([`services`]).
//! - **(e) bulk** ([`bulk`]) of 4 KiB, 64 KiB and 1 MiB next to memcpy of the same size.
//! - **(f) heap allocations per steady-state round trip**, driver side and remote side counted
//!   separately by this binary's counting allocator (a thread-local side tag: the bench's thread
//!   is the driver, except inside an inline remote step; every other thread is the remote).
//!
//! Every figure is a ratio to a floor measured in the same process, interleaved with the
//! backends, median of the samples: the two-thread floor is one cache line ping-ponged between
//! two spinning threads (a round trip), the one-thread floor a 32-byte copy through a function
//! call that is not inlined. Only ratios are comparable across runs and machines.
//!
//! `cargo bench -p fwipc-runner --bench framework` (`-- --quick` for the CI smoke, under a
//! minute; it exits non-zero only if a backend fails, never on timing; `-- --svg DIR` also
//! draws the plots into `DIR`, see [`plots`]). `scripts/bench-docs.sh` regenerates
//! `docs/benchmarks.md` with it. With
//! `FWIPC_BENCH_ALLOC_TRACE=N` it prints a backtrace for each of the first `N` allocations
//! counted in the (f) phase, to find where a steady-state allocation comes from. `--instructions`
//! prints instructions and atomic read-modify-writes per inline round trip instead, counted by
//! callgrind ([`instr`]; with `--functions`, also where in each backend they are); `--lines` the
//! cache lines a round trip moves between the two sides, counted in a model fed with the round
//! trip's memory accesses in (b)'s schedule ([`lines`]; with `--sites`, the source lines that move
//! them; with `--kicked`, in (a)'s). `--parked` runs (c) alone (with `--samples N` and `--only
//! NAME`, a quick before/after comparison of the interrupt-style path); `--bulk-only` likewise
//! runs (e) alone (7 samples, or `--samples N`). `--profile NAME` runs only inline round trips
//! of one backend (`--bulk SIZE`: only its bulk round trips of that size), for a profiler.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{echo_reply_byte, Fixture, RemoteControl, SimMode};
use fwipc_transport_api::{Completion, Request, Transport, TxOutcome};

mod bulk;
mod instr;
mod lines;
mod parked;
mod parked_steps;
mod pipeline;
mod placement;
mod plots;
mod services;

// ---- the counting allocator -------------------------------------------------------------------

/// Side tags (index into `ALLOCS`).
const DRIVER: u8 = 0;
const REMOTE: u8 = 1;

thread_local! {
    /// Which side this thread's allocations are charged to. Threads the bench did not tag (the
    /// simulators' own threads) are the remote.
    static SIDE: Cell<u8> = const { Cell::new(REMOTE) };
    /// Set while printing a backtrace (whose own allocations are not counted).
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// Allocations per side while `COUNTING` is on.
static ALLOCS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static COUNTING: AtomicBool = AtomicBool::new(false);
/// Backtraces still to print (`FWIPC_BENCH_ALLOC_TRACE`).
static TRACES_LEFT: AtomicU32 = AtomicU32::new(0);

struct Counting;

impl Counting {
    fn count() {
        // Relaxed: a switch read by every allocation; the phases that flip it are separated by
        // the joins/handshakes of the benchmark itself, and a count is only read after them.
        if !COUNTING.load(Ordering::Relaxed) {
            return;
        }
        let side = SIDE.try_with(|s| s.get()).unwrap_or(REMOTE);
        // Relaxed: a counter, read after the measured phase.
        ALLOCS[usize::from(side)].fetch_add(1, Ordering::Relaxed);
        // Relaxed: a budget for debug output.
        if TRACES_LEFT.load(Ordering::Relaxed) > 0 && !TRACING.try_with(|t| t.get()).unwrap_or(true)
        {
            TRACING.with(|t| t.set(true));
            // Relaxed: as above.
            TRACES_LEFT.fetch_sub(1, Ordering::Relaxed);
            let who = if side == DRIVER { "driver" } else { "remote" };
            eprintln!(
                "allocation on the {who} side, thread {:?}:\n{}",
                std::thread::current().name(),
                std::backtrace::Backtrace::force_capture()
            );
            TRACING.with(|t| t.set(false));
        }
    }
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        Self::count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Run `f` with this thread's allocations charged to `side`.
fn as_side<R>(side: u8, f: impl FnOnce() -> R) -> R {
    let old = SIDE.with(|s| s.replace(side));
    let r = f();
    SIDE.with(|s| s.set(old));
    r
}

// ---- floors -----------------------------------------------------------------------------------

/// Chunks a measurement is timed in.
const CHUNKS: usize = 20;

/// Times a run of `rounds` in [`CHUNKS`] equal chunks; the run's figure is the median chunk (ns
/// per round), so a time slice lost to the machine's other work spoils one chunk, not the sample.
struct Chunked {
    per: u64,
    left: u64,
    t: [f64; CHUNKS],
    n: usize,
    start: Instant,
}

impl Chunked {
    fn new(rounds: u64) -> Self {
        let per = (rounds / CHUNKS as u64).max(1);
        Chunked {
            per,
            left: per,
            t: [0.0; CHUNKS],
            n: 0,
            start: Instant::now(),
        }
    }

    /// After each round.
    #[inline]
    fn tick(&mut self) {
        self.left -= 1;
        if self.left == 0 {
            self.left = self.per;
            let now = Instant::now();
            if self.n < CHUNKS {
                self.t[self.n] = (now - self.start).as_nanos() as f64 / self.per as f64;
                self.n += 1;
            }
            self.start = now;
        }
    }

    /// Median ns per round over the chunks.
    fn median(mut self) -> f64 {
        let t = &mut self.t[..self.n.max(1)];
        t.sort_by(|a, b| a.total_cmp(b));
        t[t.len() / 2]
    }
}

/// Two threads ping-pong one cache line (Acquire/Release), one round trip per round. The partner
/// spins only while a sample runs and parks between samples, so it never competes with the
/// backends' measurements for the two cores.
struct PingPong {
    line: Arc<AtomicU64>,
    target: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    th: Option<std::thread::JoinHandle<()>>,
}

impl PingPong {
    fn new() -> Self {
        let line = Arc::new(AtomicU64::new(0));
        let target = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, t, s) = (line.clone(), target.clone(), stop.clone());
        let th = std::thread::spawn(move || {
            // Relaxed: the stop flag only ends the loop (the join synchronises).
            while !s.load(Ordering::Relaxed) {
                std::thread::park();
                // Acquire: pairs with the Release store of the sample's target.
                let end = t.load(Ordering::Acquire);
                loop {
                    // Acquire/Release on the one shared word: each side's increment publishes
                    // the round to the other.
                    let v = l.load(Ordering::Acquire);
                    if v >= end {
                        break;
                    }
                    if v % 2 == 1 {
                        l.store(v + 1, Ordering::Release);
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        });
        PingPong {
            line,
            target,
            stop,
            th: Some(th),
        }
    }

    /// `rounds` round trips; the median chunk's ns per round trip.
    fn run(&self, rounds: u64) -> f64 {
        // Relaxed: only this thread writes between samples (the partner is parked).
        let base = self.line.load(Ordering::Relaxed);
        // Release: publishes the end of this sample to the partner.
        self.target.store(base + 2 * rounds, Ordering::Release);
        if let Some(t) = &self.th {
            t.thread().unpark();
        }
        let mut c = Chunked::new(rounds);
        for i in 0..rounds {
            let v = base + 2 * i;
            // Release/Acquire: see the partner's loop.
            self.line.store(v + 1, Ordering::Release);
            while self.line.load(Ordering::Acquire) != v + 2 {
                std::hint::spin_loop();
            }
            c.tick();
        }
        c.median()
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        // Relaxed: see the loop.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.th.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The one-thread floor's unit: the payload copied through a call that is not inlined.
#[inline(never)]
fn copy_call(src: &[u8; PAYLOAD], dst: &mut [u8; PAYLOAD]) {
    dst.copy_from_slice(src);
}

/// The floor's source and destination, each on a line of its own. As plain stack arrays their
/// placement followed the stack's, which the address-space randomisation moves from one
/// process to the next: in some placements the copy ran about a quarter slower, and every
/// ratio to `mc` of that run came out lower by as much (docs/benchmarks/changes.md, "The `mc`
/// floor's buffers on lines of their own").
#[repr(C, align(64))]
struct LineBuf([u8; PAYLOAD]);

fn memcpy_call(rounds: u64) -> f64 {
    let src = LineBuf([0x5au8; PAYLOAD]);
    let mut dst = LineBuf([0u8; PAYLOAD]);
    let mut c = Chunked::new(rounds);
    for _ in 0..rounds {
        copy_call(black_box(&src.0), black_box(&mut dst.0));
        c.tick();
    }
    black_box(&dst.0);
    c.median()
}

/// What one `Instant::now()` pair costs (subtracted from each timed step).
fn timer_cost(rounds: u64) -> Duration {
    let mut acc = Duration::ZERO;
    for _ in 0..rounds {
        let t = Instant::now();
        acc += black_box(t).elapsed();
    }
    acc
}

// ---- backends ---------------------------------------------------------------------------------

/// Echo payload size.
const PAYLOAD: usize = 32;
/// Inline remote steps one round trip may take before it counts as a failure.
const MAX_STEPS: u32 = 64;
/// How long one spinning round trip may take before it counts as a failure.
const SPIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The step markers of `--lines` ([`lines`]): a round trip run with `--line-marks` stores to
/// `LINE_MARKS[k]` before step `k` of [`STEPS`], and the trace of that run shows the store.
static LINE_MARKS: [AtomicU8; 8] = [const { AtomicU8::new(0) }; 8];

/// Mark the start of step `k` in a `--lines` trace: one store to `LINE_MARKS[k]` (a store, not
/// a load: the tracer drops a load whose value is unused), kept where it is by compiler fences
/// (the steps' own accesses may be inlined around it).
fn line_mark(k: usize) {
    use std::sync::atomic::{compiler_fence, Ordering::SeqCst};
    compiler_fence(SeqCst);
    if let Some(m) = LINE_MARKS.get(k) {
        // Relaxed: only the trace reads it.
        m.store(1, Ordering::Relaxed);
    }
    compiler_fence(SeqCst);
}

/// The `fwipc-lines` line a `--line-marks` run prints first (see [`lines::parse_run_info`]):
/// the markers, a stack address of this thread, its thread-local block and where this binary
/// is loaded (from `/proc/self/maps`; 0 if not found).
fn print_line_marks_info() {
    let local = 0u8;
    let stack = std::ptr::addr_of!(local) as usize;
    let tls = SIDE.with(|s| s as *const Cell<u8> as usize);
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    // This binary's mappings: the lowest start (its load address) and the highest end.
    let (mut base, mut end) = (usize::MAX, 0usize);
    if let (Ok(maps), Some(exe)) = (std::fs::read_to_string("/proc/self/maps"), exe) {
        for l in maps.lines() {
            let mut f = l.split_whitespace();
            let (Some(range), Some(path)) = (f.next(), f.nth(4)) else {
                continue;
            };
            let Some((s, e)) = range.split_once('-') else {
                continue;
            };
            if let (true, Ok(s), Ok(e)) = (
                Path::new(path) == exe,
                usize::from_str_radix(s, 16),
                usize::from_str_radix(e, 16),
            ) {
                base = base.min(s);
                end = end.max(e);
            }
        }
    }
    if end == 0 {
        base = 0;
    }
    eprintln!(
        "fwipc-lines marks={:#x} stack={stack:#x} tls={tls:#x} base={base:#x} end={end:#x}",
        LINE_MARKS.as_ptr() as usize
    );
}

/// `--profile`'s round trips: with `--rounds N` (`fixed`), one `run(N)`, so that two counted
/// runs differ only in `N` (the instruction counts subtract them); without, `run(per_call)`
/// again and again for 5 s. Returns how many round trips ran.
fn rounds_or_5s(fixed: Option<u64>, per_call: u64, mut run: impl FnMut(u64)) -> u64 {
    if let Some(n) = fixed {
        run(n);
        return n;
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(5) {
        run(per_call);
        n += per_call;
    }
    n
}

/// Step names, in order (the `--lines` markers number the steps the same way).
use lines::STEP_NAMES as STEPS;

type R<T> = Result<T, String>;

/// One backend's pair under benchmark.
trait Bench {
    /// Inline (one thread): `rounds` round trips, ns per round trip (median chunk).
    fn inline_total(&self, rounds: u64) -> R<f64>;
    /// Inline, every step timed on its own: summed time per step.
    fn inline_steps(&self, rounds: u64) -> R<[Duration; 5]>;
    /// Remote spinning on its own thread: `rounds` round trips, ns per round trip (median
    /// chunk).
    fn spin_total(&self, rounds: u64) -> R<f64>;
    /// Inline round trips checking the reply bytes (warm-up).
    fn check(&self, rounds: u64) -> R<()>;
    /// `rounds` inline round trips with their steps marked for `--lines` ([`line_mark`]).
    fn inline_marked(&self, rounds: u64) -> R<()>;
    fn set_mode(&self, mode: SimMode) -> R<()>;
    /// (c) `rounds` interrupt-style round trips, ns per round trip (median chunk); with `each`,
    /// every round trip's time too.
    fn parked(&self, rounds: u64, each: Option<&mut Vec<f64>>) -> R<f64>;
    /// `rounds` round trips on the polled pair waited for as (c) waits (`call`, with
    /// `Wait::Completion`), its remote in whatever mode it was set to; ns per round trip
    /// (median chunk) ([`parked_steps`]).
    fn polled_calls(&self, rounds: u64) -> R<f64>;
    /// (d) Transfers the transport allows in flight at once.
    fn max_in_flight(&self) -> usize;
    /// (d) ns per message with `k` in flight, over `batches` batches.
    fn pipelined(&self, k: usize, batches: u64) -> R<f64>;
    /// (e) Whether the transport has bulk transfers of `size` bytes.
    fn has_bulk(&self, size: usize) -> bool;
    /// (e) ns per bulk round trip (transmit + receive) of `size` bytes.
    fn bulk_round(&self, size: usize, rounds: u64) -> R<f64>;
}

struct Pair<F: Fixture> {
    /// Polled, its remote stepped inline or spinning.
    fx: F,
    /// Interrupt-style completion, its remote in [`SimMode::Normal`] ((c)); built when (c)
    /// first asks for it, so its threads (which wake on timeouts when idle) do not run beside
    /// (a) and (b). `None` for a pair without one.
    parked: Option<std::sync::OnceLock<F>>,
}

impl<F: Fixture> Pair<F> {
    fn new() -> R<Self> {
        let p = Self::from_fixture(F::setup(Completion::Polled));
        p.set_mode(SimMode::Stepped)?;
        Ok(Pair {
            parked: Some(std::sync::OnceLock::new()),
            ..p
        })
    }

    /// A pair around `fx` (built polled), without the parked one.
    fn from_fixture(fx: F) -> Self {
        Pair { fx, parked: None }
    }

    fn parked_fx(&self) -> R<&F> {
        self.parked
            .as_ref()
            .map(|p| p.get_or_init(|| F::setup(Completion::Interrupt)))
            .ok_or_else(|| "no parked pair".into())
    }

    fn remote(&self) -> &dyn RemoteControl {
        self.fx.remote()
    }

    fn step_remote(&self) -> bool {
        as_side(REMOTE, || self.remote().step())
    }

    fn request<'a>(&self, payload: &'a [u8]) -> Request<'a> {
        Request::new(self.fx.echo_target(), payload).polled()
    }

    /// One inline round trip; the reply's length.
    fn inline_once(&self, payload: &[u8], out: &mut [u8]) -> R<usize> {
        self.inline_once_marked(payload, out, |_| {})
    }

    /// [`Pair::inline_once`], calling `mark(k)` before each step `k` of [`STEPS`] (`--lines`
    /// marks them in the trace; the unmarked round trip passes a closure that does nothing).
    fn inline_once_marked(&self, payload: &[u8], out: &mut [u8], mark: impl Fn(usize)) -> R<usize> {
        let t = self.fx.transport();
        mark(0);
        let ticket = t
            .send(&self.request(payload))
            .map_err(|e| format!("send: {e:?}"))?;
        let mut steps = 0;
        loop {
            mark(1);
            self.step_remote();
            mark(2);
            match t.poll_done(&ticket) {
                Ok(true) => break,
                Ok(false) if steps < MAX_STEPS => steps += 1,
                Ok(false) => {
                    t.mark_txdone(ticket, TxOutcome::TimedOut);
                    return Err(format!("no reply after {MAX_STEPS} inline remote steps"));
                }
                Err(e) => {
                    t.mark_txdone(ticket, TxOutcome::Cancelled);
                    return Err(format!("poll_done: {e:?}"));
                }
            }
        }
        mark(3);
        let n = t.fetch_response(&ticket, out);
        mark(4);
        t.mark_txdone(ticket, TxOutcome::Done);
        n.map_err(|e| format!("fetch_response: {e:?}"))
    }
}

impl<F: Fixture> Bench for Pair<F> {
    fn parked(&self, rounds: u64, each: Option<&mut Vec<f64>>) -> R<f64> {
        parked::fwipc_parked(self.parked_fx()?, rounds, each)
    }

    fn polled_calls(&self, rounds: u64) -> R<f64> {
        parked::calls(&self.fx, Completion::Polled, rounds, None)
    }

    fn max_in_flight(&self) -> usize {
        self.fx.transport().max_msg()
    }

    fn pipelined(&self, k: usize, batches: u64) -> R<f64> {
        pipeline::pipelined(self, k, batches)
    }

    fn has_bulk(&self, size: usize) -> bool {
        let c = self.fx.transport().caps();
        c.bulk && c.max_bulk_size >= size
    }

    fn bulk_round(&self, size: usize, rounds: u64) -> R<f64> {
        bulk::bulk_round(self, size, rounds)
    }

    fn set_mode(&self, mode: SimMode) -> R<()> {
        if self.remote().set_sim_mode(mode) {
            Ok(())
        } else {
            Err(format!("the simulated remote did not take {mode:?}"))
        }
    }

    fn check(&self, rounds: u64) -> R<()> {
        let mut out = [0u8; 64];
        for i in 0..rounds {
            let payload = [i as u8; PAYLOAD];
            let n = self.inline_once(&payload, &mut out)?;
            if n != PAYLOAD || out[..n].iter().any(|&b| b != echo_reply_byte(i as u8)) {
                return Err(format!("bad echo reply ({n} bytes)"));
            }
        }
        Ok(())
    }

    fn inline_marked(&self, rounds: u64) -> R<()> {
        let payload = [0x5au8; PAYLOAD];
        let mut out = [0u8; 64];
        for _ in 0..rounds {
            self.inline_once_marked(&payload, &mut out, line_mark)?;
        }
        Ok(())
    }

    fn inline_total(&self, rounds: u64) -> R<f64> {
        let payload = [0x5au8; PAYLOAD];
        let mut out = [0u8; 64];
        let mut c = Chunked::new(rounds);
        for _ in 0..rounds {
            let n = self.inline_once(&payload, &mut out)?;
            if n != PAYLOAD {
                return Err(format!("echo reply of {n} bytes"));
            }
            c.tick();
        }
        Ok(c.median())
    }

    fn inline_steps(&self, rounds: u64) -> R<[Duration; 5]> {
        let t = self.fx.transport();
        let payload = [0x5au8; PAYLOAD];
        let mut out = [0u8; 64];
        let mut acc = [Duration::ZERO; 5];
        for _ in 0..rounds {
            let req = self.request(&payload);
            let s = Instant::now();
            let ticket = t.send(&req);
            acc[0] += s.elapsed();
            let ticket = ticket.map_err(|e| format!("send: {e:?}"))?;
            let mut steps = 0;
            loop {
                let s = Instant::now();
                self.step_remote();
                acc[1] += s.elapsed();
                let s = Instant::now();
                let d = t.poll_done(&ticket);
                acc[2] += s.elapsed();
                match d {
                    Ok(true) => break,
                    Ok(false) if steps < MAX_STEPS => steps += 1,
                    _ => {
                        t.mark_txdone(ticket, TxOutcome::Cancelled);
                        return Err(format!("no reply: {d:?}"));
                    }
                }
            }
            let s = Instant::now();
            let n = t.fetch_response(&ticket, &mut out);
            acc[3] += s.elapsed();
            let s = Instant::now();
            t.mark_txdone(ticket, TxOutcome::Done);
            acc[4] += s.elapsed();
            if n != Ok(PAYLOAD) {
                return Err(format!("fetch_response: {n:?}"));
            }
        }
        Ok(acc)
    }

    fn spin_total(&self, rounds: u64) -> R<f64> {
        let t = self.fx.transport();
        let payload = [0x5au8; PAYLOAD];
        let mut out = [0u8; 64];
        let mut c = Chunked::new(rounds);
        for _ in 0..rounds {
            let ticket = t
                .send(&self.request(&payload))
                .map_err(|e| format!("send: {e:?}"))?;
            let began = Instant::now();
            let mut spins = 0u32;
            loop {
                match t.poll_done(&ticket) {
                    Ok(true) => break,
                    Ok(false) => {
                        spins = spins.wrapping_add(1);
                        // Look at the clock only now and then (it costs as much as a poll).
                        if spins.is_multiple_of(4096) && began.elapsed() > SPIN_TIMEOUT {
                            t.mark_txdone(ticket, TxOutcome::TimedOut);
                            return Err(format!("no reply within {SPIN_TIMEOUT:?}"));
                        }
                        std::hint::spin_loop();
                    }
                    Err(e) => {
                        t.mark_txdone(ticket, TxOutcome::Cancelled);
                        return Err(format!("poll_done: {e:?}"));
                    }
                }
            }
            let n = t.fetch_response(&ticket, &mut out);
            t.mark_txdone(ticket, TxOutcome::Done);
            if n != Ok(PAYLOAD) {
                return Err(format!("fetch_response: {n:?}"));
            }
            c.tick();
        }
        Ok(c.median())
    }
}

/// Builds a backend's pair.
type Ctor = fn() -> R<Box<dyn Bench>>;

// `each_backend!`: the one list of backends (`backends.toml`, read by the runner's `build.rs`).
include!(concat!(env!("OUT_DIR"), "/backends.rs"));

fn pair<F: Fixture + 'static>() -> R<Box<dyn Bench>> {
    Ok(Box::new(Pair::<F>::new()?))
}

// ---- the run ----------------------------------------------------------------------------------

/// Today's UTC date, `YYYY-MM-DD` (civil-from-days, H. Hinnant's algorithm).
fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `v` sorted, then its element at `at(len)`.
fn sorted_at(v: &mut [f64], at: impl FnOnce(usize) -> usize) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[at(v.len())]
}

fn median(v: &mut [f64]) -> f64 {
    sorted_at(v, |n| n / 2)
}

fn ns(d: Duration, rounds: u64) -> f64 {
    d.as_nanos() as f64 / rounds as f64
}

/// Per backend, one entry per sample: the floors measured next to it and the measurement, in ns.
#[derive(Default, Clone)]
struct Samples {
    /// (pp, mc, timer, inline round trip, the 5 steps).
    inline: Vec<(f64, f64, f64, f64, [f64; 5])>,
    /// (pp, mc, spinning-remote round trip).
    spin: Vec<(f64, f64, f64)>,
    allocs_inline: [f64; 2],
    allocs_spin: [f64; 2],
    error: Option<String>,
}

/// A two-thread floor sample more than this many times the run's reference one (its lower
/// quartile) was taken while the two threads did not have a core each (other work held one):
/// that sample's pp ratios are left out, and the count of samples kept is printed. A round trip
/// that waits for a context switch takes 10 to 1000 times the floor; where the two threads run
/// (sibling hyperthreads, two cores of one cache complex) moves the floor itself by about 2.5×
/// within a run on some virtual machines, which is not a disturbance: every ratio divides by
/// the sample's own adjacent floor.
const PP_DEGRADED: f64 = 4.0;

/// The lower quartile of `v` (the reference [`PP_DEGRADED`] is applied to): unlike the minimum,
/// one sample taken while the threads briefly shared a faster path does not reject the rest.
fn lower_quartile(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::INFINITY;
    }
    sorted_at(&mut v, |n| (n - 1) / 4)
}

/// Allocations per round trip on (driver, remote) over `rounds` round trips of `run`.
fn count_allocs(rounds: u64, run: impl FnOnce() -> R<f64>) -> R<[f64; 2]> {
    for a in &ALLOCS {
        // Relaxed: counters, nothing else is published through them.
        a.store(0, Ordering::Relaxed);
    }
    // Relaxed: see `Counting::count`.
    COUNTING.store(true, Ordering::Relaxed);
    let r = run();
    // Relaxed: as above.
    COUNTING.store(false, Ordering::Relaxed);
    r?;
    // Relaxed: read after the phase (the spinning remote is stopped by a handshake first).
    let get = |i: usize| ALLOCS[i].load(Ordering::Relaxed) as f64 / rounds as f64;
    Ok([get(0), get(1)])
}

/// "median (min–max)" of per-sample ratios.
fn spread(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "no sample".into();
    }
    let m = median(v);
    format!("{m:.2} ({:.2}–{:.2})", v[0], v[v.len() - 1])
}

fn main() {
    SIDE.with(|s| s.set(DRIVER));
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only NAME`: just that backend; `--no-spin`: skip (b).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let no_spin = args.iter().any(|a| a == "--no-spin");
    // `--parked`: only (c).
    let parked_only = args.iter().any(|a| a == "--parked");
    // `--bulk-only`: only (e).
    let bulk_only = args.iter().any(|a| a == "--bulk-only");
    // `--svg DIR`: draw the plots into DIR.
    let svg_dir = args
        .iter()
        .position(|a| a == "--svg")
        .and_then(|i| args.get(i + 1).cloned());
    let (samples, rounds) = if quick {
        (5u64, 2_000u64)
    } else {
        (21, 20_000)
    };
    // Samples of the slower sections (d) and (e).
    let few = if quick { 2 } else { 7 };
    // `--samples N`: fewer (or more) interleaved samples, e.g. on a loaded machine.
    let samples_arg: Option<u64> = args
        .iter()
        .position(|a| a == "--samples")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    let samples = samples_arg.unwrap_or(samples);
    let traces = std::env::var("FWIPC_BENCH_ALLOC_TRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let began = Instant::now();

    // Every backend of `backends.toml`, in its order.
    let ctors = each_backend!(F => (F::NAME, pair::<F> as Ctor));
    // `--instructions` (the callgrind table) and `--lines` (the cache-line model's): of every
    // backend (or `--only` one), nothing else; each with an optional list per backend, `N` long
    // (`--functions [N]`: the costliest functions, default 12; `--sites [N]`: the source lines
    // that move the most lines, default 10).
    let counted = |flag: &str| args.iter().any(|a| a == flag);
    if counted("--instructions") || counted("--lines") {
        let names: Vec<&str> = ctors
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| only.as_deref().is_none_or(|o| o == *n))
            .collect();
        let list = |flag: &str, default: usize| {
            args.iter().position(|a| a == flag).map(|i| {
                args.get(i + 1)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(default)
            })
        };
        let r = if counted("--lines") {
            lines::run(&names, list("--sites", 10), counted("--kicked"))
        } else {
            instr::run(&names, list("--functions", 12))
        };
        if let Err(e) = r {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    // `--profile NAME`: only inline round trips of that backend for 5 s (or `--rounds N` of
    // them; `--bulk SIZE`: bulk round trips of that size; `--spin`: (b)'s spinning ones),
    // nothing else (for a profiler).
    if let Some(name) = args
        .iter()
        .position(|a| a == "--profile")
        .and_then(|i| args.get(i + 1))
    {
        let Some((_, ctor)) = ctors.iter().find(|(n, _)| n == name) else {
            eprintln!("no backend {name}");
            std::process::exit(2);
        };
        let b = ctor().unwrap_or_else(|e| panic!("{name}: {e}"));
        // `--rounds N`: exactly N round trips after a checked warm-up of 1,000 instead (for an
        // instruction count: two runs with different N, subtracted, give the instructions of
        // one round trip without the setup).
        let fixed: Option<u64> = args
            .iter()
            .position(|a| a == "--rounds")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok());
        // `--bulk SIZE`: bulk round trips of SIZE bytes (transmit, then receive back) instead,
        // `--rounds N` of them or for 5 s (for a profile of (e) at one size).
        let bulk: Option<usize> = args
            .iter()
            .position(|a| a == "--bulk")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok());
        if let Some(size) = bulk {
            let n = rounds_or_5s(fixed, bulk::rounds_for(size, false), |rounds| {
                b.bulk_round(size, rounds)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            });
            eprintln!("{n} bulk round trips of {size} bytes");
            let _ = b.set_mode(SimMode::Normal);
            return;
        }
        if args.iter().any(|a| a == "--parked") {
            // `--parked`: (c)'s round trips instead (`call` with `Wait::Completion` on the
            // interrupt-style pair, its remote in `Normal` mode), one core per side as in (c)'s
            // second table, for `--rounds N` of them or 5 s (for `perf stat` and `perf record`,
            // which see every thread).
            b.parked(1_000, None)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            // After the warm-up: the pair's threads exist only once it has run.
            let placed = placement::Placed::pin();
            if let Err(why) = &placed {
                eprintln!("not pinned: {why}");
            }
            let n = rounds_or_5s(fixed, 10_000, |rounds| {
                b.parked(rounds, None)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            });
            eprintln!("{n} parked round trips");
            return;
        }
        if args.iter().any(|a| a == "--spin") {
            // `--spin`: (b)'s round trips instead, the remote spinning on its own thread, for
            // `--rounds N` of them or 5 s (for a sampling profiler such as `perf record`, which
            // sees both threads).
            b.check(1_000).unwrap_or_else(|e| panic!("{name}: {e}"));
            b.set_mode(SimMode::Spin)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let n = rounds_or_5s(fixed, 10_000, |rounds| {
                b.spin_total(rounds)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            });
            eprintln!("{n} spinning round trips");
            let _ = b.set_mode(SimMode::Normal);
            return;
        }
        if args.iter().any(|a| a == "--line-marks") {
            // `--line-marks` (run by `--lines` under lackey): a checked warm-up, then
            // `--rounds N` (default 300) round trips with their steps marked.
            // (b)'s schedule, both sides in one thread: a virtio device stepped as a polling
            // one asks for no kicks, as (b)'s spinning one does; with `--kicked`, (a)'s.
            let mode = if args.iter().any(|a| a == "--kicked") {
                SimMode::Stepped
            } else {
                SimMode::SteppedPolling
            };
            b.set_mode(mode).unwrap_or_else(|e| panic!("{name}: {e}"));
            let rounds = fixed.unwrap_or(lines::ROUNDS);
            print_line_marks_info();
            b.check(200).unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Err(e) = b.inline_marked(rounds) {
                panic!("{name}: {e}");
            }
            eprintln!("{rounds} marked inline round trips");
            let _ = b.set_mode(SimMode::Normal);
            return;
        }
        if fixed.is_some() {
            b.check(1_000).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let n = rounds_or_5s(fixed, 10_000, |rounds| {
            b.inline_total(rounds)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        });
        eprintln!("{n} inline round trips");
        let _ = b.set_mode(SimMode::Normal);
        return;
    }
    if let Some(o) = &only {
        if !ctors.iter().any(|(n, _)| n == o) {
            let names: Vec<&str> = ctors.iter().map(|(n, _)| *n).collect();
            eprintln!("no backend {o}; backends: {}", names.join(", "));
            std::process::exit(2);
        }
    }
    let mut benches: Vec<(&str, Option<Box<dyn Bench>>)> = Vec::new();
    let mut res: Vec<Samples> = Vec::new();
    for (name, ctor) in ctors {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let mut s = Samples::default();
        let b = match ctor() {
            Ok(b) => match b.check(rounds / 10) {
                Ok(()) => Some(b),
                Err(e) => {
                    s.error = Some(format!("warm-up: {e}"));
                    let _ = b.set_mode(SimMode::Normal);
                    None
                }
            },
            Err(e) => {
                s.error = Some(format!("setup: {e}"));
                None
            }
        };
        benches.push((name, b));
        res.push(s);
    }
    if parked_only || bulk_only {
        let mut failures: Vec<String> = Vec::new();
        if parked_only {
            parked::run(&benches, samples, rounds / 10, quick, &mut failures);
        }
        if bulk_only {
            bulk::run(&benches, samples_arg.unwrap_or(few), quick, &mut failures);
        }
        for f in &failures {
            println!("\nFAILED {f}");
        }
        for ((name, _), s) in benches.iter().zip(&res) {
            if let Some(e) = &s.error {
                println!("\nFAILED {name}: {e}");
            }
        }
        for b in benches.iter().filter_map(|(_, b)| b.as_ref()) {
            let _ = b.set_mode(SimMode::Normal);
        }
        drop(benches);
        if !failures.is_empty() || res.iter().any(|s| s.error.is_some()) {
            std::process::exit(1);
        }
        return;
    }
    let floor = PingPong::new();
    floor.run(rounds / 10);

    for sample in 0..samples {
        for ((_, b), s) in benches.iter_mut().zip(res.iter_mut()) {
            let Some(bench) = b.as_ref() else { continue };
            let r = (|| -> R<()> {
                // Floors right next to each measurement: other work may run on the machine,
                // and a floor taken while another job holds a core says nothing about the next
                // second.
                let pp1 = floor.run(rounds);
                let mc = memcpy_call(rounds);
                let tc = ns(timer_cost(rounds), rounds);
                let inline = bench.inline_total(rounds)?;
                let st = bench.inline_steps(rounds)?;
                let pp2 = floor.run(rounds);
                let steps = st.map(|d| (ns(d, rounds) - tc).max(0.0));
                s.inline.push((pp1.max(pp2), mc, tc, inline, steps));
                if no_spin {
                    return Ok(());
                }
                bench.set_mode(SimMode::Spin)?;
                let d = bench.spin_total(rounds);
                // Stop spinning before anything else is measured, even after a failure.
                let m = bench.set_mode(SimMode::Stepped);
                let spin = d?;
                m?;
                let pp3 = floor.run(rounds);
                s.spin.push((pp2.max(pp3), mc, spin));
                Ok(())
            })();
            if let Err(e) = r {
                s.error = Some(e);
                let _ = bench.set_mode(SimMode::Normal);
                *b = None;
            }
        }
        eprint!("\rsample {}/{samples}", sample + 1);
    }
    eprintln!();

    // (f): allocations per steady-state round trip (after the warm-up and the samples).
    // Relaxed: a debug budget.
    TRACES_LEFT.store(traces, Ordering::Relaxed);
    for ((_, b), s) in benches.iter_mut().zip(res.iter_mut()) {
        let Some(bench) = b.as_ref() else { continue };
        let r = (|| -> R<()> {
            s.allocs_inline = count_allocs(rounds, || bench.inline_total(rounds))?;
            if no_spin {
                return Ok(());
            }
            bench.set_mode(SimMode::Spin)?;
            let a = count_allocs(rounds, || bench.spin_total(rounds));
            let m = bench.set_mode(SimMode::Stepped);
            s.allocs_spin = a?;
            m
        })();
        if let Err(e) = r {
            s.error = Some(e);
            let _ = bench.set_mode(SimMode::Normal);
            *b = None;
        }
    }
    // Relaxed: as above.
    TRACES_LEFT.store(0, Ordering::Relaxed);

    // The run's reference two-thread floor; samples whose adjacent floor is far above it are
    // left out of the pp ratios.
    let pp_ref = lower_quartile(
        res.iter()
            .flat_map(|s| {
                s.inline
                    .iter()
                    .map(|x| x.0)
                    .chain(s.spin.iter().map(|x| x.0))
            })
            .collect(),
    );
    let ok = |pp: f64| pp <= PP_DEGRADED * pp_ref;
    let (mut pp_mc, mut timer_mc, mut total, mut kept) = (Vec::new(), Vec::new(), 0, 0);
    for s in &res {
        for x in &s.inline {
            total += 1;
            timer_mc.push(x.2 / x.1);
            if ok(x.0) {
                kept += 1;
                pp_mc.push(x.0 / x.1);
            }
        }
    }
    println!(
        "# fwipc framework benchmark\n\n{} UTC, `cargo bench -p fwipc-runner --bench framework{}`; \
         {cores} cores; {samples} interleaved samples × {rounds} round \
         trips, median of the per-sample ratios (min–max in brackets where shown); {PAYLOAD}-byte \
         echo, polled.\n",
        utc_date(),
        if quick { " -- --quick" } else { "" }
    );
    if pp_mc.is_empty() {
        println!("No backend sample with an undisturbed two-thread floor.\n");
    } else {
        println!(
            "Floors, measured next to every backend sample: `pp` = two-thread cache-line \
             ping-pong round trip; `mc` = one-thread {PAYLOAD}-byte copy through a non-inlined \
             call. pp = {} mc. Ratios to pp use the {kept} of {total} samples whose pp was within \
             {PP_DEGRADED}× the run's lower quartile (the others ran while the machine's other \
             work held a core); ratios to mc use every sample. A sample's figure is the median \
             of its {CHUNKS} chunks. Per-step figures have one `Instant` pair ({:.0} mc) \
             subtracted.\n",
            spread(&mut pp_mc),
            median(&mut timer_mc)
        );
    }
    println!("## (a) Framework cost: both sides in one thread\n");
    println!("| backend | round trip / pp | round trip / mc | sum of steps / mc |");
    println!("|---|---:|---:|---:|");
    for ((name, _), s) in benches.iter().zip(res.iter()) {
        if s.inline.is_empty() {
            println!("| {name} | failed | | |");
            continue;
        }
        let mut by_pp: Vec<f64> = s
            .inline
            .iter()
            .filter(|x| ok(x.0))
            .map(|x| x.3 / x.0)
            .collect();
        let mut by_mc: Vec<f64> = s.inline.iter().map(|x| x.3 / x.1).collect();
        let sum: f64 = (0..5)
            .map(|k| median(&mut s.inline.iter().map(|x| x.4[k] / x.1).collect::<Vec<_>>()))
            .sum();
        println!(
            "| {name} | {} | {} | {sum:.0} |",
            spread(&mut by_pp),
            spread(&mut by_mc)
        );
    }
    println!("\nPer step, ratio to mc (median over every sample):\n");
    println!("| backend | {} |", STEPS.join(" | "));
    println!("|---|{}", "---:|".repeat(5));
    for ((name, _), s) in benches.iter().zip(res.iter()) {
        if s.inline.is_empty() {
            continue;
        }
        let cells: Vec<String> = (0..5)
            .map(|k| {
                let a = median(&mut s.inline.iter().map(|x| x.4[k] / x.1).collect::<Vec<_>>());
                format!("{a:.0}")
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    if !no_spin {
        println!("\n## (b) Two threads, spinning remote\n");
        println!(
            "The last column is where the time beyond (a) goes: the spinning round trip minus \
             the same sample's inline one, over half its adjacent `pp` (one cache line moving \
             from one core to the other, one way). It counts the line transfers a round trip \
             waits for one after another, plus any time the two sides spend fighting over a \
             line; both sides' work is already in (a).\n"
        );
        println!(
            "| backend | round trip / pp | samples kept | round trip / mc | (b − a) / (pp / 2) |"
        );
        println!("|---|---:|---:|---:|---:|");
        for ((name, _), s) in benches.iter().zip(res.iter()) {
            let mut v: Vec<f64> = s
                .spin
                .iter()
                .filter(|x| ok(x.0))
                .map(|x| x.2 / x.0)
                .collect();
            let mut m: Vec<f64> = s.spin.iter().map(|x| x.2 / x.1).collect();
            // The inline and spinning figures of one sample are pushed together.
            let mut lines: Vec<f64> = s
                .spin
                .iter()
                .zip(&s.inline)
                .filter(|(x, _)| ok(x.0))
                .map(|(x, a)| (x.2 - a.3) / (x.0 / 2.0))
                .collect();
            println!(
                "| {name} | {} | {} of {} | {} | {} |",
                spread(&mut v),
                v.len(),
                s.spin.len(),
                spread(&mut m),
                spread(&mut lines)
            );
        }
    }
    println!("\n## (f) Heap allocations per steady-state round trip\n");
    println!("| backend | driver (inline) | remote (inline) | driver (spin) | remote (spin) |");
    println!("|---|---:|---:|---:|---:|");
    for ((name, _), s) in benches.iter().zip(&res) {
        let [a, b] = s.allocs_inline;
        let [c, d] = s.allocs_spin;
        println!("| {name} | {a:.3} | {b:.3} | {c:.3} | {d:.3} |");
    }
    // (c)–(e), each printing its own section.
    let mut failures: Vec<String> = Vec::new();
    let (latency, pinned) = parked::run(&benches, samples, rounds / 10, quick, &mut failures);
    let inflight = pipeline::run(&benches, few, rounds, &mut failures);
    if only.as_deref().is_none_or(|o| o == "vchiq") {
        services::run(if quick { 1 } else { 5 }, rounds, &mut failures);
    }
    let bulk = bulk::run(&benches, few, quick, &mut failures);
    if let Some(dir) = svg_dir {
        let d = std::path::Path::new(&dir);
        let r = std::fs::create_dir_all(d)
            .map_err(|e| format!("{}: {e}", d.display()))
            .and_then(|()| {
                plots::lines(
                    &d.join("latency.svg"),
                    if pinned {
                        "(c) parked remote, one core per side: round-trip latency distribution"
                    } else {
                        "(c) parked remote, placed by the scheduler: round-trip latency distribution"
                    },
                    ("round trip / mc", "% of round trips at most"),
                    &latency,
                    (true, false),
                )?;
                plots::lines(
                    &d.join("in-flight.svg"),
                    "(d) cost per message against messages in flight",
                    ("messages in flight", "cost per message / mc"),
                    &inflight,
                    (true, true),
                )?;
                plots::lines(
                    &d.join("bulk.svg"),
                    "(e) bulk bandwidth as a share of memcpy's",
                    ("size (KiB)", "% of memcpy bandwidth"),
                    &bulk,
                    (true, false),
                )
            });
        if let Err(e) = r {
            failures.push(format!("plots: {e}"));
        }
    }
    let mut failed = !failures.is_empty();
    for f in &failures {
        println!("\nFAILED {f}");
    }
    for ((name, _), s) in benches.iter().zip(&res) {
        if let Some(e) = &s.error {
            failed = true;
            println!("\nFAILED {name}: {e}");
        }
    }
    eprintln!("finished in {:.1} s", began.elapsed().as_secs_f64());
    // Tear down with the remotes in their normal mode (the transports' shutdown waits on them).
    for b in benches.iter().filter_map(|(_, b)| b.as_ref()) {
        let _ = b.set_mode(SimMode::Normal);
    }
    drop(benches);
    if failed {
        std::process::exit(1);
    }
}
