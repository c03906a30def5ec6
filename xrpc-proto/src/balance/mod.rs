//! Load balancing, as policy apart from mechanism (after tower's `balance`): the endpoint set,
//! health, latency estimates, strategies, a call's attempts (failover and the retry budget),
//! stream affinity, discovery updates and the connection pool's rules — all pure, with `now`
//! passed in and randomness from a seeded [`Rng`]. The adapters discover, connect and call,
//! and report outcomes back.
//!
//! | module | owns |
//! |---|---|
//! | [`endpoint`] | [`Endpoint`]: TCP, Unix, shared memory, custom |
//! | [`balancer`] | [`Balancer`]: the set, picks, outcomes, affinity, when discovery is asked |
//! | [`attempts`] | [`Attempts`]: one call's failover, retries and budget, for every call kind |
//! | [`update`] | [`Update`], [`Discovered`]: what a discovery answer changes, computed apart |
//! | [`strategy`] | [`Strategy`] and the six strategies |
//! | [`health`] | [`Health`]: failures, ejection, probe and re-admission |
//! | [`ewma`] | [`PeakEwma`]: latency estimates |
//! | [`outcome`] | [`Outcome`]: which failures count against an endpoint |
//! | [`failover`] | [`FailoverConfig`], [`Delivery`]: when a call may be tried elsewhere |
//! | [`budget`] | [`RetryBudget`]: how many retries the traffic allows |
//! | [`pool`] | [`PoolConfig`]: which connection a call uses, which are closed, the total cap |
//! | [`rng`] | [`Rng`]: seedable randomness |

pub mod attempts;
pub mod balancer;
pub mod budget;
pub mod endpoint;
pub mod ewma;
pub mod failover;
pub mod health;
pub mod outcome;
pub mod pool;
pub mod rng;
pub mod strategy;
pub mod update;

pub use attempts::Attempts;
pub use balancer::{
    Balancer, BalancerEvent, DISCOVERY_RETRY, EndpointId, EndpointStatus, LoadBalancerConfig,
    MAX_EVENTS, Pick, PickError, StreamKey,
};
pub use budget::{BudgetConfig, RetryBudget};
pub use endpoint::{Endpoint, EndpointError};
pub use ewma::PeakEwma;
pub use failover::{Delivery, Failover, FailoverConfig};
pub use health::{Admission, Health, HealthConfig, HealthState};
pub use outcome::Outcome;
pub use pool::{Checkout, PoolConfig, Slot};
pub use rng::Rng;
pub use strategy::{
    Candidate, Candidates, LeastConnections, P2c, Random, RoundRobin, ScoreBased, Strategy,
    Strategy as LoadBalanceStrategy, WeightedRoundRobin,
};
pub use update::{Discovered, Update};
