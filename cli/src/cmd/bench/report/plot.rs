//! The report as a plot (SVG).

use super::Report;
use crate::cmd::bench::figure::{Carrier, Conc, Link, Rate};
use crate::cmd::bench::stats::CURVE_POINTS;

impl Report {
    /// Two panels: latency distribution at concurrency 1 (log x), throughput by concurrency.
    pub(crate) fn svg(&self) -> String {
        let (w, h) = (960.0, 400.0);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        // Left: percentile (y) against latency (x, log10 µs).
        let (x0, y0, pw, ph) = (60.0, 40.0, 380.0, 300.0);
        s.push_str(&format!(
            "<text x=\"{}\" y=\"24\" font-size=\"14\">Latency at concurrency 1 (1 KiB)</text>\n",
            x0
        ));
        let series = [
            ("raw TCP round trip", &self.latency_curves_us.raw_tcp, "#888888"),
            ("m2m TCP sync update", &self.latency_curves_us.tcp, "#1f77b4"),
            ("m2m QUIC sync update", &self.latency_curves_us.quic, "#ff7f0e"),
            ("Redis SET+WAIT 1", &self.latency_curves_us.redis, "#2ca02c"),
        ];
        let all: Vec<f64> = series
            .iter()
            .flat_map(|(_, v, _)| v.iter().copied())
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        // No curve measured (`--only failover`): the axis of one decade from 1 µs.
        let lo = all.iter().copied().reduce(f64::min).unwrap_or(1.0).max(1.0).log10().floor();
        let hi = all.iter().copied().fold(1.0, f64::max).log10().ceil().max(lo + 1.0);
        let xs = |v: f64| x0 + (v.max(1.0).log10() - lo) / (hi - lo) * pw;
        // "Nines" scale: p50, p90, p99 and p99.9 equally spaced.
        let ys = |p: f64| y0 + ph - (-(1.0 - p.min(0.999)).log10() / 3.0) * ph;
        s.push_str(&format!(
            "<rect x=\"{x0}\" y=\"{y0}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"black\"/>\n"
        ));
        let mut d = lo;
        while d <= hi {
            let x = xs(10f64.powf(d));
            s.push_str(&format!(
                "<line x1=\"{x:.1}\" y1=\"{y0}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{} us</text>\n",
                y0 + ph,
                y0 + ph + 16.0,
                10f64.powf(d)
            ));
            d += 1.0;
        }
        for p in [0.0, 0.5, 0.9, 0.99, 0.999] {
            let y = ys(p);
            s.push_str(&format!(
                "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">p{}</text>\n",
                x0 + pw,
                x0 - 4.0,
                y + 4.0,
                p * 100.0
            ));
        }
        for (i, (name, v, color)) in series.iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            let pts: Vec<String> = v
                .iter()
                .zip(CURVE_POINTS)
                .filter(|(v, _)| v.is_finite())
                .map(|(v, p)| format!("{:.1},{:.1}", xs(*v), ys(p)))
                .collect();
            s.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
                pts.join(" ")
            ));
            let ly = y0 + ph - 64.0 + 16.0 * i as f64;
            s.push_str(&format!(
                "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{color}\"/><text x=\"{}\" y=\"{ly}\">{name}</text>\n",
                x0 + pw - 170.0,
                ly - 4.0,
                x0 + pw - 154.0
            ));
        }
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">latency (log scale)</text>\n",
            x0 + pw / 2.0,
            y0 + ph + 34.0
        ));
        // Right: grouped bars, updates/s by concurrency.
        let (x1, pw1) = (540.0, 380.0);
        s.push_str(&format!(
            "<text x=\"{x1}\" y=\"24\" font-size=\"14\">Sync updates/s by concurrent sessions</text>\n"
        ));
        let conc = [Conc::C1, Conc::C16, Conc::C64];
        let bars = [("TCP", Carrier::Tcp, "#1f77b4"), ("QUIC", Carrier::Quic, "#ff7f0e")];
        let max = conc
            .iter()
            .flat_map(|c| bars.iter().map(move |(_, t, _)| self.per_s(Rate::Sync(*t, *c))))
            .chain([self.per_s(Rate::Redis(Conc::C16))])
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max);
        s.push_str(&format!(
            "<rect x=\"{x1}\" y=\"{y0}\" width=\"{pw1}\" height=\"{ph}\" fill=\"none\" stroke=\"black\"/>\n"
        ));
        let group = pw1 / conc.len() as f64;
        for (gi, c) in conc.iter().enumerate() {
            let gx = x1 + group * gi as f64;
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                gx + group / 2.0,
                y0 + ph + 16.0,
                c.n()
            ));
            for (bi, (_, t, color)) in bars.iter().enumerate() {
                let v = self.per_s(Rate::Sync(*t, *c));
                if !v.is_finite() {
                    continue;
                }
                let bh = v / max * (ph - 20.0);
                let bx = gx + 20.0 + bi as f64 * ((group - 40.0) / 2.0);
                s.push_str(&format!(
                    "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{v:.0}</text>\n",
                    y0 + ph - bh,
                    (group - 40.0) / 2.0 - 4.0,
                    bx + (group - 40.0) / 4.0 - 2.0,
                    y0 + ph - bh - 3.0
                ));
            }
        }
        let r16 = self.per_s(Rate::Redis(Conc::C16));
        if r16.is_finite() {
            let y = y0 + ph - r16 / max * (ph - 20.0);
            s.push_str(&format!(
                "<line x1=\"{x1}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#2ca02c\" stroke-dasharray=\"4 3\"/><text x=\"{}\" y=\"{:.1}\" fill=\"#2ca02c\">Redis SET+WAIT 1, 16 clients: {r16:.0}/s</text>\n",
                x1 + pw1,
                x1 + 4.0,
                y - 4.0
            ));
        }
        for (i, (name, _, color)) in bars.iter().enumerate() {
            let ly = y0 + 14.0 + 16.0 * i as f64;
            s.push_str(&format!(
                "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"8\" fill=\"{color}\"/><text x=\"{}\" y=\"{ly}\">m2m {name}</text>\n",
                x1 + 10.0,
                ly - 8.0,
                x1 + 26.0
            ));
        }
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">concurrent sessions (raw TCP {:.0}/s, raw quinn {:.0}/s)</text>\n",
            x1 + pw1 / 2.0,
            y0 + ph + 34.0,
            self.per_s(Rate::Raw(Link::Tcp)),
            self.per_s(Rate::Raw(Link::Quinn))
        ));
        s.push_str("</svg>\n");
        s
    }
}
