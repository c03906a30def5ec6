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
//! ## Services
//!
//! A service defined as a trait with [`macro@service`] (`#[xrpc_blocking::service]`, or the
//! same trait from an async crate) is called synchronously through its generated
//! `<Trait>BlockingClient` over an [`RpcClient`], and served with
//! [`RpcServer::add_service`]. The trait's methods are `async fn`s all the same — one
//! definition for every adapter — and the blocking server runs each to completion on its own
//! threads, as it runs a synchronous handler: a unary method that does not take the call's
//! context on its connection's thread while it is quick, every other method on the handler
//! pool. Their stream handles are the async layer's ([`service::ServerStreamSender`],
//! [`service::RequestStream`]: `send(..).await`, `recv().await`), not this crate's iterators.
//!
//! ```no_run
//! use xrpc_blocking::{RpcClient, RpcServer, TcpConfig, TcpFrameTransport};
//!
//! #[xrpc_blocking::service]
//! pub trait Calculator {
//!     async fn add(&self, a: i64, b: i64) -> i64;
//! }
//!
//! struct Calc;
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> i64 {
//!         a + b
//!     }
//! }
//!
//! let server = RpcServer::new();
//! server.add_service(CalculatorServer::new(Calc));
//! // ... server.serve_listener(listener) on a thread; then, anywhere:
//! let client = RpcClient::new(TcpFrameTransport::connect("127.0.0.1:47800", TcpConfig::default())?);
//! let calc = CalculatorBlockingClient::new(client);
//! assert_eq!(calc.add(1, 2)?, 3);
//! # Ok::<(), xrpc_blocking::RpcError>(())
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
#[cfg(feature = "tls")]
pub use transport::{
    TlsClientConfig, TlsFrameTransport, TlsFrameTransportListener, TlsServerConfig,
    load_certificates, load_private_key, rustls,
};
pub use xrpc_async::{CallContext, RpcClientConfig};
pub use xrpc_proto::{
    BincodeCodec, CallKind, CallOptions, ClientConfig, Metadata, MetadataError, NotificationDrop,
    NotificationStats, PeerCredentials, PeerInfo, PeerPolicy, PeerRefused, RetryPolicy, RpcError,
    ServerConfig, ServerStats, Signature,
};

#[doc(hidden)]
pub use xrpc_async::__private;
/// What `#[service]` generates calls: the callers and the registry of a service.
pub use xrpc_async::service;
/// Defines a service from a trait: a typed client, a blocking client and a server adapter (see
/// [`xrpc_macros::service`] and the [`service`](mod@service) module).
pub use xrpc_macros::service;
