//! The client side of an RPC connection, as a state machine.
//!
//! [`ClientConnection`] allocates request ids, keeps the table of pending calls with their
//! deadlines, runs client-, server- and bidirectional streams with credit-based flow control,
//! sends heartbeats, and ends every pending call with a typed [`CallError`] when the connection
//! closes. It owns no IO: the adapter feeds it packets ([`handle_packet`]), timer expiries
//! ([`handle_timeout`]) and closure ([`handle_close`]), and drains [`poll_transmit`],
//! [`poll_event`] and [`poll_timeout`].
//!
//! [`handle_packet`]: ClientConnection::handle_packet
//! [`handle_timeout`]: ClientConnection::handle_timeout
//! [`handle_close`]: ClientConnection::handle_close
//! [`poll_transmit`]: ClientConnection::poll_transmit
//! [`poll_event`]: ClientConnection::poll_event
//! [`poll_timeout`]: ClientConnection::poll_timeout

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::CodecId;
use crate::deadlines::Deadlines;
pub use crate::flow::StreamSendError;
use crate::flow::{INITIAL_CLIENT_STREAM_WINDOW, RecvWindow, SendWindow, push_credit, push_item};
use crate::idmap::{IdMap, id_map};
use crate::message::{ErrorCode, Header, MessageKind, RemoteError};
use crate::metadata::{
    DEFAULT_MAX_METADATA_BYTES, DEFAULT_MAX_METADATA_ENTRIES, Metadata, MetadataError, Signature,
};
use crate::packet::{Body, Packet};
use crate::payload::WireSize;
use crate::peer::REFUSAL_ID;

/// The shape of a call: who streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallKind {
    /// One request, one response.
    #[default]
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams both ways.
    Bidirectional,
}

impl CallKind {
    /// Whether the client sends a stream.
    pub fn client_streams(self) -> bool {
        matches!(self, Self::ClientStreaming | Self::Bidirectional)
    }

    /// Whether the server sends a stream.
    pub fn server_streams(self) -> bool {
        matches!(self, Self::ServerStreaming | Self::Bidirectional)
    }

    /// The kind a request header announces.
    pub fn of_header(h: &Header) -> Self {
        match (h.client_stream, h.server_stream) {
            (false, false) => Self::Unary,
            (false, true) => Self::ServerStreaming,
            (true, false) => Self::ClientStreaming,
            (true, true) => Self::Bidirectional,
        }
    }
}

/// Why a call ended without a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The deadline passed.
    #[error("call timed out")]
    Timeout,
    /// The call was cancelled locally.
    #[error("call cancelled")]
    Cancelled,
    /// The connection closed or the peer stopped answering heartbeats.
    #[error("disconnected: {0}")]
    Disconnected(String),
    /// The server answered with an error.
    #[error("remote error {:?}: {}", .0.code, .0.message)]
    Remote(RemoteError),
    /// The server broke the protocol on this call (for example, sent items without credit).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A message of the call could not be sent otherwise (an in-process value on a byte
    /// transport, a compression failure).
    #[error("could not send: {0}")]
    Unsendable(String),
    /// A message of the call exceeds the frame size limit, so it was not sent.
    #[error("frame of {size} bytes exceeds max {max}")]
    FrameTooLarge {
        /// Size of the frame that was refused.
        size: usize,
        /// The frame size limit.
        max: usize,
    },
    /// The server refused this process at connect (its allow-list of users and groups): no
    /// call on the connection is served. Holds the server's reason.
    #[error("refused by the server: {0}")]
    PeerRefused(String),
    /// The call is over, normally (its response came, a stream ended, its handler completed),
    /// or its sending half was finished: nothing more can be sent on it.
    #[error("the call is over")]
    Finished,
    /// The call's metadata exceeds a limit of [`ClientConfig`] (`max_metadata_bytes`,
    /// `max_metadata_entries`): it was not sent.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// The server has another signature for the method than the one the call carried
    /// ([`ErrorCode::TypeMismatch`]); the handler did not run.
    #[error("type mismatch calling `{method}`: the client has `{client}`, the server `{server}`")]
    TypeMismatch {
        /// The method.
        method: String,
        /// The call's signature text.
        client: String,
        /// The server's signature text.
        server: String,
    },
}

impl CallError {
    /// The error a call ends with when the server answers `e`: the server's own deadline
    /// expiry (the client's timeout, counted from receipt) is a [`CallError::Timeout`] like the
    /// client's, whichever side's timer fires first; every other code is a
    /// [`CallError::Remote`].
    pub fn from_remote(e: RemoteError) -> Self {
        match e.code {
            ErrorCode::DeadlineExceeded => Self::Timeout,
            _ => Self::Remote(e),
        }
    }
}

/// Client settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Timeout of unary and client-streaming calls started without one (`None`: wait forever).
    pub default_timeout: Option<Duration>,
    /// Items of a server stream the client buffers at most (the credit window it grants).
    pub stream_window: u32,
    /// Send a ping after this much time without one (`None`: no heartbeats).
    pub heartbeat_interval: Option<Duration>,
    /// Declare the server dead after this many heartbeats in a row go unanswered.
    pub heartbeat_misses: u32,
    /// When the last client handle is dropped while a write is still under way, how long that
    /// write may take before the connection is closed anyway (a server that stopped reading
    /// would otherwise keep it open forever).
    pub close_timeout: Duration,
    /// Credit a client stream holds at most, however much the server grants (see
    /// [`ServerConfig::max_stream_credit`](crate::ServerConfig::max_stream_credit)).
    pub max_stream_credit: u32,
    /// Bytes of pongs (each echoes its ping's payload) the client keeps queued at most; a ping
    /// past it, or past [`MAX_UNSENT_PONGS`] pongs, is left unanswered.
    pub max_pong_bytes: usize,
    /// Bytes of decompressed payloads the connection holds at most (responses and stream items
    /// not yet dropped by the application); a compressed message past it fails its call
    /// without being inflated.
    pub decompression_budget: usize,
    /// A write that makes no progress for this long (the server stopped reading while
    /// requests wait) closes the connection, failing its calls (`None`: no limit).
    pub write_stall_timeout: Option<Duration>,
    /// Bytes of encoded metadata entries a call may carry at most (see
    /// [`Metadata::encoded_len`]); a call over it fails at once with
    /// [`MetadataError::TooManyBytes`]. Default 4 KiB.
    pub max_metadata_bytes: usize,
    /// Metadata entries a call may carry at most; a call over it fails at once with
    /// [`MetadataError::TooManyEntries`]. Default 32.
    pub max_metadata_entries: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            default_timeout: Some(Duration::from_secs(30)),
            stream_window: 32,
            heartbeat_interval: None,
            heartbeat_misses: 3,
            close_timeout: Duration::from_secs(5),
            max_stream_credit: 1024,
            max_pong_bytes: 64 * 1024,
            decompression_budget: 64 * 1024 * 1024,
            write_stall_timeout: Some(Duration::from_secs(30)),
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
            max_metadata_entries: DEFAULT_MAX_METADATA_ENTRIES,
        }
    }
}

/// Per-call options. Cheap to build and clone: empty metadata holds no allocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallOptions {
    /// Who streams.
    pub kind: CallKind,
    /// Overrides [`ClientConfig::default_timeout`]; for streaming calls it bounds the whole call.
    pub timeout: Option<Duration>,
    /// Codec id recorded in the header.
    pub codec: CodecId,
    /// Key/value metadata sent with the request (bounded by
    /// [`ClientConfig::max_metadata_bytes`] and [`ClientConfig::max_metadata_entries`]).
    pub metadata: Metadata,
    /// The types the caller expects: its fingerprint travels with the request, and a server
    /// that registered another signature for the method refuses the call
    /// ([`ErrorCode::TypeMismatch`]). `None`: no check.
    pub signature: Option<Signature>,
}

impl CallOptions {
    /// Options for a unary call with codec `codec`.
    pub fn unary(codec: CodecId) -> Self {
        Self {
            codec,
            ..Self::default()
        }
    }

    /// The same options with another call kind.
    pub fn with_kind(mut self, kind: CallKind) -> Self {
        self.kind = kind;
        self
    }

    /// The same options with a timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The same options with metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// The same options with the caller's signature for the method.
    pub fn with_signature(mut self, signature: Signature) -> Self {
        self.signature = Some(signature);
        self
    }
}

/// What the application learns from the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent<P> {
    /// The response of call `id`; the call is over.
    Response {
        /// The call.
        id: u64,
        /// The payload.
        payload: P,
    },
    /// Call `id` ended with an error; the call is over.
    Failed {
        /// The call.
        id: u64,
        /// Why.
        error: CallError,
    },
    /// One item of the server's stream on call `id`. Report it consumed with
    /// [`ClientConnection::stream_consumed`] when the application takes it.
    StreamItem {
        /// The call.
        id: u64,
        /// The payload.
        payload: P,
    },
    /// The server ended its stream on call `id` normally; the call is over.
    StreamEnd {
        /// The call.
        id: u64,
    },
    /// The server granted credit: the client stream of call `id` may send more items.
    SendCredit {
        /// The call.
        id: u64,
    },
}

#[derive(Debug)]
struct Call {
    kind: CallKind,
    /// The signature the call carries, and its method, to name both in a type mismatch
    /// (boxed: most calls have none).
    typed: Option<Box<(Signature, Bytes)>>,
    deadline: Option<Instant>,
    /// Client → server stream state, while the client may still send.
    send: Option<SendWindow>,
    /// Server → client stream state.
    recv: Option<RecvWindow>,
}

/// The client half of an RPC connection. `P` is the payload type (`Bytes` on the wire).
#[derive(Debug)]
pub struct ClientConnection<P> {
    config: ClientConfig,
    next_id: u64,
    calls: IdMap<Call>,
    deadlines: Deadlines,
    transmit: VecDeque<Packet<P>>,
    /// Pongs in `transmit` (see [`MAX_UNSENT_PONGS`]), and their payload bytes.
    unsent_pongs: usize,
    unsent_pong_bytes: usize,
    events: VecDeque<ClientEvent<P>>,
    closed: Option<String>,
    /// The connection closed because the server refused this peer ([`CallError::PeerRefused`]).
    refused: bool,
    next_ping: Option<Instant>,
    ping_seq: u64,
    ping_outstanding: bool,
    missed_pings: u32,
    /// Names of recently called methods, so a repeated call shares its method bytes instead
    /// of copying them.
    methods: Vec<Bytes>,
}

/// Pongs a client keeps queued at most (a write under way may hold as many again): further
/// Pings are left unanswered, so a server that sends Pings and never reads cannot grow the client's
/// queue without bound (PROTOCOL.md §5.5).
pub const MAX_UNSENT_PONGS: usize = 8;

/// How many method names [`ClientConnection`] keeps for reuse.
const METHOD_CACHE: usize = 8;

/// The payload bytes of a pong.
fn pong_size<P: WireSize>(body: &Body<P>) -> usize {
    match body {
        Body::Data(p) => p.wire_size(),
        _ => 0,
    }
}

impl<P: WireSize> ClientConnection<P> {
    /// A fresh connection; `now` starts the heartbeat clock.
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        Self {
            config,
            next_id: 1,
            calls: id_map(),
            deadlines: Deadlines::default(),
            transmit: VecDeque::new(),
            unsent_pongs: 0,
            unsent_pong_bytes: 0,
            events: VecDeque::new(),
            closed: None,
            refused: false,
            next_ping: config.heartbeat_interval.map(|i| now + i),
            ping_seq: 0,
            ping_outstanding: false,
            missed_pings: 0,
            methods: Vec::new(),
        }
    }

    /// The bytes of `method`, shared with earlier calls of the same method.
    fn method_bytes(&mut self, method: &str) -> Bytes {
        if let Some(m) = self.methods.iter().find(|m| m[..] == *method.as_bytes()) {
            return m.clone();
        }
        let m = Bytes::copy_from_slice(method.as_bytes());
        if self.methods.len() == METHOD_CACHE {
            self.methods.remove(0);
        }
        self.methods.push(m.clone());
        m
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Changes [`ClientConfig::default_timeout`] for calls started from now on.
    pub fn set_default_timeout(&mut self, timeout: Option<Duration>) {
        self.config.default_timeout = timeout;
    }

    /// Starts a call and returns its id. The request is queued for [`poll_transmit`]; its
    /// outcome arrives as events. Fails at once with `Disconnected` if the connection closed.
    ///
    /// [`poll_transmit`]: Self::poll_transmit
    pub fn start_call(
        &mut self,
        now: Instant,
        method: &str,
        payload: P,
        opts: CallOptions,
    ) -> Result<u64, CallError> {
        if let Some(error) = self.closed_error() {
            return Err(error);
        }
        self.check_metadata(&opts.metadata)?;
        let id = self.next_id;
        self.next_id += 1;
        let timeout = match opts.kind {
            CallKind::Unary | CallKind::ClientStreaming => {
                opts.timeout.or(self.config.default_timeout)
            }
            _ => opts.timeout,
        };
        let deadline = timeout.map(|t| now + t);
        if let Some(at) = deadline {
            self.deadlines.push(at, id);
        }
        let window = opts
            .kind
            .server_streams()
            .then_some(self.config.stream_window.max(1));
        let header = Header {
            client_stream: opts.kind.client_streams(),
            server_stream: opts.kind.server_streams(),
            timeout,
            window,
            signature: opts.signature.map(|s| s.fingerprint),
            ..Header::new(MessageKind::Request, id).with_codec(opts.codec)
        };
        self.calls.insert(
            id,
            Call {
                kind: opts.kind,
                typed: None,
                deadline,
                send: opts.kind.client_streams().then(|| {
                    SendWindow::capped(INITIAL_CLIENT_STREAM_WINDOW, self.config.max_stream_credit)
                }),
                recv: window.map(RecvWindow::new),
            },
        );
        let method = self.method_bytes(method);
        if let Some(sig) = opts.signature
            && let Some(call) = self.calls.get_mut(&id)
        {
            call.typed = Some(Box::new((sig, method.clone())));
        }
        self.transmit.push_back(Packet {
            header,
            method,
            metadata: opts.metadata,
            body: Body::Data(payload),
        });
        Ok(id)
    }

    /// Refuses metadata over the limits of the configuration.
    fn check_metadata(&self, metadata: &Metadata) -> Result<(), CallError> {
        if metadata.is_empty() {
            return Ok(());
        }
        metadata
            .check_limits(
                self.config.max_metadata_bytes,
                self.config.max_metadata_entries,
            )
            .map_err(CallError::Metadata)
    }

    /// Queues a one-way notification.
    pub fn notify(&mut self, method: &str, payload: P, codec: CodecId) -> Result<(), CallError> {
        self.notify_with_options(method, payload, CallOptions::unary(codec))
    }

    /// Queues a one-way notification with options: its codec, timeout (how long its handler
    /// may run), metadata and signature (`kind` is ignored).
    pub fn notify_with_options(
        &mut self,
        method: &str,
        payload: P,
        opts: CallOptions,
    ) -> Result<(), CallError> {
        if let Some(error) = self.closed_error() {
            return Err(error);
        }
        self.check_metadata(&opts.metadata)?;
        let method = self.method_bytes(method);
        self.transmit.push_back(Packet {
            header: Header {
                timeout: opts.timeout,
                signature: opts.signature.map(|s| s.fingerprint),
                ..Header::new(MessageKind::Notification, 0).with_codec(opts.codec)
            },
            method,
            metadata: opts.metadata,
            body: Body::Data(payload),
        });
        Ok(())
    }

    /// Gives up on call `id`: forgets it and tells the server. No event follows. Returns
    /// whether the call was pending.
    pub fn cancel(&mut self, id: u64) -> bool {
        if self.calls.remove(&id).is_none() {
            return false;
        }
        if self.closed.is_none() {
            self.transmit.push_back(Packet::new(
                Header::new(MessageKind::Cancel, id),
                Body::Empty,
            ));
        }
        true
    }

    /// Queues one item on the client stream of call `id`, if it has credit.
    pub fn send_stream_item(
        &mut self,
        id: u64,
        payload: P,
        codec: CodecId,
    ) -> Result<(), StreamSendError<P>> {
        let send = self.calls.get_mut(&id).and_then(|c| c.send.as_mut());
        push_item(send, id, payload, codec, &mut self.transmit)
    }

    /// Credit left on the client stream of call `id` (`None` if it is not an open client stream).
    pub fn send_credit(&self, id: u64) -> Option<u64> {
        self.calls
            .get(&id)
            .and_then(|c| c.send.as_ref())
            .map(|s| s.credit())
    }

    /// Ends the client stream of call `id`. Returns whether it was open.
    pub fn finish_stream(&mut self, id: u64) -> bool {
        let Some(call) = self.calls.get_mut(&id) else {
            return false;
        };
        if call.send.take().is_none() {
            return false;
        }
        self.transmit.push_back(Packet::new(
            Header::new(MessageKind::StreamEnd, id),
            Body::Empty,
        ));
        true
    }

    /// Reports that the application took `n` items of the server stream of call `id`; grants
    /// the server more credit when half the window has been consumed.
    pub fn stream_consumed(&mut self, id: u64, n: u32) {
        let recv = self.calls.get_mut(&id).and_then(|c| c.recv.as_mut());
        push_credit(recv, id, n, &mut self.transmit);
    }

    fn finish(&mut self, id: u64, event: ClientEvent<P>) {
        self.calls.remove(&id);
        self.events.push_back(event);
    }

    fn fail(&mut self, id: u64, error: CallError, tell_server: bool) {
        self.finish(id, ClientEvent::Failed { id, error });
        if tell_server && self.closed.is_none() {
            self.transmit.push_back(Packet::new(
                Header::new(MessageKind::Cancel, id),
                Body::Empty,
            ));
        }
    }

    /// Feeds one packet received from the server.
    pub fn handle_packet(&mut self, now: Instant, packet: Packet<P>) {
        let _ = now;
        // Anything from the server proves it alive.
        self.missed_pings = 0;
        self.ping_outstanding = false;
        let id = packet.header.id;
        let kind = packet.header.kind;
        if let (MessageKind::Error, REFUSAL_ID, Body::Error(e)) = (kind, id, &packet.body)
            && e.code == ErrorCode::PeerRefused
        {
            // The server refused this peer at connect (PROTOCOL.md §5.10): nothing is served.
            self.refused = true;
            self.handle_close(e.message.clone());
            return;
        }
        match kind {
            MessageKind::Ping => {
                // A server may probe us too: answer in kind — unless it does not even read the
                // answers (a client never stops reading, so this is what bounds its queue).
                // Bounded by count and by bytes (a pong echoes its ping's payload).
                let body = match packet.body {
                    Body::Data(p) => Body::Data(p),
                    _ => Body::Empty,
                };
                let size = pong_size(&body);
                if self.unsent_pongs >= MAX_UNSENT_PONGS
                    || self.unsent_pong_bytes + size > self.config.max_pong_bytes
                {
                    return;
                }
                self.unsent_pongs += 1;
                self.unsent_pong_bytes += size;
                self.transmit
                    .push_back(Packet::new(Header::new(MessageKind::Pong, id), body));
                return;
            }
            // Pongs need no answer; kinds only a client sends are ignored (PROTOCOL.md §5.1).
            MessageKind::Pong
            | MessageKind::Request
            | MessageKind::Notification
            | MessageKind::Cancel => return,
            _ => {}
        }
        let Some(call) = self.calls.get_mut(&id) else {
            // A late answer to a call that timed out or was cancelled: not an error.
            return;
        };
        match (kind, packet.body) {
            (MessageKind::Response, Body::Data(payload)) if !call.kind.server_streams() => {
                self.finish(id, ClientEvent::Response { id, payload });
            }
            (MessageKind::Error, Body::Error(e)) => {
                let error = match (e.code, call.typed.take()) {
                    (ErrorCode::TypeMismatch, Some(typed)) => {
                        let (sig, method) = *typed;
                        CallError::TypeMismatch {
                            method: String::from_utf8_lossy(&method).into_owned(),
                            client: sig.text.to_owned(),
                            server: e.message,
                        }
                    }
                    _ => CallError::from_remote(e),
                };
                self.finish(id, ClientEvent::Failed { id, error });
            }
            (MessageKind::StreamItem, Body::Data(payload)) => match call.recv.as_mut() {
                Some(recv) => match recv.on_item() {
                    Ok(()) => self
                        .events
                        .push_back(ClientEvent::StreamItem { id, payload }),
                    Err(v) => self.fail(id, CallError::Protocol(v.to_string()), true),
                },
                None => self.fail(
                    id,
                    CallError::Protocol("stream item on a call without a server stream".into()),
                    true,
                ),
            },
            (MessageKind::StreamEnd, _) if call.kind.server_streams() => {
                self.finish(id, ClientEvent::StreamEnd { id });
            }
            (MessageKind::Credit, _) => {
                if let Some(send) = call.send.as_mut() {
                    send.add(packet.header.window.unwrap_or(0));
                    self.events.push_back(ClientEvent::SendCredit { id });
                }
            }
            (kind, _) => self.fail(
                id,
                CallError::Protocol(format!("unexpected {kind:?} from the server")),
                true,
            ),
        }
    }

    /// Fires expired deadlines and heartbeats. Call it when [`poll_timeout`](Self::poll_timeout)
    /// is reached (calling it early or late is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        loop {
            let calls = &self.calls;
            let Some(id) = self
                .deadlines
                .pop_expired(now, |id| calls.get(&id).and_then(|c| c.deadline))
            else {
                break;
            };
            self.fail(id, CallError::Timeout, true);
        }
        if let (Some(at), Some(interval)) = (self.next_ping, self.config.heartbeat_interval)
            && at <= now
            && self.closed.is_none()
        {
            if self.ping_outstanding {
                self.missed_pings += 1;
            }
            if self.missed_pings >= self.config.heartbeat_misses.max(1) {
                self.handle_close(format!(
                    "server missed {} heartbeats in a row",
                    self.missed_pings
                ));
                return;
            }
            self.ping_seq += 1;
            self.ping_outstanding = true;
            self.transmit.push_back(Packet::new(
                Header::new(MessageKind::Ping, self.ping_seq),
                Body::Empty,
            ));
            self.next_ping = Some(now + interval);
        }
    }

    /// The connection is closed: every pending call fails with `Disconnected(reason)`, and later
    /// calls fail at once. Queued notifications stay queued (after a local close they may still
    /// be written; after the connection is lost nothing is).
    pub fn handle_close(&mut self, reason: impl Into<String>) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(reason.into());
        let Some(error) = self.closed_error() else {
            return;
        };
        let mut ids: Vec<u64> = self.calls.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.finish(
                id,
                ClientEvent::Failed {
                    id,
                    error: error.clone(),
                },
            );
        }
        self.deadlines.clear();
        // Only notifications are worth sending after a local close (they need no answer).
        self.transmit
            .retain(|p| p.header.kind == MessageKind::Notification);
        self.unsent_pongs = 0;
        self.unsent_pong_bytes = 0;
        self.next_ping = None;
    }

    /// What a call fails with once the connection is closed: [`CallError::PeerRefused`] if
    /// the server refused this peer, else [`CallError::Disconnected`]; `None` while open.
    pub fn closed_error(&self) -> Option<CallError> {
        let reason = self.closed.clone()?;
        Some(if self.refused {
            CallError::PeerRefused(reason)
        } else {
            CallError::Disconnected(reason)
        })
    }

    /// Ends call `id` with `error` (the adapter could not send one of its messages, say) and
    /// tells the server to drop it. Returns whether the call was pending.
    pub fn fail_call(&mut self, id: u64, error: CallError) -> bool {
        if !self.calls.contains_key(&id) {
            return false;
        }
        self.fail(id, error, true);
        true
    }

    /// Whether packets are waiting in [`poll_transmit`](Self::poll_transmit).
    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Packet<P>> {
        let p = self.transmit.pop_front()?;
        if p.header.kind == MessageKind::Pong {
            self.pong_sent(pong_size(&p.body));
        }
        Some(p)
    }

    /// The next packet to send, left queued: encode it where it lies, then
    /// [`advance_transmit`](Self::advance_transmit).
    pub fn peek_transmit(&self) -> Option<&Packet<P>> {
        self.transmit.front()
    }

    /// Drops the packet [`peek_transmit`](Self::peek_transmit) showed, once written (as
    /// [`poll_transmit`](Self::poll_transmit) would have handed it out).
    pub fn advance_transmit(&mut self) {
        let Some(p) = self.transmit.front() else {
            return;
        };
        let pong = (p.header.kind == MessageKind::Pong).then(|| pong_size(&p.body));
        // Dropped in place: a packet is too large to move out for nothing.
        self.transmit.drain(..1);
        if let Some(bytes) = pong {
            self.pong_sent(bytes);
        }
    }

    /// A pong of `bytes` left the queue.
    fn pong_sent(&mut self, bytes: usize) {
        self.unsent_pongs = self.unsent_pongs.saturating_sub(1);
        self.unsent_pong_bytes = self.unsent_pong_bytes.saturating_sub(bytes);
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent<P>> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let calls = &self.calls;
        let deadline = self
            .deadlines
            .peek(|id, at| calls.get(&id).and_then(|c| c.deadline) == Some(at));
        match (deadline, self.next_ping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the connection was closed (by [`handle_close`](Self::handle_close) or a dead
    /// heartbeat), and why.
    pub fn closed_reason(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// Calls started and not yet finished.
    pub fn pending_calls(&self) -> usize {
        self.calls.len()
    }
}
