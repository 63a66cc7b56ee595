//! Instants of the engine's per-session state as 8-byte offsets from the node's base instant.
//!
//! An [`Instant`] takes 16 bytes (seconds and nanoseconds), and an `Option<Instant>` as many;
//! the engine keeps several per session (the record's, the owner state's, each backup's), a
//! million sessions or more per node. A [`Stamp`] is the nanoseconds since a [`StampBase`]
//! (the `now` the node was created with) in a `NonZeroU64` (plus one), so it and an
//! `Option<Stamp>` take 8 bytes.
//!
//! Exact to the nanosecond, like the [`Duration`]s the engine compares them with, for 584 years
//! after the base: no wrap-around for a long-running node. Out of range, it saturates: an
//! instant before the base is stored as the base (the engine is given a non-decreasing `now`
//! from [`Node::new`](crate::node::Node::new) on), one beyond the range as its end.

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// Largest offset a [`Stamp`] holds, in nanoseconds (the `+ 1` must fit).
const MAX_NANOS: u64 = u64::MAX - 1;

/// An instant as nanoseconds after its node's [`StampBase`] (stored plus one: the zero is the
/// niche of `Option<Stamp>`). Only meaningful with the base that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(NonZeroU64);

/// The base instant of a node's [`Stamp`]s, and the conversions both ways.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StampBase {
    base: Instant,
    /// The largest offset that `base` plus it is still an `Instant` (at most [`MAX_NANOS`]).
    range: Duration,
}

impl StampBase {
    /// Stamps relative to `base`.
    pub(crate) fn new(base: Instant) -> Self {
        let mut range = Duration::from_nanos(MAX_NANOS);
        while base.checked_add(range).is_none() {
            range /= 2;
        }
        StampBase { base, range }
    }

    /// The base instant (the node's start).
    pub(crate) fn base(&self) -> Instant {
        self.base
    }

    /// `t` as a stamp, saturating to the base and to the end of the range.
    pub(crate) fn stamp(&self, t: Instant) -> Stamp {
        let offset = t.saturating_duration_since(self.base).min(self.range);
        let nanos = u64::try_from(offset.as_nanos()).unwrap_or(MAX_NANOS).min(MAX_NANOS);
        Stamp(NonZeroU64::MIN.saturating_add(nanos))
    }

    /// The instant of `s`.
    pub(crate) fn instant(&self, s: Stamp) -> Instant {
        let offset = Duration::from_nanos(s.0.get() - 1).min(self.range);
        // Within `range`, so the addition does not overflow: the fallback is never taken.
        self.base.checked_add(offset).unwrap_or(self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_and_its_option_take_eight_bytes() {
        assert_eq!(std::mem::size_of::<Stamp>(), 8);
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
    }

    #[test]
    fn instants_round_trip_to_the_nanosecond_in_order() {
        let t0 = Instant::now();
        let b = StampBase::new(t0);
        let times = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(1),
            Duration::from_secs(49 * 86_400 + 1), // past a u32 of milliseconds
            Duration::from_secs(400 * 86_400 * 365),
        ];
        let mut last = None;
        for d in times {
            let t = t0 + d;
            let s = b.stamp(t);
            assert_eq!(b.instant(s), t, "{d:?}");
            assert!(last < Some(s), "{d:?}: stamps keep the order of instants");
            last = Some(s);
        }
    }

    #[test]
    fn out_of_range_saturates() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let b = StampBase::new(t0);
        let before = t0 - Duration::from_secs(5);
        assert_eq!(b.instant(b.stamp(before)), t0, "before the base: the base");
        assert_eq!(b.stamp(before), b.stamp(t0));
        if let Some(far) = t0.checked_add(Duration::from_secs(600 * 365 * 86_400)) {
            let end = b.instant(b.stamp(far));
            assert!(end < far && end > t0 + Duration::from_secs(580 * 365 * 86_400), "{:?}", end - t0);
            assert_eq!(b.stamp(far), b.stamp(end), "beyond the range: its end");
        }
    }
}
