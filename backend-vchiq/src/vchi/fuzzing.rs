//! One `fn(&[u8])` per parser of remote input in the VCHI layer, for `cargo fuzz` targets and
//! for the random-input test below. None may panic on any input.

use alloc::vec::Vec;

use super::link::VcService;
use super::smem_client::parse_vc_message;
use super::smem_wire::SmemRequest;
use super::test_wire::{Fun2Params, TestParams};
use super::vc_mem::{answer_property, parse_get_vc_memory, VcMemInfo};
use crate::sim::vchi::echo_server::EchoServer;
use crate::sim::vchi::func_server::Fun2Server;
use crate::sim::vchi::smem_server::SmemServer;

/// Client side: a VC→host `'SMEM'` message (reply, RELEASED, VC_MEM_REQUEST).
pub fn fuzz_smem_reply(data: &[u8]) {
    let _ = parse_vc_message(data);
}

/// VideoCore side: a host→VC `'SMEM'` request, parsed and executed against a small area.
pub fn fuzz_smem_request(data: &[u8]) {
    let _ = SmemRequest::parse(data);
    let mut s = SmemServer::new(0x1000_0000, 64 * 1024);
    let mut out = Vec::new();
    for chunk in data.chunks(60) {
        s.on_message(chunk, &mut out);
    }
}

/// VideoCore side: echo-server messages (including CONFIG's `test_params`).
pub fn fuzz_echo_message(data: &[u8]) {
    let _ = TestParams::parse(data);
    let mut s = EchoServer::new();
    let mut out = Vec::new();
    s.on_message(data, &mut out);
}

/// VideoCore side: a fun2 sub-test message, then a bulk of the same bytes.
pub fn fuzz_fun2_message(data: &[u8]) {
    let _ = Fun2Params::parse(data);
    let mut s = Fun2Server::new();
    let mut out = Vec::new();
    s.on_message(data, &mut out);
    s.on_bulk_rx(0, Some(data), &mut out);
}

/// The vc_mem inputs: DT `reg` cells and a mailbox property response (and the VideoCore-side
/// request answerer).
pub fn fuzz_vc_mem(data: &[u8]) {
    let _ = VcMemInfo::from_dt_reg(data);
    let _ = parse_get_vc_memory(data);
    let mut b = data.to_vec();
    let _ = answer_property(&mut b, 0x3e00_0000, 0x0200_0000);
}

/// A named fuzz entry point.
pub type Entry = (&'static str, fn(&[u8]));

/// Every entry point, for a driver that feeds all of them the same input.
pub const ALL: &[Entry] = &[
    ("smem_reply", fuzz_smem_reply),
    ("smem_request", fuzz_smem_request),
    ("echo_message", fuzz_echo_message),
    ("fun2_message", fuzz_fun2_message),
    ("vc_mem", fuzz_vc_mem),
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn no_entry_point_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            for (_, f) in ALL {
                f(&data);
            }
        }

        /// Structured inputs reach past the first length checks.
        #[test]
        fn structured_smem_requests_do_not_panic(ty in 0u32..14, words in proptest::collection::vec(any::<u32>(), 0..16)) {
            let mut m = ty.to_le_bytes().to_vec();
            m.extend_from_slice(&7u32.to_le_bytes());
            for w in words { m.extend_from_slice(&w.to_le_bytes()); }
            fuzz_smem_request(&m);
            fuzz_smem_reply(&m);
        }
    }
}
