//! Layer 1: the blocking frame transports — TCP, Unix sockets, shared memory — with the wire
//! format of every other xrpc adapter (a byte stream of 4-byte little-endian length-prefixed
//! frames; on shared memory, whole frames in the rings of `xrpc_shm`).
//!
//! A transport is split into the parts the client and server drive: a `Reader` that waits
//! (with a timeout) for input, a `Writer` that writes a batch of prefixed frames, and a
//! `Close` that wakes a blocked reader for good.

use std::os::fd::BorrowedFd;
use std::time::Duration;

use bytes::Bytes;
pub use xrpc_async::transport::TransportError;

mod shm;
mod socket;
mod tcp;
mod unix;

pub use shm::{SharedMemoryConfig, SharedMemoryFrameTransport, SharedMemoryFrameTransportListener};
pub use tcp::{TcpConfig, TcpFrameTransport, TcpFrameTransportListener};
pub use unix::{UnixConfig, UnixFrameTransport, UnixFrameTransportListener};

/// How long a write may make no progress (the peer does not read) before the connection is
/// given up: a peer cannot hold a writing thread for ever.
pub(crate) const WRITE_STALL: Duration = Duration::from_secs(30);

/// A piece of input: bytes of a byte stream, or one whole frame (shared memory).
pub(crate) enum Chunk<'a> {
    Bytes(&'a [u8]),
    Frame(Bytes),
}

/// The receiving side of a connection, held by one thread at a time.
pub(crate) trait Reader: Send {
    /// Waits at most `timeout` (`None`: without end) for input and hands it to `deliver`;
    /// `Ok(false)` once the peer closed. A wait may end early (waiting again is harmless).
    fn read(
        &mut self,
        timeout: Option<Duration>,
        deliver: &mut dyn FnMut(Chunk<'_>),
    ) -> Result<bool, TransportError>;
}

/// The sending side of a connection, held by one thread at a time.
pub(crate) trait Writer: Send {
    /// Writes `batch`: zero or more length-prefixed frames, as the sessions encode them.
    fn write(&mut self, batch: &[u8]) -> Result<(), TransportError>;
}

/// Ends a connection from any thread: a blocked read returns, later reads and writes fail.
pub(crate) trait Close: Send + Sync {
    fn close(&self);
}

/// A connected transport, in the parts the client and server drive.
pub struct Io {
    pub(crate) reader: Box<dyn Reader>,
    pub(crate) writer: Box<dyn Writer>,
    pub(crate) closer: Box<dyn Close>,
    pub(crate) max_frame_size: usize,
}

/// A connected frame transport that [`RpcClient`](crate::RpcClient) and
/// [`RpcServer`](crate::RpcServer) can drive. Implemented by the transports of this crate.
pub trait FrameTransport: Send + 'static {
    /// The transport in the parts the client and server drive.
    fn into_io(self) -> Io;
}

/// A source of incoming connections (a bound socket), for
/// [`RpcServer::serve_listener`](crate::RpcServer::serve_listener).
pub trait FrameListener: Send + Sync + 'static {
    /// The transport of an accepted connection.
    type Transport: FrameTransport;
    /// Waits at most `timeout` for the next connection (`Ok(None)` when none came).
    fn accept_timeout(&self, timeout: Duration) -> Result<Option<Self::Transport>, TransportError>;
}

/// Waits at most `timeout` until one of `fds` is readable (or hung up); says which are.
pub(crate) fn wait_readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    timeout: Duration,
) -> Result<[bool; N], TransportError> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = fds.map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN));
    let ts = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match poll(&mut fds, Some(&ts)) {
        Ok(_) => Ok(fds.map(|fd| !fd.revents().is_empty())),
        Err(e) if e == rustix::io::Errno::INTR => Ok([false; N]),
        Err(e) => Err(TransportError::ConnectionFailed(format!(
            "poll failed: {e}"
        ))),
    }
}

/// An accept that found nobody (a non-blocking listener after a spurious wake-up) is no
/// connection; other failures are errors.
pub(crate) fn accepted<T>(r: std::io::Result<T>) -> Result<Option<T>, TransportError> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(TransportError::ConnectionFailed(format!(
            "accept failed: {e}"
        ))),
    }
}
