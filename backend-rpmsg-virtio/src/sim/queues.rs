//! Two fixed-capacity queues of 512-byte buffers, one per direction, with the sizes of Linux's
//! default (256 buffers each way). [`DriverEnd`] and [`DeviceEnd`] are the two sides'
//! [`Link`]s. Every buffer is allocated at setup and moves between a queue's spare list and its
//! waiting line by pointer: a frame is copied once, its own length, into a spare buffer, and the
//! receiver reads it in place. Steady-state traffic allocates nothing.
//!
//! Not the simulators' shared queue (`fwipc_transport_api::fixture::SlotQueue`, a ring of
//! slots, which the FastRPC link and the loopback use); each direction keeps a length hint
//! beside its lock instead, read by an empty poll without the lock. A receiver here hands each
//! frame to its sink outside the lock (the sink may send) and reads it where it lies, which a
//! ring slot cannot allow (the sender could refill it under the reader). A buffer instead leaves the queue by pointer and goes
//! back to the spare list with the next frame's pop, one lock per frame.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

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

struct Buf {
    len: usize,
    data: [u8; BUF_SIZE],
}

/// One direction: the frames waiting, oldest first, and the spare buffers. The two together
/// always hold [`QUEUE_BUFS`] buffers (one may be out with a receiver for the length of its
/// sink call), so neither list ever grows past the capacity reserved here.
struct Queue {
    waiting: VecDeque<Box<Buf>>,
    // Boxed on purpose: a buffer moves between the two lists by pointer, never by value.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Buf>>,
}

impl Queue {
    fn new() -> Self {
        Queue {
            waiting: VecDeque::with_capacity(QUEUE_BUFS),
            spare: (0..QUEUE_BUFS)
                .map(|_| {
                    Box::new(Buf {
                        len: 0,
                        data: [0; BUF_SIZE],
                    })
                })
                .collect(),
        }
    }

    /// Drop every waiting frame (its buffer is spare again).
    fn clear(&mut self) {
        let Queue { waiting, spare } = self;
        spare.extend(waiting.drain(..));
    }
}

type Irq = Box<dyn Fn() + Send + Sync>;

/// One direction's queue and its length, stored under the queue's lock whenever it changes and
/// read without it: a receiver that finds nothing waiting takes no lock, so a side polling an
/// empty queue reads a line the sender keeps shared instead of taking it away on every turn.
///
/// The lock is a `spin` lock, held for one frame's push or pop: one read-modify-write per pass,
/// where a `std` mutex's release is a second.
struct Dir {
    q: spin::Mutex<Queue>,
    waiting: AtomicUsize,
}

impl Dir {
    fn new() -> Self {
        Dir {
            q: spin::Mutex::new(Queue::new()),
            waiting: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> spin::MutexGuard<'_, Queue> {
        self.q.lock()
    }

    /// Store the waiting count (under the lock `q` is).
    fn note(&self, q: &Queue) {
        // Relaxed: a hint; the frames are published by the lock's release, and a receiver that
        // sees a count takes the lock before it looks at them.
        self.waiting.store(q.waiting.len(), Ordering::Relaxed);
    }

    /// Drop every waiting frame (its buffer is spare again).
    fn clear(&self) {
        let mut q = self.lock();
        q.clear();
        self.note(&q);
    }
}

/// The shared queues.
pub struct Queues {
    to_device: Dir,
    to_driver: Dir,
    down: AtomicBool,
    /// Set once by the fixture; read on every driver send without a lock.
    device_thread: OnceLock<std::thread::Thread>,
    /// The driver's interrupt handler: set once by the fixture, read on every interrupt
    /// without a lock.
    irq: OnceLock<Irq>,
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
            to_device: Dir::new(),
            to_driver: Dir::new(),
            down: AtomicBool::new(false),
            device_thread: OnceLock::new(),
            irq: OnceLock::new(),
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
        if self.device_thread.set(t).is_err() {
            log::warn!("sim queues: the device thread is set already");
        }
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
        let ok = push(&self.to_driver, bytes);
        self.raise_irq();
        ok
    }

    fn raise_irq(&self) {
        if let Some(irq) = self.irq.get() {
            irq();
        }
    }

    fn is_down(&self) -> bool {
        // Acquire: pairs with the Release store in `DriverEnd::reset`.
        self.down.load(Ordering::Acquire)
    }
}

/// Copy `bytes` (at most one buffer's worth) into a spare buffer and queue it; `false` when
/// every buffer is taken.
fn push(d: &Dir, bytes: &[u8]) -> bool {
    let mut q = d.lock();
    let Some(mut b) = q.spare.pop() else {
        return false;
    };
    let n = bytes.len().min(BUF_SIZE);
    b.data[..n].copy_from_slice(&bytes[..n]);
    b.len = n;
    q.waiting.push_back(b);
    d.note(&q);
    true
}

/// Hand at most `budget` waiting frames to `sink`, oldest first; how many.
fn drain(d: &Dir, budget: usize, sink: &mut dyn FnMut(&[u8])) -> usize {
    // Relaxed: the hint (see `Dir`). A frame this look misses is found by the next receive: the
    // sender wakes the receiver after it pushes (an unpark or the interrupt), or the receiver
    // polls again.
    if d.waiting.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    let mut n = 0;
    let mut read: Option<Box<Buf>> = None;
    loop {
        // Pop under the lock, hand over outside it (the sink may send). The buffer just read
        // goes back to the spares under the same lock.
        let next = {
            let mut q = d.lock();
            if let Some(b) = read.take() {
                q.spare.push(b);
            }
            let next = if n == budget {
                None
            } else {
                q.waiting.pop_front()
            };
            d.note(&q);
            next
        };
        let Some(b) = next else { return n };
        sink(&b.data[..b.len.min(BUF_SIZE)]);
        read = Some(b);
        n += 1;
    }
}

/// The driver's side of the queues.
#[derive(Debug, Clone)]
pub struct DriverEnd(pub Arc<Queues>);

impl DriverEnd {
    fn wake_device(&self) {
        if let Some(t) = self.0.device_thread.get() {
            t.unpark();
        }
    }
}

impl Link for DriverEnd {
    fn send(&self, frame: &[u8]) -> Result<(), LinkError> {
        if self.0.is_down() {
            return Err(LinkError::Down);
        }
        if !push(&self.0.to_device, frame) {
            return Err(LinkError::NoBuffer);
        }
        self.wake_device();
        Ok(())
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
            let mut bufs = self.0.loans.bufs.lock().unwrap_or_else(|e| e.into_inner());
            bufs.get_mut(idx as usize).map(|b| {
                b[..HDR_SIZE].copy_from_slice(hdr);
                push(&self.0.to_device, &b[..HDR_SIZE + len.min(MAX_PAYLOAD)])
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
        if !push(&self.0.to_driver, frame) {
            return Err(LinkError::NoBuffer);
        }
        if let Some(r) = self.0.rewriter.take() {
            // Published: rewrite it where it waits, if the driver has not taken it yet.
            let mut q = self.0.to_driver.lock();
            if let Some(b) = q.waiting.back_mut() {
                let n = b.len.min(BUF_SIZE);
                r.apply(&mut b.data[..n]);
            }
        }
        self.0.raise_irq();
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
