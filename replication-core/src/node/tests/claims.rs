//! Claims: fetches, promises, late and unanswered claims, a split owner.

use crate::api::{Ack, Command, Event, Input, Outcome, Output, Role, Settings};
use crate::config::NodeId;
use crate::harness::*;
use crate::message::{Body, Epoch, Message, Payload};
use crate::node::Node;
use crate::placement::Placement;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn claim_promises_and_returns_copy() {
    let c = cfg(&["a", "b"], 1);
    let now = Instant::now();
    let mut b = Node::new(c, id("b"), 1, Settings::default(), now).unwrap();
    // a answers b's quarantine round (it knows of no session): b's quarantine is over.
    let none = Message::Epochs { incarnation: 1, after: None, epochs: vec![], next: None };
    b.handle_input(now, Input::Message { from: id("a"), msg: none });
    let asked: Vec<Output> = std::iter::from_fn(|| b.poll_output()).collect();
    assert!(asked.iter().any(|o| matches!(o, Output::Send { msg: Message::EpochsRequest { .. }, .. })));
    let e1 = Epoch::new(1, id("a"), 1);
    let full = Payload::Full {
        version: 4,
        body: Body::Live { attrs: attrs(&[("x", b"1")]), max_inactive_ms: 1000 },
    };
    b.handle_input(
        now,
        Input::Message {
            from: id("a"),
            msg: Message::Replicate { session: "s".into(), epoch: e1.clone(), payload: Arc::new(full) },
        },
    );
    let outs: Vec<Output> = std::iter::from_fn(|| b.poll_output()).collect();
    assert!(outs.iter().any(|o| matches!(o, Output::Send { msg: Message::Ack { version: 4, .. }, .. })));
    let e2 = Epoch::new(2, id("a"), 1);
    b.handle_input(
        now,
        Input::Message {
            from: id("a"),
            msg: Message::Claim { session: "s".into(), epoch: e2.clone(), over: None },
        },
    );
    match b.poll_output() {
        Some(Output::Send { msg: Message::ClaimAck { epoch, copy: Some(copy), .. }, .. }) => {
            assert_eq!(epoch, e2);
            assert_eq!((copy.epoch, copy.version), (e1.clone(), 4));
        }
        other => panic!("{other:?}"),
    }
    // The lower epoch is now refused.
    b.handle_input(
        now,
        Input::Message { from: id("a"), msg: Message::Claim { session: "s".into(), epoch: e1, over: None } },
    );
    assert!(
        matches!(b.poll_output(), Some(Output::Send { msg: Message::Fenced { epoch, .. }, .. }) if epoch == e2)
    );
    assert_eq!(b.session("s").unwrap().promised, Some(e2));
}

#[test]
fn get_on_non_owner_fetches_and_takes_over() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
    cl.pump();
    cl.cmd("b", 2, Command::Acquire { session: "s".into() });
    cl.pump();
    assert!(
        matches!(cl.outcome(2), Some(Outcome::Acquired { version: 1, epoch }) if epoch.node == id("b") && *epoch > Epoch::new(1, id("a"), 1)),
        "{:?}",
        cl.outcome(2)
    );
    cl.advance(Duration::from_millis(200));
    let v = cl.session("b", "s").unwrap();
    assert_eq!(v.role, Role::Owner);
    assert!(v.backups.iter().all(|(_, held)| *held), "{v:?}");
    // Exactly one replica besides b holds the new epoch.
    let holders = ["a", "c"]
        .iter()
        .filter(|n| cl.session(n, "s").is_some_and(|v| v.epoch.as_ref().is_some_and(|e| e.node == id("b"))))
        .count();
    assert_eq!(holders, 1);
    cl.cmd("c", 3, Command::Get { session: "missing".into() });
    cl.pump();
    assert_eq!(cl.outcome(3), Some(&Outcome::NotFound));
    assert!(cl.session("c", "missing").is_none());
}

/// A claim reaches the owner after its acquirer gave up (the fuzz input
/// `fuzz/repro/core_inputs-ownerless`): the owner is demoted, and the acquirer's release
/// must bring the session back to one owner with its data, without any client request.
/// Returns the cluster, the owner and the backup after the late claims and, when
/// `deliver_release`, the acquirer's later messages (its release) were delivered.
fn late_claim_scenario(deliver_release: bool) -> (Cluster, NodeId, NodeId) {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
    cl.pump();
    assert!(matches!(cl.outcome(1), Some(Outcome::Replicated { acks: 1, .. })));
    let backup = cl.session("a", "s").unwrap().backups[0].0.clone();
    let other = if backup == id("b") { id("c") } else { id("b") };
    // `other` fetches the session, but its claims (and everything it says about the
    // session afterwards) are held back until it has given up (request timeout).
    cl.cmd(other.as_str(), 2, Command::Get { session: "s".into() });
    let mut held = Vec::new();
    let end = cl.now + Duration::from_millis(5500);
    loop {
        let (hold, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut cl.wire)
            .into_iter()
            .partition(|(f, _, m)| *f == other && !matches!(m, Message::Heartbeat { .. }));
        held.extend(hold);
        cl.wire = keep;
        cl.pump();
        if cl.now >= end {
            break;
        }
        cl.now += Duration::from_millis(50);
        cl.tick_all();
    }
    assert_eq!(cl.outcome(2), Some(&Outcome::Unavailable));
    // The late claims arrive: the owner is demoted.
    for (f, t, m) in held {
        let late_claim = matches!(m, Message::Claim { .. });
        if late_claim || deliver_release {
            cl.wire.push_back((f, t, m));
        }
    }
    cl.pump();
    (cl, id("a"), backup)
}

fn assert_one_owner_with_data(cl: &Cluster, owner: &NodeId, backup: &NodeId) {
    let owners: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| cl.session(n, "s").is_some_and(|v| v.role == Role::Owner))
        .collect();
    assert_eq!(owners, vec![owner.as_str()], "{:?}", cl.session("a", "s"));
    let v = cl.session(owner.as_str(), "s").unwrap();
    assert_eq!((v.version, v.attrs.get("k")), (1, Some(&b"v1"[..])));
    assert_eq!(v.backups, vec![(backup.clone(), true)]);
    let b = cl.session(backup.as_str(), "s").unwrap();
    assert_eq!((b.role, b.epoch, b.version), (Role::Backup, v.epoch, 1));
}

/// An acquirer whose claim reaches its peers but whose answers do not come back (a
/// one-way partition) sees them go down before they answer: it must not take the session
/// over with its own older copy (that fenced the owner and would lose the owner's newer
/// writes; found by the simulator, seed 300334).
#[test]
fn a_claim_nobody_answered_does_not_take_over_with_a_stale_copy() {
    let mut cl = Cluster::new(&["a", "b", "c"], 2);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 2 });
    cl.pump();
    assert_eq!(cl.session("c", "s").map(|v| v.version), Some(1));
    // c stops hearing a: a's next write reaches b only.
    cl.cut.insert((id("a"), id("c")));
    set_k(&mut cl, "a", 2, "s", b"v2", Ack::Sync { backups: 1 });
    cl.pump();
    assert!(matches!(cl.outcome(2), Some(Outcome::Replicated { .. })), "{:?}", cl.outcome(2));
    // c hears nobody now, and claims s: its claims arrive, the answers do not.
    cl.cut.insert((id("b"), id("c")));
    cl.cmd("c", 3, Command::Acquire { session: "s".into() });
    // c's failure detector declares a and b down before their answers arrive.
    cl.advance(Duration::from_secs(4));
    assert!(
        cl.session("c", "s").is_some_and(|v| v.role != Role::Owner),
        "c took s over without any answer: {:?}",
        cl.session("c", "s")
    );
    assert_eq!(cl.outcome(3), Some(&Outcome::Unavailable), "the acquisition fails");
    // Healed: one owner, with the acknowledged write.
    cl.cut.clear();
    cl.advance(Duration::from_secs(12));
    let owners: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| cl.session(n, "s").is_some_and(|v| v.role == Role::Owner))
        .collect();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let v = cl.session(owners[0], "s").unwrap();
    assert_eq!(v.attrs.get("k"), Some(&b"v2"[..]), "the acknowledged write survives");
}

/// A broken link (a case the simulator found): the link b-c is cut, and c, which sees a and
/// d (a majority), would fail b's session over with their promises while b keeps owning it.
/// Then a leaves, d restarts (forgetting its promise), c is cut off outbound and a
/// restarts: a's quarantine cannot learn c's epoch, so a would acknowledge b's write, which
/// c's epoch would overwrite at the heal. a and d, which still hear b, refuse c's claims: b
/// stays the only owner.
#[test]
fn split_owner_write_acknowledged_by_an_amnesiac_backup_survives() {
    let names = ["a", "b", "c", "d"];
    let mut cl = Cluster::new(&names, 2);
    let placement = Placement::new(&cfg(&names, 2));
    // s owned by b, backed up by a and c; with b down and a gone, c is the failover target.
    let mut rid = 1;
    let s = loop {
        let s = format!("s{rid}");
        rid += 1;
        let c_first = placement
            .failover_owner(&s, &id("b"), |n| *n == id("c") || *n == id("d"))
            .is_some_and(|n| n == id("c"));
        if !c_first {
            continue;
        }
        create(&mut cl, "b", rid, &s, Ack::Sync { backups: 2 });
        cl.pump();
        let backups: BTreeSet<NodeId> =
            cl.session("b", &s).unwrap().backups.into_iter().map(|(n, _)| n).collect();
        if backups == [id("a"), id("c")].into_iter().collect() {
            break s;
        }
    };
    // The link b-c is cut both ways.
    cl.cut.insert((id("b"), id("c")));
    cl.cut.insert((id("c"), id("b")));
    cl.advance(Duration::from_millis(1500));
    assert!(cl.nodes[&id("c")].peers().iter().any(|p| p.node == id("b") && !p.up), "c sees b down");
    for n in ["a", "d"] {
        assert!(cl.refusals.contains(&(id(n), id("c"))), "{n} refuses c's claims: {:?}", cl.refusals);
    }
    // a leaves.
    cl.cmd("a", 200, Command::Leave);
    cl.advance(Duration::from_millis(1000));
    cl.nodes.remove(&id("a"));
    cl.advance(Duration::from_millis(3000));
    assert_eq!(cl.session("b", &s).map(|v| v.role), Some(Role::Owner), "b owns s");
    assert_ne!(cl.session("c", &s).map(|v| v.role), Some(Role::Owner), "c does not take s from a live b");
    // d crashes and restarts with empty memory; c is cut off outbound; a restarts.
    let now = cl.now;
    cl.nodes.insert(id("d"), Node::new(cfg(&names, 2), id("d"), 2, Settings::default(), now).unwrap());
    for n in names {
        cl.cut.insert((id("c"), id(n)));
    }
    cl.advance(Duration::from_millis(1500));
    let now = cl.now;
    cl.nodes.insert(id("a"), Node::new(cfg(&names, 2), id("a"), 2, Settings::default(), now).unwrap());
    cl.advance(Duration::from_millis(3000));
    // b's lease rested on d alone, which restarted: b stepped down and claims s back.
    cl.cmd("b", 299, Command::Acquire { session: s.clone() });
    cl.advance(Duration::from_millis(1000));
    set_k(&mut cl, "b", 300, &s, b"v2", Ack::Sync { backups: 1 });
    cl.advance(Duration::from_millis(1000));
    assert!(matches!(cl.outcome(300), Some(Outcome::Replicated { .. })), "{:?}", cl.outcome(300));
    cl.cut.clear();
    cl.advance(Duration::from_millis(5000));
    let owners: Vec<&str> =
        names.into_iter().filter(|n| cl.session(n, &s).is_some_and(|v| v.role == Role::Owner)).collect();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let v = cl.session(owners[0], &s).unwrap();
    assert_eq!(v.attrs.get("k"), Some(&b"v2"[..]), "the acknowledged write is lost: {v:?}");
}

#[test]
fn owner_demoted_by_a_released_claim_takes_the_session_back() {
    let (mut cl, owner, backup) = late_claim_scenario(true);
    assert!(cl.events.iter().any(|(n, e)| *n == owner && matches!(e, Event::OwnershipLost { .. })));
    // No client request: the release alone restores the owner, at once.
    cl.advance(Duration::from_millis(200));
    assert_one_owner_with_data(&cl, &owner, &backup);
}

#[test]
fn owner_demoted_by_an_unreleased_claim_resumes_after_the_grace() {
    // The release is lost: the demoted owner resumes after twice the request timeout.
    let (mut cl, owner, backup) = late_claim_scenario(false);
    cl.advance(Duration::from_secs(5));
    assert!(cl.session(owner.as_str(), "s").is_some_and(|v| v.role != Role::Owner), "not before the grace");
    cl.advance(Duration::from_secs(6));
    assert_one_owner_with_data(&cl, &owner, &backup);
}
