//! Layout checks for tests: that a word one side writes on every round trip shares no cache line
//! with what the other side reads (docs/benchmarks/changes.md, "The core's written words off the
//! lines the other side reads"). The core's own unit tests use it, and backends' tests reach it
//! as [`crate::fixture::assert_line_alone`].

/// The cache-line size the checks assume (x86-64 and AArch64).
const LINE: usize = 64;

/// The lines `size` bytes at offset `at` of a line-aligned struct span.
fn lines(at: usize, size: usize) -> core::ops::RangeInclusive<usize> {
    at / LINE..=(at + size.max(1) - 1) / LINE
}

/// Panics unless the field `name` (`at`, `size` bytes) shares no 64-byte cache line with any of
/// `others` (name, offset, size), in a struct aligned to at least a line. A field listed in
/// `others` under `name` itself is skipped, so one list of a struct's fields serves every check.
///
/// ```
/// use core::mem::{offset_of, size_of};
/// use fwipc_transport_api::fixture::assert_line_alone;
/// use fwipc_transport_api::sync::CachePadded;
///
/// #[repr(C)]
/// struct Shared {
///     read_by_the_remote: u64,
///     written_every_round_trip: CachePadded<u64>,
/// }
/// let fields = [
///     ("read_by_the_remote", offset_of!(Shared, read_by_the_remote), size_of::<u64>()),
///     ("written_every_round_trip", offset_of!(Shared, written_every_round_trip), size_of::<u64>()),
/// ];
/// let (name, at, size) = fields[1];
/// assert_line_alone(name, at, size, &fields);
/// ```
pub fn assert_alone(name: &str, at: usize, size: usize, others: &[(&str, usize, usize)]) {
    let own = lines(at, size);
    for &(other, o_at, o_size) in others.iter().filter(|o| o.0 != name) {
        let theirs = lines(o_at, o_size);
        assert!(
            theirs.end() < own.start() || theirs.start() > own.end(),
            "`{other}` (bytes {o_at}..{}) shares a line with `{name}` (bytes {at}..{})",
            o_at + o_size,
            at + size
        );
    }
}
