//! The crate's error type.

use crate::config::TransportKind;
use crate::validate::Report;
use crate::wire::{Refusal, WireError};

/// Everything that can go wrong in `replication-core`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The domain file is not valid TOML or does not match the schema (unknown key, unknown
    /// mode or topology, bad address). `line` and `column` are 1-based; both are 0 when the
    /// parser could not say where.
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        /// Where the text came from (a file path, or `<string>`).
        origin: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong, in words.
        message: String,
    },
    /// The domain file parsed, but breaks one or more rules; the report lists every violation.
    #[error("the domain breaks {count} rule(s):\n{0}", count = .0.errors().count())]
    Invalid(Report),
    /// A message could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(String),
    /// The bounded send queue to a peer is full; the message was dropped.
    #[error("send queue to {peer} is full")]
    QueueFull {
        /// The peer.
        peer: String,
    },
    /// The node is not a member of this domain.
    #[error("{peer} is not a node of this domain")]
    UnknownPeer {
        /// The name given.
        peer: String,
    },
    /// The transport or node has shut down.
    #[error("closed")]
    Closed,
    /// A framing error on one connection (oversize frame, garbage, truncated frame).
    #[error("wire: {0}")]
    Wire(#[from] WireError),
    /// A handshake was refused; the refusal names the rule.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// The domain asks for a transport this build does not include.
    #[error(
        "the domain uses transport `{kind}`, which this build does not include: rebuild with cargo feature `{kind}`"
    )]
    Unsupported {
        /// The transport the domain file names.
        kind: TransportKind,
    },
    /// Certificates or TLS configuration: cannot generate, parse or use them.
    #[error("tls: {0}")]
    Tls(String),
    /// Reading or writing a file (certificates, keys).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The transport settings are unusable (this node not in the domain, zero capacities...).
    #[error("settings: {0}")]
    Settings(String),
}
