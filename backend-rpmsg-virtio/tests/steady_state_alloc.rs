//! Steady-state send/receive allocates nothing on the rpmsg transport and its simulated remote, in both
//! completion modes, over the in-memory queues and over the virtio rings
//! (`fwipc_conformance::alloc_count`).

use fwipc_conformance::alloc_count::{
    steady_state_allocs, steady_state_datagram_allocs, CountingAlloc,
};
use fwipc_rpmsg_virtio::sim::{RpmsgFixture, RpmsgRingFixture};
use fwipc_transport_api::fixture::Fixture;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc::new();

/// One test function so nothing else runs (and allocates) in parallel while counting.
#[test]
fn steady_state_send_receive_allocates_nothing() {
    for &mode in RpmsgFixture::modes() {
        let n = steady_state_allocs::<RpmsgFixture>(&GLOBAL, mode);
        assert_eq!(
            n, 0,
            "{n} heap allocations in 1000 steady-state cycles ({mode:?})"
        );
        let n = steady_state_datagram_allocs::<RpmsgFixture>(&GLOBAL, mode).expect("datagram side");
        assert_eq!(
            n, 0,
            "{n} heap allocations in 1000 steady-state datagram cycles ({mode:?})"
        );
    }
    for &mode in RpmsgRingFixture::modes() {
        let n = steady_state_allocs::<RpmsgRingFixture>(&GLOBAL, mode);
        assert_eq!(
            n, 0,
            "rings: {n} heap allocations in 1000 steady-state cycles ({mode:?})"
        );
    }
}
