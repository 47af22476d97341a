conformance::conformance_tests!(backend_scmi_virtio::sim::ScmiFixture);
