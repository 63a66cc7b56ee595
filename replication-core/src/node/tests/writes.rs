//! Owner writes and their acknowledgements, expiry, statistics of unacknowledged changes.

use crate::api::{Ack, Command, Event, Input, Outcome, Output, Role, Settings};
use crate::harness::*;
use crate::message::{Attributes, Body, Change, Epoch, Message, Payload};
use crate::node::Node;
use crate::node::store::{OwnerState, Record, Replica};
use std::time::{Duration, Instant};

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
fn acks_in_one_message_complete_writes_as_single_acks_do() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    create(&mut cl, "a", 1, "s", Ack::Sync { backups: 1 });
    create(&mut cl, "a", 2, "t", Ack::Sync { backups: 1 });
    // The backup takes both replicates; its acks go back as one `Acks`, as a runtime sends them.
    let (b, now) = (id("b"), cl.now);
    for (from, _, msg) in std::mem::take(&mut cl.wire) {
        cl.nodes.get_mut(&b).unwrap().handle_input(now, Input::Message { from, msg });
        cl.collect(&b);
    }
    let mut acks = Vec::new();
    for (_, _, msg) in std::mem::take(&mut cl.wire) {
        let Message::Ack { session, epoch, version } = msg else { panic!("{msg:?}") };
        acks.push((session, epoch, version));
    }
    assert_eq!(acks.len(), 2);
    cl.wire.push_back((b, id("a"), Message::Acks { acks }));
    cl.pump();
    for rid in [1, 2] {
        assert!(
            matches!(cl.outcome(rid), Some(Outcome::Replicated { acks: 1, .. })),
            "{:?}",
            cl.outcome(rid)
        );
    }
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
    b.handle_input(now, replicate("a", "s", Epoch::new(1, id("a"), 1), full));
    assert!(b.session("s").unwrap().invalidated);
    cl.cmd("b", 3, Command::Get { session: "s".into() });
    assert_eq!(cl.outcome(3), Some(&Outcome::NotFound));
    cl.cmd("a", 4, Command::Get { session: "s".into() });
    assert_eq!(cl.outcome(4), Some(&Outcome::NotFound));
}

#[test]
fn owner_expires_inactive_sessions_and_backups_follow() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    create_inactive(&mut cl, "a", 1, "s", Duration::from_secs(2));
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
fn huge_max_inactive_never_expires_and_never_panics() {
    let mut cl = Cluster::new(&["a", "b"], 1);
    create_inactive(&mut cl, "a", 1, "s", Duration::MAX);
    cl.advance(Duration::from_secs(3));
    assert_eq!(cl.session("a", "s").unwrap().role, Role::Owner);
    assert_eq!(cl.session("b", "s").unwrap().role, Role::Backup);
}

/// A session is bounded by the domain's `max_session_bytes`, so that a full copy always fits a
/// frame: a create or a write past it is refused before anything is applied, on the owner and
/// its backup; a write that shrinks a session is taken.
#[test]
fn a_write_past_max_session_bytes_is_refused_and_changes_nothing() {
    let mut c = cfg(&["a", "b"], 1);
    c.domain.max_session_bytes = 4096;
    let mut cl = Cluster::from_config(c, Settings::default());
    cl.tick_all();
    cl.pump();
    let sync = Ack::Sync { backups: 1 };
    let big = vec![7u8; 5000];
    cl.cmd(
        "a",
        1,
        Command::Create {
            session: "huge".into(),
            attrs: attrs(&[("k", &big)]),
            max_inactive: Duration::from_secs(60),
            ack: sync,
        },
    );
    cl.pump();
    assert!(
        matches!(cl.outcome(1), Some(Outcome::TooLarge { size, limit: 4096 }) if *size > 5000),
        "{:?}",
        cl.outcome(1)
    );
    assert!(cl.session("a", "huge").is_none() && cl.session("b", "huge").is_none(), "nothing created");

    create(&mut cl, "a", 2, "s", sync);
    cl.pump();
    set_k(&mut cl, "a", 3, "s", &[1u8; 3000], sync);
    cl.pump();
    assert!(matches!(cl.outcome(3), Some(Outcome::Replicated { version: 2, .. })), "{:?}", cl.outcome(3));
    // 3,000 more bytes under another name: over the limit.
    let grow = vec![Change::Set("other".into(), vec![2u8; 3000].into())];
    cl.cmd("a", 4, Command::Update { session: "s".into(), expected_version: None, changes: grow, ack: sync });
    cl.pump();
    assert!(matches!(cl.outcome(4), Some(Outcome::TooLarge { limit: 4096, .. })), "{:?}", cl.outcome(4));
    for n in ["a", "b"] {
        let v = cl.session(n, "s").expect("held");
        assert_eq!(v.version, 2, "{n}: the refused write applied nothing");
    }
    // Replacing the big value by a small one is taken.
    set_k(&mut cl, "a", 5, "s", b"small", sync);
    cl.pump();
    assert!(matches!(cl.outcome(5), Some(Outcome::Replicated { version: 3, .. })), "{:?}", cl.outcome(5));
}

/// A node that holds `max_sessions` records refuses to create more, and only creates: its
/// backups and the sessions it already holds still take writes.
#[test]
fn a_full_node_refuses_creates_only() {
    let settings = Settings { max_sessions: 2, ..Settings::default() };
    let mut cl = Cluster::from_config(cfg(&["a", "b"], 1), settings);
    cl.tick_all();
    cl.pump();
    let sync = Ack::Sync { backups: 1 };
    create(&mut cl, "a", 1, "s1", sync);
    create(&mut cl, "b", 2, "s2", sync);
    cl.pump();
    // a holds s1 and a copy of s2.
    assert_eq!(cl.nodes[&id("a")].stats().held, 2);
    create(&mut cl, "a", 3, "s3", sync);
    assert!(matches!(cl.outcome(3), Some(Outcome::Full { held: 2, limit: 2 })), "{:?}", cl.outcome(3));
    assert!(cl.session("a", "s3").is_none());
    set_k(&mut cl, "a", 4, "s1", b"v", sync);
    set_k(&mut cl, "b", 5, "s2", b"v", sync);
    cl.pump();
    assert!(matches!(cl.outcome(4), Some(Outcome::Replicated { .. })), "{:?}", cl.outcome(4));
    assert!(matches!(cl.outcome(5), Some(Outcome::Replicated { .. })), "{:?}", cl.outcome(5));
}
