//! [`Packet`]: a message as the RPC state machines see it, generic over its payload type.
//!
//! On a byte transport the payload is [`Bytes`] and a packet converts to and from the wire with
//! [`Packet::from_message`] and [`Packet::encode`]. The in-process fast path uses a boxed value
//! instead and never serializes; the state machines do not look at payloads, so they serve both.

use bytes::{Bytes, BytesMut};

use crate::error::ProtoError;
use crate::message::{Header, Message, MessageEncoder, MessageKind, RemoteError};
use crate::metadata::Metadata;

/// What a packet carries after its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<P> {
    /// Nothing (cancel, credit, stream end).
    Empty,
    /// An application payload (request, response, notification, stream item, ping, pong).
    Data(P),
    /// A failure (`Error` messages).
    Error(RemoteError),
}

/// A message before encoding or after decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<P> {
    /// The header.
    pub header: Header,
    /// The method name: non-empty on requests and notifications, empty otherwise. Valid UTF-8.
    pub method: Bytes,
    /// The call's metadata: on requests and notifications only (empty otherwise).
    pub metadata: Metadata,
    /// The body.
    pub body: Body<P>,
}

impl<P> Packet<P> {
    /// A packet with no method name.
    pub fn new(header: Header, body: Body<P>) -> Self {
        Self {
            header,
            method: Bytes::new(),
            metadata: Metadata::new(),
            body,
        }
    }

    /// The method name as text (empty when absent).
    pub fn method_str(&self) -> &str {
        std::str::from_utf8(&self.method).unwrap_or_default()
    }

    /// Turns the payload into another type, keeping everything else.
    pub fn map<Q>(self, f: impl FnOnce(P) -> Q) -> Packet<Q> {
        Packet {
            header: self.header,
            method: self.method,
            metadata: self.metadata,
            body: match self.body {
                Body::Empty => Body::Empty,
                Body::Data(p) => Body::Data(f(p)),
                Body::Error(e) => Body::Error(e),
            },
        }
    }
}

impl Packet<Bytes> {
    /// Interprets a decoded wire message. `Error` payloads are parsed into [`RemoteError`]s;
    /// the payload of `Cancel`, `Credit` and `StreamEnd` messages is ignored.
    pub fn from_message(msg: Message) -> Self {
        let (header, method, metadata, payload) = msg.into_parts();
        let body = match header.kind {
            MessageKind::Error => Body::Error(RemoteError::decode(&payload)),
            MessageKind::Cancel | MessageKind::Credit | MessageKind::StreamEnd => Body::Empty,
            _ => Body::Data(payload),
        };
        // The method name shares the frame's buffer (validated UTF-8 by the decoder).
        Packet {
            header,
            method,
            metadata,
            body,
        }
    }

    /// Appends the packet as one length-prefixed frame to `out`.
    pub fn encode(&self, enc: &mut MessageEncoder, out: &mut BytesMut) -> Result<(), ProtoError> {
        let method = self.method_str();
        match &self.body {
            Body::Empty => enc.encode(&self.header, method, &[], out),
            Body::Data(p) => enc.encode_with_metadata(&self.header, method, &self.metadata, p, out),
            Body::Error(e) => enc.encode_with(&self.header, method, out, |buf| {
                e.encode_into(buf);
                Ok(())
            }),
        }
    }
}
