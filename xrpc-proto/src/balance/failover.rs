//! [`FailoverConfig`] and [`Failover`]: whether a failed call is tried again on another
//! endpoint. A call that never reached a server (no connection could be made) is always safe
//! to retry; one that may have run there is retried only if the caller said it is idempotent
//! (or the server refused it without running it). Every retry is bounded by the attempts
//! allowed and, unless it follows a connection that could not be made, by the
//! [`RetryBudget`](super::RetryBudget). [`Attempts`](super::Attempts) applies these rules to
//! one call.

use super::balancer::PickError;
use super::outcome::Outcome;
use crate::error::TransportError;
use crate::rpc_error::RpcError;

/// Failover settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverConfig {
    /// Whether failed calls are retried on another endpoint at all.
    pub enabled: bool,
    /// Retries after the first attempt, each on an endpoint not yet tried, each taken from the
    /// retry budget.
    pub max_attempts: u32,
    /// Further retries after attempts whose connection could not be made quickly (refused,
    /// unreachable — not timed out): the request never left, no server spent anything on it,
    /// and the next endpoint costs a connection attempt, so these are neither counted in
    /// `max_attempts` nor taken from the retry budget until this many are spent.
    pub max_connect_retries: u32,
}

impl Default for FailoverConfig {
    /// Enabled, two retries, and eight more after connections refused.
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: 2,
            max_connect_retries: 8,
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

impl Delivery {
    /// How far a call that failed with `error` on a connection got: a connection that could
    /// not be made (a client connecting when called) never sent it; anything else may have
    /// reached the server. (An attempt whose connection failed before the call was made is
    /// `NotSent` whatever its error: [`Attempts::connect_failed`](super::Attempts::connect_failed).)
    pub fn of(error: &RpcError) -> Self {
        match error {
            RpcError::Transport(TransportError::ConnectionFailed(_)) => Self::NotSent,
            _ => Self::MaybeRan,
        }
    }
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
    /// No endpoint other than those tried can take the call.
    #[error("no other endpoint can take the call: {0}")]
    NoEndpoint(PickError),
}

impl FailoverConfig {
    /// Whether a call that ended with `outcome`, having got as far as `delivery`, may be tried
    /// on another endpoint — before its attempts and the budget are counted.
    pub fn check(
        &self,
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
        Ok(())
    }
}
