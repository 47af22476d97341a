//! Open a VCHIQ service on the simulated VideoCore, exchange a few messages with its echo
//! service, check every reply byte for byte, and close the service.
//!
//! ```text
//! cargo run --release -p fwipc-vchiq --example service_echo
//! ```
//!
//! The pieces:
//!
//! - [`SimPair`]: one shared region with the ARM side (VCHIQ *slave*, what runs on Linux) and a
//!   simulated VideoCore (the same core in the *master* role) each polled by a worker thread and
//!   woken by a doorbell.
//! - [`EchoService`]: a VideoCore-side service (fourcc `'echo'`) plugged into the master. It is the
//!   service the conformance suite talks to, so it speaks the fwipc framing of
//!   [`fwipc_vchiq::frame`]: every message is `{u32 token, u32 len}` (little-endian) followed by
//!   `len` payload bytes, and the reply carries the same token and length with every payload byte
//!   **inverted** ([`echo_reply`]), which proves the bytes came back from the VideoCore and are
//!   not our own request read back.
//! - Our side of the service is a [`ServiceHandler`]: here a closure that forwards each received
//!   message into a channel. Handlers run on the ARM worker thread, inside `Vchiq::poll`.
//!
//! (The crate has a second `'echo'` server, [`fwipc_vchiq::sim::vchi::echo_server::EchoServer`], which
//! speaks the `vchiq_test` protocol instead; it is not used here.)

use std::error::Error;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fwipc_transport_api::fixture::echo_reply;
use fwipc_vchiq::consts::ServiceState;
use fwipc_vchiq::frame::{self, FRAME_HEADER};
use fwipc_vchiq::sim::framed_echo::{EchoService, ECHO_FOURCC};
use fwipc_vchiq::sim::SimPair;
use fwipc_vchiq::{Deliver, Event, ServiceCtx, ServiceParams, VchiqError};

/// How long any one step may take before we call it a failure.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Our ARM-side view of the service's life.
enum Seen {
    Message(Vec<u8>),
    Closed,
}

/// Build one fwipc frame: `{token, len}` little-endian, then the payload.
fn framed(token: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(FRAME_HEADER + payload.len());
    m.extend_from_slice(&token.to_le_bytes());
    m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    m.extend_from_slice(payload);
    m
}

fn main() -> Result<(), Box<dyn Error>> {
    // 1. The simulated pair, with the echo service offered by the VideoCore. Services are added
    //    before connecting; they start listening once the pair is connected.
    let mut pair = SimPair::new()?;
    let (echo, _listener) =
        EchoService::add_to(pair.master(), ServiceParams::new(ECHO_FOURCC).version(3, 2))?;
    pair.connect()?;
    println!(
        "connected: common protocol version {}",
        pair.slave().version_common()
    );

    // 2. Open a client to 'echo'. Version 3, oldest acceptable peer version 3: the VideoCore
    //    offers 3 (and accepts clients down to 2), so the open succeeds.
    let (tx, rx) = mpsc::channel::<Seen>();
    let tx = Mutex::new(tx);
    let handler = move |_ctx: &ServiceCtx<'_>, ev: Event<'_>| {
        let seen = match ev {
            Event::Message(m) => Some(Seen::Message(m.payload().to_vec())),
            Event::Closed => Some(Seen::Closed),
            _ => None,
        };
        if let Some(s) = seen {
            // The receiver only goes away when main returns; nothing to do then.
            let _ = tx.lock().unwrap_or_else(|p| p.into_inner()).send(s);
        }
        // We copied the payload: the slot holding it may be recycled now.
        Deliver::Done
    };
    let h = pair.slave().open_service_wait(
        ServiceParams::new(ECHO_FOURCC).version(3, 3),
        Arc::new(handler),
        TIMEOUT,
    )?;
    println!(
        "opened 'echo': handle {:#x}, peer version {}, state {:?}",
        h.raw(),
        pair.slave().peer_version(h)?,
        pair.slave().service_state(h)?
    );

    // 3. Send a few messages of different sizes (up to the largest a frame can carry) and check
    //    each echo byte for byte.
    let sizes = [0usize, 1, 5, 64, 1000, frame::MAX_FRAME_PAYLOAD];
    for (i, &size) in sizes.iter().enumerate() {
        let token = 100 + i as u32;
        let payload: Vec<u8> = (0..size).map(|k| (k * 31 + i) as u8).collect();
        pair.slave().queue_message(h, &framed(token, &payload))?;

        let reply = match rx.recv_timeout(TIMEOUT) {
            Ok(Seen::Message(m)) => m,
            Ok(Seen::Closed) => return Err("service closed while waiting for an echo".into()),
            Err(_) => return Err(format!("no echo for token {token} within {TIMEOUT:?}").into()),
        };
        let (hdr, body) = frame::parse(&reply)?;
        let mut want = vec![0u8; size];
        echo_reply(&payload, &mut want);
        if hdr.token != token || body != want.as_slice() {
            return Err(format!(
                "echo mismatch for token {token}: got token {} with {} bytes",
                hdr.token,
                body.len()
            )
            .into());
        }
        println!(
            "  sent {:4} bytes (token {token}) -> echo of {:4} bytes: ok",
            size,
            body.len()
        );
    }
    if echo.received() != sizes.len() as u64 {
        return Err(format!(
            "the VideoCore saw {} requests, we sent {}",
            echo.received(),
            sizes.len()
        )
        .into());
    }

    // 4. Close. `close_service` sends CLOSE; the service is closed once the VideoCore's CLOSE
    //    comes back, which our handler sees as `Event::Closed`. `Retry` means no slot space for
    //    the CLOSE right now.
    loop {
        match pair.slave().close_service(h) {
            Err(VchiqError::Retry) => std::thread::sleep(Duration::from_millis(1)),
            r => break r?,
        }
    }
    match rx.recv_timeout(TIMEOUT) {
        Ok(Seen::Closed) => {}
        Ok(Seen::Message(_)) => return Err("unexpected message after close".into()),
        Err(_) => return Err("the close was not confirmed".into()),
    }
    let state = pair.slave().service_state(h)?;
    println!("closed: state {state:?}");
    if state != ServiceState::Closed {
        return Err(format!("service ended in state {state:?}").into());
    }

    let (s, m) = (pair.slave().stats(), pair.master().stats());
    println!(
        "ARM sent {} slot messages (incl. control), protocol errors: ARM {} / VideoCore {}",
        s.msgs_sent, s.protocol_errors, m.protocol_errors
    );
    if s.protocol_errors + m.protocol_errors != 0 {
        return Err("protocol errors were counted".into());
    }

    // 5. Tear the pair down: both instances close everything and their worker threads stop.
    pair.shutdown()?;
    println!("service_echo: all checks passed");
    Ok(())
}
