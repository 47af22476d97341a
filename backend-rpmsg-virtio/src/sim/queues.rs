//! Two fixed-capacity queues of 512-byte buffers, one per direction, with the sizes of Linux's
//! default (256 buffers each way). [`DriverEnd`] and [`DeviceEnd`] are the two sides'
//! [`Link`]s. Capacity is reserved at setup: steady-state traffic allocates nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::addr::BUF_SIZE;
use crate::link::{Link, LinkError};

/// Buffers per direction.
pub const QUEUE_BUFS: usize = 256;

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

impl Link for DriverEnd {
    fn send(&self, frame: &[u8]) -> Result<(), LinkError> {
        if self.0.is_down() {
            return Err(LinkError::Down);
        }
        if !push(&self.0.to_device, frame) {
            return Err(LinkError::NoBuffer);
        }
        if let Some(t) = &*self
            .0
            .device_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            t.unpark();
        }
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
