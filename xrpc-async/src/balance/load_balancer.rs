//! [`LoadBalancer`]: the core's [`Balancer`] shared by every call of a client, fed by a
//! [`Discovery`]. It reads the clock and refreshes discovery when due, on a short-lived thread
//! (a DNS lookup blocks), so calls keep going with the endpoints they have meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use xrpc_proto::balance::{
    Balancer, Endpoint, EndpointStatus, LoadBalancerConfig, Outcome, Pick, PickError, Rng,
    Strategy, Update,
};

use super::discovery::{Discovery, DiscoveryError};

struct Shared {
    balancer: Mutex<Balancer>,
    discovery: Arc<dyn Discovery>,
    /// A refresh thread is running.
    refreshing: AtomicBool,
    /// Discovery answered at least once.
    discovered: AtomicBool,
    /// Bumped whenever discovery removes endpoints (their pooled connections can go).
    removals: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Balancer> {
        self.balancer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refresh(&self) -> Result<Update, DiscoveryError> {
        let endpoints = self.discovery.discover()?;
        let update = self.lock().update(endpoints);
        if !update.removed.is_empty() {
            self.removals.fetch_add(1, Ordering::AcqRel);
        }
        self.discovered.store(true, Ordering::Release);
        Ok(update)
    }
}

/// Chooses endpoints for calls: the endpoint set from discovery, a [`Strategy`], health,
/// failover and stream affinity (see [`xrpc_proto::balance`]). Shared by the calls of a
/// [`LoadBalancedClient`](super::LoadBalancedClient); usable on its own by any adapter.
pub struct LoadBalancer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LoadBalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LoadBalancer")
            .field(&*self.shared.lock())
            .finish()
    }
}

/// A seed for the balancer's randomness that differs between balancers and runs, without a
/// clock read (std's per-map random hash keys).
fn seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5852_u64)
}

impl LoadBalancer {
    /// A balancer over what `discovery` finds, choosing with `strategy`, default settings.
    pub fn new<D: Discovery>(discovery: Arc<D>, strategy: impl Strategy) -> Self {
        Self::with_config(discovery, strategy, LoadBalancerConfig::default())
    }

    /// With explicit settings.
    pub fn with_config<D: Discovery>(
        discovery: Arc<D>,
        strategy: impl Strategy,
        config: LoadBalancerConfig,
    ) -> Self {
        Self::with_rng(discovery, strategy, config, Rng::new(seed()))
    }

    /// With explicit settings and randomness (a test replays its choices with a fixed seed).
    pub fn with_rng<D: Discovery>(
        discovery: Arc<D>,
        strategy: impl Strategy,
        config: LoadBalancerConfig,
        rng: Rng,
    ) -> Self {
        let strategy: Box<dyn Strategy> = Box::new(strategy);
        let mut balancer = Balancer::new(strategy, config, rng);
        balancer.set_refresh_interval(discovery.refresh_interval());
        Self {
            shared: Arc::new(Shared {
                balancer: Mutex::new(balancer),
                discovery,
                refreshing: AtomicBool::new(false),
                discovered: AtomicBool::new(false),
                removals: AtomicU64::new(0),
            }),
        }
    }

    /// Asks discovery now and applies what it found (on this thread: it may block on a DNS
    /// lookup). On an error the endpoints found before stay in use.
    pub fn refresh(&self) -> Result<Update, DiscoveryError> {
        self.shared.refresh()
    }

    /// Starts a refresh on a thread of its own if one is due (and none is running).
    fn refresh_if_due(&self, now: Instant) {
        if !self.shared.lock().refresh_due(now)
            || self.shared.refreshing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("xrpc-discovery".into())
            .spawn(move || {
                // An error keeps the endpoints found before; the next interval tries again.
                let _ = shared.refresh();
                shared.refreshing.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.shared.refreshing.store(false, Ordering::Release);
        }
    }

    /// How many discovery updates removed endpoints so far (a pool compares it to know when
    /// to drop their connections).
    pub fn removals(&self) -> u64 {
        self.shared.removals.load(Ordering::Acquire)
    }

    /// Chooses an endpoint for a call, other than those in `tried`; discovery is asked first
    /// if it never answered (on this thread: call [`refresh`](Self::refresh) first, as
    /// `LoadBalancedClient::init` does, where a first DNS lookup must not block a task).
    pub fn pick(&self, tried: &[xrpc_proto::balance::EndpointId]) -> Result<Pick, PickError> {
        if !self.shared.discovered.load(Ordering::Acquire) {
            // An error leaves the set empty: the pick says so.
            let _ = self.refresh();
        }
        let now = Instant::now();
        self.refresh_if_due(now);
        self.shared.lock().pick_excluding(now, tried)
    }

    /// The call of `pick` ended with `outcome`.
    pub fn finish(&self, pick: &Pick, outcome: Outcome) {
        self.shared.lock().finish(pick, Instant::now(), outcome);
    }

    /// Runs `f` on the core balancer (failover decisions, streams, the retry budget).
    pub fn with<T>(&self, f: impl FnOnce(&mut Balancer, Instant) -> T) -> T {
        f(&mut self.shared.lock(), Instant::now())
    }

    /// Every endpoint with its health, load and counters.
    pub fn status(&self) -> Vec<EndpointStatus> {
        self.shared.lock().status()
    }

    /// The endpoints that take calls (not removed by discovery).
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.status()
            .into_iter()
            .filter(|s| !s.removed)
            .map(|s| s.endpoint)
            .collect()
    }
}
