//! Configuration of a [`super::ScmiVirtio`] instance.

use alloc::sync::Arc;
use core::time::Duration;

use fwipc_transport_api::Clock;

/// Linux `VIRTIO_SCMI_MAX_MSG_SIZE`: payload bytes per message.
pub const DEFAULT_MAX_MSG_SIZE: usize = 128;
/// Linux `MSG_TOKEN_MAX`: at most this many messages per channel (10-bit tokens).
pub const MAX_MESSAGES: usize = 1024;

/// How to set up the transport. `Default` gives Linux's sizes.
#[derive(Clone)]
pub struct ScmiVirtioConfig {
    /// Largest request/response payload (bytes after the header, resp. after header + status).
    pub max_msg_size: usize,
    /// cmdq size to configure; `None` = the device's maximum, capped at 2048 (1024 messages).
    /// Must be a power of two not above the device maximum. Messages = size / 2, capped at 1024.
    pub cmdq_size: Option<u32>,
    /// eventq size; `None` = the device's maximum capped at 1024. Buffers = size, capped at 1024.
    pub eventq_size: Option<u32>,
    /// Bytes of each eventq buffer (header + payload of the largest P2A message); default
    /// 8 + `max_msg_size` like Linux's 136.
    pub eventq_buf_size: Option<usize>,
    /// Negotiate `VIRTIO_SCMI_F_P2A_CHANNELS` when offered (sets up the eventq).
    pub p2a: bool,
    /// Whether the embedder calls [`super::ScmiVirtio::complete`] from the device's interrupt
    /// (or a thread woken by it). `false`: nothing will, so every transfer is served by polling
    /// whatever completion mode its request names: `poll_done` drains the cmdq for it and
    /// `register_waker` declines (waiters poll in naps), instead of a request in interrupt mode
    /// waiting out its whole timeout; releasing the channel lock skips the full barrier that
    /// orders it against a concurrent `complete` (`irq_gate`), one per channel call; and both
    /// queues ask the device for no interrupts (`VIRTQ_AVAIL_F_NO_INTERRUPT`, or with
    /// `EVENT_IDX` a `used_event` that is never re-armed; virtio 1.2 §2.7.10), which a device
    /// may still send. A polled-only embedder should say so. Default `true`.
    pub interrupts: bool,
    /// Negotiate `VIRTIO_F_RING_EVENT_IDX` when offered (both queues then suppress kicks and
    /// interrupts through `avail_event`/`used_event`); false keeps the flags-word scheme.
    pub event_idx: bool,
    /// Clock bounding `shutdown`'s wait for the last user (without one: `shutdown_spins`
    /// iterations), the reset wait (`reset_timeout`) and stall detection (`stall_timeout`, off
    /// without a clock).
    pub clock: Option<Arc<dyn Clock + Send + Sync>>,
    /// How long `shutdown` waits for users to leave (with `clock`).
    pub shutdown_timeout: Duration,
    /// Iteration bound of the wait when there is no clock.
    pub shutdown_spins: u64,
    /// How long a device reset may take to read back status 0 (virtio 1.2 §2.4) before it counts
    /// as unconfirmed ([`super::ScmiVirtioError::ResetUnconfirmed`]: the device's buffers and
    /// rings are quarantined). Measured on `clock`; without one each status read counts as
    /// [`super::STATUS_READ_TIME`]. Default 1 s.
    pub reset_timeout: Duration,
    /// With a `clock`: a device that holds requests and returns no used element at all for this
    /// long is declared stalled ([`super::ScmiVirtioError::DeviceStalled`]): the transfers it
    /// holds end with `Cancelled`, later sends fail with `Shutdown` at once, and everything it
    /// can still reach is quarantined like after an unconfirmed reset. Checked by `send` and
    /// `poll_done` (every waiter polls at least every 100 ms). Pick it above the slowest command
    /// the platform serves. `None` (or no `clock`): never. Default 10 s.
    pub stall_timeout: Option<Duration>,
}

impl Default for ScmiVirtioConfig {
    fn default() -> Self {
        ScmiVirtioConfig {
            max_msg_size: DEFAULT_MAX_MSG_SIZE,
            cmdq_size: None,
            eventq_size: None,
            eventq_buf_size: None,
            p2a: true,
            interrupts: true,
            event_idx: true,
            clock: None,
            shutdown_timeout: Duration::from_secs(1),
            shutdown_spins: 50_000_000,
            reset_timeout: Duration::from_secs(1),
            stall_timeout: Some(Duration::from_secs(10)),
        }
    }
}

impl core::fmt::Debug for ScmiVirtioConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ScmiVirtioConfig")
            .field("max_msg_size", &self.max_msg_size)
            .field("cmdq_size", &self.cmdq_size)
            .field("eventq_size", &self.eventq_size)
            .field("eventq_buf_size", &self.eventq_buf_size)
            .field("p2a", &self.p2a)
            .field("interrupts", &self.interrupts)
            .field("event_idx", &self.event_idx)
            .field("clock", &self.clock.is_some())
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("shutdown_spins", &self.shutdown_spins)
            .field("reset_timeout", &self.reset_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .finish()
    }
}
