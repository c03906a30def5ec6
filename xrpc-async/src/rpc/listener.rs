//! Accepting connections: [`FrameListener`] and [`RpcServer::serve_listener`].

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};

use xrpc_proto::{Codec, RetryPolicy};

use super::server::RpcServer;
use crate::channel::{MessageChannel, MessageChannelAdapter};
use crate::runtime::Runtime;
use crate::transport::{FrameTransport, TransportError};
use xrpc_proto::RpcError;

/// A source of incoming frame transports (a bound socket).
pub trait FrameListener: Send + Sync + 'static {
    /// The transport of an accepted connection.
    type Transport: FrameTransport;
    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = Result<Self::Transport, TransportError>> + Send;
}

/// How long to wait after failed accepts in a row (a client that vanished, too many open files).
const ACCEPT_BACKOFF: RetryPolicy = RetryPolicy::Exponential {
    base_delay_ms: 10,
    max_delay_ms: 1_000,
};

/// The connections a listener serves, to wait for the last one at shutdown.
#[derive(Default)]
struct Live {
    state: Mutex<(usize, Option<Waker>)>,
}

impl Live {
    fn count(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0
    }

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

/// Counts a connection as live until dropped (its task ended or was aborted).
struct LiveGuard(Arc<Live>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.remove();
    }
}

impl<C: Codec, R: Runtime> RpcServer<C, R> {
    /// Accepts connections from `listener` and serves each in its own task, until
    /// [`shutdown`](Self::shutdown); then closes the listener at once (new connections are
    /// refused) and waits for the connections to finish. A connection accepted while
    /// [`ServerConfig::max_connections`](xrpc_proto::ServerConfig::max_connections) are being
    /// served is closed at once.
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
        let mut failures = 0u32;
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
                Some(Ok(transport)) if live.count() >= shared.config.max_connections => {
                    failures = 0;
                    let _ = transport.close().await;
                }
                Some(Ok(transport)) => {
                    failures = 0;
                    let server = self.clone();
                    let channel = make_channel(transport);
                    live.add();
                    let guard = LiveGuard(live.clone());
                    let _ = shared.rt.spawn(async move {
                        let _guard = guard;
                        let _ = server.serve(channel).await;
                    });
                }
                Some(Err(_)) => {
                    failures += 1;
                    let at = shared.rt.now() + ACCEPT_BACKOFF.delay(failures);
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
        drop(listener);
        live.none_left().await;
        Ok(())
    }
}
