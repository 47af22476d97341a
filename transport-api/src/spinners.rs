//! [`Spinners`]: the count behind a transport's [`Transport::spinning`] hint.
//!
//! A transport that asks its remote for no interrupt while callers spin acts at two moments
//! only: when the first caller starts spinning (ask for none) and when the last one stops (ask
//! again, then take what arrived meanwhile, which raised none). This type tells the two apart.
//! It is a plain count, kept under the lock that already guards the transport's interrupt
//! request (a ring's suppression flag), so that the count and the request change together: two
//! callers' hints cannot pass each other between them.
//!
//! [`Transport::spinning`]: crate::Transport::spinning

/// The number of callers spinning on one transport's replies now (see the module doc).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Spinners(u32);

impl Spinners {
    /// Nobody spinning.
    pub const fn new() -> Self {
        Spinners(0)
    }

    /// A caller starts spinning. `true` if it is the only one: the moment to ask the remote for
    /// no interrupts.
    #[must_use]
    pub fn enter(&mut self) -> bool {
        self.0 = self.0.saturating_add(1);
        self.0 == 1
    }

    /// A caller stops spinning. `true` if it was the last one: the moment to ask for interrupts
    /// again and take what arrived meanwhile. A `leave` without an `enter` (a caller's
    /// unpaired hint) counts nothing and returns `false`.
    #[must_use]
    pub fn leave(&mut self) -> bool {
        match self.0.checked_sub(1) {
            Some(n) => {
                self.0 = n;
                n == 0
            }
            None => false,
        }
    }

    /// Callers spinning now.
    pub const fn count(&self) -> u32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_in_and_the_last_out_are_told_apart() {
        let mut s = Spinners::new();
        assert!(s.enter(), "the first spinner pauses");
        assert!(!s.enter(), "a second one finds it paused");
        assert!(!s.leave(), "one still spins");
        assert!(s.leave(), "the last one resumes");
        assert_eq!(s.count(), 0);
        assert!(!s.leave(), "an unpaired leave resumes nothing");
        assert_eq!(s.count(), 0);
        assert!(s.enter(), "and the next spinner is the first again");
    }
}
