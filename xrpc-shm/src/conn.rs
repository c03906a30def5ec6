//! Connections between processes: the rendezvous listener, the per-client
//! segment handshake, and the two halves of a connection with their blocking,
//! non-blocking and zero-copy operations.
//!
//! The server listens on the abstract-namespace Unix socket
//! `\0xrpc-shm/<name>` (nothing on disk, so a crashed server leaves nothing
//! behind that blocks a restart). For every client it accepts, it creates a
//! sealed memfd segment with two rings and a second pair of connected Unix
//! sockets, and passes the segment and the client's end of that pair with
//! `SCM_RIGHTS`; the segment's descriptor is closed once it is mapped. Each
//! side then holds two sockets for the life of the connection, and they are
//! its doorbells: a side that publishes frames while its peer sleeps for them
//! sends one byte on the rendezvous socket (the *data* socket), a side that
//! frees room while its peer sleeps for it sends one byte on the other (the
//! *room* socket). Each side sends on its own end, with `MSG_DONTWAIT`: no
//! file flag the peer can change makes a ring wait. When either process dies
//! the kernel closes its ends: a survivor that sleeps on a futex notices the
//! hang-up between its bounded sleep slices (one zero-timeout `poll` per
//! slice, never a system call while frames flow); one that sleeps in a
//! reactor on its [`Doorbell`] is woken by it (the end of the stream).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, Shutdown, SocketAddrUnix, SocketFlags,
    SocketType,
};

#[cfg(any(test, feature = "test-util"))]
pub(crate) mod hostile;

use crate::config::ShmConfig;
use crate::error::{Result, ShmError};
use crate::ring::{Consumer, Found, Frame, Producer, RingWaiter, Slot};
use crate::segment::{Geometry, MappedRing, PeerBell, RING_TO_CLIENT, RING_TO_SERVER, Segment};
use crate::sync::Ordering::{Relaxed, SeqCst};
use crate::sync::{Arc, AtomicBool};
use crate::wait::{Backoff, SleepGuard, Sleeper, SpinGauge, WaitCfg};

/// First bytes the server sends, together with the segment fd and the
/// client's end of the room socket.
const HELLO: &[u8; 8] = b"XRPCSHM3";

/// Descriptors passed in the handshake: the segment, then the client's end of
/// the room socket.
const HANDSHAKE_FDS: usize = 2;

/// Bytes a [`Doorbell::drain`] reads at most: more than an honest peer ever leaves (it
/// rings only while we announced a sleep); a peer that sends more only wakes its own
/// connection's sleepers again.
const DRAIN_LIMIT: usize = 4096;

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
    /// The rendezvous socket: the data doorbells (each side's consumer sleeps on its end,
    /// the peer's producer rings it), and the peer-death detector.
    data_sock: Arc<OwnedFd>,
    /// The room doorbells (each side's producer sleeps on its end, the peer's consumer rings
    /// it); hangs up too when the peer dies.
    room_sock: Arc<OwnedFd>,
    /// Set once the peer is known gone or the memory known corrupt.
    dead: AtomicBool,
    /// Adaptive spin limits of waits for frames and for room.
    recv_spin: SpinGauge,
    send_spin: SpinGauge,
    config: ShmConfig,
}

impl Shared {
    /// Peer liveness: `Err(Disconnected)` once either socket reports hang-up.
    /// One non-blocking syscall; called only between sleep slices.
    fn alive(&self) -> Result<()> {
        if self.dead.load(Relaxed) {
            return Err(ShmError::Disconnected);
        }
        // A zero-timeout poll for hang-up: it consumes nothing, so doorbell bytes
        // from the peer cannot hide a later hang-up.
        let mut fds = [
            PollFd::new(&*self.data_sock, PollFlags::RDHUP),
            PollFd::new(&*self.room_sock, PollFlags::RDHUP),
        ];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(0) => Ok(()),
            Ok(_) => {
                let gone = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL;
                if fds.iter().any(|fd| fd.revents().intersects(gone)) {
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

    /// Declares the connection dead, and tells the peer by shutting both
    /// sockets down (which also wakes this side's reactor sleepers: their
    /// doorbells read the end of the stream).
    fn kill(&self) {
        if !self.dead.swap(true, SeqCst) {
            let _ = rustix::net::shutdown(&*self.data_sock, Shutdown::Both);
            let _ = rustix::net::shutdown(&*self.room_sock, Shutdown::Both);
        }
    }

    /// The socket of `bell` (our end).
    fn sock(&self, bell: Bell) -> &Arc<OwnedFd> {
        match bell {
            Bell::Data => &self.data_sock,
            Bell::Room => &self.room_sock,
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

/// Creates the room sockets of a connection: (ours, the client's).
fn room_pair() -> Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?)
}

/// Checks the room socket received from the server: a connected Unix stream socket, created
/// by a process of our user (or root). Whatever its file flags (which the server may share
/// and change), this side only ever uses it with `MSG_DONTWAIT`.
fn check_room_socket(fd: &OwnedFd) -> Result<()> {
    let bad = |m: String| ShmError::Handshake(format!("invalid room socket: {m}"));
    let domain = rustix::net::sockopt::socket_domain(fd).map_err(|e| bad(e.to_string()))?;
    let kind = rustix::net::sockopt::socket_type(fd).map_err(|e| bad(e.to_string()))?;
    if domain != AddressFamily::UNIX || kind != SocketType::STREAM {
        return Err(bad(format!(
            "{domain:?} {kind:?}, expected a Unix stream socket"
        )));
    }
    rustix::net::getpeername(fd).map_err(|e| bad(format!("not connected ({e})")))?;
    if !peer_is_trusted(fd) {
        return Err(bad("its other end belongs to another user".into()));
    }
    Ok(())
}

/// Builds both halves over a mapped segment and its two sockets.
fn halves(
    segment: Segment,
    data_sock: Arc<OwnedFd>,
    room_sock: OwnedFd,
    config: ShmConfig,
    send_ring: usize,
    recv_ring: usize,
) -> Result<ShmConnection> {
    // The segment's limit is the server's choice, up to 4 GiB: a client never sends, takes or
    // reassembles frames larger than its own configured maximum either. A frame from the
    // server within the segment's limit but above the client's is skipped (`FrameTooLarge`),
    // a frame above the segment's limit is corruption.
    let Geometry {
        max_frame: wire_max,
        ..
    } = segment.geometry();
    let max_frame = wire_max.min(config.max_frame_size);
    let room_sock = Arc::new(room_sock);
    // We ring the peer's consumer of the ring we send into on the data socket, and the
    // peer's producer of the ring we receive from on the room socket.
    let send_storage = segment.ring(send_ring).with_bell(PeerBell {
        who: Sleeper::Consumer,
        sock: data_sock.clone(),
    });
    let recv_storage = segment.ring(recv_ring).with_bell(PeerBell {
        who: Sleeper::Producer,
        sock: room_sock.clone(),
    });
    let producer = Producer::new(send_storage, max_frame)?;
    let consumer = Consumer::new(recv_storage, max_frame, wire_max)?;
    let shared = Arc::new(Shared {
        _segment: segment,
        data_sock,
        room_sock,
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
        receiver: ShmReceiver {
            consumer,
            copied: BytesMut::new(),
            shared,
        },
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
        let (room, client_room) = room_pair()?;
        send_fds(&sock, &[fd.as_fd(), client_room.as_fd()])?;
        drop((fd, client_room));
        // Our end of the rendezvous socket is ours alone (the client has its own end):
        // non-blocking for a reactor that watches it, though no call on it ever waits anyway.
        rustix::io::ioctl_fionbio(&sock, true)?;
        halves(
            segment,
            Arc::new(sock),
            room,
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

fn send_fds(sock: &OwnedFd, fds: &[BorrowedFd<'_>; HANDSHAKE_FDS]) -> Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(HANDSHAKE_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(ShmError::Io(std::io::Error::other(
            "control buffer too small for the handshake fds",
        )));
    }
    // A fresh socket always takes these 8 bytes; `MSG_DONTWAIT` all the same: no call on a
    // connection's sockets ever waits.
    let n = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(HELLO)],
        &mut control,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?;
    if n != HELLO.len() {
        return Err(ShmError::Io(std::io::Error::other("short handshake write")));
    }
    Ok(())
}

/// Receives the handshake: the segment fd and the room socket (checked).
fn recv_fds(sock: &OwnedFd) -> Result<(OwnedFd, OwnedFd)> {
    let mut buf = [0u8; 16];
    // Room for more than expected, so that extra fds are seen (and closed).
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(HANDSHAKE_FDS + 3))];
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
    if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() != HANDSHAKE_FDS {
        return Err(ShmError::Handshake(format!(
            "expected {HANDSHAKE_FDS} fds (segment and room socket), got {} (truncated: {})",
            fds.len(),
            msg.flags.contains(ReturnFlags::CTRUNC)
        )));
    }
    let mut fds = fds.into_iter();
    let (Some(segment), Some(room)) = (fds.next(), fds.next()) else {
        return Err(ShmError::Handshake("missing handshake fd".into()));
    };
    check_room_socket(&room)?;
    Ok((segment, room))
}

/// Connects a Unix stream socket to the server of `name` and checks that it
/// runs as our user.
fn connect_socket(name: &str, flags: SocketFlags) -> Result<OwnedFd> {
    let addr = socket_addr(name)?;
    let sock = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None)?;
    match rustix::net::connect(&sock, &addr) {
        Ok(()) => {}
        Err(e) if e == Errno::CONNREFUSED || e == Errno::NOENT => {
            return Err(ShmError::NoServer(name.to_string()));
        }
        Err(e) => return Err(e.into()),
    }
    if !peer_is_trusted(&sock) {
        // Abstract socket names are not protected by file permissions: a process of another
        // user may have taken the name. Do not talk to it.
        return Err(ShmError::Handshake(format!(
            "the process serving {name:?} belongs to another user"
        )));
    }
    Ok(sock)
}

/// A client handshake under way, for an adapter that waits in a reactor
/// rather than blocking a thread ([`ShmConnection::connect`] is the blocking
/// twin): [`ShmConnector::start`], then wait until
/// [`ShmConnector::socket`] is readable and call
/// [`ShmConnector::try_finish`], until it returns the connection.
pub struct ShmConnector {
    sock: Arc<OwnedFd>,
    finished: bool,
    config: ShmConfig,
}

impl ShmConnector {
    /// Connects to the server bound to `name` without blocking. With no
    /// server, fails with [`ShmError::NoServer`]; when the
    /// server's accept backlog is full, with an `Io` error of kind
    /// `WouldBlock` (try again later).
    pub fn start(name: &str, config: ShmConfig) -> Result<Self> {
        let sock = connect_socket(name, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)?;
        Ok(ShmConnector {
            sock: Arc::new(sock),
            finished: false,
            config,
        })
    }

    /// The rendezvous socket, readable when the server's segment arrived
    /// (or the server went away).
    pub fn socket(&self) -> PeerFd {
        PeerFd(self.sock.clone())
    }

    /// Takes the server's segment and room socket if they arrived: `Ok(None)`
    /// while they have not (wait for readability and call again).
    pub fn try_finish(&mut self) -> Result<Option<ShmConnection>> {
        if self.finished {
            return Err(ShmError::Handshake("handshake already finished".into()));
        }
        let (fd, room) = match recv_fds(&self.sock) {
            Ok(got) => got,
            Err(ShmError::Timeout) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.finished = true;
        let segment = Segment::open(fd)?;
        halves(
            segment,
            self.sock.clone(),
            room,
            self.config.clone(),
            RING_TO_SERVER,
            RING_TO_CLIENT,
        )
        .map(Some)
    }
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
    /// With no server, fails with [`ShmError::NoServer`].
    pub fn connect(name: &str, config: ShmConfig) -> Result<Self> {
        let sock = connect_socket(name, SocketFlags::CLOEXEC)?;
        rustix::net::sockopt::set_socket_timeout(
            &sock,
            rustix::net::sockopt::Timeout::Recv,
            Some(config.handshake_timeout.max(Duration::from_millis(1))),
        )?;
        let (fd, room) = recv_fds(&sock)?;
        let segment = Segment::open(fd)?;
        halves(
            segment,
            Arc::new(sock),
            room,
            config,
            RING_TO_SERVER,
            RING_TO_CLIENT,
        )
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
    /// is no room now; `Err(FrameTooLarge)` above the max frame size.
    ///
    /// A frame of at most [`ShmSender::max_piece`] bytes is sent whole or
    /// not at all; a larger one travels in pieces and may be sent in part
    /// before `Full` — the next send starts over and the peer drops the
    /// unfinished frame. Use [`ShmSender::try_send_from`] to go on instead.
    #[inline]
    pub fn try_send(&mut self, frame: &[u8]) -> Result<()> {
        let r = self.producer.try_send(frame);
        if let Err(ShmError::Corrupt(_)) = &r {
            self.shared.kill();
        }
        r
    }

    /// Copies `frame[*sent..]` into the ring without blocking, as much as
    /// fits, advancing `*sent`: `Ok(())` once the whole frame is sent,
    /// `Err(Full)` when the ring filled up first — wait for room
    /// ([`SendWaiter`]) and call again with the same frame and counter.
    /// Start each frame with `*sent == 0`.
    #[inline]
    pub fn try_send_from(&mut self, frame: &[u8], sent: &mut usize) -> Result<()> {
        let r = self.producer.try_send_from(frame, sent);
        if let Err(ShmError::Corrupt(_)) = &r {
            self.shared.kill();
        }
        r
    }

    /// Sends a batch: from now on the frames sent are published together by
    /// [`ShmSender::flush`] (or as soon as the ring is full), one shared store
    /// and wake-up check for the whole batch, until [`ShmSender::uncork`].
    /// A frame sent while corked is not seen by the peer until then.
    pub fn cork(&mut self) {
        self.producer.cork();
    }

    /// Publishes what was sent while corked and ends the batch.
    pub fn uncork(&mut self) {
        self.producer.uncork();
    }

    /// Publishes what was sent so far in a batch (see [`ShmSender::cork`]).
    pub fn flush(&mut self) {
        self.producer.flush();
    }

    /// Largest frame sent in one piece: half the ring less an 8-byte record
    /// header (or the max frame size, if smaller). The most
    /// [`ShmSender::try_reserve`] takes.
    pub fn max_piece(&self) -> usize {
        self.producer.max_piece()
    }

    /// Reserves room for a `len`-byte frame (at most
    /// [`ShmSender::max_piece`]) to be written in place (no copy); publish it
    /// with [`SendSlot::commit`]. `Err(Full)` when there is no room now.
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
        let mut sent = 0;
        let mut deadline = None;
        loop {
            match self.try_send_from(frame, &mut sent) {
                Err(ShmError::Full) => {}
                done => return done,
            }
            let deadline = *deadline.get_or_insert_with(|| deadline_of(timeout));
            self.wait_room(frame.len() - sent, deadline)?;
        }
    }

    /// [`ShmSender::try_reserve`], waiting for room at most `timeout`.
    pub fn reserve(&mut self, len: usize, timeout: Option<Duration>) -> Result<SendSlot<'_>> {
        let deadline = deadline_of(timeout);
        loop {
            match self.producer.try_reserve(len) {
                Ok(_unused_slot) => break,
                Err(ShmError::Full) => self.wait_room(len, deadline)?,
                Err(e) => return self.shared.check(Err(e)),
            }
        }
        self.try_reserve(len)
    }

    /// Waits until `len` more bytes of a frame (or the largest piece) fit.
    fn wait_room(&mut self, len: usize, deadline: Option<Instant>) -> Result<()> {
        let shared = &*self.shared;
        let cfg = shared.wait_cfg(&shared.send_spin, deadline);
        if !self
            .producer
            .wait_writable(len, &cfg, &mut || shared.alive())?
        {
            return Err(ShmError::Timeout);
        }
        Ok(())
    }

    /// Largest frame this direction carries.
    pub fn max_frame_size(&self) -> usize {
        self.producer.max_frame()
    }

    /// A handle that waits for room from another thread (see
    /// [`SendWaiter`]).
    pub fn waiter(&self) -> SendWaiter {
        SendWaiter {
            waiter: RingWaiter::new(self.producer.storage().clone(), Sleeper::Producer),
            bell: Doorbell {
                shared: self.shared.clone(),
                bell: Bell::Room,
            },
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
        self.producer.flush();
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

/// Size of the buffer a receiver copies small frames into.
const COPY_BUFFER_SIZE: usize = 16 * 1024;

/// The receiving half of a connection. Dropping it closes this direction
/// (the peer's sends fail with `Disconnected`).
pub struct ShmReceiver {
    consumer: Consumer<MappedRing>,
    /// Frames copied out by [`try_recv_bytes`](Self::try_recv_bytes) are cut from here: no
    /// allocation per frame once the frames cut before are dropped.
    copied: BytesMut,
    shared: Arc<Shared>,
}

impl ShmReceiver {
    /// Borrows the next frame in place (zero-copy) without blocking;
    /// `Ok(None)` when none is there. Dropping the [`FrameRef`] frees its
    /// room. A frame larger than one piece is reassembled on the way (its
    /// pieces are copied out as they come, so this makes progress even when
    /// it returns `None`) and is borrowed from the reassembly buffer. After
    /// the peer closed, the remaining frames come first, then
    /// `Err(Disconnected)`.
    ///
    /// A frame larger than [`ShmReceiver::max_frame_size`] (the peer's limit may be larger
    /// than ours) is skipped, its bytes released as they come and never buffered, and
    /// reported once it is gone as `Err(FrameTooLarge)`: an error of that frame alone — the
    /// connection goes on, the next receive returns the frame after it, and
    /// [`ShmReceiver::skipped_head`] holds the skipped frame's first bytes. Every receive
    /// below does the same.
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
        let at = self.wait_frame(timeout)?;
        Ok(FrameRef(self.consumer.frame(at)))
    }

    /// Waits for the next whole frame.
    fn wait_frame(&mut self, timeout: Option<Duration>) -> Result<Found> {
        let mut deadline = None;
        loop {
            match self.consumer.next_frame() {
                Ok(Some(at)) => return Ok(at),
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

    /// Copies the next frame out without blocking (a reassembled frame is
    /// handed over without a copy).
    #[inline]
    pub fn try_recv_bytes(&mut self) -> Result<Option<Bytes>> {
        match self.consumer.next_frame() {
            Ok(Some(at)) => Ok(Some(self.take_bytes(at))),
            Ok(None) => Ok(None),
            Err(e) => self.shared.check(Err(e)),
        }
    }

    /// Bytes received of a frame larger than the ring that is not whole
    /// yet, reassembled or skipped (0 when none is under way): a peer that stops mid-frame
    /// holds them.
    pub fn partial_bytes(&self) -> usize {
        self.consumer.partial_bytes()
    }

    /// The first bytes (at most 64: the message header) of the frame skipped last: after a
    /// receive returned `Err(FrameTooLarge)`, they tell which message it was. Written by the
    /// peer: parse them as untrusted input.
    pub fn skipped_head(&self) -> &[u8] {
        self.consumer.skipped_head()
    }

    /// Copies the next frame out, waiting at most `timeout` (a reassembled
    /// frame is handed over without a copy).
    pub fn recv_bytes(&mut self, timeout: Option<Duration>) -> Result<Bytes> {
        let at = self.wait_frame(timeout)?;
        Ok(self.take_bytes(at))
    }

    #[inline]
    fn take_bytes(&mut self, at: Found) -> Bytes {
        match at {
            Found::Assembled => Bytes::from(self.consumer.take_assembled()),
            at => {
                let frame = self.consumer.frame(at);
                // Reclaims the whole buffer when every frame cut from it is gone.
                self.copied.reserve(frame.len().max(COPY_BUFFER_SIZE / 2));
                self.copied.extend_from_slice(&frame);
                drop(frame);
                self.copied.split().freeze()
            }
        }
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
            waiter: RingWaiter::new(self.consumer.storage().clone(), Sleeper::Consumer),
            bell: Doorbell {
                shared: self.shared.clone(),
                bell: Bell::Data,
            },
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

/// Which of a connection's two sockets.
#[derive(Clone, Copy, Debug)]
enum Bell {
    /// The rendezvous socket, our consumer's doorbell.
    Data,
    /// The room socket, our producer's doorbell.
    Room,
}

/// The doorbell of one waiting side: our end of a socket on which the peer sends a byte
/// after publishing (frames, or room), whenever this side announced a sleep
/// ([`RecvWaiter::prepare_sleep`], [`SendWaiter::prepare_sleep`]). A reactor watches it for
/// readability; after waking, [`Doorbell::drain`] it. It also becomes readable (the end of
/// the stream) when the peer process dies or drops the connection, or when this side finds
/// the connection broken. Cloning shares the descriptor, which stays open while any clone
/// lives (so it can be registered with a reactor by value).
#[derive(Clone)]
pub struct Doorbell {
    shared: Arc<Shared>,
    bell: Bell,
}

impl Doorbell {
    /// Reads what the peer sent (at most 4 KiB), so that the doorbell is readable again only
    /// after the next ring. Never waits (`MSG_DONTWAIT`, whatever the descriptor's flags). At
    /// the end of the stream (the peer is gone) the connection is marked dead: the frames
    /// already in the ring are still received, then the next `prepare_sleep` (or receive)
    /// reports `Disconnected`.
    pub fn drain(&self) -> Result<()> {
        let sock = self.shared.sock(self.bell);
        let mut buf = [0u8; 256];
        let mut read = 0;
        while read < DRAIN_LIMIT {
            match rustix::net::recv(&**sock, &mut buf, RecvFlags::DONTWAIT) {
                Ok((0, _)) => {
                    self.shared.kill();
                    return Ok(());
                }
                Ok((n, _)) => read += n,
                Err(e) if e == Errno::AGAIN || e == Errno::INTR => return Ok(()),
                Err(e) if e == Errno::CONNRESET => {
                    self.shared.kill();
                    return Ok(());
                }
                Err(e) => {
                    self.shared.kill();
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Doorbell")
            .field(&self.bell)
            .field(&self.as_raw_fd())
            .finish()
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.sock(self.bell).as_fd()
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> RawFd {
        self.shared.sock(self.bell).as_raw_fd()
    }
}

/// The rendezvous socket of a client handshake under way ([`ShmConnector::socket`]), for a
/// reactor to watch: readable when the server's segment arrived (or the server went away).
/// Cloning shares the descriptor.
#[derive(Clone, Debug)]
pub struct PeerFd(Arc<OwnedFd>);

impl AsFd for PeerFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for PeerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Waits until the receive ring has something for
/// [`ShmReceiver::try_recv`], for an adapter that keeps the receiver on its
/// task or thread. Never touches the ring indices; may report readiness
/// spuriously (call `try_recv` again).
///
/// Two ways to wait, with one policy ([`Backoff`]):
///
/// * blocking: [`RecvWaiter::wait_readable`] spins, yields, then sleeps on
///   the futex (in bounded slices, checking the peer between them);
/// * in a reactor: run [`RecvWaiter::backoff`]'s steps around `try_recv`;
///   at [`WaitStep::Sleep`](crate::WaitStep::Sleep) call
///   [`RecvWaiter::prepare_sleep`]. `Ok(None)`: try again. A guard: wait until
///   [`RecvWaiter::doorbell`] is readable, drain it, drop the guard, and try
///   again (a dead peer is reported by the next `prepare_sleep`).
#[derive(Clone)]
pub struct RecvWaiter {
    waiter: RingWaiter<MappedRing>,
    bell: Doorbell,
    shared: Arc<Shared>,
}

impl RecvWaiter {
    /// Blocks until a frame (or the peer's close) is visible, `Ok(false)`
    /// after `timeout`, `Err(Disconnected)` when the peer died.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> Result<bool> {
        let shared = &*self.shared;
        self.waiter.block(
            0,
            &shared.wait_cfg(&shared.recv_spin, deadline_of(timeout)),
            || shared.dead.load(Relaxed),
            &mut || shared.alive(),
        )
    }

    /// The wait policy for one wait for frames (this side's spin budget,
    /// adapted to how often spinning paid lately).
    pub fn backoff(&self) -> Backoff<'_> {
        Backoff::new(self.shared.config.spin_budget, Some(&self.shared.recv_spin))
    }

    /// Announces that this side sleeps until a frame comes, and re-checks.
    /// `Ok(None)`: a frame (or the peer's close) is visible now — call
    /// `try_recv`. `Ok(Some(guard))`: while the guard lives, the peer rings
    /// [`RecvWaiter::doorbell`] after it publishes. `Err(Disconnected)`: the
    /// peer is known to be gone.
    pub fn prepare_sleep(&self) -> Result<Option<SleepGuard<'_>>> {
        if self.shared.dead.load(Relaxed) {
            return Err(ShmError::Disconnected);
        }
        Ok(self.waiter.prepare_sleep(0))
    }

    /// The doorbell this side sleeps on while its ring is empty.
    pub fn doorbell(&self) -> &Doorbell {
        &self.bell
    }

    /// Peer liveness: `Err(Disconnected)` once the peer is gone (one
    /// zero-timeout `poll` of the rendezvous socket).
    pub fn check_peer(&self) -> Result<()> {
        self.shared.alive()
    }
}

/// Waits until the send ring has room for a frame — the send-side twin of
/// [`RecvWaiter`], used the same two ways. May report readiness spuriously.
#[derive(Clone)]
pub struct SendWaiter {
    waiter: RingWaiter<MappedRing>,
    bell: Doorbell,
    shared: Arc<Shared>,
}

impl SendWaiter {
    /// Blocks until a `len`-byte frame would fit (or the peer closed),
    /// `Ok(false)` after `timeout`, `Err(Disconnected)` when the peer died.
    pub fn wait_writable(&self, len: usize, timeout: Option<Duration>) -> Result<bool> {
        let shared = &*self.shared;
        self.waiter.block(
            len,
            &shared.wait_cfg(&shared.send_spin, deadline_of(timeout)),
            || shared.dead.load(Relaxed),
            &mut || shared.alive(),
        )
    }

    /// The wait policy for one wait for room.
    pub fn backoff(&self) -> Backoff<'_> {
        Backoff::new(self.shared.config.spin_budget, Some(&self.shared.send_spin))
    }

    /// Announces that this side sleeps until a `len`-byte frame fits, and
    /// re-checks. `Ok(None)`: it fits (or the ring closed) — call
    /// `try_send`. `Ok(Some(guard))`: while the guard lives, the peer rings
    /// [`SendWaiter::doorbell`] after it frees room. `Err(Disconnected)`:
    /// the peer is known to be gone.
    pub fn prepare_sleep(&self, len: usize) -> Result<Option<SleepGuard<'_>>> {
        if self.shared.dead.load(Relaxed) {
            return Err(ShmError::Disconnected);
        }
        Ok(self.waiter.prepare_sleep(len))
    }

    /// The doorbell this side sleeps on while its ring is full.
    pub fn doorbell(&self) -> &Doorbell {
        &self.bell
    }

    /// Peer liveness, as [`RecvWaiter::check_peer`].
    pub fn check_peer(&self) -> Result<()> {
        self.shared.alive()
    }
}
