//! Multi-part replies of fixed-size entries (clock rates, voltage and performance levels, sensor
//! axes and update intervals): a flags word (returned, remaining), then as many entries as fit
//! the writable space; and the segmented (lowest, highest, step) form. The flags layouts are the
//! agent's ([`crate::protocol::describe`]), so both sides read one definition.

use core::ops::Range;

use super::model::Platform;
use super::reply::{self, fit, Out, Status};
use crate::protocol::describe::{PageFlags, SEGMENTED};
use crate::status::code;

/// An entry of a multi-part list, written in a fixed number of bytes.
pub(crate) trait PageEntry: Copy {
    /// Bytes [`PageEntry::write`] appends.
    const SIZE: usize;
    /// Append the entry.
    fn write(self, out: &mut Out<'_>) -> reply::Result;
}

impl PageEntry for u32 {
    const SIZE: usize = 4;
    fn write(self, out: &mut Out<'_>) -> reply::Result {
        out.u32(self)
    }
}

impl PageEntry for i32 {
    const SIZE: usize = 4;
    fn write(self, out: &mut Out<'_>) -> reply::Result {
        out.i32(self)
    }
}

impl PageEntry for u64 {
    const SIZE: usize = 8;
    fn write(self, out: &mut Out<'_>) -> reply::Result {
        out.u64(self)
    }
}

/// A performance level: (level, power cost, latency µs), three words.
impl PageEntry for (u32, u32, u16) {
    const SIZE: usize = 12;
    fn write(self, out: &mut Out<'_>) -> reply::Result {
        let (perf, power, latency) = self;
        out.u32(perf)?;
        out.u32(power)?;
        out.u32(u32::from(latency))
    }
}

/// Append a segmented description: flags (3 returned, bit 12, nothing remaining), then
/// lowest, highest, step.
pub(crate) fn write_segmented<E: PageEntry>(
    out: &mut Out<'_>,
    lowest: E,
    highest: E,
    step: E,
) -> reply::Result {
    out.u32(3 | SEGMENTED)?;
    lowest.write(out)?;
    highest.write(out)?;
    step.write(out)
}

impl Platform {
    /// Start one page of a list of `total` entries of `entry_size` bytes from the requested
    /// index `first`: as many entries as fit the writable space after the flags word, capped by
    /// `layout` and the `max_entries_per_reply` quirk. Writes the flags word (remaining as the
    /// quirks say) and returns the indices of the entries the caller must append next.
    /// INVALID_PARAMETERS for a bad start index, COMMS_ERROR when not one entry fits.
    pub(crate) fn page_range(
        &self,
        out: &mut Out<'_>,
        first: u32,
        total: usize,
        entry_size: usize,
        layout: PageFlags,
    ) -> Result<Range<usize>, Status> {
        if self.listing_cut(first) {
            out.u32(0)?;
            return Ok(0..0);
        }
        let first = self.start_index(first, total)?;
        let k = fit(
            out.room().saturating_sub(4),
            entry_size,
            (total - first).min(layout.returned_max()),
            self.cfg.quirks.max_entries_per_reply,
        );
        if k == 0 {
            return Err(code::COMMS_ERROR);
        }
        let remaining = self
            .remaining(total - first - k)
            .min(layout.remaining_max());
        out.u32(k as u32 | ((remaining as u32) << layout.remaining_shift))?;
        Ok(first..first + k)
    }

    /// One page of `entries` from index `first` (see [`Self::page_range`]).
    pub(crate) fn write_page<E: PageEntry>(
        &self,
        out: &mut Out<'_>,
        first: u32,
        entries: &[E],
        layout: PageFlags,
    ) -> reply::Result {
        let range = self.page_range(out, first, entries.len(), E::SIZE, layout)?;
        for e in entries.iter().skip(range.start).take(range.len()) {
            e.write(out)?;
        }
        Ok(())
    }
}
