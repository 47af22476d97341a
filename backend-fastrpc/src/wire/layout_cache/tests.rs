use super::*;
use crate::wire::layout::{BufSource, NOT_INLINE};
use proptest::prelude::*;

const IMAGE: usize = 4096;
const VA: [u64; 2] = [0x7F00_0000_0000, 0x7F00_0000_2000];
const BUS: [u64; 2] = [0x1_8000_0000, 0x1_8000_1000];

fn copy(ptr: u64, len: u64) -> BufDesc {
    BufDesc {
        ptr,
        len,
        src: BufSource::Copy,
    }
}

/// The calls a sequence is made of: shapes that differ in one input each (order, overlap,
/// lengths, a mapped buffer, a handle, too large), so a cache that compares too little hands one
/// the other's layout.
fn shapes() -> Vec<(Scalars, Vec<BufDesc>, Vec<HandleDesc>)> {
    let two = Scalars::new(3, 1, 1, 0, 0).unwrap();
    let handle = HandleDesc {
        fd: 7,
        offset: 0,
        len: 4096,
        map: Some((0x1_9000_0000, 4096)),
    };
    vec![
        (two, vec![copy(0x1000, 10), copy(0x2000, 64)], vec![]),
        // The same lengths, the other address order.
        (two, vec![copy(0x2000, 10), copy(0x1000, 64)], vec![]),
        // Overlapping: the second shares bytes with the first.
        (two, vec![copy(0x1000, 100), copy(0x1040, 100)], vec![]),
        // One length different.
        (two, vec![copy(0x1000, 11), copy(0x2000, 64)], vec![]),
        // Another method: the same layout, other scalars.
        (
            Scalars::new(4, 1, 1, 0, 0).unwrap(),
            vec![copy(0x1000, 10), copy(0x2000, 64)],
            vec![],
        ),
        // A mapped in-buffer.
        (
            two,
            vec![
                BufDesc {
                    ptr: 0x5000_0010,
                    len: 32,
                    src: BufSource::Mapped {
                        bus: 0x1_A000_0000,
                        va_start: 0x5000_0000,
                        size: 4096,
                    },
                },
                copy(0x2000, 64),
            ],
            vec![],
        ),
        // An in-handle.
        (
            Scalars::new(3, 1, 1, 1, 0).unwrap(),
            vec![copy(0x1000, 10), copy(0x2000, 64)],
            vec![handle],
        ),
        // Too large for the image: an error, and no layout kept.
        (two, vec![copy(0x1000, 10), copy(0x9000, 8192)], vec![]),
    ]
}

/// What one call returns: the result, and on success the metadata and the inline offsets.
type Outcome = (Result<Placed>, Vec<u8>, Vec<u64>);

fn fresh(sc: Scalars, bufs: &[BufDesc], handles: &[HandleDesc], va: u64, bus: u64) -> Outcome {
    let mut image = vec![0xEEu8; IMAGE];
    let mut scratch = vec![Olap::default(); bufs.len()];
    let mut off = vec![0u64; bufs.len()];
    let r = layout(
        sc,
        bufs,
        handles,
        &mut scratch,
        &mut image,
        va,
        bus,
        &mut off,
    );
    let meta = r
        .as_ref()
        .map_or(Vec::new(), |p| image[..p.metalen].to_vec());
    (r, meta, off)
}

#[derive(Debug, Clone)]
enum Op {
    /// Lay out shape `.0` at AP address `VA[.1]` and bus address `BUS[.2]`.
    Call(usize, usize, usize),
    /// `Session::finish` read a DSP's fd list of these words into the image.
    FdList(Vec<u64>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..shapes().len(), 0..2usize, 0..2usize).prop_map(|(s, a, b)| Op::Call(s, a, b)),
        1 => proptest::collection::vec(1..u64::MAX, 1..16).prop_map(Op::FdList),
    ]
}

proptest! {
    /// Over any sequence of calls and fd lists read back, the kept layout gives exactly what a
    /// layout into a fresh image gives: the result, the metadata bytes, the inline offsets.
    #[test]
    fn a_kept_layout_is_what_a_fresh_one_writes(ops in proptest::collection::vec(op(), 1..40)) {
        let shapes = shapes();
        let mut cache = LayoutCache::with_capacity(4);
        let mut image = vec![0u8; IMAGE];
        let mut last_sc = None;
        for op in ops {
            match op {
                Op::Call(s, a, b) => {
                    let (sc, bufs, handles) = &shapes[s];
                    let mut scratch = vec![Olap::default(); bufs.len()];
                    let mut off = vec![0u64; bufs.len()];
                    let r = cache
                        .layout(
                            *sc, bufs, handles, &mut scratch, &mut image, VA[a], BUS[b], &mut off,
                        )
                        .map(|(p, _)| p);
                    let (want, want_meta, want_off) = fresh(*sc, bufs, handles, VA[a], BUS[b]);
                    prop_assert_eq!(&r, &want);
                    if let Ok(p) = r {
                        prop_assert_eq!(&image[..p.metalen], &want_meta[..]);
                        prop_assert_eq!(&off, &want_off);
                        last_sc = Some(*sc);
                    }
                }
                Op::FdList(words) => {
                    // Where `Session::finish` puts them: the fd list of the last call's
                    // metadata.
                    if let Some(sc) = last_sc {
                        let m = MetaOffsets::new(sc.len());
                        for (k, w) in words.iter().enumerate() {
                            image[m.fdlist + 8 * k..m.fdlist + 8 * k + 8]
                                .copy_from_slice(&w.to_le_bytes());
                        }
                    }
                }
            }
        }
    }
}

/// A cache, its image and the per-call scratch, as a payload lease and its context hold them.
struct Rig {
    cache: LayoutCache,
    image: Vec<u8>,
    scratch: Vec<Olap>,
    off: Vec<u64>,
}

impl Rig {
    fn new(max_args: usize) -> Self {
        Rig {
            cache: LayoutCache::with_capacity(max_args),
            image: vec![0u8; IMAGE],
            scratch: vec![Olap::default(); 2],
            off: vec![0u64; 2],
        }
    }

    /// Lay out `shape` at the first address pair.
    fn call(
        &mut self,
        (sc, bufs, handles): &(Scalars, Vec<BufDesc>, Vec<HandleDesc>),
    ) -> Result<(Placed, Laid)> {
        let Rig {
            cache,
            image,
            scratch,
            off,
        } = self;
        cache.layout(*sc, bufs, handles, scratch, image, VA[0], BUS[0], off)
    }
}

#[test]
fn a_repeated_call_is_kept_and_its_fd_list_zeroed_again() {
    let shape = shapes().swap_remove(0);
    let mut rig = Rig::new(4);
    let (first, laid) = rig.call(&shape).unwrap();
    assert_eq!(laid, Laid::Fresh);
    let m = MetaOffsets::new(shape.0.len());
    // The DSP's list as `Session::finish` reads it back: two fds, then the terminator.
    rig.image[m.fdlist..m.fdlist + 8].copy_from_slice(&9u64.to_le_bytes());
    rig.image[m.fdlist + 8..m.fdlist + 16].copy_from_slice(&5u64.to_le_bytes());
    // Offsets overwritten and a scratch left as it is: a kept layout fills the offsets itself
    // and does not run the engine.
    rig.off.fill(NOT_INLINE);
    let scratch_before = rig.scratch.clone();
    let (again, laid) = rig.call(&shape).unwrap();
    assert_eq!(first, again);
    assert_eq!(
        laid,
        Laid::Kept { fd_words: 2 },
        "the list's two words, to be zeroed in the region too"
    );
    assert_eq!(
        rig.call(&shape).unwrap().1,
        Laid::Kept { fd_words: 0 },
        "nothing read back since: nothing to refresh"
    );
    assert_eq!(
        rig.scratch, scratch_before,
        "the engine did not run: the layout was kept"
    );
    assert_eq!(rig.off, [512, 640]);
    assert!(
        rig.image[m.fdlist..m.crclist].iter().all(|&b| b == 0),
        "fd list zeroed"
    );
}

#[test]
fn a_failed_layout_forgets_the_kept_one() {
    let shapes = shapes();
    let mut rig = Rig::new(4);
    rig.call(&shapes[0]).unwrap();
    assert!(rig.call(&shapes[shapes.len() - 1]).is_err());
    assert_eq!(rig.cache.placed, None);
}

#[test]
fn calls_beyond_the_reserved_capacity_are_laid_out_but_not_kept() {
    let mut rig = Rig::new(1);
    rig.call(&shapes()[0]).unwrap();
    assert_eq!(rig.cache.placed, None);
    assert_eq!(rig.cache.bufs.capacity(), 1, "no allocation");
}
