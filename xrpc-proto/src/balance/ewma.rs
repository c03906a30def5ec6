//! [`PeakEwma`]: an endpoint's latency estimate, as tower's `load::PeakEwma` — a slower
//! response raises the estimate at once (the peak), faster ones pull it down exponentially
//! with time, so an endpoint that turned slow is avoided immediately and trusted again only
//! gradually.

use std::time::{Duration, Instant};

/// A peak-sensitive exponentially weighted moving average of round-trip times.
#[derive(Debug, Clone)]
pub struct PeakEwma {
    /// The estimate, in nanoseconds.
    estimate_ns: f64,
    /// When the estimate was last updated.
    updated: Option<Instant>,
    /// The decay time constant, in nanoseconds.
    decay_ns: f64,
}

impl PeakEwma {
    /// An estimate that is `initial` until the first measurement, and decays with time
    /// constant `decay`.
    pub fn new(initial: Duration, decay: Duration) -> Self {
        Self {
            estimate_ns: initial.as_nanos() as f64,
            updated: None,
            decay_ns: (decay.as_nanos() as f64).max(1.0),
        }
    }

    /// Takes in a round trip of `rtt` that ended at `now`.
    pub fn observe(&mut self, now: Instant, rtt: Duration) {
        let rtt_ns = rtt.as_nanos() as f64;
        // The first measurement replaces the prior; a slower one is taken at once.
        if self.updated.is_none() || rtt_ns > self.estimate_ns {
            self.estimate_ns = rtt_ns;
        } else {
            let elapsed = self
                .updated
                .map_or(0.0, |t| now.saturating_duration_since(t).as_nanos() as f64);
            let w = (-elapsed / self.decay_ns).exp();
            self.estimate_ns = self.estimate_ns * w + rtt_ns * (1.0 - w);
        }
        self.updated = Some(now);
    }

    /// The estimate, in nanoseconds.
    pub fn estimate_ns(&self) -> f64 {
        self.estimate_ns
    }
}
