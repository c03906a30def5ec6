//! (feature `tower`) The clients as `tower::Service`s and handlers in layers (see
//! [`xrpc_async::tower`]), and [`CallRetry`], a `tower::retry::Policy` of the balancer's rule.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
pub use xrpc_async::tower::{BoxError, Call, CallFuture, ServerCall, TowerCaller};

use crate::RpcError;

/// A `tower::retry::Policy` for [`Call`]s: a failed call is tried again, up to `attempts`
/// more times and after `backoff`, when [`Call::is_retryable`] says so — an endpoint's
/// failure (transport, timeout, refusal), and unless the server refused the call without
/// running it, only for an idempotent call. Errors of other layers (a `BoxError` that is not
/// an [`RpcError`], such as tower's `Elapsed`) are not retried: put the retry layer inside the
/// timeout layer, or give the call its own timeout ([`Call::with_timeout`]).
///
/// `tower::retry::Retry` clones the policy for every call: the count is per call.
#[derive(Debug, Clone, Copy)]
pub struct CallRetry {
    attempts: usize,
    backoff: Duration,
}

impl CallRetry {
    /// Up to `attempts` retries of a call, at once.
    pub fn new(attempts: usize) -> Self {
        Self {
            attempts,
            backoff: Duration::ZERO,
        }
    }

    /// The same policy waiting `backoff` before each retry.
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    fn retry_on(&mut self, call: &Call, error: Option<&RpcError>) -> Option<Backoff> {
        let error = error?;
        if self.attempts == 0 || !call.is_retryable(error) {
            return None;
        }
        self.attempts -= 1;
        Some(Backoff(Box::pin(tokio::time::sleep(self.backoff))))
    }
}

/// The wait before a retry.
pub struct Backoff(Pin<Box<tokio::time::Sleep>>);

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff").finish_non_exhaustive()
    }
}

impl Future for Backoff {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl ::tower::retry::Policy<Call, Bytes, RpcError> for CallRetry {
    type Future = Backoff;

    fn retry(&mut self, call: &mut Call, result: &mut Result<Bytes, RpcError>) -> Option<Backoff> {
        self.retry_on(call, result.as_ref().err())
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        Some(call.clone())
    }
}

impl ::tower::retry::Policy<Call, Bytes, BoxError> for CallRetry {
    type Future = Backoff;

    fn retry(&mut self, call: &mut Call, result: &mut Result<Bytes, BoxError>) -> Option<Backoff> {
        let error = result
            .as_ref()
            .err()
            .and_then(|e| e.downcast_ref::<RpcError>());
        self.retry_on(call, error)
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        Some(call.clone())
    }
}
