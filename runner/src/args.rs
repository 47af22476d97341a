//! The runner's command line.

use std::path::PathBuf;
use std::time::Duration;

/// What the user asked for.
pub struct Args {
    /// `--backend` filters (substring match; each must match a backend).
    pub backends: Vec<String>,
    /// `--scenario` filters (substring match; each must match a scenario).
    pub scenarios: Vec<String>,
    /// `--json`: the machine-readable report on stdout, progress on stderr.
    pub json: bool,
    /// `--list`: print the selected cells and exit.
    pub list: bool,
    /// `--markdown FILE`: also write the table and the failure digest as Markdown.
    pub markdown: Option<PathBuf>,
    /// `--junit FILE`: also write a JUnit XML report.
    pub junit: Option<PathBuf>,
    /// `--watchdog SECS`: a cell running longer is reported as hung.
    pub watchdog: Duration,
    /// `--soak SECS`: instead of the matrix, soak each selected backend for SECS seconds.
    pub soak: Option<Duration>,
    /// `--threads N`: caller threads of a soak.
    pub threads: usize,
    /// `--seed N`: seed of a soak's random choices.
    pub seed: u64,
}

pub const HELP: &str = "\
fwipc-runner: every conformance scenario against every backend's simulated remote, with a
progress line per cell, a backend x scenario table, and a digest of the failures.

usage: cargo run --release -p fwipc-runner -- [OPTIONS]

options:
  -b, --backend NAME     run only backends whose name contains NAME (repeatable; every NAME
                         must match at least one backend)
  -s, --scenario NAME    run only scenarios whose name contains NAME (repeatable; every NAME
                         must match at least one scenario)
      --list             print the selected backend/scenario cells and exit
      --json             print a JSON report on stdout (planned, run and not-run cells, each
                         result with its detail); progress goes to stderr
      --markdown FILE    also write the table and the failure digest to FILE as Markdown
      --junit FILE       also write a JUnit XML report to FILE (one testcase per cell)
      --watchdog SECS    report a cell running longer than SECS seconds as hung and stop
                         (default 180)
      --soak SECS        instead of the matrix: soak each selected backend for SECS seconds
                         (callers on every thread, the remote misbehaving at random), print a
                         progress line a second and the table of operations, faults, errors,
                         wrong replies, leaks, panics and hangs; exit 1 unless all are clean
      --threads N        caller threads of a soak (default 4)
      --seed N           seed of a soak's random choices (default 20756)
  -h, --help             print this help and exit

exit status: 0 when every selected cell passed or does not apply, 1 when any failed, hung or
did not run, 2 for a usage error.
";

/// A usage error: the message and the exit code 2.
pub fn usage_error(msg: &str) -> ! {
    eprintln!("fwipc-runner: {msg}");
    eprintln!("try `cargo run --release -p fwipc-runner -- --help`");
    std::process::exit(2)
}

/// Parse `std::env::args`.
pub fn parse() -> Args {
    parse_from(std::env::args().skip(1))
}

fn parse_from(argv: impl IntoIterator<Item = String>) -> Args {
    let mut a = Args {
        backends: vec![],
        scenarios: vec![],
        json: false,
        list: false,
        markdown: None,
        junit: None,
        watchdog: Duration::from_secs(180),
        soak: None,
        threads: 4,
        seed: 20756,
    };
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage_error(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--backend" | "-b" => a.backends.push(value("--backend")),
            "--scenario" | "-s" => a.scenarios.push(value("--scenario")),
            "--json" => a.json = true,
            "--list" => a.list = true,
            "--markdown" => a.markdown = Some(value("--markdown").into()),
            "--junit" => a.junit = Some(value("--junit").into()),
            "--watchdog" => {
                a.watchdog = Duration::from_secs(whole("--watchdog", &value("--watchdog")))
            }
            "--soak" => a.soak = Some(Duration::from_secs(whole("--soak", &value("--soak")))),
            "--threads" => {
                let n = whole("--threads", &value("--threads"));
                a.threads = usize::try_from(n).unwrap_or(usize::MAX).min(256);
            }
            "--seed" => {
                let v = value("--seed");
                a.seed = v
                    .parse()
                    .unwrap_or_else(|_| usage_error(&format!("--seed wants a number, not {v:?}")));
            }
            "--help" | "-h" => {
                print!("{HELP}");
                std::process::exit(0)
            }
            other => usage_error(&format!("unknown argument {other:?}")),
        }
    }
    a
}

/// A whole number > 0 for option `name`, or a usage error.
fn whole(name: &str, v: &str) -> u64 {
    v.parse()
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or_else(|| usage_error(&format!("{name} wants a whole number > 0, not {v:?}")))
}

/// Check that every filter matches one of `names`; a typo in any one filter is an error that
/// lists the valid names.
pub fn check_filters(kind: &str, filters: &[String], names: &[&str]) {
    for f in filters {
        if !names.iter().any(|n| n.contains(f.as_str())) {
            usage_error(&format!(
                "no {kind} matches {f:?}; valid {kind}s: {}",
                names.join(", ")
            ));
        }
    }
}

/// Whether `name` passes `filters` (no filter: everything passes).
pub fn selected(filters: &[String], name: &str) -> bool {
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Args {
        parse_from(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn soak_options() {
        let a = parse(&[]);
        assert_eq!((a.soak, a.threads, a.seed), (None, 4, 20756));
        let a = parse(&[
            "--soak",
            "60",
            "--threads",
            "8",
            "--seed",
            "7",
            "-b",
            "vchiq",
        ]);
        assert_eq!(a.soak, Some(Duration::from_secs(60)));
        assert_eq!((a.threads, a.seed), (8, 7));
        assert_eq!(a.backends, ["vchiq"]);
        assert_eq!(parse(&["--watchdog", "3"]).watchdog, Duration::from_secs(3));
    }
}
