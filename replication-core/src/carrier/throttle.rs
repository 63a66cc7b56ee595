//! Rate-limited warnings for what a stranger can cause at will (refused connections, a peer
//! that cannot be dialed): the first occurrence of each rule in an interval is logged at
//! once, in full; further ones are only counted, and once the interval is over one summary
//! line gives their counts per rule and per source. A flood of refused connections thus
//! writes at most one line per rule and one summary per interval.
//!
//! The clock is the caller's (every method takes `now`), so the behaviour is tested without
//! waiting. The counters are bounded: at most [`MAX_KEYS`] rules and [`MAX_KEYS`] sources are
//! told apart in a summary, the rest are counted together as "others" (a rule is read from
//! the reason's `[rule]` tag, which a peer's Refuse frame can choose, so it is not trusted to
//! come from a small set).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rules and sources told apart in one summary; beyond them, "others".
pub const MAX_KEYS: usize = 16;

/// How often a summary may be written (and the window within which a rule is logged once).
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// What to write for one occurrence.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The first of its rule in this interval: log it in full.
    Log,
    /// Counted for the summary.
    Quiet,
}

/// The counts of one interval.
#[derive(Debug, Default)]
struct Window {
    start: Option<Instant>,
    /// Rules logged in full during this window.
    logged: Vec<String>,
    /// Occurrences counted but not logged, per rule and per source.
    rules: BTreeMap<String, u64>,
    sources: BTreeMap<String, u64>,
    other_rules: u64,
    other_sources: u64,
    quiet: u64,
}

impl Window {
    fn count(map: &mut BTreeMap<String, u64>, others: &mut u64, key: &str) {
        if let Some(n) = map.get_mut(key) {
            *n += 1;
        } else if map.len() < MAX_KEYS {
            map.insert(key.to_owned(), 1);
        } else {
            *others += 1;
        }
    }

    /// The summary of the counted occurrences, if any.
    fn summary(&self, interval: Duration) -> Option<String> {
        if self.quiet == 0 {
            return None;
        }
        let list = |map: &BTreeMap<String, u64>, others: u64| {
            let mut parts: Vec<String> = map.iter().map(|(k, n)| format!("{k} × {n}")).collect();
            if others > 0 {
                parts.push(format!("others × {others}"));
            }
            parts.join(", ")
        };
        Some(format!(
            "{} more within {:?}; by rule: {}; by source: {}",
            self.quiet,
            interval,
            list(&self.rules, self.other_rules),
            list(&self.sources, self.other_sources)
        ))
    }
}

/// Decides which occurrences of a repeated warning are written (see the module docs).
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    window: Mutex<Window>,
}

impl Throttle {
    /// A summary at most every `interval`.
    pub fn new(interval: Duration) -> Self {
        Throttle { interval, window: Mutex::new(Window::default()) }
    }

    /// Counts one occurrence of `rule` from `source` at `now`: whether to log it in full,
    /// and the summary of the interval that `now` ended, if it counted anything.
    pub fn note(&self, now: Instant, rule: &str, source: &str) -> (Verdict, Option<String>) {
        let Ok(mut w) = self.window.lock() else { return (Verdict::Log, None) };
        let summary = self.roll(&mut w, now);
        if w.logged.len() >= MAX_KEYS || w.logged.iter().any(|r| r == rule) {
            w.quiet += 1;
            let Window { rules, other_rules, .. } = &mut *w;
            Window::count(rules, other_rules, rule);
            let Window { sources, other_sources, .. } = &mut *w;
            Window::count(sources, other_sources, source);
            (Verdict::Quiet, summary)
        } else {
            w.logged.push(rule.to_owned());
            (Verdict::Log, summary)
        }
    }

    /// The summary of the interval, once `now` is past it (for a periodic check, so the last
    /// counts of a flood that stopped are written too).
    pub fn flush(&self, now: Instant) -> Option<String> {
        let mut w = self.window.lock().ok()?;
        self.roll(&mut w, now)
    }

    /// Starts a new window when `now` is past the current one; its summary, if any.
    fn roll(&self, w: &mut Window, now: Instant) -> Option<String> {
        match w.start {
            Some(start) if now.saturating_duration_since(start) < self.interval => None,
            Some(_) => {
                let summary = w.summary(self.interval);
                *w = Window { start: Some(now), ..Window::default() };
                summary
            }
            None => {
                w.start = Some(now);
                None
            }
        }
    }
}

/// The rule a refusal's reason names (`[rule]`, the first such tag), else `other`.
pub fn rule_of(reason: &str) -> &str {
    reason
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(rule, _)| rule)
        .filter(|r| !r.is_empty() && r.len() <= 40)
        .unwrap_or("other")
}

/// The source to count a refusal under: the IP of an address (ports change with every
/// connection), else the name as given (a node).
pub fn source_of(peer: &str) -> String {
    peer.parse::<SocketAddr>().map_or_else(|_| peer.to_owned(), |a| a.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_each_rule_is_logged_then_one_summary_per_interval() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(t.note(at(0), "a", "1.1.1.1"), (Verdict::Log, None));
        assert_eq!(t.note(at(1), "b", "1.1.1.1"), (Verdict::Log, None));
        for i in 0..1000 {
            assert_eq!(t.note(at(2 + i), "a", "2.2.2.2"), (Verdict::Quiet, None));
        }
        assert_eq!(t.note(at(5000), "b", "3.3.3.3"), (Verdict::Quiet, None));
        assert_eq!(t.flush(at(9999)), None, "the interval is not over");
        let summary = t.flush(at(10_000)).expect("a summary once the interval is over");
        assert_eq!(
            summary,
            "1001 more within 10s; by rule: a × 1000, b × 1; by source: 2.2.2.2 × 1000, 3.3.3.3 × 1"
        );
        // A new interval: the first of each rule is logged again; nothing to summarise yet.
        assert_eq!(t.flush(at(20_001)), None);
        assert_eq!(t.note(at(20_002), "a", "1.1.1.1"), (Verdict::Log, None));
        assert_eq!(t.note(at(20_003), "a", "1.1.1.1"), (Verdict::Quiet, None));
        // The note that ends an interval carries its summary.
        let (verdict, summary) = t.note(at(40_000), "a", "1.1.1.1");
        assert_eq!(verdict, Verdict::Log);
        assert_eq!(summary.as_deref(), Some("1 more within 10s; by rule: a × 1; by source: 1.1.1.1 × 1"));
    }

    #[test]
    fn rules_and_sources_beyond_the_bound_are_counted_as_others() {
        let t = Throttle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let mut logged = 0;
        for i in 0..10_000 {
            let (v, _) = t.note(t0, &format!("rule{}", i % 100), &format!("10.0.{}.{}", i / 256, i % 256));
            logged += usize::from(v == Verdict::Log);
        }
        assert_eq!(logged, MAX_KEYS, "at most MAX_KEYS rules are logged in full per interval");
        let w = t.window.lock().expect("lock");
        assert!(w.rules.len() <= MAX_KEYS && w.sources.len() <= MAX_KEYS && w.logged.len() <= MAX_KEYS);
        assert_eq!(w.rules.values().sum::<u64>() + w.other_rules, w.quiet);
        assert_eq!(w.sources.values().sum::<u64>() + w.other_sources, w.quiet);
        drop(w);
        let s = t.flush(t0 + Duration::from_secs(1)).expect("summary");
        assert!(s.contains("others ×"), "{s}");
    }

    #[test]
    fn the_rule_and_source_of_a_refusal() {
        assert_eq!(rule_of("[handshake-timeout] no handshake within 5s"), "handshake-timeout");
        assert_eq!(rule_of("refused by the peer: [other-domain] shop"), "other-domain");
        assert_eq!(rule_of("closed before its hello"), "other");
        assert_eq!(rule_of("[] x"), "other");
        assert_eq!(source_of("127.0.0.9:4242"), "127.0.0.9");
        assert_eq!(source_of("[::1]:4242"), "::1");
        assert_eq!(source_of("app2"), "app2");
    }
}
