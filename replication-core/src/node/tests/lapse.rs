//! A lease lapse at scale: the owner steps down in O(1) at the lapse and in bounded batches
//! after it, serves nothing across the gap, and resumes its sessions.

use super::scale::bench_timings;
use crate::api::{Ack, Command, Event, Outcome, Settings};
use crate::harness::*;
use std::time::Duration;

const SESSIONS: usize = 3000;

fn key(i: usize) -> String {
    format!("s{i:05}")
}

/// How many `OwnershipLost` events `n` emitted so far.
fn lost(cl: &Cluster, n: &str) -> usize {
    cl.events.iter().filter(|(at, e)| at.as_str() == n && matches!(e, Event::OwnershipLost { .. })).count()
}

#[test]
fn a_lapse_at_scale_steps_down_in_bounded_steps_and_serves_nothing_across_the_gap() {
    let cfg = bench_timings(&["a", "b", "c"]);
    let settings = Settings { scan_batch: 64, ..Settings::default() };
    let mut cl = Cluster::from_config(cfg, settings);
    for i in 0..SESSIONS {
        create(&mut cl, "a", i as u64, &key(i), Ack::Async);
    }
    cl.advance(Duration::from_secs(2));
    assert_eq!(cl.nodes[&id("a")].stats().owned, SESSIONS);
    // Nothing reaches a: its lease lapses while b and c still hear it (nobody takes over).
    for n in ["b", "c"] {
        cl.cut.insert((id(n), id("a")));
    }
    let w = 100_000;
    set_k(&mut cl, "a", w, &key(0), b"waits", Ack::Sync { backups: 1 });
    cl.advance(Duration::from_millis(1500));
    assert_eq!(cl.outcome(w), None, "still within its request timeout");
    for n in ["b", "c"] {
        cl.cut.remove(&(id(n), id("a")));
    }
    // The first echo after the heal finds the lapse: the owner states are stale at once (the
    // queries count none owned), the waiting write ends, and the events come in batches.
    let before = lost(&cl, "a");
    cl.advance(Duration::from_millis(50));
    assert!(matches!(cl.outcome(w), Some(Outcome::Indeterminate { .. })), "{:?}", cl.outcome(w));
    let a = &cl.nodes[&id("a")];
    assert_eq!(a.stats().owned, 0, "nothing is served across the gap");
    assert_eq!(a.owned_sessions().count(), 0);
    // A replan batch settles at most eight times `scan_batch` records (and the maintenance
    // scan `scan_batch`), besides the sessions messages name.
    let bound = 64 * 8 + 64 + 64;
    let mut last = lost(&cl, "a");
    assert!(last - before <= bound, "{} stepped down in one step", last - before);
    // A session the sweep has not reached yet is not served from its old ownership: the
    // read steps down from it first and claims it back.
    let tail = key(SESSIONS - 1);
    let lost_tail = |cl: &Cluster| {
        cl.events.iter().any(|(n, e)| {
            n.as_str() == "a" && matches!(e, Event::OwnershipLost { session, .. } if *session == tail)
        })
    };
    assert!(!lost_tail(&cl), "the sweep is not that far yet");
    cl.cmd("a", w + 1, Command::Get { session: tail.clone() });
    assert!(lost_tail(&cl), "the read settled its session");
    assert_eq!(cl.outcome(w + 1), None, "the read waits for its claim");
    cl.pump();
    assert!(matches!(cl.outcome(w + 1), Some(Outcome::Found { .. })), "{:?}", cl.outcome(w + 1));
    // Twice the request timeout after the lapse the maintenance scan resumes them,
    // `scan_batch` a tick.
    for _ in 0..200 {
        cl.advance(Duration::from_millis(50));
        let now = lost(&cl, "a");
        assert!(now - last <= bound, "{} stepped down in one step", now - last);
        last = now;
    }
    assert_eq!(last - before, SESSIONS, "each session stepped down from once");
    // The demoted owner resumed every session (nobody else took them over).
    assert_eq!(cl.nodes[&id("a")].stats().owned, SESSIONS);
    for n in ["b", "c"] {
        assert_eq!(cl.nodes[&id(n)].stats().owned, 0, "{n} took nothing over");
    }
}
