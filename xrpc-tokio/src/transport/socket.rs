//! Tokio's TCP and Unix sockets as the [`Socket`]s of the runtime-neutral socket transports.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::path::Path;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream, unix};
use xrpc_async::{Socket, SocketListener, TcpSocket, UnixSocket};

use crate::Tokio;

/// Implements [`Socket`] on the readiness of a tokio stream (as its own `poll_read` does).
macro_rules! tokio_socket {
    ($ty:ty) => {
        impl Socket<Tokio> for $ty {
            fn poll_read(
                &self,
                cx: &mut Context<'_>,
                buf: &mut BytesMut,
            ) -> Poll<io::Result<usize>> {
                loop {
                    ready!(self.poll_read_ready(cx))?;
                    match self.try_read_buf(buf) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        r => return Poll::Ready(r),
                    }
                }
            }

            fn poll_write_vectored(
                &self,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                loop {
                    ready!(self.poll_write_ready(cx))?;
                    match self.try_write_vectored(bufs) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        r => return Poll::Ready(r),
                    }
                }
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
