//! # xrpc-blocking — the blocking adapter of xrpc
//!
//! xrpc with no async runtime in sight: a synchronous [`RpcClient`] and [`RpcServer`] over
//! TCP, Unix sockets and shared memory, wire-compatible with every other adapter (either side
//! may be either). They are the shared async layer's client and server ([`xrpc_async`]) on
//! [`Blocking`], a runtime of plain threads that this crate brings: a blocking call waits on
//! its own thread — and, while it is the only call in flight, drives the connection from
//! there, with no hand-off — a connection is served by a thread of its own, and handlers are
//! plain closures, run on the connection's thread when they are quick and on a bounded pool
//! otherwise.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use xrpc_blocking::{RpcClient, TcpConfig, TcpFrameTransport};
//! #[derive(Serialize, Deserialize)] struct AddRequest { a: i32, b: i32 }
//! #[derive(Serialize, Deserialize)] struct AddResponse { result: i32 }
//!
//! fn main() -> Result<(), xrpc_blocking::RpcError> {
//!     let client = RpcClient::new(TcpFrameTransport::connect("127.0.0.1:47800", TcpConfig::default())?);
//!     let resp: AddResponse = client.call("add", &AddRequest { a: 1, b: 2 })?;
//!     println!("1 + 2 = {}", resp.result);
//!     Ok(())
//! }
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`transport`] | the TCP, Unix and shared-memory transports and listeners, with synchronous constructors |
//! | `client` | [`RpcClient`]: synchronous calls over the async layer's client |
//! | `server` | [`RpcServer`]: synchronous handlers, where they run |
//! | `stream` | a call's streams as synchronous handles: [`StreamReceiver`] (an iterator), [`StreamSender`], [`PendingResponse`] |
//! | [`runtime`] | [`Blocking`]: waiting on the calling thread, a thread per task, the handler pool |
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod client;
pub mod runtime;
mod server;
mod stream;
pub mod transport;

pub use client::RpcClient;
pub use runtime::{Blocking, HandlerThreads};
pub use server::{INLINE_MAX, RpcServer};
pub use stream::{
    BidiCall, ClientStreamCall, PendingResponse, RequestStream, ServerStreamSender, StreamReceiver,
    StreamSender,
};
pub use transport::{
    AnyFrameTransport, FrameListener, FrameTransport, TcpConfig, TcpFrameTransport,
    TcpFrameTransportListener, TransportError, TransportStats, UnixConfig, UnixFrameTransport,
    UnixFrameTransportListener,
};
#[cfg(feature = "shm")]
pub use transport::{
    SharedMemoryConfig, SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
};
pub use xrpc_async::{CallContext, RpcClientConfig};
pub use xrpc_proto::{
    BincodeCodec, CallKind, CallOptions, ClientConfig, Metadata, MetadataError, NotificationDrop,
    NotificationStats, PeerCredentials, PeerInfo, PeerPolicy, PeerRefused, RetryPolicy, RpcError,
    ServerConfig, ServerStats, Signature,
};
