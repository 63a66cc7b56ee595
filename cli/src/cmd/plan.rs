//! `m2m plan FILE`: the "what if" view of placement, with synthetic sessions; `m2m plan --from
//! OLD --to NEW`: what a change of the domain file moves ([`change`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use replication_core::placement::{Placement, WhatIf};
use replication_core::validate::Violation;
use replication_core::{DomainConfig, NodeId, Topology};
use serde::Serialize;

use crate::domain::{self, Checked, report_json, report_text};
use crate::output::{self, EXIT_INVALID, Format, Table};

mod change;

/// Most synthetic sessions `--sessions` accepts.
const MAX_SESSIONS: u32 = 1_000_000;

/// Arguments of `m2m plan`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The domain file (TOML).
    #[arg(required_unless_present = "from", conflicts_with = "from")]
    pub(crate) file: Option<PathBuf>,
    /// The domain file the nodes run now: with --to, show what changing to that file moves
    /// (owners, backups, copies to make and drop per node, copies during the change).
    #[arg(long, value_name = "OLD", requires = "to", conflicts_with = "fail")]
    pub(crate) from: Option<PathBuf>,
    /// The new domain file (with --from).
    #[arg(long, value_name = "NEW", requires = "from")]
    pub(crate) to: Option<PathBuf>,
    /// How many synthetic sessions (s-000001, s-000002, ...; with --from, sample session ids
    /// of the real shape) to place, at most 1000000.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_SESSIONS)))]
    pub(crate) sessions: u32,
    /// A node that fails (repeat for several failing at once).
    #[arg(long = "fail", value_name = "NODE")]
    pub(crate) fail: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

/// One node's row in the plan.
#[derive(Debug, Serialize)]
struct NodeRow {
    name: String,
    mode: &'static str,
    failed: bool,
    owns: usize,
    backups: usize,
    failover_target_for: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    owns_after: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backups_after: Option<usize>,
}

/// When the sessions of a failed owner get their new owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Takeover {
    /// Peer-to-peer: each failover target takes its sessions over without waiting (hot
    /// failover).
    AtOnce,
    /// Client-server: the servers keep the sessions until a client gets a request for one and
    /// fetches it; servers never own.
    OnRequest,
}

/// What the failure of `failed` does.
#[derive(Debug, Serialize)]
struct AfterFailure {
    /// Sessions whose owner failed and that another node owns (client-server: once a request
    /// for them reaches that client).
    ownership_moved: usize,
    /// When they move.
    ownership_moves: Takeover,
    /// Of those, how many each new owner takes (client-server: the client the placement
    /// names; any live client that gets the request takes the session instead).
    moved_to: BTreeMap<String, usize>,
    under_replicated: usize,
    without_backup: usize,
    orphaned: usize,
    lost: usize,
    below_target_after_recovery: usize,
}

/// The whole plan; its JSON form is the `--format json` output.
#[derive(Debug, Serialize)]
struct Plan<'a> {
    file: String,
    domain: &'a str,
    topology: &'static str,
    replicas: String,
    sessions: usize,
    /// Sessions no node may own (client-server domain without a client); not placed.
    unplaced: usize,
    failed: Vec<String>,
    nodes: Vec<NodeRow>,
    after_failure: Option<AfterFailure>,
    /// The session managers each node declares (absent when none does): each manager's
    /// sessions are placed like these synthetic ones, so the figures hold per manager.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    managers: BTreeMap<String, Vec<String>>,
    warnings: Vec<&'a Violation>,
}

/// Runs `m2m plan`.
pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let file = match (&args.file, &args.from, &args.to) {
        (_, Some(from), Some(to)) => return change::run(from, to, args.sessions, args.format),
        (Some(file), _, _) => file,
        // clap requires FILE or both --from and --to.
        _ => bail!("give a domain file, or --from OLD and --to NEW"),
    };
    let Checked { file, cfg, report } = match checked(file, args.format)? {
        Ok(checked) => checked,
        Err(code) => return Ok(code),
    };
    let failed = failed_nodes(&cfg, &args.fail)?;
    let placement = Placement::new(&cfg);

    let ids: Vec<String> = (1..=args.sessions).map(|i| format!("s-{i:06}")).collect();
    let mut placed: Vec<(&str, NodeId)> = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(owner) = placement.home(id, |_| true) {
            placed.push((id.as_str(), owner));
        }
    }
    let what = placement.what_if(placed.iter().map(|(id, owner)| (*id, owner)), &failed);

    let plan = Plan {
        file,
        domain: &cfg.domain.name,
        topology: cfg.topology().as_str(),
        replicas: cfg.domain.replicas.to_string(),
        sessions: ids.len(),
        unplaced: ids.len() - placed.len(),
        failed: failed.iter().map(ToString::to_string).collect(),
        nodes: node_rows(&cfg, &what, !failed.is_empty()),
        after_failure: (!failed.is_empty()).then(|| after_failure(&what, cfg.topology())),
        managers: if cfg.nodes.iter().any(|n| !n.managers.is_empty()) {
            cfg.nodes.iter().map(|n| (n.name.to_string(), n.managers.keys().cloned().collect())).collect()
        } else {
            BTreeMap::new()
        },
        warnings: report.warnings().collect(),
    };
    match args.format {
        Format::Json => output::print_json(&plan)?,
        Format::Text => {
            for w in &plan.warnings {
                eprintln!("{}", output::violation_line(w));
            }
            output::emit(&render_text(&plan));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads, parses and validates the domain file at `path`. When it cannot be used, or breaks a
/// rule, the problem is printed (as `m2m validate` does, in `format`) and the exit code (2 or
/// 1) is returned instead; warnings are left to the caller.
fn checked(path: &Path, format: Format) -> anyhow::Result<Result<Checked, ExitCode>> {
    let checked = match domain::check_for(path, format)? {
        Ok(checked) => checked,
        Err(code) => return Ok(Err(code)),
    };
    let Checked { file, cfg, report } = &checked;
    if report.has_errors() {
        match format {
            Format::Json => output::print_json(&report_json(file, cfg, report))?,
            Format::Text => eprint!("{}", report_text(file, cfg, report)),
        }
        return Ok(Err(output::exit(EXIT_INVALID)));
    }
    Ok(Ok(checked))
}

/// The `--fail` names as node ids; an unknown name is an error that lists the known nodes.
fn failed_nodes(cfg: &DomainConfig, names: &[String]) -> anyhow::Result<BTreeSet<NodeId>> {
    let mut failed = BTreeSet::new();
    for name in names {
        let id = NodeId::new(name);
        if cfg.node(&id).is_none() {
            let known: Vec<&str> = cfg.nodes.iter().map(|n| n.name.as_str()).collect();
            bail!(
                "unknown node `{name}` in --fail: domain {} has the nodes {}",
                cfg.domain.name,
                known.join(", ")
            );
        }
        failed.insert(id);
    }
    Ok(failed)
}

fn node_rows(cfg: &DomainConfig, what: &WhatIf, with_failure: bool) -> Vec<NodeRow> {
    cfg.nodes
        .iter()
        .map(|n| {
            let load = what.nodes.get(&n.name).cloned().unwrap_or_default();
            NodeRow {
                name: n.name.to_string(),
                mode: n.mode().as_str(),
                failed: load.failed,
                owns: load.owned,
                backups: load.backups,
                failover_target_for: load.failover_target_for,
                owns_after: with_failure.then_some(load.owned_after),
                backups_after: with_failure.then_some(load.backups_after),
            }
        })
        .collect()
}

fn after_failure(what: &WhatIf, topology: Topology) -> AfterFailure {
    // A live owner keeps its sessions, so what a live node owns beyond its own came to it
    // from a failed node. (The core's `WhatIf` has no per-new-owner count; derived here.)
    let moved_to = what
        .nodes
        .iter()
        .filter(|(_, l)| !l.failed && l.owned_after > l.owned)
        .map(|(id, l)| (id.to_string(), l.owned_after - l.owned))
        .collect();
    AfterFailure {
        ownership_moved: what.ownership_moved,
        ownership_moves: match topology {
            Topology::PeerToPeer => Takeover::AtOnce,
            Topology::ClientServer => Takeover::OnRequest,
        },
        moved_to,
        under_replicated: what.under_replicated,
        without_backup: what.without_backup,
        orphaned: what.orphaned,
        lost: what.lost,
        below_target_after_recovery: what.below_target_after_recovery,
    }
}

fn render_text(plan: &Plan<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "domain {}: {}, replicas {}, {} node(s); {} synthetic session(s)",
        plan.domain,
        plan.topology,
        plan.replicas,
        plan.nodes.len(),
        plan.sessions
    );
    if plan.unplaced > 0 {
        let _ = writeln!(out, "unplaced: {} session(s): no node may own sessions", plan.unplaced);
    }
    let with_failure = plan.after_failure.is_some();
    if with_failure {
        let _ = writeln!(out, "failed: {}", plan.failed.join(", "));
    }
    out.push('\n');

    let mut headers = vec!["node", "mode", "owns", "backups", "failover-target"];
    if with_failure {
        headers.splice(2..2, ["state"]);
        headers.extend(["owns-after", "backups-after"]);
    }
    let mut table = Table::new(headers);
    let opt = |v: Option<usize>| v.map(|v| v.to_string()).unwrap_or_default();
    for n in &plan.nodes {
        let mut cells = vec![n.name.clone(), n.mode.to_owned(), n.owns.to_string(), n.backups.to_string()];
        cells.push(n.failover_target_for.to_string());
        if with_failure {
            cells.insert(2, if n.failed { "FAILED" } else { "up" }.to_owned());
            cells.extend([opt(n.owns_after), opt(n.backups_after)]);
        }
        table.row(cells);
    }
    let sum = |f: fn(&NodeRow) -> usize| plan.nodes.iter().map(f).sum::<usize>().to_string();
    let mut total = vec!["total".to_owned(), String::new(), sum(|n| n.owns), sum(|n| n.backups)];
    total.push(sum(|n| n.failover_target_for));
    if with_failure {
        total.insert(2, String::new());
        total.extend([sum(|n| n.owns_after.unwrap_or(0)), sum(|n| n.backups_after.unwrap_or(0))]);
    }
    table.row(total);
    out.push_str(&table.render());
    if !plan.managers.is_empty() {
        out.push('\n');
        let _ = writeln!(
            out,
            "session managers (each has its own session ids, placed like the sessions above, so the figures hold per manager):"
        );
        let mut t = Table::new(["node", "managers"]);
        for (node, managers) in &plan.managers {
            let list = if managers.is_empty() { "(anonymous only)".to_owned() } else { managers.join(", ") };
            t.row([node.clone(), list]);
        }
        out.push_str(&t.render());
    }

    if let Some(a) = &plan.after_failure {
        out.push('\n');
        match a.ownership_moves {
            Takeover::AtOnce => {
                let _ = writeln!(out, "ownership moved: {} sessions", a.ownership_moved);
            }
            Takeover::OnRequest => {
                let _ = writeln!(
                    out,
                    "ownership moves on request: {} sessions (the servers keep them until a live client \
                     gets a request for one and fetches it; the client the placement names:)",
                    a.ownership_moved
                );
            }
        }
        for (node, count) in &a.moved_to {
            let _ = writeln!(out, "  to {node}: {count}");
        }
        let _ = writeln!(
            out,
            "under-replicated: {} sessions (fewer backups than wanted right after the failure)",
            a.under_replicated
        );
        let _ = writeln!(out, "without any backup: {} sessions", a.without_backup);
        if a.orphaned > 0 {
            let _ = writeln!(
                out,
                "orphaned: {} sessions (a copy survives, but no live node may own it)",
                a.orphaned
            );
        }
        let _ =
            writeln!(out, "below target after re-replication: {} sessions", a.below_target_after_recovery);
        let _ = writeln!(out, "lost: {} sessions", a.lost);
    }
    out
}
