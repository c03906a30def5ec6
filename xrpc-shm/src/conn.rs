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
//!
//! The code is split by concern. `handshake`: the listener, the client's connector, and what
//! passes over the rendezvous socket (the segment and the room socket with `SCM_RIGHTS`, the
//! peer's credentials). `halves`: the two halves of a connection and the frames they lend.
//! `waiters`: the doorbells and the handles that wait for frames or room from another thread
//! or a reactor. This file holds the state the halves and waiters share, and
//! [`ShmConnection`].

mod halves;
mod handshake;
#[cfg(any(test, feature = "test-util"))]
pub(crate) mod hostile;
mod waiters;

pub use halves::{FrameRef, SendSlot, ShmReceiver, ShmSender};
pub use handshake::{PeerCredentials, PeerFd, ShmConnector, ShmListener, is_own_user_or_root};
pub use waiters::{Doorbell, RecvWaiter, SendWaiter};

use std::time::{Duration, Instant};

use bytes::Bytes;
use rustix::event::{PollFd, PollFlags};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::{Shutdown, SocketFlags};

use crate::backoff::SpinGauge;
use crate::config::ShmConfig;
use crate::error::{Result, ShmError};
use crate::segment::{RING_TO_CLIENT, RING_TO_SERVER, Segment};
use crate::sync::Ordering::{Relaxed, SeqCst};
use crate::sync::{Arc, AtomicBool};
use crate::wait::WaitCfg;
use halves::halves;
use handshake::{connect_socket, recv_fds};

/// State shared by the two halves of a connection (and their waiters).
struct ConnectionState {
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
    /// Times the send ring's doorbell woke the peer (see [`RecvWaiter::peer_woken`]).
    peer_woken: Arc<std::sync::atomic::AtomicU64>,
    /// `peer_woken` as the last wait for frames saw it.
    peer_woken_seen: std::sync::atomic::AtomicU64,
    config: ShmConfig,
}

impl ConnectionState {
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

    /// How a blocking wait for room waits.
    fn send_wait_cfg(&self, deadline: Option<Instant>) -> WaitCfg<'_> {
        self.wait_cfg(&self.send_spin, deadline, false)
    }

    /// How a blocking wait for frames waits: longer after a send that woke the peer.
    fn recv_wait_cfg(&self, deadline: Option<Instant>) -> WaitCfg<'_> {
        self.wait_cfg(&self.recv_spin, deadline, self.woke_peer_since_last_wait())
    }

    fn wait_cfg<'a>(
        &self,
        gauge: &'a SpinGauge,
        deadline: Option<Instant>,
        after_waking_peer: bool,
    ) -> WaitCfg<'a> {
        WaitCfg {
            spin: self.config.spin_budget,
            gauge: Some(gauge),
            slice: Some(self.config.wait_slice),
            deadline,
            after_waking_peer,
        }
    }

    /// Whether a send of this side woke the peer since the last wait for frames asked (the
    /// answer to it comes only after the peer's wake-up): the one rule of when a wait for
    /// frames spins longer, for the blocking API and for the adapters' backoff alike.
    fn woke_peer_since_last_wait(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let woken = self.peer_woken.load(Relaxed);
        self.peer_woken_seen.swap(woken, Relaxed) != woken
    }
}

fn deadline_of(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// One shared-memory connection: a [`ShmSender`] and a [`ShmReceiver`] over
/// the two rings of one segment. Use it whole, or [`ShmConnection::split`] it
/// to give each half its own thread.
pub struct ShmConnection {
    sender: ShmSender,
    receiver: ShmReceiver,
    /// Who is at the other end of the rendezvous socket.
    peer: Option<PeerCredentials>,
}

impl ShmConnection {
    /// Connects to the server bound to `name` and maps the segment it hands
    /// out, after validating it. The server decides the ring geometry;
    /// `config` gives this side's waiting parameters and handshake timeout.
    /// With no server, fails with [`ShmError::NoServer`].
    pub fn connect(name: &str, config: ShmConfig) -> Result<Self> {
        let (sock, server) = connect_socket(name, SocketFlags::CLOEXEC)?;
        rustix::net::sockopt::set_socket_timeout(
            &sock,
            rustix::net::sockopt::Timeout::Recv,
            Some(config.handshake_timeout.max(Duration::from_millis(1))),
        )?;
        let (fd, room) = recv_fds(&sock, name)?;
        let segment = Segment::open(fd)?;
        let mut conn = halves(
            segment,
            Arc::new(sock),
            room,
            config,
            RING_TO_SERVER,
            RING_TO_CLIENT,
        )?;
        conn.peer = Some(server);
        Ok(conn)
    }

    /// Who is at the other end, as the kernel reported it on the rendezvous socket
    /// (`SO_PEERCRED`): the server for a client, the client for a server.
    pub fn peer_credentials(&self) -> Option<PeerCredentials> {
        self.peer
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

/// Which of a connection's two sockets.
#[derive(Clone, Copy, Debug)]
enum Bell {
    /// The rendezvous socket, our consumer's doorbell.
    Data,
    /// The room socket, our producer's doorbell.
    Room,
}
