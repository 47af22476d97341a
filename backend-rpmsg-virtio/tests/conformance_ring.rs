//! The conformance suite against the rpmsg transport over real virtio rings: the driver's
//! `VirtioLink` and the simulated device walking the same ring memory.
fwipc_conformance::conformance_tests!(fwipc_rpmsg_virtio::sim::RpmsgRingFixture);
