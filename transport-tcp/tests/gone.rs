//! A peer whose process is gone (its link closed without a leave, and its address refuses
//! connections) is reported [`TransportEvent::Gone`] by the node that dials it and by the one
//! it dials; with `closed_link_detection = false` it is not.

mod tcp_harness;

use std::sync::Arc;
use std::time::Duration;

use replication_core::carrier::conformance::*;
use replication_core::transport::{Transport, TransportEvent};
use tcp_harness::Tcp;

/// The first `Gone` within `limit`, skipping other events.
async fn gone_within<T: Transport<TestMsg>>(t: &T, limit: Duration) -> Option<String> {
    tokio::time::timeout(limit, async {
        loop {
            match t.recv().await {
                Some(TransportEvent::Gone(p)) => return p.to_string(),
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_peer_that_stopped_listening_is_reported_gone() {
    let mut c = Cluster::<Tcp>::start(&["a", "b", "c"], Sec::Tls, |_, _| {}).await;
    connected_all(c.node("b"), &["a", "c"]).await;
    connected(c.node("a"), "b").await;
    connected(c.node("c"), "b").await;
    // a dials b ("a" sorts first); b dials c.
    if let Some(b) = c.nodes.remove("b") {
        b.shutdown().await;
    }
    for n in ["a", "c"] {
        assert_eq!(gone_within(c.node(n), WAIT).await.as_deref(), Some("b"), "{n} reports b gone");
    }
    // a and c still talk.
    c.node("a").send(&n("c"), msg(Some(1), 7)).await.expect("queued");
    assert_eq!(receive(c.node("c"), "a", 1).await, vec![msg(Some(1), 7)]);
}

#[tokio::test]
async fn no_gone_when_closed_link_detection_is_off() {
    let mut c = Cluster::<Tcp>::start(&["a", "b"], Sec::Tls, |_, s| {
        let mut cfg = (*s.domain).clone();
        cfg.domain.closed_link_detection = false;
        s.domain = Arc::new(cfg);
    })
    .await;
    connected(c.node("a"), "b").await;
    if let Some(b) = c.nodes.remove("b") {
        b.shutdown().await;
    }
    disconnected(c.node("a"), "b").await;
    assert_eq!(gone_within(c.node("a"), Duration::from_secs(1)).await, None);
}
