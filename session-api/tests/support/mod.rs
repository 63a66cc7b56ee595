//! Shared test helpers: an in-memory transport hub (with partitions), domain files on
//! ephemeral loopback ports, and polling with deadlines.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use replication_core::transport::{Transport, TransportEvent};
use replication_core::{DomainConfig, Message, NodeId};
use tokio::sync::mpsc;

/// Test timings: heartbeat 50 ms, failure 300 ms, request timeout 2 s.
pub const TIMING: &str = "heartbeat_interval_ms = 50\nfailure_timeout_ms = 300\nrequest_timeout_ms = 2000\n";

/// A domain file for `nodes` (name, address, mode).
pub fn domain_text(extra: &str, nodes: &[(&str, String, &str)]) -> String {
    let mut t = format!("[domain]\nname = \"test\"\n{TIMING}{extra}\n");
    for (name, addr, mode) in nodes {
        t.push_str(&format!("[[node]]\nname = \"{name}\"\naddress = \"{addr}\"\nmode = \"{mode}\"\n"));
    }
    t
}

/// A domain of `nodes` (name, the session managers it declares) on loopback ports from
/// `first_port`.
pub fn managers_domain(first_port: u16, nodes: &[(&str, &[&str])]) -> DomainConfig {
    let mut t = format!("[domain]\nname = \"test\"\n{TIMING}");
    for (i, (name, managers)) in nodes.iter().enumerate() {
        let port = usize::from(first_port) + i;
        t.push_str(&format!("[[node]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\n"));
        if !managers.is_empty() {
            let list: Vec<String> = managers.iter().map(|m| format!("{m} = \"both\"")).collect();
            t.push_str(&format!("managers = {{ {} }}\n", list.join(", ")));
        }
    }
    parse(&t)
}

pub fn parse(text: &str) -> DomainConfig {
    DomainConfig::parse(text, "test.toml").expect("test domain parses")
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(feature = "tower")]
pub mod web;

type Inbox = mpsc::Sender<TransportEvent<Message>>;

/// An in-memory network: nodes attach, messages go through bounded channels; links can be cut.
#[derive(Default)]
pub struct Hub {
    nodes: Mutex<HashMap<NodeId, Inbox>>,
    cut: Mutex<HashSet<(NodeId, NodeId)>>,
}

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::new(Hub::default())
    }

    /// A transport for `me` (replacing an earlier one).
    pub fn attach(self: &Arc<Self>, me: &str) -> Arc<MemTransport> {
        let (tx, rx) = mpsc::channel(4096);
        let me = NodeId::new(me);
        self.nodes.lock().expect("hub").insert(me.clone(), tx.clone());
        Arc::new(MemTransport {
            me,
            inbox: tx,
            hub: self.clone(),
            rx: tokio::sync::Mutex::new(rx),
            closed: AtomicBool::new(false),
        })
    }

    /// Cuts (or heals) the links between `a` and every node of `others`, both ways.
    pub fn partition(&self, a: &str, others: &[&str], cut: bool) {
        let mut c = self.cut.lock().expect("hub");
        for o in others {
            for pair in [(NodeId::new(a), NodeId::new(o)), (NodeId::new(o), NodeId::new(a))] {
                if cut {
                    c.insert(pair);
                } else {
                    c.remove(&pair);
                }
            }
        }
    }

    // The shape of `Transport::offer`: a refused message comes back unboxed, as there.
    #[allow(clippy::result_large_err)]
    fn deliver(
        &self,
        from: &NodeId,
        to: &NodeId,
        msg: Message,
    ) -> Result<(), (replication_core::Error, Message)> {
        if self.cut.lock().expect("hub").contains(&(from.clone(), to.clone())) {
            return Ok(());
        }
        let inbox = self.nodes.lock().expect("hub").get(to).cloned();
        match inbox {
            Some(tx) => tx.try_send(TransportEvent::Message { from: from.clone(), msg }).map_err(|e| {
                let msg = match e.into_inner() {
                    TransportEvent::Message { msg, .. } => msg,
                    _ => unreachable!("a message was sent"),
                };
                (replication_core::Error::QueueFull { peer: to.to_string() }, msg)
            }),
            None => Ok(()),
        }
    }
}

pub struct MemTransport {
    me: NodeId,
    inbox: Inbox,
    hub: Arc<Hub>,
    rx: tokio::sync::Mutex<mpsc::Receiver<TransportEvent<Message>>>,
    closed: AtomicBool,
}

#[async_trait::async_trait]
impl Transport<Message> for MemTransport {
    fn local(&self) -> &NodeId {
        &self.me
    }

    fn offer(&self, to: &NodeId, msg: Message) -> Result<(), (replication_core::Error, Message)> {
        if self.closed.load(Ordering::Acquire) {
            return Err((replication_core::Error::Closed, msg));
        }
        self.hub.deliver(&self.me, to, msg)
    }

    async fn send(&self, to: &NodeId, msg: Message) -> Result<(), replication_core::Error> {
        self.try_send(to, msg)
    }

    async fn recv(&self) -> Option<TransportEvent<Message>> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        self.rx.lock().await.recv().await
    }

    fn poll_recv(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<TransportEvent<Message>>> {
        if self.closed.load(Ordering::Acquire) {
            return std::task::Poll::Ready(None);
        }
        match self.rx.try_lock() {
            Ok(mut rx) => rx.poll_recv(cx),
            Err(_) => {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        }
    }

    /// The hub reaches every node attached: a node added to the domain needs nothing more.
    fn add_peers(&self, _domain: Arc<DomainConfig>) -> Result<(), replication_core::Error> {
        Ok(())
    }

    async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let mut nodes = self.hub.nodes.lock().expect("hub");
        // Only detach if the hub still points at this transport (not at a restarted one).
        if nodes.get(&self.me).is_some_and(|tx| tx.same_channel(&self.inbox)) {
            nodes.remove(&self.me);
        }
    }
}
