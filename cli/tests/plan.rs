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

// `m2m plan --from OLD --to NEW`.

/// A peer-to-peer domain file `web` with these nodes (`n<i>` listening on port 7100 + i) and
/// `replicas`, plus `extra` lines in `[domain]`, written to a scratch file named `name`.
fn domain_file(name: &str, nodes: &[u16], replicas: u32, extra: &str) -> String {
    let mut text = format!("[domain]\nname = \"web\"\nreplicas = {replicas}\n{extra}\n");
    for i in nodes {
        text += &format!("[[node]]\nname = \"n{i}\"\naddress = \"127.0.0.1:{}\"\n", 7100 + i);
    }
    scratch_file(name, text.as_bytes())
}

fn change_json(from: &str, to: &str) -> Value {
    plan_json(&["--from", from, "--to", to])
}

/// The counts of a change's `classes` (before, during_min, during_max, after, removed_first).
fn classes(json: &Value) -> Vec<([u64; 5], u64)> {
    json["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| {
            let k = ["before", "during_min", "during_max", "after", "removed_first"].map(|f| n(&c[f]));
            (k, n(&c["sessions"]))
        })
        .collect()
}

#[test]
fn scale_out_3_to_4_moves_a_third_of_the_backups_to_the_new_node() {
    let three = domain_file("change-3.toml", &[1, 2, 3], 1, "");
    let four = domain_file("change-4.toml", &[1, 2, 3, 4], 1, "");
    let json = change_json(&three, &four);
    assert_eq!(json["allowed"], true);
    assert_eq!(json["added"], serde_json::json!(["n4"]));
    assert_eq!(json["removed"], serde_json::json!([]));
    assert_eq!(n(&json["sessions"]), 1000);
    // Owners stay where the sessions were created; the new node takes backups only.
    assert_eq!(n(&json["owner_moved"]["count"]), 0, "{json}");
    let moved = n(&json["backups_changed"]["count"]);
    // Rendezvous hashing: the new node is the best of three backup candidates for a third.
    assert!((280..=390).contains(&moved), "{json}");
    assert_eq!(json["backups_changed"]["share"].as_f64(), Some(moved as f64 / 1000.0));
    assert_eq!(n(&json["unchanged"]["count"]), 1000 - moved, "{json}");
    let n4 = node(&json, "n4");
    assert_eq!(nd_fields(n4), ["added", "0", "0", "0", &moved.to_string(), &moved.to_string(), "0"]);
    for kept in ["n1", "n2", "n3"] {
        assert_eq!(node(&json, kept)["change"], "kept");
        assert_eq!(n(&node(&json, kept)["make"]), 0, "{json}");
    }
    assert_eq!(sum(&json, "drop"), moved);
    assert_eq!((n(&json["copies_to_make"]), n(&json["copies_to_drop"])), (moved, moved));
    assert_eq!((n(&json["copies_before"]), n(&json["copies_after"])), (2000, 2000));
    assert_eq!(n(&json["fewer_copies"]), 0);
    assert_eq!(classes(&json), [([2, 2, 3, 2, 2], moved), ([2, 2, 2, 2, 2], 1000 - moved)]);

    let run = m2m(&["plan", "--from", &three, "--to", &four]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("nodes added: n4; removed: none"), "{}", run.stdout);
    assert_eq!(count_line(&run.stdout, "owner moves"), 0);
    assert_eq!(count_line(&run.stdout, "backups change"), moved);
    assert_eq!(count_line(&run.stdout, "fewer copies than before"), 0);
    assert!(run.stdout.contains("copies made before old ones are dropped"), "{}", run.stdout);
    assert!(run.stdout.contains("  1. start the added nodes\n"), "{}", run.stdout);
    assert!(!run.stdout.contains("if-removed-leave-first"), "nothing is removed: {}", run.stdout);
    let row = run.stdout.lines().find(|l| l.starts_with("n4 ")).expect("a row for n4");
    let moved = moved.to_string();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["n4", "added", "0", "0", "0", &moved, &moved, "0"]
    );
    // The sample ids are seeded: the same files give the same plan.
    assert_eq!(m2m(&["plan", "--from", &three, "--to", &four]).stdout, run.stdout);
}

/// A node row's cells as the text table shows them, after the name.
fn nd_fields(nd: &Value) -> [String; 7] {
    let c = |f: &str| n(&nd[f]).to_string();
    [
        nd["change"].as_str().expect("change").to_owned(),
        c("owns_before"),
        c("owns_after"),
        c("copies_before"),
        c("copies_after"),
        c("make"),
        c("drop"),
    ]
}

#[test]
fn replicas_1_to_2_makes_a_copy_of_every_session_and_2_to_1_drops_one() {
    let one = domain_file("change-r1.toml", &[1, 2, 3], 1, "");
    let two = domain_file("change-r2.toml", &[1, 2, 3], 2, "");
    let up = change_json(&one, &two);
    assert_eq!(up["replicas"], serde_json::json!({ "from": "1", "to": "2" }));
    assert_eq!((n(&up["copies_to_make"]), n(&up["copies_to_drop"])), (1000, 0), "{up}");
    assert_eq!((n(&up["copies_before"]), n(&up["copies_after"])), (2000, 3000));
    // The first backup (the failover target) stays; a second one is added.
    assert_eq!(n(&up["failover_target_changed"]["count"]), 0, "{up}");
    assert_eq!(n(&up["owner_moved"]["count"]), 0);
    assert_eq!(n(&up["fewer_copies"]), 0);
    assert_eq!(classes(&up), [([2, 2, 3, 3, 2], 1000)]);

    let down = change_json(&two, &one);
    assert_eq!((n(&down["copies_to_make"]), n(&down["copies_to_drop"])), (0, 1000), "{down}");
    assert_eq!(n(&down["failover_target_changed"]["count"]), 0, "{down}");
    assert_eq!(n(&down["fewer_copies"]), 1000);
    assert_eq!(classes(&down), [([3, 2, 3, 2, 3], 1000)]);
    let run = m2m(&["plan", "--from", &two, "--to", &one]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(count_line(&run.stdout, "fewer copies than before"), 1000, "{}", run.stdout);
    assert!(run.stdout.contains("NEW keeps fewer copies"), "{}", run.stdout);
}

#[test]
fn a_removed_node_hands_its_sessions_to_their_failover_targets() {
    let four = domain_file("change-rm-4.toml", &[1, 2, 3, 4], 1, "");
    let three = domain_file("change-rm-3.toml", &[1, 2, 3], 1, "");
    let json = change_json(&four, &three);
    assert_eq!(json["removed"], serde_json::json!(["n4"]));
    let n4 = node(&json, "n4");
    assert_eq!(n4["change"], "removed");
    let (owned, held) = (n(&n4["owns_before"]), n(&n4["copies_before"]));
    assert_eq!(owned, 250, "sessions are created on the four nodes in turn: {json}");
    assert_eq!((n(&n4["owns_after"]), n(&n4["copies_after"]), n(&n4["drop"])), (0, 0, held));
    // Its sessions go to their failover targets, which already hold them.
    assert_eq!(n(&json["owner_moved"]["count"]), owned, "{json}");
    assert_eq!(sum(&json, "owns_after"), 1000);
    // Every copy it held is made again on a node that stays, and nothing else moves.
    assert_eq!((n(&json["copies_to_make"]), n(&json["copies_to_drop"])), (held, held), "{json}");
    assert_eq!(n(&json["fewer_copies"]), 0);
    // Had it left before the new copies were made, those sessions would be down to one copy.
    assert_eq!(n(&json["fewer_copies_if_removed_first"]), held, "{json}");
    assert_eq!(n(&json["lost_if_removed_first"]), 0);
    assert!(classes(&json).contains(&([2, 2, 3, 2, 1], held)), "{json}");
    let run = m2m(&["plan", "--from", &four, "--to", &three]);
    assert!(
        run.stdout.contains(&format!(
            "if the removed nodes leave before the new copies are made: {held} sessions (0 with no copy left)"
        )),
        "{}",
        run.stdout
    );

    // Two of four removed with one replica: some sessions had both copies on removed nodes.
    let two = domain_file("change-rm-2.toml", &[1, 2], 1, "");
    let json = change_json(&four, &two);
    assert!(n(&json["lost_if_removed_first"]) > 0, "{json}");
    assert_eq!(n(&json["fewer_copies"]), 0, "{json}");
    assert_eq!(n(&json["orphaned"]), 0);
}

#[test]
fn a_change_that_cannot_be_made_online_is_refused_naming_the_rule() {
    let base = domain_file("change-base.toml", &[1, 2, 3], 1, "");
    for (extra, rule, says) in [
        ("transport = \"quic\"", "change-transport", "changes the transport (`quic`"),
        ("closed_link_detection = false", "change-transport", "closed_link_detection false"),
        (
            "topology = \"client-server\"",
            "change-topology",
            "the new file is client-server, the running domain is peer-to-peer",
        ),
    ] {
        let to = if rule == "change-topology" {
            let text = format!(
                "[domain]\nname = \"web\"\n{extra}\n[[node]]\nname = \"n1\"\naddress = \"127.0.0.1:7101\"\n\
                 mode = \"client\"\n[[node]]\nname = \"n2\"\naddress = \"127.0.0.1:7102\"\nmode = \"server\"\n"
            );
            scratch_file("change-refused-topology.toml", text.as_bytes())
        } else {
            domain_file(&format!("change-refused-{rule}-{}.toml", extra.len()), &[1, 2, 3], 1, extra)
        };
        let run = m2m(&["plan", "--from", &base, "--to", &to]);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
        assert!(run.stderr.contains("refused: this change cannot be made online"), "{run:?}");
        assert!(run.stderr.contains(&format!("error[{rule}]: ")) && run.stderr.contains(says), "{run:?}");

        let run = m2m(&["plan", "--from", &base, "--to", &to, "--format", "json"]);
        assert_eq!(run.code, 1, "{run:?}");
        let json = run.json();
        assert_eq!(json["allowed"], false);
        let codes: Vec<&str> =
            json["refused"].as_array().expect("refused").iter().filter_map(|v| v["code"].as_str()).collect();
        // A topology change also changes the modes of the nodes that stay.
        assert_eq!(codes.first(), Some(&rule), "{json}");
        assert!(codes.iter().all(|c| *c == rule || *c == "change-node-mode"), "{json}");
    }
    // A renamed domain, with everything else at once.
    let shop = scratch_file(
        "change-refused-name.toml",
        b"[domain]\nname = \"shop\"\ntransport = \"quic\"\n[[node]]\nname = \"n1\"\naddress = \"127.0.0.1:7101\"\n",
    );
    let run = m2m(&["plan", "--from", &base, "--to", &shop]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(
            "error[change-domain-name]: the new file names domain `shop`, the running domain is `web`"
        ),
        "{run:?}"
    );
    assert!(run.stderr.contains("error[change-transport]"), "{run:?}");
    // Timeouts may change online.
    let slower = domain_file("change-timeouts.toml", &[1, 2, 3], 1, "request_timeout_ms = 9000");
    let json = change_json(&base, &slower);
    assert_eq!(n(&json["unchanged"]["count"]), 1000, "{json}");
}

#[test]
fn change_with_a_bad_file_exits_like_validate() {
    let good = domain_file("change-good.toml", &[1, 2, 3], 1, "");
    let invalid = fixture("invalid-many.toml");
    let unparseable = fixture("parse-unknown-key.toml");
    let missing = "cli/tests/fixtures/missing.toml".to_owned();
    for (from, to, code, says) in [
        (&good, &invalid, 1, "duplicate-node-name"),
        (&invalid, &good, 1, "duplicate-node-name"),
        (&good, &unparseable, 2, "parse-unknown-key.toml:3:1:"),
        (&missing, &good, 2, "missing.toml"),
    ] {
        for format in ["text", "json"] {
            let run = m2m(&["plan", "--from", from, "--to", to, "--format", format]);
            assert_eq!(run.code, code, "{run:?}");
            assert!(!run.stderr.contains("panicked"), "{run:?}");
            if format == "json" {
                assert_eq!(run.json()["valid"], false, "{run:?}");
            } else {
                assert!(run.stdout.is_empty() && run.stderr.contains(says), "{run:?}");
            }
        }
    }
    for args in [
        &["plan", "--from", &good][..],
        &["plan", "--to", &good],
        &["plan", &good, "--from", &good, "--to", &good],
        &["plan", "--from", &good, "--to", &good, "--fail", "n1"],
        &["plan", "--from", &good, "--to", &good, "--sessions", "1000001"],
    ] {
        let run = m2m(args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(run.stderr.contains("error:"), "{run:?}");
    }
}

#[test]
fn change_in_a_client_server_domain() {
    let cs = fixture("client-server.toml");
    let text = std::fs::read_to_string(common::workspace_root().join(&cs)).expect("fixture");
    let more = text + "\n[[node]]\nname = \"store3\"\naddress = \"127.0.0.1:7203\"\nmode = \"server\"\n";
    let more = scratch_file("change-cs-store3.toml", more.as_bytes());
    let json = change_json(&cs, &more);
    assert_eq!(n(&json["owner_moved"]["count"]), 0, "{json}");
    let store3 = node(&json, "store3");
    assert_eq!(n(&store3["owns_after"]), 0);
    assert!(n(&store3["make"]) > 200, "{json}");
    assert_eq!(n(&store3["make"]), n(&json["copies_to_make"]));
    for client in ["web1", "web2"] {
        assert_eq!(n(&node(&json, client)["make"]), 0, "{json}");
    }
}

#[test]
fn the_readme_sample_of_a_change_is_what_the_binary_prints() {
    let readme = std::fs::read_to_string(common::workspace_root().join("README.md")).expect("README.md");
    let command = "m2m plan --from examples/domains/three-node.toml --to examples/domains/four-node.toml";
    let sample = readme
        .split(&format!("$ {command}\n"))
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a README sample of the change from three-node.toml to four-node.toml");
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let run = m2m(&args);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, sample, "update the README sample");
}
