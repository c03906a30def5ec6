//! The socket frame transport shared by TCP and Unix (a byte stream of length-prefixed frames).
//!
//! The read half and an [`xrpc_proto::FrameDecoder`] sit behind one lock, the write half and a
//! reusable write buffer behind another, so one task can wait for frames while others send.
//! Reads go straight into the decoder's buffer (the socket read is the only copy); a small frame
//! is written as prefix + payload from one buffer in a single `write_all`.

use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;
use xrpc_proto::{FrameDecoder, FrameError};

use super::{
    StatsCounters, TransportError, TransportStats, check_len, check_prefixed, check_prefixed_batch,
};

/// Frames larger than this are written from the caller's slice (vectored with the prefix)
/// instead of being copied into the write buffer.
const COPY_THRESHOLD: usize = 64 * 1024;
/// A write buffer grown beyond this by a large encoded frame is released after the write.
const MAX_RETAINED_WRITE_BUF: usize = 1024 * 1024;

/// Shuts a socket down in both directions through a duplicate of its descriptor, without
/// taking the read or write lock, so that a blocked read or write wakes up.
pub(crate) trait Shutdown: Send + Sync + 'static {
    /// `shutdown(SHUT_RDWR)`.
    fn shutdown_both(&self) -> io::Result<()>;
}

impl Shutdown for std::net::TcpStream {
    fn shutdown_both(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Both)
    }
}

impl Shutdown for std::os::unix::net::UnixStream {
    fn shutdown_both(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Both)
    }
}

/// Stream settings shared by TCP and Unix configurations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketSettings {
    pub(crate) max_frame_size: usize,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
}

struct ReadState<R> {
    io: R,
    decoder: FrameDecoder,
}

struct WriteState<W> {
    io: W,
    buf: BytesMut,
    /// Set while a write is in progress; still set afterwards if the write was abandoned (the
    /// future dropped or timed out), meaning a partial frame may be on the wire.
    in_write: bool,
}

/// A frame transport over split `AsyncRead`/`AsyncWrite` halves of one socket.
pub(crate) struct SocketTransport<R, W, S> {
    reader: Mutex<ReadState<R>>,
    writer: Mutex<WriteState<W>>,
    shutdown: S,
    /// Cleared on close and on any fatal error.
    connected: AtomicBool,
    /// Set by `close`.
    closed: AtomicBool,
    /// Bytes of a frame not yet whole, as of the last read.
    partial: AtomicUsize,
    stats: StatsCounters,
    settings: SocketSettings,
}

/// Runs `f` under an optional timeout.
async fn timed<T>(
    timeout: Option<Duration>,
    f: impl Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    match timeout {
        None => f.await,
        Some(d) => tokio::time::timeout(d, f)
            .await
            .unwrap_or(Err(TransportError::Timeout)),
    }
}

/// Writes `head` then `tail` with vectored writes (one syscall when the socket takes both).
async fn write_all_2<W: AsyncWrite + Unpin>(
    io: &mut W,
    mut head: &[u8],
    mut tail: &[u8],
) -> io::Result<()> {
    while !head.is_empty() {
        let n = io
            .write_vectored(&[IoSlice::new(head), IoSlice::new(tail)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < head.len() {
            head = &head[n..];
        } else {
            tail = &tail[n - head.len()..];
            head = &[];
        }
    }
    io.write_all(tail).await
}

impl<R, W, S> SocketTransport<R, W, S>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    S: Shutdown,
{
    pub(crate) fn new(read: R, write: W, shutdown: S, settings: SocketSettings) -> Self {
        Self {
            reader: Mutex::new(ReadState {
                io: read,
                decoder: FrameDecoder::new(settings.max_frame_size),
            }),
            writer: Mutex::new(WriteState {
                io: write,
                buf: BytesMut::new(),
                in_write: false,
            }),
            shutdown,
            connected: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            partial: AtomicUsize::new(0),
            stats: StatsCounters::default(),
            settings,
        }
    }

    pub(crate) fn max_frame_size(&self) -> usize {
        self.settings.max_frame_size
    }

    pub(crate) fn partial_frame(&self) -> usize {
        self.partial.load(Ordering::Relaxed)
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.is_connected()
    }

    pub(crate) fn stats(&self) -> TransportStats {
        self.stats.snapshot()
    }

    fn broken(&self, e: TransportError) -> TransportError {
        if e.is_fatal() {
            self.connected.store(false, Ordering::Release);
        }
        e
    }

    /// Takes the write lock and checks that the stream is still writable.
    async fn lock_writer(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, WriteState<W>>, TransportError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(TransportError::ConnectionClosed);
        }
        let w = self.writer.lock().await;
        if w.in_write {
            // An earlier send was abandoned mid-write: a partial frame may be on the wire.
            self.connected.store(false, Ordering::Release);
            return Err(TransportError::NotConnected);
        }
        Ok(w)
    }

    /// Writes `w.buf` (and `tail`, if any) under the write timeout, then accounts for it.
    async fn flush(
        &self,
        w: &mut WriteState<W>,
        tail: &[u8],
        frames: u64,
        bytes: usize,
    ) -> Result<(), TransportError> {
        let WriteState { io, buf, in_write } = w;
        *in_write = true;
        let res = timed(self.settings.write_timeout, async {
            if tail.is_empty() {
                io.write_all(buf).await
            } else {
                write_all_2(io, buf, tail).await
            }
            .map_err(TransportError::send)
        })
        .await;
        buf.clear();
        if buf.capacity() > MAX_RETAINED_WRITE_BUF {
            *buf = BytesMut::new();
        }
        match res {
            Ok(()) => {
                *in_write = false;
                self.stats.sent(frames, bytes);
                Ok(())
            }
            Err(e) => {
                // A partial frame may be on the wire: the stream is unusable for sends.
                self.connected.store(false, Ordering::Release);
                Err(self.stats.send_error(e))
            }
        }
    }

    pub(crate) async fn send_frame(&self, frame: &[u8]) -> Result<(), TransportError> {
        check_len(frame.len(), self.settings.max_frame_size)?;
        let mut w = self.lock_writer().await?;
        let prefix = (frame.len() as u32).to_le_bytes();
        w.buf.extend_from_slice(&prefix);
        if frame.len() <= COPY_THRESHOLD {
            w.buf.extend_from_slice(frame);
            self.flush(&mut w, &[], 1, frame.len()).await
        } else {
            self.flush(&mut w, frame, 1, frame.len()).await
        }
    }

    pub(crate) async fn send_frames(&self, frames: &[&[u8]]) -> Result<(), TransportError> {
        for f in frames {
            check_len(f.len(), self.settings.max_frame_size)?;
        }
        let mut w = self.lock_writer().await?;
        let (mut n, mut bytes) = (0u64, 0usize);
        for f in frames {
            w.buf.extend_from_slice(&(f.len() as u32).to_le_bytes());
            n += 1;
            bytes += f.len();
            if f.len() <= COPY_THRESHOLD {
                w.buf.extend_from_slice(f);
            } else {
                self.flush(&mut w, f, n, bytes).await?;
                (n, bytes) = (0, 0);
            }
        }
        if w.buf.is_empty() {
            return Ok(());
        }
        self.flush(&mut w, &[], n, bytes).await
    }

    pub(crate) async fn send_frame_with<F, E>(&self, encode: F) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        let mut w = self.lock_writer().await?;
        if let Err(e) = encode(&mut w.buf) {
            w.buf.clear();
            return Err(e);
        }
        match check_prefixed(&w.buf, self.settings.max_frame_size) {
            Ok(len) => Ok(self.flush(&mut w, &[], 1, len).await?),
            Err(e) => {
                w.buf.clear();
                Err(e.into())
            }
        }
    }

    pub(crate) async fn send_batch_with<F, E>(&self, encode: F) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        let mut w = self.lock_writer().await?;
        if let Err(e) = encode(&mut w.buf) {
            w.buf.clear();
            return Err(e);
        }
        match check_prefixed_batch(&w.buf, self.settings.max_frame_size) {
            Ok((0, _)) => Ok(()),
            Ok((n, len)) => Ok(self.flush(&mut w, &[], n, len).await?),
            Err(e) => {
                w.buf.clear();
                Err(e.into())
            }
        }
    }

    pub(crate) async fn recv_frame(&self) -> Result<Bytes, TransportError> {
        let mut frame = None;
        self.recv_frames_with(1, |f| frame = Some(f)).await?;
        frame.ok_or_else(|| TransportError::Protocol("no frame received".into()))
    }

    /// See [`FrameTransport::recv_frames_with`](super::FrameTransport::recv_frames_with).
    pub(crate) async fn recv_frames_with<F: FnMut(Bytes)>(
        &self,
        max: usize,
        mut each: F,
    ) -> Result<usize, TransportError> {
        let mut r = self.reader.lock().await;
        let res = timed(self.settings.read_timeout, async {
            let ReadState { io, decoder } = &mut *r;
            loop {
                match decoder.poll_frame() {
                    Ok(Some(frame)) => return Ok(frame),
                    Ok(None) => {}
                    Err(FrameError::TooLarge { len, max }) => {
                        return Err(TransportError::MessageTooLarge { size: len, max });
                    }
                    Err(e) => return Err(TransportError::Protocol(e.to_string())),
                }
                // Room grows with the bytes that arrive, not with a length prefix alone.
                let n = io
                    .read_buf(decoder.read_buffer())
                    .await
                    .map_err(TransportError::recv)?;
                self.partial
                    .store(decoder.partial_bytes(), Ordering::Relaxed);
                if n == 0 {
                    if decoder.buffered() == 0 {
                        return Err(TransportError::ConnectionClosed);
                    }
                    return Err(TransportError::ReceiveFailed(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "peer closed the stream {} bytes into a frame",
                            decoder.buffered()
                        ),
                    )));
                }
            }
        })
        .await;
        match res {
            Ok(frame) => {
                self.stats.received(frame.len());
                each(frame);
                let mut n = 1;
                // Frames already buffered behind it; a decode error stays in the decoder
                // for the next call.
                while n < max {
                    match r.decoder.poll_frame() {
                        Ok(Some(frame)) => {
                            self.stats.received(frame.len());
                            each(frame);
                            n += 1;
                        }
                        _ => break,
                    }
                }
                self.partial
                    .store(r.decoder.partial_bytes(), Ordering::Relaxed);
                Ok(n)
            }
            Err(e @ TransportError::MessageTooLarge { .. }) => {
                // The decoder's error is sticky: the stream is out of sync for good.
                self.connected.store(false, Ordering::Release);
                Err(self.stats.recv_error(e))
            }
            Err(e) => Err(self.broken(self.stats.recv_error(e))),
        }
    }

    pub(crate) async fn close(&self) -> Result<(), TransportError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.connected.store(false, Ordering::Release);
        match self.shutdown.shutdown_both() {
            Ok(()) => Ok(()),
            // The peer got there first.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(e) => Err(TransportError::SendFailed(e)),
        }
    }
}
