//! The async face of process control (`Session::*_async`) under a real executor
//! (`futures::executor`), against the simulated DSP's process table.

use std::collections::BTreeSet;
use std::task::{Context, Waker};

use futures::executor::block_on;

use fwipc_fastrpc::sim::dsp::ProcKind;
use fwipc_fastrpc::sim::fixture::SimSystem;
use fwipc_fastrpc::wire::MMAP_ADD_PAGES;
use fwipc_fastrpc::{ChannelConfig, FastRpcError, PdKind};
use fwipc_transport_api::fixture::Fault;
use fwipc_transport_api::Completion;

mod common;
use common::wait_for;
use fwipc_transport_api::fixture::with_watchdog;

/// Control calls in flight at once.
const N: usize = 128;

fn config() -> ChannelConfig {
    let mut c = SimSystem::default_config();
    c.contexts = 200;
    c.payloads_per_session = N;
    c
}

/// Size of mapping `i`: its own, so a reply matched to the wrong call fails the check.
fn size(i: usize) -> usize {
    4096 * (1 + i % 7)
}

/// Attach, then 128 concurrent `mmap_async` (every address the DSP answers is one the DSP's
/// process table holds with that call's size), then 128 concurrent `munmap_async` (every
/// mapping gone on both sides), then release: in both completion modes.
#[test]
fn async_procctl_128_concurrent_mmaps_and_munmaps_every_reply_checked() {
    for mode in [Completion::Interrupt, Completion::Polled] {
        with_watchdog(move || {
            let sys = SimSystem::new(config(), mode);
            let s = sys.open_session().unwrap();
            block_on(s.attach_async()).unwrap();
            assert_eq!(s.pd_kind(), Some(PdKind::Root), "{mode:?}");
            assert_eq!(
                sys.dsp.process(s.client_id()).unwrap().kind,
                ProcKind::Attached(0)
            );
            let regions = sys.bus.mapped_regions();

            let s = &s;
            let vaddrs: Vec<u64> =
                block_on(futures::future::join_all((0..N).map(|i| async move {
                    s.mmap_async(MMAP_ADD_PAGES, size(i)).await
                })))
                .into_iter()
                .enumerate()
                .map(|(i, r)| r.unwrap_or_else(|e| panic!("{mode:?}: mmap {i}: {e:?}")))
                .collect();
            let maps = sys.dsp.process(s.client_id()).unwrap().maps;
            assert_eq!(maps.len(), N, "{mode:?}");
            for (i, v) in vaddrs.iter().enumerate() {
                let (_, sz, _) = maps
                    .iter()
                    .find(|m| m.0 == *v)
                    .unwrap_or_else(|| panic!("{mode:?}: mmap {i}: {v:#x} is not a DSP mapping"));
                assert_eq!(
                    *sz as usize,
                    size(i),
                    "{mode:?}: mmap {i} got another's reply"
                );
            }
            assert_eq!(vaddrs.iter().collect::<BTreeSet<_>>().len(), N, "distinct");
            assert_eq!(s.remote_maps(), N);
            assert_eq!(sys.bus.mapped_regions(), regions + N);

            let undone = block_on(futures::future::join_all(
                vaddrs.iter().map(|v| s.munmap_async(*v)),
            ));
            assert!(undone.iter().all(Result::is_ok), "{mode:?}: {undone:?}");
            assert!(sys.dsp.process(s.client_id()).unwrap().maps.is_empty());
            assert_eq!(s.remote_maps(), 0);
            assert_eq!(sys.bus.mapped_regions(), regions, "{mode:?}: pages leaked");

            block_on(s.release_process_async()).unwrap();
            assert!(sys.dsp.process(s.client_id()).is_none());
            assert_eq!(s.pd_kind(), None);
            let st = sys.channel.stats();
            assert_eq!((st.timed_out, st.pool_free), (0, st.pool_capacity));
        });
    }
}

/// The async forms check their arguments and refuse what the blocking forms refuse, without
/// reaching the DSP; create and create-static work as futures.
#[test]
fn async_procctl_matches_the_blocking_calls() {
    with_watchdog(|| {
        let sys = SimSystem::new(config(), Completion::Interrupt);
        let s = sys.open_session().unwrap();
        let elf = vec![0x7f; 4096];
        block_on(s.create_async("fastrpc_shell_3", &elf, 0)).unwrap();
        let p = sys.dsp.process(s.client_id()).unwrap();
        assert_eq!(
            (p.kind, p.name.as_str()),
            (ProcKind::User, "fastrpc_shell_3")
        );
        let before = sys.dsp.received();
        assert_eq!(
            block_on(s.create_async("again", &elf, 0)),
            Err(FastRpcError::InvalidArgument)
        );
        assert_eq!(block_on(s.munmap_async(0x1234)), s.munmap(0x1234));
        assert_eq!(
            block_on(s.mem_unmap_async(0x1234)),
            Err(FastRpcError::InvalidArgument)
        );
        assert_eq!(sys.dsp.received(), before, "nothing reached the DSP");

        let buf = s.alloc_shared(8192).unwrap();
        let v = block_on(s.mem_map_async(&buf, 0, 4096, 0)).unwrap();
        let fd = buf.fd();
        assert_eq!(
            sys.dsp.process(s.client_id()).unwrap().mem_maps,
            vec![(v, fd, 4096)]
        );
        block_on(s.mem_unmap_async(v)).unwrap();
        assert!(sys.dsp.process(s.client_id()).unwrap().mem_maps.is_empty());
        block_on(s.release_process_async()).unwrap();

        let st = sys.open_session().unwrap();
        block_on(st.create_static_async("audiopd", 3 << 20)).unwrap();
        assert_eq!(st.pd_kind(), Some(PdKind::Static));
        let s2 = sys.open_session().unwrap();
        block_on(s2.attach_sensors_async()).unwrap();
        assert_eq!(s2.pd(), 2, "the sensors PD");
    });
}

/// A control call's future dropped while the DSP holds the call: the memory it gave the DSP
/// (only as a page descriptor) is quarantined, as on a timeout, kept through the DSP's late
/// success, and freed when the DSP confirms the process is gone.
#[test]
fn async_procctl_drop_while_pending_quarantines_the_memory() {
    use std::future::Future;
    with_watchdog(|| {
        let sys = SimSystem::new(config(), Completion::Interrupt);
        let s = sys.attached_session();
        let regions = sys.bus.mapped_regions();
        sys.dsp.set_fault(Fault::Hold);
        for _ in 0..100 {
            let mut fut = Box::pin(s.mmap_async(MMAP_ADD_PAGES, 4096));
            assert!(fut
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending());
            drop(fut);
        }
        let buf = s.alloc_shared(8192).unwrap();
        let (buf_addr, buf_len) = (buf.bus_addr(), buf.len());
        {
            let mut fut = Box::pin(s.mem_map_async(&buf, 0, 4096, 0));
            assert!(fut
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending());
        }
        drop(buf);
        assert_eq!(s.quarantined(), 101, "a cancelled call let its memory go");
        assert_eq!(sys.bus.mapped_regions(), regions + 101);
        assert_eq!(
            s.remote_maps(),
            0,
            "no mapping is recorded without an answer"
        );

        // The DSP answers late, with success: the pages stay mapped under it.
        wait_for(|| sys.dsp.held() == 101);
        sys.dsp.set_fault(Fault::None);
        sys.dsp.release();
        let st = sys.channel.stats();
        assert_eq!((st.late_replies, st.timed_out), (101, 0));
        assert_eq!(sys.dsp.process(s.client_id()).unwrap().maps.len(), 100);
        assert!(sys.bus.is_mapped(buf_addr, buf_len), "freed under the DSP");

        // The DSP confirms the process is gone: everything is freed.
        futures::executor::block_on(s.release_process_async()).unwrap();
        assert_eq!(s.quarantined(), 0);
        assert!(!sys.bus.is_mapped(buf_addr, buf_len));
        assert_eq!(sys.bus.mapped_regions(), regions, "every page back");
    });
}
