//! Several session managers per node, end to end: real node processes whose domain file
//! declares `cart` and `profile` on every node, sessions through the admin API and
//! `m2m session --manager`, one node SIGKILLed.

mod common;

use common::cluster::{Cluster, TIMING, eventually};

/// A three-node cluster whose nodes each declare `cart` and `profile`.
fn cluster() -> Cluster {
    let c = Cluster::new(3, TIMING);
    let text = std::fs::read_to_string(&c.domain).expect("domain file");
    let text = text.replace("[[node]]\n", "[[node]]\nmanagers = { cart = \"both\", profile = \"both\" }\n");
    std::fs::write(&c.domain, text).expect("domain file");
    c
}

/// `m2m session get --manager M ID` through node `i` until it answers (a failover may
/// still run); `None` when the node says there is no such session.
fn get(c: &Cluster, i: usize, manager: &str, id: &str) -> Option<String> {
    eventually(20, &format!("{manager}/{id} readable through {}", c.names[i]), || {
        let run = c.session(i, &["get", "--manager", manager, id]);
        match run.code {
            0 => Some(Some(run.stdout)),
            _ if run.stderr.contains("no session") => Some(None),
            _ => None,
        }
    })
}

#[test]
fn two_managers_keep_the_same_ids_apart_through_a_killed_node() {
    let mut c = cluster();
    c.up();
    let ids = ["u1", "u2", "u3", "u4"];
    for id in ids {
        for m in ["cart", "profile"] {
            let run = c.session(0, &["create", "--manager", m, "--id", id, &format!("owner={m}-{id}")]);
            assert_eq!((run.code, run.stdout.trim()), (0, id), "{run:?}\n{}", c.outputs());
        }
    }
    // The same id again in one manager is refused; the anonymous manager does not have it.
    let run = c.session(0, &["create", "--manager", "cart", "--id", "u1"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("409"), "{run:?}");
    assert_eq!(get(&c, 0, "cart", "u1").as_deref(), Some("owner=cart-u1\n"));
    let run = c.session(0, &["get", "u1"]);
    assert_ne!(run.code, 0, "the anonymous manager has no u1: {run:?}");
    // An undeclared manager is named in the answer.
    let run = c.session(0, &["get", "--manager", "orders", "u1"]);
    assert!(
        run.code != 0 && run.stderr.contains("orders") && run.stderr.contains("cart, profile"),
        "{run:?}"
    );
    // Listing is per manager.
    let run = c.session(0, &["list", "--manager", "profile"]);
    assert_eq!(run.stdout, "u1\nu2\nu3\nu4\n", "{run:?}");
    // Per-manager counts in `m2m status` (JSON and text).
    let status = c.status(0, &["--format", "json"]).json();
    assert_eq!(status["managers"]["cart"]["owned"], 4, "{status}");
    assert_eq!(status["managers"]["profile"]["owned"], 4, "{status}");
    assert_eq!(status["manager_refused"], 0, "every node's file declares both: {status}");
    let text = c.status(0, &[]).stdout;
    assert!(text.contains("cart") && text.contains("profile"), "{text}");
    // ... and a `manager` label in /metrics.
    let (code, body) = c.http(0, "GET", "/metrics", &[], "");
    assert_eq!(code, 200);
    assert!(
        body.lines().any(|l| l.starts_with("m2m_manager_sessions_owned")
            && l.contains("manager=\"cart\"")
            && l.ends_with(" 4")),
        "{body}"
    );

    // The owner dies without leaving: both managers' sessions are read back on survivors.
    c.kill(0);
    for (i, id) in ids.iter().enumerate() {
        let node = 1 + i % 2;
        for m in ["cart", "profile"] {
            assert_eq!(get(&c, node, m, id), Some(format!("owner={m}-{id}\n")), "{}", c.outputs());
        }
    }
    // Invalidating in one manager leaves the other's session alone.
    let run = c.session(1, &["invalidate", "--manager", "cart", "u2"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(get(&c, 2, "cart", "u2"), None);
    assert_eq!(get(&c, 2, "profile", "u2").as_deref(), Some("owner=profile-u2\n"));
    let (code, body) = c.http(2, "GET", "/managers/profile/sessions/u2", &[], "");
    assert_eq!(code, 200, "{body}");
}

#[test]
fn plan_lists_the_managers_of_the_example_file() {
    let run = common::m2m(&["plan", "examples/domains/two-modules.toml", "--format", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let plan = run.json();
    assert_eq!(plan["managers"]["app2"], serde_json::json!(["cart", "profile"]), "{plan}");
    let run = common::m2m(&["plan", "examples/domains/two-modules.toml"]);
    assert!(run.stdout.contains("session managers") && run.stdout.contains("cart, profile"), "{run:?}");
    // A file without managers says nothing of them.
    let run = common::m2m(&["plan", "examples/domains/three-node.toml", "--format", "json"]);
    assert!(run.json().get("managers").is_none(), "{run:?}");
}

#[test]
fn demo_spreads_sessions_over_managers_and_reads_them_all_back() {
    let run = common::m2m(&["demo", "--sessions", "200", "--managers", "cart,profile", "--format", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["managers"], serde_json::json!(["cart", "profile"]));
    let per = &report["read_back_per_manager"];
    let (cart, profile) = (per["cart"].as_u64().unwrap_or(0), per["profile"].as_u64().unwrap_or(0));
    assert!(cart >= 90 && profile >= 90 && cart + profile == 200, "{report}");
    assert_eq!(report["sessions_lost"], 0);
}

/// The README's section on session managers names the example file, and its `m2m validate`
/// and `m2m plan` commands run as shown.
#[test]
fn the_readme_section_runs() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let section =
        readme.split("## Several session managers per node\n").nth(1).expect("the README has the section");
    let section = section.split("\n## ").next().unwrap_or(section);
    assert!(section.contains("examples/domains/two-modules.toml"));
    let mut ran = 0;
    for line in section.lines().filter(|l| l.starts_with("m2m validate") || l.starts_with("m2m plan")) {
        let command = line.split('#').next().unwrap_or(line);
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let run = common::m2m(&args);
        assert_eq!(run.code, 0, "README: {line}\n{run:?}");
        ran += 1;
    }
    assert_eq!(ran, 2);
}
