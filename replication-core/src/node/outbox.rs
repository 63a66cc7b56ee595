//! The queue of outputs a node produces, drained by
//! [`Node::poll_output`](super::Node::poll_output).

use crate::api::{Event, Outcome, Output, RequestId};
use crate::config::NodeId;
use crate::message::Message;
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub(super) struct Outbox {
    pub(super) q: VecDeque<Output>,
    pub(super) messages_sent: u64,
    pub(super) bytes: u64,
    pub(super) fulls: u64,
}

impl Outbox {
    pub(super) fn send(&mut self, to: &NodeId, msg: Message) {
        self.messages_sent += 1;
        self.q.push_back(Output::Send { to: to.clone(), msg });
    }
    pub(super) fn outcome(&mut self, id: RequestId, outcome: Outcome) {
        self.q.push_back(Output::Outcome { id, outcome });
    }
    pub(super) fn event(&mut self, e: Event) {
        self.q.push_back(Output::Event(e));
    }
}
