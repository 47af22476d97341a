//! The state of a slot loan (the zero-copy send; `tx_loan.rs` has the operations): plain data
//! kept in the core's private state under its lock.

use fwipc_transport_api::Deadline;

/// The loan currently out, if any, and the generation of the next one.
#[derive(Debug, Default)]
pub(crate) struct LoanState {
    pub(crate) current: Option<SlotLoan>,
    pub(crate) generation: u32,
}

/// One loan: where its message goes and until when it may stay out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotLoan {
    /// Its generation (the `TxLoan`'s buffer index).
    pub(crate) generation: u32,
    /// `tx_pos` when reserved: the loan holds only while nothing moved it.
    pub(crate) tx_pos: u32,
    /// Region offset of the reserved message header.
    pub(crate) hdr_off: usize,
    /// Payload bytes reserved after the header.
    pub(crate) cap: usize,
    /// The local port of the service it was reserved for.
    pub(crate) port: usize,
    /// After this the next sender that needs the slots discards it.
    pub(crate) expires: Deadline,
}

impl LoanState {
    /// The live loan of generation `generation` whose reservation still stands at `tx_pos`.
    pub(crate) fn live(&self, generation: u32, tx_pos: u32) -> Option<SlotLoan> {
        self.current
            .filter(|l| l.generation == generation && l.tx_pos == tx_pos)
    }
}
