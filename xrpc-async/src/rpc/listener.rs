//! Accepting connections: [`FrameListener`] and [`RpcServer::serve_listener`]. Whether a peer
//! is admitted at all is the core's [`PeerPolicy`] (asked through the server's [`PeerGate`]);
//! which connection is served, and whose place it takes at the cap, is the core's
//! [`Admission`]; the listener accepts, asks them, and spawns, refuses or closes.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Poll, Waker};
use std::time::Duration;

use xrpc_proto::peer::refusal_frame;
use xrpc_proto::{Admission, Codec, PeerCredentials, PeerPolicy, PeerRefused, Slot};

use super::server::RpcServer;
use crate::channel::{MessageChannel, MessageChannelAdapter};
use crate::runtime::{Runtime, Task};
use crate::time;
use crate::transport::{FrameTransport, TransportError};
use xrpc_proto::RpcError;

/// A source of incoming frame transports (a bound socket).
pub trait FrameListener: Send + Sync + 'static {
    /// The transport of an accepted connection.
    type Transport: FrameTransport;
    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = Result<Self::Transport, TransportError>> + Send;

    /// Takes the server's [`PeerGate`], for a listener that refuses peers itself before it
    /// sets their connection up (shared memory: in the rendezvous handshake, before a segment
    /// is made), and returns whether it does. By default it does not: the server then checks
    /// each accepted transport's [`peer_credentials`](FrameTransport::peer_credentials) and
    /// refuses a peer with one refusal frame before it closes the connection.
    fn enforce_peer_gate(&self, gate: Arc<PeerGate>) -> bool {
        let _ = gate;
        false
    }
}

/// How long a refused peer's connection is kept for its refusal frame to be written, at most.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a refused peer's connection stays open, unread, after its refusal frame: a request
/// the client wrote meanwhile lands in the socket's buffer instead of failing on a closed
/// socket, so the client reads the refusal (`PeerRefused`) rather than a broken connection.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Refused connections kept open for [`REFUSAL_LINGER`] at once, at most; past it a refused
/// connection is closed right after its refusal frame.
const MAX_LINGERING: usize = 64;

/// A server's [`PeerPolicy`] and its count of refused peers, shared with its listeners
/// ([`RpcServer::set_peer_policy`], [`RpcServer::peers_refused`]).
#[derive(Debug, Default)]
pub struct PeerGate {
    policy: RwLock<PeerPolicy>,
    refused: AtomicU64,
    /// Refused connections kept open for their refusal to be read ([`MAX_LINGERING`]).
    lingering: Arc<AtomicUsize>,
}

/// A refused connection's place among the lingering ones, given back when dropped.
struct Linger(Arc<AtomicUsize>);

impl Drop for Linger {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PeerGate {
    /// Whether a peer with credentials `peer` is admitted ([`PeerPolicy::check`]); a refusal
    /// is counted.
    pub fn check(&self, peer: Option<&PeerCredentials>) -> Result<(), PeerRefused> {
        self.check_or(peer, |_| true)
    }

    /// [`PeerPolicy::check_or`]: with no list, `default` decides; a refusal is counted.
    pub fn check_or(
        &self,
        peer: Option<&PeerCredentials>,
        default: impl FnOnce(&PeerCredentials) -> bool,
    ) -> Result<(), PeerRefused> {
        let verdict = self
            .policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .check_or(peer, default);
        if verdict.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    /// The policy.
    pub fn policy(&self) -> PeerPolicy {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_policy(&self, policy: PeerPolicy) {
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = policy;
    }

    /// Peers refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// A place among the refused connections kept open, if one is free.
    fn linger(&self) -> Option<Linger> {
        self.lingering
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_LINGERING).then_some(n + 1)
            })
            .ok()
            .map(|_| Linger(self.lingering.clone()))
    }
}

/// The connections a listener serves, to wait for the last one at shutdown.
#[derive(Default)]
struct Live {
    state: Mutex<(usize, Option<Waker>)>,
}

impl Live {
    fn add(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0 += 1;
    }

    fn remove(&self) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.0 -= 1;
        if st.0 == 0
            && let Some(w) = st.1.take()
        {
            w.wake();
        }
    }

    async fn none_left(&self) {
        std::future::poll_fn(|cx| {
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if st.0 == 0 {
                Poll::Ready(())
            } else {
                st.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Counts a connection as live (and its admission slot as taken) until dropped: its task
/// ended or was aborted.
struct LiveGuard(Arc<Live>, Slot);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.1.end();
        self.0.remove();
    }
}

/// The tasks of the connections a listener serves: aborted when dropped (the
/// `serve_listener` future dropped before its connections ended).
struct Connections<T: Task>(Vec<(Slot, T)>);

impl<T: Task> Connections<T> {
    fn add(&mut self, slot: Slot, task: T) {
        self.0.retain(|(s, _)| !s.has_ended());
        self.0.push((slot, task));
    }
}

impl<T: Task> Drop for Connections<T> {
    fn drop(&mut self) {
        for (slot, task) in &self.0 {
            if !slot.has_ended() {
                task.abort();
            }
        }
    }
}

impl<C: Codec, R: Runtime> RpcServer<C, R> {
    /// Accepts connections from `listener` and serves each in its own task, until
    /// [`shutdown`](Self::shutdown); then closes the listener at once (new connections are
    /// refused) and waits for the connections to finish.
    ///
    /// At [`ServerConfig::max_connections`](xrpc_proto::ServerConfig::max_connections), or
    /// at a peer's [`max_connections_per_peer`](xrpc_proto::ServerConfig::max_connections_per_peer),
    /// a new connection takes the place of an idle one (the oldest, of the peer holding the
    /// most), or is closed at once if all are busy ([`Admission`]).
    ///
    /// Dropping the returned future (aborting its task) stops serving: the listener is
    /// closed and every connection it accepted is stopped too (its handlers are cancelled,
    /// its pending calls on the client side fail).
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
        let shared = &self.shared;
        let gated_by_listener = listener.enforce_peer_gate(shared.peers.clone());
        let live = Arc::new(Live::default());
        let mut admission = Admission::new(&shared.config);
        let mut connections = Connections(Vec::new());
        loop {
            // The next connection, or the shutdown.
            let accepted = {
                let mut accept = pin!(listener.accept());
                std::future::poll_fn(|cx| {
                    if shared.shutdown.poll_raised(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    accept.as_mut().poll(cx).map(Some)
                })
                .await
            };
            let transport = match accepted {
                None => break,
                Some(Ok(transport)) => transport,
                Some(Err(_)) => {
                    let at = admission.accept_failed(shared.rt.now());
                    let mut timer = shared.rt.timer(at);
                    std::future::poll_fn(|cx| {
                        if shared.shutdown.poll_raised(cx).is_ready() {
                            return Poll::Ready(());
                        }
                        std::pin::Pin::new(&mut timer).poll(cx)
                    })
                    .await;
                    continue;
                }
            };
            if !gated_by_listener
                && let Err(why) = shared.peers.check(transport.peer_credentials().as_ref())
            {
                // The peer is told before the close (PROTOCOL.md §5.11): one small frame into a
                // fresh socket's empty buffer, sent off the accept loop all the same, and given
                // up after REFUSAL_TIMEOUT whatever the transport; then the connection stays
                // open, unread, for REFUSAL_LINGER (MAX_LINGERING at once).
                let rt = shared.rt.clone();
                let linger = shared.peers.linger();
                let _ = shared.rt.spawn(async move {
                    let refusal = refusal_frame(&why);
                    let sent =
                        time::within(&rt, REFUSAL_TIMEOUT, transport.send_frame(&refusal)).await;
                    if let (Some(Ok(())), Some(_place)) = (sent, linger) {
                        time::sleep(&rt, REFUSAL_LINGER).await;
                    }
                    let _ = transport.close().await;
                });
                continue;
            }
            match admission.admit(transport.peer_key()) {
                Err(_) => {
                    let _ = transport.close().await;
                }
                Ok(slot) => {
                    let server = self.clone();
                    let channel = make_channel(transport);
                    live.add();
                    let guard = LiveGuard(live.clone(), slot.clone());
                    let admitted = slot.clone();
                    let task = shared.rt.spawn(async move {
                        let _guard = guard;
                        let _ = server.serve_admitted(channel, Some(admitted)).await;
                    });
                    connections.add(slot, task);
                }
            }
        }
        // Refuse new connections now, not once the last one is over.
        admission.start_shutdown();
        drop(listener);
        live.none_left().await;
        Ok(())
    }
}
