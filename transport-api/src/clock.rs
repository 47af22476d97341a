//! Time without an OS: a [`Clock`] trait the embedder implements (a generic timer counter on
//! bare metal, `std::time::Instant` hosted), and [`Deadline`] built on it.

use core::time::Duration;

/// A point in time: nanoseconds since an arbitrary, clock-specific epoch. Monotonic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

impl Instant {
    /// `self + d`, saturating at the far future instead of wrapping.
    pub fn saturating_add(self, d: Duration) -> Instant {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(ns))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A monotonic time source. Must be cheap: waits call it on every poll.
pub trait Clock: Sync {
    /// The current time.
    fn now(&self) -> Instant;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

/// One clock shared by several owners: instances of one board, or a test that moves a
/// [`ManualClock`] an instance reads.
impl<C: Clock + Send + ?Sized> Clock for alloc::sync::Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
}

/// An absolute point after which a wait gives up with [`crate::Error::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// A deadline `timeout` from now on `clock`.
    pub fn after(clock: &(impl Clock + ?Sized), timeout: Duration) -> Self {
        Deadline {
            at: clock.now().saturating_add(timeout),
        }
    }

    /// A deadline at an absolute instant.
    pub const fn at(at: Instant) -> Self {
        Deadline { at }
    }

    /// A deadline that never passes (use sparingly: every wait in fwipc is meant to be bounded).
    pub const fn never() -> Self {
        Deadline {
            at: Instant(u64::MAX),
        }
    }

    /// The instant of this deadline.
    pub const fn instant(&self) -> Instant {
        self.at
    }

    /// Whether the deadline has passed on `clock`.
    pub fn expired(&self, clock: &(impl Clock + ?Sized)) -> bool {
        clock.now() >= self.at
    }

    /// Time left until the deadline (zero once expired).
    pub fn remaining(&self, clock: &(impl Clock + ?Sized)) -> Duration {
        self.at.saturating_since(clock.now())
    }
}

/// A clock that only moves when told to: deterministic tests of timeouts.
#[derive(Debug, Default)]
pub struct ManualClock {
    ns: crate::sync::AtomicU64,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Move time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed: the clock value is a single independent counter; no other memory is published
        // through it.
        self.ns.fetch_add(ns, crate::sync::Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        // Relaxed: see `advance`.
        Instant(self.ns.load(crate::sync::Ordering::Relaxed))
    }
}

/// The hosted clock: `std::time::Instant` measured from the clock's creation.
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy)]
pub struct StdClock {
    origin: std::time::Instant,
}

#[cfg(feature = "std")]
impl StdClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        StdClock {
            origin: std::time::Instant::now(),
        }
    }
}

#[cfg(feature = "std")]
impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "std")]
impl Clock for StdClock {
    fn now(&self) -> Instant {
        Instant(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_on_manual_clock() {
        let c = ManualClock::new();
        let d = Deadline::after(&c, Duration::from_millis(10));
        assert!(!d.expired(&c));
        assert_eq!(d.remaining(&c), Duration::from_millis(10));
        c.advance(Duration::from_millis(9));
        assert!(!d.expired(&c));
        c.advance(Duration::from_millis(1));
        assert!(d.expired(&c));
        assert_eq!(d.remaining(&c), Duration::ZERO);
    }

    #[test]
    fn saturating_never_wraps() {
        let c = ManualClock::new();
        c.advance(Duration::from_secs(5));
        let d = Deadline::after(&c, Duration::MAX);
        assert_eq!(d.instant(), Instant(u64::MAX));
        assert!(!Deadline::never().expired(&c));
    }

    #[cfg(feature = "std")]
    #[test]
    fn std_clock_is_monotonic() {
        let c = StdClock::new();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(c.now().saturating_since(a) >= Duration::from_millis(2));
    }
}
