//! The client-server topology.

use crate::api::{Ack, Command, Input, Outcome, Output, Role, Settings};
use crate::config::DomainConfig;
use crate::harness::*;
use crate::message::Attributes;
use crate::node::Node;
use std::time::{Duration, Instant};

#[test]
fn server_nodes_never_own() {
    let text = "[domain]\nname='t'\ntopology='client-server'\n[[node]]\nname='c'\naddress='h:1'\nmode='client'\n[[node]]\nname='s'\naddress='h:2'\nmode='server'\n";
    let c = DomainConfig::parse(text, "t").unwrap();
    let now = Instant::now();
    let mut s = Node::new(c, id("s"), 1, Settings::default(), now).unwrap();
    s.handle_input(now, Input::Command { id: 1, cmd: Command::Get { session: "x".into() } });
    assert!(matches!(s.poll_output(), Some(Output::Outcome { id: 1, outcome: Outcome::NotAllowed })));
}

fn cs_cluster() -> Cluster {
    let text = "[domain]\nname='t'\ntopology='client-server'\nreplicas=1\n\
        [[node]]\nname='c1'\naddress='h:1'\nmode='client'\n\
        [[node]]\nname='c2'\naddress='h:2'\nmode='client'\n\
        [[node]]\nname='s1'\naddress='h:3'\nmode='server'\n\
        [[node]]\nname='s2'\naddress='h:4'\nmode='server'\n";
    Cluster::from_config(DomainConfig::parse(text, "t").unwrap(), Settings::default())
}

#[test]
fn client_server_backups_live_on_servers_and_clients_fetch() {
    let mut cl = cs_cluster();
    cl.cmd(
        "c1",
        1,
        Command::Create {
            session: "s".into(),
            attrs: Attributes::new(),
            max_inactive: Duration::from_secs(60),
            ack: Ack::Sync { backups: 1 },
        },
    );
    cl.pump();
    assert!(matches!(cl.outcome(1), Some(Outcome::Replicated { acks: 1, .. })));
    let backups = cl.session("c1", "s").unwrap().backups;
    assert_eq!(backups.len(), 1);
    assert!(backups[0].0.as_str().starts_with('s'));
    assert!(cl.session("c2", "s").is_none(), "clients hold no backups");
    // c1 dies: nothing moves by itself in client-server ...
    cl.nodes.remove(&id("c1"));
    cl.advance(Duration::from_millis(1500));
    assert!(cl.nodes.values().all(|n| n.stats().owned == 0));
    // ... the next request for it, on c2, fetches it from the server.
    // (Its first claim names no owner, since c2 holds no copy; the copy it collects names c1,
    // which it did not reach, so it claims again at once naming c1.)
    cl.cmd("c2", 2, Command::Get { session: "s".into() });
    cl.pump();
    assert!(matches!(cl.outcome(2), Some(Outcome::Found { epoch, .. }) if epoch.node == id("c2")));
    cl.cmd("s1", 3, Command::Get { session: "s".into() });
    assert_eq!(cl.outcome(3), Some(&Outcome::NotAllowed));
}

/// Client-server: the owner client leaves gracefully (its session stays, ownerless, on the
/// server backing it up, as designed: clients fetch on demand), then that server leaves
/// too. It must hand its copy to the other server first (`Message::Handoff`), or the
/// session is gone.
#[test]
fn a_leaving_server_hands_ownerless_copies_to_another_server() {
    let mut cl = cs_cluster();
    create(&mut cl, "c1", 1, "s", Ack::Sync { backups: 1 });
    cl.pump();
    assert!(matches!(cl.outcome(1), Some(Outcome::Replicated { acks: 1, .. })));
    let server = cl.session("c1", "s").unwrap().backups[0].0.clone();
    let other = if server == id("s1") { id("s2") } else { id("s1") };
    cl.cmd("c1", 2, Command::Leave);
    cl.advance(Duration::from_millis(300));
    assert!(matches!(cl.outcome(2), Some(Outcome::Left { handed_off: 1, unreplicated: 0 })));
    cl.nodes.remove(&id("c1"));
    assert!(cl.session(other.as_str(), "s").is_none_or(|v| v.epoch.is_none()), "one server holds it");
    cl.cmd(server.as_str(), 3, Command::Leave);
    for _ in 0..50 {
        if cl.nodes[&server].has_left() {
            break;
        }
        cl.advance(Duration::from_millis(50));
    }
    assert!(matches!(cl.outcome(3), Some(Outcome::Left { unreplicated: 0, .. })), "{:?}", cl.outcome(3));
    cl.nodes.remove(&server);
    let v = cl.session(other.as_str(), "s").expect("handed off");
    assert_eq!((v.role, v.version), (Role::Backup, 1));
    // The client left fetches it from the remaining server.
    cl.advance(Duration::from_millis(1500));
    cl.cmd("c2", 4, Command::Get { session: "s".into() });
    cl.pump();
    assert!(
        matches!(cl.outcome(4), Some(Outcome::Found { epoch, .. }) if epoch.node == id("c2")),
        "{:?}",
        cl.outcome(4)
    );
}
