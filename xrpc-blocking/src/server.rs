//! [`RpcServer`]: the async layer's server ([`xrpc_async::RpcServer`]) on the [`Blocking`]
//! runtime, with synchronous handlers. Everything the async server does holds here: every
//! [`ServerConfig`] bound, notification admission, deadlines and cancellation, graceful
//! shutdown, the listener's admission.
//!
//! **Threads.** Each connection has a thread of its own (it reads, writes and runs its
//! session). A unary handler of [`register`](RpcServer::register) or
//! [`register_typed`](RpcServer::register_typed) (a call's or a notification's) whose recent
//! runs were short — a moving average under [`INLINE_MAX`], after a first run on the pool —
//! runs on that thread as the call arrives: no hand-off. Every other handler runs on the
//! server's handler pool ([`HandlerThreads`]): a streaming handler (it blocks for credit or
//! items, which only its connection's thread brings), one that sees its [`CallContext`] (its
//! connection's thread tells it that its call was stopped), a unary one that is slow. A handler
//! that turns slow on the connection's thread holds its connection (reads, other calls'
//! deadlines) for that call, and goes to the pool from then on. The pool is bounded, and one
//! connection holds at most its share of it: its further handlers wait in its own queue.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_async::service::{Method, Registry, Service};
use xrpc_async::{CallContext, FrameListener, MessageChannelAdapter};
use xrpc_proto::{BincodeCodec, Codec, PeerPolicy, RpcError, ServerConfig, ServerStats, Signature};

use crate::runtime::{Blocking, HandlerPool, HandlerThreads};
use crate::stream::{RequestStream, ServerStreamSender, StreamReceiver, StreamSender};
use crate::transport::AnyFrameTransport;

/// A unary handler whose runs average less than this runs on its connection's thread.
pub const INLINE_MAX: Duration = Duration::from_micros(100);

/// A moving average of a handler's run time (nanoseconds; each run weighs 1/8). It starts at
/// [`INLINE_MAX`]: a method's first call runs on the pool, and the next ones on the connection's
/// thread if it was short.
struct RunTime(AtomicU64);

impl Default for RunTime {
    fn default() -> Self {
        Self(AtomicU64::new(INLINE_MAX.as_nanos() as u64))
    }
}

impl RunTime {
    fn is_short(&self) -> bool {
        self.0.load(Ordering::Relaxed) < INLINE_MAX.as_nanos() as u64
    }

    fn record(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let avg = self.0.load(Ordering::Relaxed);
        self.0.store(avg - avg / 8 + took / 8, Ordering::Relaxed);
    }
}

/// What a synchronous handler's run does when it is first polled.
enum FirstPoll {
    /// A unary handler: runs there (on the connection's thread) if its run time is short;
    /// otherwise declines.
    RunIfShort,
    /// A unary handler that belongs on the pool: declines.
    Decline,
    /// A streaming handler, first polled on the pool already: runs.
    Run,
}

/// A synchronous handler's run, as the future the async server starts: it runs `job` when
/// polled. A unary handler's future is first polled on the connection's thread as the call
/// arrives; if it declines there, the async server hands it to the pool, whose poll runs it.
/// A streaming handler's future goes to the pool from the start.
struct Run<F> {
    job: Option<F>,
    first: Option<FirstPoll>,
    /// Timed for the connection's thread to decide on the next calls.
    run_time: Option<Arc<RunTime>>,
    /// When the call was received, if known: a run in the first poll (on the connection's
    /// thread, as the call is started) is timed from there, with one clock read.
    received: Option<Instant>,
}

impl<F> Run<F> {
    /// A unary handler that runs where it is first polled when it is short; `received`, when
    /// the call was received ([`CallContext::started`]), if known.
    fn unary(run_time: &Arc<RunTime>, received: Option<Instant>, job: F) -> Self {
        Self {
            job: Some(job),
            first: Some(FirstPoll::RunIfShort),
            run_time: Some(run_time.clone()),
            received,
        }
    }

    /// A unary handler that runs on the pool.
    fn unary_on_pool(job: F) -> Self {
        Self {
            job: Some(job),
            first: Some(FirstPoll::Decline),
            run_time: None,
            received: None,
        }
    }

    /// A streaming handler (on the pool from its start).
    fn stream(job: F) -> Self {
        Self {
            job: Some(job),
            first: Some(FirstPoll::Run),
            run_time: None,
            received: None,
        }
    }
}

impl<F> Unpin for Run<F> {}

impl<T, F: FnOnce() -> Result<T, RpcError>> Future for Run<F> {
    type Output = Result<T, RpcError>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        let decline = match self.first.take() {
            Some(FirstPoll::RunIfShort) => !self.run_time.as_ref().is_some_and(|r| r.is_short()),
            Some(FirstPoll::Decline) => true,
            Some(FirstPoll::Run) | None => false,
        };
        // Only a run in the first poll is timed from the receipt: one on the pool, from its
        // start there (its wait in the pool's queue is not the handler's).
        let received = self.received.take();
        if decline {
            // Not here: the async server hands the future to the pool, which polls it again.
            return Poll::Pending;
        }
        let Some(job) = self.job.take() else {
            // Polled after it finished.
            return Poll::Pending;
        };
        let started = self
            .run_time
            .is_some()
            .then(|| received.unwrap_or_else(Instant::now));
        let out = job();
        if let (Some(r), Some(t)) = (&self.run_time, started) {
            r.record(t.elapsed());
        }
        Poll::Ready(out)
    }
}

/// A blocking RPC server: a table of synchronous handlers, served over any number of
/// connections, with codec `C` (Bincode by default). Cloning is cheap and shares everything.
///
/// ```no_run
/// use xrpc_blocking::{RpcServer, TcpConfig, TcpFrameTransportListener};
/// let server = RpcServer::new();
/// server.register_typed("add", |(a, b): (i32, i32)| Ok(a + b));
/// server.serve_listener(TcpFrameTransportListener::bind("127.0.0.1:47800", TcpConfig::default())?)?;
/// # Ok::<(), xrpc_blocking::RpcError>(())
/// ```
pub struct RpcServer<C: Codec = BincodeCodec> {
    inner: xrpc_async::RpcServer<C, Blocking>,
    handlers: Arc<HandlerPool>,
}

impl<C: Codec> Clone for RpcServer<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            handlers: self.handlers.clone(),
        }
    }
}

impl<C: Codec> std::fmt::Debug for RpcServer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("methods", &self.methods())
            .field("handlers", &self.handlers)
            .finish()
    }
}

impl Default for RpcServer<BincodeCodec> {
    fn default() -> Self {
        Self::new()
    }
}

impl RpcServer<BincodeCodec> {
    /// A server with no handlers, using Bincode.
    pub fn new() -> Self {
        Self::with_codec(BincodeCodec)
    }
}

impl<C: Codec> RpcServer<C> {
    /// A server using `codec`.
    pub fn with_codec(codec: C) -> Self {
        Self::with_config(codec, ServerConfig::default())
    }

    /// A server using `codec` and `config` (its limits, timeouts and budgets).
    pub fn with_config(codec: C, config: ServerConfig) -> Self {
        let handlers = Arc::new(HandlerPool::new(HandlerThreads::default()));
        let rt = Blocking::with_handlers(handlers.clone());
        Self {
            inner: xrpc_async::RpcServer::with_runtime(codec, config, rt),
            handlers,
        }
    }

    /// The same server with other limits on its handler pool (shared with its clones; they
    /// apply to handlers started from then on).
    pub fn with_handler_threads(self, limits: HandlerThreads) -> Self {
        self.handlers.set_limits(limits);
        self
    }

    /// Registers a handler of raw payload bytes.
    pub fn register<F>(&self, method: &str, handler: F)
    where
        F: Fn(Bytes) -> Result<Bytes, RpcError> + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        let run_time = Arc::new(RunTime::default());
        self.inner.register(method, move |payload| {
            let handler = handler.clone();
            Run::unary(&run_time, None, move || handler(payload))
        });
    }

    /// Registers a typed unary handler: `|req: Req| Ok(Resp { .. })`.
    pub fn register_typed<Req, Resp, F>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Req) -> Result<Resp, RpcError> + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        let run_time = Arc::new(RunTime::default());
        self.inner
            .register_typed_with_context(method, move |ctx, req| {
                let handler = handler.clone();
                Run::unary(&run_time, Some(ctx.started()), move || handler(req))
            });
    }

    /// Registers a typed unary handler that also sees its [`CallContext`]: its deadline and
    /// whether the call was stopped ([`CallContext::is_cancelled`]: the client cancelled it,
    /// its deadline passed, the connection or the server ended). It runs on the handler pool:
    /// its connection's thread is what tells it that its call was stopped.
    pub fn register_typed_with_context<Req, Resp, F>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Req) -> Result<Resp, RpcError> + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
        self.inner
            .register_typed_with_context(method, move |ctx, req| {
                let handler = handler.clone();
                Run::unary_on_pool(move || handler(ctx, req))
            });
    }

    /// Registers a server-streaming handler: it gets the request and a sender for items
    /// (whose [`send`](StreamSender::send) blocks while the client has granted no credit);
    /// the stream ends when it returns `Ok(())`, or fails with its error. It runs on the
    /// handler pool.
    pub fn register_stream<Req, Item, F>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Item: Serialize + Send + 'static,
        F: Fn(Req, ServerStreamSender<Item, C>) -> Result<(), RpcError> + Send + Sync + 'static,
    {
        self.register_stream_with_context(method, move |_ctx, req, sender| handler(req, sender));
    }

    /// Registers a server-streaming handler that also sees its [`CallContext`] (metadata,
    /// peer, cancellation, and the server's shutdown: an endless stream ends when
    /// [`CallContext::is_shutting_down`]).
    pub fn register_stream_with_context<Req, Item, F>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Item: Serialize + Send + 'static,
        F: Fn(CallContext, Req, ServerStreamSender<Item, C>) -> Result<(), RpcError>
            + Send
            + Sync
            + 'static,
    {
        let handler = Arc::new(handler);
        self.inner
            .register_stream_with_context(method, move |ctx, req, sender| {
                let handler = handler.clone();
                Run::stream(move || handler(ctx, req, StreamSender::new(sender)))
            });
    }

    /// Registers a client-streaming handler: it gets the client's items as an iterator and
    /// returns the single response. It runs on the handler pool.
    pub fn register_client_stream<Item, Resp, F>(&self, method: &str, handler: F)
    where
        Item: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(RequestStream<Item, C>) -> Result<Resp, RpcError> + Send + Sync + 'static,
    {
        self.register_client_stream_with_context(method, move |_ctx, items| handler(items));
    }

    /// Registers a client-streaming handler that also sees its [`CallContext`].
    pub fn register_client_stream_with_context<Item, Resp, F>(&self, method: &str, handler: F)
    where
        Item: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, RequestStream<Item, C>) -> Result<Resp, RpcError>
            + Send
            + Sync
            + 'static,
    {
        let handler = Arc::new(handler);
        self.inner
            .register_client_stream_with_context(method, move |ctx, items| {
                let handler = handler.clone();
                Run::stream(move || handler(ctx, StreamReceiver::new(items)))
            });
    }

    /// Registers a bidirectional handler: the client's items in, its own items out (read and
    /// send in turn, within the credit window, or send from a thread of its own). It runs on
    /// the handler pool.
    pub fn register_bidi<Req, Resp, F>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(RequestStream<Req, C>, ServerStreamSender<Resp, C>) -> Result<(), RpcError>
            + Send
            + Sync
            + 'static,
    {
        self.register_bidi_with_context(method, move |_ctx, items, sender| handler(items, sender));
    }

    /// Registers a bidirectional handler that also sees its [`CallContext`].
    pub fn register_bidi_with_context<Req, Resp, F>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(
                CallContext,
                RequestStream<Req, C>,
                ServerStreamSender<Resp, C>,
            ) -> Result<(), RpcError>
            + Send
            + Sync
            + 'static,
    {
        let handler = Arc::new(handler);
        self.inner
            .register_bidi_with_context(method, move |ctx, items, sender| {
                let handler = handler.clone();
                Run::stream(move || {
                    handler(ctx, StreamReceiver::new(items), StreamSender::new(sender))
                })
            });
    }

    /// Sets the signature of `method`: a call carrying another signature's fingerprint is
    /// refused with `RpcError::TypeMismatch` naming both (see
    /// [`xrpc_async::RpcServer::set_signature`]).
    pub fn set_signature(&self, method: &str, signature: Signature) {
        self.inner.set_signature(method, signature);
    }

    /// What the server counted so far: notifications it could not deliver, by reason.
    pub fn stats(&self) -> ServerStats {
        self.inner.stats()
    }

    /// The registered method names.
    pub fn methods(&self) -> Vec<String> {
        self.inner.methods()
    }

    /// Serves one connection on the calling thread until the client closes it or the server
    /// shuts down. Returns an error if the client broke the protocol or the transport failed.
    pub fn serve(&self, transport: impl Into<AnyFrameTransport>) -> Result<(), RpcError> {
        let channel = MessageChannelAdapter::new(transport.into());
        Blocking::block_on(self.inner.serve(channel))
    }

    /// Accepts connections from `listener` and serves each on a thread of its own until
    /// [`shutdown`](Self::shutdown); then closes the listener at once (new connections are
    /// refused) and waits for the connections to finish. A connection accepted while
    /// [`ServerConfig::max_connections`] are served is closed at once; a failed accept backs
    /// off (10 ms, doubling up to 1 s).
    pub fn serve_listener<L: FrameListener>(&self, listener: L) -> Result<(), RpcError> {
        Blocking::block_on(self.inner.serve_listener(listener))
    }

    /// Admits only the peers `policy` admits, from the next accepted connection on (see
    /// [`xrpc_async::RpcServer::set_peer_policy`]): a refused client's calls fail with
    /// [`RpcError::PeerRefused`].
    pub fn set_peer_policy(&self, policy: PeerPolicy) {
        self.inner.set_peer_policy(policy);
    }

    /// Peers refused so far (see [`xrpc_async::RpcServer::peers_refused`]).
    pub fn peers_refused(&self) -> u64 {
        self.inner.peers_refused()
    }

    /// Starts a graceful shutdown: connections refuse new calls, let the calls in progress
    /// finish (for at most [`ServerConfig::drain_timeout`], then they are cancelled), then
    /// close; [`serve`](Self::serve) and [`serve_listener`](Self::serve_listener) return.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

/// Where a server adapter generated by `#[service]` registers: each method is the service's
/// `async fn`, run to completion where a synchronous handler of the same kind runs — a unary
/// method that does not read its [`CallContext`] on its connection's thread while it is quick
/// (as [`register_typed`](RpcServer::register_typed)), every other one on the handler pool.
impl<C: Codec> Registry for RpcServer<C> {
    type Codec = C;

    fn unary<Req, Resp, F, Fut>(&self, method: &'static Method, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let run_time = Arc::new(RunTime::default());
        let on_pool = method.uses_context();
        self.inner
            .register_typed_with_context(method.name(), move |ctx, req| {
                let handler = handler.clone();
                let received = ctx.started();
                let job = move || Blocking::block_on(handler(ctx, req));
                if on_pool {
                    Run::unary_on_pool(job)
                } else {
                    Run::unary(&run_time, Some(received), job)
                }
            });
        self.inner.set_signature(method.name(), method.signature());
    }

    fn server_stream<Req, Item, F, Fut>(&self, method: &'static Method, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Item: Serialize + Send + 'static,
        F: Fn(CallContext, Req, xrpc_async::ServerStreamSender<Item, C>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.inner
            .register_stream_with_context(method.name(), move |ctx, req, sender| {
                let handler = handler.clone();
                Run::stream(move || Blocking::block_on(handler(ctx, req, sender)))
            });
        self.inner.set_signature(method.name(), method.signature());
    }

    fn client_stream<Item, Resp, F, Fut>(&self, method: &'static Method, handler: F)
    where
        Item: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, xrpc_async::RequestStream<Item, C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.inner
            .register_client_stream_with_context(method.name(), move |ctx, items| {
                let handler = handler.clone();
                Run::stream(move || Blocking::block_on(handler(ctx, items)))
            });
        self.inner.set_signature(method.name(), method.signature());
    }

    fn bidi<Req, Resp, F, Fut>(&self, method: &'static Method, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(
                CallContext,
                xrpc_async::RequestStream<Req, C>,
                xrpc_async::ServerStreamSender<Resp, C>,
            ) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.inner
            .register_bidi_with_context(method.name(), move |ctx, items, sender| {
                let handler = handler.clone();
                Run::stream(move || Blocking::block_on(handler(ctx, items, sender)))
            });
        self.inner.set_signature(method.name(), method.signature());
    }
}

impl<C: Codec> RpcServer<C> {
    /// Registers every method of a service defined with `#[service]`:
    /// `server.add_service(CalculatorServer::new(MyCalculator))`. Its `async fn`s run to
    /// completion on the server's threads (see the [`Registry`] implementation).
    pub fn add_service(&self, service: impl Service<Self>) -> &Self {
        service.register(self);
        self
    }
}
