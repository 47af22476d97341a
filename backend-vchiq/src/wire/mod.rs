//! The wire: protocol constants, the `#[repr(C)]` layouts of the shared region with their asserted
//! sizes and offsets, the message-header codec, the pagelist format, and the fwipc framing inside
//! DATA messages. Every parser of remote input lives here (and is what `fuzzing` fuzzes).

pub mod consts;
pub mod frame;
pub mod header;
pub mod layout;
pub mod pagelist;
