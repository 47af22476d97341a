//! Fuzzing entry points: one `fn(&[u8])` per parser of remote input. Each must never panic.
//! Also run over random bytes by the crate's unit tests (below).
//!
//! The VCHI layer's parsers (SMEM, echo/fun2, vc_mem) are re-exported here too, so every entry of
//! the crate is reachable from one module; they also stay at `vchi::fuzzing`.

use alloc::boxed::Box;

use fwipc_transport_api::ManualClock;

use crate::config::{Config, Role};
use crate::engine::service::{Deliver, ServiceParams};
use crate::engine::vchiq::Vchiq;
use crate::platform::Platform;
use crate::shared::region::OwnedRegion;
use crate::wire::consts::MsgType;
use crate::wire::consts::*;
use crate::wire::header::Header;
use crate::wire::layout::{off, BulkDonePayload, BulkPayload, OpenAckPayload, OpenPayload};
use crate::wire::pagelist;
use core::sync::atomic::Ordering;
use zerocopy::FromBytes;

#[cfg(feature = "sim")]
pub use crate::vchi::fuzzing::{
    fuzz_echo_message, fuzz_fun2_message, fuzz_smem_reply, fuzz_smem_request, fuzz_vc_mem,
};

struct NullPlatform;
// SAFETY: maps nothing and translates nothing.
unsafe impl Platform for NullPlatform {
    fn ring_doorbell(&self) {}
    fn map_page(&self, _cpu_page: usize) -> Option<u32> {
        None
    }
}

fn word(d: &[u8], i: usize) -> u32 {
    let mut b = [0u8; 4];
    for (k, x) in b.iter_mut().enumerate() {
        *x = d.get(i * 4 + k).copied().unwrap_or(0);
    }
    u32::from_le_bytes(b)
}

/// The message header decoder: (msgid, size, offset) from the first 12 bytes.
pub fn header(data: &[u8]) {
    let _ = Header::decode(word(data, 0), word(data, 1), word(data, 2) as usize % 8192);
}

/// The transport's frame parser.
pub fn frame(data: &[u8]) {
    let _ = crate::wire::frame::parse(data);
}

/// The fixed payload decoders (OPEN, OPENACK, BULK, BULK_DONE).
pub fn payloads(data: &[u8]) {
    let _ = OpenPayload::read_from_bytes(data.get(..12).unwrap_or(data));
    let _ = OpenAckPayload::read_from_bytes(data.get(..2).unwrap_or(data));
    let _ = BulkPayload::read_from_bytes(data.get(..8).unwrap_or(data));
    let _ = BulkDonePayload::read_from_bytes(data.get(..4).unwrap_or(data));
}

fn peer_region(cfg: &Config) -> Option<(alloc::sync::Arc<OwnedRegion>, Vchiq)> {
    let mem = OwnedRegion::new(cfg.region_size()).ok()?;
    let slave = Vchiq::new_slave(
        mem.region(0x4000_0000).ok()?,
        Box::new(NullPlatform),
        *cfg,
        Box::new(ManualClock::new()),
    )
    .ok()?;
    Some((mem, slave))
}

/// The slot walk: `data` becomes the master's stream (slots 2.., queue as initialised), word 0 of
/// `data` is the master's tx_pos; a slave with a listening service parses it.
pub fn slot_walk(data: &[u8]) {
    let cfg = Config::default();
    let Some((mem, slave)) = peer_region(&cfg) else {
        return;
    };
    let Ok(r) = mem.region(0x4000_0000) else {
        return;
    };
    let _ = slave.add_service(
        ServiceParams::new(make_fourcc(*b"echo")),
        |_: &crate::ServiceCtx<'_>, _: crate::Event<'_>| Deliver::Done,
    );
    let part = cfg.partition(Role::Master);
    // Relaxed: this thread is the only one using the region; the hostile "master" state below is
    // published by the Release stores of `initialised` and tx_pos, as a real master would.
    for i in 0..part.data_slots() as usize {
        r.store(
            off::MASTER + off::SLOT_QUEUE + 4 * i,
            part.first + i as u32,
            Ordering::Relaxed,
        );
    }
    let body = data.get(4..).unwrap_or(&[]);
    r.write_bytes(
        part.first as usize * VCHIQ_SLOT_SIZE,
        &body[..body.len().min(8 * VCHIQ_SLOT_SIZE)],
    );
    // Release (both): like a real master, so the slave's Acquire loads see the queue and slots
    // written above (single-threaded here, so it only keeps the harness honest).
    r.store(off::MASTER + off::INITIALISED, 1, Ordering::Release);
    r.store(off::MASTER + off::TX_POS, word(data, 0), Ordering::Release);
    let _ = slave.connect();
    slave.poll();
    // The sync slot as well.
    let sync = part.sync as usize * VCHIQ_SLOT_SIZE;
    r.write_bytes(sync, &body[..body.len().min(64)]);
    slave.poll();
}

/// The master's slot walk and bulk path: a connected pair with one open service; `data` goes
/// into the slave's stream as a raw message (hostile slave), then as the pagelist of a BULK_TX and
/// a BULK_RX that the master pairs with local bulks (pagelist parse, walk, fragment checks).
pub fn master_walk(data: &[u8]) {
    let _ = master_walk_stats(data);
}

fn master_walk_stats(data: &[u8]) -> Option<crate::VchiqStats> {
    let cfg = Config::default();
    let Ok(mem) = OwnedRegion::new(cfg.region_size()) else {
        return None;
    };
    let bus = 0x4000_0000;
    let (Ok(r1), Ok(r2), Ok(r3)) = (mem.region(bus), mem.region(bus), mem.region(bus)) else {
        return None;
    };
    let Ok(slave) = Vchiq::new_slave(
        r1,
        Box::new(NullPlatform),
        cfg,
        Box::new(ManualClock::new()),
    ) else {
        return None;
    };
    let Ok(master) = Vchiq::new_master(
        r2,
        Box::new(NullPlatform),
        cfg,
        Box::new(ManualClock::new()),
    ) else {
        return None;
    };
    let f = make_fourcc(*b"fuzz");
    let Ok(sh) = master.add_service(
        ServiceParams::new(f),
        |_: &crate::ServiceCtx<'_>, _: crate::Event<'_>| Deliver::Done,
    ) else {
        return None;
    };
    let _ = (master.connect(), slave.connect());
    for _ in 0..3 {
        slave.poll();
        master.poll();
    }
    let Ok(h) = slave.open_service(
        ServiceParams::new(f),
        |_: &crate::ServiceCtx<'_>, _: crate::Event<'_>| Deliver::Done,
    ) else {
        return None;
    };
    master.poll();
    slave.poll();
    // Raw garbage from the "slave".
    let _ = slave.queue_raw(&data[..data.len().min(VCHIQ_SLOT_SIZE)]);
    master.poll();
    // A BULK_TX and a BULK_RX whose pagelist is `data`, paired with local bulks on the master.
    let pl_off = cfg.pagelists_offset();
    r3.write_bytes(pl_off, &data[..data.len().min(cfg.pagelist_size)]);
    let size = word(data, 0) & 0xFFFF;
    for ty in [MsgType::BulkTx, MsgType::BulkRx] {
        let mut raw = [0u8; 16];
        let msgid = crate::wire::header::make_msgid(ty, h.raw() & 0xFFF, sh.raw() & 0xFFF);
        raw[0..4].copy_from_slice(&msgid.to_le_bytes());
        raw[4..8].copy_from_slice(&8u32.to_le_bytes());
        raw[8..12].copy_from_slice(&(bus + pl_off as u32).to_le_bytes());
        raw[12..16].copy_from_slice(&size.to_le_bytes());
        let _ = slave.queue_raw(&raw);
    }
    let n = size as usize;
    let _ = master.bulk_receive(
        sh,
        alloc::vec![0u8; n],
        0,
        n,
        1,
        crate::BulkMode::NoCallback,
    );
    let _ = master.bulk_transmit(
        sh,
        alloc::vec![0u8; n],
        0,
        n,
        2,
        crate::BulkMode::NoCallback,
    );
    master.poll();
    slave.poll();
    let _ = r3;
    Some(master.stats())
}

/// The master's pagelist parser and walk over `data` placed in the pagelist area.
pub fn pagelist(data: &[u8]) {
    let cfg = Config::default();
    let Ok(mem) = OwnedRegion::new(cfg.region_size()) else {
        return;
    };
    let Ok(r) = mem.region(0x4000_0000) else {
        return;
    };
    let o = cfg.pagelists_offset();
    r.write_bytes(o, &data[..data.len().min(cfg.pagelist_size)]);
    let fmt = if data.first().is_some_and(|b| b & 1 == 1) {
        pagelist::EntryFormat::Addr36
    } else {
        pagelist::EntryFormat::Classic
    };
    if let Ok(v) = pagelist::parse(&r, o, cfg.pagelist_size, fmt) {
        let mut total = 0usize;
        let _ = pagelist::walk(&r, &v, |_, _, c| {
            total += c;
            Ok(())
        });
        assert!(total <= v.length as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn fuzz_header(d in proptest::collection::vec(any::<u8>(), 0..16)) { header(&d) }
        #[test]
        fn fuzz_payloads(d in proptest::collection::vec(any::<u8>(), 0..16)) { payloads(&d) }
        #[test]
        fn fuzz_frame(d in proptest::collection::vec(any::<u8>(), 0..32)) { frame(&d) }
        #[test]
        fn fuzz_pagelist(d in proptest::collection::vec(any::<u8>(), 0..256)) { pagelist(&d) }
        /// The VCHI entries, called through the crate-level re-exports.
        #[cfg(feature = "sim")]
        #[test]
        fn fuzz_vchi_entries_via_crate_module(d in proptest::collection::vec(any::<u8>(), 0..128)) {
            let entries: [fn(&[u8]); 5] = [
                fuzz_smem_reply,
                fuzz_smem_request,
                fuzz_echo_message,
                fuzz_fun2_message,
                fuzz_vc_mem,
            ];
            for f in entries {
                f(&d);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn fuzz_slot_walk(d in proptest::collection::vec(any::<u8>(), 0..1024)) { slot_walk(&d) }
        #[test]
        fn fuzz_master_walk(d in proptest::collection::vec(any::<u8>(), 0..600)) { master_walk(&d) }
    }

    #[test]
    fn master_walk_plausible_pagelists() {
        // Valid-looking pagelists: WRITE/READ/fragment types, lengths matching the bulk size.
        for ty in [0u16, 1, 2, 65, 0xFFFF] {
            for len in [0u32, 1, 100, 4096, 5000] {
                let mut d = alloc::vec::Vec::new();
                d.extend_from_slice(&len.to_le_bytes());
                d.extend_from_slice(&ty.to_le_bytes());
                d.extend_from_slice(&7u16.to_le_bytes());
                d.extend_from_slice(&0x8000_0000u32.to_le_bytes());
                d.extend_from_slice(&0xFFFF_F003u32.to_le_bytes());
                let st = master_walk_stats(&d).expect("pair set up");
                assert!(
                    st.bulks_done + st.bulks_aborted >= 2,
                    "bulks reached the master: {st:?}"
                );
            }
        }
    }

    #[test]
    fn slot_walk_structured_garbage() {
        // Plausible headers with lying sizes and ports.
        let mut d = alloc::vec::Vec::new();
        d.extend_from_slice(&4096u32.to_le_bytes());
        for (ty, sz) in [(5u32, 4000u32), (2, 12), (4, 0), (7, 8), (9, 4), (0xFF, 8)] {
            d.extend_from_slice(&((ty << 24) | (1 << 12) | 3).to_le_bytes());
            d.extend_from_slice(&sz.to_le_bytes());
            d.extend_from_slice(&[0xAB; 16]);
        }
        slot_walk(&d);
    }
}
