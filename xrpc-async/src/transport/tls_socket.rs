//! [`TlsSocket`]: a rustls connection over a reactor's [`Socket`], which is itself a
//! [`Socket`] — so the socket frame transport (framing, read budget, timeouts, stats) runs over
//! TLS unchanged, on every runtime — and [`handshake`], which makes one.
//!
//! rustls is sans-IO: ciphertext goes in with `read_tls` + `process_new_packets` and comes out
//! with `write_tls`; plaintext is taken from its `reader()` and given to its `writer()`. This
//! file is the only place that moves bytes between it and a socket. The connection sits behind
//! one lock, held for one poll (no await inside), so a task can wait for frames while another
//! sends, as over plain TCP.
//!
//! Only a writer polls the socket's write side (a reactor keeps one waker per direction):
//! TLS records that reading makes rustls want to send after the handshake (a key update's
//! answer) go out with the next write.

use std::future::poll_fn;
use std::io::{self, BufRead, IoSlice, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use rustls::Connection;

use super::TransportError;
use crate::reactor::Socket;

/// Room made for ciphertext before a socket read when less is left than [`MIN_INCOMING`]: two
/// full TLS records.
const INCOMING: usize = 2 * 16 * 1024 + 1024;
/// See [`INCOMING`].
const MIN_INCOMING: usize = 4 * 1024;

/// A rustls connection and the ciphertext read for it.
struct TlsState {
    conn: Connection,
    /// Ciphertext read from the socket that rustls has not taken yet.
    incoming: BytesMut,
    /// The socket reached its end.
    eof: bool,
    /// rustls was told of the end (`read_tls` of nothing).
    eof_told: bool,
    /// Plaintext rustls took in a write whose ciphertext is not all on the socket yet:
    /// reported written once it is.
    unflushed: usize,
}

/// A TLS connection over socket `S`: reads give plaintext, writes take plaintext.
pub(crate) struct TlsSocket<S> {
    io: S,
    state: Mutex<TlsState>,
    /// Who the peer is, for errors: `tls:127.0.0.1:4000`.
    peer: String,
}

impl<S> TlsSocket<S> {
    fn lock(&self) -> MutexGuard<'_, TlsState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The certificates the peer presented (its own first), if it presented any.
    pub(crate) fn peer_certificates(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        self.lock()
            .conn
            .peer_certificates()
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }
}

impl<S: AsFd> AsFd for TlsSocket<S> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

/// An IO error that carries a TLS error (the socket transport turns it back into the
/// [`TransportError::Tls`] it is).
fn tls_error(context: String, e: rustls::Error) -> io::Error {
    io::Error::other(TransportError::tls(context, e))
}

/// An `io::Write` over a socket's poll, for rustls's `write_tls`: `Pending` is `WouldBlock`
/// (the waker is registered).
struct PollWriter<'a, 'b, S, R> {
    io: &'a S,
    cx: &'a mut Context<'b>,
    runtime: std::marker::PhantomData<R>,
}

impl<S: Socket<R>, R> Write for PollWriter<'_, '_, S, R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self.io.poll_write_vectored(self.cx, bufs) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes all the ciphertext rustls has to send.
fn poll_send_tls<S: Socket<R>, R>(
    io: &S,
    conn: &mut Connection,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while conn.wants_write() {
        let mut w = PollWriter {
            io,
            cx: &mut *cx,
            runtime: std::marker::PhantomData::<R>,
        };
        match conn.write_tls(&mut w) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

impl TlsState {
    fn new(conn: Connection) -> Self {
        Self {
            conn,
            incoming: BytesMut::new(),
            eof: false,
            eof_told: false,
            unflushed: 0,
        }
    }

    /// Whether there is ciphertext (or the end) that rustls has not been given.
    fn has_input(&self) -> bool {
        !self.incoming.is_empty() || (self.eof && !self.eof_told)
    }

    /// Gives rustls the ciphertext read (one `read_tls`, or the end) and has it processed.
    fn feed(&mut self) -> Result<(), rustls::Error> {
        if self.incoming.is_empty() {
            // The end: `read_tls` of nothing.
            self.eof_told = true;
            let _ = self.conn.read_tls(&mut io::empty());
        } else {
            // An error of `read_tls` from a slice is a full plaintext buffer: nothing taken.
            let mut rd: &[u8] = &self.incoming;
            let n = self.conn.read_tls(&mut rd).unwrap_or(0);
            self.incoming.advance(n);
        }
        self.conn.process_new_packets().map(|_| ())
    }

    /// Reads ciphertext from the socket into `incoming`.
    fn poll_fill<S: Socket<R>, R>(&mut self, io: &S, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.incoming.capacity() - self.incoming.len() < MIN_INCOMING {
            self.incoming.reserve(INCOMING);
        }
        if ready!(io.poll_read(cx, &mut self.incoming))? == 0 {
            self.eof = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: Socket<R>, R: 'static> Socket<R> for TlsSocket<S> {
    /// Copies the plaintext rustls has, and decrypts the ciphertext already read, until
    /// `buf`'s spare room is full or neither is left; reads the socket only when nothing came.
    fn poll_read(&self, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut total = 0;
        loop {
            // Plaintext rustls has, copied once (no zeroed window: a record is 16 KiB at
            // most, while the spare room of a large frame is megabytes).
            let mut reader = st.conn.reader();
            match reader.fill_buf() {
                Ok(chunk) => {
                    let n = chunk.len().min(buf.capacity() - buf.len());
                    buf.extend_from_slice(&chunk[..n]);
                    reader.consume(n);
                    total += n;
                    if n == 0 || buf.capacity() == buf.len() {
                        // The end (close_notify), or no room left.
                        return Poll::Ready(Ok(total));
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: the end; the framing tells whether it came
                // inside a frame.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Poll::Ready(Ok(total));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
            if st.eof_told {
                return Poll::Ready(Ok(total));
            }
            // Ciphertext already read, then more from the socket (unless something came).
            if st.has_input() {
                let before = st.incoming.len();
                st.feed()
                    .map_err(|e| tls_error(format!("record from {}", self.peer), e))?;
                if st.incoming.len() == before && !st.eof_told {
                    return Poll::Ready(Err(tls_error(
                        format!("record from {}", self.peer),
                        rustls::Error::General("rustls took no ciphertext".into()),
                    )));
                }
                continue;
            }
            if total > 0 {
                return Poll::Ready(Ok(total));
            }
            ready!(st.poll_fill(&self.io, cx))?;
        }
    }

    fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.unflushed == 0 {
            // Records queued by a read go first; then this write's plaintext.
            ready!(poll_send_tls(&self.io, &mut st.conn, cx))?;
            st.unflushed = st.conn.writer().write_vectored(bufs)?;
        }
        ready!(poll_send_tls(&self.io, &mut st.conn, cx))?;
        Poll::Ready(Ok(std::mem::take(&mut st.unflushed)))
    }
}

/// Runs the TLS handshake of `conn` over `io` (`context` names it in errors: `handshake with
/// 127.0.0.1:4000`) and gives the connected [`TlsSocket`]. Unbounded in time: the caller
/// bounds it. A refusal is sent to the peer (as an alert) when the socket takes it at once.
pub(crate) async fn handshake<S: Socket<R>, R: 'static>(
    io: S,
    conn: Connection,
    context: &str,
    peer: String,
) -> Result<TlsSocket<S>, TransportError> {
    let mut st = TlsState::new(conn);
    poll_fn(|cx| {
        loop {
            ready!(poll_send_tls(&io, &mut st.conn, cx)).map_err(TransportError::send)?;
            if !st.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if st.has_input() {
                if let Err(e) = st.feed() {
                    // The alert rustls queued, if the socket takes it now.
                    let _ = poll_send_tls(&io, &mut st.conn, cx);
                    return Poll::Ready(Err(TransportError::tls(context, e)));
                }
                continue;
            }
            if st.eof_told {
                return Poll::Ready(Err(TransportError::tls(
                    context,
                    "the peer closed the connection in the handshake (does it speak TLS? \
                     does it accept this end's certificate?)",
                )));
            }
            ready!(st.poll_fill(&io, cx)).map_err(TransportError::recv)?;
        }
    })
    .await?;
    Ok(TlsSocket {
        io,
        state: Mutex::new(st),
        peer,
    })
}
