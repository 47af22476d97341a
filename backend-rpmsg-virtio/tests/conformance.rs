//! The conformance suite against the rpmsg transport and its simulated remote.
fwipc_conformance::conformance_tests!(fwipc_rpmsg_virtio::sim::RpmsgFixture);
