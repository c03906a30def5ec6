//! The two charts, written as SVG text by hand: round-trip latency per row (a log axis; the
//! bar spans p10–p90, the thin line p1–p99.9, the tick is p50, the dot p99) and one-way
//! throughput per message size (log–log, one line per row).

use std::fmt::Write as _;

use crate::results::{Metric, P50, RowResult, SIZE_NAMES, SIZES};
use crate::subjects::Group;

const LABEL_W: f64 = 330.0;
const PLOT_W: f64 = 560.0;
const ROW_H: f64 = 18.0;

fn colour(g: Group) -> &'static str {
    match g {
        Group::Baseline => "#7f7f7f",
        Group::Xrpc => "#1f77b4",
        Group::Peer => "#d62728",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Decades from 10^lo to 10^hi covering `values` (positive, finite).
fn decades(values: impl Iterator<Item = f64>) -> (i32, i32) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0, 1);
    }
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    (a, b.max(a + 1))
}

/// The latency chart.
pub fn latency(rows: &[RowResult], title: &str) -> String {
    let rows: Vec<&RowResult> = rows.iter().filter(|r| !r.get(P50).is_nan()).collect();
    let (lo, hi) = decades(
        rows.iter()
            .flat_map(|r| [r.get(Metric::Latency(0)), r.get(Metric::Latency(7))]),
    );
    let x = |us: f64| LABEL_W + (us.max(1e-9).log10() - lo as f64) / (hi - lo) as f64 * PLOT_W;
    let top = 46.0;
    let h = top + ROW_H * rows.len() as f64 + 52.0;
    let w = LABEL_W + PLOT_W + 90.0;
    let mut s = header(w, h, title);
    axis_decades(&mut s, lo, hi, &x, top, h - 42.0, "µs", true);
    for (i, r) in rows.iter().enumerate() {
        let y = top + ROW_H * i as f64 + ROW_H / 2.0;
        let c = colour(r.group);
        let p = |i| x(r.get(Metric::Latency(i)));
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{}</text>"#,
            LABEL_W - 6.0,
            y + 4.0,
            esc(&r.name)
        );
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="{c}" stroke-width="1"/>"#,
            p(0),
            p(7)
        );
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="8" fill="{c}" fill-opacity="0.5"/>"#,
            p(1),
            y - 4.0,
            (p(5) - p(1)).max(1.0)
        );
        let _ = writeln!(
            s,
            r#"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="black" stroke-width="2"/>"#,
            p(3),
            y - 6.0,
            y + 6.0
        );
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{y:.1}" r="2.5" fill="{c}"/>"#,
            p(6)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10">{:.2}</text>"#,
            LABEL_W + PLOT_W + 8.0,
            y + 4.0,
            r.get(P50)
        );
    }
    legend(&mut s, LABEL_W, h - 8.0);
    s.push_str("</svg>\n");
    s
}

/// The throughput chart.
pub fn throughput(rows: &[RowResult], title: &str) -> String {
    let rows: Vec<&RowResult> = rows
        .iter()
        .filter(|r| (0..4).any(|i| !r.get(Metric::MBps(i)).is_nan()))
        .collect();
    let (lo, hi) = decades(
        rows.iter()
            .flat_map(|r| (0..4).map(|i| r.get(Metric::MBps(i)))),
    );
    let (left, top, pw, ph) = (70.0, 46.0, 520.0, 380.0);
    let w = left + pw + 330.0;
    let h = top + ph + 60.0;
    let xs = |i: usize| left + pw * i as f64 / (SIZES.len() - 1) as f64;
    let y = |v: f64| top + ph - (v.max(1e-9).log10() - lo as f64) / (hi - lo) as f64 * ph;
    let mut s = header(w, h, title);
    for d in lo..=hi {
        let yy = y(10f64.powi(d));
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="10">{}</text>"##,
            left + pw,
            left - 6.0,
            yy + 3.0,
            pow10(d)
        );
    }
    for (i, name) in SIZE_NAMES.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{name}</text>"#,
            xs(i),
            top + ph + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">message size (one way)</text><text x="14" y="{:.1}" font-size="11" transform="rotate(-90 14 {:.1})">MB/s</text>"#,
        left + pw / 2.0,
        top + ph + 34.0,
        top + ph / 2.0,
        top + ph / 2.0
    );
    const DASH: [&str; 4] = ["", "6,3", "2,2", "8,3,2,3"];
    for (k, r) in rows.iter().enumerate() {
        let c = colour(r.group);
        let dash = DASH[k % DASH.len()];
        let pts: Vec<String> = (0..4)
            .filter_map(|i| {
                let v = r.get(Metric::MBps(i));
                (!v.is_nan()).then(|| format!("{:.1},{:.1}", xs(i), y(v)))
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="1.5" stroke-dasharray="{dash}"/>"#,
            pts.join(" ")
        );
        let ly = top + 14.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{0:.1}" x2="{1:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="1.5" stroke-dasharray="{dash}"/><text x="{2:.1}" y="{3:.1}" font-size="10">{4}</text>"#,
            left + pw + 20.0,
            left + pw + 45.0,
            left + pw + 50.0,
            ly + 3.0,
            esc(&r.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The document's start, with the title and, after an em dash in it, a smaller second line.
fn header(w: f64, h: f64, title: &str) -> String {
    let (title, sub) = title.split_once(" — ").unwrap_or((title, ""));
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{}</text>\n<text x=\"10\" y=\"32\" font-size=\"10\">{}</text>\n",
        esc(title),
        esc(sub)
    )
}

fn pow10(d: i32) -> String {
    if (0..=6).contains(&d) {
        format!("{}", 10u64.pow(d as u32))
    } else {
        format!("1e{d}")
    }
}

#[allow(clippy::too_many_arguments)]
fn axis_decades(
    s: &mut String,
    lo: i32,
    hi: i32,
    x: &dyn Fn(f64) -> f64,
    top: f64,
    bottom: f64,
    unit: &str,
    label: bool,
) {
    for d in lo..=hi {
        let xx = x(10f64.powi(d));
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top:.1}" y2="{bottom:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"##,
            bottom + 12.0,
            pow10(d)
        );
    }
    if label {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{unit} (log scale)</text>"#,
            (x(10f64.powi(lo)) + x(10f64.powi(hi))) / 2.0,
            bottom + 24.0
        );
    }
}

fn legend(s: &mut String, x: f64, y: f64) {
    let _ = writeln!(
        s,
        r##"<text x="{x:.1}" y="{y:.1}" font-size="10">bar p10–p90 · line p1–p99.9 · tick p50 · dot p99 · <tspan fill="#7f7f7f">baseline</tspan> <tspan fill="#1f77b4">xrpc</tspan> <tspan fill="#d62728">peer</tspan> · right: p50 µs</text>"##
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Measured;
    use std::time::Duration;

    #[test]
    fn charts_are_well_formed_and_name_every_measured_row() {
        let mut a = RowResult::new("a <x>".into(), Group::Xrpc);
        a.add_round_trips(Ok(Measured {
            ops: 3,
            wall: Duration::from_micros(30),
            samples: vec![
                Duration::from_micros(5),
                Duration::from_micros(10),
                Duration::from_micros(400),
            ],
            ..Default::default()
        }));
        a.add_one_way(
            0,
            Ok(Measured {
                ops: 10,
                wall: Duration::from_micros(1),
                ..Default::default()
            }),
        );
        let b = RowResult::new("unmeasured".into(), Group::Peer);
        let rows = [a, b];
        for svg in [latency(&rows, "t"), throughput(&rows, "t")] {
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            assert!(svg.contains("a &lt;x&gt;"));
            assert!(!svg.contains("unmeasured"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }
}
