//! Device initialisation and reset as Virtio 1.2 §3.1.1 and §2.4 describe them, once for every
//! virtio backend: [`reset`] with a deadline, [`negotiate`] (a required and an optional feature
//! set, `FEATURES_OK` set and read back), [`driver_ok`].
//!
//! The order a driver follows:
//!
//! 1. [`reset`]; on [`ResetOutcome::Unconfirmed`] the device may still read and write every
//!    buffer it was given, so none of them may be freed or reused (keep them quarantined).
//! 2. [`negotiate`]: `ACKNOWLEDGE | DRIVER`, read the offered features, refuse the device if a
//!    required one is missing, write required + offered optional ones, set `FEATURES_OK` and read
//!    it back (a device that does not accept the subset clears it).
//! 3. Set up the virtqueues (`queue_set`), post buffers.
//! 4. [`driver_ok`]; only then may the driver notify the device.
//!
//! On every failure the device is left with status `FAILED` (Virtio 1.2 §3.1.1: a driver that
//! gives up on the device should set the FAILED status bit).
//!
//! A driver configured without a [`Clock`] bounds the reset wait on [`StatusReadClock`] (each
//! status read counted as [`STATUS_READ_TIME`]).

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use fwipc_transport_api::{Clock, Deadline, Instant};
use virtio_drivers::transport::{DeviceStatus, Transport};

use crate::error::{Error, Result};

/// `VIRTIO_F_RING_EVENT_IDX` (Virtio 1.2 §6): `used_event`/`avail_event` notification suppression.
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
/// `VIRTIO_F_VERSION_1` (Virtio 1.2 §6): a modern (non-legacy) device; every fwipc backend
/// requires it.
pub const F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_F_ACCESS_PLATFORM` (Virtio 1.2 §6): the device reaches driver memory through the
/// platform's DMA translation. A driver whose every address comes from its `Hal` may accept it.
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;

/// Status reads [`reset`] makes at most, whatever the clock says: the device controls how long
/// the status stays non-zero, and a clock that does not advance (a test's manual clock, a
/// stopped timer) must not turn the wait into an endless loop.
pub const RESET_POLL_BUDGET: u32 = 1_000_000;

/// What one status read counts as on [`StatusReadClock`]: a [`reset`] on it ends after
/// `timeout / STATUS_READ_TIME` reads (a million for one second). A status read is a device
/// register access (an MMIO load, often a trap to the VMM), which takes at least this long.
pub const STATUS_READ_TIME: Duration = Duration::from_micros(1);

/// The clock of a driver that has none: it advances [`STATUS_READ_TIME`] each time it is read,
/// and [`reset`] reads it once per status read, so the wait is bounded by a count of reads that
/// stands for the timeout. Start a fresh one for every wait.
#[derive(Debug, Default)]
pub struct StatusReadClock {
    reads: AtomicU64,
}

impl Clock for StatusReadClock {
    fn now(&self) -> Instant {
        // Relaxed: a private counter of one waiting loop; it publishes nothing.
        let n = self.reads.fetch_add(1, Ordering::Relaxed);
        Instant(n.saturating_mul(STATUS_READ_TIME.as_nanos() as u64))
    }
}

/// What a [`reset`] achieved.
#[must_use = "an unconfirmed reset means the device may still own every buffer it was given"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetOutcome {
    /// The status read back 0: the device no longer accesses the rings or any buffer; the
    /// driver owns all of them again.
    Confirmed,
    /// The status did not read back 0 before the deadline (or within [`RESET_POLL_BUDGET`]
    /// reads). The device may still access the rings and every buffer it was given: the caller
    /// must keep them allocated and unused (quarantined) until a later reset is confirmed.
    Unconfirmed,
}

/// Reset the device (write status 0) and wait until it reads back 0 (Virtio 1.2 §2.4: a reset
/// the driver initiated is complete when it reads the device status as 0), at most `timeout` on
/// `clock` and at most [`RESET_POLL_BUDGET`] reads.
pub fn reset<T: Transport>(
    transport: &mut T,
    clock: &(impl Clock + ?Sized),
    timeout: Duration,
) -> ResetOutcome {
    transport.set_status(DeviceStatus::empty());
    let deadline = Deadline::after(clock, timeout);
    for _ in 0..RESET_POLL_BUDGET {
        if transport.get_status().is_empty() {
            return ResetOutcome::Confirmed;
        }
        if deadline.expired(clock) {
            break;
        }
        core::hint::spin_loop();
    }
    log::error!("virtio: device reset unconfirmed (status still non-zero); buffers quarantined");
    ResetOutcome::Unconfirmed
}

/// Negotiate features with a device that was just [`reset`]: every bit of `required` must be
/// offered ([`Error::MissingFeatures`] otherwise), the offered bits of `optional` are taken too.
/// Returns the accepted set (`required | (optional & offered)`) once `FEATURES_OK` read back set
/// ([`Error::FeaturesRejected`] otherwise). The device is left in `FAILED` on error.
pub fn negotiate<T: Transport>(transport: &mut T, required: u64, optional: u64) -> Result<u64> {
    transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    let offered = transport.read_device_features();
    let missing = required & !offered;
    if missing != 0 {
        log::error!("virtio: device lacks required features {missing:#x}");
        transport.set_status(DeviceStatus::FAILED);
        return Err(Error::MissingFeatures(missing));
    }
    let accepted = required | (optional & offered);
    transport.write_driver_features(accepted);
    transport
        .set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
    if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
        log::error!("virtio: device refused features {accepted:#x} (FEATURES_OK not set)");
        transport.set_status(DeviceStatus::FAILED);
        return Err(Error::FeaturesRejected(accepted));
    }
    Ok(accepted)
}

/// Tell the device the driver is ready (`DRIVER_OK`, the last step of Virtio 1.2 §3.1.1), after
/// the queues are set up.
pub fn driver_ok<T: Transport>(transport: &mut T) {
    transport.set_status(
        DeviceStatus::ACKNOWLEDGE
            | DeviceStatus::DRIVER
            | DeviceStatus::FEATURES_OK
            | DeviceStatus::DRIVER_OK,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim_device::{SimDevice, SimDeviceConfig, SimTransport};
    use fwipc_transport_api::{ManualClock, StdClock};

    fn device(offered: u64) -> SimDevice {
        SimDevice::new(SimDeviceConfig {
            device_id: 7,
            features: offered,
            queues: 2,
            queue_max: 8,
        })
    }

    /// A running device that ignores resets (its status stays `ACKNOWLEDGE`).
    fn stuck_device() -> (SimDevice, SimTransport) {
        let d = device(F_VERSION_1);
        d.refuse_reset(true);
        let mut t = d.transport();
        t.set_status(DeviceStatus::ACKNOWLEDGE);
        (d, t)
    }

    #[test]
    fn required_and_optional_sets() {
        let d = device(F_VERSION_1 | F_RING_EVENT_IDX | 1);
        let mut t = d.transport();
        assert_eq!(
            reset(&mut t, &StdClock::new(), Duration::from_millis(10)),
            ResetOutcome::Confirmed
        );
        // Bit 0 offered and optional: taken; bit 1 optional, not offered: not taken.
        let got = negotiate(&mut t, F_VERSION_1, 0b11 | F_ACCESS_PLATFORM).unwrap();
        assert_eq!(got, F_VERSION_1 | 1);
        assert_eq!(d.driver_features(), F_VERSION_1 | 1);
        assert!(t.get_status().contains(DeviceStatus::FEATURES_OK));
        assert!(!t.get_status().contains(DeviceStatus::DRIVER_OK));
        driver_ok(&mut t);
        assert!(d.driver_ok());
    }

    #[test]
    fn missing_required_feature_fails_the_device() {
        let d = device(1);
        let mut t = d.transport();
        assert_eq!(
            negotiate(&mut t, F_VERSION_1, 1),
            Err(Error::MissingFeatures(F_VERSION_1))
        );
        assert_eq!(t.get_status(), DeviceStatus::FAILED);
        assert_eq!(
            d.driver_features(),
            0,
            "nothing written to a refused device"
        );
    }

    #[test]
    fn features_ok_not_sticking_is_refused() {
        let d = device(F_VERSION_1);
        d.refuse_features_ok(true);
        let mut t = d.transport();
        assert_eq!(
            negotiate(&mut t, F_VERSION_1, 0),
            Err(Error::FeaturesRejected(F_VERSION_1))
        );
        assert_eq!(t.get_status(), DeviceStatus::FAILED);
    }

    #[test]
    fn reset_that_never_completes_is_unconfirmed_by_the_deadline() {
        let d = device(F_VERSION_1);
        let mut t = d.transport();
        negotiate(&mut t, F_VERSION_1, 0).unwrap();
        driver_ok(&mut t);
        d.refuse_reset(true);
        let clock = StdClock::new();
        let start = std::time::Instant::now();
        assert_eq!(
            reset(&mut t, &clock, Duration::from_millis(20)),
            ResetOutcome::Unconfirmed
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(d.driver_ok(), "the device kept running");
        d.refuse_reset(false);
        assert_eq!(
            reset(&mut t, &clock, Duration::from_millis(20)),
            ResetOutcome::Confirmed
        );
        assert_eq!(t.get_status(), DeviceStatus::empty());
    }

    /// Without a clock of its own, a driver's reset wait counts status reads: one second is a
    /// million of them.
    #[test]
    fn reset_on_status_reads_ends_after_timeout_worth_of_reads() {
        let (d, mut t) = stuck_device();
        assert_eq!(
            reset(
                &mut t,
                &StatusReadClock::default(),
                Duration::from_millis(2)
            ),
            ResetOutcome::Unconfirmed
        );
        assert_eq!(d.status_reads(), 2_000);
        d.refuse_reset(false);
        assert_eq!(
            reset(
                &mut t,
                &StatusReadClock::default(),
                Duration::from_millis(2)
            ),
            ResetOutcome::Confirmed
        );
    }

    /// A clock that never moves: the read budget ends the wait.
    #[test]
    fn reset_wait_is_bounded_without_a_moving_clock() {
        let (d, mut t) = stuck_device();
        assert_eq!(
            reset(&mut t, &ManualClock::new(), Duration::from_secs(1)),
            ResetOutcome::Unconfirmed
        );
        assert_eq!(d.status_reads(), u64::from(RESET_POLL_BUDGET));
    }
}
