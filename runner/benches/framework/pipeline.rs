//! (d) Pipelined throughput: `k` requests in flight, both sides in one thread (the remote
//! stepped inline, as in (a)), cost per message at each `k`.

use fwipc_transport_api::fixture::Fixture;
use fwipc_transport_api::{Error, Ticket, Transport, TxOutcome};

use crate::plots::Series;
use crate::{median, memcpy_call, Bench, Chunked, Pair, MAX_STEPS, PAYLOAD, R};

/// In-flight counts measured; the transport's own maximum is added when it is not among them.
pub const IN_FLIGHT: [usize; 3] = [1, 8, 64];

/// The in-flight counts measured for a transport that allows `max` at once.
pub fn in_flight_counts(max: usize) -> Vec<usize> {
    let mut v: Vec<usize> = IN_FLIGHT.iter().copied().filter(|&k| k <= max).collect();
    if !v.contains(&max) {
        v.push(max);
    }
    v
}

/// Ends every ticket (after a failure).
fn cancel_all<T: Transport>(t: &T, tickets: &mut Vec<Ticket>) {
    for x in tickets.drain(..) {
        t.mark_txdone(x, TxOutcome::Cancelled);
    }
}

/// `batches` batches of `k` echoes: send `k`, step the remote until all `k` are done, fetch and
/// end them. ns per message (median chunk of batches, divided by `k`).
pub fn pipelined<F: Fixture>(p: &Pair<F>, k: usize, batches: u64) -> R<f64> {
    let t = p.fx.transport();
    let payload = [0x5au8; PAYLOAD];
    let mut out = [0u8; 64];
    let mut tickets: Vec<Ticket> = Vec::with_capacity(k);
    let mut c = Chunked::new(batches);
    for _ in 0..batches {
        let mut steps = 0u32;
        let budget = MAX_STEPS * k as u32;
        while tickets.len() < k {
            match t.send(&p.request(&payload)) {
                Ok(x) => tickets.push(x),
                // The remote has not taken enough yet (a slot or credit quota below `k`):
                // let it run, then go on sending.
                Err(Error::Busy) if steps < budget => {
                    p.step_remote();
                    steps += 1;
                }
                Err(e) => {
                    cancel_all(t, &mut tickets);
                    return Err(format!("send #{}: {e:?}", tickets.len()));
                }
            }
        }
        let mut next = 0;
        while next < k {
            match t.poll_done(&tickets[next]) {
                Ok(true) => next += 1,
                Ok(false) if steps < budget => {
                    p.step_remote();
                    steps += 1;
                }
                r => {
                    cancel_all(t, &mut tickets);
                    return Err(format!("{k} in flight, #{next}: no reply ({r:?})"));
                }
            }
        }
        for x in tickets.drain(..) {
            let n = t.fetch_response(&x, &mut out);
            t.mark_txdone(x, TxOutcome::Done);
            if n != Ok(PAYLOAD) {
                return Err(format!("{k} in flight: fetch_response {n:?}"));
            }
        }
        c.tick();
    }
    Ok(c.median() / k as f64)
}

/// Runs (d) over `benches` (`samples` samples of about `messages` messages per in-flight count,
/// each next to its own one-thread floor), prints its section, and returns the plot series
/// (cost per message / mc against messages in flight).
pub fn run(
    benches: &[(&str, Option<Box<dyn Bench>>)],
    samples: u64,
    messages: u64,
    failures: &mut Vec<String>,
) -> Vec<Series> {
    println!("\n## (d) Pipelined throughput\n");
    println!(
        "Both sides in one thread, as in (a): `k` echoes sent, the remote stepped until all `k` \
         are answered, then all fetched and ended. Cost per message / mc (median over \
         {samples} samples of about {messages} messages); the last column is the target's \
         ratio, cost per message at the maximum over cost at 1 in flight.\n"
    );
    println!("| backend | 1 | 8 | 64 | max (k) | max / 1 |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut series = Vec::new();
    for (name, b) in benches {
        let Some(b) = b.as_deref() else { continue };
        let ks = in_flight_counts(b.max_in_flight());
        let mut per_k: Vec<Vec<f64>> = vec![Vec::new(); ks.len()];
        let mut failed = None;
        'samples: for _ in 0..samples {
            for (j, &k) in ks.iter().enumerate() {
                let mc = memcpy_call(messages);
                match b.pipelined(k, (messages / k as u64).max(20)) {
                    Ok(ns) => per_k[j].push(ns / mc),
                    Err(e) => {
                        failed = Some(e);
                        break 'samples;
                    }
                }
            }
        }
        if let Some(e) = failed {
            println!("| {name} | failed | | | | |");
            failures.push(format!("{name}: pipelined: {e}"));
            continue;
        }
        let med: Vec<f64> = per_k.iter_mut().map(|v| median(v)).collect();
        let cell = |k: usize| {
            ks.iter()
                .position(|&x| x == k)
                .map_or("—".into(), |j| format!("{:.0}", med[j]))
        };
        let max = *ks.last().unwrap_or(&1);
        let last = med.last().copied().unwrap_or(f64::NAN);
        println!(
            "| {name} | {} | {} | {} | {last:.0} ({max}) | {:.2} |",
            cell(1),
            cell(8),
            cell(64),
            last / med[0]
        );
        series.push(Series {
            name: (*name).into(),
            points: ks.iter().map(|&k| k as f64).zip(med).collect(),
        });
    }
    series
}
