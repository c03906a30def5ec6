//! Frames over TCP (`std::net`).

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use xrpc_proto::DEFAULT_MAX_FRAME_SIZE;

use super::{FrameListener, FrameTransport, Io, TransportError, socket};

/// Settings of a [`TcpFrameTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConfig {
    /// Largest frame sent or accepted (default 16 MiB, as on every transport).
    pub max_frame_size: usize,
    /// Time allowed for connecting to one address (default 5 s).
    pub connect_timeout: Duration,
    /// Send small frames at once, without Nagle's delay (default `true`).
    pub nodelay: bool,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            nodelay: true,
            connect_timeout: Duration::from_secs(5),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

/// A connected TCP socket carrying length-prefixed frames, wire-compatible with
/// `xrpc_tokio::TcpFrameTransport` (see the [crate docs](crate) for a client over it).
pub struct TcpFrameTransport {
    io: Io,
}

impl TcpFrameTransport {
    /// Connects to the first address of `addr` that answers within `config.connect_timeout`.
    pub fn connect(addr: impl ToSocketAddrs, config: TcpConfig) -> Result<Self, TransportError> {
        let fail = |what: String| TransportError::ConnectionFailed(what);
        let mut last = fail("the address resolved to nothing".into());
        for a in addr
            .to_socket_addrs()
            .map_err(|e| fail(format!("resolve failed: {e}")))?
        {
            match TcpStream::connect_timeout(&a, config.connect_timeout) {
                Ok(stream) => return Self::from_stream(stream, config),
                Err(e) => last = fail(format!("connect to {a} failed: {e}")),
            }
        }
        Err(last)
    }

    /// Wraps a connected stream (applies `config.nodelay`).
    pub fn from_stream(stream: TcpStream, config: TcpConfig) -> Result<Self, TransportError> {
        stream
            .set_nodelay(config.nodelay)
            .and_then(|()| stream.set_nonblocking(false))
            .map_err(|e| TransportError::ConnectionFailed(e.to_string()))?;
        let io = socket::io(stream, config.max_frame_size)?;
        Ok(Self { io })
    }
}

/// Accepts TCP connections as [`TcpFrameTransport`]s.
#[derive(Debug)]
pub struct TcpFrameTransportListener {
    listener: TcpListener,
    config: TcpConfig,
}

impl TcpFrameTransportListener {
    /// Binds to `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    pub fn bind(addr: impl ToSocketAddrs, config: TcpConfig) -> Result<Self, TransportError> {
        let listener = TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| TransportError::ConnectionFailed(format!("bind failed: {e}")))?;
        Ok(Self { listener, config })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.listener
            .local_addr()
            .map_err(|e| TransportError::ConnectionFailed(e.to_string()))
    }
}

socket::socket_transport!(TcpFrameTransport, TcpFrameTransportListener);
