//! [`Attempts`]: one call's way through the endpoints — failover, retries and the retry
//! budget as one small state machine, the same for a unary call, a notification and the opening
//! of a stream. The adapter asks it for an endpoint, connects, calls, and reports what
//! happened; it answers with the next endpoint to try or the error the call ends with, which
//! names the endpoint and why the call was not tried again.
//!
//! ```text
//! start ──► pick ──► connect ──► call ──► succeeded        (a call: finished; a stream: bound)
//!             ▲         │          │
//!             │   connect_failed  call_failed
//!             │         ▼          ▼
//!             └──── retry? ── no ──► the call's error, explained
//! ```
//!
//! The rules, each decided here once:
//! - a connection that could not be made means the request was not sent, and the endpoint is
//!   ejected at once; a call failed on an open connection may have run
//!   ([`Delivery::of`]), so it is retried only if idempotent (or refused by the server);
//! - only the endpoint's failures are retried ([`Outcome::is_endpoint_failure`]), each on an
//!   endpoint this call has not tried;
//! - retries are bounded by [`FailoverConfig::max_attempts`](super::FailoverConfig::max_attempts) and the
//!   [`RetryBudget`](super::RetryBudget), except the first
//!   [`FailoverConfig::max_connect_retries`](super::FailoverConfig::max_connect_retries) after connections refused or unreachable, which
//!   cost no server anything;
//! - a call explores with its first attempt only: that one may probe an ejected endpoint or
//!   try one never measured; its retries go to admitted endpoints that have answered before,
//!   while there are any.

use std::time::Instant;

use super::balancer::{Balancer, EndpointId, Pick, PickError, StreamKey};
use super::endpoint::Endpoint;
use super::failover::{Delivery, Failover};
use super::outcome::Outcome;
use super::strategy::Strategy;
use crate::error::TransportError;
use crate::rpc_error::RpcError;

/// One call's attempts on the endpoints of a [`Balancer`].
#[derive(Debug, Clone)]
pub struct Attempts {
    /// The call may run twice without harm.
    idempotent: bool,
    /// It opens a stream (bound to its endpoint on success; its duration is not a latency).
    stream: bool,
    /// The endpoints tried, the current one included.
    tried: Vec<EndpointId>,
    /// The attempt in progress.
    current: Option<Pick>,
    /// Retries counted against `max_attempts` and the budget.
    retries: u32,
    /// Retries after connections refused, within `max_connect_retries`.
    connect_retries: u32,
}

impl Attempts {
    /// A unary call or a notification; `idempotent` if it may run twice without harm (then it
    /// is retried even after it may have run).
    pub fn call(idempotent: bool) -> Self {
        Self::new(idempotent, false)
    }

    /// The opening of a stream: retried only if it cannot have run; once open, it stays on its
    /// endpoint ([`succeeded`](Self::succeeded) binds it).
    pub fn stream() -> Self {
        Self::new(false, true)
    }

    fn new(idempotent: bool, stream: bool) -> Self {
        Self {
            idempotent,
            stream,
            tried: Vec::new(),
            current: None,
            retries: 0,
            connect_retries: 0,
        }
    }

    /// The attempt in progress (its endpoint), if any.
    pub fn current(&self) -> Option<&Pick> {
        self.current.as_ref()
    }

    /// Attempts made so far, the current one included.
    pub fn made(&self) -> usize {
        self.tried.len()
    }

    /// Starts the call at `now`: it counts toward the retry budget, and its first endpoint is
    /// chosen. An error means no endpoint can take it.
    pub fn start<S: Strategy>(
        &mut self,
        balancer: &mut Balancer<S>,
        now: Instant,
    ) -> Result<Pick, RpcError> {
        balancer.record_request(now);
        balancer
            .choose(now, &self.tried, false)
            .map(|pick| self.begin(pick))
            .map_err(unavailable)
    }

    fn begin(&mut self, pick: Pick) -> Pick {
        self.tried.push(pick.id);
        self.current = Some(pick.clone());
        pick
    }

    /// The connection for the current attempt is ready at `now`: the request goes now, and its
    /// latency is counted from here (making a connection is not the endpoint's latency).
    pub fn connected(&mut self, now: Instant) {
        if let Some(pick) = &mut self.current {
            pick.started = now;
        }
    }

    /// No connection to the current attempt's endpoint could be made (`error`, the
    /// connector's): the request was not sent, and the endpoint is ejected if the failure is
    /// its own. `Ok`: the endpoint to try next; `Err`: the error the call ends with.
    pub fn connect_failed<S: Strategy>(
        &mut self,
        balancer: &mut Balancer<S>,
        now: Instant,
        error: RpcError,
    ) -> Result<Pick, RpcError> {
        let Some(pick) = self.current.take() else {
            return Err(error);
        };
        let outcome = error.outcome();
        balancer.end_unconnected(&pick, now, outcome);
        // Refused or unreachable is quick to find out and cost no server anything; a timed-out
        // connection attempt cost its whole timeout.
        let quick = matches!(
            error,
            RpcError::Transport(TransportError::ConnectionFailed(_))
        );
        self.retry(balancer, now, &pick, error, Delivery::NotSent, quick)
    }

    /// The current attempt's call failed with `error` on an open connection. `Ok`: the endpoint
    /// to try next; `Err`: the error the call ends with.
    pub fn call_failed<S: Strategy>(
        &mut self,
        balancer: &mut Balancer<S>,
        now: Instant,
        error: RpcError,
    ) -> Result<Pick, RpcError> {
        let Some(pick) = self.current.take() else {
            return Err(error);
        };
        balancer.end(&pick, now, error.outcome(), !self.stream);
        let delivery = Delivery::of(&error);
        self.retry(balancer, now, &pick, error, delivery, false)
    }

    /// Whether the call that failed on `pick` with `error` is tried again, and where.
    fn retry<S: Strategy>(
        &mut self,
        balancer: &mut Balancer<S>,
        now: Instant,
        pick: &Pick,
        error: RpcError,
        delivery: Delivery,
        quick: bool,
    ) -> Result<Pick, RpcError> {
        let config = balancer.config().failover;
        let outcome = error.outcome();
        if let Err(why) = config.check(outcome, delivery, self.idempotent) {
            return Err(explain(error, &pick.endpoint, why));
        }
        let free = quick && self.connect_retries < config.max_connect_retries;
        if !free {
            if self.retries >= config.max_attempts {
                let why = Failover::AttemptsExhausted(self.tried.len() as u32);
                return Err(explain(error, &pick.endpoint, why));
            }
            if !balancer.budget_mut().has_retry(now) {
                return Err(explain(error, &pick.endpoint, Failover::BudgetSpent));
            }
        }
        match balancer.choose(now, &self.tried, true) {
            Ok(next) => {
                if free {
                    self.connect_retries += 1;
                } else {
                    balancer.budget_mut().withdraw(now);
                    self.retries += 1;
                }
                Ok(self.begin(next))
            }
            Err(e) => Err(explain(error, &pick.endpoint, Failover::NoEndpoint(e))),
        }
    }

    /// The current attempt succeeded at `now`: a call is finished (its latency measured); a
    /// stream is bound to its endpoint and its key returned (close it with
    /// [`Balancer::close_stream`] when it ends).
    pub fn succeeded<S: Strategy>(
        &mut self,
        balancer: &mut Balancer<S>,
        now: Instant,
    ) -> Option<StreamKey> {
        let pick = self.current.take()?;
        if self.stream {
            Some(balancer.bind_stream(pick))
        } else {
            balancer.finish(&pick, now, Outcome::Success);
            None
        }
    }

    /// The call was given up by its caller at `now` (dropped, cancelled) during an attempt:
    /// the attempt ends as cancelled, telling nothing of its endpoint.
    pub fn abandon<S: Strategy>(&mut self, balancer: &mut Balancer<S>, now: Instant) {
        if let Some(pick) = self.current.take() {
            balancer.end(&pick, now, Outcome::Cancelled, false);
        }
    }
}

/// The error of a call no endpoint can take.
fn unavailable(e: PickError) -> RpcError {
    RpcError::Transport(TransportError::ConnectionFailed(format!(
        "no endpoint can take the call: {e}"
    )))
}

/// The error a call ends with when it is not tried again: to a disconnection or a failed
/// connection, the endpoint and the reason are added, so the caller can tell what happened.
fn explain(error: RpcError, endpoint: &Endpoint, why: Failover) -> RpcError {
    match (error, why) {
        (e, Failover::NotEndpointFailure) => e,
        (RpcError::Disconnected(m), why) => {
            RpcError::Disconnected(format!("{endpoint}: {m}; not retried: {why}"))
        }
        (RpcError::Transport(TransportError::ConnectionFailed(m)), why) => RpcError::Transport(
            TransportError::ConnectionFailed(format!("{endpoint}: {m}; not retried: {why}")),
        ),
        (e, _) => e,
    }
}
