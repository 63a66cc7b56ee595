//! Bad arguments and bad files give clear errors and exit codes, never panics.

mod common;

use common::cluster::free_addr;
use common::{Run, m2m};

const DOMAIN: &str = "examples/domains/local-cluster.toml";

fn clean(run: &Run) {
    assert!(!run.stderr.contains("panicked"), "{run:?}");
}

#[test]
fn node_argument_errors_exit_2() {
    let run = m2m(&["node", "--config", DOMAIN, "--insecure"]);
    assert_eq!(run.code, 2, "missing --name: {run:?}");
    assert!(run.stderr.contains("--name"), "{run:?}");

    let run = m2m(&["node", "--config", DOMAIN, "--name", "app9", "--insecure"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("unknown node `app9`") && run.stderr.contains("app1, app2, app3"), "{run:?}");

    let run = m2m(&["node", "--config", DOMAIN, "--name", "app1", "--insecure", "--certs", "certs"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("cannot be used with"), "{run:?}");

    let run = m2m(&["node", "--config", DOMAIN, "--name", "app1"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--certs DIR") && run.stderr.contains("--insecure"), "{run:?}");

    let run = m2m(&["node", "--config", "no/such/domain.toml", "--name", "app1", "--insecure"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no/such/domain.toml"), "{run:?}");

    let run =
        m2m(&["node", "--config", "cli/tests/fixtures/parse-unknown-key.toml", "--name", "a", "--insecure"]);
    assert_eq!(run.code, 2, "{run:?}");

    let run = m2m(&["node", "--config", "cli/tests/fixtures/invalid-many.toml", "--name", "a", "--insecure"]);
    assert_eq!(run.code, 1, "a domain breaking rules: {run:?}");
    assert!(run.stderr.contains("error["), "{run:?}");

    let run = m2m(&["node", "--config", DOMAIN, "--name", "app1", "--certs", "no/such/certs"]);
    assert_eq!(run.code, 2, "no admin token: {run:?}");
    assert!(run.stderr.contains("no/such/certs/admin.token") && run.stderr.contains("certs init"), "{run:?}");
    let run =
        m2m(&["node", "--config", DOMAIN, "--name", "app1", "--certs", "no/such/certs", "--admin-no-auth"]);
    assert_eq!(run.code, 1, "unreadable certificates: {run:?}");
    assert!(run.stderr.contains("no/such/certs"), "{run:?}");
    clean(&run);
    let run = m2m(&[
        "node",
        "--config",
        DOMAIN,
        "--name",
        "app1",
        "--insecure",
        "--admin-token-file",
        "no/such/token",
    ]);
    assert_eq!(run.code, 2, "unreadable token file: {run:?}");
    assert!(run.stderr.contains("no/such/token"), "{run:?}");
}

#[test]
fn session_argument_errors() {
    let admin = free_addr();
    let run = m2m(&["session", "create", "--admin", &admin, "novalue"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("KEY=VALUE"), "{run:?}");
    let run = m2m(&["session", "set", "--admin", &admin, "some.id", "=v"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = m2m(&["session", "set", "--admin", &admin, "some.id"]);
    assert_eq!(run.code, 2, "set without attributes: {run:?}");
    let run = m2m(&["session", "get", "--admin", &admin]);
    assert_eq!(run.code, 2, "get without id: {run:?}");

    // Nothing listens there: exit 1 and say so.
    let run = m2m(&["session", "get", "--admin", &admin, "some.id"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(&format!("cannot reach the admin API at {admin}")), "{run:?}");
    let run = m2m(&["status", "--admin", &admin]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("cannot reach the admin API"), "{run:?}");
    let run = m2m(&["status", "--admin", "no-such-host.invalid:1"]);
    assert_eq!(run.code, 1, "{run:?}");
    clean(&run);
    let run = m2m(&["status", "--admin", &admin, "--format", "yaml"]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn demo_argument_errors() {
    let run = m2m(&["demo", "--nodes", "1"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = m2m(&["demo", "--transport", "udp"]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn every_command_has_help_with_exit_codes() {
    let run = m2m(&["--help"]);
    assert_eq!(run.code, 0, "{run:?}");
    for want in ["node", "status", "session", "demo", "Exit codes", "3  a write"] {
        assert!(run.stdout.contains(want), "missing `{want}`: {}", run.stdout);
    }
    for cmd in [
        &["node", "--help"][..],
        &["status", "--help"],
        &["session", "--help"],
        &["session", "create", "--help"],
        &["session", "set", "--help"],
        &["session", "get", "--help"],
        &["session", "invalidate", "--help"],
        &["demo", "--help"],
        &["validate", "--help"],
        &["plan", "--help"],
        &["certs", "init", "--help"],
    ] {
        let run = m2m(cmd);
        assert_eq!(run.code, 0, "{cmd:?}: {run:?}");
        assert!(run.stdout.contains("Usage: m2m"), "{cmd:?}: {run:?}");
    }
    let run = m2m(&["session", "set", "--help"]);
    assert!(run.stdout.contains("Exit codes") && run.stdout.contains("3 the write"), "{run:?}");
}
