//! The names every async adapter (`xrpc-tokio`, `xrpc-smol`) exports at its root as they are,
//! listed once so that the adapters cannot drift apart: each adapter has
//! `pub use xrpc_async::exports::*;` and adds what is bound to its runtime (`RpcClient`,
//! `RpcServer`, the socket and shared-memory transports, the runtime itself).

pub use crate::{
    CallContext, ChannelError, FrameListener, MessageChannel, MessageChannelAdapter, Payload,
    RequestStream, RpcClientConfig, RpcError, SerdeChannel, ServerStreamSender, StreamReceiver,
    StreamSender, TypedChannel,
};
pub use xrpc_proto::{
    BincodeCodec, CallKind, CallOptions, Metadata, MetadataError, NotificationDrop,
    NotificationStats, PeerCredentials, PeerInfo, PeerPolicy, PeerRefused, ServerConfig,
    ServerStats, Signature,
};

#[doc(hidden)]
pub use crate::__private;
/// The registry of the services listening on this machine (what `xrpc list` reads).
pub use crate::registry;
/// What `#[service]` generates calls: the callers and the registry of a service.
pub use crate::service;
pub use transports::*;

/// The transport names every async adapter exports as they are, at its root and in its
/// `transport` module (`pub use xrpc_async::exports::transports::*;`): the in-process
/// transports, the transport trait, its error and counters, and the configurations. The socket
/// and shared-memory transports themselves are bound to each adapter's runtime there.
pub mod transports {
    pub use crate::memory::{ArcFrameTransport, ChannelConfig, ChannelFrameTransport};
    #[cfg(feature = "shm")]
    pub use crate::transport::SharedMemoryConfig;
    pub use crate::transport::{
        FrameTransport, TcpConfig, TransportError, TransportStats, UnixConfig,
    };
    #[cfg(feature = "tls")]
    pub use crate::transport::{
        TlsClientConfig, TlsServerConfig, load_certificates, load_private_key, rustls,
    };
    pub use xrpc_proto::RetryPolicy;
}
