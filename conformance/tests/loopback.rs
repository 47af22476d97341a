//! The suite against the reference loopback backend.
conformance::conformance_tests!(conformance::loopback::LoopbackFixture);
