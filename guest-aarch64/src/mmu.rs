//! The MMU: one identity map for every CPU, built with the `aarch64-paging` crate from the device
//! tree, and the register values that turn it on (`guest_mmu_on` in `boot.rs`).
//!
//! Stage 1 EL1&0 translation, 4 KiB granule, 39-bit VA (`TCR_EL1.T0SZ` = 25, level 1 root),
//! TTBR0 only (`EPD1`). Memory types (Arm ARM, "Memory types and attributes", MAIR_EL1):
//! - attribute 0, Device-nGnRE: the PL011, the GIC and the virtio-mmio windows (execute-never);
//! - attribute 1, Normal inner/outer write-back read/write-allocate, inner shareable: RAM (the
//!   device tree's `memory` nodes: image, stack, heap, DMA buffers, the device tree itself).
//!
//! Translation table walks are inner-shareable write-back too (`TCR_EL1` IRGN0/ORGN0/SH0), so
//! both CPUs see the same tables through their caches.
//!
//! DMA coherency: the virtio rings and buffers live in Normal write-back RAM shared with the
//! device with no cache maintenance, which is correct only where the device's accesses are
//! coherent with the CPUs' caches: QEMU (TCG models no caches; vhost-user daemons access guest RAM
//! through the host's coherent caches) and hardware with an I/O-coherent interconnect (the
//! device tree's `dma-coherent`, which QEMU `virt` sets on its virtio-mmio nodes). See README.md.

use alloc::boxed::Box;

use aarch64_paging::descriptor::El1Attributes as Attr;
use aarch64_paging::idmap::IdMap;
use aarch64_paging::mair::{Mair, MairAttribute, NormalMemory};
use aarch64_paging::paging::{El1And0, MemoryRegion};
use aarch64_paging::MapError;
use fwipc_virtio::discovery::DeviceTree;

use crate::console::VIRT_PL011_BASE;
use crate::irq::{VIRT_GICC_BASE, VIRT_GICD_BASE};

const PAGE: u64 = 4096;

const WBRWA: NormalMemory = NormalMemory::WriteBackNonTransientReadWriteAllocate;
/// MAIR_EL1: index 0 Device-nGnRE, index 1 Normal write-back.
const MAIR: Mair = Mair::EMPTY
    .with_attribute(0, MairAttribute::DEVICE_NGNRE)
    .with_attribute(1, MairAttribute::normal(WBRWA, WBRWA));

/// Device registers: attribute 0, never executable.
const DEVICE: Attr = Attr::ATTRIBUTE_INDEX_0
    .union(Attr::VALID)
    .union(Attr::ACCESSED)
    .union(Attr::PXN)
    .union(Attr::UXN);
/// RAM: attribute 1, inner shareable, executable at EL1 only (the image is in RAM).
const NORMAL: Attr = Attr::ATTRIBUTE_INDEX_1
    .union(Attr::INNER_SHAREABLE)
    .union(Attr::VALID)
    .union(Attr::ACCESSED)
    .union(Attr::UXN);

/// TCR_EL1 (Arm ARM, "TCR_EL1, Translation Control Register (EL1)"): T0SZ = 25 (39-bit VA, a
/// level 1 root for the 4 KiB granule), IRGN0 = ORGN0 = 0b01 (walks write-back write-allocate),
/// SH0 = 0b11 (inner shareable), TG0 = 0b00 (4 KiB), EPD1 = 1 (no TTBR1 walks), IPS = 0b010
/// (40-bit physical addresses; QEMU `virt`'s low memory map is far below that).
const TCR: u64 = 25 | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 23) | (0b010 << 32);
/// The root table's level for a 39-bit VA with 4 KiB pages.
const ROOT_LEVEL: usize = 1;

/// The values `guest_mmu_on` loads (layout shared with the assembly in `boot.rs`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MmuRegs {
    /// MAIR_EL1.
    pub mair: u64,
    /// TCR_EL1.
    pub tcr: u64,
    /// TTBR0_EL1: the root table (ASID 0).
    pub ttbr0: u64,
}

extern "C" {
    /// `boot.rs`: program MAIR/TCR/TTBR0 from `regs`, invalidate this CPU's TLB and I-cache, set
    /// SCTLR_EL1.{M, C, I}. Touches no memory but `*regs` (no stack).
    fn guest_mmu_on(regs: *const MmuRegs);
}

/// What [`init`] mapped, for the report.
#[derive(Debug)]
pub struct Mapped {
    /// The values every CPU loads.
    pub regs: MmuRegs,
    /// Bytes of RAM mapped Normal.
    pub ram: u64,
    /// Device windows mapped (each rounded out to pages).
    pub devices: usize,
}

/// Why the page tables could not be built.
#[derive(Debug)]
pub enum MmuError {
    /// `aarch64-paging` refused a mapping.
    Map(MapError),
    /// The device tree's `memory` nodes do not cover the running image.
    ImageNotInRam,
}

impl core::fmt::Display for MmuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MmuError::Map(e) => write!(f, "{e}"),
            MmuError::ImageNotInRam => {
                f.write_str("the device tree's memory does not hold the image")
            }
        }
    }
}

fn region(base: u64, size: u64) -> MemoryRegion {
    let start = base & !(PAGE - 1);
    let end = (base + size).div_ceil(PAGE) * PAGE;
    MemoryRegion::new(start as usize, end as usize)
}

/// Build the identity map from the device tree (RAM from the `memory` nodes; the PL011, the GIC
/// and every virtio-mmio window as devices, plus QEMU `virt`'s fixed console and GIC addresses the
/// guest's drivers use) and turn the MMU and caches on for this CPU. The tables are leaked: every
/// CPU uses them until power-off.
pub fn init(dt: &DeviceTree<'_>) -> Result<Mapped, MmuError> {
    let mut map = IdMap::with_asid(0, ROOT_LEVEL, El1And0);
    let mut ram = 0;
    let image = init as *const () as usize as u64;
    let mut image_mapped = false;
    for r in dt.memory_regions() {
        map.map_range(&region(r.base, r.size), NORMAL)
            .map_err(MmuError::Map)?;
        ram += r.size;
        image_mapped |= (r.base..r.base + r.size).contains(&image);
    }
    // Turning translation on without the running code mapped would fault at the next fetch.
    if !image_mapped {
        return Err(MmuError::ImageNotInRam);
    }
    let mut devices = 0;
    let fixed = [
        (VIRT_PL011_BASE as u64, PAGE),
        (VIRT_GICD_BASE as u64, 0x1_0000),
        (VIRT_GICC_BASE as u64, 0x1_0000),
    ];
    let from_dt = dt
        .compatible_regions("arm,pl011")
        .chain(dt.compatible_regions("arm,cortex-a15-gic"))
        .map(|r| (r.base, r.size))
        .chain(dt.virtio_mmio_nodes().map(|n| (n.base, n.size)));
    // Mapping a window twice with the same attributes is allowed (no break-before-make needed).
    for (base, size) in fixed.into_iter().chain(from_dt) {
        map.map_range(&region(base, size), DEVICE)
            .map_err(MmuError::Map)?;
        devices += 1;
    }
    let map = Box::leak(Box::new(map));
    let regs = MmuRegs {
        mair: MAIR.0,
        tcr: TCR,
        ttbr0: map.root_address().0 as u64,
    };
    enable(&regs);
    // The crate's break-before-make checks now treat the tables as live.
    map.mark_active();
    Ok(Mapped { regs, ram, devices })
}

/// Turn the MMU and caches on for the calling CPU with the tables `regs` names.
pub fn enable(regs: &MmuRegs) {
    // SAFETY: `regs` describes the identity map built by `init`, which maps everything the guest
    // touches (its image, stack, heap and device tree in RAM, and its devices) at the same
    // addresses, so execution and every live pointer carry on unchanged once translation starts.
    unsafe { guest_mmu_on(regs) }
}

/// SCTLR_EL1 of the calling CPU.
pub fn sctlr() -> u64 {
    let v: u64;
    // SAFETY: reading SCTLR_EL1 at EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, sctlr_el1", out(reg) v, options(nomem, nostack)) };
    v
}

/// "M C I" for the MMU, data-cache and instruction-cache enable bits of an SCTLR_EL1 value.
pub fn describe(sctlr: u64) -> &'static str {
    match (
        sctlr & 1 != 0,
        sctlr & (1 << 2) != 0,
        sctlr & (1 << 12) != 0,
    ) {
        (true, true, true) => "MMU, D-cache, I-cache on",
        (true, _, _) => "MMU on, caches NOT all on",
        _ => "MMU OFF",
    }
}
