//! The payload layout engine (docs/protocols/fastrpc.md §5): one overlap table drives both the size
//! computation and the fill, so they can never disagree (the 2021 driver bug).
//!
//! Input: the call's buffers as *descriptors* (the caller's address, length, and whether the
//! bytes are copied inline or live in a DSP-mapped region) plus the handle slots. Output: the
//! metadata written into the payload image and, for each inline buffer, the payload offset its
//! `pv` points at. Copying the bytes is the caller's job (the engine never sees user memory).
//!
//! Differences from Linux, on purpose:
//! - zero-length buffers take no part in the overlap table (Linux aligns the size for them but
//!   then skips them in the fill; the size can only shrink by < 128 bytes),
//! - only *copied* buffers are overlap-merged; a copied buffer overlapping a mapped one is
//!   refused with `InvalidArgument` (docs/protocols/fastrpc.md §12.3) instead of yielding a
//!   `pv` before the area,
//! - the page size of a copied buffer is computed from its `pv` (the 2025 fix),
//! - the metadata is zeroed first and written whole on every call; the inline area after it is
//!   left to the caller, which copies only the metadata and the in-buffers into DSP-shared
//!   memory (docs/protocols/fastrpc.md §12.9, "What the AP writes").

use zerocopy::IntoBytes;

use crate::error::{FastRpcError, Result};
use crate::wire::scalars::Scalars;
use crate::wire::{
    align_up, metalen, pages_spanned, InvokeBuf, MetaOffsets, PhyPage, RemoteBuf, RemoteDma,
    FASTRPC_ALIGN, PAGE_SIZE,
};

/// Where a buffer argument's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BufSource {
    /// Copied into the payload (fd 0 / -1 in the ioctl).
    Copy,
    /// In a DSP-mapped region: its bus address (with `sid << 32`) and AP virtual start address.
    Mapped {
        /// Bus address of the region's byte 0, including the session bits.
        bus: u64,
        /// AP virtual address of the region's byte 0.
        va_start: u64,
        /// Region size in bytes.
        size: u64,
    },
}

/// One in- or out-buffer argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BufDesc {
    /// The caller's address of the data (used for ordering and overlap, as Linux does).
    pub ptr: u64,
    /// Length in bytes.
    pub len: u64,
    /// Copied or mapped.
    pub src: BufSource,
}

/// One handle argument (dma-buf by descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct HandleDesc {
    /// Descriptor number.
    pub fd: i32,
    /// Offset (`(u32)ptr` in Linux).
    pub offset: u32,
    /// Length.
    pub len: u32,
    /// The whole map, if one exists: (bus address incl. sid, size).
    pub map: Option<(u64, u64)>,
}

/// An entry of the overlap table (`struct fastrpc_buf_overlap`), plus where the fill put it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Olap {
    /// Start address.
    pub start: u64,
    /// End address.
    pub end: u64,
    /// First byte that needs a new copy.
    pub mstart: u64,
    /// End of the new copy.
    pub mend: u64,
    /// `start`'s distance before the copy position (`max_end - start` for overlapping ranges).
    pub offset: u64,
    /// Argument index.
    pub raix: u32,
    /// Payload offset `pv` points at.
    pub pv_off: u64,
}

/// Result of laying out one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed {
    /// Metadata length (`40 n + 384`).
    pub metalen: usize,
    /// Bytes used in the payload (`pkt_size`).
    pub pkt_size: usize,
    /// `msg.size`: `pkt_size` rounded up to a page.
    pub msg_size: u64,
}

/// Offset of buffer `i`'s inline copy, or `NOT_INLINE`.
pub(crate) const NOT_INLINE: u64 = u64::MAX;

fn ranges_overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Plan the overlap table and the size. `scratch` must hold `bufs.len()` entries; returns the
/// number used and `pkt_size`.
pub(crate) fn plan(sc: Scalars, bufs: &[BufDesc], scratch: &mut [Olap]) -> Result<(usize, u64)> {
    if bufs.len() != sc.nbufs() || scratch.len() < bufs.len() {
        return Err(FastRpcError::InvalidArgument);
    }
    let end_of = |b: &BufDesc| {
        b.ptr
            .checked_add(b.len)
            .ok_or(FastRpcError::InvalidArgument)
    };
    // Copied buffers must not overlap mapped ones (docs/protocols/fastrpc.md §12.3).
    for (i, b) in bufs.iter().enumerate() {
        let e = end_of(b)?;
        if let BufSource::Mapped { va_start, size, .. } = b.src {
            // The buffer must lie inside its region (exact lookups, the 2026 fix).
            let region_end = va_start
                .checked_add(size)
                .ok_or(FastRpcError::InvalidArgument)?;
            if b.len != 0 && (b.ptr < va_start || e > region_end) {
                return Err(FastRpcError::InvalidArgument);
            }
            for (j, c) in bufs.iter().enumerate() {
                if i != j
                    && c.src == BufSource::Copy
                    && c.len != 0
                    && b.len != 0
                    && ranges_overlap((b.ptr, e), (c.ptr, end_of(c)?))
                {
                    return Err(FastRpcError::InvalidArgument);
                }
            }
        }
    }
    let mut n = 0;
    for (i, b) in bufs.iter().enumerate() {
        if b.src == BufSource::Copy && b.len != 0 {
            scratch[n] = Olap {
                start: b.ptr,
                end: end_of(b)?,
                raix: i as u32,
                ..Olap::default()
            };
            n += 1;
        }
    }
    let table = &mut scratch[..n];
    // Ascending start; ties: longer first (`olaps_cmp`).
    table.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut max_end = 0u64;
    let meta = metalen(sc.len()) as u64;
    let mut cursor = meta;
    for o in table.iter_mut() {
        if o.start < max_end {
            o.mstart = max_end;
            o.mend = o.end;
            o.offset = max_end - o.start;
            if o.end > max_end {
                max_end = o.end;
            } else {
                o.mstart = 0;
                o.mend = 0;
            }
        } else {
            o.mstart = o.start;
            o.mend = o.end;
            o.offset = 0;
            max_end = o.end;
        }
        if o.offset == 0 {
            cursor = align_up(cursor, FASTRPC_ALIGN).ok_or(FastRpcError::TooLarge)?;
        }
        o.pv_off = cursor
            .checked_sub(o.offset)
            .filter(|p| *p >= meta)
            .ok_or(FastRpcError::InvalidArgument)?;
        cursor = cursor
            .checked_add(o.mend - o.mstart)
            .ok_or(FastRpcError::TooLarge)?;
    }
    let size = cursor.max(align_up(meta, FASTRPC_ALIGN).ok_or(FastRpcError::TooLarge)?);
    Ok((n, size))
}

/// Lay out a call into `payload` (the call's buffer, mapped at AP address `base_va` and bus
/// address `bus`, both page-aligned, `bus` including the session bits). Writes all metadata;
/// `inline_off[i]` receives buffer `i`'s payload offset (`NOT_INLINE` if mapped or empty).
#[allow(clippy::too_many_arguments)]
pub(crate) fn layout(
    sc: Scalars,
    bufs: &[BufDesc],
    handles: &[HandleDesc],
    scratch: &mut [Olap],
    payload: &mut [u8],
    base_va: u64,
    bus: u64,
    inline_off: &mut [u64],
) -> Result<Placed> {
    let n = sc.len();
    if handles.len() != sc.inhandles() + sc.outhandles() || inline_off.len() < bufs.len() {
        return Err(FastRpcError::InvalidArgument);
    }
    if !base_va.is_multiple_of(PAGE_SIZE) || !bus.is_multiple_of(PAGE_SIZE) {
        return Err(FastRpcError::InvalidArgument);
    }
    let (used, pkt) = plan(sc, bufs, scratch)?;
    let pkt_size = usize::try_from(pkt).map_err(|_| FastRpcError::TooLarge)?;
    if pkt_size > payload.len() {
        return Err(FastRpcError::TooLarge);
    }
    // Zero the metadata on every call (docs/protocols/fastrpc.md §12.9): nothing stale reaches
    // the DSP. The inline area after it is not the engine's: the caller copies the in-buffers
    // there straight from their bytes and leaves out-buffer space and padding as they are.
    let m = MetaOffsets::new(n);
    if m.end > pkt_size {
        return Err(FastRpcError::InvalidArgument);
    }
    payload[..m.end].fill(0);
    let mut put = |off: usize, bytes: &[u8]| payload[off..off + bytes.len()].copy_from_slice(bytes);
    for i in 0..n {
        let len = if i < bufs.len() {
            bufs[i].len
        } else {
            u64::from(handles[i - bufs.len()].len)
        };
        let ib = InvokeBuf {
            num: u32::from(len != 0).into(),
            pgidx: (i as u32).into(),
        };
        put(m.list + 8 * i, ib.as_bytes());
    }
    inline_off[..bufs.len()].fill(NOT_INLINE);
    for (i, b) in bufs.iter().enumerate() {
        if let BufSource::Mapped {
            bus: rbus,
            va_start,
            ..
        } = b.src
        {
            let rb = RemoteBuf {
                pv: b.ptr.into(),
                len: b.len.into(),
            };
            put(m.rpra + 16 * i, rb.as_bytes());
            if b.len != 0 {
                let pg = PhyPage {
                    addr: (rbus + ((b.ptr & !(PAGE_SIZE - 1)).saturating_sub(va_start))).into(),
                    size: pages_spanned(b.ptr, b.len).into(),
                };
                put(m.pages + 16 * i, pg.as_bytes());
            }
        } else {
            // Copied: `pv` set below from the table; an empty buffer gets pv 0.
            let rb = RemoteBuf {
                pv: 0.into(),
                len: b.len.into(),
            };
            put(m.rpra + 16 * i, rb.as_bytes());
        }
    }
    for o in &scratch[..used] {
        let i = o.raix as usize;
        let len = bufs[i].len;
        let pv = base_va + o.pv_off;
        let rb = RemoteBuf {
            pv: pv.into(),
            len: len.into(),
        };
        put(m.rpra + 16 * i, rb.as_bytes());
        let pg = PhyPage {
            addr: ((bus + o.pv_off) & !(PAGE_SIZE - 1)).into(),
            size: pages_spanned(pv, len).into(),
        };
        put(m.pages + 16 * i, pg.as_bytes());
        inline_off[i] = o.pv_off;
    }
    for (k, h) in handles.iter().enumerate() {
        let i = bufs.len() + k;
        let d = RemoteDma {
            fd: h.fd.into(),
            offset: h.offset.into(),
            len: h.len.into(),
            pad: [0; 4],
        };
        put(m.rpra + 16 * i, d.as_bytes());
        if let Some((addr, size)) = h.map {
            let pg = PhyPage {
                addr: addr.into(),
                size: size.into(),
            };
            put(m.pages + 16 * i, pg.as_bytes());
        }
    }
    Ok(Placed {
        metalen: m.end,
        pkt_size,
        msg_size: align_up(pkt, PAGE_SIZE).ok_or(FastRpcError::TooLarge)?,
    })
}

#[cfg(test)]
mod tests;
