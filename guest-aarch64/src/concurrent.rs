//! The concurrent stage: both CPUs issue SCMI commands at the same time on the same agent
//! instances (one per device, shared by reference; the agents are `Sync`), while the devices'
//! interrupts, routed to CPU 0, complete the replies through `ScmiVirtio::complete`.
//!
//! Each CPU sends [`COMMANDS`] commands to every device, interleaving the devices and rotating
//! through three commands, and checks every reply: DISCOVER_VENDOR is "rust-vmm";
//! SENSOR_DESCRIPTION_GET names the sensor this device's earlier stages found (so a reply from the
//! other device's daemon would show); SENSOR_READING_GET gives the fake sensor's axes x, x + 100,
//! x + 200.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use fwipc_scmi_virtio::protocol::sensor::SensorValue;
use fwipc_scmi_virtio::protocol::ScmiError;
use fwipc_virtio::aarch64::GenericTimer;
use spin::Mutex;

use crate::irq;
use crate::println;
use crate::scmi_agent::{Agent, AgentError};
use crate::smp::Cpu1;

/// Commands each CPU sends to each device.
pub const COMMANDS: u32 = 100;

/// One device's agent and the sensor name its replies must carry.
pub struct Target<'a> {
    /// The device's running agent.
    pub agent: &'a Agent,
    /// Its sensor 0's name, as the device's earlier stages reported it.
    pub sensor: &'a str,
}

fn scmi<T>(r: Result<T, ScmiError>, what: &'static str) -> Result<T, AgentError> {
    r.map_err(|e| AgentError::Scmi(what, e))
}

fn check(cond: bool, what: &'static str) -> Result<(), AgentError> {
    if cond {
        Ok(())
    } else {
        Err(AgentError::Check(what))
    }
}

/// One CPU's share: `COMMANDS` commands per device, each reply checked; `done[d]` counts the
/// commands completed on device `d`.
fn worker(cpu: usize, targets: &[Target<'_>], done: &[AtomicU32]) -> Result<(), AgentError> {
    let mut values = [SensorValue::default(); 3];
    for k in 0..COMMANDS as usize {
        for (d, t) in targets.iter().enumerate() {
            // Offset by CPU and device, so different commands are in flight at the same time.
            match (k + cpu + d) % 3 {
                0 => {
                    let v = scmi(t.agent.base().vendor(), "concurrent DISCOVER_VENDOR")?;
                    check(
                        v.as_str() == Some("rust-vmm"),
                        "concurrent vendor is rust-vmm",
                    )?;
                }
                1 => {
                    let descs = scmi(
                        t.agent.sensor().descriptions_vec(),
                        "concurrent SENSOR_DESCRIPTION_GET",
                    )?;
                    check(
                        descs
                            .first()
                            .is_some_and(|s| s.name.as_str() == Some(t.sensor)),
                        "concurrent sensor name is the device's own",
                    )?;
                }
                _ => {
                    let n = scmi(
                        t.agent.sensor().reading_axes(0, &mut values),
                        "concurrent SENSOR_READING_GET",
                    )?;
                    let [x, y, z] = values.map(|v| v.value);
                    check(
                        n == 3 && y == x + 100 && z == x + 200,
                        "concurrent reading has axes x, x+100, x+200",
                    )?;
                }
            }
            // Relaxed: read after `Cpu1::run` returns, which orders it (Acquire on `done`).
            done[d].fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Run `f`; return the generic-timer times (ns) it started and ended at, and its result.
fn timed<R>(timer: &GenericTimer, f: impl FnOnce() -> R) -> (u64, u64, R) {
    let start = timer.now_ns();
    let r = f();
    (start, timer.now_ns(), r)
}

/// Run the stage on CPU 0 and CPU 1 at once; print per-CPU and per-device counts; fail unless
/// every command of both CPUs completed with a correct reply and the device interrupts were taken
/// on CPU 0 only.
pub fn run(cpu1: &Cpu1, targets: &[Target<'_>], timer: &GenericTimer) -> Result<(), AgentError> {
    let counts: [Vec<AtomicU32>; 2] =
        [0, 1].map(|_| targets.iter().map(|_| AtomicU32::new(0)).collect());
    let cpu1_result = Mutex::new(None);
    let irqs_before = irq::handled_by_cpu();
    let (_, spurious_before) = irq::counts();
    let t0 = timer.now_ns();
    let job = || *cpu1_result.lock() = Some(timed(timer, || worker(1, targets, &counts[1])));
    let (start0, end0, cpu0_result) =
        cpu1.run(&job, || timed(timer, || worker(0, targets, &counts[0])));
    let ms = timer.now_ns().saturating_sub(t0) / 1_000_000;
    let (start1, end1, cpu1_result) =
        cpu1_result
            .lock()
            .take()
            .unwrap_or((0, 0, Err(AgentError::Check("CPU 1 ran its share"))));
    // The span during which both CPUs were sending: both streams running at the same time.
    let overlap_us = end0.min(end1).saturating_sub(start0.max(start1)) / 1000;
    let mut all = true;
    for (cpu, per_dev) in counts.iter().enumerate() {
        let per_dev: Vec<u32> = per_dev.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        all &= per_dev.iter().all(|&n| n == COMMANDS);
        let mut line = alloc::format!(
            "cpu{cpu}: {} concurrent commands completed (",
            per_dev.iter().sum::<u32>()
        );
        for (d, n) in per_dev.iter().enumerate() {
            line += &alloc::format!("{}device {d}: {n}", if d == 0 { "" } else { ", " });
        }
        println!("{line})");
    }
    let irqs_after = irq::handled_by_cpu();
    let irqs: Vec<u64> = (0..irq::MAX_CPUS)
        .map(|c| irqs_after[c] - irqs_before[c])
        .collect();
    let (_, spurious_after) = irq::counts();
    println!(
        "concurrent: 2 CPUs x {} devices x {COMMANDS} commands in {ms} ms; device interrupts \
         handled on cpu0: {}, cpu1: {} ({} spurious: acknowledged by the other CPU first)",
        targets.len(),
        irqs[0],
        irqs[1],
        spurious_after - spurious_before
    );
    println!(
        "concurrent: both CPUs sending at once for {overlap_us} us (cpu0 {} us, cpu1 {} us)",
        end0.saturating_sub(start0) / 1000,
        end1.saturating_sub(start1) / 1000
    );
    cpu0_result?;
    cpu1_result?;
    check(
        overlap_us > 0,
        "the two CPUs' command streams overlap in time",
    )?;
    check(all, "every concurrent command of both CPUs completed")?;
    check(
        irqs[irq::IRQ_CPU] > 0 && irqs.iter().sum::<u64>() == irqs[irq::IRQ_CPU],
        "device interrupts taken on CPU 0 only",
    )
}
