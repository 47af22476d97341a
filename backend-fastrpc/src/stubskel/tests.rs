use super::*;
use crate::error::{aee, FastRpcError};
use crate::session::arg::scalars_for;
use crate::wire::scalars::Scalars;
use core::cell::Cell;
use proptest::prelude::*;

crate::fastrpc_interface! {
    /// Everything the generator supports.
    pub interface kitchen {
        stub KitchenStub;
        skel KitchenImpl, kitchen_skel_invoke;
        /// No arguments at all.
        fn ping = 2 (in {} in_bufs {} out {} out_bufs {});
        /// Mixed scalars (u8 then u64: alignment padding in primIn).
        fn mix = 3 (in { a: u8, b: u64, c: i16 } in_bufs {} out { x: u64, y: u8 } out_bufs {});
        /// Buffers both ways.
        fn xform = 4 (in { k: u8 } in_bufs { src, extra } out { sum: u32 } out_bufs { dst });
        /// Beyond the 5-bit method field: the method-31 escape.
        fn far = 45 (in { v: i32 } in_bufs {} out { w: i32 } out_bufs {});
    }
}

crate::fastrpc_interface! {
    /// `adsp_listener.next2` (docs/protocols/fastrpc.md §9): primIn 16 B, 1 in-seq, primROut 16 B,
    /// 1 out-seq.
    pub interface listener {
        stub ListenerStub;
        skel ListenerImpl, listener_skel_invoke;
        /// Next reverse-RPC request.
        fn next2 = 4 (
            in { prev_ctx: u32, prev_result: i32 } in_bufs { prev_bufs }
            out { ctx: u32, handle: u32, sc: u32, bufs_len_req: u32 } out_bufs { bufs });
    }
}

struct Kitchen;
impl kitchen::KitchenImpl for Kitchen {
    fn ping(&mut self) -> core::result::Result<(), i32> {
        Ok(())
    }
    fn mix(&mut self, a: u8, b: u64, c: i16) -> core::result::Result<(u64, u8), i32> {
        Ok((b ^ u64::from(a), (c as u8).wrapping_add(1)))
    }
    fn xform(
        &mut self,
        k: u8,
        src: &[u8],
        extra: &[u8],
        dst: &mut [u8],
    ) -> core::result::Result<(u32,), i32> {
        if dst.len() < src.len() {
            return Err(aee::dsp(aee::EBUFFERTOOSMALL));
        }
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s ^ k;
        }
        Ok((src.iter().chain(extra).map(|b| u32::from(*b)).sum(),))
    }
    fn far(&mut self, v: i32) -> core::result::Result<(i32,), i32> {
        Ok((v.wrapping_neg(),))
    }
}

/// An in-process invoker: checks the scalars the stub built and runs the skel on the same
/// buffers (what the DSP would see after the copy).
struct Loop<F: Fn(Scalars, &[&[u8]], &mut [&mut [u8]]) -> i32> {
    skel: F,
    last_sc: Cell<u32>,
}

impl<F: Fn(Scalars, &[&[u8]], &mut [&mut [u8]]) -> i32> Invoker for Loop<F> {
    fn invoke(&self, _h: u32, method: u32, args: &mut [Arg<'_>]) -> crate::Result<()> {
        let sc = scalars_for(method, args)?;
        self.last_sc.set(sc.0);
        let mut ins: Vec<&[u8]> = Vec::new();
        let mut outs: Vec<&mut [u8]> = Vec::new();
        for a in args.iter_mut() {
            match a {
                Arg::In(d) => ins.push(d),
                Arg::Out(d) => outs.push(d),
                _ => unreachable!("stubs only use In/Out"),
            }
        }
        match (self.skel)(sc, &ins, &mut outs) {
            0 => Ok(()),
            r => Err(FastRpcError::Aee(crate::AeeError(r))),
        }
    }
}

type SkelCall = fn(Scalars, &[&[u8]], &mut [&mut [u8]]) -> i32;

fn kitchen_stub() -> kitchen::KitchenStub<Loop<SkelCall>> {
    kitchen::KitchenStub {
        invoker: Loop {
            skel: |sc, i: &[&[u8]], o: &mut [&mut [u8]]| {
                kitchen::kitchen_skel_invoke(&mut Kitchen, sc, i, o)
            },
            last_sc: Cell::new(0),
        },
        handle: 0x30,
    }
}

#[test]
fn listener_next2_encodes_like_qaic() {
    struct L;
    impl listener::ListenerImpl for L {
        fn next2(
            &mut self,
            pc: u32,
            pr: i32,
            pb: &[u8],
            bufs: &mut [u8],
        ) -> core::result::Result<(u32, u32, u32, u32), i32> {
            bufs[..pb.len()].copy_from_slice(pb);
            Ok((pc + 1, 3, 0x0402_0200, pr as u32))
        }
    }
    let stub = listener::ListenerStub {
        invoker: Loop {
            skel: |sc, i: &[&[u8]], o: &mut [&mut [u8]]| {
                listener::listener_skel_invoke(&mut L, sc, i, o)
            },
            last_sc: Cell::new(0),
        },
        handle: 3,
    };
    let mut bufs = [0u8; 8];
    let r = stub.next2(7, 9, b"abc", &mut bufs).unwrap();
    assert_eq!(
        stub.invoker.last_sc.get(),
        0x0402_0200,
        "MAKEX(0,4,2,2,0,0)"
    );
    assert_eq!(r, (8, 3, 0x0402_0200, 9));
    assert_eq!(&bufs[..3], b"abc");
    // primIn = prevCtx, prevResult, prevbufsLen, bufsLen = 16 B; primROut = 16 B.
    assert_eq!(packed_len(false, &[(4, 4), (4, 4)], 2), 16);
    assert_eq!(packed_len(false, &[(4, 4); 4], 0), 16);
}

#[test]
fn every_shape_roundtrips_and_escape_is_used() {
    let s = kitchen_stub();
    s.ping().unwrap();
    assert_eq!(s.invoker.last_sc.get(), Scalars::makex(0, 2, 0, 0, 0, 0).0);
    assert_eq!(s.mix(1, 0x100, -1).unwrap(), (0x101, 0));
    // primIn: u8 @0, u64 @8, i16 @16 → 18, rounded to 8 → 24; no buffers.
    assert_eq!(packed_len(false, &[(1, 1), (8, 8), (2, 2)], 0), 24);
    let mut dst = [0u8; 4];
    assert_eq!(s.xform(0xff, &[1, 2, 3], &[10], &mut dst).unwrap(), (16,));
    assert_eq!(dst, [0xfe, 0xfd, 0xfc, 0]);
    assert_eq!(s.invoker.last_sc.get(), Scalars::makex(0, 4, 3, 2, 0, 0).0);
    assert_eq!(s.far(5).unwrap(), (-5,));
    assert_eq!(
        Scalars(s.invoker.last_sc.get()).method(),
        31,
        "method 45 escapes to 31"
    );
    let mut small = [0u8; 1];
    assert_eq!(
        s.xform(0, &[1, 2], &[], &mut small),
        Err(FastRpcError::Aee(crate::AeeError(aee::dsp(
            aee::EBUFFERTOOSMALL
        ))))
    );
}

#[test]
fn skel_checks_counts_sizes_and_methods() {
    let mut k = Kitchen;
    let unsupported = aee::dsp(aee::EUNSUPPORTED);
    let bad = aee::dsp(aee::EBADPARM);
    // Unknown method.
    assert_eq!(
        kitchen::kitchen_skel_invoke(&mut k, Scalars::makex(0, 9, 0, 0, 0, 0), &[], &mut []),
        unsupported
    );
    // ping with an extra buffer.
    assert_eq!(
        kitchen::kitchen_skel_invoke(&mut k, Scalars::makex(0, 2, 1, 0, 0, 0), &[&[0]], &mut []),
        bad
    );
    // mix with a short primIn.
    let mut po = [0u8; 16];
    assert_eq!(
        kitchen::kitchen_skel_invoke(
            &mut k,
            Scalars::makex(0, 3, 1, 1, 0, 0),
            &[&[0; 8]],
            &mut [&mut po]
        ),
        bad
    );
    // Escape without the id word, and an escaped id sent directly.
    assert_eq!(
        kitchen::kitchen_skel_invoke(&mut k, Scalars::makex(0, 31, 0, 0, 0, 0), &[], &mut []),
        bad
    );
    // xform whose primIn lengths disagree with the buffers.
    let mut pin = [0u8; 16];
    let mut c = put(&mut pin, 0, 0u8);
    c = put(&mut pin, c, 5u32);
    c = put(&mut pin, c, 0u32);
    let _ = put(&mut pin, c, 2u32);
    let mut po = [0u8; 4];
    let mut dst = [0u8; 2];
    assert_eq!(
        kitchen::kitchen_skel_invoke(
            &mut k,
            Scalars::makex(0, 4, 3, 2, 0, 0),
            &[&pin, &[1, 2], &[]],
            &mut [&mut po, &mut dst]
        ),
        bad
    );
}

proptest! {
    #[test]
    fn stub_skel_roundtrip(a in any::<u8>(), b in any::<u64>(), c in any::<i16>(), v in any::<i32>(),
                           k in any::<u8>(), src in proptest::collection::vec(any::<u8>(), 0..64),
                           extra in proptest::collection::vec(any::<u8>(), 0..8)) {
        let s = kitchen_stub();
        prop_assert_eq!(s.mix(a, b, c).unwrap(), (b ^ u64::from(a), (c as u8).wrapping_add(1)));
        prop_assert_eq!(s.far(v).unwrap(), (v.wrapping_neg(),));
        let mut dst = vec![0u8; src.len()];
        let (sum,) = s.xform(k, &src, &extra, &mut dst).unwrap();
        prop_assert_eq!(sum, src.iter().chain(&extra).map(|x| u32::from(*x)).sum::<u32>());
        prop_assert!(dst.iter().zip(&src).all(|(d, x)| *d == x ^ k));
    }
}
