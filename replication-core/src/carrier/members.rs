//! The peers of a running transport, and the nodes a reload adds to them
//! ([`Transport::add_peers`](crate::transport::Transport::add_peers)).
//!
//! [`Members`] holds, per peer, the transport's sending side (its queues), the route the
//! accept loop hands the peer's accepted links to, and starts the peer's task
//! ([`peer_task`]) the same way whether the peer was in the file the transport started with
//! or a reload added it. Adding nodes replaces the domain every task checks against
//! ([`Common::cfg`]: the Hello checks, the dialed addresses, and, with TLS, the client
//! certificates, see [`crate::tls::server_config_following`]), and reserves handshake slots
//! for the added nodes' addresses ([`Admission::reserve`]). A node the new file no longer
//! lists keeps its task and queues until the transport stops: the engine stops addressing
//! it, and its link ends when it leaves. So every map here holds at most one entry per node
//! any file of this run has listed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio::sync::mpsc;

use super::admission::{Admission, resolve};
use super::peer::{Carrier, peer_task};
use super::{AppSide, Common};
use crate::config::{DomainConfig, NodeId};
use crate::error::Error;
use crate::transport::{TransportEvent, WireMessage};

/// Where the accept loop sends the links it authenticated, per peer.
pub type Routes<L> = Arc<RwLock<HashMap<NodeId, mpsc::Sender<L>>>>;

/// Links the accept loop may queue for one peer's task.
const LINKS_PER_PEER: usize = 4;

/// The peers of one transport: `P` is the transport's sending side of a peer.
#[derive(Debug)]
pub struct Members<L, M, P> {
    peers: RwLock<HashMap<NodeId, P>>,
    routes: Routes<L>,
    admission: Admission,
    /// The peer tasks' event queue; weak, so that `recv` ends once every task has.
    events: mpsc::WeakSender<TransportEvent<M>>,
}

impl<L: Send + 'static, M: WireMessage, P> Members<L, M, P> {
    /// No peers yet; their tasks will report to `events`, their addresses get slots in
    /// `admission`.
    pub fn new(admission: Admission, events: &mpsc::Sender<TransportEvent<M>>) -> Self {
        Members {
            peers: RwLock::new(HashMap::new()),
            routes: Arc::new(RwLock::new(HashMap::new())),
            admission,
            events: events.downgrade(),
        }
    }

    /// The routes, for the accept loop.
    pub fn routes(&self) -> Routes<L> {
        self.routes.clone()
    }

    /// The handshake slots, for the accept loop.
    pub fn admission(&self) -> Admission {
        self.admission.clone()
    }

    /// The sending sides, per peer: every node a file of this run lists (but this one).
    pub fn read(&self) -> RwLockReadGuard<'_, HashMap<NodeId, P>> {
        self.peers.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the task of `peer` (sending side `p`, receiving side `queues`) in `app`.
    pub fn add<C>(
        &self,
        shared: &Arc<C>,
        app: &AppSide<M>,
        peer: NodeId,
        p: P,
        queues: C::Queues,
    ) -> Result<(), Error>
    where
        C: Carrier<M, Link = L>,
    {
        let events = self.events.upgrade().ok_or(Error::Closed)?;
        let (links, links_rx) = mpsc::channel(LINKS_PER_PEER);
        let dials = shared.common().local < peer;
        app.spawn(peer_task(shared.clone(), peer.clone(), dials, queues, links_rx, events))?;
        self.routes.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(peer.clone(), links);
        self.peers.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(peer, p);
        Ok(())
    }

    /// Links to the nodes `domain` adds (see the module docs); `make` builds a new peer's
    /// sending and receiving sides. Refuses a file of another domain or without this node.
    pub fn add_peers<C>(
        &self,
        shared: &Arc<C>,
        app: &AppSide<M>,
        domain: Arc<DomainConfig>,
        mut make: impl FnMut() -> (P, C::Queues),
    ) -> Result<(), Error>
    where
        C: Carrier<M, Link = L>,
    {
        app.check_open()?;
        let common: &Common = shared.common();
        let name = common.cfg.load().domain.name.clone();
        if domain.domain.name != name {
            return Err(Error::Settings(format!(
                "the new file is of domain `{}`, this transport links domain `{name}`",
                domain.domain.name
            )));
        }
        if domain.node(&common.local).is_none() {
            return Err(Error::Settings(format!("the new file does not list this node `{}`", common.local)));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Settings("adding peers needs the transport's tokio runtime".into()))?;
        let added: Vec<NodeId> = {
            let peers = self.read();
            domain
                .nodes
                .iter()
                .map(|n| n.name.clone())
                .filter(|n| n != &common.local && !peers.contains_key(n))
                .collect()
        };
        // The tasks of the added nodes read their addresses from the new file.
        common.cfg.store(domain.clone());
        for peer in &added {
            let (p, queues) = make();
            self.add(shared, app, peer.clone(), p, queues)?;
        }
        if !added.is_empty() {
            let admission = self.admission.clone();
            runtime.spawn(async move { admission.reserve(resolve(&domain, &added).await) });
        }
        Ok(())
    }
}
