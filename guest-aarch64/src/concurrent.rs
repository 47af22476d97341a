//! The concurrent stage: both CPUs send SCMI commands at the same time to every device, on the
//! same agent instances (shared through `Arc`; the agents are `Sync`), while the device interrupts,
//! routed to CPU 0, complete the replies through `ScmiVirtio::complete`.
//!
//! Each CPU sends [`COMMANDS`] commands to every device, interleaving devices and rotating through
//! three commands, each reply checked: DISCOVER_VENDOR is "rust-vmm"; SENSOR_DESCRIPTION_GET names
//! the sensor this device's earlier stages found (a reply from the other device's daemon would
//! show); SENSOR_READING_GET gives the fake sensor's axes x, x + 100, x + 200.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use core::time::Duration;

use fwipc_scmi_virtio::protocol::sensor::SensorValue;
use fwipc_virtio::aarch64::GenericTimer;

use crate::session::{Agent, Live};
use crate::{check, gic, join, smp, Ctx, Res};

/// Commands each CPU sends to each device.
pub const COMMANDS: u32 = 100;

/// Every device's agent and the sensor name its replies must carry.
type Targets = Vec<(Arc<Agent>, String)>;

/// One CPU's share; `done[d]` counts the commands completed on device `d`.
fn worker(cpu: usize, targets: &Targets, done: &[AtomicU32]) -> Res {
    let mut values = [SensorValue::default(); 3];
    for k in 0..COMMANDS as usize {
        for (d, (agent, sensor)) in targets.iter().enumerate() {
            // Offset by CPU and device, so different commands are in flight at the same time.
            match (k + cpu + d) % 3 {
                0 => {
                    let v = agent.base().vendor().ctx("concurrent DISCOVER_VENDOR")?;
                    check(v.as_str() == Some("rust-vmm"), "concurrent vendor is rust-vmm")?;
                }
                1 => {
                    let descs = agent
                        .sensor()
                        .descriptions_vec()
                        .ctx("concurrent SENSOR_DESCRIPTION_GET")?;
                    let own = descs.first().is_some_and(|s| s.name.as_str() == Some(sensor));
                    check(own, "concurrent sensor name is the device's own")?;
                }
                _ => {
                    let n = agent
                        .sensor()
                        .reading_axes(0, &mut values)
                        .ctx("concurrent SENSOR_READING_GET")?;
                    let [x, y, z] = values.map(|v| v.value);
                    check(
                        n == 3 && y == x + 100 && z == x + 200,
                        "concurrent reading has axes x, x+100, x+200",
                    )?;
                }
            }
            // Relaxed: read after the CPU's result is published (Release/Acquire on its slot).
            done[d].fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// A CPU's share with the times (ns) it started and ended at.
type Timed = (u64, u64, Res);

/// Start CPU 1 on its share, run CPU 0's, wait for CPU 1; print per-CPU and per-device counts;
/// fail unless every command of both CPUs completed with a correct reply, the two streams
/// overlapped in time and the device interrupts were taken on CPU 0 only.
pub fn run(live: &[Live], psci: &'static str, timer: GenericTimer) -> Res {
    let targets: Arc<Targets> = Arc::new(
        live.iter()
            .map(|l| (l.agent.clone(), l.summary.sensors.first().cloned().unwrap_or_default()))
            .collect(),
    );
    let counts: Arc<[Vec<AtomicU32>; 2]> =
        Arc::new([0, 1].map(|_| targets.iter().map(|_| AtomicU32::new(0)).collect()));
    let cpu1_slot: Arc<spin::Mutex<Option<Timed>>> = Arc::default();
    let (irqs_before, _) = gic::counts();
    let share = move |cpu: usize, targets: &Targets, counts: &[Vec<AtomicU32>; 2]| -> Timed {
        let start = timer.now_ns();
        let r = worker(cpu, targets, &counts[cpu]);
        (start, timer.now_ns(), r)
    };
    // CPU 0 starts its share only once CPU 1 is running: bringing a CPU online under emulation
    // can take longer than CPU 0's whole share, and the streams must overlap.
    let cpu1_running = Arc::new(AtomicBool::new(false));
    let (t, c, slot, running) =
        (targets.clone(), counts.clone(), cpu1_slot.clone(), cpu1_running.clone());
    smp::start_cpu1(psci, move || {
        // Release/Acquire: only a start signal; the shares publish their results on their own.
        running.store(true, Ordering::Release);
        *slot.lock() = Some(share(1, &t, &c))
    })?;
    let online_by = timer.deadline(Duration::from_secs(10));
    while !cpu1_running.load(Ordering::Acquire) {
        if timer.expired(online_by) {
            return Err("CPU 1 did not start its share within 10 s".into());
        }
        core::hint::spin_loop();
    }
    let (start0, end0, cpu0) = share(0, &targets, &counts);
    // CPU 1 gets as long again as CPU 0 took, plus a margin for a loaded host.
    let deadline = timer.deadline(Duration::from_nanos(end0 - start0) + Duration::from_secs(10));
    let (start1, end1, cpu1) = loop {
        // The spin lock's Acquire makes CPU 1's counts and result visible with the slot.
        if let Some(done) = cpu1_slot.lock().take() {
            break done;
        }
        if timer.expired(deadline) {
            break (0, 0, Err("CPU 1 did not finish its share".into()));
        }
        gic::idle();
    };
    let mut all = true;
    for (cpu, per_dev) in counts.iter().enumerate() {
        let n: Vec<u32> = per_dev.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        all &= n.iter().all(|&n| n == COMMANDS);
        let list = join(n.iter().enumerate().map(|(d, n)| format!("device {d}: {n}")), ", ");
        println!("cpu{cpu}: {} concurrent commands completed ({list})", n.iter().sum::<u32>());
    }
    let (irqs_after, unclaimed) = gic::counts();
    let irqs = [0, 1].map(|c| irqs_after[c] - irqs_before[c]);
    let devices = targets.len();
    println!(
        "concurrent: 2 CPUs x {devices} devices x {COMMANDS} commands in {} ms; device interrupts handled on cpu0: {}, cpu1: {} ({unclaimed} spurious)",
        (end0.max(end1) - start0) / 1_000_000,
        irqs[0],
        irqs[1]
    );
    let overlap_us = end0.min(end1).saturating_sub(start0.max(start1)) / 1000;
    let (us0, us1) = ((end0 - start0) / 1000, end1.saturating_sub(start1) / 1000);
    println!(
        "concurrent: both CPUs sending at once for {overlap_us} us (cpu0 {us0} us, cpu1 {us1} us)"
    );
    cpu0?;
    cpu1?;
    check(overlap_us > 0, "the two CPUs' command streams overlap in time")?;
    check(all, "every concurrent command of both CPUs completed")?;
    check(irqs[0] > 0 && irqs[1] == 0, "device interrupts taken on CPU 0 only")
}
