//! Frames over Unix domain stream sockets, on any reactor's [`UnixSocket`].

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use xrpc_proto::{DEFAULT_MAX_FRAME_SIZE, PeerCredentials, PeerKey, RetryPolicy};

use super::TransportError;
use super::socket::{SocketSettings, SocketTransport, connect_with_retry};
use crate::reactor::{SocketListener, UnixSocket};
use crate::rpc::FrameListener;
use crate::runtime::Runtime;

/// Settings of a [`UnixFrameTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixConfig {
    /// Largest frame sent or accepted (default 16 MiB).
    pub max_frame_size: usize,
    /// Time allowed for one connection attempt (default 5 s).
    pub connect_timeout: Duration,
    /// Time allowed for one [`recv_frame`](super::FrameTransport::recv_frame) (default none).
    pub read_timeout: Option<Duration>,
    /// Time allowed for writing one frame or batch (default none). A write that times out
    /// leaves the transport unusable for sends.
    pub write_timeout: Option<Duration>,
    /// Connection attempts made by [`UnixFrameTransport::connect`] (default 1: no retry).
    pub max_attempts: u32,
    /// Delay between connection attempts.
    pub retry_policy: RetryPolicy,
    /// The file mode of the socket file a listener creates (default `0o600`: only its user —
    /// and root — may connect; `0o660` lets its group connect too, to be narrowed with a
    /// [`PeerPolicy`](xrpc_proto::PeerPolicy)). The socket gets this mode before its path
    /// exists, so no process ever connects through a wider one.
    pub socket_mode: u32,
}

impl Default for UnixConfig {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            connect_timeout: Duration::from_secs(5),
            read_timeout: None,
            write_timeout: None,
            max_attempts: 1,
            retry_policy: RetryPolicy::default(),
            socket_mode: SOCKET_MODE,
        }
    }
}

super::socket_config!(UnixConfig);

/// The default mode of a listener's socket file: read-write for its user only.
pub const SOCKET_MODE: u32 = 0o600;

/// The mode of a directory a listener creates for its socket: its user only.
pub const SOCKET_DIR_MODE: u32 = 0o700;

impl UnixConfig {
    /// The same configuration with another socket file mode (see
    /// [`socket_mode`](Self::socket_mode)).
    pub fn with_socket_mode(mut self, mode: u32) -> Self {
        self.socket_mode = mode;
        self
    }
}

/// A [`FrameTransport`](super::FrameTransport) over a Unix domain stream socket `S` of
/// runtime `R`, framed like [`TcpFrameTransport`](super::TcpFrameTransport).
pub struct UnixFrameTransport<S, R: Runtime> {
    inner: SocketTransport<S, R>,
    /// The peer's user id (`SO_PEERCRED`), if the kernel told it.
    peer_key: PeerKey,
    /// The peer's pid, uid and gid (`SO_PEERCRED`), if the kernel told them.
    peer: Option<PeerCredentials>,
    name: String,
}

impl<S, R: Runtime> std::fmt::Debug for UnixFrameTransport<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixFrameTransport")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

super::forward_frame_transport!(UnixFrameTransport, UnixSocket);

impl<S: UnixSocket<R>, R: Runtime> UnixFrameTransport<S, R> {
    /// Connects to the socket at `path`, making up to `config.max_attempts` attempts of at most
    /// `config.connect_timeout` each, `config.retry_policy` apart.
    pub async fn connect(
        path: impl AsRef<Path>,
        config: UnixConfig,
    ) -> Result<Self, TransportError> {
        let path = path.as_ref();
        let stream = connect_with_retry(
            &R::default(),
            &path.display(),
            config.connect_timeout,
            config.max_attempts,
            config.retry_policy,
            || S::connect(path),
        )
        .await?;
        Self::from_stream(stream, config, format!("unix:{}", path.display()))
    }

    /// Wraps a connected stream; `name` is what [`name`](super::FrameTransport::name) reports.
    pub fn from_stream(
        stream: S,
        config: UnixConfig,
        name: impl Into<String>,
    ) -> Result<Self, TransportError> {
        let peer = super::peer_credentials(&stream);
        Ok(Self {
            inner: SocketTransport::new(stream, config.settings(), R::default()),
            peer_key: super::uid_key(peer),
            peer,
            name: name.into(),
        })
    }

    /// Who the peer is, for handlers: the socket's path (from the name `unix:<path>`), and the
    /// peer process's credentials.
    fn describe_peer(&self) -> xrpc_proto::PeerInfo {
        let info = xrpc_proto::PeerInfo::new()
            .with_key(self.peer_key)
            .with_credentials(self.peer);
        match self.name.strip_prefix("unix:") {
            Some(path) => info.with_path(path),
            None => info,
        }
    }
}

/// Accepts Unix socket connections as [`UnixFrameTransport`]s. The socket file is removed when
/// the listener is dropped.
pub struct UnixFrameTransportListener<S: UnixSocket<R>, R: Runtime> {
    listener: S::Listener,
    path: PathBuf,
    config: UnixConfig,
    runtime: PhantomData<R>,
    /// Its entry in the registry of this machine's services (`xrpc list`).
    _registration: Option<crate::registry::Registration>,
}

impl<S: UnixSocket<R>, R: Runtime> std::fmt::Debug for UnixFrameTransportListener<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixFrameTransportListener")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<S: UnixSocket<R>, R: Runtime> UnixFrameTransportListener<S, R> {
    /// Binds a socket at `path`, with mode [`UnixConfig::socket_mode`] (default `0o600`). Its
    /// directory is created if missing, with mode `0o700` (the directories it creates). A
    /// stale socket file left by a dead process (one nobody accepts on) is replaced; a live
    /// one is an error.
    pub async fn bind(path: impl AsRef<Path>, config: UnixConfig) -> Result<Self, TransportError> {
        let path = path.as_ref().to_path_buf();
        let fail = |e: std::io::Error| {
            TransportError::ConnectionFailed(format!("bind {} failed: {e}", path.display()))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                SOCKET_DIR_MODE,
            )
            .create(dir)
            .map_err(fail)?;
        }
        let listener = match bind_with_mode::<S, R>(&path, config.socket_mode) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => match S::connect(&path).await {
                Err(ce) if ce.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(&path).map_err(fail)?;
                    bind_with_mode::<S, R>(&path, config.socket_mode).map_err(fail)?
                }
                _ => return Err(fail(e)),
            },
            Err(e) => return Err(fail(e)),
        };
        let target = match std::fs::canonicalize(&path) {
            Ok(p) => format!("unix:{}", p.display()),
            Err(_) => format!("unix:{}", path.display()),
        };
        Ok(Self {
            listener,
            path,
            config,
            runtime: PhantomData,
            _registration: crate::registry::register(&target),
        })
    }

    /// The socket's path.
    pub fn local_addr(&self) -> &Path {
        &self.path
    }

    /// Waits for the next connection.
    pub async fn accept(
        &self,
    ) -> Result<
        (
            UnixFrameTransport<S, R>,
            <S::Listener as SocketListener<R>>::Addr,
        ),
        TransportError,
    > {
        let (stream, addr) = self
            .listener
            .accept()
            .await
            .map_err(|e| TransportError::ConnectionFailed(format!("accept failed: {e}")))?;
        let name = format!("unix:{}", self.path.display());
        Ok((
            UnixFrameTransport::from_stream(stream, self.config, name)?,
            addr,
        ))
    }
}

/// Binds a listening socket at `path` whose file has `mode` from the start: it is bound in a
/// fresh directory of its own (mode `0o700`) next to `path`, given its mode there, and then
/// hard-linked to `path` (which fails with `AddrInUse` if `path` exists: nothing is ever
/// replaced). Where that directory's longer path does not fit a socket address, the socket is
/// bound at `path` and its mode set at once — with the process umask for that moment.
fn bind_with_mode<S: UnixSocket<R>, R: Runtime>(
    path: &Path,
    mode: u32,
) -> std::io::Result<S::Listener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);

    let set_mode = |p: &Path| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
    let dir = path.parent().unwrap_or(Path::new("."));
    let private = dir.join(format!(
        ".xrpc-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let staged = private.join("s");
    // A socket address holds at most 107 bytes of path.
    if staged.as_os_str().len() > 100 {
        let listener = S::bind(path)?;
        set_mode(path)?;
        return Ok(listener);
    }
    std::fs::DirBuilder::new()
        .mode(SOCKET_DIR_MODE)
        .create(&private)?;
    let placed = S::bind(&staged).and_then(|listener| {
        set_mode(&staged)?;
        std::fs::hard_link(&staged, path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                std::io::Error::from(std::io::ErrorKind::AddrInUse)
            } else {
                e
            }
        })?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    placed
}

impl<S: UnixSocket<R>, R: Runtime> Drop for UnixFrameTransportListener<S, R> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl<S: UnixSocket<R>, R: Runtime> FrameListener for UnixFrameTransportListener<S, R> {
    type Transport = UnixFrameTransport<S, R>;

    async fn accept(&self) -> Result<UnixFrameTransport<S, R>, TransportError> {
        UnixFrameTransportListener::accept(self)
            .await
            .map(|(t, _)| t)
    }
}
