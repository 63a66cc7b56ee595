//! Reloading the domain file of a running node (`SIGHUP`, `POST /domain/reload`): the new
//! file is read, checked and taken, or refused with the rules it breaks while the node keeps
//! running on the file it has.

use std::path::Path;

use replication_core::change::{Plan, fingerprint_hex};
use serde_json::{Value, json};
use session_api::{Error, SessionManager};

/// Why a reload was refused: the rule codes broken and what they say.
#[derive(Debug)]
pub(crate) struct Refused {
    /// Stable rule codes (`replication_core::change::rule`, `validate::rule`), or `unreadable`
    /// and `parse` for a file that cannot be read or parsed.
    pub(crate) rules: Vec<String>,
    /// The violations, one a line.
    pub(crate) message: String,
}

impl Refused {
    /// The answer's JSON body.
    pub(crate) fn json(&self) -> Value {
        json!({ "error": self.message, "kind": "refused", "rules": self.rules })
    }
}

/// Reads `path` and switches `manager` to it; the plan, or why not.
pub(crate) async fn reload(manager: &SessionManager, path: &Path) -> Result<Plan, Refused> {
    manager.reconfigure(path).await.map_err(|e| {
        let (rules, message) = match &e {
            Error::Core(replication_core::Error::Invalid(r)) => {
                (r.codes().into_iter().map(str::to_owned).collect(), r.to_string().trim_end().to_owned())
            }
            Error::Core(replication_core::Error::Parse { .. }) => (vec!["parse".to_owned()], e.to_string()),
            Error::Io { .. } => (vec!["unreadable".to_owned()], e.to_string()),
            other => (vec!["unavailable".to_owned()], other.to_string()),
        };
        Refused { rules, message }
    })
}

/// What a reload did, as JSON.
pub(crate) fn plan_json(plan: &Plan) -> Value {
    let names = |s: &std::collections::BTreeSet<replication_core::NodeId>| -> Vec<String> {
        s.iter().map(ToString::to_string).collect()
    };
    json!({
        "from": fingerprint_hex(plan.from),
        "fingerprint": fingerprint_hex(plan.to),
        "unchanged": plan.unchanged(),
        "added": names(&plan.added),
        "removed": names(&plan.removed),
        "replicas_changed": plan.replicas_changed,
        "leaves": plan.removes_this_node,
        "warnings": plan.warnings.iter().map(|w| w.code).collect::<Vec<_>>(),
    })
}

/// Logs the outcome of a reload.
pub(crate) fn log(path: &Path, result: &Result<Plan, Refused>) {
    match result {
        Ok(plan) if plan.unchanged() => {
            tracing::info!(file = %path.display(), fingerprint = %fingerprint_hex(plan.to), "domain file unchanged")
        }
        Ok(plan) => tracing::info!(
            file = %path.display(),
            from = %fingerprint_hex(plan.from),
            fingerprint = %fingerprint_hex(plan.to),
            added = ?plan.added,
            removed = ?plan.removed,
            replicas_changed = plan.replicas_changed,
            leaves = plan.removes_this_node,
            "domain file reloaded"
        ),
        Err(r) => tracing::error!(
            file = %path.display(),
            rules = ?r.rules,
            "domain file refused, the node keeps running on the file it has: {}",
            r.message
        ),
    }
}
