//! The same program: a fixed list of simulator runs and the trace hash each one gives.
//!
//! A refactor that changes no behaviour gives every seed the same trace (every command,
//! outcome, event, message and fault, in order), so the same hash as recorded in
//! `tests/trace_hashes.txt`. A change of behaviour changes some of them: re-record the file on
//! purpose (`M2M_TRACE_RECORD=1 cargo test -p replication-core --test trace_hashes`)
//! and say why in the commit.
//!
//! The list: 45 seeds of varied configurations (`SimOptions::from_seed`: three to five nodes,
//! client-server or peer-to-peer, one or two replicas, loss, duplication, delays, crashes,
//! restarts, pauses, partitions, bounded link queues, crashed nodes reported gone) and 15
//! rolling restarts, 1,500 steps each.

mod sim;

use std::fmt::Write as _;

use sim::{Sim, SimOptions};

const STEPS: u64 = 1500;
const MIXED: std::ops::RangeInclusive<u64> = 1..=45;
const ROLLING: std::ops::RangeInclusive<u64> = 1..=15;

fn hashes() -> String {
    let mut out = String::new();
    let runs = MIXED
        .map(|s| ("mixed", SimOptions::from_seed(s, STEPS)))
        .chain(ROLLING.map(|s| ("rolling", SimOptions::rolling_from_seed(s, STEPS))));
    for (kind, opt) in runs {
        let seed = opt.seed;
        let r = Sim::new(opt).run();
        let _ = writeln!(out, "{kind} {seed} {:016x}", r.trace_hash);
    }
    out
}

#[test]
fn trace_hashes_match_the_recorded_ones() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/trace_hashes.txt");
    let now = hashes();
    if std::env::var("M2M_TRACE_RECORD").is_ok_and(|v| v == "1") {
        std::fs::write(path, &now).expect("write tests/trace_hashes.txt");
        return;
    }
    let recorded = std::fs::read_to_string(path).expect("tests/trace_hashes.txt is in the repository");
    let differ: Vec<String> = recorded
        .lines()
        .zip(now.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("recorded {a}, now {b}"))
        .collect();
    assert_eq!(recorded.lines().count(), now.lines().count(), "a different list of runs");
    assert!(
        differ.is_empty(),
        "{} of {} runs behave differently:\n{}",
        differ.len(),
        now.lines().count(),
        differ.join("\n")
    );
}
