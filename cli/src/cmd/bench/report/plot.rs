//! The report as a plot with `plotters`: SVG, and PNG rendered from the same SVG by `resvg`
//! (plotters' own bitmap text needs a font compiled in or registered by path; `resvg` finds
//! the system's fonts, and draws the shapes without text when there is none).

use std::path::Path;

use anyhow::Context as _;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

use super::Report;
use crate::cmd::bench::figure::{Carrier, Conc, Link, Rate};
use crate::cmd::bench::stats::CURVE_POINTS;

/// The plot's size in pixels.
const WIDTH: u32 = 960;
const HEIGHT: u32 = 400;

/// A drawing error as text (plotters' errors are generic over the backend).
fn failed(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e}")
}

/// The legend of `chart`'s series, at `at`.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    at: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(failed)
}

/// The "nines" scale of the latency panel: p50, p90, p99 and p99.9 equally spaced.
fn nines(p: f64) -> f64 {
    -(1.0 - p.min(0.999)).log10()
}

impl Report {
    /// Two panels: latency distribution at concurrency 1 (log x), throughput by concurrency.
    pub(crate) fn svg(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(failed)?;
        }
        Ok(out)
    }

    /// The plot of [`Report::svg`] as PNG, written to `path`.
    pub(crate) fn png(&self, path: &Path) -> anyhow::Result<()> {
        let svg = self.svg()?;
        let mut options = resvg::usvg::Options::default();
        let fonts = options.fontdb_mut();
        fonts.load_system_fonts();
        // The SVG asks for `sans-serif`, which fontdb takes to be Arial: the first of these
        // the system has (else any font it has) instead.
        let families: Vec<String> =
            fonts.faces().flat_map(|f| f.families.iter().map(|(name, _)| name.clone())).collect();
        let sans = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial", "Helvetica"]
            .into_iter()
            .find(|want| families.iter().any(|f| f == want))
            .map(str::to_owned)
            .or_else(|| families.first().cloned());
        if let Some(sans) = sans {
            fonts.set_sans_serif_family(sans);
        }
        let tree = resvg::usvg::Tree::from_str(&svg, &options).context("reading the plot back")?;
        let mut pixmap = resvg::tiny_skia::Pixmap::new(WIDTH, HEIGHT).context("a pixmap for the plot")?;
        resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
        pixmap.save_png(path).map_err(|e| anyhow::anyhow!("{e}"))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        root.fill(&WHITE).map_err(failed)?;
        let (left, right) = root.split_horizontally(WIDTH / 2);
        self.latency_panel(&left)?;
        self.throughput_panel(&right)
    }

    /// Percentile (y, nines scale) against latency (x, log µs) for each measured curve.
    fn latency_panel<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        let series = [
            ("raw TCP round trip", &self.latency_curves_us.raw_tcp, RGBColor(0x88, 0x88, 0x88)),
            ("m2m TCP sync update", &self.latency_curves_us.tcp, RGBColor(0x1f, 0x77, 0xb4)),
            ("m2m QUIC sync update", &self.latency_curves_us.quic, RGBColor(0xff, 0x7f, 0x0e)),
            ("Redis SET+WAIT 1", &self.latency_curves_us.redis, RGBColor(0x2c, 0xa0, 0x2c)),
        ];
        let all: Vec<f64> = series
            .iter()
            .flat_map(|(_, v, _)| v.iter().copied())
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        // No curve measured (`--only failover`): the axis of one decade from 1 µs.
        let lo = all.iter().copied().reduce(f64::min).unwrap_or(1.0).max(1.0).log10().floor();
        let hi = all.iter().copied().fold(1.0, f64::max).log10().ceil().max(lo + 1.0);
        let mut chart = ChartBuilder::on(area)
            .caption("Latency at concurrency 1 (1 KiB)", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d((10f64.powf(lo)..10f64.powf(hi)).log_scale(), 0f64..3f64)
            .map_err(failed)?;
        let percentile = |y: &f64| format!("p{}", ((1.0 - 10f64.powf(-y)) * 1000.0).round() / 10.0);
        chart
            .configure_mesh()
            .x_desc("latency (us, log scale)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_labels(4)
            .y_label_formatter(&percentile)
            .draw()
            .map_err(failed)?;
        for (name, values, color) in series {
            if values.is_empty() {
                continue;
            }
            let points: Vec<(f64, f64)> = values
                .iter()
                .zip(CURVE_POINTS)
                .filter(|(v, _)| v.is_finite() && **v > 0.0)
                .map(|(v, p)| (*v, nines(p)))
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(failed)?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 2), (x + 12, y + 1)], color.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    }

    /// Synchronous updates per second by concurrent sessions, TCP and QUIC side by side, with
    /// Redis at 16 clients as a line.
    fn throughput_panel<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> anyhow::Result<()> {
        let conc = [Conc::C1, Conc::C16, Conc::C64];
        let bars = [
            ("m2m TCP", Carrier::Tcp, RGBColor(0x1f, 0x77, 0xb4)),
            ("m2m QUIC", Carrier::Quic, RGBColor(0xff, 0x7f, 0x0e)),
        ];
        let r16 = self.per_s(Rate::Redis(Conc::C16));
        let max = conc
            .iter()
            .flat_map(|c| bars.iter().map(move |(_, t, _)| self.per_s(Rate::Sync(*t, *c))))
            .chain([r16])
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max);
        let x_desc = format!(
            "concurrent sessions (raw TCP {:.0}/s, raw quinn {:.0}/s)",
            self.per_s(Rate::Raw(Link::Tcp)),
            self.per_s(Rate::Raw(Link::Quinn))
        );
        let mut chart = ChartBuilder::on(area)
            .caption("Sync updates/s by concurrent sessions", ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..3f64, 0f64..max * 1.1)
            .map_err(failed)?;
        // Labels at the middle of each group (0.5, 1.5, 2.5): the concurrency.
        let group = |x: &f64| {
            let i = x.floor();
            if (x - i - 0.5).abs() < 1e-9 {
                conc.get(i as usize).map_or(String::new(), |c| c.n().to_string())
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(7)
            .x_label_formatter(&group)
            .x_desc(x_desc)
            .y_desc("updates/s")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(failed)?;
        for (bi, (name, carrier, color)) in bars.into_iter().enumerate() {
            let measured: Vec<(usize, f64)> = conc
                .iter()
                .enumerate()
                .map(|(gi, c)| (gi, self.per_s(Rate::Sync(carrier, *c))))
                .filter(|(_, v)| v.is_finite())
                .collect();
            let x0 = |gi: usize| gi as f64 + 0.12 + bi as f64 * 0.38;
            chart
                .draw_series(
                    measured
                        .iter()
                        .map(|&(gi, v)| Rectangle::new([(x0(gi), 0.0), (x0(gi) + 0.36, v)], color.filled())),
                )
                .map_err(failed)?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], color.filled()));
            chart
                .draw_series(measured.iter().map(|&(gi, v)| {
                    Text::new(format!("{v:.0}"), (x0(gi) + 0.02, v + max * 0.04), ("sans-serif", 10))
                }))
                .map_err(failed)?;
        }
        if r16.is_finite() {
            let green = RGBColor(0x2c, 0xa0, 0x2c);
            chart
                .draw_series(LineSeries::new([(0.0, r16), (3.0, r16)], green.stroke_width(1)))
                .map_err(failed)?
                .label(format!("Redis SET+WAIT 1, 16 clients: {r16:.0}/s"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], green));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    }
}
