//! Fuzzing entry points: one `fn(&[u8])` per parser of remote input. Each must never panic.
//! Also run over random bytes by the crate's unit tests (below).

use alloc::boxed::Box;

use crate::config::{Config, Role};
use crate::consts::*;
use crate::header::Header;
use crate::layout::{off, BulkDonePayload, BulkPayload, OpenAckPayload, OpenPayload};
use crate::pagelist;
use crate::platform::Platform;
use crate::region::OwnedRegion;
use crate::service::{Deliver, ServiceParams};
use crate::vchiq::Vchiq;
use core::sync::atomic::Ordering;
use zerocopy::FromBytes;

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
    let _ = crate::frame::parse(data);
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
    let slave =
        Vchiq::new_slave(mem.region(0x4000_0000).ok()?, Box::new(NullPlatform), *cfg).ok()?;
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
    r.store(off::MASTER + off::INITIALISED, 1, Ordering::Release);
    r.store(off::MASTER + off::TX_POS, word(data, 0), Ordering::Release);
    let _ = slave.connect();
    slave.poll();
    // The sync slot as well.
    let sync = part.sync as usize * VCHIQ_SLOT_SIZE;
    r.write_bytes(sync, &body[..body.len().min(64)]);
    slave.poll();
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
    if let Ok(v) = pagelist::parse(&r, o, cfg.pagelist_size) {
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
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn fuzz_slot_walk(d in proptest::collection::vec(any::<u8>(), 0..1024)) { slot_walk(&d) }
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
