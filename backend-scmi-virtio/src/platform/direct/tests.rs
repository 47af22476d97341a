//! The direct transport's own bookkeeping: held replies, abandoned transfers, token quarantine.

use alloc::vec::Vec;

use fwipc_transport_api::{Error, Request, Ticket, Transport, TxOutcome};

use super::{DirectTransport, ReplyFault};
use crate::header::TOKEN_MASK;
use crate::platform::{Platform, PlatformConfig};

/// ECHO of the fwipc test protocol: the reply is the request with every byte inverted.
const ECHO: u32 = 0x81 << 8 | 0x3;

fn transport(slots: usize) -> DirectTransport {
    DirectTransport::with_sizes(Platform::new(PlatformConfig::full()), slots, 128)
}

fn echo(t: &DirectTransport, byte: u8) -> Result<Ticket, Error> {
    t.send(&Request::new(ECHO, &[byte]))
}

fn reply(t: &DirectTransport, ticket: &Ticket) -> Result<Vec<u8>, Error> {
    let mut out = [0u8; 128];
    let n = t.fetch_response(ticket, &mut out)?;
    Ok(out[..n].to_vec())
}

#[test]
fn held_replies_are_delivered_on_release() {
    let t = transport(4);
    t.set_hold(true);
    let a = echo(&t, 0x1).unwrap();
    let b = echo(&t, 0x2).unwrap();
    assert_eq!((t.poll_done(&a), t.poll_done(&b)), (Ok(false), Ok(false)));
    t.release();
    assert_eq!(reply(&t, &a).unwrap(), [!0x1]);
    assert_eq!(reply(&t, &b).unwrap(), [!0x2]);
    t.mark_txdone(a, TxOutcome::Done);
    t.mark_txdone(b, TxOutcome::Done);
    let st = t.stats();
    assert_eq!((st.completed, st.late_replies, st.pool_free), (2, 0, 4));
}

#[test]
fn a_late_reply_never_reaches_the_transfer_that_reuses_its_slot() {
    let t = transport(1);
    t.set_hold(true);
    let a = echo(&t, 0xA).unwrap();
    let a_slot = a.slot();
    t.mark_txdone(a, TxOutcome::TimedOut);
    // The platform still holds A's reply: its slot (and token) are not free for the next one.
    assert_eq!(echo(&t, 0xB).unwrap_err(), Error::Busy);
    t.release();
    let st = t.stats();
    assert_eq!((st.timed_out, st.late_replies, st.completed), (1, 1, 0));
    assert_eq!(st.pool_free, 1);
    // The slot again, its reply held: A's reply is gone, B waits for its own.
    t.set_hold(true);
    let b = echo(&t, 0xB).unwrap();
    assert_eq!(b.slot(), a_slot);
    assert_eq!(t.poll_done(&b), Ok(false));
    t.release();
    assert_eq!(t.poll_done(&b), Ok(true));
    assert_eq!(reply(&t, &b).unwrap(), [!0xB]);
    t.mark_txdone(b, TxOutcome::Done);
    assert_eq!(t.stats().late_replies, 1);
}

#[test]
fn a_token_is_not_reused_while_its_transfer_waits_for_its_reply() {
    let t = transport(2);
    t.set_hold(true);
    let a = echo(&t, 0xA).unwrap();
    let a_token = a.token();
    t.mark_txdone(a, TxOutcome::TimedOut);
    t.set_hold(false);
    // Twice around SCMI's token space through the other slot: never A's token.
    for i in 0..2 * (u32::from(TOKEN_MASK) + 1) {
        let b = echo(&t, i as u8).unwrap();
        assert_ne!(b.token(), a_token, "token reused after {i} transfers");
        assert_eq!(reply(&t, &b).unwrap(), [!(i as u8)]);
        t.mark_txdone(b, TxOutcome::Done);
    }
    t.release();
    let st = t.stats();
    assert_eq!((st.late_replies, st.pool_free), (1, 2));
}

#[test]
fn a_dropped_reply_times_out_and_gives_its_slot_back() {
    let t = transport(1);
    t.set_fault(ReplyFault::Drop);
    let a = echo(&t, 0xA).unwrap();
    assert_eq!(t.poll_done(&a), Ok(false));
    t.mark_txdone(a, TxOutcome::TimedOut);
    t.set_fault(ReplyFault::None);
    let b = echo(&t, 0xB).unwrap();
    assert_eq!(reply(&t, &b).unwrap(), [!0xB]);
    t.mark_txdone(b, TxOutcome::Done);
    let st = t.stats();
    assert_eq!((st.timed_out, st.late_replies, st.pool_free), (1, 0, 1));
}

#[test]
fn shutdown_fails_what_is_in_flight_and_drops_held_replies() {
    let t = transport(2);
    t.set_hold(true);
    let a = echo(&t, 0xA).unwrap();
    t.shutdown().unwrap();
    assert_eq!(t.poll_done(&a), Err(Error::Shutdown));
    assert_eq!(echo(&t, 0xB).unwrap_err(), Error::Shutdown);
    t.release();
    t.mark_txdone(a, TxOutcome::Cancelled);
    let st = t.stats();
    assert_eq!((st.completed, st.late_replies, st.pool_free), (0, 0, 2));
}
