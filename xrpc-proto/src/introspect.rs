//! Built-in introspection (PROTOCOL.md, "Introspection"): the reserved methods a server answers
//! for operators' tools — [`PING`] answers at once, [`METHODS`] lists the registered methods, [`STATS`] what the server
//! counted — their answers ([`MethodInfo`], [`StatsReport`], serde types the `xrpc` tool reads as
//! JSON), and the per-method counters behind [`STATS`] ([`MethodCounters`]: atomics only, a
//! fixed histogram of latencies, so counting a call takes no lock and memory is bounded per
//! method).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The prefix of the method names reserved for the server itself; an application's methods do
/// not start with it.
pub const RESERVED_PREFIX: &str = "xrpc.";

/// The method that answers the registered methods: `()` in, `Vec<`[`MethodInfo`]`>` out.
pub const METHODS: &str = "xrpc.methods";

/// The method that answers at once, for round-trip times and liveness: `()` in, `()` out.
pub const PING: &str = "xrpc.ping";

/// The method that answers what the server counted: `()` in, [`StatsReport`] out.
pub const STATS: &str = "xrpc.stats";

/// Whether `method` is one of the names reserved for the server ([`RESERVED_PREFIX`]).
pub fn is_reserved(method: &str) -> bool {
    method.starts_with(RESERVED_PREFIX)
}

/// One registered method, as [`METHODS`] answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodInfo {
    /// The method name.
    pub name: String,
    /// Its call kind: `unary`, `server-streaming`, `client-streaming` or `bidirectional`.
    pub kind: String,
    /// Its signature text (argument and result types, as the generated code names them) for a
    /// method defined with `#[service]` (or given one with `set_signature`).
    pub signature: Option<String>,
}

/// What a server counted, as [`STATS`] answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Milliseconds since the server was made.
    pub uptime_ms: u64,
    /// Connections being served now.
    pub connections: u64,
    /// Connections refused by the peer policy so far.
    pub peers_refused: u64,
    /// Notifications not delivered so far (all reasons).
    pub notifications_dropped: u64,
    /// Calls whose handler ran to an answer, over all methods.
    pub calls: u64,
    /// Of those, the ones that answered an error (or panicked).
    pub errors: u64,
    /// Request payload bytes handlers received, over all methods.
    pub bytes_in: u64,
    /// Response payload bytes handlers answered, over all methods.
    pub bytes_out: u64,
    /// Per method (only methods called at least once), sorted by name.
    pub methods: Vec<MethodStatsReport>,
}

/// One method's counts in a [`StatsReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodStatsReport {
    /// The method name.
    pub name: String,
    /// Calls whose handler ran to an answer.
    pub calls: u64,
    /// Of those, the ones that answered an error (or panicked).
    pub errors: u64,
    /// Request payload bytes received.
    pub bytes_in: u64,
    /// Response payload bytes answered.
    pub bytes_out: u64,
    /// Handler latency (from its start to its answer) in microseconds, as the upper bound of
    /// the histogram bucket the percentile falls in (a power of two).
    pub latency_us: Percentiles,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// The median.
    pub p50: u64,
    /// The 90th percentile.
    pub p90: u64,
    /// The 99th percentile.
    pub p99: u64,
    /// The largest.
    pub max: u64,
}

/// Buckets of the latency histogram: bucket `i` holds latencies below `2^i` µs (and at least
/// `2^(i-1)`); the last holds everything from about 18 minutes up.
const BUCKETS: usize = 31;

/// One method's live counters (shared by every connection; atomics only).
#[derive(Debug, Default)]
pub struct MethodCounters {
    // Calls are not counted apart: each is in exactly one latency bucket (an atomic
    // operation fewer a call).
    errors: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl MethodCounters {
    /// Counts one call whose handler answered after `elapsed`: an error or not, with
    /// `bytes_in` request and `bytes_out` response payload bytes.
    pub fn record(&self, elapsed: Duration, error: bool, bytes_in: u64, bytes_out: u64) {
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if bytes_in > 0 {
            self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        }
        if bytes_out > 0 {
            self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        }
        self.latency[bucket(elapsed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far, under `name` (`None` if the method was never called).
    pub fn report(&self, name: &str) -> Option<MethodStatsReport> {
        let hist: [u64; BUCKETS] = std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed));
        let calls = hist.iter().sum();
        if calls == 0 {
            return None;
        }
        Some(MethodStatsReport {
            name: name.to_owned(),
            calls,
            errors: self.errors.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            latency_us: percentiles(&hist),
        })
    }
}

/// The histogram bucket of a latency.
fn bucket(elapsed: Duration) -> usize {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    // 0 µs → 0, 1 → 1, 2..3 → 2, 4..7 → 3, …
    let b = (u64::BITS - us.leading_zeros()) as usize;
    b.min(BUCKETS - 1)
}

/// The upper bound, in µs, of bucket `i`.
fn upper(i: usize) -> u64 {
    1u64 << i
}

/// Percentiles of a histogram (upper bounds of the buckets they fall in).
fn percentiles(hist: &[u64; BUCKETS]) -> Percentiles {
    let total: u64 = hist.iter().sum();
    let at = |q: f64| {
        // The rank of the q-th percentile, 1-based.
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper(i);
            }
        }
        0
    };
    if total == 0 {
        return Percentiles::default();
    }
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: hist.iter().rposition(|&n| n > 0).map_or(0, upper),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_bucket_bounds() {
        let m = MethodCounters::default();
        assert!(m.report("m").is_none());
        for _ in 0..98 {
            m.record(Duration::from_micros(3), false, 10, 20);
        }
        m.record(Duration::from_micros(100), true, 10, 0);
        m.record(Duration::from_secs(10_000), false, 0, 0);
        let r = m.report("m").unwrap();
        assert_eq!(
            (r.calls, r.errors, r.bytes_in, r.bytes_out),
            (100, 1, 990, 1960)
        );
        assert_eq!(r.latency_us.p50, 4);
        assert_eq!(r.latency_us.p90, 4);
        assert_eq!(r.latency_us.p99, 128);
        assert_eq!(r.latency_us.max, 1 << (BUCKETS - 1));
    }

    #[test]
    fn reserved_names() {
        assert!(is_reserved(METHODS) && is_reserved(STATS) && is_reserved(PING));
        assert!(!is_reserved("kv.get"));
    }
}
