//! Accepting connections: [`FrameListener`] and [`RpcServer::serve_listener`]. Which
//! connection is served, and whose place it takes at the cap, is the core's
//! [`Admission`]; the listener accepts, asks it, and spawns or closes.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};

use xrpc_proto::{Admission, Codec, Slot};

use super::server::RpcServer;
use crate::channel::{MessageChannel, MessageChannelAdapter};
use crate::runtime::{Runtime, Task};
use crate::transport::{FrameTransport, TransportError};
use xrpc_proto::RpcError;

/// A source of incoming frame transports (a bound socket).
pub trait FrameListener: Send + Sync + 'static {
    /// The transport of an accepted connection.
    type Transport: FrameTransport;
    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = Result<Self::Transport, TransportError>> + Send;
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
            match accepted {
                None => break,
                Some(Ok(transport)) => match admission.admit(transport.peer_key()) {
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
                },
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
