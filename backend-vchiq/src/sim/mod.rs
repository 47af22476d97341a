//! The simulated VideoCore (std): the same core in the **master** role, in its own thread, over a
//! heap region, with the doorbell as a real wake-up (a condition variable per direction) and a
//! simulated bus that translates the slave's pages for the master's DMA.
//!
//! - [`SimPair`]: region + slave + master + worker threads.
//! - [`SimBus`] / [`SimPlatform`]: the doorbells and the bus address space.
//! - [`framed_echo::EchoService`]: the conformance suite's VideoCore-side 'echo' service (it speaks
//!   the fwipc framing of `frame`; `vchi::echo_server` here is the `vchiq_test` one).
//! - [`fixture::VchiqFixture`]: the conformance fixture.
//! - [`vchi`]: the VideoCore side of the VCHI services (`'SMEM'`, `'echo'`, `'func'`/`'fun2'`)
//!   and the single-threaded pair their clients are tested against.

pub mod fixture;
pub mod framed_echo;
#[doc(hidden)]
pub mod internals;
mod rewrite;
pub mod vchi;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::Config;
use crate::engine::vchiq::Vchiq;
use crate::error::{Result, VchiqError};
use crate::platform::Platform;
use crate::shared::region::OwnedRegion;
use fwipc_transport_api::fixture::{SimMode, SimModeSwitch};
use fwipc_transport_api::{Clock, SpinBudget, StdClock, Wait};

pub use fixture::VchiqFixture;

/// Bus address of the simulated region.
pub const SIM_REGION_BUS: u32 = 0x4000_0000;
const SIM_DMA_BUS_BASE: u32 = 0x8000_0000;
const SIM_DMA_BUS_BASE_WIDE: u64 = 0x7_8000_0000;

/// One direction's doorbell: a latched flag and a condition variable.
#[derive(Default)]
pub struct Bell {
    rung: Mutex<bool>,
    cv: Condvar,
    rings: AtomicU64,
}

impl Bell {
    /// Ring: latch and wake the waiter.
    pub fn ring(&self) {
        // Relaxed: statistics.
        self.rings.fetch_add(1, Ordering::Relaxed);
        let mut r = self.rung.lock().unwrap_or_else(|e| e.into_inner());
        *r = true;
        self.cv.notify_all();
    }

    /// Wait until rung (or `stop`), then clear the latch.
    pub fn wait(&self, stop: &AtomicBool) {
        let mut r = self.rung.lock().unwrap_or_else(|e| e.into_inner());
        // Acquire: pairs with the Release store of `stop` in `SimPair::stop_workers`.
        while !*r && !stop.load(Ordering::Acquire) {
            r = self.cv.wait(r).unwrap_or_else(|e| e.into_inner());
        }
        *r = false;
    }

    /// How often it was rung.
    pub fn rings(&self) -> u64 {
        // Relaxed: statistics.
        self.rings.load(Ordering::Relaxed)
    }
}

/// Hashes the bus maps' integer keys (page addresses, bus addresses) with one multiply per word
/// (the FxHash step), the result rotated so the well-mixed high bits pick the bucket (page
/// addresses have twelve zero low bits). The default SipHash cost more per 4 KiB page than
/// copying the page in the bulk benchmark (docs/benchmarks/changes.md, "Wide shared-memory copies").
#[derive(Default, Clone, Copy)]
struct PageHasher(u64);

impl Hasher for PageHasher {
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
}

/// A bus map keyed by integers.
type PageMap<K, V> = HashMap<K, V, BuildHasherDefault<PageHasher>>;

/// Pages of the simulated bus window (the window ends below 4 GiB in the classic layout).
const SIM_DMA_WINDOW_PAGES: u64 = 0x7_0000;
const PAGE: usize = crate::wire::consts::VCHIQ_SLOT_SIZE;

/// `pages` pages mapped for one bulk transfer: bus page `bus + k * 4096` is the CPU page
/// `cpu + k * 4096` for every `k < pages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BusRun {
    bus: u64,
    cpu: usize,
    pages: usize,
}

impl BusRun {
    fn cpu_end(&self) -> usize {
        self.cpu + self.pages * PAGE
    }
    fn bus_end(&self) -> u64 {
        self.bus + (self.pages * PAGE) as u64
    }
}

#[derive(Default)]
struct BusMaps {
    /// `map_page`'s mappings (one per CPU page, counted): not used for bulk transfers.
    cpu_to_bus: PageMap<usize, (u64, u32)>,
    bus_to_cpu: PageMap<u64, usize>,
    /// Pagelist bus address → the runs mapped for that transfer: the master resolves a bus page
    /// only in the runs of the transfer whose pagelist it walks, one lookup per run (not per
    /// page). A finished transfer's entry stays, emptied, so its `Vec` is reused by the next
    /// transfer on that pagelist (the region holds a fixed set of pagelists): no allocation per
    /// transfer.
    runs: PageMap<u32, Vec<BusRun>>,
    next: u64,
}

/// Cache maintenance the simulated ARM was asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheOps {
    /// `dma_invalidate` calls.
    pub invalidates: u64,
    /// Invalidates that were not whole cache lines (would destroy neighbouring data on hardware).
    pub partial_line_invalidates: u64,
    /// `dma_clean` calls.
    pub cleans: u64,
    /// `dma_clean_invalidate` calls (receive buffers, before the transfer).
    pub clean_invalidates: u64,
    /// Clean+invalidates that were not whole cache lines.
    pub partial_line_clean_invalidates: u64,
}

/// The simulated bus: page translations the slave creates for bulk transfers and the master
/// resolves (an IOMMU-like window at 0x8000_0000), shared by both sides of a pair.
#[derive(Default)]
pub struct SimBus {
    maps: Mutex<BusMaps>,
    cache: Mutex<CacheOps>,
    cache_line: std::sync::atomic::AtomicUsize,
    wide: AtomicBool,
}

impl BusMaps {
    /// `pages` fresh bus pages (at most the window, fewer where the window wraps): their base.
    fn alloc(&mut self, pages: usize, wide: bool) -> (u64, usize) {
        let base = if wide {
            SIM_DMA_BUS_BASE_WIDE
        } else {
            SIM_DMA_BUS_BASE as u64
        };
        if self.next >= SIM_DMA_WINDOW_PAGES {
            self.next = 0;
        }
        let n = (pages as u64).min(SIM_DMA_WINDOW_PAGES - self.next);
        let bus = base + self.next * PAGE as u64;
        self.next += n;
        (bus, n as usize)
    }

    /// Map `cpu_page` (one more reference if it is mapped already); its bus address. `wide`:
    /// the window above 4 GiB.
    fn map(&mut self, cpu_page: usize, wide: bool) -> u64 {
        if let Some((bus, refs)) = self.cpu_to_bus.get_mut(&cpu_page) {
            *refs += 1;
            return *bus;
        }
        let (bus, _) = self.alloc(1, wide);
        self.cpu_to_bus.insert(cpu_page, (bus, 1));
        self.bus_to_cpu.insert(bus, cpu_page);
        bus
    }

    /// Drop one reference to the mapping of `cpu_page`; unmapped with the last.
    fn unmap(&mut self, cpu_page: usize) {
        let gone = match self.cpu_to_bus.get_mut(&cpu_page) {
            Some((bus, refs)) => {
                *refs -= 1;
                (*refs == 0).then_some(*bus)
            }
            None => None,
        };
        if let Some(bus) = gone {
            self.cpu_to_bus.remove(&cpu_page);
            self.bus_to_cpu.remove(&bus);
        }
    }

    /// Map up to `pages` pages from `cpu_page` for the transfer whose pagelist is at `pagelist`,
    /// as one run on the bus (extending the transfer's last run where both addresses continue
    /// it): (bus address, pages mapped).
    fn map_run(
        &mut self,
        pagelist: u32,
        cpu_page: usize,
        pages: usize,
        wide: bool,
    ) -> (u64, usize) {
        let (bus, n) = self.alloc(pages, wide);
        let runs = self.runs.entry(pagelist).or_default();
        match runs.last_mut() {
            Some(r) if r.cpu_end() == cpu_page && r.bus_end() == bus => r.pages += n,
            _ => runs.push(BusRun {
                bus,
                cpu: cpu_page,
                pages: n,
            }),
        }
        (bus, n)
    }

    /// Unmap the `pages` pages from `cpu_page` mapped for the transfer whose pagelist is at
    /// `pagelist` (any part of its runs: a run is cut where the range ends inside it).
    fn unmap_run(&mut self, pagelist: u32, cpu_page: usize, pages: usize) {
        let Some(runs) = self.runs.get_mut(&pagelist) else {
            return;
        };
        let lo = cpu_page;
        let hi = cpu_page.saturating_add(pages.saturating_mul(PAGE));
        let mut i = 0;
        while i < runs.len() {
            let r = runs[i];
            if hi <= r.cpu || r.cpu_end() <= lo {
                i += 1;
                continue;
            }
            // What stays: the pages before `lo` and those from `hi` on.
            let head = (lo.max(r.cpu) - r.cpu) / PAGE;
            let tail = (r.cpu_end() - hi.min(r.cpu_end())) / PAGE;
            let tail_run = BusRun {
                bus: r.bus + ((r.pages - tail) * PAGE) as u64,
                cpu: r.cpu_end() - tail * PAGE,
                pages: tail,
            };
            match (head, tail) {
                (0, 0) => {
                    runs.remove(i);
                    continue;
                }
                (0, _) => runs[i] = tail_run,
                (_, 0) => runs[i].pages = head,
                _ => {
                    runs[i].pages = head;
                    runs.insert(i + 1, tail_run);
                    i += 1;
                }
            }
            i += 1;
        }
    }

    /// The CPU address of `bus_page` and how many pages from it on (at most `pages`) the
    /// transfer whose pagelist is at `pagelist` mapped as one run; `None` if it did not map
    /// `bus_page`.
    fn resolve_run(&self, pagelist: u32, bus_page: u64, pages: usize) -> Option<(usize, usize)> {
        if !bus_page.is_multiple_of(PAGE as u64) {
            return None;
        }
        let r = self
            .runs
            .get(&pagelist)?
            .iter()
            .find(|r| r.bus <= bus_page && bus_page < r.bus_end())?;
        let k = ((bus_page - r.bus) / PAGE as u64) as usize;
        Some((r.cpu + k * PAGE, (r.pages - k).min(pages.max(1))))
    }

    /// Bulk pages currently mapped, over every transfer.
    fn run_pages(&self) -> usize {
        self.runs.values().flatten().map(|r| r.pages).sum()
    }
}

impl SimBus {
    /// Relaxed: configuration set before the pair runs. Wide mode puts the window above 4 GiB
    /// (a Pi 4 with 8 GiB), so only the 36-bit pagelist format can reach it.
    fn wide(&self) -> bool {
        self.wide.load(Ordering::Relaxed)
    }

    fn map(&self, cpu_page: usize) -> Option<u64> {
        let wide = self.wide();
        Some(self.maps.lock().ok()?.map(cpu_page, wide))
    }

    fn unmap(&self, cpu_page: usize) {
        if let Ok(mut m) = self.maps.lock() {
            m.unmap(cpu_page);
        }
    }

    fn resolve(&self, bus_page: u64) -> Option<usize> {
        self.maps.lock().ok()?.bus_to_cpu.get(&bus_page).copied()
    }

    /// Map up to `pages` pages from `cpu_page` for the transfer whose pagelist is at `pagelist`,
    /// one lock for the whole run: (bus address, pages mapped).
    fn map_run(&self, pagelist: u32, cpu_page: usize, pages: usize) -> Option<(u64, usize)> {
        if pages == 0 {
            return None;
        }
        let wide = self.wide();
        Some(
            self.maps
                .lock()
                .ok()?
                .map_run(pagelist, cpu_page, pages, wide),
        )
    }

    fn unmap_run(&self, pagelist: u32, cpu_page: usize, pages: usize) {
        if let Ok(mut m) = self.maps.lock() {
            m.unmap_run(pagelist, cpu_page, pages);
        }
    }

    /// The CPU address of `bus_page` and the pages from it on (at most `pages`) that the
    /// transfer whose pagelist is at `pagelist` mapped as one run.
    fn resolve_run(&self, pagelist: u32, bus_page: u64, pages: usize) -> Option<(usize, usize)> {
        self.maps
            .lock()
            .ok()?
            .resolve_run(pagelist, bus_page, pages)
    }

    /// Cache maintenance requested so far.
    pub fn cache_ops(&self) -> CacheOps {
        self.cache.lock().map(|c| *c).unwrap_or_default()
    }

    fn invalidate(&self, addr: usize, len: usize) {
        // Relaxed: configuration value set before the pair runs.
        let cl = self.cache_line.load(Ordering::Relaxed).max(1);
        if let Ok(mut c) = self.cache.lock() {
            c.invalidates += 1;
            if !addr.is_multiple_of(cl) || !len.is_multiple_of(cl) {
                c.partial_line_invalidates += 1;
            }
        }
    }

    fn clean_invalidate(&self, addr: usize, len: usize) {
        // Relaxed: configuration value set before the pair runs.
        let cl = self.cache_line.load(Ordering::Relaxed).max(1);
        if let Ok(mut c) = self.cache.lock() {
            c.clean_invalidates += 1;
            if !addr.is_multiple_of(cl) || !len.is_multiple_of(cl) {
                c.partial_line_clean_invalidates += 1;
            }
        }
    }

    fn clean(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.cleans += 1;
        }
    }

    /// Page mappings currently live (0 once every bulk finished; a page mapped for two
    /// transfers counts twice).
    pub fn mapped_pages(&self) -> usize {
        self.maps
            .lock()
            .map(|m| m.cpu_to_bus.len() + m.run_pages())
            .unwrap_or(0)
    }
}

/// One side's platform in the simulator.
pub struct SimPlatform {
    bus: Arc<SimBus>,
    peer_bell: Arc<Bell>,
    own_bell: Arc<Bell>,
}

// SAFETY: `map_page` hands out a bus page that `bus_to_cpu` resolves to exactly the page given,
// until `unmap_page`. The bulk methods keep, per pagelist, the runs mapped for that transfer
// (`BusMaps::runs`): `map_bulk_run` records bus pages `bus + k * 4096` as CPU pages
// `cpu_page + k * 4096` (fresh bus pages, so one run is contiguous on both sides), and
// `bulk_bus_to_cpu_run` / `bulk_bus_to_cpu` look only in the runs of the pagelist given and
// return at most what is left of the one run holding the page, until `unmap_bulk_run` /
// `unmap_bulk_page` cut it out; the slave core keeps the buffer alive and untouched while it is
// mapped.
unsafe impl Platform for SimPlatform {
    fn ring_doorbell(&self) {
        self.peer_bell.ring();
    }
    fn request_poll(&self) {
        self.own_bell.ring();
    }
    fn map_page(&self, cpu_page: usize) -> Option<u32> {
        self.bus.map(cpu_page).and_then(|b| u32::try_from(b).ok())
    }
    fn map_page_wide(&self, cpu_page: usize) -> Option<u64> {
        self.bus.map(cpu_page)
    }
    fn unmap_page(&self, cpu_page: usize) {
        self.bus.unmap(cpu_page)
    }
    fn bus_to_cpu(&self, bus_page: u32) -> Option<usize> {
        self.bus.resolve(bus_page as u64)
    }
    fn bus_to_cpu_wide(&self, bus_page: u64) -> Option<usize> {
        self.bus.resolve(bus_page)
    }
    fn map_bulk_page(&self, pagelist: u32, cpu_page: usize, wide: bool) -> Option<u64> {
        self.map_bulk_run(pagelist, cpu_page, 1, wide)
            .map(|(bus, _)| bus)
    }
    fn unmap_bulk_page(&self, pagelist: u32, cpu_page: usize) {
        self.bus.unmap_run(pagelist, cpu_page, 1)
    }
    fn bulk_bus_to_cpu(&self, pagelist: u32, bus_page: u64) -> Option<usize> {
        self.bus
            .resolve_run(pagelist, bus_page, 1)
            .map(|(cpu, _)| cpu)
    }
    fn map_bulk_run(
        &self,
        pagelist: u32,
        cpu_page: usize,
        pages: usize,
        wide: bool,
    ) -> Option<(u64, usize)> {
        let (bus, n) = self.bus.map_run(pagelist, cpu_page, pages)?;
        if !wide && bus + ((n - 1) * PAGE) as u64 > u64::from(u32::MAX) {
            self.bus.unmap_run(pagelist, cpu_page, n);
            return None;
        }
        Some((bus, n))
    }
    fn unmap_bulk_run(&self, pagelist: u32, cpu_page: usize, pages: usize) {
        self.bus.unmap_run(pagelist, cpu_page, pages)
    }
    fn bulk_bus_to_cpu_run(
        &self,
        pagelist: u32,
        bus_page: u64,
        pages: usize,
    ) -> Option<(usize, usize)> {
        self.bus.resolve_run(pagelist, bus_page, pages)
    }
    fn dma_clean(&self, _addr: usize, _len: usize) {
        self.bus.clean();
    }
    fn dma_invalidate(&self, addr: usize, len: usize) {
        self.bus.invalidate(addr, len);
    }
    fn dma_clean_invalidate(&self, addr: usize, len: usize) {
        self.bus.clean_invalidate(addr, len);
    }
}

/// Wraps a side's platform (e.g. to record what the core asks of it); see
/// [`SimPair::on_region_wrapped`].
pub type PlatformWrap = Box<dyn FnOnce(Box<dyn Platform>) -> Box<dyn Platform>>;

/// A simulated ARM + VideoCore pair over one region.
pub struct SimPair {
    mem: Arc<OwnedRegion>,
    bus: Arc<SimBus>,
    slave: Arc<Vchiq>,
    master: Arc<Vchiq>,
    bells: [Arc<Bell>; 2],
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    /// How the VideoCore's worker runs ([`SimPair::set_master_mode`]).
    master_mode: Arc<SimModeSwitch>,
}

fn worker(v: Arc<Vchiq>, bell: Arc<Bell>, stop: Arc<AtomicBool>, mode: Option<Arc<SimModeSwitch>>) {
    let idle = SpinBudget::new();
    // Acquire: pairs with the Release store in `stop_workers`.
    while !stop.load(Ordering::Acquire) {
        match mode.as_ref().map_or(SimMode::Normal, |m| m.take()) {
            SimMode::Normal => {
                v.poll();
                // Idle: poll a little longer with our events unarmed before sleeping (the peer's
                // work within the budget costs no ring and no OS wake-up; bounded, then sleep as
                // before).
                if idle.spin_until(|| v.poll() > 0, std::thread::yield_now) {
                    continue;
                }
                // Arm our events; sleep only if nothing fired meanwhile (docs/protocols/vchiq.md
                // §3 waiter protocol). The peer rings our bell only when it sees an event armed: a
                // lost wake-up hangs here.
                if v.prepare_sleep() {
                    bell.wait(&stop);
                    v.after_wake();
                }
            }
            // Events stay unarmed, so the peer never rings: the poll loop sees its work.
            SimMode::Spin => {
                if v.poll() == 0 {
                    std::hint::spin_loop();
                }
            }
            SimMode::Stepped | SimMode::SteppedPolling => {
                if let Some(m) = &mode {
                    m.idle();
                }
            }
        }
    }
}

/// How the simulator's instances wait in their blocking calls: a few spins, then 50 µs naps (the
/// other side runs on a worker thread of the same machine and needs the CPU more than the waiter).
pub const SIM_WAIT: Wait<'static> = Wait::SpinThenYield {
    spins: 16,
    relax: &sim_nap,
};

fn sim_nap() {
    std::thread::sleep(Duration::from_micros(50));
}

impl SimPair {
    /// The default configuration with [`SIM_WAIT`], both sides with a worker thread.
    pub fn new() -> Result<SimPair> {
        Self::with_config(Config::default().with_wait(SIM_WAIT), true)
    }

    /// A pair on a fresh region. `slave_worker = false`: the slave is driven by its user's
    /// `poll()` calls (polled mode); the master always has its own thread.
    pub fn with_config(cfg: Config, slave_worker: bool) -> Result<SimPair> {
        Self::with_slave_clock(cfg, slave_worker, Box::new(StdClock::new()))
    }

    /// A pair on an existing region (a new instance after a teardown).
    pub fn on_region(mem: Arc<OwnedRegion>, cfg: Config, slave_worker: bool) -> Result<SimPair> {
        Self::on_region_wrapped(mem, cfg, slave_worker, Box::new(|p| p))
    }

    /// Like [`SimPair::on_region`], with the slave's platform passed through `wrap_slave` (a test
    /// platform that records barriers, doorbells and cache maintenance around the simulator's).
    pub fn on_region_wrapped(
        mem: Arc<OwnedRegion>,
        cfg: Config,
        slave_worker: bool,
        wrap_slave: PlatformWrap,
    ) -> Result<SimPair> {
        Self::build(
            mem,
            cfg,
            slave_worker,
            wrap_slave,
            Box::new(StdClock::new()),
        )
    }

    /// Like [`SimPair::with_config`], the ARM side reading `slave_clock` (e.g. a
    /// [`fwipc_transport_api::ManualClock`] the test moves, so that what expires on the ARM
    /// side, a slot loan or a wait's deadline, expires when the test says, not when a slow run
    /// gets there). The VideoCore keeps the hosted clock.
    pub fn with_slave_clock(
        cfg: Config,
        slave_worker: bool,
        slave_clock: Box<dyn Clock + Send + Sync>,
    ) -> Result<SimPair> {
        let mem = OwnedRegion::new(cfg.region_size())?;
        Self::build(mem, cfg, slave_worker, Box::new(|p| p), slave_clock)
    }

    fn build(
        mem: Arc<OwnedRegion>,
        cfg: Config,
        slave_worker: bool,
        wrap_slave: PlatformWrap,
        slave_clock: Box<dyn Clock + Send + Sync>,
    ) -> Result<SimPair> {
        let bus = Arc::new(SimBus::default());
        // Relaxed: set before any thread uses the bus.
        bus.cache_line.store(cfg.cache_line_size, Ordering::Relaxed);
        bus.wide.store(cfg.pagelist_addr36, Ordering::Relaxed);
        let bells = [Arc::new(Bell::default()), Arc::new(Bell::default())];
        let slave_pf = SimPlatform {
            bus: bus.clone(),
            peer_bell: bells[1].clone(),
            own_bell: bells[0].clone(),
        };
        let master_pf = SimPlatform {
            bus: bus.clone(),
            peer_bell: bells[0].clone(),
            own_bell: bells[1].clone(),
        };
        let slave = Arc::new(Vchiq::new_slave(
            mem.region(SIM_REGION_BUS)?,
            wrap_slave(Box::new(slave_pf)),
            cfg,
            slave_clock,
        )?);
        let master = Arc::new(Vchiq::new_master(
            mem.region(SIM_REGION_BUS)?,
            Box::new(master_pf),
            cfg,
            Box::new(StdClock::new()),
        )?);
        let stop = Arc::new(AtomicBool::new(false));
        let master_mode = Arc::new(SimModeSwitch::new());
        let mut workers = Vec::new();
        let spawn = |name: &str, v: &Arc<Vchiq>, b: &Arc<Bell>, m: Option<Arc<SimModeSwitch>>| {
            let (v, b, s) = (v.clone(), b.clone(), stop.clone());
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || worker(v, b, s, m))
                .map_err(|_| VchiqError::NoMemory)
        };
        workers.push(spawn(
            "vchiq-vpu",
            &master,
            &bells[1],
            Some(master_mode.clone()),
        )?);
        // Each worker polls its instance whenever the peer rings: pending futures sleep until
        // woken (`Vchiq::set_poll_driven`).
        master.set_poll_driven(true);
        if slave_worker {
            workers.push(spawn("vchiq-arm", &slave, &bells[0], None)?);
            slave.set_poll_driven(true);
        }
        Ok(SimPair {
            mem,
            bus,
            slave,
            master,
            bells,
            stop,
            workers,
            master_mode,
        })
    }

    /// Switch how the VideoCore's worker runs (see [`SimMode`]): in [`SimMode::Stepped`] the
    /// caller runs it with [`SimPair::step_master`]. Returns once the worker has taken the mode
    /// (`false` if it did not within 5 s).
    pub fn set_master_mode(&self, mode: SimMode) -> bool {
        let wake = || self.bells[1].ring();
        self.master_mode
            .request(mode, &wake, Duration::from_secs(5))
    }

    /// One poll pass of the VideoCore on the caller's thread (in [`SimMode::Stepped`]); `true`
    /// if it handled anything.
    pub fn step_master(&self) -> bool {
        self.master.poll() > 0
    }

    /// The ARM side.
    pub fn slave(&self) -> &Arc<Vchiq> {
        &self.slave
    }

    /// The simulated VideoCore.
    pub fn master(&self) -> &Arc<Vchiq> {
        &self.master
    }

    /// The region memory (to build a new pair on it after teardown).
    pub fn region(&self) -> &Arc<OwnedRegion> {
        &self.mem
    }

    /// The simulated bus.
    pub fn bus(&self) -> &Arc<SimBus> {
        &self.bus
    }

    /// Doorbell rings so far: (ARM→VPU, VPU→ARM).
    pub fn rings(&self) -> (u64, u64) {
        (self.bells[1].rings(), self.bells[0].rings())
    }

    /// Both sides CONNECT; waits (polling the slave too, for polled mode) up to 5 s.
    pub fn connect(&self) -> Result {
        self.master.connect()?;
        self.slave.connect()?;
        self.slave.wait_until(Duration::from_secs(5), || {
            (self.slave.is_connected() && self.master.is_connected()).then_some(Ok(()))
        })
    }

    /// Tear both sides down (slave first, then the VideoCore), stop the workers.
    pub fn shutdown(&mut self) -> Result {
        let r1 = self.slave.shutdown(Duration::from_secs(2));
        let r2 = self.master.shutdown(Duration::from_secs(2));
        self.stop_workers();
        r1.and(r2)
    }

    fn stop_workers(&mut self) {
        // Release: pairs with the Acquire loads in `worker` and `Bell::wait`.
        self.stop.store(true, Ordering::Release);
        for b in &self.bells {
            b.ring();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for SimPair {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: usize = PAGE;

    /// The bus resolves a bulk page for the master only for the pagelist it was mapped for, and
    /// only while it is mapped (issue 12 finding 9).
    #[test]
    fn bulk_pages_resolve_only_for_their_transfer() {
        let bus = SimBus::default();
        let (a, b) = (0x4000_9000u32, 0x4000_A000u32);
        let page = bus.map_run(a, 0x5000_0000, 1).unwrap().0;
        assert_eq!(bus.resolve_run(a, page, 1), Some((0x5000_0000, 1)));
        assert_eq!(bus.resolve_run(b, page, 1), None, "another transfer's page");
        // The same CPU page for a second transfer: its own bus page, resolved only for it.
        let page_b = bus.map_run(b, 0x5000_0000, 1).unwrap().0;
        assert_ne!(page_b, page);
        assert_eq!(bus.resolve_run(a, page_b, 1), None);
        assert_eq!(bus.mapped_pages(), 2);
        bus.unmap_run(a, 0x5000_0000, 1);
        assert_eq!(bus.resolve_run(a, page, 1), None);
        assert_eq!(bus.resolve_run(b, page_b, 1), Some((0x5000_0000, 1)));
        bus.unmap_run(b, 0x5000_0000, 1);
        assert_eq!(bus.resolve_run(b, page_b, 1), None);
        assert_eq!(bus.mapped_pages(), 0);
    }

    /// Two transfers whose runs continue each other on the bus and in CPU memory (B's buffer
    /// right after A's, mapped right after it): a resolve for A never reaches into B's run,
    /// however many pages it asks for, and B's pages are not A's.
    #[test]
    fn run_resolve_stays_in_its_pagelist() {
        let bus = SimBus::default();
        let (a, b) = (0x4000_9000u32, 0x4000_A000u32);
        let (x, y) = (0x5000_0000usize, 0x5000_0000 + 4 * P);
        let (bus_a, na) = bus.map_run(a, x, 4).unwrap();
        let (bus_b, nb) = bus.map_run(b, y, 4).unwrap();
        assert_eq!((na, nb), (4, 4));
        assert_eq!(bus_b, bus_a + 4 * P as u64, "the runs continue each other");
        assert_eq!(
            bus.resolve_run(a, bus_a, 8),
            Some((x, 4)),
            "A's run ends at B's"
        );
        assert_eq!(
            bus.resolve_run(a, bus_b, 1),
            None,
            "B's first page, asked for A"
        );
        assert_eq!(bus.resolve_run(a, bus_b + 3 * P as u64, 1), None);
        assert_eq!(bus.resolve_run(b, bus_a + 3 * P as u64, 1), None);
        assert_eq!(bus.resolve_run(b, bus_b, 8), Some((y, 4)));
        bus.unmap_run(a, x, 4);
        bus.unmap_run(b, y, 4);
        assert_eq!(bus.mapped_pages(), 0);
    }

    /// A resolve that runs past the transfer's mapped pages gets only what is left of the run;
    /// the page after it, pages cut out by an unmap and unaligned addresses resolve to nothing.
    #[test]
    fn run_resolve_ends_with_the_mapped_pages() {
        let bus = SimBus::default();
        let a = 0x4000_9000u32;
        let x = 0x5000_0000usize;
        let (base, n) = bus.map_run(a, x, 4).unwrap();
        assert_eq!(n, 4);
        let pg = |k: u64| base + k * P as u64;
        assert_eq!(bus.resolve_run(a, pg(2), 100), Some((x + 2 * P, 2)));
        assert_eq!(bus.resolve_run(a, pg(3), 2), Some((x + 3 * P, 1)));
        assert_eq!(bus.resolve_run(a, pg(4), 1), None, "the page after the run");
        assert_eq!(bus.resolve_run(a, base + 8, 1), None, "not a page address");
        // Cut the middle two pages out: the run splits in two.
        bus.unmap_run(a, x + P, 2);
        assert_eq!(bus.resolve_run(a, pg(0), 4), Some((x, 1)));
        assert_eq!(bus.resolve_run(a, pg(1), 1), None);
        assert_eq!(bus.resolve_run(a, pg(2), 1), None);
        assert_eq!(bus.resolve_run(a, pg(3), 4), Some((x + 3 * P, 1)));
        assert_eq!(bus.mapped_pages(), 2);
        // Page by page (the trait's per-page calls) ends it as well.
        bus.unmap_run(a, x, 1);
        bus.unmap_run(a, x + 3 * P, 1);
        assert_eq!(bus.mapped_pages(), 0);
        // Mapped page by page, the pages join one run again.
        let first = bus.map_run(a, x, 1).unwrap().0;
        for k in 1..3 {
            bus.map_run(a, x + k * P, 1).unwrap();
        }
        assert_eq!(bus.resolve_run(a, first, 8), Some((x, 3)));
    }
}
