//! The conformance suite on the memory engine, with paused time.

use faye_engine::MemoryEngine;

faye_engine::conformance_tests!(
    #[tokio::test(start_paused = true)]
    MemoryEngine::new()
);
