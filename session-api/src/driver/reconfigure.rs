//! An online domain change in the driver: the new file goes to the transport (when it adds
//! nodes) and to the engine; a file that no longer lists this node makes it leave.

use std::sync::Arc;

use replication_core::placement::Placement;
use replication_core::{DomainConfig, change};

use super::{Driver, Reply, Responder};
use crate::error::Error;

impl Driver {
    /// Switches to `config`, or answers why not (the rules broken, by code). Nothing changes
    /// on a refusal: the node keeps running on the file it has.
    pub(super) fn reconfigure(&mut self, config: DomainConfig, reply: Responder) {
        let plan = match change::check(self.node.config(), &config, self.node.id()) {
            Ok(plan) => plan,
            Err(report) => {
                return reply.send(Reply::Failed(Error::Core(replication_core::Error::Invalid(report))));
            }
        };
        // The transport goes first, so that a transport that cannot link to the added nodes
        // leaves the engine untouched; the engine runs the same `change::check` on the same
        // two files, so it cannot then refuse what passed here.
        if !plan.added.is_empty() && !plan.removes_this_node {
            if let Err(e) = self.transport.add_peers(Arc::new(config.clone())) {
                let report = change::transport_refusal(&plan.added, &e.to_string());
                return reply.send(Reply::Failed(Error::Core(replication_core::Error::Invalid(report))));
            }
        }
        let placement = Placement::new(&config);
        match self.node.reconfigure(config) {
            Ok(plan) => {
                if !plan.unchanged() && !plan.removes_this_node {
                    self.placement = placement;
                }
                self.drain();
                let leave = plan.removes_this_node;
                reply.send(Reply::Reconfigured(Box::new(plan)));
                if leave {
                    // No longer listed: hand the sessions off as a graceful leave, and stop.
                    self.start_leave(None);
                }
            }
            Err(e) => reply.send(Reply::Failed(Error::Core(e))),
        }
    }
}
