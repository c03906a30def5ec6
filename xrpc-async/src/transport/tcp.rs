//! Frames over TCP, on any reactor's [`TcpSocket`].

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use xrpc_proto::{DEFAULT_MAX_FRAME_SIZE, PeerKey, RetryPolicy};

use super::TransportError;
use super::addr::{ToSocketAddrs, resolve};
use super::socket::{SocketSettings, SocketTransport, connect_with_retry};
use crate::reactor::{SocketListener, TcpSocket};
use crate::rpc::FrameListener;
use crate::runtime::Runtime;

/// Settings of a [`TcpFrameTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConfig {
    /// Largest frame sent or accepted (default 16 MiB).
    pub max_frame_size: usize,
    /// Time allowed for one connection attempt (default 5 s).
    pub connect_timeout: Duration,
    /// Disable Nagle's algorithm (default `true`; small frames go out at once).
    pub nodelay: bool,
    /// Time allowed for one [`recv_frame`](super::FrameTransport::recv_frame) (default none).
    pub read_timeout: Option<Duration>,
    /// Time allowed for writing one frame or batch (default none). A write that times out
    /// leaves the transport unusable for sends.
    pub write_timeout: Option<Duration>,
    /// Connection attempts made by [`TcpFrameTransport::connect`] (default 1: no retry).
    pub max_attempts: u32,
    /// Delay between connection attempts.
    pub retry_policy: RetryPolicy,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            connect_timeout: Duration::from_secs(5),
            nodelay: true,
            read_timeout: None,
            write_timeout: None,
            max_attempts: 1,
            retry_policy: RetryPolicy::default(),
        }
    }
}

super::socket_config!(TcpConfig);

/// A [`FrameTransport`](super::FrameTransport) over a TCP connection `S` of runtime `R`:
/// each frame is a 4-byte little-endian length followed by the frame bytes. Adapters name it
/// for their sockets (`xrpc_tokio::TcpFrameTransport`).
///
/// ```no_run
/// # async fn demo() -> Result<(), xrpc_tokio::TransportError> {
/// use xrpc_tokio::{FrameTransport, TcpConfig, TcpFrameTransport};
/// let t = TcpFrameTransport::connect("127.0.0.1:4000", TcpConfig::default()).await?;
/// t.send_frame(b"hello").await?;
/// let reply = t.recv_frame().await?;
/// # Ok(()) }
/// ```
pub struct TcpFrameTransport<S, R: Runtime> {
    inner: SocketTransport<S, R>,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
    /// The peer's IP address, as a key.
    peer_key: PeerKey,
    /// Never known over TCP.
    peer: Option<xrpc_proto::PeerCredentials>,
    name: String,
}

impl<S, R: Runtime> std::fmt::Debug for TcpFrameTransport<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpFrameTransport")
            .field("peer_addr", &self.peer_addr)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

super::forward_frame_transport!(TcpFrameTransport, TcpSocket);

impl<S: TcpSocket<R>, R: Runtime> TcpFrameTransport<S, R> {
    /// Connects to `addr` — what [`TcpFrameTransportListener::bind`] takes: a [`SocketAddr`],
    /// a string such as `"127.0.0.1:9000"` or `"localhost:9000"`, a host and a port (see
    /// [`ToSocketAddrs`]) — making up to `config.max_attempts` attempts of at most
    /// `config.connect_timeout` each, `config.retry_policy` apart. A host name is looked up on
    /// the runtime's pool for blocking work; its addresses are tried in turn, and the last
    /// one's error is returned if none answers.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        config: TcpConfig,
    ) -> Result<Self, TransportError> {
        let stream = connect_stream::<S, R>(&R::default(), &addr, &config).await?;
        Self::from_stream(stream, config)
    }

    /// Wraps a connected stream (applies `config.nodelay`).
    pub fn from_stream(stream: S, config: TcpConfig) -> Result<Self, TransportError> {
        let (peer_addr, local_addr) = set_up(&stream, &config)?;
        Ok(Self {
            inner: SocketTransport::new(stream, config.settings(), R::default()),
            peer_addr,
            local_addr,
            peer_key: PeerKey::Ip(peer_addr.ip().to_canonical()),
            peer: None,
            name: format!("tcp:{peer_addr}"),
        })
    }

    /// Who the peer is, for handlers.
    fn describe_peer(&self) -> xrpc_proto::PeerInfo {
        xrpc_proto::PeerInfo::new()
            .with_addr(self.peer_addr)
            .with_key(self.peer_key)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Connects to the first address of `addr` that answers (see [`TcpFrameTransport::connect`]).
pub(crate) async fn connect_stream<S: TcpSocket<R>, R: Runtime>(
    rt: &R,
    addr: &(impl ToSocketAddrs + ?Sized),
    config: &TcpConfig,
) -> Result<S, TransportError> {
    let addrs = resolve(rt, addr).await.map_err(|(name, e)| {
        TransportError::ConnectionFailed(format!("resolve {name} failed: {e}"))
    })?;
    let mut last = None;
    for a in addrs {
        match connect_with_retry(
            rt,
            &a,
            config.connect_timeout,
            config.max_attempts,
            config.retry_policy,
            || S::connect(a),
        )
        .await
        {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        TransportError::ConnectionFailed("the address resolved to nothing".into())
    }))
}

/// Listens on the first address of `addr` that can be bound (see
/// [`TcpFrameTransportListener::bind`]); the error names the address.
pub(crate) async fn bind_listener<S: TcpSocket<R>, R: Runtime>(
    addr: &(impl ToSocketAddrs + ?Sized),
) -> Result<S::Listener, TransportError> {
    let addrs = resolve(&R::default(), addr).await.map_err(|(name, e)| {
        TransportError::ConnectionFailed(format!("bind {name} failed: {e}"))
    })?;
    S::bind(&addrs).await.map_err(|e| {
        let tried: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        TransportError::ConnectionFailed(format!("bind {} failed: {e}", tried.join(", ")))
    })
}

/// Applies `config.nodelay` to a connected stream; gives its peer's and its own address.
pub(crate) fn set_up<S: TcpSocket<R>, R>(
    stream: &S,
    config: &TcpConfig,
) -> Result<(SocketAddr, SocketAddr), TransportError> {
    let fail = |e: std::io::Error| TransportError::ConnectionFailed(e.to_string());
    stream.set_nodelay(config.nodelay).map_err(fail)?;
    Ok((
        stream.peer_addr().map_err(fail)?,
        stream.local_addr().map_err(fail)?,
    ))
}

/// Accepts TCP connections as [`TcpFrameTransport`]s.
pub struct TcpFrameTransportListener<S: TcpSocket<R>, R: Runtime> {
    listener: S::Listener,
    config: TcpConfig,
    runtime: PhantomData<R>,
}

impl<S: TcpSocket<R>, R: Runtime> std::fmt::Debug for TcpFrameTransportListener<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpFrameTransportListener")
            .field("local_addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl<S: TcpSocket<R>, R: Runtime> TcpFrameTransportListener<S, R> {
    /// Binds to `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)): a
    /// [`SocketAddr`], a string such as `"127.0.0.1:9000"`, a host and a port (see
    /// [`ToSocketAddrs`]; a host name is looked up on the runtime's pool for blocking work).
    /// The error names the address:
    /// `bind 127.0.0.1:47800 failed: Address already in use (os error 98)`.
    pub async fn bind(addr: impl ToSocketAddrs, config: TcpConfig) -> Result<Self, TransportError> {
        Ok(Self {
            listener: bind_listener::<S, R>(&addr).await?,
            config,
            runtime: PhantomData,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.listener
            .local_addr()
            .map_err(|e| TransportError::ConnectionFailed(e.to_string()))
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> Result<(TcpFrameTransport<S, R>, SocketAddr), TransportError> {
        let (stream, addr) = self
            .listener
            .accept()
            .await
            .map_err(|e| TransportError::ConnectionFailed(format!("accept failed: {e}")))?;
        Ok((TcpFrameTransport::from_stream(stream, self.config)?, addr))
    }
}

impl<S: TcpSocket<R>, R: Runtime> FrameListener for TcpFrameTransportListener<S, R> {
    type Transport = TcpFrameTransport<S, R>;

    async fn accept(&self) -> Result<TcpFrameTransport<S, R>, TransportError> {
        TcpFrameTransportListener::accept(self)
            .await
            .map(|(t, _)| t)
    }
}
