//! `--instructions`: instructions and atomic read-modify-writes per inline round trip, per
//! backend, counted by callgrind (docs/benchmarks.md, "Instruction counts per round trip").
//!
//! For each backend the bench runs itself twice under
//! `valgrind --tool=callgrind --collect-bus=yes`, as `--profile NAME --rounds N` with
//! [`FEW`] and [`MANY`] round trips, and prints the difference of the two runs' totals over
//! `MANY - FEW`: the cost of one round trip without the setup. `Ir` is instructions executed,
//! `Ge` (global bus events) the locked read-modify-writes among them. Unlike a time, both repeat
//! to the instruction on a loaded machine, so this table is the one to compare between commits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Round trips of the shorter run.
const FEW: u64 = 2_000;
/// Round trips of the longer run.
const MANY: u64 = 12_000;

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

/// Run this binary under callgrind for `rounds` inline round trips of `name`.
fn count(exe: &Path, name: &str, rounds: u64) -> Result<Totals, String> {
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
    let _ = std::fs::remove_file(&out);
    if !status.success() {
        return Err(format!("{name}: the run under callgrind failed ({status})"));
    }
    parse(&text.map_err(|e| format!("{}: {e}", out.display()))?)
}

/// Print the table for `names`; `Err` on the first backend that cannot be counted.
pub fn run(names: &[&str]) -> Result<(), String> {
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
    for name in names {
        let few = count(&exe, name, FEW)?;
        let many = count(&exe, name, MANY)?;
        let ir = many.ir.saturating_sub(few.ir) as f64 / per;
        let ge = many.ge.saturating_sub(few.ge) as f64 / per;
        println!("| {name} | {ir:.0} | {ge:.1} |");
    }
    Ok(())
}
