//! Layer 1: the frame transports of the tokio adapter.
//!
//! | transport | peer | bytes copied per frame |
//! |---|---|---|
//! | [`TcpFrameTransport`] | another process or host | socket read/write only |
//! | `TlsFrameTransport` (feature `tls`) | another host | socket read/write, decrypt and encrypt |
//! | [`UnixFrameTransport`] | another process | socket read/write only |
//! | [`SharedMemoryFrameTransport`] | another process | one into the ring, one out |
//! | [`ChannelFrameTransport`] | the same process | one (into a `Bytes`) |
//! | [`ArcFrameTransport`] | the same process | none with [`ArcFrameTransport::send_bytes`] |
//!
//! The transports are the runtime-neutral ones of `xrpc-async`, named here for tokio's sockets
//! and reactor ([`socket`] makes tokio's streams their sockets).

pub use xrpc_async::transport::exported::*;

pub mod socket;
mod zero_copy;

pub use zero_copy::ZeroCopyTransport;

use crate::Tokio;

/// Frames over a tokio TCP connection ([`xrpc_async::transport::TcpFrameTransport`]).
pub type TcpFrameTransport = xrpc_async::transport::TcpFrameTransport<tokio::net::TcpStream, Tokio>;

/// Accepts TCP connections as [`TcpFrameTransport`]s.
pub type TcpFrameTransportListener =
    xrpc_async::transport::TcpFrameTransportListener<tokio::net::TcpStream, Tokio>;

/// Frames over TLS (rustls) over a tokio TCP connection
/// ([`xrpc_async::transport::TlsFrameTransport`]).
#[cfg(feature = "tls")]
pub type TlsFrameTransport = xrpc_async::transport::TlsFrameTransport<tokio::net::TcpStream, Tokio>;

/// Accepts TCP connections and makes their TLS handshakes, as [`TlsFrameTransport`]s.
#[cfg(feature = "tls")]
pub type TlsFrameTransportListener =
    xrpc_async::transport::TlsFrameTransportListener<tokio::net::TcpStream, Tokio>;

/// Frames over a tokio Unix domain stream socket ([`xrpc_async::transport::UnixFrameTransport`]).
pub type UnixFrameTransport =
    xrpc_async::transport::UnixFrameTransport<tokio::net::UnixStream, Tokio>;

/// Accepts Unix socket connections as [`UnixFrameTransport`]s.
pub type UnixFrameTransportListener =
    xrpc_async::transport::UnixFrameTransportListener<tokio::net::UnixStream, Tokio>;

/// Frames over shared memory, sleeping in tokio's reactor
/// ([`xrpc_async::transport::SharedMemoryFrameTransport`]).
#[cfg(feature = "shm")]
pub type SharedMemoryFrameTransport = xrpc_async::transport::SharedMemoryFrameTransport<Tokio>;

/// Accepts shared-memory clients as [`SharedMemoryFrameTransport`]s.
#[cfg(feature = "shm")]
pub type SharedMemoryFrameTransportListener =
    xrpc_async::transport::SharedMemoryFrameTransportListener<Tokio>;
