//! Setup shared by the VCHIQ integration tests.

// Each test binary compiles this module; not every one uses every helper.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fwipc_vchiq::sim::SimPair;
use fwipc_vchiq::{Deliver, Event, ServiceCtx, ServiceHandle, ServiceParams};

/// A service callback that answers each message with its payload reversed; a reply refused for
/// quota is redelivered when the slot comes back (`Deliver::Retry`).
pub fn reverse_echo(ctx: &ServiceCtx<'_>, ev: Event<'_>) -> Deliver {
    if let Event::Message(m) = ev {
        let mut r = m.payload().to_vec();
        r.reverse();
        if ctx.vchiq.queue_message(ctx.handle, &r).is_err() {
            return Deliver::Retry;
        }
    }
    Deliver::Done
}

/// Connects `pair` and opens `fourcc` on its ARM (slave) side with a callback that keeps every
/// message it receives: the service handle and the list the messages land in.
pub fn connect_with_reply_sink(
    pair: &SimPair,
    fourcc: u32,
) -> (ServiceHandle, Arc<Mutex<Vec<Vec<u8>>>>) {
    pair.connect().unwrap();
    let replies = Arc::new(Mutex::new(Vec::new()));
    let sink = replies.clone();
    let h = pair
        .slave()
        .open_service_wait(
            ServiceParams::new(fourcc),
            Arc::new(move |_: &ServiceCtx<'_>, ev: Event<'_>| {
                if let Event::Message(m) = ev {
                    sink.lock().unwrap().push(m.payload().to_vec());
                }
                Deliver::Done
            }),
            Duration::from_secs(10),
        )
        .unwrap();
    (h, replies)
}
