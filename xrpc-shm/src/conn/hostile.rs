//! A peer that does the handshake by the book and then breaks the rules of the doorbells
//! (exposed as `testing::HostilePeer`, feature `test-util`): what a process of the same user
//! can do to the other side of a connection, for the tests that show it cannot make that side
//! wait.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::net::{SendFlags, SocketFlags};

use super::handshake::{ShmListener, connect_socket, recv_fds, room_pair, send_fds};
use crate::error::Result;
use crate::ring::Producer;
use crate::segment::{Geometry, MappedRing, RING_TO_CLIENT, RING_TO_SERVER, Segment};
use crate::storage::RingStorage;
use crate::sync::Ordering::SeqCst;

/// One side of a shared-memory connection, handshaken like [`ShmListener::accept`] or
/// [`super::ShmConnection::connect`] but played by hand: it publishes frames without the wake
/// protocol, frees what it receives unread, announces sleepers that never sleep, never reads
/// its doorbells, fills the peer's, and — as a server — keeps a duplicate of the client's end
/// of the room socket, whose file flags (shared with the client) it may change.
pub struct HostilePeer {
    /// Our end of the rendezvous (data) socket.
    data: OwnedFd,
    /// Our end of the room socket.
    room: OwnedFd,
    /// As a server: the client's end of the room socket, kept.
    client_room: Option<OwnedFd>,
    segment: Segment,
    producer: Producer<MappedRing>,
    recv_ring: usize,
}

impl HostilePeer {
    /// Accepts the next client of `listener` as its server.
    pub fn accept(listener: &ShmListener) -> Result<Self> {
        let sock = rustix::net::accept_with(&listener.sock, SocketFlags::CLOEXEC)?;
        let geo = Geometry {
            capacity: listener.config.ring_capacity,
            max_frame: listener.config.max_frame_size,
        };
        let (segment, fd) = Segment::create(geo)?;
        let (room, client_room) = room_pair()?;
        send_fds(&sock, &[fd.as_fd(), client_room.as_fd()])?;
        let producer = Producer::new(segment.ring(RING_TO_CLIENT), geo.max_frame)?;
        Ok(HostilePeer {
            data: sock,
            room,
            client_room: Some(client_room),
            segment,
            producer,
            recv_ring: RING_TO_SERVER,
        })
    }

    /// Connects to the server of `name` as its client.
    pub fn connect(name: &str) -> Result<Self> {
        let (sock, _server) = connect_socket(name, SocketFlags::CLOEXEC)?;
        rustix::net::sockopt::set_socket_timeout(
            &sock,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_secs(5)),
        )?;
        let (fd, room) = recv_fds(&sock, name)?;
        let segment = Segment::open(fd)?;
        let producer = Producer::new(segment.ring(RING_TO_SERVER), segment.geometry().max_frame)?;
        Ok(HostilePeer {
            data: sock,
            room,
            client_room: None,
            segment,
            producer,
            recv_ring: RING_TO_CLIENT,
        })
    }

    /// Clears `O_NONBLOCK` on every room and data socket this side can reach — as a server,
    /// on the client's end of the room socket too, whose open file description the client
    /// shares. (The eventfd doorbells of protocol version 2 were shared that way in both
    /// directions: a write to a full one then blocked.)
    pub fn make_doorbells_blocking(&self) -> Result<()> {
        for fd in [
            Some(&self.data),
            Some(&self.room),
            self.client_room.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            rustix::fs::fcntl_setfl(fd, OFlags::empty())?;
        }
        Ok(())
    }

    /// Announces sleepers on every side of both rings (and never sleeps, nor retracts them):
    /// the peer rings a doorbell after each of its publishes and releases.
    pub fn announce_sleepers_everywhere(&self) {
        for ring in [RING_TO_SERVER, RING_TO_CLIENT] {
            let ring = self.segment.ring(ring);
            let ctl = &ring.header().ctl.0;
            ctl.data_waiters.store(1, SeqCst);
            ctl.space_waiters.store(1, SeqCst);
        }
    }

    /// Sends bytes on both sockets until they take no more: the peer's doorbells hold a full
    /// socket buffer each, and it reads at most a few KiB of them per wake-up. Returns the
    /// bytes sent.
    pub fn fill_peer_doorbells(&self) -> usize {
        let junk = [0x5a_u8; 4096];
        let mut sent = 0;
        for fd in [&self.data, &self.room] {
            loop {
                match rustix::net::send(fd, &junk, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                    Ok(n) => sent += n,
                    Err(e) if e == Errno::INTR => {}
                    Err(_) => break,
                }
            }
        }
        sent
    }

    /// Copies `frame` into the ring to the peer and publishes it (in pieces if it is larger
    /// than one), ringing the peer's data doorbell once (which may be full). `Err(Full)` when
    /// the peer has not made room.
    pub fn publish(&mut self, frame: &[u8]) -> Result<()> {
        self.producer.try_send(frame)?;
        let _ = rustix::net::send(&self.data, &[1], SendFlags::DONTWAIT | SendFlags::NOSIGNAL);
        Ok(())
    }

    /// Frees every frame the peer published to us, unread (our tail jumps to its head).
    /// Returns how many bytes that freed.
    pub fn consume_all(&self) -> u64 {
        let ring = self.segment.ring(self.recv_ring);
        let header = ring.header();
        let (head, tail) = (header.head.0.load(SeqCst), header.tail.0.load(SeqCst));
        header.tail.0.store(head, SeqCst);
        head.wrapping_sub(tail)
    }

    /// Whether the peer has released everything we published (it has read it all, and
    /// handed the room back — ringing us, if we announced a sleeper).
    pub fn peer_read_all(&self) -> bool {
        let ring = self.segment.ring(1 - self.recv_ring);
        let header = ring.header();
        header.tail.0.load(SeqCst) == header.head.0.load(SeqCst)
    }

    /// The bytes the peer has published to us so far.
    pub fn received(&self) -> u64 {
        self.segment
            .ring(self.recv_ring)
            .header()
            .head
            .0
            .load(SeqCst)
    }

    /// Whether the peer hung up (closed or shut down its end of the rendezvous socket).
    pub fn peer_hung_up(&self) -> bool {
        let mut fds = [PollFd::new(&self.data, PollFlags::RDHUP)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
            && fds[0]
                .revents()
                .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR)
    }

    /// Our end of the rendezvous socket.
    pub fn data_socket(&self) -> BorrowedFd<'_> {
        self.data.as_fd()
    }
}
