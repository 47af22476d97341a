//! Two fixed-capacity queues of 512-byte buffers, one per direction, with the sizes of Linux's
//! default (256 buffers each way). [`DriverEnd`] and [`DeviceEnd`] are the two sides'
//! [`Link`]s. Capacity is reserved at setup: steady-state traffic allocates nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

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

#[derive(Clone, Copy)]
struct Buf {
    len: usize,
    data: [u8; BUF_SIZE],
}

type Irq = Box<dyn Fn() + Send + Sync>;

/// The shared queues.
pub struct Queues {
    to_device: Mutex<VecDeque<Buf>>,
    to_driver: Mutex<VecDeque<Buf>>,
    down: AtomicBool,
    device_thread: Mutex<Option<std::thread::Thread>>,
    irq: Mutex<Option<Irq>>,
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
            to_device: Mutex::new(VecDeque::with_capacity(QUEUE_BUFS)),
            to_driver: Mutex::new(VecDeque::with_capacity(QUEUE_BUFS)),
            down: AtomicBool::new(false),
            device_thread: Mutex::new(None),
            irq: Mutex::new(None),
            loans: Arc::new(LoanBufs {
                bufs: Mutex::new(vec![[0; BUF_SIZE]; QUEUE_LOANS]),
                loaned: Mutex::new(vec![false; QUEUE_LOANS]),
            }),
            rewriter: Rewriter::default(),
        })
    }

    /// The thread to unpark when the driver sends.
    pub fn set_device_thread(&self, t: std::thread::Thread) {
        *self.device_thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }

    /// The driver's interrupt handler, run after the device sends (interrupt mode).
    pub fn set_irq(&self, irq: impl Fn() + Send + Sync + 'static) {
        *self.irq.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(irq));
    }

    /// Put raw bytes (at most one buffer's worth) in the driver's receive queue, as if the
    /// device had filled a buffer with them; raises the interrupt.
    pub fn inject_to_driver(&self, bytes: &[u8]) -> bool {
        let ok = push(&self.to_driver, bytes);
        self.raise_irq();
        ok
    }

    fn raise_irq(&self) {
        if let Some(irq) = &*self.irq.lock().unwrap_or_else(|e| e.into_inner()) {
            irq();
        }
    }

    fn is_down(&self) -> bool {
        // Acquire: pairs with the Release store in `DriverEnd::reset`.
        self.down.load(Ordering::Acquire)
    }
}

fn push(q: &Mutex<VecDeque<Buf>>, bytes: &[u8]) -> bool {
    let mut q = q.lock().unwrap_or_else(|e| e.into_inner());
    if q.len() >= QUEUE_BUFS {
        return false;
    }
    let n = bytes.len().min(BUF_SIZE);
    let mut b = Buf {
        len: n,
        data: [0; BUF_SIZE],
    };
    b.data[..n].copy_from_slice(&bytes[..n]);
    q.push_back(b);
    true
}

fn drain(q: &Mutex<VecDeque<Buf>>, budget: usize, sink: &mut dyn FnMut(&[u8])) -> usize {
    let mut n = 0;
    while n < budget {
        // Pop under the lock, hand over outside it (the sink may send).
        let b = q.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let Some(b) = b else { break };
        sink(&b.data[..b.len.min(BUF_SIZE)]);
        n += 1;
    }
    n
}

/// The driver's side of the queues.
#[derive(Debug, Clone)]
pub struct DriverEnd(pub Arc<Queues>);

impl DriverEnd {
    fn wake_device(&self) {
        if let Some(t) = &*self
            .0
            .device_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
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
        self.0
            .to_device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.0
            .to_driver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
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
            let mut q = self.0.to_driver.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(b) = q.back_mut() {
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
        self.0
            .to_device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// A weak handle for interrupt closures that must not keep the transport alive.
pub(crate) fn weak<T>(a: &Arc<T>) -> Weak<T> {
    Arc::downgrade(a)
}
