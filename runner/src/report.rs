//! What the runner prints and writes: the table, the failure digest, JSON, Markdown, JUnit XML.

use std::fmt::Write as _;
use std::time::Duration;

/// How one cell ended.
pub enum Outcome {
    Pass,
    NotApplicable(&'static str),
    Fail(String),
    Hung,
}

impl Outcome {
    fn short(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::NotApplicable(_) => "n/a",
            Outcome::Fail(_) => "FAIL",
            Outcome::Hung => "HUNG",
        }
    }

    fn failed(&self) -> bool {
        matches!(self, Outcome::Fail(_) | Outcome::Hung)
    }
}

/// One cell that ran.
pub struct Row {
    pub backend: &'static str,
    pub scenario: &'static str,
    pub outcome: Outcome,
    pub time: Duration,
}

/// The whole run: what was planned and what ran (a hung cell stops the run).
pub struct Report {
    pub planned: Vec<(&'static str, &'static str)>,
    pub rows: Vec<Row>,
    pub watchdog: Duration,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.rows.iter().filter(|r| r.outcome.failed()).count()
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.rows.iter().filter(|r| f(&r.outcome)).count()
    }

    /// Planned cells that never ran (after a hang).
    pub fn not_run(&self) -> Vec<(&'static str, &'static str)> {
        self.planned
            .iter()
            .filter(|(b, s)| {
                !self
                    .rows
                    .iter()
                    .any(|r| r.backend == *b && r.scenario == *s)
            })
            .copied()
            .collect()
    }

    /// `passed, failed, skipped` — the closing line.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.count(|o| matches!(o, Outcome::Pass)),
            self.failed(),
            self.count(|o| matches!(o, Outcome::NotApplicable(_))),
        )
    }

    fn axes(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        let (mut backends, mut scenarios) = (Vec::new(), Vec::new());
        for (b, s) in &self.planned {
            if !backends.contains(b) {
                backends.push(*b);
            }
            if !scenarios.contains(s) {
                scenarios.push(*s);
            }
        }
        (backends, scenarios)
    }

    fn cell(&self, b: &str, s: &str) -> String {
        self.rows
            .iter()
            .find(|r| r.backend == b && r.scenario == s)
            .map_or("not run".into(), |r| {
                format!("{:<4} {:>6} ms", r.outcome.short(), r.time.as_millis())
            })
    }

    fn detail(&self, r: &Row) -> String {
        match &r.outcome {
            Outcome::Fail(m) => m.clone(),
            Outcome::Hung => format!(
                "no verdict within the {} s watchdog",
                self.watchdog.as_secs()
            ),
            Outcome::NotApplicable(w) => w.to_string(),
            Outcome::Pass => String::new(),
        }
    }

    /// The backend x scenario table, as plain text.
    pub fn table(&self) -> String {
        let (backends, scenarios) = self.axes();
        let w0 = scenarios.iter().map(|s| s.len()).max().unwrap_or(8).max(8);
        let wc = backends.iter().map(|b| b.len()).max().unwrap_or(12).max(16);
        let mut o = String::new();
        let _ = write!(o, "\n{:<w0$}", "scenario");
        for b in &backends {
            let _ = write!(o, " | {b:<wc$}");
        }
        let _ = writeln!(o, "\n{}", "-".repeat(w0 + backends.len() * (wc + 3)));
        for s in &scenarios {
            let _ = write!(o, "{s:<w0$}");
            for b in &backends {
                let _ = write!(o, " | {:<wc$}", self.cell(b, s));
            }
            o.push('\n');
        }
        o
    }

    /// Every failure with its assertion text, and the cells that did not run.
    pub fn digest(&self) -> String {
        let mut o = String::new();
        let failures: Vec<&Row> = self.rows.iter().filter(|r| r.outcome.failed()).collect();
        if !failures.is_empty() {
            let _ = writeln!(o, "failures:");
            for r in failures {
                let _ = writeln!(o, "  {} / {}: {}", r.scenario, r.backend, self.detail(r));
            }
        }
        let not_run = self.not_run();
        if !not_run.is_empty() {
            let _ = writeln!(o, "not run (the run stopped at a hung cell):");
            for (b, s) in not_run {
                let _ = writeln!(o, "  {s} / {b}");
            }
        }
        o
    }

    /// The JSON report: planned, run and not-run cells, and every result with its detail.
    pub fn json(&self) -> String {
        let cells = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(b, s)| {
                    format!(
                        "{{\"backend\":{},\"scenario\":{}}}",
                        json_str(b),
                        json_str(s)
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let results: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                let status = match r.outcome {
                    Outcome::Pass => "pass",
                    Outcome::NotApplicable(_) => "n/a",
                    Outcome::Fail(_) => "fail",
                    Outcome::Hung => "hung",
                };
                format!(
                    "{{\"backend\":{},\"scenario\":{},\"status\":{},\"detail\":{},\"ms\":{}}}",
                    json_str(r.backend),
                    json_str(r.scenario),
                    json_str(status),
                    json_str(&self.detail(r)),
                    r.time.as_millis()
                )
            })
            .collect();
        format!(
            "{{\"planned\":{},\"run\":{},\"failed\":{},\"not_run\":[{}],\"cells\":[{}],\"results\":[{}]}}",
            self.planned.len(),
            self.rows.len(),
            self.failed(),
            cells(&self.not_run()),
            cells(&self.planned),
            results.join(",")
        )
    }

    /// The table and the digest as Markdown.
    pub fn markdown(&self) -> String {
        let (backends, scenarios) = self.axes();
        let mut o = String::from("# fwipc conformance matrix\n\n| scenario |");
        for b in &backends {
            let _ = write!(o, " {b} |");
        }
        o.push_str("\n|---|");
        o.push_str(&"---|".repeat(backends.len()));
        o.push('\n');
        for s in &scenarios {
            let _ = write!(o, "| {s} |");
            for b in &backends {
                let _ = write!(o, " {} |", self.cell(b, s));
            }
            o.push('\n');
        }
        let _ = writeln!(o, "\n{}", self.summary());
        let digest = self.digest();
        if !digest.is_empty() {
            let _ = writeln!(o, "\n```text\n{digest}```");
        }
        o
    }

    /// A JUnit XML report: one testsuite per backend, one testcase per cell.
    pub fn junit(&self) -> String {
        let (backends, _) = self.axes();
        let mut o = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"fwipc-conformance\">\n",
        );
        for b in backends {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.backend == b).collect();
            let not_run: Vec<_> = self
                .not_run()
                .into_iter()
                .filter(|(nb, _)| *nb == b)
                .collect();
            let failures = rows.iter().filter(|r| r.outcome.failed()).count();
            let skipped = rows
                .iter()
                .filter(|r| matches!(r.outcome, Outcome::NotApplicable(_)))
                .count()
                + not_run.len();
            let time: f64 = rows.iter().map(|r| r.time.as_secs_f64()).sum();
            let _ = writeln!(
                o,
                "  <testsuite name={} tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time:.3}\">",
                xml_attr(b),
                rows.len() + not_run.len()
            );
            for r in rows {
                let _ = write!(
                    o,
                    "    <testcase classname={} name={} time=\"{:.3}\"",
                    xml_attr(b),
                    xml_attr(r.scenario),
                    r.time.as_secs_f64()
                );
                match &r.outcome {
                    Outcome::Pass => o.push_str("/>\n"),
                    Outcome::NotApplicable(w) => {
                        let _ = writeln!(o, "><skipped message={}/></testcase>", xml_attr(w));
                    }
                    Outcome::Fail(_) | Outcome::Hung => {
                        let d = self.detail(r);
                        let _ = writeln!(
                            o,
                            "><failure message={}>{}</failure></testcase>",
                            xml_attr(d.lines().next().unwrap_or("")),
                            xml_text(&d)
                        );
                    }
                }
            }
            for (_, s) in not_run {
                let _ = writeln!(
                    o,
                    "    <testcase classname={} name={}><skipped message=\"not run: the run stopped at a hung cell\"/></testcase>",
                    xml_attr(b),
                    xml_attr(s)
                );
            }
            o.push_str("  </testsuite>\n");
        }
        o.push_str("</testsuites>\n");
        o
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn xml_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => format!("&#{};", c as u32),
            c => c.to_string(),
        })
        .collect()
}

fn xml_attr(s: &str) -> String {
    format!("\"{}\"", xml_text(s).replace('\n', "&#10;"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            planned: vec![("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")],
            rows: vec![
                Row {
                    backend: "a",
                    scenario: "x",
                    outcome: Outcome::Pass,
                    time: Duration::from_millis(3),
                },
                Row {
                    backend: "a",
                    scenario: "y",
                    outcome: Outcome::Fail("left <1> != \"2\"".into()),
                    time: Duration::ZERO,
                },
                Row {
                    backend: "b",
                    scenario: "x",
                    outcome: Outcome::Hung,
                    time: Duration::from_secs(9),
                },
            ],
            watchdog: Duration::from_secs(9),
        }
    }

    #[test]
    fn digest_names_scenario_backend_and_assertion() {
        let r = report();
        let d = r.digest();
        assert!(d.contains("y / a: left <1> != \"2\""), "{d}");
        assert!(
            d.contains("x / b: no verdict within the 9 s watchdog"),
            "{d}"
        );
        assert!(d.contains("not run") && d.contains("y / b"), "{d}");
        assert_eq!(r.summary(), "1 passed, 2 failed, 0 skipped");
    }

    #[test]
    fn json_counts_planned_run_and_not_run() {
        let j = report().json();
        assert!(j.starts_with("{\"planned\":4,\"run\":3,\"failed\":2,\"not_run\":[{\"backend\":\"b\",\"scenario\":\"y\"}]"), "{j}");
        assert!(j.contains("\"detail\":\"left <1> != \\\"2\\\"\""), "{j}");
    }

    #[test]
    fn junit_escapes_and_counts() {
        let x = report().junit();
        assert!(
            x.contains("<testsuite name=\"a\" tests=\"2\" failures=\"1\" skipped=\"0\""),
            "{x}"
        );
        assert!(
            x.contains("<testsuite name=\"b\" tests=\"2\" failures=\"1\" skipped=\"1\""),
            "{x}"
        );
        assert!(x.contains("left &lt;1&gt; != &quot;2&quot;"), "{x}");
        assert_eq!(x.matches("<testcase").count(), 4);
    }

    #[test]
    fn markdown_has_every_cell() {
        let m = report().markdown();
        assert!(m.contains("| x | pass "), "{m}");
        assert!(m.contains("not run"), "{m}");
        assert!(m.contains("1 passed, 2 failed, 0 skipped"));
    }
}
