//! PL011 UART console of QEMU `virt` (0x0900_0000) and a `log` backend on it.

use core::fmt;
use core::ptr::NonNull;

/// Base address of the `virt` board's PL011 (QEMU `hw/arm/virt.c`, `VIRT_UART`).
pub const VIRT_PL011_BASE: usize = 0x0900_0000;

const UARTDR: usize = 0x00;
const UARTFR: usize = 0x18;
const FR_TXFF: u32 = 1 << 5;

/// A PL011 transmitter. QEMU's PL011 needs no baud or enable set-up to transmit.
pub struct Pl011 {
    base: NonNull<u32>,
}

impl Pl011 {
    /// # Safety
    /// `base` must be the address of a PL011 register block, mapped (or MMU off), and nothing else
    /// may program the UART in a conflicting way (concurrent writers only interleave characters).
    pub const unsafe fn new(base: usize) -> Self {
        Pl011 {
            // SAFETY: the caller guarantees `base` is a register block address, hence non-null.
            base: unsafe { NonNull::new_unchecked(base as *mut u32) },
        }
    }

    /// The board UART of QEMU `virt`.
    pub fn virt() -> Self {
        // SAFETY: on QEMU `virt` 0x0900_0000 is the PL011, accessed at its physical address (MMU
        // off at boot, then identity-mapped Device-nGnRE by `mmu.rs`). The guest only polls FR and
        // writes DR; two CPUs printing at once only interleave characters.
        unsafe { Pl011::new(VIRT_PL011_BASE) }
    }

    fn write_byte(&mut self, b: u8) {
        // SAFETY: UARTFR and UARTDR are 32-bit registers inside the PL011 block (see `new`);
        // volatile accesses because they are device registers with side effects.
        unsafe {
            while self.base.byte_add(UARTFR).read_volatile() & FR_TXFF != 0 {
                core::hint::spin_loop();
            }
            self.base.byte_add(UARTDR).write_volatile(u32::from(b));
        }
    }
}

impl fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}

/// Print to the board UART.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::console::Pl011::virt(), format_args!($($arg)*));
    }};
}

/// Print a line to the board UART.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => {{ $crate::print!($($arg)*); $crate::print!("\n"); }};
}

/// `log` records go to the UART, prefixed with level and target.
pub struct UartLogger;

impl log::Log for UartLogger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            crate::println!("[{} {}] {}", record.level(), record.target(), record.args());
        }
    }
    fn flush(&self) {}
}

/// The logger instance handed to `log::set_logger` (which needs a `'static`; it holds no state).
pub static LOGGER: UartLogger = UartLogger;
