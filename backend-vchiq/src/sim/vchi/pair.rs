//! Test-only simulation glue (std): a slave and a master [`Vchiq`] over one region, with the
//! VideoCore-side VCHI services plugged into the master.
//!
//! Two ways to drive it:
//! * polled from one thread ([`PolledPair::step`], [`PolledPair::open`]): deterministic, every step
//!   is a `poll` of one side, and a hang is a bounded `Timeout`, not a stuck test;
//! * threaded ([`PolledPair::with_videocore_thread`]): a second thread plays the VideoCore
//!   (polls the master and flushes its services) while client threads poll the slave, so the
//!   core's cross-thread orderings are exercised.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::vec::Vec;

use std::task::Waker;

use fwipc_transport_api::{Error, Parker, StdClock, Wait};

use crate::config::Config;
use crate::engine::service::{ServiceHandle, ServiceParams};
use crate::engine::vchiq::Vchiq;
use crate::platform::Platform;
use crate::shared::region::OwnedRegion;
use crate::vchi::core_link::CoreLink;
use crate::vchi::error::VchiError;
use crate::vchi::link::VcService;
use crate::vchi::service_host::VcServiceHost;

const PAGE: usize = 4096;

/// The bus address the simulated region is given.
pub const REGION_BUS: u32 = 0x3E00_0000;
/// Bus pages handed out for bulk buffers start here (the 0xC000_0000 uncached alias).
pub const BULK_BUS_BASE: u32 = 0xC000_0000;

#[derive(Default)]
struct PageTable {
    bus_of: HashMap<usize, u32>,
    cpu_of: HashMap<u32, usize>,
    refs: HashMap<usize, usize>,
    /// (pagelist bus address, bus page) → mappings of that page for that transfer: the master
    /// resolves a page only for a transfer that mapped it.
    owners: HashMap<(u32, u32), usize>,
    next: u32,
}

/// The shared "IOMMU" of the simulated pair: the slave maps its buffer pages to bus pages, the
/// master translates them back.
#[derive(Clone, Default)]
pub struct SimPlatform {
    table: Arc<Mutex<PageTable>>,
}

// SAFETY: `map_page` hands out a distinct bus page per CPU page and keeps the mapping until the
// last `unmap_page`; `bus_to_cpu` returns only CPU pages that are currently mapped (and
// `bulk_bus_to_cpu` only those mapped for the pagelist it is given), which the
// slave keeps alive (its bulk owns the buffer) for as long as the transfer is queued. The
// doorbell is a no-op: the pair is driven by polling.
unsafe impl Platform for SimPlatform {
    fn ring_doorbell(&self) {}

    fn map_page(&self, cpu_page: usize) -> Option<u32> {
        let mut t = self.table.lock().ok()?;
        *t.refs.entry(cpu_page).or_insert(0) += 1;
        if let Some(&b) = t.bus_of.get(&cpu_page) {
            return Some(b);
        }
        let bus = BULK_BUS_BASE.checked_add(t.next.checked_mul(PAGE as u32)?)?;
        t.next += 1;
        t.bus_of.insert(cpu_page, bus);
        t.cpu_of.insert(bus, cpu_page);
        Some(bus)
    }

    fn unmap_page(&self, cpu_page: usize) {
        let Ok(mut t) = self.table.lock() else { return };
        let gone = match t.refs.get_mut(&cpu_page) {
            Some(n) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if gone {
            t.refs.remove(&cpu_page);
            if let Some(b) = t.bus_of.remove(&cpu_page) {
                t.cpu_of.remove(&b);
            }
        }
    }

    fn bus_to_cpu(&self, bus_page: u32) -> Option<usize> {
        self.table.lock().ok()?.cpu_of.get(&bus_page).copied()
    }

    fn map_bulk_page(&self, pagelist: u32, cpu_page: usize, _wide: bool) -> Option<u64> {
        let bus = self.map_page(cpu_page)?;
        let Ok(mut t) = self.table.lock() else {
            self.unmap_page(cpu_page);
            return None;
        };
        *t.owners.entry((pagelist, bus)).or_insert(0) += 1;
        Some(u64::from(bus))
    }

    fn unmap_bulk_page(&self, pagelist: u32, cpu_page: usize) {
        if let Ok(mut t) = self.table.lock() {
            if let Some(&bus) = t.bus_of.get(&cpu_page) {
                if let Some(n) = t.owners.get_mut(&(pagelist, bus)) {
                    *n -= 1;
                    if *n == 0 {
                        t.owners.remove(&(pagelist, bus));
                    }
                }
            }
        }
        self.unmap_page(cpu_page);
    }

    fn bulk_bus_to_cpu(&self, pagelist: u32, bus_page: u64) -> Option<usize> {
        let bus = u32::try_from(bus_page).ok()?;
        let t = self.table.lock().ok()?;
        if !t.owners.contains_key(&(pagelist, bus)) {
            return None;
        }
        t.cpu_of.get(&bus).copied()
    }
}

trait Flush: Send + Sync {
    fn flush(&self, vchiq: &Vchiq) -> usize;
}

impl<S: VcService + Send, F: Fn() -> S + Send + Sync> Flush for VcServiceHost<S, F> {
    fn flush(&self, vchiq: &Vchiq) -> usize {
        VcServiceHost::flush(self, vchiq)
    }
}

/// A slave (ARM) and a master (simulated VideoCore) over one region, polled from one thread.
pub struct PolledPair {
    mem: Arc<OwnedRegion>,
    slave: Vchiq,
    master: Vchiq,
    hosts: Vec<Arc<dyn Flush>>,
}

/// How long a blocking call of a [`PolledPair`] link waits before `Transport(Timeout)`: the
/// polled pair is deterministic, so a wait this long means the peer will never answer.
pub const POLLED_TIMEOUT: Duration = Duration::from_secs(1);

/// The single-threaded pair "parks" by running the VideoCore: a link opened by
/// [`PolledPair::open`] waits with `Wait::Completion(pair)`, so each pause between two polls of
/// the slave is one [`PolledPair::videocore_step`]. Nothing wakes it: the waker is a no-op.
impl Parker for PolledPair {
    fn waker(&self) -> &Waker {
        Waker::noop()
    }
    fn park_timeout(&self, _timeout: Duration) {
        self.videocore_step();
    }
}

impl PolledPair {
    /// Build both sides on a fresh region (slave first: it writes slot zero).
    pub fn new(cfg: Config) -> Result<Self, VchiError> {
        Self::with_configs(cfg, cfg)
    }

    /// Like [`Self::new`] but each side with its own configuration: for negative tests of
    /// settings the two sides must agree on but cannot check (the fragment cache-line size,
    /// docs/protocols/vchiq.md §5 cause 1).
    pub fn with_configs(slave_cfg: Config, master_cfg: Config) -> Result<Self, VchiError> {
        let size = slave_cfg.region_size().max(master_cfg.region_size());
        let mem = OwnedRegion::new(size)?;
        let plat = SimPlatform::default();
        let slave = Vchiq::new_slave(
            mem.region(REGION_BUS)?,
            Box::new(plat.clone()),
            slave_cfg,
            Box::new(StdClock::new()),
        )?;
        let master = Vchiq::new_master(
            mem.region(REGION_BUS)?,
            Box::new(plat),
            master_cfg,
            Box::new(StdClock::new()),
        )?;
        Ok(PolledPair {
            mem,
            slave,
            master,
            hosts: Vec::new(),
        })
    }

    /// The ARM side.
    pub fn slave(&self) -> &Vchiq {
        &self.slave
    }

    /// The simulated VideoCore.
    pub fn master(&self) -> &Vchiq {
        &self.master
    }

    /// Plug a VideoCore-side service into the master (before or after connect). Returns the
    /// host (to inspect the handlers) and the server handle.
    pub fn add_vc_service<S, F>(
        &mut self,
        params: ServiceParams,
        make: F,
    ) -> Result<(Arc<VcServiceHost<S, F>>, ServiceHandle), VchiError>
    where
        S: VcService + Send + 'static,
        F: Fn() -> S + Send + Sync + 'static,
    {
        let host = Arc::new(VcServiceHost::new(make));
        let h = self.master.add_service_arc(params, host.clone())?;
        self.hosts.push(host.clone());
        Ok((host, h))
    }

    /// Another listener on the same host (same fourcc, same handler, as the core requires).
    pub fn add_listener<S, F>(
        &self,
        params: ServiceParams,
        host: &Arc<VcServiceHost<S, F>>,
    ) -> Result<ServiceHandle, VchiError>
    where
        S: VcService + Send + 'static,
        F: Fn() -> S + Send + Sync + 'static,
    {
        Ok(self.master.add_service_arc(params, host.clone())?)
    }

    /// Exchange CONNECTs.
    pub fn connect(&self) -> Result<(), VchiError> {
        self.slave.connect()?;
        self.master.connect()?;
        self.slave.wait_until_with(
            Wait::Completion(self),
            POLLED_TIMEOUT,
            VchiError::Transport(Error::Timeout),
            || (self.slave.is_connected() && self.master.is_connected()).then_some(Ok(())),
        )
    }

    /// One round: poll both sides and flush the VideoCore services. Returns the work done.
    pub fn step(&self) -> usize {
        let mut w = self.slave.poll() + self.master.poll();
        for h in &self.hosts {
            w += h.flush(&self.master);
        }
        w
    }

    /// Open a client link to the VideoCore's `params.fourcc`. The link waits with
    /// `Wait::Completion(self)`: each pause runs one VideoCore step (see the [`Parker`] impl), and
    /// each blocking call gives up with `Transport(Timeout)` after [`POLLED_TIMEOUT`].
    pub fn open(&self, params: ServiceParams, depth: usize) -> Result<CoreLink<'_>, VchiError> {
        CoreLink::open(
            &self.slave,
            params,
            depth,
            Wait::Completion(self),
            POLLED_TIMEOUT,
        )
    }

    /// The VideoCore's half of a step: poll the master and flush its services.
    pub fn videocore_step(&self) -> usize {
        let mut w = self.master.poll();
        for h in &self.hosts {
            w += h.flush(&self.master);
        }
        w
    }

    /// Run `client` on this thread while another thread plays the VideoCore until `client`
    /// returns. Use [`Self::open_threaded`] inside it.
    pub fn with_videocore_thread<R>(&self, client: impl FnOnce(&Self) -> R) -> R {
        let stop = AtomicBool::new(false);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                let mut idle = 0u32;
                // Relaxed: a stop flag; nothing is published through it.
                while !stop.load(Ordering::Relaxed) {
                    if self.videocore_step() == 0 {
                        idle += 1;
                        if idle > 64 {
                            std::thread::sleep(Duration::from_micros(20));
                        } else {
                            std::thread::yield_now();
                        }
                    } else {
                        idle = 0;
                    }
                }
            });
            let r = client(self);
            // Relaxed: see above.
            stop.store(true, Ordering::Relaxed);
            r
        })
    }

    /// Open a client link for the threaded mode (any number of client threads may each hold
    /// one): it polls the slave and yields ([`crate::sim::SIM_WAIT`]) between polls, each blocking
    /// call bounded by `timeout`.
    pub fn open_threaded(
        &self,
        params: ServiceParams,
        depth: usize,
        timeout: Duration,
    ) -> Result<CoreLink<'_>, VchiError> {
        CoreLink::open(&self.slave, params, depth, crate::sim::SIM_WAIT, timeout)
    }

    /// Run steps until nothing moves.
    pub fn settle(&self) {
        for _ in 0..1000 {
            if self.step() == 0 {
                return;
            }
        }
    }

    /// A copy of the region's bytes (for layout audits). Call between steps.
    pub fn snapshot(&self) -> Result<Vec<u8>, VchiError> {
        let view = self.mem.region(REGION_BUS)?;
        let mut v = std::vec![0u8; view.len()];
        if !view.read_bytes(0, &mut v) {
            return Err(VchiError::InvalidArgument);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The master resolves a bulk page only for the pagelist it was mapped for, and only while
    /// it is mapped (issue 12 finding 9: no steering into another transfer's page).
    #[test]
    fn bulk_pages_resolve_only_for_their_transfer() {
        let p = SimPlatform::default();
        let (a, b) = (0x3E00_9000u32, 0x3E00_A000u32);
        let bus = p.map_bulk_page(a, 0x1234_5000, false).unwrap();
        assert_eq!(p.bulk_bus_to_cpu(a, bus), Some(0x1234_5000));
        assert_eq!(p.bulk_bus_to_cpu(b, bus), None, "another transfer's page");
        assert_eq!(p.bus_to_cpu(bus as u32), Some(0x1234_5000), "mapped, for A");
        // The same page in two transfers (two small buffers in one page): each sees it until
        // it unmaps its own mapping.
        assert_eq!(p.map_bulk_page(b, 0x1234_5000, false), Some(bus));
        p.unmap_bulk_page(a, 0x1234_5000);
        assert_eq!(p.bulk_bus_to_cpu(a, bus), None);
        assert_eq!(p.bulk_bus_to_cpu(b, bus), Some(0x1234_5000));
        p.unmap_bulk_page(b, 0x1234_5000);
        assert_eq!(p.bulk_bus_to_cpu(b, bus), None);
        assert_eq!(p.bus_to_cpu(bus as u32), None, "unmapped");
    }
}
