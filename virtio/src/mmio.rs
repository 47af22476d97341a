//! A modern (version 2) virtio-mmio [`Transport`] for any device id.
//!
//! virtio-drivers 0.13's own `MmioTransport` converts the device id into its `DeviceType` enum,
//! which has no variant for ids it does not drive, so it refuses e.g. SCMI (device id 32).
//! [`MmioTransport`] keeps the raw id ([`MmioTransport::device_id`]) and implements
//! `virtio_drivers::transport::Transport` on the register layout of Virtio 1.2 §4.2.2.
//!
//! Register access goes through [`safe_mmio`] (the crate virtio-drivers uses for its own
//! transports): every register is a typed field of [`MmioRegisters`] accessed with volatile MMIO
//! operations (on aarch64 with plain `ldr`/`str` instructions, which a hypervisor can emulate),
//! and read-with-side-effects / write-only registers are distinguished in the types.
//!
//! Legacy (version 1) devices are refused with [`Error::LegacyDevice`]: their page-based queue
//! layout (Virtio 1.2 §4.2.4) is not implemented.

use core::mem::{align_of, size_of};
use core::ops::Deref;
use core::ptr::NonNull;

use safe_mmio::fields::{ReadPure, ReadPureWrite, WriteOnly};
use safe_mmio::{field, field_shared, SharedMmioPointer, UniqueMmioPointer};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::PhysAddr;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{Error, Result};

/// `"virt"` read as a little-endian `u32`: the first register of every virtio-mmio block.
pub const MAGIC: u32 = 0x7472_6976;
/// The header version of modern devices (Virtio 1.2 §4.2.2).
pub const MODERN_VERSION: u32 = 2;
/// The header version of legacy devices (Virtio 1.2 §4.2.4), refused by [`MmioTransport`].
pub const LEGACY_VERSION: u32 = 1;
/// Offset of the device-specific configuration space.
pub const CONFIG_SPACE_OFFSET: usize = 0x100;
/// Virtio device id of SCMI (Virtio 1.2 §5.17).
pub const DEVICE_ID_SCMI: u32 = 32;

/// The modern virtio-mmio register block (Virtio 1.2 §4.2.2, table "MMIO Device Register
/// Layout"), 0x100 bytes; the device configuration space follows at [`CONFIG_SPACE_OFFSET`].
#[derive(Debug, FromBytes, Immutable, IntoBytes, KnownLayout)]
#[repr(C)]
pub struct MmioRegisters {
    magic: ReadPure<u32>,
    version: ReadPure<u32>,
    device_id: ReadPure<u32>,
    vendor_id: ReadPure<u32>,
    device_features: ReadPure<u32>,
    device_features_sel: WriteOnly<u32>,
    _reserved_18: [u32; 2],
    driver_features: WriteOnly<u32>,
    driver_features_sel: WriteOnly<u32>,
    _reserved_28: [u32; 2],
    queue_sel: WriteOnly<u32>,
    queue_num_max: ReadPure<u32>,
    queue_num: WriteOnly<u32>,
    _reserved_3c: [u32; 2],
    queue_ready: ReadPureWrite<u32>,
    _reserved_48: [u32; 2],
    queue_notify: WriteOnly<u32>,
    _reserved_54: [u32; 3],
    interrupt_status: ReadPure<u32>,
    interrupt_ack: WriteOnly<u32>,
    _reserved_68: [u32; 2],
    status: ReadPureWrite<DeviceStatus>,
    _reserved_74: [u32; 3],
    queue_desc_low: WriteOnly<u32>,
    queue_desc_high: WriteOnly<u32>,
    _reserved_88: [u32; 2],
    queue_driver_low: WriteOnly<u32>,
    queue_driver_high: WriteOnly<u32>,
    _reserved_98: [u32; 2],
    queue_device_low: WriteOnly<u32>,
    queue_device_high: WriteOnly<u32>,
    _reserved_a8: [u32; 21],
    config_generation: ReadPure<u32>,
}

const _: () = assert!(size_of::<MmioRegisters>() == CONFIG_SPACE_OFFSET);

/// The identification registers of a virtio-mmio block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioHeader {
    /// Header version: 2 modern, 1 legacy.
    pub version: u32,
    /// Virtio device id; 0 is an empty slot.
    pub device_id: u32,
    /// Vendor id (QEMU: `0x554d_4551`, "QEMU").
    pub vendor_id: u32,
}

impl MmioHeader {
    /// Read the magic, version, device id and vendor id registers (no side effects). Fails only
    /// on a wrong magic value.
    pub fn read(regs: SharedMmioPointer<'_, MmioRegisters>) -> Result<Self> {
        let magic = field_shared!(regs, magic).read();
        if magic != MAGIC {
            return Err(Error::BadMagic(magic));
        }
        Ok(MmioHeader {
            version: field_shared!(regs, version).read(),
            device_id: field_shared!(regs, device_id).read(),
            vendor_id: field_shared!(regs, vendor_id).read(),
        })
    }

    /// Read the header of the register block at `base` (see [`MmioHeader::read`]).
    ///
    /// # Safety
    /// `base` must be the address of a mapped virtio-mmio register block of at least 0x100
    /// bytes, accessible with device-memory semantics, which nothing else is programming
    /// concurrently in a way that would make reading the identification registers unsound.
    pub unsafe fn probe(base: NonNull<u8>) -> Result<Self> {
        if !base.cast::<u32>().is_aligned() {
            return Err(Error::Misaligned);
        }
        // SAFETY: aligned (checked above) and a mapped register block (caller's contract);
        // the pointer only lives for the reads below, which have no side effects (`ReadPure`).
        let regs = unsafe { UniqueMmioPointer::new(base.cast::<MmioRegisters>()) };
        Self::read(regs.into())
    }

    /// Whether this header can be driven by [`MmioTransport`]: version 2, device id not 0.
    pub fn check_modern(&self) -> Result<()> {
        match self.version {
            MODERN_VERSION if self.device_id == 0 => Err(Error::NoDevice),
            MODERN_VERSION => Ok(()),
            LEGACY_VERSION => Err(Error::LegacyDevice),
            v => Err(Error::UnsupportedVersion(v)),
        }
    }
}

/// Modern virtio-mmio transport that accepts any device id (in particular SCMI, 32).
#[derive(Debug)]
pub struct MmioTransport<'a> {
    regs: UniqueMmioPointer<'a, MmioRegisters>,
    config: UniqueMmioPointer<'a, [u8]>,
    header: MmioHeader,
}

// SAFETY: the `&self` methods only read registers without side effects (status, generation,
// config space), which is harmless from several CPUs at once; everything that selects a queue
// or writes a register takes `&mut self`. (virtio-drivers makes the same argument for its own
// `MmioTransport`.)
unsafe impl Sync for MmioTransport<'_> {}

impl<'a> MmioTransport<'a> {
    /// Check the header of the register block at `base` and take ownership of the device.
    ///
    /// `mmio_size` is the size of the whole region (the device tree's `reg` size, 0x200 on QEMU
    /// `virt`): the 0x100 bytes of registers, then the device configuration space.
    ///
    /// # Safety
    /// `base` must point to a virtio-mmio region of `mmio_size` bytes, mapped as device memory,
    /// valid for `'a`, and nothing else may access the device while the transport exists.
    pub unsafe fn new(base: NonNull<u8>, mmio_size: usize) -> Result<Self> {
        let config_size = mmio_size
            .checked_sub(CONFIG_SPACE_OFFSET)
            .ok_or(Error::RegionTooSmall(mmio_size))?;
        if !base.cast::<u32>().is_aligned() {
            return Err(Error::Misaligned);
        }
        let config = NonNull::slice_from_raw_parts(
            // SAFETY: `CONFIG_SPACE_OFFSET <= mmio_size` (checked above), so the offset pointer
            // stays inside the region the caller vouched for.
            unsafe { base.byte_add(CONFIG_SPACE_OFFSET) },
            config_size,
        );
        // SAFETY: the config space is the tail of the caller's region, valid for `'a` and not
        // aliased (caller's contract); bytes have no alignment requirement.
        let config = unsafe { UniqueMmioPointer::new(config) };
        // SAFETY: the register block is the aligned (checked) head of the caller's region, valid
        // for `'a`, and only this transport accesses it.
        let regs = unsafe { UniqueMmioPointer::new(base.cast::<MmioRegisters>()) };
        Self::from_unique(regs, config)
    }

    /// Like [`MmioTransport::new`], from pointers the caller already owns (safe: the pointers
    /// carry the validity guarantees).
    pub fn from_unique(
        regs: UniqueMmioPointer<'a, MmioRegisters>,
        config: UniqueMmioPointer<'a, [u8]>,
    ) -> Result<Self> {
        let header = MmioHeader::read(*regs.deref())?;
        header.check_modern()?;
        Ok(MmioTransport {
            regs,
            config,
            header,
        })
    }

    /// The raw virtio device id (32 for SCMI).
    pub fn device_id(&self) -> u32 {
        self.header.device_id
    }

    /// The vendor id.
    pub fn vendor_id(&self) -> u32 {
        self.header.vendor_id
    }

    /// Size of the device configuration space in bytes.
    pub fn config_space_size(&self) -> usize {
        self.config.len()
    }

    fn select_queue(&mut self, queue: u16) {
        field!(self.regs, queue_sel).write(u32::from(queue));
    }

    fn config_range<T>(&self, offset: usize) -> virtio_drivers::Result<()> {
        // Virtio 1.2 §4.2.2.2: the config space is accessed with naturally aligned accesses of
        // at most 4 bytes' alignment (64-bit fields are read as two 32-bit halves by drivers).
        if align_of::<T>() > 4 || !offset.is_multiple_of(align_of::<T>()) {
            return Err(virtio_drivers::Error::InvalidParam);
        }
        if self.config.is_empty() {
            return Err(virtio_drivers::Error::ConfigSpaceMissing);
        }
        match offset.checked_add(size_of::<T>()) {
            Some(end) if end <= self.config.len() => Ok(()),
            _ => Err(virtio_drivers::Error::ConfigSpaceTooSmall),
        }
    }
}

fn split(addr: PhysAddr) -> (u32, u32) {
    (addr as u32, (addr >> 32) as u32)
}

/// Make every earlier store (descriptors, avail ring in normal memory) visible to the device
/// before the following register write (Virtio 1.2 §2.7.13.3: the driver performs a memory
/// barrier before the notification).
fn wmb() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a data synchronisation barrier has no effect besides ordering.
    unsafe {
        core::arch::asm!("dsb st", options(nostack, preserves_flags))
    };
    #[cfg(target_arch = "arm")]
    // SAFETY: as above (ARMv7-A `dsb st`).
    unsafe {
        core::arch::asm!("dsb st", options(nostack, preserves_flags))
    };
    #[cfg(not(any(target_arch = "aarch64", target_arch = "arm")))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

impl Transport for MmioTransport<'_> {
    /// virtio-drivers 0.13's `DeviceType` cannot name every device (SCMI, 32, is missing), so a
    /// device it cannot name reports `DeviceType::IoMemory` (id 6, which virtio-drivers does not
    /// drive) as the "unknown to virtio-drivers" marker. [`MmioTransport::device_id`] is the real
    /// id.
    fn device_type(&self) -> DeviceType {
        DeviceType::try_from(self.header.device_id).unwrap_or(DeviceType::IoMemory)
    }

    fn read_device_features(&mut self) -> u64 {
        field!(self.regs, device_features_sel).write(0);
        let low = field_shared!(self.regs, device_features).read();
        field!(self.regs, device_features_sel).write(1);
        let high = field_shared!(self.regs, device_features).read();
        (u64::from(high) << 32) | u64::from(low)
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        let (low, high) = split(driver_features);
        field!(self.regs, driver_features_sel).write(0);
        field!(self.regs, driver_features).write(low);
        field!(self.regs, driver_features_sel).write(1);
        field!(self.regs, driver_features).write(high);
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.select_queue(queue);
        field_shared!(self.regs, queue_num_max).read()
    }

    fn notify(&mut self, queue: u16) {
        wmb();
        field!(self.regs, queue_notify).write(u32::from(queue));
    }

    fn get_status(&self) -> DeviceStatus {
        field_shared!(self.regs, status).read()
    }

    fn set_status(&mut self, status: DeviceStatus) {
        field!(self.regs, status).write(status);
    }

    /// Legacy-only register; modern devices take full 64-bit queue addresses.
    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}

    fn requires_legacy_layout(&self) -> bool {
        false
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.select_queue(queue);
        field!(self.regs, queue_num).write(size);
        let (lo, hi) = split(descriptors);
        field!(self.regs, queue_desc_low).write(lo);
        field!(self.regs, queue_desc_high).write(hi);
        let (lo, hi) = split(driver_area);
        field!(self.regs, queue_driver_low).write(lo);
        field!(self.regs, queue_driver_high).write(hi);
        let (lo, hi) = split(device_area);
        field!(self.regs, queue_device_low).write(lo);
        field!(self.regs, queue_device_high).write(hi);
        // The ring memory the driver zeroed/initialised must be visible before the queue is live.
        wmb();
        field!(self.regs, queue_ready).write(1);
    }

    fn queue_unset(&mut self, queue: u16) {
        self.select_queue(queue);
        field!(self.regs, queue_ready).write(0);
        // Virtio 1.2 §4.2.2.2: the driver reads QueueReady back until it returns 0. Bounded: a
        // device that never clears it is left as it is (QEMU clears it synchronously).
        for _ in 0..1000 {
            if field_shared!(self.regs, queue_ready).read() == 0 {
                break;
            }
            core::hint::spin_loop();
        }
        field!(self.regs, queue_num).write(0);
        field!(self.regs, queue_desc_low).write(0);
        field!(self.regs, queue_desc_high).write(0);
        field!(self.regs, queue_driver_low).write(0);
        field!(self.regs, queue_driver_high).write(0);
        field!(self.regs, queue_device_low).write(0);
        field!(self.regs, queue_device_high).write(0);
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.select_queue(queue);
        field_shared!(self.regs, queue_ready).read() != 0
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        let pending = field_shared!(self.regs, interrupt_status).read();
        if pending != 0 {
            field!(self.regs, interrupt_ack).write(pending);
        }
        InterruptStatus::from_bits_retain(pending)
    }

    fn read_config_generation(&self) -> u32 {
        field_shared!(self.regs, config_generation).read()
    }

    fn read_config_space<T: FromBytes + IntoBytes>(
        &self,
        offset: usize,
    ) -> virtio_drivers::Result<T> {
        self.config_range::<T>(offset)?;
        let config: SharedMmioPointer<'_, [u8]> = *self.config.deref();
        // SAFETY: `offset + size_of::<T>() <= len` and the alignment were checked by
        // `config_range`, so the child pointer is inside the config space (non-null: the config
        // space follows a non-null register block).
        let ptr = unsafe { config.ptr().cast::<u8>().byte_add(offset).cast::<T>() };
        let ptr = NonNull::new(ptr.cast_mut()).ok_or(virtio_drivers::Error::InvalidParam)?;
        // SAFETY: `ptr` is an aligned `T` inside the config space (above); config space reads
        // have no side effects (Virtio 1.2 §4.2.2), and any bit pattern is a valid `T`
        // (`FromBytes`).
        Ok(unsafe { config.child(ptr).read_unsafe() })
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> virtio_drivers::Result<()> {
        self.config_range::<T>(offset)?;
        // SAFETY: bounds and alignment as in `read_config_space`.
        let ptr = unsafe {
            self.config
                .ptr_mut()
                .cast::<u8>()
                .byte_add(offset)
                .cast::<T>()
        };
        let ptr = NonNull::new(ptr).ok_or(virtio_drivers::Error::InvalidParam)?;
        // SAFETY: `ptr` is an aligned `T` inside the config space we own exclusively
        // (`&mut self`); writing device configuration fields is how drivers configure devices.
        unsafe { self.config.child(ptr).write_unsafe(value) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::boxed::Box;

    use super::*;
    use zerocopy::FromZeros;

    /// A register block in ordinary memory: plain memory has no side effects (no feature-select
    /// banking, no reset), so the tests check what the transport leaves in each register.
    #[derive(FromBytes, KnownLayout)]
    #[repr(C, align(4096))]
    struct FakeBlock {
        regs: MmioRegisters,
        config: [u8; 0x100],
    }

    impl FakeBlock {
        fn new(version: u32, device_id: u32) -> Box<Self> {
            let mut b = FakeBlock::new_box_zeroed().unwrap();
            b.regs.magic = ReadPure(MAGIC);
            b.regs.version = ReadPure(version);
            b.regs.device_id = ReadPure(device_id);
            b.regs.vendor_id = ReadPure(0x554d_4551);
            b
        }

        fn transport(&mut self, config_size: usize) -> Result<MmioTransport<'_>> {
            MmioTransport::from_unique(
                UniqueMmioPointer::from(&mut self.regs),
                UniqueMmioPointer::from(&mut self.config[..config_size]),
            )
        }
    }

    #[test]
    fn header_checks() {
        let mut b = FakeBlock::new(2, DEVICE_ID_SCMI);
        let t = b.transport(0).unwrap();
        assert_eq!(t.device_id(), 32);
        assert_eq!(t.vendor_id(), 0x554d_4551);
        // virtio-drivers has no SCMI DeviceType: the documented stand-in.
        assert_eq!(t.device_type(), DeviceType::IoMemory);
        assert!(!t.requires_legacy_layout());
        assert_eq!(
            FakeBlock::new(2, 2).transport(0).unwrap().device_type(),
            DeviceType::Block
        );
        assert_eq!(
            FakeBlock::new(1, 32).transport(0).unwrap_err(),
            Error::LegacyDevice
        );
        assert_eq!(
            FakeBlock::new(3, 32).transport(0).unwrap_err(),
            Error::UnsupportedVersion(3)
        );
        assert_eq!(
            FakeBlock::new(2, 0).transport(0).unwrap_err(),
            Error::NoDevice
        );
        let mut bad = FakeBlock::new(2, 32);
        bad.regs.magic = ReadPure(0x1234);
        assert_eq!(bad.transport(0).unwrap_err(), Error::BadMagic(0x1234));
    }

    #[test]
    fn raw_constructor_checks_region() {
        let mut b = FakeBlock::new(2, 32);
        let base = NonNull::from(&mut *b).cast::<u8>();
        // SAFETY: `b` is a 0x200-byte block that outlives the transports, used by nothing else
        // meanwhile.
        unsafe {
            assert_eq!(
                MmioTransport::new(base, 0xff).unwrap_err(),
                Error::RegionTooSmall(0xff)
            );
            assert_eq!(
                MmioTransport::new(base.byte_add(2), 0x200).unwrap_err(),
                Error::Misaligned
            );
            let t = MmioTransport::new(base, 0x200).unwrap();
            assert_eq!(t.config_space_size(), 0x100);
            assert_eq!(MmioHeader::probe(base).unwrap().device_id, 32);
        }
    }

    #[test]
    fn queue_set_programs_every_address_register() {
        let mut b = FakeBlock::new(2, 32);
        let mut t = b.transport(0).unwrap();
        t.queue_set(
            1,
            16,
            0x1_2345_6000,
            0x0000_0000_4009_1000,
            0xffff_ffff_0000_2000,
        );
        let r = &b.regs;
        assert_eq!(r.queue_sel.0, 1);
        assert_eq!(r.queue_num.0, 16);
        assert_eq!(r.queue_desc_low.0, 0x2345_6000);
        assert_eq!(r.queue_desc_high.0, 0x1);
        assert_eq!(r.queue_driver_low.0, 0x4009_1000);
        assert_eq!(r.queue_driver_high.0, 0);
        assert_eq!(r.queue_device_low.0, 0x2000);
        assert_eq!(r.queue_device_high.0, 0xffff_ffff);
        assert_eq!(r.queue_ready.0, 1);
        let mut t = b.transport(0).unwrap();
        assert!(t.queue_used(1));
        t.queue_unset(1);
        assert!(!t.queue_used(1));
        let r = &b.regs;
        for v in [
            r.queue_num.0,
            r.queue_desc_low.0,
            r.queue_desc_high.0,
            r.queue_driver_low.0,
            r.queue_driver_high.0,
            r.queue_device_low.0,
            r.queue_device_high.0,
        ] {
            assert_eq!(v, 0);
        }
    }

    #[test]
    fn features_status_notify_interrupts() {
        let mut b = FakeBlock::new(2, 32);
        b.regs.device_features = ReadPure(0x3000_0001);
        b.regs.queue_num_max = ReadPure(1024);
        let mut t = b.transport(0).unwrap();
        // Plain memory ignores the select register, so both halves read the same word.
        assert_eq!(t.read_device_features(), 0x3000_0001_3000_0001);
        t.write_driver_features(0x1_0000_0001);
        assert_eq!(t.max_queue_size(0), 1024);
        t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        assert_eq!(
            t.get_status(),
            DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER
        );
        t.notify(1);
        // The high word is written last, with select = 1.
        assert_eq!(b.regs.driver_features_sel.0, 1);
        assert_eq!(b.regs.driver_features.0, 1);
        assert_eq!(b.regs.device_features_sel.0, 1);
        assert_eq!(b.regs.status.0.bits(), 3);
        assert_eq!(b.regs.queue_notify.0, 1);

        b.regs.interrupt_status = ReadPure(3);
        let mut t = b.transport(0).unwrap();
        assert_eq!(t.ack_interrupt().bits(), 3);
        assert_eq!(b.regs.interrupt_ack.0, 3);
        // Nothing pending: nothing acknowledged.
        b.regs.interrupt_status = ReadPure(0);
        b.regs.interrupt_ack = WriteOnly(0);
        let mut t = b.transport(0).unwrap();
        assert!(t.ack_interrupt().is_empty());
        assert_eq!(b.regs.interrupt_ack.0, 0);
    }

    #[test]
    fn config_space_is_bounded() {
        let mut b = FakeBlock::new(2, 32);
        b.config[4..8].copy_from_slice(&0xdead_beef_u32.to_ne_bytes());
        b.regs.config_generation = ReadPure(7);
        let t = b.transport(0).unwrap();
        assert_eq!(
            t.read_config_space::<u32>(0),
            Err(virtio_drivers::Error::ConfigSpaceMissing)
        );
        let mut t = b.transport(8).unwrap();
        assert_eq!(t.read_config_generation(), 7);
        assert_eq!(t.read_config_space::<u32>(4), Ok(0xdead_beef));
        assert_eq!(
            t.read_config_space::<u32>(2),
            Err(virtio_drivers::Error::InvalidParam),
            "misaligned"
        );
        assert_eq!(
            t.read_config_space::<u64>(0),
            Err(virtio_drivers::Error::InvalidParam),
            "virtio-mmio only guarantees 4-byte alignment"
        );
        assert_eq!(
            t.read_config_space::<u32>(8),
            Err(virtio_drivers::Error::ConfigSpaceTooSmall)
        );
        assert_eq!(
            t.read_config_space::<u32>(usize::MAX - 3),
            Err(virtio_drivers::Error::ConfigSpaceTooSmall),
            "offset overflow"
        );
        assert_eq!(t.write_config_space::<u32>(0, 5), Ok(()));
        assert_eq!(
            t.write_config_space::<u32>(8, 5),
            Err(virtio_drivers::Error::ConfigSpaceTooSmall)
        );
        assert_eq!(b.config[..4], 5u32.to_ne_bytes());
    }
}
