//! A DSP-written out length is never trusted (docs/protocols/fastrpc.md §5 and §12.8): a DSP may
//! shorten an out-buffer, so a shorter length shortens the reply; a longer one than the caller
//! asked for fails the call with a counted protocol error instead of handing back a full-size
//! reply made of whatever the buffer held.

use fwipc_fastrpc::sim::fixture::SimSystem;
use fwipc_fastrpc::sim::objects::{ECHO_HANDLE, ECHO_RAW_METHOD};
use fwipc_fastrpc::{Arg, FastRpcError, InvokeTicket, Session};
use fwipc_transport_api::fixture::{DoubleFetch, SimMode};
use fwipc_transport_api::{Completion, ProtocolError};

const REQ: [u8; 4] = [1, 2, 3, 4];
const ECHO: [u8; 4] = [!1, !2, !3, !4];

/// A stepped, polled system: the DSP answers only when stepped, and rewrites the answered call's
/// out length (`rpra[1].len` XOR `mask`) before the AP looks.
fn answered_with_len_mask(mask: u64) -> (SimSystem, Session, InvokeTicket) {
    let sys = SimSystem::new(SimSystem::default_config(), Completion::Polled);
    let s = sys.attached_session();
    assert!(sys.dsp.set_mode(SimMode::Stepped));
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(&mask.to_le_bytes());
    sys.dsp.rewrite_after_answer(DoubleFetch {
        count: 1,
        header,
        body: Vec::new(),
    });
    let mut out = [0u8; 16];
    let t = s
        .start(
            ECHO_HANDLE,
            ECHO_RAW_METHOD,
            &[Arg::In(&REQ), Arg::Out(&mut out)],
            0,
        )
        .unwrap();
    assert!(sys.dsp.step(), "the DSP took the call");
    assert_eq!(s.poll(&t), Ok(true), "answered");
    (sys, s, t)
}

#[test]
fn an_out_length_above_what_was_asked_fails_the_call_and_is_counted() {
    // 4 ^ 0x100 = 260 > 16 bytes asked.
    let (_sys, s, t) = answered_with_len_mask(0x100);
    let before = s.stats().protocol_errors;
    let mut dst = [0xAAu8; 16];
    assert_eq!(
        s.read_out(&t, 0, &mut dst),
        Err(FastRpcError::Protocol(ProtocolError::BadLength))
    );
    assert_eq!(dst, [0xAA; 16], "nothing copied");
    assert_eq!(s.stats().protocol_errors, before + 1);
    // The same error every time it is asked: the reply ends once, as failed.
    assert_eq!(
        s.read_out(&t, 0, &mut dst),
        Err(FastRpcError::Protocol(ProtocolError::BadLength))
    );
    s.finish(t);
    assert_eq!(s.payload_free(), s.payload_capacity(), "payload back");
}

#[test]
fn an_out_length_one_above_what_was_asked_fails_too() {
    // 4 ^ 20 = 16: exactly what was asked is fine; 4 ^ 21 = 17 is one too many.
    let (_sys, s, t) = answered_with_len_mask(20);
    let mut dst = [0u8; 16];
    assert_eq!(s.read_out(&t, 0, &mut dst), Ok(16));
    assert_eq!(dst[..4], ECHO);
    s.finish(t);
    let (_sys, s, t) = answered_with_len_mask(21);
    assert_eq!(
        s.read_out(&t, 0, &mut dst),
        Err(FastRpcError::Protocol(ProtocolError::BadLength))
    );
    s.finish(t);
}

#[test]
fn a_shorter_out_length_shortens_the_reply() {
    // 4 ^ 6 = 2.
    let (_sys, s, t) = answered_with_len_mask(6);
    let before = s.stats().protocol_errors;
    let mut dst = [0u8; 16];
    assert_eq!(s.read_out(&t, 0, &mut dst), Ok(2));
    assert_eq!(dst[..2], ECHO[..2]);
    assert_eq!(
        s.stats().protocol_errors,
        before,
        "a shorter length is allowed"
    );
    assert_eq!(s.status(&t), Ok(()));
    s.finish(t);
    assert_eq!(s.payload_free(), s.payload_capacity());
}
