//! What the conformance suite needs from a backend: a [`Fixture`] that builds a connected pair
//! (this side's transport + a simulated remote running an *echo* service) and a [`RemoteControl`]
//! with fault-injection knobs. Backends implement these in their simulator module; the suite in
//! the `conformance` crate is generic over them.

use alloc::vec::Vec;
use core::time::Duration;

pub use crate::datagram::DatagramPeer;
pub use crate::line_layout::assert_alone as assert_line_alone;
use crate::transport::{Completion, Transport};

mod remote_wake;
mod slot_queue;
pub use remote_wake::RemoteWake;
pub use slot_queue::SlotQueue;

/// The echo service's reply to a request payload: every byte inverted, same length. Inverting
/// (rather than echoing verbatim) proves the reply was produced by the remote, not left over in
/// the request buffer.
pub fn echo_reply_byte(b: u8) -> u8 {
    !b
}

/// Fill `out` with the echo reply to `req` (lengths must match).
pub fn echo_reply(req: &[u8], out: &mut [u8]) {
    for (o, i) in out.iter_mut().zip(req) {
        *o = echo_reply_byte(*i);
    }
}

/// Prefix of garbage ([`RemoteControl::inject_garbage`]) that arms a simulated remote's
/// double-fetch fault instead of being delivered ([`DoubleFetch`]). Four bytes, so random garbage
/// practically never arms it (a coverage-guided fuzzer finds it through its comparison tracing,
/// and the committed seeds carry it).
pub const DOUBLE_FETCH: [u8; 4] = [0xdf, 0x0f, 0xe7, 0xc4];

/// A double-fetch order: garbage `DOUBLE_FETCH ++ [count] ++ header[16] ++ body..` (missing bytes
/// 0). The remote rewrites the next `count % 8 + 1` replies it sends right after publishing them
/// (and signalling), before or while this side reads them: the framing words it checks XOR
/// `header` (what each word means is the backend's, see its simulator), and each reply payload
/// byte `i` XOR `body[i % body.len()]` where the backend rewrites payloads. A driver reads each
/// byte once and checks its copy: a rewritten framing word ends the transfer with a typed error
/// (or leaves the reply unmatched, so the transfer times out); a rewritten payload, opaque to
/// the transport, arrives as one copy in which every byte is either what the remote first wrote
/// or its rewrite ([`DoubleFetch::is_rewrite_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoubleFetch {
    /// Replies to rewrite (1..=8).
    pub count: u8,
    /// XOR masks of the framing words.
    pub header: [u8; 16],
    /// XOR mask of the payload (repeated; empty: the payload is left alone).
    pub body: Vec<u8>,
}

impl DoubleFetch {
    /// The order carried by `garbage`, if it starts with [`DOUBLE_FETCH`].
    pub fn parse(garbage: &[u8]) -> Option<Self> {
        let rest = garbage.strip_prefix(&DOUBLE_FETCH)?;
        let count = rest.first().map_or(1, |c| c % 8 + 1);
        let rest = rest.get(1..).unwrap_or(&[]);
        let mut header = [0u8; 16];
        let n = rest.len().min(16);
        header[..n].copy_from_slice(&rest[..n]);
        let body = rest.get(16..).unwrap_or(&[]).to_vec();
        Some(DoubleFetch {
            count,
            header,
            body,
        })
    }

    /// Byte `i` of a payload after the rewrite of `b`.
    pub fn rewrite_body_byte(&self, i: usize, b: u8) -> u8 {
        match self.body.len() {
            0 => b,
            n => b ^ self.body[i % n],
        }
    }

    /// Whether `got` is one copy of `sent` read while or after the remote rewrote it: the same
    /// length, every byte either as sent or as rewritten, and at least one rewritten.
    pub fn is_rewrite_of(&self, sent: &[u8], got: &[u8]) -> bool {
        got.len() == sent.len()
            && got != sent
            && sent
                .iter()
                .zip(got)
                .enumerate()
                .all(|(i, (&s, &g))| g == s || g == self.rewrite_body_byte(i, s))
    }
}

/// Faults the simulated remote can be told to commit. Each applies to requests *received* while
/// it is set, until changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    None,
    /// Accept requests but hold the replies (and the buffers) until [`RemoteControl::release`].
    /// Releasing delivers them late, in order.
    Hold,
    /// Accept requests and never answer them; buffers come back only when the transport resets
    /// the remote (shutdown).
    Drop,
    /// Answer every request twice.
    Duplicate,
    /// Answer with a token/id that matches a different (or no) transfer.
    WrongToken,
    /// Answer with a length field that lies (larger than the buffer, or shorter than a header).
    CorruptLength,
    /// Answer with a corrupted header (bad type/magic/reserved bits).
    CorruptHeader,
    /// Answer each request after a delay (out-of-order completion where the remote is parallel).
    Delay(Duration),
}

/// The knobs on a backend's simulated remote.
pub trait RemoteControl: Send + Sync {
    /// Set the fault for requests received from now on.
    fn set_fault(&self, fault: Fault);
    /// Deliver every held reply now (late replies for transfers that timed out).
    fn release(&self);
    /// First 4 bytes (little-endian) of each echo request, in the order the remote received
    /// them; the log is cleared by reading. Requests shorter than 4 bytes are not logged.
    fn take_seen_tags(&self) -> Vec<u32>;
    /// Requests the remote has received in total. A request is counted only once the current
    /// fault has been applied to it (e.g. it is in the held set), so a caller that sees the count
    /// can [`RemoteControl::release`] it without a race.
    fn received(&self) -> u64;
    /// Deliver `bytes` as if the remote had sent them unsolicited (hostile input: the backend
    /// decides where they land, e.g. the reply ring or a slot). Must never make the local side
    /// panic.
    fn inject_garbage(&self, bytes: &[u8]);
    /// Whether garbage injected now ([`RemoteControl::inject_garbage`]) can complete a transfer
    /// the local side sends after it and before it reads the garbage. `true` (the default) where
    /// a completion names its transfer by an id the remote can predict (a FastRPC context, an
    /// rpmsg reply address); `false` where the local side orders a completion against the
    /// transfer it completes (a virtqueue's used ring, whose positions the driver counts: an
    /// element published before a chain was made available is not that chain's completion).
    /// The stateful fuzz session checks the replies of such later transfers only where this is
    /// `false`.
    fn garbage_reaches_later_sends(&self) -> bool {
        true
    }
    /// The remote loses all its state now, with transfers in flight.
    fn reset_remote(&self);
    /// Send an unsolicited message with `payload`. `false` if the backend has none.
    fn notify(&self, payload: &[u8]) -> bool;
    /// Switch how the remote runs (see [`SimMode`]); returns once the remote's own thread has
    /// taken the new mode (in a stepped one, it no longer touches anything). `false` if
    /// the simulator has no such mode (the default).
    fn set_sim_mode(&self, mode: SimMode) -> bool {
        let _ = mode;
        false
    }
    /// One pass of the remote's service loop, run on the caller's thread (in
    /// [`SimMode::Stepped`] or [`SimMode::SteppedPolling`]): take what the local side posted,
    /// answer it, return the answers. `true` if it did any work. Steady-state steps allocate
    /// nothing. The default does nothing.
    fn step(&self) -> bool {
        false
    }
}

/// How a simulated remote runs, for benchmarks that measure the framework rather than the
/// operating system's wake-ups ([`RemoteControl::set_sim_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimMode {
    /// The remote's thread serves requests and, when idle, polls through one bounded
    /// [`crate::Backoff`] before it sleeps (condition variable, park, doorbell): what the
    /// conformance suite and fault injection use. The initial mode.
    Normal,
    /// The remote's thread spins on its service loop (no sleep, no allocation in steady state):
    /// firmware on its own core.
    Spin,
    /// The remote's thread idles and touches nothing; the caller runs the remote with
    /// [`RemoteControl::step`] (both sides in one thread, no OS wake-up).
    Stepped,
    /// As [`SimMode::Stepped`], each step a pass of a remote that polls, as in [`SimMode::Spin`]:
    /// a simulated virtio device asks the driver for no kicks. [`SimMode::Stepped`]'s device asks
    /// for them (it would otherwise sleep), so this is the schedule of a spinning remote with
    /// both sides in one thread, what a count of the cache lines a round trip moves under
    /// [`SimMode::Spin`] needs. A remote with no kicks to turn off steps as in
    /// [`SimMode::Stepped`].
    SteppedPolling,
}

impl SimMode {
    /// [`SimMode::Stepped`] or [`SimMode::SteppedPolling`]: the caller runs the remote.
    pub fn is_stepped(self) -> bool {
        matches!(self, SimMode::Stepped | SimMode::SteppedPolling)
    }
}

/// A connected pair: the transport under test and its simulated remote.
pub trait Fixture: Sized + Send + Sync {
    /// The transport under test.
    type T: Transport;
    /// Backend name in reports ("loopback", "scmi-virtio", ...).
    const NAME: &'static str;
    /// Build a fresh pair with the remote running and behaving, in `completion` mode.
    fn setup(completion: Completion) -> Self;
    /// Completion modes this backend supports (the suite runs ordering and timeout in each).
    fn modes() -> &'static [Completion] {
        &[Completion::Interrupt]
    }
    /// The transport under test.
    fn transport(&self) -> &Self::T;
    /// The remote's echo service target (see [`echo_reply`]).
    fn echo_target(&self) -> u32;
    /// The completion mode the pair was built with.
    fn completion(&self) -> Completion;
    /// The remote's knobs.
    fn remote(&self) -> &dyn RemoteControl;
    /// How long a healthy reply may take at most (the suite's ordinary timeout).
    fn reply_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
    /// A short timeout for scenarios that expect one.
    fn short_timeout(&self) -> Duration {
        Duration::from_millis(50)
    }
    /// The transport's datagram side and the remote endpoint that talks to it, for a backend
    /// whose [`crate::Caps`] claims `one_way` (docs/datagram.md). `None` by default.
    fn datagram(&self) -> Option<(&dyn crate::Datagram, &dyn DatagramPeer)> {
        None
    }
}

/// The hand-over between a simulator's own thread and whoever calls
/// [`RemoteControl::set_sim_mode`]: the caller asks for a mode, the thread takes it at the top of
/// its loop and acknowledges. One per simulated remote (no global state).
#[derive(Debug)]
pub struct SimModeSwitch {
    want: core::sync::atomic::AtomicU8,
    have: core::sync::atomic::AtomicU8,
    /// Ticks the thread has idled in a stepped mode ([`SimMode::is_stepped`]) since it last
    /// took another mode.
    idle_ticks: core::sync::atomic::AtomicU32,
}

impl Default for SimModeSwitch {
    fn default() -> Self {
        Self::new()
    }
}

impl SimModeSwitch {
    /// Starts in [`SimMode::Normal`].
    pub const fn new() -> Self {
        SimModeSwitch {
            want: core::sync::atomic::AtomicU8::new(0),
            have: core::sync::atomic::AtomicU8::new(0),
            idle_ticks: core::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Ticks of [`SimModeSwitch::IDLE_TICK`] a stepped thread idles before it goes to
    /// [`SimModeSwitch::IDLE_TICK_LONG`] (100 ms).
    pub const IDLE_SHORT_TICKS: u32 = 100;
    /// A stepped thread's idle tick at first: how soon it sees a new mode or a stop, and, for a
    /// simulator that has timed work of its own, how soon it does it.
    pub const IDLE_TICK: Duration = Duration::from_millis(1);
    /// The tick after [`SimModeSwitch::IDLE_SHORT_TICKS`]: a pair left stepped for long (the
    /// benchmark's other pairs while one is measured) wakes 100 times a second, not 1000, and
    /// takes that much less from the threads being measured on a small machine.
    pub const IDLE_TICK_LONG: Duration = Duration::from_millis(10);

    /// The simulator's thread in a stepped mode, where the caller runs it: sleep one tick
    /// (a sleep, not a park: the transport's unpark on every send then stays an atomic swap
    /// instead of an OS wake-up while the caller steps).
    pub fn idle(&self) {
        std::thread::sleep(self.next_idle_tick());
    }

    /// The tick [`SimModeSwitch::idle`] sleeps now (and one more counted).
    fn next_idle_tick(&self) -> Duration {
        use core::sync::atomic::Ordering;
        // Relaxed: only the simulator's own thread counts (`take` resets it on that thread too).
        let n = self.idle_ticks.load(Ordering::Relaxed);
        if n < Self::IDLE_SHORT_TICKS {
            self.idle_ticks.store(n + 1, Ordering::Relaxed);
            Self::IDLE_TICK
        } else {
            Self::IDLE_TICK_LONG
        }
    }

    fn decode(v: u8) -> SimMode {
        match v {
            1 => SimMode::Spin,
            2 => SimMode::Stepped,
            3 => SimMode::SteppedPolling,
            _ => SimMode::Normal,
        }
    }

    fn encode(m: SimMode) -> u8 {
        match m {
            SimMode::Normal => 0,
            SimMode::Spin => 1,
            SimMode::Stepped => 2,
            SimMode::SteppedPolling => 3,
        }
    }

    /// The simulator's thread, at the top of each loop iteration: the mode to run in now. It is
    /// acknowledged (the caller of [`SimModeSwitch::request`] returns) when the thread calls
    /// this again, i.e. after the iteration that began in the old mode has finished.
    pub fn take(&self) -> SimMode {
        self.take_with(|_| {})
    }

    /// [`SimModeSwitch::take`] for a remote its senders wake through `wake`: tells `wake`
    /// whether the thread may park in the mode it takes (only in [`SimMode::Normal`]) before
    /// the mode is acknowledged, so a send made after [`SimModeSwitch::request`] returned
    /// wakes the thread exactly when it may be asleep.
    pub fn take_for(&self, wake: &RemoteWake) -> SimMode {
        self.take_with(|m| wake.set_parks(m == SimMode::Normal))
    }

    /// [`SimModeSwitch::take`], with `before_ack` called on the mode before it is acknowledged:
    /// what it does happens-before the return of the [`SimModeSwitch::request`] that asked for
    /// the mode.
    fn take_with(&self, before_ack: impl FnOnce(SimMode)) -> SimMode {
        use core::sync::atomic::Ordering;
        // Acquire: pairs with the Release store in `request`.
        let w = self.want.load(Ordering::Acquire);
        let m = Self::decode(w);
        before_ack(m);
        // Release: everything the thread did in its previous iteration, and `before_ack`,
        // happens-before the requester's Acquire load of `have` (its inline steps must not
        // overlap ours).
        self.have.store(w, Ordering::Release);
        if !m.is_stepped() {
            // Relaxed: see `idle`.
            self.idle_ticks.store(0, Ordering::Relaxed);
        }
        m
    }

    /// Ask for `mode`; `wake` is called while waiting (to get the thread out of a sleep). Returns
    /// `true` once the thread has taken it, `false` after `timeout`.
    pub fn request(&self, mode: SimMode, wake: &dyn Fn(), timeout: Duration) -> bool {
        use core::sync::atomic::Ordering;
        let m = Self::encode(mode);
        // Release: pairs with the Acquire load in `take`.
        self.want.store(m, Ordering::Release);
        let start = std::time::Instant::now();
        // Acquire: pairs with the Release store in `take`.
        while self.have.load(Ordering::Acquire) != m {
            if start.elapsed() > timeout {
                return false;
            }
            wake();
            std::thread::sleep(Duration::from_micros(100));
        }
        true
    }
}

/// The request-tag log behind [`RemoteControl::take_seen_tags`]: the first four bytes
/// (little-endian) of each echo request, in the order the remote received them. Its memory is
/// reserved up front and at most [`TagLog::CAP`] tags are kept between two takes (later ones are
/// not logged), so logging allocates nothing and a remote that runs for hours keeps a bounded log.
#[derive(Debug)]
pub struct TagLog(Vec<u32>);

impl Default for TagLog {
    fn default() -> Self {
        Self::new()
    }
}

impl TagLog {
    /// Tags kept between two [`TagLog::take`]s.
    pub const CAP: usize = 1 << 14;

    /// An empty log with room for [`TagLog::CAP`] tags.
    pub fn new() -> Self {
        TagLog(Vec::with_capacity(Self::CAP))
    }

    /// Log the tag of `request` (its first four bytes); a request shorter than four bytes, or one
    /// that finds the log full, is not logged.
    pub fn log(&mut self, request: &[u8]) {
        if let Some(&[a, b, c, d]) = request.first_chunk::<4>() {
            self.log_tag(u32::from_le_bytes([a, b, c, d]));
        }
    }

    /// Log `tag` if there is room.
    pub fn log_tag(&mut self, tag: u32) {
        if self.0.len() < Self::CAP {
            self.0.push(tag);
        }
    }

    /// The tags logged so far, oldest first; the log starts again, empty, with its room reserved.
    pub fn take(&mut self) -> Vec<u32> {
        core::mem::replace(&mut self.0, Vec::with_capacity(Self::CAP))
    }
}

/// Run `f` on its own thread and panic if it has not finished within 60 s. A lost wake-up leaves
/// an executor asleep for ever; in a test this turns it into a failure instead of a hung test
/// run. (A panic inside `f` shows as that thread's panic, then this one.)
pub fn with_watchdog(f: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the futures did not all resolve (a panic above, or a lost wake-up)");
}

#[cfg(test)]
mod tests {
    use super::{SimMode, SimModeSwitch, TagLog};

    /// A stepped thread ticks fast for a while (a new mode or a stop is seen within a
    /// millisecond), then slowly; taking another mode starts the fast ticks over.
    #[test]
    fn a_long_stepped_idle_slows_its_tick_until_the_mode_changes() {
        let sw = SimModeSwitch::new();
        let ticks = |n: u32| (0..n).map(|_| sw.next_idle_tick()).collect::<Vec<_>>();
        let first = ticks(SimModeSwitch::IDLE_SHORT_TICKS);
        assert!(first.iter().all(|&t| t == SimModeSwitch::IDLE_TICK));
        assert_eq!(ticks(3), [SimModeSwitch::IDLE_TICK_LONG; 3]);
        // Still stepped: the count stays.
        sw.want.store(2, core::sync::atomic::Ordering::Relaxed);
        assert_eq!(sw.take(), SimMode::Stepped);
        assert_eq!(sw.next_idle_tick(), SimModeSwitch::IDLE_TICK_LONG);
        // Another mode, then stepped again: fast ticks first.
        sw.want.store(1, core::sync::atomic::Ordering::Relaxed);
        assert_eq!(sw.take(), SimMode::Spin);
        sw.want.store(2, core::sync::atomic::Ordering::Relaxed);
        assert_eq!(sw.take(), SimMode::Stepped);
        assert_eq!(sw.next_idle_tick(), SimModeSwitch::IDLE_TICK);
        // The polling variant is stepped too: the count goes on.
        sw.want.store(3, core::sync::atomic::Ordering::Relaxed);
        assert_eq!(sw.take(), SimMode::SteppedPolling);
        assert_eq!(sw.next_idle_tick(), SimModeSwitch::IDLE_TICK);
        assert_eq!(sw.idle_ticks.load(core::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn every_mode_survives_the_switch() {
        use SimMode::*;
        for m in [Normal, Spin, Stepped, SteppedPolling] {
            assert_eq!(SimModeSwitch::decode(SimModeSwitch::encode(m)), m);
        }
    }

    #[test]
    fn tag_log_is_bounded_and_never_grows() {
        let mut log = TagLog::new();
        log.log(&[1, 0, 0, 0, 9]);
        log.log(&[2, 0, 0]);
        log.log_tag(3);
        assert_eq!(log.take(), [1, 3], "short requests are not logged");
        let room = log.0.capacity();
        for t in 0..TagLog::CAP as u32 + 10 {
            log.log_tag(t);
        }
        assert_eq!(log.0.capacity(), room, "logging reallocated");
        let tags = log.take();
        assert_eq!(tags.len(), TagLog::CAP);
        assert_eq!(tags.last(), Some(&(TagLog::CAP as u32 - 1)));
        assert!(log.take().is_empty());
    }
}
