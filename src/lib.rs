//! # xrpc
//!
//! High-performance IPC/RPC for Rust: in-process channels for development, shared memory for
//! production IPC, TCP for the network — the same client and server code over each.
//!
//! This facade re-exports the layers under the names of the original `xrpc-rs`, so code written
//! against it ports by changing the import:
//!
//! | layer | items |
//! |---|---|
//! | 1. frame transports | [`FrameTransport`], [`TcpFrameTransport`], [`UnixFrameTransport`], [`ChannelFrameTransport`], [`ArcFrameTransport`] |
//! | 2. message channels | [`MessageChannel`], [`MessageChannelAdapter`], [`SerdeChannel`], [`TypedChannel`] |
//! | 3. RPC | [`RpcClient`], [`RpcServer`], [`RpcError`], streams |
//! | 4. load balancing | [`LoadBalancedClient`], [`LoadBalancer`], [`ClientFactory`], [`Endpoint`], [`StaticDiscovery`], [`DnsDiscovery`], [`RoundRobin`] and the other strategies |
//!
//! The sans-IO core is [`proto`] (`xrpc-proto`); the tokio adapter is [`tokio_adapter`].
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub use xrpc_proto as proto;
pub use xrpc_tokio as tokio_adapter;

#[cfg(feature = "codec-cbor")]
pub use xrpc_proto::CborCodec;
#[cfg(feature = "codec-json")]
pub use xrpc_proto::JsonCodec;
#[cfg(feature = "codec-messagepack")]
pub use xrpc_proto::MessagePackCodec;
#[cfg(feature = "codec-postcard")]
pub use xrpc_proto::PostcardCodec;
pub use xrpc_proto::{
    BincodeCodec, CallKind, CallOptions, Codec, CodecError, CompressionConfig, CompressionType,
};
pub use xrpc_tokio::*;
