//! # xrpc-smol — the smol / async-std adapter of xrpc
//!
//! IO and timers on async-io and futures-lite (no tokio): the transports (TCP, Unix, shared
//! memory, in-process) and the [`Smol`] runtime. Everything else — message channels,
//! [`RpcClient`], [`RpcServer`], streams, the per-connection driver — is the runtime-neutral
//! [`xrpc_async`], named here with smol as its runtime and Bincode as the default codec; the
//! protocol is [`xrpc_proto`]. It runs under smol's executor and under async-std's (tasks are
//! spawned on smol's global executor, which needs no setup).
//!
//! ```no_run
//! use xrpc_smol::{MessageChannelAdapter, RpcClient, TcpConfig, TcpFrameTransport};
//! smol::block_on(async {
//!     let transport = TcpFrameTransport::connect("127.0.0.1:8080", TcpConfig::default()).await?;
//!     let client = RpcClient::new(MessageChannelAdapter::new(transport));
//!     let _driver = client.start();
//!     let sum: i32 = client.call("add", &(1, 2)).await?;
//!     # let _ = sum;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! }).unwrap();
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`transport`] | layer 1: TCP, Unix, shared-memory, channel and `Arc` transports |
//! | [`socket`] | async-io's sockets as the sockets of those transports |
//! | [`runtime`] | [`Smol`]: spawning, timers and descriptor readiness for the async layer |
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

pub mod runtime;
pub mod socket;
pub mod transport;

pub use runtime::Smol;
pub use transport::*;
pub use xrpc_async::exports::*;

/// An RPC client on smol ([`xrpc_async::RpcClient`] with the [`Smol`] runtime), Bincode by
/// default.
pub type RpcClient<T, C = BincodeCodec> = xrpc_async::RpcClient<T, C, Smol>;

/// An RPC server on smol ([`xrpc_async::RpcServer`] with the [`Smol`] runtime), Bincode by
/// default.
pub type RpcServer<C = BincodeCodec> = xrpc_async::RpcServer<C, Smol>;

/// Keeps a client's driver task; returned by
/// [`RpcClient::start`](xrpc_async::RpcClient::start).
pub type ClientHandle = xrpc_async::ClientHandle<Smol>;

/// Defines a service from a trait: a typed client, a blocking client and a server adapter (see
/// [`xrpc_macros::service`] and the [`service`](mod@service) module).
pub use xrpc_macros::service;
