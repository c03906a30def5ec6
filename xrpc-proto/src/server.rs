//! The server side of an RPC connection, as a state machine.
//!
//! [`ServerConnection`] turns received packets into dispatch events (request, notification,
//! cancel, stream item, stream end, send credit), and the application's answers — responses,
//! errors, stream items — back into packets. It enforces flow control in both directions,
//! expires request deadlines (answering `DeadlineExceeded` and telling the application to stop
//! the handler), answers pings, and refuses new calls while shutting down.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::budget::{HandlerShare, HandlerSlot, OutputBudget};
use crate::client::{CallError, CallKind};
use crate::codec::{CodecId, answer_codec};
use crate::deadlines::Deadlines;
use crate::flow::{
    INITIAL_CLIENT_STREAM_WINDOW, RecvWindow, SendWindow, StreamSendError, push_credit, push_item,
};
use crate::idmap::{IdMap, id_map};
use crate::message::{ErrorCode, FIXED_HEADER_LEN, Header, MessageKind, RemoteError};
use crate::metadata::{DEFAULT_MAX_METADATA_BYTES, DEFAULT_MAX_METADATA_ENTRIES, Metadata};
use crate::packet::{Body, Packet};
use crate::payload::WireSize;
use crate::stats::{NotificationDrop, ServerCounters};

/// Answers waiting for a client that does not read, at most, whatever their size (see
/// [`ServerConfig::max_transmit_backlog`]).
pub const MAX_BACKLOG_PACKETS: usize = 4096;

/// Server settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Calls in progress on one connection at most; more are refused with `ResourceExhausted`.
    pub max_concurrent_calls: usize,
    /// Bytes of answers (responses, stream items, pongs…) that may wait for a client while the
    /// transport cannot take them (the client does not read): past this — or past
    /// [`MAX_BACKLOG_PACKETS`] answers — the server stops reading from that client until its
    /// writes make progress (see [`ServerConnection::is_backlogged`]), so a client that sends
    /// and never reads cannot grow the server's memory without bound. (What the blocked write
    /// itself holds comes on top: up to about as much again.)
    pub max_transmit_backlog: usize,
    /// How long the end of a connection — a graceful shutdown, the client's end of input, a
    /// dropped `serve` future — waits for the last answers to be written before it closes the
    /// connection anyway (a client that never reads cannot hold it open).
    pub shutdown_flush_timeout: Duration,
    /// How long a graceful shutdown waits for calls in progress (streams included) to finish;
    /// then they are cancelled (answered `ShuttingDown`, their handlers told to stop) and the
    /// connection closes.
    pub drain_timeout: Duration,
    /// Credit a server stream holds at most: a request's window and the client's `Credit`
    /// messages are clamped to it, so a client that grants `u32::MAX` gets at most this many
    /// items queued for it. (A client window up to twice this keeps its stream moving: the
    /// client grants more each time half its window is consumed.)
    pub max_stream_credit: u32,
    /// How long a notification's handler may run; then it is stopped (a notification whose
    /// header carries a shorter timeout gets that one).
    pub notification_timeout: Duration,
    /// A connection with no call in progress and nothing received for this long is closed
    /// (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// A frame whose first bytes arrived must be whole within this long, or the connection is
    /// closed (`None`: no limit) — a peer that sends part of a frame and stops cannot hold the
    /// connection and its buffer forever.
    pub frame_timeout: Option<Duration>,
    /// Connections a listener serves at once at most. At the cap a newcomer takes the place
    /// of an idle connection (no call in progress; oldest first, from the peer that holds
    /// the most), or is closed at once if every connection is busy (see
    /// [`Admission`](crate::admission::Admission)).
    pub max_connections: usize,
    /// Connections one peer (an IP address over TCP, a user id over Unix sockets and shared
    /// memory) holds at most: past it, a newcomer of that peer takes the place of that
    /// peer's oldest idle connection, or is closed at once.
    pub max_connections_per_peer: usize,
    /// Bytes of answers queued on all the connections of a server together (an
    /// [`OutputBudget`]): past it, stream sends wait, and a connection with answers queued
    /// stops reading, as for [`max_transmit_backlog`](Self::max_transmit_backlog).
    pub max_queued_output_total: usize,
    /// Bytes that the read buffers of all the connections of a server reserve together for
    /// frames not yet whole, past [`ReadBudget::UNCHARGED`](crate::ReadBudget::UNCHARGED)
    /// each (a [`ReadBudget`](crate::ReadBudget)): a connection that needs more room waits
    /// until others finish their frames or are closed by
    /// [`frame_timeout`](Self::frame_timeout). Keep it at least the maximum frame size, or
    /// the largest frames can never be read.
    pub max_read_buffers_total: usize,
    /// Bytes of decompressed payloads a connection holds at most (requests and stream items
    /// not yet released by their handlers); a compressed message that would exceed it is
    /// refused without being inflated (its call is answered `ResourceExhausted`).
    pub decompression_budget: usize,
    /// The same over all the connections of a server together (a shared
    /// [`DecompressionBudget`](crate::DecompressionBudget)).
    pub decompression_budget_total: usize,
    /// Bytes a connection inflates a second at most (a [`DecompressionRate`](crate::rate::DecompressionRate)):
    /// past it, its input is not read until it is back within the rate, and compressed
    /// messages already read are refused (`ResourceExhausted`) without being inflated.
    /// `usize::MAX`: no limit.
    pub decompression_rate: usize,
    /// Bytes all the connections of a server inflate a second at most: past it, compressed
    /// messages are refused (`ResourceExhausted`) without being inflated until the rate is
    /// back. `usize::MAX`: no limit.
    pub decompression_rate_total: usize,
    /// Calls in progress and notifications running on all the connections of a server
    /// together (a [`HandlerBudget`](crate::budget::HandlerBudget)): past it, a connection
    /// still starts them up to its fair share (this limit over the number of connections),
    /// and no further (requests are answered `ResourceExhausted`, notifications dropped).
    pub max_concurrent_calls_total: usize,
    /// A write that makes no progress for this long (the client stopped reading while answers
    /// wait) closes the connection (`None`: no limit).
    pub write_stall_timeout: Option<Duration>,
    /// Whether compressed input is accepted; when `false` a compressed request is answered
    /// `Unsupported` and never inflated.
    pub accept_compressed: bool,
    /// Bytes of encoded metadata entries a request or notification may carry at most: a
    /// request over it is answered `ResourceExhausted` (naming the limit), a notification over
    /// it is dropped and counted; the connection goes on. Default 4 KiB. (A header carries at
    /// most 65535 bytes of metadata, inside the frame size limit, whatever this says.)
    pub max_metadata_bytes: usize,
    /// Metadata entries a request or notification may carry at most, as
    /// [`max_metadata_bytes`](Self::max_metadata_bytes). Default 32.
    pub max_metadata_entries: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_concurrent_calls: 10_000,
            max_transmit_backlog: 8 * 1024 * 1024,
            shutdown_flush_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            max_stream_credit: 1024,
            notification_timeout: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(120)),
            frame_timeout: Some(Duration::from_secs(30)),
            max_connections: 1024,
            max_connections_per_peer: 512,
            max_queued_output_total: 128 * 1024 * 1024,
            max_read_buffers_total: 64 * 1024 * 1024,
            decompression_budget: 64 * 1024 * 1024,
            decompression_budget_total: 128 * 1024 * 1024,
            decompression_rate: 128 * 1024 * 1024,
            decompression_rate_total: 256 * 1024 * 1024,
            max_concurrent_calls_total: 32 * 1024,
            write_stall_timeout: Some(Duration::from_secs(30)),
            accept_compressed: true,
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
            max_metadata_entries: DEFAULT_MAX_METADATA_ENTRIES,
        }
    }
}

/// A request as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall<P> {
    /// The call id, to answer with.
    pub id: u64,
    /// The method name (valid UTF-8).
    pub method: Bytes,
    /// The codec the client used.
    pub codec: CodecId,
    /// The request payload.
    pub payload: P,
    /// Who streams.
    pub kind: CallKind,
    /// When the client stops waiting, if it set a timeout (receipt time plus the timeout).
    pub deadline: Option<Instant>,
    /// The call's metadata (within the configured limits).
    pub metadata: Metadata,
    /// The fingerprint of the caller's signature for the method, if it sent one.
    pub signature: Option<u64>,
    /// When the request was received (the `now` it was handled at).
    pub received: Instant,
}

impl<P> IncomingCall<P> {
    /// The method name as text.
    pub fn method_str(&self) -> &str {
        std::str::from_utf8(&self.method).unwrap_or_default()
    }
}

/// What the application learns from the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent<P> {
    /// A new call to dispatch.
    Request(IncomingCall<P>),
    /// A one-way call (no answer is possible). Report its handler's end with
    /// [`ServerConnection::notification_done`]`(token)`; a [`ServerEvent::NotificationStopped`]
    /// with the same token says to stop it (its deadline passed, or the connection closed).
    Notification {
        /// This notification's handle on the connection (not a call id).
        token: u64,
        /// The method name.
        method: Bytes,
        /// The codec the client used.
        codec: CodecId,
        /// The payload.
        payload: P,
        /// Its metadata (within the configured limits).
        metadata: Metadata,
        /// The fingerprint of the caller's signature for the method, if it sent one.
        signature: Option<u64>,
    },
    /// Stop the handler of call `id`: the client cancelled, its deadline passed (the client
    /// has then been answered `DeadlineExceeded`), a shutdown's drain ended it, or the
    /// connection closed. Answers for it are dropped.
    Cancelled {
        /// The call.
        id: u64,
        /// Why, as the call's handles see it: `Cancelled`, `Timeout` or `Disconnected`.
        reason: CallError,
    },
    /// One item of the client's stream on call `id`. Report it consumed with
    /// [`ServerConnection::stream_consumed`] when the handler takes it.
    StreamItem {
        /// The call.
        id: u64,
        /// The payload.
        payload: P,
    },
    /// The client ended its stream on call `id`.
    StreamEnd {
        /// The call.
        id: u64,
    },
    /// The server stream of call `id` may send more items: the client granted credit, or
    /// the connection's queued output fell back below its budget.
    SendCredit {
        /// The call.
        id: u64,
    },
    /// Stop the handler of notification `token`: it ran past its deadline
    /// ([`ServerConfig::notification_timeout`]) or the connection closed.
    NotificationStopped {
        /// The notification.
        token: u64,
    },
}

/// Why a stream item could not be queued (the same as the client's).
pub type ServerSendError<P> = StreamSendError<P>;

/// The client broke the protocol; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol violation by the client: {0}")]
pub struct ProtocolViolation(pub String);

#[derive(Debug)]
struct Active {
    kind: CallKind,
    /// The codec of the request (its answer's, see [`answer_codec`]).
    codec: CodecId,
    deadline: Option<Instant>,
    /// Server → client stream credit.
    send: Option<SendWindow>,
    /// Client → server stream, until the client ends it.
    recv: Option<RecvWindow>,
    /// The handler dropped its end of the client stream: items are discarded on arrival and
    /// credited back at once, so the client is never left waiting for credit.
    discard: bool,
    /// Its place in the server-wide handler budget, if there is one.
    _slot: Option<HandlerSlot>,
}

/// A notification whose handler runs.
#[derive(Debug)]
struct Notification {
    deadline: Instant,
    /// Its place in the server-wide handler budget, if there is one.
    _slot: Option<HandlerSlot>,
}

/// The server half of an RPC connection. `P` is the payload type (`Bytes` on the wire).
#[derive(Debug)]
pub struct ServerConnection<P> {
    config: ServerConfig,
    calls: IdMap<Active>,
    deadlines: Deadlines,
    transmit: VecDeque<Packet<P>>,
    events: VecDeque<ServerEvent<P>>,
    shutting_down: bool,
    /// Notifications whose handlers run, by token, with their deadlines (see
    /// [`notification_done`](Self::notification_done)).
    notifications: IdMap<Notification>,
    notification_deadlines: Deadlines,
    next_notification: u64,
    /// Notifications dropped because the connection was at its concurrency limit.
    dropped_notifications: u64,
    /// The load at which a notification was last dropped for want of a handler slot while
    /// handlers of this connection were running: the connection is not read again until one of
    /// them ends (see [`holds_input`](Self::holds_input)).
    held_at: Option<usize>,
    /// Bytes of the packets in `transmit` (see [`queued_bytes`](Self::queued_bytes)).
    queued: usize,
    /// Server streams refused for want of output budget, to wake when it frees.
    budget_waiters: Vec<u64>,
    /// The server-wide budget `queued` is also charged to, if any.
    shared: Option<OutputBudget>,
    /// This connection's share of the server-wide handler budget, if any.
    handlers: Option<HandlerShare>,
    /// The server's counters, if it keeps them.
    counters: Option<ServerCounters>,
}

impl<P> Drop for ServerConnection<P> {
    fn drop(&mut self) {
        if let Some(b) = &self.shared {
            b.release(self.queued);
        }
    }
}

/// The bytes a packet takes on the wire (before compression), for the output budget.
fn packet_size<P: WireSize>(p: &Packet<P>) -> usize {
    let body = match &p.body {
        Body::Empty => 0,
        Body::Data(d) => d.wire_size(),
        Body::Error(e) => 2 + e.message.len(),
    };
    FIXED_HEADER_LEN + p.method.len() + body
}

impl<P: WireSize> ServerConnection<P> {
    /// A fresh connection.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            calls: id_map(),
            deadlines: Deadlines::default(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            shutting_down: false,
            notifications: id_map(),
            notification_deadlines: Deadlines::default(),
            next_notification: 0,
            dropped_notifications: 0,
            held_at: None,
            queued: 0,
            budget_waiters: Vec::new(),
            shared: None,
            handlers: None,
            counters: None,
        }
    }

    /// Counts what this connection does in the server's `counters` (see
    /// [`ServerStats`](crate::ServerStats)).
    pub fn set_counters(&mut self, counters: ServerCounters) {
        self.counters = Some(counters);
    }

    /// A notification of `method` was not delivered (or its handler failed) for `reason`: the
    /// one place every such notification is counted.
    pub fn notification_undelivered(&mut self, method: &[u8], reason: NotificationDrop) {
        #[cfg(feature = "tracing")]
        tracing::warn!(
            method = %String::from_utf8_lossy(method),
            ?reason,
            "xrpc notification not delivered"
        );
        #[cfg(not(feature = "tracing"))]
        let _ = method;
        if let Some(c) = &self.counters {
            c.count(reason);
        }
    }

    /// Refuses metadata over the configured limits.
    fn check_metadata(&self, metadata: &Metadata) -> Result<(), String> {
        if metadata.is_empty() {
            return Ok(());
        }
        metadata
            .check_limits(
                self.config.max_metadata_bytes,
                self.config.max_metadata_entries,
            )
            .map_err(|e| e.to_string())
    }

    /// Counts this connection's handlers in the server-wide budget of `share` too.
    pub fn set_handler_share(&mut self, share: HandlerShare) {
        self.handlers = Some(share);
    }

    /// A place for one more handler: `Ok(None)` without a server-wide budget, `Err(why)` when
    /// the connection or the server runs as many as it may.
    fn handler_slot(&self) -> Result<Option<HandlerSlot>, String> {
        if self.load() >= self.config.max_concurrent_calls {
            return Err(format!(
                "more than {} concurrent calls",
                self.config.max_concurrent_calls
            ));
        }
        match &self.handlers {
            None => Ok(None),
            Some(share) => share.try_start(self.load()).map(Some).ok_or_else(|| {
                format!(
                    "the server runs more than {} calls and this connection its share",
                    share.limit()
                )
            }),
        }
    }

    /// Charges what this connection queues to the server-wide `budget` too.
    pub fn set_output_budget(&mut self, budget: OutputBudget) {
        if let Some(old) = &self.shared {
            old.release(self.queued);
        }
        budget.charge(self.queued);
        self.shared = Some(budget);
    }

    fn charge(&mut self, n: usize) {
        self.queued += n;
        if let Some(b) = &self.shared {
            b.charge(n);
        }
    }

    fn release(&mut self, n: usize) {
        let n = n.min(self.queued);
        self.queued -= n;
        if let Some(b) = &self.shared {
            b.release(n);
        }
    }

    /// Whether the output budgets leave no room: this connection's, or the server's while
    /// this connection has answers queued.
    fn over_budget(&self) -> bool {
        self.queued >= self.config.max_transmit_backlog
            || (self.queued > 0 && self.shared.as_ref().is_some_and(OutputBudget::is_over))
    }

    /// Queues a packet to send, counting its bytes.
    fn push(&mut self, packet: Packet<P>) {
        self.charge(packet_size(&packet));
        self.transmit.push_back(packet);
    }

    fn queue_error(&mut self, id: u64, code: ErrorCode, message: impl Into<String>) {
        self.push(Packet::new(
            Header::new(MessageKind::Error, id),
            Body::Error(RemoteError::new(code, message)),
        ));
    }

    /// Feeds one packet received from the client. An error means the client broke the
    /// protocol badly enough that the connection should be closed.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        packet: Packet<P>,
    ) -> Result<(), ProtocolViolation> {
        let h = packet.header;
        let id = h.id;
        match (h.kind, packet.body) {
            (MessageKind::Request, Body::Data(payload)) => {
                if self.calls.contains_key(&id) {
                    return Err(ProtocolViolation(format!(
                        "request id {id} is already in use"
                    )));
                }
                if self.shutting_down {
                    self.queue_error(id, ErrorCode::ShuttingDown, "server is shutting down");
                    return Ok(());
                }
                if let Err(why) = self.check_metadata(&packet.metadata) {
                    self.queue_error(id, ErrorCode::ResourceExhausted, why);
                    return Ok(());
                }
                let slot = match self.handler_slot() {
                    Ok(slot) => slot,
                    Err(why) => {
                        self.queue_error(id, ErrorCode::ResourceExhausted, why);
                        return Ok(());
                    }
                };
                let kind = CallKind::of_header(&h);
                let deadline = h.timeout.and_then(|t| now.checked_add(t));
                if let Some(at) = deadline {
                    self.deadlines.push(at, id);
                }
                self.calls.insert(
                    id,
                    Active {
                        kind,
                        codec: h.codec,
                        deadline,
                        send: kind.server_streams().then(|| {
                            SendWindow::capped(h.window.unwrap_or(1), self.config.max_stream_credit)
                        }),
                        recv: kind
                            .client_streams()
                            .then(|| RecvWindow::new(INITIAL_CLIENT_STREAM_WINDOW)),
                        discard: false,
                        _slot: slot,
                    },
                );
                self.events.push_back(ServerEvent::Request(IncomingCall {
                    id,
                    method: packet.method,
                    codec: h.codec,
                    payload,
                    kind,
                    deadline,
                    metadata: packet.metadata,
                    signature: h.signature,
                    received: now,
                }));
            }
            (MessageKind::Notification, Body::Data(payload)) => {
                // Under the same limit as calls: a flood of notifications cannot start an
                // unbounded number of handlers. Past it they are dropped (and counted).
                // Each runs until its deadline at most.
                if self.check_metadata(&packet.metadata).is_err() {
                    self.notification_undelivered(
                        &packet.method,
                        NotificationDrop::MetadataOverLimit,
                    );
                    return Ok(());
                }
                match self.handler_slot() {
                    Err(_) => {
                        self.notification_undelivered(
                            &packet.method,
                            NotificationDrop::NoHandlerSlot,
                        );
                        self.dropped_notifications += 1;
                        // Held back by the transport from now on, not read and thrown away.
                        let load = self.load();
                        if load > 0 {
                            self.held_at = Some(load);
                        }
                    }
                    Ok(_) if self.shutting_down => {
                        self.notification_undelivered(
                            &packet.method,
                            NotificationDrop::ShuttingDown,
                        );
                    }
                    Ok(slot) => {
                        let token = self.next_notification;
                        self.next_notification += 1;
                        let timeout = match h.timeout {
                            Some(t) => t.min(self.config.notification_timeout),
                            None => self.config.notification_timeout,
                        };
                        let at = now.checked_add(timeout).unwrap_or(now);
                        self.notifications.insert(
                            token,
                            Notification {
                                deadline: at,
                                _slot: slot,
                            },
                        );
                        self.notification_deadlines.push(at, token);
                        self.events.push_back(ServerEvent::Notification {
                            token,
                            method: packet.method,
                            codec: h.codec,
                            payload,
                            metadata: packet.metadata,
                            signature: h.signature,
                        });
                    }
                }
            }
            (MessageKind::Cancel, _) => {
                if self.calls.remove(&id).is_some() {
                    self.events.push_back(ServerEvent::Cancelled {
                        id,
                        reason: CallError::Cancelled,
                    });
                }
            }
            (MessageKind::StreamItem, Body::Data(payload)) => {
                let Some(call) = self.calls.get_mut(&id) else {
                    return Ok(()); // the call already ended; items in flight are dropped
                };
                let Some(recv) = call.recv.as_mut() else {
                    return Err(ProtocolViolation(format!(
                        "stream item on call {id}, which has no open client stream"
                    )));
                };
                if let Err(v) = recv.on_item() {
                    return Err(ProtocolViolation(v.to_string()));
                }
                if call.discard {
                    self.stream_consumed(id, 1);
                } else {
                    self.events
                        .push_back(ServerEvent::StreamItem { id, payload });
                }
            }
            (MessageKind::StreamEnd, _) => {
                if let Some(call) = self.calls.get_mut(&id)
                    && call.recv.take().is_some()
                {
                    self.events.push_back(ServerEvent::StreamEnd { id });
                }
            }
            (MessageKind::Credit, _) => {
                if let Some(send) = self.calls.get_mut(&id).and_then(|c| c.send.as_mut()) {
                    send.add(h.window.unwrap_or(0));
                    self.events.push_back(ServerEvent::SendCredit { id });
                }
            }
            (MessageKind::Ping, body) => {
                let body = match body {
                    Body::Data(p) => Body::Data(p),
                    _ => Body::Empty,
                };
                self.push(Packet::new(Header::new(MessageKind::Pong, id), body));
            }
            (MessageKind::Pong, _) => {}
            (kind, _) => {
                return Err(ProtocolViolation(format!(
                    "a client may not send {kind:?} messages"
                )));
            }
        }
        Ok(())
    }

    /// A message that was not decoded (compressed input refused, decompression budget spent)
    /// fails what it belongs to: a request is answered `error`, a stream item ends its call
    /// with `error` (returns `Ok(true)`: stop its handler); anything else is dropped.
    pub fn refuse(
        &mut self,
        header: &Header,
        error: RemoteError,
    ) -> Result<bool, ProtocolViolation> {
        let id = header.id;
        match header.kind {
            MessageKind::Request if self.calls.contains_key(&id) => Err(ProtocolViolation(
                format!("request id {id} is already in use"),
            )),
            MessageKind::Request => {
                self.push(Packet::new(
                    Header::new(MessageKind::Error, id),
                    Body::Error(error),
                ));
                Ok(false)
            }
            MessageKind::StreamItem => Ok(self.respond_error(id, error)),
            MessageKind::Notification => {
                self.notification_undelivered(&[], NotificationDrop::Refused);
                self.dropped_notifications += 1;
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Calls in progress plus notifications whose handlers run.
    fn load(&self) -> usize {
        self.calls.len() + self.notifications.len()
    }

    /// The handler of notification `token` ([`ServerEvent::Notification`]) finished (or was
    /// never started): it no longer counts against [`ServerConfig::max_concurrent_calls`].
    pub fn notification_done(&mut self, token: u64) {
        self.notifications.remove(&token);
    }

    /// Notifications whose handlers run.
    pub fn running_notifications(&self) -> usize {
        self.notifications.len()
    }

    /// Notifications dropped because the connection was at its concurrency limit.
    pub fn dropped_notifications(&self) -> u64 {
        self.dropped_notifications
    }

    /// Ends every call in progress with `error` and reports each [`ServerEvent::Cancelled`]
    /// (a shutdown whose drain deadline passed, say).
    pub fn cancel_all(&mut self, error: RemoteError) {
        let mut ids: Vec<u64> = self.calls.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.calls.remove(&id);
            self.push(Packet::new(
                Header::new(MessageKind::Error, id),
                Body::Error(error.clone()),
            ));
            self.events.push_back(ServerEvent::Cancelled {
                id,
                reason: CallError::Cancelled,
            });
        }
        self.stop_notifications();
    }

    /// Stops every notification handler still running (reported as
    /// [`ServerEvent::NotificationStopped`]).
    pub fn stop_notifications(&mut self) {
        let mut tokens: Vec<u64> = self.notifications.keys().copied().collect();
        tokens.sort_unstable();
        for token in tokens {
            self.events
                .push_back(ServerEvent::NotificationStopped { token });
        }
        self.notifications.clear();
        self.notification_deadlines.clear();
    }

    /// Answers call `id` with a response. Returns `false` (and drops the payload) if the call is
    /// no longer active — cancelled, expired or already answered — or is a server stream.
    /// `codec` is the server's own; the answer's header carries the codec
    /// [`answer_codec`] picks for the request's.
    pub fn respond(&mut self, id: u64, payload: P, codec: CodecId) -> bool {
        let codec = match self.calls.get(&id) {
            Some(c) if !c.kind.server_streams() => answer_codec(codec, c.codec).unwrap_or(codec),
            _ => return false,
        };
        self.calls.remove(&id);
        self.push(Packet::new(
            Header::new(MessageKind::Response, id).with_codec(codec),
            Body::Data(payload),
        ));
        true
    }

    /// Ends call `id` (of any kind) with an error. Returns `false` if it was not active.
    pub fn respond_error(&mut self, id: u64, error: RemoteError) -> bool {
        if self.calls.remove(&id).is_none() {
            return false;
        }
        self.push(Packet::new(
            Header::new(MessageKind::Error, id),
            Body::Error(error),
        ));
        true
    }

    /// Queues one item of the server stream of call `id`, if the client granted credit and
    /// the connection's queued output is below [`ServerConfig::max_transmit_backlog`];
    /// otherwise `NoCredit`, and a [`ServerEvent::SendCredit`] follows when it may try again.
    /// So a producer whose client does not read waits, and holds no more than the budget.
    pub fn send_stream_item(
        &mut self,
        id: u64,
        payload: P,
        codec: CodecId,
    ) -> Result<(), ServerSendError<P>> {
        let Some(send) = self.calls.get_mut(&id).and_then(|c| c.send.as_mut()) else {
            return Err(StreamSendError::Closed(payload));
        };
        let shared_over = self.shared.as_ref().is_some_and(OutputBudget::is_over);
        if (self.queued >= self.config.max_transmit_backlog || shared_over) && send.credit() > 0 {
            if !self.budget_waiters.contains(&id) {
                self.budget_waiters.push(id);
            }
            if let (true, Some(b)) = (shared_over, &self.shared) {
                b.wait();
            }
            return Err(StreamSendError::NoCredit(payload));
        }
        let size = FIXED_HEADER_LEN + payload.wire_size();
        push_item(Some(send), id, payload, codec, &mut self.transmit)?;
        self.charge(size);
        Ok(())
    }

    /// Bytes of the answers queued and not yet taken by [`poll_transmit`](Self::poll_transmit)
    /// (payloads before compression, with their headers).
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Credit left on the server stream of call `id`.
    pub fn send_credit(&self, id: u64) -> Option<u64> {
        self.calls
            .get(&id)
            .and_then(|c| c.send.as_ref())
            .map(|s| s.credit())
    }

    /// Ends the server stream of call `id` normally; the call is over. Returns `false` if it was
    /// not an active server stream.
    pub fn end_stream(&mut self, id: u64) -> bool {
        match self.calls.get(&id) {
            Some(c) if c.kind.server_streams() => {}
            _ => return false,
        }
        self.calls.remove(&id);
        self.push(Packet::new(
            Header::new(MessageKind::StreamEnd, id),
            Body::Empty,
        ));
        true
    }

    /// Reports that the handler took `n` items of the client stream of call `id`; grants the
    /// client more credit when half the window has been consumed.
    pub fn stream_consumed(&mut self, id: u64, n: u32) {
        let recv = self.calls.get_mut(&id).and_then(|c| c.recv.as_mut());
        let before = self.transmit.len();
        push_credit(recv, id, n, &mut self.transmit);
        if self.transmit.len() > before {
            self.charge(FIXED_HEADER_LEN);
        }
    }

    /// The handler of call `id` will read no more of the client's stream: `buffered` items it
    /// never took are credited back now, and later items are dropped on arrival and credited at
    /// once, so a client still sending is not held up forever.
    pub fn stream_abandoned(&mut self, id: u64, buffered: u32) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.recv.is_none() || call.discard {
            return;
        }
        call.discard = true;
        self.stream_consumed(id, buffered);
    }

    /// Expires deadlines: each expired call is answered `DeadlineExceeded` and reported as
    /// [`ServerEvent::Cancelled`].
    pub fn handle_timeout(&mut self, now: Instant) {
        loop {
            let calls = &self.calls;
            let Some(id) = self
                .deadlines
                .pop_expired(now, |id| calls.get(&id).and_then(|c| c.deadline))
            else {
                break;
            };
            self.calls.remove(&id);
            self.queue_error(id, ErrorCode::DeadlineExceeded, "deadline exceeded");
            self.events.push_back(ServerEvent::Cancelled {
                id,
                reason: CallError::Timeout,
            });
        }
        loop {
            let notifications = &self.notifications;
            let Some(token) = self
                .notification_deadlines
                .pop_expired(now, |t| notifications.get(&t).map(|n| n.deadline))
            else {
                break;
            };
            self.notifications.remove(&token);
            self.events
                .push_back(ServerEvent::NotificationStopped { token });
        }
    }

    /// Stops accepting calls: new requests are answered `ShuttingDown`; calls in progress go on.
    pub fn start_shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// Whether no call is in progress and no notification handler runs.
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty() && self.notifications.is_empty()
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// The connection is gone (`reason`): every active call is reported
    /// [`ServerEvent::Cancelled`] so its handler can stop.
    pub fn handle_close(&mut self, reason: &str) {
        let mut ids: Vec<u64> = self.calls.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.events.push_back(ServerEvent::Cancelled {
                id,
                reason: CallError::Disconnected(reason.to_string()),
            });
        }
        self.stop_notifications();
        self.calls.clear();
        self.deadlines.clear();
        self.transmit.clear();
        self.release(self.queued);
        self.budget_waiters.clear();
    }

    /// The answer to call `id` could not be sent (it exceeds the frame size limit, say): tells
    /// the client with an error instead, so its call does not hang. Returns whether the call
    /// was still in progress (a stream: its handler must be stopped); a response has already
    /// ended its call.
    pub fn answer_unsendable(
        &mut self,
        id: u64,
        code: ErrorCode,
        reason: impl Into<String>,
    ) -> bool {
        let active = self.calls.remove(&id).is_some();
        self.queue_error(id, code, reason);
        active
    }

    /// Whether packets are waiting in [`poll_transmit`](Self::poll_transmit).
    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// Whether the connection should not be read for now: it dropped a notification for want of
    /// a handler slot while handlers of its own ran, and none of them has ended since. A peer
    /// flooding notifications is then held back by the transport (its writes wait) instead of
    /// being read and thrown away at the cost of the server's CPU, and reading resumes as soon
    /// as one of its handlers ends.
    pub fn holds_input(&self) -> bool {
        self.held_at.is_some_and(|at| self.load() >= at)
    }

    /// Whether the answers waiting in [`poll_transmit`](Self::poll_transmit) come to
    /// [`ServerConfig::max_transmit_backlog`] bytes or more (each packet counts its payload,
    /// its method and a fixed header).
    ///
    /// An adapter whose transport cannot take more bytes at the moment stops reading from the
    /// client while this holds: every queued packet answers something the client sent, so
    /// not reading bounds the queue. (A client must never stop reading for the same reason,
    /// or two such peers could wait on each other forever.)
    pub fn is_backlogged(&self) -> bool {
        self.transmit.len() >= MAX_BACKLOG_PACKETS || self.over_budget()
    }

    /// The next packet to send. Once the queued output falls to half its budget, the streams
    /// that were refused for want of it are told to try again ([`ServerEvent::SendCredit`]).
    pub fn poll_transmit(&mut self) -> Option<Packet<P>> {
        let p = self.transmit.pop_front()?;
        self.sent(packet_size(&p));
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
        let size = packet_size(p);
        // Dropped in place: a packet is too large to move out for nothing.
        self.transmit.drain(..1);
        self.sent(size);
    }

    /// A packet of `size` bytes left the queue.
    fn sent(&mut self, size: usize) {
        self.release(size);
        self.retry_budget_waiters();
    }

    /// Tells the streams refused for want of output budget to try again once this
    /// connection's queued output is down to half its budget and the server's total below its
    /// limit (the adapter calls it when the [`OutputBudget`] says it freed).
    pub fn retry_budget_waiters(&mut self) {
        if self.budget_waiters.is_empty()
            || self.queued > self.config.max_transmit_backlog / 2
            || self.shared.as_ref().is_some_and(OutputBudget::is_over)
        {
            return;
        }
        for id in std::mem::take(&mut self.budget_waiters) {
            self.events.push_back(ServerEvent::SendCredit { id });
        }
    }

    /// Whether [`poll_event`](Self::poll_event) has an event.
    pub fn has_event(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ServerEvent<P>> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let calls = &self.calls;
        let call = self
            .deadlines
            .peek(|id, at| calls.get(&id).and_then(|c| c.deadline) == Some(at));
        let notifications = &self.notifications;
        let notification = self
            .notification_deadlines
            .peek(|t, at| notifications.get(&t).is_some_and(|n| n.deadline == at));
        match (call, notification) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
