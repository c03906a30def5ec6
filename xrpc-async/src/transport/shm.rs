//! Shared memory between processes on one machine, over [`xrpc_shm`] rings, on any
//! [`Reactor`].
//!
//! Each connection has its own sealed `memfd` segment holding two lock-free rings; the
//! rendezvous is an abstract Unix socket named after the service (see `xrpc_shm`). Frames are
//! copied once, into the ring, and once out of it.
//!
//! Waiting never blocks an executor thread and holds no thread: a receive (or a send into a
//! full ring) follows the wait policy of `xrpc_shm` ([`xrpc_shm::Backoff`]) — checks of the
//! ring, yielding to the executor between them (every [`Reactor::checks_per_yield`]th: 16 on
//! tokio, each on smol; on a runtime of threads, which runs one task per thread, the thread's
//! policy in place: [`Reactor::waits_in_place`]), for at most
//! [`SharedMemoryConfig::spin_budget`], so a busy peer is served with no system call at all —
//! and then sleeps in the reactor: it announces the sleep and waits for its doorbell (our end
//! of a socket on which the peer sends a byte after publishing; it also reads the end of the
//! stream when the peer dies).
//!
//! A peer that sends bytes the protocol does not call for only wakes its own connection's
//! sleeps (each wake-up drains the doorbell, checks the ring and goes back to sleep) — CPU,
//! never a hang or a wrong frame; no ring of ours ever waits on it (`MSG_DONTWAIT`). A frame
//! above this side's maximum (the server's may be larger than a client's) is skipped without
//! being buffered: its receive fails with [`TransportError::FrameSkipped`], which fails the one
//! message it carried, and the connection goes on.

use std::future::{Future, poll_fn};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::lock::Mutex;
use xrpc_proto::{PeerCredentials, SkippedFrame};
use xrpc_shm::{
    Backoff, Doorbell, RecvWaiter, SendWaiter, ShmConfig, ShmConnection, ShmConnector, ShmError,
    ShmListener, ShmReceiver, ShmSender, WaitStep,
};

use super::batch::{Behind, hand_out, report_skipped};
use super::{
    CheckEncoded, FrameTransport, StatsCounters, TransportError, TransportStats, batch_frames,
    check_len, check_one_prefixed, check_prefixed_batch,
};
use crate::reactor::{Reactor, Registration, Watched};
use crate::rpc::PeerGate;
use crate::signal::Signal;
use crate::time;

pub use xrpc_shm::SharedMemoryConfig;

/// A sender in a batch: its frames are published together when this is dropped (also when the
/// batch is abandoned half-way), or earlier as the ring fills.
struct Corked<'a>(&'a mut ShmSender);

impl<'a> Corked<'a> {
    fn new(sender: &'a mut ShmSender) -> Self {
        sender.cork();
        Self(sender)
    }
}

impl Drop for Corked<'_> {
    fn drop(&mut self) {
        self.0.uncork();
    }
}

fn map_err(e: ShmError) -> TransportError {
    match e {
        ShmError::Disconnected => TransportError::ConnectionClosed,
        ShmError::FrameTooLarge { size, max } => TransportError::MessageTooLarge { size, max },
        ShmError::Timeout => TransportError::Timeout,
        ShmError::Corrupt(m) => TransportError::Protocol(format!("shared memory corrupt: {m}")),
        ShmError::Io(e) => TransportError::ConnectionFailed(e.to_string()),
        e @ ShmError::NoServer(_) => TransportError::ConnectionFailed(e.to_string()),
        e @ ShmError::Refused { .. } => TransportError::PeerRefused(e.to_string()),
        other => TransportError::SharedMemoryCreation(other.to_string()),
    }
}

/// The core's form of credentials read by `xrpc_shm`.
fn credentials(p: &xrpc_shm::PeerCredentials) -> PeerCredentials {
    PeerCredentials::new(p.pid, p.uid, p.gid)
}

/// A failure to listen as service `name`, naming it: `bind shared-memory service "kv" failed:
/// Address already in use (os error 98)`.
fn bind_failed(name: &str, e: ShmError) -> TransportError {
    let what = format!("bind shared-memory service {name:?} failed");
    match map_err(e) {
        TransportError::ConnectionFailed(m) => {
            TransportError::ConnectionFailed(format!("{what}: {m}"))
        }
        TransportError::SharedMemoryCreation(m) => {
            TransportError::SharedMemoryCreation(format!("{what}: {m}"))
        }
        other => TransportError::ConnectionFailed(format!("{what}: {other}")),
    }
}

fn io_err(e: std::io::Error) -> TransportError {
    TransportError::ConnectionFailed(e.to_string())
}

/// Frames a receive takes in a row, without waiting, before it lets the other tasks of its
/// thread run once.
const FAIR_RECEIVES: usize = 32;

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

/// Registers `fd` (a handle that keeps its descriptor open) with the reactor for readability.
fn register<R: Reactor>(
    rt: &R,
    fd: impl AsFd + Send + Sync + 'static,
) -> Result<R::Registration, TransportError> {
    rt.register(Watched::new(fd)).map_err(io_err)
}

/// The value in `cell`, made by `make` if there is none yet (a value made by a racing caller
/// wins; ours is dropped).
fn get_or_try_init<T>(
    cell: &OnceLock<T>,
    make: impl FnOnce() -> Result<T, TransportError>,
) -> Result<&T, TransportError> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = make()?;
    Ok(cell.get_or_init(|| v))
}

/// Connects to service `name` with the handshake waiting in the reactor: no thread is blocked.
async fn connect_async<R: Reactor>(
    rt: &R,
    name: &str,
    config: ShmConfig,
) -> Result<ShmConnection, TransportError> {
    let deadline = rt.now() + config.handshake_timeout;
    let mut connector = loop {
        match ShmConnector::start(name, config.clone()) {
            Ok(c) => break c,
            // The server's accept backlog is full: try again shortly.
            Err(ShmError::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock && rt.now() < deadline =>
            {
                time::sleep(rt, Duration::from_millis(1)).await;
            }
            Err(e) => return Err(map_err(e)),
        }
    };
    let sock = register(rt, connector.socket())?;
    let finish = async {
        loop {
            match connector.try_finish() {
                Ok(Some(conn)) => return Ok(conn),
                Ok(None) => sock.readable().await.map_err(io_err)?,
                Err(e) => return Err(map_err(e)),
            }
        }
    };
    time::until(rt, &mut None, deadline, finish)
        .await
        .unwrap_or(Err(TransportError::Timeout))
}

/// The reactor registrations of a connection's sleepers, made at its first sleep. Each is
/// also readable when the peer is gone.
struct Sleepers<R: Reactor> {
    /// Rung by the peer after it publishes a frame while our receive sleeps.
    recv_bell: R::Registration,
    /// Rung by the peer after it frees room while our send sleeps.
    send_bell: R::Registration,
}

/// An [`ShmListener`] whose accepts wait for readiness on the reactor (the handshake itself is
/// one non-blocking `sendmsg`), so waiting for clients holds no thread.
struct AsyncListener<R: Reactor> {
    /// The listening socket, registered with the reactor on first accept (binding needs no
    /// executor).
    ready: OnceLock<R::Registration>,
    listener: ShmListener,
    /// The server's peer gate, once a server took the listener: who is admitted.
    gate: OnceLock<Arc<PeerGate>>,
    rt: R,
}

impl<R: Reactor> AsyncListener<R> {
    fn new(listener: ShmListener, rt: R) -> Self {
        Self {
            ready: OnceLock::new(),
            listener,
            gate: OnceLock::new(),
            rt,
        }
    }

    async fn accept(&self) -> Result<ShmConnection, TransportError> {
        let ready = get_or_try_init(&self.ready, || {
            self.listener.set_nonblocking(true).map_err(map_err)?;
            // A duplicate: the listener itself stays with `self` for `accept`.
            let dup: OwnedFd = self.listener.as_fd().try_clone_to_owned().map_err(io_err)?;
            register(&self.rt, dup)
        })?;
        loop {
            // Decided before a segment is made: a refused client reads the refusal in the
            // handshake. With no list, only our own user and root (no file permissions guard
            // the rendezvous socket).
            let admit = |raw: Option<&xrpc_shm::PeerCredentials>| {
                let own = raw.is_some_and(xrpc_shm::is_own_user_or_root);
                match self.gate.get() {
                    Some(gate) => gate
                        .check_or(raw.map(credentials).as_ref(), |_| own)
                        .is_ok(),
                    None => own,
                }
            };
            match self.listener.accept_admitting(admit) {
                Ok(conn) => return Ok(conn),
                Err(ShmError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    ready.readable().await.map_err(io_err)?;
                }
                Err(e) => return Err(map_err(e)),
            }
        }
    }
}

struct Connected<R: Reactor> {
    /// Held for a whole send, so frames of concurrent senders never interleave.
    tx: Mutex<TxState>,
    rx: Mutex<RxState>,
    send_waiter: SendWaiter,
    recv_waiter: RecvWaiter,
    sleepers: OnceLock<Sleepers<R>>,
    max_frame_size: usize,
    /// Who is at the other end of the rendezvous socket.
    peer: Option<PeerCredentials>,
}

struct TxState {
    sender: ShmSender,
    /// Reused buffer for [`FrameTransport::send_frame_with`].
    scratch: BytesMut,
}

/// The frame `receiver` skipped (`size` bytes over the maximum `max`), as the session is told.
fn skipped_frame(receiver: &ShmReceiver, size: usize, max: usize) -> SkippedFrame {
    SkippedFrame {
        len: size,
        max,
        head: Bytes::copy_from_slice(receiver.skipped_head()),
    }
}

struct RxState {
    receiver: ShmReceiver,
    /// A frame skipped (over the maximum) behind frames a receive already took: the next
    /// receive reports it.
    skipped: Option<SkippedFrame>,
}

impl<R: Reactor> Connected<R> {
    fn new(conn: ShmConnection) -> Self {
        let max_frame_size = conn.max_frame_size();
        let peer = conn.peer_credentials().as_ref().map(credentials);
        let (sender, receiver) = conn.split();
        Self {
            send_waiter: sender.waiter(),
            recv_waiter: receiver.waiter(),
            tx: Mutex::new(TxState {
                sender,
                scratch: BytesMut::new(),
            }),
            rx: Mutex::new(RxState {
                receiver,
                skipped: None,
            }),
            sleepers: OnceLock::new(),
            max_frame_size,
            peer,
        }
    }

    fn sleepers(&self, rt: &R) -> Result<&Sleepers<R>, TransportError> {
        get_or_try_init(&self.sleepers, || {
            Ok(Sleepers {
                recv_bell: register(rt, self.recv_waiter.doorbell().clone())?,
                send_bell: register(rt, self.send_waiter.doorbell().clone())?,
            })
        })
    }
}

enum Role<R: Reactor> {
    /// `create_server`: the first client is accepted on first use (under the lock).
    Server(Mutex<AsyncListener<R>>),
    /// A client, or an accepted connection.
    Ready,
}

/// A frame transport over shared memory, on reactor `R`. Adapters name it for their reactor
/// (`xrpc_tokio::SharedMemoryFrameTransport`).
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
pub struct SharedMemoryFrameTransport<R: Reactor> {
    role: Role<R>,
    conn: OnceLock<Connected<R>>,
    config: SharedMemoryConfig,
    stats: StatsCounters,
    /// Bytes of a large frame received but not whole yet, as of the last receive.
    partial: AtomicUsize,
    /// Frames received in a row without waiting (see [`FAIR_RECEIVES`]).
    unwaited: AtomicUsize,
    /// Input is awaited: a receive spins a moment before it sleeps
    /// ([`FrameTransport::set_input_awaited`]).
    awaited: AtomicBool,
    /// Raised by `close`; wakes sleeping sends and receives.
    closed: Signal,
    name: String,
    /// The runtime whose reactor and timers it waits on.
    rt: R,
}

impl<R: Reactor> std::fmt::Debug for SharedMemoryFrameTransport<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemoryFrameTransport")
            .field("name", &self.name)
            .field("connected", &self.conn.get().is_some())
            .finish_non_exhaustive()
    }
}

/// Takes a waker back from a [`Signal`] when dropped.
struct Forget<'a>(&'a Signal, Option<Waker>);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Some(w) = &self.1 {
            self.0.forget(w);
        }
    }
}

/// Which way a wait goes: for frames to receive, or for room to send.
#[derive(Clone, Copy)]
enum Side {
    Recv,
    Send,
}

impl<R: Reactor> SharedMemoryFrameTransport<R> {
    fn new(
        role: Role<R>,
        conn: Option<ShmConnection>,
        config: SharedMemoryConfig,
        name: String,
        rt: R,
    ) -> Self {
        let cell = OnceLock::new();
        if let Some(conn) = conn {
            let _ = cell.set(Connected::new(conn));
        }
        Self {
            role,
            conn: cell,
            config,
            stats: StatsCounters::default(),
            partial: AtomicUsize::new(0),
            unwaited: AtomicUsize::new(0),
            awaited: AtomicBool::new(true),
            closed: Signal::default(),
            name,
            rt,
        }
    }

    /// Listens as service `name` and serves the first client that connects (accepted on first
    /// use, without blocking the caller). For many clients use
    /// [`SharedMemoryFrameTransportListener`]. Needs no executor.
    pub fn create_server(name: &str, config: SharedMemoryConfig) -> Result<Self, TransportError> {
        let listener =
            ShmListener::bind(name, ShmConfig::from(&config)).map_err(|e| bind_failed(name, e))?;
        let role = Role::Server(Mutex::new(AsyncListener::new(listener, R::default())));
        Ok(Self::new(
            role,
            None,
            config,
            format!("shm:{name}"),
            R::default(),
        ))
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
        Ok(Self::new(
            Role::Ready,
            Some(conn),
            config,
            format!("shm:{name}"),
            R::default(),
        ))
    }

    /// Connects to service `name` without blocking the executor.
    pub async fn connect(name: &str, config: SharedMemoryConfig) -> Result<Self, TransportError> {
        let rt = R::default();
        let conn = connect_async(&rt, name, ShmConfig::from(&config)).await?;
        Ok(Self::new(
            Role::Ready,
            Some(conn),
            config,
            format!("shm:{name}"),
            rt,
        ))
    }

    async fn conn(&self) -> Result<&Connected<R>, TransportError> {
        if self.closed.is_raised() {
            return Err(TransportError::ConnectionClosed);
        }
        if let Some(c) = self.conn.get() {
            return Ok(c);
        }
        let Role::Server(listener) = &self.role else {
            return Err(TransportError::NotConnected);
        };
        let listener = listener.lock().await;
        if let Some(c) = self.conn.get() {
            return Ok(c);
        }
        let c = Connected::new(listener.accept().await?);
        Ok(self.conn.get_or_init(|| c))
    }

    /// Waits for the ring to have a frame (`Recv`) or room (`Send`), as the wait policy says
    /// (see the module documentation); called after a `try_*` found nothing to do, with
    /// `retry` trying again: `Ok(value)` when done, `Err(len)` when not yet, `len` being the
    /// bytes of room a send still needs (as the first `len`). Returns the value.
    async fn wait<T>(
        &self,
        c: &Connected<R>,
        side: Side,
        mut len: usize,
        mut retry: impl FnMut() -> Result<Result<T, usize>, TransportError>,
    ) -> Result<T, TransportError> {
        // A wait for frames after a send that woke the peer spins longer (`RecvWaiter::backoff`).
        let mut backoff: Backoff<'_> = match side {
            Side::Recv => c.recv_waiter.backoff(),
            Side::Send => c.send_waiter.backoff(),
        };
        // A task alone on its thread waits as a thread does (busy checks, then `sched_yield`s,
        // all in place) for as long as nothing else wants it; on an executor, every retry
        // yields to it.
        let in_place = self.rt.waits_in_place();
        if !in_place {
            backoff = backoff
                .in_runtime()
                .checks_between_yields(self.rt.checks_per_yield());
            if self.rt.yield_gives_the_cpu_away() {
                backoff = backoff.yield_gives_the_cpu_away();
            }
        }
        // Whether this wait put its sleep off once while nobody awaited it (see below).
        let mut put_off = false;
        loop {
            if self.closed.is_raised() {
                return Err(TransportError::ConnectionClosed);
            }
            // A receive nobody awaits sleeps at once (spinning would only take the CPU of the
            // peer and of the caller's next call); it goes back to spinning when a call starts.
            let calm = matches!(side, Side::Recv) && !self.awaited.load(Ordering::Relaxed);
            let step = if calm {
                WaitStep::Sleep
            } else {
                backoff.step()
            };
            match step {
                // Woken meanwhile: the task runs what woke it, then this wait goes on.
                WaitStep::Spin | WaitStep::Yield if in_place && !self.rt.waits_in_place() => {
                    self.rt.yield_now().await
                }
                WaitStep::Spin => std::hint::spin_loop(),
                WaitStep::Yield if in_place => std::thread::yield_now(),
                WaitStep::Yield => self.rt.yield_now().await,
                // Where a resting task's yield is resumed late, a receive nobody awaits yields
                // once before it sleeps: a call that comes before the yield is resumed (a
                // blocking client calling in a loop) finds it awake, and the sleep, announced
                // in the ring and armed with the runtime, is saved.
                WaitStep::Sleep if calm && !put_off && self.rt.resumes_a_resting_yield_late() => {
                    put_off = true;
                    self.rt.yield_now().await
                }
                WaitStep::Sleep => {
                    let guard = match side {
                        Side::Recv => c.recv_waiter.prepare_sleep(),
                        Side::Send => c.send_waiter.prepare_sleep(len),
                    }
                    .map_err(map_err)?;
                    if let Some(_announced) = guard {
                        let s = c.sleepers(&self.rt)?;
                        let (bell, waiter_bell) = match side {
                            Side::Recv => (&s.recv_bell, c.recv_waiter.doorbell()),
                            Side::Send => (&s.send_bell, c.send_waiter.doorbell()),
                        };
                        self.sleep(bell, waiter_bell, calm).await?;
                    }
                }
            }
            match retry()? {
                Ok(v) => {
                    backoff.ready();
                    return Ok(v);
                }
                Err(more) => len = more,
            }
        }
    }

    /// Sleeps in the reactor until `bell` rings (then drains `doorbell`; at the end of its
    /// stream, the peer being gone, the next `prepare_sleep` reports it) or the transport is
    /// closed. Called with an announced sleep (its guard lives across the call).
    async fn sleep(
        &self,
        bell: &R::Registration,
        doorbell: &Doorbell,
        until_awaited: bool,
    ) -> Result<(), TransportError> {
        let mut rung = pin!(bell.readable());
        // The task's waker, left with the close signal while this sleep waits (taken back when
        // it ends or is dropped).
        let mut waiting = Forget(&self.closed, None);
        poll_fn(|cx| {
            if !waiting.1.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                waiting.1 = Some(cx.waker().clone());
            }
            if self.closed.poll_raised(cx).is_ready() {
                return Poll::Ready(Err(TransportError::ConnectionClosed));
            }
            if let Poll::Ready(r) = rung.as_mut().poll(cx) {
                r.map_err(io_err)?;
                return Poll::Ready(doorbell.drain().map_err(map_err));
            }
            // A call started meanwhile (its drive polls this): back to spinning for it.
            if until_awaited && self.awaited.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(()));
            }
            Poll::Pending
        })
        .await
    }

    /// Puts one frame into the ring, waiting for room.
    /// Sends what `encode` writes into the scratch buffer once `check` (given the buffer and
    /// the maximum frame size) accepts it. The frames are published at once (or as the ring
    /// fills): one store and wake-up check for all of them.
    async fn send_encoded<F, E>(&self, encode: F, check: CheckEncoded) -> Result<(), E>
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
            check(scratch, c.max_frame_size)?;
            let corked = Corked::new(sender);
            for frame in batch_frames(scratch) {
                self.push(c, &mut *corked.0, frame).await?;
            }
            Ok(())
        }
        .await;
        release_scratch(scratch);
        res
    }

    async fn push(
        &self,
        c: &Connected<R>,
        sender: &mut ShmSender,
        frame: &[u8],
    ) -> Result<(), TransportError> {
        // Bytes of `frame` in the ring so far (a frame larger than half the ring goes in pieces).
        let mut sent = 0;
        let mut try_send = || match sender.try_send_from(frame, &mut sent) {
            Ok(()) => Ok(Ok(())),
            Err(ShmError::Full) => Ok(Err(frame.len() - sent)),
            Err(e) => Err(map_err(e)),
        };
        let res = match try_send() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(len)) => self.wait(c, Side::Send, len, try_send).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => {
                self.stats.sent(1, frame.len());
                Ok(())
            }
            Err(e) => Err(self.stats.send_error(e)),
        }
    }
}

impl<R: Reactor> FrameTransport for SharedMemoryFrameTransport<R> {
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
        self.send_encoded(encode, check_one_prefixed).await
    }

    async fn send_batch_with<F, E>(&self, encode: F) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        self.send_encoded(encode, check_prefixed_batch).await
    }

    async fn recv_frame(&self) -> Result<Bytes, TransportError> {
        let mut frame = None;
        self.recv_frames_with(1, |f| frame = Some(f)).await?;
        frame.ok_or_else(|| TransportError::Protocol("no frame received".into()))
    }

    /// Waits for a frame as the wait policy says, then takes the frames already in the ring
    /// behind it, `max` in all at most, under one lock of the receiving half.
    async fn recv_frames_with<F>(&self, max: usize, mut each: F) -> Result<usize, TransportError>
    where
        F: FnMut(Bytes) + Send,
    {
        let c = self.conn().await?;
        // A receive that finds a frame never waits: a peer that keeps the ring full would keep
        // its reader's task running, and the other tasks of its thread (other connections,
        // timers) waiting. Every so many frames in a row, the task lets them run first, as
        // the socket types of a runtime do within their task budget.
        if self.unwaited.load(Ordering::Relaxed) >= FAIR_RECEIVES {
            self.unwaited.store(0, Ordering::Relaxed);
            self.rt.yield_now().await;
        }
        let mut rx = c.rx.lock().await;
        let RxState { receiver, skipped } = &mut *rx;
        report_skipped(skipped, &self.stats)?;
        let mut try_recv = || match receiver.try_recv_bytes() {
            Ok(Some(frame)) => Ok(Ok(frame)),
            Ok(None) => {
                // The session times a frame that stays partial (`frame_timeout`).
                self.partial
                    .store(receiver.partial_bytes(), Ordering::Relaxed);
                Ok(Err(0))
            }
            // Skipped without being buffered: the session fails the one message it carried.
            Err(ShmError::FrameTooLarge { size, max }) => Err(TransportError::FrameSkipped(
                skipped_frame(receiver, size, max),
            )),
            Err(e) => Err(map_err(e)),
        };
        let res = match try_recv() {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(_)) => {
                self.unwaited.store(0, Ordering::Relaxed);
                self.wait(c, Side::Recv, 0, try_recv).await
            }
            Err(e) => Err(e),
        };
        self.partial.store(0, Ordering::Relaxed);
        let frame = res.map_err(|e| self.stats.recv_error(e))?;
        // Frames already in the ring behind it (the end of the stream and corruption are
        // lasting: the next receive finds them again).
        let n = hand_out(
            frame,
            max,
            &self.stats,
            skipped,
            &mut each,
            || match receiver.try_recv_bytes() {
                Ok(Some(frame)) => Behind::Frame(frame),
                Err(ShmError::FrameTooLarge { size, max }) => {
                    Behind::Skipped(skipped_frame(receiver, size, max))
                }
                Ok(None) | Err(_) => Behind::Nothing,
            },
        );
        self.partial
            .store(receiver.partial_bytes(), Ordering::Relaxed);
        self.unwaited.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }

    fn set_input_awaited(&self, awaited: bool) {
        self.awaited.store(awaited, Ordering::Relaxed);
    }

    fn partial_frame(&self) -> usize {
        self.partial.load(Ordering::Relaxed)
    }

    fn peer_key(&self) -> xrpc_proto::PeerKey {
        super::uid_key(self.peer_credentials())
    }

    fn peer_credentials(&self) -> Option<PeerCredentials> {
        // The rendezvous socket's peer: who connected, or accepted.
        self.conn.get().and_then(|c| c.peer)
    }

    fn peer_info(&self) -> xrpc_proto::PeerInfo {
        // The service's name (from `shm:<name>`), and the peer process's credentials.
        let info = xrpc_proto::PeerInfo::new()
            .with_key(self.peer_key())
            .with_credentials(self.peer_credentials());
        match self.name.strip_prefix("shm:") {
            Some(service) => info.with_path(service),
            None => info,
        }
    }

    fn is_connected(&self) -> bool {
        !self.closed.is_raised()
            && match self.conn.get() {
                // A sender busy in a send is taken as connected; the send reports otherwise.
                Some(c) => c.tx.try_lock().is_none_or(|t| t.sender.is_connected()),
                None => matches!(self.role, Role::Server(_)),
            }
    }

    async fn close(&self) -> Result<(), TransportError> {
        self.closed.raise();
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
pub struct SharedMemoryFrameTransportListener<R: Reactor> {
    listener: AsyncListener<R>,
    config: SharedMemoryConfig,
    name: String,
    /// Its entry in the registry of this machine's services (`xrpc list`).
    _registration: Option<crate::registry::Registration>,
}

impl<R: Reactor> std::fmt::Debug for SharedMemoryFrameTransportListener<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemoryFrameTransportListener")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<R: Reactor> SharedMemoryFrameTransportListener<R> {
    /// Listens as service `name`. Needs no executor.
    pub fn bind(name: &str, config: SharedMemoryConfig) -> Result<Self, TransportError> {
        let listener =
            ShmListener::bind(name, ShmConfig::from(&config)).map_err(|e| bind_failed(name, e))?;
        Ok(Self {
            listener: AsyncListener::new(listener, R::default()),
            config,
            name: name.to_string(),
            _registration: crate::registry::register(&format!("shm:{name}")),
        })
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the next client.
    pub async fn accept(&self) -> Result<SharedMemoryFrameTransport<R>, TransportError> {
        let conn = self.listener.accept().await?;
        Ok(SharedMemoryFrameTransport::new(
            Role::Ready,
            Some(conn),
            self.config.clone(),
            format!("shm:{}", self.name),
            self.listener.rt.clone(),
        ))
    }
}

impl<R: Reactor> crate::rpc::FrameListener for SharedMemoryFrameTransportListener<R> {
    type Transport = SharedMemoryFrameTransport<R>;

    async fn accept(&self) -> Result<SharedMemoryFrameTransport<R>, TransportError> {
        SharedMemoryFrameTransportListener::accept(self).await
    }

    /// Refuses in the rendezvous handshake, before a segment is made.
    fn enforce_peer_gate(&self, gate: Arc<PeerGate>) -> bool {
        // A listener served by a second server keeps the first one's gate.
        let _ = self.listener.gate.set(gate);
        true
    }
}
