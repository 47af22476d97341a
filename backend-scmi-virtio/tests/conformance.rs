fwipc_conformance::conformance_tests!(fwipc_scmi_virtio::sim::ScmiFixture);
