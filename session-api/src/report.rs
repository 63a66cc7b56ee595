//! What a write and a shutdown report.

use replication_core::Version;

/// How well a committed write is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replication {
    /// Applied on this node; replication follows in the background (async acknowledgement, or
    /// staged for a later write with manual / time-based frequency).
    Local,
    /// Held by `acks` backups.
    Replicated {
        /// Backups that acknowledged.
        acks: u32,
    },
    /// No backup is live: the session exists on this node only.
    Unreplicated,
    /// Fewer backups than requested acknowledged in time; it may not survive this node.
    Indeterminate {
        /// Backups that did acknowledge.
        acks: u32,
    },
}

/// The result of a successful commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The session's version after the write.
    pub version: Version,
    /// How well the write is protected.
    pub replication: Replication,
}

/// What a graceful shutdown did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaveReport {
    /// Owned sessions whose latest version a backup held when leaving.
    pub handed_off: usize,
    /// Owned sessions without an up-to-date backup (their latest writes are lost).
    pub unreplicated: usize,
}
