//! End-to-end tests of `m2m certs init`, running the real binary.

mod common;

use common::{fixture, m2m};

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("m2m-certs-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn init_creates_a_ca_and_one_certificate_per_node_and_keeps_existing_files() {
    let dir = scratch_dir("init");
    let out = dir.to_str().expect("utf-8");
    let run = m2m(&["certs", "init", "--domain", "examples/domains/three-node.toml", "--out", out]);
    assert_eq!(run.code, 0, "{run:?}");
    for f in ["ca.pem", "ca.key", "app1.pem", "app1.key", "app2.pem", "app3.key"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(text.contains("-----BEGIN"), "{f} is PEM");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("app1.key")).expect("key").permissions().mode();
        assert_eq!(mode & 0o077, 0, "keys are private: {mode:o}");
    }
    assert!(run.stdout.contains("app1") && run.stdout.contains("issued"), "{run:?}");
    let before = std::fs::read_to_string(dir.join("app2.pem")).expect("cert");
    let again = m2m(&["certs", "init", "--domain", "examples/domains/three-node.toml", "--out", out]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("kept"), "{again:?}");
    assert_eq!(std::fs::read_to_string(dir.join("app2.pem")).expect("cert"), before, "not overwritten");
    // The material loads as a node identity.
    let cfg = replication_core::DomainConfig::parse(
        &std::fs::read_to_string(common::workspace_root().join("examples/domains/three-node.toml"))
            .expect("read"),
        "three-node",
    )
    .expect("parses");
    let pem = replication_core::tls::load_node(&dir, &"app3".into()).expect("loads");
    let cfg = std::sync::Arc::new(cfg);
    replication_core::tls::server_config(&cfg, &"app3".into(), &pem).expect("a usable server identity");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn init_refuses_invalid_and_unreadable_domains() {
    let dir = scratch_dir("refuse");
    let out = dir.to_str().expect("utf-8");
    let run = m2m(&["certs", "init", "--domain", &fixture("invalid-many.toml"), "--out", out]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("error["), "{run:?}");
    let run = m2m(&["certs", "init", "--domain", "no/such/file.toml", "--out", out]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no/such/file.toml"), "{run:?}");
    assert!(!dir.exists(), "nothing written for a bad domain");
    let run = m2m(&["certs", "init", "--out", out]);
    assert_eq!(run.code, 2, "missing --domain: {run:?}");
}

#[test]
fn node_certificates_expire_after_the_days_given_and_one_is_reissued_from_the_ca() {
    let dir = scratch_dir("reissue");
    let out = dir.to_str().expect("utf-8");
    let domain = "examples/domains/three-node.toml";
    let run = m2m(&["certs", "init", "--domain", domain, "--out", out, "--days", "10"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("valid until"), "{run:?}");
    assert!(run.stdout.contains("keep ca.key offline"), "{run:?}");
    let expiry = |node: &str| {
        let pem = std::fs::read_to_string(dir.join(format!("{node}.pem"))).expect("cert");
        let t = replication_core::tls::not_after(&pem).expect("expiry");
        replication_core::tls::days_left(t, std::time::SystemTime::now())
    };
    assert_eq!(expiry("app1"), 9, "10 days from now, less the seconds since");
    let key_before = std::fs::read_to_string(dir.join("app2.key")).expect("key");

    let run = m2m(&["certs", "reissue", "--domain", domain, "--dir", out, "--node", "app2", "--days", "400"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("re-issued") && run.stdout.contains("restart the node"), "{run:?}");
    assert_eq!(expiry("app2"), 399);
    assert_eq!(expiry("app1"), 9, "the other nodes' certificates are left alone");
    assert_ne!(std::fs::read_to_string(dir.join("app2.key")).expect("key"), key_before);

    let run = m2m(&["certs", "reissue", "--domain", domain, "--dir", out, "--node", "nobody"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("nobody"), "{run:?}");
    std::fs::rename(dir.join("ca.key"), dir.join("ca.key.offline")).expect("move the CA key away");
    let run = m2m(&["certs", "reissue", "--domain", domain, "--dir", out, "--node", "app1"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("ca.key"), "{run:?}");
    let run = m2m(&["certs", "init", "--domain", domain, "--out", out, "--days", "0"]);
    assert_eq!(run.code, 2, "{run:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn init_and_reissue_report_as_json() {
    let dir = scratch_dir("json");
    let out = dir.to_str().expect("utf-8");
    let domain = "examples/domains/three-node.toml";
    let json = m2m(&["certs", "init", "--domain", domain, "--out", out, "--format", "json"]).json();
    assert_eq!(json["domain"], "web", "{json}");
    let nodes = json["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{json}");
    for n in nodes {
        assert_eq!(n["state"], "issued", "{n}");
        assert!(n["valid_until"].as_str().is_some_and(|d| d.len() == 10), "{n}");
    }
    assert_eq!(json["admin_token"]["state"], "issued", "{json}");
    let again = m2m(&["certs", "init", "--domain", domain, "--out", out, "--format", "json"]).json();
    assert!(again["nodes"].as_array().expect("nodes").iter().all(|n| n["state"] == "kept"), "{again}");
    let re =
        m2m(&["certs", "reissue", "--domain", domain, "--dir", out, "--node", "app2", "--format", "json"])
            .json();
    assert_eq!((re["node"].as_str(), re["state"].as_str()), (Some("app2"), Some("issued")), "{re}");
    let _ = std::fs::remove_dir_all(&dir);
}
