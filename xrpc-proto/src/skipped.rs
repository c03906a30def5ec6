//! Frames larger than the receiver's maximum: skipped whole, their bytes released as they come
//! and never buffered, and reported with their first bytes ([`SkippedFrame`]) so that the
//! session can fail the one message the frame carried — the call it answers (client) or asks
//! (server) — and keep the connection (docs/PROTOCOL.md §5.7).
//!
//! The byte-stream decoder ([`FrameDecoder`](crate::FrameDecoder)) skips such frames itself;
//! a transport that does its own framing (shared memory) reports them the same way, as
//! [`TransportError::FrameSkipped`](crate::TransportError::FrameSkipped).

use bytes::Bytes;

use crate::message::{FIXED_HEADER_LEN, MAGIC, MessageKind, VERSION};

/// Bytes of a skipped frame that are kept to tell which message it was: the fixed header and
/// its optional fields, and the start of a method name.
pub const SKIPPED_HEAD_LEN: usize = 64;

/// A frame larger than the receiver's maximum, skipped whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame of {len} bytes exceeds max {max} (skipped)")]
pub struct SkippedFrame {
    /// The frame's length.
    pub len: usize,
    /// The receiver's maximum frame size.
    pub max: usize,
    /// The frame's first bytes (at most [`SKIPPED_HEAD_LEN`]), as the peer wrote them.
    pub head: Bytes,
}

impl SkippedFrame {
    /// The kind and id of the message the frame carried, if its head is an xrpc header (magic,
    /// version and kind valid); `None` when the frame is no message at all. Only the fixed
    /// header is read: a method name cut by [`SKIPPED_HEAD_LEN`] does not matter.
    pub fn addressee(&self) -> Option<(MessageKind, u64)> {
        let fixed = self.head.first_chunk::<FIXED_HEADER_LEN>()?;
        if fixed[0..2] != MAGIC || fixed[2] != VERSION {
            return None;
        }
        let kind = MessageKind::from_u8(fixed[3])?;
        let id = u64::from_le_bytes(fixed[8..16].try_into().ok()?);
        Some((kind, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Header, MessageEncoder};
    use bytes::BytesMut;

    #[test]
    fn the_head_names_the_message() {
        let mut out = BytesMut::new();
        MessageEncoder::default()
            .encode(
                &Header::new(MessageKind::Response, 42),
                "",
                &[1; 100],
                &mut out,
            )
            .unwrap();
        let head = out.split_off(4).split_to(SKIPPED_HEAD_LEN).freeze();
        let frame = SkippedFrame {
            len: 200,
            max: 100,
            head,
        };
        assert_eq!(frame.addressee(), Some((MessageKind::Response, 42)));
        let garbage = SkippedFrame {
            head: Bytes::from_static(b"not a message at all, not even a header"),
            ..frame.clone()
        };
        assert_eq!(garbage.addressee(), None);
        let short = SkippedFrame {
            head: frame.head.slice(..10),
            ..frame
        };
        assert_eq!(short.addressee(), None);
    }
}
