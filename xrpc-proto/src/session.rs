//! [`Session`]: what an adapter's driver sees of a connection, whichever end it is — the
//! transport side of [`ClientSession`] and [`ServerSession`], so that one driver serves both.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::client_session::ClientSession;
use crate::packet::Packet;
use crate::payload::Payload;
use crate::server_session::ServerSession;
use crate::skipped::SkippedFrame;

/// The transport side of a session: bytes (or frames, or packets) and time in; bytes,
/// deadlines and the end out. Each method is the session's own, documented there.
pub trait Session: Send + 'static {
    /// See [`ClientSession::read_buffer`].
    fn read_buffer(&mut self) -> &mut BytesMut;
    /// See [`ClientSession::handle_read`].
    fn handle_read(&mut self, now: Instant);
    /// See [`ClientSession::handle_bytes`].
    fn handle_bytes(&mut self, now: Instant, data: &[u8]);
    /// See [`ClientSession::handle_frame`].
    fn handle_frame(&mut self, now: Instant, frame: Bytes);
    /// See [`ClientSession::handle_packet`].
    fn handle_packet(&mut self, now: Instant, packet: Packet<Payload>);
    /// See [`ClientSession::handle_eof`].
    fn handle_eof(&mut self, now: Instant);
    /// See [`ClientSession::handle_transport_error`].
    fn handle_transport_error(&mut self, error: &str);
    /// See [`ClientSession::handle_timeout`].
    fn handle_timeout(&mut self, now: Instant);
    /// See [`ServerSession::handle_partial`].
    fn handle_partial(&mut self, now: Instant, bytes: usize);
    /// See [`ClientSession::handle_skipped`] and [`ServerSession::handle_skipped`].
    fn handle_skipped(&mut self, now: Instant, frame: &SkippedFrame);
    /// See [`ClientSession::handle_unwritten`] and [`ServerSession::handle_unwritten`].
    fn handle_unwritten(&mut self, now: Instant, bytes: usize);
    /// See [`ClientSession::poll_transmit`].
    fn poll_transmit(&mut self, out: &mut BytesMut) -> bool;
    /// See [`ClientSession::poll_packet`].
    fn poll_packet(&mut self) -> Option<Packet<Payload>>;
    /// See [`ClientSession::has_transmit`].
    fn has_transmit(&self) -> bool;
    /// See [`ClientSession::poll_timeout`].
    fn poll_timeout(&mut self) -> Option<Instant>;
    /// See [`ClientSession::wants_read`] and [`ServerSession::wants_read`].
    fn wants_read(&self) -> bool;
    /// See [`ClientSession::awaits_input`].
    fn awaits_input(&self) -> bool;
    /// See [`ClientSession::is_closed`].
    fn is_closed(&self) -> bool;
}

/// Both sessions implement [`Session`] with their inherent methods of the same names.
macro_rules! session_by_inherent_methods {
    ($($ty:ty),*) => {$(
        impl Session for $ty {
            fn read_buffer(&mut self) -> &mut BytesMut { <$ty>::read_buffer(self) }
            fn handle_read(&mut self, now: Instant) { <$ty>::handle_read(self, now) }
            fn handle_bytes(&mut self, now: Instant, data: &[u8]) { <$ty>::handle_bytes(self, now, data) }
            fn handle_frame(&mut self, now: Instant, frame: Bytes) { <$ty>::handle_frame(self, now, frame) }
            fn handle_packet(&mut self, now: Instant, packet: Packet<Payload>) { <$ty>::handle_packet(self, now, packet) }
            fn handle_eof(&mut self, now: Instant) { <$ty>::handle_eof(self, now) }
            fn handle_transport_error(&mut self, error: &str) { <$ty>::handle_transport_error(self, error) }
            fn handle_timeout(&mut self, now: Instant) { <$ty>::handle_timeout(self, now) }
            fn handle_partial(&mut self, now: Instant, bytes: usize) { <$ty>::handle_partial(self, now, bytes) }
            fn handle_skipped(&mut self, now: Instant, frame: &SkippedFrame) { <$ty>::handle_skipped(self, now, frame) }
            fn handle_unwritten(&mut self, now: Instant, bytes: usize) { <$ty>::handle_unwritten(self, now, bytes) }
            fn poll_transmit(&mut self, out: &mut BytesMut) -> bool { <$ty>::poll_transmit(self, out) }
            fn poll_packet(&mut self) -> Option<Packet<Payload>> { <$ty>::poll_packet(self) }
            fn has_transmit(&self) -> bool { <$ty>::has_transmit(self) }
            fn poll_timeout(&mut self) -> Option<Instant> { <$ty>::poll_timeout(self) }
            fn wants_read(&self) -> bool { <$ty>::wants_read(self) }
            fn awaits_input(&self) -> bool { <$ty>::awaits_input(self) }
            fn is_closed(&self) -> bool { <$ty>::is_closed(self) }
        }
    )*};
}

session_by_inherent_methods!(ClientSession, ServerSession);
