//! `--instructions`: instructions and atomic read-modify-writes per inline round trip, per
//! backend, counted by callgrind (docs/benchmarks.md, "Instruction counts per round trip").
//!
//! For each backend the bench runs itself twice under
//! `valgrind --tool=callgrind --collect-bus=yes`, as `--profile NAME --rounds N` with
//! [`FEW`] and [`MANY`] round trips, and prints the difference of the two runs' totals over
//! `MANY - FEW`: the cost of one round trip without the setup. `Ir` is instructions executed,
//! `Ge` (global bus events) the locked read-modify-writes among them. Unlike a time, both repeat
//! to the instruction on a loaded machine, so this table is the one to compare between commits.
//!
//! With `--functions [N]` it also prints, for each backend, the `N` (default 12) functions with
//! the most instructions of their own per round trip (callees not included) and their `Ge`, both
//! sides of the pair together: where a round trip's work is. The function lists come from
//! `callgrind_annotate` (part of valgrind) on the same two runs; a function's cost is the sum
//! over every source file its inlined code came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Round trips of the shorter run.
pub(crate) const FEW: u64 = 2_000;
/// Round trips of the longer run.
pub(crate) const MANY: u64 = 12_000;

/// One callgrind run's totals.
struct Totals {
    ir: u64,
    ge: u64,
}

/// The totals of a callgrind output file: its `events:` line names the columns of its
/// `summary:` (or `totals:`) line.
fn parse(text: &str) -> Result<Totals, String> {
    let mut events: Vec<&str> = Vec::new();
    let mut totals: Vec<u64> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("events:") {
            events = rest.split_whitespace().collect();
        } else if let Some(rest) = line
            .strip_prefix("summary:")
            .or_else(|| line.strip_prefix("totals:"))
        {
            totals = rest
                .split_whitespace()
                .map(|v| v.parse().map_err(|e| format!("total {v:?}: {e}")))
                .collect::<Result<_, _>>()?;
        }
    }
    let get = |name: &str| {
        events
            .iter()
            .position(|e| *e == name)
            .and_then(|i| totals.get(i).copied())
            .ok_or_else(|| format!("no {name} total in the callgrind output"))
    };
    Ok(Totals {
        ir: get("Ir")?,
        ge: get("Ge")?,
    })
}

/// `Ir` and `Ge` of each function's own code in one run, by function name (the sum over the
/// source files `callgrind_annotate` lists it under).
pub(crate) type Functions = BTreeMap<String, (u64, u64)>;

/// A count of `callgrind_annotate`'s listing: `1,234` or `.` (none).
fn annotate_count(v: &str) -> Option<u64> {
    if v == "." {
        return Some(0);
    }
    v.replace(',', "").parse().ok()
}

/// The function name of a `file:function [object]` entry: the text after the first `:` that is
/// not part of a `::` path separator, without the object.
fn function_name(entry: &str) -> &str {
    let b = entry.as_bytes();
    let colon = (0..b.len())
        .find(|&i| b[i] == b':' && b.get(i + 1) != Some(&b':') && (i == 0 || b[i - 1] != b':'));
    let name = colon.map_or(entry, |i| &entry[i + 1..]);
    match name.rfind(" [") {
        Some(i) if name.ends_with(']') => &name[..i],
        _ => name,
    }
}

/// The per-function lines of `callgrind_annotate --auto=no` for events `Ir Ge`: each is `Ir
/// (pct) Ge (pct) file:function [object]`, a count `.` standing for none (with no percentage).
pub(crate) fn parse_functions(listing: &str) -> Functions {
    let mut out = Functions::new();
    for line in listing.lines() {
        let mut rest = line.trim_start();
        let mut counts = [0u64; 2];
        let mut ok = true;
        for c in &mut counts {
            let (v, after) = rest.split_once(' ').unwrap_or((rest, ""));
            match annotate_count(v) {
                Some(n) => *c = n,
                None => ok = false,
            }
            rest = after.trim_start();
            if v != "." {
                // The percentage in brackets after a count.
                match rest.strip_prefix('(').and_then(|r| r.split_once(')')) {
                    Some((_, after)) => rest = after.trim_start(),
                    None => ok = false,
                }
            }
            if !ok {
                break;
            }
        }
        if !ok || rest.is_empty() || rest.starts_with("PROGRAM TOTALS") {
            continue;
        }
        let e = out.entry(function_name(rest).to_string()).or_insert((0, 0));
        e.0 += counts[0];
        e.1 += counts[1];
    }
    out
}

/// Run this binary under callgrind for `rounds` inline round trips of `name`; with `functions`,
/// also its per-function listing.
fn count(
    exe: &Path,
    name: &str,
    rounds: u64,
    functions: bool,
) -> Result<(Totals, Functions), String> {
    let out: PathBuf = std::env::temp_dir().join(format!(
        "fwipc-bench-callgrind-{}-{name}-{rounds}",
        std::process::id()
    ));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--collect-bus=yes")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(exe)
        .args(["--profile", name, "--rounds", &rounds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("valgrind: {e} (is it installed?)"))?;
    let text = std::fs::read_to_string(&out);
    let listing = if functions && status.success() {
        Command::new("callgrind_annotate")
            .args(["--threshold=100", "--auto=no"])
            .arg(&out)
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("callgrind_annotate: {e} (is valgrind installed?)"))
            .and_then(|o| {
                String::from_utf8(o.stdout).map_err(|e| format!("callgrind_annotate: {e}"))
            })
    } else {
        Ok(String::new())
    };
    let _ = std::fs::remove_file(&out);
    if !status.success() {
        return Err(format!("{name}: the run under callgrind failed ({status})"));
    }
    let totals = parse(&text.map_err(|e| format!("{}: {e}", out.display()))?)?;
    Ok((totals, parse_functions(&listing?)))
}

/// Print the table for `names`, then, with `functions` (`Some(n)`), the `n` costliest functions
/// of each; `Err` on the first backend that cannot be counted.
pub fn run(names: &[&str], functions: Option<usize>) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
    println!(
        "Instructions (`Ir`) and atomic read-modify-writes (`Ge`) per inline round trip: callgrind \
         totals of {MANY} minus {FEW} round trips, over {}.",
        MANY - FEW
    );
    println!();
    println!("| backend | Ir | Ge |");
    println!("|---|---:|---:|");
    let per = (MANY - FEW) as f64;
    let mut lists = Vec::new();
    for name in names {
        let (few, few_fns) = count(&exe, name, FEW, functions.is_some())?;
        let (many, many_fns) = count(&exe, name, MANY, functions.is_some())?;
        let ir = many.ir.saturating_sub(few.ir) as f64 / per;
        let ge = many.ge.saturating_sub(few.ge) as f64 / per;
        println!("| {name} | {ir:.0} | {ge:.1} |");
        if let Some(n) = functions {
            lists.push((*name, top_functions(&few_fns, &many_fns, n), ir, ge));
        }
    }
    for (name, top, ir, ge) in lists {
        println!();
        println!(
            "**{name}**: the functions with the most instructions of their own per round trip"
        );
        println!();
        println!("| function | Ir | Ge |");
        println!("|---|---:|---:|");
        let (mut shown_ir, mut shown_ge) = (0.0, 0.0);
        for (f, fir, fge) in &top {
            println!("| `{f}` | {fir:.0} | {fge:.1} |");
            shown_ir += fir;
            shown_ge += fge;
        }
        println!(
            "| *the rest* | {:.0} | {:.1} |",
            (ir - shown_ir).max(0.0),
            (ge - shown_ge).max(0.0)
        );
    }
    Ok(())
}

/// The `n` functions whose own instructions grew most per round trip from the `few` run to the
/// `many` one, as `(name, Ir, Ge)` per round trip, most first.
pub(crate) fn top_functions(
    few: &Functions,
    many: &Functions,
    n: usize,
) -> Vec<(String, f64, f64)> {
    let per = (MANY - FEW) as f64;
    let mut rows: Vec<(String, f64, f64)> = many
        .iter()
        .map(|(f, &(ir, ge))| {
            let (fir, fge) = few.get(f).copied().unwrap_or((0, 0));
            let ir = ir.saturating_sub(fir) as f64 / per;
            let ge = ge.saturating_sub(fge) as f64 / per;
            (short_name(f), ir, ge)
        })
        .filter(|(_, ir, _)| *ir >= 0.5)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows.truncate(n);
    rows
}

/// A function name, shorter: `<impl …>` blocks read `<…>`, the core crate is `transport_api`
/// and its `Transport` trait is named alone.
fn short_name(f: &str) -> String {
    f.replace("<impl ", "<")
        .replace("fwipc_transport_api::transport::Transport", "Transport")
        .replace("fwipc_transport_api::", "transport_api::")
}
