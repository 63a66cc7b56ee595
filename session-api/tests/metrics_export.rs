//! Export through the `metrics` facade, as an embedding application does it: its own
//! `metrics-exporter-prometheus` recorder (one per node, or the global one) exposes the nodes'
//! counters, gauges and latency histograms, checked with a Prometheus text parser.

mod support;

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use prometheus_parse::{Sample, Scrape, Value};
use session_api::metrics::export::{CLAIM_SECONDS, LATENCY_BUCKETS, SYNC_WRITE_SECONDS};
use session_api::{AckPolicy, Replication, SessionManager};
use support::{Hub, domain_text, eventually, parse};

fn prometheus() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Prefix("m2m_".into()), LATENCY_BUCKETS)
        .expect("buckets")
}

/// Starts nodes `names` of one domain on an in-memory network, each with `recorder(name)`
/// (`None`: the global recorder), and waits until they see each other.
async fn start(
    names: &[&str],
    recorder: impl Fn(&str) -> Option<Arc<PrometheusRecorder>>,
) -> Vec<SessionManager> {
    // The in-memory network dials nobody: the addresses only have to differ.
    let nodes: Vec<_> =
        names.iter().enumerate().map(|(i, n)| (*n, format!("127.0.0.1:{}", i + 1), "both")).collect();
    let cfg = parse(&domain_text("", &nodes));
    let hub = Hub::new();
    let mut managers = Vec::new();
    for name in names {
        let mut b = SessionManager::builder(cfg.clone(), name)
            .transport(hub.attach(name))
            .ack(AckPolicy::Sync { backups: 1, timeout: Duration::from_secs(5) });
        if let Some(r) = recorder(name) {
            b = b.metrics_recorder(r);
        }
        managers.push(b.start().await.expect("node starts"));
    }
    for m in &managers {
        eventually(10, "peers up", || async {
            let s = m.metrics().await.ok()?;
            (s.peers.iter().filter(|p| p.up).count() == names.len() - 1).then_some(())
        })
        .await;
    }
    managers
}

/// Creates `n` sessions on `node` and writes each once more: two writes per session, each
/// acknowledged by a backup.
async fn create(node: &SessionManager, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut s = node.create().await.expect("create");
        s.set("n", &i).expect("set");
        let c = node.commit(&mut s).await.expect("commit");
        assert!(matches!(c.replication, Replication::Replicated { .. }), "{c:?}");
        ids.push(s.id().to_owned());
    }
    ids
}

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the exposition parses")
}

/// The sample of `metric` whose labels are `labels` exactly.
fn sample<'a>(s: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> &'a Sample {
    s.samples
        .iter()
        .find(|x| {
            x.metric == metric
                && x.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {metric} {labels:?} in {:#?}", s.samples))
}

fn gauge(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(s, metric, labels).value {
        Value::Gauge(v) => v,
        ref other => panic!("{metric} is not a gauge: {other:?}"),
    }
}

fn counter(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(s, metric, labels).value {
        Value::Counter(v) => v,
        ref other => panic!("{metric} is not a counter: {other:?}"),
    }
}

/// The histogram's buckets (upper bound, cumulative count).
fn histogram(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    match &sample(s, metric, labels).value {
        Value::Histogram(b) => b.iter().map(|b| (b.less_than, b.count)).collect(),
        other => panic!("{metric} is not a histogram: {other:?}"),
    }
}

/// Observations of a histogram: its `+Inf` bucket, which must agree with `_count`.
fn observations(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let buckets = histogram(s, metric, labels);
    let bounds: Vec<f64> = buckets.iter().map(|b| b.0).collect();
    let mut want = LATENCY_BUCKETS.to_vec();
    want.push(f64::INFINITY);
    assert_eq!(bounds, want, "{metric} has the latency buckets");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative buckets: {buckets:?}");
    let count = match sample(s, &format!("{metric}_count"), labels).value {
        Value::Untyped(v) | Value::Counter(v) => v,
        ref other => panic!("{metric}_count: {other:?}"),
    };
    let total = buckets.last().map_or(0.0, |b| b.1);
    assert_eq!(total, count, "{metric}: +Inf bucket and _count agree");
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_per_node_exposes_that_node_alone() {
    let recorders: Vec<Arc<PrometheusRecorder>> =
        (0..2).map(|_| Arc::new(prometheus().build_recorder())).collect();
    let nodes = start(&["a", "b"], |n| Some(recorders[usize::from(n == "b")].clone())).await;
    let ids = create(&nodes[0], 3).await;
    // A read on b of a session a owns: b claims it.
    let got = nodes[1].get(&ids[0]).await.expect("read on b").expect("the session exists");
    assert_eq!(got.get::<usize>("n").expect("n"), Some(0));
    for n in &nodes {
        n.metrics().await.expect("a snapshot publishes the counters and gauges");
    }
    let [a, b] = [0, 1].map(|i| scrape(&recorders[i].handle().render()));

    for (s, me) in [(&a, "a"), (&b, "b")] {
        assert!(
            s.samples.iter().all(|x| x.labels.get("node") == Some(me)),
            "node {me}'s recorder holds node {me} only: {:#?}",
            s.samples
        );
    }
    let node = |n| [("node", n)];
    assert_eq!(gauge(&a, "m2m_sessions_owned", &node("a")), 2.0);
    assert_eq!(gauge(&b, "m2m_sessions_owned", &node("b")), 1.0);
    assert_eq!(gauge(&b, "m2m_sessions_backed_up", &node("b")), 2.0);
    assert_eq!(gauge(&a, "m2m_peers_up", &node("a")), 1.0);
    assert_eq!(gauge(&a, "m2m_peer_up", &[("node", "a"), ("peer", "b")]), 1.0);
    assert_eq!(counter(&b, "m2m_acquisitions_total", &node("b")), 1.0);
    assert!(counter(&a, "m2m_messages_sent_total", &node("a")) > 0.0);
    assert!(counter(&a, "m2m_requests_total", &node("a")) >= 3.0);
    assert_eq!(observations(&a, SYNC_WRITE_SECONDS, &node("a")), 6.0, "six acknowledged writes");
    assert_eq!(observations(&b, CLAIM_SECONDS, &node("b")), 1.0, "one read claimed the session");
    assert_eq!(observations(&a, CLAIM_SECONDS, &node("a")), 0.0);
    assert!(a.docs.get("m2m_sessions_owned").is_some_and(|d| !d.is_empty()), "HELP lines");

    // Counters and histograms accumulate across publications and renders.
    let sent = counter(&a, "m2m_messages_sent_total", &node("a"));
    create(&nodes[0], 1).await;
    nodes[0].metrics().await.expect("snapshot");
    let later = scrape(&recorders[0].handle().render());
    assert_eq!(observations(&later, SYNC_WRITE_SECONDS, &node("a")), 8.0);
    assert_eq!(gauge(&later, "m2m_sessions_owned", &node("a")), 3.0);
    assert!(counter(&later, "m2m_messages_sent_total", &node("a")) > sent);
    for n in nodes {
        n.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_recorder_tells_nodes_apart_by_their_node_label() {
    // Installed before the nodes start: their handles are registered when they start.
    let handle = prometheus().install_recorder().expect("the only global recorder of this test binary");
    let nodes = start(&["g1", "g2"], |_| None).await;
    create(&nodes[1], 2).await;
    for n in &nodes {
        n.metrics().await.expect("snapshot");
    }
    let s = scrape(&handle.render());
    let node = |n| [("node", n)];
    assert_eq!(gauge(&s, "m2m_sessions_owned", &node("g1")), 0.0);
    assert_eq!(gauge(&s, "m2m_sessions_owned", &node("g2")), 2.0);
    assert_eq!(gauge(&s, "m2m_sessions_backed_up", &node("g1")), 2.0);
    assert_eq!(observations(&s, SYNC_WRITE_SECONDS, &node("g2")), 4.0);
    assert_eq!(observations(&s, SYNC_WRITE_SECONDS, &node("g1")), 0.0);
    for n in nodes {
        n.shutdown().await.expect("shutdown");
    }
}
