//! The loopback's shared state keeps each side's per-round-trip writes off the other side's
//! lines ([`Shared`]'s documentation).

use core::mem::{align_of, offset_of, size_of, size_of_val};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use fwipc_transport_api::fixture::{assert_line_alone, SlotQueue};
use fwipc_transport_api::{Lifecycle, Spinners, TransferTable};
use spin::Mutex;

use super::transport::{BulkOp, Part, RemoteLog, ReqRecord, Shared, MAX_MSG_SIZE};
use super::wire;

const LINE: usize = 64;

#[test]
fn each_sides_written_words_have_lines_of_their_own() {
    assert!(align_of::<Shared>() >= LINE);
    let fields: [(&str, usize, usize); 14] = [
        (
            "table",
            offset_of!(Shared, table),
            size_of::<TransferTable<Part>>(),
        ),
        ("lc", offset_of!(Shared, lc), size_of::<Lifecycle>()),
        (
            "requests",
            offset_of!(Shared, requests),
            size_of::<SlotQueue<ReqRecord>>(),
        ),
        (
            "replies",
            offset_of!(Shared, replies),
            size_of::<SlotQueue<[u8; wire::RECORD_SIZE]>>(),
        ),
        (
            "bulk_out",
            offset_of!(Shared, bulk_out),
            size_of::<SlotQueue<BulkOp>>(),
        ),
        (
            "bulk_back",
            offset_of!(Shared, bulk_back),
            size_of::<SlotQueue<BulkOp>>(),
        ),
        (
            "bulks_out",
            offset_of!(Shared, bulks_out),
            size_of::<AtomicUsize>(),
        ),
        (
            "notes",
            offset_of!(Shared, notes),
            size_of::<Mutex<VecDeque<([u8; MAX_MSG_SIZE], usize)>>>(),
        ),
        ("dead", offset_of!(Shared, dead), size_of::<AtomicBool>()),
        (
            "remote_lock",
            offset_of!(Shared, remote_lock),
            size_of::<Mutex<RemoteLog>>(),
        ),
        ("irq", offset_of!(Shared, irq), size_of::<bool>()),
        (
            "spinners",
            offset_of!(Shared, spinners),
            size_of::<Mutex<Spinners>>(),
        ),
        (
            "irq_paused",
            offset_of!(Shared, irq_paused),
            size_of::<AtomicBool>(),
        ),
        (
            "remote_wake",
            offset_of!(Shared, remote_wake),
            size_of_val(&fwipc_transport_api::fixture::RemoteWake::new()),
        ),
    ];
    // Written on every round trip: by the caller (its admission, its spinning hint) and by the
    // remote (its lock).
    for hot in ["lc", "spinners", "irq_paused", "remote_lock"] {
        let &(_, at, size) = fields.iter().find(|f| f.0 == hot).unwrap();
        assert_line_alone(hot, at, size, &fields);
    }
}
