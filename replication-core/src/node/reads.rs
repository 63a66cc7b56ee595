//! Reads of an owned session and the writes no backup acknowledged yet.
//!
//! An owner applies a write before its backups acknowledge it. Under synchronous
//! acknowledgement a write that no backup holds may still be lost (the owner is cut off and
//! another node takes the session over from the backups' copies), so a read must not show it:
//! a read (`Get`) of a session whose newest synchronous write no backup acknowledged waits for
//! that acknowledgement, and is answered [`Outcome::Unavailable`] (tried again by the caller)
//! if the write ends without one. A read then never returns a version that a failover can
//! lose: what it shows is held by the owner and at least one backup, like a write reported
//! [`Outcome::Replicated`]. Asynchronous writes do not hold reads back: an asynchronous owner
//! reads its own copy. A node with no live peer to hold a backup answers at once (its writes
//! were reported [`Outcome::Unreplicated`]: one copy, promised nothing beyond this node).
//! `Acquire` is not a read of the attributes and is answered at once.

use super::Node;
use super::store::Record;
use crate::api::{Outcome, RequestId};
use std::time::Instant;

/// Reads that wait for one write at most; more are answered [`Outcome::Unavailable`].
const MAX_READS_PER_WRITE: usize = 1024;

impl Node {
    /// Takes a read (`Get`) of `session` that must wait: this node owns the session, holds
    /// the read lease, has a live peer to hold a backup, and a synchronous write on it is
    /// acknowledged by no backup yet.
    /// The read waits for the newest such write still pending, or is answered
    /// [`Outcome::Unavailable`] when none is (it timed out: the owner keeps retransmitting it,
    /// and reads are served again once a backup acknowledges it) or [`MAX_READS_PER_WRITE`]
    /// wait for it already. `false`: the read is served as usual.
    pub(super) fn read_waits(&mut self, now: Instant, id: RequestId, session: &str) -> bool {
        let Some(Record { owner: Some(o), .. }) = self.sessions.get(session) else { return false };
        if !o.unconfirmed || !self.holds_lease(now) {
            return false;
        }
        let view = &self.view;
        if self.placement.backups(session, &self.me, |n| view.is_up(n)).is_empty() {
            return false;
        }
        let newest = o.waiting.iter().filter_map(|w| self.writes.get(*w).map(|p| (p.version, *w))).max();
        match newest.and_then(|(_, w)| self.writes.get_mut(w)) {
            Some(w) if w.reads.len() < MAX_READS_PER_WRITE => w.reads.push(id),
            _ => self.out.outcome(id, Outcome::Unavailable),
        }
        true
    }
}
