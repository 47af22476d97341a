//! What a parked round trip adds to a spinning one, one core per side: (c)'s wait-and-wake
//! protocol taken apart in steps, each step's ratio to the one before it in the same sample.
//!
//! Where every parked wait ends in its spin phase (no thread sleeps), (c) is (b)'s hand-off
//! with the protocol around it. Each sample runs, on each backend, four ways in a row:
//!
//! 1. *bare*: (b)'s own loop on the polled pair, the remote spinning ([`SimMode::Spin`]):
//!    `send`, `poll_done` with a spin hint between polls, `fetch_response`, `mark_txdone`;
//! 2. *call*: the same pair waited for as (c) waits, `call` with `Wait::Completion` (a deadline
//!    read from the clock on every poll, the parker's learned spin phase, the
//!    `Transport::spinning` hint, which a polled pair ignores);
//! 3. *`Normal`*: the same again with the remote in [`SimMode::Normal`], (c)'s: an idle remote
//!    spins a learned phase, then sleeps;
//! 4. *(c)*: the interrupt-style pair itself (requests in interrupt mode; the transport asks
//!    for no interrupt while the caller spins, the remote checks whether to raise one).
//!
//! Each ratio divides a step by the one before it in the same sample, so the machine's drift
//! between samples cancels; the table gives each ratio's median over the samples. Measured by
//! [`crate::parked::run`] while the threads are placed one core per side.

use fwipc_transport_api::fixture::SimMode;

use crate::{spread, Bench, R};

/// The four ways, in order, as the table names them.
const WAYS: [&str; 4] = ["bare", "call", "`Normal`", "(c)"];

/// `samples` samples of the four ways on every live backend, `rounds` round trips each, then
/// the table. A backend that fails is marked in `dead` and skipped from then on; every polled
/// pair is left in [`SimMode::Stepped`], as the bench keeps it between its measurements.
pub fn run(live: &[(&str, &dyn Bench)], dead: &mut [Option<String>], samples: u64, rounds: u64) {
    // Per backend: call / bare, `Normal` / call, (c) / `Normal`, (c) / bare.
    let mut ratios: Vec<[Vec<f64>; 4]> = vec![Default::default(); live.len()];
    for _ in 0..samples {
        for (i, (_, b)) in live.iter().enumerate() {
            if dead[i].is_some() {
                continue;
            }
            match sample(*b, rounds) {
                Ok([bare, call, normal, parked]) => {
                    for (v, x) in ratios[i].iter_mut().zip([
                        call / bare,
                        normal / call,
                        parked / normal,
                        parked / bare,
                    ]) {
                        v.push(x);
                    }
                }
                Err(e) => dead[i] = Some(e),
            }
        }
    }
    for (_, b) in live {
        let _ = b.set_mode(SimMode::Stepped);
    }
    println!(
        "\nWhat a parked round trip adds to a spinning one, one core per side: in each sample \
         each backend runs four ways in a row, {rounds} round trips each: *{}*, (b)'s loop on the \
         polled pair, the remote spinning; *{}*, the same pair waited for with `call` and \
         `Wait::Completion` as (c) waits; *{}*, the same with the remote in (c)'s `Normal` mode; \
         *{}*, the interrupt-style pair of (c). Each step over the one before it, in the same \
         sample (median over the samples, min–max in brackets):\n",
        WAYS[0], WAYS[1], WAYS[2], WAYS[3]
    );
    println!("| backend | call / bare | `Normal` / call | (c) / `Normal` | (c) / bare |");
    println!("|---|---:|---:|---:|---:|");
    for (i, (name, _)) in live.iter().enumerate() {
        if dead[i].is_some() || ratios[i][0].is_empty() {
            println!("| {name} | failed | | | |");
            continue;
        }
        let cells: Vec<String> = ratios[i].iter_mut().map(|v| spread(v)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
}

/// One sample of the four ways on `b`: ns per round trip of each. The polled pair's remote is
/// left in `Normal` mode (an idle remote parks after its spin phase), or stepped again at once
/// when a way fails, so that it does not spin beside the other backends' samples.
fn sample(b: &dyn Bench, rounds: u64) -> R<[f64; 4]> {
    let r = (|| {
        b.set_mode(SimMode::Spin)?;
        let bare = b.spin_total(rounds)?;
        let call = b.polled_calls(rounds)?;
        b.set_mode(SimMode::Normal)?;
        let normal = b.polled_calls(rounds)?;
        let parked = b.parked(rounds, None)?;
        Ok([bare, call, normal, parked])
    })();
    if r.is_err() {
        let _ = b.set_mode(SimMode::Stepped);
    }
    r
}
