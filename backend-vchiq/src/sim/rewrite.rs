//! The simulated VideoCore's double-fetch fault ([`DoubleFetch`], armed through
//! [`RemoteControl::inject_garbage`](fwipc_transport_api::fixture::RemoteControl::inject_garbage)):
//! a reply the echo service has just published (written into a slot, `tx_pos` stored and the ARM
//! signalled) is rewritten in the slot, before the ARM reads it or while it does.

use core::sync::atomic::Ordering;

use fwipc_transport_api::fixture::DoubleFetch;

use crate::engine::vchiq::Vchiq;
use crate::wire::consts::{
    VCHIQ_HEADER_SIZE, VCHIQ_SLOT_MASK, VCHIQ_SLOT_QUEUE_MASK, VCHIQ_SLOT_SIZE,
};
use crate::wire::frame::FRAME_HEADER;
use crate::wire::header::stride;
use crate::wire::layout::off;

/// Rewrite the DATA message of `size` payload bytes that `master` published last. The order's
/// `header` masks XOR four words: the VCHIQ header's msgid (bytes 0..4) and size (4..8), then
/// the fwipc frame's token (8..12) and length (12..16); its `body` mask XORs the frame's
/// payload. Each word is a read-modify-write of an aligned region word and the payload a copy
/// through the region's accessors (docs/memory-ordering.md, the region's one access width), so
/// the rewrite races the ARM's reads without a data race. The ARM must read each word once and
/// check its copy: a changed msgid or size is a bad or misdirected message, a changed token an
/// unknown reply, a changed length `BadLength`, a changed payload one copy of what was there.
///
/// Must run on the thread that queued the message, before anything else is queued on `master`
/// (the echo service's callback and `release`): the message is found from the published
/// `tx_pos`.
pub(crate) fn rewrite_last_message(master: &Vchiq, df: &DoubleFetch, size: usize) {
    // Relaxed: our own `tx_pos` and `slot_queue`, stored by this thread when the message was
    // published (the slave only reads them).
    let tx = master
        .region
        .load(master.local_off + off::TX_POS, Ordering::Relaxed);
    let pos = tx.wrapping_sub(stride(size) as u32);
    let qi = ((pos >> 12) & VCHIQ_SLOT_QUEUE_MASK) as usize;
    let slot = master.region.load(
        master.local_off + off::SLOT_QUEUE + 4 * qi,
        Ordering::Relaxed,
    );
    let base = slot as usize * VCHIQ_SLOT_SIZE + (pos & VCHIQ_SLOT_MASK) as usize;
    let words = (VCHIQ_HEADER_SIZE + size.min(FRAME_HEADER)) / 4;
    for (w, m) in df.header.chunks_exact(4).take(words).enumerate() {
        let m = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
        if m != 0 {
            // Relaxed: a hostile write after publication, ordered by nothing on purpose.
            let v = master.region.load(base + 4 * w, Ordering::Relaxed);
            master.region.store(base + 4 * w, v ^ m, Ordering::Relaxed);
        }
    }
    let Some(len) = size
        .checked_sub(FRAME_HEADER)
        .filter(|_| !df.body.is_empty())
    else {
        return;
    };
    let at = base + VCHIQ_HEADER_SIZE + FRAME_HEADER;
    let mut body = vec![0u8; len];
    if master.region.read_bytes(at, &mut body) {
        for (i, b) in body.iter_mut().enumerate() {
            *b = df.rewrite_body_byte(i, *b);
        }
        master.region.write_bytes(at, &body);
    }
}
