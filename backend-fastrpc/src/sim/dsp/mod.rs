//! The simulated DSP: a thread that receives `fastrpc_msg` datagrams, reads the payload through
//! the simulated SMMU exactly as a DSP would (metadata, then each buffer at `pages[i].addr +
//! (pv & 4095)`), dispatches to the process-control service (handle 1, with a real process table
//! and memory maps) or to a hosted object, writes the out-buffers, lengths and fd list back, and
//! answers `{ctx, retval}`. Every conformance fault knob is implemented here.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use zerocopy::{FromBytes, IntoBytes};

use fwipc_transport_api::fixture::{DoubleFetch, Fault, SimMode, SimModeSwitch};
use fwipc_transport_api::SpinBudget;

mod procctl;
mod reverse_calls;

use crate::error::aee;
use crate::reverse::LISTENER_HANDLE;
use crate::sim::bus::{BusWindow, HeldRegion, SimBus};
use crate::sim::link::SimLink;
use crate::wire::payload::MetaView;
use crate::wire::scalars::Scalars;
use crate::wire::{self, FastRpcMsg, InvokeRsp, INIT_HANDLE, MAX_FDLIST};

/// Largest buffer the simulated DSP accepts (a sanity bound on DSP-side allocations).
const MAX_DSP_BUF: u64 = 16 << 20;

/// What a hosted object sees of a call.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// Client id from the message.
    pub pid: i32,
    /// Thread id from the message.
    pub tid: i32,
    /// Object handle.
    pub handle: u32,
    /// Scalars.
    pub sc: Scalars,
    /// Descriptors of the in-handles.
    pub in_fds: Vec<i32>,
}

/// An object hosted on the simulated DSP. `outs[k]` arrives sized to the caller's buffer; the
/// object may shorten it (the shorter length is written back into `rpra[i].len`). Returns the
/// `retval` (0 or an AEE code from [`crate::error::aee::dsp`]).
pub trait DspObject: Send {
    /// Handle one call.
    fn invoke(&mut self, call: &CallInfo, ins: &[Vec<u8>], outs: &mut [Vec<u8>]) -> i32;

    /// Instead of answering, make a reverse call to the AP first (the call stays pending on
    /// the DSP until the AP's listener answers). Default: never.
    fn reverse(&mut self, call: &CallInfo, ins: &[Vec<u8>]) -> Option<ReverseCall> {
        let _ = (call, ins);
        None
    }

    /// The AP answered the reverse call with `result` and out-buffers `rev_outs`: finish the
    /// original call. Returns its `retval`.
    fn reverse_done(
        &mut self,
        call: &CallInfo,
        ins: &[Vec<u8>],
        outs: &mut [Vec<u8>],
        result: i32,
        rev_outs: &[&[u8]],
    ) -> i32 {
        let _ = (call, ins, outs, result, rev_outs);
        aee::dsp(aee::EFAILED)
    }
}

/// A reverse call a DSP object makes to an AP service.
#[derive(Debug, Clone)]
pub struct ReverseCall {
    /// AP-side handle.
    pub handle: u32,
    /// Method index.
    pub method: u32,
    /// In-buffers.
    pub ins: Vec<Vec<u8>>,
    /// Out-buffer lengths.
    pub out_lens: Vec<u32>,
}

/// A decoded request: its buffers read from the payload and where the outputs go.
struct Decoded {
    call: CallInfo,
    ins: Vec<Vec<u8>>,
    outs: Vec<Vec<u8>>,
    out_at: Vec<(usize, Option<u64>, u64)>,
    /// Spent buffers kept with the shell for its next call (at most [`SHELL_SPARE_MAX`]), so a
    /// call takes its buffers without a lock of its own.
    spare: Vec<Vec<u8>>,
    /// The payload region the shell's last call reached, for the next call's window
    /// ([`SimBus::window_from`]).
    held: HeldRegion,
}

/// Spent buffers a [`Decoded`] shell keeps.
const SHELL_SPARE_MAX: usize = 8;

/// A zeroed buffer of `len` bytes from `spare`, allocated only when `spare` is empty.
fn take_buf(spare: &mut Vec<Vec<u8>>, len: usize) -> Vec<u8> {
    let mut b = spare.pop().unwrap_or_default();
    b.clear();
    b.resize(len, 0);
    b
}

/// A buffer of `len` bytes from `spare` for a read that writes every byte of it: a reused
/// buffer keeps its old bytes (the read overwrites them), only a part it grows by is zeroed.
fn take_buf_to_fill(spare: &mut Vec<Vec<u8>>, len: usize) -> Vec<u8> {
    let mut b = spare.pop().unwrap_or_default();
    b.resize(len, 0);
    b
}

/// [`take_buf_to_fill`] with the buffer of `spare` that holds the most bytes: the one that held
/// the last call's metadata, which a call takes first. Taken from the top of the stack instead,
/// where the last call's in- and out-buffers went back, it would be a buffer of a few bytes
/// every call, and growing it back zeroes the metadata's length anew.
fn take_longest_to_fill(spare: &mut Vec<Vec<u8>>, len: usize) -> Vec<u8> {
    let longest = (0..spare.len()).max_by_key(|&i| spare.get(i).map_or(0, Vec::len));
    let mut b = longest.map(|i| spare.swap_remove(i)).unwrap_or_default();
    b.resize(len, 0);
    b
}

/// Keep `b` in `spare` for a later call, if there is room.
fn keep_buf(spare: &mut Vec<Vec<u8>>, b: Vec<u8>) {
    if spare.len() < SHELL_SPARE_MAX {
        spare.push(b);
    }
}

/// A call waiting on a reverse call: (message, decoded request, out-buffer count of the
/// reverse call).
type Parked = (FastRpcMsg, Decoded, usize);

/// Kind of a DSP process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcKind {
    /// Attached (root or sensors PD; the PD bits of the attach call).
    Attached(u8),
    /// Dynamic user PD.
    User,
    /// Static PD.
    Static,
}

/// A process in the DSP's table.
#[derive(Debug, Clone)]
pub struct Process {
    /// Kind.
    pub kind: ProcKind,
    /// Name (created PDs).
    pub name: String,
    /// Init memory / remote heap page.
    pub mem: Option<(u64, u64)>,
    /// mmap'd regions: (vaddr, size, bus address).
    pub maps: Vec<(u64, u64, u64)>,
    /// mem-mapped buffers: (vaddr, fd, len).
    pub mem_maps: Vec<(u64, i32, u64)>,
}

struct State {
    fault: Fault,
    flip: u64,
    held: Vec<FastRpcMsg>,
    dropped: Vec<FastRpcMsg>,
    bad_msgs: u64,
    procs: BTreeMap<i32, Process>,
    next_vaddr: u64,
    /// Reverse requests not yet taken by a listener: (ctx, handle, sc, packed in-buffers).
    rev_queue: VecDeque<(u32, u32, u32, Vec<u8>)>,
    /// Calls waiting on their reverse call, by reverse ctx.
    parked: BTreeMap<u32, Parked>,
    /// `next2` calls waiting for a reverse request.
    listeners: VecDeque<(FastRpcMsg, Decoded)>,
    next_rctx: u32,
    /// The armed double-fetch fault: answers still to rewrite after sending them.
    rewrite: Option<DoubleFetch>,
}

impl State {
    /// The armed double-fetch fault for one more answer, if any (disarmed after its count).
    fn take_rewrite(&mut self) -> Option<DoubleFetch> {
        let df = self.rewrite.as_mut()?;
        df.count -= 1;
        if df.count == 0 {
            self.rewrite.take()
        } else {
            Some(df.clone())
        }
    }
}

type Hook = Box<dyn Fn() + Send + Sync>;

struct Shared {
    link: Arc<SimLink>,
    bus: SimBus,
    state: Mutex<State>,
    /// The hosted objects. A spin lock: held for one call's `invoke` (or a map insert), so an
    /// uncontended call is one read-modify-write (a `std` mutex's release is a second one).
    objects: spin::Mutex<BTreeMap<u32, Box<dyn DspObject>>>,
    stop: AtomicBool,
    reset_hook: Mutex<Option<Hook>>,
    /// How the DSP thread runs ([`SimDsp::set_mode`]).
    mode: SimModeSwitch,
    /// Spent buffers of finished calls, reused by the next ones. A spin lock: held for a `Vec`'s
    /// push or pop, so an uncontended pass is one read-modify-write (a `std` mutex's release is
    /// a second).
    spare: spin::Mutex<Spare>,
    /// Valid requests received.
    received: AtomicU64,
    /// Whether `state.fault` is not `Fault::None`; written under the `state` lock with it, read
    /// without the lock so a request on the fault-free path takes no lock of the state.
    faulted: AtomicBool,
    /// Whether `state.rewrite` holds a double-fetch fault; as `faulted`, for answers.
    rewrite_armed: AtomicBool,
}

/// Spent buffers kept for reuse (at most [`SPARE_MAX`] of each kind): call shells with their
/// buffers, and buffers of the double-fetch rewrite.
#[derive(Default)]
struct Spare {
    shells: Vec<Decoded>,
    bufs: Vec<Vec<u8>>,
}

const SPARE_MAX: usize = 64;

/// The DSP's receive buffer: one byte more than a message, so a longer datagram arrives cut to
/// that length, which is still no message, and is counted as malformed as it would be whole.
const DGRAM_BUF: usize = size_of::<FastRpcMsg>() + 1;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The simulated DSP (stops its thread on drop).
pub struct SimDsp {
    sh: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SimDsp {
    /// Start a DSP thread serving `link`, reaching memory through `bus`.
    pub fn spawn(link: Arc<SimLink>, bus: SimBus) -> Self {
        let sh = Arc::new(Shared {
            link,
            bus,
            state: Mutex::new(State {
                fault: Fault::None,
                flip: 0,
                held: Vec::new(),
                dropped: Vec::new(),
                bad_msgs: 0,
                procs: BTreeMap::new(),
                next_vaddr: 0xE000_0000,
                rev_queue: VecDeque::new(),
                parked: BTreeMap::new(),
                listeners: VecDeque::new(),
                next_rctx: 1,
                rewrite: None,
            }),
            objects: spin::Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
            reset_hook: Mutex::new(None),
            mode: SimModeSwitch::new(),
            spare: spin::Mutex::new(Spare::default()),
            received: AtomicU64::new(0),
            faulted: AtomicBool::new(false),
            rewrite_armed: AtomicBool::new(false),
        });
        let s2 = sh.clone();
        let t = std::thread::Builder::new()
            .name("sim-dsp".into())
            .spawn(move || {
                let idle = SpinBudget::new();
                // Acquire: pairs with the Release in `Drop`.
                while !s2.stop.load(Ordering::Acquire) {
                    match s2.mode.take_for(s2.link.dsp_wake()) {
                        SimMode::Normal => {
                            // Idle: look a little longer before sleeping on the link (bounded,
                            // then wait as before).
                            let mut buf = [0u8; DGRAM_BUF];
                            let mut next = None;
                            idle.spin_until(
                                || {
                                    next = s2.link.dsp_try_recv_into(&mut buf);
                                    next.is_some()
                                },
                                std::thread::yield_now,
                            );
                            let next = next.or_else(|| {
                                s2.link.dsp_recv_into(&mut buf, Duration::from_millis(20))
                            });
                            if let Some(n) = next {
                                s2.on_datagram(&buf[..n.min(buf.len())]);
                            }
                        }
                        SimMode::Spin => {
                            if !s2.step() {
                                std::hint::spin_loop();
                            }
                        }
                        SimMode::Stepped | SimMode::SteppedPolling => s2.mode.idle(),
                    }
                }
            })
            .expect("spawn sim-dsp thread");
        // Before the AP can send: every send from now on wakes this thread.
        sh.link.set_dsp_thread(t.thread().clone());
        SimDsp {
            sh,
            thread: Mutex::new(Some(t)),
        }
    }

    /// Switch how the DSP thread runs (see [`SimMode`]); in [`SimMode::Stepped`] the caller runs
    /// it with [`SimDsp::step`]. Returns once the thread has taken the mode (`false` if it did
    /// not within 5 s).
    pub fn set_mode(&self, mode: SimMode) -> bool {
        // The wake gets a parked DSP thread to the mode at once, not at its park's timeout.
        self.sh.mode.request(
            mode,
            &|| self.sh.link.dsp_wake().wake(),
            Duration::from_secs(5),
        )
    }

    /// Serve one queued datagram on the caller's thread, if any (in [`SimMode::Stepped`]).
    pub fn step(&self) -> bool {
        self.sh.step()
    }

    /// Host `obj` at `handle`.
    pub fn add_object(&self, handle: u32, obj: Box<dyn DspObject>) {
        self.sh.objects.lock().insert(handle, obj);
    }

    /// Called (from the DSP thread) after a reset, to tell the AP (rpmsg remove + probe).
    pub fn set_reset_hook(&self, f: impl Fn() + Send + Sync + 'static) {
        *lock(&self.sh.reset_hook) = Some(Box::new(f));
    }

    /// Set the fault for requests received from now on.
    pub fn set_fault(&self, f: Fault) {
        let mut s = lock(&self.sh.state);
        s.fault = f;
        // Release: pairs with the Acquire in `on_datagram`; a request sent after this call (so
        // received after it, through the link's lock) sees the fault.
        self.sh
            .faulted
            .store(!matches!(f, Fault::None), Ordering::Release);
    }

    /// Execute and answer every held request, in order.
    pub fn release(&self) {
        let held = std::mem::take(&mut lock(&self.sh.state).held);
        for m in held {
            if let Some(r) = self.sh.execute(&m) {
                self.sh.respond(&m, r, Fault::None);
            }
        }
    }

    /// Requests received (valid messages).
    pub fn received(&self) -> u64 {
        // Relaxed: a statistics counter.
        self.sh.received.load(Ordering::Relaxed)
    }

    /// Malformed datagrams received.
    pub fn bad_msgs(&self) -> u64 {
        lock(&self.sh.state).bad_msgs
    }

    /// Requests held (Hold) or swallowed (Drop) right now.
    pub fn held(&self) -> usize {
        let s = lock(&self.sh.state);
        s.held.len() + s.dropped.len()
    }

    /// Send raw bytes to the AP (hostile input). Bytes that carry a [`DoubleFetch`] order arm
    /// the double-fetch fault instead: the out-buffers of the next answers are rewritten in
    /// shared memory right after the answer is sent ([`SimDsp::rewrite_after_answer`]).
    pub fn inject(&self, bytes: &[u8]) {
        match DoubleFetch::parse(bytes) {
            Some(df) => self.rewrite_after_answer(df),
            None => self.sh.link.dsp_send(bytes),
        }
    }

    /// The double-fetch fault: the next `df.count` answers (any fault but `Hold` and `Drop`,
    /// which send none) are followed, once sent (the AP may already be reading them), by a
    /// rewrite of the call's out-buffers in the shared payload: byte `i` XOR `df.body`, then
    /// each out-buffer's length word in the metadata (`rpra[i].len`, the only framing word in
    /// DSP-reachable memory) XOR the first 8 bytes of `df.header`, little-endian (see
    /// [`DoubleFetch`]). The AP reads the metadata and each out-buffer once, in `read_out`, so
    /// the caller gets one copy, as written or as rewritten: a length above what was asked fails
    /// the call, a shorter one (which a DSP may legitimately write) shortens the reply.
    pub fn rewrite_after_answer(&self, df: DoubleFetch) {
        let mut s = lock(&self.sh.state);
        s.rewrite = Some(df);
        // Release: pairs with the Acquire in `respond`, as `faulted` does.
        self.sh.rewrite_armed.store(true, Ordering::Release);
    }

    /// Lose all state (processes, held requests, the datagrams queued on the link either way)
    /// and tell the AP.
    pub fn reset(&self) {
        // Before the AP hears of it: an answer the old instance queued must not reach a
        // transfer the AP starts after the reset (a context freed by the reset and reused
        // would take it for its own).
        self.sh.link.clear();
        {
            let mut s = lock(&self.sh.state);
            s.held.clear();
            s.dropped.clear();
            s.procs.clear();
            s.rev_queue.clear();
            s.parked.clear();
            s.listeners.clear();
            s.rewrite = None;
            // Relaxed: only ever makes `respond` take the lock less; the lock orders the rest.
            self.sh.rewrite_armed.store(false, Ordering::Relaxed);
        }
        if let Some(h) = lock(&self.sh.reset_hook).as_ref() {
            h();
        }
    }

    /// A copy of process `pid`.
    pub fn process(&self, pid: i32) -> Option<Process> {
        lock(&self.sh.state).procs.get(&pid).cloned()
    }

    /// Calls waiting on a reverse call.
    pub fn parked_calls(&self) -> usize {
        lock(&self.sh.state).parked.len()
    }

    /// Processes alive.
    pub fn process_count(&self) -> usize {
        lock(&self.sh.state).procs.len()
    }

    /// The bus the DSP reads through.
    pub fn bus(&self) -> &SimBus {
        &self.sh.bus
    }

    /// Parse and execute one datagram as the DSP would, without a thread (for fuzzing the
    /// DSP-side decode). Returns the response it would send, if any.
    pub fn execute_datagram(&self, d: &[u8]) -> Option<i32> {
        let m = wire::parse_msg(d).ok()?;
        self.sh.execute(&m)
    }
}

impl Drop for SimDsp {
    fn drop(&mut self) {
        // Release: the thread's Acquire load sees the stop request.
        self.sh.stop.store(true, Ordering::Release);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

fn read_struct<T: FromBytes>(b: &[u8]) -> Option<T> {
    T::read_from_bytes(b).ok()
}

impl Shared {
    /// Serve one queued datagram without waiting; `false` if none was queued.
    fn step(&self) -> bool {
        // Copied out under the queue's one lock.
        let mut buf = [0u8; DGRAM_BUF];
        match self.link.dsp_try_recv_into(&mut buf) {
            Some(n) => {
                self.on_datagram(&buf[..n.min(buf.len())]);
                true
            }
            None => false,
        }
    }

    fn on_datagram(&self, d: &[u8]) {
        let Ok(msg) = wire::parse_msg(d) else {
            lock(&self.state).bad_msgs += 1;
            return;
        };
        // Relaxed: a statistics counter.
        self.received.fetch_add(1, Ordering::Relaxed);
        // Acquire: pairs with `SimDsp::set_fault`. Without a fault the state is not locked.
        let fault = if self.faulted.load(Ordering::Acquire) {
            let mut s = lock(&self.state);
            match s.fault {
                Fault::Hold => {
                    s.held.push(msg);
                    return;
                }
                Fault::Drop => {
                    s.dropped.push(msg);
                    return;
                }
                f => f,
            }
        } else {
            Fault::None
        };
        if let Fault::Delay(t) = fault {
            std::thread::sleep(t);
        }
        if let Some(r) = self.execute(&msg) {
            self.respond(&msg, r, fault);
        }
    }

    fn respond(&self, msg: &FastRpcMsg, retval: i32, fault: Fault) {
        // One look at the state per answer that needs it: the alternation count of the
        // corrupting faults and the double-fetch fault. Acquire: pairs with
        // `SimDsp::rewrite_after_answer`.
        let corrupting = matches!(
            fault,
            Fault::WrongToken | Fault::CorruptLength | Fault::CorruptHeader
        );
        let (flip, rewrite) = if corrupting || self.rewrite_armed.load(Ordering::Acquire) {
            let mut s = lock(&self.state);
            s.flip += 1;
            let rewrite = s.take_rewrite();
            if s.rewrite.is_none() {
                // Relaxed: as in `SimDsp::reset`.
                self.rewrite_armed.store(false, Ordering::Relaxed);
            }
            (s.flip, rewrite)
        } else {
            (0, None)
        };
        let ctx = msg.ctx.get();
        let rsp = |ctx: u64| InvokeRsp {
            ctx: ctx.into(),
            retval: retval.into(),
            pad: [0; 4],
        };
        match fault {
            Fault::Duplicate => {
                self.link.dsp_send(rsp(ctx).as_bytes());
                self.link.dsp_send(rsp(ctx).as_bytes());
            }
            Fault::WrongToken => {
                // Another slot id, or the same slot with another generation.
                let wrong = if flip % 2 == 0 {
                    ctx ^ 0x10
                } else {
                    ctx.wrapping_add(1 << 12)
                };
                self.link.dsp_send(rsp(wrong).as_bytes());
            }
            Fault::CorruptLength => {
                let r = rsp(ctx);
                if flip % 2 == 0 {
                    self.link.dsp_send(&r.as_bytes()[..8]);
                } else {
                    let mut long = r.as_bytes().to_vec();
                    long.resize(40, 0xEE);
                    self.link.dsp_send(&long);
                }
            }
            Fault::CorruptHeader => {
                // PD bits that do not match the request, or no slot id at all.
                let bad = if flip % 2 == 0 {
                    ctx ^ 0x3
                } else {
                    ctx & !0xFF0
                };
                self.link.dsp_send(rsp(bad).as_bytes());
            }
            _ => self.link.dsp_send(rsp(ctx).as_bytes()),
        }
        if let Some(df) = rewrite {
            self.rewrite_answered(msg, df);
        }
    }

    /// The double-fetch fault ([`SimDsp::rewrite_after_answer`]), taken for this answer by
    /// [`State::take_rewrite`]: rewrite the out-buffers of `msg`, whose answer was just sent,
    /// where the DSP wrote them.
    fn rewrite_answered(&self, msg: &FastRpcMsg, df: DoubleFetch) {
        let sc = Scalars(msg.sc.get());
        let n = sc.len();
        let len_mask = u64::from_le_bytes(df.header[..8].try_into().unwrap_or([0; 8]));
        if n == 0 || (df.body.is_empty() && len_mask == 0) {
            return;
        }
        let mem = self.payload(msg);
        let mut meta = self.spare_buf(wire::metalen(n));
        if mem.read(msg.addr.get(), &mut meta) {
            if let Ok(v) = MetaView::parse(sc, &meta) {
                for i in sc.inbufs()..sc.nbufs() {
                    // The length the DSP wrote back (`write_back`), the address it wrote to.
                    let (Ok(rb), Ok(Some(a))) = (v.rpra(i), self.buf_at(&mem, &v, i)) else {
                        continue;
                    };
                    if !df.body.is_empty() {
                        let mut b = self.spare_buf(rb.len.get().min(MAX_DSP_BUF) as usize);
                        if mem.read(a, &mut b) {
                            for (k, x) in b.iter_mut().enumerate() {
                                *x = df.rewrite_body_byte(k, *x);
                            }
                            mem.write(a, &b);
                        }
                        self.give_buf(b);
                    }
                    if len_mask != 0 {
                        // `rpra[i].len`, as `write_back` wrote it.
                        let at = msg.addr.get() + 16 * i as u64 + 8;
                        mem.write(at, &(rb.len.get() ^ len_mask).to_le_bytes());
                    }
                }
            }
        }
        self.give_buf(meta);
    }

    /// Where buffer `i` of a request lies in DSP-reachable memory: its page entry's address plus
    /// the in-page offset of its `pv`, checked to lie within the page entry and to be mapped;
    /// `None` for an empty buffer; the AEE code for a bad entry.
    fn buf_at(&self, mem: &BusWindow<'_>, v: &MetaView<'_>, i: usize) -> Result<Option<u64>, i32> {
        let bad = aee::dsp(aee::EBADPARM);
        let rb = v.rpra(i).map_err(|_| bad)?;
        let len = rb.len.get();
        if len == 0 {
            return Ok(None);
        }
        let Ok(Some(pg)) = v.page_of(i) else {
            return Err(bad);
        };
        let in_page = rb.pv.get() & 4095;
        let a = pg.addr.get().checked_add(in_page).ok_or(bad)?;
        if in_page + len > pg.size.get() || !mem.is_mapped(a, len as usize) {
            return Err(bad);
        }
        Ok(Some(a))
    }

    /// An empty [`Decoded`] whose vectors keep the capacity of an earlier call's.
    fn spare_decoded(&self) -> Decoded {
        let mut sp = self.spare.lock();
        sp.shells.pop().unwrap_or_else(|| Decoded {
            call: CallInfo {
                pid: 0,
                tid: 0,
                handle: 0,
                sc: Scalars(0),
                in_fds: Vec::new(),
            },
            ins: Vec::new(),
            outs: Vec::new(),
            out_at: Vec::new(),
            spare: Vec::new(),
            held: HeldRegion::default(),
        })
    }

    /// A zeroed buffer of `len` bytes, reusing a spent one when there is one.
    fn spare_buf(&self, len: usize) -> Vec<u8> {
        let mut b = self.spare.lock().bufs.pop().unwrap_or_default();
        b.clear();
        b.resize(len, 0);
        b
    }

    fn give_buf(&self, b: Vec<u8>) {
        let mut sp = self.spare.lock();
        if sp.bufs.len() < SPARE_MAX {
            sp.bufs.push(b);
        }
    }

    /// Give a finished call's shell back to the spare pool, its buffers kept with it.
    fn recycle(&self, mut d: Decoded) {
        for b in d.ins.drain(..).chain(d.outs.drain(..)) {
            keep_buf(&mut d.spare, b);
        }
        d.out_at.clear();
        d.call.in_fds.clear();
        let mut sp = self.spare.lock();
        if sp.shells.len() < SPARE_MAX {
            sp.shells.push(d);
        }
    }

    /// The DSP's view of the bus for the call `msg`: its payload region translated once
    /// ([`SimBus::window`]).
    fn payload(&self, msg: &FastRpcMsg) -> BusWindow<'_> {
        self.bus.window(msg.addr.get())
    }

    /// Read a request's buffers from the payload (through `mem`, [`Shared::payload`]), as the
    /// DSP does.
    /// `shell` is an empty [`Decoded`] ([`Shared::spare_decoded`]) whose vectors are reused.
    fn decode(
        &self,
        mem: &BusWindow<'_>,
        msg: &FastRpcMsg,
        shell: Decoded,
    ) -> Result<Decoded, i32> {
        let bad = aee::dsp(aee::EBADPARM);
        let sc = Scalars(msg.sc.get());
        let n = sc.len();
        // The shell and its buffers come from the spare pool in one lock (`recycle` gives them
        // back): the steady-state invoke allocates nothing on the DSP side.
        let Decoded {
            call: CallInfo { mut in_fds, .. },
            mut ins,
            mut outs,
            mut out_at,
            mut spare,
            held,
        } = shell;
        let addr = msg.addr.get();
        if n > 0 {
            let metalen = wire::metalen(n);
            if addr == 0 || msg.size.get() < metalen as u64 {
                return Err(bad);
            }
            // The DSP reads the argument descriptors (remote args, invoke bufs, pages); the fd
            // and CRC lists after them are its to write, not read: the view below never looks
            // at them (its fd accessors are the AP's), so a reused buffer's old bytes there are
            // neither read nor zeroed.
            let mut meta = take_longest_to_fill(&mut spare, metalen);
            let descriptors = wire::MetaOffsets::new(n).fdlist;
            if !mem.read(addr, &mut meta[..descriptors]) {
                return Err(bad);
            }
            let v = MetaView::parse(sc, &meta).map_err(|_| bad)?;
            for i in 0..sc.nbufs() {
                let rb = v.rpra(i).map_err(|_| bad)?;
                let len = rb.len.get();
                if len > MAX_DSP_BUF {
                    return Err(bad);
                }
                // Within the page entry, and mapped, before allocating anything for it.
                let at = self.buf_at(mem, &v, i)?;
                if i < sc.inbufs() {
                    // Read whole (`at` is `None` only for an empty buffer).
                    let mut b = take_buf_to_fill(&mut spare, len as usize);
                    if let Some(a) = at {
                        if !mem.read(a, &mut b) {
                            return Err(bad);
                        }
                    }
                    ins.push(b);
                } else {
                    outs.push(take_buf(&mut spare, len as usize));
                    out_at.push((i, at, len));
                }
            }
            for i in sc.nbufs()..n {
                let d = v.dma(i).map_err(|_| bad)?;
                if i < sc.nbufs() + sc.inhandles() {
                    in_fds.push(d.fd.get());
                }
            }
            keep_buf(&mut spare, meta);
        }
        Ok(Decoded {
            call: CallInfo {
                pid: msg.pid.get(),
                tid: msg.tid.get(),
                handle: msg.handle.get(),
                sc,
                in_fds,
            },
            ins,
            outs,
            out_at,
            spare,
            held,
        })
    }

    /// Write outputs (on success), their lengths, and the fd list back into the payload (through
    /// `mem`, [`Shared::payload`]).
    fn write_back(&self, mem: &BusWindow<'_>, msg: &FastRpcMsg, d: &Decoded, r: i32) {
        let n = d.call.sc.len();
        if n == 0 {
            return;
        }
        let addr = msg.addr.get();
        if r == 0 {
            for (k, (i, at, len)) in d.out_at.iter().enumerate() {
                let data = &d.outs[k];
                let new_len = (data.len() as u64).min(*len);
                if let Some(a) = at {
                    mem.write(*a, &data[..new_len as usize]);
                }
                mem.write(addr + 16 * *i as u64 + 8, &new_len.to_le_bytes());
            }
        }
        // Always run the fd list: the DSP is done with every in-handle.
        let off = wire::MetaOffsets::new(n).fdlist as u64;
        for (k, fd) in d.call.in_fds.iter().take(MAX_FDLIST).enumerate() {
            mem.write(addr + off + 8 * k as u64, &(*fd as u64).to_le_bytes());
        }
    }

    /// Execute one request; returns `retval`, or `None` if the answer comes later (a call
    /// waiting on a reverse call, a listener waiting for a request).
    fn execute(&self, msg: &FastRpcMsg) -> Option<i32> {
        // The shell first: it holds the payload region its last call reached.
        let mut shell = self.spare_decoded();
        let mem = self.bus.window_from(msg.addr.get(), &mut shell.held);
        let mut d = match self.decode(&mem, msg, shell) {
            Ok(d) => d,
            Err(r) => return Some(r),
        };
        let handle = d.call.handle;
        let r = if handle == INIT_HANDLE {
            self.procctl(&d.call, msg.ctx.get(), &d.ins, &mut d.outs)
        } else if handle == LISTENER_HANDLE {
            return self.listener_next2(msg, d);
        } else {
            let mut objs = self.objects.lock();
            match objs.get_mut(&handle) {
                Some(o) => match o.reverse(&d.call, &d.ins) {
                    Some(rc) => {
                        drop(objs);
                        return self.start_reverse(msg, d, rc);
                    }
                    None => o.invoke(&d.call, &d.ins, &mut d.outs),
                },
                None => aee::dsp(aee::EINVHANDLE),
            }
        };
        self.write_back(&mem, msg, &d, r);
        d.held = mem.into_held();
        self.recycle(d);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call's metadata goes into the spare buffer that held the last call's, kept whole (a
    /// read overwrites it), not into the few bytes of the last in- or out-buffer on top of the
    /// stack, which would be grown back with zeros.
    #[test]
    fn the_metadata_takes_the_longest_spare_buffer_unzeroed() {
        let meta_len = wire::metalen(2);
        let mut spare = vec![vec![0xAA; meta_len], vec![1; 32], vec![2; 32]];
        let meta = take_longest_to_fill(&mut spare, meta_len);
        assert_eq!(
            meta,
            vec![0xAA; meta_len],
            "the metadata's buffer, as it was"
        );
        assert_eq!(spare.len(), 2);
        assert!(spare.iter().all(|b| b.len() == 32));
        // Nothing spare: a new zeroed buffer.
        assert_eq!(take_longest_to_fill(&mut Vec::new(), 8), vec![0; 8]);
    }
}
