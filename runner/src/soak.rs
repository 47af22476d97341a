//! `--soak SECS`: each selected backend under `--threads` callers with its simulated remote
//! misbehaving at random (`fwipc_conformance::soak`), a progress line a second, then the table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fwipc_conformance::soak::{SoakConfig, SoakReport};

/// One backend's soak entry point.
pub type SoakFn = fn(SoakConfig, &dyn Fn(&SoakReport)) -> SoakReport;

/// Soak every `(name, soak)` for `duration` each; prints progress and the table, returns whether
/// every run was clean. Panics anywhere in the process (the simulators' threads too) are counted
/// through a panic hook and added to the backend that was running.
pub fn run(plan: &[(&'static str, SoakFn)], duration: Duration, threads: usize, seed: u64) -> bool {
    let panics = Arc::new(AtomicU64::new(0));
    let counter = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Relaxed: a statistics counter, read after the backend's run.
        counter.fetch_add(1, Ordering::Relaxed);
        previous(info);
    }));
    let mut rows = Vec::with_capacity(plan.len());
    for (name, soak) in plan {
        println!(
            "soak {name}: {}s, {threads} threads, seed {seed}",
            duration.as_secs()
        );
        let cfg = SoakConfig {
            duration,
            threads,
            seed,
            ..SoakConfig::default()
        };
        // Relaxed: see the hook.
        let before = panics.load(Ordering::Relaxed);
        let mut r = soak(cfg, &|p| {
            println!(
                "  {name}: {} ops, {} ok, {} faults, {} errors, {} wrong, {} panics, {} hangs",
                p.operations,
                p.ok,
                p.faults_injected,
                p.errors(),
                p.wrong_replies,
                p.panics,
                p.hangs
            )
        });
        // Every panic the hook saw; the callers' own caught panics are among them.
        r.panics = r.panics.max(panics.load(Ordering::Relaxed) - before);
        println!(
            "  {name}: done, shutdown in {} ms",
            r.shutdown_time.as_millis()
        );
        rows.push(r);
    }
    let _ = std::panic::take_hook();
    print!("{}", table(&rows));
    rows.iter().all(SoakReport::clean)
}

/// The soak table (Markdown, as in docs/reliability.md).
pub fn table(rows: &[SoakReport]) -> String {
    let mut s = String::from(
        "| backend | operations | ok | faults injected | errors (timeout / busy / cancelled / other) | wrong replies | leaks | panics | hangs |\n|---|---:|---:|---:|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {} ({} / {} / {} / {}) | {} | {} | {} | {} |\n",
            r.backend,
            r.operations,
            r.ok,
            r.faults_injected,
            r.errors(),
            r.timeouts,
            r.busy,
            r.cancelled,
            r.other_errors,
            r.wrong_replies,
            r.leaks,
            r.panics,
            r.hangs
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_row_per_backend_with_every_count() {
        let r = SoakReport {
            backend: "x",
            operations: 10,
            ok: 6,
            faults_injected: 3,
            timeouts: 1,
            busy: 1,
            cancelled: 1,
            other_errors: 1,
            leaks: 2,
            hangs: 1,
            ..SoakReport::default()
        };
        let t = table(&[r]);
        assert_eq!(t.lines().count(), 3);
        assert_eq!(
            t.lines().nth(2).unwrap(),
            "| x | 10 | 6 | 3 | 4 (1 / 1 / 1 / 1) | 0 | 2 | 0 | 1 |"
        );
    }
}
