//! One connection's bytes ↔ packets: length-prefixed framing, the message header,
//! compression, and the rule for what cannot be encoded.
//!
//! The sessions ([`ClientSession`](crate::ClientSession), [`ServerSession`](crate::ServerSession))
//! own one each; adapters never see a frame decoder or a message encoder.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::budget::ReadBudget;
use crate::client::ClientConnection;
use crate::client_session::TRANSMIT_BATCH;
use crate::compression::{
    CompressionConfig, CompressionType, Compressor, DecompressionBudget, declared_len,
};
use crate::error::ProtoError;
use crate::frame::{DEFAULT_MAX_FRAME_SIZE, FrameDecoder, FrameError};
use crate::message::{ErrorCode, Header, Message, MessageEncoder, RemoteError};
use crate::packet::{Body, Packet};
use crate::payload::Payload;
use crate::rate::{DecompressionRate, SharedTokenBucket};
use crate::server::ServerConnection;

/// A connection's queue of packets to send, encoded where they lie: a packet moves out of the
/// queue only when it cannot be sent (a packet is too large to move without a `memcpy` call).
pub(crate) trait Outgoing {
    /// The next packet to send, left queued.
    fn peek_transmit(&self) -> Option<&Packet<Payload>>;
    /// Drops the packet [`peek_transmit`](Self::peek_transmit) showed: it was written.
    fn advance_transmit(&mut self);
    /// Takes the next packet out of the queue.
    fn poll_transmit(&mut self) -> Option<Packet<Payload>>;
}

impl Outgoing for ClientConnection<Payload> {
    fn peek_transmit(&self) -> Option<&Packet<Payload>> {
        ClientConnection::peek_transmit(self)
    }
    fn advance_transmit(&mut self) {
        ClientConnection::advance_transmit(self)
    }
    fn poll_transmit(&mut self) -> Option<Packet<Payload>> {
        ClientConnection::poll_transmit(self)
    }
}

impl Outgoing for ServerConnection<Payload> {
    fn peek_transmit(&self) -> Option<&Packet<Payload>> {
        ServerConnection::peek_transmit(self)
    }
    fn advance_transmit(&mut self) {
        ServerConnection::advance_transmit(self)
    }
    fn poll_transmit(&mut self) -> Option<Packet<Payload>> {
        ServerConnection::poll_transmit(self)
    }
}

/// How a connection's bytes are framed and coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireConfig {
    /// Largest frame sent or accepted (the same default on every transport).
    pub max_frame_size: usize,
    /// Compression of outgoing payloads.
    pub compression: CompressionConfig,
    /// Largest payload a compressed message may inflate to.
    pub max_decompressed: usize,
}

impl Default for WireConfig {
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            compression: CompressionConfig::none(),
            max_decompressed: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

impl WireConfig {
    /// The same configuration with another maximum frame size (and decompressed size).
    pub fn with_max_frame_size(mut self, max: usize) -> Self {
        self.max_frame_size = max;
        self.max_decompressed = max;
        self
    }

    /// The same configuration with compression.
    pub fn with_compression(mut self, compression: CompressionConfig) -> Self {
        self.compression = compression;
        self
    }
}

/// Why a packet could not be put on the wire. Only its call fails (see
/// [`CallError::FrameTooLarge`](crate::CallError::FrameTooLarge) and [`CallError::Unsendable`](crate::CallError::Unsendable)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unsendable {
    /// The encoded message exceeds the maximum frame size.
    #[error("message of {size} bytes exceeds the maximum frame size {max}")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// An in-process value cannot travel over a byte transport.
    #[error("an in-process value cannot be sent over a byte transport")]
    Value,
    /// Encoding failed otherwise (compression).
    #[error("{0}")]
    Encode(String),
}

/// What a frame decoded into.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A message.
    Packet(Packet<Payload>),
    /// A compressed message that was not inflated (compressed input refused, or the
    /// decompression budget spent): `error` says why, for its call.
    Refused { header: Header, error: RemoteError },
}

/// Framing and message coding of one connection.
#[derive(Debug)]
pub(crate) struct Wire {
    frames: FrameDecoder,
    decompressor: Compressor,
    max_decompressed: usize,
    /// `None`: compressed input is refused.
    budget: Option<DecompressionBudget>,
    /// How fast compressed input is inflated, if that is bounded (a server's).
    rate: Option<DecompressionRate>,
    encoder: MessageEncoder,
}

impl Wire {
    /// A wire whose decompressed payloads share `budget` (`None`: refuse compressed input).
    pub(crate) fn new(config: WireConfig, budget: Option<DecompressionBudget>) -> Self {
        Self {
            frames: FrameDecoder::new(config.max_frame_size),
            decompressor: Compressor::new(),
            max_decompressed: config.max_decompressed,
            budget,
            rate: None,
            encoder: MessageEncoder::new(config.max_frame_size, config.compression),
        }
    }

    /// Bounds how fast compressed input is inflated (see [`DecompressionRate`]).
    pub(crate) fn set_decompression_rate(&mut self, rate: DecompressionRate) {
        self.rate = Some(rate);
    }

    /// Charges decompressed payloads to the server-wide `total` budget too, and takes inflation
    /// from the server-wide `rate`.
    pub(crate) fn share_decompression(
        &mut self,
        total: &DecompressionBudget,
        rate: SharedTokenBucket,
    ) {
        self.budget = self.budget.take().map(|b| b.with_total(total));
        if let Some(r) = &mut self.rate {
            r.set_total(rate);
        }
    }

    /// Until when input is not read: the connection inflated past its rate.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.rate.as_ref().and_then(DecompressionRate::paused_until)
    }

    /// Ends a pause whose time has come.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(r) = &mut self.rate {
            r.handle_timeout(now);
        }
    }

    /// Bytes of decompressed payloads held now.
    pub(crate) fn decompressed_held(&self) -> usize {
        self.budget.as_ref().map_or(0, DecompressionBudget::held)
    }

    pub(crate) fn max_frame_size(&self) -> usize {
        self.encoder.max_frame_size()
    }

    /// Whether outgoing payloads travel uncompressed (so their size is known before encoding).
    pub(crate) fn uncompressed(&self) -> bool {
        self.encoder.compression().algorithm == CompressionType::None
    }

    /// The buffer received bytes are appended to, with room for a worthwhile read (growing
    /// with the bytes that arrive, see [`FrameDecoder::read_buffer`]).
    pub(crate) fn read_buffer(&mut self) -> &mut BytesMut {
        self.frames.read_buffer()
    }

    /// Appends received bytes.
    pub(crate) fn push_bytes(&mut self, data: &[u8]) {
        self.frames.handle_bytes(data);
    }

    /// Bytes received that do not yet form a whole frame.
    pub(crate) fn set_read_budget(&mut self, budget: ReadBudget) {
        self.frames.set_budget(budget);
    }

    pub(crate) fn waits_for_read_budget(&self) -> bool {
        self.frames.waits_for_budget()
    }

    pub(crate) fn partial_bytes(&self) -> usize {
        self.frames.partial_bytes()
    }

    /// The next whole frame of the byte stream.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        self.frames.poll_frame()
    }

    /// Decodes one frame into a packet. A compressed payload is inflated only if compressed
    /// input is accepted, its declared size fits the decompression budget and the rate (if
    /// any) admits it at `now`; otherwise it is [`Decoded::Refused`] (its call fails, the
    /// connection goes on).
    pub(crate) fn decode(&mut self, now: Instant, frame: Bytes) -> Result<Decoded, ProtoError> {
        let mut msg = Message::decode_raw(frame)?;
        let algorithm = msg.header.compression;
        if algorithm != CompressionType::None {
            let Some(budget) = &self.budget else {
                return Ok(Decoded::Refused {
                    header: msg.header,
                    error: RemoteError::new(
                        ErrorCode::Unsupported,
                        "compressed input is not accepted",
                    ),
                });
            };
            let declared = declared_len(&msg.payload).unwrap_or(0);
            let refusal = if declared > self.max_decompressed {
                None // an error of the message itself, below
            } else if let Some(why) = budget.refusal(declared) {
                Some(why)
            } else if let Some(rate) = &mut self.rate {
                rate.admit(now, declared).err()
            } else {
                None
            };
            if let Some(why) = refusal {
                return Ok(Decoded::Refused {
                    header: msg.header,
                    error: RemoteError::new(ErrorCode::ResourceExhausted, why),
                });
            }
            let inflated =
                self.decompressor
                    .decompress(algorithm, &msg.payload, self.max_decompressed)?;
            msg.payload = budget.hold(inflated);
        }
        Ok(Decoded::Packet(
            Packet::from_message(msg).map(Payload::Bytes),
        ))
    }

    /// Encodes the packets queued in `queue` into `out`, each where it lies, until `out` holds
    /// [`TRANSMIT_BATCH`] more bytes than at `start` or the queue runs dry; stops early at a
    /// packet that cannot be encoded and returns it with the reason (it failed alone: call
    /// again to go on).
    pub(crate) fn encode_batch(
        &mut self,
        out: &mut BytesMut,
        start: usize,
        queue: &mut impl Outgoing,
    ) -> Option<(Packet<Payload>, Unsendable)> {
        while out.len() - start < TRANSMIT_BATCH {
            if let Err(e) = self.encode(queue.peek_transmit()?, out) {
                return queue.poll_transmit().map(|packet| (packet, e));
            }
            queue.advance_transmit();
        }
        None
    }

    /// Appends `packet` as one length-prefixed frame to `out`; on error nothing is appended.
    pub(crate) fn encode(
        &mut self,
        packet: &Packet<Payload>,
        out: &mut BytesMut,
    ) -> Result<(), Unsendable> {
        let method = packet.method_str();
        let header = &packet.header;
        let res = match &packet.body {
            Body::Data(Payload::Value(_)) => return Err(Unsendable::Value),
            Body::Data(Payload::Bytes(p)) => {
                self.encoder
                    .encode_with_metadata(header, method, &packet.metadata, p, out)
            }
            Body::Empty => self.encoder.encode(header, method, &[], out),
            Body::Error(e) => self.encoder.encode_with(header, method, out, |buf| {
                e.encode_into(buf);
                Ok(())
            }),
        };
        res.map_err(|e| match e {
            ProtoError::Frame(FrameError::TooLarge { len, max }) => {
                Unsendable::TooLarge { size: len, max }
            }
            other => Unsendable::Encode(other.to_string()),
        })
    }
}
