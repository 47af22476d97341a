//! Invoke cost, measured (run: `cargo bench -p fwipc-fastrpc --bench invoke`).
//!
//! 1. `core`: the AP path alone (layout into the preallocated payload, message encode, receive
//!    path, poll, copy-out, release), the response fed back on the same thread: the backend's
//!    own cost per call.
//! 2. `sim`: a full round trip through the simulated DSP thread (interrupt mode, spinning
//!    waiter): backend + DSP decode through the simulated SMMU + two thread hand-offs.
//! 3. `floor`: a two-thread `std::sync::mpsc` ping-pong in the same run, the reference the
//!    round trip is compared with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fwipc_fastrpc::sim::fixture::SimSystem;
use fwipc_fastrpc::sim::objects::{ECHO_HANDLE, ECHO_RAW_METHOD};
use fwipc_fastrpc::sim::SimBus;
use fwipc_fastrpc::wire::CtxId;
use fwipc_fastrpc::{Arg, Channel, Domain, PacketChannel, Result};
use fwipc_fastrpc::{Bank, ChannelConfig};
use fwipc_transport_api::Completion;

struct NullLink;
impl PacketChannel for NullLink {
    fn send(&self, _m: &[u8]) -> Result<()> {
        Ok(())
    }
    fn try_recv(&self, _b: &mut [u8]) -> Option<usize> {
        None
    }
}

fn core_path(n: u32, size: usize) -> Duration {
    let cfg = ChannelConfig::new(Domain::Cdsp)
        .with_banks(vec![Bank::new(1, 1)])
        .with_contexts(8)
        .with_payloads(2, 16384)
        .with_max_args(4);
    let ch = Channel::new(cfg, Arc::new(NullLink), Arc::new(SimBus::new())).unwrap();
    let s = ch
        .open_session(fwipc_fastrpc::CallWait::new(
            Arc::new(fwipc_transport_api::StdClock::new()),
            Duration::from_secs(5),
            fwipc_transport_api::Wait::Poll,
        ))
        .unwrap();
    let input = vec![0x5au8; size];
    let mut out = vec![0u8; size];
    let t0 = Instant::now();
    for _ in 0..n {
        let t = s
            .start(
                ECHO_HANDLE,
                ECHO_RAW_METHOD,
                &[Arg::In(&input), Arg::Out(&mut out)],
                0,
            )
            .unwrap();
        let id = CtxId::new(t.slot() as u8 + 1, t.generation(), s.pd());
        let mut rsp = [0u8; 16];
        rsp[..8].copy_from_slice(&id.0.to_le_bytes());
        ch.handle_packet(&rsp);
        assert!(s.poll(&t).unwrap());
        s.read_out(&t, 0, &mut out).unwrap();
        s.finish(t);
    }
    t0.elapsed() / n
}

fn sim_round_trip(n: u32, size: usize) -> Duration {
    let sys = SimSystem::new(SimSystem::default_config(), Completion::Interrupt);
    // Busy polling, as a latency benchmark wants.
    let s = sys
        .attached_session()
        .with_wait(fwipc_fastrpc::CallWait::new(
            sys.clock.clone(),
            Duration::from_secs(5),
            fwipc_transport_api::Wait::Poll,
        ));
    let input = vec![0x5au8; size];
    let mut out = vec![0u8; size];
    let t0 = Instant::now();
    for _ in 0..n {
        s.invoke(
            ECHO_HANDLE,
            ECHO_RAW_METHOD,
            &mut [Arg::In(&input), Arg::Out(&mut out)],
        )
        .unwrap();
    }
    t0.elapsed() / n
}

fn mpsc_floor(n: u32) -> Duration {
    let (to_b, b_rx) = std::sync::mpsc::channel::<u32>();
    let (to_a, a_rx) = std::sync::mpsc::channel::<u32>();
    let h = std::thread::spawn(move || {
        while let Ok(v) = b_rx.recv() {
            if to_a.send(v).is_err() {
                break;
            }
        }
    });
    let t0 = Instant::now();
    for i in 0..n {
        to_b.send(i).unwrap();
        a_rx.recv().unwrap();
    }
    let d = t0.elapsed() / n;
    drop(to_b);
    h.join().unwrap();
    d
}

fn main() {
    for size in [16usize, 256, 1024] {
        core_path(1000, size); // warm-up
        println!(
            "core  {size:5} B: {:>8.0?} per call",
            core_path(100_000, size)
        );
    }
    for size in [16usize, 1024] {
        sim_round_trip(1000, size);
        println!(
            "sim   {size:5} B: {:>8.0?} per round trip",
            sim_round_trip(20_000, size)
        );
    }
    mpsc_floor(1000);
    println!(
        "floor mpsc ping-pong: {:>8.0?} per round trip",
        mpsc_floor(20_000)
    );
}
