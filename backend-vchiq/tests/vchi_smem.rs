//! The `'SMEM'` client against the VideoCore-side server, through the real VCHIQ core: slave
//! and master instances over one region, every request and reply a DATA message in the slots.

use fwipc_vchiq::sim::vchi::pair::PolledPair;
use fwipc_vchiq::sim::vchi::SmemServer;
use fwipc_vchiq::vchi::error::SmemStatus;
use fwipc_vchiq::vchi::fourcc;
use fwipc_vchiq::vchi::service_host::VcServiceHost;
use fwipc_vchiq::vchi::smem_wire::SmemAllocType;
use fwipc_vchiq::vchi::vc_mem::{self, VcMemInfo};
use fwipc_vchiq::vchi::{Smem, VchiError};
use fwipc_vchiq::{Config, ServiceParams};

const VC_BASE: u32 = 0x1000_0000;
const VC_SIZE: u32 = 4 << 20;

fn smem_params() -> ServiceParams {
    ServiceParams::new(fourcc::SMEM).version(fourcc::SMEM_VERSION, fourcc::SMEM_VERSION_MIN)
}

type SmemHost = std::sync::Arc<VcServiceHost<SmemServer, fn() -> SmemServer>>;

fn pair() -> (PolledPair, SmemHost) {
    let mut p = PolledPair::new(Config::default()).unwrap();
    let make: fn() -> SmemServer = || SmemServer::new(VC_BASE, VC_SIZE);
    let (host, _) = p.add_vc_service(smem_params(), make).unwrap();
    p.connect().unwrap();
    (p, host)
}

#[test]
fn alloc_lock_use_free_over_the_core() {
    let (p, host) = pair();
    let link = p.open(smem_params(), 4).unwrap();
    let mut smem = Smem::connect(link, 8).unwrap();
    assert!(smem.releases_supported());
    let a = smem
        .alloc(100_000, SmemAllocType::Cached, 0, b"isp")
        .unwrap();
    let b = smem
        .alloc(64, SmemAllocType::NonCached, 256, b"tiny")
        .unwrap();
    assert_eq!(b.bus_addr() % 256, 0);
    assert!(a.bus_addr() + 100_000 <= b.bus_addr() || b.bus_addr() + 64 <= a.bus_addr());
    let addr = smem.lock(&a).unwrap();
    assert_eq!(addr, a.bus_addr());
    // The VideoCore side holds the real bytes: it writes, and sees its own block.
    let mut server_blocks = 0;
    host.for_each(|_, s| {
        s.block_bytes_mut(addr, 100_000).unwrap()[99_999] = 0xA5;
        assert_eq!(s.block_bytes(addr + 99_999, 1).unwrap(), &[0xA5]);
        server_blocks = s.blocks().count();
    });
    assert_eq!(server_blocks, 2);
    smem.unlock(&a).unwrap();
    let (raw, mem) = (a.raw(), a.bus_addr());
    smem.free(a).unwrap();
    smem.free(b).unwrap();
    // Double free and a forged handle are typed refusals from the VideoCore.
    assert_eq!(
        smem.free_raw(raw, mem),
        Err(VchiError::Smem(SmemStatus::StaleHandle))
    );
    assert_eq!(
        smem.free_raw(0x12_3456, 0),
        Err(VchiError::Smem(SmemStatus::UnknownHandle))
    );
    let e: fwipc_transport_api::Error = smem.free_raw(raw, mem).unwrap_err().into();
    assert_eq!(e, fwipc_transport_api::Error::InvalidArgument);
    host.for_each(|_, s| assert_eq!(s.free_bytes(), u64::from(VC_SIZE)));
    assert_eq!(p.slave().stats().protocol_errors, 0);
    assert_eq!(p.master().stats().protocol_errors, 0);
    smem.into_link().close().unwrap();
}

#[test]
fn exhaustion_and_locked_free_are_typed_errors() {
    let (p, _host) = pair();
    let mut smem = Smem::connect(p.open(smem_params(), 4).unwrap(), 8).unwrap();
    let big = smem
        .alloc(VC_SIZE, SmemAllocType::Cached, 0, b"all")
        .unwrap();
    assert_eq!(
        smem.alloc(1, SmemAllocType::Cached, 0, b"more"),
        Err(VchiError::Smem(SmemStatus::NoSpace))
    );
    smem.lock(&big).unwrap();
    assert_eq!(
        smem.free_raw(big.raw(), big.bus_addr()),
        Err(VchiError::Smem(SmemStatus::Locked))
    );
    smem.unlock(&big).unwrap();
    smem.free(big).unwrap();
    smem.alloc(1, SmemAllocType::Cached, 0, b"again").unwrap();
}

#[test]
fn import_free_and_released_event_over_the_core() {
    let (p, host) = pair();
    let mut smem = Smem::connect(p.open(smem_params(), 4).unwrap(), 2).unwrap();
    let i = smem.import(0xC020_0000, 65536, b"dmabuf").unwrap();
    let kid = i.kernel_id();
    assert!(
        kid >> 16 < 0x100 && kid & 0xFFFF != 0,
        "a generation-tagged table index, never a pointer"
    );
    host.for_each(|_, s| assert_eq!(s.stats().live_imports, 1));
    smem.free_import(i).unwrap();
    assert_eq!(smem.pending_releases(), 1);
    // The RELEASED arrives as a VC-initiated DATA message; the next exchange picks it up.
    let h = smem.alloc(16, SmemAllocType::Cached, 0, b"").unwrap();
    let r = smem.take_released().expect("RELEASED delivered");
    assert_eq!((r.kernel_id, r.addr, r.size), (kid, 0xC020_0000, 65536));
    assert_eq!(smem.pending_releases(), 0);
    smem.free(h).unwrap();
}

#[test]
fn two_clients_two_pairs_side_by_side() {
    // No global state: two independent pairs, each with its own VideoCore memory.
    let (p1, _h1) = pair();
    let (p2, _h2) = pair();
    let mut c1 = Smem::connect(p1.open(smem_params(), 4).unwrap(), 2).unwrap();
    let mut c2 = Smem::connect(p2.open(smem_params(), 4).unwrap(), 2).unwrap();
    let a = c1.alloc(VC_SIZE, SmemAllocType::Cached, 0, b"").unwrap();
    let b = c2.alloc(VC_SIZE, SmemAllocType::Cached, 0, b"").unwrap();
    assert_eq!(a.bus_addr(), b.bus_addr());
    c1.free(a).unwrap();
    c2.free(b).unwrap();
}

#[test]
fn vc_mem_query_answered_by_the_simulated_firmware() {
    // The VideoCore answers GET_VC_MEMORY with its memory area; the client derives the vc_mem
    // ioctl values and checks an mmap window against it.
    let mut buf = vc_mem::encode_get_vc_memory();
    vc_mem::answer_property(&mut buf, VC_BASE, VC_SIZE).unwrap();
    let info = VcMemInfo::from_property_response(&buf).unwrap();
    assert_eq!(info.ioctl(vc_mem::IOC_MEM_BASE), Ok(u64::from(VC_BASE)));
    assert_eq!(info.ioctl(vc_mem::IOC_MEM_SIZE), Ok(u64::from(VC_SIZE)));
    assert_eq!(info.ioctl(vc_mem::IOC_MEM_LOAD), Ok(u64::from(VC_BASE)));
    // A block the SMEM server allocates lies inside the memory vc_mem reports.
    let (p, _host) = pair();
    let mut smem = Smem::connect(p.open(smem_params(), 4).unwrap(), 2).unwrap();
    let h = smem.alloc(8192, SmemAllocType::Cached, 0, b"").unwrap();
    let off = u64::from(h.bus_addr() - info.base);
    assert_eq!(info.check_window(off, 8192), Ok(()));
    assert!(info.check_window(off + 1, u64::from(VC_SIZE)).is_err());
    smem.free(h).unwrap();
}

/// A host lender over one window, recording what comes back.
struct Window {
    next: u32,
    end: u32,
    reclaimed: Vec<(u32, u32)>,
}

impl fwipc_vchiq::vchi::smem_client::HostMemory for Window {
    fn lend(&mut self, size: u32, align: u32) -> Option<u32> {
        let a = align.max(1);
        let start = self.next.div_ceil(a) * a;
        let end = start.checked_add(size)?;
        (end <= self.end).then(|| {
            self.next = end;
            start
        })
    }
    fn reclaim(&mut self, addr: u32, size: u32) {
        self.reclaimed.push((addr, size));
    }
}

#[test]
fn videocore_asks_the_host_for_memory_over_the_core() {
    let (p, host) = pair();
    let lender = Window {
        next: 0xC100_0000,
        end: 0xC100_0000 + 65536,
        reclaimed: Vec::new(),
    };
    let mut smem = Smem::connect_with(p.open(smem_params(), 4).unwrap(), 4, lender).unwrap();
    let server = host.handles()[0];
    // Two requests from the VideoCore: the second does not fit the host window.
    assert!(host.act(server, |s, out| {
        out.push(s.request_host_memory(40_000, 4096, b"h264").unwrap());
        out.push(s.request_host_memory(40_000, 4096, b"more").unwrap());
    }));
    p.settle();
    assert_eq!(smem.poll_events(), Ok(2));
    p.settle();
    let mut lent = Vec::new();
    host.for_each(|_, s| {
        lent = s.lent().collect();
        assert_eq!(s.stats().host_refusals, 1);
    });
    assert_eq!(lent.len(), 1);
    assert_eq!((lent[0].addr, lent[0].size), (0xC100_0000, 40_000));
    assert_eq!(smem.lent_blocks(), 1);
    let vc_handle = lent[0].vc_handle;
    assert!(host.act(server, |s, out| out
        .push(s.release_host_memory(vc_handle).unwrap())));
    p.settle();
    assert_eq!(smem.poll_events(), Ok(1));
    assert_eq!(smem.lent_blocks(), 0);
    assert_eq!(smem.lender().reclaimed, [(0xC100_0000, 40_000)]);
    assert_eq!(
        smem.take_released().map(|r| r.kernel_id),
        Some(lent[0].kernel_id)
    );
}

#[test]
fn one_videocore_heap_across_sessions_and_its_vc_mem_view() {
    use fwipc_vchiq::sim::vchi::smem_server::SharedSmem;
    let heap = SharedSmem::new(SmemServer::new(VC_BASE, VC_SIZE));
    let mut p = PolledPair::new(Config::default()).unwrap();
    let h2 = heap.clone();
    p.add_vc_service(smem_params(), move || h2.clone()).unwrap();
    p.connect().unwrap();
    // The firmware answers GET_VC_MEMORY from the same heap it allocates from.
    let mut prop = vc_mem::encode_get_vc_memory();
    heap.with(|s| vc_mem::answer_property(&mut prop, s.base(), s.size()))
        .unwrap();
    let info = VcMemInfo::from_property_response(&prop).unwrap();

    // Session 1 allocates and goes away without freeing.
    let mut s1 = Smem::connect(p.open(smem_params(), 4).unwrap(), 2).unwrap();
    let a = s1
        .alloc(1 << 20, SmemAllocType::Cached, 0, b"kept")
        .unwrap();
    let (raw, mem) = (a.raw(), a.bus_addr());
    assert_eq!(
        info.check_window(u64::from(mem - info.base), 1 << 20),
        Ok(())
    );
    s1.into_link().close().unwrap();
    assert_eq!(
        heap.with(|s| s.free_bytes()),
        u64::from(VC_SIZE) - (1 << 20)
    );
    // Session 2 sees the same heap: the handle is still valid, and freeing it restores the area.
    let mut s2 = Smem::connect(p.open(smem_params(), 4).unwrap(), 2).unwrap();
    s2.free_raw(raw, mem).unwrap();
    assert_eq!(heap.with(|s| s.free_bytes()), u64::from(VC_SIZE));
    assert_eq!(
        s2.free_raw(raw, mem),
        Err(VchiError::Smem(SmemStatus::StaleHandle))
    );
}
