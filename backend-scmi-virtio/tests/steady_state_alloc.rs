//! The datagram side's steady state allocates nothing (`fwipc_conformance::alloc_count`, every
//! thread counted, the simulated device's included): notifications emitted into the eventq,
//! taken by `poll_rx` into a receive buffer, held and released, in both completion modes.

use fwipc_conformance::alloc_count::{steady_state_datagram_allocs, CountingAlloc};
use fwipc_scmi_virtio::sim::ScmiFixture;
use fwipc_transport_api::fixture::Fixture;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc::new();

/// One test function so nothing else runs (and allocates) in parallel while counting.
#[test]
fn steady_state_datagrams_allocate_nothing() {
    for &mode in ScmiFixture::modes() {
        let n = steady_state_datagram_allocs::<ScmiFixture>(&GLOBAL, mode).expect("datagram side");
        assert_eq!(
            n, 0,
            "{n} heap allocations in 1000 steady-state datagram cycles ({mode:?})"
        );
    }
}
