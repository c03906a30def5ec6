//! [`Balancer`]: the endpoint set and every decision about it — which endpoint a call goes
//! to, what its outcome does to the endpoint's health and latency estimate, which endpoint a
//! stream is bound to, what a discovery update adds and removes, and when discovery is asked
//! again. Sans-IO: the adapter passes `now`, connects, calls, and reports back; a call's
//! retries on other endpoints are [`Attempts`](super::Attempts).
//!
//! A call is [`pick`](Balancer::pick)ed (its endpoint's in-flight count goes up) and
//! [`finish`](Balancer::finish)ed with its [`Outcome`] (down again; the latency and health are
//! updated). An endpoint removed by discovery takes no new calls but stays in the set until
//! its calls in flight have finished. Endpoints are indexed by identity and by address, so a
//! finish, and a discovery update, cost time in proportion to what they touch.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::budget::{BudgetConfig, RetryBudget};
use super::endpoint::Endpoint;
use super::ewma::PeakEwma;
use super::failover::FailoverConfig;
use super::health::{Admission, Health, HealthConfig, HealthState};
use super::outcome::Outcome;
use super::rng::Rng;
use super::strategy::{Candidate, Candidates, Strategy};
use super::update::Update;
use crate::idmap::{IdMap, id_map};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
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

/// How much one call moves an endpoint's error rate.
const ERROR_RATE_ALPHA: f64 = 0.1;

/// How soon discovery is asked again after it failed (or sooner, if its interval is shorter).
pub const DISCOVERY_RETRY: Duration = Duration::from_secs(1);

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

impl Entry {
    /// An outcome that says something about the endpoint moves its error rate.
    fn count_outcome(&mut self, outcome: Outcome) {
        if !matches!(outcome, Outcome::Cancelled | Outcome::Local) {
            let x = if outcome.is_endpoint_failure() {
                1.0
            } else {
                0.0
            };
            self.error_rate += ERROR_RATE_ALPHA * (x - self.error_rate);
        }
    }
}

/// A change of an endpoint's health worth telling, as [`Balancer::poll_event`] reports it
/// (once [`Balancer::record_events`] is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalancerEvent {
    /// The endpoint failed and takes no calls until `until`; then one call probes it.
    Ejected {
        /// The endpoint.
        endpoint: Endpoint,
        /// When it may be probed.
        until: Instant,
        /// Its consecutive failures.
        failures: u32,
    },
    /// Its probe succeeded: it takes calls again.
    Readmitted {
        /// The endpoint.
        endpoint: Endpoint,
    },
}

/// Most events kept for [`Balancer::poll_event`]; past it the oldest is dropped.
pub const MAX_EVENTS: usize = 256;

/// Queues the event, if any, of `e`'s health having gone from `before` to its state now
/// after a call ended with `outcome`.
fn note_health(
    events: &mut VecDeque<BalancerEvent>,
    e: &Entry,
    before: HealthState,
    outcome: Outcome,
) {
    let event = match (before, e.health.state()) {
        (HealthState::Probing, HealthState::Healthy) => BalancerEvent::Readmitted {
            endpoint: e.endpoint.clone(),
        },
        // A probe that ended neutral is sent again: not an ejection.
        (b, HealthState::Unhealthy)
            if b != HealthState::Unhealthy && outcome.is_endpoint_failure() =>
        {
            BalancerEvent::Ejected {
                endpoint: e.endpoint.clone(),
                until: e.health.ejected_until().unwrap_or_else(Instant::now),
                failures: e.health.failures(),
            }
        }
        _ => return,
    };
    if events.len() == MAX_EVENTS {
        events.pop_front();
    }
    events.push_back(event);
}

/// When discovery is to be asked next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// It never answered: now.
    Due,
    /// At this instant.
    At(Instant),
    /// Never again (it answered and has no refresh interval).
    Never,
}

/// The endpoint set and the balancing policy.
pub struct Balancer<S: Strategy = Box<dyn Strategy>> {
    entries: Vec<Entry>,
    /// The index in `entries` of each endpoint, by identity and by address.
    by_id: IdMap<usize>,
    by_endpoint: HashMap<Endpoint, usize>,
    /// Entries that discovery has not removed.
    live: usize,
    next_id: u64,
    strategy: S,
    rng: Rng,
    config: LoadBalancerConfig,
    budget: RetryBudget,
    streams: HashMap<StreamKey, Pick>,
    next_stream: u64,
    refresh_interval: Option<Duration>,
    refresh: Refresh,
    /// Reused by every pick for the indices of the endpoints that may take it.
    open: Vec<usize>,
    /// Ejections and re-admissions not yet polled, while recording.
    events: Option<VecDeque<BalancerEvent>>,
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
            by_id: id_map(),
            by_endpoint: HashMap::new(),
            live: 0,
            next_id: 1,
            strategy,
            rng,
            budget: RetryBudget::new(config.retry_budget),
            config,
            streams: HashMap::new(),
            next_stream: 1,
            refresh_interval: config.refresh_interval,
            refresh: Refresh::Due,
            open: Vec::new(),
            events: None,
        }
    }

    /// Starts (or stops) recording ejections and re-admissions for
    /// [`poll_event`](Self::poll_event); off by default, when nothing is recorded.
    pub fn record_events(&mut self, on: bool) {
        self.events = on.then(VecDeque::new);
    }

    /// The oldest ejection or re-admission not yet polled (at most [`MAX_EVENTS`] are kept).
    pub fn poll_event(&mut self) -> Option<BalancerEvent> {
        self.events.as_mut()?.pop_front()
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
    /// the others keep their state and their calls. Linear in the sizes of the set and of
    /// `endpoints`; an adapter that holds the balancer under a lock computes the difference
    /// outside it with [`Discovered`](super::Discovered) and [`apply`](Self::apply)s it.
    pub fn update(&mut self, endpoints: impl IntoIterator<Item = Endpoint>) -> Update {
        let mut members = HashSet::new();
        let mut answer = Vec::new();
        for e in endpoints {
            if !members.contains(&e) {
                members.insert(e.clone());
                answer.push(e);
            }
        }
        let removed = self
            .entries
            .iter()
            .filter(|e| !e.removed && !members.contains(&e.endpoint))
            .map(|e| e.endpoint.clone())
            .collect();
        let added = answer.into_iter().filter(|e| !self.contains(e)).collect();
        let update = Update { added, removed };
        self.apply(&update.added, &update.removed);
        update
    }

    /// Applies (part of) a discovery [`Update`]: `added` endpoints take calls (new ones
    /// healthy, ones still leaving with their state), `removed` ones take no new calls and
    /// leave once their calls in flight end. Time in proportion to the number of changes, so
    /// that a large update can be applied in parts, each under a short lock.
    pub fn apply(&mut self, added: &[Endpoint], removed: &[Endpoint]) {
        for e in removed {
            if let Some(&i) = self.by_endpoint.get(e) {
                let entry = &mut self.entries[i];
                if !entry.removed {
                    entry.removed = true;
                    self.live -= 1;
                }
                if entry.in_flight == 0 {
                    self.remove_at(i);
                }
            }
        }
        self.entries.reserve(added.len());
        self.by_id.reserve(added.len());
        self.by_endpoint.reserve(added.len());
        for e in added {
            match self.by_endpoint.get(e) {
                Some(&i) => {
                    let entry = &mut self.entries[i];
                    if entry.removed {
                        entry.removed = false;
                        self.live += 1;
                    }
                }
                None => self.insert(e.clone()),
            }
        }
    }

    fn insert(&mut self, endpoint: Endpoint) {
        let id = EndpointId(self.next_id);
        self.next_id += 1;
        let i = self.entries.len();
        self.by_id.insert(id.0, i);
        self.by_endpoint.insert(endpoint.clone(), i);
        self.entries.push(Entry {
            id,
            endpoint,
            health: Health::new(self.config.health),
            latency: PeakEwma::new(self.config.default_rtt, self.config.latency_decay),
            in_flight: 0,
            calls: 0,
            error_rate: 0.0,
            removed: false,
        });
        self.live += 1;
    }

    /// Drops the entry at `i` (the last entry takes its place).
    fn remove_at(&mut self, i: usize) {
        let gone = self.entries.swap_remove(i);
        self.by_id.remove(&gone.id.0);
        self.by_endpoint.remove(&gone.endpoint);
        if !gone.removed {
            self.live -= 1;
        }
        if let Some(moved) = self.entries.get(i) {
            self.by_id.insert(moved.id.0, i);
            self.by_endpoint.insert(moved.endpoint.clone(), i);
        }
    }

    /// Whether `endpoint` is in the set and takes calls (discovery has not removed it).
    pub fn contains(&self, endpoint: &Endpoint) -> bool {
        self.by_endpoint
            .get(endpoint)
            .is_some_and(|&i| !self.entries[i].removed)
    }

    /// Chooses an endpoint for a call at `now`.
    pub fn pick(&mut self, now: Instant) -> Result<Pick, PickError> {
        self.choose(now, &[], false)
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
        self.choose(now, tried, false)
    }

    /// A pick other than `tried`. For a `retry`, the endpoints known to answer come first: an
    /// endpoint due for a probe is chosen only if no admitted one is left, and among the
    /// admitted, those that have answered before, if any. So a call explores (probes an
    /// ejected endpoint, or tries one not yet measured) with its first attempt only, and many
    /// endpoints due for a probe, or found but dead, cost each call one attempt, not all of
    /// them.
    pub(crate) fn choose(
        &mut self,
        now: Instant,
        tried: &[EndpointId],
        retry: bool,
    ) -> Result<Pick, PickError> {
        let mut open = std::mem::take(&mut self.open);
        open.clear();
        let mut probe_at = None;
        let mut untried = 0usize;
        let mut measured = 0usize;
        let mut retry_at: Option<Instant> = None;
        for (i, e) in self.entries.iter().enumerate() {
            if e.removed || tried.contains(&e.id) {
                continue;
            }
            untried += 1;
            match e.health.admission(now) {
                Admission::Open => {
                    open.push(i);
                    measured += usize::from(e.latency.is_measured());
                }
                Admission::Probe => {
                    probe_at.get_or_insert(i);
                }
                Admission::Closed => {
                    if let Some(t) = e.health.ejected_until() {
                        retry_at = Some(retry_at.map_or(t, |r| r.min(t)));
                    }
                }
            }
        }
        if retry && measured > 0 && measured < open.len() {
            open.retain(|&i| self.entries[i].latency.is_measured());
        }
        let result = match probe_at {
            Some(i) if !retry || open.is_empty() => {
                self.entries[i].health.begin_probe();
                Ok(self.take(i, now, true))
            }
            _ if open.is_empty() => Err(if self.live == 0 {
                PickError::NoEndpoints
            } else if untried == 0 {
                PickError::Exhausted(self.live)
            } else {
                PickError::AllUnhealthy {
                    count: self.live,
                    retry_in: retry_at.map_or(Duration::ZERO, |t| t.saturating_duration_since(now)),
                }
            }),
            _ => {
                let entries = &self.entries;
                let indices = &open;
                let get = |k: usize| {
                    let e = &entries[indices[k]];
                    Candidate::new(&e.endpoint, e.in_flight, e.error_rate, &e.latency, now)
                };
                let candidates = Candidates::new(open.len(), &get);
                let chosen = self.strategy.pick(&candidates, &mut self.rng);
                let i = open[chosen.min(open.len() - 1)];
                Ok(self.take(i, now, false))
            }
        };
        self.open = open;
        result
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

    /// The call of `pick` ended at `now` with `outcome`; its duration is a latency if
    /// `measure`.
    pub(crate) fn end(&mut self, pick: &Pick, now: Instant, outcome: Outcome, measure: bool) {
        let Some(&i) = self.by_id.get(&pick.id.0) else {
            return;
        };
        let e = &mut self.entries[i];
        e.in_flight = e.in_flight.saturating_sub(1);
        let before = self.events.is_some().then(|| e.health.state());
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
        if let (Some(events), Some(before)) = (&mut self.events, before) {
            note_health(events, e, before, outcome);
        }
        e.count_outcome(outcome);
        if e.removed && e.in_flight == 0 {
            self.remove_at(i);
        }
    }

    /// The connection for the call of `pick` could not be made (the call never started).
    pub(crate) fn end_unconnected(&mut self, pick: &Pick, now: Instant, outcome: Outcome) {
        let Some(&i) = self.by_id.get(&pick.id.0) else {
            return;
        };
        let e = &mut self.entries[i];
        e.in_flight = e.in_flight.saturating_sub(1);
        Self::unreachable(e, now, outcome, &mut self.events);
        if e.removed && e.in_flight == 0 {
            self.remove_at(i);
        }
    }

    /// No connection could be made to `endpoint` at `now`, outside any call (a client
    /// connecting ahead of its calls), for a reason of kind `outcome`: if it is the
    /// endpoint's failure, the endpoint is ejected at once.
    pub fn connect_failed(&mut self, endpoint: &Endpoint, now: Instant, outcome: Outcome) {
        if let Some(&i) = self.by_endpoint.get(endpoint) {
            Self::unreachable(&mut self.entries[i], now, outcome, &mut self.events);
        }
    }

    fn unreachable(
        e: &mut Entry,
        now: Instant,
        outcome: Outcome,
        events: &mut Option<VecDeque<BalancerEvent>>,
    ) {
        let before = e.health.state();
        if outcome.is_endpoint_failure() {
            e.health.on_unreachable(now);
        } else {
            e.health.on_neutral(now);
        }
        if let Some(events) = events {
            note_health(events, e, before, outcome);
        }
        e.count_outcome(outcome);
    }

    /// A call (not a retry) is starting: it adds to the retry budget.
    pub fn record_request(&mut self, now: Instant) {
        self.budget.deposit(now);
    }

    /// The retry budget.
    pub(crate) fn budget_mut(&mut self) -> &mut RetryBudget {
        &mut self.budget
    }

    /// Opens a stream: chooses its endpoint, to which every message of the stream then goes
    /// ([`stream_endpoint`](Self::stream_endpoint)) until it is closed.
    pub fn open_stream(&mut self, now: Instant) -> Result<(StreamKey, Pick), PickError> {
        let pick = self.pick(now)?;
        Ok((self.bind_stream(pick.clone()), pick))
    }

    /// Binds `pick` (in flight) to a new stream until it is closed.
    pub(crate) fn bind_stream(&mut self, pick: Pick) -> StreamKey {
        let key = StreamKey(self.next_stream);
        self.next_stream += 1;
        self.streams.insert(key, pick);
        key
    }

    /// The endpoint of an open stream (even if it has since been ejected or removed: a
    /// stream never moves; its messages fail with its endpoint).
    pub fn stream_endpoint(&self, key: StreamKey) -> Option<&Pick> {
        self.streams.get(&key)
    }

    /// The stream ended at `now` with `outcome` (its duration is not a latency).
    pub fn close_stream(&mut self, key: StreamKey, now: Instant, outcome: Outcome) {
        if let Some(pick) = self.streams.remove(&key) {
            self.end(&pick, now, outcome, false);
        }
    }

    /// Open streams.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Sets how often discovery is asked again (`None`: never; the configured
    /// `refresh_interval`, if any, wins).
    pub fn set_refresh_interval(&mut self, interval: Option<Duration>) {
        self.refresh_interval = self.config.refresh_interval.or(interval);
    }

    /// Whether discovery is to be asked at `now`: it never answered, or its next refresh is
    /// due.
    pub fn refresh_due(&self, now: Instant) -> bool {
        match self.refresh {
            Refresh::Due => true,
            Refresh::At(t) => now >= t,
            Refresh::Never => false,
        }
    }

    /// When discovery is to be asked next, once it has answered (`None`: before its first
    /// answer, or never again).
    pub fn next_refresh(&self) -> Option<Instant> {
        match self.refresh {
            Refresh::At(t) => Some(t),
            Refresh::Due | Refresh::Never => None,
        }
    }

    /// Discovery answered at `now` (`ok`), or failed: the next refresh is one interval later,
    /// or, after a failure, at most [`DISCOVERY_RETRY`] later.
    pub fn refreshed(&mut self, now: Instant, ok: bool) {
        self.refresh = match (ok, self.refresh_interval) {
            (true, Some(interval)) => Refresh::At(now + interval),
            (true, None) => Refresh::Never,
            (false, interval) => {
                Refresh::At(now + interval.map_or(DISCOVERY_RETRY, |i| i.min(DISCOVERY_RETRY)))
            }
        };
    }

    /// The next instant at which something changes without input: a refresh is due or an
    /// ejected endpoint may be probed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ejections = self.entries.iter().filter_map(|e| e.health.ejected_until());
        ejections.chain(self.next_refresh()).min()
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
                latency: Duration::from_nanos(e.latency.last_estimate_ns() as u64),
                removed: e.removed,
            })
            .collect()
    }

    /// Endpoints in the set that discovery has not removed.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the set has no endpoint that discovery has not removed.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
}
