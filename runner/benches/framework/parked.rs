//! (c) Two threads, parked remote: each backend's pair in its interrupt-style mode (the remote's
//! thread sleeps when idle and is woken by the OS; the caller parks in `call` until the
//! completion wakes it), next to two peers doing the same 32-byte echo between two threads:
//! crossbeam-channel `bounded(1)` (both sides block in `recv`) and iceoryx2 request-response
//! (shared memory) twice: polling (its request-response ports have no blocking receive, so both
//! sides poll, yielding the core between polls) and blocking (an event service each way beside
//! it; a side that finds nothing sleeps in its `Listener` until the other notifies). Every sample
//! runs twice: as the scheduler places the threads, then with one core per side
//! ([`crate::placement`]).

use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{echo_reply_byte, Fixture};
use fwipc_transport_api::{call, Completion, Request, StdClock, ThreadParker, Wait};

use crate::plots::{self, Series};
use crate::{memcpy_call, spread, Bench, Chunked, PAYLOAD, R};

/// How long one parked round trip may take before it counts as a failure.
const PARKED_TIMEOUT: Duration = Duration::from_secs(5);

/// `rounds` interrupt-mode `call`s of a 32-byte echo on `fx` (built with
/// `Completion::Interrupt`, its remote in `SimMode::Normal`). With `each`, every round trip's
/// time is pushed there too (the latency distribution); otherwise the median chunk's ns per round
/// trip is returned.
pub fn fwipc_parked<F: Fixture>(fx: &F, rounds: u64, each: Option<&mut Vec<f64>>) -> R<f64> {
    calls(fx, Completion::Interrupt, rounds, each)
}

/// `rounds` `call`s of a 32-byte echo on `fx`, each waiting with `Wait::Completion` as (c)'s
/// do, the request in `completion` mode; the median chunk's ns per round trip, and with `each`
/// every round trip's time. (c) runs it on the interrupt-style pair; [`crate::parked_steps`]
/// on the polled one too.
pub fn calls<F: Fixture>(
    fx: &F,
    completion: Completion,
    rounds: u64,
    mut each: Option<&mut Vec<f64>>,
) -> R<f64> {
    let clock = StdClock::new();
    let parker = ThreadParker::new();
    let payload = [0x5au8; PAYLOAD];
    let mut out = [0u8; 64];
    let mut c = Chunked::new(rounds);
    for _ in 0..rounds {
        let mut req = Request::new(fx.echo_target(), &payload);
        req.completion = completion;
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
/// thread inverts the bytes. Polling (`Iceoryx::new(false)`): both sides poll and yield between
/// polls. Blocking (`Iceoryx::new(true)`): beside it, one event service each way (the client
/// notifies after its request, the server after its reply) and each side, finding nothing,
/// sleeps in its `Listener` until notified: the parked case iceoryx2 offers.
pub struct Iceoryx {
    client: iceoryx2::port::client::Client<Ipc, Payload, (), Payload, ()>,
    /// Blocking mode: the client's notifier of requests and listener of replies, and their
    /// services.
    events: Option<ClientEvents>,
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

/// The client's side of the blocking mode's event services.
struct ClientEvents {
    request: iceoryx2::port::notifier::Notifier<Ipc>,
    reply: iceoryx2::port::listener::Listener<Ipc>,
    _services: [iceoryx2::service::port_factory::event::PortFactory<Ipc>; 2],
}

/// The iceoryx2 service name, unique per process and mode so concurrent runs do not meet.
fn iceoryx_name(blocking: bool) -> String {
    let mode = if blocking { "blocking" } else { "polling" };
    format!("fwipc-bench-echo-{mode}-{}", std::process::id())
}

/// How long a blocking side sleeps at most before it looks again (the stop flag, a lost
/// notification: none is expected, the listeners exist before any notification is sent).
const EVENT_WAIT: Duration = Duration::from_millis(10);

/// The event service carrying `which` ("request" or "reply") notifications of the service `name`.
fn event_service(
    node: &iceoryx2::node::Node<Ipc>,
    name: &str,
    which: &str,
) -> Result<iceoryx2::service::port_factory::event::PortFactory<Ipc>, String> {
    use iceoryx2::prelude::*;
    let sname: ServiceName = format!("{name}-{which}")
        .as_str()
        .try_into()
        .map_err(|e| format!("iceoryx2 event name: {e:?}"))?;
    node.service_builder(&sname)
        .event()
        .open_or_create()
        .map_err(|e| format!("iceoryx2 {which} event service: {e:?}"))
}

impl Iceoryx {
    pub fn new(blocking: bool) -> R<Self> {
        use iceoryx2::prelude::*;
        let err = |what: &str, e: &dyn std::fmt::Debug| format!("iceoryx2 {what}: {e:?}");
        let name = iceoryx_name(blocking);
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
        let server_name = name.clone();
        let th = std::thread::spawn(move || {
            let name = server_name;
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
                // Blocking mode: the listener of requests exists before the client can send.
                let events = if blocking {
                    let req = event_service(&node, &name, "request")?;
                    let rsp = event_service(&node, &name, "reply")?;
                    let listener = req
                        .listener_builder()
                        .create()
                        .map_err(|e| format!("iceoryx2 listener: {e:?}"))?;
                    let notifier = rsp
                        .notifier_builder()
                        .create()
                        .map_err(|e| format!("iceoryx2 notifier: {e:?}"))?;
                    Some((listener, notifier, [req, rsp]))
                } else {
                    None
                };
                Ok((node, service, server, events))
            })();
            let (_node, _service, server, events) = match server {
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
                        if let Some((_, notifier, _)) = &events {
                            if notifier.notify().is_err() {
                                break;
                            }
                        }
                    }
                    Ok(None) => match &events {
                        Some((listener, _, _)) => {
                            if listener.timed_wait(|_| {}, EVENT_WAIT).is_err() {
                                break;
                            }
                        }
                        None => std::thread::yield_now(),
                    },
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
        let events = if blocking {
            let req = event_service(&node, &name, "request")?;
            let rsp = event_service(&node, &name, "reply")?;
            Some(ClientEvents {
                reply: rsp
                    .listener_builder()
                    .create()
                    .map_err(|e| err("listener", &e))?,
                request: req
                    .notifier_builder()
                    .create()
                    .map_err(|e| err("notifier", &e))?,
                _services: [req, rsp],
            })
        } else {
            None
        };
        Ok(Iceoryx {
            client,
            events,
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
            if let Some(ev) = &self.events {
                ev.request
                    .notify()
                    .map_err(|e| format!("iceoryx2 notify: {e:?}"))?;
            }
            let began = Instant::now();
            let reply = loop {
                match pending.receive() {
                    Ok(Some(r)) => break *r.payload(),
                    Ok(None) if began.elapsed() < PARKED_TIMEOUT => match &self.events {
                        Some(ev) => {
                            ev.reply
                                .timed_wait(|_| {}, EVENT_WAIT)
                                .map_err(|e| format!("iceoryx2 wait: {e:?}"))?;
                        }
                        None => std::thread::yield_now(),
                    },
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
/// trips), prints its section, and returns the latency distributions as plot series (x in `mc`)
/// and whether they were measured with one core per side (else placed by the scheduler).
pub fn run(
    benches: &[(&str, Option<Box<dyn Bench>>)],
    samples: u64,
    rounds: u64,
    quick: bool,
    failures: &mut Vec<String>,
) -> (Vec<Series>, bool) {
    let mut crossbeam = Crossbeam::new();
    // iceoryx2 polling, then blocking.
    let mut ice = [Iceoryx::new(false), Iceoryx::new(true)];
    // Warm-up.
    let _ = crossbeam.run(rounds / 10, None);
    for p in ice.iter_mut() {
        if let Ok(i) = p.as_mut() {
            if let Err(e) = i.run(rounds / 10, None) {
                *p = Err(e);
            }
        }
    }
    let live: Vec<(&str, &dyn Bench)> = benches
        .iter()
        .filter_map(|(n, b)| b.as_deref().map(|b| (*n, b)))
        .collect();
    // Warm-up of the backends' parked pairs too (each is built here, on its first use); an
    // error shows again in the first sample.
    for (_, b) in &live {
        let _ = b.parked(rounds / 10, None);
    }
    let mut dead = vec![None::<String>; live.len()];
    let free = measure(&live, &mut dead, &mut crossbeam, &mut ice, samples, rounds);
    println!("\n## (c) Two threads, parked remote\n");
    println!(
        "Interrupt-style completion: the remote's thread sleeps when idle and the caller parks \
         in `call` until the completion wakes it. Peers, interleaved with every backend sample: \
         crossbeam-channel `bounded(1)` each way (both threads block in `recv`) and iceoryx2 \
         request-response (`ipc` service) twice: *polling*, both of its threads poll and yield \
         (its request-response ports have no blocking receive), and *blocking*, with one event \
         service each way beside it (each side notifies after it sends; finding nothing, a side \
         sleeps in its `Listener` until notified: the parked case iceoryx2 offers). \
         {PAYLOAD}-byte echo, {rounds} round trips per sample. A ratio below 1 means the \
         backend was faster.\n\n\
         **Placed by the scheduler**: every thread may run on every core.\n"
    );
    print_table(&live, &dead, free, &ice);
    // Kept to the end: the latency distribution and the sleeps are measured one core per side
    // too, where a round trip's time is the pair's and not where the scheduler put it.
    let placed = crate::placement::Placed::pin();
    match &placed {
        Ok(placed) => {
            let cores = placed.describe();
            let pinned = measure(&live, &mut dead, &mut crossbeam, &mut ice, samples, rounds);
            println!(
                "\n**One core per side**, the same samples again with the calling thread on \
                 {cores} (every pair's and peer's other threads: the remote, a simulator's \
                 interrupt or worker thread, the echo threads of the peers). The scheduler \
                 otherwise now and then puts both sides on one core, where each hand-off waits \
                 for the other side's spin phase to run out and a yield (a phase each side \
                 learns to shorten there, but not to nothing), and it keeps them there for \
                 seconds (see docs/benchmarks/changes.md, \"(c): where the scheduler puts the \
                 two sides\" and \"(c): a spin phase learned per waiter\").\n"
            );
            print_table(&live, &dead, pinned, &ice);
            crate::parked_steps::run(&live, &mut dead, samples, rounds);
        }
        Err(why) => println!("\nNot measured with one core per side: {why}."),
    }
    for (i, (name, _)) in live.iter().enumerate() {
        if let Some(e) = &dead[i] {
            failures.push(format!("{name}: parked: {e}"));
        }
    }

    // The latency distribution: every round trip timed on its own, in mc (one core per side
    // where the threads could be placed so).
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
    for (p, name) in ice.iter_mut().zip([
        "iceoryx2 request-response, polling",
        "iceoryx2 request-response, blocking",
    ]) {
        if let Ok(p) = p.as_mut() {
            let mut v = Vec::with_capacity(n as usize);
            let (r, sw) = counted(&mut || p.run(n, Some(&mut v)));
            add(name, r, v, sw);
        }
    }
    let pinned = placed.is_ok();
    drop(placed);
    if !switches.is_empty() {
        let placement = if pinned {
            "one core per side"
        } else {
            "placed by the scheduler"
        };
        println!(
            "\nThreads going to sleep per round trip (voluntary context switches of every thread \
             of the process over {n} further round trips, {placement}, each timed on its own for \
             the latency plot; each sleep is a wake-up the OS must deliver):\n"
        );
        println!("| pair | sleeps per round trip |");
        println!("|---|---:|");
        for (name, k) in &switches {
            println!("| {name} | {k:.2} |");
        }
    }
    (series, pinned)
}

/// Per backend: (vs crossbeam, vs iceoryx2 polling, vs iceoryx2 blocking, / mc) per sample; and
/// the peers' round trips in mc (crossbeam, iceoryx2 polling, iceoryx2 blocking).
type Ratios = (Vec<[Vec<f64>; 4]>, [Vec<f64>; 3]);

/// `samples` samples of every live backend's `rounds` parked round trips, each next to the
/// peers'. A backend that fails is marked in `dead` and skipped from then on.
fn measure(
    live: &[(&str, &dyn Bench)],
    dead: &mut [Option<String>],
    crossbeam: &mut Crossbeam,
    ice: &mut [R<Iceoryx>; 2],
    samples: u64,
    rounds: u64,
) -> Ratios {
    let mut ratios: Vec<[Vec<f64>; 4]> = vec![Default::default(); live.len()];
    let mut peer_mc: [Vec<f64>; 3] = Default::default();
    for _ in 0..samples {
        for (i, (_, b)) in live.iter().enumerate() {
            if dead[i].is_some() {
                continue;
            }
            let mc = memcpy_call(rounds * 10);
            let cb = crossbeam.run(rounds, None);
            let ic = ice
                .each_mut()
                .map(|p| p.as_mut().ok().map(|p| p.run(rounds, None)));
            let me = b.parked(rounds, None);
            let (cb, me) = match (cb, me) {
                (Ok(c), Ok(m)) => (c, m),
                (Err(e), _) | (_, Err(e)) => {
                    dead[i] = Some(e);
                    continue;
                }
            };
            ratios[i][0].push(me / cb);
            ratios[i][3].push(me / mc);
            peer_mc[0].push(cb / mc);
            for (k, x) in ic.into_iter().enumerate() {
                match x {
                    Some(Ok(x)) => {
                        ratios[i][1 + k].push(me / x);
                        peer_mc[1 + k].push(x / mc);
                    }
                    Some(Err(e)) => ice[k] = Err(e),
                    None => {}
                }
            }
        }
    }
    (ratios, peer_mc)
}

/// One (c) table: a row per backend (ratios to each peer and to `mc`), then the peers' rows.
fn print_table(
    live: &[(&str, &dyn Bench)],
    dead: &[Option<String>],
    (mut ratios, mut peer_mc): Ratios,
    ice: &[R<Iceoryx>; 2],
) {
    println!(
        "| backend | round trip / crossbeam | round trip / iceoryx2 polling | round trip / \
         iceoryx2 blocking | round trip / mc |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (i, (name, _)) in live.iter().enumerate() {
        if dead[i].is_some() || ratios[i][0].is_empty() {
            println!("| {name} | failed | | | |");
            continue;
        }
        let [a, b, c, d] = &mut ratios[i];
        println!(
            "| {name} | {} | {} | {} | {} |",
            spread(a),
            or_dash(b),
            or_dash(c),
            spread(d)
        );
    }
    let [cb_mc, ip_mc, ib_mc] = &mut peer_mc;
    println!("| *crossbeam bounded(1)* | 1 | | | {} |", or_dash(cb_mc));
    match &ice[0] {
        Ok(_) => println!(
            "| *iceoryx2 request-response, polling* | | 1 | | {} |",
            or_dash(ip_mc)
        ),
        Err(e) => println!("\niceoryx2 (polling) could not run here: {e}"),
    }
    match &ice[1] {
        Ok(_) => println!(
            "| *iceoryx2 request-response, blocking* | | | 1 | {} |",
            or_dash(ib_mc)
        ),
        Err(e) => println!("\niceoryx2 (blocking) could not run here: {e}"),
    }
}

/// [`spread`] of `v`, or a dash where nothing was measured.
fn or_dash(v: &mut [f64]) -> String {
    if v.is_empty() {
        "—".into()
    } else {
        spread(v)
    }
}
