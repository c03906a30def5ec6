//! The byte-stream parts shared by TCP and Unix sockets: a reader whose waits are socket read
//! timeouts, a writer, and a closer that shuts the socket down through its own handle.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use super::{Chunk, Close, Io, Reader, TransportError, Writer};

/// Bytes read from the socket at most per read.
const READ_BUF: usize = 64 * 1024;

/// Longest single read wait: a reader with no deadline still wakes up this often (harmless).
const MAX_WAIT: Duration = Duration::from_secs(60);

/// What the parts need of a stream socket (`std::net::TcpStream`, `UnixStream`).
pub(crate) trait Stream: Read + Write + Send + Sync + Sized + 'static {
    fn try_clone(&self) -> std::io::Result<Self>;
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()>;
    fn set_write_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()>;
    fn shutdown(&self, how: Shutdown) -> std::io::Result<()>;
}

/// Implements [`Stream`] with the socket type's inherent methods of the same names.
macro_rules! stream_by_inherent_methods {
    ($($ty:ty),*) => {$(
        impl Stream for $ty {
            fn try_clone(&self) -> std::io::Result<Self> { <$ty>::try_clone(self) }
            fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> { <$ty>::set_read_timeout(self, t) }
            fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> { <$ty>::set_write_timeout(self, t) }
            fn shutdown(&self, how: Shutdown) -> std::io::Result<()> { <$ty>::shutdown(self, how) }
        }
    )*};
}
stream_by_inherent_methods!(std::net::TcpStream, std::os::unix::net::UnixStream);

/// Splits a connected socket into the parts of [`Io`].
pub(crate) fn io<S: Stream>(sock: S, max_frame_size: usize) -> Result<Io, TransportError> {
    let fail = |e: std::io::Error| TransportError::ConnectionFailed(e.to_string());
    let writer = sock.try_clone().map_err(fail)?;
    let closer = sock.try_clone().map_err(fail)?;
    sock.set_write_timeout(Some(super::WRITE_STALL))
        .map_err(fail)?;
    Ok(Io {
        reader: Box::new(SocketReader {
            sock,
            buf: vec![0; READ_BUF],
            timeout: None,
        }),
        writer: Box::new(SocketWriter(writer)),
        closer: Box::new(SocketCloser(closer)),
        max_frame_size,
    })
}

struct SocketReader<S> {
    sock: S,
    buf: Vec<u8>,
    /// The socket's read timeout as last set (`None`: not set, reads block).
    timeout: Option<Duration>,
}

impl<S: Stream> SocketReader<S> {
    /// Makes the socket's read timeout at most `want`, with as few system calls as possible: a
    /// timeout up to half as long as wanted is kept (a read that returns early is harmless; one
    /// that returns late is not).
    fn limit_wait(&mut self, want: Duration) -> Result<(), TransportError> {
        let want = want.clamp(Duration::from_micros(1), MAX_WAIT);
        let keep = self.timeout.is_some_and(|t| t <= want && want <= t * 2);
        if !keep {
            self.sock
                .set_read_timeout(Some(want))
                .map_err(TransportError::recv)?;
            self.timeout = Some(want);
        }
        Ok(())
    }
}

impl<S: Stream> Reader for SocketReader<S> {
    fn read(
        &mut self,
        timeout: Option<Duration>,
        deliver: &mut dyn FnMut(Chunk<'_>),
    ) -> Result<bool, TransportError> {
        self.limit_wait(timeout.unwrap_or(MAX_WAIT))?;
        match self.sock.read(&mut self.buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                deliver(Chunk::Bytes(&self.buf[..n]));
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Ok(true)
            }
            Err(e) => match TransportError::recv(e) {
                TransportError::ConnectionClosed => Ok(false),
                e => Err(e),
            },
        }
    }
}

struct SocketWriter<S>(S);

impl<S: Stream> Writer for SocketWriter<S> {
    fn write(&mut self, batch: &[u8]) -> Result<(), TransportError> {
        self.0.write_all(batch).map_err(TransportError::send)
    }
}

struct SocketCloser<S>(S);

impl<S: Stream> Close for SocketCloser<S> {
    fn close(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// A socket transport's `FrameTransport` and its listener's `FrameListener` (both transports
/// keep their parts in `io`, both listeners their socket in `listener`).
macro_rules! socket_transport {
    ($transport:ident, $listener:ident) => {
        impl FrameTransport for $transport {
            fn into_io(self) -> Io {
                self.io
            }
        }

        impl FrameListener for $listener {
            type Transport = $transport;

            fn accept_timeout(
                &self,
                timeout: Duration,
            ) -> Result<Option<$transport>, TransportError> {
                if !super::wait_readable([std::os::fd::AsFd::as_fd(&self.listener)], timeout)?[0] {
                    return Ok(None);
                }
                match super::accepted(self.listener.accept())? {
                    Some((stream, _)) => $transport::from_stream(stream, self.config).map(Some),
                    None => Ok(None),
                }
            }
        }
    };
}
pub(crate) use socket_transport;
