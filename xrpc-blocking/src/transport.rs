//! Layer 1: the frame transports of `xrpc-async` — TCP, Unix sockets, shared memory — on the
//! [`Blocking`] runtime, with synchronous constructors (a `connect` or `bind` waits on the
//! calling thread), and [`AnyFrameTransport`], any one of them, which
//! [`RpcClient`](crate::RpcClient) and [`RpcServer::serve`](crate::RpcServer::serve) take.
//! The wire format is every adapter's (4-byte little-endian length-prefixed frames; whole
//! frames in the rings of `xrpc_shm`).

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;

use bytes::{Bytes, BytesMut};
pub use xrpc_async::FrameListener;
use xrpc_async::transport as neutral;
#[cfg(feature = "shm")]
pub use xrpc_async::transport::SharedMemoryConfig;
pub use xrpc_async::transport::{
    FrameTransport, TcpConfig, ToSocketAddrs, TransportError, TransportStats, UnixConfig,
};
#[cfg(feature = "tls")]
pub use xrpc_async::transport::{
    TlsClientConfig, TlsServerConfig, load_certificates, load_private_key, rustls,
};
use xrpc_proto::ReadBudget;

use crate::runtime::{Blocking, StdSocket};

/// The async layer's TCP transport on [`Blocking`].
pub type AsyncTcpFrameTransport = neutral::TcpFrameTransport<StdSocket<TcpStream>, Blocking>;
/// The async layer's TLS transport on [`Blocking`].
#[cfg(feature = "tls")]
pub type AsyncTlsFrameTransport = neutral::TlsFrameTransport<StdSocket<TcpStream>, Blocking>;
/// The async layer's Unix transport on [`Blocking`].
pub type AsyncUnixFrameTransport = neutral::UnixFrameTransport<StdSocket<UnixStream>, Blocking>;
/// The async layer's shared-memory transport on [`Blocking`].
#[cfg(feature = "shm")]
pub type AsyncSharedMemoryFrameTransport = neutral::SharedMemoryFrameTransport<Blocking>;

fn failed(what: String) -> TransportError {
    TransportError::ConnectionFailed(what)
}

/// A connected TCP socket carrying length-prefixed frames, wire-compatible with every adapter's
/// `TcpFrameTransport`.
///
/// ```no_run
/// use xrpc_blocking::{RpcClient, TcpConfig, TcpFrameTransport};
/// let client = RpcClient::new(TcpFrameTransport::connect("127.0.0.1:47800", TcpConfig::default())?);
/// # Ok::<(), xrpc_blocking::TransportError>(())
/// ```
#[derive(Debug)]
pub struct TcpFrameTransport(AsyncTcpFrameTransport);

impl TcpFrameTransport {
    /// Connects to the first address of `addr` that answers (each with the attempts, timeout
    /// and retry policy of `config`), waiting on the calling thread.
    pub fn connect(addr: impl ToSocketAddrs, config: TcpConfig) -> Result<Self, TransportError> {
        Blocking::block_on(AsyncTcpFrameTransport::connect(addr, config)).map(Self)
    }

    /// Wraps a connected stream (applies `config.nodelay`).
    pub fn from_stream(stream: TcpStream, config: TcpConfig) -> Result<Self, TransportError> {
        let socket = StdSocket::new(stream).map_err(|e| failed(e.to_string()))?;
        AsyncTcpFrameTransport::from_stream(socket, config).map(Self)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.0.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    /// The async layer's transport inside.
    pub fn into_inner(self) -> AsyncTcpFrameTransport {
        self.0
    }
}

/// Accepts TCP connections: serve it with
/// [`RpcServer::serve_listener`](crate::RpcServer::serve_listener).
#[derive(Debug)]
pub struct TcpFrameTransportListener(
    neutral::TcpFrameTransportListener<StdSocket<TcpStream>, Blocking>,
);

impl TcpFrameTransportListener {
    /// Binds to `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    pub fn bind(addr: impl ToSocketAddrs, config: TcpConfig) -> Result<Self, TransportError> {
        Blocking::block_on(neutral::TcpFrameTransportListener::bind(addr, config)).map(Self)
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.0.local_addr()
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> Result<(TcpFrameTransport, SocketAddr), TransportError> {
        let (t, addr) = Blocking::block_on(self.0.accept())?;
        Ok((TcpFrameTransport(t), addr))
    }
}

impl FrameListener for TcpFrameTransportListener {
    type Transport = AsyncTcpFrameTransport;

    async fn accept(&self) -> Result<AsyncTcpFrameTransport, TransportError> {
        FrameListener::accept(&self.0).await
    }
}

/// A TLS connection (rustls) over TCP carrying length-prefixed frames, wire-compatible with
/// every adapter's `TlsFrameTransport`.
///
/// ```no_run
/// use xrpc_blocking::{RpcClient, TcpConfig, TlsClientConfig, TlsFrameTransport};
/// let tls = TlsClientConfig::new(xrpc_blocking::load_certificates("ca.pem")?)?;
/// let client = RpcClient::new(TlsFrameTransport::connect("localhost:4443", TcpConfig::default(), tls)?);
/// # Ok::<(), xrpc_blocking::TransportError>(())
/// ```
#[cfg(feature = "tls")]
#[derive(Debug)]
pub struct TlsFrameTransport(AsyncTlsFrameTransport);

#[cfg(feature = "tls")]
impl TlsFrameTransport {
    /// Connects and makes the TLS handshake (see the async layer's
    /// [`TlsFrameTransport::connect`](neutral::TlsFrameTransport::connect)), waiting on the
    /// calling thread.
    pub fn connect(
        addr: impl ToSocketAddrs,
        config: TcpConfig,
        tls: TlsClientConfig,
    ) -> Result<Self, TransportError> {
        Blocking::block_on(AsyncTlsFrameTransport::connect(addr, config, tls)).map(Self)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.0.peer_addr()
    }

    /// The certificates the peer presented, its own first.
    pub fn peer_certificates(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        self.0.peer_certificates()
    }

    /// The async layer's transport inside.
    pub fn into_inner(self) -> AsyncTlsFrameTransport {
        self.0
    }
}

/// Accepts TCP connections and makes their TLS handshakes: serve it with
/// [`RpcServer::serve_listener`](crate::RpcServer::serve_listener).
#[cfg(feature = "tls")]
#[derive(Debug)]
pub struct TlsFrameTransportListener(
    neutral::TlsFrameTransportListener<StdSocket<TcpStream>, Blocking>,
);

#[cfg(feature = "tls")]
impl TlsFrameTransportListener {
    /// Binds to `addr` (port 0 picks a free port); connections are served with `tls`.
    pub fn bind(
        addr: impl ToSocketAddrs,
        config: TcpConfig,
        tls: TlsServerConfig,
    ) -> Result<Self, TransportError> {
        Blocking::block_on(neutral::TlsFrameTransportListener::bind(addr, config, tls)).map(Self)
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.0.local_addr()
    }

    /// Handshakes that failed or timed out so far.
    pub fn handshakes_failed(&self) -> u64 {
        self.0.handshakes_failed()
    }
}

#[cfg(feature = "tls")]
impl FrameListener for TlsFrameTransportListener {
    type Transport = AsyncTlsFrameTransport;

    async fn accept(&self) -> Result<AsyncTlsFrameTransport, TransportError> {
        FrameListener::accept(&self.0).await
    }
}

/// A connected Unix domain stream socket, framed as [`TcpFrameTransport`].
#[derive(Debug)]
pub struct UnixFrameTransport(AsyncUnixFrameTransport);

impl UnixFrameTransport {
    /// Connects to the socket at `path` (with the attempts, timeout and retry policy of
    /// `config`), waiting on the calling thread.
    pub fn connect(path: impl AsRef<Path>, config: UnixConfig) -> Result<Self, TransportError> {
        Blocking::block_on(AsyncUnixFrameTransport::connect(path, config)).map(Self)
    }

    /// Wraps a connected stream.
    pub fn from_stream(stream: UnixStream, config: UnixConfig) -> Result<Self, TransportError> {
        let name = match stream
            .peer_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_owned))
        {
            Some(path) => format!("unix:{}", path.display()),
            None => "unix".to_string(),
        };
        let socket = StdSocket::new(stream).map_err(|e| failed(e.to_string()))?;
        AsyncUnixFrameTransport::from_stream(socket, config, name).map(Self)
    }

    /// The async layer's transport inside.
    pub fn into_inner(self) -> AsyncUnixFrameTransport {
        self.0
    }
}

/// Accepts Unix socket connections.
#[derive(Debug)]
pub struct UnixFrameTransportListener(
    neutral::UnixFrameTransportListener<StdSocket<UnixStream>, Blocking>,
);

impl UnixFrameTransportListener {
    /// Listens at `path`.
    pub fn bind(path: impl AsRef<Path>, config: UnixConfig) -> Result<Self, TransportError> {
        Blocking::block_on(neutral::UnixFrameTransportListener::bind(path, config)).map(Self)
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> Result<UnixFrameTransport, TransportError> {
        Blocking::block_on(FrameListener::accept(&self.0)).map(UnixFrameTransport)
    }
}

impl FrameListener for UnixFrameTransportListener {
    type Transport = AsyncUnixFrameTransport;

    async fn accept(&self) -> Result<AsyncUnixFrameTransport, TransportError> {
        FrameListener::accept(&self.0).await
    }
}

/// A shared-memory connection to a process on this machine, wire-compatible with every
/// adapter's `SharedMemoryFrameTransport`: the thread that waits for a frame checks the ring
/// for the spin budget, then sleeps on its doorbell.
#[cfg(feature = "shm")]
#[derive(Debug)]
pub struct SharedMemoryFrameTransport(AsyncSharedMemoryFrameTransport);

#[cfg(feature = "shm")]
impl SharedMemoryFrameTransport {
    /// Connects to service `name` with the default configuration.
    pub fn connect_client(name: &str) -> Result<Self, TransportError> {
        Self::connect(name, SharedMemoryConfig::default())
    }

    /// Connects to service `name`, waiting at most `config.connect_timeout` for its segment.
    pub fn connect(name: &str, config: SharedMemoryConfig) -> Result<Self, TransportError> {
        Blocking::block_on(AsyncSharedMemoryFrameTransport::connect(name, config)).map(Self)
    }

    /// The async layer's transport inside.
    pub fn into_inner(self) -> AsyncSharedMemoryFrameTransport {
        self.0
    }
}

/// Accepts shared-memory clients of one service, each on its own segment.
#[cfg(feature = "shm")]
#[derive(Debug)]
pub struct SharedMemoryFrameTransportListener(
    neutral::SharedMemoryFrameTransportListener<Blocking>,
);

#[cfg(feature = "shm")]
impl SharedMemoryFrameTransportListener {
    /// Listens as service `name` (an abstract Unix socket: nothing is left on disk).
    pub fn bind(name: &str, config: SharedMemoryConfig) -> Result<Self, TransportError> {
        neutral::SharedMemoryFrameTransportListener::bind(name, config).map(Self)
    }

    /// The service name.
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// Waits for the next client.
    pub fn accept(&self) -> Result<SharedMemoryFrameTransport, TransportError> {
        Blocking::block_on(self.0.accept()).map(SharedMemoryFrameTransport)
    }
}

#[cfg(feature = "shm")]
impl FrameListener for SharedMemoryFrameTransportListener {
    type Transport = AsyncSharedMemoryFrameTransport;

    async fn accept(&self) -> Result<AsyncSharedMemoryFrameTransport, TransportError> {
        self.0.accept().await
    }

    fn enforce_peer_gate(&self, gate: std::sync::Arc<xrpc_async::PeerGate>) -> bool {
        self.0.enforce_peer_gate(gate)
    }
}

/// A connected transport of this crate, whichever kind: what
/// [`RpcClient::new`](crate::RpcClient::new) and [`RpcServer::serve`](crate::RpcServer::serve)
/// take (every transport converts into it).
#[derive(Debug)]
// One per connection, in place (boxing the larger one would add a pointer to every frame).
#[allow(clippy::large_enum_variant)]
pub enum AnyFrameTransport {
    /// TCP.
    Tcp(AsyncTcpFrameTransport),
    /// TLS over TCP.
    #[cfg(feature = "tls")]
    Tls(AsyncTlsFrameTransport),
    /// A Unix socket.
    Unix(AsyncUnixFrameTransport),
    /// Shared memory.
    #[cfg(feature = "shm")]
    SharedMemory(AsyncSharedMemoryFrameTransport),
}

impl From<TcpFrameTransport> for AnyFrameTransport {
    fn from(t: TcpFrameTransport) -> Self {
        Self::Tcp(t.0)
    }
}

#[cfg(feature = "tls")]
impl From<TlsFrameTransport> for AnyFrameTransport {
    fn from(t: TlsFrameTransport) -> Self {
        Self::Tls(t.0)
    }
}

#[cfg(feature = "tls")]
impl From<AsyncTlsFrameTransport> for AnyFrameTransport {
    fn from(t: AsyncTlsFrameTransport) -> Self {
        Self::Tls(t)
    }
}

impl From<UnixFrameTransport> for AnyFrameTransport {
    fn from(t: UnixFrameTransport) -> Self {
        Self::Unix(t.0)
    }
}

#[cfg(feature = "shm")]
impl From<SharedMemoryFrameTransport> for AnyFrameTransport {
    fn from(t: SharedMemoryFrameTransport) -> Self {
        Self::SharedMemory(t.0)
    }
}

impl From<AsyncTcpFrameTransport> for AnyFrameTransport {
    fn from(t: AsyncTcpFrameTransport) -> Self {
        Self::Tcp(t)
    }
}

impl From<AsyncUnixFrameTransport> for AnyFrameTransport {
    fn from(t: AsyncUnixFrameTransport) -> Self {
        Self::Unix(t)
    }
}

#[cfg(feature = "shm")]
impl From<AsyncSharedMemoryFrameTransport> for AnyFrameTransport {
    fn from(t: AsyncSharedMemoryFrameTransport) -> Self {
        Self::SharedMemory(t)
    }
}

/// `$body` with `$t` bound to the transport inside `$self`, whichever kind it is.
macro_rules! each {
    ($self:expr, $t:ident => $body:expr) => {
        match $self {
            AnyFrameTransport::Tcp($t) => $body,
            #[cfg(feature = "tls")]
            AnyFrameTransport::Tls($t) => $body,
            AnyFrameTransport::Unix($t) => $body,
            #[cfg(feature = "shm")]
            AnyFrameTransport::SharedMemory($t) => $body,
        }
    };
}

// Every method is forwarded, provided ones too: one left to its default would silently
// change the transport's behaviour (a missed `set_input_awaited` kept every idle shared-memory
// read spinning; a missed `unwritten` timed every write as stalled from its start).
#[deny(clippy::missing_trait_methods)]
impl FrameTransport for AnyFrameTransport {
    async fn send_frame(&self, frame: &[u8]) -> Result<(), TransportError> {
        each!(self, t => t.send_frame(frame).await)
    }

    async fn send_frames(&self, frames: &[&[u8]]) -> Result<(), TransportError> {
        each!(self, t => t.send_frames(frames).await)
    }

    async fn send_frame_with<F, E>(&self, encode: F) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        each!(self, t => t.send_frame_with(encode).await)
    }

    async fn send_batch_with<F, E>(&self, encode: F) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        each!(self, t => t.send_batch_with(encode).await)
    }

    async fn recv_frame(&self) -> Result<Bytes, TransportError> {
        each!(self, t => t.recv_frame().await)
    }

    async fn recv_frames_with<F>(&self, max: usize, each: F) -> Result<usize, TransportError>
    where
        F: FnMut(Bytes) + Send,
    {
        each!(self, t => t.recv_frames_with(max, each).await)
    }

    fn set_input_awaited(&self, awaited: bool) {
        each!(self, t => t.set_input_awaited(awaited))
    }

    fn partial_frame(&self) -> usize {
        each!(self, t => t.partial_frame())
    }

    fn unwritten(&self) -> usize {
        each!(self, t => t.unwritten())
    }

    fn peer_key(&self) -> xrpc_proto::PeerKey {
        each!(self, t => t.peer_key())
    }

    fn peer_credentials(&self) -> Option<xrpc_proto::PeerCredentials> {
        each!(self, t => t.peer_credentials())
    }

    fn peer_info(&self) -> xrpc_proto::PeerInfo {
        each!(self, t => t.peer_info())
    }

    fn set_read_budget(&self, budget: ReadBudget) {
        each!(self, t => t.set_read_budget(budget))
    }

    fn is_connected(&self) -> bool {
        each!(self, t => t.is_connected())
    }

    fn is_healthy(&self) -> bool {
        each!(self, t => t.is_healthy())
    }

    async fn close(&self) -> Result<(), TransportError> {
        each!(self, t => t.close().await)
    }

    fn stats(&self) -> Option<TransportStats> {
        each!(self, t => t.stats())
    }

    fn name(&self) -> &str {
        each!(self, t => t.name())
    }

    fn max_frame_size(&self) -> usize {
        each!(self, t => t.max_frame_size())
    }

    fn carries_values(&self) -> bool {
        each!(self, t => t.carries_values())
    }

    async fn send_value(
        &self,
        value: std::sync::Arc<dyn std::any::Any + Send + Sync>,
    ) -> Result<(), TransportError> {
        each!(self, t => t.send_value(value).await)
    }

    async fn recv_value(
        &self,
    ) -> Result<std::sync::Arc<dyn std::any::Any + Send + Sync>, TransportError> {
        each!(self, t => t.recv_value().await)
    }
}
