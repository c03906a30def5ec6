//! [`PeakEwma`]: an endpoint's latency estimate, as tower's `load::PeakEwma` — a slower
//! response raises the estimate at once (the peak), and the estimate decays exponentially
//! toward zero with time (as tower's does each time its load is read), so an endpoint that
//! turned slow is avoided immediately and trusted again only gradually; an endpoint left alone
//! because it was slow once looks cheaper as time passes, and is tried again.

use std::time::{Duration, Instant};

/// A peak-sensitive exponentially weighted moving average of round-trip times.
#[derive(Debug, Clone)]
pub struct PeakEwma {
    /// The estimate at `updated`, in nanoseconds (before the first measurement: the prior).
    estimate_ns: f64,
    /// When the estimate was last measured (`None`: never).
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

    /// The weight the estimate of the last measurement keeps at `now`.
    fn kept(&self, now: Instant) -> f64 {
        let elapsed = self
            .updated
            .map_or(0.0, |t| now.saturating_duration_since(t).as_nanos() as f64);
        (-elapsed / self.decay_ns).exp()
    }

    /// Takes in a round trip of `rtt` that ended at `now`: the estimate becomes the larger of
    /// `rtt` and the estimate as decayed to `now` (the first measurement replaces the prior).
    pub fn observe(&mut self, now: Instant, rtt: Duration) {
        let rtt_ns = rtt.as_nanos() as f64;
        let decayed = if self.updated.is_some() {
            self.estimate_ns(now)
        } else {
            0.0
        };
        self.estimate_ns = rtt_ns.max(decayed);
        self.updated = Some(self.updated.map_or(now, |t| t.max(now)));
    }

    /// The estimate at `now`, in nanoseconds: the last one, decayed toward zero with the time
    /// since it was measured (the prior, undecayed, before the first measurement).
    pub fn estimate_ns(&self, now: Instant) -> f64 {
        self.estimate_ns * self.kept(now)
    }

    /// The estimate as of its last measurement, in nanoseconds (for reports).
    pub fn last_estimate_ns(&self) -> f64 {
        self.estimate_ns
    }

    /// Whether a round trip was ever measured.
    pub fn is_measured(&self) -> bool {
        self.updated.is_some()
    }
}
