//! The lock-free handshakes on the shared region, each with its memory-ordering argument and a
//! loom model: bounds-checked atomic access to the region, remote events (doorbell Dekker pairs),
//! the slot recycle queue, and the sync-slot publish/release.

pub mod recycle;
pub mod region;
pub mod remote_event;
pub mod sync_slot;
