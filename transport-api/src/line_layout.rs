//! Layout checks for the unit tests: that a word one side writes on every round trip shares no
//! cache line with what the other side reads (docs/benchmarks/changes.md, "The core's written
//! words off the lines the other side reads").

/// The cache-line size the checks assume (x86-64 and AArch64).
const LINE: usize = 64;

/// The lines `size` bytes at offset `at` of a line-aligned struct span.
fn lines(at: usize, size: usize) -> core::ops::RangeInclusive<usize> {
    at / LINE..=(at + size.max(1) - 1) / LINE
}

/// Panics unless the field `name` (`at`, `size` bytes) shares no line with any of `others`
/// (name, offset, size), in a struct aligned to at least a line.
pub(crate) fn assert_alone(name: &str, at: usize, size: usize, others: &[(&str, usize, usize)]) {
    let own = lines(at, size);
    for &(other, o_at, o_size) in others {
        let theirs = lines(o_at, o_size);
        assert!(
            theirs.end() < own.start() || theirs.start() > own.end(),
            "`{other}` (bytes {o_at}..{}) shares a line with `{name}` (bytes {at}..{})",
            o_at + o_size,
            at + size
        );
    }
}
