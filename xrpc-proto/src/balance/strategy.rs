//! [`Strategy`]: how the balancer chooses among the endpoints that may take a call. A strategy
//! is pure: it sees each candidate's numbers and returns an index; randomness comes from the
//! caller's [`Rng`]. The candidates are read by index ([`Candidates`]), each made when asked,
//! so that a pick among 10,000 endpoints allocates nothing and p2c reads two.
//!
//! | strategy | picks |
//! |---|---|
//! | [`RoundRobin`] | each in turn |
//! | [`Random`] | uniformly at random |
//! | [`LeastConnections`] | the fewest calls in flight (ties at random) |
//! | [`WeightedRoundRobin`] | in turn, in proportion to weights (smooth, as nginx's) |
//! | [`ScoreBased`] | the lowest score from latency, calls in flight and recent errors |
//! | [`P2c`] | the less loaded of two at random (power of two choices, as tower's `p2c`) |

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::endpoint::Endpoint;
use super::ewma::PeakEwma;
use super::rng::Rng;

/// What a strategy sees of one endpoint that may take the call.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The endpoint.
    pub endpoint: &'a Endpoint,
    /// Calls (and streams) in flight on it.
    pub in_flight: u32,
    /// Its recent error rate, 0 to 1 (an EWMA over its calls).
    pub error_rate: f64,
    latency: &'a PeakEwma,
    now: Instant,
}

impl<'a> Candidate<'a> {
    /// What the strategy sees of `endpoint` at `now`.
    pub(crate) fn new(
        endpoint: &'a Endpoint,
        in_flight: u32,
        error_rate: f64,
        latency: &'a PeakEwma,
        now: Instant,
    ) -> Self {
        Self {
            endpoint,
            in_flight,
            error_rate,
            latency,
            now,
        }
    }

    /// Its peak-EWMA latency estimate at the time of the pick, in nanoseconds (computed when
    /// asked: a strategy that looks at two candidates pays for two).
    pub fn latency_ns(&self) -> f64 {
        self.latency.estimate_ns(self.now)
    }

    /// Whether the latency of a call to it was ever measured.
    pub fn is_measured(&self) -> bool {
        self.latency.is_measured()
    }

    /// The load as tower's `PeakEwma` counts it: latency × (in flight + 1) — except that an
    /// endpoint that has not answered yet, has not failed and has nothing in flight costs 0, so
    /// that it is tried at the first chance, one call at a time, until measured (with the
    /// prior latency instead, an endpoint found after the others were measured faster than the
    /// prior would never be tried by sequential calls).
    pub fn load(&self) -> f64 {
        if self.in_flight == 0 && self.error_rate == 0.0 && !self.is_measured() {
            return 0.0;
        }
        self.latency_ns().max(1.0) * (f64::from(self.in_flight) + 1.0)
    }
}

/// The endpoints that may take a call, as a strategy sees them: [`len`](Self::len) of them,
/// each read by index.
pub struct Candidates<'a> {
    len: usize,
    get: &'a dyn Fn(usize) -> Candidate<'a>,
}

impl<'a> Candidates<'a> {
    /// `len` candidates, the `i`-th made by `get(i)`.
    pub(crate) fn new(len: usize, get: &'a dyn Fn(usize) -> Candidate<'a>) -> Self {
        Self { len, get }
    }

    /// How many there are (never 0 when a strategy is asked).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The candidate at `i` (`i < len()`).
    pub fn get(&self, i: usize) -> Candidate<'a> {
        (self.get)(i)
    }

    /// Every candidate, in index order.
    pub fn iter(&self) -> impl Iterator<Item = Candidate<'a>> + '_ {
        (0..self.len).map(|i| self.get(i))
    }
}

/// A way of choosing an endpoint (the original API's `LoadBalanceStrategy`).
pub trait Strategy: Send + 'static {
    /// The strategy's name, for logs.
    fn name(&self) -> &'static str;

    /// The index in `candidates` (never empty) of the endpoint to call.
    fn pick(&mut self, candidates: &Candidates<'_>, rng: &mut Rng) -> usize;
}

impl Strategy for Box<dyn Strategy> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn pick(&mut self, candidates: &Candidates<'_>, rng: &mut Rng) -> usize {
        (**self).pick(candidates, rng)
    }
}

/// Each endpoint in turn.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// Starts with the first endpoint.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Strategy for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn pick(&mut self, candidates: &Candidates<'_>, _rng: &mut Rng) -> usize {
        let i = self.next % candidates.len();
        self.next = self.next.wrapping_add(1);
        i
    }
}

/// An endpoint chosen uniformly at random.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

impl Random {
    /// The strategy.
    pub fn new() -> Self {
        Self
    }
}

impl Strategy for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn pick(&mut self, candidates: &Candidates<'_>, rng: &mut Rng) -> usize {
        rng.below(candidates.len())
    }
}

/// The index of a candidate with the least `key`, ties broken at random.
fn min_by_key_random(
    candidates: &Candidates<'_>,
    rng: &mut Rng,
    key: impl Fn(&Candidate<'_>) -> f64,
) -> usize {
    let mut best = f64::INFINITY;
    let mut ties = 0usize;
    let mut chosen = 0;
    for (i, c) in candidates.iter().enumerate() {
        let k = key(&c);
        if k < best {
            best = k;
            ties = 1;
            chosen = i;
        } else if k == best {
            // Reservoir sampling: each of the tied candidates is kept with equal chance.
            ties += 1;
            if rng.below(ties) == 0 {
                chosen = i;
            }
        }
    }
    chosen
}

/// The endpoint with the fewest calls in flight.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastConnections;

impl LeastConnections {
    /// The strategy.
    pub fn new() -> Self {
        Self
    }
}

impl Strategy for LeastConnections {
    fn name(&self) -> &'static str {
        "least-connections"
    }

    fn pick(&mut self, candidates: &Candidates<'_>, rng: &mut Rng) -> usize {
        min_by_key_random(candidates, rng, |c| f64::from(c.in_flight))
    }
}

/// Endpoints in turn, each as often as its weight says (smooth weighted round robin: the
/// picks of the heavier endpoints are spread out, not bunched).
#[derive(Debug, Clone)]
pub struct WeightedRoundRobin {
    weights: HashMap<Endpoint, u32>,
    default_weight: u32,
    current: HashMap<Endpoint, i64>,
}

impl Default for WeightedRoundRobin {
    fn default() -> Self {
        Self::new()
    }
}

impl WeightedRoundRobin {
    /// Every endpoint with weight 1 (plain round robin) until weights are given.
    pub fn new() -> Self {
        Self {
            weights: HashMap::new(),
            default_weight: 1,
            current: HashMap::new(),
        }
    }

    /// With a weight per endpoint (an endpoint not listed has weight 1; weight 0 is taken as
    /// 1, since an endpoint that should get nothing should not be discovered).
    pub fn with_weights(weights: impl IntoIterator<Item = (Endpoint, u32)>) -> Self {
        Self {
            weights: weights.into_iter().map(|(e, w)| (e, w.max(1))).collect(),
            ..Self::new()
        }
    }

    /// Sets the weight of `endpoint`.
    pub fn set_weight(&mut self, endpoint: Endpoint, weight: u32) {
        self.weights.insert(endpoint, weight.max(1));
    }

    fn weight(&self, e: &Endpoint) -> i64 {
        i64::from(*self.weights.get(e).unwrap_or(&self.default_weight))
    }
}

impl Strategy for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        "weighted-round-robin"
    }

    fn pick(&mut self, candidates: &Candidates<'_>, _rng: &mut Rng) -> usize {
        // Forget endpoints that are gone (the map stays as large as the set).
        if self.current.len() > candidates.len() * 2 {
            let present: HashSet<&Endpoint> = candidates.iter().map(|c| c.endpoint).collect();
            self.current.retain(|e, _| present.contains(e));
        }
        let mut total = 0i64;
        let mut chosen = 0;
        let mut best = i64::MIN;
        for (i, c) in candidates.iter().enumerate() {
            let w = self.weight(c.endpoint);
            total += w;
            let cur = match self.current.get_mut(c.endpoint) {
                Some(cur) => cur,
                None => self.current.entry(c.endpoint.clone()).or_insert(0),
            };
            *cur += w;
            if *cur > best {
                best = *cur;
                chosen = i;
            }
        }
        if let Some(cur) = self.current.get_mut(candidates.get(chosen).endpoint) {
            *cur -= total;
        }
        chosen
    }
}

/// The endpoint with the lowest score: latency × (in flight + 1) × (1 + `error_weight` ×
/// error rate), ties at random.
#[derive(Debug, Clone, Copy)]
pub struct ScoreBased {
    /// How much a recent error rate of 1 multiplies the score by, beyond 1 (default 10).
    pub error_weight: f64,
}

impl Default for ScoreBased {
    fn default() -> Self {
        Self { error_weight: 10.0 }
    }
}

impl ScoreBased {
    /// The strategy with the default weights.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Strategy for ScoreBased {
    fn name(&self) -> &'static str {
        "score-based"
    }

    fn pick(&mut self, candidates: &Candidates<'_>, rng: &mut Rng) -> usize {
        let w = self.error_weight;
        min_by_key_random(candidates, rng, |c| c.load() * (1.0 + w * c.error_rate))
    }
}

/// Power of two choices: two distinct endpoints at random, the one with the lower
/// [`load`](Candidate::load) wins (as tower's `balance::p2c` with `PeakEwma`).
#[derive(Debug, Clone, Copy, Default)]
pub struct P2c;

impl P2c {
    /// The strategy.
    pub fn new() -> Self {
        Self
    }
}

impl Strategy for P2c {
    fn name(&self) -> &'static str {
        "p2c"
    }

    fn pick(&mut self, candidates: &Candidates<'_>, rng: &mut Rng) -> usize {
        let n = candidates.len();
        if n == 1 {
            return 0;
        }
        let a = rng.below(n);
        // A second index, distinct from the first.
        let b = (a + 1 + rng.below(n - 1)) % n;
        if candidates.get(b).load() < candidates.get(a).load() {
            b
        } else {
            a
        }
    }
}
