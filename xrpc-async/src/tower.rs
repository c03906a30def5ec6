//! (feature `tower`) The clients as [`tower_service::Service`]s, and handlers wrapped in
//! layers.
//!
//! - [`RpcClient`] and `Arc<`[`LoadBalancedClient`]`>` are services of [`Call`] (a method, the
//!   request's payload bytes, its options) answering the response's payload bytes, with
//!   [`RpcError`] as their error: timeout, concurrency-limit, rate-limit, retry and load-shed
//!   layers compose around them. [`Call::is_retryable`] is the balancer's rule of which
//!   failures may be tried again (`xrpc_tokio::CallRetry` is a `tower::retry::Policy` of it).
//! - A generated client (`#[service]`) calls through any such service: [`TowerCaller`] makes
//!   a service of [`Call`] (a client with layers around it) the [`Caller`] of a generated
//!   client, which encodes each request with the codec and decodes each answer.
//! - [`RpcServer::register_service`] registers a service of [`ServerCall`] (the call's
//!   [`CallContext`] and its payload bytes) as a unary handler: a concurrency limit, a timeout
//!   or load shedding around a handler is a layer around that service.
//!
//! The requests and responses are bytes, not typed values: a layer neither knows nor changes
//! the types, one stack serves every method, and a retry clones a request without cloning a
//! value (`Bytes` is reference-counted). Encode with the client's codec ([`Call::encode`]) and
//! decode the answer with it (`Codec::decode`), or put typed `map_request`/`map_response`
//! layers at the outside of the stack.

use std::borrow::Cow;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower_service::Service;
use xrpc_proto::balance::{Delivery, FailoverConfig};
use xrpc_proto::{
    BincodeCodec, CallKind, CallOptions, Codec, Payload, PayloadOf, decode_as, payload_bytes,
};

use crate::balance::LoadBalancedClient;
use crate::channel::MessageChannel;
use crate::rpc::{CallContext, RpcClient, RpcError, RpcServer, Started};
use crate::runtime::Runtime;
use crate::service::{Caller, Method};

/// The error type of tower's own layers (`tower::BoxError`).
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The future of a client's call as a service.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<Bytes, RpcError>> + Send>>;

/// A unary call as a tower request.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method name (`"Calculator.add"`; a `&'static str` is not copied).
    pub method: Cow<'static, str>,
    /// The request, encoded with the client's codec.
    pub payload: Bytes,
    /// Per-call options (a timeout, metadata; the kind is always unary and the codec the
    /// client's).
    pub options: CallOptions,
    /// Whether the method may run twice: a call that may have run is tried again only then
    /// (by the load-balanced client's failover and by [`is_retryable`](Self::is_retryable)).
    pub idempotent: bool,
}

impl Call {
    /// A call of `method` with payload bytes, default options, not idempotent.
    pub fn new(method: impl Into<Cow<'static, str>>, payload: Bytes) -> Self {
        Self {
            method: method.into(),
            payload,
            options: CallOptions::default(),
            idempotent: false,
        }
    }

    /// A call of `method` with `request` encoded by `codec` (the client's).
    pub fn encode<C: Codec, Req: Serialize + ?Sized>(
        codec: &C,
        method: impl Into<Cow<'static, str>>,
        request: &Req,
    ) -> Result<Self, RpcError> {
        Ok(Self::new(method, codec.encode(request)?))
    }

    /// The same call with a timeout of its own.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options = self.options.with_timeout(timeout);
        self
    }

    /// The same call with other options.
    pub fn with_options(mut self, options: CallOptions) -> Self {
        self.options = options;
        self
    }

    /// The same call with metadata (sent with the request, read by the handler through
    /// [`CallContext::metadata`]).
    pub fn with_metadata(mut self, metadata: xrpc_proto::Metadata) -> Self {
        self.options.metadata = metadata;
        self
    }

    /// The same call, marked idempotent.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Whether this call, having failed with `error`, may be tried again — on any server: the
    /// balancer's rule ([`FailoverConfig::check`]) for a call that may have reached one. Only
    /// the endpoint's failures are retried (transport, timeout, refusal — never an error of
    /// the handler), and unless the server refused it without running it, only an idempotent
    /// call.
    pub fn is_retryable(&self, error: &RpcError) -> bool {
        FailoverConfig::default()
            .check(error.outcome(), Delivery::MaybeRan, self.idempotent)
            .is_ok()
    }
}

/// A unary call as a handler's tower request.
#[derive(Debug)]
pub struct ServerCall {
    /// What the handler knows about its call.
    pub ctx: CallContext,
    /// The request's payload bytes (decode them with the server's codec).
    pub payload: Bytes,
}

/// An error of a handler's service as the call's error: an [`RpcError`] stays itself, any
/// other error (a layer's) is a handler error with its message.
fn rpc_error(e: impl Into<BoxError>) -> RpcError {
    match e.into().downcast::<RpcError>() {
        Ok(e) => *e,
        Err(e) => RpcError::server(e.to_string()),
    }
}

impl<T: MessageChannel, C: Codec, R: Runtime> Service<Call> for RpcClient<T, C, R> {
    type Response = Bytes;
    type Error = RpcError;
    type Future = CallFuture;

    /// Ready while the connection is usable; an error once it has closed (a client never
    /// reconnects: wrap the load-balanced client for that).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        Poll::Ready(if self.is_connected() {
            Ok(())
        } else {
            Err(RpcError::Disconnected("the connection is closed".into()))
        })
    }

    fn call(&mut self, call: Call) -> CallFuture {
        let client = self.clone();
        Box::pin(async move {
            client
                .call_raw_with_options(&call.method, call.payload, call.options)
                .await
        })
    }
}

impl<T: MessageChannel, C: Codec, R: Runtime> Service<Call> for Arc<LoadBalancedClient<T, C, R>> {
    type Response = Bytes;
    type Error = RpcError;
    type Future = CallFuture;

    /// Always ready: each call chooses its endpoint (and waits for discovery's first answer)
    /// when it starts; no endpoint able to take it is that call's error.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> CallFuture {
        let client = self.clone();
        Box::pin(async move {
            client
                .call_raw_with_options(&call.method, call.payload, call.options, call.idempotent)
                .await
        })
    }
}

/// A tower service of [`Call`]s as the [`Caller`] of a generated client: each call's request
/// is encoded with codec `C` (the server's), sent through the service — the layers around a
/// client, then the client — and its answer decoded with `C`.
///
/// ```ignore
/// let layered = ServiceBuilder::new()
///     .timeout(Duration::from_millis(200))
///     .concurrency_limit(64)
///     .service(client);
/// let calc = CalculatorClient::new(TowerCaller::new(layered));
/// ```
///
/// Each call clones the service (as tower's own `Buffer` and `Retry` do) and waits until it
/// is ready. An error of a layer (a timeout's, a load shedder's) is the call's
/// [`RpcError::ClientError`] with its message; an [`RpcError`] stays itself. Unary methods
/// only: the stream methods of a generated client need a [`StreamCaller`](crate::service::StreamCaller).
#[derive(Debug, Clone)]
pub struct TowerCaller<S, C = BincodeCodec> {
    service: S,
    codec: C,
}

impl<S> TowerCaller<S> {
    /// The caller of `service`, with Bincode.
    pub fn new(service: S) -> Self {
        Self::with_codec(service, BincodeCodec)
    }
}

impl<S, C> TowerCaller<S, C> {
    /// The caller of `service`, with `codec`.
    pub fn with_codec(service: S, codec: C) -> Self {
        Self { service, codec }
    }

    /// The service it calls through.
    pub fn get_ref(&self) -> &S {
        &self.service
    }
}

impl<S, C> Caller for TowerCaller<S, C>
where
    S: Service<Call, Response = Bytes> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    C: Codec,
{
    fn call<Req, Resp>(
        &self,
        method: &'static Method,
        request: &Req,
        options: CallOptions,
    ) -> impl Future<Output = Result<Resp, RpcError>> + Send
    where
        Req: Serialize + Sync + ?Sized,
        Resp: DeserializeOwned + Send + 'static,
    {
        let payload = self.codec.encode(request);
        let mut service = self.service.clone();
        let codec = self.codec.clone();
        let options = method.options(options);
        async move {
            let call = Call::new(method.name(), payload?).with_options(options);
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(client_error)?;
            let answer = service.call(call).await.map_err(client_error)?;
            decode_as(
                &codec,
                PayloadOf::Response(method.name()),
                Payload::Bytes(answer),
            )
        }
    }
}

/// An error of a client's service as the call's error: an [`RpcError`] stays itself, any
/// other (a layer's) is a [`RpcError::ClientError`] with its message.
fn client_error(e: impl Into<BoxError>) -> RpcError {
    match e.into().downcast::<RpcError>() {
        Ok(e) => *e,
        Err(e) => RpcError::ClientError(e.to_string()),
    }
}

impl<C: Codec, R: Runtime> RpcServer<C, R> {
    /// Registers a unary handler that is a tower service: each call gets a clone of `service`
    /// (so a layer's shared state, such as a concurrency limit's semaphore, is shared by all
    /// calls), waits for it to be ready, and is answered with its response bytes.
    ///
    /// The service's error answers the call: an [`RpcError`] as it is, another (a layer's,
    /// such as tower's `Overloaded` or `Elapsed`) as a handler error with its message. To send
    /// a code a client acts on — `ErrorCode::ResourceExhausted` for a shed call, so a
    /// load-balanced client tries another server — map it with a `map_err` layer.
    pub fn register_service<S>(&self, method: &str, service: S)
    where
        S: Service<ServerCall, Response = Bytes> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        // Behind a mutex: the table of handlers is shared between threads, a service need
        // only be `Send`. Held only to clone it.
        let service = Mutex::new(service);
        self.insert(
            method,
            CallKind::Unary,
            Box::new(move |ctx, payload, _ctl| {
                let mut svc = service
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                Started::Running(Box::pin(async move {
                    let payload = payload_bytes(payload)?;
                    std::future::poll_fn(|cx| svc.poll_ready(cx))
                        .await
                        .map_err(rpc_error)?;
                    let resp = svc
                        .call(ServerCall { ctx, payload })
                        .await
                        .map_err(rpc_error)?;
                    Ok(Some(Payload::Bytes(resp)))
                }))
            }),
        );
    }
}
