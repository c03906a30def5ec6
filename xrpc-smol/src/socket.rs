//! async-io's TCP and Unix sockets (`Async<std::net::TcpStream>`, ...) as the [`Socket`]s of
//! the runtime-neutral socket transports.

use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{self as unix, UnixListener, UnixStream};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_io::Async;
use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use xrpc_async::reactor::read_into_spare;
use xrpc_async::{Socket, SocketListener, TcpSocket, UnixSocket};

use crate::Smol;

impl<T> Socket<Smol> for Async<T>
where
    T: AsFd + Send + Sync + 'static,
    for<'a> &'a Async<T>: AsyncRead + AsyncWrite,
{
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        read_into_spare(buf, |window| Pin::new(&mut &*self).poll_read(cx, window))
    }

    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self).poll_write_vectored(cx, bufs)
    }
}

impl TcpSocket<Smol> for Async<TcpStream> {
    type Listener = Async<TcpListener>;

    async fn connect(addr: SocketAddr) -> io::Result<Self> {
        Async::<TcpStream>::connect(addr).await
    }

    async fn bind(addrs: &[SocketAddr]) -> io::Result<Async<TcpListener>> {
        Async::new(TcpListener::bind(addrs)?)
    }

    fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.get_ref().set_nodelay(nodelay)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().peer_addr()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().local_addr()
    }
}

impl UnixSocket<Smol> for Async<UnixStream> {
    type Listener = Async<UnixListener>;

    async fn connect(path: &Path) -> io::Result<Self> {
        Async::<UnixStream>::connect(path).await
    }

    fn bind(path: &Path) -> io::Result<Async<UnixListener>> {
        Async::<UnixListener>::bind(path)
    }
}

/// Implements [`SocketListener`] for an async-io listener.
macro_rules! listener {
    ($listener:ty => $stream:ty, $addr:ty) => {
        impl SocketListener<Smol> for Async<$listener> {
            type Socket = Async<$stream>;
            type Addr = $addr;

            async fn accept(&self) -> io::Result<(Async<$stream>, $addr)> {
                Async::<$listener>::accept(self).await
            }

            fn local_addr(&self) -> io::Result<$addr> {
                self.get_ref().local_addr()
            }
        }
    };
}

listener!(TcpListener => TcpStream, SocketAddr);
listener!(UnixListener => UnixStream, unix::SocketAddr);
