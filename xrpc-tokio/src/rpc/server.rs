//! [`RpcServer`]: method dispatch over message channels.
//!
//! One reader task per connection feeds received messages to the
//! [`ServerConnection`] state machine; each request runs its handler in its own task, so calls
//! on one connection proceed concurrently; the handler's task writes the answer itself. A timer
//! task expires request deadlines and carries out graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use xrpc_proto::idmap::{IdHashState, IdMap, id_map};
use xrpc_proto::{
    BincodeCodec, CallKind, Codec, ErrorCode, Header, IncomingCall, MessageKind, RemoteError,
    ServerConfig, ServerConnection, ServerEvent, ServerSendError,
};

use super::client::READ_BATCH;
use super::error::RpcError;
use super::io::{Batch, CatchUnwind, Outbox, decode_payload, payload_bytes};
use super::stream::{
    Refused, RequestStream, ServerStreamSender, StreamCtl, StreamReceiver, StreamSender,
};
use crate::channel::{ChannelError, MessageChannel, MessageChannelAdapter, Payload};
use crate::transport::{
    FrameTransport, SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
    TcpFrameTransport, TcpFrameTransportListener, TransportError, UnixFrameTransport,
    UnixFrameTransportListener,
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a handler's task ends with: its result, or the message of the panic it raised.
type HandlerResult = Result<Result<Option<Payload>, RpcError>, String>;

/// What a handler knows about its call.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The call id on its connection.
    pub id: u64,
    method: Bytes,
    /// When the client stops waiting (the request's timeout, counted from receipt). The server
    /// answers `DeadlineExceeded` and stops the handler then.
    pub deadline: Option<Instant>,
    /// Who streams.
    pub kind: CallKind,
}

impl CallContext {
    /// The method name.
    pub fn method(&self) -> &str {
        std::str::from_utf8(&self.method).unwrap_or_default()
    }
}

/// The connection-side pieces a handler's streams are built from.
struct StreamParts {
    ctl: Arc<dyn StreamCtl>,
    /// Woken when the client grants credit; only server streams have one.
    credit: Option<Arc<Notify>>,
    items: Option<mpsc::UnboundedReceiver<Result<Payload, RpcError>>>,
}

/// `Ok(Some(bytes))`: respond; `Ok(None)`: end the server stream.
type HandlerFn = Arc<
    dyn Fn(CallContext, Payload, StreamParts) -> BoxFuture<Result<Option<Payload>, RpcError>>
        + Send
        + Sync,
>;

#[derive(Clone)]
struct Registered {
    kind: CallKind,
    f: HandlerFn,
}

struct Shared<C> {
    /// Looked up by method names a peer sends; only registered names are ever stored, so a
    /// fast keyed hash is enough.
    handlers: RwLock<HashMap<String, Registered, IdHashState>>,
    codec: C,
    config: ServerConfig,
    shutdown: watch::Sender<bool>,
}

/// An RPC server: a table of handlers, served over any number of connections.
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
pub struct RpcServer<C: Codec = BincodeCodec> {
    shared: Arc<Shared<C>>,
}

impl<C: Codec> Clone for RpcServer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
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

    /// A server using `codec` and `config`.
    pub fn with_config(codec: C, config: ServerConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                handlers: RwLock::new(HashMap::with_hasher(IdHashState::new())),
                codec,
                config,
                shutdown: watch::channel(false).0,
            }),
        }
    }

    fn insert(&self, method: &str, kind: CallKind, f: HandlerFn) {
        self.shared
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(method.to_string(), Registered { kind, f });
    }

    /// Registers a handler of raw payload bytes.
    pub fn register<F, Fut>(&self, method: &str, handler: F)
    where
        F: Fn(Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, RpcError>> + Send + 'static,
    {
        let f: HandlerFn = Arc::new(move |_ctx, payload, _parts| {
            let fut = payload_bytes(payload).map(&handler);
            Box::pin(async move { fut?.await.map(|b| Some(Payload::Bytes(b))) })
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
        let f: HandlerFn = Arc::new(move |ctx, payload, _parts| {
            // An in-process value is answered with a value: no codec either way.
            let as_value = matches!(payload, Payload::Value(_));
            let req = decode_payload::<Req, C>(&codec, payload);
            let codec = codec.clone();
            let fut = req.map(|req| handler(ctx, req));
            Box::pin(async move {
                let resp = fut?.await?;
                Ok(Some(if as_value {
                    Payload::Value(Box::new(resp))
                } else {
                    Payload::Bytes(codec.encode(&resp)?)
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
        let codec = self.shared.codec.clone();
        let f: HandlerFn = Arc::new(move |ctx, payload, parts| {
            let req = decode_payload::<Req, C>(&codec, payload);
            let sender = StreamSender::new(
                parts.ctl,
                ctx.id,
                parts.credit.unwrap_or_default(),
                codec.clone(),
                false,
            );
            let fut = req.map(|req| handler(req, sender));
            Box::pin(async move {
                fut?.await?;
                Ok(None)
            })
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
        let codec = self.shared.codec.clone();
        let f: HandlerFn = Arc::new(move |ctx, _payload, parts| {
            let items = parts.items.unwrap_or_else(|| mpsc::unbounded_channel().1);
            let stream = StreamReceiver::new(parts.ctl, ctx.id, items, codec.clone());
            let fut = handler(stream);
            let codec = codec.clone();
            Box::pin(async move { Ok(Some(Payload::Bytes(codec.encode(&fut.await?)?))) })
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
        let codec = self.shared.codec.clone();
        let f: HandlerFn = Arc::new(move |ctx, _payload, parts| {
            let items = parts.items.unwrap_or_else(|| mpsc::unbounded_channel().1);
            let stream = StreamReceiver::new(parts.ctl.clone(), ctx.id, items, codec.clone());
            let sender = StreamSender::new(
                parts.ctl,
                ctx.id,
                parts.credit.unwrap_or_default(),
                codec.clone(),
                false,
            );
            let fut = handler(stream, sender);
            Box::pin(async move {
                fut.await?;
                Ok(None)
            })
        });
        self.insert(method, CallKind::Bidirectional, f);
    }

    /// The registered method names.
    pub fn methods(&self) -> Vec<String> {
        let mut m: Vec<String> = self
            .shared
            .handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        m.sort();
        m
    }

    /// Starts a graceful shutdown: connections refuse new calls, let the calls in progress
    /// finish, then close; [`serve`](Self::serve) and [`serve_listener`](Self::serve_listener)
    /// return.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Serves one connection until the peer closes it or the server shuts down.
    pub async fn serve<T: MessageChannel>(&self, channel: T) -> Result<(), RpcError> {
        let conn = Arc::new(Conn {
            channel,
            state: Mutex::new(SrvState {
                conn: ServerConnection::new(self.shared.config),
                running: id_map(),
                shutting_down: false,
                timer_at: None,
                flushing: false,
                closed: false,
            }),
            write_blocked: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            wake: Notify::new(),
            flushed: Notify::new(),
            shared: self.shared.clone(),
        });
        let timer = tokio::spawn(conn.clone().timer(self.shared.shutdown.subscribe()));
        // Stops the timer and every handler when serving ends — normally or because this
        // future was dropped — so the last reference to the channel goes and it closes.
        let mut guard = ServeGuard {
            conn: conn.clone(),
            timer: timer.abort_handle(),
            finished: false,
        };
        let res = conn.clone().read_loop().await;
        guard.finished = true;
        res
    }

    /// Accepts connections from `listener` and serves each in its own task, until
    /// [`shutdown`](Self::shutdown); then waits for the connections to finish.
    pub async fn serve_listener<L: FrameListener>(&self, listener: L) -> Result<(), RpcError> {
        self.serve_listener_with(listener, MessageChannelAdapter::new)
            .await
    }

    /// Like [`serve_listener`](Self::serve_listener), building each connection's channel with
    /// `make_channel` (for example `|t| MessageChannelAdapter::with_compression(t, cfg)`).
    ///
    /// A failed accept (a client that vanished, too many open files) does not stop the server:
    /// it backs off (10 ms, doubling up to 1 s) and accepts again.
    pub async fn serve_listener_with<L, M, F>(
        &self,
        listener: L,
        make_channel: F,
    ) -> Result<(), RpcError>
    where
        L: FrameListener,
        M: MessageChannel,
        F: Fn(L::Transport) -> M,
    {
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut conns = JoinSet::new();
        let mut backoff = Duration::ZERO;
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                r = listener.accept() => match r {
                    Ok(transport) => {
                        backoff = Duration::ZERO;
                        let server = self.clone();
                        let channel = make_channel(transport);
                        conns.spawn(async move {
                            let _ = server.serve(channel).await;
                        });
                    }
                    Err(_) => {
                        backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                        tokio::time::sleep(backoff).await;
                    }
                },
                _ = shutdown.changed() => {}
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        while conns.join_next().await.is_some() {}
        Ok(())
    }
}

/// A source of incoming frame transports (a bound socket).
pub trait FrameListener: Send + Sync + 'static {
    /// The transport of an accepted connection.
    type Transport: FrameTransport;
    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = Result<Self::Transport, TransportError>> + Send;
}

impl FrameListener for TcpFrameTransportListener {
    type Transport = TcpFrameTransport;

    async fn accept(&self) -> Result<TcpFrameTransport, TransportError> {
        TcpFrameTransportListener::accept(self)
            .await
            .map(|(t, _)| t)
    }
}

impl FrameListener for SharedMemoryFrameTransportListener {
    type Transport = SharedMemoryFrameTransport;

    async fn accept(&self) -> Result<SharedMemoryFrameTransport, TransportError> {
        SharedMemoryFrameTransportListener::accept(self).await
    }
}

impl FrameListener for UnixFrameTransportListener {
    type Transport = UnixFrameTransport;

    async fn accept(&self) -> Result<UnixFrameTransport, TransportError> {
        UnixFrameTransportListener::accept(self)
            .await
            .map(|(t, _)| t)
    }
}

/// The bytes a payload will take on the wire (an in-process value: none to speak of).
fn payload_len(p: &Payload) -> usize {
    match p {
        Payload::Bytes(b) => b.len(),
        Payload::Value(_) => 0,
    }
}

struct ServeGuard<T: MessageChannel, C: Codec> {
    conn: Arc<Conn<T, C>>,
    timer: AbortHandle,
    /// The read loop ended by itself (and closed the channel); otherwise the `serve` future
    /// was dropped.
    finished: bool,
}

impl<T: MessageChannel, C: Codec> Drop for ServeGuard<T, C> {
    fn drop(&mut self) {
        self.timer.abort();
        if !self.finished {
            // Serving was dropped: a write waiting for a client that does not read holds the
            // connection in its task; it gets `shutdown_flush_timeout` to finish, then the
            // connection closes rather than stay open until the client reads.
            self.conn.dropped.store(true, Ordering::SeqCst);
            if self.conn.write_blocked.load(Ordering::SeqCst) {
                super::io::close_after(&self.conn, self.conn.close_grace());
            }
        }
        let mut st = self.conn.lock();
        st.conn.handle_close();
        st.conn_events(&self.conn);
        for (_, r) in st.running.drain() {
            if let Some(a) = r.abort {
                a.abort();
            }
        }
    }
}

struct Running {
    abort: Option<AbortHandle>,
    items: Option<mpsc::UnboundedSender<Result<Payload, RpcError>>>,
    credit: Option<Arc<Notify>>,
}

struct SrvState {
    conn: ServerConnection<Payload>,
    running: IdMap<Running>,
    shutting_down: bool,
    /// When the timer task is due to wake (`None`: no deadline pending).
    timer_at: Option<Instant>,
    /// A task is draining the transmit queue (see [`Outbox`]).
    flushing: bool,
    /// The connection was closed by the server (graceful shutdown): the reader stops waiting.
    closed: bool,
}

struct Conn<T, C> {
    channel: T,
    state: Mutex<SrvState>,
    wake: Notify,
    /// Notified whenever a flush ends (see [`Conn::flush_all`]) and whenever a blocked write
    /// finishes (see [`Conn::wait_backlog`]).
    flushed: Notify,
    /// A write is waiting for the client to read (see [`Outbox::write_blocked`]).
    write_blocked: AtomicBool,
    /// The `serve` future was dropped (see [`Outbox::abandoned`]).
    dropped: AtomicBool,
    shared: Arc<Shared<C>>,
}

impl SrvState {
    /// Routes the state machine's events: starts handlers, forwards stream items and credit,
    /// stops cancelled handlers.
    fn conn_events<T: MessageChannel, C: Codec>(&mut self, conn: &Arc<Conn<T, C>>) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                ServerEvent::Request(call) => conn.start_call(self, call),
                ServerEvent::Notification {
                    method, payload, ..
                } => {
                    let name = std::str::from_utf8(&method).unwrap_or_default();
                    let h = conn.handler(name);
                    if let Some(h) = h.filter(|h| h.kind == CallKind::Unary) {
                        let ctx = CallContext {
                            id: 0,
                            method,
                            deadline: None,
                            kind: CallKind::Unary,
                        };
                        let fut = (h.f)(ctx, payload, conn.parts(CallKind::Unary, None));
                        let conn = conn.clone();
                        tokio::spawn(async move {
                            let _ = CatchUnwind(fut).await;
                            let mut st = conn.lock();
                            st.conn.notification_done();
                            if st.shutting_down && st.conn.is_idle() {
                                conn.wake.notify_one();
                            }
                        });
                    } else {
                        self.conn.notification_done();
                    }
                }
                ServerEvent::Cancelled { id } => {
                    if let Some(r) = self.running.remove(&id)
                        && let Some(a) = r.abort
                    {
                        a.abort();
                    }
                }
                ServerEvent::StreamItem { id, payload } => {
                    if let Some(Running {
                        items: Some(tx), ..
                    }) = self.running.get(&id)
                    {
                        let _ = tx.send(Ok(payload));
                    }
                }
                ServerEvent::StreamEnd { id } => {
                    if let Some(r) = self.running.get_mut(&id) {
                        r.items = None;
                    }
                }
                ServerEvent::SendCredit { id } => {
                    if let Some(credit) = self.running.get(&id).and_then(|r| r.credit.as_ref()) {
                        credit.notify_waiters();
                    }
                }
            }
        }
    }
}

impl<T: MessageChannel, C: Codec> Conn<T, C> {
    fn lock(&self) -> MutexGuard<'_, SrvState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn handler(&self, method: &str) -> Option<Registered> {
        self.shared
            .handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(method)
            .cloned()
    }

    fn parts(
        self: &Arc<Self>,
        kind: CallKind,
        items: Option<mpsc::UnboundedReceiver<Result<Payload, RpcError>>>,
    ) -> StreamParts {
        StreamParts {
            ctl: self.clone(),
            credit: kind.server_streams().then(Default::default),
            items,
        }
    }

    fn start_call(self: &Arc<Self>, st: &mut SrvState, call: IncomingCall<Payload>) {
        let id = call.id;
        let Some(h) = self.handler(call.method_str()) else {
            let e = RemoteError::new(
                ErrorCode::MethodNotFound,
                format!("method not found: {}", call.method_str()),
            );
            st.conn.respond_error(id, e);
            return;
        };
        if h.kind != call.kind {
            let e = RemoteError::new(
                ErrorCode::Unsupported,
                format!(
                    "{} is a {:?} method, called as {:?}",
                    call.method_str(),
                    h.kind,
                    call.kind
                ),
            );
            st.conn.respond_error(id, e);
            return;
        }
        if call.codec != C::ID && call.codec != 0 {
            let e = RemoteError::new(
                ErrorCode::Unsupported,
                format!(
                    "codec {} not supported, this server speaks {}",
                    call.codec,
                    C::ID
                ),
            );
            st.conn.respond_error(id, e);
            return;
        }
        let (items_tx, items_rx) = if call.kind.client_streams() {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let parts = self.parts(call.kind, items_rx);
        let credit = parts.credit.clone();
        let ctx = CallContext {
            id,
            method: call.method,
            deadline: call.deadline,
            kind: call.kind,
        };
        let mut fut = CatchUnwind((h.f)(ctx, call.payload, parts));
        if call.kind == CallKind::Unary {
            // Most unary handlers finish without waiting: run them here, on the reader, and
            // save the task hand-off. One that waits moves to its own task (polled again there
            // with a real waker).
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(res) = Pin::new(&mut fut).poll(&mut cx) {
                Self::apply_result(st, id, res);
                return;
            }
        }
        let conn = self.clone();
        let task = tokio::spawn(async move {
            let res = fut.await;
            conn.finish_call(id, res).await;
        });
        st.running.insert(
            id,
            Running {
                abort: Some(task.abort_handle()),
                items: items_tx,
                credit,
            },
        );
    }

    /// Answers call `id` with what its handler returned (or the panic it raised).
    fn apply_result(st: &mut SrvState, id: u64, res: HandlerResult) {
        st.running.remove(&id);
        match res {
            Ok(Ok(Some(payload))) => {
                st.conn.respond(id, payload, C::ID);
            }
            Ok(Ok(None)) => {
                st.conn.end_stream(id);
            }
            Ok(Err(e)) => {
                st.conn.respond_error(id, e.to_remote());
            }
            Err(panic) => {
                let e = RemoteError::new(ErrorCode::Panic, format!("handler panicked: {panic}"));
                st.conn.respond_error(id, e);
            }
        }
    }

    async fn finish_call(self: &Arc<Self>, id: u64, res: HandlerResult) {
        {
            let mut st = self.lock();
            Self::apply_result(&mut st, id, res);
            if st.shutting_down {
                self.wake.notify_one();
            }
        }
        self.flush().await;
    }

    /// Writes what is queued without waiting (a write that cannot finish at once goes on in a
    /// task): the reader calls it after each burst and must never wait on a write (if both
    /// peers' readers did, neither would read again).
    fn flush_soon(self: &Arc<Self>) {
        if self.claim().is_some() {
            super::io::drain(self.clone());
        }
    }

    /// Sends what is queued (see [`Outbox`]).
    async fn flush(self: &Arc<Self>) {
        super::io::flush(self).await;
    }

    /// Flushes and waits until whatever another task was writing has been written too.
    async fn flush_all(self: &Arc<Self>) {
        loop {
            self.flush().await;
            let flushed = self.flushed.notified();
            let mut flushed = std::pin::pin!(flushed);
            flushed.as_mut().enable();
            {
                let st = self.lock();
                if !st.flushing && !st.conn.has_transmit() {
                    return;
                }
            }
            flushed.await;
        }
    }

    /// Writes everything queued before the connection ends, waiting for the client to read
    /// it — but no longer than [`ServerConfig::shutdown_flush_timeout`], so a client that
    /// never reads cannot hold the end up.
    async fn finish_writes(self: &Arc<Self>) {
        let grace = self.shared.config.shutdown_flush_timeout;
        let _ = tokio::time::timeout(grace, self.flush_all()).await;
    }

    /// Waits while the client is not reading and answers to it have piled up past
    /// [`ServerConfig::max_transmit_backlog`]: the reader reads no more until they drain, so
    /// a client that only sends is held back by the transport instead of growing the queue.
    async fn wait_backlog(&self) {
        while self.write_blocked.load(Ordering::Acquire) {
            let flushed = self.flushed.notified();
            let mut flushed = std::pin::pin!(flushed);
            flushed.as_mut().enable();
            {
                let st = self.lock();
                if st.closed
                    || !self.write_blocked.load(Ordering::Acquire)
                    || !st.conn.is_backlogged(payload_len)
                {
                    return;
                }
            }
            flushed.await;
        }
    }

    async fn read_loop(self: Arc<Self>) -> Result<(), RpcError> {
        let mut batch = Vec::with_capacity(READ_BATCH);
        loop {
            self.wait_backlog().await;
            // Answers queued since the last burst (by handlers that finished later) are written
            // before the reader sleeps.
            let received = {
                let mut recv = std::pin::pin!(self.channel.recv_packets(&mut batch, READ_BATCH));
                let first = {
                    let mut cx = Context::from_waker(Waker::noop());
                    recv.as_mut().poll(&mut cx)
                };
                match first {
                    Poll::Ready(r) => r,
                    Poll::Pending => {
                        if self.lock().conn.has_transmit() {
                            self.flush_soon();
                        }
                        recv.await
                    }
                }
            };
            if let Err(e) = received {
                // Answers already queued still go out (a peer that only half-closed reads
                // them); then the connection closes, even if the peer never read them.
                self.finish_writes().await;
                if e.is_fatal() {
                    let _ = self.channel.close().await;
                    return match RpcError::from(e) {
                        RpcError::Disconnected(_) => Ok(()),
                        other => Err(other),
                    };
                }
                let _ = self.channel.close().await;
                return Err(RpcError::InvalidMessage(format!(
                    "client sent a malformed message: {e}"
                )));
            }
            let mut failure = None;
            {
                let mut st = self.lock();
                for received in batch.drain(..) {
                    let packet = match received {
                        Ok(packet) => packet,
                        Err(e) => {
                            failure = Some(RpcError::InvalidMessage(format!(
                                "client sent a malformed message: {e}"
                            )));
                            break;
                        }
                    };
                    if let Err(v) = st.conn.handle_packet(Instant::now(), packet) {
                        failure = Some(RpcError::InvalidMessage(v.to_string()));
                        break;
                    }
                    st.conn_events(&self);
                }
                // Wake the timer only for a deadline earlier than the one it sleeps on, or to
                // finish a graceful shutdown that the last cancel made idle.
                let next = st.conn.poll_timeout();
                if next.is_some() && (st.timer_at.is_none() || next < st.timer_at) {
                    st.timer_at = next;
                    self.wake.notify_one();
                } else if st.shutting_down && st.conn.is_idle() {
                    self.wake.notify_one();
                }
            }
            if let Some(e) = failure {
                // Answer what was read before the bad message, then close.
                self.finish_writes().await;
                let _ = self.channel.close().await;
                return Err(e);
            }
            // Answer each burst at once: the client starts on these answers while this reader
            // decodes the next burst, so under load both sides work at the same time (one
            // write per burst of up to READ_BATCH requests).
            self.flush_soon();
        }
    }

    async fn timer(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let (next, shutting_down, done) = {
                let mut st = self.lock();
                let done = st.shutting_down && st.conn.is_idle();
                let next = st.conn.poll_timeout();
                st.timer_at = next;
                (next, st.shutting_down, done)
            };
            if done {
                self.finish_writes().await;
                self.lock().closed = true;
                self.flushed.notify_waiters();
                let _ = self.channel.close().await;
                return;
            }
            tokio::select! {
                _ = async { match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                } } => {}
                _ = self.wake.notified() => {}
                r = shutdown.wait_for(|v| *v), if !shutting_down => {
                    if r.is_ok() {
                        let mut st = self.lock();
                        st.shutting_down = true;
                        st.conn.start_shutdown();
                    }
                }
            }
            {
                let mut st = self.lock();
                st.conn.handle_timeout(Instant::now());
                st.conn_events(&self);
            }
            self.flush().await;
        }
    }
}

impl<T: MessageChannel, C: Codec> Outbox for Conn<T, C> {
    type Channel = T;

    fn channel(&self) -> &T {
        &self.channel
    }

    fn claim(&self) -> Option<bool> {
        let mut st = self.lock();
        if st.flushing || !st.conn.has_transmit() {
            return None;
        }
        st.flushing = true;
        Some(!st.running.is_empty())
    }

    fn take(&self) -> Batch {
        let packets = {
            let mut st = self.lock();
            let packets = Batch::collect(|| st.conn.poll_transmit());
            if let Batch::Empty = packets {
                st.flushing = false;
            }
            packets
        };
        if let Batch::Empty = packets {
            self.flushed.notify_waiters();
        }
        packets
    }

    fn release(&self) {
        self.lock().flushing = false;
        self.flushed.notify_waiters();
        // The timer task sends what is left.
        self.wake.notify_one();
    }

    fn unsendable(&self, failed: Vec<(Header, ChannelError)>) {
        let mut st = self.lock();
        for (header, e) in failed {
            if matches!(header.kind, MessageKind::Response | MessageKind::StreamItem) {
                // Tell the client instead, so its call does not hang.
                st.conn.answer_unsendable(
                    header.id,
                    ErrorCode::Handler,
                    format!("the answer could not be sent: {e}"),
                );
                if let Some(r) = st.running.remove(&header.id)
                    && let Some(a) = r.abort
                {
                    a.abort();
                }
            }
        }
        if st.shutting_down && st.conn.is_idle() {
            self.wake.notify_one();
        }
    }

    fn send_failed(&self, _: ChannelError) {
        // The reader sees the closed channel and ends the serve loop.
    }

    fn abandoned(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }

    fn close_grace(&self) -> std::time::Duration {
        self.shared.config.shutdown_flush_timeout
    }

    fn write_blocked(&self, blocked: bool) {
        self.write_blocked.store(blocked, Ordering::SeqCst);
        if !blocked {
            self.flushed.notify_waiters();
        }
    }
}

impl<T: MessageChannel, C: Codec> StreamCtl for Conn<T, C> {
    fn consumed(&self, id: u64, n: u32) {
        let mut st = self.lock();
        st.conn.stream_consumed(id, n);
        if st.conn.has_transmit() {
            self.wake.notify_one();
        }
    }

    fn abandon(&self, id: u64, unread: u32) {
        let mut st = self.lock();
        if let Some(r) = st.running.get_mut(&id) {
            r.items = None;
        }
        st.conn.stream_abandoned(id, unread);
        if st.conn.has_transmit() {
            self.wake.notify_one();
        }
    }

    fn try_send_item(&self, id: u64, payload: Payload, codec: u8) -> Result<(), Refused> {
        match self.lock().conn.send_stream_item(id, payload, codec) {
            Ok(()) => Ok(()),
            Err(ServerSendError::NoCredit(p)) => Err(Refused::NoCredit(p)),
            Err(ServerSendError::Closed(_)) => Err(Refused::Closed),
        }
    }

    fn finish(&self, id: u64) {
        if self.lock().conn.end_stream(id) {
            self.wake.notify_one();
        }
    }

    fn flush_queued(self: Arc<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move { Conn::flush(&self).await })
    }
}
