//! Inputs found by the `core_inputs` fuzz target, replayed through the same world
//! (`replication_core::harness::fuzz`: three nodes, the same domain, the same step decoding and
//! the same invariants after every step) as deterministic regression tests, so `cargo test`
//! covers them without cargo-fuzz.

#![allow(clippy::unwrap_used, missing_docs)]

use replication_core::Role;
use replication_core::harness::fuzz::{self, NODES, World};
use replication_core::harness::world::Engine;

/// `fuzz/repro/core_inputs-ownerless`: a claim reaches the owner n2 after its acquirer n1 has
/// given up, and n1 then releases the session; 70 s of quiet virtual time end the input. Every
/// node is up at the end; without any client request, exactly one of them owns the session,
/// with the newest data (a late claim and a release never leave a session without an owner).
#[test]
fn late_claim_then_release_leaves_one_owner() {
    let w: World = fuzz::run(include_bytes!("../../fuzz/repro/core_inputs-ownerless")).unwrap();
    let s = "n0s6";
    assert!(w.engines.iter().all(Engine::is_up), "every node is up at the end");
    let views: Vec<_> = w.engines.iter().map(|e| e.node.as_ref().unwrap().session(s)).collect();
    let dump = format!("{views:#?}");
    let owners: Vec<usize> =
        (0..NODES).filter(|&i| views[i].as_ref().is_some_and(|v| v.role == Role::Owner)).collect();
    assert_eq!(owners.len(), 1, "one owner of {s}:\n{dump}");
    let owner = views[owners[0]].as_ref().unwrap();
    // The owner holds the session's data, or the input's later `Invalidate` reached it.
    assert!(owner.invalidated || owner.attrs.contains_key("k"), "the created attribute is there: {dump}");
    // The owner continues from the newest copy: nothing held anywhere is newer.
    for v in views.iter().flatten() {
        assert!(v.version <= owner.version, "{dump}");
    }
    // ... and its backup holds the owner's state.
    for (b, held) in &owner.backups {
        assert!(held, "backup {b} holds the current version: {dump}");
        let i = w.names.iter().position(|n| n == b).unwrap();
        let bv = views[i].as_ref().unwrap();
        assert_eq!((bv.epoch.as_ref(), bv.version), (owner.epoch.as_ref(), owner.version), "{dump}");
    }
}

/// The fuzz target's seed inputs keep the invariants (checked after every step by `run`).
#[test]
fn every_seed_keeps_the_invariants() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/core_inputs");
    let mut ran = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let _ = fuzz::run(&data);
        ran += 1;
    }
    assert!(ran > 0, "no seeds in {dir}");
}
