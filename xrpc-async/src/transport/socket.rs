//! The socket frame transport shared by TCP and Unix (a byte stream of length-prefixed
//! frames), over any reactor's [`Socket`].
//!
//! The socket is read and written through `&self`; the [`xrpc_proto::FrameDecoder`] sits
//! behind one lock, the reusable write buffer behind another, so one task can wait for frames
//! while others send. Reads go straight into the decoder's buffer (the socket read is the
//! only copy); a small frame is written as prefix + payload from one buffer in one write.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::lock::{Mutex, MutexGuard};
use xrpc_proto::{FrameDecoder, FrameError, ReadBudget, RetryPolicy, SkippedFrame, TlsRecord};

use super::batch::{Behind, hand_out, report_skipped};
use super::{
    CheckEncoded, StatsCounters, TransportError, TransportStats, check_len, check_one_prefixed,
    check_prefixed_batch,
};
use crate::reactor::Socket;
use crate::runtime::Runtime;
use crate::time;

/// Frames larger than this are written from the caller's slice (vectored with the prefix)
/// instead of being copied into the write buffer.
const COPY_THRESHOLD: usize = 64 * 1024;
/// A write buffer grown beyond this by a large encoded frame is released after the write.
const MAX_RETAINED_WRITE_BUF: usize = 1024 * 1024;

/// Stream settings shared by TCP and Unix configurations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SocketSettings {
    pub(crate) max_frame_size: usize,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
}

struct ReadState<R: Runtime> {
    decoder: FrameDecoder,
    /// A frame over the maximum skipped behind frames already handed out: reported by the
    /// next receive.
    skipped: Option<SkippedFrame>,
    /// The read timeout's timer, made at the first timed read and reset for each.
    timer: Option<R::Timer>,
    /// The stream's first read has been looked at for a TLS record ([`sniff_tls`]).
    sniffed: bool,
}

struct WriteState<R: Runtime> {
    buf: BytesMut,
    /// Set while a write is in progress; still set afterwards if the write was abandoned (the
    /// future dropped or timed out), meaning a partial frame may be on the wire.
    in_write: bool,
    /// The write timeout's timer, as for reads.
    timer: Option<R::Timer>,
}

/// A frame transport over one stream socket of reactor `R`.
pub(crate) struct SocketTransport<S, R: Runtime> {
    io: S,
    /// The runtime whose timers and clock bound reads, writes and connects.
    rt: R,
    reader: Mutex<ReadState<R>>,
    writer: Mutex<WriteState<R>>,
    /// Cleared on close and on any fatal error.
    connected: AtomicBool,
    /// Set by `close`.
    closed: AtomicBool,
    /// Bytes of a frame not yet whole, as of the last read.
    partial: AtomicUsize,
    /// Bytes of the write under way not yet written.
    unwritten: AtomicUsize,
    /// A read budget given while a read was under way, for the next read to take up.
    new_budget: std::sync::Mutex<Option<ReadBudget>>,
    /// `new_budget` holds one (no lock on the read path otherwise).
    budget_waits: AtomicBool,
    stats: StatsCounters,
    settings: SocketSettings,
}

/// Runs `f` under an optional timeout, on `timer`.
async fn timed<R: Runtime, T>(
    rt: &R,
    timer: &mut Option<R::Timer>,
    timeout: Option<Duration>,
    f: impl Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    match timeout {
        None => f.await,
        Some(d) => time::until(rt, timer, rt.now() + d, f)
            .await
            .unwrap_or(Err(TransportError::Timeout)),
    }
}

/// Writes `head` then `tail` with vectored writes (one system call when the socket takes
/// both), keeping `unwritten` up to date.
async fn write_all<S: Socket<R>, R>(
    io: &S,
    mut head: &[u8],
    mut tail: &[u8],
    unwritten: &AtomicUsize,
) -> io::Result<()> {
    while !head.is_empty() || !tail.is_empty() {
        unwritten.store(head.len() + tail.len(), Ordering::Relaxed);
        let n = poll_fn(|cx| io.poll_write_vectored(cx, &[IoSlice::new(head), IoSlice::new(tail)]))
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
    Ok(())
}

impl<S: Socket<R>, R: Runtime> SocketTransport<S, R> {
    pub(crate) fn new(io: S, settings: SocketSettings, rt: R) -> Self {
        Self {
            rt,
            io,
            reader: Mutex::new(ReadState {
                decoder: FrameDecoder::new(settings.max_frame_size),
                skipped: None,
                timer: None,
                sniffed: false,
            }),
            writer: Mutex::new(WriteState {
                buf: BytesMut::new(),
                in_write: false,
                timer: None,
            }),
            connected: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            partial: AtomicUsize::new(0),
            unwritten: AtomicUsize::new(0),
            new_budget: std::sync::Mutex::new(None),
            budget_waits: AtomicBool::new(false),
            stats: StatsCounters::default(),
            settings,
        }
    }

    pub(crate) fn max_frame_size(&self) -> usize {
        self.settings.max_frame_size
    }

    /// The socket.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn socket(&self) -> &S {
        &self.io
    }

    pub(crate) fn partial_frame(&self) -> usize {
        self.partial.load(Ordering::Relaxed)
    }

    pub(crate) fn unwritten(&self) -> usize {
        self.unwritten.load(Ordering::Relaxed)
    }

    /// See [`FrameTransport::set_read_budget`](super::FrameTransport::set_read_budget): takes
    /// effect at once, or at the next read if one is under way.
    pub(crate) fn set_read_budget(&self, budget: ReadBudget) {
        match self.reader.try_lock() {
            Some(mut r) => r.decoder.set_budget(budget),
            None => {
                *self.lock_new_budget() = Some(budget);
                self.budget_waits.store(true, Ordering::Release);
            }
        }
    }

    fn lock_new_budget(&self) -> std::sync::MutexGuard<'_, Option<ReadBudget>> {
        self.new_budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    async fn lock_writer(&self) -> Result<MutexGuard<'_, WriteState<R>>, TransportError> {
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
        w: &mut WriteState<R>,
        tail: &[u8],
        frames: u64,
        bytes: usize,
    ) -> Result<(), TransportError> {
        let WriteState {
            buf,
            in_write,
            timer,
        } = w;
        *in_write = true;
        let res = timed(&self.rt, timer, self.settings.write_timeout, async {
            write_all(&self.io, buf, tail, &self.unwritten)
                .await
                .map_err(TransportError::send)
        })
        .await;
        self.unwritten.store(0, Ordering::Relaxed);
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
        self.send_encoded(encode, check_one_prefixed).await
    }

    pub(crate) async fn send_batch_with<F, E>(&self, encode: F) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        self.send_encoded(encode, check_prefixed_batch).await
    }

    /// Writes what `encode` put in the write buffer once `check` (given the buffer and the
    /// maximum frame size) says how many frames and payload bytes it holds.
    async fn send_encoded<F, E>(&self, encode: F, check: CheckEncoded) -> Result<(), E>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), E> + Send,
        E: From<TransportError> + Send,
    {
        let mut w = self.lock_writer().await?;
        if let Err(e) = encode(&mut w.buf) {
            w.buf.clear();
            return Err(e);
        }
        match check(&w.buf, self.settings.max_frame_size) {
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
        let ReadState {
            decoder,
            skipped,
            timer,
            sniffed,
        } = &mut *r;
        report_skipped(skipped, &self.stats)?;
        let res = timed(&self.rt, timer, self.settings.read_timeout, async {
            loop {
                match decoder.poll_frame() {
                    Ok(Some(frame)) => return Ok(frame),
                    Ok(None) => {}
                    Err(FrameError::Skipped(frame)) => {
                        self.partial
                            .store(decoder.partial_bytes(), Ordering::Relaxed);
                        return Err(TransportError::FrameSkipped(frame));
                    }
                    Err(e) => return Err(TransportError::Protocol(e.to_string())),
                }
                // Room grows with the bytes that arrive, not with a length prefix alone; with
                // a read budget, only while the budget has it (the caller is woken when it
                // has again, see `set_read_budget`).
                if self.budget_waits.load(Ordering::Acquire)
                    && self.budget_waits.swap(false, Ordering::AcqRel)
                    && let Some(budget) = self.lock_new_budget().take()
                {
                    decoder.set_budget(budget);
                }
                let n = poll_fn(|cx| match decoder.try_read_buffer() {
                    Some(buf) => self.io.poll_read(cx, buf),
                    None => Poll::Pending,
                })
                .await
                .map_err(TransportError::recv)?;
                self.partial
                    .store(decoder.partial_bytes(), Ordering::Relaxed);
                if !*sniffed {
                    *sniffed = true;
                    sniff_tls(decoder)?;
                }
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
                // Frames already buffered behind it.
                let n = hand_out(
                    frame,
                    max,
                    &self.stats,
                    skipped,
                    &mut each,
                    || match decoder.poll_frame() {
                        Ok(Some(frame)) => Behind::Frame(frame),
                        Err(FrameError::Skipped(frame)) => Behind::Skipped(frame),
                        _ => Behind::Nothing,
                    },
                );
                self.partial
                    .store(decoder.partial_bytes(), Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => Err(self.broken(self.stats.recv_error(e))),
        }
    }

    /// Shuts the socket down in both directions (no lock is taken, so a blocked read or
    /// write wakes up).
    pub(crate) async fn close(&self) -> Result<(), TransportError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.connected.store(false, Ordering::Release);
        match rustix::net::shutdown(self.io.as_fd(), rustix::net::Shutdown::Both) {
            Ok(()) => Ok(()),
            // The peer got there first.
            Err(rustix::io::Errno::NOTCONN) => Ok(()),
            Err(e) => Err(TransportError::SendFailed(e.into())),
        }
    }
}

/// Refuses a stream whose first read is a TLS record (see [`xrpc_proto::tls_record_at_start`]):
/// a TLS peer at a plaintext transport, told at once with a [`TransportError::Tls`] instead of
/// waiting for a frame that never comes whole. Looks at the first read only (a TLS record
/// comes in one).
fn sniff_tls(decoder: &mut FrameDecoder) -> Result<(), TransportError> {
    let reason = match xrpc_proto::tls_record_at_start(decoder.buffer_mut()) {
        None => return Ok(()),
        Some(TlsRecord::ClientHello) => {
            "the peer opened a TLS handshake; this end speaks plaintext \
             (serve with TlsFrameTransportListener, or connect without TLS)"
        }
        Some(TlsRecord::Alert) => {
            "the peer answered with a TLS alert: it speaks TLS and this end plaintext \
             (connect with TlsFrameTransport)"
        }
    };
    Err(TransportError::tls("on a plaintext stream", reason))
}

/// Runs `connect` up to `max_attempts` times (at least once), each bounded by `timeout`,
/// sleeping per `policy` between attempts. Returns the last error if all fail.
pub(crate) async fn connect_with_retry<R, S, F, Fut>(
    rt: &R,
    what: &(dyn std::fmt::Display + Sync),
    timeout: Duration,
    max_attempts: u32,
    policy: RetryPolicy,
    mut connect: F,
) -> Result<S, TransportError>
where
    R: Runtime,
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<S>>,
{
    let attempts = max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let err = match time::within(rt, timeout, connect()).await {
            Some(Ok(s)) => return Ok(s),
            Some(Err(e)) => TransportError::ConnectionFailed(format!(
                "connect to {what} failed (attempt {attempt}/{attempts}): {e}"
            )),
            None => TransportError::Timeout,
        };
        if attempt >= attempts {
            return Err(err);
        }
        time::sleep(rt, policy.delay(attempt)).await;
        attempt += 1;
    }
}
