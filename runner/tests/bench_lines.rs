//! The framework bench's cache-line model and trace parsers (`benches/framework/lines.rs`), whose
//! unit tests `cargo test` does not reach in a bench target without the test harness: compiled
//! here so they run with the workspace's tests.

#[allow(dead_code)]
#[path = "../benches/framework/lines.rs"]
mod lines;

use lines::{
    parse_addr2line, parse_line, parse_run_info, pick_frame, Access, Model, Moves, LINE,
    REMOTE_STEP,
};

/// Where the markers are in these tests.
const MARKS: u64 = 0x10_0000;

fn mark(m: &mut Model, step: u64) {
    m.feed(Access::Store(MARKS + step, 1));
}

/// A model counting from the first marked round trip, with `excluded` left out.
fn model(excluded: Vec<std::ops::Range<u64>>) -> Model {
    Model::new(MARKS..MARKS + 5, excluded, 0)
}

fn total(m: &Model) -> Moves {
    m.steps.iter().fold(Moves::default(), |a, s| Moves {
        fetched: a.fetched + s.fetched,
        invalidated: a.invalidated + s.invalidated,
    })
}

#[test]
fn lackey_lines_parse_and_everything_else_is_skipped() {
    assert_eq!(
        parse_line("I  0401ab70,3"),
        Some(Access::Instr(0x0401_ab70))
    );
    assert_eq!(
        parse_line(" L 1fff000738,8"),
        Some(Access::Load(0x1f_ff00_0738, 8))
    );
    assert_eq!(
        parse_line(" S 0016f111,1\n"),
        Some(Access::Store(0x16_f111, 1))
    );
    assert_eq!(
        parse_line(" M 04b28048,4"),
        Some(Access::Modify(0x4b2_8048, 4))
    );
    assert_eq!(
        parse_line("==19170== Lackey, an example Valgrind tool"),
        None
    );
    assert_eq!(parse_line(" X 0016f111,1"), None);
    assert_eq!(parse_line(" L zz,1"), None);
    assert_eq!(parse_line(""), None);
}

/// A line written by each side in turn (the ping-pong of (b)'s floor) is two fetches per round
/// trip, one into each side, in the steps that wrote it.
#[test]
fn a_ping_pong_is_two_fetches_per_round_trip() {
    let mut m = model(vec![]);
    let x = 0x5000;
    for _ in 0..10 {
        mark(&mut m, 0);
        m.feed(Access::Store(x, 8));
        mark(&mut m, REMOTE_STEP as u64);
        m.feed(Access::Modify(x, 8));
    }
    // The first store of all finds the line nowhere: no transfer.
    assert_eq!(
        total(&m),
        Moves {
            fetched: 19,
            invalidated: 0
        }
    );
    assert_eq!(m.steps[0].fetched, 9);
    assert_eq!(m.steps[REMOTE_STEP].fetched, 10);
    assert_eq!(m.counted_rounds(), 10);
}

/// A line the driver writes and the remote reads, then writes: one fetch (the read) and one
/// invalidation (the write, to a line the driver still holds shared); lines only one side
/// touches, and loads of a line both hold, cost nothing.
#[test]
fn a_read_then_write_is_a_fetch_and_an_invalidation() {
    let mut m = model(vec![]);
    mark(&mut m, 0);
    m.feed(Access::Store(0x100, 4));
    m.feed(Access::Store(0x9000, 4)); // the driver's own line
    mark(&mut m, REMOTE_STEP as u64);
    m.feed(Access::Load(0x104, 4));
    m.feed(Access::Load(0x108, 4)); // held now: a hit
    m.feed(Access::Store(0x100, 4));
    m.feed(Access::Store(0xa000, 4)); // the remote's own line
    mark(&mut m, 2);
    m.feed(Access::Load(0x9000, 4));
    m.feed(Access::Load(0xa040, 4)); // the line after the remote's: nobody held it
    assert_eq!(
        m.steps[REMOTE_STEP],
        Moves {
            fetched: 1,
            invalidated: 1
        }
    );
    assert_eq!(
        total(&m),
        Moves {
            fetched: 1,
            invalidated: 1
        }
    );
}

/// An access across a line boundary touches both lines.
#[test]
fn an_access_across_a_line_boundary_moves_both_lines() {
    let mut m = model(vec![]);
    mark(&mut m, 0);
    m.feed(Access::Store(LINE - 4, 8));
    mark(&mut m, REMOTE_STEP as u64);
    m.feed(Access::Load(LINE - 4, 8));
    assert_eq!(total(&m).fetched, 2);
}

/// Excluded memory (the stack, thread-locals: per thread in the two-thread run) and accesses
/// before the first marker are not counted; neither are the round trips to skip.
#[test]
fn excluded_memory_unmarked_accesses_and_skipped_round_trips_count_nothing() {
    let stack = 0x7000_0000..0x7010_0000;
    let mut m = model(vec![stack.clone()]);
    m.feed(Access::Store(0x100, 4)); // before any marker
    mark(&mut m, REMOTE_STEP as u64);
    m.feed(Access::Load(0x100, 4));
    for _ in 0..3 {
        mark(&mut m, 0);
        m.feed(Access::Store(stack.start + 8, 8));
        mark(&mut m, REMOTE_STEP as u64);
        m.feed(Access::Store(stack.start + 8, 8));
    }
    assert_eq!(total(&m), Moves::default());

    let mut m = Model::new(MARKS..MARKS + 5, vec![], 2);
    for _ in 0..5 {
        mark(&mut m, 0);
        m.feed(Access::Store(0x200, 4));
        mark(&mut m, REMOTE_STEP as u64);
        m.feed(Access::Store(0x200, 4));
    }
    assert_eq!(m.counted_rounds(), 3);
    assert_eq!(total(&m).fetched, 6, "3 counted round trips of a ping-pong");
}

#[test]
fn the_marked_runs_line_is_found_among_its_other_output() {
    let err = "warming up\nfwipc-lines marks=0x4c4d01 stack=0x1ffeffff30 tls=0x4b28048 base=0x108000 end=0x4c8000\n300 marked inline round trips\n";
    let info = parse_run_info(err).expect("the line");
    assert_eq!(
        (info.marks, info.stack, info.tls, info.base, info.end),
        (0x4c_4d01, 0x1f_feff_ff30, 0x4b2_8048, 0x10_8000, 0x4c_8000)
    );
    assert!(parse_run_info("no such line\n").is_none());
    assert!(parse_run_info("fwipc-lines marks=12 stack=0x10\n").is_none());
}

/// `addr2line -a -f -C -i` output: per address its frames, innermost first; the frame shown is
/// the innermost one in the workspace and the next ones out in other files.
#[test]
fn frames_are_grouped_per_address_and_the_workspaces_are_shown() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .display()
        .to_string();
    let text = format!(
        "0x0000000000001000\n\
         core::sync::atomic::atomic_load\n\
         /rustc/0123/library/core/src/sync/atomic.rs:3891\n\
         fwipc_transport_api::fixture::slot_queue::SlotQueue<T>::full_slot\n\
         {root}/transport-api/src/fixture/slot_queue.rs:151\n\
         fwipc_transport_api::fixture::slot_queue::SlotQueue<T>::pop_with\n\
         {root}/transport-api/src/fixture/slot_queue.rs:186\n\
         fwipc_fastrpc::sim::link::take_datagram\n\
         {root}/backend-fastrpc/src/sim/link.rs:57 (discriminator 2)\n\
         0x0000000000002000\n\
         ??\n\
         ??:0\n"
    );
    let frames = parse_addr2line(&text);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].len(), 4);
    assert_eq!(
        pick_frame(&frames[0]).as_deref(),
        Some(
            "transport-api/src/fixture/slot_queue.rs:151 (SlotQueue::full_slot) ← \
             backend-fastrpc/src/sim/link.rs:57 (link::take_datagram)"
        )
    );
    assert_eq!(pick_frame(&frames[1]).as_deref(), Some("??:0 (??)"));
}
