//! (c) Two threads, parked remote: each backend's pair in its interrupt-style mode (the remote's
//! thread sleeps when idle and is woken by the OS; the caller parks in `call` until the
//! completion wakes it), next to two peers doing the same 32-byte echo between two threads:
//! crossbeam-channel `bounded(1)` (both sides block in `recv`) and iceoryx2 request-response
//! (shared memory; iceoryx2 has no blocking receive without an extra event service and a
//! `WaitSet`, so both of its sides poll, yielding the core between polls).

use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{echo_reply_byte, Fixture};
use fwipc_transport_api::{call, Request, StdClock, ThreadParker, Wait};

use crate::plots::{self, Series};
use crate::{memcpy_call, spread, Bench, Chunked, PAYLOAD, R};

/// How long one parked round trip may take before it counts as a failure.
const PARKED_TIMEOUT: Duration = Duration::from_secs(5);

/// `rounds` interrupt-mode `call`s of a 32-byte echo on `fx` (built with
/// `Completion::Interrupt`, its remote in `SimMode::Normal`). With `each`, every round trip's
/// time is pushed there too (the latency distribution); otherwise the median chunk's ns per round
/// trip is returned.
pub fn fwipc_parked<F: Fixture>(fx: &F, rounds: u64, mut each: Option<&mut Vec<f64>>) -> R<f64> {
    let clock = StdClock::new();
    let parker = ThreadParker::new();
    let payload = [0x5au8; PAYLOAD];
    let mut out = [0u8; 64];
    let mut c = Chunked::new(rounds);
    for _ in 0..rounds {
        let req = Request::new(fx.echo_target(), &payload);
        let s = Instant::now();
        let n = call(
            fx.transport(),
            &clock,
            &req,
            &mut out,
            PARKED_TIMEOUT,
            Wait::Completion(&parker),
        )
        .map_err(|e| format!("parked call: {e:?}"))?;
        if let Some(v) = each.as_deref_mut() {
            v.push(s.elapsed().as_nanos() as f64);
        }
        if n != PAYLOAD || out[0] != echo_reply_byte(0x5a) {
            return Err(format!("parked call: bad echo reply ({n} bytes)"));
        }
        c.tick();
    }
    Ok(c.median())
}

/// A peer that echoes a 32-byte message between two threads.
pub trait EchoPeer {
    /// `rounds` round trips; the median chunk's ns per round trip. With `each`, every round
    /// trip's time is pushed there too.
    fn run(&mut self, rounds: u64, each: Option<&mut Vec<f64>>) -> R<f64>;
}

/// crossbeam-channel `bounded(1)` each way; the echo thread inverts the bytes.
pub struct Crossbeam {
    to: Option<crossbeam_channel::Sender<[u8; PAYLOAD]>>,
    from: crossbeam_channel::Receiver<[u8; PAYLOAD]>,
    th: Option<std::thread::JoinHandle<()>>,
}

impl Crossbeam {
    pub fn new() -> Self {
        let (to, rx) = crossbeam_channel::bounded::<[u8; PAYLOAD]>(1);
        let (tx, from) = crossbeam_channel::bounded::<[u8; PAYLOAD]>(1);
        let th = std::thread::spawn(move || {
            while let Ok(m) = rx.recv() {
                if tx.send(m.map(echo_reply_byte)).is_err() {
                    break;
                }
            }
        });
        Crossbeam {
            to: Some(to),
            from,
            th: Some(th),
        }
    }
}

impl EchoPeer for Crossbeam {
    fn run(&mut self, rounds: u64, mut each: Option<&mut Vec<f64>>) -> R<f64> {
        let to = self.to.as_ref().ok_or("crossbeam: closed")?;
        let mut c = Chunked::new(rounds);
        for _ in 0..rounds {
            let s = Instant::now();
            to.send([0x5a; PAYLOAD]).map_err(|e| e.to_string())?;
            let r = self.from.recv().map_err(|e| e.to_string())?;
            if let Some(v) = each.as_deref_mut() {
                v.push(s.elapsed().as_nanos() as f64);
            }
            if r[0] != echo_reply_byte(0x5a) {
                return Err("crossbeam: bad echo reply".into());
            }
            c.tick();
        }
        Ok(c.median())
    }
}

impl Drop for Crossbeam {
    fn drop(&mut self) {
        self.to.take();
        if let Some(t) = self.th.take() {
            let _ = t.join();
        }
    }
}

type Ipc = iceoryx2::service::ipc::Service;
type Payload = [u8; PAYLOAD];

/// iceoryx2 request-response (`ipc` service, shared memory), one request in flight; the server
/// thread inverts the bytes. Both sides poll and yield between polls.
pub struct Iceoryx {
    client: iceoryx2::port::client::Client<Ipc, Payload, (), Payload, ()>,
    // Field order: the client and the service go before the node.
    _service: iceoryx2::service::port_factory::request_response::PortFactory<
        Ipc,
        Payload,
        (),
        Payload,
        (),
    >,
    _node: iceoryx2::node::Node<Ipc>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    th: Option<std::thread::JoinHandle<()>>,
}

/// The iceoryx2 service name, unique per process so concurrent runs do not meet.
fn iceoryx_name() -> String {
    format!("fwipc-bench-echo-{}", std::process::id())
}

impl Iceoryx {
    pub fn new() -> R<Self> {
        use iceoryx2::prelude::*;
        let err = |what: &str, e: &dyn std::fmt::Debug| format!("iceoryx2 {what}: {e:?}");
        let name = iceoryx_name();
        let node = NodeBuilder::new()
            .create::<ipc::Service>()
            .map_err(|e| err("node", &e))?;
        let sname: ServiceName = name.as_str().try_into().map_err(|e| err("name", &e))?;
        let service = node
            .service_builder(&sname)
            .request_response::<Payload, Payload>()
            .open_or_create()
            .map_err(|e| err("service", &e))?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let s2 = stop.clone();
        let th = std::thread::spawn(move || {
            // The server's own node and port: iceoryx2's `ipc` ports stay on their thread.
            let server = (|| -> Result<_, String> {
                let node = NodeBuilder::new()
                    .create::<ipc::Service>()
                    .map_err(|e| format!("iceoryx2 server node: {e:?}"))?;
                let sname: ServiceName = name
                    .as_str()
                    .try_into()
                    .map_err(|e| format!("iceoryx2 name: {e:?}"))?;
                let service = node
                    .service_builder(&sname)
                    .request_response::<Payload, Payload>()
                    .open_or_create()
                    .map_err(|e| format!("iceoryx2 server service: {e:?}"))?;
                let server = service
                    .server_builder()
                    .create()
                    .map_err(|e| format!("iceoryx2 server: {e:?}"))?;
                Ok((node, service, server))
            })();
            let (_node, _service, server) = match server {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            // Relaxed: the stop flag only ends the loop (the join synchronises).
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                match server.receive() {
                    Ok(Some(req)) => {
                        let reply = req.payload().map(echo_reply_byte);
                        if req.send_copy(reply).is_err() {
                            break;
                        }
                    }
                    Ok(None) => std::thread::yield_now(),
                    Err(_) => break,
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| format!("iceoryx2 server thread: {e}"))??;
        let client = service
            .client_builder()
            .create()
            .map_err(|e| err("client", &e))?;
        Ok(Iceoryx {
            client,
            _service: service,
            _node: node,
            stop,
            th: Some(th),
        })
    }
}

impl EchoPeer for Iceoryx {
    fn run(&mut self, rounds: u64, mut each: Option<&mut Vec<f64>>) -> R<f64> {
        let mut c = Chunked::new(rounds);
        for _ in 0..rounds {
            let s = Instant::now();
            let pending = self
                .client
                .send_copy([0x5a; PAYLOAD])
                .map_err(|e| format!("iceoryx2 send: {e:?}"))?;
            let began = Instant::now();
            let reply = loop {
                match pending.receive() {
                    Ok(Some(r)) => break *r.payload(),
                    Ok(None) if began.elapsed() < PARKED_TIMEOUT => std::thread::yield_now(),
                    Ok(None) => return Err("iceoryx2: no reply".into()),
                    Err(e) => return Err(format!("iceoryx2 receive: {e:?}")),
                }
            };
            if let Some(v) = each.as_deref_mut() {
                v.push(s.elapsed().as_nanos() as f64);
            }
            if reply[0] != echo_reply_byte(0x5a) {
                return Err("iceoryx2: bad echo reply".into());
            }
            c.tick();
        }
        Ok(c.median())
    }
}

impl Drop for Iceoryx {
    fn drop(&mut self) {
        // Relaxed: see the server loop.
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.th.take() {
            let _ = t.join();
        }
    }
}

/// Voluntary context switches of every thread of this process so far (each is a thread going to
/// sleep: what an OS wake-up costs), from `/proc/self/task/*/status`; `None` where that does
/// not exist.
fn voluntary_switches() -> Option<u64> {
    let mut n = 0;
    for t in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(st) = std::fs::read_to_string(t.ok()?.path().join("status")) else {
            continue;
        };
        n += st
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(n)
}

/// Round trips individually timed per backend and peer for the latency distribution.
const DISTRIBUTION: u64 = 2_000;

/// Runs (c) over `benches` (interleaved with the peers, `samples` samples of `rounds` round
/// trips), prints its section, and returns the latency distributions as plot series (x in `mc`).
pub fn run(
    benches: &[(&str, Option<Box<dyn Bench>>)],
    samples: u64,
    rounds: u64,
    quick: bool,
    failures: &mut Vec<String>,
) -> Vec<Series> {
    let mut crossbeam = Crossbeam::new();
    let mut ice = Iceoryx::new();
    // Warm-up.
    let _ = crossbeam.run(rounds / 10, None);
    if let Ok(i) = ice.as_mut() {
        if let Err(e) = i.run(rounds / 10, None) {
            ice = Err(e);
        }
    }
    let live: Vec<(&str, &dyn Bench)> = benches
        .iter()
        .filter_map(|(n, b)| b.as_deref().map(|b| (*n, b)))
        .collect();
    let mut dead = vec![None::<String>; live.len()];
    // Per backend: (vs crossbeam, vs iceoryx2, / mc) per sample.
    let mut ratios: Vec<[Vec<f64>; 3]> = vec![Default::default(); live.len()];
    let mut peer_mc: [Vec<f64>; 2] = Default::default();
    for _ in 0..samples {
        for (i, (_, b)) in live.iter().enumerate() {
            if dead[i].is_some() {
                continue;
            }
            let mc = memcpy_call(rounds * 10);
            let cb = crossbeam.run(rounds, None);
            let ic = ice.as_mut().ok().map(|p| p.run(rounds, None));
            let me = b.parked(rounds, None);
            let (cb, me) = match (cb, me) {
                (Ok(c), Ok(m)) => (c, m),
                (Err(e), _) | (_, Err(e)) => {
                    dead[i] = Some(e);
                    continue;
                }
            };
            ratios[i][0].push(me / cb);
            ratios[i][2].push(me / mc);
            peer_mc[0].push(cb / mc);
            match ic {
                Some(Ok(x)) => {
                    ratios[i][1].push(me / x);
                    peer_mc[1].push(x / mc);
                }
                Some(Err(e)) => ice = Err(e),
                None => {}
            }
        }
    }
    println!("\n## (c) Two threads, parked remote\n");
    println!(
        "Interrupt-style completion: the remote's thread sleeps when idle and the caller parks \
         in `call` until the completion wakes it. Peers, interleaved with every backend sample: \
         crossbeam-channel `bounded(1)` each way (both threads block in `recv`) and iceoryx2 \
         request-response (`ipc` service; it has no blocking receive without an extra event \
         service, so both of its threads poll and yield). {PAYLOAD}-byte echo, {rounds} round \
         trips per sample. A ratio below 1 means the backend was faster.\n"
    );
    println!("| backend | round trip / crossbeam | round trip / iceoryx2 | round trip / mc |");
    println!("|---|---:|---:|---:|");
    for (i, (name, _)) in live.iter().enumerate() {
        if let Some(e) = &dead[i] {
            println!("| {name} | failed | | |");
            failures.push(format!("{name}: parked: {e}"));
            continue;
        }
        let [a, b, c] = &mut ratios[i];
        println!(
            "| {name} | {} | {} | {} |",
            spread(a),
            if b.is_empty() {
                "—".into()
            } else {
                spread(b)
            },
            spread(c)
        );
    }
    let [cb_mc, ic_mc] = &mut peer_mc;
    println!("| *crossbeam bounded(1)* | 1 | | {} |", spread(cb_mc));
    match &ice {
        Ok(_) => println!("| *iceoryx2 request-response* | | 1 | {} |", spread(ic_mc)),
        Err(e) => println!("\niceoryx2 could not run here: {e}"),
    }

    // The latency distribution: every round trip timed on its own, in mc.
    let n = if quick {
        DISTRIBUTION / 10
    } else {
        DISTRIBUTION
    };
    let mc = memcpy_call(rounds * 10);
    let mut series = Vec::new();
    let mut switches: Vec<(String, f64)> = Vec::new();
    let mut add = |name: &str, r: R<f64>, mut v: Vec<f64>, sw: Option<u64>| {
        if let Some(d) = sw {
            switches.push((name.into(), d as f64 / n as f64));
        }
        if r.is_ok() {
            v.iter_mut().for_each(|x| *x /= mc);
            series.push(Series {
                name: name.into(),
                points: plots::cdf(&mut v),
            });
        }
    };
    // Context switches around one run (the other threads of the process are idle then).
    let counted = |f: &mut dyn FnMut() -> R<f64>| {
        let a = voluntary_switches();
        let r = f();
        let sw = voluntary_switches()
            .zip(a)
            .map(|(b, a)| b.saturating_sub(a));
        (r, sw)
    };
    for (i, (name, b)) in live.iter().enumerate() {
        if dead[i].is_none() {
            let mut v = Vec::with_capacity(n as usize);
            let (r, sw) = counted(&mut || b.parked(n, Some(&mut v)));
            add(name, r, v, sw);
        }
    }
    let mut v = Vec::with_capacity(n as usize);
    let (r, sw) = counted(&mut || crossbeam.run(n, Some(&mut v)));
    add("crossbeam bounded(1)", r, v, sw);
    if let Ok(p) = ice.as_mut() {
        let mut v = Vec::with_capacity(n as usize);
        let (r, sw) = counted(&mut || p.run(n, Some(&mut v)));
        add("iceoryx2 request-response", r, v, sw);
    }
    if !switches.is_empty() {
        println!(
            "\nThreads going to sleep per round trip (voluntary context switches of every thread \
             of the process over {n} further round trips; each is a wake-up the OS must \
             deliver):\n"
        );
        println!("| pair | sleeps per round trip |");
        println!("|---|---:|");
        for (name, k) in &switches {
            println!("| {name} | {k:.2} |");
        }
    }
    series
}
