//! Histories of client operations on sessions through the admin API, and their linearizability
//! check by a checker not written here: `stateright`'s `LinearizabilityTester`.
//!
//! Every operation a test client sends is recorded as an [`Entry`]: its session, the client
//! that sent it, the node it went to, the operation and its arguments, when it was invoked and
//! when it completed, and its [`Outcome`]. An operation the client got no answer to, or that was
//! answered 504 or applied without a live backup (`unreplicated`), may or may not have taken
//! effect: it is [`Outcome::Unknown`], given to the tester as invoked and never returning (on a
//! thread of its own, as Knossos gives a crashed process a new id). A refused operation
//! (connection refused, 503, 409) took no effect and is left out.
//!
//! Linearizability is compositional, so each session's history is checked on its own against
//! [`SessionSpec`]: a register of the session's attribute map with create, set, get and
//! invalidate. The tester's search is a depth-first search over interleavings, exponential in
//! the worst case: the fault harness keeps each session's history short (at most a few dozen
//! operations) and uses many sessions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stateright::semantics::{ConsistencyTester as _, LinearizabilityTester, SequentialSpec};

/// A session's attributes.
pub type Attrs = BTreeMap<String, String>;

/// An operation on one session.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum Op {
    /// `POST /sessions` with these attributes (the node picks the id).
    Create { attrs: Attrs },
    /// `PATCH /sessions/{id}` setting one attribute.
    Set { key: String, value: String },
    /// `GET /sessions/{id}`.
    Get,
    /// `DELETE /sessions/{id}`.
    Invalidate,
}

/// What an operation answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ret {
    /// A create, set or invalidate took effect.
    Ok,
    /// No such session (404).
    NotFound,
    /// A read: the session's attributes.
    Value(Attrs),
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Answered: it took effect between invocation and completion with this result.
    Done(Ret),
    /// Refused: it took no effect (left out of the check).
    Failed,
    /// No definite answer: it may or may not have taken effect, at any time after invocation.
    Unknown,
}

/// One recorded client operation (one JSON line of a history file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The session id.
    pub session: String,
    /// The client that sent it; one client sends one operation at a time.
    pub client: u64,
    /// The node it was sent to (`app1`, ...).
    pub node: String,
    /// The operation and its arguments.
    #[serde(flatten)]
    pub op: Op,
    /// Microseconds from the start of the history to the invocation.
    pub invoke_us: u64,
    /// Microseconds from the start of the history to the answer (or to giving up).
    pub complete_us: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The HTTP status (0: no answer).
    pub status: u16,
    /// Why an operation is unknown or failed, or the replication it was answered with.
    pub detail: String,
}

/// The outcome of an admin API answer to `op`: `status` 0 with `body` `"connect failed"` never
/// reached the node.
pub fn outcome(op: &Op, status: u16, body: &Value) -> (Outcome, String) {
    let replication = body["replication"].as_str().unwrap_or_default().to_owned();
    let kind = body["kind"].as_str().or_else(|| body["error"].as_str()).unwrap_or_default();
    match (status, op) {
        (0, _) if body.as_str() == Some("connect failed") => (Outcome::Failed, "connect failed".into()),
        (0, _) => (Outcome::Unknown, format!("no answer: {}", body.as_str().unwrap_or_default())),
        (200, Op::Get) => {
            let attrs = body["attributes"].as_object().map(|m| {
                m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect()
            });
            match attrs {
                Some(a) => (Outcome::Done(Ret::Value(a)), String::new()),
                None => (Outcome::Unknown, format!("unreadable answer {body}")),
            }
        }
        (200 | 201, _) if replication == "replicated" => (Outcome::Done(Ret::Ok), replication),
        // Applied on the node alone (no live backup): may be undone when it fails.
        (200 | 201, _) => (Outcome::Unknown, replication),
        (404, _) => (Outcome::Done(Ret::NotFound), String::new()),
        (504, _) => (Outcome::Unknown, format!("504 {kind}")),
        (s, _) => (Outcome::Failed, format!("{s} {kind}")),
    }
}

/// The sequential specification of one session: absent, or present with its attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionSpec(Option<Attrs>);

impl SequentialSpec for SessionSpec {
    type Op = Op;
    type Ret = Ret;

    fn invoke(&mut self, op: &Op) -> Ret {
        match (op, &mut self.0) {
            (Op::Create { attrs }, s) => {
                *s = Some(attrs.clone());
                Ret::Ok
            }
            (Op::Set { key, value }, Some(m)) => {
                m.insert(key.clone(), value.clone());
                Ret::Ok
            }
            (Op::Get, Some(m)) => Ret::Value(m.clone()),
            (Op::Invalidate, s @ Some(_)) => {
                *s = None;
                Ret::Ok
            }
            (Op::Set { .. } | Op::Get | Op::Invalidate, None) => Ret::NotFound,
        }
    }

    fn is_valid_step(&mut self, op: &Op, ret: &Ret) -> bool {
        match (op, &self.0, ret) {
            (Op::Get, Some(m), Ret::Value(v)) => m == v,
            _ => &self.invoke(op) == ret,
        }
    }
}

/// The recorder the clients of one scenario share.
pub struct History {
    start: Instant,
    entries: Mutex<Vec<Entry>>,
}

impl Default for History {
    fn default() -> Self {
        History { start: Instant::now(), entries: Mutex::new(Vec::new()) }
    }
}

impl History {
    /// Microseconds from the start of this history to `t`.
    pub fn micros(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }

    /// Records one operation.
    pub fn push(&self, entry: Entry) {
        self.entries.lock().expect("history").push(entry);
    }

    /// Every operation recorded so far, in the order they completed.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().expect("history").clone()
    }
}

/// Whether one session's history is linearizable (`entries` all of one session).
pub fn linearizable(entries: &[Entry]) -> bool {
    // Invocations and answers in time order; at the same microsecond an answer comes first (a
    // client's next operation starts no earlier than its last one ended).
    let mut points: Vec<(u64, u8, usize)> = Vec::new();
    let mut thread = vec![0_u64; entries.len()];
    let mut ghost = 1_u64 << 40;
    for (i, e) in entries.iter().enumerate() {
        match e.outcome {
            Outcome::Failed => continue,
            Outcome::Done(_) => {
                thread[i] = e.client;
                points.push((e.invoke_us, 1, i));
                points.push((e.complete_us.max(e.invoke_us), 0, i));
            }
            Outcome::Unknown => {
                thread[i] = ghost;
                ghost += 1;
                points.push((e.invoke_us, 1, i));
            }
        }
    }
    points.sort_unstable();
    let mut tester = LinearizabilityTester::new(SessionSpec::default());
    for (_, kind, i) in points {
        let step = if kind == 1 {
            tester.on_invoke(thread[i], entries[i].op.clone()).map(|_| ())
        } else {
            let Outcome::Done(ret) = &entries[i].outcome else { continue };
            tester.on_return(thread[i], ret.clone()).map(|_| ())
        };
        if step.is_err() {
            return false;
        }
    }
    tester.serialized_history().is_some()
}

/// A session whose history is not linearizable.
#[derive(Debug)]
pub struct Violation {
    /// The session id.
    pub session: String,
    /// Its whole history.
    pub history: Vec<Entry>,
    /// A shortest failing sub-history found by deletion (see [`shrink`]).
    pub shrunk: Vec<Entry>,
}

/// The check of a whole history.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Sessions checked.
    pub sessions: usize,
    /// Operations recorded (failed ones included).
    pub ops: usize,
    /// The most operations of one session.
    pub longest: usize,
    /// The sessions whose history is not linearizable.
    pub violations: Vec<Violation>,
}

/// Checks every session's history on its own.
pub fn check(entries: &[Entry]) -> Verdict {
    let mut by_session: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
    for e in entries {
        by_session.entry(e.session.as_str()).or_default().push(e.clone());
    }
    let mut verdict = Verdict { sessions: by_session.len(), ops: entries.len(), ..Verdict::default() };
    for (session, history) in by_session {
        verdict.longest = verdict.longest.max(history.len());
        if !linearizable(&history) {
            let shrunk = shrink(&history);
            verdict.violations.push(Violation { session: session.to_owned(), history, shrunk });
        }
    }
    verdict
}

/// Whether deleting `h[i]` keeps the history meaningful: every value a remaining read returns
/// was still written by a remaining operation (reads may always go; a create never does).
fn removable(h: &[Entry], i: usize) -> bool {
    let observed = |pred: &dyn Fn(&Ret) -> bool| {
        h.iter().enumerate().any(|(j, e)| j != i && matches!(&e.outcome, Outcome::Done(r) if pred(r)))
    };
    match &h[i].op {
        Op::Get => true,
        Op::Create { .. } => false,
        Op::Set { key, value } => !observed(&|r| matches!(r, Ret::Value(m) if m.get(key) == Some(value))),
        Op::Invalidate => !observed(&|r| *r == Ret::NotFound),
    }
}

/// A short failing sub-history of a failing `history`: operations deleted one at a time, from
/// the last, while the rest still fails, until no deletion keeps it failing.
pub fn shrink(history: &[Entry]) -> Vec<Entry> {
    let mut cur: Vec<Entry> = history.iter().filter(|e| e.outcome != Outcome::Failed).cloned().collect();
    loop {
        let mut changed = false;
        for i in (0..cur.len()).rev() {
            if i >= cur.len() || !removable(&cur, i) {
                continue;
            }
            let mut trial = cur.clone();
            trial.remove(i);
            if !linearizable(&trial) {
                cur = trial;
                changed = true;
            }
        }
        if !changed {
            return cur;
        }
    }
}

fn show_op(op: &Op) -> String {
    match op {
        Op::Create { attrs } => format!("create {}", show_attrs(attrs)),
        Op::Set { key, value } => format!("set {key}={value}"),
        Op::Get => "get".into(),
        Op::Invalidate => "invalidate".into(),
    }
}

fn show_attrs(a: &Attrs) -> String {
    let parts: Vec<String> = a.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// One line per operation, in invocation order, times in ms from the start of the history.
pub fn timeline(entries: &[Entry]) -> String {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| (e.invoke_us, e.complete_us));
    let ms = |us: u64| format!("{:>10.3}", us as f64 / 1000.0);
    let mut out = format!(
        "{:>10} {:>10}  {:<8} {:<5} {:<28} result\n",
        "invoked", "answered", "client", "node", "operation"
    );
    for e in sorted {
        let result = match &e.outcome {
            Outcome::Done(Ret::Ok) => "ok".to_owned(),
            Outcome::Done(Ret::NotFound) => "not found".to_owned(),
            Outcome::Done(Ret::Value(a)) => show_attrs(a),
            Outcome::Unknown => format!("UNKNOWN ({})", e.detail),
            Outcome::Failed => format!("failed ({})", e.detail),
        };
        let _ = writeln!(
            out,
            "{} {}  c{:<7} {:<5} {:<28} {result}",
            ms(e.invoke_us),
            ms(e.complete_us),
            e.client,
            e.node,
            show_op(&e.op)
        );
    }
    out
}

/// Writes `entries` as JSON lines.
pub fn write_jsonl(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    let mut text = String::new();
    for e in entries {
        text.push_str(&serde_json::to_string(e).map_err(std::io::Error::other)?);
        text.push('\n');
    }
    std::fs::write(path, text)
}

/// Reads a history written by [`write_jsonl`].
pub fn read_jsonl(path: &Path) -> std::io::Result<Vec<Entry>> {
    std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}

/// The report of a failed check: for each violating session, its shortest failing sub-history
/// and then its whole history, as timelines.
pub fn violations_report(verdict: &Verdict) -> String {
    let mut out = String::new();
    for v in &verdict.violations {
        let _ = writeln!(
            out,
            "session {}: not linearizable\n\nshortest failing sub-history ({} of {} operations):\n{}\nwhole history:\n{}",
            v.session,
            v.shrunk.len(),
            v.history.len(),
            timeline(&v.shrunk),
            timeline(&v.history)
        );
    }
    out
}
