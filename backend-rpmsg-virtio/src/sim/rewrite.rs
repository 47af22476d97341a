//! The double-fetch fault of the simulated remotes: a frame handed to the driver is rewritten
//! right after it is published (on the rings: after its used element and `used.idx`), before or
//! while the driver reads it; on the in-memory link as it is published, which its receiver,
//! copying each frame out of its queue slot whole, cannot tell apart. A driver that copies each buffer once and parses only its copy
//! refuses such a frame or delivers one consistent version of it (header and payload from the
//! same copy, never a length its copy's checks did not pass).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Prefix of garbage (`RemoteControl::inject_garbage`) that arms the double-fetch fault instead
/// of being delivered: the order every simulator reads ([`fwipc_transport_api::fixture::DoubleFetch`]);
/// [`Rewrite::from_order`] says what its bytes mean on rpmsg.
pub use fwipc_transport_api::fixture::DOUBLE_FETCH;

/// The bit every armed rewrite flips in `src`: above every address the simulated remote sends
/// from.
const SRC_FAR: u32 = 1 << 31;

/// How a published frame is rewritten.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// XORed into the header's `src`.
    pub src_xor: u32,
    /// Added (wrapping) to the header's `len`.
    pub len_add: u16,
    /// XORed into the first four payload bytes (those the frame has).
    pub payload_xor: [u8; 4],
}

impl Rewrite {
    /// The rewrite a double-fetch order arms: `src` XOR `header[0..4]`, `len` + `header[4]`,
    /// the first four payload bytes XOR `header[5..9]` (the order's `body` is not used). The
    /// source always changes, and far: `src_xor` has its top bit set. The stateful session
    /// cannot tell a rewritten payload from a wrong reply, so a rewritten reply must be one the
    /// driver refuses whatever else changed, and the remote's addresses are small, so no other
    /// fault can move the source back (`Fault::CorruptHeader` sends from the echo address + 1;
    /// with an XOR of 1 an even echo address came back and the rewritten payload was
    /// delivered, seed `rpmsg_ring_session/corrupt_header_then_rewrite_restores_the_source`).
    /// `tests/double_fetch.rs` covers the frames a driver delivers.
    pub fn from_order(o: &fwipc_transport_api::fixture::DoubleFetch) -> Self {
        let m = &o.header;
        Rewrite {
            src_xor: u32::from_le_bytes([m[0], m[1], m[2], m[3]]) | SRC_FAR,
            len_add: u16::from(m[4]),
            payload_xor: [m[5], m[6], m[7], m[8]],
        }
    }

    /// Rewrite the frame `f` (header + payload, as published) in place.
    pub fn apply(&self, f: &mut [u8]) {
        if let Some(src) = f.get_mut(0..4) {
            let v = u32::from_le_bytes([src[0], src[1], src[2], src[3]]) ^ self.src_xor;
            src.copy_from_slice(&v.to_le_bytes());
        }
        if let Some(len) = f.get_mut(12..14) {
            let v = u16::from_le_bytes([len[0], len[1]]).wrapping_add(self.len_add);
            len.copy_from_slice(&v.to_le_bytes());
        }
        let payload = f.iter_mut().skip(crate::addr::HDR_SIZE);
        payload.zip(self.payload_xor).for_each(|(b, x)| *b ^= x);
    }
}

/// The armed fault: how many frames are still to be rewritten, and how.
#[derive(Debug, Default)]
pub(crate) struct Rewriter {
    order: Mutex<(u8, Rewrite)>,
    /// Whether `order` has frames left to rewrite; changed under its lock, read without it, so
    /// a frame published with nothing armed (every frame without the fault) takes no lock.
    armed: AtomicBool,
}

impl Rewriter {
    /// Rewrite the next `count` frames with `r`.
    pub(crate) fn arm(&self, count: u8, r: Rewrite) {
        let mut g = self.order.lock().unwrap_or_else(|e| e.into_inner());
        *g = (count, r);
        // Release: pairs with the Acquire in `take`; stored under the lock, so it follows
        // every change of the count.
        self.armed.store(count != 0, Ordering::Release);
    }

    /// The rewrite for the frame being published now, if armed (counts it). A frame published
    /// while another thread arms the fault may or may not be the first one rewritten.
    pub(crate) fn take(&self) -> Option<Rewrite> {
        // Acquire: pairs with `arm`; the order itself is read under the lock.
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let mut g = self.order.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 {
            return None;
        }
        g.0 -= 1;
        // Relaxed: under the lock, as in `arm`.
        self.armed.store(g.0 != 0, Ordering::Relaxed);
        Some(g.1)
    }
}
