//! Hooks into the engine and the wire for this crate's own integration tests (the region-layout
//! audit, the hostile-peer tests): not part of the API, and may change in any release. Only with
//! the `sim` feature; the no_std library keeps all of it private.

use crate::engine::vchiq::Vchiq;
use crate::error::Result;

pub use crate::shared::region;
pub use crate::wire::{header, layout, pagelist};

/// Write `bytes` verbatim as the next slot message (header words included, nothing validated)
/// and publish it: a simulated VideoCore sends corrupt headers through the real slot path.
pub fn queue_raw(v: &Vchiq, bytes: &[u8]) -> Result {
    v.queue_raw(bytes)
}

/// Turn fragment use on or off, to show that the fragment tests detect the cache-line corruption
/// hazard without them (the master counts `unaligned_reads`). Never for production.
pub fn set_fragments_enabled(v: &Vchiq, on: bool) {
    v.set_fragments_enabled_for_test(on)
}
