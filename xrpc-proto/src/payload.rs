//! [`Payload`]: what a packet of the RPC state machines carries — encoded bytes, or, on the
//! in-process value transport, the value itself.

use std::any::Any;

use bytes::Bytes;

/// The payload of an RPC packet: bytes encoded by a codec, or — between two ends in one
/// process — the value itself, moved without serialization.
pub enum Payload {
    /// Bytes encoded by a codec.
    Bytes(Bytes),
    /// An in-process value, moved without serialization. Only a session that hands its packets
    /// over as they are ([`ClientSession::poll_packet`](crate::ClientSession::poll_packet)) can
    /// carry one; encoding it for a byte transport fails its call.
    Value(Box<dyn Any + Send>),
}

impl Payload {
    /// The encoded length (0 for a value: it occupies no transport bytes).
    pub fn len(&self) -> usize {
        match self {
            Self::Bytes(b) => b.len(),
            Self::Value(_) => 0,
        }
    }

    /// Whether the payload is empty bytes (a value is never empty).
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Bytes(b) if b.is_empty())
    }
}

/// The bytes a payload takes on the wire (before compression), for output budgets.
pub trait WireSize {
    /// The encoded length.
    fn wire_size(&self) -> usize;
}

impl WireSize for Payload {
    fn wire_size(&self) -> usize {
        self.len()
    }
}

impl WireSize for Bytes {
    fn wire_size(&self) -> usize {
        self.len()
    }
}

impl WireSize for Vec<u8> {
    fn wire_size(&self) -> usize {
        self.len()
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Self::Bytes(b)
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) => f.debug_tuple("Bytes").field(&b.len()).finish(),
            Self::Value(_) => f.write_str("Value(..)"),
        }
    }
}

impl PartialEq for Payload {
    /// Bytes compare by content; values are never equal (they cannot be compared).
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Bytes(a), Self::Bytes(b)) => a == b,
            _ => false,
        }
    }
}
