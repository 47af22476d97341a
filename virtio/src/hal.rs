//! [`OffsetHal`]: a virtio-drivers [`Hal`] for guests whose RAM is identity-mapped
//! ([`IdentityHal`]) or mapped at a fixed offset (`phys = virt + OFFSET`).
//!
//! # DMA contract
//!
//! - **Allocation** (`dma_alloc`): `pages * PAGE_SIZE` bytes from the **global allocator**
//!   (`alloc::alloc::alloc_zeroed`), **zeroed** and **page aligned** (`PAGE_SIZE`, 4096), owned by
//!   the caller until `dma_dealloc`. Its device address is `virt + OFFSET`. A failed allocation
//!   returns physical address 0, which virtio-drivers treats as failure. So the heap the global
//!   allocator manages must lie in RAM the device can reach, mapped by the same linear map.
//! - **No bounce buffers**: `share` returns the buffer's own address plus `OFFSET`, and `unshare`
//!   does nothing (there is nothing to copy back). The device therefore reads and writes the
//!   driver's memory in place, for as long as the caller keeps the buffer alive and shared, which
//!   virtio-drivers' `Hal` contract already requires. Any buffer in RAM (heap, stack, statics)
//!   works.
//! - **MMIO** (`mmio_phys_to_virt`): the same linear map, `virt = phys - OFFSET`. Guests that map
//!   device windows elsewhere need their own `Hal`.
//! - **Cache coherency is assumed**: no cache maintenance is performed. That holds when the device
//!   and the CPU see the same memory coherently: virtio devices emulated by a hypervisor (QEMU,
//!   vhost-user daemons) accessing guest RAM that the guest maps Normal write-back cacheable, or a
//!   guest running with its MMU off under emulation (QEMU TCG), where every access is
//!   Device-nGnRnE and nothing is cached. (Under KVM, a guest with its MMU off is *not* coherent
//!   with the host's cacheable view of its RAM; turn the MMU on first.) Devices that sit behind an
//!   IOMMU or need `VIRTIO_F_ACCESS_PLATFORM` are out of scope.
//!
//! The `Hal` trait has no `self`, so the offset is a const parameter:
//! `OffsetHal<{ PHYS.wrapping_sub(VIRT) }>` (wrapping arithmetic, so offsets "below zero" work).

use core::alloc::Layout;
use core::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// A [`Hal`] with `phys = virt + OFFSET` (wrapping) for RAM and MMIO alike. See the module docs
/// for the DMA contract.
#[derive(Debug, Clone, Copy, Default)]
pub struct OffsetHal<const OFFSET: u64>;

/// [`OffsetHal`] with physical address == virtual address (MMU off, or an identity map).
pub type IdentityHal = OffsetHal<0>;

impl<const OFFSET: u64> OffsetHal<OFFSET> {
    /// The device (physical) address of `virt`.
    pub fn virt_to_phys(virt: usize) -> PhysAddr {
        (virt as u64).wrapping_add(OFFSET)
    }

    /// The virtual address of `phys`, `None` if it does not fit a pointer.
    pub fn phys_to_virt(phys: PhysAddr) -> Option<usize> {
        usize::try_from(phys.wrapping_sub(OFFSET)).ok()
    }
}

fn dma_layout(pages: usize) -> Option<Layout> {
    let layout = Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()?;
    (layout.size() > 0).then_some(layout)
}

// SAFETY: `dma_alloc` returns page-aligned, zeroed memory from the global allocator that nothing
// else owns (or physical address 0, the failure value), with its device address per the linear
// map the type names; `dma_dealloc` frees it with the same layout; `share` returns the buffer's
// own device address, which the device may access while the caller keeps the buffer alive, and
// `unshare` has nothing to copy because no bounce buffer exists. The coherency assumption is
// stated in the module docs.
unsafe impl<const OFFSET: u64> Hal for OffsetHal<OFFSET> {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(layout) = dma_layout(pages) else {
            return (0, NonNull::dangling());
        };
        // SAFETY: `layout` has a non-zero size (`dma_layout`).
        let ptr = unsafe { alloc::alloc::alloc_zeroed(layout) };
        match NonNull::new(ptr) {
            Some(p) => (Self::virt_to_phys(p.as_ptr() as usize), p),
            None => {
                log::error!("virtio dma_alloc: out of memory for {pages} pages");
                (0, NonNull::dangling())
            }
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        match dma_layout(pages) {
            Some(layout) => {
                // SAFETY: the caller passes back a pointer from `dma_alloc(pages)`, which
                // allocated it with exactly this layout from the global allocator.
                unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), layout) };
                0
            }
            None => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        Self::phys_to_virt(paddr)
            .and_then(|v| NonNull::new(v as *mut u8))
            .expect("virtio-mmio window outside the linear map")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        Self::virt_to_phys(buffer.cast::<u8>().as_ptr() as usize)
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    type High = OffsetHal<{ 0x4000_0000u64.wrapping_sub(0xffff_0000_0000_0000) }>;

    #[test]
    fn dma_is_zeroed_page_aligned_and_offset() {
        let (paddr, vaddr) = High::dma_alloc(2, BufferDirection::Both);
        assert_ne!(paddr, 0);
        assert!((vaddr.as_ptr() as usize).is_multiple_of(PAGE_SIZE));
        // SAFETY: `dma_alloc` returned two pages at `vaddr`.
        let bytes = unsafe { core::slice::from_raw_parts(vaddr.as_ptr(), 2 * PAGE_SIZE) };
        assert!(bytes.iter().all(|&b| b == 0));
        assert_eq!(High::phys_to_virt(paddr), Some(vaddr.as_ptr() as usize));
        assert_eq!(
            High::virt_to_phys(vaddr.as_ptr() as usize),
            (vaddr.as_ptr() as u64)
                .wrapping_add(0x4000_0000u64.wrapping_sub(0xffff_0000_0000_0000))
        );
        // SAFETY: returned by `dma_alloc(2)` above, freed once.
        assert_eq!(unsafe { High::dma_dealloc(paddr, vaddr, 2) }, 0);
        assert_eq!(IdentityHal::dma_alloc(0, BufferDirection::Both).0, 0);
    }

    #[test]
    fn share_is_in_place() {
        let mut buf = [0u8; 16];
        let nn = NonNull::from(&mut buf[..]);
        // SAFETY: `buf` outlives the sharing; nothing is copied.
        unsafe {
            let p = IdentityHal::share(nn, BufferDirection::DriverToDevice);
            assert_eq!(p, buf.as_ptr() as u64);
            IdentityHal::unshare(p, nn, BufferDirection::DriverToDevice);
            let m = IdentityHal::mmio_phys_to_virt(0x0a00_0000, 0x200);
            assert_eq!(m.as_ptr() as usize, 0x0a00_0000);
        }
    }
}
