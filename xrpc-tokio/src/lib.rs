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
//! | `tower` | (feature `tower`) the clients as `tower::Service`s, handlers in layers, [`CallRetry`](tower::CallRetry) |
//! | `balance` | layer 4: [`ClientFactory`], [`LoadBalancedClient`], endpoint connectors |
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod balance;
pub mod runtime;
#[cfg(feature = "tower")]
pub mod tower;
pub mod transport;

#[cfg(feature = "shm")]
pub use balance::SharedMemoryConnector;
#[cfg(feature = "tls")]
pub use balance::TlsConnector;
pub use balance::{ClientFactory, ConnectionPool, LoadBalancedClient, TcpConnector, UnixConnector};
pub use runtime::Tokio;
#[cfg(feature = "shm")]
pub use transport::{SharedMemoryFrameTransport, SharedMemoryFrameTransportListener};
pub use transport::{
    TcpFrameTransport, TcpFrameTransportListener, UnixFrameTransport, UnixFrameTransportListener,
    ZeroCopyTransport,
};
#[cfg(feature = "tls")]
pub use transport::{TlsFrameTransport, TlsFrameTransportListener};
pub use xrpc_async::balance::{
    BalancedStream, Discovery, DnsDiscovery, Endpoint, EndpointStatus, HealthState,
    LeastConnections, LoadBalanceStrategy, LoadBalancer, LoadBalancerConfig, P2c, PoolConfig,
    Random, RoundRobin, ScoreBased, ServiceDiscovery, StaticDiscovery, WeightedRoundRobin,
};
pub use xrpc_async::exports::*;

/// An RPC client on tokio ([`xrpc_async::RpcClient`] with the [`Tokio`] runtime), Bincode by
/// default.
pub type RpcClient<T, C = BincodeCodec> = xrpc_async::RpcClient<T, C, Tokio>;

/// An RPC server on tokio ([`xrpc_async::RpcServer`] with the [`Tokio`] runtime), Bincode by
/// default.
pub type RpcServer<C = BincodeCodec> = xrpc_async::RpcServer<C, Tokio>;

/// Keeps a client's driver task; returned by
/// [`RpcClient::start`](xrpc_async::RpcClient::start).
pub type ClientHandle = xrpc_async::ClientHandle<Tokio>;

/// Defines a service from a trait: a typed client, a blocking client and a server adapter (see
/// [`xrpc_macros::service`] and the [`service`](mod@service) module).
pub use xrpc_macros::service;
