//! [`ClientSession`]: the client end of one connection — bytes in, bytes out.
//!
//! It owns the whole protocol of the connection: framing and message coding (`wire`), the
//! calls ([`ClientConnection`]), what each call has received and how it ended (its
//! [`call`] record, until the application releases it), what happens to a message
//! that cannot be sent, and closing. An adapter only moves bytes and time, and wakes:
//!
//! ```text
//! loop {
//!     read from the transport  -> read_buffer() + handle_read(now)   (or handle_frame / handle_eof)
//!     the clock                -> handle_timeout(now) at poll_timeout()
//!     poll_transmit(&mut buf)  -> write buf (call again once it is written)
//!     poll_wake()              -> wake the waiters of that call
//!     is_closed()              -> close the transport and stop
//! }
//! ```
//!
//! A waiter asks the session itself: [`take_response`](ClientSession::take_response),
//! [`next_item`](ClientSession::next_item), [`send_item`](ClientSession::send_item) — each
//! answer decided here, the same for every adapter.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;
use std::task::Poll;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::call::{self, CallRecord, CallWake, SendError, unknown};
use crate::client::{
    CallError, CallKind, CallOptions, ClientConfig, ClientConnection, ClientEvent,
};
use crate::codec::CodecId;
use crate::compression::DecompressionBudget;
use crate::flow::StreamSendError;
use crate::frame::FrameError;
use crate::idmap::{IdMap, id_map};
use crate::message::{FIXED_HEADER_LEN, MessageKind};
use crate::packet::Packet;
use crate::payload::Payload;
use crate::skipped::SkippedFrame;
use crate::stall::WriteStall;
use crate::wire::{Decoded, Unsendable, Wire, WireConfig};

/// [`poll_transmit`](ClientSession::poll_transmit) stops adding frames to a buffer once it holds
/// this many bytes (a single larger frame still goes whole).
pub const TRANSMIT_BATCH: usize = 64 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Open,
    /// Closed for new work; what was already handed out may still be written until `until`.
    Closing {
        until: Instant,
    },
    Closed,
}

/// The client end of one connection (see the [module docs](self)).
#[derive(Debug)]
pub struct ClientSession {
    calls: ClientConnection<Payload>,
    wire: Wire,
    life: Life,
    /// Each call's record, from its start until the application releases it.
    records: IdMap<CallRecord>,
    /// Calls whose waiters are to be woken.
    wakes: VecDeque<CallWake>,
    /// Output the transport holds unwritten (for the write-stall deadline).
    stall: WriteStall,
}

impl ClientSession {
    /// A session with call settings `config` and wire settings `wire`; `now` starts the
    /// heartbeat clock.
    pub fn new(config: ClientConfig, wire: WireConfig, now: Instant) -> Self {
        Self {
            calls: ClientConnection::new(config, now),
            wire: Wire::new(
                wire,
                Some(DecompressionBudget::new(config.decompression_budget)),
            ),
            life: Life::Open,
            records: id_map(),
            wakes: VecDeque::new(),
            stall: WriteStall::default(),
        }
    }

    /// The call settings.
    pub fn config(&self) -> &ClientConfig {
        self.calls.config()
    }

    /// Changes [`ClientConfig::default_timeout`] for calls started from now on.
    pub fn set_default_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.calls.set_default_timeout(timeout);
    }

    /// The largest frame this session sends or accepts.
    pub fn max_frame_size(&self) -> usize {
        self.wire.max_frame_size()
    }

    /// A payload that cannot fit in a frame whatever its header: refused before it is queued.
    fn check_size(&self, method: &str, payload: &Payload) -> Result<(), CallError> {
        let size = FIXED_HEADER_LEN + method.len() + payload.len();
        let max = self.wire.max_frame_size();
        // Compression may shrink a payload below the limit: only an uncompressed session can
        // tell now; otherwise encoding decides (and fails the call if it must).
        if size > max && self.wire.uncompressed() {
            return Err(CallError::FrameTooLarge { size, max });
        }
        Ok(())
    }

    // ---- calls -------------------------------------------------------------------------

    /// Starts a call and returns its id; its outcome arrives as [`ClientEvent`]s. A call
    /// without a timeout gets [`ClientConfig::default_timeout`] (unary and client-streaming
    /// calls). Fails at once if the session is closed or the request cannot fit in a frame.
    pub fn start_call(
        &mut self,
        now: Instant,
        method: &str,
        payload: Payload,
        opts: CallOptions,
    ) -> Result<u64, CallError> {
        self.check_open()?;
        self.check_size(method, &payload)?;
        let kind = opts.kind;
        let id = self.calls.start_call(now, method, payload, opts)?;
        self.records.insert(id, CallRecord::new(kind));
        Ok(id)
    }

    /// Queues a one-way notification.
    pub fn notify(
        &mut self,
        method: &str,
        payload: Payload,
        codec: CodecId,
    ) -> Result<(), CallError> {
        self.notify_with_options(method, payload, CallOptions::unary(codec))
    }

    /// Queues a one-way notification with options (codec, timeout, metadata, signature).
    pub fn notify_with_options(
        &mut self,
        method: &str,
        payload: Payload,
        opts: CallOptions,
    ) -> Result<(), CallError> {
        self.check_open()?;
        self.check_size(method, &payload)?;
        self.calls.notify_with_options(method, payload, opts)
    }

    fn check_open(&self) -> Result<(), CallError> {
        match self.life {
            Life::Open => Ok(()),
            _ => Err(self.calls.closed_error().unwrap_or_else(|| {
                CallError::Disconnected("the connection is closing".to_string())
            })),
        }
    }

    /// Gives up on call `id` and tells the server: the call ends with
    /// [`CallError::Cancelled`] for its other handles (a stream's sender, say), which are
    /// woken. Returns whether it was pending.
    pub fn cancel(&mut self, id: u64) -> bool {
        self.absorb();
        let pending = self.calls.cancel(id);
        if let Some(r) = self.records.get_mut(&id)
            && !r.is_over()
        {
            r.fail(CallError::Cancelled, true);
            self.wakes.push_back(CallWake::Ended(id));
        }
        pending
    }

    /// The application released call `id` (its last handle is gone): the session forgets it,
    /// and cancels it on the server if it was still pending.
    pub fn release(&mut self, id: u64) {
        if self.records.remove(&id).is_some() {
            self.calls.cancel(id);
        }
    }

    // ---- what a call's handles ask -------------------------------------------------------

    /// The response of unary or client-streaming call `id` (see [`call`]): `Ok`
    /// the response, `Err` why the call failed; `Pending` until it ends. A unary call is
    /// released once it has its outcome.
    pub fn take_response(&mut self, id: u64) -> Poll<Result<Payload, CallError>> {
        self.absorb();
        let Entry::Occupied(mut r) = self.records.entry(id) else {
            return unknown();
        };
        let res = r.get_mut().take_response();
        // A unary call's only waiter has its outcome: nothing else can ask (a client stream's
        // sender may, until it is released).
        if res.is_ready() && r.get().kind() == CallKind::Unary {
            r.remove();
        }
        res
    }

    /// The next item of the server stream of call `id` (see [`call`]): an item
    /// (the server is granted credit as items are taken), `None` at its normal end, `Err` why
    /// the call failed; `Pending` to wait.
    pub fn next_item(&mut self, id: u64) -> Poll<Option<Result<Payload, CallError>>> {
        self.absorb();
        call::next_item(&mut self.records, id, || self.calls.stream_consumed(id, 1))
    }

    /// Queues one item of the client stream of call `id` (see [`call`]): `NoCredit`
    /// gives the item back until the server grants credit (a [`CallWake::Send`] follows).
    pub fn send_item(
        &mut self,
        id: u64,
        payload: Payload,
        codec: CodecId,
    ) -> Result<(), SendError> {
        self.absorb();
        let Some(r) = self.records.get(&id) else {
            return Err(SendError::Over(CallError::Finished));
        };
        r.check_send().map_err(SendError::Over)?;
        match self.calls.send_stream_item(id, payload, codec) {
            Ok(()) => Ok(()),
            Err(StreamSendError::NoCredit(p)) => Err(SendError::NoCredit(p)),
            Err(StreamSendError::Closed(_)) => Err(SendError::Over(CallError::Finished)),
        }
    }

    /// Credit left on the client stream of call `id`.
    pub fn send_credit(&self, id: u64) -> Option<u64> {
        self.calls.send_credit(id)
    }

    /// Ends the client stream of call `id`; returns whether it was open.
    pub fn finish_stream(&mut self, id: u64) -> bool {
        if let Some(r) = self.records.get_mut(&id) {
            r.finish();
        }
        self.calls.finish_stream(id)
    }

    /// Calls started and not yet finished.
    pub fn pending_calls(&self) -> usize {
        self.calls.pending_calls()
    }

    /// Closes the session locally (the application dropped its last handle, or closed it):
    /// every pending call fails with `Disconnected(reason)`; output already handed to the
    /// adapter may still be written for [`ClientConfig::close_timeout`], so a notification
    /// sent just before arrives whole, but a server that stopped reading cannot hold the
    /// connection open.
    pub fn close(&mut self, now: Instant, reason: &str) {
        if self.life != Life::Open {
            return;
        }
        self.calls.handle_close(reason);
        self.life = Life::Closing {
            until: now + self.calls.config().close_timeout,
        };
    }

    // ---- transport input ---------------------------------------------------------------

    /// The buffer to read transport bytes into (append only), followed by
    /// [`handle_read`](Self::handle_read).
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        self.wire.read_buffer()
    }

    /// Processes the bytes appended to [`read_buffer`](Self::read_buffer).
    pub fn handle_read(&mut self, now: Instant) {
        while self.life == Life::Open {
            match self.wire.next_frame() {
                Ok(Some(frame)) => self.handle_frame(now, frame),
                Ok(None) => return,
                Err(FrameError::Skipped(frame)) => self.handle_skipped(now, &frame),
                Err(e) => return self.fail(format!("the server broke the framing: {e}")),
            }
        }
    }

    /// Appends received bytes and processes them.
    pub fn handle_bytes(&mut self, now: Instant, data: &[u8]) {
        self.wire.push_bytes(data);
        self.handle_read(now);
    }

    /// Processes one whole frame (from a transport that keeps frame boundaries, such as shared
    /// memory). A frame that is not a valid message closes the session.
    pub fn handle_frame(&mut self, now: Instant, frame: Bytes) {
        if self.life != Life::Open {
            return;
        }
        match self.wire.decode(now, frame) {
            Ok(Decoded::Packet(packet)) => self.handle_packet(now, packet),
            // Past the decompression budget: the call it belongs to fails, not inflated.
            Ok(Decoded::Refused { header, error }) => {
                if !matches!(
                    header.kind,
                    MessageKind::Response | MessageKind::StreamItem | MessageKind::Error
                ) {
                    return;
                }
                self.calls.fail_call(
                    header.id,
                    CallError::Protocol(format!("compressed message refused: {}", error.message)),
                );
            }
            Err(e) => self.fail(format!("the server sent a malformed message: {e}")),
        }
    }

    /// A frame longer than [`max_frame_size`](Self::max_frame_size) was skipped (by this
    /// session's framing, or by a transport that frames itself,
    /// [`TransportError::FrameSkipped`](crate::TransportError::FrameSkipped)): the call it
    /// answers fails alone with [`CallError::FrameTooLarge`], and the connection goes on. A
    /// frame that is no xrpc message at all closes the session like a malformed one.
    pub fn handle_skipped(&mut self, _now: Instant, frame: &SkippedFrame) {
        if self.life != Life::Open {
            return;
        }
        match frame.addressee() {
            Some((MessageKind::Response | MessageKind::StreamItem | MessageKind::Error, id)) => {
                self.calls.fail_call(
                    id,
                    CallError::FrameTooLarge {
                        size: frame.len,
                        max: frame.max,
                    },
                );
            }
            // Nothing else a server sends can be that large for a reason (a ping's payload
            // is the server's choice): dropped.
            Some(_) => {}
            None => self.fail(format!(
                "the server sent a malformed message: {frame}, no header"
            )),
        }
    }

    /// The transport holds `bytes` of output not yet written (0 when all is written): when
    /// that number does not fall for [`ClientConfig::write_stall_timeout`] — the server
    /// stopped reading — the session closes, failing its calls.
    pub fn handle_unwritten(&mut self, now: Instant, bytes: usize) {
        self.stall.update(now, bytes);
    }

    /// Bytes of decompressed payloads the connection holds now (see
    /// [`ClientConfig::decompression_budget`]).
    pub fn decompressed_bytes(&self) -> usize {
        self.wire.decompressed_held()
    }

    /// The transport holds `bytes` of a frame not yet whole. A client keeps no deadline for it:
    /// each call has its own, and a server cannot make the client hold more than one frame.
    pub fn handle_partial(&mut self, _now: Instant, _bytes: usize) {}

    /// Processes one packet (from the in-process value transport).
    pub fn handle_packet(&mut self, now: Instant, packet: Packet<Payload>) {
        if self.life != Life::Open {
            return;
        }
        self.calls.handle_packet(now, packet);
        self.check_closed();
    }

    /// The server closed the connection (end of input).
    pub fn handle_eof(&mut self, _now: Instant) {
        let partial = self.wire.partial_bytes();
        if partial == 0 {
            self.fail("the server closed the connection".into());
        } else {
            self.fail(format!(
                "the server closed the connection {partial} bytes into a frame"
            ));
        }
    }

    /// The transport failed (read or write): the session is over.
    pub fn handle_transport_error(&mut self, error: impl std::fmt::Display) {
        self.fail(format!("connection lost: {error}"));
    }

    /// Fires deadlines, heartbeats and the close grace. Call it at
    /// [`poll_timeout`](Self::poll_timeout) (early or late is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.life {
            Life::Open => {
                let timeout = self.calls.config().write_stall_timeout;
                if self.stall.deadline(timeout).is_some_and(|at| now >= at) {
                    return self.fail(self.stall.describe(timeout));
                }
                self.calls.handle_timeout(now);
                self.check_closed();
            }
            Life::Closing { until } if now >= until => self.life = Life::Closed,
            _ => {}
        }
    }

    /// Ends the session at once, failing what is pending.
    fn fail(&mut self, reason: String) {
        self.calls.handle_close(reason);
        self.life = Life::Closed;
    }

    /// The state machine closed itself (heartbeats missed).
    fn check_closed(&mut self) {
        if self.calls.closed_reason().is_some() {
            self.life = Life::Closed;
        }
    }

    // ---- output ------------------------------------------------------------------------

    /// Appends queued messages to `out` as length-prefixed frames (up to about
    /// [`TRANSMIT_BATCH`] bytes); returns whether it appended any. Call it again once the
    /// bytes it gave have been written: a closing session learns from an empty call that
    /// everything was written.
    ///
    /// A message that cannot be encoded (too large, or an in-process value) fails only its
    /// call, with [`CallError::FrameTooLarge`] or [`CallError::Unsendable`].
    pub fn poll_transmit(&mut self, out: &mut BytesMut) -> bool {
        if self.life == Life::Closed {
            return false;
        }
        let start = out.len();
        // Nothing queued (the adapter's "all written" poll): no batch to start.
        while self.calls.has_transmit()
            && let Some((packet, e)) = self.wire.encode_batch(out, start, &mut self.calls)
        {
            self.unsendable(&packet, e);
        }
        let wrote = out.len() > start;
        if !wrote && matches!(self.life, Life::Closing { .. }) {
            self.life = Life::Closed;
        }
        wrote
    }

    /// The next packet as it is, for a transport that moves packets (the in-process value
    /// transport) instead of bytes.
    pub fn poll_packet(&mut self) -> Option<Packet<Payload>> {
        if self.life == Life::Closed {
            return None;
        }
        let p = self.calls.poll_transmit();
        if p.is_none() && matches!(self.life, Life::Closing { .. }) {
            self.life = Life::Closed;
        }
        p
    }

    /// The one rule for a message that cannot be sent: it fails its call.
    fn unsendable(&mut self, packet: &Packet<Payload>, e: Unsendable) {
        let error = match e {
            Unsendable::TooLarge { size, max } => CallError::FrameTooLarge { size, max },
            other => CallError::Unsendable(other.to_string()),
        };
        match packet.header.kind {
            MessageKind::Request
            | MessageKind::StreamItem
            | MessageKind::StreamEnd
            | MessageKind::Credit => {
                self.calls.fail_call(packet.header.id, error);
            }
            // A notification was size-checked when queued, so only an in-process value on a
            // byte transport ends here; pings, pongs and cancels are always small.
            _ => {}
        }
    }

    /// Whether messages wait to be sent.
    pub fn has_transmit(&self) -> bool {
        self.calls.has_transmit()
    }

    /// The next call whose waiters are to be woken: its record changed (see
    /// [`call`]). Drain it after every input, timeout and local act.
    pub fn poll_wake(&mut self) -> Option<CallWake> {
        self.absorb();
        self.wakes.pop_front()
    }

    /// Moves what the calls' state machine reported into the calls' records.
    fn absorb(&mut self) {
        while let Some(ev) = self.calls.poll_event() {
            let id = match &ev {
                ClientEvent::Response { id, .. }
                | ClientEvent::Failed { id, .. }
                | ClientEvent::StreamEnd { id }
                | ClientEvent::StreamItem { id, .. }
                | ClientEvent::SendCredit { id } => *id,
            };
            let Some(r) = self.records.get_mut(&id) else {
                // Its handles are gone: a stream item is taken at once (credit flows).
                if let ClientEvent::StreamItem { .. } = ev {
                    self.calls.stream_consumed(id, 1);
                }
                continue;
            };
            let wake = match ev {
                ClientEvent::Response { payload, .. } => {
                    r.respond(payload);
                    CallWake::Ended(id)
                }
                ClientEvent::Failed { error, .. } => {
                    r.fail(error, true);
                    CallWake::Ended(id)
                }
                ClientEvent::StreamEnd { .. } => {
                    r.peer_ended();
                    r.end();
                    CallWake::Ended(id)
                }
                ClientEvent::StreamItem { payload, .. } => {
                    r.push_item(payload);
                    CallWake::Recv(id)
                }
                ClientEvent::SendCredit { .. } => CallWake::Send(id),
            };
            self.wakes.push_back(wake);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        match self.life {
            Life::Open => {
                let stall = self.stall.deadline(self.calls.config().write_stall_timeout);
                [self.calls.poll_timeout(), stall]
                    .into_iter()
                    .flatten()
                    .min()
            }
            Life::Closing { until } => Some(until),
            Life::Closed => None,
        }
    }

    /// Whether the session is still open for new calls.
    pub fn is_open(&self) -> bool {
        self.life == Life::Open
    }

    /// Whether the adapter should read more input: while open (a client never stops reading
    /// for lack of room to write, PROTOCOL.md §5.6).
    pub fn wants_read(&self) -> bool {
        self.is_open()
    }

    /// Whether input is awaited now — a call waits for its answer or a stream for its items —
    /// so that a transport that can wait for input by spinning a moment first (shared memory)
    /// should: with no call in flight, nothing is awaited soon, and it sleeps at once.
    pub fn awaits_input(&self) -> bool {
        self.calls.pending_calls() > 0
    }

    /// Whether the session is over: close the transport now.
    pub fn is_closed(&self) -> bool {
        self.life == Life::Closed
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<&str> {
        self.calls.closed_reason()
    }
}
