//! Objects hosted on the simulated DSP.

use std::sync::{Arc, Mutex};

use fwipc_transport_api::fixture::echo_reply;

use crate::error::aee;
use crate::scalars::Scalars;
use crate::sim::dsp::{CallInfo, DspObject};

/// Handle of the echo object (above the static handles 0..10).
pub const ECHO_HANDLE: u32 = 0x20;
/// Raw echo method: in-buffer 0 → out-buffer 0 with every byte inverted, out length = in length.
pub const ECHO_RAW_METHOD: u32 = 2;

/// The conformance echo service. Logs the first 4 bytes (LE) of each request.
pub struct EchoObject {
    seen: Arc<Mutex<Vec<u32>>>,
}

impl EchoObject {
    /// An echo object logging into `seen`.
    pub fn new(seen: Arc<Mutex<Vec<u32>>>) -> Self {
        EchoObject { seen }
    }
}

impl DspObject for EchoObject {
    fn invoke(&mut self, call: &CallInfo, ins: &[Vec<u8>], outs: &mut [Vec<u8>]) -> i32 {
        if call.sc.method() != ECHO_RAW_METHOD {
            return aee::dsp(aee::EUNSUPPORTED);
        }
        if call.sc != Scalars::makex(0, ECHO_RAW_METHOD, 1, 1, 0, 0) {
            return aee::dsp(aee::EBADPARM);
        }
        let req = &ins[0];
        if let Some(b) = req.get(..4) {
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
        let out = &mut outs[0];
        if out.len() < req.len() {
            return aee::dsp(aee::EBUFFERTOOSMALL);
        }
        out.truncate(req.len());
        echo_reply(req, out);
        0
    }
}
