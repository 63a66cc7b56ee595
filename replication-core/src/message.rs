//! The messages nodes exchange. Carried by the transports with the shared codec.
//!
//! Per-session messages carry the session id and are ordered per session by the transports
//! ([`WireMessage::ordering_key`] is a stable hash of the id); heartbeats and control messages
//! have no key. The protocol never relies on delivery: every message may be lost, duplicated
//! or delayed, and the [`crate::node::Node`] engine retransmits and resynchronises.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

pub use ::bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::NodeId;
use crate::placement::stable_hash;
use crate::transport::WireMessage;

/// The protocol version; a peer speaking another one is refused at the handshake. Raised with
/// every change to the messages or to what they mean, so nodes of two versions never mix in a
/// domain.
pub const PROTOCOL_VERSION: u32 = 9;

/// The version of a session's state inside one [`Epoch`]; every write adds one. Versions
/// continue across ownership changes (a new owner starts from the highest copy it found).
pub type Version = u64;

pub use crate::attributes::Attributes;
pub(crate) use bytes::BytesVisitor;

/// An ownership epoch: `(term, node, incarnation)`, ordered lexicographically. Only `node`,
/// in that incarnation, ever writes at a given epoch, so each epoch value has exactly one
/// possible owner by construction, even across restarts (a restarted node has forgotten the
/// terms it used). The state of a session is ordered by `(epoch, version)`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Epoch {
    /// Grows by one on every ownership change of the session.
    pub term: u64,
    /// The only node that may write at this epoch.
    pub node: NodeId,
    /// The incarnation of `node` that chose this epoch.
    pub incarnation: u64,
}

impl Epoch {
    /// The epoch `(term, node, incarnation)`.
    pub fn new(term: u64, node: NodeId, incarnation: u64) -> Self {
        Epoch { term, node, incarnation }
    }
}

impl Ord for Epoch {
    fn cmp(&self, other: &Self) -> Ordering {
        self.term
            .cmp(&other.term)
            .then_with(|| self.node.cmp(&other.node))
            .then_with(|| self.incarnation.cmp(&other.incarnation))
    }
}

impl PartialOrd for Epoch {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({},{},{})", self.term, self.node, self.incarnation)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.term, self.node, self.incarnation)
    }
}

/// One change to a session's attributes.
///
/// A value is a [`Bytes`]: the session handle that made it, the write's payload (shared by the
/// backups it goes to) and the driver's staged changes hold the same bytes, not copies. Make
/// one from a `Vec<u8>` with `.into()` (no copy).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Change {
    /// Sets an attribute.
    Set(String, #[serde(with = "bytes")] Bytes),
    /// Removes an attribute (no-op when absent).
    Remove(String),
    /// Removes every attribute; followed by `Set`s this is a full replace.
    Clear,
}

impl Change {
    /// Applies the change to `attrs`.
    pub fn apply(&self, attrs: &mut Attributes) {
        match self {
            Change::Set(k, v) => {
                attrs.insert(k, v);
            }
            Change::Remove(k) => {
                attrs.remove(k);
            }
            Change::Clear => attrs.clear(),
        }
    }

    /// Approximate encoded size, for statistics.
    pub fn size(&self) -> usize {
        match self {
            Change::Set(k, v) => k.len() + v.len() + 8,
            Change::Remove(k) => k.len() + 4,
            Change::Clear => 1,
        }
    }
}

/// A full copy of a session's content at one `(epoch, version)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A live session.
    Live {
        /// The attributes.
        attrs: Attributes,
        /// Inactivity after which the session expires, in milliseconds.
        max_inactive_ms: u64,
    },
    /// The session was invalidated (or expired); it must never come back.
    Tombstone,
}

/// A stored copy: `(epoch, version)` and content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Epoch of the owner that wrote this state.
    pub epoch: Epoch,
    /// Version inside that epoch.
    pub version: Version,
    /// The content.
    pub body: Body,
}

impl Snapshot {
    /// The `(epoch, version)` order key.
    pub fn key(&self) -> (&Epoch, Version) {
        (&self.epoch, self.version)
    }
}

/// What the owner sends a backup. Shared (`Arc`) between the backups of one write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// Changes from `base_version` to `version`; applied only on a copy at exactly
    /// `(epoch, base_version)`.
    Delta {
        /// The version the changes apply to.
        base_version: Version,
        /// The version after the changes.
        version: Version,
        /// The changes, in order.
        changes: Vec<Change>,
    },
    /// The whole state (also carries tombstones).
    Full {
        /// The version.
        version: Version,
        /// The content.
        body: Body,
    },
    /// "Still in use": resets the backup's inactivity clock; a backup behind `version`
    /// answers [`Message::NeedFull`].
    Touch {
        /// The owner's current version.
        version: Version,
    },
}

/// What a heartbeat says of the newest heartbeat its sender received from its receiver: the
/// receiver's `incarnation` and `sent` as they came. Measured on the receiver's own clock, so
/// the receiver learns when the sender last heard it without comparing two nodes' clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    /// The incarnation of the node the echoed heartbeat came from.
    pub incarnation: u64,
    /// Its `sent`.
    pub sent: u64,
}

/// A core protocol message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// "I am alive." Sent every heartbeat interval.
    Heartbeat {
        /// Changes every time the node starts, so peers notice a restart.
        incarnation: u64,
        /// When it was sent, in microseconds on the sender's clock since the sender started:
        /// the receiver echoes it back ([`Echo`]).
        sent: u64,
        /// The newest heartbeat the sender received from the receiver: the receiver's proof
        /// that the sender heard it then, on which its read lease rests.
        echo: Option<Echo>,
    },
    /// "I am leaving the domain": peers consider the sender down at once.
    Leaving {
        /// The sender's incarnation.
        incarnation: u64,
    },
    /// Owner to backup: new state of a session.
    Replicate {
        /// The session.
        session: String,
        /// The owner's epoch.
        epoch: Epoch,
        /// What changed.
        #[serde(deserialize_with = "shared_payload")]
        payload: Arc<Payload>,
    },
    /// Backup to owner: "I hold `(epoch, version)`" (sent for every replicate, even duplicates).
    Ack {
        /// The session.
        session: String,
        /// Epoch of the backup's copy.
        epoch: Epoch,
        /// Version of the backup's copy.
        version: Version,
    },
    /// Backup to owner: "I cannot apply your delta, send the whole state".
    NeedFull {
        /// The session.
        session: String,
        /// The epoch of the message that could not be applied.
        epoch: Epoch,
    },
    /// "Your epoch is stale: I hold or promised `epoch`." The receiver demotes itself.
    Fenced {
        /// The session.
        session: String,
        /// The higher epoch.
        epoch: Epoch,
    },
    /// Acquirer to holders: "promise to refuse epochs below `epoch`, and send me your copy".
    Claim {
        /// The session.
        session: String,
        /// The acquirer's new epoch.
        epoch: Epoch,
        /// The epoch of the owner the acquirer takes the session over from because it
        /// considers that owner gone (down, or restarted since); `None` for a claim that does
        /// not fail the owner over (the owner, if live, gets the claim itself). A receiver that
        /// still hears that owner's incarnation refuses the claim
        /// ([`Message::ClaimsRefused`]) instead of promising: the acquirer's view is wrong
        /// (one broken link), and a live owner that never hears of the claim would keep
        /// writing (regression test `split_owner_write_acknowledged_by_an_amnesiac_backup_survives`;
        /// docs/design.md, "Claims over an owner that is still heard").
        over: Option<Epoch>,
    },
    /// Reply to [`Message::Claim`]: the promise, with the receiver's copy if it has one.
    ClaimAck {
        /// The session.
        session: String,
        /// The epoch promised (the claim's).
        epoch: Epoch,
        /// The receiver's copy, if any (tombstones included).
        copy: Option<Snapshot>,
    },
    /// Owner to former backup: "you are no longer a backup of this session".
    Drop {
        /// The session.
        session: String,
        /// The owner's epoch; copies at a higher epoch are kept.
        epoch: Epoch,
    },
    /// Acquirer to the nodes it claimed from: "I gave up this claim; I never own at `epoch`".
    /// A recipient never deletes a copy for it: it forgets a promise-only record made for
    /// that claim, and a former owner that the claim demoted takes the session back with a
    /// new claim.
    Release {
        /// The session.
        session: String,
        /// The released claim's epoch.
        epoch: Epoch,
    },
    /// A leaving node to the nodes that would back these sessions up, for sessions whose
    /// owner is gone and whose copy it cannot take over itself (a server of a client-server
    /// domain; a tombstone, which a claim does not make owned): "keep these copies". Each is
    /// stored as a backup copy when newer than the receiver's (the receiver promises its
    /// epoch), and the whole batch is answered by one [`Message::HandoffAcks`]. It
    /// acknowledges no write and moves no ownership: a later claim collects the copies like
    /// any other. A batch, not one message per session: a leave may hand off thousands, and
    /// as control traffic they do not wait behind the data queue.
    Handoff {
        /// Session and the leaving node's copy.
        copies: Vec<(String, Snapshot)>,
    },
    /// The answer to a [`Message::Handoff`]: the copies the receiver now holds (or holds
    /// something newer than), by session, epoch and version.
    HandoffAcks {
        /// Session, and the epoch and version of the copy held.
        acks: Vec<(String, Epoch, Version)>,
    },
    /// Many [`Message::Claim`]s of one acquirer at once (a mass failover), each handled as if
    /// it came alone; answered by [`Message::ClaimAcks`] (and a [`Message::Fenced`] per
    /// claim refused).
    Claims {
        /// Session, the acquirer's new epoch, and the owner it fails over from (as `over` of
        /// [`Message::Claim`]).
        claims: Vec<(String, Epoch, Option<Epoch>)>,
    },
    /// The claims (of a [`Message::Claim`] or [`Message::Claims`]) the receiver refused
    /// without promising anything, because it still hears the owner they fail over from.
    /// The acquirer counts no answer from it for these claims.
    ClaimsRefused {
        /// Session and the refused claim's epoch.
        claims: Vec<(String, Epoch)>,
    },
    /// The [`Message::ClaimAck`]s answering a [`Message::Claims`] (or part of them).
    ClaimAcks {
        /// Session, the epoch promised, and the receiver's copy if any.
        acks: Vec<(String, Epoch, Option<Snapshot>)>,
    },
    /// A node that started (a new incarnation, with empty memory) to every live peer: "send me
    /// the newest epoch you know of each session whose ownership moved", so that it does not
    /// acknowledge a stale owner's copy (the restart quarantine, see [`crate::node`]).
    /// The answer comes a page at a time: one request, one page, so a large answer never
    /// floods the peer's queue.
    EpochsRequest {
        /// The sender's incarnation, echoed in the answer.
        incarnation: u64,
        /// The page wanted: sessions sorting after this one (`None`: from the first).
        after: Option<String>,
    },
    /// One page of the answer to [`Message::EpochsRequest`].
    Epochs {
        /// The requester's incarnation.
        incarnation: u64,
        /// The request's `after`, echoed.
        after: Option<String>,
        /// Session and the highest epoch the sender promised or holds a copy at.
        epochs: Vec<(String, Epoch)>,
        /// The `after` of the next page; `None` on the last page.
        next: Option<String>,
    },
    /// "I run the domain file with this fingerprint" ([`crate::change::fingerprint`]): sent
    /// only around an online domain change (see [`crate::node`], "Online domain changes"),
    /// never by a domain whose nodes all run the file they started with.
    Domain {
        /// The fingerprint of the sender's domain file.
        fingerprint: u64,
        /// Every session the sender owns is placed by that file and held by its live
        /// backups: the copies the change moves to or from the sender's sessions are made.
        placed: bool,
        /// While the sender changes: the nodes of the file it ran before, whose majority
        /// it still needs to take sessions over (empty otherwise).
        joint: Vec<NodeId>,
    },
    /// Backup to owner: several [`Message::Ack`]s at once, each handled as if it came alone.
    /// The engine answers every replicate with an `Ack`; the runtime (`session-api`'s driver)
    /// sends the acks one turn of the engine produced for one peer as one `Acks`, so a batch of
    /// replicates is answered by one message. Keyed as its first session: it rides the data
    /// queue, behind the sender's earlier messages about that session.
    Acks {
        /// Session, and the epoch and version of the backup's copy (as in [`Message::Ack`]).
        acks: Vec<(String, Epoch, Version)>,
    },
}

impl Message {
    /// The session a per-session message is about.
    pub fn session(&self) -> Option<&str> {
        match self {
            Message::Heartbeat { .. }
            | Message::Leaving { .. }
            | Message::EpochsRequest { .. }
            | Message::Epochs { .. }
            | Message::Claims { .. }
            | Message::ClaimAcks { .. }
            | Message::ClaimsRefused { .. }
            | Message::Handoff { .. }
            | Message::HandoffAcks { .. }
            | Message::Domain { .. }
            | Message::Acks { .. } => None,
            Message::Replicate { session, .. }
            | Message::Ack { session, .. }
            | Message::NeedFull { session, .. }
            | Message::Fenced { session, .. }
            | Message::Claim { session, .. }
            | Message::ClaimAck { session, .. }
            | Message::Drop { session, .. }
            | Message::Release { session, .. } => Some(session),
        }
    }

    /// Whether the engine wants this message back when the transport refuses it (a full
    /// per-peer queue, or another send error). The transport hands a refused message back
    /// (nothing is copied before a send); the runtime feeds each one for which this is `true`
    /// to the node that produced it as [`crate::Input::Undelivered`], after the drain that
    /// produced it (no input while outputs are pending), so that the engine re-sends it
    /// promptly and paces its full copies to what the peer accepts.
    ///
    /// - `true`: writes and full copies ([`Message::Replicate`] with a delta or the whole
    ///   state), claims ([`Message::Claim`], [`Message::Claims`]), hand-offs
    ///   ([`Message::Handoff`]) and the small replies
    ///   ([`Message::Ack`], [`Message::NeedFull`], [`Message::Fenced`], [`Message::ClaimAck`],
    ///   [`Message::ClaimAcks`], [`Message::ClaimsRefused`], [`Message::Release`]).
    /// - `false`: what repeats or repairs itself: [`Message::Heartbeat`], [`Message::Leaving`],
    ///   touches ([`Message::Replicate`] with [`Payload::Touch`]), [`Message::Drop`] (a lost
    ///   one leaves an orphan copy that expires), and the restart quarantine's
    ///   [`Message::EpochsRequest`] and [`Message::Epochs`] (it asks again), and
    ///   [`Message::HandoffAcks`] (the leaving node sends the hand-off again until it is
    ///   acknowledged), and [`Message::Domain`] (repeated every heartbeat while a change runs).
    ///
    /// Feeding nothing back is correct too (the protocol repairs losses), only slower.
    pub fn resent_when_refused(&self) -> bool {
        match self {
            Message::Replicate { payload, .. } => !matches!(**payload, Payload::Touch { .. }),
            Message::Heartbeat { .. }
            | Message::Leaving { .. }
            | Message::Drop { .. }
            | Message::EpochsRequest { .. }
            | Message::Epochs { .. }
            | Message::HandoffAcks { .. }
            | Message::Domain { .. } => false,
            Message::Ack { .. }
            | Message::NeedFull { .. }
            | Message::Fenced { .. }
            | Message::Claim { .. }
            | Message::ClaimAck { .. }
            | Message::Release { .. }
            | Message::Handoff { .. }
            | Message::Claims { .. }
            | Message::ClaimsRefused { .. }
            | Message::ClaimAcks { .. }
            | Message::Acks { .. } => true,
        }
    }

    /// The session whose ordering key the message takes: its session, or the first of the
    /// sessions a [`Message::Acks`] acknowledges; `None` for control messages.
    fn keyed_by(&self) -> Option<&str> {
        match self {
            Message::Acks { acks } => acks.first().map(|(s, ..)| s.as_str()),
            m => m.session(),
        }
    }
}

impl WireMessage for Message {
    fn ordering_key(&self) -> Option<u64> {
        self.keyed_by().map(|s| stable_hash(s.as_bytes()))
    }

    fn is_control(&self) -> bool {
        self.keyed_by().is_none()
    }
}

/// A decoded payload, shared: decoded in place and moved into its `Arc` (serde's own `Arc`
/// decoding goes through a `Box`, one allocation and copy more per replicate).
fn shared_payload<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<Payload>, D::Error> {
    Payload::deserialize(d).map(Arc::new)
}

/// Attribute values as one byte string (MessagePack `bin`: a length and the bytes), instead
/// of serde's default for `Vec<u8>`, an array with one integer per byte (up to two bytes each on
/// the wire, and one serde call per byte to encode and decode). Arrays are still accepted.
mod bytes {
    use std::fmt;

    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::ser::Serializer;

    pub(super) fn serialize<S: Serializer>(v: &::bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// The decoded `Vec` becomes the `Bytes` without a copy.
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<::bytes::Bytes, D::Error> {
        d.deserialize_byte_buf(BytesVisitor).map(::bytes::Bytes::from)
    }

    pub(crate) struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
            while let Some(b) = seq.next_element::<u8>()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_byte_strings_and_arrays_are_still_read() {
        let mut attrs = Attributes::new();
        attrs.insert("k", vec![200; 300]);
        let body = Body::Live { attrs, max_inactive_ms: 5 };
        let bytes = rmp_serde::to_vec(&body).expect("encode");
        assert!(bytes.len() < 300 + 32, "one byte per byte: {}", bytes.len());
        assert_eq!(rmp_serde::from_slice::<Body>(&bytes).expect("decode"), body);
        // The former encoding (one integer per byte) decodes to the same value.
        #[derive(Serialize)]
        enum OldChange {
            Set(String, Vec<u8>),
        }
        let old = rmp_serde::to_vec(&OldChange::Set("k".into(), vec![1, 200])).expect("encode");
        let back: Change = rmp_serde::from_slice(&old).expect("decode");
        assert_eq!(back, Change::Set("k".into(), vec![1, 200].into()));
    }

    #[test]
    fn a_body_needs_no_tag_of_its_own() {
        // The engine keeps a Body per session: Tombstone lives in the attributes' pointer niche.
        let live = std::mem::size_of::<Attributes>() + std::mem::size_of::<u64>();
        assert_eq!(std::mem::size_of::<Body>(), live);
    }

    #[test]
    fn epoch_orders_by_term_then_node() {
        let a1 = Epoch::new(1, NodeId::new("a"), 9);
        let a1r = Epoch::new(1, NodeId::new("a"), 10);
        let b1 = Epoch::new(1, NodeId::new("b"), 1);
        let a2 = Epoch::new(2, NodeId::new("a"), 1);
        assert!(a1 < a1r && a1r < b1 && b1 < a2);
        assert_eq!(format!("{a2:?}"), "(2,a,1)");
    }

    #[test]
    fn ordering_keys() {
        let hb = Message::Heartbeat { incarnation: 1, sent: 0, echo: None };
        assert_eq!(hb.ordering_key(), None);
        let m = Message::Claim { session: "s".into(), epoch: Epoch::new(1, NodeId::new("a"), 1), over: None };
        assert_eq!(m.ordering_key(), Some(stable_hash(b"s")));
        assert!(hb.is_control() && !m.is_control(), "is_control agrees with ordering_key");
        let acks = Message::Acks {
            acks: vec![
                ("s".into(), Epoch::new(1, NodeId::new("a"), 1), 2),
                ("t".into(), Epoch::new(1, NodeId::new("a"), 1), 3),
            ],
        };
        assert_eq!(acks.ordering_key(), Some(stable_hash(b"s")), "keyed as its first session");
        assert!(!acks.is_control());
    }

    #[test]
    fn resent_when_refused_truth_table() {
        let e = || Epoch::new(1, NodeId::new("a"), 1);
        let s = || "s".to_owned();
        let replicate = |p: Payload| Message::Replicate { session: s(), epoch: e(), payload: Arc::new(p) };
        let delta = replicate(Payload::Delta { base_version: 1, version: 2, changes: Vec::new() });
        let full = replicate(Payload::Full { version: 2, body: Body::Tombstone });
        let resent = [
            delta,
            full,
            Message::Ack { session: s(), epoch: e(), version: 1 },
            Message::NeedFull { session: s(), epoch: e() },
            Message::Fenced { session: s(), epoch: e() },
            Message::Claim { session: s(), epoch: e(), over: None },
            Message::ClaimAck { session: s(), epoch: e(), copy: None },
            Message::Release { session: s(), epoch: e() },
            Message::Handoff { copies: Vec::new() },
            Message::Claims { claims: Vec::new() },
            Message::ClaimsRefused { claims: Vec::new() },
            Message::ClaimAcks { acks: Vec::new() },
            Message::Acks { acks: Vec::new() },
        ];
        for m in &resent {
            assert!(m.resent_when_refused(), "{m:?}");
        }
        let not_resent = [
            replicate(Payload::Touch { version: 1 }),
            Message::Heartbeat { incarnation: 1, sent: 0, echo: None },
            Message::Leaving { incarnation: 1 },
            Message::Drop { session: s(), epoch: e() },
            Message::EpochsRequest { incarnation: 1, after: None },
            Message::Epochs { incarnation: 1, after: None, epochs: Vec::new(), next: None },
            Message::HandoffAcks { acks: Vec::new() },
            Message::Domain { fingerprint: 1, placed: true, joint: Vec::new() },
        ];
        for m in &not_resent {
            assert!(!m.resent_when_refused(), "{m:?}");
        }
    }

    #[test]
    fn round_trips_with_msgpack() {
        let m = Message::Replicate {
            session: "s".into(),
            epoch: Epoch::new(3, NodeId::new("n"), 1),
            payload: Arc::new(Payload::Delta {
                base_version: 1,
                version: 2,
                changes: vec![Change::Set("k".into(), vec![1, 2].into()), Change::Remove("x".into())],
            }),
        };
        let bytes = rmp_serde::to_vec(&m).expect("encode");
        let back: Message = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, m);
    }
}
