//! End-to-end tests of `m2m plan`, running the real binary.

mod common;

use common::{fixture, m2m, scratch_file};
use serde_json::Value;

const THREE: &str = "examples/domains/three-node.toml";

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn sum(json: &Value, field: &str) -> u64 {
    json["nodes"].as_array().expect("nodes").iter().map(|node| n(&node[field])).sum()
}

fn node<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|node| node["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {json}"))
}

fn plan_json(args: &[&str]) -> Value {
    let mut all = vec!["plan"];
    all.extend_from_slice(args);
    all.extend(["--format", "json"]);
    let run = m2m(&all);
    assert_eq!(run.code, 0, "{run:?}");
    run.json()
}

/// The number in a text line `label: N sessions`.
fn count_line(text: &str, label: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{label}: ")))
        .unwrap_or_else(|| panic!("no `{label}:` line in\n{text}"));
    line[label.len() + 2..]
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

#[test]
fn counts_per_node_add_up_to_the_sessions() {
    for (file, sessions, replicas) in [
        (THREE.to_owned(), 1000, 1),
        (fixture("p2p-5-replicas-2.toml"), 1000, 2),
        (fixture("client-server.toml"), 1000, 1),
        (fixture("p2p-5-replicas-2.toml"), 37, 2),
    ] {
        let json = plan_json(&[&file, "--sessions", &sessions.to_string()]);
        assert_eq!(n(&json["sessions"]), sessions);
        assert_eq!(n(&json["unplaced"]), 0);
        assert_eq!(sum(&json, "owns"), sessions, "{json}");
        assert_eq!(sum(&json, "failover_target_for"), sessions, "{json}");
        assert_eq!(sum(&json, "backups"), sessions * replicas, "{json}");
        assert!(json["after_failure"].is_null(), "{json}");
        assert_eq!(json["failed"], serde_json::json!([]));
        // Nothing is piled on one node: every owner gets a fair share of 1000.
        if sessions == 1000 {
            for nd in json["nodes"].as_array().expect("nodes") {
                if nd["mode"] != "server" {
                    assert!(n(&nd["owns"]) > 100, "{nd}");
                }
            }
        }
    }
}

#[test]
fn default_is_1000_sessions_and_the_text_table_matches_the_json() {
    let run = m2m(&["plan", THREE]);
    assert_eq!(run.code, 0, "{run:?}");
    let json = plan_json(&[THREE]);
    assert_eq!(n(&json["sessions"]), 1000);
    let text = run.stdout;
    assert!(text.contains("1000 synthetic session(s)"), "{text}");
    for name in ["app1", "app2", "app3"] {
        let nd = node(&json, name);
        let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}:\n{text}"));
        let cells: Vec<&str> = line.split_whitespace().collect();
        let expected = [&nd["owns"], &nd["backups"], &nd["failover_target_for"]].map(|v| n(v).to_string());
        assert_eq!(cells, [name, "both", &expected[0], &expected[1], &expected[2]], "{text}");
    }
    let total = text.lines().find(|l| l.starts_with("total")).expect("a total row");
    assert_eq!(total.split_whitespace().collect::<Vec<_>>(), ["total", "1000", "1000", "1000"], "{text}");
    // Placement is deterministic: the same file gives the same plan.
    assert_eq!(m2m(&["plan", THREE]).stdout, text);
}

#[test]
fn five_nodes_two_replicas_two_failed_loses_nothing() {
    let file = fixture("p2p-5-replicas-2.toml");
    let run = m2m(&["plan", &file, "--fail", "a", "--fail", "c"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("lost: 0 sessions"), "{}", run.stdout);
    assert!(run.stdout.contains("failed: a, c"), "{}", run.stdout);
    assert!(count_line(&run.stdout, "under-replicated") > 0, "{}", run.stdout);

    let json = plan_json(&[&file, "--fail", "a", "--fail", "c"]);
    let after = &json["after_failure"];
    assert_eq!(n(&after["lost"]), 0, "{json}");
    assert_eq!(n(&after["orphaned"]), 0, "{json}");
    // Every session has an owner after failover, none on a failed node.
    assert_eq!(sum(&json, "owns_after"), 1000, "{json}");
    for failed in ["a", "c"] {
        let nd = node(&json, failed);
        assert_eq!(nd["failed"], true);
        assert_eq!(n(&nd["owns_after"]), 0);
        assert_eq!(n(&nd["backups_after"]), 0);
    }
    // What moved is what the failed nodes owned, and it went to live nodes.
    let moved = n(&after["ownership_moved"]);
    assert_eq!(moved, n(&node(&json, "a")["owns"]) + n(&node(&json, "c")["owns"]), "{json}");
    let to: u64 = after["moved_to"].as_object().expect("moved_to").values().map(n).sum();
    assert_eq!(to, moved, "{json}");
    assert!(after["moved_to"].get("a").is_none() && after["moved_to"].get("c").is_none(), "{json}");
    // Text shows the same per-new-owner counts.
    for (owner, count) in after["moved_to"].as_object().expect("moved_to") {
        assert!(run.stdout.contains(&format!("  to {owner}: {}", n(count))), "{}", run.stdout);
    }
    // Three survivors can hold two backups of every session again.
    assert_eq!(n(&after["below_target_after_recovery"]), 0);
    assert_eq!(sum(&json, "backups_after"), 2000, "{json}");
    assert!(n(&after["without_backup"]) <= n(&after["under_replicated"]));
}

#[test]
fn one_replica_two_failed_loses_sessions() {
    let file = fixture("p2p-3-replicas-1.toml");
    let run = m2m(&["plan", &file, "--fail", "a", "--fail", "b"]);
    assert_eq!(run.code, 0, "{run:?}");
    let lost = count_line(&run.stdout, "lost");
    assert!(lost > 0, "{}", run.stdout);

    let json = plan_json(&[&file, "--fail", "a", "--fail", "b"]);
    let after = &json["after_failure"];
    assert_eq!(n(&after["lost"]), lost);
    // Every session is either owned by the survivor or lost.
    assert_eq!(sum(&json, "owns_after") + lost + n(&after["orphaned"]), 1000, "{json}");
    assert_eq!(n(&node(&json, "c")["owns_after"]), 1000 - lost);
    // The lone survivor cannot hold backups of its own sessions.
    assert_eq!(n(&after["below_target_after_recovery"]), 1000 - lost, "{json}");
}

#[test]
fn every_node_failed_loses_everything() {
    let json = plan_json(&[THREE, "--fail", "app1", "--fail", "app2", "--fail", "app3", "--sessions", "50"]);
    assert_eq!(n(&json["after_failure"]["lost"]), 50, "{json}");
    assert_eq!(sum(&json, "owns_after"), 0);
}

#[test]
fn client_server_failover_moves_sessions_to_live_clients() {
    let file = fixture("client-server.toml");
    let json = plan_json(&[&file, "--fail", "web1"]);
    let after = &json["after_failure"];
    assert_eq!(n(&after["lost"]), 0, "{json}");
    assert_eq!(n(&after["ownership_moved"]), n(&node(&json, "web1")["owns"]));
    assert_eq!(n(&after["moved_to"]["web2"]), n(&after["ownership_moved"]), "{json}");
    assert_eq!(n(&node(&json, "web2")["owns_after"]), 1000);
    assert_eq!(sum(&json, "backups"), 1000, "only servers hold backups");
    assert_eq!(n(&node(&json, "web1")["backups"]), 0);
    // At run time a client takes a session over only when a request for it arrives.
    assert_eq!(after["ownership_moves"], "on-request", "{json}");
    let run = m2m(&["plan", &file, "--fail", "web1"]);
    assert!(run.stdout.contains("ownership moves on request:"), "{run:?}");
    assert!(!run.stdout.contains("ownership moved:"), "{run:?}");
    let p2p = plan_json(&[THREE, "--fail", "app1"]);
    assert_eq!(p2p["after_failure"]["ownership_moves"], "at-once", "{p2p}");

    // A client and a server together: sessions whose owner and only backup both failed are lost.
    let json = plan_json(&[&file, "--fail", "web1", "--fail", "store1"]);
    let lost = n(&json["after_failure"]["lost"]);
    assert!(lost > 0, "{json}");
    assert_eq!(sum(&json, "owns_after") + lost, 1000, "{json}");
}

#[test]
fn unknown_fail_node_exits_2_listing_the_nodes() {
    for format in ["text", "json"] {
        let run = m2m(&["plan", THREE, "--fail", "app1", "--fail", "app9", "--format", format]);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.contains("app9"), "{run:?}");
        assert!(run.stderr.contains("app1, app2, app3"), "{run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
    }
}

#[test]
fn invalid_and_unparseable_domains() {
    let run = m2m(&["plan", &fixture("invalid-client-server-both.toml")]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.all().contains("client-server-forbids-both"), "{run:?}");
    assert!(run.all().contains("client-server-needs-server"), "{run:?}");

    let run = m2m(&["plan", &fixture("invalid-many.toml"), "--format", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(run.json()["valid"], false);
    assert!(run.stdout.contains("duplicate-node-name"), "{run:?}");

    let run = m2m(&["plan", &fixture("parse-unknown-key.toml")]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("parse-unknown-key.toml:3:1:"), "{run:?}");

    let path = scratch_file("plan-garbage.bin", &[0xff, 0xfe, 0, 1, 2, 0x80, b'[', b'\n']);
    let run = m2m(&["plan", &path, "--fail", "x"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!run.stderr.contains("panicked"), "{run:?}");

    let run = m2m(&["plan", "cli/tests/fixtures/missing.toml"]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn warnings_do_not_stop_the_plan() {
    let run = m2m(&["plan", &fixture("warn-two-node.toml"), "--fail", "a", "--sessions", "20"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("warning[two-node-peer-to-peer]"), "{run:?}");
    assert!(run.stdout.contains("lost: 0 sessions"), "{run:?}");
    let json = plan_json(&[&fixture("warn-two-node.toml"), "--sessions", "20"]);
    assert!(json["warnings"].as_array().is_some_and(|w| !w.is_empty()), "{json}");
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["plan"][..],
        &["plan", THREE, "--sessions", "-1"],
        &["plan", THREE, "--sessions", "many"],
        &["plan", THREE, "--sessions", "99999999999999999999999"],
        &["plan", THREE, "--sessions", "1000001"],
        &["plan", THREE, "--fail"],
        &["plan", THREE, "--format", "xml"],
        &["plan", THREE, "--colour"],
    ] {
        let run = m2m(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.contains("error:") && run.stderr.contains("--help"), "{run:?}");
        assert!(!run.stderr.contains("panicked"), "{run:?}");
    }
    // Zero sessions is allowed: an empty plan.
    let json = plan_json(&[THREE, "--sessions", "0"]);
    assert_eq!(sum(&json, "owns"), 0);
}

#[test]
fn sessions_without_a_possible_owner_are_reported_unplaced() {
    let file = fixture("client-server-no-client.toml");
    let run = m2m(&["plan", &file, "--sessions", "10"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("warning[client-server-no-client]"), "{run:?}");
    assert!(run.stdout.contains("unplaced: 10 session(s)"), "{run:?}");
    let json = plan_json(&[&file, "--sessions", "10", "--fail", "store1"]);
    assert_eq!(n(&json["unplaced"]), 10, "{json}");
    assert_eq!(sum(&json, "owns"), 0);
    assert_eq!(n(&json["after_failure"]["lost"]), 0, "{json}");
}
