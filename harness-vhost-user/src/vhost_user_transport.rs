//! `VhostUserTransport`: a `virtio_drivers::transport::Transport` that is a vhost-user
//! *front-end*. Device status and feature writes by the driver become vhost-user messages to a
//! back-end daemon over a Unix socket; `notify` writes the queue's kick eventfd; the daemon signals
//! used buffers on the queue's call eventfd.
//!
//! | virtio-drivers `Transport` | vhost-user |
//! |---|---|
//! | `read_device_features` | GET_FEATURES at connect, minus `VHOST_USER_F_PROTOCOL_FEATURES` (bit 30) |
//! | `set_status(FEATURES_OK)` | SET_FEATURES(driver features \| bit 30) |
//! | `set_status(DRIVER_OK)` | per queue: SET_VRING_NUM/BASE/ADDR/CALL/KICK/ENABLE, then a GET_FEATURES barrier |
//! | `set_status(0)` after DRIVER_OK | GET_VRING_BASE per running queue (stops the rings) |
//! | `notify(q)` | write kick eventfd `q` |
//! | `ack_interrupt` | non-blocking reads of the call eventfds |
//! | config space | none: the SCMI device has no config space (`ConfigSpaceMissing`) |
//!
//! Connection (in [`VhostUserTransport::connect`]): SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES
//! (MQ only), GET_QUEUE_NUM, SET_MEM_TABLE with the whole guest memfd.
//!
//! Vhost-user errors cannot be returned through the virtio-drivers trait (its methods are
//! infallible), so the first one is kept ([`VhostUserTransport::error`]) and the device status then
//! reads `DEVICE_NEEDS_RESET`.
//!
//! A dead back-end: when the socket hangs up (the daemon exited or closed it, or the watchdog
//! below shut it down), the transport behaves like a device that failed (virtio 1.2 §2.1.2): the
//! next `ack_interrupt` reports a configuration change ([`crate::Interrupts`] wakes the
//! interrupt thread for it), the status reads `DEVICE_NEEDS_RESET` and `FEATURES_OK` no longer
//! sticks. A reset (status 0) reads back 0 only once the back-end's process (its pid from
//! `SO_PEERCRED` at connect) has exited: only then is it sure that nothing maps the guest memory
//! any more (a frozen daemon whose socket the watchdog shut down still does). A driver that resets
//! on `DEVICE_NEEDS_RESET`, as fwipc's SCMI backend does, so ends its in-flight transfers at
//! once and refuses later ones instead of waiting out their timeouts; the error is
//! [`VhostUserTransportError::Disconnected`].
//!
//! Every exchange that waits for the back-end (connect handshake, the DRIVER_OK barrier,
//! GET_VRING_BASE) runs under a watchdog: if the daemon does not answer within the reply timeout
//! ([`VhostUserTransport::set_reply_timeout`], default 5 s) the socket is shut down and the request
//! fails. Socket timeouts cannot do this: the `vhost` crate retries `EAGAIN` forever. The data
//! path (kicks, used-buffer signals) never touches the socket.

use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserVirtioFeatures};
use vhost::{VhostBackend, VringConfigData};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{Error as VirtioError, PhysAddr};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::guest_memory::GuestMemory;
use crate::interrupts::{drain, hung_up, poll_fds};

/// The virtio device id of SCMI (virtio spec 5.17). virtio-drivers 0.13's `DeviceType` has no
/// variant for it, so [`Transport::device_type`] cannot say it; this constant can.
pub const VIRTIO_ID_SCMI: u32 = 32;

/// vhost-user has no message for a queue's maximum size; vhost-device-scmi's is 1024 (read in its
/// `max_queue_size()`, and the limit it enforces on SET_VRING_NUM).
pub const DEFAULT_MAX_QUEUE_SIZE: u32 = 1024;

/// Errors of the vhost-user front-end.
#[derive(Debug)]
pub enum VhostUserTransportError {
    /// The socket never accepted a connection before the deadline.
    ConnectTimeout,
    /// A socket or eventfd operation failed.
    Io(io::Error),
    /// A vhost-user request failed (for this back-end usually: it exited).
    VhostUser(vhost::Error),
    /// The back-end does not offer something the front-end needs.
    Unsupported(&'static str),
    /// The connection is gone: the back-end exited or closed the socket, or it stopped answering
    /// and the reply watchdog shut the socket down. Nothing more will be answered.
    Disconnected,
}

/// What [`VhostUserTransport::error`] returns for a hang-up seen before any request failed.
static DISCONNECTED: VhostUserTransportError = VhostUserTransportError::Disconnected;

impl std::fmt::Display for VhostUserTransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ConnectTimeout => f.write_str("vhost-user socket did not accept in time"),
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::VhostUser(e) => write!(f, "vhost-user request failed: {e}"),
            Self::Unsupported(what) => write!(f, "back-end lacks {what}"),
            Self::Disconnected => f.write_str("vhost-user back-end disconnected"),
        }
    }
}

impl std::error::Error for VhostUserTransportError {}

/// Into the fwipc API error: a failed connection or request means the device is gone.
impl From<VhostUserTransportError> for fwipc_transport_api::Error {
    fn from(e: VhostUserTransportError) -> Self {
        match e {
            VhostUserTransportError::ConnectTimeout => fwipc_transport_api::Error::Timeout,
            VhostUserTransportError::Unsupported(_) => fwipc_transport_api::Error::NotSupported,
            VhostUserTransportError::Io(_)
            | VhostUserTransportError::VhostUser(_)
            | VhostUserTransportError::Disconnected => fwipc_transport_api::Error::Shutdown,
        }
    }
}

impl From<io::Error> for VhostUserTransportError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<vhost::Error> for VhostUserTransportError {
    fn from(e: vhost::Error) -> Self {
        Self::VhostUser(e)
    }
}

impl From<vhost::vhost_user::Error> for VhostUserTransportError {
    fn from(e: vhost::vhost_user::Error) -> Self {
        Self::VhostUser(e.into())
    }
}

/// What the driver told us about one queue (`queue_set`).
#[derive(Debug, Clone, Copy, Default)]
struct QueueConfig {
    size: u32,
    desc: PhysAddr,
    driver: PhysAddr,
    device: PhysAddr,
    /// Set up in the back-end (between DRIVER_OK and reset).
    running: bool,
}

/// A vhost-user front-end playing the virtio transport for one device.
pub struct VhostUserTransport {
    fe: Frontend,
    /// A second handle on the front-end's socket, to shut it down when the back-end stops
    /// answering (the `vhost` crate retries EAGAIN forever, so socket timeouts cannot bound a
    /// reply wait).
    control: UnixStream,
    reply_timeout: Duration,
    mem: &'static GuestMemory,
    /// Device features without `VHOST_USER_F_PROTOCOL_FEATURES`.
    device_features: u64,
    driver_features: u64,
    status: DeviceStatus,
    max_queue_size: u32,
    queues: Vec<QueueConfig>,
    kick: Vec<EventFd>,
    call: Vec<EventFd>,
    error: Option<VhostUserTransportError>,
    /// The socket was seen hung up (sticky). Atomic because `get_status` (`&self`) records it.
    disconnected: AtomicBool,
    /// The configuration-change interrupt for the hang-up was delivered (by `ack_interrupt`).
    disconnect_acked: bool,
    /// The back-end's process id (`SO_PEERCRED` at connect), if the socket told it.
    peer_pid: Option<libc::pid_t>,
    /// The last reset (status 0) after the hang-up found the back-end's process exited. Atomic
    /// because `get_status` (`&self`) may confirm it later (see `RECHECK_EXIT_EVERY`).
    reset_confirmed: AtomicBool,
    /// Status reads since the last unconfirmed reset (paces the process-exit re-checks).
    unconfirmed_reads: AtomicU32,
}

/// After a reset the hang-up left unconfirmed, every this many status reads look again whether
/// the back-end's process has exited: a killed daemon's socket closes while the process is still
/// exiting (not yet a zombie), so the check at the reset itself can come too early. Paced
/// because the driver polls the status in a tight loop and each check reads `/proc`.
const RECHECK_EXIT_EVERY: u32 = 64;

impl std::fmt::Debug for VhostUserTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserTransport")
            .field(
                "device_features",
                &format_args!("{:#x}", self.device_features),
            )
            .field(
                "driver_features",
                &format_args!("{:#x}", self.driver_features),
            )
            .field("status", &self.status)
            .field("queues", &self.queues)
            .field("error", &self.error)
            .field("disconnected", &self.disconnected)
            .finish_non_exhaustive()
    }
}

const PROTOCOL_FEATURES_BIT: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// How long a control-path exchange may wait for the daemon, by default.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

impl VhostUserTransport {
    /// Connect to the vhost-user back-end listening at `socket` (retrying until `timeout` while the
    /// socket does not exist or refuses), and hand it `mem` as the guest's memory. The driver's
    /// buffers must come from `mem` (use the matching [`crate::MemfdHal`]).
    pub fn connect(
        socket: &Path,
        mem: &'static GuestMemory,
        timeout: Duration,
    ) -> Result<Self, VhostUserTransportError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) if Instant::now() >= deadline => {
                    log::warn!("vhost-user connect to {socket:?}: {e}");
                    return Err(VhostUserTransportError::ConnectTimeout);
                }
                Err(e) => return Err(e.into()),
            }
        };
        let control = stream.try_clone()?;
        let peer_pid = peer_pid(&control);
        // The back-end checks num_queues against this; SCMI has 2 (cmdq, eventq).
        let fe = Frontend::from_stream(stream, 2);
        let (fe, features, nq) =
            with_watchdog(&control, REPLY_TIMEOUT, move || Self::handshake(fe, mem))?;

        let mut kick = Vec::with_capacity(nq);
        let mut call = Vec::with_capacity(nq);
        for _ in 0..nq {
            kick.push(EventFd::new(EFD_NONBLOCK)?);
            call.push(EventFd::new(EFD_NONBLOCK)?);
        }
        Ok(VhostUserTransport {
            fe,
            control,
            reply_timeout: REPLY_TIMEOUT,
            mem,
            device_features: features & !PROTOCOL_FEATURES_BIT,
            driver_features: 0,
            status: DeviceStatus::empty(),
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            queues: vec![QueueConfig::default(); nq],
            kick,
            call,
            error: None,
            disconnected: AtomicBool::new(false),
            disconnect_acked: false,
            peer_pid,
            reset_confirmed: AtomicBool::new(false),
            unconfirmed_reads: AtomicU32::new(0),
        })
    }

    /// SET_OWNER .. SET_MEM_TABLE; returns the front-end, the device features and the number
    /// of queues.
    fn handshake(
        mut fe: Frontend,
        mem: &GuestMemory,
    ) -> Result<(Frontend, u64, usize), VhostUserTransportError> {
        fe.set_owner()?;
        // GET_FEATURES must precede GET_PROTOCOL_FEATURES (the front-end checks bit 30 first).
        let features = fe.get_features()?;
        if features & PROTOCOL_FEATURES_BIT == 0 {
            return Err(VhostUserTransportError::Unsupported(
                "VHOST_USER_F_PROTOCOL_FEATURES",
            ));
        }
        let pf = fe.get_protocol_features()?;
        if !pf.contains(VhostUserProtocolFeatures::MQ) {
            return Err(VhostUserTransportError::Unsupported("protocol feature MQ"));
        }
        // Only MQ: REPLY_ACK, CONFIG etc. are not offered by vhost-device-scmi and not needed.
        fe.set_protocol_features(VhostUserProtocolFeatures::MQ)?;
        let nq = fe.get_queue_num()?;
        let nq = usize::try_from(nq.min(64)).unwrap_or(64);
        if nq == 0 {
            return Err(VhostUserTransportError::Unsupported("any queue"));
        }
        fe.set_mem_table(&[mem.region_info()])?;
        Ok((fe, features, nq))
    }

    /// Bound on each vhost-user exchange that waits for the back-end (default 5 s). When it
    /// passes, the connection is shut down (the back-end is considered dead): the waiting request
    /// fails, and so does every later one. A shorter bound makes teardown against a frozen daemon
    /// fail fast.
    pub fn set_reply_timeout(&mut self, timeout: Duration) {
        self.reply_timeout = timeout;
    }

    /// Queues the back-end has (GET_QUEUE_NUM).
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// The first vhost-user failure since connect, if any;
    /// [`VhostUserTransportError::Disconnected`] if the connection hung up before any request
    /// failed.
    pub fn error(&self) -> Option<&VhostUserTransportError> {
        self.error
            .as_ref()
            .or_else(|| self.peer_gone().then_some(&DISCONNECTED))
    }

    /// Whether the back-end's process has exited (it is gone from `/proc`, or a zombie, whose
    /// memory is released). `false` when its pid is unknown or it still runs (also when stopped).
    /// A pid reused by another process reads as running: the safe answer.
    pub fn peer_exited(&self) -> bool {
        let Some(pid) = self.peer_pid else {
            return false;
        };
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // "pid (comm) S ...": the state follows the last ')'.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| matches!(state, 'Z' | 'X')),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        }
    }

    /// Whether the reset after the hang-up is confirmed, looking again (every
    /// `RECHECK_EXIT_EVERY` reads) whether the back-end's process has exited since.
    fn reset_confirmed_now(&self) -> bool {
        // Relaxed (all): see `set_status`.
        if self.reset_confirmed.load(Ordering::Relaxed) {
            return true;
        }
        let n = self.unconfirmed_reads.fetch_add(1, Ordering::Relaxed);
        if n % RECHECK_EXIT_EVERY == RECHECK_EXIT_EVERY - 1 && self.peer_exited() {
            self.reset_confirmed.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Whether the connection is gone (the back-end exited or closed the socket, or the reply
    /// watchdog shut it down). Checks the socket without blocking; once true, stays true.
    pub fn peer_gone(&self) -> bool {
        // Relaxed: a sticky flag; the socket itself is the source of truth, nothing is
        // published with the flag.
        if self.disconnected.load(Ordering::Relaxed) {
            return true;
        }
        let gone = hung_up(self.control.as_raw_fd()).unwrap_or_else(|e| {
            log::error!("vhost-user: polling the socket failed: {e}");
            true
        });
        if gone {
            log::error!("vhost-user back-end disconnected");
            // Relaxed: see above.
            self.disconnected.store(true, Ordering::Relaxed);
        }
        gone
    }

    /// The features the driver wrote (what SET_FEATURES carried, minus bit 30).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// A handle to wait on the call (used-buffer) eventfds and for a hang-up of the connection
    /// ([`crate::Interrupts::DISCONNECTED`]) from another thread.
    pub fn interrupts(&self) -> io::Result<crate::Interrupts> {
        let fds = self
            .call
            .iter()
            .map(|e| e.try_clone())
            .collect::<io::Result<Vec<_>>>()?;
        crate::Interrupts::new(fds, Some(self.control.try_clone()?))
    }

    /// Wait until the back-end signals queue `queue`'s call eventfd, or `timeout` passes. Returns
    /// whether it signalled (the signal is consumed).
    pub fn wait_call(&self, queue: u16, timeout: Duration) -> io::Result<bool> {
        let Some(evt) = self.call.get(usize::from(queue)) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        if poll_fds(&[evt.as_raw_fd()], timeout)? == 0 {
            return Ok(false);
        }
        drain(evt);
        Ok(true)
    }

    /// Run `f` (vhost-user requests) with the reply watchdog armed.
    fn guarded<R>(&mut self, f: impl FnOnce(&mut Self) -> vhost::Result<R>) -> vhost::Result<R> {
        let control = self.control.try_clone().map_err(vhost::Error::IOError)?;
        let timeout = self.reply_timeout;
        with_watchdog(&control, timeout, || f(self))
    }

    fn record(&mut self, what: &str, r: vhost::Result<()>) {
        if let Err(e) = r {
            log::error!("vhost-user {what} failed: {e}");
            if self.error.is_none() {
                self.error = Some(e.into());
            }
        }
    }

    fn va(&self, gpa: PhysAddr) -> vhost::Result<u64> {
        self.mem
            .gpa_to_frontend_va(gpa)
            .ok_or(vhost::Error::InvalidGuestMemory)
    }

    /// DRIVER_OK: hand every configured queue to the back-end.
    fn start_queues(&mut self) -> vhost::Result<()> {
        for i in 0..self.queues.len() {
            let q = self.queues[i];
            if q.size == 0 || q.running {
                continue;
            }
            let num = u16::try_from(q.size).map_err(|_| vhost::Error::InvalidQueue)?;
            self.fe.set_vring_num(i, num)?;
            self.fe.set_vring_base(i, 0)?;
            // SET_VRING_ADDR carries front-end virtual addresses; the back-end translates them
            // with the userspace_addr of the region sent in SET_MEM_TABLE.
            let cfg = VringConfigData {
                queue_max_size: u16::try_from(self.max_queue_size).unwrap_or(u16::MAX),
                queue_size: num,
                flags: 0,
                desc_table_addr: self.va(q.desc)?,
                used_ring_addr: self.va(q.device)?,
                avail_ring_addr: self.va(q.driver)?,
                log_addr: None,
            };
            self.fe.set_vring_addr(i, &cfg)?;
            self.fe.set_vring_call(i, &self.call[i])?;
            self.fe.set_vring_kick(i, &self.kick[i])?;
            self.fe.set_vring_enable(i, true)?;
            self.queues[i].running = true;
        }
        // Barrier: without REPLY_ACK the set_* messages are not answered, and a kick that reaches
        // the back-end before it processed SET_VRING_ENABLE is read and dropped. A request that
        // is answered proves everything before it was processed.
        self.fe.get_features()?;
        Ok(())
    }

    /// Reset after DRIVER_OK: GET_VRING_BASE stops each running ring in the back-end.
    fn stop_queues(&mut self) -> vhost::Result<()> {
        for i in 0..self.queues.len() {
            if self.queues[i].running {
                self.queues[i].running = false;
                self.fe.get_vring_base(i)?;
            }
        }
        Ok(())
    }
}

impl Drop for VhostUserTransport {
    fn drop(&mut self) {
        // Stop the rings synchronously before the socket closes: after a disconnect the daemon
        // tears its worker down asynchronously, and guest pages are reused by the next user of
        // the pool, so a ring must never be left running on memory we are about to forget.
        if self.queues.iter().any(|q| q.running) && !self.peer_gone() {
            if let Err(e) = self.guarded(Self::stop_queues) {
                log::warn!("stopping rings on drop: {e}");
            }
        }
    }
}

/// The process id of the peer of a connected Unix socket (`SO_PEERCRED`, unix(7)).
fn peer_pid(socket: &UnixStream) -> Option<libc::pid_t> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes and `len` is `cred`'s size, as SO_PEERCRED
    // requires; the fd is open for the duration of the call (borrowed from `socket`).
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some(cred.pid)
}

/// Run `f` while a watchdog thread shuts `socket` down if `f` has not finished within `timeout`
/// (a back-end that stops answering would otherwise block `f` forever). Only used around
/// control-path exchanges (setup, ring start/stop), never per request.
fn with_watchdog<R>(socket: &UnixStream, timeout: Duration, f: impl FnOnce() -> R) -> R {
    std::thread::scope(|s| {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        s.spawn(move || {
            if done_rx.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
                log::error!("vhost-user back-end did not answer within {timeout:?}: disconnecting");
                let _ = socket.shutdown(Shutdown::Both);
            }
        });
        let r = f();
        // Dropping the sender wakes the watchdog with `Disconnected`: it exits without acting.
        drop(done_tx);
        r
    })
}

impl Transport for VhostUserTransport {
    fn device_type(&self) -> DeviceType {
        // virtio-drivers 0.13 has no SCMI (32) variant and no "unknown" one; `Socket` is a
        // placeholder the SCMI driver must not rely on. See `VIRTIO_ID_SCMI`.
        DeviceType::Socket
    }

    fn read_device_features(&mut self) -> u64 {
        self.device_features
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        if driver_features & !self.device_features != 0 {
            log::warn!(
                "driver accepted features the device did not offer: {:#x}",
                driver_features & !self.device_features
            );
        }
        self.driver_features = driver_features & self.device_features;
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        if usize::from(queue) < self.queues.len() {
            self.max_queue_size
        } else {
            0
        }
    }

    fn notify(&mut self, queue: u16) {
        match self.kick.get(usize::from(queue)) {
            Some(k) => {
                if let Err(e) = k.write(1) {
                    log::error!("kick of queue {queue} failed: {e}");
                }
            }
            None => log::error!("notify of nonexistent queue {queue}"),
        }
    }

    fn get_status(&self) -> DeviceStatus {
        if self.peer_gone() {
            // A failed device: the status reads DEVICE_NEEDS_RESET, and FEATURES_OK and
            // DRIVER_OK never stick, so re-initialisation fails instead of starting rings nobody
            // serves. A reset is confirmed (status 0) only when the back-end's process has
            // exited: a daemon whose socket the watchdog shut down may be frozen, not dead, and
            // still map the memory.
            if self.status.is_empty() && self.reset_confirmed_now() {
                return DeviceStatus::empty();
            }
            return (self.status - DeviceStatus::FEATURES_OK - DeviceStatus::DRIVER_OK)
                | DeviceStatus::DEVICE_NEEDS_RESET;
        }
        if self.error.is_some() {
            self.status | DeviceStatus::DEVICE_NEEDS_RESET
        } else {
            self.status
        }
    }

    fn set_status(&mut self, status: DeviceStatus) {
        let old = self.status;
        self.status = status;
        if self.peer_gone() {
            // Nobody to tell. A reset is confirmed if the back-end's process has exited (read
            // once here, not on every status read: a driver polls the status after a reset).
            // Relaxed (both): flags read and written under the driver's lock of this transport;
            // they publish no data.
            self.unconfirmed_reads.store(0, Ordering::Relaxed);
            self.reset_confirmed
                .store(status.is_empty() && self.peer_exited(), Ordering::Relaxed);
            for q in &mut self.queues {
                q.running = false;
            }
            return;
        }
        if status.is_empty() {
            if old.contains(DeviceStatus::DRIVER_OK) {
                let r = self.guarded(Self::stop_queues);
                self.record("stop rings (GET_VRING_BASE)", r);
            }
            return;
        }
        if status.contains(DeviceStatus::FEATURES_OK) && !old.contains(DeviceStatus::FEATURES_OK) {
            let r = self
                .fe
                .set_features(self.driver_features | PROTOCOL_FEATURES_BIT);
            self.record("SET_FEATURES", r);
        }
        if status.contains(DeviceStatus::DRIVER_OK) && !old.contains(DeviceStatus::DRIVER_OK) {
            let r = self.guarded(Self::start_queues);
            self.record("start rings", r);
        }
    }

    fn set_guest_page_size(&mut self, _guest_page_size: u32) {
        // Only legacy MMIO has a guest page size.
    }

    fn requires_legacy_layout(&self) -> bool {
        false
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        match self.queues.get_mut(usize::from(queue)) {
            Some(q) => {
                *q = QueueConfig {
                    size,
                    desc: descriptors,
                    driver: driver_area,
                    device: device_area,
                    running: false,
                }
            }
            None => log::error!("queue_set of nonexistent queue {queue}"),
        }
    }

    fn queue_unset(&mut self, queue: u16) {
        let i = usize::from(queue);
        if i >= self.queues.len() {
            return;
        }
        if self.queues[i].running && !self.peer_gone() {
            self.queues[i].running = false;
            let r = self.guarded(|t| t.fe.get_vring_base(i).map(|_| ()));
            self.record("GET_VRING_BASE", r);
        }
        self.queues[i] = QueueConfig::default();
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.queues
            .get(usize::from(queue))
            .is_some_and(|q| q.size != 0)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        let mut any = false;
        for c in &self.call {
            any |= drain(c) != 0;
        }
        let mut isr = if any {
            InterruptStatus::QUEUE_INTERRUPT
        } else {
            InterruptStatus::empty()
        };
        // A hang-up is reported once, as a configuration change (the status then reads
        // DEVICE_NEEDS_RESET).
        if !self.disconnect_acked && self.peer_gone() {
            self.disconnect_acked = true;
            isr |= InterruptStatus::DEVICE_CONFIGURATION_INTERRUPT;
        }
        isr
    }

    fn read_config_generation(&self) -> u32 {
        0
    }

    fn read_config_space<T: FromBytes + IntoBytes>(
        &self,
        _offset: usize,
    ) -> virtio_drivers::Result<T> {
        // vhost-device-scmi offers no VHOST_USER_PROTOCOL_F_CONFIG and SCMI has no config space.
        Err(VirtioError::ConfigSpaceMissing)
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        _offset: usize,
        _value: T,
    ) -> virtio_drivers::Result<()> {
        Err(VirtioError::ConfigSpaceMissing)
    }
}
