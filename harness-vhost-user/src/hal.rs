//! `MemfdHal`: the `virtio_drivers::Hal` of the harness. DMA pages come from [`GuestMemory`];
//! `share` bounces every driver buffer through guest RAM, because the driver passes ordinary
//! heap/stack slices that the vhost-user daemon (another process) cannot see.
//!
//! **Why a process-wide pool:** virtio-drivers' `Hal` has only associated functions (no `&self`),
//! so the memory a `Hal` allocates from cannot be an instance field. Each `Hal` *type* therefore
//! names one pool through [`MemoryPool`]; [`MemfdHal`] (= `MemfdHal<SharedPool>`) uses one lazily
//! created memfd behind a `Mutex`, shared by every transport in the process. Every daemon maps the
//! whole memfd, so tests running in parallel need no coordination beyond the allocator lock. A
//! caller that wants isolated memory defines another `MemoryPool` type.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::OnceLock;

use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::guest_memory::{GuestMemory, PAGE_SIZE};

/// Guest-physical base of [`SharedPool`] (non-zero: paddr 0 means DMA failure to virtio-drivers).
pub const SHARED_POOL_GPA_BASE: u64 = 0x4000_0000;
/// Size of [`SharedPool`]: room for many parallel tests with full 1024-entry queues. The memfd is
/// sparse, so untouched pages cost nothing.
pub const SHARED_POOL_SIZE: usize = 128 << 20;

/// Names the guest memory a [`MemfdHal`] allocates from.
pub trait MemoryPool: 'static {
    /// The pool (created on first use).
    fn memory() -> &'static GuestMemory;
}

/// The default pool: one 128 MiB memfd at GPA 0x4000_0000.
#[derive(Debug)]
pub struct SharedPool;

impl MemoryPool for SharedPool {
    fn memory() -> &'static GuestMemory {
        static POOL: OnceLock<GuestMemory> = OnceLock::new();
        POOL.get_or_init(|| {
            GuestMemory::new(SHARED_POOL_SIZE, SHARED_POOL_GPA_BASE)
                .expect("cannot create the harness guest memory (memfd_create/mmap)")
        })
    }
}

/// The guest memory of the default [`MemfdHal`] (the memory to give [`crate::VhostUserTransport`]).
pub fn shared_memory() -> &'static GuestMemory {
    SharedPool::memory()
}

/// The harness `Hal`, never instantiated (see the module docs for why it is a type, not a value).
#[derive(Debug)]
pub struct MemfdHal<P: MemoryPool = SharedPool>(PhantomData<P>);

impl<P: MemoryPool> MemfdHal<P> {
    /// The guest memory this `Hal` allocates from.
    pub fn memory() -> &'static GuestMemory {
        P::memory()
    }
}

/// Pages a bounce buffer of `len` bytes takes (at least one: `share` may see empty slices).
fn bounce_pages(len: usize) -> usize {
    len.div_ceil(PAGE_SIZE).max(1)
}

fn alloc_or_die(mem: &GuestMemory, pages: usize) -> u64 {
    // `Hal::share` cannot fail, and returning an address outside guest RAM would make the daemon
    // kill its worker silently; exhaustion is a harness sizing bug, so say so loudly.
    mem.alloc(pages).unwrap_or_else(|| {
        panic!(
            "harness guest memory exhausted ({pages} pages wanted, {} free)",
            mem.free_pages()
        )
    })
}

// SAFETY: `dma_alloc` returns page-aligned, zeroed, exclusively owned pages of a live mapping
// (GuestMemory never unmaps while the static pool lives); `share` returns the GPA of a bounce
// buffer holding the driver's data, and `unshare` copies device-written data back into the
// original buffer before freeing the bounce pages.
unsafe impl<P: MemoryPool> Hal for MemfdHal<P> {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let mem = P::memory();
        let gpa = alloc_or_die(mem, pages);
        let va = mem
            .gpa_to_host(gpa, pages * PAGE_SIZE)
            .expect("allocator returned pages outside guest memory");
        (gpa, va)
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        if P::memory().free(paddr, pages) {
            0
        } else {
            log::error!("dma_dealloc of pages not allocated: {paddr:#x} x{pages}");
            -1
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // The vhost-user transport has no MMIO; a driver asking for it is a harness misuse.
        panic!("MemfdHal has no MMIO (asked for {paddr:#x}, {size} bytes)")
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let mem = P::memory();
        let len = buffer.len();
        let gpa = alloc_or_die(mem, bounce_pages(len));
        if direction != BufferDirection::DeviceToDriver && len > 0 {
            let dst = mem
                .gpa_to_host(gpa, len)
                .expect("bounce buffer in guest memory");
            // SAFETY: the caller guarantees `buffer` is valid for reads of `len` bytes and not
            // accessed elsewhere during this call; `dst` is `len` bytes of freshly allocated
            // bounce pages, so the ranges do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(buffer.as_ptr().cast::<u8>(), dst.as_ptr(), len)
            };
        }
        gpa
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let mem = P::memory();
        let len = buffer.len();
        if direction != BufferDirection::DriverToDevice && len > 0 {
            match mem.gpa_to_host(paddr, len) {
                // SAFETY: `paddr` is the bounce buffer `share` returned for this `buffer` (caller
                // contract), still allocated; the caller guarantees `buffer` is valid for writes
                // and unaliased during this call. The device is done with the buffer (it was
                // returned in the used ring), so nobody writes the bounce pages concurrently.
                Some(src) => unsafe {
                    std::ptr::copy_nonoverlapping(src.as_ptr(), buffer.as_ptr().cast::<u8>(), len)
                },
                None => log::error!("unshare of an address outside guest memory: {paddr:#x}"),
            }
        }
        if !mem.free(paddr, bounce_pages(len)) {
            log::error!("unshare of a bounce buffer not allocated: {paddr:#x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct PrivatePool;
    impl MemoryPool for PrivatePool {
        fn memory() -> &'static GuestMemory {
            static POOL: OnceLock<GuestMemory> = OnceLock::new();
            POOL.get_or_init(|| GuestMemory::new(16 * PAGE_SIZE, 0x8000_0000).unwrap())
        }
    }
    type H = MemfdHal<PrivatePool>;

    /// Its own pool: this test counts free pages, which other tests of the module would race.
    struct BouncePool;
    impl MemoryPool for BouncePool {
        fn memory() -> &'static GuestMemory {
            static POOL: OnceLock<GuestMemory> = OnceLock::new();
            POOL.get_or_init(|| GuestMemory::new(16 * PAGE_SIZE, 0x8000_0000).unwrap())
        }
    }

    #[test]
    fn share_bounces_and_unshare_copies_back() {
        type H = MemfdHal<BouncePool>;
        let before = H::memory().free_pages();
        let mut buf = *b"hello, device";
        let nn = NonNull::from(&mut buf[..]);
        // SAFETY: `buf` is a live local, not otherwise accessed during the calls.
        let gpa = unsafe { H::share(nn, BufferDirection::DriverToDevice) };
        assert!(gpa >= 0x8000_0000);
        let host = H::memory().gpa_to_host(gpa, buf.len()).unwrap();
        // SAFETY: the bounce buffer is `buf.len()` bytes of allocated guest memory.
        let seen = unsafe { std::slice::from_raw_parts(host.as_ptr(), buf.len()) };
        assert_eq!(seen, b"hello, device");
        // Pretend the device wrote into it; DriverToDevice must not copy back.
        // SAFETY: as above, and nothing else refers to the bounce buffer.
        unsafe { host.as_ptr().write(b'X') };
        // SAFETY: `gpa` came from `share` for this buffer.
        unsafe { H::unshare(gpa, nn, BufferDirection::DriverToDevice) };
        assert_eq!(&buf, b"hello, device");

        let mut out = [0u8; 5];
        let nn = NonNull::from(&mut out[..]);
        // SAFETY: as above.
        let gpa = unsafe { H::share(nn, BufferDirection::DeviceToDriver) };
        let host = H::memory().gpa_to_host(gpa, 5).unwrap();
        // SAFETY: 5 bytes of allocated bounce buffer.
        unsafe { host.as_ptr().copy_from_nonoverlapping(b"world".as_ptr(), 5) };
        // SAFETY: `gpa` came from `share` for this buffer.
        unsafe { H::unshare(gpa, nn, BufferDirection::DeviceToDriver) };
        assert_eq!(&out, b"world");
        assert_eq!(H::memory().free_pages(), before, "bounce pages freed");
    }

    #[test]
    fn dma_alloc_is_zeroed_and_nonzero_paddr() {
        let (pa, va) = H::dma_alloc(2, BufferDirection::Both);
        assert_ne!(pa, 0);
        assert_eq!(va.as_ptr() as usize % PAGE_SIZE, 0);
        // SAFETY: two pages just allocated for us.
        let s = unsafe { std::slice::from_raw_parts(va.as_ptr(), 2 * PAGE_SIZE) };
        assert!(s.iter().all(|&b| b == 0));
        // SAFETY: values from dma_alloc above.
        assert_eq!(unsafe { H::dma_dealloc(pa, va, 2) }, 0);
        // SAFETY: same values again: a double free must be refused, not corrupt the map.
        assert_eq!(unsafe { H::dma_dealloc(pa, va, 2) }, -1);
    }
}
