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
//!
//! ## The types behind the names
//!
//! [`RpcClient`], [`RpcServer`], [`TcpFrameTransport`] and the other transports are the
//! runtime-neutral types of `xrpc-async` with tokio as their runtime (and Bincode as the
//! default codec): aliases, so that `RpcClient::new(…)` needs no runtime named and code
//! written for `xrpc-rs` compiles as it is. Their methods are documented on the types
//! themselves, re-exported in [`generic`]: [`generic::RpcClient`] (`call`, `call_stream`,
//! `notify`, …), [`generic::RpcServer`] (`register_typed`, `serve_listener`, …),
//! [`generic::TcpFrameTransport`] (`connect`, …).
//!
//! ## Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `shm` | on | the shared-memory transports (Linux) |
//! | `zstd` | on | Zstd compression (builds a C library) |
//! | `codec-json`, `codec-messagepack`, `codec-cbor`, `codec-postcard`, `codec-all` | off | codecs beside Bincode |
//!
//! With `default-features = false`, xrpc builds TCP, Unix and in-process transports without
//! `xrpc-shm`'s rings and without a C compiler.
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
    BincodeCodec, CallKind, CallOptions, ClientConfig, Codec, CodecError, CompressionConfig,
    CompressionType, ErrorCode, Metadata, MetadataError, NotificationDrop, NotificationStats,
    PeerInfo, ServerConfig, ServerStats, Signature,
};
pub use xrpc_tokio::*;

/// The types behind the facade's aliases, generic over their runtime `R` (the facade's names
/// fix it to [`Tokio`]), documented here with their methods.
///
/// | facade name | type |
/// |---|---|
/// | `xrpc::RpcClient<T, C>` | [`RpcClient<T, C, Tokio>`](RpcClient) |
/// | `xrpc::RpcServer<C>` | [`RpcServer<C, Tokio>`](RpcServer) |
/// | `xrpc::ClientHandle` | [`ClientHandle<Tokio>`](ClientHandle) |
/// | `xrpc::TcpFrameTransport` | [`TcpFrameTransport<tokio::net::TcpStream, Tokio>`](TcpFrameTransport) |
/// | `xrpc::UnixFrameTransport` | [`UnixFrameTransport<tokio::net::UnixStream, Tokio>`](UnixFrameTransport) |
/// | `xrpc::SharedMemoryFrameTransport` | [`SharedMemoryFrameTransport<Tokio>`](SharedMemoryFrameTransport) |
///
/// and likewise for the listeners, [`LoadBalancedClient`] and [`ConnectionPool`].
pub mod generic {
    #[doc(inline)]
    pub use xrpc_async::balance::ConnectionPool;
    #[cfg(feature = "shm")]
    #[doc(inline)]
    pub use xrpc_async::transport::{
        SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
    };
    #[doc(inline)]
    pub use xrpc_async::transport::{
        TcpFrameTransport, TcpFrameTransportListener, ToSocketAddrs, UnixFrameTransport,
        UnixFrameTransportListener,
    };
    #[doc(inline)]
    pub use xrpc_async::{ClientHandle, LoadBalancedClient, RpcClient, RpcServer};
    #[doc(no_inline)]
    pub use xrpc_tokio::Tokio;
}
