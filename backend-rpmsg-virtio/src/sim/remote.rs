//! The remote's service loop: a device-role [`Node`] with an echo endpoint, and the faults.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use fwipc_transport_api::fixture::{
    echo_reply_byte, DoubleFetch, Fault, RemoteControl, SimMode, SimModeSwitch, TagLog,
};
use fwipc_transport_api::SpinBudget;

use super::peer_log::PeerLog;
use super::queues::DeviceEnd;
use super::remote_end::RemoteEnd;
use super::rewrite::Rewrite;
use crate::addr::{ADDR_ANY, BUF_SIZE, HDR_SIZE, TRANSFER_ADDR_BASE};
use crate::frame::write_frame;
use crate::name::Name;
use crate::node::{Delivery, Node};
use crate::role::Role;
use crate::transport::NOTIFY_NAME;

/// Frames handled per service-loop pass.
const PASS_BUDGET: usize = 64;
/// Replies held under [`Fault::Hold`] (more are dropped).
const HELD_MAX: usize = 512;

struct Held {
    len: usize,
    data: [u8; BUF_SIZE],
}

/// The echo requests the remote took: their tags and their count, under one lock.
struct Seen {
    tags: TagLog,
    /// Requests served (see `SimRemote::serve` for when one is counted).
    received: u64,
}

/// The simulated remote, on the in-memory queues ([`DeviceEnd`], the default) or on the real
/// rings ([`RingDevice`](super::RingDevice)).
pub struct SimRemote<E: RemoteEnd = DeviceEnd> {
    pub(crate) end: E,
    pub(crate) peer: PeerLog,
    /// `spin` locks, `node` and `seen`: taken once per request each, for a parse or a log
    /// entry and the count (a `std` mutex costs two read-modify-writes a pass, a spin lock
    /// one).
    node: spin::Mutex<Node>,
    echo_addr: AtomicU32,
    fault: Mutex<Fault>,
    /// Whether `fault` is other than `Fault::None`: without one, a request is served without
    /// a look at `fault` (a std mutex costs two read-modify-writes).
    faulted: AtomicBool,
    held: Mutex<Vec<Held>>,
    seen: spin::Mutex<Seen>,
    mode: SimModeSwitch,
    thread: Mutex<Option<std::thread::Thread>>,
    pub(crate) stop: AtomicBool,
}

impl<E: RemoteEnd> core::fmt::Debug for SimRemote<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimRemote")
            .field("echo_addr", &self.echo_addr)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<E: RemoteEnd> SimRemote<E> {
    /// A remote on the device's side of the buffers. Binds and announces the echo endpoint.
    pub fn new(end: E) -> Self {
        let r = SimRemote {
            end,
            peer: PeerLog::new(),
            node: spin::Mutex::new(Node::new(Role::Device, 4, 8, true)),
            echo_addr: AtomicU32::new(0),
            fault: Mutex::new(Fault::None),
            faulted: AtomicBool::new(false),
            held: Mutex::new(Vec::with_capacity(HELD_MAX)),
            seen: spin::Mutex::new(Seen {
                tags: TagLog::new(),
                received: 0,
            }),
            mode: SimModeSwitch::new(),
            thread: Mutex::new(None),
            stop: AtomicBool::new(false),
        };
        r.start_services();
        r
    }

    /// (Re)create the node, bind the echo endpoint and announce it.
    fn start_services(&self) {
        let mut node = self.node.lock();
        *node = Node::new(Role::Device, 4, 8, true);
        let name = Name::new(super::ECHO_NAME).expect("static name");
        let addr = node.bind(name, ADDR_ANY).expect("empty table");
        // Relaxed: read by the same thread or after the fixture's synchronised set-up wait.
        self.echo_addr.store(addr, Ordering::Relaxed);
        let mut frame = [0u8; BUF_SIZE];
        if let Ok(Some(n)) = node.announce(addr, false, &mut frame) {
            drop(node);
            let _ = self.end.send(&frame[..n]);
        }
    }

    /// Bind another endpoint `name` on the remote (it serves nothing) and announce it; returns
    /// its address.
    pub fn bind_service(&self, name: &[u8]) -> Option<u32> {
        let mut node = self.node.lock();
        let addr = node.bind(Name::new(name).ok()?, ADDR_ANY).ok()?;
        let mut frame = [0u8; BUF_SIZE];
        let n = node.announce(addr, false, &mut frame).ok()??;
        drop(node);
        self.end.send(&frame[..n]).ok()?;
        Some(addr)
    }

    /// Announce the destruction of the remote endpoint at `addr`, then unbind it.
    pub fn unbind_service(&self, addr: u32) -> bool {
        let mut node = self.node.lock();
        let mut frame = [0u8; BUF_SIZE];
        let Ok(Some(n)) = node.announce(addr, true, &mut frame) else {
            return false;
        };
        let _ = node.unbind(addr);
        drop(node);
        self.end.send(&frame[..n]).is_ok()
    }

    /// The echo endpoint's address.
    pub fn echo_addr(&self) -> u32 {
        // Relaxed: see `start_services`.
        self.echo_addr.load(Ordering::Relaxed)
    }

    fn set_fault_to(&self, fault: Fault) {
        let mut f = lock(&self.fault);
        *f = fault;
        // Release: a remote that sees the flag sees the fault (it reads it under the lock
        // anyway); stored under the lock, so the flag follows the order of the changes.
        self.faulted.store(fault != Fault::None, Ordering::Release);
    }

    /// The address the driver announced for its notification endpoint.
    pub fn driver_notify_addr(&self) -> Option<u32> {
        let name = Name::new(NOTIFY_NAME).ok()?;
        self.node.lock().services().lookup(&name)
    }

    /// The device's side of the buffers.
    pub fn end(&self) -> &E {
        &self.end
    }

    /// One pass: take what the driver sent and answer it. `true` if there was any.
    pub fn step(&self) -> bool {
        self.end
            .receive(PASS_BUDGET, &mut |frame| self.serve(frame))
            > 0
    }

    /// The remote thread's loop, in the mode [`RemoteControl::set_sim_mode`] asked for.
    pub(crate) fn run(&self) {
        *lock(&self.thread) = Some(std::thread::current());
        // Whether the end asks the driver for no kicks: while the remote polls it (`Spin`) or
        // watches it idle (`Normal`, below).
        let mut polling = false;
        let mut set_polling = |on: bool| {
            if polling != on {
                polling = on;
                self.end.set_polling(on);
            }
        };
        // In `Normal`: a step found work since the remote last parked, so it steps on a while
        // when idle. A remote woken by its timeout alone parks again at once.
        let mut active = false;
        let idle = SpinBudget::new();
        // Acquire: pairs with the fixture's Release store on drop.
        while !self.stop.load(Ordering::Acquire) {
            let mode = match self.end.remote_wake() {
                Some(w) => self.mode.take_for(w),
                None => self.mode.take(),
            };
            match mode {
                SimMode::Normal => {
                    if active {
                        // Idle: step a little longer before parking, with kicks off meanwhile
                        // (a step finds a post whatever the kicks, as a busy-polling back-end's
                        // does). Bounded; then ask for kicks again and step once more below (a
                        // post made while they were off kicked nobody).
                        set_polling(true);
                        if idle.spin_until(|| self.step(), std::thread::yield_now) {
                            continue;
                        }
                        active = false;
                    }
                    // Kicks on (after the watch, or after `Spin`) before the look that precedes
                    // the park.
                    set_polling(false);
                    if self.step() {
                        active = true;
                    } else {
                        std::thread::park_timeout(Duration::from_millis(1));
                    }
                }
                SimMode::Spin => {
                    set_polling(true);
                    if !self.step() {
                        core::hint::spin_loop();
                    }
                }
                // The caller runs `step`; touch nothing. Kicks are asked for again (they only
                // unpark this thread), so a later `Normal` or `Spin` starts from them; in
                // `SteppedPolling` the caller's steps are a polling remote's, kicks off.
                SimMode::Stepped => {
                    set_polling(false);
                    self.mode.idle();
                }
                SimMode::SteppedPolling => {
                    set_polling(true);
                    self.mode.idle();
                }
            }
        }
    }

    fn serve(&self, frame: &[u8]) {
        let d = self.node.lock().receive(frame);
        let f = match d {
            Ok(Delivery::Message(f)) if f.dst == self.echo_addr() => f,
            Ok(Delivery::NameService(a) | Delivery::PeerRestarted(a)) => {
                return self.peer.on_ns(&a)
            }
            Ok(Delivery::Message(f)) if self.peer.on_message(f.src, f.dst, f.payload(frame)) => {
                return
            }
            Ok(Delivery::Message(f)) => {
                log::debug!("rpmsg sim: message for unbound address {}", f.dst);
                return;
            }
            Err(e) => {
                log::debug!("rpmsg sim: dropped a frame: {e}");
                return;
            }
        };
        let req = f.payload(frame);
        let echo = self.echo_addr();
        let mut buf = [0u8; BUF_SIZE];
        // Acquire: pairs with the Release in `set_fault_to`. A fault set after this load is one
        // set after the request was served; the fault itself is read under its lock.
        let fault = if self.faulted.load(Ordering::Acquire) {
            *lock(&self.fault)
        } else {
            Fault::None
        };
        let (src, dst) = match fault {
            Fault::WrongToken => (
                echo,
                TRANSFER_ADDR_BASE + ((f.src - TRANSFER_ADDR_BASE) ^ 0x800),
            ),
            Fault::CorruptHeader => (echo + 1, f.src),
            _ => (echo, f.src),
        };
        // The request's payload framed, then turned into the reply in place.
        let Ok(n) = write_frame(&mut buf, src, dst, req) else {
            return;
        };
        for b in buf.get_mut(HDR_SIZE..n).unwrap_or_default() {
            *b = echo_reply_byte(*b);
        }
        if fault == Fault::CorruptLength {
            // A length beyond the buffer.
            buf[12..14].copy_from_slice(&u16::MAX.to_le_bytes());
        }
        // Logged before the reply goes out (a caller that has it finds the tag logged). Without
        // a fault the request is counted in the same critical section (nothing is applied to
        // it); with one, once the fault's effect is in place (a held reply), at the end.
        {
            let mut seen = self.seen.lock();
            seen.tags.log(req);
            seen.received += u64::from(fault == Fault::None);
        }
        match fault {
            Fault::Hold => {
                let mut h = lock(&self.held);
                // The fault is read again under the held lock: a `set_fault(None)` + `release()`
                // that ran since the read above has drained the held replies already, so this
                // one is sent instead of being held for a release that never comes.
                if *lock(&self.fault) != Fault::Hold {
                    drop(h);
                    let _ = self.end.send(&buf[..n]);
                } else if h.len() < HELD_MAX {
                    h.push(Held { len: n, data: buf });
                }
            }
            Fault::Drop => {}
            Fault::Duplicate => {
                let _ = self.end.send(&buf[..n]);
                let _ = self.end.send(&buf[..n]);
            }
            Fault::Delay(d) => {
                std::thread::sleep(d);
                let _ = self.end.send(&buf[..n]);
            }
            _ => {
                let _ = self.end.send(&buf[..n]);
            }
        }
        if fault != Fault::None {
            // Under the lock `received()` reads it with: the fault's effect (the held reply) is
            // in place before the count shows it.
            self.seen.lock().received += 1;
        }
    }
}

impl<E: RemoteEnd> RemoteControl for SimRemote<E> {
    fn set_fault(&self, fault: Fault) {
        self.set_fault_to(fault);
    }

    fn release(&self) {
        let held: Vec<Held> = lock(&self.held).drain(..).collect();
        for h in held {
            let _ = self.end.send(&h.data[..h.len]);
        }
    }

    fn take_seen_tags(&self) -> Vec<u32> {
        self.seen.lock().tags.take()
    }

    fn received(&self) -> u64 {
        self.seen.lock().received
    }

    /// Garbage starting with [`DOUBLE_FETCH`](fwipc_transport_api::fixture::DOUBLE_FETCH) arms
    /// the double-fetch fault instead ([`RemoteEnd::rewrite_after_publish`] of the order's `count` frames, rewritten as
    /// [`Rewrite::from_order`] says). Other garbage lands in a receive buffer of the driver's as
    /// it is.
    fn inject_garbage(&self, bytes: &[u8]) {
        if let Some(order) = DoubleFetch::parse(bytes) {
            self.end
                .rewrite_after_publish(order.count, Rewrite::from_order(&order));
            return;
        }
        self.end.inject_to_driver(bytes);
    }

    fn reset_remote(&self) {
        lock(&self.held).clear();
        self.set_fault_to(Fault::None);
        self.end.reset();
        self.start_services();
    }

    fn set_sim_mode(&self, mode: SimMode) -> bool {
        let wake = || {
            if let Some(t) = &*lock(&self.thread) {
                t.unpark();
            }
        };
        self.mode.request(mode, &wake, Duration::from_secs(5))
    }

    fn step(&self) -> bool {
        SimRemote::step(self)
    }

    fn notify(&self, payload: &[u8]) -> bool {
        let Some(dst) = self.driver_notify_addr() else {
            return false;
        };
        let mut buf = [0u8; BUF_SIZE];
        let Ok(n) = write_frame(&mut buf, self.echo_addr(), dst, payload) else {
            return false;
        };
        debug_assert!(n >= HDR_SIZE);
        self.end.send(&buf[..n]).is_ok()
    }
}
