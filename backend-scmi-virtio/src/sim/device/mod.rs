//! [`SimDevice`]: a simulated virtio-scmi device. A device thread reads the very descriptor,
//! available and used rings the driver writes (identity-mapped shared memory), hosts a
//! [`PlatformModel`], and raises an interrupt line; [`SimTransport`] is the driver's view of the
//! device's register file (a virtio-drivers `Transport`).
//!
//! Fault knobs ([`Fault`] via [`RemoteControl`], plus [`SimDevice::set_reorder`] and
//! [`SimDevice::inject_used`]): hold replies until released (late replies), drop (never return
//! buffers), duplicate used entries, wrong token, bad used length, corrupt header, delayed and
//! out-of-order completion, platform reset with transfers in flight, garbage in the used rings
//! and eventq buffers, a reset never confirmed ([`SimDevice::set_refuse_reset`]), a device that
//! stops consuming ([`SimDevice::set_stop_consuming`]). Delayed responses and notifications
//! wait in the platform until eventq buffers exist.
//!
//! Kicks: in [`SimMode::Spin`] the device thread polls its rings and asks the driver for no
//! kicks; in [`SimMode::Normal`], after serving, it does so for one bounded spin
//! ([`SimDeviceConfig::watch_when_idle`]), then asks for kicks again and sleeps until one comes
//! (or its 20 ms tick); [`SimDeviceConfig::kick_only`] decides whether a tick alone makes it
//! look at the rings.
//!
//! Files: this one (the configuration, the device state, the device thread, [`SimDevice`]),
//! `model.rs` (what the device does with the rings), `guest_mem.rs` (its accesses to guest
//! memory), `faults.rs` (the fault knobs, counters and [`RemoteControl`]), `irq_line.rs`
//! (the interrupt line: [`SimDevice::set_irq_handler`], [`IrqLine`]), `sim_transport.rs`
//! ([`SimTransport`]), `tests.rs`.
//!
//! [`RemoteControl`]: fwipc_transport_api::fixture::RemoteControl

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fwipc_transport_api::fixture::{Fault, SimMode, SimModeSwitch, TagLog};
use fwipc_transport_api::SpinBudget;
use virtio_drivers::transport::DeviceStatus;
use virtio_drivers::PhysAddr;

use fwipc_virtio::device_ring::KickQuiet;

use crate::platform::PlatformModel;
use crate::virtio::ring::RingLayout;

mod event_peer;
mod faults;
mod guest_mem;
mod irq_line;
mod model;
mod sim_transport;
#[cfg(test)]
mod tests;

pub use event_peer::PEER_NOTIFY_MESSAGE;
pub use faults::DOUBLE_FETCH;
pub use irq_line::{IrqHandler, IrqLine};
pub use sim_transport::SimTransport;

/// Largest buffer the device agrees to read or write (a sanity bound on driver lengths).
const MAX_DEVICE_BUF: u32 = 1 << 20;

/// Builds a fresh platform (at start and at every `reset_remote`).
pub type PlatformFactory = Box<dyn Fn() -> Box<dyn PlatformModel> + Send + Sync>;

/// Static properties of the simulated device.
#[derive(Debug, Clone, Copy)]
pub struct SimDeviceConfig {
    /// `max_queue_size` for both queues.
    pub queue_max: u32,
    /// Offer `VIRTIO_SCMI_F_P2A_CHANNELS` (and expose the eventq).
    pub offer_p2a: bool,
    /// Offer `VIRTIO_F_VERSION_1` (false = a legacy device, which the driver must refuse).
    pub offer_version_1: bool,
    /// Offer `VIRTIO_F_RING_EVENT_IDX`. When negotiated the device implements its side: it
    /// publishes `avail_event` (= the next avail index it will read) whenever it runs out of
    /// work, and raises the queue interrupt only when `used_event` asks for it.
    pub offer_event_idx: bool,
    /// Offer `VIRTIO_F_ACCESS_PLATFORM` (a device behind the platform's DMA translation).
    pub offer_access_platform: bool,
    /// Play the host of a protected VM: the only guest memory it may touch is this window
    /// (`start`, `len`) the guest shared. A ring or buffer address outside it is refused (the
    /// chain is returned empty, like a malformed one) and counted
    /// ([`SimDevice::outside_window`]). `None`: all memory is reachable.
    pub shared_window: Option<(PhysAddr, u64)>,
    /// Look at the available rings only after a kick (like a real vhost back-end), instead of
    /// also on every 20 ms idle tick. A driver that skips a kick the device asked for then
    /// stalls, which a bounded test sees.
    pub kick_only: bool,
    /// In [`SimMode::Normal`], once a pass finds nothing to do, watch the command queue's
    /// `avail.idx` for one bounded spin (its length learned per thread, [`SpinBudget`]) with the
    /// driver's kicks turned off (virtio 1.2 §2.7.10), serving what is posted meanwhile, as a
    /// busy-polling back-end does between requests; then ask for kicks again, look at the rings
    /// once more and sleep. `false`: ask for a kick from the first idle moment, which a test of
    /// the driver's kick decisions needs (with `kick_only`).
    pub watch_when_idle: bool,
}

impl Default for SimDeviceConfig {
    fn default() -> Self {
        SimDeviceConfig {
            queue_max: 2048,
            offer_p2a: true,
            offer_version_1: true,
            offer_event_idx: true,
            offer_access_platform: false,
            shared_window: None,
            kick_only: true,
            watch_when_idle: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct QueueCfg {
    size: u16,
    desc: PhysAddr,
    driver: PhysAddr,
    device: PhysAddr,
    last_avail: u16,
    used_idx: u16,
    /// The request for no kicks while the device polls this queue ([`Dev::polling`]).
    kicks: KickQuiet,
}

impl QueueCfg {
    fn ready(&self) -> bool {
        self.desc != 0 && self.driver != 0 && self.device != 0 && self.size.is_power_of_two()
    }
    fn layout(&self) -> RingLayout {
        RingLayout::new(self.size)
    }
}

/// A reply the device has computed but not yet returned.
#[derive(Debug)]
struct Reply {
    head: u16,
    bytes: Vec<u8>,
    resp_addr: PhysAddr,
    resp_len: u32,
    /// Used length to report instead of `bytes.len()` (bad-length fault).
    used_len: Option<u32>,
    /// Return the chain twice (duplicate fault).
    twice: bool,
}

struct Dev {
    cfg: SimDeviceConfig,
    status: DeviceStatus,
    driver_features: u64,
    queues: [QueueCfg; 2],
    /// `Shared::kicks` as the device last consumed it ([`Shared::take_kick`]).
    kicks_seen: u64,
    /// The device thread polls the available rings ([`SimMode::Spin`]) and has asked the driver
    /// not to notify it (virtio 1.2 §2.7.10, as a busy-polling vhost back-end does): the first
    /// pass in another mode asks for notifications again and looks at the rings once, since a
    /// post made meanwhile kicked nobody ([`Dev::set_polling`]).
    polling: bool,
    /// The caller's steps ([`RemoteControl::step`]) are polling passes
    /// ([`SimMode::SteppedPolling`]: kicks off) rather than a kicked device's
    /// ([`SimMode::Stepped`]).
    ///
    /// [`RemoteControl::step`]: fwipc_transport_api::fixture::RemoteControl::step
    step_polls: bool,
    quit: bool,
    fault: Fault,
    reorder: bool,
    /// XOR applied to every reply header word (e.g. 1 = right token, wrong message id).
    header_xor: u32,
    held: Vec<Reply>,
    delayed: Vec<(Instant, Reply)>,
    /// Chains swallowed by the Drop fault or forgotten by a platform reset.
    swallowed: u64,
    event_bufs: VecDeque<(u16, PhysAddr, u32)>,
    seen: TagLog,
    received: u64,
    malformed: u64,
    /// Ring or buffer addresses outside `cfg.shared_window` (each refused).
    outside_window: u64,
    corrupt_toggle: bool,
    /// Queue interrupts raised / suppressed by `used_event`.
    irqs_raised: u64,
    irqs_suppressed: u64,
    /// Ignore a write of status 0 (a device that never completes a reset, virtio 1.2 §2.4).
    refuse_reset: bool,
    /// Stop consuming: take nothing from the available rings and return nothing (a hung device
    /// that signals nothing, not even `DEVICE_NEEDS_RESET`).
    stopped: bool,
    /// Double-fetch fault: rewrite what was just published, this many more times
    /// ([`SimDevice::rewrite_after_publish`]).
    rewrites: u8,
    /// The XOR masks of those rewrites: reply header word, reply status word; byte 8 odd also
    /// makes the used length invalid.
    rewrite_mask: [u8; 9],
    model: Box<dyn PlatformModel>,
    /// Reused buffers (the steady state allocates nothing): the request being read, spent
    /// reply buffers, the batch of replies, the P2A message being built.
    scratch_req: Vec<u8>,
    spare: Vec<Vec<u8>>,
    batch: Vec<Reply>,
    p2a_buf: Vec<u8>,
}

/// Spent reply buffers the device keeps for reuse.
const SPARE_MAX: usize = 64;

/// Loads of `avail.idx` a polling device thread makes under the device lock before it lets
/// the driver have the lock (which the driver takes only to set up, reset or configure the
/// device; it reads the status register without it).
const SPIN_WATCH_TURNS: u32 = 64;

struct Shared {
    dev: Mutex<Dev>,
    wake: Condvar,
    isr: Mutex<u32>,
    irq: Condvar,
    factory: PlatformFactory,
    /// How the device thread runs ([`RemoteControl::set_sim_mode`](fwipc_transport_api::fixture::RemoteControl::set_sim_mode)).
    mode: SimModeSwitch,
    /// A kick (or device-side work) since the device thread last looked: lets it spin without
    /// taking the device lock while idle in [`SimMode::Normal`], and ends a polling thread's
    /// watch of the rings early.
    kick_hint: AtomicBool,
    /// `Dev::status`, stored under the device lock wherever it changes
    /// ([`Shared::publish_status`]), so the driver reads the status register without that lock:
    /// a register read must not queue behind a device pass, nor behind a polling device
    /// thread's watch of the rings (the driver reads it every few hundred idle polls).
    status: AtomicU32,
    /// Kicks (driver queue notifications) received. The driver's `notify` adds one without the
    /// device lock, so a kick costs the driver no lock the device thread holds while it serves;
    /// the device has a kick to serve while this differs from `Dev::kicks_seen`.
    kicks: AtomicU64,
    /// The device thread is about to wait, or waits, on `wake` (a kick must wake it); see
    /// `device_thread` and `SimTransport::notify` for the handshake.
    sleeping: AtomicBool,
    /// Threads in [`IrqLine::wait`]; changed and read under the `isr` lock.
    irq_waiters: AtomicUsize,
    /// The driver's interrupt handler, run by the device thread when the line is raised
    /// ([`SimDevice::set_irq_handler`]). Read-locked while it runs, so replacing it waits for
    /// a delivery in progress.
    irq_handler: RwLock<Option<IrqHandler>>,
    /// Whether `irq_handler` is set: lets the device thread skip the lock when none is.
    irq_handled: AtomicBool,
}

impl Shared {
    /// One pass of the device loop: consume the kick, handle new chains (if kicked, or always
    /// without `kick_only`), deliver what is due, raise the interrupt line. Returns whether it
    /// was kicked. A pass after polling ([`Shared::serve_polling`]) asks for notifications
    /// again and handles new chains whether kicked or not.
    fn serve(&self, d: &mut Dev) -> bool {
        self.serve_as(d, false)
    }

    /// One pass of the device thread in [`SimMode::Spin`]: as [`Shared::serve`], handling new
    /// chains on every pass, with the driver's notifications suppressed.
    fn serve_polling(&self, d: &mut Dev) -> bool {
        self.serve_as(d, true)
    }

    fn serve_as(&self, d: &mut Dev, polling: bool) -> bool {
        // Consume the kick whatever the state (a kick racing a reset must not make us spin).
        let kicked = self.take_kick(d);
        if d.driver_ok() && !d.stopped {
            let look = d.set_polling(polling);
            if kicked || look || polling || !d.cfg.kick_only {
                d.process_cmdq(&self.isr);
                d.process_eventq(&self.isr);
            }
            d.deliver_due(&self.isr);
            d.deliver_p2a(&self.isr);
            // Waking the line costs a system call: only when an interrupt thread waits on it.
            // Relaxed, before the `isr` lock is taken (so a pass while nobody waits, every
            // polled one, takes it not at all): a waiter counts itself in under that lock and
            // looks at `isr` there before it sleeps (`IrqLine::wait`), and every change this
            // pass made to `isr` was made under that lock before this load. A waiter counted in
            // before such a change is seen here (its critical section happens-before the
            // change's, so before this load); one counted in after it finds `isr` set and does
            // not sleep.
            if self.irq_waiters.load(Ordering::Relaxed) > 0 {
                let isr = lock(&self.isr);
                if *isr != 0 {
                    drop(isr);
                    self.irq.notify_all();
                }
            }
        }
        kicked
    }

    /// Store `d.status` for the driver's lock-free reads (`status`); called with the device
    /// lock `d` comes from, after every change.
    fn publish_status(&self, d: &Dev) {
        // Release: pairs with the Acquire load in `SimTransport::get_status`; what the change
        // did under the lock (a reset's rings forgotten) is done before it is read as done.
        self.status.store(d.status.bits(), Ordering::Release);
    }

    /// Consume the driver's kicks since the last pass, if any: a load and a compare with the
    /// count last seen (kept under the device lock `d` comes from), no read-modify-write, so a
    /// pass that finds none leaves the line with the driver.
    fn take_kick(&self, d: &mut Dev) -> bool {
        // Acquire: pairs with the driver's increment in `SimTransport::notify` (the ring
        // contents are ordered by the rings' own Release/Acquire indices; this only says
        // "look").
        let k = self.kicks.load(Ordering::Acquire);
        let kicked = k != d.kicks_seen;
        d.kicks_seen = k;
        kicked
    }

    /// Whether a driver kick is waiting to be served.
    fn kick_pending(&self, d: &Dev) -> bool {
        // Relaxed: a hint; `take_kick` in the next pass orders what it found.
        self.kicks.load(Ordering::Relaxed) != d.kicks_seen
    }

    /// Tell a spinning device thread to look (see `kick_hint`).
    fn hint(&self) {
        // Release: pairs with the Acquire swap in `device_thread`; the device lock orders the
        // state itself, this only says "look".
        self.kick_hint.store(true, Ordering::Release);
    }

    /// [`SimDeviceConfig::watch_when_idle`]'s watch, kicks already off (`d` is polling): look
    /// at the command queue's `avail.idx` through one backoff of the thread's `idle` budget
    /// until the driver posts, device-side work is hinted or the device is told to quit (`true`:
    /// serve it), or the budget runs out (`false`); the budget learns from which. The device
    /// lock is held while the thread spins (it keeps the rings alive; the driver takes it only
    /// to set up, reset or configure) and let go for each of the budget's yields.
    fn watch_idle<'a>(
        &'a self,
        mut d: MutexGuard<'a, Dev>,
        idle: &SpinBudget,
    ) -> (MutexGuard<'a, Dev>, bool) {
        let mut b = idle.backoff();
        let busy = loop {
            if d.quit || d.watch_avail(1, &self.kick_hint) {
                break true;
            }
            // Relaxed: a hint; the next pass looks at everything. Acquire: as in
            // `device_thread`'s spin mode.
            if self.kick_hint.load(Ordering::Relaxed) {
                self.kick_hint.swap(false, Ordering::Acquire);
                break true;
            }
            let mut held = Some(d);
            let paused = b.snooze(|| {
                drop(held.take());
                std::thread::yield_now();
                held = Some(lock(&self.dev));
            });
            d = held.unwrap_or_else(|| lock(&self.dev));
            if !paused {
                break false;
            }
        };
        idle.learn(&b, busy);
        (d, busy)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking device thread must not take the tests down with poisoned locks.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn device_thread(sh: Arc<Shared>) {
    let mut d = lock(&sh.dev);
    // In `Normal`: the thread watches the command queue with kicks off (`Shared::watch_idle`),
    // so its passes serve as polling ones until the watch runs out.
    let mut watching = false;
    // In `Normal`: the thread was kicked or found a post since it last slept, so it watches
    // for the next one when idle. A thread woken by its timer alone sleeps again at once.
    let mut active = false;
    // The thread's idle spin (the watch, or the spin before it sleeps), learned from how its
    // idle waits end.
    let idle = SpinBudget::new();
    loop {
        if d.quit {
            return;
        }
        let mode = sh.mode.take();
        // `Spin` polls anyway; `Stepped`'s first step asks for kicks again (a pass that is not
        // polling) and looks; `SteppedPolling`'s steps poll.
        watching &= mode == SimMode::Normal;
        match mode {
            SimMode::Normal => {}
            SimMode::Spin => {
                // Poll like a busy-polling back-end: a pass over the rings, then watch the
                // command queue's `avail.idx` for the next post (the driver does not kick: the
                // pass asked it not to). The watch holds the device lock, which keeps the rings
                // alive (a reset takes it), for a bounded number of turns, then lets the
                // driver have it.
                if !d.quit {
                    sh.serve_polling(&mut d);
                    d = sh.deliver_irq(d);
                    if d.watch_avail(SPIN_WATCH_TURNS, &sh.kick_hint) {
                        // A post: serve it without handing the lock round.
                        continue;
                    }
                }
                // Relaxed: a hint (device-side work, or a kick a driver sent anyway); the
                // next pass looks at everything. Acquire: pairs with `Shared::hint`'s store.
                if sh.kick_hint.load(Ordering::Relaxed) {
                    sh.kick_hint.swap(false, Ordering::Acquire);
                }
                drop(d);
                d = lock(&sh.dev);
                continue;
            }
            SimMode::Stepped | SimMode::SteppedPolling => {
                // Idle without the lock and off the `wake` condvar: the caller steps (and the
                // interrupt a step raises is delivered by `step`); a line raised otherwise
                // (fault injection) is delivered at the next tick. Set before the mode is
                // acknowledged (the next `take`), so the caller's first step sees it.
                d.step_polls = mode == SimMode::SteppedPolling;
                drop(d);
                sh.mode.idle();
                d = sh.deliver_irq(lock(&sh.dev));
                continue;
            }
        }
        let kicked = if watching {
            sh.serve_polling(&mut d)
        } else {
            sh.serve(&mut d)
        };
        d = sh.deliver_irq(d);
        active |= kicked;
        if (kicked && d.driver_ok()) || sh.kick_pending(&d) || d.quit {
            // Work may have arrived while we processed: look again. The lock is released and
            // re-taken so a driver waiting for it gets a turn; the pass after this one, with
            // nothing new, idles without the lock. No `yield_now` here: on a machine with a
            // core per thread it was a system call per request for nothing, and it made the
            // parked round trip ((c) in docs/benchmarks.md) four to eight times slower.
            drop(d);
            d = lock(&sh.dev);
            continue;
        }
        if d.cfg.watch_when_idle && active && d.driver_ok() && !d.stopped {
            // Idle: watch the command queue with kicks off for one bounded spin (a post within
            // it costs the driver no kick and neither side an OS wake-up), serving what comes.
            if !watching {
                // A polling pass: finding the rings empty, it turns the kicks off.
                watching = true;
                sh.serve_polling(&mut d);
                d = sh.deliver_irq(d);
            }
            let (g, busy) = sh.watch_idle(d, &idle);
            d = g;
            if busy {
                continue;
            }
            // Nothing within the budget: a pass that is not polling asks for kicks again and
            // looks at the rings once more (a post made while they were off kicked nobody),
            // then sleep as below; a kick from now on ends the sleep.
            watching = false;
            active = false;
            let kicked = sh.serve(&mut d);
            d = sh.deliver_irq(d);
            if kicked || sh.kick_pending(&d) || d.quit {
                continue;
            }
        } else {
            if watching {
                // A watch the device may not go on with (stopped, or the driver reset it):
                // kicks on again before it sleeps, on whatever rings are live.
                watching = false;
                active = false;
                let _ = d.set_polling(false);
            }
            // Idle: spin briefly without the lock before sleeping (a kick within the budget
            // costs no OS wake-up on either side; bounded, then sleep as before).
            drop(d);
            // A plain load first, then the swap that consumes the hint (orderings as in the
            // spin mode above).
            let hinted = idle.spin_until(
                || {
                    sh.kick_hint.load(Ordering::Relaxed)
                        && sh.kick_hint.swap(false, Ordering::Acquire)
                },
                std::thread::yield_now,
            );
            d = lock(&sh.dev);
            // A kick that came while we spun is in `kicks` (added before the hint).
            if hinted || sh.kick_pending(&d) || d.quit {
                continue;
            }
        }
        let wait = d
            .next_due()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(20))
            .min(Duration::from_millis(20));
        // The handshake with `SimTransport::notify`, which adds to `kicks` and then reads
        // `sleeping` without the lock: SeqCst store here and SeqCst load of `kicks` after it,
        // against its SeqCst increment of `kicks` and load of `sleeping`, so at least one of us
        // sees the other's write. Either we see the kick and do not wait, or it sees us
        // sleeping and notifies `wake` after taking the lock we hold until the wait releases
        // it (a notify cannot fall between this check and the wait).
        sh.sleeping.store(true, Ordering::SeqCst);
        if sh.kicks.load(Ordering::SeqCst) != d.kicks_seen {
            // Relaxed: only we set it; a stale `true` costs the driver one lock and notify.
            sh.sleeping.store(false, Ordering::Relaxed);
            continue;
        }
        d = sh
            .wake
            .wait_timeout(d, wait)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        // Relaxed: as above.
        sh.sleeping.store(false, Ordering::Relaxed);
    }
}

/// A running simulated virtio-scmi device (its thread stops when this is dropped).
pub struct SimDevice {
    sh: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl core::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimDevice").finish_non_exhaustive()
    }
}

impl SimDevice {
    /// Start a device whose platform is built by `factory` (again at every `reset_remote`).
    pub fn start(
        cfg: SimDeviceConfig,
        factory: impl Fn() -> Box<dyn PlatformModel> + Send + Sync + 'static,
    ) -> Self {
        let factory: PlatformFactory = Box::new(factory);
        let model = factory();
        let sh = Arc::new(Shared {
            dev: Mutex::new(Dev {
                cfg,
                status: DeviceStatus::empty(),
                driver_features: 0,
                queues: [QueueCfg::default(); 2],
                kicks_seen: 0,
                polling: false,
                step_polls: false,
                quit: false,
                fault: Fault::None,
                reorder: false,
                header_xor: 0,
                held: Vec::new(),
                delayed: Vec::new(),
                swallowed: 0,
                event_bufs: VecDeque::new(),
                seen: TagLog::new(),
                received: 0,
                malformed: 0,
                outside_window: 0,
                corrupt_toggle: false,
                irqs_raised: 0,
                irqs_suppressed: 0,
                refuse_reset: false,
                stopped: false,
                rewrites: 0,
                rewrite_mask: [0; 9],
                model,
                scratch_req: Vec::new(),
                spare: Vec::new(),
                batch: Vec::new(),
                p2a_buf: Vec::new(),
            }),
            wake: Condvar::new(),
            isr: Mutex::new(0),
            irq: Condvar::new(),
            factory,
            mode: SimModeSwitch::new(),
            kick_hint: AtomicBool::new(false),
            status: AtomicU32::new(0),
            kicks: AtomicU64::new(0),
            sleeping: AtomicBool::new(false),
            irq_waiters: AtomicUsize::new(0),
            irq_handler: RwLock::new(None),
            irq_handled: AtomicBool::new(false),
        });
        let s2 = sh.clone();
        let thread = std::thread::Builder::new()
            .name("sim-virtio-scmi".into())
            .spawn(move || device_thread(s2))
            .expect("spawn device thread");
        SimDevice {
            sh,
            thread: Some(thread),
        }
    }

    /// The driver's view of the device (register file). One per driver.
    pub fn transport(&self) -> SimTransport {
        SimTransport {
            sh: self.sh.clone(),
        }
    }

    /// Whether the device thread sleeps (or is about to), and whether it asks the driver for
    /// no kicks (it polls, or watches idle).
    #[cfg(test)]
    pub(super) fn asleep_and_kicks_off(&self) -> (bool, bool) {
        let d = lock(&self.sh.dev);
        // Relaxed: read under the device lock, which the thread releases only in its wait
        // after setting the flag (or before it clears it).
        (self.sh.sleeping.load(Ordering::Relaxed), d.polling)
    }

    /// A handle for an interrupt-delivery thread.
    pub fn irq_line(&self) -> IrqLine {
        IrqLine {
            idle: SpinBudget::new(),
            sh: self.sh.clone(),
        }
    }

    /// Wake the device thread for device-side work (P2A messages queued). Not a driver kick: in
    /// `kick_only` mode it does not make the device look at the available rings.
    fn kick(&self) {
        self.sh.hint();
        self.sh.wake.notify_all();
    }
}

impl Drop for SimDevice {
    fn drop(&mut self) {
        lock(&self.sh.dev).quit = true;
        self.sh.wake.notify_all();
        if let Some(t) = self.thread.take() {
            // Bounded: the thread checks `quit` at least every 20 ms; a wedged one is detached
            // (and reported) rather than hanging the caller.
            let _ = super::join_bounded(t, Duration::from_secs(10), "sim-virtio-scmi device");
        }
    }
}
