//! Tokio's TCP and Unix sockets as the [`Socket`]s of the runtime-neutral socket transports.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::path::Path;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream, unix};
use xrpc_async::{Socket, SocketListener, TcpSocket, UnixSocket};

use crate::Tokio;

/// Waits for readiness with `ready` and tries `attempt` until it does not would-block (which
/// clears the readiness), as tokio's own `poll_read` and `poll_write` do.
fn poll_io<T>(
    cx: &mut Context<'_>,
    mut ready: impl FnMut(&mut Context<'_>) -> Poll<io::Result<()>>,
    mut attempt: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        ready!(ready(cx))?;
        match attempt() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return Poll::Ready(r),
        }
    }
}

/// After a read of `read` bytes into `space`: a read that got some bytes but not as many as
/// it had room for emptied the socket's receive queue, so its readiness is spent — `WouldBlock`
/// tells `try_io` to clear it, as tokio's own `poll_read` does on epoll and kqueue (there the
/// next bytes raise a new event). The next read then waits for the reactor instead of making
/// a system call that would-blocks: one fewer per read.
fn drained(read: usize, space: usize) -> io::Result<()> {
    let edge_triggered = cfg!(any(
        target_os = "linux",
        target_os = "android",
        target_os = "illumos",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly",
        target_vendor = "apple",
    ));
    if edge_triggered && 0 < read && read < space {
        Err(io::ErrorKind::WouldBlock.into())
    } else {
        Ok(())
    }
}

/// Implements [`Socket`] on the readiness of a tokio stream.
macro_rules! tokio_socket {
    ($ty:ty) => {
        impl Socket<Tokio> for $ty {
            fn poll_read(
                &self,
                cx: &mut Context<'_>,
                buf: &mut BytesMut,
            ) -> Poll<io::Result<usize>> {
                let space = buf.capacity() - buf.len();
                poll_io(
                    cx,
                    |cx| self.poll_read_ready(cx),
                    || {
                        let mut read = None;
                        // `try_io` takes the readiness before its closure runs and clears it (unless
                        // a newer event came in meanwhile) when the closure would-blocks.
                        let res = self.try_io(Interest::READABLE, || {
                            let n = self.try_read_buf(buf)?;
                            read = Some(n);
                            drained(n, space)
                        });
                        // Bytes read count even when the readiness was cleared after them; with
                        // none, the read's own error (`WouldBlock`: wait for the reactor again).
                        match (read, res) {
                            (Some(n), _) => Ok(n),
                            (None, Err(e)) => Err(e),
                            (None, Ok(())) => Err(io::ErrorKind::WouldBlock.into()),
                        }
                    },
                )
            }

            fn poll_write_vectored(
                &self,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                poll_io(
                    cx,
                    |cx| self.poll_write_ready(cx),
                    || self.try_write_vectored(bufs),
                )
            }
        }
    };
}

tokio_socket!(TcpStream);
tokio_socket!(UnixStream);

impl TcpSocket<Tokio> for TcpStream {
    type Listener = TcpListener;

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self>> + Send {
        TcpStream::connect(addr)
    }

    async fn bind(addrs: &[SocketAddr]) -> io::Result<TcpListener> {
        TcpListener::bind(addrs).await
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        TcpStream::set_nodelay(self, nodelay)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::peer_addr(self)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::local_addr(self)
    }
}

impl SocketListener<Tokio> for TcpListener {
    type Socket = TcpStream;
    type Addr = SocketAddr;

    fn accept(&self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

impl UnixSocket<Tokio> for UnixStream {
    type Listener = UnixListener;

    fn connect(path: &Path) -> impl Future<Output = io::Result<Self>> + Send {
        UnixStream::connect(path)
    }

    fn bind(path: &Path) -> io::Result<UnixListener> {
        UnixListener::bind(path)
    }
}

impl SocketListener<Tokio> for UnixListener {
    type Socket = UnixStream;
    type Addr = unix::SocketAddr;

    fn accept(&self) -> impl Future<Output = io::Result<(UnixStream, unix::SocketAddr)>> + Send {
        UnixListener::accept(self)
    }

    fn local_addr(&self) -> io::Result<unix::SocketAddr> {
        UnixListener::local_addr(self)
    }
}
