//! # xrpc-tokio — the tokio adapter of xrpc
//!
//! IO, tasks and timers for the sans-IO core [`xrpc_proto`]: framing and message logic come
//! from there, this crate only moves bytes.
//!
//! | module | owns |
//! |---|---|
//! | [`transport`] | layer 1: [`FrameTransport`] and its TCP, Unix, channel and `Arc` implementations |
//! | [`rpc`] | layer 3: [`RpcClient`], [`RpcServer`], streams |
//! | [`channel`] | layer 2: [`MessageChannel`], [`MessageChannelAdapter`], [`SerdeChannel`], [`TypedChannel`] |
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod channel;
pub mod rpc;
pub mod transport;

pub use channel::{
    ChannelError, MessageChannel, MessageChannelAdapter, SerdeChannel, TypedChannel,
};
pub use rpc::{
    CallContext, ClientHandle, FrameListener, RequestStream, RpcClient, RpcClientConfig, RpcError,
    RpcServer, ServerStreamSender, StreamReceiver, StreamSender,
};
pub use transport::{
    ArcFrameTransport, ChannelConfig, ChannelFrameTransport, FrameTransport, RetryPolicy,
    SharedMemoryConfig, SharedMemoryFrameTransport, SharedMemoryFrameTransportListener, TcpConfig,
    TcpFrameTransport, TcpFrameTransportListener, TransportError, TransportStats, UnixConfig,
    UnixFrameTransport, UnixFrameTransportListener, ZeroCopyTransport,
};
