//! The invariants every world of engines checks after each step: a holder's `(epoch, version)`
//! of a session never goes back, a node owns a session only at its own epoch (its name and
//! incarnation), and each epoch of a session has one owner (node and incarnation) ever.

use super::world::Engine;
use crate::{Epoch, NodeId, Version};
use std::collections::HashMap;

/// What the per-step invariants remember between steps.
#[derive(Debug, Default)]
pub struct CopyInvariants {
    /// (node, incarnation, session) -> the copy seen at the last check: epoch, version, owned.
    held: HashMap<(NodeId, u64, String), (Epoch, Version, bool)>,
    /// (session, epoch) -> the node and incarnation that owned or served at it.
    epoch_owner: HashMap<(String, Epoch), (NodeId, u64)>,
}

impl CopyInvariants {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `node`#`incarnation` owns or serves `session` at `epoch`; the node and
    /// incarnation that used the epoch first if it is another.
    pub fn use_epoch(
        &mut self,
        session: &str,
        epoch: &Epoch,
        node: &NodeId,
        incarnation: u64,
    ) -> Result<(), (NodeId, u64)> {
        let first = self
            .epoch_owner
            .entry((session.to_owned(), epoch.clone()))
            .or_insert((node.clone(), incarnation));
        if first.0 == *node && first.1 == incarnation { Ok(()) } else { Err(first.clone()) }
    }

    /// Checks the copies of the running `engines` (with their names) against the last check and
    /// returns the violations; `changed(node, session, epoch, version)` sees every copy new or
    /// changed since then. A copy that disappears is forgotten: it may come back older (a new
    /// backup copy).
    pub fn check<'a>(
        &mut self,
        engines: impl IntoIterator<Item = (&'a NodeId, &'a Engine)>,
        mut changed: impl FnMut(&NodeId, &str, &Epoch, Version),
    ) -> Vec<String> {
        let mut violations = Vec::new();
        let mut next = HashMap::with_capacity(self.held.len());
        for (n, engine) in engines {
            let (Some(node), inc) = (engine.node.as_ref(), engine.incarnation) else { continue };
            for (s, e, ver, owned) in node.copies() {
                let key = (n.clone(), inc, s.to_owned());
                let prev = self.held.get(&key);
                if prev.is_none_or(|(pe, pv, po)| pe != e || *pv != ver || *po != owned) {
                    if let Some((pe, pv, _)) = prev
                        && (e, ver) < (pe, *pv)
                    {
                        violations.push(format!("{n}#{inc} went back on {s}: {pe:?}/{pv} -> {e:?}/{ver}"));
                    }
                    if owned {
                        if e.node != *n || e.incarnation != inc {
                            violations.push(format!("{n}#{inc} owns {s} at a foreign epoch {e:?}"));
                        }
                        if let Err(first) = self.use_epoch(s, e, n, inc) {
                            violations.push(format!("epoch {e:?} of {s} owned by {n}#{inc} and {first:?}"));
                        }
                    }
                    changed(n, s, e, ver);
                }
                next.insert(key, (e.clone(), ver, owned));
            }
        }
        self.held = next;
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Ack, Command, Input, Settings};
    use crate::harness::{cfg, id};
    use std::time::{Duration, Instant};

    #[test]
    fn an_epoch_has_one_owner_ever() {
        let mut inv = CopyInvariants::new();
        let e = Epoch { term: 1, node: id("a"), incarnation: 1 };
        assert_eq!(inv.use_epoch("s", &e, &id("a"), 1), Ok(()));
        assert_eq!(inv.use_epoch("s", &e, &id("a"), 1), Ok(()));
        assert_eq!(inv.use_epoch("s", &e, &id("b"), 1), Err((id("a"), 1)));
        assert_eq!(inv.use_epoch("s", &e, &id("a"), 2), Err((id("a"), 1)));
        assert_eq!(inv.use_epoch("other", &e, &id("b"), 1), Ok(()), "epochs are per session");
    }

    #[test]
    fn a_copy_is_reported_when_new_and_forgotten_when_its_node_is_down() {
        let c = cfg(&["a", "b"], 1);
        let t0 = Instant::now();
        let names = [id("a"), id("b")];
        let mut engines: Vec<Engine> =
            names.iter().map(|n| Engine::start(&c, n, &Settings::default(), t0)).collect();
        let create = Command::Create {
            session: "s".into(),
            attrs: crate::harness::attrs(&[("k", b"v")]),
            max_inactive: Duration::from_secs(60),
            ack: Ack::Async,
        };
        let a = engines[0].node.as_mut().expect("a runs");
        a.handle_input(t0, Input::Command { id: 1, cmd: create });
        let mut inv = CopyInvariants::new();
        let mut seen = Vec::new();
        let v = inv
            .check(names.iter().zip(&engines), |n, s, e, _| seen.push((n.clone(), s.to_owned(), e.clone())));
        assert_eq!(v, Vec::<String>::new());
        assert_eq!(seen.len(), 1, "the owner's new copy: {seen:?}");
        assert_eq!((&seen[0].0, seen[0].1.as_str(), seen[0].2.incarnation), (&id("a"), "s", 1));
        seen.clear();
        let v = inv
            .check(names.iter().zip(&engines), |n, s, e, _| seen.push((n.clone(), s.to_owned(), e.clone())));
        assert!(v.is_empty() && seen.is_empty(), "an unchanged copy is not reported again");
        engines[0].crash();
        assert!(inv.check(names.iter().zip(&engines), |_, _, _, _| {}).is_empty());
        engines[0].restart(&c, &names[0], &Settings::default(), t0);
        assert_eq!(engines[0].incarnation, 2);
        assert!(
            engines[0].node.as_ref().is_some_and(|n| n.copies().next().is_none()),
            "a restart starts empty"
        );
    }
}
