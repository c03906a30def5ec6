//! The Markdown table, the CSV file and the goals (issues 16 and 25), from the rows' results.

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
        "| row | p50 µs | p50 alone µs | p99 µs | p99.9 µs | p50 ÷ raw unix | calls/s, 1 in flight | calls/s, {k} in flight | MB/s {} | MB/s {} | MB/s {} | MB/s {} | allocs/call | CPU µs/call |",
        SIZE_NAMES[0], SIZE_NAMES[1], SIZE_NAMES[2], SIZE_NAMES[3]
    );
    let _ = writeln!(s, "|---|{}", "---:|".repeat(14));
    for r in rows {
        let p50 = r.get(P50);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            num(p50, 2),
            alone_cell(r),
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

/// A peer's stand-alone p50, marked when the row lies outside the tolerance of it.
fn alone_cell(r: &RowResult) -> String {
    match r.comparable() {
        None => "—".into(),
        Some(true) => num(r.get(Metric::AloneP50), 2),
        Some(false) => format!("{} (not comparable)", num(r.get(Metric::AloneP50), 2)),
    }
}

/// The CSV file: one line per row, the table's numbers unrounded (empty when not measured).
pub fn csv(rows: &[RowResult]) -> String {
    let mut s = String::from(
        "row,group,p1_us,p10_us,p25_us,p50_us,p75_us,p90_us,p99_us,p999_us,calls_per_s_1,calls_per_s_k,mbps_64B,mbps_4KiB,mbps_64KiB,mbps_1MiB,allocs_per_call,cpu_us_per_call,alone_p50_us,alone_p99_us,note\n",
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
            Metric::AloneP50,
            Metric::AloneP99,
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
    base: Option<(String, Metric)>,
    bound: Bound,
}

fn ratio(text: &'static str, row: &str, metric: Metric, base: &str, bound: Bound) -> Goal {
    Goal {
        text,
        row: row.to_string(),
        metric,
        base: Some((base.to_string(), metric)),
        bound,
    }
}

const ICEORYX2: &str = "iceoryx2 req-resp · shm (2 processes, busy-poll)";
const MEMCPY: &str = "memcpy · same thread";
const TARPC_UNIX: &str = "tarpc · unix (2 processes)";
const TARPC_TCP: &str = "tarpc · tcp (2 processes)";

/// The goals of issue 25 (which raised issue 16's), each against rows of the same run.
fn goals() -> Vec<Goal> {
    use Bound::*;
    let mut g = vec![ratio(
        "blocking adapter, shm call p50 ≤ iceoryx2 request-response",
        "xrpc blocking call · shm",
        P50,
        ICEORYX2,
        AtMost(1.0),
    )];
    for row in [
        "xrpc tokio call · shm (spawned)",
        "xrpc tokio call · shm (main)",
        "xrpc smol call · shm (main)",
    ] {
        g.push(ratio(
            "shm call within 1.5x of iceoryx2 (p50)",
            row,
            P50,
            ICEORYX2,
            AtMost(1.5),
        ));
    }
    g.push(ratio(
        "smol shm call within 1.2x of tokio's (p50)",
        "xrpc smol call · shm (main)",
        P50,
        "xrpc tokio call · shm (main)",
        AtMost(1.2),
    ));
    g.push(ratio(
        "blocking adapter, shm call ≥ 40x faster than tarpc (p50 ratio ≤ 1/40)",
        "xrpc blocking call · shm",
        P50,
        TARPC_UNIX,
        AtMost(1.0 / 40.0),
    ));
    for (net, base) in [("in-process channel", "shm"), ("in-process arc", "shm")] {
        for caller in ["spawned", "main"] {
            g.push(ratio(
                "in-process call p50 ≤ the shm call's (same caller)",
                &format!("xrpc tokio call · {net} ({caller})"),
                P50,
                &format!("xrpc tokio call · {base} ({caller})"),
                AtMost(1.0),
            ));
        }
        g.push(Goal {
            text: "in-process call under 1 µs where client and server share a thread (p50)",
            row: format!("xrpc tokio call · {net} (one thread)"),
            metric: P50,
            base: None,
            bound: AtMost(1.0),
        });
    }
    for row in [
        "xrpc tokio call · shm (spawned)",
        "xrpc tokio call · shm (main)",
        "xrpc smol call · shm (main)",
        "xrpc blocking call · shm",
        "xrpc tokio call · in-process channel (spawned)",
        "xrpc tokio call · in-process channel (main)",
        "xrpc tokio call · in-process channel (one thread)",
        "xrpc tokio call · in-process arc (spawned)",
        "xrpc tokio call · in-process arc (main)",
        "xrpc tokio call · in-process arc (one thread)",
    ] {
        g.push(Goal {
            text: "no heap allocation per call (allocs/call, both sides)",
            row: row.to_string(),
            metric: Metric::AllocsPerCall,
            base: None,
            bound: AtMost(0.01),
        });
    }
    for (net, raw, tarpc) in [
        ("unix", "raw bytes · unix (tokio)", TARPC_UNIX),
        ("tcp", "raw bytes · tcp (tokio)", TARPC_TCP),
    ] {
        // The raw ping-pong from the same caller: in the body of `block_on` every answer
        // crosses from the worker that polls the socket to the blocked thread, raw or not.
        for (caller, base) in [
            ("spawned", raw.to_string()),
            ("main", format!("raw bytes · {net} (tokio main)")),
        ] {
            g.push(ratio(
                "typed call within 1.2x of the raw ping-pong on the same runtime layout (p50)",
                &format!("xrpc tokio call · {net} ({caller})"),
                P50,
                &base,
                AtMost(1.2),
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

/// TLS over TCP against plain TCP, rows of the same run: (what, TLS row, TCP row, metric).
const TLS_RATIOS: [(&str, &str, &str, Metric); 5] = [
    (
        "32 B call p50 (spawned)",
        "xrpc tokio call · tls (spawned)",
        "xrpc tokio call · tcp (spawned)",
        P50,
    ),
    (
        "32 B call p50 (main)",
        "xrpc tokio call · tls (main)",
        "xrpc tokio call · tcp (main)",
        P50,
    ),
    (
        "32 B calls/s in flight (spawned)",
        "xrpc tokio call · tls (spawned)",
        "xrpc tokio call · tcp (spawned)",
        Metric::RateK,
    ),
    (
        "64 KiB frames one way, MB/s",
        "xrpc tokio frames · tls",
        "xrpc tokio frames · tcp",
        Metric::MBps(2),
    ),
    (
        "1 MiB frames one way, MB/s",
        "xrpc tokio frames · tls",
        "xrpc tokio frames · tcp",
        Metric::MBps(3),
    ),
];

/// What TLS costs: each TLS row's number over the TCP row's, from the same run, as Markdown
/// (empty when neither row ran).
pub fn tls_markdown(rows: &[RowResult]) -> String {
    let mut s = String::from("| TLS ÷ TCP | TLS | TCP | ratio |\n|---|---:|---:|---:|\n");
    let mut any = false;
    for (what, tls, tcp, m) in TLS_RATIOS {
        let (a, b) = (
            find(rows, tls).map_or(f64::NAN, |r| r.get(m)),
            find(rows, tcp).map_or(f64::NAN, |r| r.get(m)),
        );
        any |= !a.is_nan() || !b.is_nan();
        let _ = writeln!(
            s,
            "| {what} | {} | {} | {} |",
            num(a, 2),
            num(b, 2),
            num(a / b, 2)
        );
    }
    if any { s } else { String::new() }
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
        Metric::AloneP50 => "p50 alone".into(),
        Metric::AloneP99 => "p99 alone".into(),
    }
}

/// The goals, each met / missed / not measured with its numbers, as Markdown.
pub fn goals_markdown(rows: &[RowResult]) -> String {
    let mut s =
        String::from("| goal | row | numbers | ratio | verdict |\n|---|---|---|---:|---|\n");
    for g in goals() {
        let value = find(rows, &g.row).map_or(f64::NAN, |r| r.get(g.metric));
        let (base, base_text) = match &g.base {
            Some((name, m)) => {
                let b = find(rows, name).map_or(f64::NAN, |r| r.get(*m));
                (b, format!(" vs {name} {}", num(b, 2)))
            }
            None => (1.0, String::new()),
        };
        let r = value / base;
        // A peer row that does not reproduce its stand-alone figure stands for nothing.
        let astray = [Some(g.row.as_str()), g.base.as_ref().map(|b| b.0.as_str())]
            .into_iter()
            .flatten()
            .filter_map(|name| find(rows, name))
            .find(|row| row.comparable() == Some(false));
        let verdict = if let Some(p) = astray {
            format!(
                "not comparable ({} p50 {} here, {} alone)",
                p.name,
                num(p.get(P50), 2),
                num(p.get(Metric::AloneP50), 2)
            )
        } else if r.is_nan() {
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
        let line = |goal: &str, row: &str| {
            g.lines()
                .find(|l| l.contains(goal) && l.contains(row))
                .unwrap()
                .to_string()
        };
        let within = "within 1.5x of iceoryx2";
        assert!(line(within, "shm (spawned)").contains("| met"), "{g}");
        assert!(
            line(within, "tokio call · shm (main)").contains("MISSED"),
            "{g}"
        );
        assert!(
            line("blocking adapter, shm call p50", "").contains("no such row"),
            "{g}"
        );
    }

    #[test]
    fn a_goal_against_a_peer_row_far_from_its_alone_figure_is_not_comparable() {
        let mut peer = row(ICEORYX2, 4);
        peer.add_alone(Ok(crate::process::Alone { p50: 1.0, p99: 2.0 }));
        let rows = vec![peer, row("xrpc blocking call · shm", 3)];
        let g = goals_markdown(&rows);
        let line = g
            .lines()
            .find(|l| l.contains("blocking adapter, shm call p50"))
            .unwrap();
        assert!(line.contains("not comparable"), "{g}");
        let mut near = row(ICEORYX2, 4);
        near.add_alone(Ok(crate::process::Alone { p50: 3.8, p99: 9.0 }));
        let g = goals_markdown(&[near, row("xrpc blocking call · shm", 3)]);
        assert!(g.contains("| met"), "{g}");
    }

    #[test]
    fn csv_has_a_line_per_row_with_quoted_names() {
        let rows = vec![row("a, b", 1), row("c", 2)];
        let c = csv(&rows);
        assert_eq!(c.lines().count(), 3);
        assert!(c.lines().nth(1).unwrap().starts_with("\"a, b\",xrpc,"));
    }
}
