//! The multi-part "describe / list" messages shared by several protocols
//! (docs/protocols/scmi.md §5): one page parser per shape and one request loop for all of them.
//!
//! A page starts with a flags word holding the entries returned (low bits) and the entries
//! remaining (high bits); the counts go through the [`Pager`] before any entry is consumed.
//! A *segmented* page (bit 12: clock rates, voltage levels, update intervals) instead holds
//! exactly three values, (lowest, highest, step), and must be the only page.

use fwipc_transport_api::{Clock, Transport};

use super::agent::Scmi;
use super::error::{self, Malformed};
use super::multipart::Pager;
use super::wire::Reader;

/// Where a page's flags word keeps its counts. The simulated platform writes pages with the
/// same layouts (`crate::platform`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageFlags {
    /// Mask of the "returned" field (bits from 0 up).
    pub(crate) returned_mask: u32,
    /// Shift of the "remaining" field (to bit 31).
    pub(crate) remaining_shift: u32,
}

#[cfg(feature = "platform")]
impl PageFlags {
    /// Most entries one page can say it returns.
    pub(crate) const fn returned_max(&self) -> usize {
        self.returned_mask as usize
    }

    /// Most entries one page can say remain.
    pub(crate) const fn remaining_max(&self) -> usize {
        (u32::MAX >> self.remaining_shift) as usize
    }
}

/// Returned 11:0, remaining 31:16 (clock rates, voltage levels, sensor descriptions and update
/// intervals).
pub(crate) const RETURNED_12_REMAINING_16: PageFlags = PageFlags {
    returned_mask: 0xFFF,
    remaining_shift: 16,
};

/// Returned 15:0, remaining 31:16 (performance levels).
pub(crate) const RETURNED_16_REMAINING_16: PageFlags = PageFlags {
    returned_mask: 0xFFFF,
    remaining_shift: 16,
};

/// Returned 5:0, remaining 31:26 (sensor axis descriptions).
pub(crate) const RETURNED_6_REMAINING_6: PageFlags = PageFlags {
    returned_mask: 0x3F,
    remaining_shift: 26,
};

/// Flags bit 12: the page is a segmented (lowest, highest, step) triplet.
pub(crate) const SEGMENTED: u32 = 1 << 12;

/// Read the flags word: (flags, returned, remaining).
fn read_flags(r: &mut Reader<'_>, layout: PageFlags) -> Result<(u32, u32, u32), Malformed> {
    let flags = r.u32()?;
    Ok((
        flags,
        flags & layout.returned_mask,
        flags >> layout.remaining_shift,
    ))
}

/// Check the counts with `pager`, then run `entry` once per returned entry. Returns
/// (returned, remaining), or (0, 0) when the pager says the enumeration is over.
fn entries(
    r: &mut Reader<'_>,
    pager: &mut Pager,
    returned: u32,
    remaining: u32,
    mut entry: impl FnMut(&mut Reader<'_>, &Pager) -> Result<(), Malformed>,
) -> Result<(u32, u32), Malformed> {
    if !pager.check(returned, remaining)? {
        return Ok((0, 0));
    }
    for _ in 0..returned {
        entry(r, pager)?;
    }
    Ok((returned, remaining))
}

/// One page of a list: the flags word as `layout` says, then the entries, each consumed by
/// `entry` (which also sees the pager, e.g. for the total). Returns (returned, remaining).
pub(crate) fn parse_list_page(
    r: &mut Reader<'_>,
    pager: &mut Pager,
    layout: PageFlags,
    entry: impl FnMut(&mut Reader<'_>, &Pager) -> Result<(), Malformed>,
) -> Result<(u32, u32), Malformed> {
    let (_, returned, remaining) = read_flags(r, layout)?;
    entries(r, pager, returned, remaining, entry)
}

/// One page of a description that is either discrete values or a segmented range: returned
/// 11:0, bit 12 segmented (exactly 3 returned, 0 remaining, first page), remaining 31:16, then
/// values read by `read`. Returns `range(lowest, highest, step)`, or (returned, remaining)
/// after passing each discrete value to `f`.
pub(crate) fn parse_segmented_page<V, D>(
    r: &mut Reader<'_>,
    pager: &mut Pager,
    read: fn(&mut Reader<'_>) -> Result<V, Malformed>,
    range: fn(V, V, V) -> D,
    f: &mut dyn FnMut(V),
) -> Result<Result<D, (u32, u32)>, Malformed> {
    let (flags, returned, remaining) = read_flags(r, RETURNED_12_REMAINING_16)?;
    if flags & SEGMENTED != 0 {
        if returned != 3 || remaining != 0 || pager.index() != 0 {
            return Err(Malformed::BadLength);
        }
        let lowest = read(r)?;
        let highest = read(r)?;
        let step = read(r)?;
        return Ok(Ok(range(lowest, highest, step)));
    }
    entries(r, pager, returned, remaining, |r, _| {
        f(read(r)?);
        Ok(())
    })
    .map(Err)
}

impl<T: Transport, C: Clock> Scmi<T, C> {
    /// Request page after page of `message` (parameters: `id` if any, then the start index)
    /// until `pager` is complete or `page` says nothing remains. `page` parses one reply: a
    /// final answer `Ok(d)` (a segmented range) ends the loop with `Ok(d)`; (returned,
    /// remaining) advances the pager. Without a final answer, returns `Err(count)`.
    pub(crate) fn describe_pages<D>(
        &self,
        protocol: u8,
        message: u8,
        id: Option<u32>,
        mut pager: Pager,
        mut page: impl FnMut(&mut Reader<'_>, &mut Pager) -> Result<Result<D, (u32, u32)>, Malformed>,
    ) -> error::Result<Result<D, u32>> {
        while !pager.complete() {
            let idx = pager.index();
            let parse = |r: &mut Reader<'_>| page(r, &mut pager);
            let reply = match id {
                Some(id) => self.cmd(protocol, message, &[id, idx], parse),
                None => self.cmd(protocol, message, &[idx], parse),
            }?;
            match reply {
                Ok(d) => return Ok(Ok(d)),
                Err((returned, remaining)) => {
                    if !pager.advance(returned, remaining) {
                        break;
                    }
                }
            }
        }
        // A listing that stopped before its total (announced, or fixed by the first page) is
        // malformed, not a shorter list (docs/protocols/scmi.md §5).
        pager.finish().map(Err).map_err(|m| self.malformed(m))
    }

    /// [`Self::describe_pages`] for a plain list (no segmented form): returns the count.
    pub(crate) fn list_pages(
        &self,
        protocol: u8,
        message: u8,
        id: Option<u32>,
        pager: Pager,
        mut page: impl FnMut(&mut Reader<'_>, &mut Pager) -> Result<(u32, u32), Malformed>,
    ) -> error::Result<u32> {
        let done = self.describe_pages(protocol, message, id, pager, |r, p| {
            page(r, p).map(Err::<core::convert::Infallible, _>)
        })?;
        Ok(match done {
            Ok(never) => match never {},
            Err(count) => count,
        })
    }
}
