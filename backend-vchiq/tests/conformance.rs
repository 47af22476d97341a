conformance::conformance_tests!(backend_vchiq::sim::VchiqFixture);
