fwipc_conformance::conformance_tests!(fwipc_fastrpc::sim::FastRpcFixture);
