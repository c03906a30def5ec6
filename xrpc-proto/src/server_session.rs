//! [`ServerSession`]: the server end of one connection — bytes in, bytes out.
//!
//! It owns the whole protocol of the connection: framing and message coding, the calls
//! ([`ServerConnection`]), what each streaming call has received and how it ended (its
//! [`call`] record, until the application releases it), method routing with
//! call-kind and codec admission, a handler's outcome checked against its deadline, what
//! happens to an answer that cannot be sent, when to stop reading (backlog), graceful shutdown
//! with its drain deadline, and closing with its flush grace. The adapter runs handlers, moves
//! bytes, keeps time and wakes:
//!
//! ```text
//! loop {
//!     if wants_read(): read     -> read_buffer() + handle_read(now)   (or handle_frame / handle_eof)
//!     the clock                 -> handle_timeout(now) at poll_timeout()
//!     poll_event(&routes)       -> start or stop handlers, wake a call's waiters;
//!                                  a handler's end -> complete(now, id, outcome)
//!     poll_transmit(&mut buf)   -> write buf (call again once it is written)
//!     is_closed()               -> close the transport, stop the handlers still running
//! }
//! ```
//!
//! A handler's streams ask the session itself: [`next_item`](ServerSession::next_item),
//! [`send_item`](ServerSession::send_item) — each answer decided here (see
//! [`call`]), the same for every adapter.

use std::collections::VecDeque;
use std::task::Poll;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::client::CallKind;

use crate::budget::{OutputBudget, ReadBudget, ServerBounds};
use crate::call::{self, CallRecord, CallWake, SendError};
use crate::client::CallError;
use crate::codec::{CodecId, answer_codec, codec_name};
use crate::compression::DecompressionBudget;
use crate::flow::StreamSendError;
use crate::frame::FrameError;
use crate::idmap::{IdMap, id_map};
use crate::message::Header;
use crate::message::{ErrorCode, FIXED_HEADER_LEN, MessageKind, RemoteError};
use crate::metadata::Metadata;
use crate::packet::{Body, Packet};
use crate::payload::Payload;
use crate::rate::DecompressionRate;
use crate::route::Routes;
use crate::server::{IncomingCall, ProtocolViolation, ServerConfig, ServerConnection, ServerEvent};
use crate::skipped::SkippedFrame;
use crate::stall::WriteStall;
use crate::stats::NotificationDrop;
use crate::wire::{Decoded, Unsendable, Wire, WireConfig};

/// What the adapter learns from a [`ServerSession`].
#[derive(Debug)]
pub enum ServerSessionEvent<H> {
    /// Run `handler` for `call`, then report its [`HandlerOutcome`] with
    /// [`ServerSession::complete`].
    Call {
        /// The call.
        call: IncomingCall<Payload>,
        /// Its handler, from the routes.
        handler: H,
    },
    /// Run `handler` for a notification (no answer is possible), then report
    /// [`ServerSession::notification_done`]: it counts against the concurrency limit until then.
    /// A [`NotificationStopped`](Self::NotificationStopped) with its token says to stop it.
    Notification {
        /// Its handle on this connection (not a call id).
        token: u64,
        /// The method name.
        method: Bytes,
        /// The payload.
        payload: Payload,
        /// Its metadata.
        metadata: Metadata,
        /// Its handler, from the routes.
        handler: H,
    },
    /// Stop the handler of call `id` (and wake its streams' waiters): the client cancelled,
    /// its deadline passed, its answer could not be sent, the drain deadline passed, or the
    /// connection closed. Its outcome is no longer wanted.
    Cancelled {
        /// The call.
        id: u64,
    },
    /// Wake waiters of a streaming call: an item or the end of the client's stream arrived,
    /// the server stream may send again, or the call is over.
    Wake(CallWake),
    /// Stop the handler of notification `token`: it ran past its deadline
    /// ([`ServerConfig::notification_timeout`]), or the connection is closing.
    NotificationStopped {
        /// The notification.
        token: u64,
    },
}

/// How a handler ended.
#[derive(Debug)]
pub enum HandlerOutcome {
    /// A unary or client-streaming handler's response.
    Response(Payload),
    /// A server-streaming or bidirectional handler finished: the stream ends normally.
    StreamEnd,
    /// The handler failed.
    Error(RemoteError),
    /// The handler panicked, with this message.
    Panic(String),
}

/// Why a server session closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the connection.
    PeerClosed,
    /// A graceful shutdown finished.
    Shutdown,
    /// The client broke the protocol (malformed message, framing, flow control…).
    Protocol(String),
    /// The transport failed.
    Transport(String),
    /// The connection was idle past [`ServerConfig::idle_timeout`], a frame was not whole
    /// within [`ServerConfig::frame_timeout`], or a write made no progress within
    /// [`ServerConfig::write_stall_timeout`].
    TimedOut(String),
    /// The listener reclaimed the idle connection for a newcomer (see
    /// [`Admission`](crate::admission::Admission)).
    Reclaimed,
}

impl CloseReason {
    /// Whether the connection ended other than by its client closing it or a graceful
    /// shutdown (what a log reports as a warning): a broken protocol, a failed transport, a
    /// timeout, a reclaim. Serving it is an error only for the first two ([`crate::served`]).
    pub fn is_abnormal(&self) -> bool {
        !matches!(self, Self::PeerClosed | Self::Shutdown)
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PeerClosed => f.write_str("the client closed the connection"),
            Self::Shutdown => f.write_str("the server shut down"),
            Self::Protocol(m) => write!(f, "the client broke the protocol: {m}"),
            Self::Transport(m) => write!(f, "connection lost: {m}"),
            Self::TimedOut(m) => write!(f, "timed out: {m}"),
            Self::Reclaimed => f.write_str("the idle connection was reclaimed for a new one"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Open,
    /// Shutting down: new calls are refused, calls in progress may finish until `until`.
    Draining {
        until: Instant,
    },
    /// No more input is read; calls in progress are answered and what is queued is written,
    /// until `until`.
    Closing {
        until: Instant,
    },
    Closed,
}

/// The server end of one connection (see the [module docs](self)).
#[derive(Debug)]
pub struct ServerSession {
    calls: ServerConnection<Payload>,
    wire: Wire,
    config: ServerConfig,
    codec: CodecId,
    life: Life,
    reason: Option<CloseReason>,
    /// Calls the session itself stopped (their answer could not be sent).
    cancelled: VecDeque<u64>,
    /// The record of each streaming call started, until the application releases it.
    records: IdMap<CallRecord>,
    /// Calls whose waiters are to be woken (the session's own acts: a completed stream).
    wakes: VecDeque<CallWake>,
    /// Since when nothing was received and no call was in progress (for the idle deadline).
    quiet_since: Instant,
    /// Since when part of a frame is buffered (for the partial-frame deadline).
    partial_since: Option<Instant>,
    /// Output the transport holds unwritten (for the write-stall deadline).
    stall: WriteStall,
}

/// A codec's name and id, for error texts.
fn codec_label(id: CodecId) -> String {
    format!("{} ({id})", codec_name(id))
}

/// Whether a call of `method` carrying the fingerprint `sent` disagrees with the signature
/// registered for it. Without a fingerprint on either side there is nothing to check.
fn mismatch<R: Routes>(routes: &R, method: &str, sent: Option<u64>) -> bool {
    match (sent, routes.signature(method)) {
        (Some(fp), Some(sig)) => fp != sig.fingerprint,
        _ => false,
    }
}

pub(crate) fn kind_label(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Unary => "unary",
        CallKind::ServerStreaming => "server-streaming",
        CallKind::ClientStreaming => "client-streaming",
        CallKind::Bidirectional => "bidirectional",
    }
}

impl ServerSession {
    /// A session serving calls with codec `codec`; `now` starts its idle clock.
    pub fn new(config: ServerConfig, wire: WireConfig, codec: CodecId, now: Instant) -> Self {
        let budget = config
            .accept_compressed
            .then(|| DecompressionBudget::new(config.decompression_budget));
        let mut wire = Wire::new(wire, budget);
        if config.accept_compressed {
            wire.set_decompression_rate(DecompressionRate::new(config.decompression_rate, now));
        }
        Self {
            calls: ServerConnection::new(config),
            wire,
            config,
            codec,
            life: Life::Open,
            reason: None,
            cancelled: VecDeque::new(),
            records: id_map(),
            wakes: VecDeque::new(),
            quiet_since: now,
            partial_since: None,
            stall: WriteStall::default(),
        }
    }

    /// Shares the server-wide `bounds` (one per server, for all its connections): queued
    /// output, decompressed bytes held and inflated a second, handlers running. The read
    /// budget is not among them: it goes to whoever frames the input
    /// ([`set_read_budget`](Self::set_read_budget), or a transport that frames itself).
    pub fn set_bounds(&mut self, bounds: &ServerBounds) {
        self.calls.set_output_budget(bounds.output.clone());
        self.calls.set_handler_share(bounds.handlers.join());
        self.calls.set_counters(bounds.counters.clone());
        self.wire
            .share_decompression(&bounds.decompressed, bounds.decompression_rate.clone());
    }

    /// Counts what this connection does in the server's `counters` (as
    /// [`set_bounds`](Self::set_bounds) does with the bounds' counters).
    pub fn set_counters(&mut self, counters: crate::stats::ServerCounters) {
        self.calls.set_counters(counters);
    }

    /// Charges what this connection queues to the server-wide `budget` too
    /// ([`ServerConfig::max_queued_output_total`]).
    pub fn set_output_budget(&mut self, budget: OutputBudget) {
        self.calls.set_output_budget(budget);
    }

    /// Takes room for frames not yet whole in [`read_buffer`](Self::read_buffer) from the
    /// server-wide `budget` ([`ServerConfig::max_read_buffers_total`]): while it has none,
    /// [`wants_read`](Self::wants_read) says no. (A transport that does its own framing takes
    /// it there instead.)
    pub fn set_read_budget(&mut self, budget: ReadBudget) {
        self.wire.set_read_budget(budget);
    }

    /// The server-wide output budget fell back (its [`OutputBudget::take_freed`] said so):
    /// streams that waited for it may try again.
    pub fn handle_budget_freed(&mut self) {
        self.calls.retry_budget_waiters();
    }

    /// Bytes of decompressed payloads the connection holds now (see
    /// [`ServerConfig::decompression_budget`]).
    pub fn decompressed_bytes(&self) -> usize {
        self.wire.decompressed_held()
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    // ---- transport input ---------------------------------------------------------------

    /// Whether the adapter should read more input now: not while closing, and not while the
    /// answers waiting to be sent exceed [`ServerConfig::max_transmit_backlog`] — every one of
    /// them answers something the client sent, so not reading bounds them — and not while
    /// the frame in [`read_buffer`](Self::read_buffer) needs room the server-wide read budget
    /// does not have ([`set_read_budget`](Self::set_read_budget)), and not while the
    /// connection has inflated past its [`ServerConfig::decompression_rate`] (until
    /// [`poll_timeout`](Self::poll_timeout)), and not while notifications it sent wait for a
    /// handler of its own to end ([`ServerConnection::holds_input`]).
    pub fn wants_read(&self) -> bool {
        matches!(self.life, Life::Open | Life::Draining { .. })
            && !self.calls.is_backlogged()
            && !self.calls.holds_input()
            && !self.wire.waits_for_read_budget()
            && self.wire.paused_until().is_none()
    }

    /// Whether input is awaited now (see [`ClientSession::awaits_input`](crate::ClientSession::awaits_input)):
    /// always, for a server — a client's next request may follow its last answer at once.
    pub fn awaits_input(&self) -> bool {
        true
    }

    /// The buffer to read transport bytes into (append only), followed by
    /// [`handle_read`](Self::handle_read).
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        self.wire.read_buffer()
    }

    /// Processes the bytes appended to [`read_buffer`](Self::read_buffer).
    pub fn handle_read(&mut self, now: Instant) {
        while self.reading() {
            match self.wire.next_frame() {
                Ok(Some(frame)) => self.handle_frame(now, frame),
                Ok(None) => break,
                Err(FrameError::Skipped(frame)) => self.handle_skipped(now, &frame),
                Err(e) => return self.protocol_error(now, format!("framing: {e}")),
            }
        }
        let partial = self.wire.partial_bytes();
        self.handle_partial(now, partial);
    }

    /// The transport holds `bytes` of a frame that is not whole yet (from a transport that
    /// does its own framing; 0 when none): a frame not whole within
    /// [`ServerConfig::frame_timeout`] of its first bytes closes the connection.
    pub fn handle_partial(&mut self, now: Instant, bytes: usize) {
        if bytes == 0 {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
    }

    /// Appends received bytes and processes them.
    pub fn handle_bytes(&mut self, now: Instant, data: &[u8]) {
        self.wire.push_bytes(data);
        self.handle_read(now);
    }

    /// A frame longer than the maximum was skipped (by this session's framing, or by a
    /// transport that frames itself, [`TransportError::FrameSkipped`](crate::TransportError::FrameSkipped)):
    /// the message it carried fails alone — a request is answered `ResourceExhausted`, a
    /// stream item ends its call, a notification is dropped — and the connection goes on. A
    /// frame that is no xrpc message at all ends the input like a malformed one.
    pub fn handle_skipped(&mut self, now: Instant, frame: &SkippedFrame) {
        if !self.reading() {
            return;
        }
        let Some((kind, id)) = frame.addressee() else {
            return self.protocol_error(now, format!("malformed message: {frame}, no header"));
        };
        let error = RemoteError::new(
            ErrorCode::ResourceExhausted,
            format!(
                "a message of {} bytes exceeds the server's maximum frame size {}",
                frame.len, frame.max
            ),
        );
        self.refused(now, &Header::new(kind, id), error);
    }

    /// The transport holds `bytes` of output not yet written (0 when all is written): when
    /// that number does not fall for [`ServerConfig::write_stall_timeout`] — the client
    /// stopped reading — the connection closes.
    pub fn handle_unwritten(&mut self, now: Instant, bytes: usize) {
        self.stall.update(now, bytes);
    }

    fn reading(&self) -> bool {
        matches!(self.life, Life::Open | Life::Draining { .. })
    }

    /// Processes one whole frame. A frame that is not a valid message ends the input: what
    /// was read before it is still answered, then the connection closes.
    pub fn handle_frame(&mut self, now: Instant, frame: Bytes) {
        if !self.reading() {
            return;
        }
        self.partial_since = None;
        match self.wire.decode(now, frame) {
            Ok(Decoded::Packet(packet)) => self.handle_packet(now, packet),
            Ok(Decoded::Refused { header, error }) => self.refused(now, &header, error),
            Err(e) => self.protocol_error(now, format!("malformed message: {e}")),
        }
    }

    /// A compressed message that was not inflated fails what it belongs to.
    fn refused(&mut self, now: Instant, header: &Header, error: RemoteError) {
        self.quiet_since = now;
        match self.calls.refuse(header, error) {
            Ok(true) => self.cancelled.push_back(header.id),
            Ok(false) => {}
            Err(v) => self.violation(now, header.kind, v),
        }
    }

    /// The client broke the protocol with a message of `kind`. A request whose id is in use
    /// (the only violation a request can make) leaves the answers to that id ambiguous: the
    /// connection ends at once, its handlers stopped. Any other violation ends the input, and
    /// what was read before it is still answered.
    fn violation(&mut self, now: Instant, kind: MessageKind, v: ProtocolViolation) {
        if kind == MessageKind::Request {
            self.finish(CloseReason::Protocol(v.0));
        } else {
            self.protocol_error(now, v.0);
        }
    }

    /// Processes one packet (from the in-process value transport).
    pub fn handle_packet(&mut self, now: Instant, packet: Packet<Payload>) {
        if !self.reading() {
            return;
        }
        self.quiet_since = now;
        let kind = packet.header.kind;
        if let Err(v) = self.calls.handle_packet(now, packet) {
            self.violation(now, kind, v);
        }
        // A cancel may have ended the last call of a shutdown.
        self.check_drained(now);
    }

    /// The client closed its end: answers already queued are still written (a client that
    /// only half-closed reads them), then the connection closes.
    pub fn handle_eof(&mut self, now: Instant) {
        let partial = self.wire.partial_bytes();
        let reason = if partial == 0 {
            CloseReason::PeerClosed
        } else {
            CloseReason::Protocol(format!("end of input {partial} bytes into a frame"))
        };
        self.begin_closing(now, reason);
    }

    /// The transport failed: the session is over.
    pub fn handle_transport_error(&mut self, error: impl std::fmt::Display) {
        self.finish(CloseReason::Transport(error.to_string()));
    }

    fn protocol_error(&mut self, now: Instant, what: String) {
        self.begin_closing(now, CloseReason::Protocol(what));
    }

    /// Expires call deadlines, the drain deadline and the close grace. Call it at
    /// [`poll_timeout`](Self::poll_timeout) (early or late is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.wire.handle_timeout(now);
        if self.life != Life::Closed
            && let Some(at) = self.stall_deadline()
            && now >= at
        {
            // The client does not read: nothing more can reach it, not even a last answer.
            let what = self.stall.describe(self.config.write_stall_timeout);
            return self.finish(CloseReason::TimedOut(what));
        }
        if matches!(self.life, Life::Open | Life::Draining { .. }) {
            if let Some(at) = self.frame_deadline()
                && now >= at
            {
                let partial = self.wire.partial_bytes();
                let what = format!(
                    "a frame was not whole within {:?} of its first bytes{}",
                    self.config.frame_timeout.unwrap_or_default(),
                    if partial > 0 {
                        format!(" ({partial} bytes received)")
                    } else {
                        String::new()
                    }
                );
                // Mid-frame, the input cannot be trusted any more: the session ends now (its
                // handlers are stopped) instead of waiting out a grace for the peer.
                return self.finish(CloseReason::TimedOut(what));
            } else if let Some(at) = self.idle_deadline()
                && now >= at
            {
                let what = format!(
                    "no call and nothing received for {:?}",
                    self.config.idle_timeout.unwrap_or_default()
                );
                self.begin_closing(now, CloseReason::TimedOut(what));
            }
        }
        match self.life {
            Life::Open => self.calls.handle_timeout(now),
            Life::Draining { until } => {
                self.calls.handle_timeout(now);
                if now >= until {
                    self.calls.cancel_all(RemoteError::new(
                        ErrorCode::ShuttingDown,
                        "the server shut down before the call finished",
                    ));
                    self.begin_closing(now, CloseReason::Shutdown);
                }
            }
            Life::Closing { until } if now >= until => {
                let reason = self.reason.take().unwrap_or(CloseReason::Shutdown);
                self.finish(reason);
            }
            _ => {}
        }
        self.check_drained(now);
    }

    // ---- application input -------------------------------------------------------------

    /// Reports how call `id`'s handler ended. The outcome is checked against the call's
    /// deadline first: a late one is dropped (the client was answered `DeadlineExceeded`).
    /// Returns whether it was sent.
    pub fn complete(&mut self, now: Instant, id: u64, outcome: HandlerOutcome) -> bool {
        self.calls.handle_timeout(now);
        self.quiet_since = now;
        let sent = match outcome {
            HandlerOutcome::Response(payload) => self.calls.respond(id, payload, self.codec),
            HandlerOutcome::StreamEnd => self.calls.end_stream(id),
            HandlerOutcome::Error(e) => self.calls.respond_error(id, e),
            HandlerOutcome::Panic(msg) => self.calls.respond_error(
                id,
                RemoteError::new(ErrorCode::Panic, format!("the handler panicked: {msg}")),
            ),
        };
        // Its streams see the end (reads) or that it is over (sends).
        if let Some(r) = self.records.get_mut(&id)
            && !r.is_over()
        {
            r.end();
            self.wakes.push_back(CallWake::Ended(id));
        }
        self.check_drained(now);
        sent
    }

    /// The handler of notification `token` finished.
    pub fn notification_done(&mut self, now: Instant, token: u64) {
        self.calls.notification_done(token);
        self.quiet_since = now;
        self.check_drained(now);
    }

    /// The handler of notification `token` (of `method`) failed with `error`: counted as
    /// [`NotificationDrop::Undecodable`] if its payload could not be decoded
    /// (`BadRequest`), else [`NotificationDrop::HandlerFailed`]; then as
    /// [`notification_done`](Self::notification_done).
    pub fn notification_failed(
        &mut self,
        now: Instant,
        token: u64,
        method: &[u8],
        error: &RemoteError,
    ) {
        let reason = match error.code {
            ErrorCode::BadRequest => NotificationDrop::Undecodable,
            _ => NotificationDrop::HandlerFailed,
        };
        self.calls.notification_undelivered(method, reason);
        self.notification_done(now, token);
    }

    /// Queues one item of the server stream of call `id` (see [`call`]), if the
    /// client granted credit and the output budgets leave room; else `NoCredit` gives the item
    /// back until a [`CallWake::Send`]. A closing connection takes no more items: its client
    /// is gone or going, and only what was queued is written.
    pub fn send_item(&mut self, id: u64, payload: Payload) -> Result<(), SendError> {
        let Some(r) = self.records.get(&id) else {
            return Err(SendError::Over(CallError::Finished));
        };
        r.check_send().map_err(SendError::Over)?;
        if !self.reading() {
            let why = self
                .reason
                .as_ref()
                .map_or("the connection is closing".to_string(), |r| r.to_string());
            return Err(SendError::Over(CallError::Disconnected(why)));
        }
        match self.calls.send_stream_item(id, payload, self.codec) {
            Ok(()) => Ok(()),
            Err(StreamSendError::NoCredit(p)) => Err(SendError::NoCredit(p)),
            Err(StreamSendError::Closed(_)) => Err(SendError::Over(CallError::Finished)),
        }
    }

    /// The next item of the client stream of call `id` (see [`call`]): an item
    /// (the client is granted credit as items are taken), `None` at its normal end (or once
    /// the handler completed), `Err` why the call was stopped; `Pending` to wait.
    pub fn next_item(&mut self, id: u64) -> Poll<Option<Result<Payload, CallError>>> {
        call::next_item(&mut self.records, id, || self.calls.stream_consumed(id, 1))
    }

    /// Credit left on the server stream of call `id`.
    pub fn send_credit(&self, id: u64) -> Option<u64> {
        self.calls.send_credit(id)
    }

    /// The handler of call `id` will read no more of the client's stream: the items it never
    /// took are credited back, and later ones are dropped and credited on arrival.
    pub fn stream_abandoned(&mut self, id: u64) {
        let unread = self.records.get_mut(&id).map_or(0, |r| r.drop_items());
        self.calls
            .stream_abandoned(id, u32::try_from(unread).unwrap_or(u32::MAX));
    }

    /// The application released call `id` (its handler and streams are gone): the session
    /// forgets its record.
    pub fn release(&mut self, id: u64) {
        self.records.remove(&id);
    }

    /// Starts a graceful shutdown: new calls are answered `ShuttingDown`; calls in progress
    /// get [`ServerConfig::drain_timeout`] to finish, then are cancelled; then the connection
    /// closes once its answers are written (or [`ServerConfig::shutdown_flush_timeout`] passes).
    pub fn start_shutdown(&mut self, now: Instant) {
        if self.life != Life::Open {
            return;
        }
        self.calls.start_shutdown();
        self.life = Life::Draining {
            until: now + self.config.drain_timeout,
        };
        self.check_drained(now);
    }

    /// The listener reclaims the connection for a newcomer
    /// ([`Admission`](crate::admission::Admission)): idle, it closes at once; with a call in
    /// progress (one arrived since the listener looked), it shuts down gracefully, like
    /// [`start_shutdown`](Self::start_shutdown).
    pub fn reclaim(&mut self, now: Instant) {
        if self.calls.is_idle() {
            self.finish(CloseReason::Reclaimed);
        } else {
            self.start_shutdown(now);
        }
    }

    /// Whether no call is in progress and no notification handler runs (pings do not count).
    pub fn is_idle(&self) -> bool {
        self.calls.is_idle()
    }

    fn check_drained(&mut self, now: Instant) {
        if matches!(self.life, Life::Draining { .. }) && self.calls.is_idle() {
            self.begin_closing(now, CloseReason::Shutdown);
        }
    }

    fn begin_closing(&mut self, now: Instant, reason: CloseReason) {
        if matches!(self.life, Life::Open | Life::Draining { .. }) {
            // Nothing can be answered for a notification: its handler stops now.
            self.calls.stop_notifications();
            self.reason = Some(reason);
            self.life = Life::Closing {
                until: now + self.config.shutdown_flush_timeout,
            };
        }
    }

    /// The session is over: handlers still running are told to stop.
    fn finish(&mut self, reason: CloseReason) {
        if self.life == Life::Closed {
            return;
        }
        let why = reason.to_string();
        self.reason = Some(reason);
        self.life = Life::Closed;
        self.calls.handle_close(&why);
    }

    // ---- output ------------------------------------------------------------------------

    /// Whether [`poll_event`](Self::poll_event) may have an event (then routing needs the
    /// method table; a call may still be refused there, and give none).
    pub fn has_event(&self) -> bool {
        !self.cancelled.is_empty() || !self.wakes.is_empty() || self.calls.has_event()
    }

    /// The next event, with method routing applied: a request for an unknown method, of the
    /// wrong call kind or in a codec this server does not speak is answered here, and never
    /// reaches the adapter.
    pub fn poll_event<R: Routes>(&mut self, routes: &R) -> Option<ServerSessionEvent<R::Handler>> {
        if let Some(id) = self.cancelled.pop_front() {
            return Some(ServerSessionEvent::Cancelled { id });
        }
        if let Some(wake) = self.wakes.pop_front() {
            return Some(ServerSessionEvent::Wake(wake));
        }
        loop {
            let ev = self.calls.poll_event()?;
            return Some(match ev {
                ServerEvent::Request(call) => match self.admit(&call, routes) {
                    Ok(handler) => {
                        if call.kind != CallKind::Unary {
                            self.records.insert(call.id, CallRecord::new(call.kind));
                        }
                        ServerSessionEvent::Call { call, handler }
                    }
                    Err(e) => {
                        self.calls.respond_error(call.id, e);
                        continue;
                    }
                },
                ServerEvent::Notification {
                    token,
                    method,
                    codec,
                    payload,
                    metadata,
                    signature,
                } => {
                    let name = std::str::from_utf8(&method).unwrap_or_default();
                    let drop = match routes.route(name) {
                        None => NotificationDrop::UnknownMethod,
                        Some((CallKind::Unary, _)) if !self.speaks(codec) => {
                            NotificationDrop::Unsupported
                        }
                        Some((CallKind::Unary, _)) if mismatch(routes, name, signature) => {
                            NotificationDrop::TypeMismatch
                        }
                        Some((CallKind::Unary, handler)) => {
                            return Some(ServerSessionEvent::Notification {
                                token,
                                method,
                                payload,
                                metadata,
                                handler,
                            });
                        }
                        Some(_) => NotificationDrop::WrongKind,
                    };
                    // Nothing can be answered to a notification: it is dropped, and counted.
                    self.calls.notification_undelivered(&method, drop);
                    self.calls.notification_done(token);
                    continue;
                }
                ServerEvent::NotificationStopped { token } => {
                    ServerSessionEvent::NotificationStopped { token }
                }
                ServerEvent::Cancelled { id, reason } => {
                    if let Some(r) = self.records.get_mut(&id) {
                        r.fail(reason, false);
                    }
                    ServerSessionEvent::Cancelled { id }
                }
                ServerEvent::StreamItem { id, payload } => {
                    let Some(r) = self.records.get_mut(&id) else {
                        // Nobody will take it: taken now, so the client's credit flows.
                        self.calls.stream_consumed(id, 1);
                        continue;
                    };
                    r.push_item(payload);
                    ServerSessionEvent::Wake(CallWake::Recv(id))
                }
                ServerEvent::StreamEnd { id } => {
                    let Some(r) = self.records.get_mut(&id) else {
                        continue;
                    };
                    r.peer_ended();
                    ServerSessionEvent::Wake(CallWake::Recv(id))
                }
                ServerEvent::SendCredit { id } => ServerSessionEvent::Wake(CallWake::Send(id)),
            });
        }
    }

    fn speaks(&self, codec: CodecId) -> bool {
        codec == self.codec || codec == 0
    }

    /// Routing and admission of a request.
    fn admit<R: Routes>(
        &self,
        call: &IncomingCall<Payload>,
        routes: &R,
    ) -> Result<R::Handler, RemoteError> {
        let method = call.method_str();
        let Some((kind, handler)) = routes.route(method) else {
            // The message is the method name (PROTOCOL.md §5).
            return Err(RemoteError::new(ErrorCode::MethodNotFound, method));
        };
        if kind != call.kind {
            return Err(RemoteError::new(
                ErrorCode::Unsupported,
                format!(
                    "method {method} is {}, called as {}",
                    kind_label(kind),
                    kind_label(call.kind)
                ),
            ));
        }
        // A unary call may come in any built-in codec the server has (answered in it); a
        // stream's items are the server's codec's (PROTOCOL.md, "Codecs").
        let spoken = match kind {
            CallKind::Unary => answer_codec(self.codec, call.codec).is_some(),
            _ => self.speaks(call.codec),
        };
        if !spoken {
            return Err(RemoteError::new(
                ErrorCode::Unsupported,
                format!(
                    "method {method} was called with codec {}; this server speaks {}{}",
                    codec_label(call.codec),
                    codec_label(self.codec),
                    if kind == CallKind::Unary {
                        " and the built-in codecs it was built with"
                    } else {
                        " for streams"
                    }
                ),
            ));
        }
        if mismatch(routes, method, call.signature) {
            // The message is the server's signature text (PROTOCOL.md §5).
            let text = routes.signature(method).map_or("", |s| s.text);
            return Err(RemoteError::new(ErrorCode::TypeMismatch, text));
        }
        Ok(handler)
    }

    /// Appends queued answers to `out` as length-prefixed frames (up to about
    /// [`TRANSMIT_BATCH`](crate::TRANSMIT_BATCH) bytes); returns whether it appended any. Call it again once the
    /// bytes it gave have been written: a closing session learns from an empty call that
    /// everything was written, and closes.
    ///
    /// An answer that cannot be encoded (too large, say) fails only its call: the client is
    /// answered with an error instead, and the handler is cancelled.
    pub fn poll_transmit(&mut self, out: &mut BytesMut) -> bool {
        let start = out.len();
        // Nothing queued (the adapter's "all written" poll): no batch to start.
        while self.calls.has_transmit()
            && let Some((packet, e)) = self.wire.encode_batch(out, start, &mut self.calls)
        {
            self.unsendable(&packet, e);
        }
        let wrote = out.len() > start;
        if !wrote {
            self.written();
        }
        wrote
    }

    /// The next packet as it is, for the in-process value transport.
    pub fn poll_packet(&mut self) -> Option<Packet<Payload>> {
        let p = self.calls.poll_transmit();
        if p.is_none() {
            self.written();
        }
        p
    }

    /// Everything handed out was written and nothing is queued: a closing session whose calls
    /// have all been answered is over.
    fn written(&mut self) {
        if matches!(self.life, Life::Closing { .. }) && self.calls.is_idle() {
            let reason = self.reason.take().unwrap_or(CloseReason::Shutdown);
            self.finish(reason);
        }
    }

    /// The one rule for a message that cannot be sent: it fails its call.
    fn unsendable(&mut self, packet: &Packet<Payload>, e: Unsendable) {
        let id = packet.header.id;
        if let (MessageKind::Error, Body::Error(err)) = (packet.header.kind, &packet.body) {
            // A handler's error text too long for a frame: the client still gets the error,
            // with its message cut to fit (at a character boundary).
            let room = self
                .wire
                .max_frame_size()
                .saturating_sub(FIXED_HEADER_LEN + 64)
                / 2;
            let mut end = err.message.len().min(room);
            while !err.message.is_char_boundary(end) {
                end -= 1;
            }
            if end < err.message.len() {
                self.calls
                    .answer_unsendable(id, err.code, &err.message[..end]);
            }
            return;
        }
        if !matches!(
            packet.header.kind,
            MessageKind::Response | MessageKind::StreamItem
        ) {
            return; // stream ends, credit and pongs are always small
        }
        let code = match e {
            Unsendable::TooLarge { .. } => ErrorCode::ResourceExhausted,
            _ => ErrorCode::Handler,
        };
        if self
            .calls
            .answer_unsendable(id, code, format!("the answer could not be sent: {e}"))
        {
            let error = match e {
                Unsendable::TooLarge { size, max } => CallError::FrameTooLarge { size, max },
                other => CallError::Unsendable(other.to_string()),
            };
            if let Some(r) = self.records.get_mut(&id) {
                r.fail(error, false);
            }
            self.cancelled.push_back(id);
        }
    }

    /// Whether answers wait to be sent.
    pub fn has_transmit(&self) -> bool {
        self.calls.has_transmit()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let calls = self.calls.poll_timeout();
        let life = match self.life {
            Life::Draining { until } | Life::Closing { until } => Some(until),
            Life::Open => self.idle_deadline(),
            Life::Closed => None,
        };
        let frame = match self.life {
            Life::Open | Life::Draining { .. } => self.frame_deadline(),
            _ => None,
        };
        let (stall, paused) = match self.life {
            Life::Closed => (None, None),
            _ => (self.stall_deadline(), self.wire.paused_until()),
        };
        [calls, life, frame, stall, paused]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the write in progress counts as stalled.
    fn stall_deadline(&self) -> Option<Instant> {
        self.stall.deadline(self.config.write_stall_timeout)
    }

    /// When the connection counts as idle, if it has nothing in progress.
    fn idle_deadline(&self) -> Option<Instant> {
        let idle = self.config.idle_timeout?;
        if !self.calls.is_idle() || self.calls.has_transmit() {
            return None;
        }
        self.quiet_since.checked_add(idle)
    }

    /// When the frame in progress must be whole.
    fn frame_deadline(&self) -> Option<Instant> {
        self.partial_since?.checked_add(self.config.frame_timeout?)
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.calls.active_calls()
    }

    /// Notification handlers running.
    pub fn running_notifications(&self) -> usize {
        self.calls.running_notifications()
    }

    /// Bytes of answers queued and not yet handed to the transport (bounded by
    /// [`ServerConfig::max_transmit_backlog`] for stream items, which wait beyond it).
    pub fn queued_bytes(&self) -> usize {
        self.calls.queued_bytes()
    }

    /// Notifications dropped because the connection was at its concurrency limit.
    pub fn dropped_notifications(&self) -> u64 {
        self.calls.dropped_notifications()
    }

    /// Whether a graceful shutdown is under way (or done).
    pub fn is_shutting_down(&self) -> bool {
        !matches!(self.life, Life::Open)
    }

    /// Whether the session is over: close the transport and stop its handlers now.
    pub fn is_closed(&self) -> bool {
        self.life == Life::Closed
    }

    /// Why the session closed (or is closing).
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.reason.as_ref()
    }
}
