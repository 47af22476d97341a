use super::*;
use crate::vchi::smem_wire::{name_field, parse_reply, ReplyBody, SmemAlloc, MAX_REQUEST_LEN};
use proptest::prelude::*;
use zerocopy::FromBytes;

fn run(s: &mut SmemServer, req: SmemRequest, tid: u32) -> Vec<Vec<u8>> {
    let mut buf = [0u8; MAX_REQUEST_LEN];
    let n = req.encode(tid, &mut buf);
    let mut out = Vec::new();
    s.on_message(&buf[..n], &mut out);
    out.into_iter()
        .map(|a| match a {
            VcAction::Reply(r) => r,
            other => panic!("unexpected action {other:?}"),
        })
        .collect()
}

fn alloc(s: &mut SmemServer, len: u32, align: u32) -> Result<(u32, u32), i32> {
    let r = run(
        s,
        SmemRequest::Alloc(SmemAlloc {
            alloc_type: U32::new(0),
            base_unit: U32::new(len),
            num_unit: U32::new(1),
            alignment: U32::new(align),
            allocator: U32::new(1),
            name: name_field(b"t"),
        }),
        1,
    );
    match parse_reply::<SmemAllocResult>(&r[0]).unwrap() {
        ReplyBody::Ok(a) => Ok((a.res_handle.get(), a.res_mem.get())),
        ReplyBody::Failed(c) => Err(c),
    }
}

fn free(s: &mut SmemServer, h: u32) -> i32 {
    let r = run(
        s,
        SmemRequest::Free(SmemHandleMsg {
            res_handle: U32::new(h),
            res_mem: U32::new(0),
        }),
        2,
    );
    SmemResult::read_from_prefix(&r[0]).unwrap().0.success.get()
}

#[test]
fn alloc_free_double_free_and_forged_handles() {
    let mut s = SmemServer::new(0x4000_0000, 64 * 1024);
    let (h, addr) = alloc(&mut s, 1000, 0).unwrap();
    assert_eq!(addr % DEFAULT_ALIGN, 0);
    assert!(h & 0x8000_0000 == 0 && h != 0);
    s.block_bytes_mut(addr, 1000).unwrap()[999] = 0x5A;
    assert_eq!(s.block_bytes(addr + 999, 1).unwrap(), &[0x5A]);
    assert!(s.block_bytes(addr + 999, 2).is_err(), "past the block end");
    assert_eq!(free(&mut s, h), 0);
    assert_eq!(free(&mut s, h), SmemStatus::StaleHandle.code());
    assert_eq!(
        free(&mut s, h + (1 << 12)),
        SmemStatus::UnknownHandle.code()
    );
    assert_eq!(free(&mut s, 0), SmemStatus::UnknownHandle.code());
    assert_eq!(free(&mut s, 0x7FF), SmemStatus::UnknownHandle.code());
    // The slot is reused with a new generation; the old handle stays stale.
    let (h2, _) = alloc(&mut s, 10, 0).unwrap();
    assert_ne!(h2, h);
    assert_eq!(h2 & 0xFFF, h & 0xFFF);
    assert_eq!(free(&mut s, h), SmemStatus::StaleHandle.code());
    assert_eq!(free(&mut s, h2), 0);
    assert_eq!(s.free_bytes(), 64 * 1024);
    assert_eq!(s.stats().live_blocks, 0);
}

#[test]
fn freed_bytes_are_poisoned_and_new_blocks_zeroed() {
    let mut s = SmemServer::new(0x1000, 8192);
    let (h, addr) = alloc(&mut s, 4096, 0).unwrap();
    s.block_bytes_mut(addr, 4096).unwrap().fill(0xAB);
    free(&mut s, h);
    assert!(s.heap.mem[..4096].iter().all(|&b| b == POISON));
    let (_, addr2) = alloc(&mut s, 4096, 0).unwrap();
    assert!(s.block_bytes(addr2, 4096).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn exhaustion_is_no_space_and_bad_sizes_are_invalid() {
    let mut s = SmemServer::new(0, 8192);
    assert!(alloc(&mut s, 8192, 0).is_ok());
    assert_eq!(alloc(&mut s, 1, 0), Err(SmemStatus::NoSpace.code()));
    assert_eq!(alloc(&mut s, 0, 0), Err(SmemStatus::InvalidArgument.code()));
    assert_eq!(alloc(&mut s, 4, 3), Err(SmemStatus::InvalidArgument.code()));
}

#[test]
fn lock_unlock_and_free_while_locked() {
    let mut s = SmemServer::new(0x8000, 4096);
    let (h, addr) = alloc(&mut s, 64, 64).unwrap();
    let m = SmemHandleMsg {
        res_handle: U32::new(h),
        res_mem: U32::new(addr),
    };
    let r = run(&mut s, SmemRequest::Lock(m), 5);
    let lr = SmemLockResult::read_from_prefix(&r[0]).unwrap().0;
    assert_eq!((lr.trans_id.get(), lr.res_mem.get()), (5, addr));
    assert_eq!(free(&mut s, h), SmemStatus::Locked.code());
    let r = run(&mut s, SmemRequest::Unlock(m), 6);
    assert_eq!(
        SmemResult::read_from_prefix(&r[0]).unwrap().0.success.get(),
        0
    );
    let r = run(&mut s, SmemRequest::Unlock(m), 7);
    assert_eq!(
        SmemResult::read_from_prefix(&r[0]).unwrap().0.success.get(),
        SmemStatus::NotLocked.code()
    );
    // Wrong res_mem for the handle.
    let bad = SmemHandleMsg {
        res_handle: U32::new(h),
        res_mem: U32::new(addr + 4),
    };
    let r = run(&mut s, SmemRequest::Lock(bad), 8);
    assert_eq!(
        parse_reply::<SmemLockResult>(&r[0]).unwrap(),
        ReplyBody::Failed(SmemStatus::InvalidArgument.code())
    );
    assert_eq!(free(&mut s, h), 0);
}

#[test]
fn minor_requests() {
    use crate::vchi::smem_wire::{SmemActionClean, SmemResize, SmemVersion};
    let mut s = SmemServer::new(0x8000, 8192);
    let (h, addr) = alloc(&mut s, 64, 0).unwrap();
    let status = |r: &Vec<Vec<u8>>| SmemResult::read_from_prefix(&r[0]).unwrap().0.success.get();
    let r = run(
        &mut s,
        SmemRequest::Resize(SmemResize {
            res_handle: U32::new(h),
            res_mem: U32::new(addr),
            res_new_size: U32::new(128),
        }),
        1,
    );
    assert_eq!(status(&r), SmemStatus::NotSupported.code());
    assert_eq!(status(&run(&mut s, SmemRequest::WalkAlloc, 2)), 0);
    let r = run(
        &mut s,
        SmemRequest::ActionClean(SmemActionClean {
            res_action: U32::new(0),
            action_trans_id: U32::new(1),
        }),
        3,
    );
    assert_eq!(status(&r), 0);
    let r = run(
        &mut s,
        SmemRequest::ClientVersion(SmemVersion {
            version: U32::new(2),
        }),
        4,
    );
    assert_eq!(status(&r), 0);
    assert_eq!(s.client_version(), 2);
    // UNLOCK_NOANS: silent, even when refused (counted).
    let m = SmemHandleMsg {
        res_handle: U32::new(h),
        res_mem: U32::new(addr),
    };
    run(&mut s, SmemRequest::Lock(m), 5);
    assert!(run(&mut s, SmemRequest::UnlockNoAns(m), 6).is_empty());
    let refused = s.stats().refused;
    assert!(run(&mut s, SmemRequest::UnlockNoAns(m), 7).is_empty());
    assert_eq!(s.stats().refused, refused + 1);
    assert_eq!(s.blocks().next().unwrap().locks, 0);
    // The reply echoes each request's trans_id.
    assert_eq!(
        SmemResult::read_from_prefix(&r[0])
            .unwrap()
            .0
            .trans_id
            .get(),
        4
    );
}

#[test]
fn garbage_gets_a_status_or_silence_never_a_panic() {
    let mut s = SmemServer::new(0, 4096);
    let mut out = Vec::new();
    s.on_message(&[1, 2, 3], &mut out);
    assert!(out.is_empty());
    s.on_message(&[77, 0, 0, 0, 9, 0, 0, 0], &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(s.stats().malformed, 2);
}

proptest! {
    /// Random alloc/free sequences: blocks never overlap, stay aligned and inside the area,
    /// and freeing everything restores one free range of the whole area.
    #[test]
    fn allocator_invariants(ops in proptest::collection::vec((1u32..3000, 0u32..4, any::<bool>()), 1..60)) {
        let mut s = SmemServer::new(0x2000_0000, 32 * 1024);
        let mut live: Vec<(u32, u32, u32)> = Vec::new();
        for (len, align_pow, do_free) in ops {
            if do_free && !live.is_empty() {
                let (h, _, _) = live.remove(0);
                prop_assert_eq!(free(&mut s, h), 0);
                continue;
            }
            let align = 1u32 << (align_pow * 3);
            if let Ok((h, addr)) = alloc(&mut s, len, align) {
                prop_assert_eq!(addr % align, 0);
                prop_assert!(addr >= 0x2000_0000 && addr + len <= 0x2000_0000 + 32 * 1024);
                for &(_, a, l) in &live {
                    prop_assert!(addr + len <= a || a + l <= addr, "overlap");
                }
                live.push((h, addr, len));
            }
        }
        for (h, _, _) in live {
            prop_assert_eq!(free(&mut s, h), 0);
        }
        prop_assert_eq!(s.heap.free.len(), 1);
        prop_assert_eq!(s.free_bytes(), 32 * 1024);
    }
}
