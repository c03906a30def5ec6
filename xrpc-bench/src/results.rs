//! The numbers of one row, gathered over the repeats, and their medians.

use crate::measure::{Measured, median, percentile_us};
use crate::process::Alone;
use crate::subjects::{Group, Outcome, Skip};

/// How far a peer row's p50 may lie from the peer's stand-alone figure for the row to stand
/// for the peer (the goals say "not comparable" beyond it).
pub const ALONE_TOLERANCE: f64 = 0.15;

/// The payload sizes of the one-way throughput columns.
pub const SIZES: [usize; 4] = [64, 4096, 64 * 1024, 1 << 20];

/// Labels of [`SIZES`].
pub const SIZE_NAMES: [&str; 4] = ["64 B", "4 KiB", "64 KiB", "1 MiB"];

/// The percentiles kept for the latency chart and table.
pub const PERCENTILES: [f64; 8] = [1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.9];

/// A single number of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Round-trip percentile (index into [`PERCENTILES`]), µs.
    Latency(usize),
    /// Calls per second, one in flight.
    Rate1,
    /// Calls per second, many in flight.
    RateK,
    /// One-way MB/s for [`SIZES`]`[i]`.
    MBps(usize),
    /// Heap allocations per round trip.
    AllocsPerCall,
    /// CPU µs per round trip.
    CpuPerCall,
    /// The peer's own program's p50, µs (`--peer-alone`).
    AloneP50,
    /// The peer's own program's p99, µs.
    AloneP99,
}

/// The p50 metric.
pub const P50: Metric = Metric::Latency(3);
/// The p99 metric.
pub const P99: Metric = Metric::Latency(6);
/// The p99.9 metric.
pub const P999: Metric = Metric::Latency(7);

/// Everything measured for one row.
#[derive(Debug, Clone)]
pub struct RowResult {
    /// The row's name.
    pub name: String,
    /// Its group.
    pub group: Group,
    latency: [Vec<f64>; 8],
    rate1: Vec<f64>,
    rate_k: Vec<f64>,
    mbps: [Vec<f64>; 4],
    allocs: Vec<f64>,
    cpu: Vec<f64>,
    alone: [Vec<f64>; 2],
    /// Why some of its numbers are missing (first reason per kind of measurement).
    pub notes: Vec<String>,
}

impl RowResult {
    /// An empty result for a row.
    pub fn new(name: String, group: Group) -> Self {
        Self {
            name,
            group,
            latency: Default::default(),
            rate1: Vec::new(),
            rate_k: Vec::new(),
            mbps: Default::default(),
            allocs: Vec::new(),
            cpu: Vec::new(),
            alone: Default::default(),
            notes: Vec::new(),
        }
    }

    fn note(&mut self, what: &str, o: &Outcome) -> Option<()> {
        if let Err(Skip::Absent(reason)) = o {
            let n = format!("{what}: {reason}");
            if !self.notes.contains(&n) {
                self.notes.push(n);
            }
        }
        o.as_ref().ok().map(|_| ())
    }

    /// Adds one repeat of the ping-pong.
    pub fn add_round_trips(&mut self, o: Outcome) {
        if self.note("round trips", &o).is_none() {
            return;
        }
        let Ok(mut m) = o else { return };
        m.samples.sort_unstable();
        for (i, p) in PERCENTILES.iter().enumerate() {
            self.latency[i].push(percentile_us(&m.samples, *p));
        }
        self.rate1.push(per_second(&m));
        self.allocs.push(m.allocs as f64 / m.ops.max(1) as f64);
        self.cpu
            .push(m.cpu.as_secs_f64() * 1e6 / m.ops.max(1) as f64);
    }

    /// Adds one repeat of the run with many calls in flight.
    pub fn add_in_flight(&mut self, o: Outcome) {
        if self.note("in flight", &o).is_none() {
            return;
        }
        if let Ok(m) = o {
            self.rate_k.push(per_second(&m));
        }
    }

    /// Adds one repeat of the one-way run of [`SIZES`]`[i]`.
    pub fn add_one_way(&mut self, i: usize, o: Outcome) {
        if self
            .note(&format!("one-way {}", SIZE_NAMES[i]), &o)
            .is_none()
        {
            return;
        }
        if let Ok(m) = o {
            let bytes = (SIZES[i] as u64 * m.ops) as f64;
            self.mbps[i].push(bytes / m.wall.as_secs_f64() / 1e6);
        }
    }

    /// Adds one run of the peer's own program.
    pub fn add_alone(&mut self, o: Result<Alone, Skip>) {
        match o {
            Ok(a) => {
                self.alone[0].push(a.p50);
                self.alone[1].push(a.p99);
            }
            Err(e) => {
                let _ = self.note("alone", &Err(e));
            }
        }
    }

    /// `None` when the row has no stand-alone figure; else whether its p50 lies within
    /// [`ALONE_TOLERANCE`] of it.
    pub fn comparable(&self) -> Option<bool> {
        if self.alone[0].is_empty() {
            return None;
        }
        let (row, alone) = (self.get(P50), self.get(Metric::AloneP50));
        Some((row - alone).abs() <= ALONE_TOLERANCE * alone)
    }

    /// The median over the repeats of `metric` (NaN when not measured).
    pub fn get(&self, metric: Metric) -> f64 {
        median(match metric {
            Metric::Latency(i) => &self.latency[i],
            Metric::Rate1 => &self.rate1,
            Metric::RateK => &self.rate_k,
            Metric::MBps(i) => &self.mbps[i],
            Metric::AllocsPerCall => &self.allocs,
            Metric::CpuPerCall => &self.cpu,
            Metric::AloneP50 => &self.alone[0],
            Metric::AloneP99 => &self.alone[1],
        })
    }
}

fn per_second(m: &Measured) -> f64 {
    m.ops as f64 / m.wall.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run(us: u64, n: u64) -> Measured {
        Measured {
            ops: n,
            wall: Duration::from_micros(us * n),
            cpu: Duration::from_micros(2 * us * n),
            allocs: 3 * n,
            samples: (0..n).map(|_| Duration::from_micros(us)).collect(),
        }
    }

    #[test]
    fn medians_over_repeats_and_per_call_counts() {
        let mut r = RowResult::new("x".into(), Group::Xrpc);
        for us in [10, 30, 20] {
            r.add_round_trips(Ok(run(us, 100)));
        }
        assert_eq!(r.get(P50), 20.0);
        assert_eq!(r.get(Metric::AllocsPerCall), 3.0);
        assert_eq!(r.get(Metric::CpuPerCall), 40.0);
        assert!((r.get(Metric::Rate1) - 50_000.0).abs() < 1.0);
        assert!(r.get(Metric::RateK).is_nan());
    }

    #[test]
    fn absent_reasons_are_kept_once_and_not_applicable_is_silent() {
        let mut r = RowResult::new("x".into(), Group::Peer);
        r.add_round_trips(Err(Skip::Absent("does not build".into())));
        r.add_round_trips(Err(Skip::Absent("does not build".into())));
        r.add_in_flight(Err(Skip::NotApplicable));
        assert_eq!(r.notes, vec!["round trips: does not build".to_string()]);
        assert!(r.get(P50).is_nan());
    }

    #[test]
    fn a_peer_row_is_comparable_within_the_tolerance_of_its_alone_figure() {
        let mut r = RowResult::new("x".into(), Group::Peer);
        r.add_round_trips(Ok(run(10, 100)));
        assert_eq!(r.comparable(), None);
        r.add_alone(Ok(Alone {
            p50: 9.0,
            p99: 20.0,
        }));
        assert_eq!(r.comparable(), Some(true));
        let mut far = RowResult::new("y".into(), Group::Peer);
        far.add_round_trips(Ok(run(10, 100)));
        far.add_alone(Ok(Alone {
            p50: 8.0,
            p99: 20.0,
        }));
        assert_eq!(far.comparable(), Some(false));
        far.add_alone(Err(Skip::Absent("no server".into())));
        assert_eq!(far.notes, vec!["alone: no server".to_string()]);
    }

    #[test]
    fn one_way_rate_is_bytes_over_wall_time() {
        let mut r = RowResult::new("x".into(), Group::Baseline);
        let m = Measured {
            ops: 1000,
            wall: Duration::from_millis(1),
            ..Default::default()
        };
        r.add_one_way(1, Ok(m));
        // 1000 x 4096 B in 1 ms = 4096 MB/s.
        assert!((r.get(Metric::MBps(1)) - 4096.0).abs() < 1e-6);
    }
}
