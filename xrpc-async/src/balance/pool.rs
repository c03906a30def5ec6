//! [`ConnectionPool`]: per-endpoint connections, opened lazily by a [`Connect`], reused by
//! later calls, checked before use (a broken connection is dropped), at most
//! [`PoolConfig::max_connections`] an endpoint, and closed after the idle timeout. Which
//! connection a call gets is the core's rule ([`PoolConfig::checkout`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use xrpc_proto::Codec;
use xrpc_proto::balance::{Checkout, Endpoint, PoolConfig, Slot};

use crate::channel::MessageChannel;
use crate::rpc::{RpcClient, RpcError};
use crate::runtime::Runtime;

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
}

impl<T: MessageChannel, C: Codec, R: Runtime> Conn<T, C, R> {
    fn slot(&self) -> Slot {
        Slot {
            in_flight: self.client.pending_calls(),
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
    last_sweep: Option<Instant>,
}

/// How often connections of every endpoint are checked for idleness.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Connections to many endpoints, reused across calls.
pub struct ConnectionPool<T: MessageChannel, C: Codec, R: Runtime> {
    config: PoolConfig,
    connector: Box<dyn Connect<R, T, C>>,
    state: Mutex<State<T, C, R>>,
}

/// Gives back a connection slot being opened if the opening is abandoned.
struct Opening<'a, T: MessageChannel, C: Codec, R: Runtime> {
    pool: &'a ConnectionPool<T, C, R>,
    endpoint: &'a Endpoint,
}

impl<T: MessageChannel, C: Codec, R: Runtime> Drop for Opening<'_, T, C, R> {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        if let Some(e) = st.entries.get_mut(self.endpoint) {
            e.connecting = e.connecting.saturating_sub(1);
            e.waiting.drain(..).for_each(Waker::wake);
        }
    }
}

impl<T: MessageChannel, C: Codec, R: Runtime> ConnectionPool<T, C, R> {
    /// A pool opening connections with `connector`.
    pub fn new(config: PoolConfig, connector: impl Connect<R, T, C>) -> Self {
        Self {
            config,
            connector: Box::new(connector),
            state: Mutex::new(State {
                entries: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T, C, R>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connected client for `endpoint`: an open connection, or a new one. An error is the
    /// connector's (the endpoint could not be reached).
    pub async fn get(&self, endpoint: &Endpoint) -> Result<RpcClient<T, C, R>, RpcError> {
        let reuse = std::future::poll_fn(|cx| {
            let now = Instant::now();
            let mut st = self.lock();
            self.sweep(&mut st, now);
            if !st.entries.contains_key(endpoint) {
                st.entries.insert(endpoint.clone(), Entry::default());
            }
            let Some(entry) = st.entries.get_mut(endpoint) else {
                return Poll::Ready(None);
            };
            // The health check: each connection's state read once, the broken and idle dropped.
            let mut slots: Vec<Slot> = entry.conns.iter().map(Conn::slot).collect();
            let mut i = 0;
            entry.conns.retain(|_| {
                let expired = self.config.is_expired(&slots[i], now);
                i += 1;
                !expired
            });
            slots.retain(|s| !self.config.is_expired(s, now));
            match self.config.checkout(&slots, entry.connecting) {
                Checkout::Use(i) => {
                    let conn = &mut entry.conns[i];
                    conn.last_used = now;
                    Poll::Ready(Some(conn.client.clone()))
                }
                Checkout::Connect => {
                    entry.connecting += 1;
                    Poll::Ready(None)
                }
                Checkout::Wait => {
                    entry.waiting.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        if let Some(client) = reuse {
            return Ok(client);
        }
        let opening = Opening {
            pool: self,
            endpoint,
        };
        let client = self.connector.connect(endpoint).await?;
        client.try_start()?;
        let mut st = self.lock();
        st.entries
            .entry(endpoint.clone())
            .or_default()
            .conns
            .push(Conn {
                client: client.clone(),
                last_used: Instant::now(),
            });
        drop(st);
        drop(opening);
        Ok(client)
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
        for e in st.entries.values_mut() {
            e.conns.retain(|c| !self.config.is_expired(&c.slot(), now));
        }
        st.entries
            .retain(|_, e| !e.conns.is_empty() || e.connecting > 0 || !e.waiting.is_empty());
    }

    /// Closes the connections of endpoints not in `keep` (discovery removed them); calls in
    /// flight on them keep their connection until they end.
    pub fn retain(&self, keep: &[Endpoint]) {
        self.lock()
            .entries
            .retain(|e, entry| keep.contains(e) || entry.connecting > 0);
    }

    /// Open connections, per endpoint.
    pub fn connections(&self) -> Vec<(Endpoint, usize)> {
        self.lock()
            .entries
            .iter()
            .map(|(e, entry)| (e.clone(), entry.conns.len()))
            .collect()
    }

    /// Closes every connection: their pending calls fail with `Disconnected`.
    pub async fn close(&self) {
        let clients: Vec<_> = self
            .lock()
            .entries
            .drain()
            .flat_map(|(_, e)| e.conns)
            .map(|c| c.client)
            .collect();
        for c in clients {
            c.close().await;
        }
    }
}
