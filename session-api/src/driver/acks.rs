//! The acknowledgements of one drain of the engine's outputs, gathered per peer: the engine
//! answers every replicate with its own [`Message::Ack`], and a turn that fed it a batch of
//! replicates from one owner answers them all in one [`Message::Acks`] (one message for the
//! transport to queue, encode, decode and hand over instead of one per write).
//!
//! Order: the acks gathered for a peer go out before any later keyed message to that peer
//! ([`AckBatch::take`]), so on one connection nothing about a session overtakes its ack.
//! A lone ack goes out as the engine made it.

use replication_core::transport::WireMessage;
use replication_core::{Epoch, Message, NodeId, Version};

/// One acknowledgement: session, and the epoch and version of the copy held.
type AckOf = (String, Epoch, Version);

/// Acknowledgements waiting to go out, per peer, in the order the engine made them.
#[derive(Debug, Default)]
pub(super) struct AckBatch {
    /// Peers with acks gathered; a handful at most (the owners whose replicates one turn
    /// took), so a list beats a map.
    peers: Vec<(NodeId, Vec<AckOf>)>,
}

impl AckBatch {
    /// Gathers `msg` for `to` if it is an [`Message::Ack`]; hands any other message back.
    pub(super) fn gather(&mut self, to: &NodeId, msg: Message) -> Option<Message> {
        let Message::Ack { session, epoch, version } = msg else { return Some(msg) };
        let ack = (session, epoch, version);
        match self.peers.iter_mut().find(|(p, _)| p == to) {
            Some((_, acks)) => acks.push(ack),
            None => self.peers.push((to.clone(), vec![ack])),
        }
        None
    }

    /// The acks gathered for `to`, as one message, if `next` (a message about to go to `to`)
    /// must not overtake them: a keyed message. Control messages have their own queue.
    pub(super) fn take(&mut self, to: &NodeId, next: &Message) -> Option<Message> {
        if next.is_control() {
            return None;
        }
        let i = self.peers.iter().position(|(p, _)| p == to)?;
        Some(message(self.peers.swap_remove(i).1))
    }

    /// Every peer's gathered acks, one message each.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = (NodeId, Message)> + '_ {
        self.peers.drain(..).map(|(to, acks)| (to, message(acks)))
    }
}

/// One ack as the engine made it, several as one [`Message::Acks`].
fn message(mut acks: Vec<AckOf>) -> Message {
    if acks.len() == 1
        && let Some((session, epoch, version)) = acks.pop()
    {
        return Message::Ack { session, epoch, version };
    }
    Message::Acks { acks }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(session: &str, version: Version) -> Message {
        Message::Ack { session: session.into(), epoch: Epoch::new(1, NodeId::new("a"), 1), version }
    }

    #[test]
    fn acks_to_one_peer_go_as_one_message_and_a_lone_ack_as_itself() {
        let (a, b) = (NodeId::new("a"), NodeId::new("b"));
        let mut batch = AckBatch::default();
        assert!(batch.gather(&a, ack("s", 1)).is_none());
        assert!(batch.gather(&b, ack("t", 1)).is_none());
        assert!(batch.gather(&a, ack("u", 2)).is_none());
        let out: Vec<_> = batch.drain().collect();
        assert_eq!(out.len(), 2);
        let (to, Message::Acks { acks }) = &out[0] else { panic!("{out:?}") };
        assert_eq!(to, &a);
        let sessions: Vec<_> = acks.iter().map(|(s, _, v)| (s.as_str(), *v)).collect();
        assert_eq!(sessions, [("s", 1), ("u", 2)], "in the order made");
        assert_eq!(out[1], (b, ack("t", 1)));
        assert_eq!(batch.drain().count(), 0);
    }

    #[test]
    fn a_keyed_message_takes_the_acks_before_it_and_a_control_message_does_not() {
        let a = NodeId::new("a");
        let mut batch = AckBatch::default();
        let other = Message::Replicate {
            session: "s".into(),
            epoch: Epoch::new(1, NodeId::new("a"), 1),
            payload: std::sync::Arc::new(replication_core::message::Payload::Touch { version: 1 }),
        };
        assert_eq!(batch.gather(&a, other.clone()), Some(other.clone()), "not an ack");
        let heartbeat = Message::Heartbeat { incarnation: 1, sent: 0, echo: None };
        assert!(batch.take(&a, &other).is_none(), "nothing gathered");
        assert!(batch.gather(&a, ack("s", 1)).is_none());
        assert!(batch.take(&a, &heartbeat).is_none(), "control");
        assert_eq!(batch.take(&a, &other), Some(ack("s", 1)));
        assert!(batch.take(&a, &other).is_none());
    }
}
