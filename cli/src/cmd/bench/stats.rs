//! Statistics of the benchmark: latency percentiles (an HDR histogram), medians, the figures
//! of a run and the latency curves of the plot.

use std::collections::BTreeSet;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::figure::{Figure, Figures, Pct};

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Lat {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
}

/// Significant decimal digits the histogram keeps: a percentile is within 0.1% of the sample.
const SIGNIFICANT_DIGITS: u8 = 3;

/// The samples in nanoseconds (`None` when there are none).
fn histogram(samples: &[Duration]) -> Option<Histogram<u64>> {
    if samples.is_empty() {
        return None;
    }
    // 1 ns to an hour; a longer sample counts as an hour.
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600 * 1_000_000_000, SIGNIFICANT_DIGITS).ok()?;
    for d in samples {
        h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
    }
    Some(h)
}

/// The percentile `p` (0..=1) of `h` in microseconds (NaN without samples).
fn percentile(h: Option<&Histogram<u64>>, p: f64) -> f64 {
    h.map_or(f64::NAN, |h| h.median_equivalent(h.value_at_quantile(p)) as f64 / 1e3)
}

impl Lat {
    /// The percentile `p`.
    pub(crate) fn at(&self, p: Pct) -> f64 {
        match p {
            Pct::P50 => self.p50,
            Pct::P99 => self.p99,
            Pct::P999 => self.p999,
        }
    }
}

pub(crate) fn lat(samples: &[Duration]) -> Lat {
    let h = histogram(samples);
    let at = |p| percentile(h.as_ref(), p);
    Lat { p50: at(0.50), p99: at(0.99), p999: at(0.999) }
}

/// Median of the finite values (NaN when none).
fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// The median of each figure over `runs` (of the runs that measured it).
pub(crate) fn median_figures(runs: &[Figures]) -> Figures {
    let keys: BTreeSet<Figure> = runs.iter().flat_map(Figures::keys).collect();
    keys.into_iter()
        .map(|k| {
            let v: Vec<f64> = runs.iter().filter_map(|r| r.measured(k)).collect();
            (k, median(&v))
        })
        .collect()
}

/// Latency distributions (of the last run) for the plot: microseconds at the percentiles of
/// [`CURVE_POINTS`].
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Curves {
    pub(crate) raw_tcp: Vec<f64>,
    pub(crate) tcp: Vec<f64>,
    pub(crate) quic: Vec<f64>,
    pub(crate) redis: Vec<f64>,
}

pub(crate) const CURVE_POINTS: [f64; 14] =
    [0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999];

pub(crate) fn curve(samples: &[Duration]) -> Vec<f64> {
    let h = histogram(samples);
    CURVE_POINTS.iter().map(|p| percentile(h.as_ref(), *p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::bench::figure::{Link, Rate};

    #[test]
    fn percentiles_and_medians() {
        // Nearest rank, within the histogram's 0.1%.
        let near = |got: f64, want: f64| assert!((got / want - 1.0).abs() < 1e-3, "{got} for {want}");
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let h = histogram(&v);
        near(percentile(h.as_ref(), 0.5), 50.0);
        near(percentile(h.as_ref(), 0.99), 99.0);
        near(percentile(h.as_ref(), 0.999), 100.0);
        near(percentile(h.as_ref(), 0.0), 1.0);
        assert!(percentile(histogram(&[]).as_ref(), 0.5).is_nan());
        near(lat(&[Duration::from_nanos(123_456_789)]).p50, 123_456.789);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        let (a, b) = (Figure::FailoverSessions, Figure::Rate(Rate::Raw(Link::Tcp)));
        let runs = vec![
            Figures::from_iter([(a, 1.0), (b, 10.0)]),
            Figures::from_iter([(a, 3.0)]),
            Figures::from_iter([(a, 2.0), (b, 20.0)]),
        ];
        let m = median_figures(&runs);
        assert_eq!(m.get(a), 2.0);
        assert_eq!(m.get(b), 15.0);
        assert!(m.get(Figure::Rate(Rate::Raw(Link::Tls))).is_nan());
        let l = lat(&[Duration::from_micros(10), Duration::from_micros(30), Duration::from_micros(20)]);
        near(l.p50, 20.0);
        near(l.p999, 30.0);
    }
}
