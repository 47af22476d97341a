//! SCMI exchanges over the cmdq with a bare `VirtQueue` and a hand-rolled header: the guest's
//! self-contained path, independent of `backend-scmi-virtio` (it cross-checks the backend and keeps
//! the QEMU test meaningful if the backend regresses).
//!
//! virtio-scmi cmdq (virtio 1.2 §5.17.6.1): each command is a 2-descriptor chain, [0]
//! device-readable `header + params`, [1] device-writable `header + status + return values`.

use alloc::boxed::Box;
use alloc::vec;
use core::mem::ManuallyDrop;
use core::time::Duration;

use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport;

use fwipc_virtio::aarch64::GenericTimer;
use fwipc_virtio::hal::IdentityHal;

/// Queue size: one command in flight at a time needs 2 descriptors; 8 leaves room.
pub const CMDQ_SIZE: usize = 8;
/// Largest reply accepted (header + status + 128 bytes of return values).
pub const MAX_REPLY: usize = 8 + 128;
const MAX_PARAMS: usize = 8;
/// How long one command may take before the device is declared wedged.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Re-notify period while waiting (a kick that raced the vhost-user ring enable would be lost).
const RENOTIFY: Duration = Duration::from_millis(100);

/// SCMI message header (DEN0056 §4.1.2): msg_id[7:0] | type[9:8] | protocol_id[17:10] |
/// token[27:18].
pub fn encode_header(protocol: u8, message: u8, token: u16) -> u32 {
    u32::from(message) | (u32::from(protocol) << 10) | ((u32::from(token) & 0x3ff) << 18)
}

/// Errors of the raw path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawError {
    /// virtio-drivers failed.
    Virtio(virtio_drivers::Error),
    /// No reply within [`CALL_TIMEOUT`]; the queue is wedged and no further call is made.
    Timeout,
    /// An earlier call timed out.
    Wedged,
    /// The reply is shorter than header + status, or longer than the buffer.
    BadLength(u32),
    /// The reply header does not echo the request's.
    HeaderMismatch { sent: u32, got: u32 },
    /// The device completed a different chain than the one in flight.
    WrongChain,
    /// The platform returned a non-success SCMI status.
    Status(i32),
    /// Too many parameters for the request buffer.
    TooManyParams,
}

impl From<virtio_drivers::Error> for RawError {
    fn from(e: virtio_drivers::Error) -> Self {
        RawError::Virtio(e)
    }
}

impl core::fmt::Display for RawError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RawError::Virtio(e) => write!(f, "virtio: {e}"),
            RawError::Timeout => f.write_str("no reply within the deadline"),
            RawError::Wedged => f.write_str("queue wedged by an earlier timeout"),
            RawError::BadLength(n) => write!(f, "bad reply length {n}"),
            RawError::HeaderMismatch { sent, got } => {
                write!(f, "reply header {got:#x} does not echo {sent:#x}")
            }
            RawError::WrongChain => f.write_str("device completed an unexpected chain"),
            RawError::Status(s) => write!(f, "SCMI status {s}"),
            RawError::TooManyParams => f.write_str("too many parameters"),
        }
    }
}

/// One cmdq with its request/response buffers, allocated once at set-up.
pub struct RawScmi<T: Transport> {
    /// Taken by `into_transport`, else dropped in `Drop`.
    transport: ManuallyDrop<T>,
    transport_taken: bool,
    torn_down: bool,
    /// Dropped by hand in `Drop`: only after the device is reset, never while it may use the rings.
    cmdq: ManuallyDrop<VirtQueue<IdentityHal, CMDQ_SIZE>>,
    req: Box<[u8]>,
    resp: Box<[u8]>,
    token: u16,
    wedged: bool,
    timer: GenericTimer,
}

impl<T: Transport> RawScmi<T> {
    /// Negotiate VERSION_1 (and ACCESS_PLATFORM when offered; this path has no eventq), set up
    /// the cmdq, then DRIVER_OK.
    pub fn new(mut transport: T, timer: GenericTimer) -> Result<Self, RawError> {
        let offered = transport.read_device_features();
        let features = transport.begin_init(RawFeatures::VERSION_1 | RawFeatures::ACCESS_PLATFORM);
        log::info!(
            "raw: device features {offered:#x}, negotiated {:#x}, cmdq max {}",
            features.bits(),
            transport.max_queue_size(0)
        );
        let cmdq = VirtQueue::new(&mut transport, 0, false, false)?;
        transport.finish_init();
        Ok(RawScmi {
            transport: ManuallyDrop::new(transport),
            transport_taken: false,
            torn_down: false,
            cmdq: ManuallyDrop::new(cmdq),
            req: vec![0u8; 4 + 4 * MAX_PARAMS].into_boxed_slice(),
            resp: vec![0u8; MAX_REPLY].into_boxed_slice(),
            token: 0,
            wedged: false,
            timer,
        })
    }

    /// Send `(protocol, message, params)` and wait for the reply; returns the return values (after
    /// header and status) on SCMI SUCCESS.
    pub fn call(&mut self, protocol: u8, message: u8, params: &[u32]) -> Result<&[u8], RawError> {
        if self.wedged {
            return Err(RawError::Wedged);
        }
        if params.len() > MAX_PARAMS {
            return Err(RawError::TooManyParams);
        }
        let header = encode_header(protocol, message, self.token);
        self.token = (self.token + 1) & 0x3ff;
        self.req[..4].copy_from_slice(&header.to_le_bytes());
        for (chunk, p) in self.req[4..].chunks_exact_mut(4).zip(params) {
            chunk.copy_from_slice(&p.to_le_bytes());
        }
        let req_len = 4 + 4 * params.len();
        self.resp.fill(0);

        let inputs = [&self.req[..req_len]];
        let mut outputs = [&mut self.resp[..]];
        // SAFETY: both buffers are owned by `self` and outlive the chain: it is either popped
        // below (`pop_used`) before they are touched again, or, on timeout, `self` is marked
        // wedged and never touches or frees them again (see `Drop`).
        let desc = unsafe { self.cmdq.add(&inputs, &mut outputs) }?;
        if self.cmdq.should_notify() {
            self.transport.notify(0);
        }
        let deadline = self.timer.deadline(CALL_TIMEOUT);
        let mut renotify = self.timer.deadline(RENOTIFY);
        while !self.cmdq.can_pop() {
            if self.timer.expired(deadline) {
                self.wedged = true;
                return Err(RawError::Timeout);
            }
            if self.timer.expired(renotify) {
                self.transport.notify(0);
                renotify = self.timer.deadline(RENOTIFY);
            }
            core::hint::spin_loop();
        }
        if self.cmdq.peek_used() != Some(desc) {
            self.wedged = true;
            return Err(RawError::WrongChain);
        }
        // SAFETY: same buffers as passed to `add` for this chain, which the device has returned.
        let used = unsafe { self.cmdq.pop_used(desc, &inputs, &mut outputs) }?;
        // The device-reported length is untrusted: clamp-check it against the buffer.
        let len = usize::try_from(used).unwrap_or(usize::MAX);
        if len < 8 || len > self.resp.len() {
            return Err(RawError::BadLength(used));
        }
        let got = le32(&self.resp, 0);
        if got != header {
            return Err(RawError::HeaderMismatch { sent: header, got });
        }
        let status = le32(&self.resp, 4) as i32;
        if status != 0 {
            return Err(RawError::Status(status));
        }
        Ok(&self.resp[8..len])
    }
}

impl<T: Transport> RawScmi<T> {
    /// Reset the device and hand the transport back (for another driver instance).
    pub fn into_transport(mut self) -> T {
        self.teardown();
        self.transport_taken = true;
        // SAFETY: `transport_taken` makes `Drop` skip the transport, so it is taken exactly once.
        unsafe { ManuallyDrop::take(&mut self.transport) }
    }

    /// Reset the device, then free the rings (or leak them and every posted buffer if the device
    /// wedged and may still touch them). Idempotent.
    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        // A reset makes a working device drop its queues (QEMU then stops the vhost-user rings).
        self.transport
            .set_status(virtio_drivers::transport::DeviceStatus::empty());
        if self.wedged {
            core::mem::forget(core::mem::take(&mut self.req));
            core::mem::forget(core::mem::take(&mut self.resp));
            return;
        }
        // SAFETY: `torn_down` guarantees this runs once and nothing uses the queues afterwards
        // (`call` is only reachable before `into_transport`/`drop`); the device
        // was reset above, so it no longer owns the rings.
        unsafe { ManuallyDrop::drop(&mut self.cmdq) };
    }
}

impl<T: Transport> Drop for RawScmi<T> {
    fn drop(&mut self) {
        self.teardown();
        if !self.transport_taken {
            // SAFETY: not taken by `into_transport` (checked), and `drop` runs once.
            unsafe { ManuallyDrop::drop(&mut self.transport) };
        }
    }
}

bitflags::bitflags! {
    /// Feature bits this path negotiates.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct RawFeatures: u64 {
        /// `VIRTIO_F_VERSION_1`: must be accepted when offered.
        const VERSION_1 = 1 << 32;
        /// `VIRTIO_F_ACCESS_PLATFORM` (Virtio 1.2 §6): the device reaches guest memory through
        /// the platform's DMA translation; accepted when offered (QEMU's vhost-user devices with
        /// `iommu_platform=on` stop answering a driver that declines it). With no vIOMMU the
        /// translation is the identity, which this path's identity-mapped buffers match.
        const ACCESS_PLATFORM = 1 << 33;
    }
}

/// Little-endian u32 at `off`; 0 past the end (callers check lengths first).
pub fn le32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

/// A NUL-padded fixed-size SCMI name as `&str` (up to the first NUL; "?" if not UTF-8).
pub fn name(b: &[u8]) -> &str {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    core::str::from_utf8(&b[..end]).unwrap_or("?")
}
