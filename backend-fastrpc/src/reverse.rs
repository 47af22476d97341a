//! Reverse RPC (the DSP calling AP services, docs/protocols/fastrpc.md §9): the `adsp_listener`
//! interface on handle 3, the buffer packing it uses, and an AP-side [`Listener`] that serves
//! reverse calls.
//!
//! An AP thread loops on `next2` (method 4, `sc 0x04020200`), passing the previous reply
//! (ctx, result, packed out-buffers); the call blocks on the DSP until a reverse request
//! arrives and returns its ctx, target handle, `sc` and packed in-buffers.
//!
//! Packing: per buffer a u32 length (at a 4-byte boundary) then, if non-zero, 8-byte alignment
//! and the bytes; after the in-buffers, one u32 length per out-buffer. The exact alignment of
//! the length words is **(unverified)** (we align them to 4). Unpacking checks every length
//! against the bytes remaining (unsigned, checked arithmetic): a hostile DSP gets an error.
//! `get_in_bufs2` (method 5, for requests larger than the buffer) is not implemented: such a
//! request is answered with `AEE_EBUFFERTOOSMALL`.

use fwipc_transport_api::ProtocolError;

use crate::error::{aee, Result};
use crate::stubskel::Invoker;
use crate::wire::scalars::Scalars;

/// Handle of `adsp_listener`.
pub(crate) const LISTENER_HANDLE: u32 = 3;
/// Most buffers a reverse call may carry each way.
pub(crate) const MAX_REVERSE_BUFS: usize = 16;

crate::fastrpc_interface! {
    /// `adsp_listener` (the part we use). The AP only calls it: its skeleton is generated but
    /// served by no one here.
    #[allow(dead_code, unreachable_pub)]
    pub(crate) interface listener {
        stub ListenerStub;
        skel ListenerImpl, listener_skel_invoke;
        /// Deliver the previous reply, get the next reverse request.
        fn next2 = 4 (
            in { prev_ctx: u32, prev_result: i32 } in_bufs { prev_bufs }
            out { ctx: u32, handle: u32, sc: u32, bufs_len_req: u32 } out_bufs { bufs });
    }
}

fn align(v: usize, a: usize) -> Option<usize> {
    v.checked_next_multiple_of(a)
}

/// Pack `bufs` (each: u32 length, then 8-aligned bytes) followed by `out_lens` (u32 each) into
/// `dst`; returns the bytes used. `TooLarge` if `dst` is too small.
pub(crate) fn pack(bufs: &[&[u8]], out_lens: &[u32], dst: &mut [u8]) -> Result<usize> {
    let too_large = crate::error::FastRpcError::TooLarge;
    let mut cur = 0usize;
    let mut put = |cur: &mut usize, bytes: &[u8], a: usize| -> Result<()> {
        let at = align(*cur, a).ok_or(too_large)?;
        let end = at.checked_add(bytes.len()).ok_or(too_large)?;
        let d = dst.get_mut(*cur..end).ok_or(too_large)?;
        d.fill(0);
        d[at - *cur..].copy_from_slice(bytes);
        *cur = end;
        Ok(())
    };
    for b in bufs {
        let len = u32::try_from(b.len()).map_err(|_| too_large)?;
        put(&mut cur, &len.to_le_bytes(), 4)?;
        if !b.is_empty() {
            put(&mut cur, b, 8)?;
        }
    }
    for l in out_lens {
        put(&mut cur, &l.to_le_bytes(), 4)?;
    }
    Ok(cur)
}

/// Unpack `ins.len()` buffers and `out_lens.len()` lengths from `src`. Returns bytes consumed.
pub(crate) fn unpack<'a>(
    src: &'a [u8],
    ins: &mut [&'a [u8]],
    out_lens: &mut [u32],
) -> core::result::Result<usize, ProtocolError> {
    let mut cur = 0usize;
    let word = |cur: &mut usize| -> core::result::Result<u32, ProtocolError> {
        let at = align(*cur, 4).ok_or(ProtocolError::BadLength)?;
        let b = src
            .get(at..at.checked_add(4).ok_or(ProtocolError::BadLength)?)
            .ok_or(ProtocolError::Truncated)?;
        *cur = at + 4;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    for slot in ins.iter_mut() {
        let len = word(&mut cur)? as usize;
        if len == 0 {
            *slot = &[];
            continue;
        }
        let at = align(cur, 8).ok_or(ProtocolError::BadLength)?;
        let end = at.checked_add(len).ok_or(ProtocolError::BadLength)?;
        *slot = src.get(at..end).ok_or(ProtocolError::BadLength)?;
        cur = end;
    }
    for l in out_lens.iter_mut() {
        *l = word(&mut cur)?;
    }
    Ok(cur)
}

/// An AP service reverse calls are dispatched to.
pub trait ReverseService {
    /// Serve `sc` on `handle`; `outs` are sized as the DSP asked. Returns the result code.
    fn invoke(&mut self, handle: u32, sc: Scalars, ins: &[&[u8]], outs: &mut [&mut [u8]]) -> i32;
}

/// The AP side of the listener loop. Buffers are allocated once at construction.
pub struct Listener<I: Invoker> {
    stub: listener::ListenerStub<I>,
    bufs: alloc::vec::Vec<u8>,
    prev: alloc::vec::Vec<u8>,
    scratch: alloc::vec::Vec<u8>,
    prev_len: usize,
    prev_ctx: u32,
    prev_result: i32,
}

impl<I: Invoker> Listener<I> {
    /// A listener calling through `invoker` with `buf_size`-byte request/reply buffers.
    pub fn new(invoker: I, buf_size: usize) -> Self {
        Listener {
            stub: listener::ListenerStub {
                invoker,
                handle: LISTENER_HANDLE,
            },
            bufs: alloc::vec![0; buf_size],
            prev: alloc::vec![0; buf_size],
            scratch: alloc::vec![0; buf_size],
            prev_len: 0,
            prev_ctx: 0,
            prev_result: 0,
        }
    }

    /// One turn: hand the previous reply over, wait for the next reverse request, serve it.
    /// Returns the served request's (handle, result).
    pub fn step(&mut self, svc: &mut dyn ReverseService) -> Result<(u32, i32)> {
        let (ctx, handle, sc, req) = self.stub.next2(
            self.prev_ctx,
            self.prev_result,
            &self.prev[..self.prev_len],
            &mut self.bufs,
        )?;
        let sc = Scalars(sc);
        self.prev_ctx = ctx;
        self.prev_len = 0;
        self.prev_result = self.serve(handle, sc, req as usize, svc);
        Ok((handle, self.prev_result))
    }

    fn serve(&mut self, handle: u32, sc: Scalars, req: usize, svc: &mut dyn ReverseService) -> i32 {
        let bad = aee::dsp(aee::EBADPARM);
        if req > self.bufs.len() {
            return aee::dsp(aee::EBUFFERTOOSMALL);
        }
        // Reverse calls carrying handles are refused (as the user library does).
        if sc.inhandles() + sc.outhandles() != 0
            || sc.inbufs() > MAX_REVERSE_BUFS
            || sc.outbufs() > MAX_REVERSE_BUFS
        {
            return bad;
        }
        let (ni, no) = (sc.inbufs(), sc.outbufs());
        let mut ins: [&[u8]; MAX_REVERSE_BUFS] = Default::default();
        let mut lens = [0u32; MAX_REVERSE_BUFS];
        if unpack(&self.bufs[..req], &mut ins[..ni], &mut lens[..no]).is_err() {
            return bad;
        }
        let total = lens[..no]
            .iter()
            .try_fold(0usize, |a, l| a.checked_add(*l as usize));
        if total.is_none_or(|t| t > self.scratch.len()) {
            return aee::dsp(aee::EBUFFERTOOSMALL);
        }
        let mut outs: [&mut [u8]; MAX_REVERSE_BUFS] = Default::default();
        let mut rest: &mut [u8] = &mut self.scratch[..];
        for (o, l) in outs.iter_mut().zip(&lens[..no]) {
            let (a, b) = core::mem::take(&mut rest).split_at_mut(*l as usize);
            *o = a;
            rest = b;
        }
        let r = svc.invoke(handle, sc, &ins[..ni], &mut outs[..no]);
        let out_refs: [&[u8]; MAX_REVERSE_BUFS] = core::array::from_fn(|k| &*outs[k]);
        match pack(&out_refs[..no], &[], &mut self.prev) {
            Ok(n) => {
                self.prev_len = n;
                r
            }
            Err(_) => aee::dsp(aee::EBUFFERTOOSMALL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_of_packing() {
        let mut d = [0xAAu8; 64];
        let n = pack(&[b"abc", b"", b"12345678"], &[16, 0], &mut d).unwrap();
        // 0: len 3; 8: "abc"; 12: len 0; 16: len 8; 24: bytes; 32: 16; 36: 0.
        assert_eq!(n, 40);
        assert_eq!(&d[0..4], &3u32.to_le_bytes());
        assert_eq!(&d[4..8], &[0; 4], "alignment padding zeroed");
        assert_eq!(&d[8..11], b"abc");
        assert_eq!(&d[12..16], &0u32.to_le_bytes());
        assert_eq!(&d[16..20], &8u32.to_le_bytes());
        assert_eq!(&d[24..32], b"12345678");
        assert_eq!(&d[32..36], &16u32.to_le_bytes());
        let mut ins: [&[u8]; 3] = Default::default();
        let mut lens = [0u32; 2];
        assert_eq!(unpack(&d[..n], &mut ins, &mut lens), Ok(40));
        assert_eq!(ins, [&b"abc"[..], &b""[..], &b"12345678"[..]]);
        assert_eq!(lens, [16, 0]);
    }

    #[test]
    fn hostile_lengths_are_errors() {
        let mut ins: [&[u8]; 1] = Default::default();
        let mut lens = [0u32; 0];
        let mut d = [0u8; 12];
        d[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            unpack(&d, &mut ins, &mut lens),
            Err(ProtocolError::BadLength)
        );
        assert_eq!(
            unpack(&d[..2], &mut ins, &mut lens),
            Err(ProtocolError::Truncated)
        );
        let mut d2 = [0u8; 12];
        d2[..4].copy_from_slice(&5u32.to_le_bytes());
        let mut ins2: [&[u8]; 1] = Default::default();
        assert_eq!(
            unpack(&d2, &mut ins2, &mut lens),
            Err(ProtocolError::BadLength)
        );
    }

    proptest! {
        #[test]
        fn roundtrip(bufs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
                     outs in proptest::collection::vec(any::<u32>(), 0..6)) {
            let refs: alloc::vec::Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
            let mut d = alloc::vec![0u8; 512];
            let n = pack(&refs, &outs, &mut d).unwrap();
            let mut ins: alloc::vec::Vec<&[u8]> = alloc::vec![&[]; refs.len()];
            let mut lens = alloc::vec![0u32; outs.len()];
            prop_assert_eq!(unpack(&d[..n], &mut ins, &mut lens), Ok(n));
            prop_assert_eq!(ins, refs);
            prop_assert_eq!(&lens, &outs);
            // Any truncation is an error, never a panic or a short read.
            if n > 0 {
                let mut ins2: alloc::vec::Vec<&[u8]> = alloc::vec![&[]; bufs.len()];
                let mut lens2 = alloc::vec![0u32; outs.len()];
                prop_assert!(unpack(&d[..n - 1], &mut ins2, &mut lens2).is_err());
            }
        }
    }
}
