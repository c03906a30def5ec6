//! [`Reactor`]: what the socket and shared-memory transports need of an executor's IO driver
//! beyond [`Runtime`] — readiness of a descriptor, non-blocking socket IO, a yield — so that
//! the transports are written once (in [`transport`](crate::transport)) and an adapter brings
//! only its reactor's sockets, the way quinn's `AsyncUdpSocket` does for UDP.
//!
//! An adapter implements [`Reactor`] for its runtime `R`, and [`Socket<R>`], [`TcpSocket<R>`]
//! or [`UnixSocket<R>`] and [`SocketListener<R>`] for its socket types (the runtime parameter
//! lets a crate implement them for a foreign socket type).

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::task::{Context, Poll};

use bytes::BytesMut;

use crate::Runtime;

/// An executor with an IO reactor.
pub trait Reactor: Runtime {
    /// A descriptor registered with the reactor for readability.
    type Registration: Registration;

    /// Registers `fd` (already non-blocking) for readability. The registration keeps `fd`,
    /// which keeps the descriptor open (an [`OwnedFd`](std::os::fd::OwnedFd), or a shared handle
    /// such as `xrpc_shm::Doorbell`).
    fn register(&self, fd: Watched) -> io::Result<Self::Registration>;

    /// Lets the executor run its other tasks once, then continues. Whether the reactor is
    /// polled in between is the executor's affair (tokio's adapter, in a task, does not: that
    /// would be a system call per retry of a shared-memory wait).
    fn yield_now(&self) -> impl Future<Output = ()> + Send;

    /// Whether [`yield_now`](Self::yield_now) gives the thread's CPU away (`sched_yield`), so
    /// that a yield that took long means another thread ran on this CPU: a shared-memory wait
    /// then stops spinning and sleeps ([`Backoff::yield_gives_the_cpu_away`](xrpc_shm::Backoff::yield_gives_the_cpu_away)).
    /// `false` (the default) where a yield runs the executor's other tasks, which may take long
    /// for reasons of their own.
    fn yield_gives_the_cpu_away(&self) -> bool {
        false
    }

    /// How many checks a shared-memory wait makes per [`yield_now`](Self::yield_now) while it
    /// spins, the others busy ([`Backoff::checks_between_yields`](xrpc_shm::Backoff::checks_between_yields)):
    /// 1 (the default), or more where a yield costs far more than a check of a ring — tokio's,
    /// a self-wake that reschedules the task and wakes an idle worker.
    fn checks_per_yield(&self) -> u32 {
        1
    }

    /// Whether a wait of the task being polled may go on in place — spin, and give the CPU
    /// away with `sched_yield` — without ending the poll: the runtime runs this one task on the
    /// thread, and nothing else wants the task now (it was not woken since its poll began). A
    /// shared-memory wait then follows the thread's wait policy, with no turn of the
    /// connection's driver between its checks, and asks again before each. `false` (the
    /// default, and an executor's answer: its other tasks may need the thread): the wait
    /// yields with [`yield_now`](Self::yield_now) between its checks.
    fn waits_in_place(&self) -> bool {
        false
    }

    /// Whether a [`yield_now`](Self::yield_now) in the last poll of a task that then rests
    /// (nothing else wakes it) is resumed only after a delay, not at once: the blocking
    /// runtime's, whose watcher resumes the yield of a finished `block_on` 10 ms later. A
    /// shared-memory read that nobody awaits (a client's connection between two calls) then
    /// puts its sleep off with one yield: a caller whose next call comes sooner finds the read
    /// awake, and the sleep — announced in the ring, where the peer looks at every frame it
    /// sends, and armed with the runtime — never happens. `false` (the default): a yield is
    /// resumed at once, and putting the sleep off would only add a turn.
    fn resumes_a_resting_yield_late(&self) -> bool {
        false
    }
}

/// A descriptor to register with a [`Reactor`], with whatever keeps it open.
pub struct Watched(Box<dyn AsFd + Send + Sync>);

impl Watched {
    /// Watches the descriptor of `fd`, which stays open as long as `fd` lives.
    pub fn new(fd: impl AsFd + Send + Sync + 'static) -> Self {
        Self(Box::new(fd))
    }
}

impl AsFd for Watched {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for Watched {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Watched").field(&self.as_raw_fd()).finish()
    }
}

/// A descriptor registered with a [`Reactor`].
pub trait Registration: Send + Sync + 'static {
    /// Completes when the descriptor is readable (possibly spuriously); the readiness is then
    /// consumed, so the caller drains the descriptor or checks its condition before waiting
    /// again. Several tasks may wait at once.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

/// A connected stream socket of reactor `R`, read and written through `&self` (one task reads
/// while another writes).
pub trait Socket<R>: AsFd + Send + Sync + Sized + 'static {
    /// Reads into the spare capacity of `buf` (which has some), appending what was read;
    /// `Ok(0)` is the end of the stream.
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>>;

    /// Writes from `bufs` in order, returning how many bytes were written.
    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;
}

/// The window of one read of small frames, through the thread's scratch buffer.
const READ_WINDOW: usize = 16 * 1024;
/// Spare capacity beyond which a large frame is in progress, read in place in windows of up to
/// [`LARGE_READ_WINDOW`].
const LARGE_SPARE: usize = 256 * 1024;
/// The largest window of one read.
const LARGE_READ_WINDOW: usize = 4 * 1024 * 1024;

thread_local! {
    /// Where a small read lands before it is copied (zeroed once per thread).
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_WINDOW].into_boxed_slice());
}

/// Reads into the spare capacity of `buf` (which has some) with `read`, which fills an
/// initialized slice as `std`'s and futures' readers do, and appends what was read: the body of
/// [`Socket::poll_read`] for a socket of that kind. `std` reads need initialized memory: a
/// small read (up to 16 KiB) lands in a scratch buffer of the thread, zeroed once, and only
/// what came is copied; once the buffer holds room for a large frame (256 KiB or more) the read
/// goes in place, into a zeroed window of up to 4 MiB.
pub fn read_into_spare(
    buf: &mut BytesMut,
    read: impl FnOnce(&mut [u8]) -> Poll<io::Result<usize>>,
) -> Poll<io::Result<usize>> {
    let spare = buf.capacity() - buf.len();
    if spare >= LARGE_SPARE {
        return read_in_place(buf, spare.min(LARGE_READ_WINDOW), read);
    }
    let window = spare.min(READ_WINDOW);
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut scratch) => {
            let polled = read(&mut scratch[..window]);
            if let Poll::Ready(Ok(n)) = polled {
                buf.extend_from_slice(&scratch[..n.min(window)]);
            }
            polled
        }
        // Taken by a read further up this thread's stack (a reader that reads again).
        Err(_) => read_in_place(buf, window, read),
    })
}

/// Reads into a zeroed window of `window` bytes at the end of `buf`.
fn read_in_place(
    buf: &mut BytesMut,
    window: usize,
    read: impl FnOnce(&mut [u8]) -> Poll<io::Result<usize>>,
) -> Poll<io::Result<usize>> {
    let start = buf.len();
    buf.resize(start + window, 0);
    let polled = read(&mut buf[start..]);
    let n = match polled {
        Poll::Ready(Ok(n)) => n.min(window),
        _ => 0,
    };
    buf.truncate(start + n);
    polled
}

/// Accepts connections of reactor `R`.
pub trait SocketListener<R>: Send + Sync + Sized + 'static {
    /// An accepted connection.
    type Socket: Socket<R>;
    /// A peer's or the listener's address.
    type Addr;

    /// Waits for the next connection.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Socket, Self::Addr)>> + Send;

    /// The listener's own address.
    fn local_addr(&self) -> io::Result<Self::Addr>;
}

/// A TCP connection of reactor `R`.
pub trait TcpSocket<R>: Socket<R> {
    /// Its listener.
    type Listener: SocketListener<R, Socket = Self, Addr = SocketAddr>;

    /// Connects to `addr`.
    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self>> + Send;

    /// Listens on the first of `addrs` that can be bound.
    fn bind(addrs: &[SocketAddr]) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// Turns Nagle's algorithm off (`true`) or on.
    fn set_nodelay(&self, nodelay: bool) -> io::Result<()>;

    /// The peer's address.
    fn peer_addr(&self) -> io::Result<SocketAddr>;

    /// The local address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A Unix domain stream connection of reactor `R`.
pub trait UnixSocket<R>: Socket<R> {
    /// Its listener.
    type Listener: SocketListener<R, Socket = Self>;

    /// Connects to the socket at `path`.
    fn connect(path: &Path) -> impl Future<Output = io::Result<Self>> + Send;

    /// Listens at `path`.
    fn bind(path: &Path) -> io::Result<Self::Listener>;
}
