//! The `alloc` heap: `linked_list_allocator` over the 8 MiB `.heap` region of `linker.ld`.
//!
//! `#[global_allocator]` is necessarily one static per program; it is the guest's only global
//! mutable state besides the hardware itself.

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

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
    unsafe { HEAP.lock().init(start, size) };
    size
}
