//! Re-replication pacing: the token bucket that bounds the full copies maintenance sends, the
//! cursor of the general scan, and the replan pass that follows a view change.

use crate::api::Settings;
use std::time::{Duration, Instant};

/// A full copy costs this many tokens: the bucket counts thousandths of a session.
const PER_COPY: u64 = 1000;

/// Where the replan pass after a view change is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReplanPass {
    /// No pass under way.
    Idle,
    /// A pass under way: its next batch starts after this session (at the first without
    /// one).
    Running {
        /// The last session examined.
        after: Option<String>,
    },
}

/// The longest wait before an unfinished replan pass continues (see `Pacing::interval`).
const REPLAN_INTERVAL_MAX: Duration = Duration::from_millis(5);

/// The pacing of maintenance (see the module docs).
#[derive(Debug)]
pub(super) struct Pacing {
    /// Re-replication token bucket, in thousandths of a session.
    tokens: u64,
    last_refill: Instant,
    /// The general scan goes on after this session (from the first without one).
    pub(super) scan_cursor: Option<String>,
    replan: ReplanPass,
    /// When the replan pass last ran.
    last_replan: Instant,
    /// How soon an unfinished replan pass continues: a tenth of the maintenance tick, from
    /// 1 to [`REPLAN_INTERVAL_MAX`], so re-replication and failover of many sessions are paced
    /// by the token bucket and `scan_batch`, not by the tick (the default 200 ms heartbeat
    /// would otherwise cap a pass at `scan_batch` sessions per 20 ms).
    interval: Duration,
}

impl Pacing {
    /// A full bucket at `now`, for a node whose maintenance tick is `tick`.
    pub(super) fn new(settings: &Settings, tick: Duration, now: Instant) -> Self {
        Pacing {
            tokens: u64::from(settings.rereplication_burst).saturating_mul(PER_COPY),
            last_refill: now,
            scan_cursor: None,
            replan: ReplanPass::Idle,
            last_replan: now,
            interval: (tick / 10).clamp(Duration::from_millis(1), REPLAN_INTERVAL_MAX),
        }
    }

    /// Adds the tokens earned since the last refill at `rereplication_per_sec`, up to
    /// `rereplication_burst`.
    pub(super) fn refill(&mut self, now: Instant, settings: &Settings) {
        let elapsed = now.saturating_duration_since(self.last_refill);
        self.last_refill = now;
        let add = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(settings.rereplication_per_sec))
            / 1000;
        let cap = u64::from(settings.rereplication_burst.max(1)).saturating_mul(PER_COPY);
        self.tokens = self.tokens.saturating_add(add).min(cap);
    }

    /// Whether a full copy may go now.
    pub(super) fn has_token(&self) -> bool {
        self.tokens >= PER_COPY
    }

    /// `copies` full copies went.
    pub(super) fn spend(&mut self, copies: u64) {
        self.tokens = self.tokens.saturating_sub(copies * PER_COPY);
    }

    /// A new replan pass from the first session, even if one is under way (the view changed).
    pub(super) fn restart_replan(&mut self) {
        self.replan = ReplanPass::Running { after: None };
    }

    /// A new replan pass from the first session, unless one is under way.
    pub(super) fn start_replan(&mut self) {
        if self.replan == ReplanPass::Idle {
            self.restart_replan();
        }
    }

    /// A replan batch runs at `now`: where it starts, `None` when no pass is under way (the
    /// pass is idle until [`Pacing::continue_replan`]).
    pub(super) fn take_replan(&mut self, now: Instant) -> Option<Option<String>> {
        self.last_replan = now;
        match std::mem::replace(&mut self.replan, ReplanPass::Idle) {
            ReplanPass::Idle => None,
            ReplanPass::Running { after } => Some(after),
        }
    }

    /// The pass goes on after `after` at its next batch.
    pub(super) fn continue_replan(&mut self, after: Option<String>) {
        self.replan = ReplanPass::Running { after };
    }

    /// When the next replan batch (or resend step, while `flow_pending`) is due.
    pub(super) fn next_deadline(&self, flow_pending: bool) -> Option<Instant> {
        (self.replan != ReplanPass::Idle || flow_pending).then(|| self.last_replan + self.interval)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(per_sec: u32, burst: u32) -> Settings {
        Settings { rereplication_per_sec: per_sec, rereplication_burst: burst, ..Settings::default() }
    }

    #[test]
    fn the_bucket_refills_at_its_rate_up_to_its_burst() {
        let s = settings(100, 2);
        let t0 = Instant::now();
        let mut p = Pacing::new(&s, Duration::from_millis(100), t0);
        p.spend(2);
        assert!(!p.has_token());
        p.refill(t0 + Duration::from_millis(9), &s);
        assert!(!p.has_token(), "0.9 of a copy");
        p.refill(t0 + Duration::from_millis(10), &s);
        assert!(p.has_token(), "one copy after 10 ms at 100/s");
        p.refill(t0 + Duration::from_secs(60), &s);
        p.spend(2);
        assert!(!p.has_token(), "no more than the burst");
    }

    #[test]
    fn a_replan_pass_is_due_every_tenth_of_the_tick_while_it_runs() {
        let s = settings(100, 2);
        let t0 = Instant::now();
        let mut p = Pacing::new(&s, Duration::from_millis(40), t0);
        assert_eq!(p.next_deadline(false), None);
        assert_eq!(p.next_deadline(true), Some(t0 + Duration::from_millis(4)));
        p.start_replan();
        assert_eq!(p.take_replan(t0 + Duration::from_millis(5)), Some(None));
        assert_eq!(p.next_deadline(false), None, "idle until continued");
        p.continue_replan(Some("k".into()));
        p.start_replan();
        assert_eq!(p.replan, ReplanPass::Running { after: Some("k".into()) }, "not restarted");
        assert_eq!(p.next_deadline(false), Some(t0 + Duration::from_millis(9)));
        p.restart_replan();
        assert_eq!(p.take_replan(t0), Some(None));
    }

    #[test]
    fn a_long_tick_does_not_slow_a_replan_pass_below_its_bound() {
        // The default 200 ms heartbeat: a pass goes on every 5 ms, not every 20 ms.
        let t0 = Instant::now();
        let mut p = Pacing::new(&settings(100, 2), Duration::from_millis(200), t0);
        p.start_replan();
        assert_eq!(p.next_deadline(false), Some(t0 + REPLAN_INTERVAL_MAX));
        assert_eq!(REPLAN_INTERVAL_MAX, Duration::from_millis(5));
    }
}
