//! [`LoadBalancer`]: the core's [`Balancer`] shared by every call of a client, fed by a
//! [`Discovery`].
//!
//! Discovery is asked by one task on the runtime of the client that first uses the balancer
//! ([`start_discovery`](LoadBalancer::start_discovery)): the task sleeps on the runtime's timer
//! until the balancer says a refresh is due, runs the lookup through
//! [`Runtime::unblock`] (a system DNS lookup blocks: it never runs on a thread that runs tasks,
//! nor inside a call), computes what changed outside the balancer's lock ([`Discovered`]) and
//! applies only that under it. Calls wait for discovery's first answer, then go on with the
//! endpoints they have while later refreshes run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use xrpc_proto::balance::{
    Balancer, Discovered, Endpoint, EndpointStatus, LoadBalancerConfig, Rng, Strategy, Update,
};

use super::discovery::{Discovery, DiscoveryError};
use crate::rpc::RpcError;
use crate::runtime::{Runtime, Task, Timer};
use crate::signal::Signal;

struct BalancerCore {
    balancer: Mutex<Balancer>,
    discovery: Arc<dyn Discovery>,
    /// Discovery's last answer; held while an answer is compared with it and applied.
    discovered: Mutex<Discovered>,
    /// Discovery answered (or failed) at least once.
    answered: Signal,
    /// Why discovery last failed (`None`: its last answer came).
    failure: Mutex<Option<String>>,
    /// Bumped whenever discovery removes endpoints (their pooled connections can go).
    removals: AtomicU64,
    /// The task that asks discovery, once started.
    started: AtomicBool,
    refresher: Mutex<Option<Box<dyn Task>>>,
}

/// Changes of a discovery update applied under one take of the balancer's lock.
const APPLY_PART: usize = 512;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BalancerCore {
    fn lock(&self) -> MutexGuard<'_, Balancer> {
        lock(&self.balancer)
    }

    /// Applies discovery's `answer`, which came at `now`: the difference with the last one is
    /// computed before the balancer's lock is taken, and applied in parts of
    /// [`APPLY_PART`] changes, each under the lock once, so that calls wait for one part at
    /// most.
    fn apply(&self, answer: Result<Vec<Endpoint>, DiscoveryError>, now: Instant) -> Update {
        let mut discovered = lock(&self.discovered);
        let update = match answer {
            Ok(endpoints) => {
                let update = discovered.replace(endpoints);
                for part in update.removed.chunks(APPLY_PART) {
                    self.lock().apply(&[], part);
                }
                for part in update.added.chunks(APPLY_PART) {
                    self.lock().apply(part, &[]);
                }
                self.lock().refreshed(now, true);
                if !update.removed.is_empty() {
                    self.removals.fetch_add(1, Ordering::AcqRel);
                }
                *lock(&self.failure) = None;
                update
            }
            Err(e) => {
                self.lock().refreshed(now, false);
                *lock(&self.failure) = Some(e.to_string());
                Update::default()
            }
        };
        drop(discovered);
        self.answered.raise();
        update
    }
}

impl Drop for BalancerCore {
    fn drop(&mut self) {
        let refresher = self
            .refresher
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = refresher.take() {
            task.abort();
        }
    }
}

/// The task that asks discovery whenever the balancer says a refresh is due, until the
/// balancer is dropped (or discovery has no refresh interval and answered).
async fn refresh<R: Runtime>(shared: Weak<BalancerCore>, rt: R) {
    let mut timer: Option<R::Timer> = None;
    loop {
        // What to do, decided under the balancer's lock and acted on after it.
        let next = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let balancer = shared.lock();
            if balancer.refresh_due(rt.now()) {
                Ok(shared.discovery.clone())
            } else {
                Err(balancer.next_refresh())
            }
        };
        let discovery = match next {
            Ok(discovery) => discovery,
            Err(None) => return,
            Err(Some(at)) => {
                let timer = match &mut timer {
                    Some(t) => {
                        t.reset(at);
                        t
                    }
                    None => timer.insert(rt.timer(at)),
                };
                timer.await;
                continue;
            }
        };
        let answer = crate::runtime::unblock_boxed(&rt, move || discovery.discover())
            .await
            .unwrap_or_else(|| {
                Err(DiscoveryError {
                    what: "endpoints".into(),
                    reason: "the lookup panicked or could not run".into(),
                })
            });
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.apply(answer, rt.now());
    }
}

/// Chooses endpoints for calls: the endpoint set from discovery, a [`Strategy`], health,
/// failover and stream affinity (see [`xrpc_proto::balance`]). BalancerCore by the calls of a
/// [`LoadBalancedClient`](super::LoadBalancedClient); usable on its own by any adapter.
pub struct LoadBalancer {
    shared: Arc<BalancerCore>,
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
        // Ejections and re-admissions, logged by `with`.
        #[cfg(feature = "tracing")]
        balancer.record_events(true);
        Self {
            shared: Arc::new(BalancerCore {
                balancer: Mutex::new(balancer),
                discovery,
                discovered: Mutex::new(Discovered::new()),
                answered: Signal::default(),
                failure: Mutex::new(None),
                removals: AtomicU64::new(0),
                started: AtomicBool::new(false),
                refresher: Mutex::new(None),
            }),
        }
    }

    /// Starts the task that asks discovery, on `rt` (the first time; then it does nothing).
    /// The task stops when the balancer is dropped. Fails where `rt` cannot spawn (tokio:
    /// outside a runtime).
    pub fn start_discovery<R: Runtime>(&self, rt: &R) -> Result<(), RpcError> {
        if self.shared.started.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut refresher = lock(&self.shared.refresher);
        if refresher.is_some() {
            return Ok(());
        }
        rt.check().map_err(RpcError::ClientError)?;
        let task = rt.spawn(refresh(Arc::downgrade(&self.shared), rt.clone()));
        *refresher = Some(Box::new(task));
        self.shared.started.store(true, Ordering::Release);
        Ok(())
    }

    /// Ready once discovery has answered (or failed) for the first time.
    pub async fn discovered(&self) {
        std::future::poll_fn(|cx| self.shared.answered.poll_raised(cx)).await;
    }

    /// Why discovery's last attempt failed (`None`: it answered).
    pub fn discovery_error(&self) -> Option<String> {
        lock(&self.shared.failure).clone()
    }

    /// Asks discovery now, on this thread, and applies its answer as of `now` (for a caller
    /// without a runtime: it may block on a DNS lookup). On an error the endpoints found
    /// before stay in use.
    pub fn refresh(&self, now: Instant) -> Result<Update, DiscoveryError> {
        let answer = self.shared.discovery.discover();
        let failed = answer.as_ref().err().cloned();
        let update = self.shared.apply(answer, now);
        failed.map_or(Ok(update), Err)
    }

    /// How many discovery updates removed endpoints so far (a pool compares it to know when
    /// to drop their connections).
    pub fn removals(&self) -> u64 {
        self.shared.removals.load(Ordering::Acquire)
    }

    /// Runs `f` on the core balancer, under its lock (picks, outcomes, a call's
    /// [`Attempts`](xrpc_proto::balance::Attempts), streams).
    pub fn with<T>(&self, f: impl FnOnce(&mut Balancer) -> T) -> T {
        #[cfg(not(feature = "tracing"))]
        return f(&mut self.shared.lock());
        #[cfg(feature = "tracing")]
        {
            let mut b = self.shared.lock();
            let r = f(&mut b);
            // Logged outside the lock (no allocation when there is none).
            let events: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
            drop(b);
            events.iter().for_each(crate::trace::balancer_event);
            r
        }
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

    /// Whether `endpoint` takes calls (discovery found it and has not removed it).
    pub fn contains(&self, endpoint: &Endpoint) -> bool {
        self.shared.lock().contains(endpoint)
    }
}
