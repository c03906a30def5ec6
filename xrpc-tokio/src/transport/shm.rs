//! Shared memory between processes on one machine, over [`xrpc_shm`] rings.
//!
//! Each connection has its own sealed `memfd` segment holding two lock-free rings; the
//! rendezvous is an abstract Unix socket named after the service (see `xrpc_shm`). Frames are
//! copied once, into the ring, and once out of it.
//!
//! Waiting never blocks a runtime worker and holds no thread: a receive (or a send into a full
//! ring) follows the wait policy of `xrpc_shm` ([`xrpc_shm::Backoff`]) — a short busy check, then
//! retries that yield to the runtime, for at most [`SharedMemoryConfig::spin_budget`], so a busy
//! peer is served with no system call at all — and then sleeps in the runtime's reactor: it
//! announces the sleep and waits for the ring's doorbell (an eventfd the peer rings after
//! publishing) or for the rendezvous socket to hang up (the peer died), whichever comes first.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use xrpc_proto::FRAME_PREFIX_LEN;
use xrpc_shm::{
    Backoff, Doorbell, PeerFd, RecvWaiter, SendWaiter, ShmConfig, ShmConnection, ShmConnector,
    ShmError, ShmListener, ShmReceiver, ShmSender, WaitStep,
};

use super::{
    FrameTransport, StatsCounters, TransportError, TransportStats, batch_frames, check_len,
    check_prefixed, check_prefixed_batch,
};

pub use xrpc_shm::SharedMemoryConfig;

fn map_err(e: ShmError) -> TransportError {
    match e {
        ShmError::Disconnected => TransportError::ConnectionClosed,
        ShmError::FrameTooLarge { size, max } => TransportError::MessageTooLarge { size, max },
        ShmError::Timeout => TransportError::Timeout,
        ShmError::Corrupt(m) => TransportError::Protocol(format!("shared memory corrupt: {m}")),
        ShmError::Io(e) => TransportError::ConnectionFailed(e.to_string()),
        e @ ShmError::NoServer(_) => TransportError::ConnectionFailed(e.to_string()),
        other => TransportError::SharedMemoryCreation(other.to_string()),
    }
}

/// Largest send buffer a connection keeps between sends: a frame up to the max frame size
/// (16 MiB) may pass, but an idle connection should not hold its buffer.
const SCRATCH_KEEP: usize = 64 * 1024;

/// Empties the send buffer after a send, freeing it if a large frame grew it.
fn release_scratch(scratch: &mut BytesMut) {
    if scratch.capacity() > SCRATCH_KEEP {
        *scratch = BytesMut::new();
    } else {
        scratch.clear();
    }
}

/// Registers `fd` with the runtime's reactor for readability.
fn register<T: AsRawFd>(fd: T) -> Result<AsyncFd<T>, TransportError> {
    // `with_interest` is deprecated because an arbitrary `AsRawFd` may close its descriptor
    // while registered; the owned descriptors and the shared handles of `xrpc_shm` (`Doorbell`,
    // `PeerFd`: the descriptor stays open while any clone lives) cannot, so this use is sound
    // (its replacement takes a raw descriptor on trust, which this crate does not do).
    #[allow(deprecated)]
    AsyncFd::with_interest(fd, Interest::READABLE)
        .map_err(|e| TransportError::ConnectionFailed(e.to_string()))
}

/// Connects to service `name` with the handshake waiting in the reactor: no thread is blocked.
async fn connect_async(name: &str, config: ShmConfig) -> Result<ShmConnection, TransportError> {
    let deadline = Instant::now() + config.handshake_timeout;
    let mut connector = loop {
        match ShmConnector::start(name, config.clone()) {
            Ok(c) => break c,
            // The server's accept backlog is full: try again shortly.
            Err(ShmError::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(map_err(e)),
        }
    };
    let sock = register(connector.socket())?;
    let finish = async {
        loop {
            let mut ready = sock
                .readable()
                .await
                .map_err(|e| TransportError::ConnectionFailed(e.to_string()))?;
            match connector.try_finish() {
                Ok(Some(conn)) => return Ok(conn),
                Ok(None) => ready.clear_ready(),
                Err(e) => return Err(map_err(e)),
            }
        }
    };
    tokio::time::timeout_at(deadline.into(), finish)
        .await
        .map_err(|_| TransportError::Timeout)?
}

/// The reactor registrations of a connection's sleepers, made at its first sleep (registering
/// needs a runtime).
struct Reactor {
    /// Rung by the peer after it publishes a frame while our receive sleeps.
    recv_bell: AsyncFd<Doorbell>,
    /// Rung by the peer after it frees room while our send sleeps.
    send_bell: AsyncFd<Doorbell>,
    /// The rendezvous socket: readable when the peer is gone.
    peer: AsyncFd<PeerFd>,
}

/// An [`ShmListener`] whose accepts wait for readiness on the runtime's reactor (the handshake
/// itself is one non-blocking `sendmsg`), so waiting for clients holds no thread.
struct AsyncListener {
    /// A duplicate of the listening socket's descriptor, registered with the reactor on first
    /// accept (binding needs no runtime).
    fd: tokio::sync::OnceCell<AsyncFd<OwnedFd>>,
    listener: ShmListener,
}

impl AsyncListener {
    fn new(listener: ShmListener) -> Self {
        Self {
            fd: tokio::sync::OnceCell::new(),
            listener,
        }
    }

    async fn accept(&self) -> Result<ShmConnection, TransportError> {
        let fd = self
            .fd
            .get_or_try_init(|| async {
                let failed = |e: std::io::Error| TransportError::ConnectionFailed(e.to_string());
                self.listener.set_nonblocking(true).map_err(map_err)?;
                let dup = self.listener.as_fd().try_clone_to_owned().map_err(failed)?;
                // `with_interest` is deprecated because an arbitrary `AsRawFd` may close its
                // descriptor while registered; an `OwnedFd` owned by the `AsyncFd` cannot, so
                // this use is sound (its replacement takes a raw descriptor on trust, which this
                // crate does not do).
                #[allow(deprecated)]
                AsyncFd::with_interest(dup, Interest::READABLE).map_err(failed)
            })
            .await?;
        loop {
            let mut ready = fd
                .readable()
                .await
                .map_err(|e| TransportError::ConnectionFailed(e.to_string()))?;
            match self.listener.accept() {
                Ok(conn) => return Ok(conn),
                Err(ShmError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    ready.clear_ready();
                }
                Err(e) => return Err(map_err(e)),
            }
        }
    }
}

struct Connected {
    /// Held for a whole send, so frames of concurrent senders never interleave.
    tx: tokio::sync::Mutex<TxState>,
    rx: tokio::sync::Mutex<ShmReceiver>,
    send_waiter: SendWaiter,
    recv_waiter: RecvWaiter,
    reactor: tokio::sync::OnceCell<Reactor>,
    max_frame_size: usize,
}

struct TxState {
    sender: ShmSender,
    /// Reused buffer for [`FrameTransport::send_frame_with`].
    scratch: BytesMut,
}

impl Connected {
    fn new(conn: ShmConnection) -> Self {
        let max_frame_size = conn.max_frame_size();
        let (sender, receiver) = conn.split();
        Self {
            send_waiter: sender.waiter(),
            recv_waiter: receiver.waiter(),
            tx: tokio::sync::Mutex::new(TxState {
                sender,
                scratch: BytesMut::new(),
            }),
            rx: tokio::sync::Mutex::new(receiver),
            reactor: tokio::sync::OnceCell::new(),
            max_frame_size,
        }
    }

    async fn reactor(&self) -> Result<&Reactor, TransportError> {
        self.reactor
            .get_or_try_init(|| async {
                Ok(Reactor {
                    recv_bell: register(self.recv_waiter.doorbell().clone())?,
                    send_bell: register(self.send_waiter.doorbell().clone())?,
                    peer: register(self.recv_waiter.peer_fd())?,
                })
            })
            .await
    }
}

enum Role {
    /// `create_server`: the first client is accepted on first use.
    Server(AsyncListener),
    /// A client, or an accepted connection.
    Ready,
}

/// A frame transport over shared memory.
///
/// ```no_run
/// # fn demo() -> Result<(), xrpc_tokio::TransportError> {
/// use xrpc_tokio::{SharedMemoryConfig, SharedMemoryFrameTransport};
/// // In the server process (the first client that connects is served):
/// let server = SharedMemoryFrameTransport::create_server("my_service", SharedMemoryConfig::default())?;
/// // In the client process:
/// let client = SharedMemoryFrameTransport::connect_client("my_service")?;
/// # Ok(()) }
/// ```
pub struct SharedMemoryFrameTransport {
    role: Role,
    conn: tokio::sync::OnceCell<Connected>,
    config: SharedMemoryConfig,
    stats: StatsCounters,
    closed: AtomicBool,
    /// Wakes sleeping sends and receives when the transport is closed.
    close_notify: Notify,
    name: String,
}

impl std::fmt::Debug for SharedMemoryFrameTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemoryFrameTransport")
            .field("name", &self.name)
            .field("connected", &self.conn.initialized())
            .finish_non_exhaustive()
    }
}

impl SharedMemoryFrameTransport {
    fn ready(conn: ShmConnection, config: SharedMemoryConfig, name: String) -> Self {
        Self {
            role: Role::Ready,
            conn: tokio::sync::OnceCell::new_with(Some(Connected::new(conn))),
            config,
            stats: StatsCounters::default(),
            closed: AtomicBool::new(false),
            close_notify: Notify::new(),
            name,
        }
    }

    /// Listens as service `name` and serves the first client that connects (accepted on first
    /// use, without blocking the caller). For many clients use
    /// [`SharedMemoryFrameTransportListener`]. Needs no runtime.
    pub fn create_server(name: &str, config: SharedMemoryConfig) -> Result<Self, TransportError> {
        let listener = ShmListener::bind(name, ShmConfig::from(&config)).map_err(map_err)?;
        Ok(Self {
            role: Role::Server(AsyncListener::new(listener)),
            conn: tokio::sync::OnceCell::new(),
            config,
            stats: StatsCounters::default(),
            closed: AtomicBool::new(false),
            close_notify: Notify::new(),
            name: format!("shm:{name}"),
        })
    }

    /// Connects to service `name` with the default configuration. The handshake is a short
    /// exchange on a local socket; it blocks the calling thread for at most
    /// [`SharedMemoryConfig::connect_timeout`] — in async code prefer [`connect`](Self::connect).
    pub fn connect_client(name: &str) -> Result<Self, TransportError> {
        Self::connect_client_with_config(name, SharedMemoryConfig::default())
    }

    /// [`connect_client`](Self::connect_client) with a configuration (the ring sizes are the
    /// server's; the client's spin budget, timeout and maximum frame apply — a frame above its
    /// maximum is refused even if the server's is larger).
    pub fn connect_client_with_config(
        name: &str,
        config: SharedMemoryConfig,
    ) -> Result<Self, TransportError> {
        let conn = ShmConnection::connect(name, ShmConfig::from(&config)).map_err(map_err)?;
        Ok(Self::ready(conn, config, format!("shm:{name}")))
    }

    /// Connects to service `name` without blocking the runtime.
    pub async fn connect(name: &str, config: SharedMemoryConfig) -> Result<Self, TransportError> {
        let conn = connect_async(name, ShmConfig::from(&config)).await?;
        Ok(Self::ready(conn, config, format!("shm:{name}")))
    }

    async fn conn(&self) -> Result<&Connected, TransportError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(TransportError::ConnectionClosed);
        }
        self.conn
            .get_or_try_init(|| async {
                match &self.role {
                    Role::Server(l) => Ok(Connected::new(l.accept().await?)),
                    Role::Ready => Err(TransportError::NotConnected),
                }
            })
            .await
    }

    /// Puts one frame into the ring, waiting for room as the wait policy says (see the module
    /// documentation).
    async fn push(
        &self,
        c: &Connected,
        sender: &mut ShmSender,
        frame: &[u8],
    ) -> Result<(), TransportError> {
        let mut backoff: Option<Backoff<'_>> = None;
        // Bytes of `frame` in the ring so far (a frame larger than half the ring goes in pieces).
        let mut sent = 0;
        loop {
            match sender.try_send_from(frame, &mut sent) {
                Ok(()) => {
                    if let Some(b) = &mut backoff {
                        b.ready();
                    }
                    self.stats.sent(1, frame.len());
                    return Ok(());
                }
                Err(ShmError::Full) => {}
                Err(e) => return Err(self.stats.send_error(map_err(e))),
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(TransportError::ConnectionClosed);
            }
            match backoff
                .get_or_insert_with(|| c.send_waiter.backoff().in_runtime())
                .step()
            {
                WaitStep::Spin => std::hint::spin_loop(),
                WaitStep::Yield => tokio::task::yield_now().await,
                WaitStep::Sleep => {
                    let guard = c
                        .send_waiter
                        .prepare_sleep(frame.len() - sent)
                        .map_err(|e| self.stats.send_error(map_err(e)))?;
                    if let Some(_announced) = guard {
                        let r = c.reactor().await?;
                        self.sleep(&r.send_bell, &r.peer, || c.send_waiter.check_peer())
                            .await
                            .map_err(|e| self.stats.send_error(e))?;
                    }
                }
            }
        }
    }

    /// Sleeps in the reactor until `bell` rings, the peer is gone, or the transport is closed.
    /// Called with an announced sleep (its guard lives across the call). A ring is drained
    /// before returning; a socket wake-up that was not the peer's death (stray bytes) is
    /// cleared.
    async fn sleep(
        &self,
        bell: &AsyncFd<Doorbell>,
        peer: &AsyncFd<PeerFd>,
        check_peer: impl Fn() -> Result<(), ShmError>,
    ) -> Result<(), TransportError> {
        let io = |e: std::io::Error| TransportError::ConnectionFailed(e.to_string());
        let closed = self.close_notify.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if self.closed.load(Ordering::Acquire) {
            return Err(TransportError::ConnectionClosed);
        }
        tokio::select! {
            biased;
            ready = bell.readable() => {
                let mut ready = ready.map_err(io)?;
                bell.get_ref().drain().map_err(map_err)?;
                ready.clear_ready();
            }
            ready = peer.readable() => {
                let mut ready = ready.map_err(io)?;
                check_peer().map_err(map_err)?;
                ready.clear_ready();
            }
            () = &mut closed => return Err(TransportError::ConnectionClosed),
        }
        Ok(())
    }
}

impl FrameTransport for SharedMemoryFrameTransport {
    async fn send_frame(&self, frame: &[u8]) -> Result<(), TransportError> {
        let c = self.conn().await?;
        check_len(frame.len(), c.max_frame_size)?;
        let mut tx = c.tx.lock().await;
        self.push(c, &mut tx.sender, frame).await
    }

    async fn send_frame_with<F, E>(&self, encode: F) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        let c = self.conn().await?;
        let mut tx = c.tx.lock().await;
        let TxState { sender, scratch } = &mut *tx;
        scratch.clear();
        let res = match encode(scratch) {
            Ok(()) => match check_prefixed(scratch, c.max_frame_size) {
                Ok(_) => Ok(self.push(c, sender, &scratch[FRAME_PREFIX_LEN..]).await?),
                Err(e) => Err(e.into()),
            },
            Err(e) => Err(e),
        };
        release_scratch(scratch);
        res
    }

    async fn send_batch_with<F, E>(&self, encode: F) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        let c = self.conn().await?;
        let mut tx = c.tx.lock().await;
        let TxState { sender, scratch } = &mut *tx;
        scratch.clear();
        let res = async {
            encode(scratch)?;
            check_prefixed_batch(scratch, c.max_frame_size)?;
            for frame in batch_frames(scratch) {
                self.push(c, sender, frame).await?;
            }
            Ok(())
        }
        .await;
        release_scratch(scratch);
        res
    }

    async fn recv_frame(&self) -> Result<Bytes, TransportError> {
        let c = self.conn().await?;
        let mut rx = c.rx.lock().await;
        let mut backoff: Option<Backoff<'_>> = None;
        loop {
            match rx.try_recv_bytes() {
                Ok(Some(frame)) => {
                    if let Some(b) = &mut backoff {
                        b.ready();
                    }
                    self.stats.received(frame.len());
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => return Err(self.stats.recv_error(map_err(e))),
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(TransportError::ConnectionClosed);
            }
            match backoff
                .get_or_insert_with(|| c.recv_waiter.backoff().in_runtime())
                .step()
            {
                WaitStep::Spin => std::hint::spin_loop(),
                WaitStep::Yield => tokio::task::yield_now().await,
                WaitStep::Sleep => {
                    let guard = c
                        .recv_waiter
                        .prepare_sleep()
                        .map_err(|e| self.stats.recv_error(map_err(e)))?;
                    if let Some(_announced) = guard {
                        let r = c.reactor().await?;
                        self.sleep(&r.recv_bell, &r.peer, || c.recv_waiter.check_peer())
                            .await
                            .map_err(|e| self.stats.recv_error(e))?;
                    }
                }
            }
        }
    }

    fn is_connected(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
            && match self.conn.get() {
                // A sender busy in a send is taken as connected; the send reports otherwise.
                Some(c) => c.tx.try_lock().map_or(true, |t| t.sender.is_connected()),
                None => matches!(self.role, Role::Server(_)),
            }
    }

    async fn close(&self) -> Result<(), TransportError> {
        self.closed.store(true, Ordering::Release);
        self.close_notify.notify_waiters();
        Ok(())
    }

    fn stats(&self) -> Option<TransportStats> {
        Some(self.stats.snapshot())
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn max_frame_size(&self) -> usize {
        self.config.max_frame_size
    }
}

/// Accepts many shared-memory clients of one service, each on its own segment.
pub struct SharedMemoryFrameTransportListener {
    listener: AsyncListener,
    config: SharedMemoryConfig,
    name: String,
}

impl std::fmt::Debug for SharedMemoryFrameTransportListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemoryFrameTransportListener")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SharedMemoryFrameTransportListener {
    /// Listens as service `name`. Needs no runtime.
    pub fn bind(name: &str, config: SharedMemoryConfig) -> Result<Self, TransportError> {
        let listener = ShmListener::bind(name, ShmConfig::from(&config)).map_err(map_err)?;
        Ok(Self {
            listener: AsyncListener::new(listener),
            config,
            name: name.to_string(),
        })
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the next client.
    pub async fn accept(&self) -> Result<SharedMemoryFrameTransport, TransportError> {
        let conn = self.listener.accept().await?;
        Ok(SharedMemoryFrameTransport::ready(
            conn,
            self.config.clone(),
            format!("shm:{}", self.name),
        ))
    }
}
