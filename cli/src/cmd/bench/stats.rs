//! Statistics of the benchmark: percentiles, medians, the figures of a run and the latency
//! curves of the plot.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use super::figure::{Figure, Figures, Pct};

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Lat {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
}

/// Nearest-rank percentile of sorted samples (`p` in 0..=1).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(samples: &[Duration]) -> Vec<f64> {
    let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    v.sort_by(f64::total_cmp);
    v
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
    let v = micros(samples);
    Lat { p50: percentile(&v, 0.50), p99: percentile(&v, 0.99), p999: percentile(&v, 0.999) }
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
    let v = micros(samples);
    CURVE_POINTS.iter().map(|p| percentile(&v, *p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::bench::figure::{Link, Rate};

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 0.999), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert!(percentile(&[], 0.5).is_nan());
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
        assert_eq!(l.p50, 20.0);
        assert_eq!(l.p999, 30.0);
    }
}
