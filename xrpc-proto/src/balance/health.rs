//! [`Health`]: one endpoint's health — consecutive transport failures, ejection past a
//! threshold (or at once when no connection can be made to it), and re-admission: once the
//! ejection's back-off has passed, one call is let through as a probe; its success re-admits
//! the endpoint, its failure ejects it again for twice as long (up to a maximum).

use std::time::{Duration, Instant};

/// When an endpoint is ejected and when it is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Consecutive transport failures (or timeouts) that eject an endpoint (at least 1).
    pub max_failures: u32,
    /// How long the first ejection lasts.
    pub ejection_backoff: Duration,
    /// The longest ejection (the back-off doubles after each failed probe).
    pub max_ejection_backoff: Duration,
}

impl Default for HealthConfig {
    /// Three failures; ejected for 1 s, then 2 s, 4 s, ... up to 30 s.
    fn default() -> Self {
        Self {
            max_failures: 3,
            ejection_backoff: Duration::from_secs(1),
            max_ejection_backoff: Duration::from_secs(30),
        }
    }
}

/// An endpoint's health as reported ([`EndpointStatus`](super::EndpointStatus)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// No failure since the last success.
    Healthy,
    /// Some consecutive failures, fewer than the threshold.
    Degraded,
    /// Ejected: no calls until the back-off has passed.
    Unhealthy,
    /// The back-off has passed and one probe call is (or may be) in flight.
    Probing,
}

/// Whether an endpoint may take a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Yes, as any call.
    Open,
    /// Yes, as the probe that decides its re-admission.
    Probe,
    /// No (ejected, or its probe is in flight).
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    Ejected { until: Instant },
    Probing,
}

/// One endpoint's health.
#[derive(Debug, Clone)]
pub struct Health {
    state: State,
    failures: u32,
    /// The length of the next ejection.
    backoff: Duration,
    config: HealthConfig,
}

impl Health {
    /// A healthy endpoint.
    pub fn new(config: HealthConfig) -> Self {
        Self {
            state: State::Up,
            failures: 0,
            backoff: config.ejection_backoff,
            config,
        }
    }

    /// Whether a call may go to the endpoint at `now`.
    pub fn admission(&self, now: Instant) -> Admission {
        match self.state {
            State::Up => Admission::Open,
            State::Ejected { until } if now >= until => Admission::Probe,
            State::Ejected { .. } | State::Probing => Admission::Closed,
        }
    }

    /// When an ejected endpoint may be probed (`None` if it is not ejected).
    pub fn ejected_until(&self) -> Option<Instant> {
        match self.state {
            State::Ejected { until } => Some(until),
            _ => None,
        }
    }

    /// A probe call was sent.
    pub fn begin_probe(&mut self) {
        self.state = State::Probing;
    }

    /// A call was answered (by a result or by an application error: the server is alive).
    pub fn on_success(&mut self) {
        self.state = State::Up;
        self.failures = 0;
        self.backoff = self.config.ejection_backoff;
    }

    /// A call failed for a reason that counts against the endpoint (transport, timeout).
    pub fn on_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        match self.state {
            State::Probing => {
                self.backoff = (self.backoff * 2).min(self.config.max_ejection_backoff);
                self.eject(now);
            }
            State::Up if self.failures >= self.config.max_failures.max(1) => self.eject(now),
            State::Up | State::Ejected { .. } => {}
        }
    }

    /// No connection could be made to the endpoint (refused, unreachable, timed out): nothing
    /// listens there, or nothing answers, so it is ejected at once, without waiting for
    /// `max_failures` (a probe that fails so doubles the back-off, as any failed probe).
    pub fn on_unreachable(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        match self.state {
            State::Probing => {
                self.backoff = (self.backoff * 2).min(self.config.max_ejection_backoff);
                self.eject(now);
            }
            State::Up => self.eject(now),
            State::Ejected { .. } => {}
        }
    }

    /// A call ended without telling anything about the endpoint (cancelled by the caller, or
    /// refused locally): a probe that ended so is to be sent again.
    pub fn on_neutral(&mut self, now: Instant) {
        if self.state == State::Probing {
            self.state = State::Ejected { until: now };
        }
    }

    /// Ejects the endpoint for the current back-off.
    fn eject(&mut self, now: Instant) {
        self.state = State::Ejected {
            until: now + self.backoff,
        };
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The state, as reported.
    pub fn state(&self) -> HealthState {
        match self.state {
            State::Up if self.failures == 0 => HealthState::Healthy,
            State::Up => HealthState::Degraded,
            State::Ejected { .. } => HealthState::Unhealthy,
            State::Probing => HealthState::Probing,
        }
    }
}
