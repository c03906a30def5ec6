//! [`ConnectionPool`]: per-endpoint connections, opened lazily by a [`Connect`], reused by
//! later calls, checked before use (a broken connection is dropped), at most
//! [`PoolConfig::max_connections`] an endpoint and [`PoolConfig::max_total_connections`] in all,
//! and closed after the idle timeout. Which connection a call gets, and which idle connection
//! makes room at the cap, are the core's rules ([`PoolConfig::checkout`],
//! [`PoolConfig::victim`]); the time is the pool's runtime's.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use xrpc_proto::Codec;
use xrpc_proto::balance::{Checkout, Endpoint, PoolConfig, Slot};

use crate::channel::MessageChannel;
use crate::rpc::{RpcClient, RpcError};
use crate::runtime::{Runtime, Timer};

/// The future a [`Connect`] returns.
pub type ConnectFuture<'a, T, C, R> =
    Pin<Box<dyn Future<Output = Result<RpcClient<T, C, R>, RpcError>> + Send + 'a>>;

/// Opens a connection to an endpoint: the IO, which the adapter provides (the tokio adapter
/// implements it for `Arc<F>` of any `ClientFactory` `F`, as the original API's README
/// writes it).
pub trait Connect<R: Runtime, T: MessageChannel, C: Codec>: Send + Sync + 'static {
    /// A client connected to `endpoint`.
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> ConnectFuture<'a, T, C, R>;
}

/// A [`Connect`] from a function of the endpoint.
pub struct ConnectFn<F>(pub F);

impl<R, T, C, F, Fut> Connect<R, T, C> for ConnectFn<F>
where
    R: Runtime,
    T: MessageChannel,
    C: Codec,
    F: Fn(Endpoint) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<RpcClient<T, C, R>, RpcError>> + Send + 'static,
{
    fn connect<'a>(&'a self, endpoint: &'a Endpoint) -> ConnectFuture<'a, T, C, R> {
        Box::pin((self.0)(endpoint.clone()))
    }
}

struct Conn<T: MessageChannel, C: Codec, R: Runtime> {
    client: RpcClient<T, C, R>,
    last_used: Instant,
    /// Callers holding it ([`PoolGuard`]s), who may not have made their call yet.
    leases: Arc<AtomicUsize>,
}

impl<T: MessageChannel, C: Codec, R: Runtime> Conn<T, C, R> {
    fn slot(&self) -> Slot {
        Slot {
            in_flight: self
                .client
                .pending_calls()
                .max(self.leases.load(Ordering::Acquire)),
            healthy: self.client.is_connected(),
            last_used: self.last_used,
        }
    }
}

struct Entry<T: MessageChannel, C: Codec, R: Runtime> {
    conns: Vec<Conn<T, C, R>>,
    connecting: usize,
    /// Calls waiting for a connection being opened.
    waiting: Vec<Waker>,
}

impl<T: MessageChannel, C: Codec, R: Runtime> Default for Entry<T, C, R> {
    fn default() -> Self {
        Self {
            conns: Vec::new(),
            connecting: 0,
            waiting: Vec::new(),
        }
    }
}

struct State<T: MessageChannel, C: Codec, R: Runtime> {
    entries: HashMap<Endpoint, Entry<T, C, R>>,
    /// Connections open or being opened, over every endpoint.
    total: usize,
    /// Calls waiting for room under the total cap.
    waiting_for_room: Vec<Waker>,
    last_sweep: Option<Instant>,
}

/// Adds `waker` to `waiting` unless it is there already (a task polled again while waiting).
fn register(waiting: &mut Vec<Waker>, waker: &Waker) {
    if !waiting.iter().any(|w| w.will_wake(waker)) {
        waiting.push(waker.clone());
    }
}

/// How often connections of every endpoint are checked for idleness, and how often a call
/// waiting for room looks again even if nothing told it to (a call ending on a connection is
/// seen by the pool only when its lease ends).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Connections to many endpoints, reused across calls.
pub struct ConnectionPool<T: MessageChannel, C: Codec, R: Runtime> {
    shared: Arc<PoolCore<T, C, R>>,
}

struct PoolCore<T: MessageChannel, C: Codec, R: Runtime> {
    config: PoolConfig,
    connector: Box<dyn Connect<R, T, C>>,
    rt: R,
    state: Mutex<State<T, C, R>>,
    /// Some call waits for room (set before it looks for an idle connection, so that a lease
    /// ending meanwhile either is seen idle or wakes it).
    room_wanted: AtomicBool,
}

impl<T: MessageChannel, C: Codec, R: Runtime> PoolCore<T, C, R> {
    fn lock(&self) -> MutexGuard<'_, State<T, C, R>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `n` connections left the pool: calls waiting for room may go on.
    fn freed(&self, st: &mut State<T, C, R>, n: usize) {
        st.total -= n;
        if n > 0 {
            self.wake_for_room(st);
        }
    }

    fn wake_for_room(&self, st: &mut State<T, C, R>) {
        self.room_wanted.store(false, Ordering::SeqCst);
        st.waiting_for_room.drain(..).for_each(Waker::wake);
    }
}

/// A pooled connection checked out for a call (the original API's `PoolGuard`): while it is
/// held the connection counts as in use, so that it is not closed to make room.
pub struct PoolGuard<T: MessageChannel, C: Codec, R: Runtime> {
    client: RpcClient<T, C, R>,
    leases: Arc<AtomicUsize>,
    pool: Arc<PoolCore<T, C, R>>,
}

impl<T: MessageChannel, C: Codec, R: Runtime> PoolGuard<T, C, R> {
    /// The client of the connection.
    pub fn client(&self) -> &RpcClient<T, C, R> {
        &self.client
    }
}

impl<T: MessageChannel, C: Codec, R: Runtime> Deref for PoolGuard<T, C, R> {
    type Target = RpcClient<T, C, R>;

    fn deref(&self) -> &RpcClient<T, C, R> {
        &self.client
    }
}

impl<T: MessageChannel, C: Codec, R: Runtime> Drop for PoolGuard<T, C, R> {
    fn drop(&mut self) {
        self.leases.fetch_sub(1, Ordering::SeqCst);
        if self.pool.room_wanted.load(Ordering::SeqCst) {
            let mut st = self.pool.lock();
            self.pool.wake_for_room(&mut st);
        }
    }
}

/// Gives back a connection slot being opened if the opening fails or is abandoned.
struct Opening<'a, T: MessageChannel, C: Codec, R: Runtime> {
    pool: &'a PoolCore<T, C, R>,
    endpoint: &'a Endpoint,
    /// Still being opened (false once it is a connection of the pool).
    pending: bool,
}

impl<T: MessageChannel, C: Codec, R: Runtime> Drop for Opening<'_, T, C, R> {
    fn drop(&mut self) {
        if !self.pending {
            return;
        }
        let mut st = self.pool.lock();
        if let Some(e) = st.entries.get_mut(self.endpoint) {
            e.connecting = e.connecting.saturating_sub(1);
            e.waiting.drain(..).for_each(Waker::wake);
        }
        self.pool.freed(&mut st, 1);
    }
}

/// What a checkout found.
enum Found<T: MessageChannel, C: Codec, R: Runtime> {
    /// A connection, leased.
    Conn(RpcClient<T, C, R>, Arc<AtomicUsize>),
    /// A slot to open one in (counted as being opened), and the connection closed to make room.
    Open(Option<RpcClient<T, C, R>>),
}

impl<T: MessageChannel, C: Codec, R: Runtime> ConnectionPool<T, C, R> {
    /// A pool opening connections with `connector`, on the runtime of the calling context.
    pub fn new(config: PoolConfig, connector: impl Connect<R, T, C>) -> Self {
        Self::with_runtime(config, connector, R::default())
    }

    /// A pool on runtime `rt` (its clock times idleness).
    pub fn with_runtime(config: PoolConfig, connector: impl Connect<R, T, C>, rt: R) -> Self {
        Self {
            shared: Arc::new(PoolCore {
                config,
                connector: Box::new(connector),
                rt,
                state: Mutex::new(State {
                    entries: HashMap::new(),
                    total: 0,
                    waiting_for_room: Vec::new(),
                    last_sweep: None,
                }),
                room_wanted: AtomicBool::new(false),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// A connected client for `endpoint`, leased until the guard is dropped: an open
    /// connection, or a new one. At the total cap, the least recently used idle connection of
    /// another endpoint is closed to make room, or, if none is idle, the call waits for one to
    /// be. An error is the connector's (the endpoint could not be reached).
    pub async fn get(&self, endpoint: &Endpoint) -> Result<PoolGuard<T, C, R>, RpcError> {
        let pool = &*self.shared;
        let config = &pool.config;
        let mut recheck: Option<R::Timer> = None;
        let found = std::future::poll_fn(|cx| {
            let now = pool.rt.now();
            let mut guard = pool.lock();
            let st = &mut *guard;
            self.sweep(st, now);
            let entry = st.entries.entry(endpoint.clone()).or_default();
            // The health check: each connection's state read once, the broken and idle dropped.
            let mut slots: Vec<Slot> = entry.conns.iter().map(Conn::slot).collect();
            let before = entry.conns.len();
            let mut i = 0;
            entry.conns.retain(|_| {
                let expired = config.is_expired(&slots[i], now);
                i += 1;
                !expired
            });
            slots.retain(|s| !config.is_expired(s, now));
            let expired = before - entry.conns.len();
            match config.checkout(&slots, entry.connecting, st.total - expired) {
                Checkout::Use(i) => {
                    let conn = &mut entry.conns[i];
                    conn.last_used = now;
                    conn.leases.fetch_add(1, Ordering::SeqCst);
                    let found = Found::Conn(conn.client.clone(), conn.leases.clone());
                    pool.freed(st, expired);
                    Poll::Ready(found)
                }
                Checkout::Connect => {
                    entry.connecting += 1;
                    pool.freed(st, expired);
                    st.total += 1;
                    Poll::Ready(Found::Open(None))
                }
                Checkout::Wait => {
                    register(&mut entry.waiting, cx.waker());
                    pool.freed(st, expired);
                    Poll::Pending
                }
                Checkout::MakeRoom => {
                    pool.freed(st, expired);
                    pool.room_wanted.store(true, Ordering::SeqCst);
                    match self.evict(st, endpoint) {
                        Some(closed) => {
                            if let Some(e) = st.entries.get_mut(endpoint) {
                                e.connecting += 1;
                            }
                            st.total += 1;
                            Poll::Ready(Found::Open(Some(closed)))
                        }
                        None => {
                            register(&mut st.waiting_for_room, cx.waker());
                            let at = now + SWEEP_EVERY;
                            let timer = recheck.get_or_insert_with(|| pool.rt.timer(at));
                            if Pin::new(&mut *timer).poll(cx).is_ready() {
                                timer.reset(at);
                                let _ = Pin::new(timer).poll(cx);
                            }
                            Poll::Pending
                        }
                    }
                }
            }
        })
        .await;
        let closed = match found {
            Found::Conn(client, leases) => {
                return Ok(PoolGuard {
                    client,
                    leases,
                    pool: self.shared.clone(),
                });
            }
            Found::Open(closed) => closed,
        };
        // The connection closed to make room ends here (its last clone), outside the lock.
        drop(closed);
        let mut opening = Opening {
            pool,
            endpoint,
            pending: true,
        };
        let client = pool.connector.connect(endpoint).await?;
        client.try_start()?;
        let leases = Arc::new(AtomicUsize::new(1));
        let mut st = pool.lock();
        let entry = st.entries.entry(endpoint.clone()).or_default();
        entry.conns.push(Conn {
            client: client.clone(),
            last_used: pool.rt.now(),
            leases: leases.clone(),
        });
        entry.connecting = entry.connecting.saturating_sub(1);
        entry.waiting.drain(..).for_each(Waker::wake);
        opening.pending = false;
        drop(st);
        Ok(PoolGuard {
            client,
            leases,
            pool: self.shared.clone(),
        })
    }

    /// Takes out of the pool the idle connection that makes room for one to `endpoint` (the
    /// core's choice among the other endpoints' connections).
    fn evict(&self, st: &mut State<T, C, R>, endpoint: &Endpoint) -> Option<RpcClient<T, C, R>> {
        let candidates: Vec<(&Endpoint, usize, Slot)> = st
            .entries
            .iter()
            .filter(|(e, _)| *e != endpoint)
            .flat_map(|(e, entry)| {
                entry
                    .conns
                    .iter()
                    .enumerate()
                    .map(move |(i, c)| (e, i, c.slot()))
            })
            .collect();
        let victim = self
            .shared
            .config
            .victim(candidates.iter().map(|(_, _, s)| *s))?;
        let (e, i, _) = candidates[victim];
        let e = e.clone();
        let conn = st.entries.get_mut(&e)?.conns.swap_remove(i);
        st.total -= 1;
        Some(conn.client)
    }

    /// Drops idle connections of every endpoint, at most once per [`SWEEP_EVERY`].
    fn sweep(&self, st: &mut State<T, C, R>, now: Instant) {
        if st
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        st.last_sweep = Some(now);
        let config = &self.shared.config;
        let mut expired = 0;
        for e in st.entries.values_mut() {
            let before = e.conns.len();
            e.conns.retain(|c| !config.is_expired(&c.slot(), now));
            expired += before - e.conns.len();
        }
        st.entries
            .retain(|_, e| !e.conns.is_empty() || e.connecting > 0 || !e.waiting.is_empty());
        self.shared.freed(st, expired);
    }

    /// Closes the connections of endpoints for which `keep` is false (discovery removed them);
    /// calls in flight on them keep their connection until they end.
    pub fn retain(&self, mut keep: impl FnMut(&Endpoint) -> bool) {
        let pooled: Vec<Endpoint> = self.shared.lock().entries.keys().cloned().collect();
        let gone: Vec<Endpoint> = pooled.into_iter().filter(|e| !keep(e)).collect();
        if gone.is_empty() {
            return;
        }
        let mut closed = Vec::new();
        let mut st = self.shared.lock();
        for e in &gone {
            if let Some(entry) = st.entries.get_mut(e) {
                closed.extend(entry.conns.drain(..).map(|c| c.client));
                if entry.connecting == 0 {
                    st.entries.remove(e);
                }
            }
        }
        self.shared.freed(&mut st, closed.len());
        drop(st);
        drop(closed);
    }

    /// Open connections, per endpoint.
    pub fn connections(&self) -> Vec<(Endpoint, usize)> {
        self.shared
            .lock()
            .entries
            .iter()
            .map(|(e, entry)| (e.clone(), entry.conns.len()))
            .collect()
    }

    /// Connections open or being opened, over every endpoint.
    pub fn total(&self) -> usize {
        self.shared.lock().total
    }

    /// Closes every connection: their pending calls fail with `Disconnected`.
    pub async fn close(&self) {
        let clients: Vec<_> = {
            let mut st = self.shared.lock();
            let clients: Vec<_> = st
                .entries
                .values_mut()
                .flat_map(|e| e.conns.drain(..))
                .map(|c| c.client)
                .collect();
            self.shared.freed(&mut st, clients.len());
            clients
        };
        for c in clients {
            c.close().await;
        }
    }
}
