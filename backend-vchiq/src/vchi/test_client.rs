//! The ARM side of `vchiq_test` (docs/protocols/vchiq.md §8) over any [`ServiceLink`]/[`BulkLink`]:
//! ping (async/oneway/sync round trips), ctrl (ECHO messages, verified), bulk echo (CONFIG then
//! verified block round trips), the `'func'` Part B message/bulk script, and the `'fun2'` alignment
//! sub-tests. Each routine returns a typed error on the first deviation.
//!
//! Timing (µs per iteration) is the caller's business: these routines do not read a clock.

use alloc::vec;
use alloc::vec::Vec;

use crate::error::VchiqError;
use zerocopy::little_endian::I32;
use zerocopy::IntoBytes;

use super::error::VchiError;
use super::link::{BulkLink, BulkPipeline, ServiceLink, MAX_MSG_SIZE};
use super::test_wire::FUNC_MSG;
use super::test_wire::{
    bulk_pattern, ctrl_message, first_mismatch, fun2_pattern, EchoMagic, Fun2Params, GuardedBuf,
    TestParams, SYNC_REPLY,
};

/// The (async, oneway) pairs of `vchiq_test -p`, each with its iteration divisor.
pub const PING_PAIRS: &[(u32, u32, u32)] = &[
    (0, 0, 1),
    (0, 0, 1),
    (1, 0, 1),
    (2, 0, 1),
    (10, 0, 1),
    (0, 1, 1),
    (0, 2, 1),
    (0, 10, 1),
    (10, 10, 1),
    (100, 0, 10),
    (0, 100, 10),
    (100, 100, 10),
    (200, 0, 10),
    (0, 200, 10),
    (200, 200, 10),
    (400, 400, 20),
    (1000, 0, 50),
    (0, 1000, 50),
    (1000, 1000, 50),
];

/// The message sizes of the ping test. Size 0 cannot carry the magic word, so it is sent as the
/// 4-byte magic alone (our reading; vchiq_test's exact 0-size framing is not documented, see
/// docs/protocols/vchiq.md §8).
pub const PING_SIZES: &[usize] = &[0, 1024, 2048, MAX_MSG_SIZE];

/// What a routine exchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exchanged {
    /// DATA messages sent.
    pub sent: u64,
    /// DATA messages received (all verified).
    pub received: u64,
    /// Bulk bytes transmitted.
    pub bulk_tx_bytes: u64,
    /// Bulk bytes received (all verified).
    pub bulk_rx_bytes: u64,
}

fn expect_reply<L: ServiceLink>(
    link: &mut L,
    buf: &mut [u8],
    want: &[u8],
    iteration: u32,
) -> Result<(), VchiError> {
    let n = link.recv(buf)?;
    if let Some(off) = first_mismatch(&buf[..n], want) {
        if n > 4 && buf[..n].starts_with(b"vchiq_test") {
            return Err(VchiError::RemoteError);
        }
        let offset = if n != want.len() {
            u32::MAX
        } else {
            off as u32
        };
        return Err(VchiError::Verify { iteration, offset });
    }
    Ok(())
}

/// One ping round: `asyncs` ASYNC and `oneways` ONEWAY messages, then a SYNC; then collect the
/// `asyncs` empty replies and the SYNC's `""`, `iters` times.
pub fn ping<L: ServiceLink>(
    link: &mut L,
    asyncs: u32,
    oneways: u32,
    iters: u32,
) -> Result<Exchanged, VchiError> {
    let mut x = Exchanged::default();
    let mut buf = [0u8; 8];
    for it in 0..iters {
        for _ in 0..asyncs {
            link.send(&EchoMagic::Async.bytes())?;
        }
        for _ in 0..oneways {
            link.send(&EchoMagic::OneWay.bytes())?;
        }
        link.send(&EchoMagic::Sync.bytes())?;
        x.sent += u64::from(asyncs + oneways + 1);
        for _ in 0..asyncs {
            expect_reply(link, &mut buf, &[], it)?;
        }
        expect_reply(link, &mut buf, SYNC_REPLY, it)?;
        x.received += u64::from(asyncs + 1);
    }
    Ok(x)
}

/// The whole `-p` pair table with `iters` base iterations (each pair runs `iters / divisor`,
/// at least once).
pub fn ping_suite<L: ServiceLink>(link: &mut L, iters: u32) -> Result<Exchanged, VchiError> {
    let mut total = Exchanged::default();
    for &(a, o, div) in PING_PAIRS {
        let x = ping(link, a, o, (iters / div).max(1))?;
        total.sent += x.sent;
        total.received += x.received;
    }
    for &size in PING_SIZES {
        let x = ctrl(link, size.max(4), iters)?;
        total.sent += x.sent;
        total.received += x.received;
    }
    Ok(total)
}

/// `-c`: `iters` ECHO messages of `blocksize` bytes (≥ 4), each echo verified byte for byte.
pub fn ctrl<L: ServiceLink>(
    link: &mut L,
    blocksize: usize,
    iters: u32,
) -> Result<Exchanged, VchiError> {
    if !(4..=MAX_MSG_SIZE).contains(&blocksize) {
        return Err(VchiError::InvalidArgument);
    }
    let mut x = Exchanged::default();
    let mut buf = vec![0u8; MAX_MSG_SIZE];
    for it in 0..iters {
        let m = ctrl_message(it, blocksize);
        link.send(&m)?;
        x.sent += 1;
        expect_reply(link, &mut buf, &m, it)?;
        x.received += 1;
    }
    Ok(x)
}

/// `-b`: CONFIG (server echoes every block), then `iters` blocks of `blocksize` bytes are
/// transmitted and received back, each verified against the `((0x80|i)<<24)+j` pattern.
pub fn bulk_echo<L: BulkLink>(
    link: &mut L,
    blocksize: usize,
    iters: u32,
) -> Result<Exchanged, VchiError> {
    if blocksize == 0 {
        return Err(VchiError::InvalidArgument);
    }
    let mut x = Exchanged::default();
    let cfg = TestParams::bulk(blocksize as u32, iters, true);
    link.send(cfg.as_bytes())?;
    x.sent += 1;
    let mut small = [0u8; 64];
    expect_reply(link, &mut small, SYNC_REPLY, 0)?;
    x.received += 1;
    // Two buffers per direction, as vchiq_test keeps 2 tx + 2 rx in flight.
    let mut tx = [vec![0u8; blocksize], vec![0u8; blocksize]];
    bulk_pattern(0, &mut tx[0]);
    bulk_pattern(1, &mut tx[1]);
    let mut rx = vec![0u8; blocksize];
    for it in 0..iters {
        let b = &tx[(it % 2) as usize];
        link.bulk_transmit(b)?;
        x.bulk_tx_bytes += blocksize as u64;
        rx.fill(0);
        let n = link.bulk_receive(&mut rx)?;
        if let Some(off) = first_mismatch(&rx[..n], b) {
            return Err(VchiError::Verify {
                iteration: it,
                offset: off as u32,
            });
        }
        x.bulk_rx_bytes += n as u64;
    }
    Ok(x)
}

/// `-b` as vchiq_test runs it: CONFIG, then 2 transmits and 2 receives kept in flight (each
/// re-queued when it completes) until `iters` blocks went each way; block `i` carries the pattern
/// of buffer `i % 2` and must come back intact.
pub fn bulk_echo_pipelined<L: BulkPipeline>(
    link: &mut L,
    blocksize: usize,
    iters: u32,
) -> Result<Exchanged, VchiError> {
    if blocksize == 0 {
        return Err(VchiError::InvalidArgument);
    }
    let mut x = Exchanged::default();
    link.send(TestParams::bulk(blocksize as u32, iters, true).as_bytes())?;
    x.sent += 1;
    let mut small = [0u8; 64];
    expect_reply(link, &mut small, SYNC_REPLY, 0)?;
    x.received += 1;
    let pattern = |i: u32| {
        let mut b = vec![0u8; blocksize];
        bulk_pattern(i % 2, &mut b);
        b
    };
    const IN_FLIGHT: u32 = 2;
    let mut tx_tags = alloc::collections::VecDeque::new();
    let mut rx_tags = alloc::collections::VecDeque::new();
    for i in 0..IN_FLIGHT.min(iters) {
        tx_tags.push_back(link.submit_transmit(pattern(i))?);
        rx_tags.push_back(link.submit_receive(vec![0u8; blocksize])?);
    }
    let (mut next_tx, mut next_rx) = (tx_tags.len() as u32, rx_tags.len() as u32);
    for it in 0..iters {
        let t = tx_tags.pop_front().ok_or(VchiError::InvalidArgument)?;
        let (_, buf) = link.complete(t)?;
        x.bulk_tx_bytes += blocksize as u64;
        if next_tx < iters {
            // Re-queue the returned buffer with the next block's pattern.
            let mut b = buf;
            bulk_pattern(next_tx % 2, &mut b);
            tx_tags.push_back(link.submit_transmit(b)?);
            next_tx += 1;
        }
        let r = rx_tags.pop_front().ok_or(VchiError::InvalidArgument)?;
        let (n, mut buf) = link.complete(r)?;
        if let Some(off) = first_mismatch(&buf[..n.min(buf.len())], &pattern(it)) {
            return Err(VchiError::Verify {
                iteration: it,
                offset: off as u32,
            });
        }
        x.bulk_rx_bytes += n as u64;
        if next_rx < iters {
            buf.fill(0);
            rx_tags.push_back(link.submit_receive(buf)?);
            next_rx += 1;
        }
    }
    Ok(x)
}

/// What the client saw during the `'func'` Part B script (client-side callbacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuncClientEvent {
    /// MESSAGE_AVAILABLE of this length.
    Msg(usize),
    /// BULK_TRANSMIT_DONE.
    TxDone(u32),
    /// BULK_RECEIVE_DONE.
    RxDone(u32),
    /// BULK_RECEIVE_ABORTED.
    RxAborted(u32),
}

/// The client-side events of steps 3–5, in order (docs/protocols/vchiq.md §8: MSG(26), TX_DONE
/// 0x1001, RX_ABORTED 0x1002, RX_DONE 0x1003, MSG(0)).
pub const FUNC_CLIENT_EXPECTED: &[FuncClientEvent] = &[
    FuncClientEvent::Msg(26),
    FuncClientEvent::TxDone(0x1001),
    FuncClientEvent::RxAborted(0x1002),
    FuncClientEvent::RxDone(0x1003),
    FuncClientEvent::Msg(0),
];

/// `'func'` Part B steps 3–5 on an open `'func'` service: the 26-byte message is echoed; tx 1024
/// completes; rx 2048 against the server's tx 1024 aborts; rx 2048 against tx 2048 completes; the
/// server then sends a 0-byte message. Step 6 (the close aborting the last receive,
/// `TAG_RX_LAST` of the simulator's `func` server) is the caller's: it closes the service.
pub fn func_script<L: BulkLink>(link: &mut L) -> Result<Vec<FuncClientEvent>, VchiError> {
    let mut ev = Vec::new();
    let mut buf = [0u8; 64];
    link.send(FUNC_MSG)?;
    let n = link.recv(&mut buf)?;
    if &buf[..n] != FUNC_MSG {
        return Err(VchiError::Verify {
            iteration: 3,
            offset: first_mismatch(&buf[..n], FUNC_MSG).unwrap_or(0) as u32,
        });
    }
    ev.push(FuncClientEvent::Msg(n));
    let tx = vec![0x5Au8; 1024];
    link.bulk_transmit(&tx)?;
    ev.push(FuncClientEvent::TxDone(0x1001));
    let mut rx = vec![0u8; 2048];
    match link.bulk_receive(&mut rx) {
        Err(VchiError::Core(VchiqError::Aborted)) => ev.push(FuncClientEvent::RxAborted(0x1002)),
        Ok(_) => {
            return Err(VchiError::Verify {
                iteration: 4,
                offset: u32::MAX,
            })
        }
        Err(e) => return Err(e),
    }
    let n = link.bulk_receive(&mut rx)?;
    let want: Vec<u8> = (0..2048).map(|i| (i as u8).wrapping_add(0x20)).collect();
    if let Some(off) = first_mismatch(&rx[..n], &want) {
        return Err(VchiError::Verify {
            iteration: 5,
            offset: off as u32,
        });
    }
    ev.push(FuncClientEvent::RxDone(0x1003));
    let n = link.recv(&mut buf)?;
    ev.push(FuncClientEvent::Msg(n));
    Ok(ev)
}

/// One `'fun2'` sub-test: send `{datalen, server_align, align, index}`, transmit the pattern,
/// receive it back into a guarded buffer at `align`, and check guards and data.
pub fn fun2_subtest<L: BulkLink>(link: &mut L, p: Fun2Params) -> Result<(), VchiError> {
    let len = usize::try_from(p.datalen.get()).map_err(|_| VchiError::InvalidArgument)?;
    let align = usize::try_from(p.align.get()).map_err(|_| VchiError::InvalidArgument)?;
    let index = p.index.get() as u32;
    link.send(p.as_bytes())?;
    let mut tx = vec![0u8; len];
    fun2_pattern(len, &mut tx);
    link.bulk_transmit(&tx)?;
    let mut g = GuardedBuf::new(len, align);
    let n = link.bulk_receive(g.data_mut())?;
    if n != len {
        return Err(VchiError::Verify {
            iteration: index,
            offset: u32::MAX,
        });
    }
    if let Err(off) = g.check_guards() {
        // A damaged guard is the cache-line-edge symptom of docs/protocols/vchiq.md §5.
        return Err(VchiError::Verify {
            iteration: index,
            offset: off as u32,
        });
    }
    if let Some(off) = first_mismatch(g.data(), &tx) {
        return Err(VchiError::Verify {
            iteration: index,
            offset: off as u32,
        });
    }
    Ok(())
}

/// The fun2 sub-test table of one iteration (5184 entries, docs/protocols/vchiq.md §8), in order;
/// entry `k` has `index == k`.
pub fn fun2_subtests() -> impl Iterator<Item = Fun2Params> {
    const ALIGNS: [i32; 6] = [0, 16, 8, 4, 2, 1];
    const PAGE_ALIGNS: [i32; 6] = [4096 - 32, 4096 - 16, 4096 - 8, 4096 - 4, 4096 - 2, 4096 - 1];
    const EDGE: [i32; 3] = [0, 1, 31];
    let small = (1..64).flat_map(|size| {
        ALIGNS
            .iter()
            .flat_map(move |&sa| ALIGNS.iter().map(move |&ca| (size, sa, ca)))
    });
    let page = (1..64).flat_map(|size| {
        ALIGNS
            .iter()
            .flat_map(move |&sa| PAGE_ALIGNS.iter().map(move |&ca| (size, sa, ca)))
    });
    let big = (6..=13).flat_map(|sh| {
        EDGE.iter().flat_map(move |&ca| {
            EDGE.iter()
                .flat_map(move |&sa| (0..=8).map(move |k| (1 << sh, sa + k, ca)))
        })
    });
    small
        .chain(page)
        .chain(big)
        .enumerate()
        .map(|(i, (size, sa, ca))| Fun2Params {
            datalen: I32::new(size),
            server_align: I32::new(sa),
            align: I32::new(ca),
            index: I32::new(i as i32),
        })
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::sim::vchi::echo_server::EchoServer;
    use crate::sim::vchi::func_server::{Fun2Server, FuncServer, FUNC_EXPECTED_EVENTS};
    use crate::sim::vchi::loopback::Loopback;

    #[test]
    fn fun2_table_has_5184_entries_with_page_crossing_aligns() {
        let all: Vec<_> = fun2_subtests().collect();
        assert_eq!(all.len(), 5184);
        assert!(all
            .iter()
            .enumerate()
            .all(|(i, p)| p.index.get() == i as i32));
        let page: Vec<i32> = all[2268..2268 + 6].iter().map(|p| p.align.get()).collect();
        assert_eq!(page, [4064, 4080, 4088, 4092, 4094, 4095]);
        assert_eq!(all.last().unwrap().datalen.get(), 8192);
    }

    #[test]
    fn pipelined_bulk_echo_over_loopback() {
        let mut l = Loopback::open(EchoServer::new(), 42);
        let x = bulk_echo_pipelined(&mut l, 777, 9).unwrap();
        assert_eq!(x.bulk_rx_bytes, 777 * 9);
        assert_eq!(l.server().stats().bulk_tx, 9);
    }

    #[test]
    fn echo_routines_over_loopback() {
        let mut l = Loopback::open(EchoServer::new(), 42);
        let x = ping(&mut l, 10, 10, 3).unwrap();
        assert_eq!((x.sent, x.received), (63, 33));
        ctrl(&mut l, 4088, 5).unwrap();
        let x = bulk_echo(&mut l, 1000, 4).unwrap();
        assert_eq!(x.bulk_rx_bytes, 4000);
        assert_eq!(l.pending_messages(), 0);
        assert_eq!(l.server().stats().bulk_tx, 4);
    }

    /// A server that corrupts one echo must be caught: the checks can fail.
    #[test]
    fn ctrl_detects_a_corrupted_echo() {
        struct Corrupt(EchoServer);
        impl super::super::link::VcService for Corrupt {
            fn fourcc(&self) -> u32 {
                0
            }
            fn on_message(&mut self, m: &[u8], out: &mut Vec<super::super::link::VcAction>) {
                self.0.on_message(m, out);
                if let Some(super::super::link::VcAction::Reply(r)) = out.last_mut() {
                    if r.len() > 10 {
                        r[10] ^= 0x40;
                    }
                }
            }
        }
        let mut l = Loopback::open(Corrupt(EchoServer::new()), 1);
        assert_eq!(
            ctrl(&mut l, 64, 1),
            Err(VchiError::Verify {
                iteration: 0,
                offset: 10
            })
        );
        // An error string from the server is reported as such.
        l.send(&[9, 0, 0, 0]).unwrap();
        let mut b = [0u8; 64];
        assert_eq!(
            expect_reply(&mut l, &mut b, SYNC_REPLY, 0),
            Err(VchiError::RemoteError)
        );
    }

    #[test]
    fn func_script_over_loopback() {
        let mut l = Loopback::open(FuncServer::new(), 1234);
        let ev = func_script(&mut l).unwrap();
        assert_eq!(ev, FUNC_CLIENT_EXPECTED);
        l.close();
        assert_eq!(l.server().script_events(), FUNC_EXPECTED_EVENTS);
        assert_eq!(l.server().zero_client_ids, 0);
    }

    #[test]
    fn fun2_sample_over_loopback() {
        let mut l = Loopback::open(Fun2Server::new(), 7);
        for p in fun2_subtests().step_by(37) {
            fun2_subtest(&mut l, p).unwrap();
        }
        assert_eq!(l.server().stats().failures, 0);
        assert!(l.server().stats().subtests > 100);
    }
}
