conformance::conformance_tests!(backend_fastrpc::sim::FastRpcFixture);
