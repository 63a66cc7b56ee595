use super::support::*;
use crate::api::{Ack, Command, Event, Input, Outcome, Output, Role, Settings};
use crate::config::DomainConfig;
use crate::error::Error;
use crate::message::{Attributes, Body, Change, Epoch, Message, Payload};
use crate::node::Node;
use crate::node::acquire::CLAIMS_PER_MESSAGE;
use crate::node::store::{OwnerState, Record, Replica};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn unknown_node_is_refused() {
    let err = Node::new(cfg(&["a"], 1), id("z"), 1, Settings::default(), Instant::now()).unwrap_err();
    assert!(matches!(err, Error::UnknownPeer { ref peer } if peer == "z"), "{err}");
}

#[test]
fn heartbeats_make_peers_up_and_silence_makes_them_down() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    assert!(cl.nodes[&id("a")].is_live(&id("b")));
    assert!(
        cl.events
            .iter()
            .any(|(n, e)| n == &id("a") && matches!(e, Event::PeerUp { node, .. } if node == &id("b")))
    );
    cl.cut.insert((id("b"), id("a")));
    cl.advance(Duration::from_millis(1500));
    assert!(!cl.nodes[&id("a")].is_live(&id("b")));
    assert!(
        cl.events
            .iter()
            .any(|(n, e)| n == &id("a") && matches!(e, Event::PeerDown { node } if node == &id("b")))
    );
    assert_eq!(cl.nodes[&id("a")].stats().peers_down, 1);
    let _ = T0_MS;
    let _ = cl.t0;
}

#[test]
fn a_silent_peer_is_declared_down_at_its_deadline_not_at_the_next_tick() {
    let c = cfg(&["a", "b"], 1);
    let failure_timeout = c.failure_timeout();
    let t0 = Instant::now();
    let mut a = Node::new(c, id("a"), 1, Settings::default(), t0).unwrap();
    fn drain(a: &mut Node) {
        while a.poll_output().is_some() {}
    }
    // Runs every timeout the node asks for, up to `end`.
    fn run_until(a: &mut Node, end: Instant) {
        for _ in 0..10_000 {
            match a.poll_timeout() {
                Some(t) if t <= end => {
                    a.handle_timeout(t);
                    drain(a);
                }
                _ => return,
            }
        }
        panic!("the node keeps asking for a timeout before {end:?}");
    }
    a.handle_timeout(t0);
    drain(&mut a);
    // b is last heard between two maintenance ticks (every 200 ms here).
    let heard = t0 + Duration::from_millis(7);
    a.handle_input(heard, Input::Message { from: id("b"), msg: Message::Heartbeat { incarnation: 1 } });
    drain(&mut a);
    assert!(a.is_live(&id("b")));
    let deadline = heard + failure_timeout;
    run_until(&mut a, deadline - Duration::from_millis(1));
    assert!(a.is_live(&id("b")), "declared down before the failure timeout");
    assert!(a.poll_timeout().is_some_and(|t| t <= deadline), "no timeout asked for at the deadline");
    run_until(&mut a, deadline);
    assert!(!a.is_live(&id("b")), "not declared down at the deadline (only at the next tick)");
}

#[test]
fn an_acknowledged_write_leaves_no_timer_behind() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
    cl.pump();
    assert!(matches!(cl.outcome(1), Some(Outcome::Replicated { .. })), "{:?}", cl.outcome(1));
    assert_eq!(cl.nodes[&id("a")].writes.next_deadline(), None, "the write's timeout stays until it expires");
}

#[test]
fn a_finished_write_leaves_no_buffer_in_the_owner_state() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    // Empty, the list (a `SlimVec`) holds no heap chunk.
    let waiting = |cl: &Cluster| {
        cl.nodes[&id("a")].sessions.get("s").unwrap().owner.as_ref().unwrap().waiting.is_empty()
    };
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
    cl.pump();
    assert!(matches!(cl.outcome(1), Some(Outcome::Replicated { .. })), "{:?}", cl.outcome(1));
    assert!(waiting(&cl), "acknowledged");
    // A write that times out instead.
    cl.cut.insert((id("b"), id("a")));
    let changes = vec![Change::Set("k".into(), b"v2".to_vec().into())];
    let ack = Ack::Sync { backups: 1 };
    cl.cmd("a", 2, Command::Update { session: "s".into(), expected_version: None, changes, ack });
    assert!(!waiting(&cl));
    cl.advance(cl.nodes[&id("a")].request_timeout + Duration::from_millis(100));
    assert!(matches!(cl.outcome(2), Some(Outcome::Indeterminate { .. })), "{:?}", cl.outcome(2));
    assert!(waiting(&cl), "timed out");
}

/// The per-session state in glibc heap chunks (the request + 8 bytes, rounded up to 16):
/// `Record` in a 112-byte one, `OwnerState` in a 144-byte one (`docs/benchmarks`).
#[test]
fn per_session_state_fits_its_heap_chunks() {
    use std::mem::size_of;
    assert!(size_of::<Record>() <= 104, "Record: {} bytes", size_of::<Record>());
    assert!(size_of::<OwnerState>() <= 136, "OwnerState: {} bytes", size_of::<OwnerState>());
    assert!(size_of::<Replica>() <= 48, "Replica: {} bytes", size_of::<Replica>());
}

#[test]
fn sync_create_without_live_backup_is_unreplicated() {
    let c = cfg(&["a", "b"], 1);
    let now = Instant::now();
    let mut a = Node::new(c, id("a"), 1, Settings::default(), now).unwrap();
    a.handle_input(
        now,
        Input::Command {
            id: 1,
            cmd: Command::Create {
                session: "s".into(),
                attrs: Attributes::new(),
                max_inactive: Duration::from_secs(5),
                ack: Ack::Sync { backups: 1 },
            },
        },
    );
    let outs: Vec<Output> = std::iter::from_fn(|| a.poll_output()).collect();
    assert!(outs.iter().all(|o| !matches!(o, Output::Send { .. })), "{outs:?}");
    assert!(
        outs.iter().any(|o| matches!(
            o,
            Output::Outcome { id: 1, outcome: Outcome::Unreplicated { version: 1, .. } }
        )),
        "{outs:?}"
    );
    assert!(outs.iter().any(|o| matches!(o, Output::Event(Event::UnderReplicated { have: 0, want: 1, .. }))));
}

#[test]
fn sync_write_completes_when_backups_ack() {
    let mut cl = Cluster::new(&["a", "b", "c"], 2);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 2 });
    assert_eq!(cl.outcome(1), None, "waits for acks");
    cl.pump();
    assert!(
        matches!(cl.outcome(1), Some(Outcome::Replicated { version: 1, acks: 2, .. })),
        "{:?}",
        cl.outcome(1)
    );
    // Asking for more than exist is clamped.
    update(
        &mut cl,
        "a",
        2,
        "s",
        Some(1),
        vec![Change::Set("k".into(), b"v2".to_vec().into())],
        Ack::Sync { backups: 5 },
    );
    cl.pump();
    assert!(matches!(cl.outcome(2), Some(Outcome::Replicated { version: 2, acks: 2, .. })));
    for n in ["b", "c"] {
        let v = cl.session(n, "s").unwrap();
        assert_eq!((v.role, v.version), (Role::Backup, 2));
        assert_eq!(v.attrs.get("k").unwrap(), b"v2");
    }
    let v = cl.session("a", "s").unwrap();
    assert_eq!(v.role, Role::Owner);
    assert!(v.backups.iter().all(|(_, held)| *held));
}

#[test]
fn async_write_completes_at_once_and_backups_still_ack() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    create(&mut cl, "a", 1, "s", Ack::Async);
    assert!(matches!(cl.outcome(1), Some(Outcome::Applied { version: 1, .. })));
    cl.pump();
    assert_eq!(cl.session("a", "s").unwrap().backups, vec![(id("b"), true)]);
}

#[test]
fn conflict_not_owner_and_already_exists() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    create(&mut cl, "a", 1, "s", Ack::Async);
    cl.pump();
    update(&mut cl, "a", 2, "s", Some(7), vec![Change::Clear], Ack::Async);
    assert_eq!(cl.outcome(2), Some(&Outcome::Conflict { current_version: 1 }));
    assert_eq!(cl.session("a", "s").unwrap().version, 1, "nothing applied");
    update(&mut cl, "b", 3, "s", None, vec![], Ack::Async);
    assert_eq!(cl.outcome(3), Some(&Outcome::NotOwner { owner: Some(id("a")) }));
    create(&mut cl, "a", 4, "s", Ack::Async);
    assert_eq!(cl.outcome(4), Some(&Outcome::AlreadyExists));
    cl.cmd("b", 5, Command::Touch { session: "zz".into() });
    assert_eq!(cl.outcome(5), Some(&Outcome::NotOwner { owner: None }));
}

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
    h.handle_input(
        now,
        Input::Message {
            from: id("a"),
            msg: Message::Replicate {
                session: "s".into(),
                epoch: Epoch::new(1, id("a"), 1),
                payload: Arc::new(Payload::Touch { version: 1 }),
            },
        },
    );
    let out = h.poll_output();
    assert!(matches!(out, Some(Output::Send { msg: Message::Fenced { .. }, .. })), "{out:?}");
    // a is not the owner any more.
    update(&mut cl, "a", 4, "s", None, vec![], Ack::Async);
    assert!(matches!(cl.outcome(4), Some(Outcome::NotOwner { .. })));
}

#[test]
fn the_quarantine_answer_comes_a_page_per_request() {
    let c = cfg(&["a", "b", "c"], 1);
    let now = Instant::now();
    let mut a = Node::new(c.clone(), id("a"), 1, Settings::default(), now).unwrap();
    // a promises 2500 sessions to claims at term 2 (their ownership moved).
    for i in 0..2500 {
        let msg =
            Message::Claim { session: format!("s{i:05}"), epoch: Epoch::new(2, id("b"), 1), over: None };
        a.handle_input(now, Input::Message { from: id("b"), msg });
    }
    while a.poll_output().is_some() {}
    // c restarted and asks; every answer is one message, a page of at most 1024.
    let mut c_node = Node::new(c, id("c"), 2, Settings::default(), now).unwrap();
    c_node.handle_input(now, Input::Message { from: id("a"), msg: Message::Heartbeat { incarnation: 1 } });
    let mut pages = Vec::new();
    let mut learned = 0;
    for _ in 0..10 {
        let reqs: Vec<Message> = std::iter::from_fn(|| c_node.poll_output())
            .filter_map(|o| match o {
                Output::Send { to, msg: m @ Message::EpochsRequest { .. } } if to == id("a") => Some(m),
                _ => None,
            })
            .collect();
        assert!(reqs.len() <= 1, "one request at a time: {reqs:?}");
        let Some(req) = reqs.into_iter().next() else { break };
        a.handle_input(now, Input::Message { from: id("c"), msg: req });
        let answers: Vec<Message> = std::iter::from_fn(|| a.poll_output())
            .filter_map(|o| match o {
                Output::Send { msg: m @ Message::Epochs { .. }, .. } => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(answers.len(), 1, "one page per request");
        if let Message::Epochs { epochs, .. } = &answers[0] {
            pages.push(epochs.len());
            learned += epochs.len();
        }
        for m in answers {
            c_node.handle_input(now, Input::Message { from: id("a"), msg: m });
        }
    }
    assert_eq!(pages, vec![1024, 1024, 452], "three pages");
    assert_eq!(learned, 2500);
    assert_eq!(c_node.session("s02499").and_then(|v| v.promised).map(|e| e.term), Some(2));
}

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

#[test]
fn sync_write_times_out_indeterminate() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    create(&mut cl, "a", 1, "s", Ack::Async);
    cl.pump();
    cl.cut.insert((id("b"), id("a")));
    update(&mut cl, "a", 2, "s", None, vec![], Ack::Sync { backups: 1 });
    cl.pump();
    // Failure timeout (1s) is shorter than the request timeout (5s): once b is down the
    // write still waits for its deadline.
    cl.advance(Duration::from_millis(5100));
    assert!(
        matches!(cl.outcome(2), Some(Outcome::Indeterminate { version: 2, acks: 0, .. })),
        "{:?}",
        cl.outcome(2)
    );
}

#[test]
fn hot_failover_moves_ownership_to_the_backup() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
    cl.pump();
    assert!(matches!(cl.outcome(1), Some(Outcome::Replicated { .. })));
    let backup = cl.session("a", "s").unwrap().backups[0].0.clone();
    cl.nodes.remove(&id("a"));
    cl.advance(Duration::from_millis(1600));
    let v = cl.nodes[&backup].session("s").unwrap();
    assert_eq!(v.role, Role::Owner, "{v:?}");
    assert_eq!(v.attrs.get("k").unwrap(), b"v1");
    assert_eq!(cl.nodes[&backup].stats().failovers, 1);
    // ... and re-creates the missing replica on the remaining node.
    cl.advance(Duration::from_millis(600));
    let v = cl.nodes[&backup].session("s").unwrap();
    assert_eq!(v.backups.len(), 1);
    assert!(v.backups[0].1);
}

#[test]
fn stats_tell_the_oldest_unacknowledged_change() {
    let mut cl = Cluster::new(&["a", "b", "c"], 2);
    let t0 = cl.now;
    create(&mut cl, "a", 1, "s", Ack::Async);
    assert_eq!(cl.nodes[&id("a")].stats().oldest_unacked, Some(t0), "sent, not acknowledged yet");
    cl.pump();
    assert_eq!(cl.nodes[&id("a")].stats().oldest_unacked, None, "both backups acknowledged");
    // c's acknowledgements are lost: a's changes stay unacknowledged by one of two backups.
    cl.cut.insert((id("c"), id("a")));
    let write = |cl: &mut Cluster, rid| {
        let changes = vec![Change::Set("x".into(), vec![1].into())];
        let cmd = Command::Update { session: "s".into(), expected_version: None, changes, ack: Ack::Async };
        cl.cmd("a", rid, cmd);
    };
    cl.advance(Duration::from_millis(100));
    let t1 = cl.now;
    write(&mut cl, 2);
    cl.advance(Duration::from_millis(200));
    write(&mut cl, 3);
    cl.pump();
    assert_eq!(cl.nodes[&id("a")].stats().oldest_unacked, Some(t1), "the first of the two changes");
    // Once c's acknowledgements get through again (the owner retransmits), nothing lags.
    cl.cut.clear();
    cl.advance(Duration::from_millis(700));
    assert_eq!(cl.nodes[&id("a")].stats().oldest_unacked, None);
    write(&mut cl, 4);
    let t2 = cl.now;
    assert_eq!(cl.nodes[&id("a")].stats().oldest_unacked, Some(t2), "a new change, not an old time");
    cl.pump();
    assert_eq!(cl.nodes[&id("a")].stats().oldest_unacked, None);
}

#[test]
fn mass_failover_claims_in_batches() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    let n = 2000;
    for i in 0..n {
        let s = format!("s{i:04}");
        cl.cmd(
            "a",
            i,
            Command::Create {
                session: s,
                attrs: attrs(&[("k", b"v")]),
                max_inactive: Duration::from_secs(600),
                ack: Ack::Async,
            },
        );
    }
    cl.pump();
    cl.nodes.remove(&id("a"));
    // Count the claim messages the survivors send while they take the sessions over.
    let (mut single, mut batches, mut claimed) = (0, 0, 0);
    let end = cl.now + Duration::from_millis(2000);
    while cl.now < end {
        cl.now += Duration::from_millis(5);
        cl.tick_all();
        for (_, _, m) in &cl.wire {
            match m {
                Message::Claim { .. } => single += 1,
                Message::Claims { claims } => {
                    batches += 1;
                    claimed += claims.len();
                    assert!(claims.len() <= CLAIMS_PER_MESSAGE);
                }
                _ => {}
            }
        }
        cl.pump();
    }
    let owned: usize = ["b", "c"].iter().map(|x| cl.nodes[&id(x)].stats().owned).sum();
    assert_eq!(owned, n as usize, "every session failed over");
    assert_eq!(single + claimed, n as usize, "one claim per session (one live peer each)");
    assert!(single + batches <= 16, "claims in batches: {single} single, {batches} batches");
    for i in [0, n / 2, n - 1] {
        let s = format!("s{i:04}");
        let owner = ["b", "c"].into_iter().find(|x| cl.session(x, &s).is_some_and(|v| v.role == Role::Owner));
        assert_eq!(cl.session(owner.unwrap(), &s).unwrap().attrs.get("k").unwrap(), b"v");
    }
}

/// `n` sessions created on `owner` (asynchronous writes, delivered), ids `{i:05}{suffix}`.
fn create_many(cl: &mut Cluster, owner: &str, suffix: &str, n: u64, rid: u64) {
    for i in 0..n {
        cl.cmd(
            owner,
            rid + i,
            Command::Create {
                session: format!("{i:05}{suffix}"),
                attrs: attrs(&[("k", b"v")]),
                max_inactive: Duration::from_secs(600),
                ack: Ack::Async,
            },
        );
        if i % 64 == 0 {
            cl.pump();
        }
    }
    cl.pump();
}

#[test]
fn a_failed_owner_s_sessions_are_all_claimed_in_the_detecting_step() {
    // b holds the backups of a's sessions among more of c's (whose owner lives): the
    // replan pass at a's detection only looks at those and claims every orphan at once
    // (not a pass per eight times `scan_batch` records, the backups of c included, a
    // replan interval apart).
    let settings = Settings { scan_batch: 64, ..Settings::default() };
    let mut cl = Cluster::from_config(cfg(&["a", "b", "c"], 1), settings);
    create_many(&mut cl, "a", "a", 600, 0);
    create_many(&mut cl, "c", "c", 1200, 10_000);
    // Long enough for the view to be settled (see `Membership::settled`).
    cl.advance(Duration::from_secs(2));
    let orphans = cl.nodes[&id("b")].copies().filter(|(_, e, _, _)| e.node == id("a")).count();
    let others = cl.nodes[&id("b")].copies().filter(|(_, e, _, _)| e.node == id("c")).count();
    assert!(orphans > 200 && others > 400, "b holds {orphans} of a's and {others} of c's");
    cl.nodes.remove(&id("a"));
    let end = cl.now + Duration::from_secs(3);
    while cl.now < end {
        cl.now += Duration::from_millis(1);
        let seen = cl.events.len();
        cl.tick_all();
        let detected = cl.events[seen..]
            .iter()
            .any(|(n, e)| *n == id("b") && matches!(e, Event::PeerDown { node } if *node == id("a")));
        if detected {
            let claimed = cl.claims_in_flight_from("b");
            assert_eq!(claimed, orphans, "every orphan claimed at the detection");
            return;
        }
        cl.pump();
    }
    panic!("a never detected down by b");
}

#[test]
fn failovers_skipped_before_the_view_settled_are_claimed_together_when_it_is() {
    // b is deaf (nothing reaches it) long enough to mark every peer down, a crashes
    // meanwhile, and b hears c and d again: it sees enough of the domain, but its view is
    // not complete (a is down, e never started), so the pass at its return may not take
    // a's sessions over (`Membership::settled`) until it has seen enough for the failure
    // timeout; then a new pass claims every orphan at once (not the general scan,
    // `scan_batch` records a tick), at that instant, not a tick later.
    let settings = Settings { scan_batch: 64, ..Settings::default() };
    let mut cl = Cluster::from_config(cfg(&["a", "b", "c", "d", "e"], 1), settings);
    cl.nodes.remove(&id("e"));
    create_many(&mut cl, "a", "a", 900, 0);
    cl.advance(Duration::from_millis(100));
    let orphans = cl.nodes[&id("b")].copies().filter(|(_, e, _, _)| e.node == id("a")).count();
    assert!(orphans > 150, "b holds {orphans} of a's");
    for x in ["a", "c", "d"] {
        cl.cut.insert((id(x), id("b")));
    }
    cl.advance(Duration::from_millis(1500));
    assert!(cl.nodes[&id("b")].peers().iter().all(|p| !p.up), "b marked every peer down");
    cl.nodes.remove(&id("a"));
    // Heard again off the tick instants, so that the settling is off them too.
    cl.now += Duration::from_millis(7);
    cl.cut.clear();
    let end = cl.now + Duration::from_secs(5);
    while cl.now < end {
        cl.now += Duration::from_millis(1);
        cl.tick_all();
        let claimed = cl.claims_in_flight_from("b");
        if claimed > 0 {
            // Each claim goes to the two live peers, c and d.
            assert_eq!(claimed, 2 * orphans, "every orphan claimed in the first step that claims");
            let b = &cl.nodes[&id("b")];
            let settled = b.view.seen_enough_since.map(|t| t + b.view.failure_timeout);
            assert!(
                settled.is_some_and(|t| cl.now >= t && cl.now < t + Duration::from_millis(1)),
                "claimed at {:?}, the view settled at {:?}",
                cl.now - cl.t0,
                settled.map(|t| t - cl.t0)
            );
            return;
        }
        cl.pump();
    }
    panic!("b never claimed a's sessions");
}

#[test]
fn a_mass_failover_sends_no_first_copy_while_its_claims_are_pending() {
    let mut cl = Cluster::new(&["a", "b", "c"], 1);
    let n = 1500;
    create_many(&mut cl, "a", "a", n, 0);
    cl.advance(Duration::from_secs(2));
    cl.nodes.remove(&id("a"));
    let mut fulls = 0;
    let end = cl.now + Duration::from_secs(6);
    while cl.now < end {
        cl.now += Duration::from_millis(1);
        cl.tick_all();
        for (from, _, m) in &cl.wire {
            if let Message::Replicate { payload, .. } = m {
                if matches!(**payload, Payload::Full { .. }) {
                    fulls += 1;
                    let pending = cl.nodes[from].acquires.values().any(|a| a.failover);
                    assert!(!pending, "{from} sent a first copy while its failover claims are pending");
                }
            }
        }
        cl.pump();
    }
    let owned: usize = ["b", "c"].iter().map(|x| cl.nodes[&id(x)].stats().owned).sum();
    assert_eq!(owned, n as usize);
    assert!(fulls >= n, "{fulls} copies for {n} sessions");
    // The copies followed: every session has its backup again.
    for x in ["b", "c"] {
        let node = &cl.nodes[&id(x)];
        let rx = if x == "b" { "c" } else { "b" };
        for s in node.owned_sessions() {
            let v = cl.session(rx, s);
            assert!(v.is_some_and(|v| v.role == Role::Backup), "{s} backed up on {rx}");
        }
    }
}

#[test]
fn invalidate_replicates_a_tombstone_that_blocks_late_copies() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    create(&mut cl, "a", 1, "s", Ack::Async);
    cl.pump();
    cl.cmd("a", 2, Command::Invalidate { session: "s".into(), ack: Ack::Sync { backups: 1 } });
    cl.pump();
    assert!(matches!(cl.outcome(2), Some(Outcome::Replicated { version: 2, .. })));
    assert!(cl.session("b", "s").unwrap().invalidated);
    assert!(cl.events.iter().any(|(_, e)| matches!(e, Event::SessionInvalidated { .. })));
    // A late full copy of version 1 does not bring it back.
    let now = cl.now;
    let b = cl.nodes.get_mut(&id("b")).unwrap();
    let full =
        Payload::Full { version: 1, body: Body::Live { attrs: Attributes::new(), max_inactive_ms: 1000 } };
    b.handle_input(
        now,
        Input::Message {
            from: id("a"),
            msg: Message::Replicate {
                session: "s".into(),
                epoch: Epoch::new(1, id("a"), 1),
                payload: Arc::new(full),
            },
        },
    );
    assert!(b.session("s").unwrap().invalidated);
    cl.cmd("b", 3, Command::Get { session: "s".into() });
    assert_eq!(cl.outcome(3), Some(&Outcome::NotFound));
    cl.cmd("a", 4, Command::Get { session: "s".into() });
    assert_eq!(cl.outcome(4), Some(&Outcome::NotFound));
}

#[test]
fn owner_expires_inactive_sessions_and_backups_follow() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    cl.cmd(
        "a",
        1,
        Command::Create {
            session: "s".into(),
            attrs: Attributes::new(),
            max_inactive: Duration::from_secs(2),
            ack: Ack::Async,
        },
    );
    cl.advance(Duration::from_millis(1500));
    cl.cmd("a", 2, Command::Touch { session: "s".into() });
    assert_eq!(cl.outcome(2), Some(&Outcome::Touched));
    cl.advance(Duration::from_millis(1500));
    assert!(!cl.session("a", "s").unwrap().invalidated, "touch kept it alive");
    cl.advance(Duration::from_millis(1000));
    assert!(cl.session("a", "s").unwrap().invalidated);
    assert!(cl.session("b", "s").unwrap().invalidated);
    assert!(cl.events.iter().any(|(_, e)| matches!(e, Event::SessionExpired { .. })));
}

#[test]
fn restart_is_seen_as_leave_and_join_and_replica_is_rebuilt() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    create(&mut cl, "a", 1, "s", Ack::Async);
    cl.pump();
    let c = cfg(&["a", "b"], 1);
    let now = cl.now;
    cl.nodes.insert(id("b"), Node::new(c, id("b"), 2, Settings::default(), now).unwrap());
    cl.advance(Duration::from_millis(800));
    let downs =
        cl.events.iter().filter(|(n, e)| n == &id("a") && matches!(e, Event::PeerDown { .. })).count();
    assert_eq!(downs, 1);
    let v = cl.session("b", "s").expect("rebuilt on restarted backup");
    assert_eq!(v.version, 1);
}

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

#[test]
fn server_nodes_never_own() {
    let text = "[domain]\nname='t'\ntopology='client-server'\n[[node]]\nname='c'\naddress='h:1'\nmode='client'\n[[node]]\nname='s'\naddress='h:2'\nmode='server'\n";
    let c = DomainConfig::parse(text, "t").unwrap();
    let now = Instant::now();
    let mut s = Node::new(c, id("s"), 1, Settings::default(), now).unwrap();
    s.handle_input(now, Input::Command { id: 1, cmd: Command::Get { session: "x".into() } });
    assert!(matches!(s.poll_output(), Some(Output::Outcome { id: 1, outcome: Outcome::NotAllowed })));
}
