//! # xrpc-blocking — the blocking adapter of xrpc
//!
//! xrpc with no async runtime: a synchronous [`RpcClient`] and [`RpcServer`] over TCP, Unix
//! sockets and shared memory, wire-compatible with the tokio adapter (either side may be
//! either). The protocol is [`xrpc_proto`]'s sans-IO sessions; this crate only moves bytes and
//! keeps time, on the caller's threads.
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
//! | [`transport`] | TCP, Unix and shared-memory transports and listeners |
//! | `client` | [`RpcClient`]: the calling thread drives the connection (leader/follower) |
//! | `stream` | a client's streams: [`StreamReceiver`] (an iterator), [`StreamSender`] |
//! | `server` | [`RpcServer`]: handlers, a thread per connection, a bounded handler pool |
//! | `connection` | serving one connection |
//! | `link` | what client and server share of a connection: its lock, writer and input |
//! | `pool` | the bounded handler threads |
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod connection;
mod link;
mod pool;
mod server;
mod stream;
pub mod transport;

pub use client::{RpcClient, RpcClientConfig};
pub use server::{RpcServer, ServerLimits, ServerStreamSender};
pub use stream::{BidiCall, ClientStreamCall, PendingResponse, StreamReceiver, StreamSender};
pub use transport::{
    FrameListener, FrameTransport, SharedMemoryConfig, SharedMemoryFrameTransport,
    SharedMemoryFrameTransportListener, TcpConfig, TcpFrameTransport, TcpFrameTransportListener,
    TransportError, UnixConfig, UnixFrameTransport, UnixFrameTransportListener,
};
pub use xrpc_async::RpcError;
pub use xrpc_proto::{BincodeCodec, CallKind, CallOptions, ClientConfig, ServerConfig};
