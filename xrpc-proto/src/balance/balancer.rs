//! [`Balancer`]: the endpoint set and every decision about it — which endpoint a call goes
//! to, what its outcome does to the endpoint's health and latency estimate, whether a failed
//! call may be retried, which endpoint a stream is bound to, and what a discovery update adds
//! and removes. Sans-IO: the adapter passes `now`, connects, calls, and reports back.
//!
//! A call is [`pick`](Balancer::pick)ed (its endpoint's in-flight count goes up) and
//! [`finish`](Balancer::finish)ed with its [`Outcome`] (down again; the latency and health are
//! updated). An endpoint removed by discovery takes no new calls but stays in the set until
//! its calls in flight have finished.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::budget::{BudgetConfig, RetryBudget};
use super::endpoint::Endpoint;
use super::ewma::PeakEwma;
use super::failover::{Delivery, Failover, FailoverConfig};
use super::health::{Admission, Health, HealthConfig, HealthState};
use super::outcome::Outcome;
use super::rng::Rng;
use super::strategy::{Candidate, Strategy};

/// The balancer's settings (the original API's `LoadBalancerConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadBalancerConfig {
    /// Ejection and re-admission.
    pub health: HealthConfig,
    /// Retrying failed calls on another endpoint.
    pub failover: FailoverConfig,
    /// The retry budget.
    pub retry_budget: BudgetConfig,
    /// The latency assumed of an endpoint before its first answer.
    pub default_rtt: Duration,
    /// How fast a latency estimate forgets a slow answer (the EWMA's time constant).
    pub latency_decay: Duration,
    /// How often discovery is asked again (`None`: the discovery's own interval).
    pub refresh_interval: Option<Duration>,
}

impl Default for LoadBalancerConfig {
    fn default() -> Self {
        Self {
            health: HealthConfig::default(),
            failover: FailoverConfig::default(),
            retry_budget: BudgetConfig::default(),
            default_rtt: Duration::from_millis(1),
            latency_decay: Duration::from_secs(1),
            refresh_interval: None,
        }
    }
}

/// An endpoint's identity in one balancer (stable while it stays in the set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(u64);

/// A stream's key in the balancer, for affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey(u64);

/// A chosen endpoint for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    /// The endpoint's identity.
    pub id: EndpointId,
    /// Its address.
    pub endpoint: Endpoint,
    /// When the call started (its latency is measured from here).
    pub started: Instant,
    /// Whether the call is the probe that decides the endpoint's re-admission.
    pub probe: bool,
}

/// No endpoint can take the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// Discovery found no endpoint.
    #[error("no endpoints")]
    NoEndpoints,
    /// Every endpoint is ejected (or probing); the first may be probed in `retry_in`.
    #[error("all {count} endpoints are unhealthy; the next may be tried in {retry_in:?}")]
    AllUnhealthy {
        /// Endpoints in the set.
        count: usize,
        /// How long until one may be probed.
        retry_in: Duration,
    },
    /// Every endpoint that may take calls was tried already.
    #[error("all {0} available endpoints were tried")]
    Exhausted(usize),
}

/// An endpoint as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStatus {
    /// Its identity.
    pub id: EndpointId,
    /// Its address.
    pub endpoint: Endpoint,
    /// Its health.
    pub health: HealthState,
    /// Consecutive failures.
    pub failures: u32,
    /// Calls in flight.
    pub in_flight: u32,
    /// Calls picked for it so far.
    pub calls: u64,
    /// Its latency estimate.
    pub latency: Duration,
    /// Whether discovery removed it (it stays until its calls in flight end).
    pub removed: bool,
}

/// What a discovery update changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// Endpoints that were not in the set.
    pub added: Vec<Endpoint>,
    /// Endpoints that are no longer (their connections may be closed once idle).
    pub removed: Vec<Endpoint>,
}

struct Entry {
    id: EndpointId,
    endpoint: Endpoint,
    health: Health,
    latency: PeakEwma,
    in_flight: u32,
    calls: u64,
    /// EWMA of failures per call (1 for an endpoint failure, 0 otherwise).
    error_rate: f64,
    removed: bool,
}

/// How much one call moves an endpoint's error rate.
const ERROR_RATE_ALPHA: f64 = 0.1;

/// The endpoint set and the balancing policy.
pub struct Balancer<S: Strategy = Box<dyn Strategy>> {
    entries: Vec<Entry>,
    next_id: u64,
    strategy: S,
    rng: Rng,
    config: LoadBalancerConfig,
    budget: RetryBudget,
    streams: HashMap<StreamKey, (EndpointId, Pick)>,
    next_stream: u64,
    refresh_interval: Option<Duration>,
    next_refresh: Option<Instant>,
}

impl<S: Strategy> std::fmt::Debug for Balancer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("strategy", &self.strategy.name())
            .field("endpoints", &self.status())
            .finish_non_exhaustive()
    }
}

impl<S: Strategy> Balancer<S> {
    /// An empty balancer choosing with `strategy`, its randomness from `rng`.
    pub fn new(strategy: S, config: LoadBalancerConfig, rng: Rng) -> Self {
        Self {
            entries: Vec::new(),
            next_id: 1,
            strategy,
            rng,
            budget: RetryBudget::new(config.retry_budget),
            config,
            streams: HashMap::new(),
            next_stream: 1,
            refresh_interval: config.refresh_interval,
            next_refresh: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &LoadBalancerConfig {
        &self.config
    }

    /// The strategy.
    pub fn strategy_mut(&mut self) -> &mut S {
        &mut self.strategy
    }

    /// Replaces the endpoint set with `endpoints` (as discovery found them): new ones are
    /// added healthy; missing ones take no new calls and leave once their calls in flight end;
    /// the others keep their state and their calls.
    pub fn update(&mut self, endpoints: impl IntoIterator<Item = Endpoint>) -> Update {
        let mut wanted: Vec<Endpoint> = endpoints.into_iter().collect();
        wanted.sort();
        wanted.dedup();
        let mut update = Update::default();
        for e in &mut self.entries {
            let keep = wanted.binary_search(&e.endpoint).is_ok();
            if !keep && !e.removed {
                e.removed = true;
                update.removed.push(e.endpoint.clone());
            } else if keep && e.removed {
                e.removed = false;
            }
        }
        for w in wanted {
            if !self.entries.iter().any(|e| e.endpoint == w) {
                let entry = self.entry(w.clone());
                self.entries.push(entry);
                update.added.push(w);
            }
        }
        self.entries.retain(|e| !(e.removed && e.in_flight == 0));
        update
    }

    fn entry(&mut self, endpoint: Endpoint) -> Entry {
        let id = EndpointId(self.next_id);
        self.next_id += 1;
        Entry {
            id,
            endpoint,
            health: Health::new(self.config.health),
            latency: PeakEwma::new(self.config.default_rtt, self.config.latency_decay),
            in_flight: 0,
            calls: 0,
            error_rate: 0.0,
            removed: false,
        }
    }

    /// Chooses an endpoint for a call at `now`.
    pub fn pick(&mut self, now: Instant) -> Result<Pick, PickError> {
        self.pick_excluding(now, &[])
    }

    /// Chooses an endpoint for a call at `now`, other than those in `tried` (a failover).
    ///
    /// An ejected endpoint whose back-off has passed is chosen first, as a probe (one call at a
    /// time); otherwise the strategy chooses among the admitted endpoints.
    pub fn pick_excluding(
        &mut self,
        now: Instant,
        tried: &[EndpointId],
    ) -> Result<Pick, PickError> {
        let eligible = |e: &Entry| !e.removed && !tried.contains(&e.id);
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| eligible(e) && e.health.admission(now) == Admission::Probe)
        {
            self.entries[i].health.begin_probe();
            return Ok(self.take(i, now, true));
        }
        let idx: Vec<usize> = (0..self.entries.len())
            .filter(|&i| {
                let e = &self.entries[i];
                eligible(e) && e.health.admission(now) == Admission::Open
            })
            .collect();
        if idx.is_empty() {
            let live = self.entries.iter().filter(|e| !e.removed).count();
            if live == 0 {
                return Err(PickError::NoEndpoints);
            }
            let untried = self.entries.iter().filter(|e| eligible(e)).count();
            if untried == 0 {
                return Err(PickError::Exhausted(live));
            }
            let retry_in = self
                .entries
                .iter()
                .filter_map(|e| e.health.ejected_until())
                .min()
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
            return Err(PickError::AllUnhealthy {
                count: live,
                retry_in,
            });
        }
        let candidates: Vec<Candidate<'_>> = idx
            .iter()
            .map(|&i| {
                let e = &self.entries[i];
                Candidate {
                    endpoint: &e.endpoint,
                    in_flight: e.in_flight,
                    latency_ns: e.latency.estimate_ns(),
                    error_rate: e.error_rate,
                }
            })
            .collect();
        let chosen = self.strategy.pick(&candidates, &mut self.rng);
        let i = idx[chosen.min(idx.len() - 1)];
        Ok(self.take(i, now, false))
    }

    fn take(&mut self, i: usize, now: Instant, probe: bool) -> Pick {
        let e = &mut self.entries[i];
        e.in_flight += 1;
        e.calls += 1;
        Pick {
            id: e.id,
            endpoint: e.endpoint.clone(),
            started: now,
            probe,
        }
    }

    /// The call of `pick` ended at `now` with `outcome`.
    pub fn finish(&mut self, pick: &Pick, now: Instant, outcome: Outcome) {
        self.end(pick, now, outcome, true);
    }

    fn end(&mut self, pick: &Pick, now: Instant, outcome: Outcome, measure: bool) {
        let Some(i) = self.entries.iter().position(|e| e.id == pick.id) else {
            return;
        };
        let e = &mut self.entries[i];
        e.in_flight = e.in_flight.saturating_sub(1);
        let failed = outcome.is_endpoint_failure();
        match outcome {
            Outcome::Success | Outcome::Remote => {
                if measure {
                    e.latency
                        .observe(now, now.saturating_duration_since(pick.started));
                }
                e.health.on_success();
            }
            Outcome::Transport | Outcome::Timeout | Outcome::Refused => {
                if outcome == Outcome::Timeout && measure {
                    // A timeout is at least this slow.
                    e.latency
                        .observe(now, now.saturating_duration_since(pick.started));
                }
                e.health.on_failure(now);
            }
            Outcome::Cancelled | Outcome::Local => e.health.on_neutral(now),
        }
        if !matches!(outcome, Outcome::Cancelled | Outcome::Local) {
            let x = if failed { 1.0 } else { 0.0 };
            e.error_rate += ERROR_RATE_ALPHA * (x - e.error_rate);
        }
        if e.removed && e.in_flight == 0 {
            self.entries.remove(i);
        }
    }

    /// A call (not a retry) is starting: it adds to the retry budget.
    pub fn record_request(&mut self, now: Instant) {
        self.budget.deposit(now);
    }

    /// Whether attempt number `attempt` (1 for the first) of a call, which ended with
    /// `outcome` after getting as far as `delivery`, may be retried on another endpoint; `Ok`
    /// takes the retry from the budget.
    pub fn failover(
        &mut self,
        now: Instant,
        attempt: u32,
        outcome: Outcome,
        delivery: Delivery,
        idempotent: bool,
    ) -> Result<(), Failover> {
        self.config
            .failover
            .check(attempt, outcome, delivery, idempotent)?;
        if !self.budget.withdraw(now) {
            return Err(Failover::BudgetSpent);
        }
        Ok(())
    }

    /// Opens a stream: chooses its endpoint, to which every message of the stream then goes
    /// ([`stream_endpoint`](Self::stream_endpoint)) until it is closed.
    pub fn open_stream(&mut self, now: Instant) -> Result<(StreamKey, Pick), PickError> {
        let pick = self.pick(now)?;
        let key = StreamKey(self.next_stream);
        self.next_stream += 1;
        self.streams.insert(key, (pick.id, pick.clone()));
        Ok((key, pick))
    }

    /// The endpoint of an open stream (even if it has since been ejected or removed: a
    /// stream never moves; its messages fail with its endpoint).
    pub fn stream_endpoint(&self, key: StreamKey) -> Option<&Pick> {
        self.streams.get(&key).map(|(_, p)| p)
    }

    /// The stream ended at `now` with `outcome` (its duration is not a latency).
    pub fn close_stream(&mut self, key: StreamKey, now: Instant, outcome: Outcome) {
        if let Some((_, pick)) = self.streams.remove(&key) {
            self.end(&pick, now, outcome, false);
        }
    }

    /// Open streams.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Sets how often discovery is asked again (`None`: never).
    pub fn set_refresh_interval(&mut self, interval: Option<Duration>) {
        self.refresh_interval = self.config.refresh_interval.or(interval);
    }

    /// Whether discovery is to be asked again at `now`; `true` schedules the next time, so
    /// one caller refreshes.
    pub fn refresh_due(&mut self, now: Instant) -> bool {
        let Some(interval) = self.refresh_interval else {
            return false;
        };
        match self.next_refresh {
            Some(t) if now < t => false,
            _ => {
                self.next_refresh = Some(now + interval);
                true
            }
        }
    }

    /// The next instant at which something changes without input: a refresh is due or an
    /// ejected endpoint may be probed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ejections = self.entries.iter().filter_map(|e| e.health.ejected_until());
        ejections.chain(self.next_refresh).min()
    }

    /// Every endpoint, as reported.
    pub fn status(&self) -> Vec<EndpointStatus> {
        self.entries
            .iter()
            .map(|e| EndpointStatus {
                id: e.id,
                endpoint: e.endpoint.clone(),
                health: e.health.state(),
                failures: e.health.failures(),
                in_flight: e.in_flight,
                calls: e.calls,
                latency: Duration::from_nanos(e.latency.estimate_ns() as u64),
                removed: e.removed,
            })
            .collect()
    }

    /// Endpoints in the set that discovery has not removed.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| !e.removed).count()
    }

    /// Whether the set has no endpoint that discovery has not removed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
