//! The suite against the reference loopback backend.
fwipc_conformance::conformance_tests!(fwipc_conformance::loopback::LoopbackFixture);
