//! `--contention`: the round trips of the shared-memory and Unix-socket rows with 0, 1 and 2
//! busy processes beside them — each a copy of this binary spinning on one CPU for as long as
//! the level lasts — every level in the same run, levels interleaved within each repeat so
//! that the machine's own noise hits them alike. Prints p50 and p99 per row and level, and the
//! goal of issue 25: under contention, a shared-memory call's p50 and p99 no worse than the
//! same caller's over a Unix socket.

use std::time::Instant;

use crate::measure::Recorder;
use crate::process::{ServerProcess, on_parent_gone};
use crate::results::{P50, P99, RowResult};
use crate::subjects::{Skip, Subject};
use crate::{Plan, guarded};

/// The argument that makes this binary a busy process.
pub const BUSY_ARG: &str = "--busy-loop";

/// Busy processes per level.
const LEVELS: [usize; 3] = [0, 1, 2];

/// A busy process's body: says it is ready, then spins until its parent lets it go (or is
/// gone).
pub fn busy_main() {
    on_parent_gone(|| std::process::exit(0));
    println!("ready");
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Starts `n` busy processes, each running once it said so; they end when the handles drop.
fn start_busy(n: usize) -> Result<Vec<ServerProcess>, Skip> {
    (0..n).map(|_| ServerProcess::start(&[BUSY_ARG])).collect()
}

/// Whether a row takes part: a call or a raw ping-pong over shared memory or a Unix socket
/// in this process (the peers' rows run processes of their own, which the busy processes
/// would meet differently).
fn takes_part(name: &str) -> bool {
    (name.contains(" · shm") || name.contains(" · unix"))
        && (name.starts_with("xrpc ") || name.starts_with("raw bytes"))
        && !name.contains("frames")
}

/// The Unix-socket row of the same caller as shared-memory row `shm`, if the name has one.
fn unix_twin(shm: &str) -> Option<String> {
    shm.contains(" · shm")
        .then(|| shm.replacen(" · shm", " · unix", 1))
}

/// Runs the contention mode over `rows` (those that take part), prints its tables.
pub fn run(plan: &Plan, rows: &[Box<dyn Subject>]) {
    let rows: Vec<&dyn Subject> = rows
        .iter()
        .map(|r| &**r)
        .filter(|r| takes_part(&r.name()))
        .collect();
    let mut results: Vec<[RowResult; 3]> = rows
        .iter()
        .map(|r| LEVELS.map(|n| RowResult::new(format!("{} [busy {n}]", r.name()), r.group())))
        .collect();
    let started = Instant::now();
    for rep in 0..plan.repeats {
        for (li, &n) in LEVELS.iter().enumerate() {
            let busy = match start_busy(n) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("cannot start {n} busy processes: {e:?}");
                    return;
                }
            };
            for (r, res) in rows.iter().zip(&mut results) {
                let rec = Recorder {
                    warmup: plan.warmup,
                    calls: plan.calls,
                };
                res[li].add_round_trips(guarded(|| r.round_trips(rec)));
                eprintln!(
                    "[{:>4.0}s] repeat {}/{} busy {n} {}",
                    started.elapsed().as_secs_f64(),
                    rep + 1,
                    plan.repeats,
                    r.name()
                );
            }
            drop(busy);
        }
    }
    println!("{}", markdown(&rows, &results, plan));
}

fn markdown(rows: &[&dyn Subject], results: &[[RowResult; 3]], plan: &Plan) -> String {
    let cell = |v: f64| {
        if v.is_nan() {
            "—".to_string()
        } else {
            format!("{v:.2}")
        }
    };
    let mut s = format!(
        "# xrpc-bench --contention\n\nRound trip of a 32-byte call, µs, with 0, 1 and 2 busy \
         processes (one spinning thread each) beside the benchmark on this machine's {} CPUs; \
         medians of {} repeats of {} timed calls, levels interleaved.\n\n\
         | row | p50 · 0 | p99 · 0 | p50 · 1 | p99 · 1 | p50 · 2 | p99 · 2 |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        plan.repeats,
        plan.calls
    );
    for (r, res) in rows.iter().zip(results) {
        s.push_str(&format!("| {} |", r.name()));
        for level in res {
            s.push_str(&format!(
                " {} | {} |",
                cell(level.get(P50)),
                cell(level.get(P99))
            ));
        }
        s.push('\n');
    }
    s.push_str(
        "\n## Goal (issue 25): under contention, shm p50 and p99 no worse than Unix\n\n\
         | shm row | busy | shm p50 / p99 | unix p50 / p99 | verdict |\n|---|---:|---|---|---|\n",
    );
    for (r, res) in rows.iter().zip(results) {
        let name = r.name();
        let Some(twin) = unix_twin(&name) else {
            continue;
        };
        let Some(ti) = rows.iter().position(|t| t.name() == twin) else {
            continue;
        };
        for li in 1..LEVELS.len() {
            let (shm, unix) = (&res[li], &results[ti][li]);
            let (s50, s99, u50, u99) = (shm.get(P50), shm.get(P99), unix.get(P50), unix.get(P99));
            let verdict = if [s50, s99, u50, u99].iter().any(|v| v.is_nan()) {
                "not measured"
            } else if s50 <= u50 && s99 <= u99 {
                "met"
            } else {
                "MISSED"
            };
            s.push_str(&format!(
                "| {name} | {} | {} / {} | {} / {} | {verdict} |\n",
                LEVELS[li],
                cell(s50),
                cell(s99),
                cell(u50),
                cell(u99)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_twins() {
        assert!(takes_part("xrpc blocking call · shm"));
        assert!(takes_part("raw bytes · unix (tokio)"));
        assert!(!takes_part("xrpc tokio frames · shm"));
        assert!(!takes_part("tarpc · unix (2 processes)"));
        assert!(!takes_part("xrpc tokio call · tcp (spawned)"));
        assert_eq!(
            unix_twin("xrpc tokio call · shm (main)").as_deref(),
            Some("xrpc tokio call · unix (main)")
        );
        assert_eq!(unix_twin("xrpc blocking call · unix"), None);
    }
}
