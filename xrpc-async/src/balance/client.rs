//! [`LoadBalancedClient`]: calls spread over the endpoints a [`LoadBalancer`] chooses, on
//! connections from a [`ConnectionPool`], with failover: a call that failed on an endpoint's
//! account is tried on another when that is safe — always if it never reached a server, and
//! after it may have run only if the caller said it is idempotent
//! ([`call_idempotent`](LoadBalancedClient::call_idempotent)) — within the retry budget.
//! A stream stays on the endpoint that opened it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_proto::balance::{
    Delivery, EndpointId, Failover, Outcome, Pick, PickError, PoolConfig, StreamKey,
};
use xrpc_proto::{CallOptions, Codec};

use super::load_balancer::LoadBalancer;
use super::pool::{Connect, ConnectionPool};
use crate::channel::MessageChannel;
use crate::rpc::{RpcClient, RpcError, StreamReceiver, StreamSender};
use crate::runtime::Runtime;
use crate::transport::TransportError;

/// An RPC client over many servers (the original API's `LoadBalancedClient`).
pub struct LoadBalancedClient<T: MessageChannel, C: Codec, R: Runtime> {
    lb: Arc<LoadBalancer>,
    pool: ConnectionPool<T, C, R>,
    /// The balancer's removal count the pool was last trimmed at.
    trimmed: AtomicU64,
}

/// Ends a call's pick when the call ends, however it ends (dropped: cancelled).
struct PickGuard<'a> {
    lb: &'a LoadBalancer,
    pick: Pick,
    outcome: Outcome,
}

impl Drop for PickGuard<'_> {
    fn drop(&mut self) {
        self.lb.finish(&self.pick, self.outcome);
    }
}

/// The error a call ends with when it is not retried: the endpoint and the reason are added
/// to a disconnection or connection failure, so the caller can tell what happened.
fn explain(e: RpcError, pick: &Pick, why: Failover) -> RpcError {
    let endpoint = &pick.endpoint;
    match (e, why) {
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

/// No endpoint could take the call: the first attempt's error.
fn unavailable(e: PickError) -> RpcError {
    RpcError::Transport(TransportError::ConnectionFailed(format!(
        "no endpoint can take the call: {e}"
    )))
}

impl<T: MessageChannel, C: Codec, R: Runtime> LoadBalancedClient<T, C, R> {
    /// A client choosing endpoints with `lb` and connecting to them with `connector` (the
    /// tokio adapter: `Arc::new(factory)` of a `ClientFactory`).
    pub fn new(lb: Arc<LoadBalancer>, connector: impl Connect<R, T, C>) -> Self {
        Self::with_pool_config(lb, connector, PoolConfig::default())
    }

    /// With explicit pool settings.
    pub fn with_pool_config(
        lb: Arc<LoadBalancer>,
        connector: impl Connect<R, T, C>,
        config: PoolConfig,
    ) -> Self {
        Self {
            lb,
            pool: ConnectionPool::new(config, connector),
            trimmed: AtomicU64::new(0),
        }
    }

    /// The load balancer.
    pub fn load_balancer(&self) -> &Arc<LoadBalancer> {
        &self.lb
    }

    /// The connection pool.
    pub fn pool(&self) -> &ConnectionPool<T, C, R> {
        &self.pool
    }

    /// Asks discovery and connects to every endpoint found; fails if discovery fails or no
    /// endpoint can be reached. (Calls do both lazily otherwise.)
    pub async fn init(&self) -> Result<(), RpcError> {
        self.lb
            .refresh()
            .map_err(|e| RpcError::Transport(TransportError::ConnectionFailed(e.to_string())))?;
        let endpoints = self.lb.endpoints();
        let mut last = None;
        let mut connected = 0;
        for e in &endpoints {
            match self.pool.get(e).await {
                Ok(_) => connected += 1,
                Err(err) => last = Some(err),
            }
        }
        match last {
            Some(e) if connected == 0 => Err(e),
            _ if endpoints.is_empty() => Err(unavailable(PickError::NoEndpoints)),
            _ => Ok(()),
        }
    }

    /// Drops the pooled connections of endpoints discovery removed since the last time.
    fn trim_pool(&self) {
        let removals = self.lb.removals();
        if self.trimmed.swap(removals, Ordering::AcqRel) != removals {
            self.pool.retain(&self.lb.endpoints());
        }
    }

    /// Runs `attempt` on a connection to a chosen endpoint, failing over as the policy allows.
    async fn run<O, F, Fut>(&self, idempotent: bool, mut attempt: F) -> Result<O, RpcError>
    where
        F: FnMut(RpcClient<T, C, R>) -> Fut,
        Fut: Future<Output = Result<O, RpcError>>,
    {
        self.trim_pool();
        self.lb.with(|b, now| b.record_request(now));
        let mut tried: Vec<EndpointId> = Vec::new();
        let mut last: Option<RpcError> = None;
        let mut n = 0;
        loop {
            n += 1;
            let pick = match self.lb.pick(&tried) {
                Ok(p) => p,
                Err(e) => return Err(last.unwrap_or_else(|| unavailable(e))),
            };
            let mut guard = PickGuard {
                lb: &self.lb,
                pick,
                outcome: Outcome::Cancelled,
            };
            let (res, delivery) = match self.pool.get(&guard.pick.endpoint).await {
                Err(e) => (Err(e), Delivery::NotSent),
                Ok(client) => (attempt(client).await, Delivery::MaybeRan),
            };
            let err = match res {
                Ok(v) => {
                    guard.outcome = Outcome::Success;
                    return Ok(v);
                }
                Err(e) => e,
            };
            guard.outcome = err.outcome();
            let pick = guard.pick.clone();
            drop(guard);
            let decision = self
                .lb
                .with(|b, now| b.failover(now, n, err.outcome(), delivery, idempotent));
            match decision {
                Ok(()) => {
                    tried.push(pick.id);
                    last = Some(err);
                }
                Err(why) => return Err(explain(err, &pick, why)),
            }
        }
    }

    /// Calls `method` on one of the servers. If the call fails on the endpoint's account
    /// before its request was sent (no connection), it is tried on another; once sent, it is
    /// not (it may have run): see [`call_idempotent`](Self::call_idempotent).
    pub async fn call<Req, Resp>(&self, method: &str, request: &Req) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned + 'static,
    {
        self.call_with_options(method, request, CallOptions::unary(C::ID), false)
            .await
    }

    /// Calls an idempotent `method`: on a transport failure or timeout it is tried again on
    /// another endpoint even if it may have run on the first.
    pub async fn call_idempotent<Req, Resp>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned + 'static,
    {
        self.call_with_options(method, request, CallOptions::unary(C::ID), true)
            .await
    }

    /// Calls `method` with explicit options (a timeout per attempt), saying whether it is
    /// idempotent.
    pub async fn call_with_options<Req, Resp>(
        &self,
        method: &str,
        request: &Req,
        options: CallOptions,
        idempotent: bool,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned + 'static,
    {
        self.run(idempotent, |client| async move {
            client.call_with_options(method, request, options).await
        })
        .await
    }

    /// Sends a one-way notification to one of the servers.
    pub async fn notify<Req: Serialize + ?Sized>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<(), RpcError> {
        self.run(false, |client| async move {
            client.notify(method, request).await
        })
        .await
    }

    /// Opens a stream on a chosen endpoint (another if the first cannot be reached).
    async fn open<O, F, Fut>(&self, mut open: F) -> Result<(O, StreamGuard), RpcError>
    where
        F: FnMut(RpcClient<T, C, R>) -> Fut,
        Fut: Future<Output = Result<O, RpcError>>,
    {
        self.trim_pool();
        let mut last: Option<RpcError> = None;
        let mut n = 0;
        loop {
            n += 1;
            let (key, pick) = match self.lb.with(|b, now| b.open_stream(now)) {
                Ok(k) => k,
                Err(e) => return Err(last.unwrap_or_else(|| unavailable(e))),
            };
            let mut guard = StreamGuard {
                lb: self.lb.clone(),
                key,
                outcome: Outcome::Cancelled,
            };
            let (res, delivery) = match self.pool.get(&pick.endpoint).await {
                Err(e) => (Err(e), Delivery::NotSent),
                Ok(client) => (open(client).await, Delivery::MaybeRan),
            };
            let err = match res {
                Ok(stream) => return Ok((stream, guard)),
                Err(e) => e,
            };
            guard.outcome = err.outcome();
            drop(guard);
            match self
                .lb
                .with(|b, now| b.failover(now, n, err.outcome(), delivery, false))
            {
                Ok(()) => last = Some(err),
                Err(why) => return Err(explain(err, &pick, why)),
            }
        }
    }

    /// Calls a server-streaming method: every item comes from the endpoint that opened it.
    pub async fn call_server_stream<Req, Item>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<BalancedStream<Item, C>, RpcError>
    where
        Req: Serialize + ?Sized,
        Item: DeserializeOwned + 'static,
    {
        let (inner, guard) = self
            .open(|client| async move { client.call_server_stream(method, request).await })
            .await?;
        Ok(BalancedStream { inner, guard })
    }

    /// Opens a bidirectional stream on one endpoint: every item both ways goes to it.
    pub async fn call_bidi<Req, Resp>(
        &self,
        method: &str,
    ) -> Result<(StreamSender<Req, C>, BalancedStream<Resp, C>), RpcError>
    where
        Req: Serialize,
        Resp: DeserializeOwned + 'static,
    {
        let ((tx, inner), guard) = self
            .open(|client| async move { client.call_bidi(method).await })
            .await?;
        Ok((tx, BalancedStream { inner, guard }))
    }

    /// Closes every connection: their pending calls fail with `Disconnected`.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Closes a stream in the balancer when it ends.
struct StreamGuard {
    lb: Arc<LoadBalancer>,
    key: StreamKey,
    outcome: Outcome,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let (key, outcome) = (self.key, self.outcome);
        self.lb.with(|b, now| b.close_stream(key, now, outcome));
    }
}

/// The receiving side of a balanced stream: a [`StreamReceiver`] that reports how the stream
/// ended to the balancer (its endpoint counts it as in flight until then).
pub struct BalancedStream<Item, C: Codec> {
    inner: StreamReceiver<Item, C>,
    guard: StreamGuard,
}

impl<Item: DeserializeOwned + 'static, C: Codec> BalancedStream<Item, C> {
    /// The stream's call id on its connection.
    pub fn id(&self) -> u64 {
        self.inner.id()
    }

    /// The endpoint the stream is bound to.
    pub fn endpoint(&self) -> Option<xrpc_proto::balance::Endpoint> {
        let key = self.guard.key;
        self.guard
            .lb
            .with(|b, _| b.stream_endpoint(key).map(|p| p.endpoint.clone()))
    }

    fn note(&mut self, item: &Option<Result<Item, RpcError>>) {
        match item {
            None => self.guard.outcome = Outcome::Success,
            Some(Err(e)) => self.guard.outcome = e.outcome(),
            Some(Ok(_)) => {}
        }
    }

    /// The next item; `None` at the end of the stream.
    pub async fn recv(&mut self) -> Option<Result<Item, RpcError>> {
        let item = self.inner.recv().await;
        self.note(&item);
        item
    }

    /// Every remaining item.
    pub async fn collect(mut self) -> Result<Vec<Item>, RpcError> {
        let mut items = Vec::new();
        while let Some(item) = self.recv().await {
            items.push(item?);
        }
        Ok(items)
    }
}

impl<Item: DeserializeOwned + 'static, C: Codec> futures_core::Stream for BalancedStream<Item, C> {
    type Item = Result<Item, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(Pin::new(&mut self.inner).poll_next(cx));
        self.note(&item);
        Poll::Ready(item)
    }
}
