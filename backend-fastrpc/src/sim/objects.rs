//! Objects hosted on the simulated DSP.

use std::sync::{Arc, Mutex};

use fwipc_transport_api::fixture::{echo_reply, TagLog};

use crate::error::aee;
use crate::sim::dsp::{CallInfo, DspObject, ReverseCall};
use crate::wire::scalars::Scalars;

/// Handle of the echo object (above the static handles 0..10).
pub const ECHO_HANDLE: u32 = 0x20;
/// Raw echo method: in-buffer 0 → out-buffer 0 with every byte inverted, out length = in length.
pub const ECHO_RAW_METHOD: u32 = 2;

/// Bulk put: in-buffer 0 (a shared buffer, by page) is stored.
pub const ECHO_BULK_PUT_METHOD: u32 = 3;
/// Bulk get: in-buffer 0 = u32 length; out-buffer 0 (a shared buffer) receives the stored data.
pub const ECHO_BULK_GET_METHOD: u32 = 4;

/// The conformance echo service. Logs the first 4 bytes (LE) of each echo request; also keeps
/// the last bulk-put data for bulk-get.
pub struct EchoObject {
    seen: Arc<spin::Mutex<TagLog>>,
    stored: Vec<u8>,
}

impl EchoObject {
    /// An echo object logging into `seen` (a spin lock: held for one log entry, so a call
    /// takes one read-modify-write for it).
    pub fn new(seen: Arc<spin::Mutex<TagLog>>) -> Self {
        EchoObject {
            seen,
            stored: Vec::new(),
        }
    }
}

impl DspObject for EchoObject {
    fn invoke(&mut self, call: &CallInfo, ins: &[Vec<u8>], outs: &mut [Vec<u8>]) -> i32 {
        match call.sc.method() {
            ECHO_RAW_METHOD => {}
            ECHO_BULK_PUT_METHOD => {
                if call.sc != Scalars::makex(0, ECHO_BULK_PUT_METHOD, 1, 0, 0, 0) {
                    return aee::dsp(aee::EBADPARM);
                }
                self.stored.clear();
                self.stored.extend_from_slice(&ins[0]);
                return 0;
            }
            ECHO_BULK_GET_METHOD => {
                if call.sc != Scalars::makex(0, ECHO_BULK_GET_METHOD, 1, 1, 0, 0) {
                    return aee::dsp(aee::EBADPARM);
                }
                let Some(l) = ins[0].get(..4) else {
                    return aee::dsp(aee::EBADPARM);
                };
                let want = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
                let n = want.min(self.stored.len()).min(outs[0].len());
                outs[0].truncate(n);
                outs[0].copy_from_slice(&self.stored[..n]);
                return 0;
            }
            _ => return aee::dsp(aee::EUNSUPPORTED),
        }
        if call.sc != Scalars::makex(0, ECHO_RAW_METHOD, 1, 1, 0, 0) {
            return aee::dsp(aee::EBADPARM);
        }
        let req = &ins[0];
        self.seen.lock().log(req);
        let out = &mut outs[0];
        if out.len() < req.len() {
            return aee::dsp(aee::EBUFFERTOOSMALL);
        }
        out.truncate(req.len());
        echo_reply(req, out);
        0
    }
}

/// Handle of the calculator object.
pub const CALC_HANDLE: u32 = 0x21;

crate::fastrpc_interface! {
    /// The calculator the simulated DSP hosts at [`CALC_HANDLE`]: a test interface with in/out
    /// buffers and scalars, generated once for both sides.
    pub interface calculator {
        stub CalculatorStub;
        skel CalculatorImpl, calculator_skel_invoke;
        /// Sum of little-endian u32 values.
        fn sum = 2 (in {} in_bufs { values } out { total: u64 } out_bufs {});
        /// The larger of two.
        fn max = 3 (in { a: i32, b: i32 } in_bufs {} out { m: i32 } out_bufs {});
        /// `dst[i] = src[i] ^ key`; returns the bytes written.
        fn xor = 4 (in { key: u8 } in_bufs { src } out { n: u32 } out_bufs { dst });
        /// Method 40: sent through the method-31 escape.
        fn echo_far = 40 (in { tag: u32 } in_bufs { data } out { tag_back: u32 } out_bufs { reply });
    }
}

/// The calculator's implementation.
#[derive(Default)]
pub struct Calculator;

impl calculator::CalculatorImpl for Calculator {
    fn sum(&mut self, values: &[u8]) -> Result<(u64,), i32> {
        if !values.len().is_multiple_of(4) {
            return Err(aee::dsp(aee::EBADPARM));
        }
        Ok((values
            .chunks_exact(4)
            .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .sum(),))
    }
    fn max(&mut self, a: i32, b: i32) -> Result<(i32,), i32> {
        Ok((a.max(b),))
    }
    fn xor(&mut self, key: u8, src: &[u8], dst: &mut [u8]) -> Result<(u32,), i32> {
        if dst.len() < src.len() {
            return Err(aee::dsp(aee::EBUFFERTOOSMALL));
        }
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s ^ key;
        }
        Ok((src.len() as u32,))
    }
    fn echo_far(&mut self, tag: u32, data: &[u8], reply: &mut [u8]) -> Result<(u32,), i32> {
        let n = data.len().min(reply.len());
        reply[..n].copy_from_slice(&data[..n]);
        Ok((tag,))
    }
}

/// A skel function over `T`.
pub type SkelFn<T> = fn(&mut T, Scalars, &[&[u8]], &mut [&mut [u8]]) -> i32;

/// Hosts any generated skel on the simulated DSP.
pub struct SkelObject<T> {
    obj: T,
    skel: SkelFn<T>,
}

impl<T> SkelObject<T> {
    /// `obj` dispatched through `skel`.
    pub fn new(obj: T, skel: SkelFn<T>) -> Self {
        SkelObject { obj, skel }
    }
}

impl<T: Send> DspObject for SkelObject<T> {
    fn invoke(&mut self, call: &CallInfo, ins: &[Vec<u8>], outs: &mut [Vec<u8>]) -> i32 {
        if call.sc.inhandles() + call.sc.outhandles() != 0 {
            return aee::dsp(aee::EBADPARM);
        }
        let ins: Vec<&[u8]> = ins.iter().map(|v| &v[..]).collect();
        let mut outs: Vec<&mut [u8]> = outs.iter_mut().map(|v| &mut v[..]).collect();
        (self.skel)(&mut self.obj, call.sc, &ins, &mut outs)
    }
}

/// The DSP utilities object at handle 2: GET_DSP_INFO (method 0, `sc 0x00010100`).
pub struct DspUtilities {
    /// Attribute values (index = attribute id).
    pub attrs: [u32; 256],
    /// Answer `AEE_EUNSUPPORTED` (an old DSP image).
    pub unsupported: bool,
    /// Queries received.
    pub queries: Arc<Mutex<u32>>,
}

impl DspObject for DspUtilities {
    fn invoke(&mut self, call: &CallInfo, ins: &[Vec<u8>], outs: &mut [Vec<u8>]) -> i32 {
        *self.queries.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        if self.unsupported || call.sc.method() != 0 {
            return aee::dsp(aee::EUNSUPPORTED);
        }
        if call.sc != Scalars::makex(0, 0, 1, 1, 0, 0) {
            return aee::dsp(aee::EBADPARM);
        }
        let Some(c) = ins[0].get(..4) else {
            return aee::dsp(aee::EBADPARM);
        };
        // A count of attributes, checked against the out-buffer (a byte size would not fit).
        let count = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
        if count > 256 || outs[0].len() != 4 * count {
            return aee::dsp(aee::EBADPARM);
        }
        for (o, a) in outs[0].chunks_exact_mut(4).zip(&self.attrs) {
            o.copy_from_slice(&a.to_le_bytes());
        }
        0
    }
}

/// Handle of a DSP object that needs the AP's help: `get(key)` asks the AP's key/value service
/// (a reverse call to [`AP_KV_HANDLE`]) before it can answer.
pub const KV_HANDLE: u32 = 0x22;
/// The AP-side service handle the reverse call targets.
pub const AP_KV_HANDLE: u32 = 0x50;
/// `get`: in-buffer 0 = u32 key, out-buffer 0 = u32 value.
pub const KV_GET_METHOD: u32 = 2;

/// The reverse-calling object.
#[derive(Default)]
pub struct KvClient;

impl DspObject for KvClient {
    fn invoke(&mut self, _call: &CallInfo, _ins: &[Vec<u8>], _outs: &mut [Vec<u8>]) -> i32 {
        aee::dsp(aee::EBADPARM)
    }

    fn reverse(&mut self, call: &CallInfo, ins: &[Vec<u8>]) -> Option<ReverseCall> {
        if call.sc != Scalars::makex(0, KV_GET_METHOD, 1, 1, 0, 0) || ins[0].len() != 4 {
            return None;
        }
        Some(ReverseCall {
            handle: AP_KV_HANDLE,
            method: KV_GET_METHOD,
            ins: vec![ins[0].clone()],
            out_lens: vec![4],
        })
    }

    fn reverse_done(
        &mut self,
        _call: &CallInfo,
        _ins: &[Vec<u8>],
        outs: &mut [Vec<u8>],
        result: i32,
        rev_outs: &[&[u8]],
    ) -> i32 {
        if result != 0 {
            return result;
        }
        match (rev_outs.first(), outs.first_mut()) {
            (Some(v), Some(o)) if v.len() == 4 && o.len() == 4 => {
                o.copy_from_slice(v);
                0
            }
            _ => aee::dsp(aee::EBADPARM),
        }
    }
}
