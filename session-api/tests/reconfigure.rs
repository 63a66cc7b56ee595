//! Online domain changes through the library: a node added to a running domain gets its
//! copies, replicas raised and lowered, refused files name their rule and change nothing.

mod support;

use std::sync::Arc;

use replication_core::change::rule;
use replication_core::{DomainConfig, NodeId};
use session_api::{Error, SessionManager};
use support::{Hub, domain_text, eventually, parse};

fn cfg(names: &[&str], replicas: u32) -> DomainConfig {
    let nodes: Vec<(&str, String, &str)> =
        names.iter().zip(7400u16..).map(|(n, port)| (*n, format!("127.0.0.1:{port}"), "both")).collect();
    parse(&domain_text(&format!("replicas = {replicas}\n"), &nodes))
}

async fn start(hub: &Arc<Hub>, cfg: &DomainConfig, name: &str) -> SessionManager {
    SessionManager::builder(cfg.clone(), name)
        .transport(hub.attach(name) as Arc<_>)
        .start()
        .await
        .expect("starts")
}

/// Waits until every node runs `cfg`, the change is complete and no session lacks a copy.
async fn settled(managers: &[&SessionManager], cfg: &DomainConfig) {
    let fp = replication_core::change::fingerprint(cfg);
    for m in managers {
        eventually(20, "the change completes", || async {
            let d = m.domain_view().await.ok()?;
            let under = m.metrics().await.ok()?.core.under_replicated;
            (d.fingerprint == fp && !d.changing && under == 0).then_some(())
        })
        .await;
    }
}

fn codes(e: &Error) -> Vec<&'static str> {
    match e {
        Error::Core(replication_core::Error::Invalid(r)) => r.codes().into_iter().collect(),
        other => panic!("not a refusal: {other:?}"),
    }
}

#[tokio::test]
async fn a_node_added_to_a_running_domain_gets_its_copies() {
    let hub = Hub::new();
    let two = cfg(&["a", "b"], 1);
    let a = start(&hub, &two, "a").await;
    let b = start(&hub, &two, "b").await;
    a.ready().await.expect("ready");
    let mut ids = Vec::new();
    for i in 0..40u8 {
        let s = a.create_with([("k".to_owned(), vec![i])].into_iter().collect()).await.expect("created");
        ids.push(s.id().to_owned());
    }
    let three = cfg(&["a", "b", "c"], 1);
    let c = start(&hub, &three, "c").await;
    let plan = a.reconfigure(three.clone()).await.expect("allowed");
    assert_eq!(plan.added, [NodeId::new("c")].into());
    assert_eq!(a.domain().nodes.len(), 3, "the handle reads the file the node runs now");
    assert!(a.placement().nodes().any(|n| n.as_str() == "c"), "and places by it");
    assert_eq!(b.domain().nodes.len(), 2, "b has not reloaded");
    assert!(a.domain_view().await.expect("view").changing, "b runs the former file");
    b.reconfigure(three.clone()).await.expect("allowed");
    settled(&[&a, &b, &c], &three).await;
    let held = c.metrics().await.expect("metrics").core.backups;
    assert!(held > 0, "c holds copies of a's sessions");
    // Every session is still there, with its value.
    for (i, id) in ids.iter().enumerate() {
        let s = c.get(id).await.expect("read").expect("found");
        assert_eq!(s.get_bytes("k"), Some(&[i as u8][..]));
    }
}

#[tokio::test]
async fn replicas_raised_then_lowered() {
    let hub = Hub::new();
    let one = cfg(&["a", "b", "c"], 1);
    let ms = [start(&hub, &one, "a").await, start(&hub, &one, "b").await, start(&hub, &one, "c").await];
    ms[0].ready().await.expect("ready");
    for _ in 0..30 {
        ms[0].create().await.expect("created");
    }
    let two = cfg(&["a", "b", "c"], 2);
    for m in &ms {
        assert!(m.reconfigure(two.clone()).await.expect("allowed").replicas_changed);
    }
    settled(&[&ms[0], &ms[1], &ms[2]], &two).await;
    let copies: usize = futures_sum(&ms).await;
    assert_eq!(copies, 60, "two backups of each of the 30 sessions");
    for m in &ms {
        m.reconfigure(one.clone()).await.expect("allowed");
    }
    settled(&[&ms[0], &ms[1], &ms[2]], &one).await;
    eventually(10, "the extra copies dropped", || async { (futures_sum(&ms).await == 30).then_some(()) })
        .await;
}

async fn futures_sum(ms: &[SessionManager]) -> usize {
    let mut n = 0;
    for m in ms {
        n += m.metrics().await.map(|x| x.core.backups).unwrap_or(0);
    }
    n
}

#[tokio::test]
async fn a_refused_file_names_its_rule_and_changes_nothing() {
    let hub = Hub::new();
    let two = cfg(&["a", "b"], 1);
    let a = start(&hub, &two, "a").await;
    let _b = start(&hub, &two, "b").await;
    let before = a.domain_view().await.expect("view");
    let mut renamed = two.clone();
    renamed.domain.name = "other".into();
    let e = a.reconfigure(renamed).await.expect_err("refused");
    assert_eq!(codes(&e), [rule::DOMAIN_NAME]);
    let mut zero = two.clone();
    zero.domain.replicas = replication_core::Replicas::Count(0);
    let e = a.reconfigure(zero).await.expect_err("refused");
    assert_eq!(codes(&e), [replication_core::validate::rule::REPLICAS_MIN]);
    let e = a.reconfigure(std::path::Path::new("/nonexistent/domain.toml")).await.expect_err("refused");
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    let after = a.domain_view().await.expect("view");
    assert_eq!((after.fingerprint, after.changing), (before.fingerprint, false));
    assert!(a.reconfigure(two.clone()).await.expect("same file").unchanged());
}

#[tokio::test]
async fn a_node_the_new_file_no_longer_lists_leaves() {
    let hub = Hub::new();
    let three = cfg(&["a", "b", "c"], 1);
    let ms = [start(&hub, &three, "a").await, start(&hub, &three, "b").await, start(&hub, &three, "c").await];
    ms[2].ready().await.expect("ready");
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(ms[2].create().await.expect("created").id().to_owned());
    }
    let two = cfg(&["a", "b"], 1);
    for m in &ms[..2] {
        m.reconfigure(two.clone()).await.expect("allowed");
    }
    let plan = ms[2].reconfigure(two.clone()).await.expect("allowed");
    assert!(plan.removes_this_node);
    eventually(10, "c left", || async { ms[2].metrics().await.is_err().then_some(()) }).await;
    settled(&[&ms[0], &ms[1]], &two).await;
    for id in &ids {
        assert!(ms[0].get(id).await.expect("read").is_some(), "{id} handed off");
    }
}
