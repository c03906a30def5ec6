//! Layer 1: the frame transports on async-io — the runtime-neutral ones of `xrpc-async`,
//! named for async-io's sockets ([`crate::socket`]) and the [`Smol`] reactor, and the
//! in-process ones as they are.
//!
//! | transport | peer |
//! |---|---|
//! | [`TcpFrameTransport`], [`UnixFrameTransport`] | another process (or host) |
//! | [`SharedMemoryFrameTransport`] | another process on this machine |
//! | [`ChannelFrameTransport`], [`ArcFrameTransport`] | the same process |

use std::net::TcpStream;
use std::os::unix::net::UnixStream;

use async_io::Async;
pub use xrpc_async::transport::exported::*;

use crate::Smol;
use xrpc_async::transport as neutral;

/// Frames over TCP on async-io ([`neutral::TcpFrameTransport`]).
pub type TcpFrameTransport = neutral::TcpFrameTransport<Async<TcpStream>, Smol>;
/// Accepts [`TcpFrameTransport`]s ([`neutral::TcpFrameTransportListener`]).
pub type TcpFrameTransportListener = neutral::TcpFrameTransportListener<Async<TcpStream>, Smol>;
/// Frames over TLS (rustls) over TCP on async-io ([`neutral::TlsFrameTransport`]).
#[cfg(feature = "tls")]
pub type TlsFrameTransport = neutral::TlsFrameTransport<Async<TcpStream>, Smol>;
/// Accepts TCP connections and makes their TLS handshakes
/// ([`neutral::TlsFrameTransportListener`]).
#[cfg(feature = "tls")]
pub type TlsFrameTransportListener = neutral::TlsFrameTransportListener<Async<TcpStream>, Smol>;
/// Frames over a Unix stream socket on async-io ([`neutral::UnixFrameTransport`]).
pub type UnixFrameTransport = neutral::UnixFrameTransport<Async<UnixStream>, Smol>;
/// Accepts [`UnixFrameTransport`]s ([`neutral::UnixFrameTransportListener`]).
pub type UnixFrameTransportListener = neutral::UnixFrameTransportListener<Async<UnixStream>, Smol>;
/// Frames over shared memory, sleeping in async-io's reactor
/// ([`neutral::SharedMemoryFrameTransport`]).
#[cfg(feature = "shm")]
pub type SharedMemoryFrameTransport = neutral::SharedMemoryFrameTransport<Smol>;
/// Accepts [`SharedMemoryFrameTransport`]s ([`neutral::SharedMemoryFrameTransportListener`]).
#[cfg(feature = "shm")]
pub type SharedMemoryFrameTransportListener = neutral::SharedMemoryFrameTransportListener<Smol>;
