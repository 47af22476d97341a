//! Two fixed-capacity queues of 512-byte frames, one per direction, with the sizes of Linux's
//! default (256 buffers each way). [`DriverEnd`] and [`DeviceEnd`] are the two sides'
//! [`Link`]s. Each direction is the simulators' shared queue
//! (`fwipc_transport_api::fixture::SlotQueue`): a frame is copied once, its own length, into
//! its slot, and the receiver copies it out of the slot into a buffer of its own (under the
//! queue's consumers' lock), then hands that copy to its sink outside the lock (the sink may
//! send). Every slot is allocated at setup: steady-state traffic allocates nothing, and a frame
//! moves between the two sides with its slot's line (docs/benchmarks/changes.md, "The simulators'
//! queue: one line per item").

use std::mem::MaybeUninit;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use fwipc_transport_api::fixture::{RemoteWake, SlotQueue};
use fwipc_transport_api::sync::CachePadded;
use fwipc_transport_api::{SharedTxBufs, TxLoan};

use crate::addr::{BUF_SIZE, HDR_SIZE, MAX_PAYLOAD};
use crate::link::{Link, LinkError};

use super::rewrite::Rewriter;

/// Buffers per direction.
pub const QUEUE_BUFS: usize = 256;
/// Transmit buffers the driver may have loaned at once (a quarter, as `VirtioLink`).
pub const QUEUE_LOANS: usize = QUEUE_BUFS / 4;

/// The driver's loanable transmit buffers. The queues carry frames by value, so a loaned
/// buffer is written in place here and its frame copied into the queue when sent, like every
/// frame of this in-memory link.
struct LoanBufs {
    bufs: Mutex<Vec<[u8; BUF_SIZE]>>,
    /// Per buffer: loaned (`true`) or free.
    loaned: Mutex<Vec<bool>>,
}

impl SharedTxBufs for LoanBufs {
    fn capacity(&self) -> usize {
        MAX_PAYLOAD
    }

    fn write(&self, idx: u32, offset: usize, data: &[u8]) {
        let mut bufs = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        let dst = bufs
            .get_mut(idx as usize)
            .and_then(|b| b.get_mut(HDR_SIZE + offset..HDR_SIZE + offset + data.len()));
        if let Some(dst) = dst {
            dst.copy_from_slice(data);
        }
    }

    fn give_back(&self, idx: u32) {
        let mut l = self.loaned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = l.get_mut(idx as usize) {
            *l = false;
        }
    }
}

/// One queued frame, its bytes inline in its queue slot. `repr(C)`, the length first: in the
/// queue's slot the length comes right after the slot's stamp and the frame right after it, so a
/// frame of up to 48 bytes (a 32-byte message and its header) shares one cache line with both.
/// Left to the compiler, the length went after the 512 bytes, on a line of its own: one more
/// line moved per frame (docs/benchmarks.md, "Cache lines per round trip").
#[repr(C)]
struct Frame {
    len: usize,
    data: [u8; BUF_SIZE],
}

// The layout the docs above rely on.
const _: () = assert!(core::mem::offset_of!(Frame, len) == 0);
const _: () = assert!(core::mem::offset_of!(Frame, data) == core::mem::size_of::<usize>());

impl Default for Frame {
    fn default() -> Self {
        Frame {
            len: 0,
            data: [0; BUF_SIZE],
        }
    }
}

type Irq = Box<dyn Fn() + Send + Sync>;

/// The shared queues.
pub struct Queues {
    to_device: SlotQueue<Frame>,
    to_driver: SlotQueue<Frame>,
    down: AtomicBool,
    /// The device thread, set once by the fixture; woken by every driver send while it may
    /// park ([`RemoteWake`]: no lock, no read-modify-write while the remote spins or is
    /// stepped).
    device: RemoteWake,
    /// The driver's interrupt handler: set once by the fixture, read on every interrupt
    /// without a lock.
    irq: OnceLock<Irq>,
    /// The driver asked for no interrupt for now ([`Link::pause_interrupts`]). Written by a
    /// spinning driver twice per call, so on lines of its own: beside `down`, `irq` and
    /// `rewriter`, which the device reads on every send, each write took their line from the
    /// device (docs/benchmarks/changes.md, "The core's written words off the lines the other
    /// side reads").
    irq_paused: CachePadded<AtomicBool>,
    loans: Arc<LoanBufs>,
    /// The double-fetch fault on the device's sends.
    pub(crate) rewriter: Rewriter,
}

impl core::fmt::Debug for Queues {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Queues").finish_non_exhaustive()
    }
}

impl Queues {
    /// Empty queues, link up.
    pub fn new() -> Arc<Self> {
        Arc::new(Queues {
            to_device: SlotQueue::with_capacity(QUEUE_BUFS),
            to_driver: SlotQueue::with_capacity(QUEUE_BUFS),
            down: AtomicBool::new(false),
            device: RemoteWake::new(),
            irq: OnceLock::new(),
            irq_paused: CachePadded::new(AtomicBool::new(false)),
            loans: Arc::new(LoanBufs {
                bufs: Mutex::new(vec![[0; BUF_SIZE]; QUEUE_LOANS]),
                loaned: Mutex::new(vec![false; QUEUE_LOANS]),
            }),
            rewriter: Rewriter::default(),
        })
    }

    /// The thread to unpark when the driver sends (set once: a second thread is ignored, with
    /// a warning).
    pub fn set_device_thread(&self, t: std::thread::Thread) {
        if !self.device.set_thread(t) {
            log::warn!("sim queues: the device thread is set already");
        }
    }

    /// What wakes the device thread when the driver sends.
    pub fn device_wake(&self) -> &RemoteWake {
        &self.device
    }

    /// The driver's interrupt handler, run after the device sends (interrupt mode). Set once:
    /// a second handler is ignored, with a warning.
    pub fn set_irq(&self, irq: impl Fn() + Send + Sync + 'static) {
        if self.irq.set(Box::new(irq)).is_err() {
            log::warn!("sim queues: the interrupt handler is set already");
        }
    }

    /// Put raw bytes (at most one buffer's worth) in the driver's receive queue, as if the
    /// device had filled a buffer with them; raises the interrupt.
    pub fn inject_to_driver(&self, bytes: &[u8]) -> bool {
        let ok = push(&self.to_driver, bytes, &[], None);
        self.raise_irq();
        ok
    }

    fn raise_irq(&self) {
        if let Some(irq) = self.irq.get() {
            irq();
        }
    }

    /// [`Queues::raise_irq`] after a frame was queued for the driver, unless the driver asked
    /// for none ([`Link::pause_interrupts`]).
    fn raise_irq_if_asked(&self) {
        // Relaxed: a first look. Asked for (the common case): raise; raising is never wrong.
        if self.irq_paused.load(Ordering::Relaxed) {
            // SeqCst fence: the frame just queued is visible before we read the pause again
            // (store → load, paired with the fence in `DriverEnd::resume_interrupts` between
            // its clearing the pause and its look at the queue): either we see the pause ended
            // and raise, or the driver's look finds the frame.
            fence(Ordering::SeqCst);
            if self.irq_paused.load(Ordering::Relaxed) {
                return;
            }
        }
        self.raise_irq();
    }

    fn is_down(&self) -> bool {
        // Acquire: pairs with the Release store in `DriverEnd::reset`.
        self.down.load(Ordering::Acquire)
    }
}

/// Copy `hdr` and then `body` (together at most one buffer's worth; the rest is cut) into the
/// next slot of `q` and queue them as one frame, rewritten first if `rewriter` has a rewrite
/// armed (the double-fetch fault: published rewritten, which a receiver of this link cannot
/// tell from rewritten after publication, as it copies each frame out whole); `false` when
/// every slot is taken (nothing is rewritten then).
fn push(q: &SlotQueue<Frame>, hdr: &[u8], body: &[u8], rewriter: Option<&Rewriter>) -> bool {
    q.push_with(|f| {
        let mut n = 0;
        for part in [hdr, body] {
            let k = part.len().min(BUF_SIZE - n);
            f.data[n..n + k].copy_from_slice(&part[..k]);
            n += k;
        }
        f.len = n;
        if let Some(r) = rewriter.and_then(Rewriter::take) {
            r.apply(&mut f.data[..n]);
        }
    })
}

/// Hand at most `budget` waiting frames to `sink`, oldest first; how many.
fn drain(q: &SlotQueue<Frame>, budget: usize, sink: &mut dyn FnMut(&[u8])) -> usize {
    // An empty queue (most polls) costs no lock.
    if q.looks_empty() {
        return 0;
    }
    // Not zeroed: each frame is read only as far as its copy wrote.
    let mut frame = [MaybeUninit::<u8>::uninit(); BUF_SIZE];
    for n in 0..budget {
        let buf = &mut frame;
        // Copied out under the consumers' lock, handed over outside it (the sink may send). An
        // empty queue costs no lock (a look at the next slot's stamp); a frame queued after it
        // is found by the next receive: the sender wakes the receiver after it pushes (an unpark
        // or the interrupt), or the receiver polls again.
        let Some(got) = q.pop_with(move |f| {
            let len = f.len.min(BUF_SIZE);
            copy_into(&mut buf[..len], &f.data[..len])
        }) else {
            return n;
        };
        sink(got);
    }
    budget
}

/// `src` copied into `out` (of the same length), which need not be initialised; the bytes
/// copied. What `<[MaybeUninit<u8>]>::write_copy_of_slice` does from Rust 1.93, past this
/// crate's MSRV.
fn copy_into<'o>(out: &'o mut [MaybeUninit<u8>], src: &[u8]) -> &'o mut [u8] {
    assert_eq!(out.len(), src.len());
    // SAFETY: `src` and `out` are `out.len()` bytes each and do not overlap (`out` is borrowed
    // mutably); `u8` and `MaybeUninit<u8>` have the same layout.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), out.as_mut_ptr().cast::<u8>(), out.len())
    };
    // SAFETY: every byte of `out` was written just above.
    unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), out.len()) }
}

/// The driver's side of the queues.
#[derive(Debug, Clone)]
pub struct DriverEnd(pub Arc<Queues>);

impl DriverEnd {
    /// Queue the frame `hdr` + `body` for the device ([`Link::send`], [`Link::send_parts`]) and
    /// wake it.
    fn queue(&self, hdr: &[u8], body: &[u8]) -> Result<(), LinkError> {
        if self.0.is_down() {
            return Err(LinkError::Down);
        }
        if !push(&self.0.to_device, hdr, body, None) {
            return Err(LinkError::NoBuffer);
        }
        self.wake_device();
        Ok(())
    }

    fn wake_device(&self) {
        self.0.device.wake();
    }
}

impl Link for DriverEnd {
    fn send(&self, frame: &[u8]) -> Result<(), LinkError> {
        self.queue(frame, &[])
    }

    fn send_parts(&self, hdr: &[u8; HDR_SIZE], payload: &[u8]) -> Result<(), LinkError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(LinkError::NoBuffer);
        }
        self.queue(hdr, payload)
    }

    fn loan(&self) -> Result<TxLoan, LinkError> {
        if self.0.is_down() {
            return Err(LinkError::Down);
        }
        let mut loaned = self
            .0
            .loans
            .loaned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let i = loaned.iter().position(|l| !l).ok_or(LinkError::NoBuffer)?;
        loaned[i] = true;
        drop(loaned);
        let bufs: Arc<dyn SharedTxBufs> = self.0.loans.clone();
        Ok(TxLoan::shared(bufs, i as u32))
    }

    fn send_loan(&self, hdr: &[u8; HDR_SIZE], loan: TxLoan) -> Result<(), (LinkError, TxLoan)> {
        if self.0.is_down() {
            return Err((LinkError::Down, loan));
        }
        let (idx, len) = loan
            .into_shared(&*self.0.loans)
            .map_err(|l| (LinkError::Unsupported, l))?;
        let pushed = {
            let bufs = self.0.loans.bufs.lock().unwrap_or_else(|e| e.into_inner());
            bufs.get(idx as usize).map(|b| {
                let body = &b[HDR_SIZE..HDR_SIZE + len.min(MAX_PAYLOAD)];
                push(&self.0.to_device, hdr, body, None)
            })
        };
        // Handed back unsent (queue full), or for a buffer index that was never ours.
        let back = |e| {
            let mut l = TxLoan::shared(self.0.loans.clone(), idx);
            let _ = l.set_len(len);
            Err((e, l))
        };
        match pushed {
            Some(true) => {}
            Some(false) => return back(LinkError::NoBuffer),
            None => return back(LinkError::Unsupported),
        }
        self.0.loans.give_back(idx);
        self.wake_device();
        Ok(())
    }

    fn receive(&self, budget: usize, sink: &mut dyn FnMut(&[u8])) -> usize {
        drain(&self.0.to_driver, budget, sink)
    }

    fn pause_interrupts(&self) {
        // Relaxed: a hint; the device's fenced look in `raise_irq_if_asked` orders what matters.
        self.0.irq_paused.store(true, Ordering::Relaxed);
    }

    fn resume_interrupts(&self) -> bool {
        self.0.irq_paused.store(false, Ordering::Relaxed);
        // SeqCst fence: the pause's end is visible before we look at the queue (pairs with the
        // fence in `Queues::raise_irq_if_asked`).
        fence(Ordering::SeqCst);
        !self.0.to_driver.looks_empty()
    }

    fn reset(&self) {
        // Release: the device end's Acquire load sees the link down before it touches the
        // queues again.
        self.0.down.store(true, Ordering::Release);
        self.0.to_device.clear();
        self.0.to_driver.clear();
    }
}

/// The device's side of the queues. Holds the queues weakly through the interrupt closure only.
#[derive(Debug, Clone)]
pub struct DeviceEnd(pub Arc<Queues>);

impl Link for DeviceEnd {
    fn send(&self, frame: &[u8]) -> Result<(), LinkError> {
        if self.0.is_down() {
            return Err(LinkError::Down);
        }
        if !push(&self.0.to_driver, frame, &[], Some(&self.0.rewriter)) {
            return Err(LinkError::NoBuffer);
        }
        self.0.raise_irq_if_asked();
        Ok(())
    }

    fn receive(&self, budget: usize, sink: &mut dyn FnMut(&[u8])) -> usize {
        if self.0.is_down() {
            return 0;
        }
        drain(&self.0.to_device, budget, sink)
    }

    fn reset(&self) {
        self.0.to_device.clear();
    }
}

/// A weak handle for interrupt closures that must not keep the transport alive.
pub(crate) fn weak<T>(a: &Arc<T>) -> Weak<T> {
    Arc::downgrade(a)
}
