//! The restart quarantine.

use crate::api::{Input, Output, Settings};
use crate::harness::*;
use crate::message::{Epoch, Message};
use crate::node::Node;
use std::time::Instant;

#[test]
fn the_quarantine_answer_comes_a_page_per_request() {
    let c = cfg(&["a", "b", "c"], 1);
    let now = Instant::now();
    let mut a = Node::new(c.clone(), id("a"), 1, Settings::default(), now).unwrap();
    // a promises 2500 sessions to claims at term 2 (their ownership moved).
    for i in 0..2500 {
        let msg =
            Message::Claim { session: format!("s{i:05}"), epoch: Epoch::new(2, id("b"), 1), over: None };
        a.handle_input(now, Input::Message { from: id("b"), msg });
    }
    while a.poll_output().is_some() {}
    // c restarted and asks; every answer is one message, a page of at most 1024.
    let mut c_node = Node::new(c, id("c"), 2, Settings::default(), now).unwrap();
    c_node.handle_input(
        now,
        Input::Message { from: id("a"), msg: Message::Heartbeat { incarnation: 1, sent: 0, echo: None } },
    );
    let mut pages = Vec::new();
    let mut learned = 0;
    for _ in 0..10 {
        let reqs: Vec<Message> = std::iter::from_fn(|| c_node.poll_output())
            .filter_map(|o| match o {
                Output::Send { to, msg: m @ Message::EpochsRequest { .. } } if to == id("a") => Some(m),
                _ => None,
            })
            .collect();
        assert!(reqs.len() <= 1, "one request at a time: {reqs:?}");
        let Some(req) = reqs.into_iter().next() else { break };
        a.handle_input(now, Input::Message { from: id("c"), msg: req });
        let answers: Vec<Message> = std::iter::from_fn(|| a.poll_output())
            .filter_map(|o| match o {
                Output::Send { msg: m @ Message::Epochs { .. }, .. } => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(answers.len(), 1, "one page per request");
        if let Message::Epochs { epochs, .. } = &answers[0] {
            pages.push(epochs.len());
            learned += epochs.len();
        }
        for m in answers {
            c_node.handle_input(now, Input::Message { from: id("a"), msg: m });
        }
    }
    assert_eq!(pages, vec![1024, 1024, 452], "three pages");
    assert_eq!(learned, 2500);
    assert_eq!(c_node.session("s02499").and_then(|v| v.promised).map(|e| e.term), Some(2));
}
