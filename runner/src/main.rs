//! `cargo run --release -p fwipc-runner`: every conformance scenario against every backend on its
//! built-in simulated remote, a progress line per cell, the backend × scenario table and a digest
//! of the failures. `-- --help` lists the options (filters, JSON, Markdown and JUnit reports, the
//! watchdog, `--soak SECONDS`). Exits 1 if any cell fails, hangs or does not run (or a soak is not
//! clean), 2 on a usage error.

mod args;
mod report;
mod soak;

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fwipc_conformance::{Fixture, Scenario, Verdict};

use args::{check_filters, selected, usage_error};
use report::{Outcome, Report, Row};

/// (backend, scenario, run) of one selected cell.
type Planned = (&'static str, &'static str, fn() -> Verdict);

struct Backend {
    name: &'static str,
    scenarios: Vec<Scenario>,
    soak: soak::SoakFn,
}

// `each_backend!`: the one list of backends (`backends.toml`, read by `build.rs`).
include!(concat!(env!("OUT_DIR"), "/backends.rs"));

/// Every backend of `backends.toml`, in its order.
fn backends() -> Vec<Backend> {
    fn b<F: Fixture + 'static>() -> Backend {
        Backend {
            name: F::NAME,
            scenarios: fwipc_conformance::suite::<F>(),
            soak: fwipc_conformance::soak::soak::<F>,
        }
    }
    each_backend!(F => b::<F>()).into()
}

fn run_one(f: fn() -> Verdict, watchdog: Duration) -> (Outcome, Duration) {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    let outcome = match rx.recv_timeout(watchdog) {
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

fn write_file(path: &std::path::Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("fwipc-runner: cannot write {}: {e}", path.display());
        std::process::exit(2);
    }
}

fn main() {
    let args = args::parse();
    let all = backends();
    let names: Vec<&str> = all.iter().map(|b| b.name).collect();
    check_filters("backend", &args.backends, &names);
    if let Some(duration) = args.soak {
        let plan: Vec<_> = all
            .iter()
            .filter(|b| selected(&args.backends, b.name))
            .map(|b| (b.name, b.soak))
            .collect();
        let clean = soak::run(&plan, duration, args.threads, args.seed);
        std::process::exit(if clean { 0 } else { 1 });
    }
    let mut scenario_names: Vec<&str> = Vec::new();
    for b in &all {
        for (s, _) in &b.scenarios {
            if !scenario_names.contains(s) {
                scenario_names.push(s);
            }
        }
    }
    check_filters("scenario", &args.scenarios, &scenario_names);
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
        usage_error("the filters select no backend/scenario cell");
    }
    if args.list {
        for (b, s, _) in &plan {
            println!("{b} {s}");
        }
        return;
    }
    let mut report = Report {
        planned: plan.iter().map(|(b, s, _)| (*b, *s)).collect(),
        rows: Vec::with_capacity(plan.len()),
        watchdog: args.watchdog,
    };
    let total = plan.len();
    // With --json, stdout carries only the report.
    let progress = |s: &str, newline: bool| {
        if args.json {
            if newline {
                eprintln!("{s}")
            } else {
                eprint!("{s}")
            }
        } else if newline {
            println!("{s}")
        } else {
            print!("{s}");
            let _ = std::io::stdout().flush();
        }
    };
    for (i, (backend, scenario, f)) in plan.into_iter().enumerate() {
        progress(
            &format!("[{:>3}/{total}] {backend} / {scenario} ...", i + 1),
            false,
        );
        let (outcome, time) = run_one(f, args.watchdog);
        let verdict = match &outcome {
            Outcome::Pass => "pass".to_string(),
            Outcome::NotApplicable(w) => format!("n/a ({w})"),
            Outcome::Fail(m) => format!("FAIL: {}", m.lines().next().unwrap_or("")),
            Outcome::Hung => format!("HUNG (>{}s)", args.watchdog.as_secs()),
        };
        progress(&format!(" {verdict} ({} ms)", time.as_millis()), true);
        let hung = matches!(outcome, Outcome::Hung);
        report.rows.push(Row {
            backend,
            scenario,
            outcome,
            time,
        });
        if hung {
            // The hung cell's thread cannot be stopped; report what we have and stop.
            break;
        }
    }
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
        print!("{}", report.digest());
        println!("{}", report.summary());
    }
    if let Some(p) = &args.markdown {
        write_file(p, &report.markdown());
    }
    if let Some(p) = &args.junit {
        write_file(p, &report.junit());
    }
    if report.failed() > 0 || report.rows.len() < total {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `backends.toml` names each backend by its `Fixture::NAME`, so the `--backend` filter,
    /// the table and the fuzz targets speak of the same backends.
    #[test]
    fn listed_names_are_the_fixture_names() {
        let names: Vec<&str> = backends().iter().map(|b| b.name).collect();
        assert_eq!(names, LISTED_BACKENDS);
    }
}
