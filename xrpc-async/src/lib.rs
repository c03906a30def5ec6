//! # xrpc-async — the runtime-neutral async layer of xrpc
//!
//! Everything async that is not IO, written once for every executor: the transport and channel
//! traits, [`RpcClient`] and [`RpcServer`] with their handler registry, call futures, streams
//! and waiters, and one driver future per connection that feeds the sans-IO sessions of
//! [`xrpc_proto`], and the TCP, Unix and shared-memory transports over any reactor. An adapter
//! crate (`xrpc-tokio`, `xrpc-smol`) brings a [`Runtime`] (spawning, timers) and a
//! [`Reactor`] (its sockets, descriptor readiness).
//!
//! | module | owns |
//! |---|---|
//! | [`transport`] | layer 1: the [`FrameTransport`] trait; TCP, Unix and shared-memory transports over a [`Reactor`] |
//! | [`memory`] | layer 1 in process: [`ChannelFrameTransport`], [`ArcFrameTransport`] |
//! | [`channel`] | layer 2: [`MessageChannel`], [`MessageChannelAdapter`], [`SerdeChannel`], [`TypedChannel`] |
//! | [`rpc`] | layer 3: [`RpcClient`], [`RpcServer`], streams, the per-connection driver |
//! | [`runtime`] | [`Runtime`]: what the layer needs of an executor |
//! | [`reactor`] | [`Reactor`]: what the socket and shared-memory transports need of its IO |
//! | [`service`] | services defined as a trait with `#[service]`: what the generated clients and servers call |
//! | [`balance`] | layer 4: [`LoadBalancer`], [`LoadBalancedClient`], discovery, the connection pool |
//! | `trace` | (feature `tracing`) spans per call, connection and balancer events, `traceparent` propagation |
//! | `tower` | (feature `tower`) the clients as `tower::Service`s, handlers wrapped in layers |
//! | `testing` | (feature `test-util`) `TestRuntime`: a virtual clock and a single-threaded executor for tests |
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub mod balance;
pub mod channel;
pub mod exports;
pub mod memory;
pub mod reactor;
pub mod registry;
pub mod rpc;
pub mod runtime;
pub mod service;
mod signal;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod time;
#[cfg(feature = "tower")]
pub mod tower;
#[cfg(feature = "tracing")]
pub mod trace;
pub mod transport;

pub use balance::{DnsDiscovery, LoadBalancedClient, LoadBalancer, StaticDiscovery};
pub use channel::{
    ChannelError, MessageChannel, MessageChannelAdapter, Payload, SerdeChannel, TypedChannel,
};
pub use memory::{ArcFrameTransport, ChannelConfig, ChannelFrameTransport};
pub use reactor::{Reactor, Registration, Socket, SocketListener, TcpSocket, UnixSocket, Watched};
pub use rpc::{
    CallContext, ClientHandle, FrameListener, PeerGate, RequestStream, RpcClient, RpcClientConfig,
    RpcError, RpcServer, ServerStreamSender, StreamReceiver, StreamSender,
};
pub use runtime::{Runtime, Task, Timer};
pub use transport::{FrameTransport, TransportError, TransportStats};
pub use xrpc_proto::{
    Metadata, MetadataError, NotificationDrop, NotificationStats, PeerCredentials, PeerInfo,
    PeerPolicy, PeerRefused, ServerStats, Signature,
};

/// What the code that `#[service]` generates names, reached through any facade.
#[doc(hidden)]
pub mod __private {
    pub use crate as xrpc_async;
}
