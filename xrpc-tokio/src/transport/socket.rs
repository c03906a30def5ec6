//! Tokio's TCP and Unix sockets as the [`Socket`]s of the runtime-neutral socket transports.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::path::Path;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
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

/// Implements [`Socket`] on the readiness of a tokio stream.
macro_rules! tokio_socket {
    ($ty:ty) => {
        impl Socket<Tokio> for $ty {
            fn poll_read(
                &self,
                cx: &mut Context<'_>,
                buf: &mut BytesMut,
            ) -> Poll<io::Result<usize>> {
                poll_io(cx, |cx| self.poll_read_ready(cx), || self.try_read_buf(buf))
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
