//! Golden files: every domain file under `testdata/domains` gives exactly the rule codes its
//! header names, and the placement table under `testdata/placement` is reproduced exactly.
//!
//! Regenerate the placement tables with `M2M_BLESS=1 cargo test -p replication-core --test golden`
//! (only when a placement change is intended: it moves sessions between nodes on upgrade).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use replication_core::placement::Placement;
use replication_core::validate::validate;
use replication_core::{DomainConfig, Error, NodeId};

fn files(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no golden files in {}", root.display());
    v
}

fn header(text: &str, key: &str) -> Option<String> {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&format!("# {key}:")).map(|s| s.trim().to_owned()))
}

fn codes(list: &str) -> BTreeSet<String> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[test]
fn domain_files_give_their_rule_codes() {
    let mut checked = 0;
    for sub in ["domains/valid", "domains/invalid"] {
        for path in files(sub) {
            let text = std::fs::read_to_string(&path).expect("readable");
            let name = path.display().to_string();
            let want_errors =
                codes(&header(&text, "errors").unwrap_or_else(|| panic!("{name}: no errors header")));
            let want_warnings =
                codes(&header(&text, "warnings").unwrap_or_else(|| panic!("{name}: no warnings header")));
            assert_eq!(sub.ends_with("valid") && !sub.ends_with("invalid"), want_errors.is_empty(), "{name}");
            let cfg = DomainConfig::parse(&text, &name).unwrap_or_else(|e| panic!("{e}"));
            let report = validate(&cfg);
            let got_errors: BTreeSet<String> = report.errors().map(|v| v.code.to_owned()).collect();
            let got_warnings: BTreeSet<String> = report.warnings().map(|v| v.code.to_owned()).collect();
            assert_eq!(got_errors, want_errors, "{name}: errors\n{report}");
            assert_eq!(got_warnings, want_warnings, "{name}: warnings\n{report}");
            for v in &report.violations {
                assert!(v.message.len() > 20, "{name}: a sentence, not a code: {v}");
            }
            // Load agrees with validate.
            assert_eq!(DomainConfig::load(&text, &name).is_ok(), want_errors.is_empty(), "{name}");
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} golden domain files");
}

#[test]
fn violations_name_their_members() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/domains/invalid/p2p-with-client.toml");
    let text = std::fs::read_to_string(path).expect("readable");
    let report = validate(&DomainConfig::parse(&text, "p2p").expect("parses"));
    let v = report.errors().next().expect("one error");
    assert_eq!(v.members, vec!["b/default", "c/default"]);
    assert!(v.message.contains("peer-to-peer") && v.message.contains("`both`"), "{}", v.message);
}

#[test]
fn parse_errors_give_position_and_reason() {
    for path in files("domains/parse-error") {
        let text = std::fs::read_to_string(&path).expect("readable");
        let name = path.display().to_string();
        let want = header(&text, "parse-error").unwrap_or_else(|| panic!("{name}: no parse-error header"));
        let (pos, needle) = want.split_once(' ').unwrap_or((want.as_str(), ""));
        let (l, c) = pos.split_once(':').expect("LINE:COLUMN");
        let (want_line, want_col): (usize, usize) = (l.parse().expect("line"), c.parse().expect("column"));
        match DomainConfig::parse(&text, &name) {
            Err(Error::Parse { line, column, message, origin }) => {
                assert_eq!(origin, name);
                assert_eq!((line, column), (want_line, want_col), "{name}: {message}");
                assert!(message.contains(needle.trim()), "{name}: {message:?} lacks {needle:?}");
            }
            other => panic!("{name}: expected a parse error, got {other:?}"),
        }
    }
}

/// The placement of 12 sessions in the golden domain files, as a table.
fn placement_table(cfg_path: &Path) -> String {
    let text = std::fs::read_to_string(cfg_path).expect("readable");
    let cfg = DomainConfig::parse(&text, "golden").expect("parses");
    let p = Placement::new(&cfg);
    let first = cfg.nodes.first().map(|n| n.name.clone()).expect("a node");
    let mut out = String::from(
        "# session  home  backups(all up)  failover_owner(home down)  backups(first node down)\n",
    );
    for i in 1..=12 {
        let s = format!("s-{i:06}");
        let home = p.home(&s, |_| true).expect("an owner");
        let backups = p.backups(&s, &home, |_| true);
        let fo = p.failover_owner(&s, &home, |n| n != &home);
        let without_first: Vec<NodeId> = p.backups(&s, &home, |n| n != &first);
        let names = |v: &[NodeId]| v.iter().map(NodeId::as_str).collect::<Vec<_>>().join(",");
        writeln!(
            out,
            "{s}  {home}  [{}]  {}  [{}]",
            names(&backups),
            fo.as_ref().map_or("-", NodeId::as_str),
            names(&without_first)
        )
        .expect("write to string");
    }
    out
}

#[test]
fn placement_tables_are_stable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    for cfg in ["peer-to-peer-3", "client-server", "inferred-peer-to-peer-managers"] {
        let got = placement_table(&root.join(format!("domains/valid/{cfg}.toml")));
        let golden = root.join(format!("placement/{cfg}.txt"));
        if std::env::var_os("M2M_BLESS").is_some() {
            std::fs::create_dir_all(golden.parent().expect("parent")).expect("mkdir");
            std::fs::write(&golden, &got).expect("write golden");
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (run with M2M_BLESS=1 to create)", golden.display()));
        assert_eq!(got, want, "placement of {cfg} changed; see {}", golden.display());
    }
}
