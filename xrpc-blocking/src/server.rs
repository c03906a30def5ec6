//! [`RpcServer`]: the table of handlers, serving connections with a thread each.
//!
//! **Threads.** A connection has one thread of its own (it reads, and answers lone unary calls
//! itself); handlers that must run beside it go to one pool shared by the server's
//! connections. Both are bounded ([`ServerLimits`]): past `max_connections` the listener stops
//! accepting (clients wait in the socket's backlog) until a connection ends, and the pool
//! never has more than `max_handler_threads` threads (further handlers queue). A thread per
//! connection because the connection's thread is also its reader: a pool of readers would need
//! a readiness poller — the async adapters are that design.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_proto::{
    BincodeCodec, CallKind, Codec, MethodTable, Payload, ReadBudget, SendError, ServerConfig,
    decode_payload, payload_bytes,
};

use crate::RpcError;
use crate::connection::{ServerConn, ServerState, serve};
use crate::pool::Pool;
use crate::transport::{FrameListener, FrameTransport};

/// `Ok(Some(payload))`: respond; `Ok(None)`: end the server stream. Gets its connection and
/// call id (for its stream sender).
pub(crate) type Handler =
    Arc<dyn Fn(&Arc<ServerConn>, u64, Payload) -> Result<Option<Payload>, RpcError> + Send + Sync>;

/// How often the accept loop checks for a shutdown.
const CHECK: Duration = Duration::from_millis(100);

/// The threads a server may use: a thread per connection, and a pool for handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once by [`RpcServer::serve_listener`] (a thread each). Default 256.
    pub max_connections: usize,
    /// Threads running handlers beside the connections' own. Default 64.
    pub max_handler_threads: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_handler_threads: 64,
        }
    }
}

pub(crate) struct Shared<C> {
    pub(crate) routes: Arc<RwLock<MethodTable<Handler>>>,
    codec: C,
    pub(crate) config: ServerConfig,
    pub(crate) shutdown: AtomicBool,
    /// Read buffers of frames not yet whole, on all connections together.
    pub(crate) reads: ReadBudget,
    pub(crate) pool: Arc<Pool>,
    max_connections: AtomicUsize,
    /// Connections being served by `serve_listener`, and a signal when one ends.
    live: Mutex<usize>,
    ended: Condvar,
}

/// A blocking RPC server: a table of handlers, served over any number of connections, with
/// codec `C` (Bincode by default). Cloning is cheap and shares everything.
///
/// ```no_run
/// use xrpc_blocking::{RpcServer, TcpConfig, TcpFrameTransportListener};
/// let server = RpcServer::new();
/// server.register_typed("add", |(a, b): (i32, i32)| Ok(a + b));
/// server.serve_listener(TcpFrameTransportListener::bind("127.0.0.1:47800", TcpConfig::default())?)?;
/// # Ok::<(), xrpc_blocking::RpcError>(())
/// ```
#[derive(Clone)]
pub struct RpcServer<C: Codec = BincodeCodec> {
    shared: Arc<Shared<C>>,
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

/// Counts a connection of `serve_listener` until its thread ends.
struct Live<C>(Arc<Shared<C>>);

impl<C> Drop for Live<C> {
    fn drop(&mut self) {
        *self.0.live.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        self.0.ended.notify_all();
    }
}

impl<C: Codec> RpcServer<C> {
    /// A server using `codec`.
    pub fn with_codec(codec: C) -> Self {
        Self::with_config(codec, ServerConfig::default())
    }

    /// A server using `codec` and the session settings `config`.
    pub fn with_config(codec: C, config: ServerConfig) -> Self {
        let limits = ServerLimits::default();
        Self {
            shared: Arc::new(Shared {
                routes: Arc::new(RwLock::new(MethodTable::new())),
                codec,
                config,
                shutdown: AtomicBool::new(false),
                reads: ReadBudget::new(config.max_read_buffers_total),
                pool: Arc::new(Pool::new(limits.max_handler_threads)),
                max_connections: AtomicUsize::new(limits.max_connections),
                live: Mutex::new(0),
                ended: Condvar::new(),
            }),
        }
    }

    /// The same server with other thread limits (shared with its clones).
    pub fn with_limits(self, limits: ServerLimits) -> Self {
        let s = &self.shared;
        s.max_connections
            .store(limits.max_connections.max(1), Ordering::Relaxed);
        s.pool
            .max
            .store(limits.max_handler_threads.max(1), Ordering::Relaxed);
        self
    }

    fn insert(&self, method: &str, kind: CallKind, f: Handler) {
        self.shared
            .routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(method, kind, f);
    }

    /// Registers a handler of raw payload bytes.
    pub fn register<F>(&self, method: &str, handler: F)
    where
        F: Fn(Bytes) -> Result<Bytes, RpcError> + Send + Sync + 'static,
    {
        let f: Handler = Arc::new(move |_, _, payload| {
            Ok(Some(Payload::Bytes(handler(payload_bytes(payload)?)?)))
        });
        self.insert(method, CallKind::Unary, f);
    }

    /// Registers a typed unary handler: `|req: Req| Ok(Resp { .. })`.
    pub fn register_typed<Req, Resp, F>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Req) -> Result<Resp, RpcError> + Send + Sync + 'static,
    {
        let codec = self.shared.codec.clone();
        let f: Handler = Arc::new(move |_, _, payload| {
            let resp = handler(decode_payload::<Req, C>(&codec, payload)?)?;
            Ok(Some(Payload::Bytes(codec.encode(&resp)?)))
        });
        self.insert(method, CallKind::Unary, f);
    }

    /// Registers a server-streaming handler: it gets the request and a sender for items
    /// (whose [`send`](ServerStreamSender::send) blocks while the client has granted no
    /// credit); the stream ends when it returns `Ok(())`, or fails with its error. It runs on
    /// the server's pool.
    pub fn register_stream<Req, Item, F>(&self, method: &str, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Item: Serialize + Send + 'static,
        F: Fn(Req, ServerStreamSender<Item, C>) -> Result<(), RpcError> + Send + Sync + 'static,
    {
        let codec = self.shared.codec.clone();
        let f: Handler = Arc::new(move |conn, id, payload| {
            let req = decode_payload::<Req, C>(&codec, payload)?;
            let (conn, codec, _item) = (conn.clone(), codec.clone(), PhantomData);
            handler(
                req,
                ServerStreamSender {
                    conn,
                    id,
                    codec,
                    _item,
                },
            )?;
            Ok(None)
        });
        self.insert(method, CallKind::ServerStreaming, f);
    }

    /// The registered method names.
    pub fn methods(&self) -> Vec<String> {
        let routes = self.shared.routes.read();
        let routes = routes.unwrap_or_else(PoisonError::into_inner);
        let mut m: Vec<String> = routes.names().map(str::to_string).collect();
        m.sort();
        m
    }

    /// Serves one connection on the calling thread until the client closes it or the server
    /// shuts down. Returns an error if the client broke the protocol or the transport failed.
    pub fn serve(&self, transport: impl FrameTransport) -> Result<(), RpcError> {
        serve(&self.shared, transport.into_io())
    }

    /// Accepts connections from `listener` and serves each on a thread of its own (at most
    /// [`ServerLimits::max_connections`] at once), until [`shutdown`](Self::shutdown); then
    /// waits for the connections to finish. A failed accept waits 100 ms and accepts again.
    pub fn serve_listener<L: FrameListener>(&self, listener: L) -> Result<(), RpcError> {
        let s = &self.shared;
        while !s.shutdown.load(Ordering::Acquire) {
            {
                let live = s.live.lock().unwrap_or_else(PoisonError::into_inner);
                if *live >= s.max_connections.load(Ordering::Relaxed) {
                    let _ = s.ended.wait_timeout(live, CHECK);
                    continue;
                }
            }
            match listener.accept_timeout(CHECK) {
                Ok(Some(transport)) => {
                    *s.live.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                    let (live, server) = (Live(s.clone()), self.clone());
                    let serve = move || (server.serve(transport), drop(live));
                    // A thread that cannot be started drops its transport (and `live`).
                    let _ = thread::Builder::new()
                        .name("xrpc-connection".into())
                        .spawn(serve);
                }
                Ok(None) => {}
                Err(_) => {
                    thread::sleep(CHECK); // a client that vanished, too many open files
                }
            }
        }
        let live = s.live.lock().unwrap_or_else(PoisonError::into_inner);
        drop(s.ended.wait_while(live, |n| *n > 0));
        Ok(())
    }

    /// Starts a graceful shutdown: connections refuse new calls, let the calls in progress
    /// finish (for at most [`ServerConfig::drain_timeout`]), then close;
    /// [`serve`](Self::serve) and [`serve_listener`](Self::serve_listener) return (each
    /// notices within 100 ms).
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
    }
}

/// Sends the items of a server stream; [`send`](Self::send) blocks while the client has
/// granted no credit.
pub struct ServerStreamSender<Item, C: Codec = BincodeCodec> {
    conn: Arc<ServerConn>,
    id: u64,
    codec: C,
    _item: PhantomData<fn(Item)>,
}

crate::stream::debug_by_id!(ServerStreamSender);

impl<Item: Serialize, C: Codec> ServerStreamSender<Item, C> {
    /// Sends one item, waiting for credit. Fails with `Cancelled` once the call is over for
    /// the client (cancelled, expired, or its connection gone): stop then.
    pub fn send(&self, item: &Item) -> Result<(), RpcError> {
        let mut payload = Some(Payload::Bytes(self.codec.encode(item)?));
        let me = thread::current();
        while let Some(p) = payload.take() {
            let mut st = self.conn.link.lock();
            let ServerState {
                session, running, ..
            } = &mut *st;
            let Some(r) = running.get_mut(&self.id).filter(|r| !r.cancelled) else {
                return Err(RpcError::Cancelled);
            };
            match session.send_item(self.id, p) {
                Ok(()) => break,
                Err(SendError::NoCredit(p)) => {
                    payload = Some(p);
                    r.threads.push(me.clone());
                }
                Err(SendError::Over(e)) => return Err(e.into()),
            }
            drop(st);
            // Woken by the connection's thread when credit comes or the call ends.
            thread::park_timeout(CHECK);
        }
        self.conn.link.flush();
        Ok(())
    }
}
