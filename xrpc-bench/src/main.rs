//! One benchmark of xrpc against the baselines and the peers, every row in the same run:
//! `cargo run --release -p xrpc-bench -- --quick`.
//!
//! Prints a Markdown table (round trip p50/p99/p99.9 of a 32-byte call, calls/s with 1 and 64
//! in flight, one-way MB/s for 64 B – 1 MiB, heap allocations and CPU time per call) and the
//! goals of issue 16 met or missed, and writes `target/xrpc-bench/results.csv`,
//! `latency.svg` and `throughput.svg`. Every number is the median of the repeats; rows are
//! interleaved within each repeat so that noise on a shared machine hits them alike.
//!
//! Options: `--quick` (fewer calls and repeats: a few minutes on 2 cores), `--only TEXT`
//! (rows whose name contains TEXT; repeatable), `--out DIR`, `--repeats N`, `--latency-only`
//! (round trips and the peers alone, nothing else: for many short alternating runs),
//! `--contention` (the shared-memory and Unix rows' round trips with 0, 1 and 2 busy processes
//! beside them, and the contention goal; module `contention`).

mod alone;
mod contention;
mod measure;
mod process;
mod report;
mod results;
mod subjects;
mod svg;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Instant;

use measure::Recorder;
use results::{RowResult, SIZES};
use subjects::{Outcome, Skip, Subject};

// Counts allocations for the allocs/call column (it lives in xrpc-shm, the crate that may hold
// `unsafe`).
#[global_allocator]
static ALLOC: xrpc_shm::testing::LargestAlloc = xrpc_shm::testing::LargestAlloc;

/// How much to measure.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    warmup: usize,
    calls: usize,
    repeats: usize,
    in_flight: usize,
    in_flight_calls: usize,
    one_way_bytes: usize,
    max_messages: usize,
    only: Vec<String>,
    out: PathBuf,
    latency_only: bool,
    contention: bool,
}

impl Plan {
    fn from_args(args: &[String]) -> Result<Self, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut plan = Plan {
            quick,
            warmup: if quick { 1_000 } else { 5_000 },
            calls: if quick { 10_000 } else { 50_000 },
            repeats: if quick { 3 } else { 7 },
            in_flight: 64,
            in_flight_calls: if quick { 20_000 } else { 100_000 },
            one_way_bytes: if quick { 16 << 20 } else { 128 << 20 },
            max_messages: if quick { 50_000 } else { 400_000 },
            only: Vec::new(),
            out: PathBuf::from("target/xrpc-bench"),
            latency_only: false,
            contention: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--quick" => {}
                "--latency-only" => plan.latency_only = true,
                "--contention" => plan.contention = true,
                "--only" => plan.only.push(value()?),
                "--out" => plan.out = PathBuf::from(value()?),
                "--repeats" => {
                    plan.repeats = value()?.parse::<usize>().map_err(|e| e.to_string())?.max(1)
                }
                "--bench" => {} // `cargo bench` passes it
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(plan)
    }

    /// Messages sent one way for `size` bytes: `one_way_bytes` worth, within [64, max].
    fn messages(&self, size: usize) -> usize {
        (self.one_way_bytes / size).clamp(64, self.max_messages)
    }

    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| name.contains(o.as_str()))
    }
}

/// Runs one measurement; a panic in it is an absent number with the panic's message.
pub(crate) fn guarded(f: impl FnOnce() -> Outcome) -> Outcome {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(Skip::Absent(format!("panicked: {msg}")))
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The processes this binary starts of itself: a peer's server, a row measured alone, a
    // peer's own program.
    if let Some(code) = subjects::serve(&args) {
        std::process::exit(code);
    }
    match args.first().map(String::as_str) {
        Some(process::ISOLATED_ARG) => return process::child(&args[1..]),
        Some(alone::ARG) => return alone::main(&args[1..]),
        Some(contention::BUSY_ARG) => return contention::busy_main(),
        _ => {}
    }
    let plan = match Plan::from_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "{e}\nusage: xrpc-bench [--quick] [--only TEXT]... [--repeats N] [--out DIR] [--latency-only] [--contention]"
            );
            std::process::exit(2);
        }
    };
    let rows: Vec<Box<dyn Subject>> = subjects::all()
        .into_iter()
        .filter(|s| plan.wants(&s.name()))
        .collect();
    if plan.contention {
        return contention::run(&plan, &rows);
    }
    let mut results: Vec<RowResult> = rows
        .iter()
        .map(|s| RowResult::new(s.name(), s.group()))
        .collect();
    let started = Instant::now();
    for rep in 0..plan.repeats {
        for (s, res) in rows.iter().zip(&mut results) {
            let t = Instant::now();
            let rec = Recorder {
                warmup: plan.warmup,
                calls: plan.calls,
            };
            res.add_round_trips(guarded(|| s.round_trips(rec)));
            if !plan.latency_only {
                res.add_in_flight(guarded(|| {
                    s.in_flight(plan.in_flight, plan.in_flight_calls)
                }));
                for (i, size) in SIZES.iter().enumerate() {
                    res.add_one_way(i, guarded(|| s.one_way(*size, plan.messages(*size))));
                }
            }
            if let Some(peer) = s.alone_program() {
                res.add_alone(process::run_alone(peer, plan.calls));
            }
            eprintln!(
                "[{:>4.0}s] repeat {}/{} {:<50} {:.1}s",
                started.elapsed().as_secs_f64(),
                rep + 1,
                plan.repeats,
                res.name,
                t.elapsed().as_secs_f64()
            );
        }
    }
    print_and_write(&plan, &results, started.elapsed().as_secs_f64());
}

fn print_and_write(plan: &Plan, results: &[RowResult], secs: f64) {
    let how = format!(
        "{} repeats (medians shown); round trips: {} timed calls after {} warm-up; in flight: {} calls, {} at once; one way: {} MiB per size (64–{} messages); {:.0} s in all{}",
        plan.repeats,
        plan.calls,
        plan.warmup,
        plan.in_flight_calls,
        plan.in_flight,
        plan.one_way_bytes >> 20,
        plan.max_messages,
        secs,
        match (plan.quick, plan.latency_only) {
            (true, true) => "; --quick --latency-only",
            (true, false) => "; --quick",
            (false, true) => "; --latency-only",
            (false, false) => "",
        }
    );
    println!("# xrpc-bench\n\n{how}\n");
    println!(
        "Round trip = a 32-byte message (`Msg {{ seq: u64, data: [u8; 24] }}`) and its echo. \
         MB/s = one way: `count` messages of the size, in order, the span ends when the receiver \
         has the last. allocs/call and CPU/call: over the timed round trips, both sides when \
         they share this process (iceoryx2: CPU adds its server process, allocations are the \
         client's).\n"
    );
    println!("{}", report::markdown(results, plan.in_flight));
    println!(
        "## Goals (issues 16 and 25)\n\n{}",
        report::goals_markdown(results)
    );
    let tls = report::tls_markdown(results);
    if !tls.is_empty() {
        println!("## TLS over TCP (same run)\n\n{tls}");
    }
    if let Err(e) = write_files(plan, results, &how) {
        eprintln!("writing {}: {e}", plan.out.display());
    } else {
        println!(
            "Wrote {0}/results.csv, {0}/latency.svg, {0}/throughput.svg",
            plan.out.display()
        );
    }
}

fn write_files(plan: &Plan, results: &[RowResult], how: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(&plan.out)?;
    std::fs::write(plan.out.join("results.csv"), report::csv(results))?;
    std::fs::write(
        plan.out.join("latency.svg"),
        svg::latency(
            results,
            &format!("Round trip of a 32-byte message and its echo, µs — {how}"),
        ),
    )?;
    std::fs::write(
        plan.out.join("throughput.svg"),
        svg::throughput(
            results,
            &format!("One-way throughput per message size, MB/s — {how}"),
        ),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quick_is_smaller_and_options_parse() {
        let full = Plan::from_args(&[]).unwrap();
        let quick = Plan::from_args(&args(&[
            "--quick",
            "--only",
            "shm",
            "--repeats",
            "2",
            "--latency-only",
        ]))
        .unwrap();
        assert!(quick.latency_only && !full.latency_only);
        assert!(quick.calls < full.calls && quick.one_way_bytes < full.one_way_bytes);
        assert_eq!(quick.repeats, 2);
        assert!(quick.wants("xrpc tokio call · shm (main)"));
        assert!(!quick.wants("tarpc · tcp (spawned)"));
        assert!(Plan::from_args(&args(&["--nope"])).is_err());
        assert!(Plan::from_args(&args(&["--only"])).is_err());
    }

    #[test]
    fn message_counts_stay_within_bounds() {
        let p = Plan::from_args(&args(&["--quick"])).unwrap();
        assert_eq!(p.messages(64), p.max_messages);
        assert_eq!(p.messages(1 << 20), 64);
        assert_eq!(p.messages(4096), 4096);
    }

    #[test]
    fn a_panicking_measurement_is_an_absent_number() {
        match guarded(|| panic!("boom")) {
            Err(Skip::Absent(m)) => assert!(m.contains("boom")),
            _ => panic!("expected Absent"),
        }
    }

    #[test]
    fn every_row_name_is_unique() {
        let names: Vec<String> = subjects::all().iter().map(|s| s.name()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "{names:?}");
    }
}
