//! Online domain changes under load on multiple hosts: real `m2m node` processes, each in its
//! own network namespace, with the hosts, the workload and the checks of the fault matrix
//! (`netns_faults/hosts.rs`, `netns_faults/workload.rs`). Each node has its own domain file; a
//! change writes the new file for the nodes it reaches and reloads them (`POST /domain/reload`,
//! or SIGHUP for one node a step) while the workload writes and reads through the nodes of the
//! domain. Changes: scale out 3 -> 4 -> 5 (the new node starts with the new file, then the
//! others reload), replicas 1 -> 2 -> 1, scale in 5 -> 3 (one removed node running, one already
//! SIGKILLed), a scale-out whose file reaches app1 5 s before the others, and a scale-out with
//! a node SIGKILLed in the middle (restarted with the new file).
//!
//! After each change: the time until every node of the new file runs it, sees no change under
//! way, sees every node up and has nothing under-replicated (the recovery). At the end: every
//! acknowledged write is read back, invalidated sessions stay gone, one owner per session, the
//! copies add up to the replica count, every node on the last file's fingerprint, a removed
//! running node exited 0, and the recorded history is linearizable.
//!
//! Needs root and network namespaces. Runs only when `M2M_NETNS_RECONFIG` is set: `short`
//! (TCP scale-out and the kill in the middle of a change, as CI runs it), `all` (every change
//! over TCP and QUIC), or a comma-separated list like `tcp-scale-in,quic-early`.
//!
//! ```sh
//! M2M_NETNS_RECONFIG=all cargo test -p m2m-cli --test netns_reconfig -- --nocapture
//! ```

mod common;
#[allow(dead_code)]
#[path = "netns_faults/hosts.rs"]
mod hosts;
#[path = "netns_faults/matrix.rs"]
mod matrix;
#[path = "netns_faults/workload.rs"]
mod workload;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::history::Op;
use hosts::{Client, Net, NodeStatus, admin, status, wait_healthy_of};
use workload::{CHECKER_CLIENT, Checked, Load, Targets, check_history, owners, read_back, send};

/// Node hosts: the most nodes a scenario runs (the clients run on one more).
const NODES: usize = 5;
const TOKEN: &str = "netns-reconfig-token";
const HELPER_ENV: &str = "M2M_NETNS_HELPER";
/// The longest a change may take to complete after its last reload.
const RECOVERY_LIMIT_SECS: u64 = 60;
/// The longest the copies may take to add up to the replica count once the load stopped and
/// the final reads moved every session to app2.
const COPIES_LIMIT_SECS: u64 = 30;

fn netns_script() -> PathBuf {
    common::workspace_root().join("scripts/netns.sh")
}

/// Not a test by itself: the proxy the scenarios run inside their client namespace
/// ([`hosts::http_helper`]).
#[test]
fn netns_http_helper() {
    hosts::http_helper();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    ScaleOut,
    Replicas,
    ScaleIn,
    Early,
    KillMid,
}

impl Change {
    const ALL: [Change; 5] =
        [Change::ScaleOut, Change::Replicas, Change::ScaleIn, Change::Early, Change::KillMid];

    fn name(self) -> &'static str {
        match self {
            Change::ScaleOut => "scale-out",
            Change::Replicas => "replicas",
            Change::ScaleIn => "scale-in",
            Change::Early => "early",
            Change::KillMid => "kill-mid",
        }
    }

    /// The nodes the scenario starts with.
    fn first_nodes(self) -> Vec<usize> {
        match self {
            Change::ScaleIn => (0..5).collect(),
            Change::Replicas => (0..4).collect(),
            Change::ScaleOut | Change::Early | Change::KillMid => (0..3).collect(),
        }
    }
}

/// One change of a scenario and how long the domain took to agree on it.
#[derive(Debug)]
struct Step {
    what: &'static str,
    /// From the last reload (or restart) of the change until every node of the new file runs
    /// it, sees no change, sees every node up and has nothing under-replicated.
    recovery: Option<Duration>,
}

#[derive(Debug)]
struct Summary {
    name: String,
    acked: u64,
    unacked: u64,
    lost: usize,
    resurrected: usize,
    steps: Vec<Step>,
    /// From the end of the final reads until the copies add up to the replica count.
    copies_settled: Option<Duration>,
    /// Copies above the replica count that stayed.
    stray: u64,
    checked: Checked,
    took: Duration,
    problems: Vec<String>,
}

/// The hosts, the control client and the load of one scenario.
struct Run {
    net: Net,
    ctl: Client,
    targets: Targets,
    /// The fingerprint the last reload answered.
    fingerprint: Option<String>,
    steps: Vec<Step>,
    problems: Vec<String>,
}

impl Run {
    /// Writes `text` as the domain file of `nodes`.
    fn write(&mut self, nodes: &[usize], text: &str) {
        for &i in nodes {
            self.net.set_file(i, text);
        }
    }

    /// Node `i` reads its file again: by SIGHUP when `hup`, else by `POST /domain/reload`
    /// (a refusal is a problem).
    fn reload(&mut self, i: usize, hup: bool) {
        if hup {
            self.net.signal(i, "HUP");
            return;
        }
        let (code, body) = self.ctl.call(&admin(i), "POST", "/domain/reload", "");
        if code == 200 {
            self.fingerprint = body["fingerprint"].as_str().map(str::to_owned);
        } else {
            self.problems.push(format!("app{} answered the reload {code}: {body}", i + 1));
        }
    }

    /// Writes `text` for `nodes` and reloads them in turn, the last one by SIGHUP.
    fn change(&mut self, nodes: &[usize], text: &str) {
        self.write(nodes, text);
        for (k, &i) in nodes.iter().enumerate() {
            self.reload(i, k + 1 == nodes.len() && k > 0);
        }
    }

    /// Starts node `i` with `text` as its file and sends it load.
    fn add(&mut self, i: usize, text: &str, serving: &[usize]) {
        self.net.set_file(i, text);
        self.net.start(i);
        self.targets.set(serving.to_vec());
    }

    /// Measures the recovery of the change `what` that ended now, over the nodes `nodes`.
    fn settle(&mut self, what: &'static str, nodes: &[usize]) {
        self.settle_since(what, nodes, Instant::now());
    }

    /// Measures the recovery of the change `what` that ended at `since`.
    fn settle_since(&mut self, what: &'static str, nodes: &[usize], since: Instant) {
        let before = since.elapsed();
        let recovery = wait_healthy_of(&mut self.ctl, nodes, RECOVERY_LIMIT_SECS).map(|d| d + before);
        if recovery.is_none() {
            let all: Vec<Option<NodeStatus>> = nodes.iter().map(|&i| status(&mut self.ctl, i)).collect();
            self.problems.push(format!("{what}: not complete {RECOVERY_LIMIT_SECS} s after it: {all:?}"));
        }
        self.steps.push(Step { what, recovery });
        // Load on the changed domain before the next change.
        std::thread::sleep(Duration::from_millis(1500));
    }
}

/// Runs the changes of `change` on a started domain; returns the nodes of the last file and
/// its replica count.
fn run_changes(r: &mut Run, change: Change) -> (Vec<usize>, usize) {
    let text = |r: &Run, nodes: &[usize], extra: &str| r.net.domain_text(nodes, extra);
    match change {
        Change::ScaleOut => {
            for (what, n) in [("3 -> 4 nodes", 4), ("4 -> 5 nodes", 5)] {
                let nodes: Vec<usize> = (0..n).collect();
                let file = text(r, &nodes, "");
                r.add(n - 1, &file, &nodes);
                r.change(&nodes[..n - 1], &file);
                r.settle(what, &nodes);
            }
            ((0..5).collect(), 1)
        }
        Change::Replicas => {
            let nodes: Vec<usize> = (0..4).collect();
            for (what, replicas) in [("replicas 1 -> 2", 2), ("replicas 2 -> 1", 1)] {
                let file = text(r, &nodes, &format!("replicas = {replicas}\n"));
                r.change(&nodes, &file);
                r.settle(what, &nodes);
            }
            (nodes, 1)
        }
        Change::ScaleIn => {
            // app5 is SIGKILLed (and taken out of the load) and failed over first; then every
            // live node reads the 3-node file, app4 last: it leaves and exits.
            r.net.kill(4);
            r.targets.set((0..4).collect());
            std::thread::sleep(Duration::from_millis(1500));
            let nodes: Vec<usize> = (0..3).collect();
            let file = text(r, &nodes, "");
            r.change(&nodes, &file);
            r.write(&[3], &file);
            r.reload(3, false);
            let end = Instant::now();
            r.targets.set(nodes.clone());
            match r.net.wait_exit(3, Duration::from_secs(30)) {
                Some(0) => {}
                other => r.problems.push(format!("app4, removed and running, exited with {other:?}")),
            }
            // The recovery includes app4's leave.
            r.settle_since("5 -> 3 nodes (app4 removed running, app5 dead)", &nodes, end);
            (nodes, 1)
        }
        Change::Early => {
            let nodes: Vec<usize> = (0..4).collect();
            let file = text(r, &nodes, "");
            r.add(3, &file, &nodes);
            r.change(&[0], &file);
            std::thread::sleep(Duration::from_secs(5));
            r.change(&[1, 2], &file);
            r.settle("3 -> 4 nodes, app1 5 s before app2 and app3", &nodes);
            (nodes, 1)
        }
        Change::KillMid => {
            // app4 starts with the 4-node file and app1 reloads; app2 is SIGKILLed before its
            // turn, app3 reloads, and app2 comes back 2.5 s later with the new file.
            let nodes: Vec<usize> = (0..4).collect();
            let file = text(r, &nodes, "");
            r.add(3, &file, &nodes);
            r.change(&[0], &file);
            r.net.kill(1);
            r.targets.set(vec![0, 2, 3]);
            r.change(&[2], &file);
            std::thread::sleep(Duration::from_millis(2500));
            r.add(1, &file, &nodes);
            r.settle("3 -> 4 nodes, app2 SIGKILLed mid-change and restarted", &nodes);
            (nodes, 1)
        }
    }
}

fn run_scenario(idx: usize, transport: &str, change: Change) -> Summary {
    let name = format!("{transport}-{}", change.name());
    let began = Instant::now();
    let prefix = format!("mr{}x{idx}", std::process::id() % 100_000);
    let mut net = Net::hosts(prefix.clone(), transport, None, NODES);
    let first = change.first_nodes();
    let file = net.domain_text(&first, "");
    for &i in &first {
        net.set_file(i, &file);
        net.start(i);
    }
    let ctl = Client::spawn(&prefix, NODES + 1);
    let targets = Targets::new(NODES + 1, first.clone());
    let mut r = Run { net, ctl, targets, fingerprint: None, steps: Vec::new(), problems: Vec::new() };
    let empty = |name, problems| Summary {
        name,
        acked: 0,
        unacked: 0,
        lost: 0,
        resurrected: 0,
        steps: Vec::new(),
        copies_settled: None,
        stray: 0,
        checked: Checked::default(),
        took: began.elapsed(),
        problems,
    };
    if wait_healthy_of(&mut r.ctl, &first, 30).is_none() {
        let problems = vec![format!("the domain did not form\n{}", r.net.logs())];
        return empty(name, problems);
    }

    // The workload writes through the nodes of the domain; a fourth client reads through app1
    // (in every scenario's domain from start to end).
    let load = Load::start(&prefix, &r.targets, 0);
    let history = load.history.clone();
    std::thread::sleep(Duration::from_millis(1500));
    let (last, replicas) = run_changes(&mut r, change);
    let rec = load.finish();

    // Every acknowledged write reads back through app2; invalidated sessions answer 404
    // through app3 (both in every scenario's last file).
    let mut problems = std::mem::take(&mut r.problems);
    let lost = read_back(&mut r.ctl, &history, &rec, 1, &mut problems);
    let mut resurrected = 0;
    for id in &rec.invalidated {
        let (code, body) = send(&mut r.ctl, &history, CHECKER_CLIENT, 2, Some(id), Op::Get);
        if code != 404 {
            resurrected += 1;
            problems.push(format!("invalidated {id} answers {code}: {body}"));
        }
    }
    if wait_healthy_of(&mut r.ctl, &last, 30).is_none() {
        problems.push("not complete or under-replicated after the reads".into());
    }
    // One owner per session, and the owned sessions add up to the ones that may exist.
    let owned_by = owners(&mut r.ctl, &last, &rec, &mut problems);
    let owned = owned_by.len();
    let may = rec.live.len()
        + rec.retired.len()
        + rec.unsure.len()
        + usize::try_from(rec.unknown_creates).unwrap_or(0);
    if owned < rec.acked.len() || owned > may {
        problems.push(format!(
            "{owned} session(s) have an owner: {} have acknowledged writes, at most {may} may exist",
            rec.acked.len()
        ));
    }
    // The copies add up to the replica count (a lowered count dropped the extra ones), and
    // every node runs the last file.
    let copies = replicas.min(last.len() - 1) as u64;
    let t0 = Instant::now();
    let counts = loop {
        let all: Vec<Option<NodeStatus>> = last.iter().map(|&i| status(&mut r.ctl, i)).collect();
        let (owned, backed): (u64, u64) =
            all.iter().flatten().fold((0, 0), |(o, b), s| (o + s.owned, b + s.backed_up));
        if (all.iter().all(Option::is_some) && backed == owned * copies)
            || t0.elapsed() > Duration::from_secs(COPIES_LIMIT_SECS)
        {
            break (owned, backed, all);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (owned, backed, all) = counts;
    let want = owned * copies;
    let copies_settled = (backed == want).then(|| t0.elapsed());
    // A few copies above the count that stay are stray copies (an open limit, see
    // `STRAY_COPIES`): counted and shown, not failed on; fewer copies, or many more, fail.
    let stray = backed.saturating_sub(want);
    if backed < want || stray > stray_allowance(owned) {
        problems.push(format!(
            "{backed} copies of {owned} owned sessions, {copies} each expected, {COPIES_LIMIT_SECS} s after the reads: {all:?}"
        ));
    }
    let expected = r.fingerprint.clone().unwrap_or_default();
    for (i, s) in last.iter().zip(&all) {
        let fp = s.as_ref().map(|s| s.fingerprint.as_str());
        if fp != Some(expected.as_str()) {
            problems.push(format!("app{} runs {fp:?}, the last file is {expected}", i + 1));
        }
    }
    let checked = check_history(&name, &history.entries(), &mut problems);
    if stray > 0 {
        // Whether a stray copy is of a session nobody owns: the ones the history knows that no
        // node owns and that a read (not recorded) still finds.
        let known: BTreeSet<String> = history.entries().into_iter().map(|e| e.session).collect();
        let mut found = Vec::new();
        for id in known.iter().filter(|id| !owned_by.contains_key(*id)).take(500) {
            let (code, body) = r.ctl.call(&admin(last[0]), "GET", &format!("/sessions/{id}"), "");
            if code != 404 {
                let what = if rec.invalidated.contains(id) {
                    "invalidation acknowledged"
                } else if rec.unsure.contains(id) {
                    "invalidation not acknowledged"
                } else {
                    "not invalidated"
                };
                found.push(format!("{id} ({what}): {code} {body}"));
            }
        }
        eprintln!(
            "scenario {name}: {stray} stray cop(ies): {backed} copies of {owned} owned sessions, {copies} each \
             expected, {COPIES_LIMIT_SECS} s after the reads: {all:?}; sessions owned by no node that a read \
             through app{} finds: {found:?}",
            last[0] + 1
        );
    }
    if !problems.is_empty() {
        problems.extend(r.net.failure_report(&name));
    }
    Summary {
        name,
        acked: rec.acked_writes,
        unacked: rec.unacked,
        lost,
        resurrected,
        steps: std::mem::take(&mut r.steps),
        copies_settled,
        stray,
        checked,
        took: began.elapsed(),
        problems,
    }
}

/// How many copies above the replica count may stay after a change: a stray copy is a copy
/// a holder keeps although the owner's placement no longer names it; it is not data lost (the
/// owned sessions have their copies) but memory held until the orphan timeout, `max_inactive`
/// plus `orphan_grace`. Seen in about one run in fifteen, over TCP and QUIC: a lost `Drop` is
/// made good by the holder's re-acknowledgement only after twice the keep-alive interval,
/// later than this test waits (docs/reliability.md, "Stray copies").
fn stray_allowance(owned: u64) -> u64 {
    (owned / 50).max(2)
}

/// Scenarios that fail for a known reason (in some runs or all): their checker verdict, a
/// session owned twice and a copy count off are printed as known failures ([`tolerated`]);
/// any other problem (a lost write, no recovery) fails them. Take a scenario off once its
/// reason is fixed; the test says when a listed scenario passed.
const KNOWN_FAILURES: &[(&str, &str)] = &[];

/// The problems a known failure may show.
fn tolerated(problem: &str) -> bool {
    problem.contains("session histories not linearizable")
        || problem.contains("owned by two nodes")
        || problem.contains("session(s) have an owner")
        || problem.contains("each expected")
        || problem.starts_with("--- ")
        || problem.starts_with("node logs kept in")
}

fn selected() -> Option<Vec<(&'static str, Change)>> {
    let spec = std::env::var("M2M_NETNS_RECONFIG").ok()?;
    let all: Vec<(&str, Change)> =
        ["tcp", "quic"].into_iter().flat_map(|t| Change::ALL.map(|c| (t, c))).collect();
    matrix::select(&spec, all, vec![("tcp", Change::ScaleOut), ("tcp", Change::KillMid)], Change::name)
}

#[test]
fn netns_reconfig_scenarios() {
    if std::env::var_os(HELPER_ENV).is_some() {
        return;
    }
    let Some(scenarios) = selected() else {
        eprintln!(
            "netns_reconfig_scenarios: skipped (set M2M_NETNS_RECONFIG=short|all|tcp-scale-out,... to run; needs root)"
        );
        return;
    };
    if !matrix::can_run("netns_reconfig_scenarios") {
        return;
    }
    let mut failed = String::new();
    for (idx, (t, c)) in scenarios.into_iter().enumerate() {
        let s = run_scenario(idx, t, c);
        let k = &s.checked;
        let steps: Vec<String> = s
            .steps
            .iter()
            .map(|st| {
                format!(
                    "{}: {}",
                    st.what,
                    st.recovery.map_or("NONE".to_owned(), |d| format!("{} ms", d.as_millis()))
                )
            })
            .collect();
        eprintln!(
            "scenario {:<15} writes acknowledged {:>5}, not acknowledged {:>4}, lost {}, invalidated back {}, \
             recovery [{}], copies settled {}, {k}, {} s; history {}",
            s.name,
            s.acked,
            s.unacked,
            s.lost,
            s.resurrected,
            steps.join("; "),
            s.copies_settled
                .map_or_else(|| format!("NO ({} stray)", s.stray), |d| format!("in {} ms", d.as_millis())),
            s.took.as_secs(),
            k.file.display()
        );
        if s.acked == 0 {
            failed.push_str(&format!("{}: no write was acknowledged\n", s.name));
        }
        let known = KNOWN_FAILURES.iter().find(|(n, _)| *n == s.name).map(|(_, why)| *why);
        for p in matrix::failing(&s.name, &s.problems, known, tolerated) {
            failed.push_str(&format!("{}: {p}\n", s.name));
        }
    }
    assert!(failed.is_empty(), "{failed}");
}
