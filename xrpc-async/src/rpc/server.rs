//! [`RpcServer`]: the table of handlers and its registration API. Serving a connection is in
//! `connection`, accepting connections in `listener`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_proto::codec::{CodecId, encode_with};
use xrpc_proto::introspect::{self, MethodCounters, StatsReport};
use xrpc_proto::{
    BincodeCodec, CallKind, Codec, Metadata, MethodTable, Payload, PayloadOf, PeerInfo, PeerPolicy,
    RpcError, ServerBounds, ServerConfig, ServerStats, Signature, decode_as, decode_as_with,
    payload_bytes,
};

use super::connection::Connection;
use super::future_pool::{FuturePool, Started};
use super::listener::PeerGate;
use super::stream::{
    CallRef, RequestStream, ServerStreamSender, StreamCtl, StreamReceiver, StreamSender,
};
use crate::runtime::Runtime;
use crate::signal::Signal;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// What every handler's context on a connection shares.
#[derive(Debug)]
pub(crate) struct ConnectionContext {
    /// Who the peer is.
    pub(crate) peer: PeerInfo,
    /// The server's shutdown signal.
    pub(crate) shutdown: Arc<Signal>,
    /// The transport's kind, for the spans.
    #[cfg(feature = "tracing")]
    pub(crate) transport: &'static str,
}

/// What a handler knows about its call — the same for every kind of handler (unary,
/// notification, server, client and bidirectional streams), async and blocking.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The call id on its connection (0 for a notification).
    pub id: u64,
    pub(crate) method: Bytes,
    /// When the client stops waiting (the request's timeout, counted from receipt). The server
    /// answers `DeadlineExceeded` and stops the handler then. `None` for a notification (its
    /// handler is stopped after `ServerConfig::notification_timeout`).
    pub deadline: Option<Instant>,
    /// Who streams (`Unary` for a notification too).
    pub kind: CallKind,
    /// Whether the call is a notification (no answer goes back).
    pub notification: bool,
    pub(crate) metadata: Metadata,
    /// The wire codec id of the request (a typed handler reads and answers in it).
    pub(crate) codec: CodecId,
    /// The peer and the server's shutdown: one `Arc` for the connection's handlers (one
    /// reference count to move a call, not two).
    pub(crate) connection: Arc<ConnectionContext>,
    pub(crate) cancel: Arc<Signal>,
    /// When the call was received (a notification: when its handler started).
    pub(crate) started: Instant,
}

impl CallContext {
    /// The method name.
    pub fn method(&self) -> &str {
        std::str::from_utf8(&self.method).unwrap_or_default()
    }

    /// When the server received the call, on its runtime's clock (a notification: when its
    /// handler started). A handler's time is counted from here in `xrpc.stats`.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The metadata the client sent with the call (empty if none).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Who called, as far as the transport knows.
    pub fn peer(&self) -> &PeerInfo {
        &self.connection.peer
    }

    /// Whether the server is shutting down ([`RpcServer::shutdown`]): a handler that would
    /// run on (an endless stream) should finish now, rather than be cancelled when
    /// `ServerConfig::drain_timeout` runs out.
    pub fn is_shutting_down(&self) -> bool {
        self.connection.shutdown.is_raised()
    }

    /// Ready once the server is shutting down (see [`is_shutting_down`](Self::is_shutting_down)).
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let shutdown = self.connection.shutdown.clone();
        std::future::poll_fn(move |cx| shutdown.poll_raised(cx))
    }

    /// Whether the call was stopped: the client cancelled it, its deadline passed, the
    /// server's drain deadline passed during a shutdown, or the connection closed. The
    /// handler's own future is dropped then; this tells work it started elsewhere (a spawned
    /// task, a thread) to stop too.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_raised()
    }

    /// Ready once the call is stopped (see [`is_cancelled`](Self::is_cancelled)).
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        let cancel = self.cancel.clone();
        std::future::poll_fn(move |cx| cancel.poll_raised(cx))
    }
}

/// What a handler ends with: `Ok(Some(payload))`, respond; `Ok(None)`, end the server stream.
pub(crate) type HandlerResult = Result<Option<Payload>, RpcError>;

/// Starts a handler: its result at once, or the future that computes it. The handler's
/// streams talk to its connection through the `StreamCtl` (a unary handler has none to hold).
pub(crate) type RunFn =
    dyn Fn(CallContext, Payload, &Arc<dyn StreamCtl>) -> Started<HandlerResult> + Send + Sync;

/// A registered method: how to start its handler, and what was counted of its calls (for the
/// introspection method `xrpc.stats`).
pub(crate) struct Handler {
    pub(crate) run: Box<RunFn>,
    pub(crate) counters: MethodCounters,
}

/// A registered method, as the table of handlers holds it (cloned per call).
pub(crate) type HandlerFn = Arc<Handler>;

pub(crate) struct ServerCore<C, R: Runtime> {
    pub(crate) handlers: Arc<RwLock<MethodTable<HandlerFn>>>,
    pub(crate) codec: C,
    pub(crate) config: ServerConfig,
    pub(crate) rt: R,
    /// Raised by [`RpcServer::shutdown`]; the listener and handlers' contexts wait on it.
    pub(crate) shutdown: Arc<Signal>,
    /// The connections being served, to wake their drivers at shutdown.
    pub(crate) connections: Mutex<Vec<Weak<Connection<R>>>>,
    /// What all its connections share: queued output, read buffers, decompression, handlers
    /// (the `*_total` fields of [`ServerConfig`]).
    pub(crate) bounds: ServerBounds,
    /// Connections served so far: the next one's number (see [`Runtime::spawn_handler`]).
    pub(crate) connections_served: AtomicU64,
    /// Which peers are admitted, and how many were refused.
    pub(crate) peers: Arc<PeerGate>,
    /// When the server was made (its uptime, in `xrpc.stats`).
    pub(crate) started: Instant,
}

impl<C, R: Runtime> ServerCore<C, R> {
    /// What `xrpc.stats` answers.
    fn report(&self) -> StatsReport {
        let connections = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|c| c.strong_count() > 0)
            .count() as u64;
        let methods: Vec<_> = {
            let table = self.handlers.read().unwrap_or_else(PoisonError::into_inner);
            let mut v: Vec<_> = table
                .iter()
                // The application's methods: the tools' own calls are not counted in.
                .filter(|(name, _)| !introspect::is_reserved(name))
                .filter_map(|(name, h)| h.counters.report(name))
                .collect();
            v.sort_by(|a, b| a.name.cmp(&b.name));
            v
        };
        let notifications = self.bounds.counters.snapshot().notifications;
        StatsReport {
            uptime_ms: u64::try_from(self.rt.now().duration_since(self.started).as_millis())
                .unwrap_or(u64::MAX),
            connections,
            peers_refused: self.peers.refused(),
            notifications_dropped: notifications.total(),
            calls: methods.iter().map(|m| m.calls).sum(),
            errors: methods.iter().map(|m| m.errors).sum(),
            bytes_in: methods.iter().map(|m| m.bytes_in).sum(),
            bytes_out: methods.iter().map(|m| m.bytes_out).sum(),
            methods,
        }
    }

    /// Wakes the driver of every connection being served.
    pub(crate) fn wake_connections(&self) {
        let conns = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for c in conns.iter().filter_map(Weak::upgrade) {
            c.wake();
        }
    }
}

/// An RPC server: a table of handlers, served over any number of connections, with codec `C`
/// on runtime `R` (adapter crates name it with their runtime and Bincode as the default codec:
/// `xrpc_tokio::RpcServer`).
///
/// Cloning is cheap and shares the handlers.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct AddRequest { a: i32, b: i32 }
/// # #[derive(Serialize, Deserialize)] struct AddResponse { result: i32 }
/// use xrpc_tokio::RpcServer;
/// let server = RpcServer::new();
/// server.register_typed("add", |req: AddRequest| async move {
///     Ok(AddResponse { result: req.a + req.b })
/// });
/// ```
pub struct RpcServer<C: Codec, R: Runtime> {
    pub(crate) shared: Arc<ServerCore<C, R>>,
}

impl<C: Codec, R: Runtime> Clone for RpcServer<C, R> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<R: Runtime> Default for RpcServer<BincodeCodec, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: Runtime> RpcServer<BincodeCodec, R> {
    /// A server with no handlers, using Bincode.
    pub fn new() -> Self {
        Self::with_codec(BincodeCodec)
    }
}

impl<C: Codec, R: Runtime> RpcServer<C, R> {
    /// A server using `codec`.
    pub fn with_codec(codec: C) -> Self {
        Self::with_config(codec, ServerConfig::default())
    }

    /// A server using `codec` and `config`.
    pub fn with_config(codec: C, config: ServerConfig) -> Self {
        Self::with_runtime(codec, config, R::default())
    }

    /// A server on the runtime value `rt`: its connections' drivers, handlers, timers and
    /// clock are `rt`'s (a test passes a runtime whose clock it advances by hand).
    pub fn with_runtime(codec: C, config: ServerConfig, rt: R) -> Self {
        let server = Self {
            shared: Arc::new(ServerCore {
                handlers: Arc::new(RwLock::new(MethodTable::new())),
                codec,
                config,
                shutdown: Arc::default(),
                connections: Mutex::new(Vec::new()),
                bounds: ServerBounds::new(&config, rt.now()),
                connections_served: AtomicU64::new(0),
                peers: Arc::default(),
                started: rt.now(),
                rt,
            }),
        };
        server.register_introspection();
        server
    }

    pub(crate) fn insert(&self, method: &str, kind: CallKind, run: Box<RunFn>) {
        let handler = Arc::new(Handler {
            run,
            counters: MethodCounters::default(),
        });
        self.shared
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(method, kind, handler);
    }

    /// Registers the built-in introspection methods (PROTOCOL.md, "Introspection"):
    /// `xrpc.ping`, `xrpc.methods` and `xrpc.stats`. They hold a weak reference: the table of handlers
    /// does not keep the server alive.
    fn register_introspection(&self) {
        self.register_typed(introspect::PING, |()| async { Ok(()) });
        let weak = Arc::downgrade(&self.shared);
        self.register_typed(introspect::METHODS, move |()| {
            let infos = weak.upgrade().map(|s| {
                let mut v = s
                    .handlers
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .infos();
                v.retain(|m| !introspect::is_reserved(&m.name));
                v
            });
            async move { infos.ok_or_else(|| RpcError::server("the server is gone")) }
        });
        let weak = Arc::downgrade(&self.shared);
        self.register_typed(introspect::STATS, move |()| {
            let report = weak.upgrade().map(|s| s.report());
            async move { report.ok_or_else(|| RpcError::server("the server is gone")) }
        });
    }

    /// Removes the built-in introspection methods (`xrpc.ping`, `xrpc.methods`, `xrpc.stats`): a call to
    /// them is then answered `MethodNotFound`, like any unknown method.
    pub fn disable_introspection(&self) {
        let mut table = self
            .shared
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        table.remove(introspect::PING);
        table.remove(introspect::METHODS);
        table.remove(introspect::STATS);
    }

    /// Registers a handler of raw payload bytes.
    pub fn register<F, Fut>(&self, method: &str, handler: F)
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RpcError>> + Send + 'static,
    {
        // Unary handlers start in a pooled box: no allocation when they finish at once.
        let pool = Arc::new(FuturePool::default());
        let f: Box<RunFn> = Box::new(move |_ctx, payload, _ctl| {
            let fut = payload_bytes(payload).map(&handler);
            pool.start(async move { fut?.await.map(|b| Some(Payload::Bytes(b))) })
        });
        self.insert(method, CallKind::Unary, f);
    }

    /// Registers a typed unary handler: `|req: Req| async move { Ok(Resp { .. }) }`.
    pub fn register_typed<Req, Resp, F, Fut>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        self.register_typed_with_context(method, move |_ctx, req| handler(req));
    }

    /// Registers a typed unary handler that also sees its [`CallContext`] (deadline, id).
    pub fn register_typed_with_context<Req, Resp, F, Fut>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        let codec = self.shared.codec.clone();
        let pool = Arc::new(FuturePool::default());
        let f: Box<RunFn> = Box::new(move |ctx, payload, _ctl| {
            // An in-process value is answered with a value: no codec either way.
            let as_value = matches!(payload, Payload::Value(_));
            // Read and answered in the request's codec (see `answer_codec`).
            let id = ctx.codec;
            let req =
                decode_as_with::<Req, C>(&codec, id, PayloadOf::Request(ctx.method()), payload);
            let codec = codec.clone();
            let fut = req.map(|req| handler(ctx, req));
            pool.start(async move {
                let resp = fut?.await?;
                Ok(Some(if as_value {
                    Payload::Value(Box::new(resp))
                } else {
                    Payload::Bytes(encode_with(&codec, id, &resp)?)
                }))
            })
        });
        self.insert(method, CallKind::Unary, f);
    }

    /// Registers a server-streaming handler: it gets the request and a sender for items; the
    /// stream ends when it returns `Ok(())`, or fails with its error.
    pub fn register_stream<Req, Item, F, Fut>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Item: Serialize + Send + 'static,
        F: Fn(Req, ServerStreamSender<Item, C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        self.register_stream_with_context(method, move |_ctx, req, sender| handler(req, sender));
    }

    /// Registers a server-streaming handler that also sees its [`CallContext`] (metadata,
    /// cancellation, the server's shutdown).
    pub fn register_stream_with_context<Req, Item, F, Fut>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Item: Serialize + Send + 'static,
        F: Fn(CallContext, Req, ServerStreamSender<Item, C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        let codec = self.shared.codec.clone();
        let f: Box<RunFn> = Box::new(move |ctx, payload, ctl| {
            let req = decode_as::<Req, C>(&codec, PayloadOf::Request(ctx.method()), payload);
            let sender = StreamSender::new(
                CallRef::new(ctl.clone(), ctx.id, ctx.method.clone()),
                codec.clone(),
                false,
            );
            let fut = req.map(|req| handler(ctx, req, sender));
            Started::Running(Box::pin(async move {
                fut?.await?;
                Ok(None)
            }))
        });
        self.insert(method, CallKind::ServerStreaming, f);
    }

    /// Registers a client-streaming handler: it gets the stream of items and returns the single
    /// response.
    pub fn register_client_stream<Item, Resp, F, Fut>(&self, method: &str, handler: F)
    where
        Item: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(RequestStream<Item, C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        self.register_client_stream_with_context(method, move |_ctx, items| handler(items));
    }

    /// Registers a client-streaming handler that also sees its [`CallContext`].
    pub fn register_client_stream_with_context<Item, Resp, F, Fut>(&self, method: &str, handler: F)
    where
        Item: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, RequestStream<Item, C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        let codec = self.shared.codec.clone();
        let f: Box<RunFn> = Box::new(move |ctx, _payload, ctl| {
            let stream = StreamReceiver::new(
                CallRef::new(ctl.clone(), ctx.id, ctx.method.clone()),
                codec.clone(),
            );
            let fut = handler(ctx, stream);
            let codec = codec.clone();
            Started::Running(Box::pin(async move {
                Ok(Some(Payload::Bytes(codec.encode(&fut.await?)?)))
            }))
        });
        self.insert(method, CallKind::ClientStreaming, f);
    }

    /// Registers a bidirectional handler: items in, items out, concurrently.
    pub fn register_bidi<Req, Resp, F, Fut>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(RequestStream<Req, C>, ServerStreamSender<Resp, C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        self.register_bidi_with_context(method, move |_ctx, items, sender| handler(items, sender));
    }

    /// Registers a bidirectional handler that also sees its [`CallContext`].
    pub fn register_bidi_with_context<Req, Resp, F, Fut>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, RequestStream<Req, C>, ServerStreamSender<Resp, C>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        let codec = self.shared.codec.clone();
        let f: Box<RunFn> = Box::new(move |ctx, _payload, ctl| {
            let call = CallRef::new(ctl.clone(), ctx.id, ctx.method.clone());
            let stream = StreamReceiver::new(call.clone(), codec.clone());
            let sender = StreamSender::new(call, codec.clone(), false);
            let fut = handler(ctx, stream, sender);
            Started::Running(Box::pin(async move {
                fut.await?;
                Ok(None)
            }))
        });
        self.insert(method, CallKind::Bidirectional, f);
    }

    /// Sets the signature of `method` (the types its handler takes and returns, as generated
    /// code names them): a call that carries another signature's fingerprint is refused with
    /// `RpcError::TypeMismatch` naming both; a call without one is not checked.
    pub fn set_signature(&self, method: &str, signature: Signature) {
        self.shared
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .set_signature(method, signature);
    }

    /// What the server counted so far, over all its connections: notifications it could not
    /// deliver, by reason (see [`xrpc_proto::NotificationDrop`]).
    pub fn stats(&self) -> ServerStats {
        self.shared.bounds.counters.snapshot()
    }

    /// The registered method names (without the built-in ones, `xrpc.*`).
    pub fn methods(&self) -> Vec<String> {
        let mut m: Vec<String> = self
            .shared
            .handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .names()
            .filter(|n| !introspect::is_reserved(n))
            .map(str::to_string)
            .collect();
        m.sort();
        m
    }

    /// Admits only the peers `policy` admits, from the next accepted connection on: over Unix
    /// sockets and shared memory a listed user or group (from the kernel's `SO_PEERCRED`);
    /// a peer whose credentials are unknown (TCP, in-process) is refused once a list is set.
    /// A refused peer is told at connect — over shared memory in the rendezvous handshake
    /// (before a segment is made), over a byte stream by one refusal frame before the close
    /// — and its calls fail with [`RpcError::PeerRefused`]. Connections served by
    /// [`serve_listener`](Self::serve_listener) only; [`serve`](Self::serve) serves the
    /// transport it is given.
    ///
    /// Without a policy ([`PeerPolicy::any`]) every peer a transport lets connect is admitted;
    /// over shared memory, whose rendezvous has no file permissions, only this process's user
    /// and root.
    pub fn set_peer_policy(&self, policy: PeerPolicy) {
        self.shared.peers.set_policy(policy);
    }

    /// Peers refused so far by the peer policy (and, over shared memory, other users'
    /// processes refused by default).
    pub fn peers_refused(&self) -> u64 {
        self.shared.peers.refused()
    }

    /// Starts a graceful shutdown: connections refuse new calls, let the calls in progress
    /// finish (for at most [`ServerConfig::drain_timeout`], then they are cancelled), then
    /// close; [`serve`](Self::serve) and [`serve_listener`](Self::serve_listener) return.
    pub fn shutdown(&self) {
        self.shared.shutdown.raise();
        self.shared.wake_connections();
    }
}
