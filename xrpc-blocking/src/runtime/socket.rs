//! `std`'s TCP and Unix sockets, non-blocking, as the [`Socket`]s of the runtime-neutral socket
//! transports on [`Blocking`]: an operation that would block arms the socket's read or write
//! [`Interest`] and waits like any future of the runtime (in the polling thread's own `poll(2)`,
//! see [`wait`](super::wait)).
//!
//! Each direction remembers whether the socket is known not to be ready — it would block, or a
//! read came back short of its window (the input was drained, as tokio assumes too) — so that
//! the next operation waits for readiness without trying the system call first: a call's read
//! after its request, and the read that follows an answer, cost no `recv` that comes back
//! empty.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{self as unix, UnixListener, UnixStream};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::BytesMut;
use rustix::event::PollFlags;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use xrpc_async::reactor::read_into_spare;
use xrpc_async::{Socket, SocketListener, TcpSocket, UnixSocket};

use super::Blocking;
use super::wait::Interest;

/// A `std` socket or listener `T` in non-blocking mode, waiting on [`Blocking`]'s threads.
pub struct StdSocket<T> {
    io: Arc<T>,
    read: Direction,
    write: Direction,
}

/// One way of a socket: its interest, and whether it may be ready.
struct Direction {
    interest: Arc<Interest>,
    /// `false`: known not ready until the interest fires.
    ready: AtomicBool,
}

impl Direction {
    /// A direction of `fd`; with `spun`, a thread waiting for it checks it without sleeping
    /// first (a stream's input: an answer often comes within microseconds).
    fn new(fd: super::wait::Fd, events: PollFlags, spun: bool) -> Self {
        let interest = match spun {
            true => Interest::descriptor_spun(fd, events),
            false => Interest::descriptor(fd, events),
        };
        Self {
            interest,
            ready: AtomicBool::new(true),
        }
    }

    /// Known not ready until the interest fires from now on.
    fn not_ready(&self) {
        self.ready.store(false, Ordering::Relaxed);
        self.interest.take_fired();
    }
}

impl<T> std::fmt::Debug for StdSocket<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdSocket").finish_non_exhaustive()
    }
}

impl<T: AsFd + Send + Sync + 'static> StdSocket<T> {
    /// Wraps `io`, switching it to non-blocking mode. A thread waiting for its input checks
    /// it without sleeping first, for up to 50 µs (see the runtime's module docs).
    pub fn new(io: T) -> io::Result<Self> {
        Self::with_input(io, true)
    }

    /// Wraps listener `io`: a thread waiting for a connection sleeps at once (a connection is
    /// not an answer that comes within microseconds).
    fn listener(io: T) -> io::Result<Self> {
        Self::with_input(io, false)
    }

    fn with_input(io: T, spun: bool) -> io::Result<Self> {
        rustix::io::ioctl_fionbio(&io, true)?;
        let io = Arc::new(io);
        Ok(Self {
            read: Direction::new(io.clone(), PollFlags::IN, spun),
            write: Direction::new(io.clone(), PollFlags::OUT, false),
            io,
        })
    }

    /// The socket.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Runs the non-blocking operation `op` in direction `way` once it may be ready; when it
    /// is not, arms the direction's interest and waits. `op` says whether its result leaves
    /// the direction ready (a short read does not).
    fn poll_op<R>(
        &self,
        cx: &mut Context<'_>,
        way: &Direction,
        mut op: impl FnMut(&T) -> (io::Result<R>, bool),
    ) -> Poll<io::Result<R>> {
        loop {
            if !way.ready.load(Ordering::Relaxed) {
                if !way.interest.take_fired() {
                    way.interest.arm(cx.waker(), None);
                    return Poll::Pending;
                }
                way.ready.store(true, Ordering::Relaxed);
            }
            match op(&self.io) {
                (Err(e), _) if e.kind() == io::ErrorKind::WouldBlock => {
                    way.not_ready();
                    way.interest.arm(cx.waker(), None);
                    return Poll::Pending;
                }
                (Err(e), _) if e.kind() == io::ErrorKind::Interrupted => {}
                (r, still_ready) => {
                    if !still_ready {
                        way.not_ready();
                    }
                    return Poll::Ready(r);
                }
            }
        }
    }
}

impl<T> Drop for StdSocket<T> {
    fn drop(&mut self) {
        self.read.interest.disarm();
        self.write.interest.disarm();
    }
}

impl<T> AsFd for StdSocket<T>
where
    T: AsFd,
{
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

impl<T> Socket<Blocking> for StdSocket<T>
where
    T: AsFd + Send + Sync + 'static,
    for<'a> &'a T: Read + Write,
{
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        read_into_spare(buf, |window| {
            let len = window.len();
            self.poll_op(cx, &self.read, |mut io| {
                let r = io.read(window);
                let full = r.as_ref().is_ok_and(|&n| n == len);
                (r, full)
            })
        })
    }

    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_op(cx, &self.write, |mut io| (io.write_vectored(bufs), true))
    }
}

/// Waits until an interest fires once (its descriptor was ready, possibly spuriously).
pub(crate) struct Ready {
    pub(super) interest: Arc<Interest>,
    armed: bool,
}

impl Ready {
    pub(crate) fn new(interest: Arc<Interest>) -> Self {
        Self {
            interest,
            armed: false,
        }
    }
}

impl Future for Ready {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed && self.interest.fired() {
            return Poll::Ready(());
        }
        self.armed = true;
        self.interest.arm(cx.waker(), None);
        Poll::Pending
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        self.interest.disarm();
    }
}

/// Connects a new non-blocking stream socket of `family` to `addr`, waiting in the runtime.
async fn connect_nonblocking<T>(
    family: AddressFamily,
    addr: &impl rustix::net::addr::SocketAddrArg,
) -> io::Result<StdSocket<T>>
where
    T: From<OwnedFd> + AsFd + Send + Sync + 'static,
{
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    let in_progress = match rustix::net::connect(&fd, addr) {
        Ok(()) => false,
        Err(e) if e == rustix::io::Errno::INPROGRESS || e == rustix::io::Errno::AGAIN => true,
        Err(e) => return Err(e.into()),
    };
    let socket = StdSocket::new(T::from(fd))?;
    if in_progress {
        Ready::new(socket.write.interest.clone()).await;
        rustix::net::sockopt::socket_error(socket.get_ref())??;
    }
    Ok(socket)
}

impl TcpSocket<Blocking> for StdSocket<TcpStream> {
    type Listener = StdSocket<TcpListener>;

    async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::INET,
            SocketAddr::V6(_) => AddressFamily::INET6,
        };
        connect_nonblocking(family, &addr).await
    }

    async fn bind(addrs: &[SocketAddr]) -> io::Result<StdSocket<TcpListener>> {
        StdSocket::listener(TcpListener::bind(addrs)?)
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.io.set_nodelay(nodelay)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

impl UnixSocket<Blocking> for StdSocket<UnixStream> {
    type Listener = StdSocket<UnixListener>;

    async fn connect(path: &Path) -> io::Result<Self> {
        let addr = SocketAddrUnix::new(path)?;
        connect_nonblocking(AddressFamily::UNIX, &addr).await
    }

    fn bind(path: &Path) -> io::Result<StdSocket<UnixListener>> {
        StdSocket::listener(UnixListener::bind(path)?)
    }
}

impl SocketListener<Blocking> for StdSocket<TcpListener> {
    type Socket = StdSocket<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&self) -> io::Result<(StdSocket<TcpStream>, SocketAddr)> {
        let accept = |io: &TcpListener| (io.accept(), true);
        let (stream, addr) = poll_fn(|cx| self.poll_op(cx, &self.read, accept)).await?;
        Ok((StdSocket::new(stream)?, addr))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

impl SocketListener<Blocking> for StdSocket<UnixListener> {
    type Socket = StdSocket<UnixStream>;
    type Addr = unix::SocketAddr;

    async fn accept(&self) -> io::Result<(StdSocket<UnixStream>, unix::SocketAddr)> {
        let accept = |io: &UnixListener| (io.accept(), true);
        let (stream, addr) = poll_fn(|cx| self.poll_op(cx, &self.read, accept)).await?;
        Ok((StdSocket::new(stream)?, addr))
    }

    fn local_addr(&self) -> io::Result<unix::SocketAddr> {
        self.io.local_addr()
    }
}
