//! Guest memory access from the device side (identity mapped).
//!
//! The device side reaches the memory it shares with the driver exactly as the driver does, field
//! by field with atomics of the driver's widths (`fwipc_virtio::ring`: descriptors as `u32` address
//! halves, `u32` length, `u16` flags and next; avail entries and ring indices as `u16`; used
//! elements as two `u32`s) and buffers through `fwipc_transport_api::shared_mem` (bytes). No
//! non-atomic or mixed-size access to memory the other side touches, so a race between the two
//! (a hostile driver, or a driver reading what we write) is garbage data, never undefined
//! behaviour, and Miri over a driver + device test checks both sides
//! (docs/reliability.md, "Invariants" item 1).

use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use fwipc_transport_api::shared_mem::{copy_from_shared, copy_to_shared};
use virtio_drivers::PhysAddr;

use crate::virtio::ring::Descriptor;

/// # Safety
/// `addr..addr+len` must be memory the driver shared with the device and still owns for it.
pub(super) unsafe fn read_mem_into(addr: PhysAddr, len: usize, v: &mut Vec<u8>) {
    v.clear();
    v.resize(len, 0);
    // SAFETY: guaranteed by the caller; every agent reaches those bytes through byte atomics.
    unsafe { copy_from_shared(addr as usize as *const u8, v) };
}

/// # Safety
/// As `read_mem_into`, for writes of `data.len()` bytes.
pub(super) unsafe fn write_mem(addr: PhysAddr, data: &[u8]) {
    // SAFETY: as in `read_mem_into`.
    unsafe { copy_to_shared(addr as usize as *mut u8, data) };
}

/// # Safety
/// `addr` must point to a live, 2-byte aligned ring field shared with the driver, which
/// accesses it as an `AtomicU16` too.
pub(super) unsafe fn atomic_u16<'a>(addr: PhysAddr) -> &'a AtomicU16 {
    // SAFETY: guaranteed by the caller.
    unsafe { AtomicU16::from_ptr(addr as usize as *mut u16) }
}

/// # Safety
/// `addr` must point to a live, 4-byte aligned ring field shared with the driver, which
/// accesses it as an `AtomicU32` too.
pub(super) unsafe fn atomic_u32<'a>(addr: PhysAddr) -> &'a AtomicU32 {
    // SAFETY: guaranteed by the caller.
    unsafe { AtomicU32::from_ptr(addr as usize as *mut u32) }
}

/// # Safety
/// `addr` must point to a descriptor of a live descriptor table (16-byte aligned: the table
/// starts on a page).
pub(super) unsafe fn read_desc(addr: PhysAddr) -> Descriptor {
    // SAFETY: the fields of one descriptor, each aligned for its width (guaranteed by the
    // caller), accessed with the widths the driver's `set_desc` writes them with.
    let (lo, hi, len, flags, next) = unsafe {
        (
            atomic_u32(addr),
            atomic_u32(addr + 4),
            atomic_u32(addr + 8),
            atomic_u16(addr + 12),
            atomic_u16(addr + 14),
        )
    };
    // Relaxed (all): the Acquire load of `avail.idx` that made this chain available ordered
    // the driver's writes before these reads.
    Descriptor {
        addr: u64::from(u32::from_le(lo.load(Ordering::Relaxed)))
            | u64::from(u32::from_le(hi.load(Ordering::Relaxed))) << 32,
        len: u32::from_le(len.load(Ordering::Relaxed)),
        flags: u16::from_le(flags.load(Ordering::Relaxed)),
        next: u16::from_le(next.load(Ordering::Relaxed)),
    }
}

/// # Safety
/// `addr` must point to an element of a live used ring (4-byte aligned).
pub(super) unsafe fn write_used(addr: PhysAddr, id: u32, len: u32) {
    // SAFETY: the two words of one element (guaranteed by the caller), with the driver's width.
    let (i, l) = unsafe { (atomic_u32(addr), atomic_u32(addr + 4)) };
    // Relaxed (both): published by the Release store of `used.idx` after them.
    i.store(id.to_le(), Ordering::Relaxed);
    l.store(len.to_le(), Ordering::Relaxed);
}
