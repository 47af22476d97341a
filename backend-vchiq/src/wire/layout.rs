//! The shared-memory wire layouts (docs/protocols/vchiq.md §1, §2, §5): slot zero, the per-side
//! shared state, remote events, the message header and the fixed message payloads, the pagelist
//! header.
//!
//! These structs are `#[repr(C)]` zerocopy types with compile-time size and offset asserts taken
//! from the protocol tables. They document and pin the layout, and serve codecs for byte buffers.
//! **Live shared memory is never accessed through references to them**
//! (docs/protocols/vchiq.md §3 gap (c)): the [`crate::shared::region`] accessors use the `OFF_*`
//! constants below, derived with `offset_of!` from these same structs, and touch each field as an
//! atomic `u32`.
//!
//! Every field has an explicit little-endian type (`zerocopy::little_endian`), as in `vchi/`: the
//! structs are alignment-1 and host-endian independent (read fields with `.get()`).
//!
//! The one exception is live shared memory: [`crate::shared::region`] reads and writes it as
//! native-endian atomic `u32` words (the one access width that makes a racing peer harmless), so
//! the crate refuses big-endian targets at compile time (docs/architecture.md, "backend-vchiq").

use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;
use zerocopy::little_endian::{I16, I32, U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::wire::consts::{DEBUG_MAX, VCHIQ_MAX_SLOTS, VCHIQ_MAX_SLOTS_PER_SIDE};

#[cfg(target_endian = "big")]
compile_error!("the VCHIQ wire is little-endian; shared::region accesses it as native u32 words");

/// A remote event (docs/protocols/vchiq.md §3): lives in the shared state of the side that waits on
/// it. The third word was once a pointer (broke arm64); it stays a zero `u32`, never an address.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct RemoteEvent {
    /// Set by the waiter just before it sleeps: "interrupt me".
    pub armed: I32,
    /// Set by the signaller.
    pub fired: I32,
    /// Unused (was a semaphore pointer/offset). Always 0.
    pub unused: U32,
}

/// One side's shared state (372 bytes), written by its owner except where noted.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SharedState {
    /// Owner sets it to 1 last, meaning "ready".
    pub initialised: I32,
    /// First owned data slot (inclusive).
    pub slot_first: I32,
    /// Last owned data slot (inclusive).
    pub slot_last: I32,
    /// The owner's synchronous slot.
    pub slot_sync: I32,
    /// Peer signals: new messages in the owner's stream... (the owner parses the peer's slots).
    pub trigger: RemoteEvent,
    /// Owner's transmit stream position (unbounded, wrapping).
    pub tx_pos: I32,
    /// Peer signals after recycling one of the owner's slots.
    pub recycle: RemoteEvent,
    /// Written by the peer (the receiver): next free `slot_queue` index for a recycled slot.
    pub slot_queue_recycle: I32,
    /// Peer has put a message in the peer's sync slot.
    pub sync_trigger: RemoteEvent,
    /// Peer has released the owner's sync message.
    pub sync_release: RemoteEvent,
    /// Circular list of owner's slot indices (filled by the owner at init, by the peer on recycle).
    pub slot_queue: [I32; VCHIQ_MAX_SLOTS_PER_SIDE],
    /// `[0] = DEBUG_MAX`; the rest diagnostic only.
    pub debug: [I32; DEBUG_MAX],
}

/// A slot descriptor in slot zero (kept zeroed: Linux keeps these counters privately).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SlotInfo {
    /// Reserved use count.
    pub use_count: I16,
    /// Reserved release count.
    pub release_count: I16,
}

/// Slot zero (1288 bytes; the master rejects another `slot_zero_size`).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SlotZero {
    /// `'VCHI'`.
    pub magic: I32,
    /// Lowered by each side to min(own VERSION, value): the common version.
    pub version: I16,
    /// Oldest version.
    pub version_min: I16,
    /// `size_of::<SlotZero>()` = 1288.
    pub slot_zero_size: I32,
    /// 4096.
    pub slot_size: I32,
    /// 128.
    pub max_slots: I32,
    /// 64.
    pub max_slots_per_side: I32,
    /// `[0]` = bus address of the fragment pool, `[1]` = fragment count.
    pub platform_data: [I32; 2],
    /// Owned/written by the VPU.
    pub master: SharedState,
    /// Owned/written by the ARM.
    pub slave: SharedState,
    /// Reserved slot descriptors (kept zeroed).
    pub slots: [SlotInfo; VCHIQ_MAX_SLOTS],
}

/// Message header: `msgid = type<<24 | srcport<<12 | dstport`, then `size` payload bytes.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct MsgHeader {
    /// Type and ports (plus the receiver's CLAIMED bit in the sender's slot).
    pub msgid: I32,
    /// Payload bytes following the header.
    pub size: U32,
}

/// OPEN payload (12 bytes).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct OpenPayload {
    /// Service fourcc.
    pub fourcc: I32,
    /// Client id; must be non-zero.
    pub client_id: I32,
    /// Client's service version.
    pub version: I16,
    /// Client's oldest accepted service version.
    pub version_min: I16,
}

/// OPENACK payload (2 bytes; older peers send 0).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct OpenAckPayload {
    /// Server's service version.
    pub version: I16,
}

/// BULK_RX / BULK_TX payload (8 bytes).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct BulkPayload {
    /// Bus address of the pagelist.
    pub pagelist: U32,
    /// Transfer size in bytes.
    pub size: I32,
}

/// BULK_x_DONE payload (4 bytes).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct BulkDonePayload {
    /// Bytes transferred, or −1 for aborted.
    pub actual: I32,
}

/// Pagelist header (8 bytes), followed by `u32 addrs[]` (page-aligned bus address | pages−1).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct PagelistHeader {
    /// Transfer length in bytes.
    pub length: U32,
    /// WRITE 0, READ 1, READ_WITH_FRAGMENTS 2+k.
    pub type_: U16,
    /// Start offset in the first page.
    pub offset: U16,
}

// ---- sizes (docs/protocols/vchiq.md §1, §2, §5, §9 item 3) ----
const_assert_eq!(size_of::<RemoteEvent>(), 12);
// `Vchiq::event_of` takes an event's two words as one pair: `fired` right after `armed`.
const_assert_eq!(off::EV_FIRED, off::EV_ARMED + 4);
const_assert_eq!(size_of::<SharedState>(), 372);
const_assert_eq!(size_of::<SlotInfo>(), 4);
const_assert_eq!(size_of::<SlotZero>(), 1288);
const_assert_eq!(size_of::<MsgHeader>(), 8);
const_assert_eq!(size_of::<OpenPayload>(), 12);
const_assert_eq!(size_of::<OpenAckPayload>(), 2);
const_assert_eq!(size_of::<BulkPayload>(), 8);
const_assert_eq!(size_of::<BulkDonePayload>(), 4);
const_assert_eq!(size_of::<PagelistHeader>(), 8);

// ---- slot zero offsets ----
const_assert_eq!(offset_of!(SlotZero, magic), 0x000);
const_assert_eq!(offset_of!(SlotZero, version), 0x004);
const_assert_eq!(offset_of!(SlotZero, version_min), 0x006);
const_assert_eq!(offset_of!(SlotZero, slot_zero_size), 0x008);
const_assert_eq!(offset_of!(SlotZero, slot_size), 0x00C);
const_assert_eq!(offset_of!(SlotZero, max_slots), 0x010);
const_assert_eq!(offset_of!(SlotZero, max_slots_per_side), 0x014);
const_assert_eq!(offset_of!(SlotZero, platform_data), 0x018);
const_assert_eq!(offset_of!(SlotZero, master), 0x020);
const_assert_eq!(offset_of!(SlotZero, slave), 0x194);
const_assert_eq!(offset_of!(SlotZero, slots), 0x308);

// ---- shared state offsets ----
const_assert_eq!(offset_of!(SharedState, initialised), 0x00);
const_assert_eq!(offset_of!(SharedState, slot_first), 0x04);
const_assert_eq!(offset_of!(SharedState, slot_last), 0x08);
const_assert_eq!(offset_of!(SharedState, slot_sync), 0x0C);
const_assert_eq!(offset_of!(SharedState, trigger), 0x10);
const_assert_eq!(offset_of!(SharedState, tx_pos), 0x1C);
const_assert_eq!(offset_of!(SharedState, recycle), 0x20);
const_assert_eq!(offset_of!(SharedState, slot_queue_recycle), 0x2C);
const_assert_eq!(offset_of!(SharedState, sync_trigger), 0x30);
const_assert_eq!(offset_of!(SharedState, sync_release), 0x3C);
const_assert_eq!(offset_of!(SharedState, slot_queue), 0x48);
const_assert_eq!(offset_of!(SharedState, debug), 0x148);
const_assert_eq!(offset_of!(RemoteEvent, armed), 0);
const_assert_eq!(offset_of!(RemoteEvent, fired), 4);

/// Byte offsets used by the region accessors (all derived from the structs above).
pub mod off {
    use super::*;
    /// Slot zero fields.
    pub const MAGIC: usize = offset_of!(SlotZero, magic);
    /// `version` (s16) and `version_min` (s16) share this word.
    pub const VERSION_WORD: usize = offset_of!(SlotZero, version);
    /// `slot_zero_size`.
    pub const SLOT_ZERO_SIZE: usize = offset_of!(SlotZero, slot_zero_size);
    /// `slot_size`.
    pub const SLOT_SIZE: usize = offset_of!(SlotZero, slot_size);
    /// `max_slots`.
    pub const MAX_SLOTS: usize = offset_of!(SlotZero, max_slots);
    /// `max_slots_per_side`.
    pub const MAX_SLOTS_PER_SIDE: usize = offset_of!(SlotZero, max_slots_per_side);
    /// `platform_data[0]` (fragment pool bus address).
    pub const PLATFORM_DATA0: usize = offset_of!(SlotZero, platform_data);
    /// `platform_data[1]` (fragment count).
    pub const PLATFORM_DATA1: usize = offset_of!(SlotZero, platform_data) + 4;
    /// The master's shared state.
    pub const MASTER: usize = offset_of!(SlotZero, master);
    /// The slave's shared state.
    pub const SLAVE: usize = offset_of!(SlotZero, slave);

    /// Shared-state fields, relative to the shared state.
    pub const INITIALISED: usize = offset_of!(SharedState, initialised);
    /// `slot_first`.
    pub const SLOT_FIRST: usize = offset_of!(SharedState, slot_first);
    /// `slot_last`.
    pub const SLOT_LAST: usize = offset_of!(SharedState, slot_last);
    /// `slot_sync`.
    pub const SLOT_SYNC: usize = offset_of!(SharedState, slot_sync);
    /// `trigger` event.
    pub const TRIGGER: usize = offset_of!(SharedState, trigger);
    /// `tx_pos`.
    pub const TX_POS: usize = offset_of!(SharedState, tx_pos);
    /// `recycle` event.
    pub const RECYCLE: usize = offset_of!(SharedState, recycle);
    /// `slot_queue_recycle`.
    pub const SLOT_QUEUE_RECYCLE: usize = offset_of!(SharedState, slot_queue_recycle);
    /// `sync_trigger` event.
    pub const SYNC_TRIGGER: usize = offset_of!(SharedState, sync_trigger);
    /// `sync_release` event.
    pub const SYNC_RELEASE: usize = offset_of!(SharedState, sync_release);
    /// `slot_queue[0]`.
    pub const SLOT_QUEUE: usize = offset_of!(SharedState, slot_queue);
    /// `debug[0]`.
    pub const DEBUG: usize = offset_of!(SharedState, debug);
    /// `armed` within a remote event.
    pub const EV_ARMED: usize = offset_of!(RemoteEvent, armed);
    /// `fired` within a remote event.
    pub const EV_FIRED: usize = offset_of!(RemoteEvent, fired);
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn slot_zero_codec_roundtrip() {
        let mut z = SlotZero::new_zeroed();
        z.magic = I32::new(crate::wire::consts::VCHIQ_MAGIC as i32);
        z.version = I16::new(8);
        z.slave.slot_queue[63] = I32::new(64);
        z.slave.debug[0] = I32::new(DEBUG_MAX as i32);
        let bytes = z.as_bytes();
        assert_eq!(bytes.len(), 1288);
        assert_eq!(&bytes[0..4], &0x5643_4849u32.to_le_bytes());
        // slave.slot_queue[63] at 0x194 + 0x48 + 63*4.
        let o = 0x194 + 0x48 + 63 * 4;
        assert_eq!(&bytes[o..o + 4], &64i32.to_le_bytes());
        let back = SlotZero::read_from_bytes(bytes).unwrap();
        assert_eq!(back.slave.debug[0].get(), 11);
    }
}
