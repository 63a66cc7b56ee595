//! What handles ask the driver and what it answers: requests over the bounded command channel,
//! replies on a oneshot (async handles) or a crossbeam channel (blocking handles).

use std::time::Duration;

use replication_core::change::Plan;
use replication_core::{
    Ack, Attributes, Change, Command, DomainConfig, DomainView, Outcome, SessionView, Version,
};
use tokio::sync::oneshot;

use super::SyncReport;
use crate::error::{Error, Result};
use crate::metrics::{Metrics, Peers};

/// What the driver answers.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The engine's outcome (staged writes and overlay-aware reads are translated to it).
    Outcome(Outcome),
    /// The outcome of a write, with the session's attributes the write left when the engine
    /// still holds them at the written version (shared, not copied), so that the handle does
    /// not build them again.
    Written { outcome: Outcome, attrs: Option<Attributes> },
    /// A session created under a fresh id.
    Created { id: String, outcome: Outcome },
    /// What this node holds about a session.
    View(Option<Box<SessionView>>),
    /// Owned session ids.
    Ids(Vec<String>),
    /// A metrics snapshot.
    Metrics(Box<Metrics>),
    /// The membership.
    Peers(Peers),
    /// The result of a flush of staged changes.
    Synced(SyncReport),
    /// A new domain file taken (online domain change).
    Reconfigured(Box<Plan>),
    /// The domain file this node runs and its peers'.
    Domain(Box<DomainView>),
    /// A request that could not be served.
    Failed(Error),
}

impl Reply {
    /// What a reply other than the one a request expects means to the caller: the driver's
    /// error, or [`Error::ShuttingDown`] (a leaving driver answers every request with
    /// [`Outcome::ShuttingDown`]).
    pub(crate) fn into_error(self) -> Error {
        match self {
            Reply::Failed(e) => e,
            _ => Error::ShuttingDown,
        }
    }
}

/// Where a reply goes: a tokio oneshot (async handles) or a crossbeam channel (blocking handles).
#[derive(Debug)]
pub(crate) enum Responder {
    Async(oneshot::Sender<Reply>),
    Blocking(crossbeam_channel::Sender<Reply>),
}

impl Responder {
    pub(super) fn send(self, reply: Reply) {
        // A caller that gave up (timeout, dropped future) no longer listens; that is fine.
        match self {
            Responder::Async(tx) => {
                let _ = tx.send(reply);
            }
            Responder::Blocking(tx) => {
                let _ = tx.try_send(reply);
            }
        }
    }
}

/// A request from a handle.
#[derive(Debug)]
pub(crate) enum Request {
    /// A core command, sent as is (writes, invalidation, touch, acquire).
    Core { cmd: Command, reply: Responder },
    /// Create a session; a fresh id naming the owner and failover target when `id` is `None`.
    /// `id` is the engine key; a fresh id is scoped by `manager`. `ack` is the handle's.
    Create {
        id: Option<String>,
        manager: Option<String>,
        attrs: Attributes,
        max_inactive: Duration,
        ack: Ack,
        reply: Responder,
    },
    /// Read (fetching it when another node holds it); staged changes are applied.
    Get { session: String, reply: Responder },
    /// A write, staged (its manager's write frequency is manual or time-based) or sent (end of
    /// request). `ack` is the handle's (sent writes; a flush of staged ones uses the manager's).
    Write { session: String, expected: Option<Version>, changes: Vec<Change>, ack: Ack, reply: Responder },
    /// Write every staged change of `manager` (`None`: the anonymous one) now.
    Sync { manager: Option<String>, reply: Responder },
    /// What this node holds about a session (no fetch).
    Inspect { session: String, reply: Responder },
    /// Ids of the sessions this node owns.
    Owned { reply: Responder },
    /// A metrics snapshot.
    Metrics { reply: Responder },
    /// The membership (cheap: no pass over the sessions).
    Peers { reply: Responder },
    /// Switch to a new domain file (online domain change).
    Reconfigure { config: Box<DomainConfig>, reply: Responder },
    /// The domain file this node runs and its peers'.
    Domain { reply: Responder },
    /// Leave the domain and stop.
    Shutdown { reply: Responder },
    /// Stop at once without leaving, like a crash.
    Abort { reply: Responder },
}

pub(super) fn reply(r: Option<Responder>, reply: Reply) {
    if let Some(r) = r {
        r.send(reply);
    }
}

pub(super) fn request_reply(req: Request) -> Responder {
    match req {
        Request::Core { reply, .. }
        | Request::Create { reply, .. }
        | Request::Get { reply, .. }
        | Request::Write { reply, .. }
        | Request::Sync { reply, .. }
        | Request::Inspect { reply, .. }
        | Request::Owned { reply }
        | Request::Metrics { reply }
        | Request::Peers { reply }
        | Request::Reconfigure { reply, .. }
        | Request::Domain { reply }
        | Request::Shutdown { reply }
        | Request::Abort { reply } => reply,
    }
}

/// Checks a reply is what a write expects.
pub(crate) fn expect_outcome(r: Reply) -> Result<Outcome> {
    match r {
        Reply::Outcome(o) | Reply::Created { outcome: o, .. } | Reply::Written { outcome: o, .. } => Ok(o),
        other => Err(other.into_error()),
    }
}
