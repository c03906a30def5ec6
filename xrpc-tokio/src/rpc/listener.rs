//! Accepting connections: [`FrameListener`] and [`RpcServer::serve_listener`].

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use xrpc_proto::Codec;

use super::error::RpcError;
use super::server::RpcServer;
use crate::channel::{MessageChannel, MessageChannelAdapter};
use crate::transport::{
    FrameTransport, SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
    TcpFrameTransport, TcpFrameTransportListener, TransportError, UnixFrameTransport,
    UnixFrameTransportListener,
};

impl<C: Codec> RpcServer<C> {
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
