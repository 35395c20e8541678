//! The engine conformance suite on the Redis engine, each check on its own
//! redis-server, in real time.

mod common;

use common::TestEngine;

faye_engine::conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    TestEngine::fresh().await
);
