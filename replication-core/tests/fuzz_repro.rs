//! Inputs found by the `core_inputs` fuzz target, replayed through the same world
//! (`fuzz/core_world.rs`, included here: three nodes, the same domain, the same step decoding
//! and the same invariants after every step) as deterministic regression tests, so
//! `cargo test` covers them without cargo-fuzz.

#![allow(clippy::unwrap_used, missing_docs)]

use replication_core::Role;

#[path = "../../fuzz/core_world.rs"]
#[allow(dead_code, unreachable_pub)]
mod core_world;

use core_world::{NODES, World};

/// `fuzz/repro/core_inputs-ownerless` (docs/reliability.md, finding 3): a claim that reached
/// the owner n2 after its acquirer n1 had given up demoted n2, and n1's release (then the same
/// `Drop` message as "you were replaced") deleted n2's copy; the session stayed without an owner
/// for the 70 s of quiet virtual time that end the input. Every node is up at the end; without
/// any client request, exactly one of them must own the session again, with the newest data.
#[test]
fn late_claim_then_release_leaves_one_owner() {
    let w: World = core_world::run(include_bytes!("../../fuzz/repro/core_inputs-ownerless")).unwrap();
    let s = "n0s6";
    assert!(w.nodes.iter().all(Option::is_some), "every node is up at the end");
    let views: Vec<_> = w.nodes.iter().map(|n| n.as_ref().unwrap().session(s)).collect();
    let dump = format!("{views:#?}");
    let owners: Vec<usize> =
        (0..NODES).filter(|&i| views[i].as_ref().is_some_and(|v| v.role == Role::Owner)).collect();
    assert_eq!(owners.len(), 1, "one owner of {s}:\n{dump}");
    let owner = views[owners[0]].as_ref().unwrap();
    // With the fix, n2 owns the session again soon enough for a later `Invalidate` of the
    // input to reach it; either way the owner holds the session's data.
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
        let _ = core_world::run(&data);
        ran += 1;
    }
    assert!(ran > 0, "no seeds in {dir}");
}
