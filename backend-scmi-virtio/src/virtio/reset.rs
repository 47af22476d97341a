//! Device reset with confirmation (virtio 1.2 §2.4): write status 0, then wait until the device
//! reads back 0, bounded by a [`Deadline`] on a [`Clock`] through the one waiting loop of
//! `fwipc_transport_api` ([`wait_until`]). Transport-independent (any virtio-drivers `Transport`),
//! so any virtio backend can use it.

use core::convert::Infallible;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use fwipc_transport_api::{wait_until, Clock, Deadline, Instant, Wait};
use virtio_drivers::transport::{DeviceStatus, Transport as VirtioTransport};

/// What one status read counts as on the fallback clock of an embedder that configured no
/// [`Clock`]: the wait then ends after `timeout / STATUS_READ_TIME` reads (a million for one
/// second). A status read is a device register access (an MMIO load, often a trap to the VMM),
/// which takes at least this long.
pub const STATUS_READ_TIME: Duration = Duration::from_micros(1);

/// The fallback clock: advances [`STATUS_READ_TIME`] each time it is read, and the reset wait reads
/// it once per status read.
#[derive(Default)]
struct StatusReads {
    reads: AtomicU64,
}

impl Clock for StatusReads {
    fn now(&self) -> Instant {
        // Relaxed: a private counter of one waiting loop; it publishes nothing.
        let n = self.reads.fetch_add(1, Ordering::Relaxed);
        Instant(n.saturating_mul(STATUS_READ_TIME.as_nanos() as u64))
    }
}

/// Reset the device behind `transport` and wait until its status reads back 0, for at most
/// `timeout` on `clock` (without one: on the status-read estimate, [`STATUS_READ_TIME`] each).
/// `true` if the reset was confirmed: the device no longer accesses the rings or any buffer it
/// held. `false`: it may still, so the caller must keep all of it quarantined.
pub(super) fn reset_confirmed<T: VirtioTransport>(
    transport: &mut T,
    clock: Option<&dyn Clock>,
    timeout: Duration,
) -> bool {
    transport.set_status(DeviceStatus::empty());
    let reads = StatusReads::default();
    let clock: &dyn Clock = clock.unwrap_or(&reads);
    let deadline = Deadline::after(clock, timeout);
    let transport = &*transport;
    wait_until(
        || Ok::<bool, Infallible>(transport.get_status().is_empty()),
        // Nothing wakes a reset waiter: it polls (under the channel lock, so it cannot park).
        |_| false,
        clock,
        deadline,
        Wait::Poll,
    )
    .unwrap_or_else(|never| match never {})
}
