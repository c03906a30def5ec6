//! What the client and the server share of a connection: the state (the session and the
//! threads waiting on it) under one lock, the writer that whichever thread has output uses,
//! and feeding input to the session.
//!
//! Lock order: the reader or the writer first, then the state — never the other way round.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use xrpc_proto::Session;

use crate::transport::{Chunk, Close, Io, Reader, Writer};

/// A write buffer grown beyond this by a large frame is released after the write.
const KEEP_WRITE_BUF: usize = 1 << 20;

/// A connection's state as [`Link`] drives it: the client's or the server's.
pub(crate) trait Driven: Send {
    type Session: Session;
    fn session(&mut self) -> &mut Self::Session;
    /// Routes the session's events to the threads waiting for them (and wakes them).
    fn route(&mut self);
}

/// A connection: its state, and the transport's writer and closer.
pub(crate) struct Link<S> {
    state: Mutex<S>,
    writer: Mutex<(Box<dyn Writer>, BytesMut)>,
    /// Ends the transport: a blocked read returns.
    pub(crate) closer: Box<dyn Close>,
}

impl<S: Driven> Link<S> {
    /// The link over `io`, and the reader, for the thread that reads.
    pub(crate) fn new(state: S, io: Io) -> (Self, Box<dyn Reader>) {
        let link = Self {
            state: Mutex::new(state),
            writer: Mutex::new((io.writer, BytesMut::new())),
            closer: io.closer,
        };
        (link, io.reader)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes everything the session has to send. Concurrent callers queue on the writer, so
    /// the session's output is written in its order; a failed write ends the session.
    pub(crate) fn flush(&self) {
        let mut guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let (writer, out) = &mut *guard;
        loop {
            let more = self.lock().session().poll_transmit(out);
            if !more {
                break;
            }
            let res = writer.write(out);
            out.clear();
            if out.capacity() > KEEP_WRITE_BUF {
                *out = BytesMut::new();
            }
            if let Err(e) = res {
                let mut st = self.lock();
                st.session().handle_transport_error(&e.to_string());
                st.route();
                break;
            }
        }
        drop(guard);
        if self.lock().session().is_closed() {
            self.closer.close();
        }
    }

    /// Waits at most `timeout` for input on `reader` and feeds it to the session, fires its
    /// timers if they are due, and routes what came of it.
    pub(crate) fn read(&self, reader: &mut dyn Reader, timeout: Option<Duration>) {
        let res = reader.read(timeout, &mut |chunk| match chunk {
            Chunk::Bytes(b) => self.lock().session().handle_bytes(Instant::now(), b),
            Chunk::Frame(f) => self.lock().session().handle_frame(Instant::now(), f),
        });
        let mut st = self.lock();
        let now = Instant::now();
        let session = st.session();
        match res {
            Ok(true) => {}
            Ok(false) => session.handle_eof(now),
            Err(e) => session.handle_transport_error(&e.to_string()),
        }
        fire_timers(session, now);
        st.route();
    }
}

/// Fires the session's timers if they are due; returns how long until the next one.
pub(crate) fn fire_timers(session: &mut impl Session, now: Instant) -> Option<Duration> {
    if session.poll_timeout().is_some_and(|t| t <= now) {
        session.handle_timeout(now);
    }
    session
        .poll_timeout()
        .map(|t| t.saturating_duration_since(now))
}
