//! # xrpc-async — the runtime-neutral async layer of xrpc
//!
//! Everything async that is not IO, written once for every executor: the transport and channel
//! traits, [`RpcClient`] and [`RpcServer`] with their handler registry, call futures, streams
//! and waiters, and one driver future per connection that feeds the sans-IO sessions of
//! [`xrpc_proto`]. An adapter crate (`xrpc-tokio`, `xrpc-smol`) brings the transports and a
//! [`Runtime`]: spawning, timers.
//!
//! | module | owns |
//! |---|---|
//! | [`transport`] | layer 1: the [`FrameTransport`] trait, its errors and counters |
//! | [`memory`] | layer 1 in process: [`ChannelFrameTransport`], [`ArcFrameTransport`] |
//! | [`channel`] | layer 2: [`MessageChannel`], [`MessageChannelAdapter`], [`SerdeChannel`], [`TypedChannel`] |
//! | [`rpc`] | layer 3: [`RpcClient`], [`RpcServer`], streams, the per-connection driver |
//! | [`runtime`] | [`Runtime`]: what the layer needs of an executor |
//! | [`balance`] | layer 4: [`LoadBalancer`], [`LoadBalancedClient`], discovery, the connection pool |
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod balance;
pub mod channel;
pub mod memory;
pub mod rpc;
pub mod runtime;
mod signal;
pub mod transport;

pub use balance::{DnsDiscovery, LoadBalancedClient, LoadBalancer, StaticDiscovery};
pub use channel::{
    ChannelError, MessageChannel, MessageChannelAdapter, Payload, SerdeChannel, TypedChannel,
};
pub use memory::{ArcFrameTransport, ChannelConfig, ChannelFrameTransport};
pub use rpc::{
    CallContext, ClientHandle, FrameListener, RequestStream, RpcClient, RpcClientConfig, RpcError,
    RpcServer, ServerStreamSender, StreamReceiver, StreamSender,
};
pub use runtime::{Runtime, Task, Timer};
pub use transport::{FrameTransport, TransportError, TransportStats};
