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
pub use crate::transport::exported::*;
