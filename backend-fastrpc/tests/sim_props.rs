//! End-to-end property: random argument sets (inline and shared in/out buffers, overlapping
//! inline in-buffers, zero lengths, handles) go through the layout engine, the simulated DSP's
//! decode through the SMMU, a mirror object, and the AP's copy-out: every byte arrives.

use std::time::Duration;

use fwipc_fastrpc::sim::dsp::{CallInfo, DspObject};
use fwipc_fastrpc::sim::fixture::SimSystem;
use fwipc_fastrpc::{Arg, Domain, SharedBuf};
use fwipc_fastrpc::{Bank, ChannelConfig};
use fwipc_transport_api::Completion;
use proptest::prelude::*;

const MIRROR: u32 = 0x23;

/// FNV-1a over every in-buffer, in order.
fn digest(ins: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in ins {
        for x in *b {
            h = (h ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3);
        }
        h = (h ^ 0xff).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn mirror_byte(h: u64, k: usize, j: usize) -> u8 {
    (h as u8)
        .wrapping_add((k as u8).wrapping_mul(31))
        .wrapping_add(j as u8)
        ^ (h >> 8) as u8
}

struct Mirror;
impl DspObject for Mirror {
    fn invoke(&mut self, c: &CallInfo, ins: &[Vec<u8>], outs: &mut [Vec<u8>]) -> i32 {
        let refs: Vec<&[u8]> = ins.iter().map(|v| &v[..]).collect();
        let h = digest(&refs) ^ c.in_fds.len() as u64;
        for (k, o) in outs.iter_mut().enumerate() {
            for (j, b) in o.iter_mut().enumerate() {
                *b = mirror_byte(h, k, j);
            }
        }
        0
    }
}

#[derive(Debug, Clone)]
enum InSpec {
    Inline(usize, usize), // start, len in the in-arena (may overlap others)
    Shared(usize, usize), // offset, len in the shared in-buffer
}

#[derive(Debug, Clone)]
enum OutSpec {
    Inline(usize),
    Shared(usize),
}

fn arb_in() -> impl Strategy<Value = InSpec> {
    prop_oneof![
        (0usize..600, 0usize..300).prop_map(|(s, l)| InSpec::Inline(s, l)),
        (0usize..3000, 0usize..1000).prop_map(|(s, l)| InSpec::Shared(s, l)),
    ]
}

fn arb_out() -> impl Strategy<Value = OutSpec> {
    prop_oneof![
        (0usize..300).prop_map(OutSpec::Inline),
        (0usize..900).prop_map(OutSpec::Shared)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn every_byte_arrives(ins in proptest::collection::vec(arb_in(), 0..5),
                          outs in proptest::collection::vec(arb_out(), 0..4),
                          handles in 0usize..3) {
        let cfg = ChannelConfig::new(Domain::Cdsp)
        .with_banks(vec![Bank::new(2, 1)])
        .with_contexts(8)
        .with_payloads(2, 16384)
        .with_max_args(16);
        let sys = SimSystem::new(cfg, Completion::Interrupt);
        sys.dsp.add_object(MIRROR, Box::new(Mirror));
        let s = sys.attached_session();
        let arena: Vec<u8> = (0..1000u32).map(|i| (i * 13 + 7) as u8).collect();
        let shared_in: SharedBuf = s.alloc_shared(4096).unwrap();
        let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 5 + 1) as u8).collect();
        shared_in.write(0, &pattern).unwrap();
        let shared_out = s.alloc_shared(4096).unwrap();
        let hbuf = s.alloc_shared(4096).unwrap();

        // Expected digest from the AP's view of the in-buffers.
        let in_views: Vec<&[u8]> = ins.iter().map(|i| match *i {
            InSpec::Inline(st, l) => &arena[st..st + l],
            InSpec::Shared(o, l) => &pattern[o..o + l],
        }).collect();
        let h = digest(&in_views) ^ handles as u64;

        let mut out_store = vec![0u8; 2000];
        let mut args: Vec<Arg<'_>> = Vec::new();
        for i in &ins {
            args.push(match *i {
                InSpec::Inline(st, l) => Arg::In(&arena[st..st + l]),
                InSpec::Shared(o, l) => Arg::InShared { buf: &shared_in, offset: o, len: l },
            });
        }
        let mut rest: &mut [u8] = &mut out_store;
        let mut shared_off = 0usize;
        let mut shared_ranges = Vec::new();
        for o in &outs {
            match *o {
                OutSpec::Inline(l) => {
                    let (a, b) = std::mem::take(&mut rest).split_at_mut(l);
                    args.push(Arg::Out(a));
                    rest = b;
                }
                OutSpec::Shared(l) => {
                    args.push(Arg::OutShared { buf: &shared_out, offset: shared_off, len: l });
                    shared_ranges.push((shared_off, l));
                    shared_off += l + 3; // odd gaps between shared outs
                }
            }
        }
        for _ in 0..handles {
            args.push(Arg::InHandle { buf: &hbuf, offset: 0, len: 64 });
        }
        s.with_wait(sys.wait().with_timeout(Duration::from_secs(5))).invoke(MIRROR, 2, &mut args)
            .unwrap();
        // Check every out-buffer against the mirror function.
        let mut k = 0usize;
        let mut sr = shared_ranges.iter();
        for a in &args {
            match a {
                Arg::Out(d) => {
                    for (j, b) in d.iter().enumerate() {
                        prop_assert_eq!(*b, mirror_byte(h, k, j), "inline out {} byte {}", k, j);
                    }
                    k += 1;
                }
                Arg::OutShared { len, .. } => {
                    let (off, l) = *sr.next().unwrap();
                    prop_assert_eq!(l, *len);
                    let mut got = vec![0u8; l];
                    shared_out.read(off, &mut got).unwrap();
                    for (j, b) in got.iter().enumerate() {
                        prop_assert_eq!(*b, mirror_byte(h, k, j), "shared out {} byte {}", k, j);
                    }
                    k += 1;
                }
                _ => {}
            }
        }
        prop_assert_eq!(sys.bus.faults(), 0);
        let st = s.stats();
        prop_assert_eq!(st.pool_free, st.pool_capacity);
    }
}
