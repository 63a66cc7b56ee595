//! The replication core driven by a fuzzer-chosen sequence of inputs; the world and its
//! invariants are in `fuzz/core_world.rs` (shared with the regression tests of what it found).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../core_world.rs"]
mod core_world;

fuzz_target!(|data: &[u8]| {
    let _ = core_world::run(data);
});
