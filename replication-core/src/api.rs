//! The types a runtime exchanges with a [`crate::node::Node`]: what goes in ([`Input`],
//! [`Command`]), what comes out ([`Output`], [`Outcome`], [`Event`]), the tunables
//! ([`Settings`]) and the read-only views ([`SessionView`], [`Stats`], [`PeerView`]).

use std::time::{Duration, Instant};

use crate::config::NodeId;
use crate::message::{Attributes, Change, Epoch, Message, Version};

/// Identifies a command; chosen by the caller and echoed in its one [`Outcome`].
pub type RequestId = u64;

/// Something that happened to the node.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Input {
    /// A message from a peer (the transport authenticated `from`).
    Message {
        /// The sender.
        from: NodeId,
        /// The message.
        msg: Message,
    },
    /// A command from the local session manager. Exactly one [`Output::Outcome`] with the
    /// same `id` follows, now or later.
    Command {
        /// Echoed in the outcome.
        id: RequestId,
        /// What to do.
        cmd: Command,
    },
    /// Same as [`crate::node::Node::handle_timeout`].
    Timeout,
    /// The runtime could not hand `msg` (from an [`Output::Send`] to `to`) to the transport:
    /// the peer's bounded queue was full, or another send error. Feed it *after* the drain
    /// that produced the send (never from inside the drain loop); it produces no output by
    /// itself. The node uses it as a flow-control signal and repairs promptly, within bounds:
    /// - a dropped [`Message::Replicate`] marks that backup's copy as not sent; a full copy
    ///   goes out again at the next maintenance step (a tenth of the tick), not after a whole
    ///   scan cycle, through a per-peer cursor (O(1) memory per peer);
    /// - full copies sent by maintenance (re-replication, retransmission) to that peer are
    ///   paced by a per-peer window set from what the peer accepted in the last step, so
    ///   re-replication goes at the pace the peer's queue accepts; writes (deltas) and replies
    ///   are never held back;
    /// - dropped claims (of a pending acquire) are re-sent at the next step, and small replies
    ///   (acknowledgements, claim answers, fencing) are re-sent from a per-peer queue bounded
    ///   in count and bytes; anything beyond the bounds is left to the protocol's timeouts.
    ///
    /// Feeding nothing is correct too (the protocol repairs losses), only slower.
    Undelivered {
        /// The peer it was for.
        to: NodeId,
        /// The message, as the node produced it.
        msg: Message,
    },
    /// The transport's link to `peer` closed without a leave, and a new connection to its
    /// address was refused right after (no process listens there) or reset before any byte
    /// (its listener closed with the connection in its backlog): the peer's process has
    /// exited (a crash: the operating system closes a dead process's sockets). The node fails
    /// the peer at once, as if its silence had reached the failure timeout: it is down, and
    /// the sessions it owned fail over in the same step. A peer that is down already, or was
    /// never heard, is left as it is; a peer wrongly reported gone comes back up with its next
    /// message, like a peer back from a partition, and epochs fence whatever it still writes.
    /// A host that crashes or a network that partitions closes nothing: the failure timeout
    /// stays the bound for those.
    PeerGone {
        /// The peer whose process is gone.
        peer: NodeId,
    },
}

/// How a write waits for backups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ack {
    /// Completes at once with [`Outcome::Applied`]; replicated in the background.
    Async,
    /// Waits until `backups` distinct backups (at most the live placed ones) hold the write,
    /// or the domain's request timeout.
    Sync {
        /// How many backups must acknowledge (clamped to the live placed backups).
        backups: u32,
    },
}

/// A request from the local session manager.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// Creates a session owned by this node at version 1; completes like a write
    /// ([`Outcome::Applied`], [`Outcome::Replicated`], ...). Fails with
    /// [`Outcome::AlreadyExists`] when this node knows the id (live, tombstone or promise).
    Create {
        /// The new session's id (the runtime makes it unique).
        session: String,
        /// Initial attributes.
        attrs: Attributes,
        /// Inactivity after which the session expires.
        max_inactive: Duration,
        /// How the initial copy is acknowledged.
        ack: Ack,
    },
    /// Changes a session this node owns. Not the owner: [`Outcome::NotOwner`] (send
    /// [`Command::Acquire`] first).
    Update {
        /// The session.
        session: String,
        /// When set, the write applies only if the current version is this one; otherwise
        /// [`Outcome::Conflict`] and nothing is applied.
        expected_version: Option<Version>,
        /// The changes, applied in order ([`Change::Clear`] first for a full replace).
        changes: Vec<Change>,
        /// How the write is acknowledged.
        ack: Ack,
    },
    /// Reads a session; when this node is not its owner, fetches it from whoever holds it and
    /// becomes the owner (client-server retrieval, fetch-on-get after failover).
    Get {
        /// The session.
        session: String,
    },
    /// Like [`Command::Get`] but the outcome carries no attributes.
    Acquire {
        /// The session.
        session: String,
    },
    /// Deletes a session this node owns; a tombstone is replicated so it never comes back.
    Invalidate {
        /// The session.
        session: String,
        /// How the tombstone is acknowledged.
        ack: Ack,
    },
    /// Marks a session this node owns as used (resets its inactivity clock). Replicated to the
    /// backups, coalesced.
    Touch {
        /// The session.
        session: String,
    },
    /// Graceful shutdown: waits (up to the request timeout) until every owned session's latest
    /// version is held by its backups, then tells the peers this node leaves, so the failover
    /// targets take the sessions over. Afterwards the node refuses commands and sends nothing.
    Leave,
}

/// The result of one command.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// Write applied locally (async write, or sync with `backups: 0`).
    Applied {
        /// The owner's epoch.
        epoch: Epoch,
        /// The new version.
        version: Version,
    },
    /// Sync write held by `acks` distinct backups (`min(k, live placed backups)`, and > 0).
    Replicated {
        /// The owner's epoch.
        epoch: Epoch,
        /// The new version.
        version: Version,
        /// Distinct backups that acknowledged.
        acks: u32,
    },
    /// Sync write applied locally but no backup is live: one copy only. Never a silent success.
    Unreplicated {
        /// The owner's epoch.
        epoch: Epoch,
        /// The new version.
        version: Version,
    },
    /// Sync write applied locally, but not enough backups acknowledged before the request
    /// timeout; it may or may not survive the owner's failure.
    Indeterminate {
        /// The owner's epoch.
        epoch: Epoch,
        /// The new version.
        version: Version,
        /// Backups that did acknowledge.
        acks: u32,
    },
    /// `expected_version` is stale; nothing was applied.
    Conflict {
        /// The version the session is at.
        current_version: Version,
    },
    /// Another node took the session over at a higher epoch; this write (or fetch) lost.
    /// Whether a pending write survives is unknown: treat it as not applied.
    Fenced {
        /// The newer epoch (its node is the new owner).
        epoch: Epoch,
    },
    /// This node does not own the session (send [`Command::Acquire`] or [`Command::Get`] to
    /// take it over).
    NotOwner {
        /// The other node this node believes owns it, if any.
        owner: Option<NodeId>,
    },
    /// The session's content (from [`Command::Get`]); this node now owns it.
    Found {
        /// The owner's epoch (this node's).
        epoch: Epoch,
        /// The version.
        version: Version,
        /// The attributes.
        attrs: Attributes,
    },
    /// This node now owns the session (from [`Command::Acquire`]).
    Acquired {
        /// This node's epoch.
        epoch: Epoch,
        /// The version.
        version: Version,
    },
    /// No node that answered holds the session (or it was invalidated / expired).
    NotFound,
    /// The id is already known here.
    AlreadyExists,
    /// Touched.
    Touched,
    /// Fetching the session did not complete: a holder believed live did not answer within
    /// the request timeout, or this node sees fewer than half of the domain live (it may be
    /// the one cut off). Also the answer of an owner (and of a create) without the read lease:
    /// no majority heard this node recently, so another node may have taken over. Nothing was
    /// done; try again.
    Unavailable,
    /// Too many pending requests; nothing was done.
    Busy,
    /// This node holds [`Settings::max_sessions`] session records: no session was created.
    Full {
        /// Records held.
        held: u64,
        /// The limit.
        limit: u64,
    },
    /// The write would make the session larger than the domain's `max_session_bytes` (its
    /// encoded attributes, [`Attributes::encoded_size`](crate::Attributes::encoded_size));
    /// nothing was applied. A session is bounded so that a full copy of it always fits one
    /// frame: it can always be fetched, re-replicated and handed over.
    TooLarge {
        /// The session's encoded size had the write been applied.
        size: u64,
        /// The domain's `max_session_bytes`.
        limit: u64,
    },
    /// This node's mode forbids it (e.g. a `server` node never owns sessions).
    NotAllowed,
    /// The node left the domain; nothing was done.
    ShuttingDown,
    /// [`Command::Leave`] done.
    Left {
        /// Owned sessions whose latest version was held by a backup when leaving.
        handed_off: usize,
        /// Owned sessions that had no up-to-date backup (their latest writes are lost).
        unreplicated: usize,
    },
}

/// Something the runtime may log, count or act on.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A peer is up (first heard, back, or restarted with a new incarnation).
    PeerUp {
        /// The peer.
        node: NodeId,
        /// Its incarnation, when known.
        incarnation: Option<u64>,
    },
    /// A peer is considered failed (silent for the failure timeout, left, or restarted).
    PeerDown {
        /// The peer.
        node: NodeId,
    },
    /// This node became the owner of a session.
    OwnershipGained {
        /// The session.
        session: String,
        /// This node's new epoch.
        epoch: Epoch,
    },
    /// This node no longer owns a session: fenced by a higher epoch, or it stepped down by
    /// itself after not running for about the failure timeout (paused, overloaded), since
    /// peers may have taken its sessions over meanwhile; a [`Command::Get`] or
    /// [`Command::Acquire`] here takes the session back safely.
    OwnershipLost {
        /// The session.
        session: String,
        /// The higher epoch, or this node's own epoch when it stepped down by itself.
        epoch: Epoch,
    },
    /// An owned session expired (inactive for its `max_inactive`).
    SessionExpired {
        /// The session.
        session: String,
    },
    /// An owned session was invalidated.
    SessionInvalidated {
        /// The session.
        session: String,
    },
    /// An owned session has fewer live backups than the domain wants.
    UnderReplicated {
        /// The session.
        session: String,
        /// Backups placed on live nodes.
        have: usize,
        /// Backups wanted (the replica count, at most the eligible nodes of the config).
        want: usize,
    },
    /// A peer sent records of a session manager this node does not declare: they were
    /// refused (reported once per peer and manager; see [`crate::scope`]).
    ManagerRefused {
        /// The peer.
        from: NodeId,
        /// The manager.
        manager: String,
        /// The rule: [`crate::node::MANAGER_NOT_DECLARED`].
        rule: &'static str,
    },
}

/// What the node asks the runtime to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send `msg` to `to` (best effort; losses are repaired).
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        msg: Message,
    },
    /// The result of the command `id`.
    Outcome {
        /// The command's id.
        id: RequestId,
        /// The result.
        outcome: Outcome,
    },
    /// Something happened.
    Event(Event),
}

/// Tunables of the engine; the timings of the domain (heartbeat, failure and request timeouts)
/// come from the [`crate::DomainConfig`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Settings {
    /// A backup that has not acknowledged an owner's latest version after this long gets a
    /// full copy again.
    pub retransmit_interval: Duration,
    /// Re-replication rate limit (full copies sent by maintenance), sessions per second.
    pub rereplication_per_sec: u32,
    /// Burst of the re-replication token bucket.
    pub rereplication_burst: u32,
    /// Sessions examined per maintenance pass (bounded work per call). A replan pass after a
    /// view change examines this many owned sessions and up to eight times as many others
    /// (failovers, whose claims go out in batches).
    pub scan_batch: usize,
    /// Pending commands (sync writes, fetches, claims) at most; more get [`Outcome::Busy`].
    pub max_pending: usize,
    /// How long tombstones are kept (must exceed message delays and partitions for
    /// invalidated sessions never to come back).
    pub tombstone_ttl: Duration,
    /// A backup drops a copy nobody spoke about for `max_inactive + orphan_grace`.
    pub orphan_grace: Duration,
    /// An owner propagates accesses to its backups at most this often per session (and
    /// always at least every third of the session's `max_inactive`).
    pub touch_interval: Duration,
    /// An owner sends a keep-alive to the backups of an idle session this often, so a stale
    /// owner (paused, partitioned) learns it was fenced even when nothing is written.
    pub keepalive_interval: Duration,
    /// How many times a fetch retries after losing a claim race.
    pub claim_retries: u32,
    /// Session records (owned copies, backup copies, tombstones) this node holds at most
    /// before it refuses to create more ([`Outcome::Full`]). Only creates are refused: a
    /// failover, a fetch or a backup copy is always taken, since refusing one could lose an
    /// acknowledged write; with `max_session_bytes` this bounds what the node's own
    /// applications add to its memory.
    pub max_sessions: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retransmit_interval: Duration::from_millis(500),
            rereplication_per_sec: 2000,
            rereplication_burst: 500,
            scan_batch: 512,
            max_pending: 100_000,
            tombstone_ttl: Duration::from_secs(600),
            orphan_grace: Duration::from_secs(60),
            touch_interval: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            claim_retries: 3,
            max_sessions: 10_000_000,
        }
    }
}

/// This node's role for a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Owns it: serves it and sends copies.
    Owner,
    /// Holds a backup copy (or a demoted owner's copy).
    Backup,
    /// Claiming it (fetch or failover in progress).
    Acquiring,
    /// Only a promise or tombstone, no live data.
    None,
}

/// A read-only view of one session on this node.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionView {
    /// The session id.
    pub id: String,
    /// This node's role.
    pub role: Role,
    /// Epoch of the stored state (its node wrote it); `None` when nothing is stored.
    pub epoch: Option<Epoch>,
    /// Version of the stored state.
    pub version: Version,
    /// The attributes (empty for tombstones).
    pub attrs: Attributes,
    /// Whether the stored state is a tombstone.
    pub invalidated: bool,
    /// The session's inactivity limit.
    pub max_inactive: Duration,
    /// The owner this node believes in.
    pub owner: Option<NodeId>,
    /// When owner: the placed backups, and which hold the current version.
    pub backups: Vec<(NodeId, bool)>,
    /// Highest epoch this node promised for the session.
    pub promised: Option<Epoch>,
}

/// A peer as the failure detector sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// The peer.
    pub node: NodeId,
    /// Considered live.
    pub up: bool,
    /// Last incarnation heard.
    pub incarnation: Option<u64>,
    /// When last heard from.
    pub last_heard: Option<Instant>,
}

/// Counters and gauges of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sessions owned.
    pub owned: usize,
    /// Live backup copies held.
    pub backups: usize,
    /// Owned sessions with fewer up-to-date backups than wanted.
    pub under_replicated: usize,
    /// Tombstones held.
    pub tombstones: usize,
    /// Peers up.
    pub peers_up: usize,
    /// Peers down.
    pub peers_down: usize,
    /// Ownerships gained by claiming (failover, fetch).
    pub acquisitions: u64,
    /// Ownerships gained proactively after an owner failed (hot failover).
    pub failovers: u64,
    /// Ownerships lost to a higher epoch.
    pub fenced: u64,
    /// Commands waiting for an outcome.
    pub pending: usize,
    /// Messages sent.
    pub messages_sent: u64,
    /// Approximate payload bytes of replicated changes and copies sent.
    pub bytes_replicated: u64,
    /// Full copies sent by maintenance (re-replication and retransmission).
    pub full_copies_sent: u64,
    /// Over the owned sessions (tombstones included), when the oldest change that is not yet
    /// acknowledged by every placed backup was made; for a backup placed later (restart,
    /// re-replication, failover), when it was placed. `None` when every placed backup holds
    /// every owned session's current version. A replication-lag gauge is `now` minus this.
    pub oldest_unacked: Option<Instant>,
    /// Session records held (copies, tombstones, promises).
    pub held: usize,
    /// [`Settings::max_sessions`]: creates are refused at `held`.
    pub max_sessions: usize,
    /// Records, claims and epochs refused because they belong to a session manager this node
    /// does not declare (rule [`crate::node::MANAGER_NOT_DECLARED`]).
    pub manager_refused: u64,
}

/// The domain file a node runs and what it knows of its peers' files (online domain changes,
/// see [`Node::reconfigure`](crate::Node::reconfigure)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainView {
    /// The fingerprint of this node's file ([`crate::change::fingerprint`]).
    pub fingerprint: u64,
    /// Whether a change runs as this node sees it: it keeps the former file's rules, or a
    /// live peer runs another file. `false` once every node runs this file.
    pub changing: bool,
    /// Whether every session this node owns is placed by its file and held by its live
    /// backups.
    pub placed: bool,
    /// Every peer this node knows: of its file, and while a change runs those of the former.
    pub nodes: Vec<NodeDomain>,
}

/// One peer in a [`DomainView`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDomain {
    /// The peer.
    pub node: NodeId,
    /// Considered live.
    pub up: bool,
    /// The fingerprint it announced in its current incarnation; `None` when it announced none
    /// (it runs the file it started with, and no change was seen since).
    pub fingerprint: Option<u64>,
    /// Whether it announced all its owned sessions placed.
    pub placed: Option<bool>,
    /// Whether this node's file lists it (a peer only in the former file is leaving).
    pub listed: bool,
}
