//! The `alloc` heap: `linked_list_allocator` over the 8 MiB `.heap` region of `linker.ld`, behind
//! a spin lock taken with IRQs masked, so it is safe from every CPU and from an IRQ handler (a
//! handler that allocated while its own CPU held the lock would otherwise spin forever).
//!
//! `#[global_allocator]` is necessarily one static per program.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use linked_list_allocator::Heap;
use spin::Mutex;

use crate::irq::without_irqs;

/// The heap behind an IRQ-masking spin lock.
struct SmpHeap(Mutex<Heap>);

// SAFETY: every access to the heap goes through the spin lock (mutual exclusion between CPUs)
// with IRQs masked (no re-entry from a handler on the same CPU); `Heap` hands out disjoint blocks.
unsafe impl GlobalAlloc for SmpHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        without_irqs(|| {
            self.0
                .lock()
                .allocate_first_fit(layout)
                .map_or(core::ptr::null_mut(), NonNull::as_ptr)
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(ptr) = NonNull::new(ptr) {
            // SAFETY: the caller passes a block this allocator returned for `layout`.
            without_irqs(|| unsafe { self.0.lock().deallocate(ptr, layout) });
        }
    }
}

#[global_allocator]
static HEAP: SmpHeap = SmpHeap(Mutex::new(Heap::empty()));

extern "C" {
    static mut __heap_start: u8;
    static mut __heap_end: u8;
}

/// Hand the linker-reserved region to the allocator. Call once, before any allocation.
pub fn init() -> usize {
    let start = &raw mut __heap_start;
    let end = &raw mut __heap_end;
    let size = (end as usize).saturating_sub(start as usize);
    // SAFETY: `__heap_start..__heap_end` is a NOLOAD section reserved by linker.ld for the heap
    // alone: nothing else refers to it, it lies in RAM, and `init` runs once from `guest_main`
    // before the first allocation (an empty heap would fail every allocation before that).
    unsafe { HEAP.0.lock().init(start, size) };
    size
}
