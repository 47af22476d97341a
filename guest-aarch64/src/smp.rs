//! The second CPU: bring-up with PSCI `CPU_ON` and a one-job work slot.
//!
//! [`start_cpu1`] powers CPU 1 on (PSCI DEN0022, `CPU_ON`) at `_secondary_start` (`boot.rs`) with
//! a [`SecondaryBoot`] as context: the boot CPU's MMU register values and a stack of its own from
//! the heap. CPU 1 turns its MMU and caches on with the boot CPU's tables before it touches its
//! stack, installs the vectors, then ([`secondary_main`]) enables its GIC CPU interface and its
//! generic-timer event stream, unmasks IRQs, says it is online and waits in `wfe` for work.
//! [`Cpu1::run`] hands it one closure at a time, scoped like a thread scope: it returns only once
//! CPU 1 has finished the closure, so the closure may borrow the caller's stack.

use alloc::alloc::{alloc, Layout};
use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use core::time::Duration;

use fwipc_virtio::aarch64::{enable_event_stream, wfe, GenericTimer};

use crate::irq;
use crate::mmu::{self, MmuRegs};
use crate::psci::{self, Conduit};

/// MPIDR affinity of the second CPU of QEMU `virt` (its device tree's `cpu@1`, `reg = <1>`).
const CPU1_MPIDR: u64 = 1;
/// CPU 1's stack (the boot CPU's is 256 KiB too, see linker.ld).
const STACK_SIZE: usize = 256 * 1024;
/// How long CPU 1 may take to come online.
const ONLINE_TIMEOUT: Duration = Duration::from_secs(2);

/// The `CPU_ON` context: read by `_secondary_start` with the MMU off. Layout shared with the
/// assembly: the three MMU registers (as `guest_mmu_on` reads them), then the stack top.
#[repr(C)]
pub struct SecondaryBoot {
    mmu: MmuRegs,
    stack_top: u64,
}

/// Why CPU 1 did not come up.
#[derive(Debug)]
pub enum SmpError {
    /// The device tree names no PSCI conduit this guest knows.
    Conduit,
    /// No memory for the stack.
    Stack,
    /// `CPU_ON` failed.
    CpuOn(smccc::psci::Error),
    /// CPU 1 did not report online in time.
    Timeout,
}

impl core::fmt::Display for SmpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SmpError::Conduit => f.write_str("no PSCI node with method hvc or smc"),
            SmpError::Stack => f.write_str("no memory for CPU 1's stack"),
            SmpError::CpuOn(e) => write!(f, "PSCI CPU_ON: {e}"),
            SmpError::Timeout => f.write_str("CPU 1 did not come online within 2 s"),
        }
    }
}

static ONLINE: AtomicBool = AtomicBool::new(false);
/// CPU 1's SCTLR_EL1 once online, for the report.
static CPU1_SCTLR: AtomicU64 = AtomicU64::new(0);
/// The posted job, or null.
static JOB: AtomicPtr<Job<'static>> = AtomicPtr::new(core::ptr::null_mut());

struct Job<'a> {
    run: &'a (dyn Fn() + Sync),
    done: AtomicBool,
}

extern "C" {
    /// `boot.rs`: the `CPU_ON` entry point.
    fn _secondary_start();
}

/// Wake the other CPU's `wfe`. The `dsb ish` completes this CPU's earlier stores (the flag the
/// other CPU re-reads when it wakes) before the event is sent (Arm ARM, "Wait for Event mechanism
/// and Send event": software must ensure the data is observable before the SEV).
fn sev() {
    // SAFETY: a barrier and an event; no memory is accessed.
    unsafe { core::arch::asm!("dsb ish", "sev", options(nostack, preserves_flags)) };
}

/// Clean `len` bytes at `addr` to the Point of Coherency: CPU 1 reads its boot block with its MMU
/// and caches off, so the block must be in memory, not only in this CPU's data cache (Arm ARM,
/// "Data cache maintenance instructions", DC CVAC). A no-op in effect under QEMU TCG, which models
/// no caches.
fn clean_to_poc(addr: usize, len: usize) {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    // CTR_EL0.DminLine (bits 19:16): log2 of the smallest data cache line, in words.
    let line = 4usize << ((ctr >> 16) & 0xf);
    let mut a = addr & !(line - 1);
    while a < addr + len {
        // SAFETY: `a` is inside (or the line start of) the boot block, which is mapped; a clean
        // only writes dirty data back.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) a, options(nostack, preserves_flags)) };
        a += line;
    }
    // SAFETY: a barrier. `dsb sy` waits for the cleans to complete before CPU_ON is issued.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// CPU 1, online and waiting for work (only [`start_cpu1`] makes one).
#[derive(Debug)]
pub struct Cpu1 {
    /// Its SCTLR_EL1 as it reported it.
    pub sctlr: u64,
    _online: (),
}

/// Start CPU 1 through the device tree's PSCI conduit with the MMU registers `regs` (the boot
/// CPU's, from `mmu::init`); wait until it is online.
pub fn start_cpu1(
    method: Option<&str>,
    regs: MmuRegs,
    timer: &GenericTimer,
) -> Result<Cpu1, SmpError> {
    let conduit = method
        .and_then(Conduit::from_method)
        .ok_or(SmpError::Conduit)?;
    let layout = Layout::from_size_align(STACK_SIZE, 16).map_err(|_| SmpError::Stack)?;
    // SAFETY: a non-zero-sized layout. The stack is never freed: CPU 1 runs until power-off.
    let stack = unsafe { alloc(layout) };
    if stack.is_null() {
        return Err(SmpError::Stack);
    }
    let boot: &'static SecondaryBoot = Box::leak(Box::new(SecondaryBoot {
        mmu: regs,
        stack_top: stack as u64 + STACK_SIZE as u64,
    }));
    let boot_addr = boot as *const SecondaryBoot as usize;
    clean_to_poc(boot_addr, core::mem::size_of::<SecondaryBoot>());
    psci::cpu_on(
        conduit,
        CPU1_MPIDR,
        _secondary_start as *const () as usize as u64,
        boot_addr as u64,
    )
    .map_err(SmpError::CpuOn)?;
    let deadline = timer.deadline(ONLINE_TIMEOUT);
    // Acquire: pairs with CPU 1's Release store; its SCTLR value is visible after it.
    while !ONLINE.load(Ordering::Acquire) {
        if timer.expired(deadline) {
            return Err(SmpError::Timeout);
        }
        wfe();
    }
    Ok(Cpu1 {
        sctlr: CPU1_SCTLR.load(Ordering::Relaxed),
        _online: (),
    })
}

impl Cpu1 {
    /// Run `job` on CPU 1 while this CPU runs `local`; return `local`'s result once both are done.
    pub fn run<R>(&self, job: &(dyn Fn() + Sync), local: impl FnOnce() -> R) -> R {
        let cell = Job {
            run: job,
            done: AtomicBool::new(false),
        };
        // Release: publishes `cell` to CPU 1's Acquire swap. The lifetime is erased; `cell` stays
        // alive until CPU 1 sets `done`, after which it no longer touches it.
        JOB.store(
            &cell as *const Job<'_> as *mut Job<'static>,
            Ordering::Release,
        );
        sev();
        let r = local();
        // Acquire: pairs with CPU 1's Release store of `done` (whatever the job wrote is visible).
        while !cell.done.load(Ordering::Acquire) {
            wfe();
        }
        r
    }
}

/// CPU 1's Rust entry (from `_secondary_start`: MMU and caches on, own stack, vectors installed).
#[no_mangle]
extern "C" fn secondary_main(_boot: *const SecondaryBoot) -> ! {
    irq::init_cpu();
    // As on CPU 0: an event about every 0.5 ms bounds every `wfe`.
    enable_event_stream(14);
    // Relaxed: published by the Release store of ONLINE.
    CPU1_SCTLR.store(mmu::sctlr(), Ordering::Relaxed);
    // Release: pairs with `start_cpu1`'s Acquire load.
    ONLINE.store(true, Ordering::Release);
    sev();
    loop {
        // Acquire: pairs with `Cpu1::run`'s Release store (the job's captures are visible).
        let job = JOB.swap(core::ptr::null_mut(), Ordering::Acquire);
        // SAFETY: a non-null JOB points to the `Job` of a `Cpu1::run` call that waits for `done`
        // before the job or anything it borrows goes away.
        match unsafe { job.as_ref() } {
            Some(job) => {
                (job.run)();
                // Release: the job's effects are visible to the Acquire load in `Cpu1::run`. The
                // job must not be touched after this store.
                job.done.store(true, Ordering::Release);
                sev();
            }
            None => wfe(),
        }
    }
}
