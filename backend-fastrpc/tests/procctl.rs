//! Remote process control against the simulated DSP: one test per method
//! (docs/protocols/fastrpc.md §7, §12.11).

mod common;

use fwipc_fastrpc::error::aee;
use fwipc_fastrpc::sim::dsp::ProcKind;
use fwipc_fastrpc::sim::fixture::SimSystem;
use fwipc_fastrpc::sim::objects::{ECHO_HANDLE, ECHO_RAW_METHOD};
use fwipc_fastrpc::wire::{MetaOffsets, MMAP_ADD_PAGES, MMAP_REMOTE_HEAP_ADDR};
use fwipc_fastrpc::PdKind;
use fwipc_fastrpc::{AeeError, Arg, FastRpcError};
use fwipc_transport_api::fixture::Fault;
use fwipc_transport_api::Completion;

#[test]
fn attach_and_release() {
    let sys = common::interrupt_system();
    let s = sys.open_session().unwrap();
    s.attach().unwrap();
    assert_eq!(s.pd_kind(), Some(PdKind::Root));
    assert_eq!(s.pd(), 0, "attach uses PD bits 0");
    let p = sys.dsp.process(s.client_id()).unwrap();
    assert_eq!(p.kind, ProcKind::Attached(0));
    // A second attach is refused locally (one PD per session).
    assert_eq!(s.attach(), Err(FastRpcError::InvalidArgument));
    s.release_process().unwrap();
    assert!(sys.dsp.process(s.client_id()).is_none());
    assert_eq!(s.pd_kind(), None);
}

#[test]
fn attach_sensors_uses_pd_2() {
    let sys = common::interrupt_system();
    let s = sys.open_session().unwrap();
    s.attach_sensors().unwrap();
    assert_eq!(
        sys.dsp.process(s.client_id()).unwrap().kind,
        ProcKind::Attached(2)
    );
}

#[test]
fn create_dynamic_pd_with_init_memory() {
    let sys = common::interrupt_system();
    let s = sys.open_session().unwrap();
    let regions = sys.bus.mapped_regions();
    let elf = vec![0x7fu8; 5000];
    s.create("fastrpc_shell_3", &elf, 0).unwrap();
    let p = sys.dsp.process(s.client_id()).unwrap();
    assert_eq!(p.kind, ProcKind::User);
    assert_eq!(p.name, "fastrpc_shell_3");
    // Init memory ALIGN(max(2 MiB, 4 * 5000), 1 MiB) = 2 MiB, on session bank 1.
    let (addr, size) = p.mem.unwrap();
    assert_eq!(size, 2 << 20);
    assert_eq!(addr >> 32, 1);
    assert!(sys.bus.is_mapped(addr, size as usize));
    // The init memory stays mapped (the temporary ELF buffer does not).
    assert_eq!(sys.bus.mapped_regions(), regions + 1);
    assert_eq!(s.pd(), 1);
    // Creating a second process on the session is refused.
    assert!(s.create("x", &elf, 0).is_err());
    s.release_process().unwrap();
    assert_eq!(
        sys.bus.mapped_regions(),
        regions,
        "init memory released after release"
    );
}

#[test]
fn create_with_attrs_uses_create_attr_and_bounds() {
    let sys = common::interrupt_system();
    let s = sys.open_session().unwrap();
    // File size bound (2 MiB) and name bound are checked before anything is sent.
    let big = vec![0u8; (2 << 20) + 1];
    assert_eq!(s.create("a", &big, 0), Err(FastRpcError::InvalidArgument));
    assert_eq!(
        s.create(&"n".repeat(200), b"elf", 0),
        Err(FastRpcError::InvalidArgument)
    );
    let before = sys.dsp.received();
    s.create("unsigned", b"\x7fELF", 1 << 3).unwrap();
    assert_eq!(sys.dsp.received(), before + 1);
    assert_eq!(sys.dsp.process(s.client_id()).unwrap().kind, ProcKind::User);
}

#[test]
fn create_static_audio_pd() {
    let sys = common::interrupt_system();
    let s = sys.open_session().unwrap();
    s.create_static("audiopd", 3 << 20).unwrap();
    let p = sys.dsp.process(s.client_id()).unwrap();
    assert_eq!(p.kind, ProcKind::Static);
    assert_eq!(p.name, "audiopd");
    let (addr, size) = p.mem.unwrap();
    assert_eq!(size, 3 << 20);
    assert_eq!(addr >> 32, 0, "the remote heap carries no session bits");
    assert_eq!(s.pd_kind(), Some(PdKind::Static));
    assert!(s.create_static(&"x".repeat(129), 4096).is_err());
}

#[test]
fn mmap_and_munmap_release_only_after_the_dsp_confirms() {
    let sys = common::interrupt_system();
    let s = sys.open_session().unwrap();
    s.create("shell", b"\x7fELF", 0).unwrap();
    let regions = sys.bus.mapped_regions();
    let v = s.mmap(MMAP_ADD_PAGES, 64 * 1024).unwrap();
    assert_ne!(v, 0);
    let v2 = s.mmap(MMAP_REMOTE_HEAP_ADDR, 4096).unwrap();
    assert_ne!(v, v2);
    assert_eq!(sys.dsp.process(s.client_id()).unwrap().maps.len(), 2);
    assert_eq!(sys.bus.mapped_regions(), regions + 2);
    // A flag the DSP does not accept.
    assert_eq!(
        s.mmap(4, 4096),
        Err(FastRpcError::Aee(AeeError(aee::dsp(aee::EBADPARM))))
    );
    s.munmap(v).unwrap();
    assert_eq!(sys.dsp.process(s.client_id()).unwrap().maps.len(), 1);
    assert_eq!(sys.bus.mapped_regions(), regions + 1);
    // Unknown address: refused locally, nothing sent.
    assert_eq!(s.munmap(0x1234), Err(FastRpcError::InvalidArgument));
    // If the DSP lost the map (restart), the unmap fails and the memory is kept.
    sys.dsp.reset();
    assert!(s.munmap(v2).is_err());
    assert_eq!(s.remote_maps(), 1, "kept: the DSP did not confirm");
}

#[test]
fn mem_map_and_unmap_shared_buffer() {
    let sys = common::interrupt_system();
    let s = sys.open_session().unwrap();
    s.create("shell", b"\x7fELF", 0).unwrap();
    let buf = s.alloc_shared(8192).unwrap();
    let (fd, addr) = (buf.fd(), buf.bus_addr());
    let v = s.mem_map(&buf, 4096, 4096, 0).unwrap();
    let p = sys.dsp.process(s.client_id()).unwrap();
    assert_eq!(p.mem_maps, vec![(v, fd, 4096)]);
    drop(buf);
    assert!(
        sys.bus.is_mapped(addr, 8192),
        "mem_map keeps the buffer alive"
    );
    s.mem_unmap(v).unwrap();
    assert!(sys.dsp.process(s.client_id()).unwrap().mem_maps.is_empty());
    assert!(
        !sys.bus.is_mapped(addr, 1),
        "released after the DSP confirmed"
    );
}

#[test]
fn user_invoke_on_init_handle_is_refused() {
    let sys = common::interrupt_system();
    let s = sys.attached_session();
    let before = sys.dsp.received();
    let pid = 1i32.to_le_bytes();
    assert_eq!(
        s.start(1, 0, &[Arg::In(&pid)], 0).err(),
        Some(FastRpcError::PermissionDenied)
    );
    assert_eq!(sys.dsp.received(), before, "nothing reached the DSP");
}

#[test]
fn sessions_are_bounded_and_independent() {
    let sys = common::interrupt_system();
    // 4 sessions on bank 1; the fifth open is Busy and leaks nothing.
    let ss: Vec<_> = (0..4).map(|_| sys.attached_session()).collect();
    assert_eq!(sys.open_session().err(), Some(FastRpcError::Busy));
    assert_eq!(sys.channel.sessions_in_use(), 4);
    let ids: Vec<i32> = ss.iter().map(|s| s.client_id()).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    assert_eq!(sys.dsp.process_count(), 4);
    drop(ss);
    assert_eq!(sys.channel.sessions_in_use(), 0);
    assert!(sys.open_session().is_ok());
}

#[test]
fn nsessions_expansion_is_capped() {
    use fwipc_fastrpc::{Bank, MAX_SESSIONS};
    let mut cfg = SimSystem::default_config();
    cfg.banks = vec![Bank::new(1, 10), Bank::new(2, 10)];
    let sys = SimSystem::new(cfg, Completion::Interrupt);
    let ss: Vec<_> = (0..MAX_SESSIONS)
        .map(|_| sys.open_session().unwrap())
        .collect();
    assert_eq!(ss[9].sid(), 1);
    assert_eq!(ss[10].sid(), 2);
    assert_eq!(sys.open_session().err(), Some(FastRpcError::Busy));
}

#[test]
fn capability_query_is_cached_and_bounded() {
    use fwipc_fastrpc::sim::objects::DspUtilities;
    use fwipc_fastrpc::Domain;
    use std::sync::{Arc, Mutex};
    let mk = |domain: Domain, unsupported: bool| {
        let cfg = {
            let mut c = SimSystem::default_config();
            c.domain = domain;
            c
        };
        let sys = SimSystem::new(cfg, Completion::Interrupt);
        let mut attrs = [0u32; 256];
        attrs[1] = 1;
        attrs[5] = 0x55;
        let queries = Arc::new(Mutex::new(0));
        sys.dsp.add_object(
            2,
            Box::new(DspUtilities {
                attrs,
                unsupported,
                queries: queries.clone(),
            }),
        );
        (sys, queries)
    };
    let (sys, q) = mk(Domain::Cdsp, false);
    let s = sys.open_session().unwrap();
    assert_eq!(s.dsp_capability(5), Ok(0x55));
    assert_eq!(s.dsp_capability(1), Ok(1));
    let s2 = sys.open_session().unwrap();
    assert_eq!(s2.dsp_capability(7), Ok(0));
    assert_eq!(*q.lock().unwrap(), 1, "fetched once per channel");
    assert_eq!(s.dsp_capability(256), Err(FastRpcError::InvalidArgument));

    let (sys, q) = mk(Domain::Mdsp, false);
    let s = sys.open_session().unwrap();
    assert_eq!(s.dsp_capability(1), Err(FastRpcError::BadDomain));
    assert_eq!(*q.lock().unwrap(), 0, "mdsp: nothing sent");

    let (sys, _) = mk(Domain::Adsp, true);
    let s = sys.open_session().unwrap();
    assert_eq!(s.dsp_capability(1), Err(FastRpcError::NotSupported));
}

#[test]
fn channels_per_domain_with_checked_ids() {
    use fwipc_fastrpc::Channels;
    use fwipc_fastrpc::Domain;
    let adsp = SimSystem::new(
        {
            let mut c = SimSystem::default_config();
            c.domain = Domain::Adsp;
            c
        },
        Completion::Interrupt,
    );
    let cdsp = common::interrupt_system();
    let mut chans = Channels::new();
    chans.add(adsp.channel.clone()).unwrap();
    chans.add(cdsp.channel.clone()).unwrap();
    assert_eq!(
        chans.add(cdsp.channel.clone()).err(),
        Some(FastRpcError::InvalidArgument)
    );
    assert_eq!(chans.get(0).unwrap().domain(), Domain::Adsp);
    assert_eq!(chans.get(3).unwrap().domain(), Domain::Cdsp);
    assert_eq!(
        chans.get(2).err(),
        Some(FastRpcError::ChannelDown),
        "sdsp not probed"
    );
    assert_eq!(chans.get(5).err(), Some(FastRpcError::BadDomain));
    // Clients of two domains at once.
    let a = adsp.attached_session();
    let c = cdsp.attached_session();
    assert_eq!((a.client_id(), c.client_id()), (1, 1));
    assert!(chans.remove(Domain::Adsp).is_some());
    assert!(chans.get(0).is_err());
}

#[test]
fn fd_list_entries_we_never_passed_are_counted() {
    let sys = common::interrupt_system();
    let s = sys.attached_session();
    let shared = s.alloc_shared(4096).unwrap();
    sys.dsp.set_fault(Fault::Hold);
    let mut out = [0u8; 4];
    // A raw echo with an in-handle: sc (0,2,1,1,1,0) is refused by the echo object, which
    // is fine: the fd list is run for failing calls too.
    let t = s
        .start(
            ECHO_HANDLE,
            2,
            &[
                Arg::In(b"abcd"),
                Arg::Out(&mut out),
                Arg::InHandle {
                    buf: &shared,
                    offset: 0,
                    len: 8,
                },
            ],
            0,
        )
        .unwrap();
    // Before the DSP answers, plant a bogus fd (99) after the real one in the fd list.
    let payload_bus = {
        // The session's first payload buffer is the first region on the bus.
        0x1000_0000u64 | 1 << 32
    };
    let fdlist = MetaOffsets::new(3).fdlist as u64;
    assert!(sys
        .bus
        .write(payload_bus + fdlist + 8, &99u64.to_le_bytes()));
    let before = sys.channel.stats().protocol_errors;
    sys.dsp.set_fault(Fault::None);
    sys.dsp.release();
    while !s.poll(&t).unwrap() {
        std::thread::yield_now();
    }
    assert!(s.status(&t).is_err(), "the echo object refuses handles");
    s.finish(t);
    assert_eq!(
        sys.channel.stats().protocol_errors,
        before + 1,
        "fd 99 counted"
    );
}

// The fd-list walk of `Session::finish` (docs/protocols/fastrpc.md §12.8, §12.9): the list is
// read up to its zero terminator and at most 16 entries; every entry that is not a descriptor
// the call passed is counted in `protocol_errors`.

/// The session's first payload buffer: the first region on the bus, context bank 1.
const PAYLOAD: u64 = 0x1000_0000 | 1 << 32;

/// A two-argument echo held by the DSP while `plant` writes DSP-side words into its payload,
/// then answered and finished; returns how many protocol errors the finish counted.
fn fd_list_errors_counted_after(plant: &[(usize, u64)]) -> u64 {
    let sys = common::interrupt_system();
    let s = sys.attached_session();
    sys.dsp.set_fault(Fault::Hold);
    let mut out = [0u8; 4];
    let t = s
        .start(
            ECHO_HANDLE,
            ECHO_RAW_METHOD,
            &[Arg::In(b"abcd"), Arg::Out(&mut out)],
            0,
        )
        .unwrap();
    for &(at, v) in plant {
        assert!(sys.bus.write(PAYLOAD + at as u64, &v.to_le_bytes()));
    }
    let before = sys.channel.stats().protocol_errors;
    sys.dsp.set_fault(Fault::None);
    sys.dsp.release();
    while !s.poll(&t).unwrap() {
        std::thread::yield_now();
    }
    s.status(&t).unwrap();
    s.finish(t);
    sys.channel.stats().protocol_errors - before
}

fn fd_at(k: usize) -> usize {
    MetaOffsets::new(2).fdlist + 8 * k
}

#[test]
fn fd_list_empty_counts_nothing_and_nothing_after_its_terminator_is_read() {
    assert_eq!(fd_list_errors_counted_after(&[]), 0);
    assert_eq!(
        fd_list_errors_counted_after(&[(fd_at(1), 77), (fd_at(2), 78)]),
        0,
        "entries after a zero first entry"
    );
}

#[test]
fn fd_list_every_entry_before_the_terminator_is_checked() {
    assert_eq!(
        fd_list_errors_counted_after(&[(fd_at(0), 77), (fd_at(1), 78), (fd_at(3), 79)]),
        2
    );
}

#[test]
fn fd_list_without_terminator_stops_at_sixteen_entries() {
    let mut plant: Vec<(usize, u64)> = (0..16).map(|k| (fd_at(k), 100 + k as u64)).collect();
    // The CRC list right after the fd list: not an fd entry, whatever it holds.
    plant.push((MetaOffsets::new(2).crclist, 0x55));
    assert_eq!(fd_list_errors_counted_after(&plant), 16);
}

#[test]
fn nonsecure_node_of_secure_channel_creates_unsigned_only() {
    use fwipc_fastrpc::ATTR_UNSIGNED_MODULE;
    let cfg = {
        let mut c = SimSystem::default_config();
        c.secure = true;
        c
    };
    let sys = SimSystem::new(cfg, Completion::Interrupt);
    let plain = sys.channel.open_session_nonsecure(sys.wait()).unwrap();
    assert!(plain.unsigned_only());
    assert_eq!(
        plain.create("shell", b"\x7fELF", 0),
        Err(FastRpcError::PermissionDenied)
    );
    plain
        .create("shell", b"\x7fELF", ATTR_UNSIGNED_MODULE)
        .unwrap();
    let secure = sys.open_session().unwrap();
    assert!(!secure.unsigned_only());
    secure.create("shell", b"\x7fELF", 0).unwrap();
}

/// Memory that reaches the DSP only as a page descriptor inside the argument bytes (init memory,
/// mmap'd pages, a mem-mapped buffer) must outlive a timed-out call: the DSP may still be working
/// on it, and may answer success late and keep using it (docs/protocols/fastrpc.md §12.9, the
/// rule of `mem.rs`). It is quarantined in the session until the DSP confirms INIT_RELEASE.
#[test]
fn memory_given_by_page_descriptor_survives_a_timed_out_call() {
    use fwipc_transport_api::fixture::Fault;
    use std::time::Duration;
    let sys = common::interrupt_system();
    let s = sys.open_session().unwrap();
    let short = s.with_wait(sys.wait().with_timeout(Duration::from_millis(50)));
    let regions = sys.bus.mapped_regions();

    // CREATE held past its timeout.
    sys.dsp.set_fault(Fault::Hold);
    assert_eq!(
        short.create("shell", b"\x7fELF", 0),
        Err(FastRpcError::Timeout)
    );
    assert_eq!(s.quarantined(), 1);
    // The init memory (quarantined) and the ELF buffer (kept by the abandoned context).
    assert_eq!(sys.bus.mapped_regions(), regions + 2);
    // The DSP answers late, with success: its new process runs in the init memory.
    sys.dsp.set_fault(Fault::None);
    sys.dsp.release();
    let (addr, size) = sys.dsp.process(s.client_id()).unwrap().mem.unwrap();
    assert!(
        sys.bus.is_mapped(addr, size as usize),
        "init memory freed under the DSP's process"
    );

    // MMAP and MEM_MAP held past their timeouts; the caller drops its buffer handle.
    let _ = s.stats(); // reap the answered CREATE context (frees the ELF buffer)
    let before = sys.bus.mapped_regions();
    assert_eq!(before, regions + 1, "only the init memory remains");
    sys.dsp.set_fault(Fault::Hold);
    assert_eq!(
        short.mmap(MMAP_ADD_PAGES, 64 * 1024),
        Err(FastRpcError::Timeout)
    );
    assert_eq!(sys.bus.mapped_regions(), before + 1, "mmap'd pages kept");
    let buf = s.alloc_shared(8192).unwrap();
    let (buf_addr, buf_len) = (buf.bus_addr(), buf.len());
    assert_eq!(short.mem_map(&buf, 0, 4096, 0), Err(FastRpcError::Timeout));
    drop(buf);
    assert!(
        sys.bus.is_mapped(buf_addr, buf_len),
        "mem-mapped buffer freed under the DSP"
    );
    assert_eq!(s.quarantined(), 3);
    // Late successes: the DSP maps both.
    sys.dsp.set_fault(Fault::None);
    sys.dsp.release();
    let p = sys.dsp.process(s.client_id()).unwrap();
    assert_eq!((p.maps.len(), p.mem_maps.len()), (1, 1));
    assert!(sys.bus.is_mapped(buf_addr, buf_len));

    // The DSP confirms the process is gone: everything is freed.
    s.release_process().unwrap();
    assert_eq!(s.quarantined(), 0);
    assert!(!sys.bus.is_mapped(buf_addr, buf_len));
    assert!(!sys.bus.is_mapped(addr, size as usize));
    assert_eq!(sys.bus.mapped_regions(), regions);

    // Session teardown frees a quarantine too.
    let s2 = sys.open_session().unwrap();
    let short2 = s2.with_wait(sys.wait().with_timeout(Duration::from_millis(50)));
    let regions2 = sys.bus.mapped_regions();
    sys.dsp.set_fault(Fault::Hold);
    assert_eq!(
        short2.create_static("audiopd", 1 << 20),
        Err(FastRpcError::Timeout)
    );
    assert_eq!(s2.quarantined(), 1);
    assert_eq!(sys.bus.mapped_regions(), regions2 + 1, "remote heap kept");
    let d = fwipc_transport_api::Deadline::after(&*sys.clock, Duration::from_secs(1));
    let _ = s2.shutdown(d);
    drop(short2);
    drop(s2);
    sys.dsp.set_fault(Fault::None);
    assert!(
        sys.bus.mapped_regions() < regions2 + 1,
        "freed with the session"
    );
}
