//! The linearizability check of recorded histories (`common/history.rs`, `stateright`'s
//! `LinearizabilityTester`) on histories made here: it passes linearizable ones, with
//! concurrent and indeterminate operations, and fails planted anomalies (a stale read after a
//! newer acknowledged write, an invalidated session that comes back, an indeterminate write seen
//! and then gone), shrinking each to its few operations that fail; and it fails two session
//! histories recorded from real nodes by the fault matrix (`fixtures/histories/`).
//!
//! `M2M_HISTORY_FILE=PATH cargo test -p m2m-cli --test history_checker -- --nocapture
//! recheck_a_recorded_history` checks a history the fault matrix wrote and prints the timeline of
//! every failing session.

mod common;

use std::collections::BTreeMap;

use common::history::{self, Attrs, Entry, Op, Outcome, Ret};

fn attrs(pairs: &[(&str, &str)]) -> Attrs {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// An operation of client `client` on session `s1` from `from` to `to` microseconds.
fn op(client: u64, from: u64, to: u64, op: Op, outcome: Outcome) -> Entry {
    Entry {
        session: "s1".into(),
        client,
        node: format!("app{}", client % 3 + 1),
        op,
        invoke_us: from,
        complete_us: to,
        outcome,
        status: 200,
        detail: String::new(),
    }
}

fn create(client: u64, from: u64, to: u64) -> Entry {
    op(client, from, to, Op::Create { attrs: attrs(&[("c", "0")]) }, Outcome::Done(Ret::Ok))
}

fn set(client: u64, from: u64, to: u64, k: &str, v: &str, outcome: Outcome) -> Entry {
    op(client, from, to, Op::Set { key: k.into(), value: v.into() }, outcome)
}

fn get(client: u64, from: u64, to: u64, seen: &[(&str, &str)]) -> Entry {
    op(client, from, to, Op::Get, Outcome::Done(Ret::Value(attrs(seen))))
}

const OK: Outcome = Outcome::Done(Ret::Ok);

#[test]
fn a_linearizable_history_with_concurrent_and_indeterminate_operations_passes() {
    let h = vec![
        create(0, 0, 10),
        // Two concurrent writes, and a read overlapping both that sees one of them.
        set(1, 20, 40, "a", "1", OK),
        set(2, 25, 45, "b", "2", OK),
        get(0, 30, 50, &[("c", "0"), ("b", "2")]),
        get(0, 60, 70, &[("c", "0"), ("a", "1"), ("b", "2")]),
        // A write without an answer that a later read sees, and one nobody sees.
        set(1, 80, 90, "x", "1", Outcome::Unknown),
        set(2, 85, 95, "y", "1", Outcome::Unknown),
        get(0, 200, 210, &[("c", "0"), ("a", "1"), ("b", "2"), ("x", "1")]),
        // A refused write took no effect.
        set(1, 220, 230, "z", "1", Outcome::Failed),
        get(2, 240, 250, &[("c", "0"), ("a", "1"), ("b", "2"), ("x", "1")]),
        op(1, 260, 270, Op::Invalidate, OK),
        op(2, 280, 290, Op::Get, Outcome::Done(Ret::NotFound)),
        set(0, 300, 310, "a", "2", Outcome::Done(Ret::NotFound)),
    ];
    assert!(history::linearizable(&h));
    let verdict = history::check(&h);
    assert_eq!((verdict.sessions, verdict.ops, verdict.violations.len()), (1, h.len(), 0));
}

#[test]
fn a_stale_read_after_a_newer_acknowledged_write_fails_and_shrinks_to_it() {
    let h = vec![
        create(0, 0, 10),
        set(1, 20, 30, "a", "1", OK),
        get(2, 35, 45, &[("c", "0"), ("a", "1")]),
        set(1, 50, 60, "b", "1", OK),
        set(0, 70, 80, "a", "2", OK),
        get(2, 75, 85, &[("c", "0"), ("a", "2"), ("b", "1")]),
        // Invoked after `a=2` was acknowledged: `a=1` is stale.
        get(1, 90, 100, &[("c", "0"), ("a", "1"), ("b", "1")]),
        get(2, 110, 120, &[("c", "0"), ("a", "2"), ("b", "1")]),
    ];
    assert!(!history::linearizable(&h));
    let verdict = history::check(&h);
    assert_eq!(verdict.violations.len(), 1);
    let shrunk = &verdict.violations[0].shrunk;
    // What is left: the create, the two writes of `a` (and `b=1`, which the stale read sees),
    // and the stale read itself.
    let ops: Vec<&Op> = shrunk.iter().map(|e| &e.op).collect();
    assert_eq!(shrunk.len(), 5, "{}", history::timeline(shrunk));
    assert!(ops.contains(&&Op::Set { key: "a".into(), value: "2".into() }));
    assert_eq!(shrunk.last().map(|e| e.invoke_us), Some(90));
    let report = history::violations_report(&verdict);
    assert!(report.contains("shortest failing sub-history (5 of 8 operations)"), "{report}");
    assert!(report.contains("set a=2"), "{report}");
}

#[test]
fn the_same_stale_read_concurrent_with_the_write_passes() {
    // The read starts before the write of `a=2` is acknowledged: it may come first.
    let h = vec![
        create(0, 0, 10),
        set(1, 20, 30, "a", "1", OK),
        set(0, 70, 80, "a", "2", OK),
        get(1, 75, 100, &[("c", "0"), ("a", "1")]),
    ];
    assert!(history::linearizable(&h));
}

#[test]
fn an_acknowledged_invalidation_that_comes_back_fails() {
    let h = vec![
        create(0, 0, 10),
        set(1, 20, 30, "a", "1", OK),
        op(2, 40, 50, Op::Invalidate, OK),
        get(0, 60, 70, &[("c", "0"), ("a", "1")]),
    ];
    assert!(!history::linearizable(&h));
    // Unacknowledged, the invalidation may not have happened.
    let mut unknown = h.clone();
    unknown[2].outcome = Outcome::Unknown;
    assert!(history::linearizable(&unknown));
}

#[test]
fn an_indeterminate_write_seen_and_then_gone_fails() {
    let h = vec![
        create(0, 0, 10),
        set(1, 20, 30, "x", "1", Outcome::Unknown),
        get(2, 40, 50, &[("c", "0"), ("x", "1")]),
        get(0, 60, 70, &[("c", "0")]),
    ];
    assert!(!history::linearizable(&h));
    assert_eq!(history::shrink(&h).len(), 4);
}

#[test]
fn sessions_are_checked_one_by_one() {
    let mut h = vec![create(0, 0, 10), get(1, 20, 30, &[("c", "0")])];
    let mut other = vec![create(2, 5, 15), set(2, 16, 18, "a", "1", OK), get(1, 40, 50, &[("c", "0")])];
    for e in &mut other {
        e.session = "s2".into();
    }
    h.append(&mut other);
    let verdict = history::check(&h);
    assert_eq!(verdict.sessions, 2);
    let failing: Vec<&str> = verdict.violations.iter().map(|v| v.session.as_str()).collect();
    assert_eq!(failing, ["s2"]);
}

#[test]
fn a_history_file_round_trips() {
    let h = vec![
        create(0, 0, 10),
        set(1, 20, 30, "a", "1", Outcome::Unknown),
        get(2, 40, 50, &[("c", "0"), ("a", "1")]),
        op(1, 60, 70, Op::Invalidate, Outcome::Failed),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("h.jsonl");
    history::write_jsonl(&file, &h).expect("write");
    assert_eq!(history::read_jsonl(&file).expect("read"), h);
    let line = std::fs::read_to_string(&file).expect("read").lines().nth(1).map(str::to_owned);
    let v: serde_json::Value = serde_json::from_str(&line.expect("a second line")).expect("JSON");
    assert_eq!(
        (v["op"].as_str(), v["key"].as_str(), v["outcome"].as_str()),
        (Some("set"), Some("a"), Some("unknown"))
    );
}

#[test]
fn admin_answers_map_to_outcomes() {
    use serde_json::json;
    let set = Op::Set { key: "a".into(), value: "1".into() };
    let cases = [
        (200, json!({ "replication": "replicated" }), Outcome::Done(Ret::Ok)),
        (200, json!({ "replication": "unreplicated" }), Outcome::Unknown),
        (504, json!({ "kind": "not-acknowledged" }), Outcome::Unknown),
        (0, json!("no answer in time"), Outcome::Unknown),
        (0, json!("connect failed"), Outcome::Failed),
        (503, json!({ "error": "unavailable" }), Outcome::Failed),
        (404, json!({ "error": "not-found" }), Outcome::Done(Ret::NotFound)),
    ];
    for (status, body, want) in cases {
        assert_eq!(history::outcome(&set, status, &body).0, want, "{status} {body}");
    }
    let read = json!({ "attributes": { "c": "0" } });
    assert_eq!(history::outcome(&Op::Get, 200, &read).0, Outcome::Done(Ret::Value(attrs(&[("c", "0")]))));
}

/// Histories the fault matrix recorded from real nodes (one session each, 22 operations), in
/// which the checker found a stale read: a cut-off owner answering with its old state
/// (`tcp-oneway`), and an owner a restarted node took a session from (`quic-rolling`).
#[test]
fn stale_reads_recorded_from_real_nodes_fail() {
    for (name, stale_read_at_us) in
        [("tcp-oneway-stale-owner.jsonl", 4_517_767), ("quic-rolling-rejoin.jsonl", 3_871_949)]
    {
        let file = common::workspace_root().join("cli/tests/fixtures/histories").join(name);
        let entries = history::read_jsonl(&file).expect("a recorded history");
        assert_eq!(entries.len(), 22, "{name}");
        let verdict = history::check(&entries);
        assert_eq!(verdict.violations.len(), 1, "{name}");
        let shrunk = &verdict.violations[0].shrunk;
        assert!(shrunk.len() <= 5, "{name}: {}", history::timeline(shrunk));
        // The failing read is the one the fault matrix reported.
        let last = shrunk.iter().max_by_key(|e| e.invoke_us).expect("a failing sub-history");
        assert_eq!((last.invoke_us, &last.op), (stale_read_at_us, &Op::Get), "{name}");
        // Without that read, the rest is linearizable.
        let without: Vec<Entry> =
            entries.iter().filter(|e| e.invoke_us != stale_read_at_us).cloned().collect();
        assert!(history::linearizable(&without), "{name}");
    }
}

#[test]
fn recheck_a_recorded_history() {
    let Some(file) = std::env::var_os("M2M_HISTORY_FILE") else { return };
    let entries = history::read_jsonl(std::path::Path::new(&file)).expect("a history file");
    let verdict = history::check(&entries);
    let by_outcome = entries.iter().fold(BTreeMap::<&str, usize>::new(), |mut m, e| {
        let k = match e.outcome {
            Outcome::Done(_) => "answered",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        };
        *m.entry(k).or_default() += 1;
        m
    });
    eprintln!(
        "{} operations {by_outcome:?} on {} sessions (at most {} on one); {} not linearizable",
        verdict.ops,
        verdict.sessions,
        verdict.longest,
        verdict.violations.len()
    );
    eprint!("{}", history::violations_report(&verdict));
    assert!(verdict.violations.is_empty());
}
