//! `m2m plan --from OLD --to NEW`: what changing a running domain's file moves, over sample
//! sessions.
//!
//! The sample sessions have ids of the real shape, `<random>.<owner>.<failover-target>`
//! ([`session_api::id::generate_with`] with a seeded random part, so the plan is the same at
//! every run), created in turn on the nodes of OLD that own sessions (as a load balancer spreads
//! new sessions). For each one the plan compares where its copies live under OLD (the owner and
//! its backups) with where they live under NEW: a session keeps its owner while NEW still lets
//! that node own sessions; otherwise it goes to its failover target under NEW (what a graceful
//! leave of the removed owner gives). Copies on nodes that hold it under NEW only are copies
//! to make; on nodes that hold it under OLD only, copies to drop.
//!
//! How many copies exist while the change runs depends on the order of the steps. The plan
//! assumes the documented procedure (docs/deploy.md, "Changing the domain"): copies are made
//! before old ones are dropped, so a session never has fewer copies than the lesser of before
//! and after. It also shows what is left when the removed nodes leave before the new copies
//! are made (a leave hands each session to a node that already holds a copy, so those are the
//! copies on nodes that stay).
//!
//! A change that cannot be made online (another domain name, topology or transport) is refused
//! with its rule code, as `m2m node` refuses such a reload.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use replication_core::placement::{Placement, stable_hash};
use replication_core::validate::Violation;
use replication_core::{DomainConfig, NodeId, Topology};
use serde::Serialize;
use serde_json::json;

use super::checked;
use crate::domain::Checked;
use crate::output::{self, EXIT_INVALID, Format, Table};

/// The steps the plan assumes (docs/deploy.md): copies are made before old ones are dropped.
const PROCEDURE: [&str; 4] = [
    "start the added nodes",
    "reload every node that stays with NEW",
    "wait until `m2m status` shows the change complete and no session under-replicated",
    "stop the removed nodes (SIGTERM, or a reload): they hand their sessions off and leave",
];

/// A count of sample sessions and its share of them.
#[derive(Debug, Serialize)]
struct Share {
    count: usize,
    share: f64,
}

/// One node's row: what it owns and holds before and after, and the copies it makes and drops.
#[derive(Debug, Default, Serialize)]
struct NodeRow {
    name: String,
    /// `kept`, `added` or `removed`.
    change: &'static str,
    owns_before: usize,
    owns_after: usize,
    /// Copies it holds (owned and backups).
    copies_before: usize,
    copies_after: usize,
    /// Copies it receives.
    make: usize,
    /// Copies it drops.
    drop: usize,
}

/// Sessions with the same copy counts through the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct Class {
    /// Copies under OLD (owner and backups).
    before: usize,
    /// Fewest copies while the change runs, copies made before old ones are dropped.
    during_min: usize,
    /// Most copies while the change runs (old and new holders at once).
    during_max: usize,
    /// Copies under NEW.
    after: usize,
    /// Copies left if the removed nodes leave before the new copies are made.
    removed_first: usize,
}

#[derive(Debug, Serialize)]
struct ClassRow {
    #[serde(flatten)]
    class: Class,
    sessions: usize,
}

/// Before and after.
#[derive(Debug, Serialize)]
struct Change<T> {
    from: T,
    to: T,
}

/// The whole plan of a change; its JSON form is the `--format json` output.
#[derive(Debug, Serialize)]
struct ChangePlan<'a> {
    from: &'a str,
    to: &'a str,
    allowed: bool,
    domain: &'a str,
    topology: &'static str,
    replicas: Change<String>,
    added: Vec<String>,
    removed: Vec<String>,
    sessions: usize,
    /// Sessions no node of OLD may own; not placed.
    unplaced: usize,
    /// Sessions no node of NEW may own; left out of the counts below.
    orphaned: usize,
    owner_moved: Share,
    backups_changed: Share,
    failover_target_changed: Share,
    unchanged: Share,
    copies_before: usize,
    copies_after: usize,
    copies_to_make: usize,
    copies_to_drop: usize,
    /// Sessions with fewer copies at some step than before (copies made first): fewer after.
    fewer_copies: usize,
    /// Sessions with fewer copies than before if the removed nodes leave first.
    fewer_copies_if_removed_first: usize,
    /// Of those, sessions left with no copy at all.
    lost_if_removed_first: usize,
    assumes: [&'static str; 4],
    classes: Vec<ClassRow>,
    nodes: Vec<NodeRow>,
    warnings: Vec<&'a Violation>,
}

/// Runs `m2m plan --from OLD --to NEW`.
pub(super) fn run(from: &Path, to: &Path, sessions: u32, format: Format) -> anyhow::Result<ExitCode> {
    let old = match checked(from, format)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let new = match checked(to, format)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let refused = replication_core::change::refusals(&old.cfg, &new.cfg).violations;
    if !refused.is_empty() {
        match format {
            Format::Json => output::print_json(&json!({
                "from": old.file, "to": new.file, "allowed": false, "refused": refused,
            }))?,
            Format::Text => {
                eprintln!(
                    "{} -> {}: refused: this change cannot be made online (stop every node and start \
                     them with the new file instead)",
                    old.file, new.file
                );
                for v in &refused {
                    eprintln!("{}", output::violation_line(v));
                }
            }
        }
        return Ok(output::exit(EXIT_INVALID));
    }
    let plan = plan(&old, &new, sessions)?;
    match format {
        Format::Json => output::print_json(&plan)?,
        Format::Text => {
            for w in &plan.warnings {
                eprintln!("{} (in {})", output::violation_line(w), new.file);
            }
            output::emit(&render_text(&plan));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A seeded random part for sample session `i`'s `draw`-th draw: 24 characters, the length of
/// a real one, the same at every run.
fn sample_random(i: u32, draw: u32) -> String {
    let seed = stable_hash(format!("m2m-plan-{i}-{draw}").as_bytes());
    format!("{seed:016x}{:08x}", stable_hash(&seed.to_le_bytes()) >> 32)
}

/// Where one session's copies live under one file.
struct Holders {
    owner: NodeId,
    backups: Vec<NodeId>,
}

impl Holders {
    fn all(&self) -> BTreeSet<&NodeId> {
        std::iter::once(&self.owner).chain(&self.backups).collect()
    }
}

/// The counts over the sample sessions.
#[derive(Default)]
struct Tally {
    nodes: BTreeMap<NodeId, NodeRow>,
    classes: BTreeMap<Class, usize>,
    placed: usize,
    orphaned: usize,
    owner_moved: usize,
    backups_changed: usize,
    target_changed: usize,
    unchanged: usize,
    copies_before: usize,
    copies_after: usize,
    made: usize,
    dropped: usize,
    fewer: usize,
    fewer_removed_first: usize,
    lost_removed_first: usize,
}

/// The counters of one side of a node's row: copies held, sessions owned, and copies it has
/// on this side only (dropped before, made after).
type Side = fn(&mut NodeRow) -> [&mut usize; 3];

impl Tally {
    /// Counts a session whose copies move from `before` to `after`; `in_new` tells the nodes of
    /// the new file.
    fn add(
        &mut self,
        before: &Holders,
        after: &Holders,
        target_moved: bool,
        in_new: impl Fn(&NodeId) -> bool,
    ) {
        let moved = before.owner != after.owner;
        let backups_differ =
            before.backups.iter().collect::<BTreeSet<_>>() != after.backups.iter().collect::<BTreeSet<_>>();
        self.owner_moved += usize::from(moved);
        self.backups_changed += usize::from(backups_differ);
        self.target_changed += usize::from(target_moved);
        self.unchanged += usize::from(!moved && !backups_differ && !target_moved);

        let (h0, h1) = (before.all(), after.all());
        let old_side: Side = |r| [&mut r.copies_before, &mut r.owns_before, &mut r.drop];
        let new_side: Side = |r| [&mut r.copies_after, &mut r.owns_after, &mut r.make];
        self.dropped += self.count(&h0, &h1, &before.owner, old_side);
        self.made += self.count(&h1, &h0, &after.owner, new_side);

        let class = Class {
            before: h0.len(),
            during_min: h0.len().min(h1.len()),
            during_max: h0.union(&h1).count(),
            after: h1.len(),
            removed_first: h0.iter().filter(|n| in_new(n)).count(),
        };
        self.copies_before += class.before;
        self.copies_after += class.after;
        self.fewer += usize::from(class.during_min < class.before);
        self.fewer_removed_first += usize::from(class.removed_first.min(class.after) < class.before);
        self.lost_removed_first += usize::from(class.removed_first == 0);
        *self.classes.entry(class).or_default() += 1;
    }

    /// Counts the copies on `held` into the `side` of their nodes' rows; returns how many are
    /// not in `other`.
    fn count(
        &mut self,
        held: &BTreeSet<&NodeId>,
        other: &BTreeSet<&NodeId>,
        owner: &NodeId,
        side: Side,
    ) -> usize {
        let mut only_here = 0;
        for n in held {
            let [copies, owns, moved] = side(self.nodes.entry((*n).clone()).or_default());
            *copies += 1;
            *owns += usize::from(*n == owner);
            if !other.contains(n) {
                *moved += 1;
                only_here += 1;
            }
        }
        only_here
    }
}

/// Sample session `i`: its id, made as [`session_api::id::generate`] makes one (with a seeded
/// random part), and its owner, the `i`-th of `owners` (the nodes that own sessions) in turn.
/// `None` when there is no such node.
fn sample_session<'n>(
    placement: &Placement,
    owners: &[&'n NodeId],
    i: u32,
) -> anyhow::Result<Option<(String, &'n NodeId)>> {
    let Some(owner) = owners.get(i as usize % owners.len().max(1)).copied() else { return Ok(None) };
    let mut draw = 0;
    let random = || {
        draw += 1;
        Ok(sample_random(i, draw))
    };
    let sid = session_api::id::generate_with(placement, owner, |_| true, random)
        .context("drawing a sample session id")?;
    Ok(Some((sid, owner)))
}

fn plan<'a>(old: &'a Checked, new: &'a Checked, sessions: u32) -> anyhow::Result<ChangePlan<'a>> {
    let (po, pn) = (Placement::new(&old.cfg), Placement::new(&new.cfg));
    let in_new = |n: &NodeId| new.cfg.node(n).is_some();
    let owners: Vec<&NodeId> = po.nodes().filter(|n| po.owns_sessions(n)).collect();
    let mut t = Tally::default();
    for i in 0..sessions {
        let Some((sid, owner)) = sample_session(&po, &owners, i)? else { break };
        t.placed += 1;
        let before = Holders { owner: owner.clone(), backups: po.backups(&sid, owner, |_| true) };
        // The owner keeps its sessions while the new file lets it own sessions; otherwise they
        // go where its failover under the new file sends them.
        let new_owner = if pn.owns_sessions(owner) {
            Some(owner.clone())
        } else {
            pn.failover_owner(&sid, owner, in_new)
        };
        let Some(new_owner) = new_owner else {
            t.orphaned += 1;
            continue;
        };
        let after = Holders { backups: pn.backups(&sid, &new_owner, in_new), owner: new_owner };
        let target = |p: &Placement, h: &Holders| p.failover_owner(&sid, &h.owner, |_| true);
        t.add(&before, &after, target(&po, &before) != target(&pn, &after), in_new);
    }

    let counted = t.placed - t.orphaned;
    let share = |count: usize| Share {
        count,
        share: if counted == 0 { 0.0 } else { (count as f64 / counted as f64 * 1000.0).round() / 1000.0 },
    };
    let names = |cfg: &DomainConfig, other: &DomainConfig| -> Vec<String> {
        cfg.nodes.iter().filter(|n| other.node(&n.name).is_none()).map(|n| n.name.to_string()).collect()
    };
    // NEW's nodes in file order, then the removed ones in OLD's.
    let order = new.cfg.nodes.iter().chain(old.cfg.nodes.iter().filter(|n| !in_new(&n.name)));
    let nodes = order
        .map(|n| {
            let mut r = t.nodes.remove(&n.name).unwrap_or_default();
            r.name = n.name.to_string();
            r.change = match (old.cfg.node(&n.name).is_some(), in_new(&n.name)) {
                (true, true) => "kept",
                (false, _) => "added",
                (true, false) => "removed",
            };
            r
        })
        .collect();
    Ok(ChangePlan {
        from: &old.file,
        to: &new.file,
        allowed: true,
        domain: &new.cfg.domain.name,
        topology: new.cfg.topology().as_str(),
        replicas: Change {
            from: old.cfg.domain.replicas.to_string(),
            to: new.cfg.domain.replicas.to_string(),
        },
        added: names(&new.cfg, &old.cfg),
        removed: names(&old.cfg, &new.cfg),
        sessions: sessions as usize,
        unplaced: sessions as usize - t.placed,
        orphaned: t.orphaned,
        owner_moved: share(t.owner_moved),
        backups_changed: share(t.backups_changed),
        failover_target_changed: share(t.target_changed),
        unchanged: share(t.unchanged),
        copies_before: t.copies_before,
        copies_after: t.copies_after,
        copies_to_make: t.made,
        copies_to_drop: t.dropped,
        fewer_copies: t.fewer,
        fewer_copies_if_removed_first: t.fewer_removed_first,
        lost_if_removed_first: t.lost_removed_first,
        assumes: PROCEDURE,
        classes: t.classes.into_iter().rev().map(|(class, sessions)| ClassRow { class, sessions }).collect(),
        nodes,
        warnings: new.report.warnings().collect(),
    })
}

fn render_text(plan: &ChangePlan<'_>) -> String {
    let mut out = String::new();
    let list = |v: &[String]| if v.is_empty() { "none".to_owned() } else { v.join(", ") };
    let _ = writeln!(
        out,
        "change of domain {} ({}): replicas {} -> {}; nodes added: {}; removed: {}",
        plan.domain,
        plan.topology,
        plan.replicas.from,
        plan.replicas.to,
        list(&plan.added),
        list(&plan.removed)
    );
    let _ = writeln!(
        out,
        "{} sample session(s): ids <random>.<owner>.<failover-target>, created in turn on the nodes of the \
         old file",
        plan.sessions
    );
    if !plan.added.is_empty() {
        let _ = writeln!(
            out,
            "nodes added: start them with the new file first; each node that stays links to them \
             when it reloads the new file"
        );
    }
    if plan.unplaced > 0 {
        let _ = writeln!(
            out,
            "unplaced: {} session(s): no node of {} may own sessions",
            plan.unplaced, plan.from
        );
    }
    if plan.orphaned > 0 {
        let _ = writeln!(
            out,
            "orphaned: {} session(s): no node of {} may own them (left out below)",
            plan.orphaned, plan.to
        );
    }
    out.push('\n');
    for (label, s) in [
        ("owner moves", &plan.owner_moved),
        ("backups change", &plan.backups_changed),
        ("failover target changes", &plan.failover_target_changed),
        ("unchanged", &plan.unchanged),
    ] {
        let _ = writeln!(out, "{label}: {} sessions ({:.1}%)", s.count, s.share * 100.0);
    }
    if plan.topology == Topology::ClientServer.as_str() && plan.owner_moved.count > 0 {
        out.push_str(
            "  (client-server: a client takes a moved session over when a request for it arrives, \
             fetching it from a server)\n",
        );
    }
    out.push('\n');

    let mut table =
        Table::new(["node", "change", "owns", "owns-after", "copies", "copies-after", "make", "drop"]);
    let mut total = [0usize; 6];
    for n in &plan.nodes {
        let cells = [n.owns_before, n.owns_after, n.copies_before, n.copies_after, n.make, n.drop];
        for (t, c) in total.iter_mut().zip(cells) {
            *t += c;
        }
        table.row([n.name.clone(), n.change.to_owned()].into_iter().chain(cells.map(|c| c.to_string())));
    }
    table.row(["total".to_owned(), String::new()].into_iter().chain(total.map(|c| c.to_string())));
    out.push_str(&table.render());

    let _ =
        writeln!(out, "\ncopies per session through the change (copies made before old ones are dropped):");
    // The copies left if the removed nodes leave first: only when a node is removed.
    let removals = !plan.removed.is_empty();
    let mut headers = vec!["before", "during", "after", "sessions"];
    if removals {
        headers.insert(3, "if-removed-leave-first");
    }
    let mut table = Table::new(headers);
    for c in &plan.classes {
        let k = c.class;
        let during = if k.during_min == k.during_max {
            k.during_min.to_string()
        } else {
            format!("{}..{}", k.during_min, k.during_max)
        };
        let mut cells = vec![k.before.to_string(), during, k.after.to_string(), c.sessions.to_string()];
        if removals {
            cells.insert(3, k.removed_first.to_string());
        }
        table.row(cells);
    }
    out.push_str(&table.render());
    out.push_str("assumes these steps:\n");
    for (i, step) in plan.assumes.iter().enumerate() {
        let _ = writeln!(out, "  {}. {step}", i + 1);
    }
    out.push('\n');
    let _ = write!(out, "fewer copies than before: {} sessions", plan.fewer_copies);
    if plan.fewer_copies > 0 {
        out.push_str(" (NEW keeps fewer copies of them; no step goes below that)");
    }
    out.push('\n');
    if removals {
        let _ = writeln!(
            out,
            "fewer copies than before if the removed nodes leave before the new copies are made: {} \
             sessions ({} with no copy left)",
            plan.fewer_copies_if_removed_first, plan.lost_if_removed_first
        );
    }
    out
}
