//! Finding virtio-mmio devices in a flattened device tree (the Linux kernel's `virtio,mmio`
//! device-tree binding; Devicetree Specification v0.4 for the format), parsed with the [`fdt`]
//! crate.
//!
//! [`DeviceTree::virtio_mmio_nodes`] lists every enabled `compatible = "virtio,mmio"` node with its
//! register window and its interrupt; it only reads the blob. [`DeviceTree::virtio_mmio_devices`]
//! additionally reads each window's identification registers (magic, version, device id) through
//! a [`Hal`]'s `mmio_phys_to_virt` and skips empty slots (device id 0): QEMU `virt` declares 32
//! virtio-mmio windows whether or not a device is plugged into them.
//!
//! Interrupts are decoded for the Arm GIC binding (`#interrupt-cells = <3>`: type, number, flags;
//! type 0 is an SPI, whose GIC INTID is number + 32, type 1 a PPI, INTID number + 16). A node whose
//! interrupt controller uses another cell count reports no interrupt.

use core::ptr::NonNull;

use fdt::node::FdtNode;
use fdt::Fdt;
use virtio_drivers::{Hal, PhysAddr};

use crate::mmio::{MmioHeader, MmioTransport, CONFIG_SPACE_OFFSET};
use crate::{Error, Result};

/// The compatible string of virtio-mmio nodes.
pub const VIRTIO_MMIO_COMPATIBLE: &str = "virtio,mmio";

/// A parsed flattened device tree (DTB).
#[derive(Debug)]
pub struct DeviceTree<'a> {
    fdt: Fdt<'a>,
}

fn fdt_error(e: fdt::FdtError) -> Error {
    Error::DeviceTree(match e {
        fdt::FdtError::BadMagic => "bad magic (not a flattened device tree)",
        fdt::FdtError::BadPtr => "null pointer",
        fdt::FdtError::BufferTooSmall => "blob shorter than its header's total size",
    })
}

impl<'a> DeviceTree<'a> {
    /// Parse the device tree blob `blob` (no alignment requirement). The blob is trusted input
    /// (it comes from firmware or the hypervisor): the header is checked, but the [`fdt`] parser
    /// may panic on some malformed properties (e.g. a `#address-cells` shorter than 4 bytes).
    pub fn new(blob: &'a [u8]) -> Result<Self> {
        Ok(DeviceTree {
            fdt: Fdt::new(blob).map_err(fdt_error)?,
        })
    }

    /// Parse the device tree blob at `ptr`, e.g. the address firmware or QEMU hands a bare-metal
    /// kernel. Its length is read from the blob's header.
    ///
    /// # Safety
    /// `ptr` must point to readable memory holding a device tree blob (at least its 40-byte
    /// header, then as many bytes as the header's `totalsize` says) that stays valid and unchanged
    /// for `'a`.
    pub unsafe fn from_ptr(ptr: *const u8) -> Result<Self> {
        // SAFETY: forwarded from the caller's contract.
        let fdt = unsafe { Fdt::from_ptr(ptr) }.map_err(fdt_error)?;
        Ok(DeviceTree { fdt })
    }

    /// The blob's total size in bytes.
    pub fn total_size(&self) -> usize {
        self.fdt.total_size()
    }

    /// Every enabled `compatible = "virtio,mmio"` node, in blob order. Reads only the blob.
    pub fn virtio_mmio_nodes(&self) -> impl Iterator<Item = VirtioMmioNode> + '_ {
        self.fdt
            .all_nodes()
            .filter(|n| {
                n.compatible()
                    .is_some_and(|c| c.all().any(|s| s == VIRTIO_MMIO_COMPATIBLE))
            })
            .filter(|n| enabled(*n))
            .filter_map(|n| {
                let node = self.node(n);
                if node.is_none() {
                    log::warn!("virtio,mmio node {} has no usable reg property", n.name);
                }
                node
            })
    }

    /// Every non-empty virtio-mmio slot: [`DeviceTree::virtio_mmio_nodes`], each with its header
    /// read through `H::mmio_phys_to_virt`. Empty slots (device id 0) are skipped; a window whose
    /// header cannot be read (wrong magic, misaligned) yields an error. Legacy (version 1) devices
    /// are listed (see [`VirtioMmioDevice::header`]); [`VirtioMmioDevice::transport`] refuses them.
    ///
    /// # Safety
    /// Every virtio-mmio window the device tree declares must be mapped by `H::mmio_phys_to_virt`
    /// as device memory, and no other code may be programming those devices concurrently.
    pub unsafe fn virtio_mmio_devices<H: Hal>(
        &self,
    ) -> impl Iterator<Item = Result<VirtioMmioDevice>> + '_ {
        self.virtio_mmio_nodes().filter_map(|node| {
            // SAFETY: the node is a window of this device tree, mapped by `H` (caller's contract).
            match unsafe { node.probe::<H>() } {
                Ok(Some(dev)) => Some(Ok(dev)),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            }
        })
    }

    /// Every `reg` entry of every enabled node whose `compatible` list contains `compatible`
    /// (e.g. `"arm,pl011"`, or `"arm,cortex-a15-gic"` for the GICv2 distributor and CPU
    /// interface), in blob order. Reads only the blob; entries whose address or size is not one or
    /// two cells wide are skipped. For building a page table of the devices a guest uses.
    pub fn compatible_regions<'s>(
        &'s self,
        compatible: &'s str,
    ) -> impl Iterator<Item = Region> + 's {
        self.fdt
            .all_nodes()
            .filter(move |n| {
                n.compatible()
                    .is_some_and(|c| c.all().any(|s| s == compatible))
            })
            .filter(|n| enabled(*n))
            .flat_map(regions)
    }

    /// Every `reg` entry of the `device_type = "memory"` nodes: the guest's RAM (Devicetree
    /// Specification v0.4 §3.4).
    pub fn memory_regions(&self) -> impl Iterator<Item = Region> + '_ {
        self.fdt
            .all_nodes()
            .filter(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("memory"))
            .filter(|n| enabled(*n))
            .flat_map(regions)
    }

    /// The PSCI conduit the device tree names: the `method` property (`"hvc"` or `"smc"`) of the
    /// `arm,psci`, `arm,psci-0.2` or `arm,psci-1.0` node (the Linux kernel's PSCI binding).
    pub fn psci_method(&self) -> Option<&'a str> {
        self.fdt
            .all_nodes()
            .find(|n| {
                n.compatible().is_some_and(|c| {
                    c.all()
                        .any(|s| matches!(s, "arm,psci" | "arm,psci-0.2" | "arm,psci-1.0"))
                })
            })
            .and_then(|n| n.property("method"))
            .and_then(|p| p.as_str())
    }

    fn node(&self, n: FdtNode<'_, 'a>) -> Option<VirtioMmioNode> {
        let reg = n.raw_reg()?.next()?;
        let base = be_cells(reg.address)?;
        let size = be_cells(reg.size)?;
        Some(VirtioMmioNode {
            base,
            size,
            interrupt: self.interrupt(n),
        })
    }

    /// The node's first interrupt, if its interrupt controller uses the 3-cell GIC binding.
    fn interrupt(&self, n: FdtNode<'_, 'a>) -> Option<Interrupt> {
        let cells = n.property("interrupts")?.value;
        // The interrupt parent: the node's own `interrupt-parent`, else the root's (the nodes of
        // QEMU `virt` and most platforms sit directly under the root, which names the GIC).
        let phandle = n
            .property("interrupt-parent")
            .or_else(|| self.fdt.root().property("interrupt-parent"))
            .and_then(|p| p.as_usize())?;
        let parent = self.fdt.find_phandle(u32::try_from(phandle).ok()?)?;
        if parent.interrupt_cells() != Some(3) || cells.len() < 12 {
            log::debug!(
                "virtio,mmio node {}: interrupt controller {} is not a 3-cell GIC",
                n.name,
                parent.name
            );
            return None;
        }
        let cell =
            |i: usize| u32::from_be_bytes([cells[i], cells[i + 1], cells[i + 2], cells[i + 3]]);
        Some(Interrupt::from_gic_cells([cell(0), cell(4), cell(8)]))
    }
}

/// The Devicetree Specification v0.4 §2.3.4: `status` "okay" (or absent) means enabled.
fn enabled(n: FdtNode<'_, '_>) -> bool {
    n.property("status")
        .and_then(|p| p.as_str())
        .is_none_or(|s| s == "okay" || s == "ok")
}

/// Every `reg` entry of `n` whose cells decode.
fn regions<'a>(n: FdtNode<'_, 'a>) -> impl Iterator<Item = Region> + 'a {
    n.raw_reg().into_iter().flatten().filter_map(|r| {
        Some(Region {
            base: be_cells(r.address)?,
            size: be_cells(r.size)?,
        })
    })
}

/// One `reg` entry: a physical address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Physical start address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A big-endian number of one or two cells.
fn be_cells(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        4 => Some(u64::from(u32::from_be_bytes(bytes.try_into().ok()?))),
        8 => Some(u64::from_be_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

/// What the GIC binding's first interrupt cell says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptKind {
    /// Shared peripheral interrupt (cell value 0).
    Spi,
    /// Private peripheral interrupt (cell value 1).
    Ppi,
    /// Another type (e.g. GICv3 extended ranges); the raw cell value.
    Other(u32),
}

/// One interrupt in the 3-cell Arm GIC device-tree binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt {
    /// SPI, PPI or other.
    pub kind: InterruptKind,
    /// The interrupt number within its kind (the second cell).
    pub number: u32,
    /// Trigger flags (the third cell; 1 edge rising, 4 level high...).
    pub flags: u32,
}

impl Interrupt {
    /// Decode the three cells `<type number flags>`.
    pub fn from_gic_cells(cells: [u32; 3]) -> Self {
        Interrupt {
            kind: match cells[0] {
                0 => InterruptKind::Spi,
                1 => InterruptKind::Ppi,
                other => InterruptKind::Other(other),
            },
            number: cells[1],
            flags: cells[2],
        }
    }

    /// The GIC interrupt id (INTID): SPI number + 32, PPI number + 16; `None` for other kinds or
    /// out-of-range numbers.
    pub fn gic_intid(&self) -> Option<u32> {
        match self.kind {
            InterruptKind::Spi if self.number < 988 => Some(self.number + 32),
            InterruptKind::Ppi if self.number < 16 => Some(self.number + 16),
            _ => None,
        }
    }
}

/// A `virtio,mmio` device-tree node: where the registers are and which interrupt it raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioNode {
    /// Physical address of the register window (first `reg` entry).
    pub base: PhysAddr,
    /// Size of the window in bytes: 0x100 of registers, then the config space.
    pub size: u64,
    /// The first interrupt, when its controller uses the 3-cell GIC binding.
    pub interrupt: Option<Interrupt>,
}

impl VirtioMmioNode {
    fn map<H: Hal>(&self) -> Result<(NonNull<u8>, usize)> {
        let size = usize::try_from(self.size).map_err(|_| Error::RegionTooSmall(usize::MAX))?;
        if size < CONFIG_SPACE_OFFSET {
            return Err(Error::RegionTooSmall(size));
        }
        // SAFETY: the caller of `probe`/`transport` vouched that `H` maps this window.
        let vaddr = unsafe { H::mmio_phys_to_virt(self.base, size) };
        Ok((vaddr, size))
    }

    /// Read the window's header through `H::mmio_phys_to_virt`: `Ok(None)` for an empty slot
    /// (device id 0), else the device.
    ///
    /// # Safety
    /// `H::mmio_phys_to_virt` must map this window as device memory, and no other code may be
    /// programming the device concurrently.
    pub unsafe fn probe<H: Hal>(&self) -> Result<Option<VirtioMmioDevice>> {
        let (vaddr, _) = self.map::<H>()?;
        // SAFETY: a mapped register window of at least 0x100 bytes (checked by `map`; caller's
        // contract for the mapping).
        let header = unsafe { MmioHeader::probe(vaddr) }?;
        Ok((header.device_id != 0).then_some(VirtioMmioDevice {
            node: *self,
            header,
        }))
    }
}

/// A non-empty virtio-mmio slot found by [`DeviceTree::virtio_mmio_devices`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioDevice {
    /// The device-tree node.
    pub node: VirtioMmioNode,
    /// The header read from the registers.
    pub header: MmioHeader,
}

impl VirtioMmioDevice {
    /// The virtio device id (32 for SCMI).
    pub fn device_id(&self) -> u32 {
        self.header.device_id
    }

    /// The GIC INTID of the device's interrupt, if the device tree gives one.
    pub fn gic_intid(&self) -> Option<u32> {
        self.node.interrupt.and_then(|i| i.gic_intid())
    }

    /// A [`MmioTransport`] for the device (refused for legacy devices).
    ///
    /// # Safety
    /// `H::mmio_phys_to_virt` must map the window as device memory for `'b`, and nothing else may
    /// access the device while the transport exists (in particular, no second transport for it).
    pub unsafe fn transport<'b, H: Hal>(&self) -> Result<MmioTransport<'b>> {
        self.header.check_modern()?;
        let (vaddr, size) = self.node.map::<H>()?;
        // SAFETY: the mapped window of `size` bytes, valid and exclusively ours for `'b`
        // (caller's contract).
        unsafe { MmioTransport::new(vaddr, size) }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::boxed::Box;
    use std::vec::Vec;

    use vm_fdt::FdtWriter;

    use super::*;
    use crate::hal::IdentityHal;
    use crate::mmio::MAGIC;

    #[repr(C, align(4096))]
    struct Window([u32; 0x200 / 4]);

    fn window(version: u32, device_id: u32) -> Box<Window> {
        let mut w = Box::new(Window([0; 0x200 / 4]));
        w.0[0] = MAGIC;
        w.0[1] = version;
        w.0[2] = device_id;
        w.0[3] = 0x554d_4551;
        w
    }

    /// A blob shaped like QEMU `virt`'s: the GIC (phandle 1) named by the root's
    /// `interrupt-parent`, and virtio-mmio nodes at `bases` with SPIs 16 + i.
    fn blob(bases: &[u64], extra: impl FnOnce(&mut FdtWriter)) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("interrupt-parent", 1).unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.property_string("compatible", "linux,dummy-virt").unwrap();
        let gic = w.begin_node("intc@8000000").unwrap();
        w.property_u32("phandle", 1).unwrap();
        w.property_string("compatible", "arm,cortex-a15-gic")
            .unwrap();
        w.property_u32("#interrupt-cells", 3).unwrap();
        w.property_null("interrupt-controller").unwrap();
        w.property_array_u64("reg", &[0x800_0000, 0x1_0000, 0x801_0000, 0x1_0000])
            .unwrap();
        w.end_node(gic).unwrap();
        for (i, base) in bases.iter().enumerate() {
            let n = w.begin_node(&std::format!("virtio_mmio@{base:x}")).unwrap();
            w.property_null("dma-coherent").unwrap();
            w.property_array_u32("interrupts", &[0, 16 + i as u32, 1])
                .unwrap();
            w.property_array_u64("reg", &[*base, 0x200]).unwrap();
            w.property_string("compatible", "virtio,mmio").unwrap();
            w.end_node(n).unwrap();
        }
        extra(&mut w);
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn nodes_give_window_and_spi() {
        let dtb = blob(&[0xa00_0000, 0xa00_0200], |w| {
            let n = w.begin_node("virtio_mmio@a000400").unwrap();
            w.property_string("compatible", "virtio,mmio").unwrap();
            w.property_array_u64("reg", &[0xa00_0400, 0x200]).unwrap();
            w.property_string("status", "disabled").unwrap();
            w.end_node(n).unwrap();
            let n = w.begin_node("pl011@9000000").unwrap();
            w.property_string("compatible", "arm,pl011").unwrap();
            w.property_array_u64("reg", &[0x900_0000, 0x1000]).unwrap();
            w.end_node(n).unwrap();
        });
        let dt = DeviceTree::new(&dtb).unwrap();
        assert_eq!(dt.total_size(), dtb.len());
        let nodes: Vec<_> = dt.virtio_mmio_nodes().collect();
        assert_eq!(nodes.len(), 2, "the disabled node and the UART are skipped");
        assert_eq!(nodes[0].base, 0xa00_0000);
        assert_eq!(nodes[0].size, 0x200);
        let irq = nodes[1].interrupt.unwrap();
        assert_eq!(irq.kind, InterruptKind::Spi);
        assert_eq!(irq.number, 17);
        assert_eq!(irq.flags, 1);
        assert_eq!(irq.gic_intid(), Some(49));
    }

    #[test]
    fn regions_memory_and_psci() {
        let dtb = blob(&[0xa00_0000], |w| {
            let n = w.begin_node("memory@40000000").unwrap();
            w.property_string("device_type", "memory").unwrap();
            w.property_array_u64("reg", &[0x4000_0000, 0x800_0000])
                .unwrap();
            w.end_node(n).unwrap();
            let n = w.begin_node("psci").unwrap();
            w.property_string_list(
                "compatible",
                std::vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()],
            )
            .unwrap();
            w.property_string("method", "hvc").unwrap();
            w.end_node(n).unwrap();
        });
        let dt = DeviceTree::new(&dtb).unwrap();
        let ram: Vec<_> = dt.memory_regions().collect();
        assert_eq!(
            ram,
            [Region {
                base: 0x4000_0000,
                size: 0x800_0000
            }]
        );
        let gic: Vec<_> = dt.compatible_regions("arm,cortex-a15-gic").collect();
        assert_eq!(
            gic,
            [
                Region {
                    base: 0x800_0000,
                    size: 0x1_0000
                },
                Region {
                    base: 0x801_0000,
                    size: 0x1_0000
                }
            ]
        );
        assert_eq!(dt.compatible_regions("arm,pl011").count(), 0);
        assert_eq!(dt.psci_method(), Some("hvc"));
        assert_eq!(
            DeviceTree::new(&blob(&[], |_| {})).unwrap().psci_method(),
            None
        );
    }

    #[test]
    fn interrupt_cells_decode() {
        let ppi = Interrupt::from_gic_cells([1, 14, 4]);
        assert_eq!(ppi.kind, InterruptKind::Ppi);
        assert_eq!(ppi.gic_intid(), Some(30));
        assert_eq!(Interrupt::from_gic_cells([2, 3, 4]).gic_intid(), None);
        assert_eq!(Interrupt::from_gic_cells([0, 1000, 4]).gic_intid(), None);
    }

    #[test]
    fn devices_read_the_header_and_skip_empty_slots() {
        let scmi = window(2, 32);
        let empty = window(2, 0);
        let legacy = window(1, 2);
        let mut bad = window(2, 32);
        bad.0[0] = 0xdead;
        let addr = |w: &Window| w as *const Window as u64;
        let dtb = blob(
            &[addr(&scmi), addr(&empty), addr(&legacy), addr(&bad)],
            |_| {},
        );
        let dt = DeviceTree::new(&dtb).unwrap();
        // SAFETY: every window in the blob is one of the boxes above, alive for the whole test;
        // the identity `Hal` maps host addresses to themselves.
        let found: Vec<_> = unsafe { dt.virtio_mmio_devices::<IdentityHal>() }.collect();
        assert_eq!(found.len(), 3, "the empty slot is skipped");
        let dev = found[0].unwrap();
        assert_eq!(dev.device_id(), 32);
        assert_eq!(dev.header.version, 2);
        assert_eq!(dev.node.base, addr(&scmi));
        assert_eq!(dev.gic_intid(), Some(48));
        let legacy_dev = found[1].unwrap();
        assert_eq!(legacy_dev.header.version, 1);
        assert_eq!(found[2], Err(Error::BadMagic(0xdead)));
        // SAFETY: as above; one transport at a time.
        unsafe {
            let t = dev.transport::<IdentityHal>().unwrap();
            assert_eq!(t.device_id(), 32);
            assert_eq!(t.config_space_size(), 0x100);
            assert_eq!(
                legacy_dev.transport::<IdentityHal>().unwrap_err(),
                Error::LegacyDevice
            );
        }
    }

    #[test]
    fn bad_blobs_are_errors() {
        assert!(matches!(
            DeviceTree::new(&[0u8; 64]),
            Err(Error::DeviceTree(_))
        ));
        let dtb = blob(&[0xa00_0000], |_| {});
        assert!(matches!(
            DeviceTree::new(&dtb[..dtb.len() - 8]),
            Err(Error::DeviceTree(_))
        ));
        // SAFETY: `dtb` is a complete blob that outlives the parsed tree.
        let dt = unsafe { DeviceTree::from_ptr(dtb.as_ptr()) }.unwrap();
        assert_eq!(dt.virtio_mmio_nodes().count(), 1);
    }
}
