//! Setup shared by the VCHIQ integration tests.

use fwipc_vchiq::{Deliver, Event, ServiceCtx};

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
