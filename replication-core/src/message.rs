//! The messages nodes exchange. Carried by the transports with the shared codec.

use serde::{Deserialize, Serialize};

use crate::transport::WireMessage;

/// The protocol version; a peer speaking another one is refused at the handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// A core protocol message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// "I am alive." Sent every heartbeat interval.
    Heartbeat {
        /// Changes every time the node starts, so peers notice a restart.
        incarnation: u64,
    },
}

impl WireMessage for Message {
    fn ordering_key(&self) -> Option<u64> {
        match self {
            Message::Heartbeat { .. } => None,
        }
    }
}
