//! A modern (version 2) virtio-mmio `Transport` for any device id, and the slot scan.
//!
//! virtio-drivers 0.13's `MmioTransport` converts the device id into its `DeviceType` enum, which
//! ends at 25, so it rejects SCMI (32). This transport keeps the raw id and implements
//! `virtio_drivers::transport::Transport` on the register layout of virtio 1.2 §4.2.2.

use core::ptr::NonNull;

use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{Error, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// `"virt"` little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// Virtio device id of SCMI.
pub const DEVICE_ID_SCMI: u32 = 32;
/// QEMU `virt`: 32 virtio-mmio slots of 0x200 bytes from 0x0a00_0000 (`VIRT_MMIO`).
pub const VIRT_MMIO_BASE: usize = 0x0a00_0000;
/// Size of one slot.
pub const VIRT_MMIO_STRIDE: usize = 0x200;
/// Number of slots.
pub const VIRT_MMIO_SLOTS: usize = 32;

mod reg {
    pub const MAGIC: usize = 0x000;
    pub const VERSION: usize = 0x004;
    pub const DEVICE_ID: usize = 0x008;
    pub const VENDOR_ID: usize = 0x00c;
    pub const DEVICE_FEATURES: usize = 0x010;
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    pub const DRIVER_FEATURES: usize = 0x020;
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    pub const QUEUE_SEL: usize = 0x030;
    pub const QUEUE_NUM_MAX: usize = 0x034;
    pub const QUEUE_NUM: usize = 0x038;
    pub const QUEUE_READY: usize = 0x044;
    pub const QUEUE_NOTIFY: usize = 0x050;
    pub const INTERRUPT_STATUS: usize = 0x060;
    pub const INTERRUPT_ACK: usize = 0x064;
    pub const STATUS: usize = 0x070;
    pub const QUEUE_DESC_LOW: usize = 0x080;
    pub const QUEUE_DESC_HIGH: usize = 0x084;
    pub const QUEUE_DRIVER_LOW: usize = 0x090;
    pub const QUEUE_DRIVER_HIGH: usize = 0x094;
    pub const QUEUE_DEVICE_LOW: usize = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: usize = 0x0a4;
    pub const CONFIG_GENERATION: usize = 0x0fc;
    pub const CONFIG: usize = 0x100;
}

/// What a slot's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotInfo {
    /// Slot index.
    pub index: usize,
    /// Register block address.
    pub base: usize,
    /// Header version (1 legacy, 2 modern).
    pub version: u32,
    /// Virtio device id (0 = empty slot).
    pub device_id: u32,
    /// Vendor id.
    pub vendor_id: u32,
}

/// Reads the header of every QEMU `virt` virtio-mmio slot that has the magic value.
pub fn scan_virt() -> impl Iterator<Item = SlotInfo> {
    (0..VIRT_MMIO_SLOTS).filter_map(|index| {
        let base = VIRT_MMIO_BASE + index * VIRT_MMIO_STRIDE;
        // SAFETY: on QEMU `virt`, 0x0a00_0000 + 0x200 * i for i < 32 are the virtio-mmio register
        // blocks (present even when no device is plugged); the MMU is off so this address is the
        // physical one, and reading the identification registers has no side effects.
        let regs = unsafe { Regs::new(base) };
        (regs.read(reg::MAGIC) == MAGIC).then(|| SlotInfo {
            index,
            base,
            version: regs.read(reg::VERSION),
            device_id: regs.read(reg::DEVICE_ID),
            vendor_id: regs.read(reg::VENDOR_ID),
        })
    })
}

/// A virtio-mmio register block.
#[derive(Debug)]
struct Regs {
    base: NonNull<u32>,
}

impl Regs {
    /// # Safety
    /// `base` must be the address of a virtio-mmio register block (0x100 bytes of registers plus
    /// the device's config space) that stays valid and accessible for the value's lifetime.
    unsafe fn new(base: usize) -> Self {
        Regs {
            // SAFETY: a register block address is never 0 (caller's contract).
            base: unsafe { NonNull::new_unchecked(base as *mut u32) },
        }
    }

    fn read(&self, off: usize) -> u32 {
        debug_assert!(off < reg::CONFIG && off.is_multiple_of(4));
        // SAFETY: `off` is one of the aligned 32-bit register offsets below 0x100 (module `reg`),
        // inside the block `new`'s caller vouched for; volatile because these are device registers.
        unsafe { self.base.byte_add(off).read_volatile() }
    }

    fn write(&mut self, off: usize, value: u32) {
        debug_assert!(off < reg::CONFIG && off.is_multiple_of(4));
        // SAFETY: as in `read`; writes to these registers are how the driver programs the device.
        unsafe { self.base.byte_add(off).write_volatile(value) }
    }
}

/// Errors from [`ModernMmioTransport::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioError {
    /// The magic value is wrong.
    BadMagic(u32),
    /// Not a version-2 (modern) header; QEMU needs `-global virtio-mmio.force-legacy=false`.
    NotModern(u32),
    /// Empty slot (device id 0).
    NoDevice,
}

impl core::fmt::Display for MmioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MmioError::BadMagic(m) => write!(f, "bad virtio-mmio magic {m:#x}"),
            MmioError::NotModern(v) => write!(f, "virtio-mmio version {v}, need 2 (modern)"),
            MmioError::NoDevice => f.write_str("empty virtio-mmio slot"),
        }
    }
}

/// Modern virtio-mmio transport that accepts any device id (in particular SCMI, 32).
#[derive(Debug)]
pub struct ModernMmioTransport {
    regs: Regs,
    device_id: u32,
    config_size: usize,
}

// SAFETY: the transport only holds the address of a register block; device registers are not tied
// to the thread that first touched them, and every register-programming method takes `&mut self`.
unsafe impl Send for ModernMmioTransport {}
// SAFETY: the `&self` methods only read registers (status, generation, config space): concurrent
// reads are harmless. Queue selection + programming needs `&mut self`, so it cannot race.
unsafe impl Sync for ModernMmioTransport {}

impl ModernMmioTransport {
    /// Check the header at `base` and take ownership of the device.
    ///
    /// `config_size` is the device's config space size in bytes (0 for SCMI, which has none);
    /// virtio-mmio does not report it.
    ///
    /// # Safety
    /// `base` must be the address of a virtio-mmio register block followed by `config_size` bytes of
    /// config space, valid for the transport's lifetime, and no other code may drive the device.
    pub unsafe fn new(base: usize, config_size: usize) -> Result<Self, MmioError> {
        // SAFETY: forwarded from the caller's contract.
        let regs = unsafe { Regs::new(base) };
        let magic = regs.read(reg::MAGIC);
        if magic != MAGIC {
            return Err(MmioError::BadMagic(magic));
        }
        let version = regs.read(reg::VERSION);
        if version != 2 {
            return Err(MmioError::NotModern(version));
        }
        let device_id = regs.read(reg::DEVICE_ID);
        if device_id == 0 {
            return Err(MmioError::NoDevice);
        }
        Ok(ModernMmioTransport {
            regs,
            device_id,
            config_size,
        })
    }

    /// The raw virtio device id (32 for SCMI).
    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    fn select_queue(&mut self, queue: u16) {
        self.regs.write(reg::QUEUE_SEL, u32::from(queue));
    }
}

fn split(addr: PhysAddr) -> (u32, u32) {
    (addr as u32, (addr >> 32) as u32)
}

impl Transport for ModernMmioTransport {
    /// virtio-drivers 0.13's `DeviceType` has no SCMI variant (and its `TryFrom` rejects 32), so a
    /// device it cannot name reports `DeviceType::IoMemory` (id 6, a type nothing in this guest or in
    /// virtio-drivers drives) as the "unknown to virtio-drivers" marker. Use [`ModernMmioTransport::device_id`] for the real id.
    fn device_type(&self) -> DeviceType {
        DeviceType::try_from(self.device_id).unwrap_or(DeviceType::IoMemory)
    }

    fn read_device_features(&mut self) -> u64 {
        self.regs.write(reg::DEVICE_FEATURES_SEL, 0);
        let low = self.regs.read(reg::DEVICE_FEATURES);
        self.regs.write(reg::DEVICE_FEATURES_SEL, 1);
        let high = self.regs.read(reg::DEVICE_FEATURES);
        (u64::from(high) << 32) | u64::from(low)
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        let (low, high) = split(driver_features);
        self.regs.write(reg::DRIVER_FEATURES_SEL, 0);
        self.regs.write(reg::DRIVER_FEATURES, low);
        self.regs.write(reg::DRIVER_FEATURES_SEL, 1);
        self.regs.write(reg::DRIVER_FEATURES, high);
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.select_queue(queue);
        self.regs.read(reg::QUEUE_NUM_MAX)
    }

    fn notify(&mut self, queue: u16) {
        // The ring updates (descriptor, avail entry, avail idx) must be visible to the device before
        // it sees the notification. `dsb st` completes all earlier stores, to normal memory too,
        // before the register write. (With the MMU off every access is Device-nGnRnE and already in
        // order; the barrier keeps the transport correct once the MMU maps RAM as Normal memory.)
        #[cfg(target_arch = "aarch64")]
        // SAFETY: a data synchronisation barrier has no effect besides ordering.
        unsafe {
            core::arch::asm!("dsb st", options(nostack, preserves_flags))
        };
        // Host builds (unit tests against a fake register block): a full fence is enough.
        #[cfg(not(target_arch = "aarch64"))]
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        self.regs.write(reg::QUEUE_NOTIFY, u32::from(queue));
    }

    fn get_status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.regs.read(reg::STATUS))
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.regs.write(reg::STATUS, status.bits());
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
        self.regs.write(reg::QUEUE_NUM, size);
        let (lo, hi) = split(descriptors);
        self.regs.write(reg::QUEUE_DESC_LOW, lo);
        self.regs.write(reg::QUEUE_DESC_HIGH, hi);
        let (lo, hi) = split(driver_area);
        self.regs.write(reg::QUEUE_DRIVER_LOW, lo);
        self.regs.write(reg::QUEUE_DRIVER_HIGH, hi);
        let (lo, hi) = split(device_area);
        self.regs.write(reg::QUEUE_DEVICE_LOW, lo);
        self.regs.write(reg::QUEUE_DEVICE_HIGH, hi);
        self.regs.write(reg::QUEUE_READY, 1);
    }

    fn queue_unset(&mut self, queue: u16) {
        self.select_queue(queue);
        self.regs.write(reg::QUEUE_READY, 0);
        // virtio 1.2 §4.2.2.2: the driver reads QueueReady back until it returns 0. Bounded: QEMU
        // clears it synchronously, a device that never does is left as it is.
        for _ in 0..1000 {
            if self.regs.read(reg::QUEUE_READY) == 0 {
                break;
            }
            core::hint::spin_loop();
        }
        self.regs.write(reg::QUEUE_NUM, 0);
        for off in [
            reg::QUEUE_DESC_LOW,
            reg::QUEUE_DESC_HIGH,
            reg::QUEUE_DRIVER_LOW,
            reg::QUEUE_DRIVER_HIGH,
            reg::QUEUE_DEVICE_LOW,
            reg::QUEUE_DEVICE_HIGH,
        ] {
            self.regs.write(off, 0);
        }
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.select_queue(queue);
        self.regs.read(reg::QUEUE_READY) != 0
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        let pending = self.regs.read(reg::INTERRUPT_STATUS);
        if pending != 0 {
            self.regs.write(reg::INTERRUPT_ACK, pending);
        }
        InterruptStatus::from_bits_retain(pending)
    }

    fn read_config_generation(&self) -> u32 {
        self.regs.read(reg::CONFIG_GENERATION)
    }

    fn read_config_space<T: FromBytes + IntoBytes>(
        &self,
        offset: usize,
    ) -> virtio_drivers::Result<T> {
        if self.config_size == 0 {
            return Err(Error::ConfigSpaceMissing);
        }
        let size = core::mem::size_of::<T>();
        if offset
            .checked_add(size)
            .is_none_or(|end| end > self.config_size)
        {
            return Err(Error::ConfigSpaceTooSmall);
        }
        if !offset.is_multiple_of(core::mem::align_of::<T>()) {
            return Err(Error::InvalidParam);
        }
        // SAFETY: `offset + size_of::<T>() <= config_size`, so the read stays inside the config
        // space `new`'s caller vouched for; it is aligned for `T` (checked above; the block itself
        // is page-aligned) and any bit pattern is a valid `T` (`FromBytes`).
        Ok(unsafe {
            self.regs
                .base
                .byte_add(reg::CONFIG + offset)
                .cast::<T>()
                .read_volatile()
        })
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> virtio_drivers::Result<()> {
        if self.config_size == 0 {
            return Err(Error::ConfigSpaceMissing);
        }
        let size = core::mem::size_of::<T>();
        if offset
            .checked_add(size)
            .is_none_or(|end| end > self.config_size)
        {
            return Err(Error::ConfigSpaceTooSmall);
        }
        if !offset.is_multiple_of(core::mem::align_of::<T>()) {
            return Err(Error::InvalidParam);
        }
        // SAFETY: bounds and alignment as in `read_config_space`; `&mut self` gives exclusive use.
        unsafe {
            self.regs
                .base
                .byte_add(reg::CONFIG + offset)
                .cast::<T>()
                .write_volatile(value)
        };
        Ok(())
    }
}

#[cfg(test)]
// `drop(t)` marks where a transport's use of the fake block ends, before the test reads it.
#[allow(clippy::drop_non_drop)]
mod tests {
    use super::*;

    /// A register block in ordinary memory: plain memory has no side effects (no feature-select
    /// banking, no reset), so the tests check what the transport leaves in each register.
    #[repr(C, align(4096))]
    struct FakeBlock([u32; 0x200 / 4]);

    impl FakeBlock {
        fn new(version: u32, device_id: u32) -> Box<Self> {
            let mut b = Box::new(FakeBlock([0; 0x200 / 4]));
            b.set(reg::MAGIC, MAGIC);
            b.set(reg::VERSION, version);
            b.set(reg::DEVICE_ID, device_id);
            b.set(reg::VENDOR_ID, 0x554d_4551);
            b
        }
        fn get(&self, off: usize) -> u32 {
            self.0[off / 4]
        }
        fn set(&mut self, off: usize, v: u32) {
            self.0[off / 4] = v;
        }
        fn transport(&mut self, config_size: usize) -> Result<ModernMmioTransport, MmioError> {
            // SAFETY: the block is 0x200 bytes (0x100 of registers + 0x100 of config space),
            // outlives the transport in every test, and the test only reads it through `get`
            // between transport calls (single-threaded).
            unsafe { ModernMmioTransport::new(self.0.as_mut_ptr() as usize, config_size) }
        }
    }

    #[test]
    fn header_checks() {
        let mut b = FakeBlock::new(2, DEVICE_ID_SCMI);
        let t = b.transport(0).unwrap();
        assert_eq!(t.device_id(), 32);
        // virtio-drivers has no SCMI DeviceType: the documented stand-in.
        assert_eq!(t.device_type(), DeviceType::IoMemory);
        assert_eq!(
            FakeBlock::new(2, 2).transport(0).unwrap().device_type(),
            DeviceType::Block
        );
        assert_eq!(
            FakeBlock::new(1, 32).transport(0).unwrap_err(),
            MmioError::NotModern(1)
        );
        assert_eq!(
            FakeBlock::new(2, 0).transport(0).unwrap_err(),
            MmioError::NoDevice
        );
        let mut bad = FakeBlock::new(2, 32);
        bad.set(reg::MAGIC, 0x1234);
        assert_eq!(bad.transport(0).unwrap_err(), MmioError::BadMagic(0x1234));
        assert!(!t.requires_legacy_layout());
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
        drop(t);
        assert_eq!(b.get(reg::QUEUE_SEL), 1);
        assert_eq!(b.get(reg::QUEUE_NUM), 16);
        assert_eq!(b.get(reg::QUEUE_DESC_LOW), 0x2345_6000);
        assert_eq!(b.get(reg::QUEUE_DESC_HIGH), 0x1);
        assert_eq!(b.get(reg::QUEUE_DRIVER_LOW), 0x4009_1000);
        assert_eq!(b.get(reg::QUEUE_DRIVER_HIGH), 0);
        assert_eq!(b.get(reg::QUEUE_DEVICE_LOW), 0x2000);
        assert_eq!(b.get(reg::QUEUE_DEVICE_HIGH), 0xffff_ffff);
        assert_eq!(b.get(reg::QUEUE_READY), 1);
        let mut t = b.transport(0).unwrap();
        assert!(t.queue_used(1));
        t.queue_unset(1);
        assert!(!t.queue_used(1));
        drop(t);
        for off in [
            reg::QUEUE_NUM,
            reg::QUEUE_DESC_LOW,
            reg::QUEUE_DESC_HIGH,
            reg::QUEUE_DRIVER_LOW,
            reg::QUEUE_DRIVER_HIGH,
            reg::QUEUE_DEVICE_LOW,
            reg::QUEUE_DEVICE_HIGH,
        ] {
            assert_eq!(b.get(off), 0, "register {off:#x} cleared");
        }
    }

    #[test]
    fn features_status_notify_interrupts() {
        let mut b = FakeBlock::new(2, 32);
        b.set(reg::DEVICE_FEATURES, 0x3000_0001);
        b.set(reg::QUEUE_NUM_MAX, 1024);
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
        drop(t);
        // The high word is written last, with select = 1.
        assert_eq!(b.get(reg::DRIVER_FEATURES_SEL), 1);
        assert_eq!(b.get(reg::DRIVER_FEATURES), 1);
        assert_eq!(b.get(reg::DEVICE_FEATURES_SEL), 1);
        assert_eq!(b.get(reg::STATUS), 3);
        assert_eq!(b.get(reg::QUEUE_NOTIFY), 1);

        b.set(reg::INTERRUPT_STATUS, 3);
        let mut t = b.transport(0).unwrap();
        let st = t.ack_interrupt();
        assert_eq!(st.bits(), 3);
        drop(t);
        assert_eq!(b.get(reg::INTERRUPT_ACK), 3);
        // Nothing pending: nothing acknowledged.
        b.set(reg::INTERRUPT_STATUS, 0);
        b.set(reg::INTERRUPT_ACK, 0);
        let mut t = b.transport(0).unwrap();
        assert!(t.ack_interrupt().is_empty());
        drop(t);
        assert_eq!(b.get(reg::INTERRUPT_ACK), 0);
    }

    #[test]
    fn config_space_is_bounded() {
        let mut b = FakeBlock::new(2, 32);
        b.set(reg::CONFIG + 4, 0xdead_beef);
        b.set(reg::CONFIG_GENERATION, 7);
        let t = b.transport(0).unwrap();
        assert_eq!(
            t.read_config_space::<u32>(0),
            Err(Error::ConfigSpaceMissing)
        );
        let mut t = b.transport(8).unwrap();
        assert_eq!(t.read_config_generation(), 7);
        assert_eq!(t.read_config_space::<u32>(4), Ok(0xdead_beef));
        assert_eq!(
            t.read_config_space::<u32>(2),
            Err(Error::InvalidParam),
            "misaligned"
        );
        assert_eq!(
            t.read_config_space::<u32>(8),
            Err(Error::ConfigSpaceTooSmall)
        );
        assert_eq!(
            t.read_config_space::<u64>(usize::MAX - 3),
            Err(Error::ConfigSpaceTooSmall),
            "offset overflow"
        );
        assert_eq!(t.write_config_space::<u32>(0, 5), Ok(()));
        assert_eq!(
            t.write_config_space::<u64>(4, 5),
            Err(Error::ConfigSpaceTooSmall)
        );
        drop(t);
        assert_eq!(b.get(reg::CONFIG), 5);
    }
}
