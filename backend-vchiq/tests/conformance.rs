fwipc_conformance::conformance_tests!(fwipc_vchiq::sim::VchiqFixture);
