//! Connections between processes: the rendezvous listener, the per-client
//! segment handshake, and the two halves of a connection with their blocking,
//! non-blocking and zero-copy operations.
//!
//! The server listens on the abstract-namespace Unix socket
//! `\0xrpc-shm/<name>` (nothing on disk, so a crashed server leaves nothing
//! behind that blocks a restart). For every client it accepts, it creates a
//! sealed memfd segment with two rings and passes it with `SCM_RIGHTS`. The
//! socket then stays open, idle, for the life of the connection: when either
//! process dies the kernel closes it, and the survivor's bounded futex sleeps
//! notice the hang-up (one zero-timeout `poll` per sleep slice, never a
//! system call while frames flow).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, Shutdown, SocketAddrUnix, SocketFlags,
    SocketType,
};

use crate::config::ShmConfig;
use crate::error::{Result, ShmError};
use crate::ring::{Consumer, Frame, Producer, Slot};
use crate::segment::{Geometry, MappedRing, RING_TO_CLIENT, RING_TO_SERVER, Segment};
use crate::storage::RingStorage;
use crate::sync::Ordering::{Acquire, Relaxed, SeqCst};
use crate::sync::{Arc, AtomicBool};
use crate::wait::{SpinGauge, WaitCfg, block_on};

/// First bytes the server sends, together with the segment fd.
const HELLO: &[u8; 8] = b"XRPCSHM1";

fn socket_addr(name: &str) -> Result<SocketAddrUnix> {
    if name.is_empty() || name.bytes().any(|b| b == 0) || name.len() > 90 {
        return Err(ShmError::InvalidConfig(format!(
            "service name {name:?} must be 1 to 90 bytes without NUL"
        )));
    }
    Ok(SocketAddrUnix::new_abstract_name(
        format!("xrpc-shm/{name}").as_bytes(),
    )?)
}

/// State shared by the two halves of a connection (and their waiters).
struct Shared {
    /// Keeps the mapping alive; the rings hold their own handles too.
    _segment: Segment,
    /// The rendezvous socket, kept open as the peer-death detector.
    sock: OwnedFd,
    /// Set once the peer is known gone or the memory known corrupt.
    dead: AtomicBool,
    /// Adaptive spin limits of waits for frames and for room.
    recv_spin: SpinGauge,
    send_spin: SpinGauge,
    config: ShmConfig,
}

impl Shared {
    /// Peer liveness: `Err(Disconnected)` once the socket reports hang-up.
    /// One non-blocking syscall; called only between sleep slices.
    fn alive(&self) -> Result<()> {
        if self.dead.load(Relaxed) {
            return Err(ShmError::Disconnected);
        }
        // A zero-timeout poll for hang-up: it consumes nothing, so stray bytes
        // from the peer cannot hide a later hang-up.
        let mut fds = [PollFd::new(&self.sock, PollFlags::RDHUP)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(0) => Ok(()),
            Ok(_) => {
                let gone = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL;
                if fds[0].revents().intersects(gone) {
                    self.kill();
                    Err(ShmError::Disconnected)
                } else {
                    Ok(())
                }
            }
            Err(e) if e == Errno::INTR => Ok(()),
            Err(e) => {
                self.kill();
                Err(e.into())
            }
        }
    }

    /// Declares the connection dead, and tells the peer by shutting the
    /// socket down.
    fn kill(&self) {
        if !self.dead.swap(true, SeqCst) {
            let _ = rustix::net::shutdown(&self.sock, Shutdown::Both);
        }
    }

    /// Error bookkeeping: a corruption kills the connection.
    fn check<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(ShmError::Corrupt(_)) = &r {
            self.kill();
        }
        r
    }

    fn wait_cfg<'a>(&self, gauge: &'a SpinGauge, deadline: Option<Instant>) -> WaitCfg<'a> {
        WaitCfg {
            spin: self.config.spin_budget,
            gauge: Some(gauge),
            slice: Some(self.config.wait_slice),
            deadline,
        }
    }
}

fn deadline_of(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// Builds both halves over a mapped segment.
fn halves(
    segment: Segment,
    sock: OwnedFd,
    config: ShmConfig,
    send_ring: usize,
    recv_ring: usize,
) -> Result<ShmConnection> {
    let Geometry { max_frame, .. } = segment.geometry();
    let producer = Producer::new(segment.ring(send_ring), max_frame)?;
    let consumer = Consumer::new(segment.ring(recv_ring), max_frame)?;
    let shared = Arc::new(Shared {
        _segment: segment,
        sock,
        dead: AtomicBool::new(false),
        recv_spin: SpinGauge::new(config.spin_budget),
        send_spin: SpinGauge::new(config.spin_budget),
        config,
    });
    Ok(ShmConnection {
        sender: ShmSender {
            producer,
            shared: shared.clone(),
        },
        receiver: ShmReceiver { consumer, shared },
    })
}

/// Listens for shared-memory clients of one named service.
///
/// ```no_run
/// use xrpc_shm::{ShmConfig, ShmListener};
///
/// let listener = ShmListener::bind("echo", ShmConfig::default())?;
/// loop {
///     let conn = listener.accept()?;
///     std::thread::spawn(move || {
///         let (mut tx, mut rx) = conn.split();
///         while let Ok(frame) = rx.recv(None) {
///             if tx.send(&frame, None).is_err() {
///                 break;
///             }
///         }
///     });
/// }
/// # Ok::<(), xrpc_shm::ShmError>(())
/// ```
pub struct ShmListener {
    sock: OwnedFd,
    name: String,
    config: ShmConfig,
}

impl ShmListener {
    /// Binds the abstract Unix socket `\0xrpc-shm/<name>`. Fails with an
    /// `Io` error (`AddrInUse`) while another live server holds the name; a
    /// crashed server leaves nothing behind.
    pub fn bind(name: &str, config: ShmConfig) -> Result<Self> {
        config.validate()?;
        let addr = socket_addr(name)?;
        let sock = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::bind(&sock, &addr)?;
        rustix::net::listen(&sock, 128)?;
        Ok(ShmListener {
            sock,
            name: name.to_owned(),
            config,
        })
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the next client and gives it its own segment. Clients that
    /// vanish during the handshake are skipped. In non-blocking mode (see
    /// [`ShmListener::set_nonblocking`]) returns an `Io` error of kind
    /// `WouldBlock` when no client is waiting.
    pub fn accept(&self) -> Result<ShmConnection> {
        loop {
            let sock = rustix::net::accept_with(&self.sock, SocketFlags::CLOEXEC)?;
            if !peer_is_trusted(&sock) {
                // Another user's process: it gets no segment, just a closed socket.
                continue;
            }
            match self.handshake(sock) {
                Ok(conn) => return Ok(conn),
                Err(ShmError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn handshake(&self, sock: OwnedFd) -> Result<ShmConnection> {
        let (segment, fd) = Segment::create(Geometry {
            capacity: self.config.ring_capacity,
            max_frame: self.config.max_frame_size,
        })?;
        send_fd(&sock, fd.as_fd())?;
        drop(fd);
        halves(
            segment,
            sock,
            self.config.clone(),
            RING_TO_CLIENT,
            RING_TO_SERVER,
        )
    }

    /// Switches `accept` between blocking and non-blocking, for an async
    /// adapter that polls the listener's fd ([`AsFd`]) for readability.
    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<()> {
        rustix::io::ioctl_fionbio(&self.sock, nonblocking)?;
        Ok(())
    }
}

impl AsFd for ShmListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Whether the process at the other end of a Unix socket runs as our effective user (or as
/// root): abstract socket names have no file permissions, so the kernel-reported credentials
/// (`SO_PEERCRED`) are what keeps other users out, in both directions.
fn peer_is_trusted(sock: &OwnedFd) -> bool {
    match rustix::net::sockopt::socket_peercred(sock) {
        Ok(cred) => cred.uid == rustix::process::geteuid() || cred.uid.is_root(),
        Err(_) => false,
    }
}

fn send_fd(sock: &OwnedFd, fd: BorrowedFd<'_>) -> Result<()> {
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(ShmError::Io(std::io::Error::other(
            "control buffer too small for one fd",
        )));
    }
    let n = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(HELLO)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if n != HELLO.len() {
        return Err(ShmError::Io(std::io::Error::other("short handshake write")));
    }
    Ok(())
}

fn recv_fd(sock: &OwnedFd) -> Result<OwnedFd> {
    let mut buf = [0u8; 16];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = match rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    ) {
        Ok(msg) => msg,
        Err(e) if e == Errno::AGAIN => return Err(ShmError::Timeout),
        Err(e) => return Err(e.into()),
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    if msg.bytes == 0 {
        return Err(ShmError::Disconnected);
    }
    if msg.bytes != HELLO.len() || buf[..HELLO.len()] != HELLO[..] {
        return Err(ShmError::Handshake(format!(
            "expected {HELLO:?}, got {:?}",
            &buf[..msg.bytes.min(buf.len())]
        )));
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() != 1 {
        return Err(ShmError::Handshake(format!(
            "expected exactly one segment fd, got {} (truncated: {})",
            fds.len(),
            msg.flags.contains(ReturnFlags::CTRUNC)
        )));
    }
    fds.pop()
        .ok_or_else(|| ShmError::Handshake("no segment fd".into()))
}

/// One shared-memory connection: a [`ShmSender`] and a [`ShmReceiver`] over
/// the two rings of one segment. Use it whole, or [`ShmConnection::split`] it
/// to give each half its own thread.
pub struct ShmConnection {
    sender: ShmSender,
    receiver: ShmReceiver,
}

impl ShmConnection {
    /// Connects to the server bound to `name` and maps the segment it hands
    /// out, after validating it. The server decides the ring geometry;
    /// `config` gives this side's waiting parameters and handshake timeout.
    /// With no server, fails with an `Io` error (`ConnectionRefused`).
    pub fn connect(name: &str, config: ShmConfig) -> Result<Self> {
        let addr = socket_addr(name)?;
        let sock = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::net::connect(&sock, &addr)?;
        if !peer_is_trusted(&sock) {
            // Abstract socket names are not protected by file permissions: a process of another
            // user may have taken the name. Do not talk to it.
            return Err(ShmError::Handshake(format!(
                "the process serving {name:?} belongs to another user"
            )));
        }
        rustix::net::sockopt::set_socket_timeout(
            &sock,
            rustix::net::sockopt::Timeout::Recv,
            Some(config.handshake_timeout.max(Duration::from_millis(1))),
        )?;
        let fd = recv_fd(&sock)?;
        let segment = Segment::open(fd)?;
        halves(segment, sock, config, RING_TO_SERVER, RING_TO_CLIENT)
    }

    /// Splits into the two halves; each is `Send`.
    pub fn split(self) -> (ShmSender, ShmReceiver) {
        (self.sender, self.receiver)
    }

    /// The sending half.
    pub fn sender(&mut self) -> &mut ShmSender {
        &mut self.sender
    }

    /// The receiving half.
    pub fn receiver(&mut self) -> &mut ShmReceiver {
        &mut self.receiver
    }

    /// Same as [`ShmSender::send`].
    pub fn send(&mut self, frame: &[u8], timeout: Option<Duration>) -> Result<()> {
        self.sender.send(frame, timeout)
    }

    /// Same as [`ShmReceiver::recv_bytes`].
    pub fn recv_bytes(&mut self, timeout: Option<Duration>) -> Result<Bytes> {
        self.receiver.recv_bytes(timeout)
    }

    /// Largest frame either direction carries.
    pub fn max_frame_size(&self) -> usize {
        self.sender.max_frame_size()
    }
}

/// The sending half of a connection. Dropping it closes this direction
/// (the peer drains what was sent, then sees `Disconnected`).
pub struct ShmSender {
    producer: Producer<MappedRing>,
    shared: Arc<Shared>,
}

impl ShmSender {
    /// Copies `frame` into the ring without blocking. `Err(Full)` when there
    /// is no room now; `Err(FrameTooLarge)` when it can never fit.
    #[inline]
    pub fn try_send(&mut self, frame: &[u8]) -> Result<()> {
        let r = self.producer.try_send(frame);
        if let Err(ShmError::Corrupt(_)) = &r {
            self.shared.kill();
        }
        r
    }

    /// Reserves room for a `len`-byte frame to be written in place (no
    /// copy); publish it with [`SendSlot::commit`]. `Err(Full)` when there is
    /// no room now.
    #[inline]
    pub fn try_reserve(&mut self, len: usize) -> Result<SendSlot<'_>> {
        match self.producer.try_reserve(len) {
            Ok(slot) => Ok(SendSlot(slot)),
            Err(e) => self.shared.check(Err(e)),
        }
    }

    /// Copies `frame` into the ring, waiting for room at most `timeout`
    /// (`None`: as long as the peer lives). `Err(Timeout)` at the deadline,
    /// `Err(Disconnected)` when the peer closes or dies.
    pub fn send(&mut self, frame: &[u8], timeout: Option<Duration>) -> Result<()> {
        match self.try_send(frame) {
            Err(ShmError::Full) => {}
            done => return done,
        }
        self.wait_room(frame.len(), timeout)?;
        self.try_send(frame)
    }

    /// [`ShmSender::try_reserve`], waiting for room at most `timeout`.
    pub fn reserve(&mut self, len: usize, timeout: Option<Duration>) -> Result<SendSlot<'_>> {
        self.wait_room(len, timeout)?;
        self.try_reserve(len)
    }

    /// Returns once a `len`-byte frame fits (or with the error that
    /// `try_reserve` would give).
    fn wait_room(&mut self, len: usize, timeout: Option<Duration>) -> Result<()> {
        let mut deadline = None;
        loop {
            match self.producer.try_reserve(len) {
                Ok(_unused_slot) => return Ok(()),
                Err(ShmError::Full) => {}
                Err(e) => return self.shared.check(Err(e)),
            }
            let deadline = *deadline.get_or_insert_with(|| deadline_of(timeout));
            let shared = &*self.shared;
            let cfg = shared.wait_cfg(&shared.send_spin, deadline);
            if !self
                .producer
                .wait_writable(len, &cfg, &mut || shared.alive())?
            {
                return Err(ShmError::Timeout);
            }
        }
    }

    /// Largest frame this direction carries.
    pub fn max_frame_size(&self) -> usize {
        self.producer.max_frame()
    }

    /// A handle that waits for room from another thread (see
    /// [`SendWaiter`]).
    pub fn waiter(&self) -> SendWaiter {
        SendWaiter {
            ring: self.producer.storage().clone(),
            shared: self.shared.clone(),
        }
    }

    /// Whether the connection is still believed alive (no syscall: it only
    /// reports what earlier operations found).
    pub fn is_connected(&self) -> bool {
        !self.shared.dead.load(Relaxed)
    }
}

impl Drop for ShmSender {
    fn drop(&mut self) {
        self.producer.close();
    }
}

/// Room for one frame in the ring, written in place; dereferences to the
/// frame's bytes. [`SendSlot::commit`] publishes it; dropping it publishes
/// nothing.
pub struct SendSlot<'a>(Slot<'a, MappedRing>);

impl SendSlot<'_> {
    /// Publishes the frame and wakes the peer if it sleeps.
    #[inline]
    pub fn commit(self) {
        self.0.commit();
    }
}

impl Deref for SendSlot<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for SendSlot<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// The receiving half of a connection. Dropping it closes this direction
/// (the peer's sends fail with `Disconnected`).
pub struct ShmReceiver {
    consumer: Consumer<MappedRing>,
    shared: Arc<Shared>,
}

impl ShmReceiver {
    /// Borrows the next frame in place (zero-copy) without blocking;
    /// `Ok(None)` when none is there. Dropping the [`FrameRef`] frees its
    /// room. After the peer closed, the remaining frames come first, then
    /// `Err(Disconnected)`.
    #[inline]
    pub fn try_recv(&mut self) -> Result<Option<FrameRef<'_>>> {
        match self.consumer.next_frame() {
            Ok(Some(at)) => Ok(Some(FrameRef(self.consumer.frame(at)))),
            Ok(None) => Ok(None),
            Err(e) => self.shared.check(Err(e)),
        }
    }

    /// Borrows the next frame, waiting at most `timeout` (`None`: as long as
    /// the peer lives). `Err(Timeout)` at the deadline, `Err(Disconnected)`
    /// when the peer closed (after the last frame) or died.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<FrameRef<'_>> {
        let mut deadline = None;
        loop {
            match self.consumer.next_frame() {
                Ok(Some(at)) => return Ok(FrameRef(self.consumer.frame(at))),
                Ok(None) => {}
                Err(e) => return self.shared.check(Err(e)),
            }
            let deadline = *deadline.get_or_insert_with(|| deadline_of(timeout));
            let shared = &*self.shared;
            let cfg = shared.wait_cfg(&shared.recv_spin, deadline);
            if !self.consumer.wait_readable(&cfg, &mut || shared.alive())? {
                return Err(ShmError::Timeout);
            }
        }
    }

    /// Copies the next frame out without blocking.
    #[inline]
    pub fn try_recv_bytes(&mut self) -> Result<Option<Bytes>> {
        Ok(self.try_recv()?.map(|f| Bytes::copy_from_slice(&f)))
    }

    /// Copies the next frame out, waiting at most `timeout`.
    pub fn recv_bytes(&mut self, timeout: Option<Duration>) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(&self.recv(timeout)?))
    }

    /// Copies the next frame into `buf` (replacing its contents), waiting at
    /// most `timeout`; reuses `buf`'s allocation.
    pub fn recv_into(&mut self, buf: &mut Vec<u8>, timeout: Option<Duration>) -> Result<()> {
        let frame = self.recv(timeout)?;
        buf.clear();
        buf.extend_from_slice(&frame);
        Ok(())
    }

    /// Largest frame this direction carries.
    pub fn max_frame_size(&self) -> usize {
        self.consumer.max_frame()
    }

    /// A handle that waits for frames from another thread (see
    /// [`RecvWaiter`]).
    pub fn waiter(&self) -> RecvWaiter {
        RecvWaiter {
            ring: self.consumer.storage().clone(),
            shared: self.shared.clone(),
        }
    }

    /// Whether the connection is still believed alive (no syscall).
    pub fn is_connected(&self) -> bool {
        !self.shared.dead.load(Relaxed)
    }
}

impl Drop for ShmReceiver {
    fn drop(&mut self) {
        self.consumer.close();
    }
}

/// A frame borrowed in place from the receive ring; dereferences to its
/// bytes. Dropping it (or [`FrameRef::release`]) frees its room.
///
/// The bytes live in memory the peer can write: a hostile peer may change
/// them while they are borrowed. Parse them as untrusted input (copy first if
/// a check must hold until use).
pub struct FrameRef<'a>(Frame<'a, MappedRing>);

impl FrameRef<'_> {
    /// Frees the frame's room (same as dropping it).
    #[inline]
    pub fn release(self) {}

    /// Copies the frame into a `Bytes`.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl Deref for FrameRef<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for FrameRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameRef")
            .field("len", &self.len())
            .finish()
    }
}

/// Waits, from any thread, until the receive ring has something for
/// [`ShmReceiver::try_recv`] — for an async adapter that keeps the receiver
/// on its task and parks the waiting on a helper thread. Never touches the
/// ring indices; may return `Ok(true)` spuriously (call `try_recv` again).
#[derive(Clone)]
pub struct RecvWaiter {
    ring: MappedRing,
    shared: Arc<Shared>,
}

impl RecvWaiter {
    /// Blocks until a frame (or the peer's close) is visible, `Ok(false)`
    /// after `timeout`, `Err(Disconnected)` when the peer died.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> Result<bool> {
        let hdr = self.ring.header();
        let ctl = &hdr.ctl.0;
        let shared = &*self.shared;
        block_on(
            &self.ring,
            &ctl.data_seq,
            &ctl.data_waiters,
            &shared.wait_cfg(&shared.recv_spin, deadline_of(timeout)),
            || {
                shared.dead.load(Relaxed)
                    || hdr.head.0.load(Acquire) != hdr.tail.0.load(Acquire)
                    || ctl.closed.load(Acquire) != 0
            },
            &mut || shared.alive(),
        )
    }
}

/// Waits, from any thread, until the send ring has room for a frame — the
/// send-side twin of [`RecvWaiter`]. May return `Ok(true)` spuriously.
#[derive(Clone)]
pub struct SendWaiter {
    ring: MappedRing,
    shared: Arc<Shared>,
}

impl SendWaiter {
    /// Blocks until a `len`-byte frame would fit (or the peer closed),
    /// `Ok(false)` after `timeout`, `Err(Disconnected)` when the peer died.
    pub fn wait_writable(&self, len: usize, timeout: Option<Duration>) -> Result<bool> {
        let hdr = self.ring.header();
        let ctl = &hdr.ctl.0;
        let shared = &*self.shared;
        let cap = self.ring.capacity() as u64;
        let rec = crate::layout::record_len(len) as u64;
        block_on(
            &self.ring,
            &ctl.space_seq,
            &ctl.space_waiters,
            &shared.wait_cfg(&shared.send_spin, deadline_of(timeout)),
            || {
                let head = hdr.head.0.load(Acquire);
                let used = head.wrapping_sub(hdr.tail.0.load(Acquire));
                // Padding up to the ring end first if the record does not fit
                // before it.
                let contig = cap - (head & (cap - 1));
                let need = if rec <= contig { rec } else { contig + rec };
                shared.dead.load(Relaxed)
                    || ctl.closed.load(Acquire) != 0
                    || used.saturating_add(need) <= cap
            },
            &mut || shared.alive(),
        )
    }
}
