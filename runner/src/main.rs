//! `cargo run --release -p fwipc-runner`: every scenario against every backend on its built-in
//! simulated remote, a progress line per scenario and a final backend × scenario table.
//!
//! Options: `--backend NAME` and `--scenario NAME` (repeatable, substring match), `--json` for
//! machine-readable output, `--list` to print the matrix without running it. Exits non-zero if
//! anything fails or hangs.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fwipc_conformance::{Fixture, Scenario, Verdict};

/// A scenario that runs longer than this is reported as hung.
const WATCHDOG: Duration = Duration::from_secs(180);

/// (backend, scenario, run) of one selected cell.
type Planned = (&'static str, &'static str, fn() -> Verdict);

struct Backend {
    name: &'static str,
    scenarios: Vec<Scenario>,
}

fn backends() -> Vec<Backend> {
    fn b<F: Fixture + 'static>() -> Backend {
        Backend {
            name: F::NAME,
            scenarios: fwipc_conformance::suite::<F>(),
        }
    }
    vec![
        b::<fwipc_conformance::loopback::LoopbackFixture>(),
        b::<fwipc_scmi_virtio::sim::ScmiFixture>(),
        b::<fwipc_vchiq::sim::VchiqFixture>(),
        b::<fwipc_fastrpc::sim::FastRpcFixture>(),
    ]
}

enum Outcome {
    Pass,
    NotApplicable(&'static str),
    Fail(String),
    Hung,
}

struct Row {
    backend: &'static str,
    scenario: &'static str,
    outcome: Outcome,
    time: Duration,
}

struct Args {
    backends: Vec<String>,
    scenarios: Vec<String>,
    json: bool,
    list: bool,
}

fn usage() -> ! {
    eprintln!("usage: conformance [--backend NAME]... [--scenario NAME]... [--json] [--list]");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        backends: vec![],
        scenarios: vec![],
        json: false,
        list: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--backend" | "-b" => a.backends.push(it.next().unwrap_or_else(|| usage())),
            "--scenario" | "-s" => a.scenarios.push(it.next().unwrap_or_else(|| usage())),
            "--json" => a.json = true,
            "--list" => a.list = true,
            "--help" | "-h" => usage(),
            other => {
                eprintln!("unknown argument {other:?}");
                usage()
            }
        }
    }
    a
}

fn selected(filters: &[String], name: &str) -> bool {
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

fn run_one(f: fn() -> Verdict) -> (Outcome, Duration) {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    let outcome = match rx.recv_timeout(WATCHDOG) {
        Ok(Ok(Verdict::Pass)) => Outcome::Pass,
        Ok(Ok(Verdict::NotApplicable(why))) => Outcome::NotApplicable(why),
        Ok(Err(p)) => Outcome::Fail(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into()),
        ),
        Err(_) => Outcome::Hung,
    };
    (outcome, start.elapsed())
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn main() {
    let args = parse_args();
    let all = backends();
    let known: Vec<&str> = all.iter().map(|b| b.name).collect();
    for f in &args.backends {
        if !known.iter().any(|k| k.contains(f.as_str())) {
            eprintln!("no backend matches {f:?}; known: {}", known.join(", "));
            std::process::exit(2);
        }
    }
    let plan: Vec<Planned> = all
        .iter()
        .filter(|b| selected(&args.backends, b.name))
        .flat_map(|b| {
            b.scenarios
                .iter()
                .filter(|(s, _)| selected(&args.scenarios, s))
                .map(move |(s, f)| (b.name, *s, *f))
        })
        .collect();
    if plan.is_empty() {
        eprintln!("nothing selected");
        std::process::exit(2);
    }
    if args.list {
        for (b, s, _) in &plan {
            println!("{b} {s}");
        }
        return;
    }
    let total = plan.len();
    let mut rows = Vec::with_capacity(total);
    let progress_to_stderr = args.json;
    for (i, (backend, scenario, f)) in plan.into_iter().enumerate() {
        let line = format!("[{:>3}/{total}] {backend} / {scenario} ...", i + 1);
        if progress_to_stderr {
            eprint!("{line}");
        } else {
            print!("{line}");
            let _ = std::io::stdout().flush();
        }
        let (outcome, time) = run_one(f);
        let verdict = match &outcome {
            Outcome::Pass => "pass".to_string(),
            Outcome::NotApplicable(w) => format!("n/a ({w})"),
            Outcome::Fail(m) => format!("FAIL: {m}"),
            Outcome::Hung => format!("HUNG (>{}s)", WATCHDOG.as_secs()),
        };
        let done = format!(" {verdict} ({} ms)", time.as_millis());
        if progress_to_stderr {
            eprintln!("{done}");
        } else {
            println!("{done}");
        }
        let hung = matches!(outcome, Outcome::Hung);
        rows.push(Row {
            backend,
            scenario,
            outcome,
            time,
        });
        if hung {
            // The hung scenario's thread cannot be stopped; report what we have and exit.
            break;
        }
    }
    let failed = rows
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail(_) | Outcome::Hung))
        .count();
    if args.json {
        let items: Vec<String> = rows
            .iter()
            .map(|r| {
                let (status, detail) = match &r.outcome {
                    Outcome::Pass => ("pass", String::new()),
                    Outcome::NotApplicable(w) => ("n/a", w.to_string()),
                    Outcome::Fail(m) => ("fail", m.clone()),
                    Outcome::Hung => ("hung", String::new()),
                };
                format!(
                    "{{\"backend\":{},\"scenario\":{},\"status\":{},\"detail\":{},\"ms\":{}}}",
                    json_str(r.backend),
                    json_str(r.scenario),
                    json_str(status),
                    json_str(&detail),
                    r.time.as_millis()
                )
            })
            .collect();
        println!(
            "{{\"results\":[{}],\"failed\":{failed},\"total\":{}}}",
            items.join(","),
            rows.len()
        );
    } else {
        print_table(&rows);
        let passed = rows
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Pass))
            .count();
        let na = rows
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::NotApplicable(_)))
            .count();
        println!("{passed} passed, {failed} failed, {na} skipped");
    }
    if failed > 0 || rows.len() < total {
        std::process::exit(1);
    }
}

fn print_table(rows: &[Row]) {
    let mut backends: Vec<&str> = Vec::new();
    let mut scenarios: Vec<&str> = Vec::new();
    for r in rows {
        if !backends.contains(&r.backend) {
            backends.push(r.backend);
        }
        if !scenarios.contains(&r.scenario) {
            scenarios.push(r.scenario);
        }
    }
    let w0 = scenarios.iter().map(|s| s.len()).max().unwrap_or(8).max(8);
    let wc = backends.iter().map(|b| b.len()).max().unwrap_or(12).max(16);
    println!();
    print!("{:<w0$}", "scenario");
    for b in &backends {
        print!(" | {b:<wc$}");
    }
    println!();
    println!("{}", "-".repeat(w0 + backends.len() * (wc + 3)));
    for s in &scenarios {
        print!("{s:<w0$}");
        for b in &backends {
            let cell = rows
                .iter()
                .find(|r| r.backend == *b && r.scenario == *s)
                .map_or("-".to_string(), |r| {
                    let v = match r.outcome {
                        Outcome::Pass => "pass",
                        Outcome::NotApplicable(_) => "n/a",
                        Outcome::Fail(_) => "FAIL",
                        Outcome::Hung => "HUNG",
                    };
                    format!("{v:<4} {:>6} ms", r.time.as_millis())
                });
            print!(" | {cell:<wc$}");
        }
        println!();
    }
    println!();
}
