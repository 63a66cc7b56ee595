//! End-to-end tests of `m2m validate`, running the real binary.

mod common;

use common::{fixture, m2m, scratch_file};
use serde_json::Value;

fn codes(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("an array of violations")
        .iter()
        .map(|v| v["code"].as_str().expect("each violation has a code").to_owned())
        .collect()
}

#[test]
fn valid_files_exit_0() {
    for file in [
        "examples/domains/three-node.toml".to_owned(),
        fixture("p2p-5-replicas-2.toml"),
        fixture("p2p-3-replicas-1.toml"),
        fixture("client-server.toml"),
    ] {
        let run = m2m(&["validate", &file]);
        assert_eq!(run.code, 0, "{file}: {run:?}");
        assert!(run.stdout.contains("valid"), "{run:?}");
        assert!(!run.all().contains("error"), "{run:?}");
    }
}

#[test]
fn warnings_are_printed_and_exit_0() {
    let run = m2m(&["validate", &fixture("warn-two-node.toml")]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("warning[two-node-peer-to-peer]"), "{run:?}");
    assert!(run.stdout.contains("warning[fewer-backup-holders]"), "{run:?}");
    assert!(run.stdout.contains("members: a, b"), "{run:?}");

    let json = m2m(&["validate", &fixture("warn-two-node.toml"), "--format", "json"]).json();
    assert_eq!(json["valid"], true);
    assert_eq!(codes(&json["errors"]), Vec::<String>::new());
    let warnings = codes(&json["warnings"]);
    assert!(warnings.contains(&"two-node-peer-to-peer".to_owned()), "{json}");
    assert!(warnings.contains(&"fewer-backup-holders".to_owned()), "{json}");
}

#[test]
fn every_broken_rule_is_reported_with_exit_1() {
    let run = m2m(&["validate", &fixture("invalid-many.toml")]);
    assert_eq!(run.code, 1, "{run:?}");
    for code in ["replicas-min", "timing", "duplicate-node-name", "duplicate-address"] {
        assert!(run.stdout.contains(&format!("error[{code}]")), "{code} missing: {run:?}");
    }
    // Members are named, and the sentence is there.
    assert!(run.stdout.contains("members: a (address), b (address)"), "{run:?}");
    assert!(run.stdout.contains("node names must be unique"), "{run:?}");

    let run = m2m(&["validate", &fixture("invalid-client-server-both.toml")]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("error[client-server-forbids-both]"), "{run:?}");
    assert!(run.stdout.contains("error[client-server-needs-server]"), "{run:?}");
    assert!(run.stdout.contains("app1/default"), "{run:?}");
}

#[test]
fn invalid_file_as_json() {
    let run = m2m(&["validate", &fixture("invalid-many.toml"), "--format", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let json = run.json();
    assert_eq!(json["valid"], false);
    assert_eq!(json["file"], fixture("invalid-many.toml"));
    let mut errors = codes(&json["errors"]);
    errors.sort();
    assert_eq!(errors, ["duplicate-address", "duplicate-node-name", "replicas-min", "timing"]);
    let dup = json["errors"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["code"] == "duplicate-address"))
        .expect("duplicate-address");
    assert_eq!(dup["severity"], "error");
    assert_eq!(dup["members"], serde_json::json!(["a (address)", "b (address)"]));
    assert!(dup["message"].as_str().is_some_and(|m| m.contains("127.0.0.1:7101")), "{dup}");
}

#[test]
fn parse_errors_exit_2_with_line_and_column() {
    for (name, line, column, needle) in [
        ("parse-unknown-key.toml", 3, 1, "colour"),
        ("parse-bad-mode.toml", 7, 8, "primary"),
        ("parse-bad-syntax.toml", 1, 8, "]"),
        ("parse-huge-number.toml", 3, 12, "99999999999999999999999"),
    ] {
        let file = fixture(name);
        let run = m2m(&["validate", &file]);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stderr.contains(&format!("{file}:{line}:{column}:")), "{run:?}");
        assert!(run.stderr.contains(&format!("line {line}, column {column}")), "{run:?}");
        assert!(run.stderr.contains(needle), "{run:?}");

        let run = m2m(&["validate", &file, "--format", "json"]);
        assert_eq!(run.code, 2, "{run:?}");
        let json = run.json();
        assert_eq!(json["file"], file);
        assert_eq!(json["valid"], false);
        assert_eq!(json["parse_error"]["line"], line, "{json}");
        assert_eq!(json["parse_error"]["column"], column, "{json}");
        assert!(json["parse_error"]["message"].as_str().is_some_and(|m| m.contains(needle)), "{json}");
    }
}

#[test]
fn empty_file_is_a_parse_error() {
    let run = m2m(&["validate", &fixture("empty.toml")]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("missing field `domain`"), "{run:?}");
}

#[test]
fn missing_file_and_directory_exit_2() {
    let run = m2m(&["validate", "cli/tests/fixtures/no-such-file.toml"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("no-such-file.toml") && run.stderr.contains("cannot read"), "{run:?}");
    let json = m2m(&["validate", "cli/tests/fixtures/no-such-file.toml", "--format", "json"]).json();
    assert!(json["read_error"]["message"].is_string(), "{json}");

    let run = m2m(&["validate", "cli/tests/fixtures"]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn garbage_never_panics() {
    let mut garbage: Vec<u8> = (0..=255u8).collect();
    garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage.bin", garbage),
        ("nul.toml", b"[domain]\nname = \"w\0\"\n".to_vec()),
        ("latin1.toml", b"[domain]\nname = \"caf\xe9\"\n".to_vec()),
        ("deep.toml", "[".repeat(100_000).into_bytes()),
        ("long-line.toml", format!("[domain]\nname = \"{}\"\n", "x".repeat(1_000_000)).into_bytes()),
        ("huge-timeout.toml", b"[domain]\nname='w'\nfailure_timeout_ms = 18446744073709551615\n".to_vec()),
        ("negative.toml", b"[domain]\nname='w'\nreplicas = -5\n[[node]]\nname='a'\naddress='h:1'\n".to_vec()),
    ];
    for (name, bytes) in cases {
        let path = scratch_file(name, &bytes);
        for format in ["text", "json"] {
            let run = m2m(&["validate", &path, "--format", format]);
            assert!(matches!(run.code, 0..=2), "{name}: {run:?}");
            assert!(!run.stderr.contains("panicked"), "{name}: {run:?}");
        }
    }
    // Not UTF-8: a parse error that says where the bad byte is.
    let path = scratch_file("latin1-2.toml", b"[domain]\nname = \"caf\xe9\"\n");
    let run = m2m(&["validate", &path]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains(":2:12:") && run.stderr.contains("UTF-8"), "{run:?}");
}

#[test]
fn bad_arguments_exit_2_with_clap_message() {
    let run = m2m(&["validate"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("FILE"), "{run:?}");

    let run = m2m(&["validate", &fixture("p2p-3-replicas-1.toml"), "--format", "yaml"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("yaml"), "{run:?}");

    let run = m2m(&["frobnicate"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = m2m(&[]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn help_on_every_command() {
    for args in [&["--help"][..], &["validate", "--help"], &["plan", "--help"], &["help", "plan"]] {
        let run = m2m(args);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert!(run.stdout.contains("Usage: m2m"), "{run:?}");
    }
    let top = m2m(&["--help"]).stdout;
    assert!(top.contains("validate") && top.contains("plan"), "{top}");
    assert!(m2m(&["plan", "--help"]).stdout.contains("--fail <NODE>"));
}

/// Every golden domain file of the core through the real binary: exit 0 for `valid/`, 1 for
/// `invalid/` with each expected code in the JSON, 2 with the position for `parse-error/`.
#[test]
fn golden_domain_files() {
    let root = common::workspace_root().join("replication-core/testdata/domains");
    let mut seen = 0;
    for (dir, want_code) in [("valid", 0), ("invalid", 1), ("parse-error", 2)] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("golden dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for path in files {
            let file = path.to_str().expect("utf-8 path").to_owned();
            let text = std::fs::read_to_string(&path).expect("readable");
            let header = |key: &str| {
                text.lines().find_map(|l| l.strip_prefix(&format!("# {key}:"))).map(|s| s.trim().to_owned())
            };
            let run = m2m(&["validate", &file, "--format", "json"]);
            assert_eq!(run.code, want_code, "{file}: {run:?}");
            let json = run.json();
            match dir {
                "parse-error" => {
                    let want = header("parse-error").expect("parse-error header");
                    let pos = want.split(' ').next().expect("position");
                    let got = format!("{}:{}", json["parse_error"]["line"], json["parse_error"]["column"]);
                    assert_eq!(got, pos, "{file}: {json}");
                    // The text form names the file, line and column too.
                    let text_run = m2m(&["validate", &file]);
                    assert!(text_run.all().contains(&format!("{file}:{pos}")), "{text_run:?}");
                }
                _ => {
                    let mut got = codes(&json["errors"]);
                    got.sort();
                    got.dedup();
                    let mut want: Vec<String> = header("errors")
                        .expect("errors header")
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect();
                    want.sort();
                    assert_eq!(got, want, "{file}: {json}");
                    let text_run = m2m(&["validate", &file]);
                    for code in &want {
                        assert!(text_run.stdout.contains(&format!("error[{code}]")), "{file}: {text_run:?}");
                    }
                }
            }
            seen += 1;
        }
    }
    assert!(seen >= 20, "only {seen} golden files");
}

#[test]
fn names_equal_ignoring_case_and_one_socket_written_twice_exit_1() {
    let file = scratch_file(
        "case-and-socket.toml",
        br#"[domain]
name = "web"
[[node]]
name = "app1"
address = "127.0.0.1:7101"
[[node]]
name = "APP1"
address = "127.0.0.1:07101"
[[node]]
name = "app2"
address = "[::1]:7103"
admin = "[0:0:0:0:0:0:0:1]:7103"
"#,
    );
    let run = m2m(&["validate", &file]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("error[names-equal-ignoring-case]"), "{run:?}");
    let json = m2m(&["validate", &file, "--format", "json"]).json();
    let errors = codes(&json["errors"]);
    assert_eq!(errors.iter().filter(|c| *c == "duplicate-address").count(), 2, "{json}");
    assert!(errors.contains(&"names-equal-ignoring-case".to_owned()), "{json}");
}

#[test]
fn hosts_that_resolve_to_one_address_with_one_port_are_a_warning() {
    let file = scratch_file(
        "resolved.toml",
        br#"[domain]
name = "web"
[[node]]
name = "app1"
address = "localhost:7101"
[[node]]
name = "app2"
address = "127.0.0.1:7101"
[[node]]
name = "app3"
address = "127.0.0.1:7103"
"#,
    );
    let run = m2m(&["validate", &file]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("warning[same-resolved-address]"), "{run:?}");
    assert!(run.stdout.contains("app1 (address)") && run.stdout.contains("app2 (address)"), "{run:?}");
}
