//! Creating an instance: the slave writes slot zero (`init_slots`) and its shared state
//! (`init_state`); the master validates what the slave wrote and sets up its half
//! (docs/protocols/vchiq.md §1, §6).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec;
use core::sync::atomic::{AtomicBool, Ordering};

use fwipc_transport_api::Clock;

use crate::config::{Config, Role};
use crate::engine::counters::VchiqCounters;
use crate::engine::poll_gate::{GateCell, PollGate};
use crate::engine::vchiq::{Inner, Quota, RxSlot, Vchiq};
use crate::engine::wakers::FutureWakers;
use crate::error::{Result, VchiqError};
use crate::platform::Platform;
use crate::shared::region::Region;
use crate::wire::consts::*;
use crate::wire::layout::{off, SlotZero};

impl Vchiq {
    /// The ARM side: writes slot zero (`init_slots`) and our shared state (`init_state`), then
    /// sets `initialised`. The embedder then hands `region.bus()` to the VPU (firmware property
    /// tag [`RPI_FIRMWARE_VCHIQ_INIT`]) and waits for [`Vchiq::peer_ready`].
    ///
    /// On real hardware this can happen once per boot (the VPU cannot re-connect,
    /// docs/protocols/vchiq.md §6); a new instance on the same region re-initialises slot zero,
    /// which the simulator supports.
    pub fn new_slave(
        region: Region,
        platform: Box<dyn Platform>,
        cfg: Config,
        clock: Box<dyn Clock + Send + Sync>,
    ) -> Result<Vchiq> {
        cfg.validate()?;
        if region.len() < cfg.region_size() {
            return Err(VchiqError::NoMemory);
        }
        // Owner re-initialisation: zero slot zero (the whole first slot).
        region.zero(0, VCHIQ_SLOT_SIZE);
        let r = &region;
        // Relaxed stores throughout (also the master's in `new_master` and `build`): published by
        // the Release store of `initialised` in `build`.
        r.store(off::MAGIC, VCHIQ_MAGIC, Ordering::Relaxed);
        r.store(
            off::VERSION_WORD,
            (VCHIQ_VERSION as u16 as u32) | ((VCHIQ_VERSION_MIN as u16 as u32) << 16),
            Ordering::Relaxed,
        );
        r.store(
            off::SLOT_ZERO_SIZE,
            core::mem::size_of::<SlotZero>() as u32,
            Ordering::Relaxed,
        );
        r.store(off::SLOT_SIZE, VCHIQ_SLOT_SIZE as u32, Ordering::Relaxed);
        r.store(off::MAX_SLOTS, VCHIQ_MAX_SLOTS as u32, Ordering::Relaxed);
        r.store(
            off::MAX_SLOTS_PER_SIDE,
            VCHIQ_MAX_SLOTS_PER_SIDE as u32,
            Ordering::Relaxed,
        );
        r.store(
            off::PLATFORM_DATA0,
            region.bus() + cfg.fragments_offset() as u32,
            Ordering::Relaxed,
        );
        r.store(
            off::PLATFORM_DATA1,
            cfg.num_fragments as u32,
            Ordering::Relaxed,
        );
        for (role, base) in [(Role::Master, off::MASTER), (Role::Slave, off::SLAVE)] {
            let p = cfg.partition(role);
            r.store(base + off::SLOT_FIRST, p.first, Ordering::Relaxed);
            r.store(base + off::SLOT_LAST, p.last, Ordering::Relaxed);
            r.store(base + off::SLOT_SYNC, p.sync, Ordering::Relaxed);
        }
        Self::build(region, platform, cfg, clock, Role::Slave)
    }

    /// The VideoCore side (our simulator, or a VPU written in Rust): validates slot zero written
    /// by the slave, lowers `version` to the common one and sets up the master half.
    pub fn new_master(
        region: Region,
        platform: Box<dyn Platform>,
        cfg: Config,
        clock: Box<dyn Clock + Send + Sync>,
    ) -> Result<Vchiq> {
        cfg.validate()?;
        if region.len() < cfg.region_size() {
            return Err(VchiqError::NoMemory);
        }
        let r = &region;
        // Acquire: pairs with the slave's Release store of `initialised`: slot zero is complete.
        if r.load(off::SLAVE + off::INITIALISED, Ordering::Acquire) == 0 {
            return Err(VchiqError::NotConnected);
        }
        // rmb (for a slave outside our coherence domain): slot zero is read after the flag.
        platform.rmb();
        // Relaxed loads: ordered by the Acquire above.
        let ld = |o| r.load(o, Ordering::Relaxed);
        let vw = ld(off::VERSION_WORD);
        let (version, version_min) = (vw as u16 as i16, (vw >> 16) as u16 as i16);
        let sizes_ok = ld(off::MAGIC) == VCHIQ_MAGIC
            && ld(off::SLOT_ZERO_SIZE) == core::mem::size_of::<SlotZero>() as u32
            && ld(off::SLOT_SIZE) == VCHIQ_SLOT_SIZE as u32
            && ld(off::MAX_SLOTS) == VCHIQ_MAX_SLOTS as u32
            && ld(off::MAX_SLOTS_PER_SIDE) == VCHIQ_MAX_SLOTS_PER_SIDE as u32
            && version >= VCHIQ_VERSION_MIN
            && version_min <= VCHIQ_VERSION
            && ld(off::PLATFORM_DATA0) == region.bus() + cfg.fragments_offset() as u32
            && ld(off::PLATFORM_DATA1) == cfg.num_fragments as u32;
        let parts_ok = [(Role::Master, off::MASTER), (Role::Slave, off::SLAVE)]
            .iter()
            .all(|&(role, base)| {
                let p = cfg.partition(role);
                ld(base + off::SLOT_FIRST) == p.first
                    && ld(base + off::SLOT_LAST) == p.last
                    && ld(base + off::SLOT_SYNC) == p.sync
            });
        if !sizes_ok || !parts_ok {
            log::error!(target: "vchiq", "master: slot zero rejected");
            return Err(VchiqError::BadPeer);
        }
        let common = version.min(VCHIQ_VERSION);
        // Relaxed (this store and the master half below): published by our own `initialised`
        // Release in `build` and by the Release of the tx_pos that carries our CONNECT, which
        // the slave Acquire-reads before it reads `version` (rx.rs `handle_control`).
        r.store(
            off::VERSION_WORD,
            (common as u16 as u32) | ((version_min as u16 as u32) << 16),
            Ordering::Relaxed,
        );
        // The master half may hold state from a previous instance: reset it.
        region.zero(
            off::MASTER,
            core::mem::size_of::<crate::wire::layout::SharedState>(),
        );
        let p = cfg.partition(Role::Master);
        r.store(off::MASTER + off::SLOT_FIRST, p.first, Ordering::Relaxed);
        r.store(off::MASTER + off::SLOT_LAST, p.last, Ordering::Relaxed);
        r.store(off::MASTER + off::SLOT_SYNC, p.sync, Ordering::Relaxed);
        Self::build(region, platform, cfg, clock, Role::Master)
    }

    fn build(
        region: Region,
        platform: Box<dyn Platform>,
        cfg: Config,
        clock: Box<dyn Clock + Send + Sync>,
        role: Role,
    ) -> Result<Vchiq> {
        let (local_off, remote_off) = match role {
            Role::Slave => (off::SLAVE, off::MASTER),
            Role::Master => (off::MASTER, off::SLAVE),
        };
        let other = match role {
            Role::Slave => Role::Master,
            Role::Master => Role::Slave,
        };
        let local_part = cfg.partition(role);
        let remote_part = cfg.partition(other);
        let n = local_part.data_slots();
        let r = &region;
        // init_state: our slot queue, recycle index, tx_pos, debug[0]; the sync slot is empty.
        let mut tx_slot_queue = [0u32; VCHIQ_MAX_SLOTS_PER_SIDE];
        for (i, q) in tx_slot_queue.iter_mut().enumerate() {
            let s = if (i as u32) < n {
                local_part.first + i as u32
            } else {
                0
            };
            *q = s;
            r.store(local_off + off::SLOT_QUEUE + 4 * i, s, Ordering::Relaxed);
        }
        r.store(local_off + off::SLOT_QUEUE_RECYCLE, n, Ordering::Relaxed);
        r.store(local_off + off::TX_POS, 0, Ordering::Relaxed);
        r.store(local_off + off::DEBUG, DEBUG_MAX as u32, Ordering::Relaxed);
        for ev in [
            off::TRIGGER,
            off::RECYCLE,
            off::SYNC_TRIGGER,
            off::SYNC_RELEASE,
        ] {
            r.store(local_off + ev + off::EV_ARMED, 0, Ordering::Relaxed);
            r.store(local_off + ev + off::EV_FIRED, 0, Ordering::Relaxed);
        }
        let sync_hdr = local_part.sync as usize * VCHIQ_SLOT_SIZE;
        r.store(sync_hdr, 0, Ordering::Relaxed);
        r.store(sync_hdr + 4, 0, Ordering::Relaxed);
        // wmb (for the VideoCore): the stores above reach it before `initialised`.
        platform.wmb();
        // Release: everything above is visible to a peer that Acquire-reads `initialised` = 1
        // (the owner sets it last, docs/protocols/vchiq.md §1).
        r.store(local_off + off::INITIALISED, 1, Ordering::Release);

        let max = cfg.max_services;
        let mut quotas = vec![Quota::new(); max];
        for q in quotas.iter_mut() {
            q.slot_quota = n / 2;
            q.message_quota = core::cmp::min(n / 2 * 256, 65535);
        }
        let inner = Inner {
            conn: ConnState::Disconnected,
            peer_connect_seen: false,
            version_common: VCHIQ_VERSION,
            tx_pos: 0,
            slot_queue_available: n,
            tx_slot_queue,
            data_use_count: 0,
            data_quota: n - 1,
            previous_data_index: u32::MAX,
            rx_pos: 0,
            rx_slot: None,
            rx_slots: vec![RxSlot::default(); cfg.total_slots],
            rx_stalled: false,
            remote_recycle: remote_part.data_slots(),
            services: (0..max).map(|_| None).collect(),
            handler_cache: None,
            quotas,
            handle_seq: 1,
            scan_found: vec![0u64; max.div_ceil(64)],
            pagelists_free: mask(cfg.num_pagelists),
            fragments_free: mask(cfg.num_fragments),
            pending: VecDeque::with_capacity(64),
            tx_freed: false,
            loan: Default::default(),
            bulk_ports: vec![0u64; max.div_ceil(64)],
            bulks_dirty: false,
            tx_blocked_any: false,
        };
        log::debug!(target: "vchiq", "{role:?} initialised: data slots {}..={}", local_part.first, local_part.last);
        Ok(Vchiq {
            region,
            platform,
            cfg,
            role,
            local_off,
            remote_off,
            local_part,
            remote_part,
            inner: spin::Mutex::new(inner),
            poll_scratch: GateCell::new(vec![0u8; VCHIQ_SLOT_SIZE]),
            poll_gate: PollGate::new(),
            dead: AtomicBool::new(false),
            no_fragments: AtomicBool::new(false),
            counters: VchiqCounters::default(),
            clock,
            wakers: FutureWakers::default(),
        })
    }
}

fn mask(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}
