//! Bounded multi-part enumeration (docs/protocols/scmi.md §5 and §8 item 7): the request carries a
//! start index, the reply gives entries returned and remaining, and the agent repeats with index +=
//! returned.
//!
//! The [`Pager`] stops on returned = 0, rejects index + returned above the total, rejects a
//! platform that still claims entries remain once the total has arrived ("remaining = 1
//! forever"), rejects a page whose index + returned + remaining is not the total, and caps the
//! number of rounds. [`Pager::finish`] rejects a listing that ended short of its total. The total
//! is announced either elsewhere (PROTOCOL_ATTRIBUTES' sensor or protocol count, a sensor's axis
//! count) or by the first page (returned + remaining); either way it binds every later page.

use super::error::Malformed;

/// Progress of one enumeration.
#[derive(Debug, Clone, Copy)]
pub struct Pager {
    index: u32,
    total: Option<u32>,
    rounds: u32,
    max_rounds: u32,
}

impl Pager {
    /// Start at index 0. `total` is the count the platform advertised elsewhere, if known; when
    /// `None` the first reply's returned + remaining fixes it.
    pub const fn new(total: Option<u32>, max_rounds: u32) -> Self {
        Pager {
            index: 0,
            total,
            rounds: 0,
            max_rounds,
        }
    }

    /// Index to request next.
    pub const fn index(&self) -> u32 {
        self.index
    }

    /// The total, once known.
    pub const fn total(&self) -> Option<u32> {
        self.total
    }

    /// Rounds taken so far.
    pub const fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Whether every advertised entry has arrived.
    pub fn complete(&self) -> bool {
        self.total.is_some_and(|t| self.index >= t)
    }

    /// Check the next reply's counts before its entries are consumed. Returns `Ok(false)` when the
    /// enumeration is finished and this reply carries nothing (returned = remaining = 0).
    pub fn check(&mut self, returned: u32, remaining: u32) -> Result<bool, Malformed> {
        if self.rounds >= self.max_rounds {
            return Err(Malformed::TooManyRounds);
        }
        self.rounds += 1;
        if returned == 0 {
            return if remaining == 0 {
                Ok(false)
            } else {
                Err(Malformed::NoProgress)
            };
        }
        let end = self
            .index
            .checked_add(returned)
            .ok_or(Malformed::OutOfRange)?;
        let total = match self.total {
            Some(t) => t,
            None => {
                let t = end.checked_add(remaining).ok_or(Malformed::OutOfRange)?;
                self.total = Some(t);
                t
            }
        };
        if end > total {
            return Err(Malformed::OutOfRange);
        }
        if end == total && remaining != 0 {
            return Err(Malformed::NoProgress);
        }
        // Every page restates the total: what came before, what it holds, and what remains.
        if end.checked_add(remaining) != Some(total) {
            return Err(Malformed::CountMismatch);
        }
        Ok(true)
    }

    /// After the last page: the number of entries received. `CountMismatch` if a total is known
    /// (announced, or fixed by the first page) and the listing stopped short of it, e.g. a page
    /// reporting 0 returned and 0 remaining while entries were still due.
    pub fn finish(&self) -> Result<u32, Malformed> {
        match self.total {
            Some(t) if self.index != t => Err(Malformed::CountMismatch),
            _ => Ok(self.index),
        }
    }

    /// Record that `returned` entries were consumed. Returns whether to request again.
    pub fn advance(&mut self, returned: u32, remaining: u32) -> bool {
        self.index = self.index.saturating_add(returned);
        remaining != 0 && !self.complete()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_enumeration() {
        let mut p = Pager::new(Some(10), 100);
        assert_eq!(p.check(4, 6), Ok(true));
        assert!(p.advance(4, 6));
        assert_eq!(p.index(), 4);
        assert_eq!(p.check(6, 0), Ok(true));
        assert!(!p.advance(6, 0));
        assert!(p.complete());
    }

    #[test]
    fn remaining_one_forever_is_rejected() {
        let mut p = Pager::new(None, 100);
        assert_eq!(p.check(1, 1), Ok(true));
        assert!(p.advance(1, 1));
        assert_eq!(p.total(), Some(2));
        assert_eq!(p.check(1, 1), Err(Malformed::NoProgress));
    }

    #[test]
    fn overrun_and_stall_and_cap() {
        let mut p = Pager::new(Some(3), 100);
        assert_eq!(p.check(4, 0), Err(Malformed::OutOfRange));
        let mut p = Pager::new(Some(3), 100);
        assert_eq!(p.check(0, 2), Err(Malformed::NoProgress));
        let mut p = Pager::new(Some(3), 100);
        assert_eq!(p.check(0, 0), Ok(false));
        let mut p = Pager::new(Some(1000), 2);
        assert_eq!(p.check(1, 999), Ok(true));
        p.advance(1, 999);
        assert_eq!(p.check(1, 998), Ok(true));
        p.advance(1, 998);
        assert_eq!(p.check(1, 997), Err(Malformed::TooManyRounds));
        let mut p = Pager::new(Some(u32::MAX), 10);
        p.index = u32::MAX - 1;
        assert_eq!(p.check(5, 0), Err(Malformed::OutOfRange));
    }

    #[test]
    fn short_and_inconsistent_listings_are_rejected() {
        // Announced 5, the first page says nothing returned and nothing remaining.
        let mut p = Pager::new(Some(5), 100);
        assert_eq!(p.check(0, 0), Ok(false));
        assert_eq!(p.finish(), Err(Malformed::CountMismatch));
        // Announced 5, two arrive and the platform says none remain.
        let mut p = Pager::new(Some(5), 100);
        assert_eq!(p.check(2, 0), Err(Malformed::CountMismatch));
        // Fixed by the first page (2 + 3), then a page claims more than that remain.
        let mut p = Pager::new(None, 100);
        assert_eq!(p.check(2, 3), Ok(true));
        assert!(p.advance(2, 3));
        assert_eq!(p.check(1, 4), Err(Malformed::CountMismatch));
        // ... or the listing ends (0, 0) after the first page.
        let mut p = Pager::new(None, 100);
        assert_eq!(p.check(2, 3), Ok(true));
        assert!(p.advance(2, 3));
        assert_eq!(p.check(0, 0), Ok(false));
        assert_eq!(p.finish(), Err(Malformed::CountMismatch));
        // Complete listings and an empty one with nothing announced are fine.
        let mut p = Pager::new(Some(3), 100);
        assert_eq!(p.check(3, 0), Ok(true));
        assert!(!p.advance(3, 0));
        assert_eq!(p.finish(), Ok(3));
        let mut p = Pager::new(None, 100);
        assert_eq!(p.check(0, 0), Ok(false));
        assert_eq!(p.finish(), Ok(0));
        let p = Pager::new(Some(0), 100);
        assert_eq!(p.finish(), Ok(0));
    }
}
