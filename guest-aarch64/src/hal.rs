//! Identity-mapped DMA for virtio-drivers: physical address == virtual address.
//!
//! The guest runs with the MMU off, so every address it uses is a guest-physical address, and QEMU
//! backs all guest RAM with one shared memfd that vhost-device-scmi maps whole: any buffer in RAM
//! (heap, stack, statics) is visible to the device as it is. `share` therefore hands out the
//! buffer's own address (no bounce buffer) and `unshare` has nothing to copy back.
//!
//! Caches: with `SCTLR_EL1.M == 0` all data accesses are treated as Device-nGnRnE, i.e.
//! non-cacheable, so nothing is ever held in a cache the device cannot see and no cache
//! maintenance is needed. This holds under QEMU TCG, which this guest is built for. Under KVM it
//! would not: the host (vhost-user daemon) accesses the same RAM through cacheable mappings, so a
//! non-cacheable guest view is incoherent with it; a KVM guest needs the MMU on with RAM mapped
//! Normal write-back (then virtio DMA is coherent and still needs no maintenance).
//!
//! Alignment: Device memory faults on unaligned accesses; `aarch64-unknown-none` compiles with
//! `+strict-align`, so Rust code (and `core`'s memcpy) never emits any.

use core::alloc::Layout;
use core::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// See the module docs.
pub struct IdentityHal;

fn dma_layout(pages: usize) -> Option<Layout> {
    Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()
}

// SAFETY: `dma_alloc` returns page-aligned, zeroed, exclusively owned memory from the global heap
// (or paddr 0, which virtio-drivers treats as failure); paddr == vaddr is correct with the MMU off;
// `share` returns the buffer's own address, which the device can access (all RAM is shared, see
// the module docs) for as long as the caller keeps the buffer alive, as the trait requires.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(layout) = dma_layout(pages).filter(|l| l.size() > 0) else {
            return (0, NonNull::dangling());
        };
        // SAFETY: `layout` has a non-zero size (checked above).
        let ptr = unsafe { alloc::alloc::alloc_zeroed(layout) };
        match NonNull::new(ptr) {
            Some(p) => (p.as_ptr() as usize as PhysAddr, p),
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        match dma_layout(pages) {
            Some(layout) => {
                // SAFETY: the caller passes back a pointer from `dma_alloc(pages)`, which allocated
                // it with exactly this layout from the global allocator.
                unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), layout) };
                0
            }
            None => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).expect("MMIO region at physical address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
