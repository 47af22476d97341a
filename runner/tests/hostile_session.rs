//! The stateful fuzz targets' body (`fwipc_conformance::session::hostile_session`, run by
//! `fuzz/`'s `*_session` targets) over pseudo-random scripts and the committed seeds, against
//! every backend's simulator: no invariant breaks.

use fwipc_conformance::session::{hostile_session, SessionStats};
use fwipc_conformance::Fixture;
use fwipc_transport_api::fixture::DOUBLE_FETCH;

/// xorshift: reproducible scripts without a dependency.
fn scripts(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let len = 1 + (next() % 512) as usize;
            (0..len).map(|_| next() as u8).collect()
        })
        .collect()
}

/// `fuzz/seeds/<target>/`, where a target's committed seed inputs are.
fn seed_dir(target: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
}

/// The committed seed inputs of `fuzz/seeds/<target>/`.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = seed_dir(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no seeds in {}", dir.display());
    v
}

fn run<F: Fixture>(target: &str, seed: u64) {
    let mut replies = 0;
    for s in seeds(target).iter().chain(&scripts(seed, 24)) {
        let st = hostile_session::<F>(s);
        assert_eq!(st.sent, st.replies + st.failed + st.timed_out, "{st:?}");
        replies += st.replies;
    }
    // The round trip seeds reach the remote and come back: the scripts exercise the backend,
    // not just its refusals.
    assert!(replies >= 2, "{target}: {replies} replies");
}

#[test]
fn scmi_virtio_session() {
    run::<fwipc_scmi_virtio::sim::ScmiFixture>("scmi_virtio_session", 1);
}

#[test]
fn vchiq_session() {
    run::<fwipc_vchiq::sim::VchiqFixture>("vchiq_session", 2);
}

#[test]
fn fastrpc_session() {
    run::<fwipc_fastrpc::sim::FastRpcFixture>("fastrpc_session", 3);
}

#[test]
fn rpmsg_session() {
    run::<fwipc_rpmsg_virtio::sim::RpmsgFixture>("rpmsg_session", 4);
}

/// Scripts that arm the double-fetch fault with random masks (framing words and payload)
/// between round trips, in both modes: whatever the remote rewrites after publishing, no
/// invariant breaks.
fn double_fetch_scripts(seed: u64, n: usize) -> Vec<Vec<u8>> {
    scripts(seed, n)
        .into_iter()
        .map(|r| {
            let mut s = vec![r[0] & 1];
            let mut k = 1;
            let mut byte = || {
                k = (k + 1) % r.len();
                r[k]
            };
            for round in 0..6 {
                if round % 2 == 0 {
                    // DOUBLE_FETCH, a count, four framing-word masks (each zero three times in
                    // four, so payload-only rewrites happen too), a payload mask of 0..8 bytes.
                    let mut g = DOUBLE_FETCH.to_vec();
                    g.push(byte());
                    for _ in 0..4 {
                        let on = byte() % 4 == 0;
                        g.extend((0..4).map(|_| if on { byte() } else { 0 }));
                    }
                    let body = usize::from(byte() % 9);
                    g.extend((0..body).map(|_| byte()));
                    s.extend([8, (g.len() - 1) as u8]);
                    s.extend(g);
                }
                let len = 1 + byte() % 24;
                s.extend([0, len]);
                s.extend((0..len).map(|_| byte()));
                s.extend([2, 0x0f, 4, 0, 5, 0xff, 4, 0]);
            }
            s
        })
        .collect()
}

/// Runs [`double_fetch_scripts`] on `F`; returns the rewritten replies of the polled scripts
/// (there the remote's rewrite always precedes the read, so the count does not depend on
/// scheduling).
fn run_double_fetch<F: Fixture>(seed: u64) -> u32 {
    let mut polled_rewritten = 0;
    for s in double_fetch_scripts(seed, 6) {
        let st = hostile_session::<F>(&s);
        assert_eq!(st.sent, st.replies + st.failed + st.timed_out, "{st:?}");
        if s[0] & 1 == 1 {
            polled_rewritten += st.rewritten;
        }
    }
    polled_rewritten
}

/// A VCHIQ session whose rewrites corrupted the stream (a skipped slot loses the close
/// handshake) shuts down at its 2 s teardown deadline, so this test takes some seconds.
#[test]
fn random_double_fetch_orders_keep_the_invariants() {
    let v = run_double_fetch::<fwipc_vchiq::sim::VchiqFixture>(6);
    let f = run_double_fetch::<fwipc_fastrpc::sim::FastRpcFixture>(7);
    let s = run_double_fetch::<fwipc_scmi_virtio::sim::ScmiFixture>(8);
    // The orders reach the payloads they aim at (VCHIQ and FastRPC rewrite payloads, SCMI not).
    assert!(v > 0 && f > 0, "rewritten replies: vchiq {v}, fastrpc {f}");
    assert_eq!(s, 0, "the SCMI fault rewrites no payload");
}

/// Scripts mostly of datagram operations (op 11 with a non-zero low pair of bits in its
/// argument), between remote steps, round trips and now and then a fault or garbage, in both
/// modes.
fn datagram_scripts(seed: u64, n: usize) -> Vec<Vec<u8>> {
    scripts(seed, n)
        .into_iter()
        .map(|r| {
            let mut s = vec![r[0] & 1];
            for (i, &b) in r.iter().enumerate().skip(1).take(120) {
                let arg = b | 1;
                match i % 16 {
                    // Every few operations, the remote runs.
                    3 | 11 => s.extend([2, 0x07]),
                    7 => s.extend([0, 4, b, b, b, b]),
                    9 => s.extend([4, b]),
                    // Rarely something hostile (which turns the byte-for-byte check off).
                    13 if b < 8 => s.extend([6, b]),
                    15 if b < 4 => s.extend([8, 3, b, b, b, b]),
                    _ => s.extend([11, arg]),
                }
            }
            s
        })
        .collect()
}

/// Runs [`datagram_scripts`] on `F`; returns the datagrams delivered to our endpoints.
fn run_datagrams<F: Fixture>(seed: u64) -> u32 {
    let mut delivered = 0;
    for s in datagram_scripts(seed, 12) {
        let st = hostile_session::<F>(&s);
        assert_eq!(st.sent, st.replies + st.failed + st.timed_out, "{st:?}");
        delivered += st.datagrams;
    }
    delivered
}

/// The datagram operations reach every backend with a datagram side (the remote's datagrams are
/// delivered, so the checks run on real traffic), and no invariant breaks.
#[test]
fn datagram_scripts_keep_the_invariants() {
    let counts = [
        (
            "loopback",
            run_datagrams::<fwipc_conformance::loopback::LoopbackFixture>(11),
        ),
        (
            "rpmsg-virtio",
            run_datagrams::<fwipc_rpmsg_virtio::sim::RpmsgFixture>(12),
        ),
        ("vchiq", run_datagrams::<fwipc_vchiq::sim::VchiqFixture>(13)),
        (
            "scmi-virtio",
            run_datagrams::<fwipc_scmi_virtio::sim::ScmiFixture>(14),
        ),
    ];
    for (name, n) in counts {
        assert!(n > 0, "{name}: no datagram delivered ({counts:?})");
    }
    // FastRPC has no datagram side: the operations are skipped.
    assert_eq!(run_datagrams::<fwipc_fastrpc::sim::FastRpcFixture>(15), 0);
}

/// Runs the committed seed `name` of `target` and returns what the session saw.
fn seed_session<F: Fixture>(target: &str, name: &str) -> SessionStats {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
        .join(name);
    let script = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hostile_session::<F>(&script)
}

/// The double-fetch seeds reach what they aim at: the simulated SCMI device flips bytes of
/// replies it has just published (`SimDevice::rewrite_after_publish`, armed through
/// `inject_garbage` with `DOUBLE_FETCH`), and the driver ends exactly those transfers with an
/// error, once, while the others come back intact (the session checks the invariants). Both seeds
/// run the fixture polled (their first byte is odd): with interrupt completion the fixture's
/// interrupt thread races the rewrite, so which transfers fail would depend on timing (1 run in
/// about 40 under load took all four).
#[test]
fn scmi_virtio_double_fetch_seeds_fail_exactly_the_rewritten_replies() {
    for name in ["double_fetch_header", "double_fetch_status_length"] {
        let st = seed_session::<fwipc_scmi_virtio::sim::ScmiFixture>("scmi_virtio_session", name);
        assert_eq!(
            (st.sent, st.replies, st.failed, st.rewritten),
            (4, 2, 2, 0),
            "{name}: {st:?}"
        );
    }
}

/// The simulated VideoCore rewrites a reply in its slot right after publishing it and ringing
/// the ARM (`DoubleFetch` through `inject_garbage`; polled, so the ARM reads after the rewrite):
/// a rewritten frame length fails exactly that transfer (`BadLength`), a rewritten token leaves
/// the reply unmatched so exactly that transfer times out, a rewritten payload arrives as one
/// consistent copy of the rewrite; the replies before and after come back intact.
#[test]
fn vchiq_double_fetch_seeds_fail_exactly_the_rewritten_replies() {
    for (name, want) in [
        ("double_fetch_frame_length", (3, 2, 1, 0, 0)),
        ("double_fetch_token", (3, 2, 0, 1, 0)),
        ("double_fetch_body", (3, 3, 0, 0, 1)),
    ] {
        let st = seed_session::<fwipc_vchiq::sim::VchiqFixture>("vchiq_session", name);
        assert_eq!(
            (st.sent, st.replies, st.failed, st.timed_out, st.rewritten),
            want,
            "{name}: {st:?}"
        );
    }
}

/// The simulated DSP rewrites the out-buffer of an answer in shared memory right after sending
/// the answer (`DoubleFetch` through `inject_garbage`): the AP, which reads it once when the
/// reply is fetched, delivers exactly the rewritten replies as one consistent copy each, the
/// others intact (interrupt mode: the answer is taken on the DSP's send; polled: at the next
/// poll).
#[test]
fn fastrpc_double_fetch_seeds_rewrite_exactly_the_rewritten_replies() {
    for (name, want) in [
        ("double_fetch_out_buffer", (3, 3, 0, 1)),
        ("double_fetch_polled_two", (4, 4, 0, 2)),
        // The out length rewritten above what was asked (the call fails), then shorter (a
        // shortened copy of the echo), then an untouched round trip.
        ("double_fetch_out_length", (4, 3, 1, 1)),
    ] {
        let st = seed_session::<fwipc_fastrpc::sim::FastRpcFixture>("fastrpc_session", name);
        assert_eq!(
            (st.sent, st.replies, st.failed, st.rewritten),
            want,
            "{name}: {st:?}"
        );
    }
}

#[test]
fn rpmsg_ring_session() {
    run::<fwipc_rpmsg_virtio::sim::RpmsgRingFixture>("rpmsg_ring_session", 5);
}

/// One committed seed of `fuzz/seeds/<target>/`.
fn seed(target: &str, name: &str) -> Vec<u8> {
    let p = seed_dir(target).join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A used element the device publishes for a chain in flight, with a length of its choosing,
/// before it answers the chain: the driver cannot tell it from the real completion (the header
/// it finds is the device's own), so that transfer's reply is not held to the echo. A chain made
/// available after such an element is another matter: the driver refuses the element by its
/// position, and the session still checks that transfer's reply (the `stale_used_element` seed,
/// which fails the session without that check).
#[test]
fn a_forged_completion_is_unchecked_only_for_the_transfers_it_can_reach() {
    type F = fwipc_scmi_virtio::sim::ScmiFixture;
    let st = hostile_session::<F>(&seed(
        "scmi_virtio_session",
        "forged_used_element_overclaims_length",
    ));
    assert_eq!((st.sent, st.replies, st.forgeable), (1, 1, 1), "{st:?}");
    let st = hostile_session::<F>(&seed("scmi_virtio_session", "stale_used_element"));
    assert_eq!(st.forgeable, 0, "{st:?}");
    assert!(st.replies >= 2, "{st:?}");
}
