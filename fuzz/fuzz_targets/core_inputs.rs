//! The replication core driven by a fuzzer-chosen sequence of inputs; the world and its
//! invariants are `replication_core::harness::fuzz` (shared with the regression tests of what
//! it found, `replication-core/tests/fuzz_repro.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = replication_core::harness::fuzz::run(data);
});
