//! The workload of the multi-host tests: client threads that create, update, read and
//! invalidate sessions through the admin APIs of a set of nodes, recording every operation as a
//! history; what they know was acknowledged; and the checks at the end of a scenario (every
//! acknowledged write read back, one owner per session, the history checked for
//! linearizability). Shared by `netns_faults.rs` and `netns_reconfig.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::common::history::{self, Entry, History, Op};
use super::hosts::{Client, admin, owned_ids, status};

/// Concurrent workload clients.
pub(crate) const WORKERS: u64 = 3;

/// Where the clients of a scenario run and which nodes they send to; the scenario changes the
/// nodes while the load runs (a node added to the domain, one removed).
#[derive(Clone, Debug)]
pub(crate) struct Targets {
    /// The host (namespace number) the clients run in.
    pub(crate) client_host: usize,
    nodes: Arc<Mutex<Vec<usize>>>,
}

impl Targets {
    /// The clients on host `client_host`, sending to `nodes`.
    pub(crate) fn new(client_host: usize, nodes: Vec<usize>) -> Targets {
        Targets { client_host, nodes: Arc::new(Mutex::new(nodes)) }
    }

    /// The nodes the workload sends to from now on.
    #[allow(dead_code, reason = "netns_reconfig.rs changes the targets; netns_faults.rs does not")]
    pub(crate) fn set(&self, nodes: Vec<usize>) {
        *self.nodes.lock().expect("targets") = nodes;
    }

    /// The node for the `k`-th request.
    fn pick(&self, k: usize) -> usize {
        let nodes = self.nodes.lock().expect("targets");
        nodes.get(k % nodes.len().max(1)).copied().unwrap_or(0)
    }
}

/// Most operations the workload sends to one session before it retires it (the final read
/// comes on top): the checker's search grows fast with the length of a session's history, so
/// the workload spreads its operations over many short-lived sessions.
const OPS_PER_SESSION: u32 = 20;
/// The client id of the final reads in the history (the workload's clients are 0..WORKERS).
pub(crate) const CHECKER_CLIENT: u64 = 100;

#[derive(Debug, Default)]
pub(crate) struct Record {
    /// session -> attribute -> value, for every acknowledged write.
    pub(crate) acked: BTreeMap<String, BTreeMap<String, String>>,
    pub(crate) invalidated: BTreeSet<String>,
    pub(crate) acked_writes: u64,
    pub(crate) unacked: u64,
    pub(crate) failed: u64,
    /// Creates whose answer never came: a session may exist that the test does not know.
    pub(crate) unknown_creates: u64,
    /// Sessions created (acknowledged or not), not invalidated and not retired.
    pub(crate) live: Vec<String>,
    /// Sessions that got their share of operations ([`OPS_PER_SESSION`]).
    pub(crate) retired: Vec<String>,
    /// Operations sent to each session.
    pub(crate) ops: BTreeMap<String, u32>,
    /// Sessions whose invalidation was not acknowledged.
    pub(crate) unsure: BTreeSet<String>,
    /// Refused invalidations: session -> answers.
    pub(crate) refused_deletes: BTreeMap<String, Vec<String>>,
    /// Invalidations answered 200: session -> (node, when).
    pub(crate) deleted_by: BTreeMap<String, (usize, Instant)>,
}

impl Record {
    /// Counts one more operation on `id`, retiring it at [`OPS_PER_SESSION`].
    fn count_op(&mut self, id: &str) {
        let n = self.ops.entry(id.to_owned()).or_default();
        *n += 1;
        if *n >= OPS_PER_SESSION && self.live.iter().any(|l| l == id) {
            self.live.retain(|l| l != id);
            self.retired.push(id.to_owned());
        }
    }
}

/// Sends `op` on `session` (none for a create) to node `node` and records it in `history` as
/// sent by client `who`; a create is recorded under the id it answered (a create without an
/// id names no session anyone can use again).
pub(crate) fn send(
    client: &mut Client,
    history: &History,
    who: u64,
    node: usize,
    session: Option<&str>,
    op: Op,
) -> (u16, Value) {
    let (method, target, body) = match (&op, session) {
        (Op::Create { attrs }, _) => ("POST", "/sessions".to_owned(), json!(attrs).to_string()),
        (Op::Set { key, value }, Some(id)) => {
            ("PATCH", format!("/sessions/{id}"), json!({ key.clone(): value.clone() }).to_string())
        }
        (Op::Get, Some(id)) => ("GET", format!("/sessions/{id}"), String::new()),
        (Op::Invalidate, Some(id)) => ("DELETE", format!("/sessions/{id}"), String::new()),
        (_, None) => return (0, Value::Null),
    };
    let invoked = Instant::now();
    let (code, answer) = client.call(&admin(node), method, &target, &body);
    let completed = Instant::now();
    let id = session.map(str::to_owned).or_else(|| answer["id"].as_str().map(str::to_owned));
    if let Some(session) = id {
        let (outcome, detail) = history::outcome(&op, code, &answer);
        history.push(Entry {
            session,
            client: who,
            node: format!("app{}", node + 1),
            op,
            invoke_us: history.micros(invoked),
            complete_us: history.micros(completed),
            outcome,
            status: code,
            detail,
        });
    }
    (code, answer)
}

/// One workload thread (several run at once, each with its own client, so a paused node
/// stalls only one of them); they share the record, the history and the list of live sessions.
fn workload(
    prefix: String,
    targets: Targets,
    t: u64,
    stop: Arc<AtomicBool>,
    rec: Arc<Mutex<Record>>,
    history: Arc<History>,
) {
    let mut client = Client::spawn(&prefix, targets.client_host);
    let mut seq: u64 = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        seq += 1;
        let node = targets.pick((seq + t) as usize);
        let live = rec.lock().expect("record").live.clone();
        if live.len() < 12 || seq % 10 == 0 {
            let attrs = BTreeMap::from([("c".to_owned(), format!("{t}.{seq}"))]);
            let (code, answer) = send(&mut client, &history, t, node, None, Op::Create { attrs });
            let id = answer["id"].as_str().map(str::to_owned);
            let mut r = rec.lock().expect("record");
            match (code, id) {
                (201, Some(id)) if answer["replication"] == "replicated" => {
                    r.acked.entry(id.clone()).or_default().insert("c".into(), format!("{t}.{seq}"));
                    r.acked_writes += 1;
                    r.live.push(id);
                }
                (_, Some(id)) => {
                    r.unacked += 1;
                    r.live.push(id);
                }
                (0, None) => r.unknown_creates += 1,
                _ => r.failed += 1,
            }
            continue;
        }
        let id = live[(seq as usize * 7 + t as usize) % live.len()].clone();
        rec.lock().expect("record").count_op(&id);
        if seq % 37 == 0 {
            let (code, answer) = send(&mut client, &history, t, node, Some(&id), Op::Invalidate);
            let mut r = rec.lock().expect("record");
            if code == 200 && answer["invalidated"] == true {
                r.live.retain(|l| *l != id);
                r.retired.retain(|l| *l != id);
                r.acked.remove(&id);
                r.deleted_by.insert(id.clone(), (node, Instant::now()));
                r.invalidated.insert(id);
            } else if code == 0 || code == 504 || code == 409 {
                // 504: not acknowledged in time, or fenced (another node took the session over
                // while the invalidation was in flight); 409 from older nodes meant fenced too.
                // May or may not be invalidated: stop tracking it either way.
                r.live.retain(|l| *l != id);
                r.retired.retain(|l| *l != id);
                r.acked.remove(&id);
                r.unsure.insert(id);
                r.unacked += 1;
            } else {
                r.failed += 1;
                r.refused_deletes.entry(id).or_default().push(format!("{code} {answer}"));
            }
            continue;
        }
        if seq % 3 == 0 {
            send(&mut client, &history, t, node, Some(&id), Op::Get);
            continue;
        }
        let key = format!("w{t}.{seq}");
        let value = format!("v{t}.{seq}");
        let op = Op::Set { key: key.clone(), value: value.clone() };
        let (code, answer) = send(&mut client, &history, t, node, Some(&id), op);
        let mut r = rec.lock().expect("record");
        match code {
            // A session another thread invalidated meanwhile is not tracked any more.
            200 if answer["replication"] == "replicated"
                && !r.invalidated.contains(&id)
                && !r.unsure.contains(&id) =>
            {
                r.acked.entry(id).or_default().insert(key, value);
                r.acked_writes += 1;
            }
            200 | 504 | 0 => r.unacked += 1,
            _ => r.failed += 1,
        }
    }
}

/// Reads live sessions through node `node` only, as client [`WORKERS`]: each read makes `node`
/// their owner, so that while `node` is cut off, the workload's writes through the others take
/// them over, and these reads show whether `node` still answers with what it had.
fn reader(
    prefix: String,
    targets: Targets,
    node: usize,
    stop: Arc<AtomicBool>,
    rec: Arc<Mutex<Record>>,
    history: Arc<History>,
) {
    let mut client = Client::spawn(&prefix, targets.client_host);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seq = 0_usize;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        seq += 1;
        let id = {
            let mut r = rec.lock().expect("record");
            let id = (!r.live.is_empty()).then(|| r.live[seq % r.live.len()].clone());
            if let Some(id) = &id {
                r.count_op(id);
            }
            id
        };
        match id {
            Some(id) => {
                // A node that is down refuses at once: do not spin on it.
                if send(&mut client, &history, WORKERS, node, Some(&id), Op::Get).0 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Stops the workload when dropped (also when a scenario panics).
pub(crate) struct StopOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Where the histories go: `M2M_NETNS_HISTORY_DIR`, else `netns-histories` in the test's
/// target temp dir.
pub(crate) fn history_dir() -> PathBuf {
    let dir = std::env::var_os("M2M_NETNS_HISTORY_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("netns-histories"), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("history dir");
    dir
}

/// The linearizability check of one scenario's history.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    pub(crate) ops: usize,
    pub(crate) sessions: usize,
    pub(crate) longest: usize,
    pub(crate) violations: usize,
    pub(crate) file: PathBuf,
    pub(crate) took: Duration,
}

/// The check as both matrices print it: "N ops on S sessions (at most L), linearizable: yes
/// (checked in T ms)".
impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.violations == 0 {
            "yes".to_owned()
        } else {
            format!("NO ({} sessions)", self.violations)
        };
        write!(
            f,
            "{} ops on {} sessions (at most {}), linearizable: {verdict} (checked in {} ms)",
            self.ops,
            self.sessions,
            self.longest,
            self.took.as_millis()
        )
    }
}

/// Writes the scenario's history (JSON lines) and checks it; a violation is a problem.
pub(crate) fn check_history(name: &str, entries: &[Entry], problems: &mut Vec<String>) -> Checked {
    let dir = history_dir();
    let file = dir.join(format!("{name}.jsonl"));
    let report_file = dir.join(format!("{name}.violations.txt"));
    let _ = std::fs::remove_file(&report_file);
    if let Err(e) = history::write_jsonl(&file, entries) {
        problems.push(format!("could not write the history {}: {e}", file.display()));
    }
    let t0 = Instant::now();
    let verdict = history::check(entries);
    let took = t0.elapsed();
    if !verdict.violations.is_empty() {
        let _ = std::fs::write(&report_file, history::violations_report(&verdict));
        let what = format!(
            "{} of {} session histories not linearizable (stateright LinearizabilityTester): shortest \
             failing sub-history and timeline in {}",
            verdict.violations.len(),
            verdict.sessions,
            report_file.display()
        );
        eprintln!("scenario {name}: {what}");
        problems.push(what);
    }
    Checked {
        ops: verdict.ops,
        sessions: verdict.sessions,
        longest: verdict.longest,
        violations: verdict.violations.len(),
        file,
        took,
    }
}

/// The running load: the workload threads and one reader.
pub(crate) struct Load {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) record: Arc<Mutex<Record>>,
    pub(crate) history: Arc<History>,
    threads: Vec<JoinHandle<()>>,
    _guard: StopOnDrop,
}

impl Load {
    /// Starts [`WORKERS`] workload threads sending to `targets` and a [`reader`] through
    /// node `read_through`.
    pub(crate) fn start(prefix: &str, targets: &Targets, read_through: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let history = Arc::new(History::default());
        // Clients 0..WORKERS write; client WORKERS reads through `read_through`.
        let threads = (0..=WORKERS)
            .map(|t| {
                let (prefix, targets, stop, record, history) =
                    (prefix.to_owned(), targets.clone(), stop.clone(), record.clone(), history.clone());
                std::thread::spawn(move || match t {
                    WORKERS => reader(prefix, targets, read_through, stop, record, history),
                    t => workload(prefix, targets, t, stop, record, history),
                })
            })
            .collect();
        Load { _guard: StopOnDrop(stop.clone()), stop, record, history, threads }
    }

    /// Stops the load, waits for its threads and returns what it recorded.
    pub(crate) fn finish(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a workload thread");
        }
        std::mem::take(&mut *self.record.lock().expect("record"))
    }
}

/// Reads every acknowledged write back through node `through` (each read makes it the
/// session's owner), recording the reads as client [`CHECKER_CLIENT`]; returns how many
/// acknowledged writes are lost, with a problem for each.
pub(crate) fn read_back(
    ctl: &mut Client,
    history: &History,
    rec: &Record,
    through: usize,
    problems: &mut Vec<String>,
) -> usize {
    let mut lost = 0;
    for (id, attrs) in &rec.acked {
        let mut got = None;
        for _ in 0..30 {
            let (code, body) = send(ctl, history, CHECKER_CLIENT, through, Some(id), Op::Get);
            if code == 200 || code == 404 {
                got = Some((code, body));
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        match got {
            Some((200, body)) => {
                for (k, v) in attrs {
                    if body["attributes"][k].as_str() != Some(v.as_str()) {
                        lost += 1;
                        problems.push(format!("{id}: acknowledged {k}={v}, read {}", body["attributes"][k]));
                    }
                }
            }
            other => {
                lost += attrs.len();
                problems.push(format!(
                    "{id}: {} acknowledged write(s), read {other:?}; refused invalidations: {:?}",
                    attrs.len(),
                    rec.refused_deletes.get(id)
                ));
            }
        }
    }
    lost
}

/// The owners of every session `nodes` own (`GET /sessions`, every page): a problem for a node
/// that does not list them, whose list disagrees with the `owned` count of its `/status`, for
/// a session owned by two nodes and for a session with acknowledged writes and no owner.
pub(crate) fn owners(
    ctl: &mut Client,
    nodes: &[usize],
    rec: &Record,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Vec<usize>> {
    let mut owners: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in nodes {
        match owned_ids(ctl, i) {
            Some(ids) => {
                // The count in /status and the list agree.
                let counted = status(ctl, i).map(|s| s.owned);
                if counted != Some(ids.len() as u64) {
                    problems.push(format!(
                        "app{} lists {} owned ids, its status says {counted:?}",
                        i + 1,
                        ids.len()
                    ));
                }
                for id in ids {
                    owners.entry(id).or_default().push(i);
                }
            }
            None => problems.push(format!("app{} does not list its sessions", i + 1)),
        }
    }
    let twice: Vec<_> = owners.iter().filter(|(_, by)| by.len() > 1).collect();
    if !twice.is_empty() {
        problems.push(format!("{} session(s) owned by two nodes: {twice:?}", twice.len()));
    }
    for id in rec.acked.keys() {
        if !owners.contains_key(id) {
            problems.push(format!("{id} has acknowledged writes and no owner"));
        }
    }
    owners
}
