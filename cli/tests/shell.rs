//! What a shell user gets: completion scripts, the manual page, `--format json` on every
//! command that prints a report, and a clear error for a transport this binary lacks.

mod common;

use common::cluster::{Cluster, TIMING};
use common::{m2m, scratch_file};

#[test]
fn completion_scripts_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let run = m2m(&["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {run:?}");
        assert!(run.stdout.len() > 500, "{shell}: a script: {run:?}");
        for command in ["validate", "plan", "node", "status", "session", "demo", "bench", "man"] {
            assert!(run.stdout.contains(command), "{shell}: completes `{command}`");
        }
    }
    // The bash script is valid bash.
    let bash = m2m(&["completions", "bash"]);
    let file = scratch_file("m2m.bash", bash.stdout.as_bytes());
    let check = std::process::Command::new("bash").args(["-n", &file]).output().expect("bash runs");
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));

    let run = m2m(&["completions", "tcsh"]);
    assert_eq!(run.code, 2, "an unknown shell is a bad argument: {run:?}");
}

#[test]
fn the_manual_page_lists_the_commands() {
    let run = m2m(&["man"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with(".ie") || run.stdout.contains(".TH m2m 1"), "troff: {}", run.stdout);
    assert!(run.stdout.contains(".TH m2m 1"), "{}", run.stdout);
    for command in ["validate", "plan", "certs", "node", "status", "session", "demo", "bench", "completions"]
    {
        assert!(run.stdout.contains(&format!("m2m\\-{command}(1)")), "lists `{command}`:\n{}", run.stdout);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("man1");
    let run = m2m(&["man", "--out", out.to_str().expect("UTF-8")]);
    assert_eq!(run.code, 0, "{run:?}");
    for page in ["m2m.1", "m2m-node.1", "m2m-session-get.1"] {
        let text = std::fs::read_to_string(out.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}: {text}");
    }
}

/// `--format json` on the commands that need no running node.
#[test]
fn offline_reports_print_json() {
    for args in [
        &["validate", "examples/domains/three-node.toml", "--format", "json"][..],
        &["plan", "examples/domains/three-node.toml", "--format", "json"],
    ] {
        let run = m2m(args);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.json().is_object(), "{run:?}");
    }
    let run = m2m(&["demo", "--sessions", "60", "--format", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let demo = run.json();
    assert_eq!(demo["sessions_created"], 60, "{demo}");
    assert_eq!(demo["sessions_lost"], 0, "{demo}");
    assert_eq!(demo["killed"], "app1", "{demo}");
    assert_eq!(demo["before"].as_array().map(Vec::len), Some(3), "{demo}");
    assert!(!run.stdout.contains("domain demo:"), "no text besides the document: {run:?}");
}

/// `--format json` on `status` and each `session` command.
#[test]
fn admin_reports_print_json() {
    let mut c = Cluster::new(2, TIMING);
    c.up();
    let status = c.status(0, &["--format", "json"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert_eq!(status.json()["node"], "app1", "{status:?}");

    let run = c.session(0, &["create", "--format", "json", "k=v"]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = run.json()["id"].as_str().expect("an id").to_owned();
    let run = c.session(0, &["set", &id, "k=w", "--format", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.json().is_object(), "{run:?}");
    let run = c.session(0, &["get", &id, "--format", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["attributes"]["k"], "w", "{run:?}");
    let run = c.session(0, &["list", "--format", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["sessions"], serde_json::json!([id]), "{run:?}");
    let run = c.session(0, &["invalidate", &id, "--format", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.json().is_object(), "{run:?}");
    let run = c.session(0, &["get", &id, "--format", "json"]);
    assert_eq!(run.code, 1, "gone: {run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
}

/// A binary built without QUIC (`cargo test -p m2m-cli --no-default-features --features tcp
/// --test shell`) refuses a QUIC domain and `m2m demo --transport quic` with exit 2, naming
/// the cargo feature.
#[cfg(not(feature = "quic"))]
#[test]
fn a_transport_the_binary_lacks_exits_2_naming_the_feature() {
    let domain = scratch_file(
        "quic-domain.toml",
        b"[domain]\nname = \"q\"\ntransport = \"quic\"\n[[node]]\nname = \"a\"\naddress = \"127.0.0.1:7301\"\n",
    );
    let run = m2m(&["node", "--config", &domain, "--name", "a", "--insecure"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("built without the cargo feature `quic`"), "{run:?}");
    let run = m2m(&["demo", "--transport", "quic"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("cargo feature `quic`"), "{run:?}");
}

/// The same for a binary built without TCP.
#[cfg(not(feature = "tcp"))]
#[test]
fn a_tcp_domain_needs_the_tcp_feature() {
    let run = m2m(&["node", "--config", "examples/domains/three-node.toml", "--name", "app1", "--insecure"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("built without the cargo feature `tcp`"), "{run:?}");
}
