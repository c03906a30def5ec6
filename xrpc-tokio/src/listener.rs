//! The tokio listeners as [`FrameListener`]s, for [`RpcServer::serve_listener`](crate::RpcServer).

use xrpc_async::FrameListener;

use crate::transport::{
    SharedMemoryFrameTransport, SharedMemoryFrameTransportListener, TcpFrameTransport,
    TcpFrameTransportListener, TransportError, UnixFrameTransport, UnixFrameTransportListener,
};

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
