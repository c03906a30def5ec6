//! [`FailoverConfig`] and [`Failover`]: whether a failed call is tried again on another
//! endpoint. A call that never reached a server (no connection could be made, or it was known
//! closed) is always safe to retry; one that may have run there is retried only if the caller
//! said it is idempotent. Every retry is bounded by the attempts allowed and by the
//! [`RetryBudget`](super::RetryBudget).

use super::outcome::Outcome;

/// Failover settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverConfig {
    /// Whether failed calls are retried on another endpoint at all.
    pub enabled: bool,
    /// Retries after the first attempt (each on an endpoint not yet tried).
    pub max_attempts: u32,
}

impl Default for FailoverConfig {
    /// Enabled, two retries.
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: 2,
        }
    }
}

/// How far a failed attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The request was not sent (no connection).
    NotSent,
    /// The request was sent or may have been: the server may have run it.
    MaybeRan,
}

/// Why a failed call is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failover {
    /// The outcome does not call for another endpoint (an application error, a cancelled or
    /// locally refused call).
    #[error("the failure is not the endpoint's")]
    NotEndpointFailure,
    /// Failover is disabled.
    #[error("failover is disabled")]
    Disabled,
    /// The request may have run and the call is not idempotent.
    #[error("the request may have run on the server and the call is not idempotent")]
    NotIdempotent,
    /// Every allowed attempt was made.
    #[error("{0} attempts made")]
    AttemptsExhausted(u32),
    /// The retry budget is spent.
    #[error("the retry budget is spent")]
    BudgetSpent,
}

impl FailoverConfig {
    /// Whether attempt number `attempt` (1 for the first) that ended with `outcome` may be
    /// retried, before the budget is asked.
    pub fn check(
        &self,
        attempt: u32,
        outcome: Outcome,
        delivery: Delivery,
        idempotent: bool,
    ) -> Result<(), Failover> {
        if !outcome.is_endpoint_failure() {
            return Err(Failover::NotEndpointFailure);
        }
        if !self.enabled {
            return Err(Failover::Disabled);
        }
        if delivery == Delivery::MaybeRan && outcome != Outcome::Refused && !idempotent {
            return Err(Failover::NotIdempotent);
        }
        if attempt > self.max_attempts {
            return Err(Failover::AttemptsExhausted(attempt));
        }
        Ok(())
    }
}
