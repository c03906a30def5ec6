//! [`LoadBalancedClient`]: calls spread over the endpoints a [`LoadBalancer`] chooses, on
//! connections from a [`ConnectionPool`], with failover: a call that failed on an endpoint's
//! account is tried on another when that is safe — always if it never reached a server, and
//! after it may have run only if the caller said it is idempotent
//! ([`call_idempotent`](LoadBalancedClient::call_idempotent)) — within the retry budget.
//! A stream stays on the endpoint that opened it.
//!
//! Every call kind — unary, notification, stream — goes through one loop
//! (`run`): the core's [`Attempts`] picks the endpoint, the pool
//! gives a connection, the call is made, and what happened goes back to [`Attempts`], which
//! says where to try next or what error the call ends with. The clock is the client's runtime's.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_proto::balance::{Attempts, Balancer, Outcome, PoolConfig, StreamKey};
use xrpc_proto::{CallOptions, Codec};

use super::load_balancer::LoadBalancer;
use super::pool::{Connect, ConnectionPool, PoolGuard};
use crate::channel::MessageChannel;
use crate::rpc::{RpcClient, RpcError, StreamReceiver, StreamSender};
use crate::runtime::Runtime;
use crate::transport::TransportError;

/// How many connections [`LoadBalancedClient::init`] opens at once.
const INIT_CONCURRENCY: usize = 32;

/// The client's clock, for what outlives a call (a stream's end).
type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// An RPC client over many servers (the original API's `LoadBalancedClient`).
pub struct LoadBalancedClient<T: MessageChannel, C: Codec, R: Runtime> {
    lb: Arc<LoadBalancer>,
    pool: ConnectionPool<T, C, R>,
    rt: R,
    clock: Clock,
    /// The balancer's removal count the pool was last trimmed at.
    trimmed: AtomicU64,
}

/// A call's attempts while it runs: dropped with an attempt in progress (the call was
/// cancelled), that attempt ends as cancelled.
struct InFlight<'a> {
    lb: &'a LoadBalancer,
    clock: &'a Clock,
    attempts: Attempts,
}

impl InFlight<'_> {
    /// Runs `f` on the attempts and the balancer at the current time, under its lock.
    fn with<O>(&mut self, f: impl FnOnce(&mut Attempts, &mut Balancer, Instant) -> O) -> O {
        let now = (self.clock)();
        let attempts = &mut self.attempts;
        self.lb.with(|b| f(attempts, b, now))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.attempts.current().is_some() {
            self.with(|attempts, b, now| attempts.abandon(b, now));
        }
    }
}

impl<T: MessageChannel, C: Codec, R: Runtime> LoadBalancedClient<T, C, R> {
    /// A client choosing endpoints with `lb` and connecting to them with `connector` (the
    /// tokio adapter: `Arc::new(factory)` of a `ClientFactory`), on the runtime of the calling
    /// context.
    pub fn new(lb: Arc<LoadBalancer>, connector: impl Connect<R, T, C>) -> Self {
        Self::with_pool_config(lb, connector, PoolConfig::default())
    }

    /// With explicit pool settings.
    pub fn with_pool_config(
        lb: Arc<LoadBalancer>,
        connector: impl Connect<R, T, C>,
        config: PoolConfig,
    ) -> Self {
        Self::with_runtime(lb, connector, config, R::default())
    }

    /// On runtime `rt`: its clock times the calls, and discovery runs as one of its tasks.
    pub fn with_runtime(
        lb: Arc<LoadBalancer>,
        connector: impl Connect<R, T, C>,
        config: PoolConfig,
        rt: R,
    ) -> Self {
        let clock_rt = rt.clone();
        Self {
            lb,
            pool: ConnectionPool::with_runtime(config, connector, rt.clone()),
            rt,
            clock: Arc::new(move || clock_rt.now()),
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

    /// Starts discovery on the client's runtime (the first time) and waits for its first
    /// answer.
    async fn discovered(&self) -> Result<(), RpcError> {
        self.lb.start_discovery(&self.rt)?;
        self.lb.discovered().await;
        Ok(())
    }

    /// Waits for discovery's first answer, then connects to the endpoints found, a few at a
    /// time, until the pool's total cap (an endpoint that refuses is ejected at once); fails if
    /// discovery found nothing or no endpoint could be reached. (Calls do both lazily
    /// otherwise.)
    pub async fn init(&self) -> Result<(), RpcError> {
        self.discovered().await?;
        let endpoints = self.lb.endpoints();
        if endpoints.is_empty() {
            let why = self
                .lb
                .discovery_error()
                .unwrap_or_else(|| "discovery found no endpoints".into());
            return Err(RpcError::Transport(TransportError::ConnectionFailed(
                format!("no endpoint can take the call: {why}"),
            )));
        }
        let room = self.pool.config().max_total_connections.max(1);
        let mut pending = endpoints.iter();
        let mut connecting = FuturesUnordered::new();
        let mut connected = 0usize;
        let mut last = None;
        loop {
            while connecting.len() < INIT_CONCURRENCY && connected + connecting.len() < room {
                let Some(endpoint) = pending.next() else {
                    break;
                };
                connecting.push(async move { (endpoint, self.pool.get(endpoint).await.map(drop)) });
            }
            let Some((endpoint, result)) = connecting.next().await else {
                break;
            };
            match result {
                Ok(()) => connected += 1,
                Err(e) => {
                    let now = self.rt.now();
                    self.lb
                        .with(|b| b.connect_failed(endpoint, now, e.outcome()));
                    last = Some(e);
                }
            }
        }
        match last {
            Some(e) if connected == 0 => Err(e),
            _ => Ok(()),
        }
    }

    /// Drops the pooled connections of endpoints discovery removed since the last time.
    fn trim_pool(&self) {
        let removals = self.lb.removals();
        if self.trimmed.swap(removals, Ordering::AcqRel) != removals {
            self.pool.retain(|e| self.lb.contains(e));
        }
    }

    /// Makes the call `op` on a connection to the endpoint `attempts` chooses, and again on
    /// another as long as it says so: the one loop of every call kind. Returns the call's
    /// result, the stream's key (for a stream) and the lease on its connection.
    async fn run<O, F, Fut>(
        &self,
        attempts: Attempts,
        mut op: F,
    ) -> Result<(O, Option<StreamKey>, PoolGuard<T, C, R>), RpcError>
    where
        F: FnMut(RpcClient<T, C, R>) -> Fut,
        Fut: Future<Output = Result<O, RpcError>>,
    {
        self.discovered().await?;
        self.trim_pool();
        let mut call = InFlight {
            lb: &self.lb,
            clock: &self.clock,
            attempts,
        };
        let mut pick = call.with(|attempts, b, now| attempts.start(b, now))?;
        loop {
            let next = match self.pool.get(&pick.endpoint).await {
                Err(e) => call.with(|attempts, b, now| attempts.connect_failed(b, now, e)),
                Ok(conn) => {
                    call.attempts.connected(self.rt.now());
                    match op(conn.client().clone()).await {
                        Ok(v) => {
                            let key = call.with(|attempts, b, now| attempts.succeeded(b, now));
                            return Ok((v, key, conn));
                        }
                        Err(e) => call.with(|attempts, b, now| attempts.call_failed(b, now, e)),
                    }
                }
            };
            pick = next?;
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
        let options = &options;
        let (resp, _, _) = self
            .run(Attempts::call(idempotent), |client| async move {
                client
                    .call_with_options(method, request, options.clone())
                    .await
            })
            .await?;
        Ok(resp)
    }

    /// Sends a one-way notification to one of the servers.
    pub async fn notify<Req: Serialize + ?Sized>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<(), RpcError> {
        self.notify_with_options(method, request, CallOptions::unary(C::ID))
            .await
    }

    /// Like [`notify`](Self::notify) with options (metadata, signature, handler timeout).
    pub async fn notify_with_options<Req: Serialize + ?Sized>(
        &self,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<(), RpcError> {
        let options = &options;
        self.run(Attempts::call(false), |client| async move {
            client
                .notify_with_options(method, request, options.clone())
                .await
        })
        .await
        .map(drop)
    }

    /// Opens a stream with `open` on a chosen endpoint (another if the first cannot be
    /// reached), bound to it until the stream ends.
    async fn open<O, F, Fut>(&self, open: F) -> Result<(O, StreamGuard), RpcError>
    where
        F: FnMut(RpcClient<T, C, R>) -> Fut,
        Fut: Future<Output = Result<O, RpcError>>,
    {
        let (stream, key, lease) = self.run(Attempts::stream(), open).await?;
        Ok((
            stream,
            StreamGuard {
                lb: self.lb.clone(),
                clock: self.clock.clone(),
                key,
                outcome: Outcome::Cancelled,
                _lease: Box::new(lease),
            },
        ))
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
        self.call_server_stream_with_options(method, request, CallOptions::unary(C::ID))
            .await
    }

    /// Like [`call_server_stream`](Self::call_server_stream) with options (timeout,
    /// metadata, signature).
    pub async fn call_server_stream_with_options<Req, Item>(
        &self,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<BalancedStream<Item, C>, RpcError>
    where
        Req: Serialize + ?Sized,
        Item: DeserializeOwned + 'static,
    {
        let options = &options;
        let (inner, guard) = self
            .open(|client| async move {
                client
                    .call_server_stream_with_options(method, request, options.clone())
                    .await
            })
            .await?;
        Ok(BalancedStream { inner, guard })
    }

    /// Calls a client-streaming method on one endpoint: send items with the
    /// [`StreamSender`], [`finish`](StreamSender::finish) it and await the response.
    pub async fn call_client_stream<Item, Resp>(
        &self,
        method: &str,
    ) -> Result<
        (
            StreamSender<Item, C>,
            impl Future<Output = Result<Resp, RpcError>> + use<T, C, R, Item, Resp>,
        ),
        RpcError,
    >
    where
        Item: Serialize,
        Resp: DeserializeOwned + 'static,
    {
        self.call_client_stream_with_options(method, CallOptions::unary(C::ID))
            .await
    }

    /// Like [`call_client_stream`](Self::call_client_stream) with options (timeout,
    /// metadata, signature).
    pub async fn call_client_stream_with_options<Item, Resp>(
        &self,
        method: &str,
        options: CallOptions,
    ) -> Result<
        (
            StreamSender<Item, C>,
            impl Future<Output = Result<Resp, RpcError>> + use<T, C, R, Item, Resp>,
        ),
        RpcError,
    >
    where
        Item: Serialize,
        Resp: DeserializeOwned + 'static,
    {
        let options = &options;
        let ((tx, response), guard) = self
            .open(|client| async move {
                client
                    .call_client_stream_with_options::<Item, Resp>(method, options.clone())
                    .await
            })
            .await?;
        Ok((tx, async move {
            // The whole guard moves in (not just the field set below): it holds the stream's
            // place on its endpoint until the response.
            let mut guard = guard;
            let res = response.await;
            guard.outcome = match &res {
                Ok(_) => Outcome::Success,
                Err(e) => e.outcome(),
            };
            res
        }))
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
        self.call_bidi_with_options(method, CallOptions::unary(C::ID))
            .await
    }

    /// Like [`call_bidi`](Self::call_bidi) with options (timeout, metadata, signature).
    pub async fn call_bidi_with_options<Req, Resp>(
        &self,
        method: &str,
        options: CallOptions,
    ) -> Result<(StreamSender<Req, C>, BalancedStream<Resp, C>), RpcError>
    where
        Req: Serialize,
        Resp: DeserializeOwned + 'static,
    {
        let options = &options;
        let ((tx, inner), guard) =
            self.open(|client| async move {
                client.call_bidi_with_options(method, options.clone()).await
            })
            .await?;
        Ok((tx, BalancedStream { inner, guard }))
    }

    /// Closes every connection: their pending calls fail with `Disconnected`.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Closes a stream in the balancer when it ends, and gives back its connection's lease.
struct StreamGuard {
    lb: Arc<LoadBalancer>,
    clock: Clock,
    key: Option<StreamKey>,
    outcome: Outcome,
    /// The lease on the stream's connection (a [`PoolGuard`]), held while the stream is open.
    _lease: Box<dyn Any + Send + Sync>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let (now, outcome) = ((self.clock)(), self.outcome);
            self.lb.with(|b| b.close_stream(key, now, outcome));
        }
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
        let key = self.guard.key?;
        self.guard
            .lb
            .with(|b| b.stream_endpoint(key).map(|p| p.endpoint.clone()))
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
