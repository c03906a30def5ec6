//! The rendezvous: the listener that serves a named service, the client's connector (blocking
//! in [`ShmConnection::connect`], or driven by a reactor), and what they exchange over the
//! abstract Unix socket — the segment's memfd and the client's end of the room socket, passed
//! with `SCM_RIGHTS`, and the peer's credentials (`SO_PEERCRED`), checked both ways: a client
//! the server does not admit gets the 8 bytes `XRPCSHMR` instead of a segment.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;

use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use super::ShmConnection;
use super::halves::halves;
use crate::config::ShmConfig;
use crate::error::{Result, ShmError};
use crate::segment::{Geometry, RING_TO_CLIENT, RING_TO_SERVER, Segment};
use crate::sync::Arc;

/// First bytes the server sends, together with the segment fd and the
/// client's end of the room socket.
const HELLO: &[u8; 8] = b"XRPCSHM3";

/// What the server sends, with no descriptor, to a client it refuses (another user's, or one
/// its caller's admission turned down), before it closes the socket.
const REFUSED: &[u8; 8] = b"XRPCSHMR";

/// Who is at the other end of a rendezvous socket, as the kernel reported it when the
/// connection was made (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PeerCredentials {
    /// The peer's process id (0 if it is in a pid namespace this process cannot see).
    pub pid: u32,
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective (primary) group id.
    pub gid: u32,
}

/// The credentials of the process at the other end of a Unix socket, if the kernel tells.
pub(super) fn peer_credentials(sock: &OwnedFd) -> Option<PeerCredentials> {
    let cred = rustix::net::sockopt::socket_peercred(sock).ok()?;
    Some(PeerCredentials {
        pid: cred.pid.as_raw_nonzero().get().try_into().unwrap_or(0),
        uid: cred.uid.as_raw(),
        gid: cred.gid.as_raw(),
    })
}

/// Descriptors passed in the handshake: the segment, then the client's end of
/// the room socket.
const HANDSHAKE_FDS: usize = 2;

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

/// Creates the room sockets of a connection: (ours, the client's).
pub(super) fn room_pair() -> Result<(OwnedFd, OwnedFd)> {
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
    if !peer_is_trusted(peer_credentials(fd).as_ref()) {
        return Err(bad("its other end belongs to another user".into()));
    }
    Ok(())
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
    pub(super) sock: OwnedFd,
    name: String,
    pub(super) config: ShmConfig,
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
    ///
    /// Only clients of this process's user (or root) are served
    /// ([`is_own_user_or_root`]); others are refused as by
    /// [`accept_admitting`](Self::accept_admitting).
    pub fn accept(&self) -> Result<ShmConnection> {
        self.accept_admitting(|peer| peer.is_some_and(is_own_user_or_root))
    }

    /// Like [`accept`](Self::accept), with `admit` deciding about each client from its
    /// credentials (`None` if the kernel did not tell): a client it turns down is refused in
    /// the handshake — it reads `XRPCSHMR` and fails with [`ShmError::Refused`]; no segment is
    /// made for it — and the next client is awaited. The rendezvous socket has no file
    /// permissions: `admit` is the only gate (keep [`is_own_user_or_root`] in it unless
    /// other users are meant to connect).
    pub fn accept_admitting(
        &self,
        mut admit: impl FnMut(Option<&PeerCredentials>) -> bool,
    ) -> Result<ShmConnection> {
        loop {
            let sock = rustix::net::accept_with(&self.sock, SocketFlags::CLOEXEC)?;
            let peer = peer_credentials(&sock);
            if !admit(peer.as_ref()) {
                send_refusal(&sock);
                continue;
            }
            match self.handshake(sock).map(|mut conn| {
                conn.peer = peer;
                conn
            }) {
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
fn peer_is_trusted(peer: Option<&PeerCredentials>) -> bool {
    peer.is_some_and(is_own_user_or_root)
}

/// Whether `peer` runs as this process's effective user or as root: whom [`ShmListener::accept`]
/// serves, and whose server a client accepts.
pub fn is_own_user_or_root(peer: &PeerCredentials) -> bool {
    peer.uid == rustix::process::geteuid().as_raw() || peer.uid == 0
}

/// Tells a refused client so (best effort: it may be gone, and nothing here ever waits);
/// the socket is closed by the caller.
fn send_refusal(sock: &OwnedFd) {
    let _ = rustix::net::send(sock, REFUSED, SendFlags::NOSIGNAL | SendFlags::DONTWAIT);
}

pub(super) fn send_fds(sock: &OwnedFd, fds: &[BorrowedFd<'_>; HANDSHAKE_FDS]) -> Result<()> {
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

/// Receives the handshake for service `name`: the segment fd and the room socket (checked),
/// or the server's refusal.
pub(super) fn recv_fds(sock: &OwnedFd, name: &str) -> Result<(OwnedFd, OwnedFd)> {
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
    if msg.bytes == REFUSED.len() && buf[..REFUSED.len()] == REFUSED[..] && fds.is_empty() {
        return Err(ShmError::Refused {
            name: name.to_owned(),
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        });
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
/// runs as our user (or root); returns it with the server's credentials.
pub(super) fn connect_socket(name: &str, flags: SocketFlags) -> Result<(OwnedFd, PeerCredentials)> {
    let addr = socket_addr(name)?;
    let sock = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None)?;
    match rustix::net::connect(&sock, &addr) {
        Ok(()) => {}
        Err(e) if e == Errno::CONNREFUSED || e == Errno::NOENT => {
            return Err(ShmError::NoServer(name.to_string()));
        }
        Err(e) => return Err(e.into()),
    }
    let peer = peer_credentials(&sock);
    match peer {
        Some(p) if peer_is_trusted(Some(&p)) => Ok((sock, p)),
        // Abstract socket names are not protected by file permissions: a process of another
        // user may have taken the name. Do not talk to it.
        _ => Err(ShmError::Handshake(format!(
            "the process serving {name:?} belongs to another user"
        ))),
    }
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
    name: String,
    server: PeerCredentials,
}

impl ShmConnector {
    /// Connects to the server bound to `name` without blocking. With no
    /// server, fails with [`ShmError::NoServer`]; when the
    /// server's accept backlog is full, with an `Io` error of kind
    /// `WouldBlock` (try again later).
    pub fn start(name: &str, config: ShmConfig) -> Result<Self> {
        let (sock, server) = connect_socket(name, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)?;
        Ok(ShmConnector {
            sock: Arc::new(sock),
            finished: false,
            config,
            name: name.to_owned(),
            server,
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
        let (fd, room) = match recv_fds(&self.sock, &self.name) {
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
        .map(|mut conn| {
            conn.peer = Some(self.server);
            Some(conn)
        })
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
