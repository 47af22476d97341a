//! The framework bench's callgrind listing parser (`benches/framework/instr.rs`), whose unit tests
//! `cargo test` does not reach in a bench target without the test harness: compiled here so they
//! run with the workspace's tests.

#[allow(dead_code)]
#[path = "../benches/framework/instr.rs"]
mod instr;

use instr::{parse_functions, top_functions, Functions, FEW, MANY};

/// A listing as `callgrind_annotate --auto=no` prints it: counts with percentages, `.` for
/// none, one function under two source files (summed), the totals line skipped.
#[test]
fn a_listing_sums_each_function_over_its_files() {
    let listing = "\
--------------------------------------------------------------------------------
Ir                  Ge
54,639,708 (100.0%) 524,672 (100.0%)  PROGRAM TOTALS
--------------------------------------------------------------------------------
2,859,231 ( 5.23%)       .           /src/shared/region.rs:fwipc_vchiq::engine::poll::<impl fwipc_vchiq::engine::vchiq::Vchiq>::poll
1,838,809 ( 3.37%) 210,319 (40.09%)  /rustc/0123abcd/library/core/src/sync/atomic.rs:fwipc_vchiq::engine::poll::<impl fwipc_vchiq::engine::vchiq::Vchiq>::poll
  936,000 ( 1.71%)       .           /src/transport-api/src/pool.rs:fwipc_transport_api::pool::PoolBuf::write [/target/release/deps/framework]
";
    let f = parse_functions(listing);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(
        f["fwipc_vchiq::engine::poll::<impl fwipc_vchiq::engine::vchiq::Vchiq>::poll"],
        (2_859_231 + 1_838_809, 210_319)
    );
    assert_eq!(f["fwipc_transport_api::pool::PoolBuf::write"], (936_000, 0));
}

/// The per-round-trip difference of two runs, most instructions first, cut to `n`.
#[test]
fn the_top_functions_are_the_growth_per_round_trip() {
    let per = MANY - FEW;
    let few: Functions = [("a".into(), (100, 0)), ("b".into(), (5, 0))].into();
    let many: Functions = [
        ("a".into(), (100 + 30 * per, 2 * per)),
        ("b".into(), (5 + 50 * per, 0)),
        ("setup".into(), (7, 0)),
    ]
    .into();
    let top = top_functions(&few, &many, 2);
    assert_eq!(top, vec![("b".into(), 50.0, 0.0), ("a".into(), 30.0, 2.0)]);
    assert_eq!(top_functions(&few, &many, 1).len(), 1);
}
