//! When the device fails: `DEVICE_NEEDS_RESET` (reset and re-initialise in place), a reset that
//! is never confirmed and a device that stalls (everything it can reach quarantined, the
//! channel dead), and the reclaiming of what a confirmed reset gives back.

use core::sync::atomic::Ordering;

use fwipc_transport_api::Error;
use fwipc_virtio::negotiate;
use virtio_drivers::transport::{DeviceStatus, Transport as VirtioTransport};
use virtio_drivers::Hal;

use super::setup::{go_live, reset_device};
use super::{ScmiVirtio, State};
use crate::virtio::error::ScmiVirtioError;
use crate::virtio::features::{CMDQ, EVENTQ};
use crate::virtio::stall::StallWatch;

impl<H: Hal, T: VirtioTransport> ScmiVirtio<H, T> {
    /// With a clock and a [`ScmiVirtioConfig::stall_timeout`]: declare the device stalled if it
    /// holds requests and has returned nothing for that long (see `stall.rs`). The device is
    /// marked `FAILED` (virtio 1.2 §2.1.1: the driver gave up on it), its transfers end with
    /// `Cancelled` and everything it can reach is quarantined: a stalled device may wake up and
    /// write its buffers at any time, and nothing confirms it will not. `true` if it did.
    pub(in crate::virtio) fn check_stall(&self, st: &mut State<H, T>) -> bool {
        // Nothing held: nothing can be stalled, whatever the configuration (the common case of
        // a `send` that found its previous transfer answered; no look at the configuration).
        if st.outstanding == 0 {
            st.stall.idle();
            return false;
        }
        let (Some(clock), Some(limit)) = (self.cfg.clock.as_deref(), self.cfg.stall_timeout) else {
            return false;
        };
        if st.cmdq.is_none() || !st.stall.stalled(clock, limit, st.outstanding) {
            return false;
        }
        log::error!(
            "virtio-scmi: device stalled: {} requests held, nothing returned for {limit:?}",
            st.outstanding
        );
        st.transport.set_status(DeviceStatus::FAILED);
        self.quarantine(st, Error::Cancelled, ScmiVirtioError::DeviceStalled);
        true
    }

    pub(in crate::virtio) fn reset_locked(
        &self,
        st: &mut State<H, T>,
    ) -> core::result::Result<(), ScmiVirtioError> {
        // Relaxed: statistics counter.
        self.resets.fetch_add(1, Ordering::Relaxed);
        self.reset_and_reclaim(st, Error::Cancelled)?;
        let State {
            transport,
            cmdq,
            eventq,
            ..
        } = st;
        if cmdq.is_none() {
            return Err(ScmiVirtioError::ShutDown);
        }
        // The same features as at `new`, all required now: a device that no longer offers one
        // (or refuses FEATURES_OK) changed under us, and is left FAILED by `negotiate`.
        if negotiate::negotiate(&mut **transport, self.features.bits(), 0).is_err() {
            // The channel is dead (sends now fail `Shutdown`).
            log::error!("virtio-scmi: device refused our features after reset");
            *cmdq = None;
            *eventq = None;
            st.failure = Some(ScmiVirtioError::FeaturesRejected);
            return Err(ScmiVirtioError::FeaturesRejected);
        }
        if let Some(r) = cmdq.as_mut() {
            // Keeps the interrupt suppression of a transport without interrupts (setup).
            r.reset();
            let (d, a, u) = r.addrs();
            transport.queue_set(CMDQ, u32::from(r.size()), d, a, u);
        }
        if let Some(q) = eventq.as_mut() {
            q.ring.reset();
            let (d, a, u) = q.ring.addrs();
            transport.queue_set(EVENTQ, u32::from(q.ring.size()), d, a, u);
        }
        go_live(&mut **transport, eventq.as_mut());
        Ok(())
    }

    /// Reset the device (it stops touching our memory) and take every buffer back: posted
    /// chains end with `fail` (waiters woken), abandoned ones free their buffer and token.
    ///
    /// If the device never reads back status 0, it may still access the rings and every buffer
    /// it held: those are quarantined instead (see [`Self::quarantine`]) and the result is
    /// [`ScmiVirtioError::ResetUnconfirmed`].
    pub(in crate::virtio) fn reset_and_reclaim(
        &self,
        st: &mut State<H, T>,
        fail: Error,
    ) -> core::result::Result<(), ScmiVirtioError> {
        if !reset_device(&mut *st.transport, &self.cfg) {
            self.quarantine(st, fail, ScmiVirtioError::ResetUnconfirmed);
            return Err(ScmiVirtioError::ResetUnconfirmed);
        }
        let State {
            eventq,
            table,
            deferred,
            outstanding,
            stall,
            ..
        } = st;
        *outstanding = 0;
        *stall = StallWatch::default();
        // Every chain the device held comes back: pending transfers end with `fail` (wakers
        // deferred), abandoned ones free their buffer and token.
        table.reclaim_all(
            fail,
            |_, buf, part| {
                self.unshare(buf, part);
                part.returned();
            },
            |w| deferred.push(w),
        );
        if let Some(q) = eventq.as_mut() {
            q.unshare_posted();
        }
        Ok(())
    }

    /// The reset was not confirmed (`why` is [`ScmiVirtioError::ResetUnconfirmed`]) or the device
    /// stalled ([`ScmiVirtioError::DeviceStalled`]): the device may still read and write every
    /// buffer it held and both rings. Waiters end with `fail` and abandoned transfers free their
    /// tokens, but nothing the device can reach is un-shared or reused: each pool buffer the
    /// device held gets a leaked handle (so the pool never hands it out again and its memory
    /// outlives the channel), and the cmdq ring and the eventq (its ring and buffers) are leaked. Counted ([`Self::quarantined_buffers`]) and logged. The queues are
    /// gone afterwards, so every later transfer fails with `Shutdown`.
    pub(in crate::virtio) fn quarantine(
        &self,
        st: &mut State<H, T>,
        fail: Error,
        why: ScmiVirtioError,
    ) {
        let State {
            cmdq,
            eventq,
            table,
            deferred,
            outstanding,
            failure,
            ..
        } = st;
        *outstanding = 0;
        *failure = Some(why);
        let mut n = 0u64;
        table.reclaim_all(
            fail,
            |_, buf, part| {
                // The leaked handle keeps the buffer in use, so the pool never hands it out
                // again, and keeps the pool's memory alive after the channel is dropped.
                core::mem::forget(buf.clone());
                part.returned();
                n += 1;
            },
            |w| deferred.push(w),
        );
        if let Some(q) = eventq.take() {
            n += q.posted() as u64;
            core::mem::forget(q);
        }
        if let Some(r) = cmdq.take() {
            core::mem::forget(r);
        }
        // Relaxed: statistics counter.
        self.quarantined.fetch_add(n, Ordering::Relaxed);
        log::error!(
            "virtio-scmi: {why}: {n} buffers and the rings quarantined, the channel is dead"
        );
    }
}
