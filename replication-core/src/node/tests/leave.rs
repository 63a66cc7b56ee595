//! The graceful leave.

use crate::api::{Ack, Command, Input, Outcome, Role};
use crate::config::NodeId;
use crate::harness::*;
use crate::message::Message;
use std::collections::VecDeque;
use std::time::Duration;

#[test]
fn leave_hands_sessions_over() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    create(&mut cl, "a", 1, "s", Ack::Async);
    cl.cmd("a", 2, Command::Leave);
    cl.pump();
    cl.advance(Duration::from_millis(300));
    assert_eq!(cl.outcome(2), Some(&Outcome::Left { handed_off: 1, unreplicated: 0 }));
    assert!(cl.nodes[&id("a")].has_left());
    assert_eq!(cl.nodes[&id("a")].poll_timeout(), None);
    cl.cmd("a", 3, Command::Get { session: "s".into() });
    assert_eq!(cl.outcome(3), Some(&Outcome::ShuttingDown));
    cl.advance(Duration::from_millis(300));
    let owners =
        ["b", "c"].iter().filter(|n| cl.session(n, "s").is_some_and(|v| v.role == Role::Owner)).count();
    assert_eq!(owners, 1);
}

/// A demoted owner (its copy, v2, is the only newest one) is asked to leave while the
/// claim that demoted it waits for its answer. The leave must not take v2 away: it waits
/// for the claimant to complete with its answer, or, when that answer is lost (a full
/// queue, a reset connection), takes the session back after the claim's deadline and
/// hands it off like any owned session. Either way v2
/// survives the departure, with one owner.
fn demoted_owner_leaves(lose_answer: bool) {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
    cl.pump();
    let backup = cl.session("a", "s").unwrap().backups[0].0.clone();
    let other = if backup == id("b") { id("c") } else { id("b") };
    // a's newest write reaches nobody but a.
    cl.cut.insert((id("a"), backup.clone()));
    cl.cut.insert((id("a"), other.clone()));
    set_k(&mut cl, "a", 2, "s", b"v2", Ack::Async);
    cl.pump();
    cl.cut.clear();
    // `other` claims s; a's answer (with the v2 copy) is held back.
    cl.cmd(other.as_str(), 3, Command::Acquire { session: "s".into() });
    let mut held = VecDeque::new();
    while let Some((f, t, m)) = cl.wire.pop_front() {
        if f == id("a") && t == other && !matches!(m, Message::Heartbeat { .. }) {
            held.push_back((f, t, m));
            continue;
        }
        let now = cl.now;
        cl.nodes.get_mut(&t).unwrap().handle_input(now, Input::Message { from: f, msg: m });
        cl.collect(&t);
    }
    assert!(held.iter().any(|(_, _, m)| matches!(m, Message::ClaimAck { .. })), "{held:?}");
    cl.cmd("a", 4, Command::Leave);
    assert!(!cl.nodes[&id("a")].has_left(), "a holds the only v2 copy: it does not leave at once");
    if !lose_answer {
        cl.wire.extend(held);
    }
    for _ in 0..100 {
        if cl.nodes[&id("a")].has_left() {
            break;
        }
        cl.advance(Duration::from_millis(100));
    }
    assert!(matches!(cl.outcome(4), Some(Outcome::Left { .. })), "{:?}", cl.outcome(4));
    cl.nodes.remove(&id("a"));
    cl.advance(Duration::from_secs(3));
    let owners: Vec<NodeId> = [&backup, &other]
        .into_iter()
        .filter(|n| cl.session(n.as_str(), "s").is_some_and(|v| v.role == Role::Owner))
        .cloned()
        .collect();
    assert_eq!(owners.len(), 1, "one owner after a left: {owners:?}");
    let v = cl.session(owners[0].as_str(), "s").unwrap();
    assert_eq!(v.attrs.get("k"), Some(&b"v2"[..]), "the departed owner's newest copy");
}

/// The claimant gets the demoted owner's answer: it completes, and the owner leaves.
#[test]
fn a_leaving_demoted_owner_waits_for_the_claim_that_has_its_answer() {
    demoted_owner_leaves(false);
}

/// The answer is lost: the leaving demoted owner takes the session back and hands it off.
#[test]
fn a_leaving_demoted_owner_whose_answer_was_lost_takes_the_session_back() {
    demoted_owner_leaves(true);
}

/// An owner leaving right after an invalidation that one backup has not acknowledged yet
/// waits for it, as for any write: otherwise that backup keeps the older live copy, and
/// the session comes back when it takes over (simulator seed 800115, rolling restarts).
#[test]
fn a_leaving_owner_waits_for_its_tombstone_to_be_acknowledged() {
    let mut cl = Cluster::new(&["a", "b", "c"], 2);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 2 });
    cl.pump();
    cl.cut.insert((id("a"), id("c")));
    cl.cmd("a", 2, Command::Invalidate { session: "s".into(), ack: Ack::Sync { backups: 1 } });
    cl.pump();
    assert!(matches!(cl.outcome(2), Some(Outcome::Replicated { acks: 1, .. })), "{:?}", cl.outcome(2));
    cl.cmd("a", 3, Command::Leave);
    assert!(!cl.nodes[&id("a")].has_left(), "c has not acknowledged the tombstone");
    cl.cut.clear();
    for _ in 0..40 {
        if cl.nodes[&id("a")].has_left() {
            break;
        }
        cl.advance(Duration::from_millis(100));
    }
    assert!(matches!(cl.outcome(3), Some(Outcome::Left { unreplicated: 0, .. })), "{:?}", cl.outcome(3));
    assert!(cl.session("c", "s").is_some_and(|v| v.invalidated), "{:?}", cl.session("c", "s"));
}

#[test]
fn every_command_gets_one_outcome_on_leave() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    create(&mut cl, "a", 1, "s", Ack::Async);
    cl.pump();
    cl.cut.insert((id("b"), id("a")));
    update(&mut cl, "a", 2, "s", None, vec![], Ack::Sync { backups: 1 });
    cl.cmd("a", 3, Command::Leave);
    cl.advance(Duration::from_secs(6));
    for rid in 1..=3 {
        assert_eq!(cl.outcomes.iter().filter(|(_, i, _)| *i == rid).count(), 1, "{rid}");
    }
    assert!(matches!(cl.outcome(3), Some(Outcome::Left { .. })));
}
