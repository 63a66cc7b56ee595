//! The backup side: deltas with gaps, fencing, restarted backups, drops.

use crate::api::{Ack, Command, Event, Input, Outcome, Output, Role, Settings};
use crate::config::NodeId;
use crate::harness::*;
use crate::message::{Change, Epoch, Message, Payload};
use crate::node::Node;
use std::time::Duration;

#[test]
fn delta_with_gap_asks_for_full_copy() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    create(&mut cl, "a", 1, "s", Ack::Async);
    cl.pump();
    // Lose the next delta on the wire.
    update(&mut cl, "a", 2, "s", None, vec![Change::Set("x".into(), vec![1].into())], Ack::Async);
    cl.wire.clear();
    update(
        &mut cl,
        "a",
        3,
        "s",
        None,
        vec![Change::Set("y".into(), vec![2].into())],
        Ack::Sync { backups: 1 },
    );
    let (_, _, msg) = cl.wire.pop_front().unwrap();
    let now = cl.now;
    let b = cl.nodes.get_mut(&id("b")).unwrap();
    b.handle_input(now, Input::Message { from: id("a"), msg });
    let out = b.poll_output();
    assert!(matches!(out, Some(Output::Send { msg: Message::NeedFull { .. }, .. })), "{out:?}");
    b.handle_input(
        now,
        Input::Message {
            from: id("a"),
            msg: match out {
                Some(Output::Send { msg, .. }) => msg,
                _ => unreachable!(),
            },
        },
    );
    // (a NeedFull sent to b itself is ignored: wrong direction)
    assert!(b.poll_output().is_none());
    let msg = Message::NeedFull { session: "s".into(), epoch: Epoch::new(1, id("a"), 1) };
    cl.wire.push_back((id("b"), id("a"), msg));
    cl.pump();
    assert!(matches!(cl.outcome(3), Some(Outcome::Replicated { version: 3, acks: 1, .. })));
    let v = cl.session("b", "s").unwrap();
    assert_eq!(v.version, 3);
    assert_eq!(v.attrs.len(), 3);
}

#[test]
fn stale_epoch_is_fenced_and_owner_steps_down() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    create(&mut cl, "a", 1, "s", Ack::Async);
    cl.pump();
    // c claims the session at a higher epoch (fetch on get).
    cl.cmd("c", 2, Command::Get { session: "s".into() });
    // Before delivering, a starts a sync write that will be fenced.
    update(
        &mut cl,
        "a",
        3,
        "s",
        None,
        vec![Change::Set("w".into(), vec![].into())],
        Ack::Sync { backups: 1 },
    );
    cl.pump();
    match cl.outcome(2) {
        Some(Outcome::Found { epoch, attrs, .. }) => {
            assert_eq!(epoch.node, id("c"));
            assert_eq!(attrs.get("k").unwrap(), b"v1");
        }
        other => panic!("{other:?}"),
    }
    // a's write either made it before the claim (and is in c's copy) or was fenced.
    match cl.outcome(3) {
        Some(Outcome::Fenced { epoch }) => assert_eq!(epoch.node, id("c")),
        Some(Outcome::Replicated { .. }) => {
            assert!(cl.session("c", "s").unwrap().attrs.contains_key("w"));
        }
        other => panic!("{other:?}"),
    }
    assert!(cl.session("a", "s").is_none_or(|v| v.role != Role::Owner));
    assert!(cl.events.iter().any(|(n, e)| n == &id("a") && matches!(e, Event::OwnershipLost { .. })));
    assert!(cl.events.iter().any(|(n, e)| n == &id("c") && matches!(e, Event::OwnershipGained { .. })));
    // A late write from the old epoch is refused with Fenced.
    let now = cl.now;
    let holder =
        if cl.session("b", "s").is_some_and(|v| v.promised.as_ref().is_some_and(|p| p.node == id("c"))) {
            "b"
        } else {
            "c"
        };
    let h = cl.nodes.get_mut(&id(holder)).unwrap();
    h.handle_input(now, replicate("a", "s", Epoch::new(1, id("a"), 1), Payload::Touch { version: 1 }));
    let out = h.poll_output();
    assert!(matches!(out, Some(Output::Send { msg: Message::Fenced { .. }, .. })), "{out:?}");
    // a is not the owner any more.
    update(&mut cl, "a", 4, "s", None, vec![], Ack::Async);
    assert!(matches!(cl.outcome(4), Some(Outcome::NotOwner { .. })));
}

/// A `Drop` that arrives after the owner placed the node again (reordered behind the new
/// `Replicate` of the same epoch; simulator seed 500115 of the rolling soak): the backup
/// deletes its copy while the owner counts it. It tells the owner (`NeedFull`), which
/// counts it no longer and sends the copy again.
#[test]
fn a_late_drop_of_a_placed_backup_is_repaired() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
    cl.pump();
    let v = cl.session("a", "s").unwrap();
    let (backup, epoch) = (v.backups[0].0.clone(), v.epoch.clone().unwrap());
    assert_eq!(v.backups, vec![(backup.clone(), true)]);
    cl.wire.push_back((id("a"), backup.clone(), Message::Drop { session: "s".into(), epoch }));
    cl.pump();
    cl.advance(Duration::from_millis(100));
    let b = cl.session(backup.as_str(), "s");
    assert_eq!(b.map(|b| (b.role, b.version)), Some((Role::Backup, 1)), "the copy is back");
    assert_eq!(cl.session("a", "s").unwrap().backups, vec![(backup, true)]);
}

/// The partition + amnesia case: a's link to its backup b is cut both ways and c does not
/// hear a, so b takes s over while a keeps running and re-places s on c; c restarts
/// (forgetting the promise it made to b), hears a again, and a writes. Without the
/// restart quarantine c acknowledges a's write, which b's state overwrites at the heal;
/// with it, c first learns b's epoch from b and fences a, so the write is not reported
/// replicated. (Before claims named the owner they fail over from, cutting the link a-b
/// alone was enough; now a c that hears a refuses b's claim, see
/// `split_owner_write_acknowledged_by_an_amnesiac_backup_survives`.)
#[test]
fn restarted_backup_does_not_acknowledge_a_stale_owner() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    // A session whose backup (and failover target) is b.
    let mut rid = 1;
    let s = loop {
        let s = format!("s{rid}");
        create(&mut cl, "a", rid, &s, Ack::Sync { backups: 1 });
        cl.pump();
        rid += 1;
        if cl.session("a", &s).unwrap().backups == vec![(id("b"), true)] {
            break s;
        }
    };
    cl.cut.insert((id("a"), id("b")));
    cl.cut.insert((id("b"), id("a")));
    cl.cut.insert((id("a"), id("c")));
    cl.advance(Duration::from_millis(1500));
    let b = cl.session("b", &s).unwrap();
    assert_eq!(b.role, Role::Owner, "b failed s over");
    // a's lease lapsed (nobody hears it): it stepped down at c's next heartbeat, and its write
    // below claims nothing (the restart quarantine is the second line of defence here).
    assert_ne!(cl.session("a", &s).unwrap().role, Role::Owner, "a stepped down when its lease lapsed");
    cl.cut.remove(&(id("a"), id("c")));
    // c restarts with empty memory.
    let now = cl.now;
    cl.nodes
        .insert(id("c"), Node::new(cfg(&["a", "b", "c"], 1), id("c"), 2, Settings::default(), now).unwrap());
    // a, cut off from both, held no lease; c's heartbeats give it back (a and c are a majority).
    cl.advance(Duration::from_millis(300));
    cl.cmd(
        "a",
        100,
        Command::Update {
            session: s.clone(),
            expected_version: None,
            changes: vec![Change::Set("w".into(), b"lost?".to_vec().into())],
            ack: Ack::Sync { backups: 1 },
        },
    );
    cl.advance(Duration::from_millis(6000));
    cl.cut.clear();
    cl.advance(Duration::from_millis(3000));
    // A node whose lease lapsed stepped down: a read claims the session back.
    cl.cmd("b", 101, Command::Get { session: s.clone() });
    cl.advance(Duration::from_millis(1000));
    let owners: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| cl.session(n, &s).is_some_and(|v| v.role == Role::Owner))
        .collect();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let v = cl.session(owners[0], &s).unwrap();
    let out = cl.outcome(100).cloned();
    assert!(
        !matches!(out, Some(Outcome::Replicated { .. })) || v.attrs.contains_key("w"),
        "a's write was acknowledged ({out:?}) and then lost: {v:?}"
    );
    assert!(
        matches!(
            out,
            Some(Outcome::Fenced { .. } | Outcome::Indeterminate { .. } | Outcome::NotOwner { .. })
        ),
        "a stepped down or c fences a: {out:?}"
    );
}

/// The replica count goes from 2 to 1 while every `Drop` is lost: the holder a no longer
/// places keeps its copy. It acknowledges that copy to a again once a was silent for twice
/// the keep-alive interval (`maybe_confirm_placement`), and a, which does not place it,
/// answers with a `Drop` (`drop_unplaced`): afterwards only the placed backup holds a copy.
#[test]
fn a_holder_whose_drop_was_lost_drops_on_confirmation() {
    let settings = Settings { keepalive_interval: Duration::from_secs(1), ..Settings::default() };
    let mut cl = Cluster::from_config(cfg(&["a", "b", "c"], 2), settings);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 2 });
    cl.pump();
    assert!(matches!(cl.outcome(1), Some(Outcome::Replicated { acks: 2, .. })), "{:?}", cl.outcome(1));
    cl.lose = Some(|_, _, m| matches!(m, Message::Drop { .. }));
    let new = cfg(&["a", "b", "c"], 1);
    for n in ["a", "b", "c"] {
        cl.nodes.get_mut(&id(n)).unwrap().reconfigure(new.clone()).unwrap();
        cl.collect(&id(n));
    }
    cl.advance(Duration::from_millis(500));
    let placed: Vec<NodeId> = cl.session("a", "s").unwrap().backups.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(placed.len(), 1);
    let holders = |cl: &Cluster| -> Vec<NodeId> {
        ["b", "c"]
            .into_iter()
            .filter(|n| cl.session(n, "s").is_some_and(|v| v.role == Role::Backup))
            .map(id)
            .collect()
    };
    assert_eq!(holders(&cl).len(), 2, "the Drop was lost, so both holders keep a copy");
    cl.lose = None;
    cl.advance(Duration::from_secs(5));
    assert_eq!(holders(&cl), placed);
    assert_eq!(cl.session("a", "s").unwrap().role, Role::Owner);
}
