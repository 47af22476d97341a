//! [`LayoutCache`]: the layout a payload buffer's private image holds, kept with the image so a
//! call of the same shape on the same buffer skips the layout engine.
//!
//! [`layout`] is a function of its inputs alone (the scalars, the buffer and handle descriptors,
//! the payload's AP and bus addresses): it zeroes the metadata and writes it whole, and fills
//! `inline_off`. So when those inputs equal the ones of the layout already in the image, the
//! image's metadata is what a new layout would write, except where anybody else wrote the image
//! since: only `Session::finish`, which reads the DSP's fd list into it
//! (docs/protocols/fastrpc.md §12.8). A kept layout therefore zeroes the fd list again and is
//! otherwise reused as it is. A repeated call (the same buffers, the same payload buffer) costs a
//! comparison of its descriptors instead of the overlap plan and the metadata fill.
//!
//! It also tells its caller which of the two it did ([`Laid`]): after a kept layout the region
//! can be brought up to date by rewriting only what the DSP may have written since the last
//! call on this buffer, the out-buffer lengths and the fd list (`Session::build`,
//! docs/protocols/fastrpc.md §12.9, "What a repeated call rewrites").
//!
//! The cache is per payload buffer (each has its own image), compares the inputs exactly (the
//! caller's buffer addresses included: they decide the overlap table), and remembers only
//! within the capacity reserved at setup (`max_args`), so it never allocates on the invoke path.

use crate::error::Result;
use crate::wire::layout::{layout, BufDesc, HandleDesc, Olap, Placed};
use crate::wire::scalars::Scalars;
use crate::wire::MetaOffsets;

/// How [`LayoutCache::layout`] produced the image's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Laid {
    /// By the layout engine: the image's metadata is all new.
    Fresh,
    /// The layout the image held, kept: its metadata is what the last layout wrote, and the fd
    /// list, whose first `fd_words` words were nonzero (read back from the DSP by
    /// `Session::finish`) and the rest zero, is zero again.
    Kept {
        /// The nonzero words at the head of the fd list before it was zeroed (0: it was all
        /// zero).
        fd_words: usize,
    },
}

/// The inputs and outputs of the layout in one private image; `placed` is `None` when the image
/// holds no usable layout (none yet, or the last one failed).
#[derive(Debug, Default)]
pub(crate) struct LayoutCache {
    sc: Scalars,
    base_va: u64,
    bus: u64,
    bufs: alloc::vec::Vec<BufDesc>,
    handles: alloc::vec::Vec<HandleDesc>,
    inline_off: alloc::vec::Vec<u64>,
    placed: Option<Placed>,
}

impl LayoutCache {
    /// An empty cache that can remember calls of up to `max_args` buffers and handles.
    pub(crate) fn with_capacity(max_args: usize) -> Self {
        LayoutCache {
            bufs: alloc::vec::Vec::with_capacity(max_args),
            handles: alloc::vec::Vec::with_capacity(max_args),
            inline_off: alloc::vec::Vec::with_capacity(max_args),
            ..LayoutCache::default()
        }
    }

    /// [`layout`] of the call into `image` (this cache's image), or, when the inputs are those
    /// of the layout the image holds, that layout again with its fd list zeroed. Same results,
    /// same errors as [`layout`], and which of the two it was.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn layout(
        &mut self,
        sc: Scalars,
        bufs: &[BufDesc],
        handles: &[HandleDesc],
        scratch: &mut [Olap],
        image: &mut [u8],
        base_va: u64,
        bus: u64,
        inline_off: &mut [u64],
    ) -> Result<(Placed, Laid)> {
        if let Some(placed) = self.placed {
            if self.sc == sc
                && self.base_va == base_va
                && self.bus == bus
                && self.bufs == bufs
                && self.handles == handles
            {
                if let (Some(fds), Some(offs)) = (
                    {
                        let m = MetaOffsets::new(sc.len());
                        image.get_mut(m.fdlist..m.crclist)
                    },
                    inline_off.get_mut(..bufs.len()),
                ) {
                    // `Session::finish` reads the DSP's fd list into the image; a new layout
                    // would write zeros there. The list in the image is a run of nonzero words
                    // from word 0, then zeros: a layout leaves it all zero, and `finish` copies
                    // the DSP's list up to and including its first zero word. So the run is
                    // all there is to zero.
                    let mut fd_words = 0;
                    for w in fds.chunks_exact_mut(8) {
                        if w.iter().all(|&b| b == 0) {
                            break;
                        }
                        w.fill(0);
                        fd_words += 1;
                    }
                    offs.copy_from_slice(&self.inline_off);
                    return Ok((placed, Laid::Kept { fd_words }));
                }
            }
        }
        // From here the image is being rewritten: it holds no known layout until this one
        // succeeds.
        self.placed = None;
        let placed = layout(sc, bufs, handles, scratch, image, base_va, bus, inline_off)?;
        if bufs.len() <= self.bufs.capacity() && handles.len() <= self.handles.capacity() {
            self.sc = sc;
            self.base_va = base_va;
            self.bus = bus;
            self.bufs.clear();
            self.bufs.extend_from_slice(bufs);
            self.handles.clear();
            self.handles.extend_from_slice(handles);
            self.inline_off.clear();
            self.inline_off.extend_from_slice(&inline_off[..bufs.len()]);
            self.placed = Some(placed);
        }
        Ok((placed, Laid::Fresh))
    }
}

#[cfg(test)]
mod tests;
