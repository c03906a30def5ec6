//! The Markdown table, the CSV file and the goals of issue 16, from the rows' results.

use std::fmt::Write as _;

use crate::results::{Metric, P50, P99, P999, RowResult, SIZE_NAMES};

/// The row every latency is divided by in the table.
pub const LATENCY_BASE: &str = "raw bytes · unix (threads)";

fn find<'a>(rows: &'a [RowResult], name: &str) -> Option<&'a RowResult> {
    rows.iter().find(|r| r.name == name)
}

fn num(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "—".into()
    } else if x >= 100_000.0 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.digits$}")
    }
}

/// The Markdown table (with its notes) as text.
pub fn markdown(rows: &[RowResult], k: usize) -> String {
    let mut s = String::new();
    let base = find(rows, LATENCY_BASE).map_or(f64::NAN, |r| r.get(P50));
    let _ = writeln!(
        s,
        "| row | p50 µs | p99 µs | p99.9 µs | p50 ÷ raw unix | calls/s, 1 in flight | calls/s, {k} in flight | MB/s {} | MB/s {} | MB/s {} | MB/s {} | allocs/call | CPU µs/call |",
        SIZE_NAMES[0], SIZE_NAMES[1], SIZE_NAMES[2], SIZE_NAMES[3]
    );
    let _ = writeln!(s, "|---|{}", "---:|".repeat(13));
    for r in rows {
        let p50 = r.get(P50);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            num(p50, 2),
            num(r.get(P99), 2),
            num(r.get(P999), 1),
            num(p50 / base, 2),
            num(r.get(Metric::Rate1), 0),
            num(r.get(Metric::RateK), 0),
            num(r.get(Metric::MBps(0)), 0),
            num(r.get(Metric::MBps(1)), 0),
            num(r.get(Metric::MBps(2)), 0),
            num(r.get(Metric::MBps(3)), 0),
            num(r.get(Metric::AllocsPerCall), 2),
            num(r.get(Metric::CpuPerCall), 2),
        );
    }
    let notes: Vec<String> = rows
        .iter()
        .flat_map(|r| r.notes.iter().map(move |n| format!("- {}: {n}", r.name)))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(s, "\nMissing numbers:");
        for n in notes {
            let _ = writeln!(s, "{n}");
        }
    }
    s
}

/// The CSV file: one line per row, the table's numbers unrounded (empty when not measured).
pub fn csv(rows: &[RowResult]) -> String {
    let mut s = String::from(
        "row,group,p1_us,p10_us,p25_us,p50_us,p75_us,p90_us,p99_us,p999_us,calls_per_s_1,calls_per_s_k,mbps_64B,mbps_4KiB,mbps_64KiB,mbps_1MiB,allocs_per_call,cpu_us_per_call,note\n",
    );
    let cell = |x: f64| {
        if x.is_nan() {
            String::new()
        } else {
            format!("{x}")
        }
    };
    for r in rows {
        let mut cells = vec![quote(&r.name), r.group.name().to_string()];
        cells.extend((0..8).map(|i| cell(r.get(Metric::Latency(i)))));
        for m in [
            Metric::Rate1,
            Metric::RateK,
            Metric::MBps(0),
            Metric::MBps(1),
            Metric::MBps(2),
            Metric::MBps(3),
            Metric::AllocsPerCall,
            Metric::CpuPerCall,
        ] {
            cells.push(cell(r.get(m)));
        }
        cells.push(quote(&r.notes.join("; ")));
        s.push_str(&cells.join(","));
        s.push('\n');
    }
    s
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Which way a goal's ratio must lie.
#[derive(Clone, Copy)]
enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

/// One goal of the issue: `row.metric / base.metric` within `bound` (`base` None: the value
/// itself).
struct Goal {
    text: &'static str,
    row: String,
    metric: Metric,
    base: Option<(&'static str, Metric)>,
    bound: Bound,
}

fn ratio(text: &'static str, row: &str, metric: Metric, base: &'static str, bound: Bound) -> Goal {
    Goal {
        text,
        row: row.to_string(),
        metric,
        base: Some((base, metric)),
        bound,
    }
}

const ICEORYX2: &str = "iceoryx2 req-resp · shm (2 processes, busy-poll)";
const MEMCPY: &str = "memcpy · same thread";

/// The goals of issue 16, each against rows of the same run.
fn goals() -> Vec<Goal> {
    use Bound::*;
    let mut g = vec![
        ratio(
            "blocking adapter, shm call p50 ≤ iceoryx2 request-response",
            "xrpc blocking call · shm",
            P50,
            ICEORYX2,
            AtMost(1.0),
        ),
        ratio(
            "blocking adapter, shm call ≥ 40x faster than tarpc (p50 ratio ≤ 1/40)",
            "xrpc blocking call · shm",
            P50,
            "tarpc · unix (spawned)",
            AtMost(1.0 / 40.0),
        ),
        ratio(
            "tokio, shm call from a spawned task within 2x of iceoryx2 (p50)",
            "xrpc tokio call · shm (spawned)",
            P50,
            ICEORYX2,
            AtMost(2.0),
        ),
        ratio(
            "tokio, shm call in the body of #[tokio::main] within 2x of iceoryx2 (p50)",
            "xrpc tokio call · shm (main)",
            P50,
            ICEORYX2,
            AtMost(2.0),
        ),
    ];
    for row in [
        "xrpc tokio call · shm (spawned)",
        "xrpc tokio call · shm (main)",
    ] {
        g.push(Goal {
            text: "no heap allocation per call on the shm path (allocs/call, both sides)",
            row: row.to_string(),
            metric: Metric::AllocsPerCall,
            base: None,
            bound: AtMost(0.01),
        });
    }
    for (net, raw, tarpc) in [
        ("unix", "raw bytes · unix (tokio)", "tarpc · unix (spawned)"),
        ("tcp", "raw bytes · tcp (tokio)", "tarpc · tcp (spawned)"),
    ] {
        for caller in ["spawned", "main"] {
            g.push(ratio(
                "typed call within 1.3x of the raw ping-pong on the same runtime layout (p50)",
                &format!("xrpc tokio call · {net} ({caller})"),
                P50,
                raw,
                AtMost(1.3),
            ));
        }
        let row = &format!("xrpc tokio call · {net} (spawned)");
        g.push(ratio(
            "pipelined calls/s at least 2x tarpc",
            row,
            Metric::RateK,
            tarpc,
            AtLeast(2.0),
        ));
        g.push(ratio(
            "pipelined calls/s at least half of a raw pipelined echo",
            row,
            Metric::RateK,
            raw,
            AtLeast(0.5),
        ));
    }
    g.push(ratio(
        "64 B one-way over shm at least 30% of memcpy",
        "xrpc tokio frames · shm",
        Metric::MBps(0),
        MEMCPY,
        AtLeast(0.3),
    ));
    g.push(ratio(
        "1 MiB one-way over shm at least 50% of memcpy",
        "xrpc tokio frames · shm",
        Metric::MBps(3),
        MEMCPY,
        AtLeast(0.5),
    ));
    g
}

fn metric_name(m: Metric) -> String {
    match m {
        Metric::Latency(3) => "p50".into(),
        Metric::Latency(i) => format!("p{}", crate::results::PERCENTILES[i]),
        Metric::Rate1 => "calls/s".into(),
        Metric::RateK => "calls/s in flight".into(),
        Metric::MBps(i) => format!("MB/s {}", SIZE_NAMES[i]),
        Metric::AllocsPerCall => "allocs/call".into(),
        Metric::CpuPerCall => "CPU µs/call".into(),
    }
}

/// The goals, each met / missed / not measured with its numbers, as Markdown.
pub fn goals_markdown(rows: &[RowResult]) -> String {
    let mut s =
        String::from("| goal | row | numbers | ratio | verdict |\n|---|---|---|---:|---|\n");
    for g in goals() {
        let value = find(rows, &g.row).map_or(f64::NAN, |r| r.get(g.metric));
        let (base, base_text) = match g.base {
            Some((name, m)) => {
                let b = find(rows, name).map_or(f64::NAN, |r| r.get(m));
                (b, format!(" vs {name} {}", num(b, 2)))
            }
            None => (1.0, String::new()),
        };
        let r = value / base;
        let verdict = if r.is_nan() {
            if find(rows, &g.row).is_none() {
                "not measured (no such row yet)".to_string()
            } else {
                "not measured".to_string()
            }
        } else {
            let met = match g.bound {
                Bound::AtMost(b) => r <= b,
                Bound::AtLeast(b) => r >= b,
            };
            let bound = match g.bound {
                Bound::AtMost(b) => format!("≤ {b:.3}"),
                Bound::AtLeast(b) => format!("≥ {b:.2}"),
            };
            format!("{} (needs {bound})", if met { "met" } else { "MISSED" })
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} {}{} | {} | {} |",
            g.text,
            g.row,
            metric_name(g.metric),
            num(value, 2),
            base_text,
            num(r, 3),
            verdict
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Measured;
    use crate::subjects::Group;
    use std::time::Duration;

    fn row(name: &str, us: u64) -> RowResult {
        let mut r = RowResult::new(name.into(), Group::Xrpc);
        r.add_round_trips(Ok(Measured {
            ops: 10,
            wall: Duration::from_micros(10 * us),
            samples: vec![Duration::from_micros(us); 10],
            ..Default::default()
        }));
        r
    }

    #[test]
    fn a_goal_is_met_missed_or_not_measured() {
        let rows = vec![
            row(ICEORYX2, 2),
            row("xrpc tokio call · shm (spawned)", 3),
            row("xrpc tokio call · shm (main)", 5),
        ];
        let g = goals_markdown(&rows);
        let line = |needle: &str| g.lines().find(|l| l.contains(needle)).unwrap().to_string();
        assert!(line("spawned task within 2x").contains("| met"), "{g}");
        assert!(line("#[tokio::main] within 2x").contains("MISSED"), "{g}");
        assert!(
            line("blocking adapter, shm call p50").contains("no such row"),
            "{g}"
        );
    }

    #[test]
    fn csv_has_a_line_per_row_with_quoted_names() {
        let rows = vec![row("a, b", 1), row("c", 2)];
        let c = csv(&rows);
        assert_eq!(c.lines().count(), 3);
        assert!(c.lines().nth(1).unwrap().starts_with("\"a, b\",xrpc,"));
    }
}
