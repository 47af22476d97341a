//! Fuzz entry points: one `fn(&[u8])` per parser of remote input. Each must never panic on any
//! input; the unit tests below run them over random bytes and over seeds taken from the golden
//! tests. (A cargo-fuzz crate can call these directly.)
//!
//! - [`invoke_response`]: the AP's receive path (response parse, context lookup/generation,
//!   late/duplicate/unknown accounting) with live contexts in the table,
//! - [`copy_out`]: the AP's read-back of DSP-written payload metadata (out lengths, fd list),
//! - [`payload_meta`]: the checked metadata reader for an arbitrary `sc`,
//! - [`scalars`]: the `sc` decode,
//! - [`reverse_unpack`]: reverse-RPC buffer unpacking,
//! - `dsp_message` (feature `sim`): the simulated DSP's decode of a message + payload,
//! - `skel` (feature `sim`): a generated skel's unmarshalling of arbitrary buffers.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;

use spin::Mutex;

use crate::channel::state::{Bank, ChannelConfig};
use crate::channel::Channel;
use crate::domain::Domain;
use crate::error::Result;
use crate::mem::{DmaHal, DmaRegion};
use crate::packet::PacketChannel;
use crate::session::Arg;
use crate::wire::payload::MetaView;
use crate::wire::scalars::Scalars;

struct NullLink;
impl PacketChannel for NullLink {
    fn send(&self, _msg: &[u8]) -> Result<()> {
        Ok(())
    }
    fn try_recv(&self, _buf: &mut [u8]) -> Option<usize> {
        None
    }
}

struct HeapRegion {
    iova: u64,
    data: Box<[core::sync::atomic::AtomicU8]>,
}
// SAFETY: `as_ptr` points at `data` (owned, never resized, atomic bytes; see `SimRegion`).
unsafe impl DmaRegion for HeapRegion {
    fn iova(&self) -> u64 {
        self.iova
    }
    fn va(&self) -> u64 {
        0x7f00_0000_0000 + self.iova
    }
    fn len(&self) -> usize {
        self.data.len()
    }
    fn as_ptr(&self) -> core::ptr::NonNull<u8> {
        core::ptr::NonNull::from(&self.data[..]).cast::<u8>()
    }
}

struct HeapHal(Mutex<u64>);
impl DmaHal for HeapHal {
    fn alloc(&self, _sid: u32, size: usize) -> Option<Arc<dyn DmaRegion>> {
        let size = crate::wire::align_up(size as u64, 4096)?;
        let mut n = self.0.lock();
        let iova = *n;
        *n += size;
        Some(Arc::new(HeapRegion {
            iova,
            data: crate::mem::zeroed_atomic_bytes(size as usize),
        }))
    }
}

fn channel() -> Channel {
    let cfg = ChannelConfig {
        domain: Domain::Adsp,
        banks: vec![Bank {
            sid: 1,
            nsessions: 1,
        }],
        contexts: 4,
        payloads_per_session: 4,
        payload_size: 4096,
        max_args: 4,
        secure: false,
    };
    Channel::new(
        cfg,
        Arc::new(NullLink),
        Arc::new(HeapHal(Mutex::new(0x1000))),
    )
    .expect("static config is valid")
}

/// Datagrams (each prefixed by a length byte) fed to the receive path while three calls are in
/// flight (one already abandoned). Ids are derived so some inputs hit live contexts.
pub fn invoke_response(data: &[u8]) {
    let ch = channel();
    let Ok(s) = ch.open_session(no_wait()) else {
        return;
    };
    let mut tickets = alloc::vec::Vec::new();
    for _ in 0..3 {
        if let Ok(t) = s.start(
            0x20,
            2,
            &[Arg::In(b"abcd"), Arg::OutLen { addr: 0, len: 8 }],
            0,
        ) {
            tickets.push(t);
        }
    }
    if let Some(t) = tickets.pop() {
        s.abandon(t);
    }
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize).min(tail.len());
        let (pkt, tail) = tail.split_at(n);
        ch.handle_packet(pkt);
        // Also the same bytes with a live id planted (slot 1..3, generation 0..2, PD 1).
        if pkt.len() >= 16 {
            let mut p = [0u8; 16];
            p.copy_from_slice(&pkt[..16]);
            let slot = u64::from(p[0] % 3 + 1);
            let id = (u64::from(p[1] % 3) << 12) | (slot << 4) | 1;
            p[..8].copy_from_slice(&id.to_le_bytes());
            ch.handle_packet(&p);
        }
        rest = tail;
    }
    for t in tickets {
        let mut out = [0u8; 8];
        let _ = s.poll(&t);
        let _ = s.status(&t);
        let _ = s.read_out(&t, 0, &mut out);
        s.finish(t);
    }
    let st = ch.stats();
    assert!(st.pool_free <= st.pool_capacity);
}

/// The DSP rewrites the payload metadata (`data`) and answers; the AP reads the out-buffers
/// back and walks the fd list. Lengths are checked, fds checked, nothing panics.
pub fn copy_out(data: &[u8]) {
    let ch = channel();
    let Ok(s) = ch.open_session(no_wait()) else {
        return;
    };
    let Ok(shared) = s.alloc_shared(4096) else {
        return;
    };
    let mut out = [0u8; 32];
    let Ok(t) = s.start(
        0x20,
        3,
        &[
            Arg::In(b"0123456789"),
            Arg::Out(&mut out),
            Arg::InHandle {
                buf: &shared,
                offset: 0,
                len: 16,
            },
        ],
        0,
    ) else {
        return;
    };
    // Overwrite the payload as a hostile DSP would.
    {
        let _ = ch.inner.ctx.with(&t, |_, c| {
            if let Some(p) = c.payload.as_ref() {
                let r = p.region();
                let n = data.len().min(r.len());
                let _ = crate::mem::write_at(&**r, 0, &data[..n]);
            }
            Ok(())
        });
    }
    // Answer it: slot 1, the generation of the ticket, PD 1.
    let id = crate::channel::context::CtxId::new(t.slot() as u8 + 1, t.generation(), 1);
    let mut rsp = [0u8; 16];
    rsp[..8].copy_from_slice(&id.0.to_le_bytes());
    ch.handle_packet(&rsp);
    let mut dst = [0u8; 32];
    let _ = s.read_out(&t, 0, &mut dst);
    let _ = s.read_out(&t, 5, &mut dst);
    s.finish(t);
    let st = s.stats();
    assert_eq!(st.pool_free, st.pool_capacity);
}

/// The metadata reader: first 4 bytes are `sc`, the rest the metadata.
pub fn payload_meta(data: &[u8]) {
    let Some((sc, meta)) = data.split_first_chunk::<4>() else {
        return;
    };
    let sc = Scalars(u32::from_le_bytes(*sc) & 0x1f0f_0fff);
    if let Ok(v) = MetaView::parse(sc, meta) {
        for i in 0..sc.len() + 2 {
            let _ = v.rpra(i);
            let _ = v.dma(i);
            let _ = v.page_of(i);
        }
        let _ = v.for_each_fd(|_| {});
        let _ = v.fd(16);
    }
}

/// Reverse-RPC unpacking: byte 0 = in-buffer count, byte 1 = out-length count, rest = packed
/// data (as a hostile DSP would return it from `next2`).
pub fn reverse_unpack(data: &[u8]) {
    let Some((&[ni, no], rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let (ni, no) = (
        ni as usize % (crate::reverse::MAX_REVERSE_BUFS + 1),
        no as usize % (crate::reverse::MAX_REVERSE_BUFS + 1),
    );
    let mut ins: [&[u8]; crate::reverse::MAX_REVERSE_BUFS] = Default::default();
    let mut lens = [0u32; crate::reverse::MAX_REVERSE_BUFS];
    if let Ok(n) = crate::reverse::unpack(rest, &mut ins[..ni], &mut lens[..no]) {
        assert!(n <= rest.len());
        let total: usize = ins[..ni].iter().map(|b| b.len()).sum();
        assert!(total <= rest.len());
    }
}

/// The scalars decode (total over every word).
pub fn scalars(data: &[u8]) {
    if let Some(w) = data.first_chunk::<4>() {
        let sc = Scalars(u32::from_le_bytes(*w));
        let again = Scalars::makex(
            sc.attr(),
            sc.method(),
            sc.inbufs() as u32,
            sc.outbufs() as u32,
            sc.inhandles() as u32,
            sc.outhandles() as u32,
        );
        assert_eq!(again, sc);
        assert!(sc.len() <= 255 + 255 + 15 + 15);
    }
}

/// The simulated DSP's decode: 40 bytes of message (its `addr` redirected into a mapped
/// region with the rest of the input as payload contents when the first byte is even). Feature
/// `sim`.
#[cfg(feature = "sim")]
pub fn dsp_message(data: &[u8]) {
    use crate::sim::{SimBus, SimDsp, SimLink};
    let Some((msg, payload)) = data.split_first_chunk::<40>() else {
        return;
    };
    let bus = SimBus::new();
    let link = SimLink::new();
    let region = bus.alloc(1, 8192).expect("bus has room");
    let n = payload.len().min(region.len());
    let _ = crate::mem::write_at(&*region, 0, &payload[..n]);
    let mut msg = *msg;
    if msg[0] % 2 == 0 {
        let addr = region.iova() | 1 << 32;
        msg[24..32].copy_from_slice(&addr.to_le_bytes());
        msg[32..40].copy_from_slice(&8192u64.to_le_bytes());
    }
    let dsp = SimDsp::spawn(link, bus);
    dsp.add_object(
        crate::sim::objects::CALC_HANDLE,
        Box::new(crate::sim::objects::SkelObject::new(
            crate::sim::objects::Calculator,
            crate::sim::objects::calculator::calculator_skel_invoke::<
                crate::sim::objects::Calculator,
            >,
        )),
    );
    // Route to handle 1 (process control) or the calculator too.
    let _ = dsp.execute_datagram(&msg);
    msg[16..20].copy_from_slice(&crate::sim::objects::CALC_HANDLE.to_le_bytes());
    let _ = dsp.execute_datagram(&msg);
    msg[16..20].copy_from_slice(&1u32.to_le_bytes());
    msg[0..4].copy_from_slice(&0i32.to_le_bytes());
    let _ = dsp.execute_datagram(&msg);
}

/// A generated skel over arbitrary scalars and buffers: first 4 bytes `sc`, then the buffers
/// split by length bytes. Feature `sim`.
#[cfg(feature = "sim")]
pub fn skel(data: &[u8]) {
    use crate::sim::objects::{calculator, Calculator};
    let Some((sc, mut rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let sc = Scalars(u32::from_le_bytes(*sc));
    let mut bufs: std::vec::Vec<std::vec::Vec<u8>> = std::vec::Vec::new();
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize).min(tail.len());
        bufs.push(tail[..n].to_vec());
        rest = &tail[n..];
    }
    let ni = sc.inbufs().min(bufs.len());
    let (ins, outs) = bufs.split_at_mut(ni);
    let ins: std::vec::Vec<&[u8]> = ins.iter().map(|b| &b[..]).collect();
    let mut outs: std::vec::Vec<&mut [u8]> = outs.iter_mut().map(|b| &mut b[..]).collect();
    let _ = calculator::calculator_skel_invoke(&mut Calculator, sc, &ins, &mut outs);
}

/// The fuzz entry points never block: a session that gives up at once.
fn no_wait() -> crate::CallWait {
    crate::CallWait::new(
        alloc::sync::Arc::new(fwipc_transport_api::ManualClock::new()),
        core::time::Duration::ZERO,
        fwipc_transport_api::Wait::Poll,
    )
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;

    /// xorshift64*: deterministic random inputs without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn bytes(&mut self, max: usize) -> std::vec::Vec<u8> {
            let n = (self.next() as usize) % (max + 1);
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn run(f: fn(&[u8]), iters: usize, max: usize, seeds: &[&[u8]]) {
        for s in seeds {
            f(s);
        }
        // FASTRPC_FUZZ_SCALE multiplies the iterations (longer local runs); the seed too.
        let scale: usize = std::env::var("FASTRPC_FUZZ_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ scale as u64);
        for _ in 0..iters * scale {
            f(&r.bytes(max));
        }
    }

    /// Seeds from the golden tests: the worked example's response and metadata.
    const GOLDEN_RSP: [u8; 17] = [16, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    const GOLDEN_SC: [u8; 4] = [0x10, 0x01, 0x02, 0x05];

    #[test]
    fn fuzz_invoke_response() {
        run(
            invoke_response,
            300,
            200,
            &[&GOLDEN_RSP, &[8, 1, 2, 3], &[]],
        );
    }

    #[test]
    fn fuzz_copy_out() {
        let mut seed = vec![0u8; 544];
        seed[16 + 8] = 0xff; // rpra[1].len huge
        seed[160] = 7; // fd list: an fd we never passed
        run(copy_out, 300, 700, &[&seed]);
    }

    #[test]
    fn fuzz_payload_meta() {
        let mut seed = GOLDEN_SC.to_vec();
        seed.resize(4 + 544, 0);
        run(payload_meta, 2000, 700, &[&seed]);
    }

    #[test]
    fn fuzz_reverse_unpack() {
        let mut seed = vec![3u8, 2];
        let mut packed = [0u8; 64];
        let n = crate::reverse::pack(&[b"abc", b"", b"12345678"], &[16, 0], &mut packed).unwrap();
        seed.extend_from_slice(&packed[..n]);
        run(reverse_unpack, 3000, 200, &[&seed]);
    }

    #[test]
    fn fuzz_scalars() {
        run(scalars, 2000, 8, &[&GOLDEN_SC]);
    }

    #[test]
    fn fuzz_dsp_message() {
        let mut seed = vec![0u8; 40];
        seed[20..24].copy_from_slice(&GOLDEN_SC);
        run(dsp_message, 150, 700, &[&seed]);
    }

    /// A hostile DSP keeps rewriting the payload region (metadata, lengths, inline data) from
    /// another thread, with no lock, while the AP reads the answer back and walks the fd list.
    /// The AP copies the metadata into its private shadow before parsing and copies data out
    /// with atomic byte loads, so there is no reference to racing memory; no result is longer
    /// than what was asked.
    #[test]
    fn hostile_dsp_rewrites_payload_while_ap_reads_out() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let ch = channel();
        let s = ch.open_session(no_wait()).unwrap();
        let mut out = [0u8; 24];
        let t = s
            .start(0x20, 2, &[Arg::In(b"0123456789"), Arg::Out(&mut out)], 0)
            .unwrap();
        let region = ch
            .inner
            .ctx
            .with(&t, |_, c| Ok(c.payload.as_ref().unwrap().region().clone()))
            .unwrap();
        let id = crate::channel::context::CtxId::new(t.slot() as u8 + 1, t.generation(), 1);
        let mut rsp = [0u8; 16];
        rsp[..8].copy_from_slice(&id.0.to_le_bytes());
        ch.handle_packet(&rsp);
        assert!(s.poll(&t).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicUsize::new(0));
        let dsp = {
            let (stop, writes, region) = (stop.clone(), writes.clone(), region.clone());
            std::thread::spawn(move || {
                let mut r = Rng(0x5eed);
                let mut junk = [0u8; 512];
                // Relaxed: a stop flag and a progress counter for the test, no data.
                while !stop.load(Ordering::Relaxed) {
                    for b in junk.iter_mut() {
                        *b = r.next() as u8;
                    }
                    crate::mem::write_at(&*region, 0, &junk).unwrap();
                    // Relaxed: progress counter.
                    writes.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let mut reads = 0usize;
        // Relaxed: progress counter (the loop only needs to overlap the writer).
        while reads < 2000 || writes.load(Ordering::Relaxed) < 200 {
            let mut dst = [0u8; 24];
            if let Ok(n) = s.read_out(&t, 0, &mut dst) {
                assert!(n <= 24, "a DSP length above what was asked must fail");
            }
            reads += 1;
        }
        // Relaxed: the stop flag; `join` orders the counter read below.
        stop.store(true, Ordering::Relaxed);
        dsp.join().unwrap();
        // Relaxed: after `join`.
        assert!(writes.load(Ordering::Relaxed) >= 200);
        s.finish(t);
        drop(region);
        let st = s.stats();
        assert_eq!(st.pool_free, st.pool_capacity);
    }

    #[test]
    fn fuzz_skel() {
        run(
            skel,
            2000,
            120,
            &[&[0, 0, 1, 3, 8, 1, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 0]],
        );
    }
}
