//! Slot loans: a DATA message written in place in our own transmit slot (the zero-copy send of
//! docs/datagram.md, footnote (2) there explains the design).
//!
//! The sender's slots are one byte stream, parsed by the receiver in order up to the published
//! `tx_pos` (docs/protocols/vchiq.md §1 "Stream positions"). A loan reserves room for a message
//! at `tx_pos` without publishing anything: the receiver never looks beyond `tx_pos`, so the
//! reserved bytes are ours to write. Nothing else may be written to the slots while the loan is
//! out (every other sender of the instance is answered `Retry`; see [`Vchiq::loan_blocks`]), and
//! the loan's bytes are valid only while `tx_pos` has not moved. Bounded: at most one loan per
//! instance, and one older than its lifetime is discarded by the next sender that needs the
//! slots (nothing to undo, since nothing was published); its later writes are dropped by the
//! generation check, its send fails.

use core::time::Duration;

use fwipc_transport_api::{Deadline, Instant};

use crate::engine::counters::bump;
use crate::engine::service::ServiceHandle;
use crate::engine::slot_loan::SlotLoan;
use crate::engine::vchiq::{Inner, Vchiq};
use crate::error::{Result, VchiqError};
use crate::wire::consts::*;
use crate::wire::header::stride;

impl Vchiq {
    /// Whether a loan keeps everyone else from writing our slots right now. A loan past its
    /// lifetime is discarded here (its owner's send will fail).
    pub(crate) fn loan_blocks(&self, g: &mut Inner) -> bool {
        match g.loan.current {
            None => false,
            Some(l) if l.expires.expired(&*self.clock) => {
                log::warn!(target: "vchiq", "{:?} slot loan {} expired unsent", self.role, l.generation);
                g.loan.current = None;
                false
            }
            Some(_) => true,
        }
    }

    /// Reserve room in our slot for a DATA message of up to `size` bytes from open service `h`,
    /// to be written in place ([`Vchiq::loan_write`]) and sent by [`Vchiq::loan_commit`] within
    /// `lifetime`. Returns the loan's generation. `Retry` when another loan is out, a quota or
    /// the slots are exhausted; `Closed` unless `h` is open (not sync); `TooLarge` beyond 4088.
    pub(crate) fn loan_reserve(
        &self,
        h: ServiceHandle,
        size: usize,
        lifetime: Duration,
    ) -> Result<u32> {
        self.check_alive()?;
        if size > VCHIQ_MAX_MSG_SIZE {
            return Err(VchiqError::TooLarge);
        }
        let mut g = self.inner.lock();
        if self.service(&g, h)?.state != ServiceState::Open {
            return Err(VchiqError::Closed);
        }
        if self.loan_blocks(&mut g) {
            bump(&self.counters.retries);
            return Err(VchiqError::Retry);
        }
        let st = stride(size) as u32;
        self.admit_data(&mut g, h.port(), st)?;
        let hdr_off = self.reserve_space(&mut g, st)?;
        let generation = g.loan.generation.wrapping_add(1);
        g.loan.generation = generation;
        g.loan.current = Some(SlotLoan {
            generation,
            tx_pos: g.tx_pos,
            hdr_off,
            cap: size,
            port: h.port(),
            expires: Deadline::at(self.clock.now().saturating_add(lifetime)),
        });
        Ok(generation)
    }

    /// Write `data` at `offset` of the payload of loan `generation`. `false` (nothing written)
    /// if the loan is no longer live, the range is outside it, or the instance is shut down.
    pub(crate) fn loan_write(&self, generation: u32, offset: usize, data: &[u8]) -> bool {
        if self.check_alive().is_err() {
            return false;
        }
        let g = self.inner.lock();
        let Some(l) = g.loan.live(generation, g.tx_pos) else {
            return false;
        };
        if offset.checked_add(data.len()).is_none_or(|end| end > l.cap) {
            return false;
        }
        // Beyond the published `tx_pos`: the receiver does not read it until `loan_commit`
        // publishes it (Release store of tx_pos).
        self.region
            .write_bytes(l.hdr_off + VCHIQ_HEADER_SIZE + offset, data);
        true
    }

    /// Give loan `generation` back unsent (no-op if it is no longer live).
    pub(crate) fn loan_cancel(&self, generation: u32) {
        let mut g = self.inner.lock();
        if g.loan.current.is_some_and(|l| l.generation == generation) {
            g.loan.current = None;
            // Senders refused while it was out hear `TxSpace`.
            g.tx_freed = true;
        }
        drop(g);
        self.kick();
    }

    /// Discard the loan of service `h`, if one is out (its service is going away: its CLOSE must
    /// not wait for the loan).
    pub(crate) fn loan_revoke(&self, h: ServiceHandle) {
        let mut g = self.inner.lock();
        if g.loan.current.is_some_and(|l| l.port == h.port()) {
            g.loan.current = None;
            g.tx_freed = true;
        }
        drop(g);
        self.kick();
    }

    /// Send loan `generation` as a DATA message of `len` bytes from open service `h` (the one it
    /// was reserved for): write its header, publish. `Invalid` if the loan is no longer live
    /// (expired, given back, or its reservation passed), `TooLarge` beyond the reservation,
    /// `Closed` if the service is no longer open; the loan stays as it was on every error.
    pub(crate) fn loan_commit(&self, generation: u32, h: ServiceHandle, len: usize) -> Result {
        self.check_alive()?;
        let mut g = self.inner.lock();
        let Some(l) = g.loan.live(generation, g.tx_pos) else {
            return Err(VchiqError::Invalid);
        };
        if len > l.cap {
            return Err(VchiqError::TooLarge);
        }
        let s = self.service(&g, h)?;
        if s.state != ServiceState::Open || h.port() != l.port {
            return Err(VchiqError::Closed);
        }
        let remote = s.remoteport;
        g.loan.current = None;
        g.tx_freed = true;
        self.write_data_header(&mut g, l.hdr_off, l.port, remote, len);
        drop(g);
        self.kick();
        Ok(())
    }

    /// When the loan out expires (diagnostics / tests).
    pub fn loan_expiry(&self) -> Option<Instant> {
        self.inner.lock().loan.current.map(|l| l.expires.instant())
    }
}
