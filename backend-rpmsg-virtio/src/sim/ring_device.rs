//! [`RingDevice`]: a simulated rpmsg virtio device (id 7), the remote's side of the real rings,
//! as OpenAMP's `rpmsg_virtio` runs it on a remote processor: it takes the driver's transmit
//! buffers from virtqueue 1 and returns them empty, and fills the driver's receive buffers from
//! virtqueue 0. It reads and writes the very ring memory the driver's
//! [`VirtioLink`](crate::virtio_link::VirtioLink) set up, through `fwipc_virtio::device_ring`
//! (the same access widths, buffer bytes through `shared_mem`), over the register file of a
//! `fwipc_virtio::sim_device::SimDevice`.
//!
//! Hostile knobs for tests: [`RingDevice::inject_used`] (any id and length on either queue),
//! [`RingDevice::jump_used_idx`] (a flood: `used.idx` moved far ahead),
//! [`RingDevice::hold_tx`] (transmit buffers are read but never returned), and
//! [`RingDevice::signal_needs_reset`] (the device fails and asks for a reset).

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use fwipc_virtio::negotiate::{F_ACCESS_PLATFORM, F_RING_EVENT_IDX, F_VERSION_1};
use fwipc_virtio::sim_device::{SimDevice, SimDeviceConfig, SimTransport};

use super::remote_end::RemoteEnd;
use super::rewrite::{Rewrite, Rewriter};
use crate::addr::{BUF_SIZE, VIRTIO_ID_RPMSG, VIRTIO_RPMSG_F_NS};
use crate::link::{Link, LinkError};
use crate::role::{VQ_DRIVER_RX, VQ_DRIVER_TX};

type Irq = Box<dyn Fn() + Send + Sync>;

struct Shared {
    dev: SimDevice,
    /// The driver's interrupt handler: set once by the fixture, read on every interrupt
    /// without a lock.
    irq: OnceLock<Irq>,
    hold_tx: AtomicBool,
    /// Transmit buffers taken and never returned ([`RingDevice::hold_tx`]).
    held: AtomicU64,
    /// Chains the driver posted that the device could not use (bad index, wrong direction,
    /// too short).
    malformed: AtomicU64,
    /// The double-fetch fault on the device's sends.
    rewriter: Rewriter,
}

/// The device's side of an rpmsg virtio device; clones share it.
#[derive(Clone)]
pub struct RingDevice(Arc<Shared>);

impl core::fmt::Debug for RingDevice {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingDevice").finish_non_exhaustive()
    }
}

/// Entries per queue the simulated device offers (Linux's default split: 256 buffers each way).
pub const RING_QUEUE_MAX: u32 = 256;

impl RingDevice {
    /// A device offering `VERSION_1`, `VIRTIO_RPMSG_F_NS`, `RING_EVENT_IDX` (if `event_idx`) and
    /// `ACCESS_PLATFORM`, two queues of [`RING_QUEUE_MAX`] entries.
    pub fn new(event_idx: bool) -> Self {
        let mut features = F_VERSION_1 | F_ACCESS_PLATFORM | (1u64 << VIRTIO_RPMSG_F_NS);
        if event_idx {
            features |= F_RING_EVENT_IDX;
        }
        RingDevice(Arc::new(Shared {
            dev: SimDevice::new(SimDeviceConfig {
                device_id: VIRTIO_ID_RPMSG,
                features,
                queues: 2,
                queue_max: RING_QUEUE_MAX,
            }),
            irq: OnceLock::new(),
            hold_tx: AtomicBool::new(false),
            held: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            rewriter: Rewriter::default(),
        }))
    }

    /// The driver's view of the register file (give it to `VirtioLink::new`).
    pub fn transport(&self) -> SimTransport {
        self.0.dev.transport()
    }

    /// The register file.
    pub fn device(&self) -> &SimDevice {
        &self.0.dev
    }

    /// From now on, read transmit buffers but never return them (`true`).
    pub fn hold_tx(&self, on: bool) {
        // Relaxed: a knob read on the device's next pass; nothing else rides on it.
        self.0.hold_tx.store(on, Ordering::Relaxed);
    }

    /// Transmit buffers held under [`hold_tx`](Self::hold_tx).
    pub fn held(&self) -> u64 {
        // Relaxed: a statistics counter.
        self.0.held.load(Ordering::Relaxed)
    }

    /// Chains the device refused.
    pub fn malformed(&self) -> u64 {
        // Relaxed: a statistics counter.
        self.0.malformed.load(Ordering::Relaxed)
    }

    /// Publish a used element with any `id` and `len` on `queue` and raise the interrupt.
    /// `false` if the queue is not running.
    pub fn inject_used(&self, queue: u16, id: u32, len: u32) -> bool {
        let ok = self
            .0
            .dev
            .with_queue(queue, |q| {
                q.push_used(id, len);
            })
            .is_some();
        self.interrupt();
        ok
    }

    /// Move `used.idx` of `queue` `by` entries ahead without writing elements (a device flooding
    /// the ring) and raise the interrupt.
    pub fn jump_used_idx(&self, queue: u16, by: u16) -> bool {
        let ok = self
            .0
            .dev
            .with_queue(queue, |q| {
                let next = q.used_idx().wrapping_add(by);
                q.publish_used_idx(next);
            })
            .is_some();
        self.interrupt();
        ok
    }

    /// Fail the way virtio 1.2 §2.1.2 lets a device say so: `DEVICE_NEEDS_RESET` and a
    /// configuration-change interrupt. The device touches no queue until the driver resets it.
    /// `false` if the device was not running.
    pub fn signal_needs_reset(&self) -> bool {
        let ok = self.0.dev.signal_needs_reset();
        if let Some(irq) = self.0.irq.get() {
            irq();
        }
        ok
    }

    fn interrupt(&self) {
        self.0.dev.raise_irq();
        if let Some(irq) = self.0.irq.get() {
            irq();
        }
    }

    fn bad_chain(&self) {
        // Relaxed: a statistics counter.
        self.0.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Fill the next receive buffer with `bytes` and return it to the driver; interrupts when
    /// the driver asks for it. With `rewrite`, the buffer is rewritten right after it is
    /// published (the double-fetch fault).
    fn fill_rx(&self, bytes: &[u8], rewrite: Option<Rewrite>) -> Result<(), LinkError> {
        let r = self.0.dev.with_queue(VQ_DRIVER_RX, |q| {
            let head = q.next_avail().ok_or(LinkError::NoBuffer)?;
            let n = bytes.len().min(BUF_SIZE);
            let d = q.desc(head);
            let ok = d.and_then(|d| q.write_buf(&d, &bytes[..n]));
            // A chain we cannot use goes back empty; the message is lost.
            let len = if ok.is_some() { n as u32 } else { 0 };
            let irq = q.push_used(u32::from(head), len);
            if let (Some(r), Some(d), Some(())) = (rewrite, d, ok) {
                // After `used.idx` was published: a driver polling the ring may be reading it.
                let mut f = [0u8; BUF_SIZE];
                f[..n].copy_from_slice(&bytes[..n]);
                r.apply(&mut f[..n]);
                let _ = q.write_buf(&d, &f[..n]);
            }
            Ok((ok.is_some(), irq))
        });
        match r {
            None => Err(LinkError::Down),
            Some(Err(e)) => Err(e),
            Some(Ok((ok, irq))) => {
                if irq {
                    self.interrupt();
                }
                if ok {
                    Ok(())
                } else {
                    self.bad_chain();
                    Err(LinkError::NoBuffer)
                }
            }
        }
    }
}

impl Link for RingDevice {
    fn send(&self, frame: &[u8]) -> Result<(), LinkError> {
        self.fill_rx(frame, self.0.rewriter.take())
    }

    fn receive(&self, budget: usize, sink: &mut dyn FnMut(&[u8])) -> usize {
        // Not zeroed: the idle look of a polling remote (most calls) finds nothing.
        let mut frame = [MaybeUninit::<u8>::uninit(); BUF_SIZE];
        let mut n = 0;
        for _ in 0..budget {
            let hold = self.0.hold_tx.load(Ordering::Relaxed);
            let buf = &mut frame;
            // Take one transmit buffer under the register lock, hand it on outside it (the sink
            // answers, which takes the lock again).
            let got = self.0.dev.with_queue(VQ_DRIVER_TX, move |q| {
                let head = q.next_avail()?;
                let read = q.desc(head).and_then(|d| {
                    let len = (d.len as usize).min(BUF_SIZE);
                    q.read_buf(&d, &mut buf[..len])
                });
                if !hold {
                    q.push_used(u32::from(head), 0);
                }
                Some(read)
            });
            let Some(Some(read)) = got else {
                break;
            };
            if hold {
                // Relaxed: a statistics counter.
                self.0.held.fetch_add(1, Ordering::Relaxed);
            }
            match read {
                Some(bytes) => sink(bytes),
                None => self.bad_chain(),
            }
            n += 1;
        }
        n
    }

    /// The remote restarts: every transmit buffer it was given is returned unread (bounded by
    /// the queue size).
    fn reset(&self) {
        let _ = self.0.dev.with_queue(VQ_DRIVER_TX, |q| {
            for _ in 0..q.addrs().size {
                let Some(head) = q.next_avail() else { break };
                q.push_used(u32::from(head), 0);
            }
        });
    }
}

impl RemoteEnd for RingDevice {
    fn inject_to_driver(&self, bytes: &[u8]) -> bool {
        self.fill_rx(bytes, None).is_ok()
    }

    fn rewrite_after_publish(&self, count: u8, r: Rewrite) {
        self.0.rewriter.arm(count, r);
    }

    fn set_polling(&self, on: bool) {
        self.0.dev.set_polling(on);
    }

    fn set_irq(&self, irq: Box<dyn Fn() + Send + Sync>) {
        if self.0.irq.set(irq).is_err() {
            log::warn!("rpmsg ring device: the interrupt handler is set already");
        }
    }

    fn set_device_thread(&self, t: std::thread::Thread) {
        if !self.0.dev.on_notify(move |_| t.unpark()) {
            log::warn!("rpmsg ring device: the device thread is set already");
        }
    }
}
