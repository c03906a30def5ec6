//! Layer 3: RPC over a [`MessageChannel`](crate::MessageChannel).
//!
//! [`RpcClient`] and [`RpcServer`] drive the sans-IO sessions [`xrpc_proto::ClientSession`]
//! and [`xrpc_proto::ServerSession`] with one driver future per connection; calls, streams and
//! handlers talk to it through the shared state. Every protocol decision is made in
//! `xrpc-proto`.

mod client;
mod connection;
mod driver;
mod future_pool;
mod listener;
mod server;
mod shared_driver;
mod stream;
mod wakers;

pub use client::{ClientHandle, RpcClient, RpcClientConfig};
#[cfg(feature = "tower")]
pub(crate) use future_pool::Started;
pub use listener::{FrameListener, PeerGate};
pub use server::{CallContext, RpcServer};
pub use stream::{RequestStream, ServerStreamSender, StreamReceiver, StreamSender};
pub use xrpc_proto::RpcError;
pub use xrpc_proto::{CallKind, CallOptions};
