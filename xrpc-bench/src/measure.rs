//! What a measurement records: wall time, CPU time of the process and heap allocations over a
//! span of operations, and the time of each call in a ping-pong.

use std::future::Future;
use std::time::{Duration, Instant};

/// The counts of one run: how long, how much CPU, how many allocations, for how many operations.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Operations in the span (calls, or messages for one-way runs).
    pub ops: u64,
    /// Wall time of the span.
    pub wall: Duration,
    /// CPU time of this process (all threads, user + system) in the span, plus that of a peer
    /// process when the subject reports it.
    pub cpu: Duration,
    /// Heap allocations of this process in the span.
    pub allocs: u64,
    /// Time of each operation, for ping-pong runs (empty otherwise).
    pub samples: Vec<Duration>,
}

impl Measured {
    /// The counts as one line of text (durations in ns, samples last), for a row measured in a
    /// process of its own to hand back ([`Measured::from_line`]).
    pub fn to_line(&self) -> String {
        let mut s = format!(
            "{} {} {} {} {}",
            self.ops,
            self.wall.as_nanos(),
            self.cpu.as_nanos(),
            self.allocs,
            self.samples.len()
        );
        for d in &self.samples {
            s.push(' ');
            s.push_str(&d.as_nanos().to_string());
        }
        s
    }

    /// Reads what [`Measured::to_line`] wrote.
    pub fn from_line(line: &str) -> Result<Self, String> {
        let mut it = line.split_ascii_whitespace().map(|w| {
            w.parse::<u64>()
                .map_err(|e| format!("{w:?} in a measurement line: {e}"))
        });
        let mut next = || it.next().unwrap_or(Err("short measurement line".into()));
        let ops = next()?;
        let wall = Duration::from_nanos(next()?);
        let cpu = Duration::from_nanos(next()?);
        let allocs = next()?;
        let n = next()?;
        let samples = (0..n)
            .map(|_| next().map(Duration::from_nanos))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            ops,
            wall,
            cpu,
            allocs,
            samples,
        })
    }
}

/// CPU time used by this process so far, all threads, user + system.
pub fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// CPU time (user + system) used so far by another process of this user, from
/// `/proc/<pid>/stat`; `None` when it cannot be read. Resolution: one clock tick (10 ms).
pub fn other_process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_micros(ticks * 1_000_000 / TICKS_PER_SECOND))
}

/// `sysconf(_SC_CLK_TCK)` on every Linux since 2.6.
const TICKS_PER_SECOND: u64 = 100;

/// A span being measured: started before the first operation, finished after the last.
pub struct Span {
    start: Instant,
    cpu: Duration,
    allocs: u64,
}

impl Span {
    /// Starts measuring now.
    pub fn start() -> Self {
        Self {
            allocs: xrpc_shm::testing::allocations(),
            cpu: process_cpu(),
            start: Instant::now(),
        }
    }

    /// Ends the span after `ops` operations.
    pub fn finish(self, ops: u64) -> Measured {
        let wall = self.start.elapsed();
        Measured {
            ops,
            wall,
            cpu: process_cpu().saturating_sub(self.cpu),
            allocs: xrpc_shm::testing::allocations() - self.allocs,
            samples: Vec::new(),
        }
    }
}

/// Runs a ping-pong: `warmup` untimed calls, then `calls` calls each timed, inside one span.
/// The subject supplies the call; the loop is here so every subject is timed alike.
#[derive(Debug, Clone, Copy)]
pub struct Recorder {
    /// Untimed calls first.
    pub warmup: usize,
    /// Timed calls.
    pub calls: usize,
}

impl Recorder {
    /// Times `call(i)` for i in `0..warmup + calls`, each call on its own.
    pub fn run(self, mut call: impl FnMut(usize)) -> Measured {
        for i in 0..self.warmup {
            call(i);
        }
        let mut samples = Vec::with_capacity(self.calls);
        let span = Span::start();
        for i in self.warmup..self.warmup + self.calls {
            let t = Instant::now();
            call(i);
            samples.push(t.elapsed());
        }
        let mut m = span.finish(self.calls as u64);
        m.samples = samples;
        m
    }

    /// [`Recorder::run`] for an async call, awaited in the caller's task.
    pub async fn run_async<F, Fut>(self, mut call: F) -> Measured
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = ()>,
    {
        for i in 0..self.warmup {
            call(i).await;
        }
        let mut samples = Vec::with_capacity(self.calls);
        let span = Span::start();
        for i in self.warmup..self.warmup + self.calls {
            let t = Instant::now();
            call(i).await;
            samples.push(t.elapsed());
        }
        let mut m = span.finish(self.calls as u64);
        m.samples = samples;
        m
    }
}

/// The `p`-th percentile of sorted samples, in µs.
pub fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p / 100.0) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e6
}

/// The median of `v` (NaN when empty); NaNs are ignored.
pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measurement_survives_its_line() {
        let m = Measured {
            ops: 3,
            wall: Duration::from_nanos(1_234_567),
            cpu: Duration::from_nanos(89),
            allocs: 7,
            samples: vec![Duration::from_nanos(5), Duration::from_micros(2)],
        };
        let back = Measured::from_line(&m.to_line()).unwrap();
        assert_eq!(
            (back.ops, back.wall, back.cpu, back.allocs, back.samples),
            (m.ops, m.wall, m.cpu, m.allocs, m.samples)
        );
        assert!(Measured::from_line("1 2 3").is_err());
        assert!(Measured::from_line("1 2 3 4 2 5").is_err());
    }

    #[test]
    fn median_of_odd_and_even_counts_and_nan() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn percentiles_pick_the_sample_at_the_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile_us(&s, 50.0), 51.0);
        assert_eq!(percentile_us(&s, 99.0), 100.0);
        assert_eq!(percentile_us(&s, 99.9), 100.0);
    }

    #[test]
    fn cpu_time_of_this_process_is_seen_both_ways() {
        let before = process_cpu();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(process_cpu() > before);
        let mine = other_process_cpu(std::process::id()).expect("own /proc stat");
        assert!(mine > Duration::ZERO);
    }
}
