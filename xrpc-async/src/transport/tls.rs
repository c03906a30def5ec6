//! Frames over TLS over TCP, with rustls (feature `tls`): [`TlsFrameTransport`], its listener,
//! and their configurations.
//!
//! One place for every runtime: the TLS connection is a [`Socket`](crate::reactor::Socket)
//! over the reactor's TCP socket (`tls_socket.rs`), and the transport is the same socket frame
//! transport as [`TcpFrameTransport`](super::TcpFrameTransport) over it — framing, read
//! budget, timeouts and stats are those of TCP. An adapter names the types for its sockets.
//!
//! The listener runs the handshakes of the connections it accepts side by side, each bounded
//! by [`TlsServerConfig::handshake_timeout`], at most [`TlsServerConfig::max_handshakes`] at
//! once, while it goes on accepting: a peer that never finishes its handshake holds a place
//! for the timeout at most, and never holds up the server's accept loop. A failed handshake
//! is counted ([`TlsFrameTransportListener::handshakes_failed`]) and is not an accept error.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use xrpc_proto::PeerKey;

use super::TransportError;
use super::addr::{ToSocketAddrs, host_of};
use super::socket::SocketTransport;
use super::tcp::{TcpConfig, bind_listener, connect_stream, set_up};
use super::tls_socket::{TlsSocket, handshake};
use crate::reactor::{SocketListener, TcpSocket};
use crate::rpc::FrameListener;
use crate::runtime::Runtime;
use crate::time;

/// Default [`TlsServerConfig::handshake_timeout`] and [`TlsClientConfig::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`TlsServerConfig::max_handshakes`].
pub const DEFAULT_MAX_HANDSHAKES: usize = 64;

/// The crypto of every configuration made here: rustls's `ring` provider. rustls deprecates it
/// for want of post-quantum key exchange; its other provider (aws-lc-rs) needs cmake to build.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(
    what: &str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> TransportError {
    TransportError::tls(format!("configuration: {what}"), e)
}

fn root_store(
    roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<RootCertStore, TransportError> {
    let mut store = RootCertStore::empty();
    for cert in roots {
        store
            .add(cert)
            .map_err(|e| config_error("a root certificate", e))?;
    }
    if store.is_empty() {
        return Err(config_error(
            "roots",
            "no root certificate: nothing could be trusted",
        ));
    }
    Ok(store)
}

/// The certificates of a PEM file (`-----BEGIN CERTIFICATE-----`), in order.
pub fn load_certificates(
    path: impl AsRef<Path>,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let path = path.as_ref();
    let what = || format!("certificates from {}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| config_error(&what(), e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(&what(), e))?;
    if certs.is_empty() {
        return Err(config_error(&what(), "the file holds no certificate"));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, TransportError> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| config_error(&format!("private key from {}", path.display()), e))
}

/// The TLS side of a client: whom it trusts, the name it expects the server's certificate to
/// carry, its own certificate for mutual TLS, and how long the handshake may take.
///
/// ```no_run
/// # async fn demo() -> Result<(), xrpc_tokio::TransportError> {
/// use xrpc_tokio::{TcpConfig, TlsClientConfig, TlsFrameTransport};
/// let tls = TlsClientConfig::new(xrpc_tokio::load_certificates("ca.pem")?)?;
/// // The server's certificate must be for `api.example.com`, the host connected to.
/// let t = TlsFrameTransport::connect("api.example.com:4443", TcpConfig::default(), tls).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TlsClientConfig {
    rustls: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    /// Time allowed for the handshake, after the TCP connection is made (default 10 s).
    pub handshake_timeout: Duration,
}

impl TlsClientConfig {
    /// Trusts servers whose certificate chains to one of `roots`; no client certificate.
    pub fn new(
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, TransportError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error("protocol versions", e))?
            .with_root_certificates(root_store(roots)?)
            .with_no_client_auth();
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// Trusts servers whose certificate chains to one of `roots`, and presents `chain` (its
    /// own certificate first) with its private `key` to a server that asks (mutual TLS).
    pub fn with_client_certificate(
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TransportError> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error("protocol versions", e))?
            .with_root_certificates(root_store(roots)?)
            .with_client_auth_cert(chain, key)
            .map_err(|e| config_error("the client certificate", e))?;
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// A rustls configuration made by the caller, as it is.
    pub fn from_rustls(config: Arc<ClientConfig>) -> Self {
        Self {
            rustls: config,
            server_name: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Expects the server's certificate to be for `name` (a DNS name or an IP address)
    /// instead of the host connected to — for a connection made to an IP address or through
    /// a name the certificate does not carry.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Result<Self, TransportError> {
        let name = name.into();
        self.server_name = Some(
            ServerName::try_from(name.clone())
                .map_err(|e| config_error(&format!("server name {name:?}"), e))?,
        );
        Ok(self)
    }

    /// The same configuration with another handshake timeout.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<ClientConfig> {
        &self.rustls
    }

    /// The name to verify for a connection to `addr`.
    fn server_name_for(
        &self,
        addr: &(impl ToSocketAddrs + ?Sized),
    ) -> Result<ServerName<'static>, TransportError> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = host_of(addr)
            .ok_or_else(|| config_error("server name", "the address names no host"))?;
        ServerName::try_from(host.clone())
            .map_err(|e| config_error(&format!("server name {host:?}"), e))
    }
}

/// The TLS side of a server: its certificate and key, the roots client certificates must
/// chain to for mutual TLS, and the bounds of the handshakes.
///
/// ```no_run
/// # async fn demo() -> Result<(), xrpc_tokio::TransportError> {
/// use xrpc_tokio::{TcpConfig, TlsFrameTransportListener, TlsServerConfig};
/// let tls = TlsServerConfig::from_pem_files("server.pem", "server.key")?;
/// let listener = TlsFrameTransportListener::bind("0.0.0.0:4443", TcpConfig::default(), tls).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TlsServerConfig {
    rustls: Arc<ServerConfig>,
    /// Time allowed for a handshake, from the TCP connection's acceptance (default 10 s). A
    /// connection whose handshake is not over by then is closed.
    pub handshake_timeout: Duration,
    /// Handshakes under way at once (default 64; 0 counts as 1). Beyond it the listener
    /// accepts no new connection (they wait in the system's backlog) until one ends.
    pub max_handshakes: usize,
}

impl TlsServerConfig {
    /// Presents `chain` (the server's certificate first) with its private `key`; asks no
    /// client certificate.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TransportError> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error("protocol versions", e))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| config_error("the server certificate", e))?;
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// Like [`new`](Self::new), and requires a client certificate that chains to one of
    /// `client_roots` (mutual TLS): a client without one is refused in the handshake.
    pub fn with_client_roots(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, TransportError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(root_store(client_roots)?),
            provider(),
        )
        .build()
        .map_err(|e| config_error("the client roots", e))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error("protocol versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| config_error("the server certificate", e))?;
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// The certificate chain and private key of two PEM files (see [`new`](Self::new)).
    pub fn from_pem_files(
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TransportError> {
        Self::new(load_certificates(chain)?, load_private_key(key)?)
    }

    /// A rustls configuration made by the caller, as it is.
    pub fn from_rustls(config: Arc<ServerConfig>) -> Self {
        Self {
            rustls: config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
        }
    }

    /// The same configuration with another handshake timeout.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The same configuration with another bound on handshakes under way (at least 1).
    pub fn with_max_handshakes(mut self, max: usize) -> Self {
        self.max_handshakes = max.max(1);
        self
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<ServerConfig> {
        &self.rustls
    }
}

/// A [`FrameTransport`](super::FrameTransport) over a TLS connection (rustls) over TCP: the
/// frames of [`TcpFrameTransport`](super::TcpFrameTransport), encrypted. Adapters name it for
/// their sockets (`xrpc_tokio::TlsFrameTransport`).
///
/// ```no_run
/// # async fn demo() -> Result<(), xrpc_tokio::TransportError> {
/// use xrpc_tokio::{FrameTransport, TcpConfig, TlsClientConfig, TlsFrameTransport};
/// let tls = TlsClientConfig::new(xrpc_tokio::load_certificates("ca.pem")?)?;
/// let t = TlsFrameTransport::connect("localhost:4443", TcpConfig::default(), tls).await?;
/// t.send_frame(b"hello").await?;
/// # Ok(()) }
/// ```
pub struct TlsFrameTransport<S, R: Runtime> {
    inner: SocketTransport<TlsSocket<S>, R>,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
    /// The peer's IP address, as a key.
    peer_key: PeerKey,
    /// No credentials over TCP (the field the shared forwarding reads).
    peer: Option<xrpc_proto::PeerCredentials>,
    name: String,
}

impl<S, R: Runtime> std::fmt::Debug for TlsFrameTransport<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFrameTransport")
            .field("peer_addr", &self.peer_addr)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

super::forward_frame_transport!(TlsFrameTransport, TcpSocket);

impl<S: TcpSocket<R>, R: Runtime> TlsFrameTransport<S, R> {
    /// Who the peer is, for handlers: its address (a client certificate, if any, is in
    /// [`peer_certificates`](Self::peer_certificates)).
    fn describe_peer(&self) -> xrpc_proto::PeerInfo {
        xrpc_proto::PeerInfo::new()
            .with_addr(self.peer_addr)
            .with_key(self.peer_key)
    }

    /// Connects to `addr` as [`TcpFrameTransport::connect`](super::TcpFrameTransport::connect)
    /// does (same addresses, attempts and timeouts), then makes the TLS handshake within
    /// `tls.handshake_timeout`. The server's certificate must chain to `tls`'s roots and be
    /// for the host of `addr` (or [`TlsClientConfig::with_server_name`]'s).
    ///
    /// A refused handshake is a [`TransportError::Tls`] with rustls's reason:
    /// `TLS handshake with 127.0.0.1:4443: invalid peer certificate: UnknownIssuer`.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        config: TcpConfig,
        tls: TlsClientConfig,
    ) -> Result<Self, TransportError> {
        let server_name = tls.server_name_for(&addr)?;
        let rt = R::default();
        let stream = connect_stream::<S, R>(&rt, &addr, &config).await?;
        Self::client_from_stream(stream, config, &tls, server_name).await
    }

    /// Makes the client handshake over a connected stream (applies `config.nodelay`),
    /// expecting a certificate for `server_name`.
    pub async fn client_from_stream(
        stream: S,
        config: TcpConfig,
        tls: &TlsClientConfig,
        server_name: ServerName<'static>,
    ) -> Result<Self, TransportError> {
        let conn = || ClientConnection::new(tls.rustls.clone(), server_name).map(Into::into);
        Self::handshake_over(stream, config, tls.handshake_timeout, "with", conn).await
    }

    /// Makes the server handshake over an accepted stream (applies `config.nodelay`), within
    /// `tls.handshake_timeout`.
    pub async fn server_from_stream(
        stream: S,
        config: TcpConfig,
        tls: &TlsServerConfig,
    ) -> Result<Self, TransportError> {
        let conn = || ServerConnection::new(tls.rustls.clone()).map(Into::into);
        Self::handshake_over(stream, config, tls.handshake_timeout, "from", conn).await
    }

    /// Sets `stream` up (`config.nodelay`) and makes the handshake of the connection `conn`
    /// makes (client or server), within `timeout`; errors say "handshake `with`/`from` the
    /// peer".
    async fn handshake_over(
        stream: S,
        config: TcpConfig,
        timeout: Duration,
        with_or_from: &str,
        conn: impl FnOnce() -> Result<rustls::Connection, rustls::Error>,
    ) -> Result<Self, TransportError> {
        let (peer_addr, local_addr) = set_up(&stream, &config)?;
        let context = format!("handshake {with_or_from} {peer_addr}");
        let conn = conn().map_err(|e| TransportError::tls(context.clone(), e))?;
        let rt = R::default();
        let name = format!("tls:{peer_addr}");
        let socket = time::within(
            &rt,
            timeout,
            handshake(stream, conn, &context, name.clone()),
        )
        .await
        .unwrap_or_else(|| {
            Err(TransportError::tls(
                context.clone(),
                format!(
                    "not finished within {timeout:?} (does the peer speak TLS? a plaintext \
                         server waits for a frame and never answers)"
                ),
            ))
        })?;
        Ok(Self {
            inner: SocketTransport::new(socket, config.settings(), rt),
            peer_addr,
            local_addr,
            peer_key: PeerKey::Ip(peer_addr.ip().to_canonical()),
            peer: None,
            name,
        })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The certificates the peer presented in the handshake, its own first: the server's on a
    /// client; on a server, the client's with mutual TLS (else none).
    pub fn peer_certificates(&self) -> Vec<CertificateDer<'static>> {
        self.inner.socket().peer_certificates()
    }
}

/// A handshake under way at a listener: the transport, or `None` if it failed.
type Handshake<S, R> = Pin<Box<dyn Future<Output = Option<TlsFrameTransport<S, R>>> + Send>>;

/// Accepts TCP connections and makes the TLS handshake of each, giving
/// [`TlsFrameTransport`]s. Serve it with `RpcServer::serve_listener`.
///
/// Handshakes run side by side while the listener waits in [`accept`](Self::accept) (one
/// task accepts at a time), each bounded by [`TlsServerConfig::handshake_timeout`], at most
/// [`TlsServerConfig::max_handshakes`] at once. A connection whose handshake fails or times
/// out is closed and counted ([`handshakes_failed`](Self::handshakes_failed)); `accept` goes
/// on to the next.
pub struct TlsFrameTransportListener<S: TcpSocket<R>, R: Runtime> {
    listener: S::Listener,
    config: TcpConfig,
    tls: TlsServerConfig,
    handshakes: Mutex<FuturesUnordered<Handshake<S, R>>>,
    failed: Arc<AtomicU64>,
}

impl<S: TcpSocket<R>, R: Runtime> std::fmt::Debug for TlsFrameTransportListener<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFrameTransportListener")
            .field("local_addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// What the accept loop waited for.
enum Next<S, R: Runtime> {
    /// A handshake is over (boxed: a transport holds its TLS connection in place).
    Ready(Box<TlsFrameTransport<S, R>>),
    Accepted(std::io::Result<(S, SocketAddr)>),
}

impl<S: TcpSocket<R>, R: Runtime> TlsFrameTransportListener<S, R> {
    /// Binds to `addr` as [`TcpFrameTransportListener::bind`](super::TcpFrameTransportListener::bind)
    /// does; connections are served with `tls`.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        config: TcpConfig,
        tls: TlsServerConfig,
    ) -> Result<Self, TransportError> {
        Ok(Self {
            listener: bind_listener::<S, R>(&addr).await?,
            config,
            tls,
            handshakes: Mutex::new(FuturesUnordered::new()),
            failed: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.listener
            .local_addr()
            .map_err(|e| TransportError::ConnectionFailed(e.to_string()))
    }

    /// Handshakes that failed or timed out so far.
    pub fn handshakes_failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Waits for the next connection whose handshake succeeded. An error is the TCP
    /// listener's (a failed handshake is not one).
    pub async fn accept(&self) -> Result<TlsFrameTransport<S, R>, TransportError> {
        loop {
            let next = {
                let mut accept = pin!(self.listener.accept());
                poll_fn(|cx| {
                    let mut handshakes = self
                        .handshakes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    while let Poll::Ready(Some(done)) = handshakes.poll_next_unpin(cx) {
                        if let Some(t) = done {
                            return Poll::Ready(Next::Ready(Box::new(t)));
                        }
                    }
                    if handshakes.len() >= self.tls.max_handshakes.max(1) {
                        return Poll::Pending;
                    }
                    drop(handshakes);
                    accept.as_mut().poll(cx).map(Next::Accepted)
                })
                .await
            };
            match next {
                Next::Ready(t) => return Ok(*t),
                Next::Accepted(Ok((stream, _))) => self.start(stream),
                Next::Accepted(Err(e)) => {
                    return Err(TransportError::ConnectionFailed(format!(
                        "accept failed: {e}"
                    )));
                }
            }
        }
    }

    /// Starts the handshake of an accepted connection (polled by `accept`).
    fn start(&self, stream: S) {
        let config = self.config;
        let tls = self.tls.clone();
        let failed = self.failed.clone();
        let handshake: Handshake<S, R> = Box::pin(async move {
            match TlsFrameTransport::server_from_stream(stream, config, &tls).await {
                Ok(t) => Some(t),
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        });
        self.handshakes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(handshake);
    }
}

impl<S: TcpSocket<R>, R: Runtime> FrameListener for TlsFrameTransportListener<S, R> {
    type Transport = TlsFrameTransport<S, R>;

    async fn accept(&self) -> Result<TlsFrameTransport<S, R>, TransportError> {
        TlsFrameTransportListener::accept(self).await
    }
}
