use super::*;
use crate::sim::vchi::loopback::Loopback;
use crate::sim::vchi::smem_server::SmemServer;

fn client() -> Smem<Loopback<SmemServer>> {
    let l = Loopback::open(SmemServer::new(0x4000_0000, 1 << 20), 99);
    Smem::connect(l, 4).unwrap()
}

#[test]
fn alloc_lock_write_free_and_double_free() {
    let mut c = client();
    assert!(c.releases_supported());
    let h = c.alloc(10_000, SmemAllocType::Cached, 0, b"frame").unwrap();
    assert_eq!(h.bus_addr() % 4096, 0);
    let addr = c.lock(&h).unwrap();
    assert_eq!(addr, h.bus_addr());
    // The VideoCore really holds those bytes: write through its side, read them back.
    let vc = c.link_mut().server_mut();
    vc.block_bytes_mut(addr, 10_000).unwrap().fill(0x42);
    assert_eq!(vc.blocks().next().unwrap().locks, 1);
    assert_eq!(
        c.free_raw(h.raw(), h.bus_addr()),
        Err(VchiError::Smem(SmemStatus::Locked))
    );
    c.unlock(&h).unwrap();
    assert_eq!(c.unlock(&h), Err(VchiError::Smem(SmemStatus::NotLocked)));
    let (raw, mem) = (h.raw(), h.bus_addr());
    c.free(h).unwrap();
    assert!(c.link_mut().server().block_bytes(addr, 1).is_err());
    assert_eq!(
        c.free_raw(raw, mem),
        Err(VchiError::Smem(SmemStatus::StaleHandle))
    );
    assert_eq!(
        c.free_raw(0x7777_7001, 0),
        Err(VchiError::Smem(SmemStatus::UnknownHandle))
    );
    let e: fwipc_transport_api::Error = VchiError::Smem(SmemStatus::StaleHandle).into();
    assert_eq!(e, fwipc_transport_api::Error::InvalidArgument);
}

#[test]
fn exhaustion_and_bad_arguments_are_typed() {
    let mut c = client();
    assert_eq!(
        c.alloc(2 << 20, SmemAllocType::Cached, 0, b"big"),
        Err(VchiError::Smem(SmemStatus::NoSpace))
    );
    assert_eq!(
        c.alloc(0, SmemAllocType::Cached, 0, b""),
        Err(VchiError::InvalidArgument)
    );
    assert_eq!(
        c.alloc(16, SmemAllocType::Cached, 3, b""),
        Err(VchiError::InvalidArgument)
    );
}

#[test]
fn import_free_then_released_with_our_kernel_id() {
    let mut c = client();
    let i = c.import(0xC010_0000, 8192, b"dmabuf").unwrap();
    let kid = i.kernel_id();
    assert_eq!(c.link_mut().server().stats().live_imports, 1);
    c.free_import(i).unwrap();
    // The RELEASED came after the FREE reply; it is picked up by the next call.
    assert_eq!(c.pending_releases(), 1);
    let h = c.alloc(64, SmemAllocType::NonCached, 64, b"x").unwrap();
    let r = c.take_released().unwrap();
    assert_eq!((r.kernel_id, r.addr, r.size), (kid, 0xC010_0000, 8192));
    assert_eq!(c.pending_releases(), 0);
    assert!(c.take_released().is_none());
    c.free(h).unwrap();
    // The table is bounded: 4 live imports, the fifth is refused locally.
    let v: Vec<_> = (0..4)
        .map(|k| c.import(0xC000_0000 + k * 4096, 4096, b"i").unwrap())
        .collect();
    assert_eq!(c.import(0xC100_0000, 4096, b"i"), Err(VchiError::TableFull));
    for i in v {
        c.free_import(i).unwrap();
    }
    assert_eq!(c.import(0, 4096, b""), Err(VchiError::InvalidArgument));
}

/// A bump lender over a host window, recording what comes back.
#[derive(Default)]
struct Bump {
    next: u32,
    end: u32,
    reclaimed: Vec<(u32, u32)>,
}

impl HostMemory for Bump {
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
fn vc_mem_request_lent_then_released() {
    let l = Loopback::open(SmemServer::new(0x4000_0000, 1 << 20), 99);
    let lender = Bump {
        next: 0xC800_0000,
        end: 0xC800_0000 + (1 << 20),
        ..Bump::default()
    };
    let mut c = Smem::connect_with(l, 4, lender).unwrap();
    // Nothing pending: polling is a no-op.
    assert_eq!(c.poll_events(), Ok(0));
    c.link_mut()
        .vc_act(|s, out| out.push(s.request_host_memory(8192, 4096, b"codec").unwrap()));
    assert_eq!(c.poll_events(), Ok(1));
    assert_eq!(c.lent_blocks(), 1);
    let lent: Vec<_> = c.link_mut().server().lent().collect();
    assert_eq!(lent.len(), 1);
    assert_eq!((lent[0].addr, lent[0].size), (0xC800_0000, 8192));
    let kid = lent[0].kernel_id;
    assert!(kid != 0);
    // Lent memory is the VideoCore's to release, not the host's to free.
    assert_eq!(
        c.free_raw(lent[0].vc_handle, 0),
        Err(VchiError::Smem(SmemStatus::InvalidArgument))
    );
    let h = lent[0].vc_handle;
    c.link_mut()
        .vc_act(|s, out| out.push(s.release_host_memory(h).unwrap()));
    assert_eq!(c.poll_events(), Ok(1));
    assert_eq!(c.lent_blocks(), 0);
    assert_eq!(c.lender().reclaimed, [(0xC800_0000, 8192)]);
    assert_eq!(c.take_released().map(|r| r.kernel_id), Some(kid));
    // A second release of the same handle is refused on the VideoCore side.
    assert_eq!(
        c.link_mut().server_mut().release_host_memory(h),
        Err(SmemStatus::StaleHandle)
    );
}

#[test]
fn vc_mem_request_refused_without_a_lender_or_space() {
    let mut c = client();
    c.link_mut()
        .vc_act(|s, out| out.push(s.request_host_memory(4096, 0, b"x").unwrap()));
    assert_eq!(c.poll_events(), Ok(1));
    assert_eq!(c.stats().vc_mem_requests_refused, 1);
    assert_eq!(c.link_mut().server().stats().host_refusals, 1);
    assert_eq!(c.link_mut().server().lent().count(), 0);
    // Before CLIENT_VERSION 2 the VideoCore must not ask at all.
    let mut s = SmemServer::new(0, 4096);
    assert_eq!(
        s.request_host_memory(1, 0, b""),
        Err(SmemStatus::NotSupported)
    );
}

#[test]
fn bogus_released_and_stray_replies_are_counted_not_trusted() {
    use super::super::smem_wire::{SmemMsgType, SmemReleased, VC_INITIATED};
    use zerocopy::IntoBytes;
    struct Hostile(SmemServer, u32);
    impl super::super::link::VcService for Hostile {
        fn fourcc(&self) -> u32 {
            0
        }
        fn on_message(&mut self, m: &[u8], out: &mut Vec<super::super::link::VcAction>) {
            use super::super::link::VcAction::Reply;
            self.1 += 1;
            // Before every real reply: a forged RELEASED, a stray reply and garbage.
            let forged = SmemReleased {
                cmd: U32::new(VC_INITIATED | SmemMsgType::Released as u32),
                addr: U32::new(1),
                size: U32::new(1),
                kernel_id: U32::new(0x0001_0001),
                vc_handle: U32::new(5),
            };
            out.push(Reply(forged.as_bytes().to_vec()));
            out.push(Reply(0x7000_0000u32.to_le_bytes().repeat(2)));
            out.push(Reply(alloc::vec![0xFF; 3]));
            self.0.on_message(m, out);
        }
    }
    let l = Loopback::open(Hostile(SmemServer::new(0x1000, 1 << 16), 0), 1);
    let mut c = Smem::connect(l, 2).unwrap();
    let h = c.alloc(100, SmemAllocType::Cached, 0, b"").unwrap();
    c.free(h).unwrap();
    let st = c.stats();
    assert_eq!(st.bogus_releases, 3);
    assert_eq!(st.stray_replies, 3);
    assert_eq!(st.malformed, 3);
    assert!(c.take_released().is_none());
}

mod hostile {
    use super::super::super::link::{VcAction, VcService};
    use super::*;
    use proptest::prelude::*;

    /// A VideoCore that, while `junk` is non-empty, sends one junk message before each reply.
    struct Junk(SmemServer, Vec<Vec<u8>>);
    impl VcService for Junk {
        fn fourcc(&self) -> u32 {
            0
        }
        fn on_message(&mut self, m: &[u8], out: &mut Vec<VcAction>) {
            if let Some(j) = self.1.pop() {
                out.push(VcAction::Reply(j));
            }
            self.0.on_message(m, out);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Random junk interleaved with real replies: the client never panics, every call
        /// ends in a value or a typed error, and once the junk stops it works normally.
        #[test]
        fn junk_from_the_videocore_is_survived(
            junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..12),
            sizes in proptest::collection::vec(1u32..5000, 1..8),
        ) {
            let l = Loopback::open(Junk(SmemServer::new(0x1000, 1 << 16), junk), 1);
            let Ok(mut c) = Smem::connect(l, 2) else { return Ok(()) };
            let mut live = Vec::new();
            for sz in sizes {
                if let Ok(h) = c.alloc(sz, SmemAllocType::Cached, 0, b"p") {
                    live.push(h);
                }
            }
            for h in live {
                let _ = c.free(h);
            }
            c.link_mut().server_mut().1.clear();
            let h = c.alloc(100, SmemAllocType::Cached, 0, b"ok");
            prop_assert!(h.is_ok(), "{:?}", h);
            prop_assert!(c.free(h.unwrap()).is_ok());
        }
    }
}
