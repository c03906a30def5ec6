//! Layer 3: RPC over a [`MessageChannel`](crate::MessageChannel).
//!
//! [`RpcClient`] and [`RpcServer`] are thin drivers of the sans-IO state machines
//! [`xrpc_proto::ClientConnection`] and [`xrpc_proto::ServerConnection`]: they own the tasks,
//! timers and the channel, and route the state machines' events to futures and streams. All
//! protocol decisions (ids, deadlines, cancellation, flow control, heartbeats) are made in
//! `xrpc-proto`.

mod client;
mod error;
mod io;
mod server;
mod stream;

pub use client::{ClientHandle, RpcClient, RpcClientConfig};
pub use error::RpcError;
pub use server::{CallContext, FrameListener, RpcServer};
pub use stream::{RequestStream, ServerStreamSender, StreamReceiver, StreamSender};
pub use xrpc_proto::{CallKind, CallOptions};
