//! What a session keeps of its DSP process: its kind, the memory handed to it, and the
//! quarantine of memory whose control call timed out (see `crate::session::procctl`).

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::mem::{DmaRegion, SharedBuf};

/// What kind of process the session runs on the DSP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PdKind {
    /// Attached to the root PD.
    Root,
    /// Attached to the sensors PD.
    Sensors,
    /// A dynamic user PD created from an init file.
    User,
    /// A static PD (create-static).
    Static,
}

/// A DSP mapping made with mmap.
pub(crate) struct MmapEntry {
    pub(crate) vaddr: u64,
    pub(crate) size: u64,
    pub(crate) _region: Arc<dyn DmaRegion>,
}

/// A shared buffer mapped with mem_map.
pub(crate) struct MemMapEntry {
    pub(crate) vaddr: u64,
    pub(crate) len: u64,
    pub(crate) buf: SharedBuf,
}

/// Memory a timed-out control call gave the DSP (see `crate::session::procctl`). Held, never read: the
/// reference is what keeps the memory mapped for the DSP.
pub(crate) enum Quarantined {
    Region(#[allow(dead_code)] Arc<dyn DmaRegion>),
    Buf(#[allow(dead_code)] SharedBuf),
}

/// Per-session process state.
#[derive(Default)]
pub(crate) struct ProcState {
    pub(crate) kind: Option<PdKind>,
    pub(crate) init_mem: Option<Arc<dyn DmaRegion>>,
    pub(crate) heap: Option<Arc<dyn DmaRegion>>,
    pub(crate) mmaps: Vec<MmapEntry>,
    pub(crate) mem_maps: Vec<MemMapEntry>,
    /// Memory of timed-out calls the DSP may still use; freed with the process (confirmed
    /// INIT_RELEASE) or the session.
    pub(crate) quarantine: Vec<Quarantined>,
}
