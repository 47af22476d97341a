//! CPU 1, started with PSCI `CPU_ON` through `aarch64-rt`'s `start_core`: its entry code turns
//! the MMU and caches on with the same initial page table, sets CPU 1's stack and runs a closure.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, Ordering};

use aarch64_rt::{start_core, Stack};
use fwipc_virtio::aarch64::{enable_event_stream, wfe};
use smccc::{Hvc, Smc};

use crate::{check, gic, Res};

/// CPU 1's stack, 256 KiB like the boot CPU's.
const STACK_PAGES: usize = 64;
static mut CPU1_STACK: Stack<STACK_PAGES> = Stack::new();
/// Set by the first [`start_cpu1`]: the stack above serves one start only.
static STARTED: AtomicBool = AtomicBool::new(false);

/// The calling CPU's SCTLR_EL1 M, C and I bits, as text.
pub fn describe_mmu() -> String {
    use arm_sysregs::el1::registers::SctlrEl1 as S;
    let sctlr = arm_sysregs::el1::accessors::read_sctlr_el1();
    let on = |bit: S| if sctlr.contains(bit) { "on" } else { "OFF" };
    let map = "first GiB Device-nGnRE, RAM Normal write-back";
    format!("MMU {}, D-cache {}, I-cache {} ({map})", on(S::M), on(S::C), on(S::I))
}

/// Start CPU 1 (MPIDR 1) through the PSCI conduit `method` (the device tree's `/psci` `method`),
/// set up its GIC CPU interface, timer event stream and IRQs, and run `job` on it; it waits in
/// `wfe` for good once `job` returns. Once per run.
pub fn start_cpu1(method: &'static str, job: impl FnOnce() + Send + 'static) -> Res {
    // Relaxed: only guards the stack against a second start from this same CPU.
    check(!STARTED.swap(true, Ordering::Relaxed), "CPU 1 is started once")?;
    let entry = move || {
        gic::init_cpu(1);
        enable_event_stream(14);
        println!(
            "guest: cpu1: online via PSCI CPU_ON ({method}), {}, GIC CPU interface and IRQs on",
            describe_mmu()
        );
        job();
        loop {
            wfe();
        }
    };
    let stack = &raw mut CPU1_STACK;
    // SAFETY: the stack is reserved for CPU 1 alone (`STARTED`), in RAM that the initial page
    // table maps Normal write-back for both CPUs, and lives for the whole program.
    let on = unsafe {
        match method {
            "hvc" => start_core::<Hvc, _, STACK_PAGES>(1, stack, entry),
            "smc" => start_core::<Smc, _, STACK_PAGES>(1, stack, entry),
            _ => return Err(format!("PSCI method {method:?} is neither hvc nor smc")),
        }
    };
    on.map_err(|e| format!("PSCI CPU_ON: {e:?}"))
}
