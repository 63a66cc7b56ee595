//! The crate's error type.

use replication_core::NodeId;

/// Everything that can go wrong in `session-api`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The domain file could not be read, parsed or validated, or this node is not in it.
    #[error("domain configuration: {0}")]
    Config(String),
    /// The core library refused something (transport settings, certificates, codec...).
    #[error(transparent)]
    Core(#[from] replication_core::Error),
    /// The domain names a transport this build does not include.
    #[error(
        "the domain uses transport `{kind}`, which this build does not include: rebuild session-api with cargo feature `{kind}`"
    )]
    UnsupportedTransport {
        /// The transport the domain file names.
        kind: replication_core::TransportKind,
    },
    /// The transport could not start (binding, certificates, settings).
    #[error("transport: {0}")]
    Transport(String),
    /// Reading a file or binding a socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// No session with this id is held by any reachable node (or it was invalidated or expired).
    #[error("session not found")]
    NotFound,
    /// The id is already used by a session.
    #[error("session id already exists")]
    AlreadyExists,
    /// The write was based on version `read_version`, but the session is now at
    /// `current_version`: another request changed it. Re-read and apply again
    /// (see [`crate::SessionManager::update`]).
    #[error("conflicting write: the session is at version {current_version}")]
    Conflict {
        /// The version the session is at.
        current_version: u64,
    },
    /// Another node took the session over (higher ownership epoch) while this write was in
    /// flight. Its outcome is unknown: the new owner may have continued from a copy that
    /// already held it. Read the session to see.
    #[error(
        "another node took the session over while the write was in flight; it may or may not have been applied"
    )]
    Fenced,
    /// This node does not own the session and could not acquire it; `owner` is the node that
    /// does, when known (a router can send the request there).
    #[error("this node does not own the session (owner: {owner:?})")]
    NotOwner {
        /// The owner this node believes in.
        owner: Option<NodeId>,
    },
    /// A node holding the session did not answer in time.
    #[error("the session is temporarily unavailable")]
    Unavailable,
    /// Too many requests are pending in the node; nothing was done.
    #[error("the node is busy; retry later")]
    Busy,
    /// The node holds its `max_sessions` session records; no session was created (creates
    /// elsewhere, or a higher limit, go on).
    #[error("this node holds {held} sessions, its limit of {limit}: no session was created")]
    Full {
        /// Records held.
        held: u64,
        /// The node's `max_sessions`.
        limit: u64,
    },
    /// The write would make the session larger than the domain's `max_session_bytes`; nothing
    /// was applied (the session is as it was).
    #[error(
        "the session would be {size} bytes, over the domain's max_session_bytes of {limit}: nothing was applied"
    )]
    TooLarge {
        /// The session's encoded size had the write been applied.
        size: u64,
        /// The domain's `max_session_bytes`.
        limit: u64,
    },
    /// The node's mode forbids it (a `server` node owns no sessions).
    #[error("this node's mode does not allow it")]
    NotAllowed,
    /// The node is shutting down or has shut down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The reply did not come within the configured time.
    #[error("timed out waiting for the node")]
    Timeout,
    /// An attribute value could not be encoded or decoded.
    #[error("attribute `{name}`: {message}")]
    Codec {
        /// The attribute.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// `update` gave up after this many conflicting attempts.
    #[error("gave up after {attempts} conflicting attempts")]
    TooManyConflicts {
        /// Attempts made.
        attempts: u32,
    },
    /// The session is invalidated in this handle; it can no longer be changed.
    #[error("the session was invalidated")]
    Invalidated,
    /// The session id contains the byte that separates an id from its session manager in
    /// the engine ([`replication_core::scope::SEPARATOR`]).
    #[error("session id `{id}` contains the session-manager separator (\\x1f)")]
    InvalidId {
        /// The id, escaped.
        id: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
