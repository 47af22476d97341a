//! (d) VCHIQ: cost of a round trip with 1 to 64 services open on the connection (both sides in
//! one thread, as in (a)). Every extra service is an echo service on the simulated VideoCore
//! and a transport opened to it on the ARM side, idle while the first one is measured.

use std::time::Duration;

use fwipc_transport_api::fixture::SimMode;
use fwipc_transport_api::Completion;
use fwipc_vchiq::consts::make_fourcc;
use fwipc_vchiq::sim::framed_echo::EchoService;
use fwipc_vchiq::sim::VchiqFixture;
use fwipc_vchiq::transport::VchiqTransport;
use fwipc_vchiq::ServiceParams;

use crate::{Bench, Pair, R};

/// Open-service counts measured (the connection's maximum is 64 per side).
pub const COUNTS: [usize; 5] = [1, 8, 16, 32, 64];

/// The fourcc of extra service `i` (`b000`, `b001`, ...).
fn fourcc(i: usize) -> u32 {
    let d = |n: usize| b'0' + (n % 10) as u8;
    make_fourcc([b'b', d(i / 100), d(i / 10), d(i)])
}

/// One VCHIQ pair with `n - 1` extra services open (fewer if the VideoCore's table fills
/// first), its remote stepped inline; the extra transports and services alongside.
struct WithServices {
    pair: Pair<VchiqFixture>,
    extra: Vec<(VchiqTransport, std::sync::Arc<EchoService>)>,
}

impl WithServices {
    fn new(n: usize) -> R<Self> {
        let fx =
            VchiqFixture::try_setup(Completion::Polled).map_err(|e| format!("setup: {e:?}"))?;
        let pair = Pair::from_fixture(fx);
        let mut extra = Vec::new();
        // The services open in the normal mode (the handshake needs the VideoCore's thread).
        while 1 + extra.len() < n {
            let i = extra.len();
            let master = pair.fx.pair().master();
            let echo =
                match EchoService::add_to(master, ServiceParams::new(fourcc(i)).version(3, 2)) {
                    Ok((e, _)) => e,
                    // The VideoCore's service table is full (the echo service's listener counts).
                    Err(_) => break,
                };
            let t = VchiqTransport::open(
                pair.fx.pair().slave().clone(),
                ServiceParams::new(fourcc(i)).version(3, 3),
                Completion::Polled,
                1,
                Duration::from_secs(5),
            )
            .map_err(|e| format!("open service {}: {e:?}", i + 2))?;
            extra.push((t, echo));
        }
        pair.set_mode(SimMode::Stepped)?;
        Ok(WithServices { pair, extra })
    }

    fn open(&self) -> usize {
        1 + self.extra.len()
    }
}

impl Drop for WithServices {
    fn drop(&mut self) {
        use fwipc_transport_api::Transport;
        let _ = self.pair.set_mode(SimMode::Normal);
        for (t, _) in &self.extra {
            let _ = t.shutdown();
        }
    }
}

/// Inline round trip at each count in [`COUNTS`] that could be opened, as `(open services,
/// round trip / mc)`: one pair per count, all built first, then `samples` interleaved samples of
/// `rounds` round trips on each, each next to its own one-thread floor; median of the ratios.
pub fn slope(rounds: u64, samples: usize) -> R<Vec<(usize, f64)>> {
    let mut pairs: Vec<WithServices> = Vec::new();
    for &n in &COUNTS {
        let p = WithServices::new(n)?;
        if pairs.iter().any(|q| q.open() == p.open()) {
            break;
        }
        p.pair.check(rounds / 10)?;
        pairs.push(p);
    }
    let mut v: Vec<Vec<f64>> = vec![Vec::with_capacity(samples); pairs.len()];
    for _ in 0..samples {
        for (p, v) in pairs.iter().zip(v.iter_mut()) {
            let mc = crate::memcpy_call(rounds);
            v.push(p.pair.inline_total(rounds)? / mc);
        }
    }
    Ok(pairs
        .iter()
        .zip(v.iter_mut())
        .map(|(p, v)| (p.open(), crate::median(v)))
        .collect())
}

/// Least-squares slope of `(x, y)`: y per unit of x.
pub fn least_squares(pts: &[(f64, f64)]) -> f64 {
    let n = pts.len() as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), p| (a + p.0, b + p.1));
    let (mx, my) = (sx / n, sy / n);
    let num: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let den: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// Runs the VCHIQ open-services measurement and prints its part of (d).
pub fn run(samples: usize, rounds: u64, failures: &mut Vec<String>) {
    println!("\n### VCHIQ: round trip against open services\n");
    let pts = match slope(rounds, samples) {
        Ok(p) => p,
        Err(e) => {
            println!("Failed: {e}");
            failures.push(format!("vchiq: services: {e}"));
            return;
        }
    };
    println!(
        "Inline round trip on one service with more services open and idle; one pair per \
         count, samples interleaved (median over {samples} samples of {rounds} round trips, \
         each next to its own mc).\n"
    );
    println!("| open services | round trip / mc |");
    println!("|---:|---:|");
    for (n, r) in &pts {
        println!("| {n} | {r:.0} |");
    }
    let xy: Vec<(f64, f64)> = pts.iter().map(|&(n, r)| (n as f64, r)).collect();
    let s = least_squares(&xy);
    let base = pts.first().map_or(f64::NAN, |p| p.1);
    println!(
        "\nSlope (least squares): {s:.2} mc per open service, {:.2}% of the one-service round \
         trip per service.",
        100.0 * s / base
    );
}
