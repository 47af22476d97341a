//! `--lines`: the cache lines one inline round trip moves between the driver's side and the
//! remote's, per backend and per step, from a model of two caches fed with every memory access of
//! the round trip (docs/benchmarks.md, "Cache lines per round trip").
//!
//! (b) prices a round trip's line transfers in time, as the spinning round trip less the inline
//! one over half a ping-pong; that figure moves with the machine's load and says nothing about
//! *which* lines travel. This mode counts them instead, the way callgrind counts instructions:
//! the bench runs itself under `valgrind --tool=lackey --trace-mem=yes` (every load, store and
//! read-modify-write with its address and the instruction that made it) as `--profile NAME
//! --rounds N --line-marks`, whose round trips store one byte of [`super::LINE_MARKS`] before
//! each step, so the trace says which step (and so which side: the remote step is the remote's,
//! the four others the driver's) made each access. Each access then goes through [`Model`]: two
//! caches of unbounded size and 64-byte lines, where
//!
//! - a side that touches a line it does not hold while the other side holds it **fetches** it
//!   (the line travels from the other core's cache; the other keeps a shared copy after a load,
//!   loses it after a store);
//! - a side that stores to a line it holds shared with the other side **invalidates** the other
//!   copy (no data travels, but the store waits for the other core's acknowledgement);
//! - anything else (a line only one side holds, or one neither holds yet) costs no transfer.
//!
//! The remote is stepped as (b)'s spinning remote runs ([`SimMode::SteppedPolling`]: a simulated
//! virtio device asks the driver for no kicks), so the counts are the lines (b) waits for; with
//! `--kicked`, as in (a) ([`SimMode::Stepped`]: the device asks for kicks, and its kick and
//! interrupt line move too).
//!
//! [`SimMode::SteppedPolling`]: fwipc_transport_api::fixture::SimMode::SteppedPolling
//! [`SimMode::Stepped`]: fwipc_transport_api::fixture::SimMode::Stepped
//!
//! A two-thread ping-pong of one line, the floor of (b), is two fetches per round trip in this
//! model. The counts repeat exactly for the same binary run the same way, whatever the machine
//! is doing. Run from another path or with another environment, the heap may place objects
//! differently: a count that moves then is two objects sharing a line by where the allocator
//! put them (real false sharing, which the hardware would pay too).
//!
//! What the model leaves out: both sides run on one thread here, so memory that is per-thread in
//! the two-thread run (the stack, thread-locals) would look shared: the stack and the thread's
//! static thread-local block are left out (their addresses are printed by the marked run).
//! Polling: a spinning side re-reads lines the other writes; the model sees one read per step,
//! which is the read that finds the new value. Eviction, prefetching of adjacent lines and
//! hardware that moves lines in pairs are not modelled.
//!
//! With `--sites N` it also prints, per backend, the `N` instructions that cause the most
//! fetches and invalidations, as source lines (`addr2line`, part of binutils, on this binary).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::Path;
use std::process::{Command, Stdio};

/// Marked round trips of one run.
pub(crate) const ROUNDS: u64 = 300;
/// Marked round trips not counted: the model's caches start empty, and the first round trips
/// fetch every line once.
pub(crate) const SKIP: u64 = 100;

/// Instructions looked up (the ones that move the most) before they are grouped by source line.
const SYMBOLIZED: usize = 400;

/// Workspace frames shown per instruction ([`pick_frame`]).
const FRAMES: usize = 3;

/// Bytes per cache line in the model.
pub(crate) const LINE: u64 = 64;

/// The steps of an inline round trip, in order: a marker's index names its step (the framework
/// bench's step tables use these names too).
pub(crate) const STEP_NAMES: [&str; 5] = [
    "send",
    "remote step",
    "poll_done",
    "fetch_response",
    "mark_txdone",
];

/// The step whose accesses are the remote's.
pub(crate) const REMOTE_STEP: usize = 1;

/// One access of a lackey trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// An instruction at this address (the data accesses after it are its own).
    Instr(u64),
    /// A load of `size` bytes.
    Load(u64, u64),
    /// A store.
    Store(u64, u64),
    /// A read-modify-write.
    Modify(u64, u64),
}

/// One line of `valgrind --tool=lackey --trace-mem=yes` output: `I  addr,size`, ` L addr,size`,
/// ` S addr,size` or ` M addr,size` (hex addresses, decimal sizes); anything else is `None`.
pub(crate) fn parse_line(line: &str) -> Option<Access> {
    let kind = line.get(..2)?;
    let (addr, size) = line.get(3..)?.trim().split_once(',')?;
    let addr = u64::from_str_radix(addr, 16).ok()?;
    let size: u64 = size.trim().parse().ok()?;
    match kind {
        "I " => Some(Access::Instr(addr)),
        " L" => Some(Access::Load(addr, size)),
        " S" => Some(Access::Store(addr, size)),
        " M" => Some(Access::Modify(addr, size)),
        _ => None,
    }
}

/// Which of the two sides holds a line.
#[derive(Debug, Default, Clone, Copy)]
struct Held([bool; 2]);

/// Per step: lines fetched from the other side, and the other side's copies invalidated.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Moves {
    /// Lines that travelled to this step's side.
    pub fetched: u64,
    /// Stores to a line both sides held.
    pub invalidated: u64,
}

/// The two-cache model (module documentation), fed one trace line at a time.
pub(crate) struct Model {
    /// Addresses of the step markers: a load of `marks.start + k` starts step `k`.
    marks: Range<u64>,
    /// Memory left out (the stack, the thread-local block).
    excluded: Vec<Range<u64>>,
    lines: HashMap<u64, Held>,
    /// The step running, `None` before the first marker.
    step: Option<usize>,
    /// Marked round trips begun (markers of step 0).
    rounds: u64,
    /// Round trips begun before counting starts.
    skip: u64,
    /// The instruction of the accesses that follow.
    instr: u64,
    /// Counted moves per step.
    pub steps: [Moves; 5],
    /// Counted fetches and invalidations per instruction address.
    pub sites: HashMap<u64, u64>,
}

impl Model {
    /// A model with no line held anywhere; markers at `marks`, `excluded` left out, the first
    /// `skip` marked round trips not counted.
    pub(crate) fn new(marks: Range<u64>, excluded: Vec<Range<u64>>, skip: u64) -> Self {
        Model {
            marks,
            excluded,
            lines: HashMap::new(),
            step: None,
            rounds: 0,
            skip,
            instr: 0,
            steps: [Moves::default(); 5],
            sites: HashMap::new(),
        }
    }

    /// Marked round trips counted so far.
    pub(crate) fn counted_rounds(&self) -> u64 {
        self.rounds.saturating_sub(self.skip)
    }

    /// Feed one access.
    pub(crate) fn feed(&mut self, a: Access) {
        let (addr, size, store) = match a {
            Access::Instr(at) => {
                self.instr = at;
                return;
            }
            Access::Load(addr, size) => (addr, size, false),
            Access::Store(addr, size) | Access::Modify(addr, size) => (addr, size, true),
        };
        if self.marks.contains(&addr) {
            let k = (addr - self.marks.start) as usize;
            if k < STEP_NAMES.len() {
                self.step = Some(k);
                if k == 0 {
                    self.rounds += 1;
                }
            }
            return;
        }
        let Some(step) = self.step else {
            return;
        };
        if self.excluded.iter().any(|r| r.contains(&addr)) {
            return;
        }
        let side = usize::from(step == REMOTE_STEP);
        let counting = self.rounds > self.skip;
        let last = addr.saturating_add(size.max(1) - 1) / LINE;
        for line in addr / LINE..=last {
            let h = self.lines.entry(line).or_default();
            let (mine, theirs) = (h.0[side], h.0[1 - side]);
            let (fetched, invalidated) = match (mine, theirs, store) {
                (false, true, _) => (true, false),
                (true, true, true) => (false, true),
                _ => (false, false),
            };
            h.0[side] = true;
            if store {
                h.0[1 - side] = false;
            }
            if counting && (fetched || invalidated) {
                let m = &mut self.steps[step];
                m.fetched += u64::from(fetched);
                m.invalidated += u64::from(invalidated);
                *self.sites.entry(self.instr).or_default() += 1;
            }
        }
    }
}

/// What the marked run prints on its standard error, one `key=0x…` pair each: the markers, a
/// stack address of the round trips' thread, its thread-local block and the addresses this
/// binary is loaded at (`base..end`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunInfo {
    pub marks: u64,
    pub stack: u64,
    pub tls: u64,
    pub base: u64,
    pub end: u64,
}

/// The `fwipc-lines` line of the marked run's standard error.
pub(crate) fn parse_run_info(stderr: &str) -> Option<RunInfo> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("fwipc-lines "))?;
    let mut info = RunInfo::default();
    for kv in line.split_whitespace() {
        let (k, v) = kv.split_once('=')?;
        let v = u64::from_str_radix(v.strip_prefix("0x")?, 16).ok()?;
        match k {
            "marks" => info.marks = v,
            "stack" => info.stack = v,
            "tls" => info.tls = v,
            "base" => info.base = v,
            "end" => info.end = v,
            _ => {}
        }
    }
    (info.marks != 0 && info.stack != 0).then_some(info)
}

/// The memory the model leaves out around `info`'s stack and thread-local addresses: the 8 MiB
/// below the stack address and 1 MiB above it, and 4 KiB either side of the thread-local one.
pub(crate) fn excluded(info: &RunInfo) -> Vec<Range<u64>> {
    let stack = info.stack.saturating_sub(8 << 20)..info.stack.saturating_add(1 << 20);
    let mut v = Vec::with_capacity(2);
    v.push(stack);
    if info.tls != 0 {
        v.push(info.tls.saturating_sub(4096)..info.tls.saturating_add(4096));
    }
    v
}

/// One backend's counts per round trip.
struct Counted {
    steps: [Moves; 5],
    rounds: u64,
    sites: Vec<(u64, u64)>,
    /// Where this binary was loaded in the marked run.
    exe: Range<u64>,
}

/// Run this binary under lackey for `name`'s marked round trips and feed the trace to the model.
fn count(exe: &Path, name: &str, kicked: bool) -> Result<Counted, String> {
    let trace =
        std::env::temp_dir().join(format!("fwipc-bench-lackey-{}-{name}", std::process::id()));
    let out = Command::new("valgrind")
        .args(["--tool=lackey", "--trace-mem=yes"])
        .arg(format!("--log-file={}", trace.display()))
        .arg(exe)
        .args(["--profile", name, "--rounds", &ROUNDS.to_string()])
        .arg("--line-marks")
        .args(kicked.then_some("--kicked"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("valgrind: {e} (is it installed?)"));
    let result = out.and_then(|out| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!(
                "{name}: the run under lackey failed ({}): {stderr}",
                out.status
            ));
        }
        let info = parse_run_info(&stderr)
            .ok_or_else(|| format!("{name}: no `fwipc-lines` line from the marked run"))?;
        let file = std::fs::File::open(&trace).map_err(|e| format!("{}: {e}", trace.display()))?;
        let marks = info.marks..info.marks + STEP_NAMES.len() as u64;
        let mut model = Model::new(marks, excluded(&info), SKIP);
        let mut line = String::new();
        let mut r = BufReader::with_capacity(1 << 20, file);
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if let Some(a) = parse_line(&line) {
                        model.feed(a);
                    }
                }
                Err(e) => return Err(format!("{}: {e}", trace.display())),
            }
        }
        let rounds = model.counted_rounds();
        if rounds == 0 {
            return Err(format!("{name}: no marked round trip in the trace"));
        }
        let mut sites: Vec<(u64, u64)> = model.sites.iter().map(|(&a, &n)| (a, n)).collect();
        sites.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(Counted {
            steps: model.steps,
            rounds,
            sites,
            exe: info.base..info.end,
        })
    });
    let _ = std::fs::remove_file(&trace);
    result
}

/// Where each of `addrs` is ([`pick_frame`]), for addresses of `exe` loaded at `at`, from
/// `addr2line` (`-a -f -C -i`); an address outside `at` is in a shared library (in a steady
/// round trip, the C library's `memcpy` and `memset`). `None` for every address where that
/// fails.
fn symbolize(exe: &Path, at: &Range<u64>, addrs: &[u64]) -> Vec<Option<String>> {
    if addrs.is_empty() || at.start == 0 {
        return vec![None; addrs.len()];
    }
    let base = at.start;
    let out = Command::new("addr2line")
        .arg("-e")
        .arg(exe)
        .args(["-a", "-f", "-C", "-i"])
        .args(
            addrs
                .iter()
                .map(|a| format!("{:#x}", a.saturating_sub(base))),
        )
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else {
        return vec![None; addrs.len()];
    };
    let frames = parse_addr2line(&String::from_utf8_lossy(&out.stdout));
    if frames.len() != addrs.len() {
        return vec![None; addrs.len()];
    }
    frames
        .iter()
        .zip(addrs)
        .map(|(f, a)| {
            if at.contains(a) {
                pick_frame(f)
            } else {
                Some(OUTSIDE.to_string())
            }
        })
        .collect()
}

/// What an instruction outside this binary is called in the listing.
const OUTSIDE: &str = "outside this binary: the C library (memcpy, memset)";

/// The output of `addr2line -a -f -C -i`: per address (a `0x…` line), its frames as
/// `(function, file:line)`, innermost first.
pub(crate) fn parse_addr2line(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        if l.starts_with("0x") {
            out.push(Vec::new());
            continue;
        }
        let Some(frames) = out.last_mut() else {
            continue;
        };
        if let Some(loc) = lines.next() {
            frames.push((l.to_string(), loc.to_string()));
        }
    }
    out
}

/// Where an instruction is, in this workspace's code: `file:line (function)` of the innermost
/// inlined frame whose source is in the workspace, then ` ← ` and the next such frame out in
/// another file (the caller of a helper such as `shared_mem`'s accessors or the lock shim), up
/// to [`FRAMES`]; the innermost frame when none is the workspace's.
pub(crate) fn pick_frame(frames: &[(String, String)]) -> Option<String> {
    let ours = |loc: &str| {
        let p = short_path(loc);
        !p.starts_with('/') && !p.starts_with("library/") && !p.starts_with("??")
    };
    // One frame per source file: the next one out is the first in another file.
    let mut shown: Vec<String> = Vec::new();
    let mut last_file = String::new();
    for (f, loc) in frames.iter().filter(|(_, loc)| ours(loc)) {
        let path = short_path(loc);
        let file = path
            .rsplit_once(':')
            .map_or(path.as_str(), |(f, _)| f)
            .to_string();
        if file == last_file {
            continue;
        }
        shown.push(format!("{path} ({})", short_function(f)));
        last_file = file;
        if shown.len() == FRAMES {
            break;
        }
    }
    if shown.is_empty() {
        let (f, loc) = frames.first()?;
        return Some(format!("{} ({})", short_path(loc), short_function(f)));
    }
    Some(shown.join(" ← "))
}

/// A source path from the workspace root (or the standard library's `library/`), without a
/// discriminator.
pub(crate) fn short_path(p: &str) -> String {
    let p = p.split(" (discriminator").next().unwrap_or(p);
    // The workspace root: the parent of this crate's directory.
    if let Some(root) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        if let Ok(rest) = Path::new(p).strip_prefix(root) {
            return rest.display().to_string();
        }
    }
    match p.find("/library/") {
        Some(i) => p[i + 1..].to_string(),
        None => p.to_string(),
    }
}

/// A function name without its generic arguments' paths, at most the last two path segments.
fn short_function(f: &str) -> String {
    let f = f.replace("fwipc_transport_api::", "transport_api::");
    let mut depth = 0;
    let mut plain = String::new();
    for c in f.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let segs: Vec<&str> = plain.split("::").filter(|s| !s.is_empty()).collect();
    segs[segs.len().saturating_sub(2)..].join("::")
}

/// Print the table for `names`, then, with `sites` (`Some(n)`), the `n` instructions that move
/// the most lines in each; `Err` on the first backend that cannot be counted.
pub fn run(names: &[&str], sites: Option<usize>, kicked: bool) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
    let schedule = if kicked {
        "(a)'s schedule: the remote stepped as in (a), a simulated virtio device asking for kicks"
    } else {
        "(b)'s schedule: the remote stepped as a polling one, a simulated virtio device asking \
         for no kicks, as (b)'s spinning one does"
    };
    println!(
        "Cache lines ({LINE} bytes) one inline round trip moves between the two sides, in a model \
         of two caches fed with every access of {} marked round trips (after {SKIP} not counted), \
         traced by valgrind's lackey, in {schedule}: lines fetched from the other side's cache \
         per step, then the total and the stores that invalidated a copy the other side held. A \
         cache-line ping-pong is 2 fetched.",
        ROUNDS - SKIP
    );
    println!();
    println!(
        "| backend | {} | fetched | invalidated |",
        STEP_NAMES.join(" | ")
    );
    println!("|---|{}---:|---:|", "---:|".repeat(STEP_NAMES.len()));
    let mut all = Vec::new();
    for name in names {
        let c = count(&exe, name, kicked)?;
        let per = |n: u64| n as f64 / c.rounds as f64;
        let steps: Vec<String> = c
            .steps
            .iter()
            .map(|m| format!("{:.1}", per(m.fetched)))
            .collect();
        let fetched: u64 = c.steps.iter().map(|m| m.fetched).sum();
        let invalidated: u64 = c.steps.iter().map(|m| m.invalidated).sum();
        println!(
            "| {name} | {} | {:.1} | {:.1} |",
            steps.join(" | "),
            per(fetched),
            per(invalidated)
        );
        all.push((*name, c));
    }
    let Some(n) = sites else {
        return Ok(());
    };
    for (name, c) in all {
        println!();
        println!(
            "**{name}**: the instructions that fetch or invalidate the most lines per round trip"
        );
        println!();
        println!("| source line (function) | lines |");
        println!("|---|---:|");
        // The instructions that move the most, grouped by the source line they come from.
        let top: Vec<(u64, u64)> = c.sites.iter().take(SYMBOLIZED).copied().collect();
        let names = symbolize(&exe, &c.exe, &top.iter().map(|s| s.0).collect::<Vec<_>>());
        let mut by_line: Vec<(String, u64)> = Vec::new();
        for ((addr, k), w) in top.iter().zip(names) {
            let w = w.unwrap_or_else(|| format!("{addr:#x}"));
            match by_line.iter_mut().find(|(l, _)| *l == w) {
                Some(e) => e.1 += k,
                None => by_line.push((w, *k)),
            }
        }
        by_line.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut shown = 0;
        for (w, k) in by_line.iter().take(n) {
            println!("| `{w}` | {:.1} |", *k as f64 / c.rounds as f64);
            shown += k;
        }
        let total: u64 = c.sites.iter().map(|s| s.1).sum();
        println!(
            "| *the rest* | {:.1} |",
            total.saturating_sub(shown) as f64 / c.rounds as f64
        );
    }
    Ok(())
}
