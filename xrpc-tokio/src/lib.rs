//! # xrpc-tokio — the tokio adapter of xrpc
//!
//! IO and timers on tokio: the transports (TCP, Unix, shared memory, in-process) and the
//! [`Tokio`] runtime. Everything else — message channels, [`RpcClient`], [`RpcServer`],
//! streams, the per-connection driver — is the runtime-neutral [`xrpc_async`], named here with
//! tokio as its runtime and Bincode as the default codec; the protocol is [`xrpc_proto`].
//!
//! | module | owns |
//! |---|---|
//! | [`transport`] | layer 1: TCP, Unix, shared-memory, channel and `Arc` transports |
//! | [`runtime`] | [`Tokio`]: spawning, timers and descriptor readiness for the async layer |
//! | `balance` | layer 4: [`ClientFactory`], [`LoadBalancedClient`], endpoint connectors |
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod balance;
pub mod runtime;
pub mod transport;

#[cfg(feature = "shm")]
pub use balance::SharedMemoryConnector;
pub use balance::{ClientFactory, ConnectionPool, LoadBalancedClient, TcpConnector, UnixConnector};
pub use runtime::Tokio;
pub use transport::ZeroCopyTransport;
pub use transport::{
    ArcFrameTransport, ChannelConfig, ChannelFrameTransport, FrameTransport, RetryPolicy,
    TcpConfig, TcpFrameTransport, TcpFrameTransportListener, TransportError, TransportStats,
    UnixConfig, UnixFrameTransport, UnixFrameTransportListener,
};
#[cfg(feature = "shm")]
pub use transport::{
    SharedMemoryConfig, SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
};
pub use xrpc_async::balance::{
    BalancedStream, Discovery, DnsDiscovery, Endpoint, EndpointStatus, HealthState,
    LeastConnections, LoadBalanceStrategy, LoadBalancer, LoadBalancerConfig, P2c, PoolConfig,
    Random, RoundRobin, ScoreBased, ServiceDiscovery, StaticDiscovery, WeightedRoundRobin,
};
pub use xrpc_async::{
    CallContext, ChannelError, FrameListener, MessageChannel, MessageChannelAdapter, Payload,
    RequestStream, RpcClientConfig, RpcError, SerdeChannel, ServerStreamSender, StreamReceiver,
    StreamSender, TypedChannel,
};
pub use xrpc_proto::{
    BincodeCodec, CallKind, CallOptions, Metadata, MetadataError, NotificationDrop,
    NotificationStats, PeerCredentials, PeerInfo, PeerPolicy, PeerRefused, ServerConfig,
    ServerStats, Signature,
};

/// An RPC client on tokio ([`xrpc_async::RpcClient`] with the [`Tokio`] runtime), Bincode by
/// default.
pub type RpcClient<T, C = BincodeCodec> = xrpc_async::RpcClient<T, C, Tokio>;

/// An RPC server on tokio ([`xrpc_async::RpcServer`] with the [`Tokio`] runtime), Bincode by
/// default.
pub type RpcServer<C = BincodeCodec> = xrpc_async::RpcServer<C, Tokio>;

/// Keeps a client's driver task; returned by
/// [`RpcClient::start`](xrpc_async::RpcClient::start).
pub type ClientHandle = xrpc_async::ClientHandle<Tokio>;
