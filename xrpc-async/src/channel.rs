//! Layer 2: message channels.
//!
//! A [`MessageChannel`] sends and receives [`Message`]s — header, method name, payload — over a
//! [`FrameTransport`]. [`MessageChannelAdapter`] is the implementation: it encodes with
//! [`MessageEncoder::encode_with`] straight into the transport's write buffer (through
//! [`FrameTransport::send_frame_with`], so no intermediate buffer), and decodes with a
//! [`MessageDecoder`] that decompresses within the transport's frame-size bound.
//!
//! [`SerdeChannel`] and [`TypedChannel`] send plain serde values, one per frame, with no message
//! header — typed messaging without RPC.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
pub use xrpc_proto::ChannelError;
use xrpc_proto::{
    BincodeCodec, Body, Codec, CodecError, CompressionConfig, FRAME_PREFIX_LEN, Header, Message,
    MessageDecoder, MessageEncoder, Packet, WireConfig,
};

use crate::transport::{FrameTransport, TransportError, TransportStats};

/// A bidirectional channel of [`Message`]s.
///
/// All methods take `&self`: one task can wait in [`recv`](Self::recv) while others send.
pub trait MessageChannel: Send + Sync + 'static {
    /// The frame transport under the channel (the RPC driver moves frames on it directly).
    type Transport: FrameTransport;

    /// The frame transport.
    fn transport(&self) -> &Self::Transport;

    /// How the channel frames and codes messages: its maximum frame and compression.
    fn wire_config(&self) -> WireConfig;

    /// Sends a message (its payload is compressed per the channel's configuration).
    fn send(&self, msg: &Message) -> impl Future<Output = Result<(), ChannelError>> + Send {
        self.send_with(&msg.header, msg.method(), |buf| {
            buf.extend_from_slice(&msg.payload);
            Ok(())
        })
    }

    /// Sends a message whose payload `write_payload` appends to the frame being built (for
    /// example a [`Codec`] serializing in place). `header.compression` is ignored: the channel
    /// decides. `write_payload` runs synchronously under the send lock.
    fn send_with<F>(
        &self,
        header: &Header,
        method: &str,
        write_payload: F,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send
    where
        F: FnOnce(&mut BytesMut) -> Result<(), CodecError> + Send;

    /// Receives the next message, payload decompressed.
    fn recv(&self) -> impl Future<Output = Result<Message, ChannelError>> + Send;

    /// Whether the underlying transport is connected.
    fn is_connected(&self) -> bool;

    /// Closes the channel (see [`FrameTransport::close`]).
    fn close(&self) -> impl Future<Output = Result<(), ChannelError>> + Send;

    /// The transport's counters, if it keeps any.
    fn stats(&self) -> Option<TransportStats>;

    /// Whether [`send_packet`](Self::send_packet) can carry [`Payload::Value`]s: in-process
    /// values that skip serialization.
    fn carries_values(&self) -> bool {
        false
    }

    /// Sends a packet of the RPC state machines. By default it is encoded as a message, and a
    /// [`Payload::Value`] is refused (nothing can serialize it).
    fn send_packet(
        &self,
        packet: Packet<Payload>,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send
    where
        Self: Sized,
    {
        default_send_packet(self, packet)
    }

    /// Receives the next packet for the RPC state machines.
    fn recv_packet(&self) -> impl Future<Output = Result<Packet<Payload>, ChannelError>> + Send {
        async move {
            let msg = self.recv().await?;
            Ok(Packet::from_message(msg).map(Payload::Bytes))
        }
    }
}

pub use xrpc_proto::Payload;

impl<C: MessageChannel> MessageChannel for Arc<C> {
    type Transport = C::Transport;

    fn transport(&self) -> &C::Transport {
        (**self).transport()
    }

    fn wire_config(&self) -> WireConfig {
        (**self).wire_config()
    }

    fn send(&self, msg: &Message) -> impl Future<Output = Result<(), ChannelError>> + Send {
        (**self).send(msg)
    }

    fn send_with<F>(
        &self,
        header: &Header,
        method: &str,
        write_payload: F,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send
    where
        F: FnOnce(&mut BytesMut) -> Result<(), CodecError> + Send,
    {
        (**self).send_with(header, method, write_payload)
    }

    fn recv(&self) -> impl Future<Output = Result<Message, ChannelError>> + Send {
        (**self).recv()
    }

    fn is_connected(&self) -> bool {
        (**self).is_connected()
    }

    fn close(&self) -> impl Future<Output = Result<(), ChannelError>> + Send {
        (**self).close()
    }

    fn stats(&self) -> Option<TransportStats> {
        (**self).stats()
    }

    fn carries_values(&self) -> bool {
        (**self).carries_values()
    }

    fn send_packet(
        &self,
        packet: Packet<Payload>,
    ) -> impl Future<Output = Result<(), ChannelError>> + Send {
        (**self).send_packet(packet)
    }

    fn recv_packet(&self) -> impl Future<Output = Result<Packet<Payload>, ChannelError>> + Send {
        (**self).recv_packet()
    }
}

/// A [`MessageChannel`] over any [`FrameTransport`].
///
/// The encoder sits behind a `std::sync::Mutex` taken only while a frame is encoded, inside the
/// transport's send lock (so it is never contended and never held across an `.await`); the
/// decoder likewise only while a received frame is decoded. Decompression runs on the calling
/// task, bounded by the transport's maximum frame size.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use bytes::Bytes;
/// use xrpc_proto::{Header, Message, MessageKind};
/// use xrpc_tokio::{ChannelConfig, ChannelFrameTransport, MessageChannel, MessageChannelAdapter};
/// let (a, b) = ChannelFrameTransport::create_pair("demo", ChannelConfig::default());
/// let (a, b) = (MessageChannelAdapter::new(a), MessageChannelAdapter::new(b));
/// let msg = Message::new(Header::new(MessageKind::Request, 1), "add", Bytes::from_static(b"1+2")).unwrap();
/// a.send(&msg).await.unwrap();
/// assert_eq!(b.recv().await.unwrap(), msg);
/// # }
/// ```
#[derive(Debug)]
pub struct MessageChannelAdapter<T> {
    transport: T,
    compression: CompressionConfig,
    encoder: Mutex<MessageEncoder>,
    decoder: Mutex<MessageDecoder>,
    /// Packet boxes of the value path, received and emptied, for the next sends (so that an
    /// in-process call allocates none).
    spare: Mutex<Vec<Arc<ValuePacket>>>,
}

/// Most emptied packet boxes an adapter keeps for later sends.
const SPARE_PACKETS: usize = 16;

impl<T: FrameTransport> MessageChannelAdapter<T> {
    /// A channel over `transport` without compression.
    pub fn new(transport: T) -> Self {
        Self::with_compression(transport, CompressionConfig::none())
    }

    /// A channel over `transport` that compresses outgoing payloads per `compression`.
    /// Incoming compressed payloads are accepted either way.
    pub fn with_compression(transport: T, compression: CompressionConfig) -> Self {
        let max = transport.max_frame_size();
        Self {
            compression,
            encoder: Mutex::new(MessageEncoder::new(max, compression)),
            decoder: Mutex::new(MessageDecoder::new(max)),
            spare: Mutex::new(Vec::new()),
            transport,
        }
    }

    /// The transport.
    pub fn inner(&self) -> &T {
        &self.transport
    }

    /// Takes the transport back.
    pub fn into_inner(self) -> T {
        self.transport
    }
}

impl<T: FrameTransport> MessageChannel for MessageChannelAdapter<T> {
    type Transport = T;

    fn transport(&self) -> &T {
        &self.transport
    }

    fn wire_config(&self) -> WireConfig {
        WireConfig::default()
            .with_max_frame_size(self.transport.max_frame_size())
            .with_compression(self.compression)
    }

    async fn send_with<F>(
        &self,
        header: &Header,
        method: &str,
        write_payload: F,
    ) -> Result<(), ChannelError>
    where
        F: FnOnce(&mut BytesMut) -> Result<(), CodecError> + Send,
    {
        self.transport
            .send_frame_with(|buf: &mut BytesMut| {
                let mut enc = self.encoder.lock().unwrap_or_else(PoisonError::into_inner);
                Ok::<_, ChannelError>(enc.encode_with(header, method, buf, write_payload)?)
            })
            .await
    }

    async fn recv(&self) -> Result<Message, ChannelError> {
        let frame = self.transport.recv_frame().await?;
        let mut dec = self.decoder.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(dec.decode(frame)?)
    }

    fn is_connected(&self) -> bool {
        self.transport.is_connected()
    }

    async fn close(&self) -> Result<(), ChannelError> {
        Ok(self.transport.close().await?)
    }

    fn stats(&self) -> Option<TransportStats> {
        self.transport.stats()
    }

    fn carries_values(&self) -> bool {
        self.transport.carries_values()
    }

    async fn send_packet(&self, packet: Packet<Payload>) -> Result<(), ChannelError> {
        if !self.transport.carries_values() {
            if !packet.metadata.is_empty()
                && let Body::Data(Payload::Bytes(payload)) = packet.body
            {
                // The metadata block goes into the header (`send_with` has no room for it).
                let (header, method, metadata) = (packet.header, packet.method, packet.metadata);
                return self
                    .transport
                    .send_frame_with(move |buf: &mut BytesMut| {
                        let mut enc = self.encoder.lock().unwrap_or_else(PoisonError::into_inner);
                        let method = std::str::from_utf8(&method).unwrap_or_default();
                        Ok::<_, ChannelError>(
                            enc.encode_with_metadata(&header, method, &metadata, &payload, buf)?,
                        )
                    })
                    .await;
            }
            return default_send_packet(self, packet).await;
        }
        // In process: the packet itself moves, header and payload unserialized, in a box
        // received earlier if there is one.
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let boxed = match spare {
            Some(b) => {
                *b.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(packet);
                b
            }
            None => Arc::new(ValuePacket(Mutex::new(Some(packet)))),
        };
        Ok(self.transport.send_value(boxed).await?)
    }

    async fn recv_packet(&self) -> Result<Packet<Payload>, ChannelError> {
        if !self.transport.carries_values() {
            let msg = self.recv().await?;
            return Ok(Packet::from_message(msg).map(Payload::Bytes));
        }
        let unexpected = || {
            ChannelError::Transport(TransportError::Protocol(
                "unexpected value on an RPC channel".into(),
            ))
        };
        let boxed = self
            .transport
            .recv_value()
            .await?
            .downcast::<ValuePacket>()
            .map_err(|_| unexpected())?;
        let packet = boxed
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(unexpected)?;
        // The box is ours alone now: keep it for a send.
        if Arc::strong_count(&boxed) == 1 {
            let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
            if spare.len() < SPARE_PACKETS {
                spare.push(boxed);
            }
        }
        Ok(packet)
    }
}

/// A packet in flight on an in-process value stream (the `Mutex` makes the non-`Sync` boxed
/// payload shareable behind the transport's `Arc`; it is taken exactly once, uncontended).
struct ValuePacket(Mutex<Option<Packet<Payload>>>);

impl std::fmt::Debug for ValuePacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ValuePacket")
    }
}

/// The byte path of [`MessageChannel::send_packet`], callable from overrides.
async fn default_send_packet<M: MessageChannel + ?Sized>(
    channel: &M,
    packet: Packet<Payload>,
) -> Result<(), ChannelError> {
    let method = packet.method_str();
    if !packet.metadata.is_empty() {
        // `send_with` cannot carry a metadata block: refused rather than dropped.
        return Err(ChannelError::Transport(TransportError::Protocol(
            "this channel cannot send call metadata (override `send_packet`)".into(),
        )));
    }
    match &packet.body {
        Body::Empty => channel.send_with(&packet.header, method, |_| Ok(())).await,
        Body::Data(Payload::Bytes(p)) => {
            channel
                .send_with(&packet.header, method, |buf| {
                    buf.extend_from_slice(p);
                    Ok(())
                })
                .await
        }
        Body::Data(Payload::Value(_)) => Err(ChannelError::Transport(TransportError::Protocol(
            "a value payload needs an in-process channel".into(),
        ))),
        Body::Error(e) => {
            channel
                .send_with(&packet.header, method, |buf| {
                    e.encode_into(buf);
                    Ok(())
                })
                .await
        }
    }
}

/// Sends and receives plain serde values, one per frame, encoded with `C` (no message header).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use xrpc_tokio::{ChannelConfig, ChannelFrameTransport, SerdeChannel};
/// let (a, b) = ChannelFrameTransport::create_pair("demo", ChannelConfig::default());
/// let (a, b) = (SerdeChannel::new(a), SerdeChannel::new(b));
/// a.send(&(1u32, "two")).await.unwrap();
/// let v: (u32, String) = b.recv().await.unwrap();
/// assert_eq!(v, (1, "two".into()));
/// # }
/// ```
#[derive(Debug)]
pub struct SerdeChannel<T, C = BincodeCodec> {
    transport: T,
    codec: C,
}

impl<T: FrameTransport> SerdeChannel<T, BincodeCodec> {
    /// A channel over `transport` using [`BincodeCodec`].
    pub fn new(transport: T) -> Self {
        Self::with_codec(transport, BincodeCodec)
    }
}

impl<T: FrameTransport, C: Codec> SerdeChannel<T, C> {
    /// A channel over `transport` using `codec`.
    pub fn with_codec(transport: T, codec: C) -> Self {
        Self { transport, codec }
    }

    /// Encodes `value` straight into the transport's frame buffer and sends it.
    pub async fn send<V: Serialize + Sync + ?Sized>(&self, value: &V) -> Result<(), ChannelError> {
        let codec = &self.codec;
        self.transport
            .send_frame_with(|buf: &mut BytesMut| {
                let start = buf.len();
                buf.put_u32_le(0);
                codec.encode_into(value, buf)?;
                let len = buf.len() - start - FRAME_PREFIX_LEN;
                let len = u32::try_from(len).map_err(|_| TransportError::MessageTooLarge {
                    size: len,
                    max: u32::MAX as usize,
                })?;
                buf[start..start + FRAME_PREFIX_LEN].copy_from_slice(&len.to_le_bytes());
                Ok::<_, ChannelError>(())
            })
            .await
    }

    /// Receives and decodes the next value.
    pub async fn recv<V: DeserializeOwned>(&self) -> Result<V, ChannelError> {
        let frame = self.transport.recv_frame().await?;
        Ok(self.codec.decode(&frame)?)
    }

    /// Whether the transport is connected.
    pub fn is_connected(&self) -> bool {
        self.transport.is_connected()
    }

    /// Closes the transport.
    pub async fn close(&self) -> Result<(), ChannelError> {
        Ok(self.transport.close().await?)
    }

    /// The transport.
    pub fn inner(&self) -> &T {
        &self.transport
    }

    /// Takes the transport back.
    pub fn into_inner(self) -> T {
        self.transport
    }
}

/// A [`SerdeChannel`] fixed to sending `Req` and receiving `Resp`; the peer uses
/// `TypedChannel<Resp, Req, _>`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use xrpc_tokio::{ChannelConfig, ChannelFrameTransport, TypedChannel};
/// let (a, b) = ChannelFrameTransport::create_pair("demo", ChannelConfig::default());
/// let client = TypedChannel::<u32, String, _>::new(a);
/// let server = TypedChannel::<String, u32, _>::new(b);
/// client.send(&7).await.unwrap();
/// let n = server.recv().await.unwrap();
/// server.send(&format!("got {n}")).await.unwrap();
/// assert_eq!(client.recv().await.unwrap(), "got 7");
/// # }
/// ```
pub struct TypedChannel<Req, Resp, T, C = BincodeCodec> {
    inner: SerdeChannel<T, C>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp, T: std::fmt::Debug, C: std::fmt::Debug> std::fmt::Debug
    for TypedChannel<Req, Resp, T, C>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedChannel")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<Req, Resp, T: FrameTransport> TypedChannel<Req, Resp, T, BincodeCodec>
where
    Req: Serialize + Sync,
    Resp: DeserializeOwned,
{
    /// A channel over `transport` using [`BincodeCodec`].
    pub fn new(transport: T) -> Self {
        Self::with_codec(transport, BincodeCodec)
    }
}

impl<Req, Resp, T: FrameTransport, C: Codec> TypedChannel<Req, Resp, T, C>
where
    Req: Serialize + Sync,
    Resp: DeserializeOwned,
{
    /// A channel over `transport` using `codec`.
    pub fn with_codec(transport: T, codec: C) -> Self {
        Self {
            inner: SerdeChannel::with_codec(transport, codec),
            _types: PhantomData,
        }
    }

    /// Sends a request value.
    pub async fn send(&self, value: &Req) -> Result<(), ChannelError> {
        self.inner.send(value).await
    }

    /// Receives a response value.
    pub async fn recv(&self) -> Result<Resp, ChannelError> {
        self.inner.recv().await
    }

    /// Whether the transport is connected.
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// Closes the transport.
    pub async fn close(&self) -> Result<(), ChannelError> {
        self.inner.close().await
    }

    /// The transport.
    pub fn inner(&self) -> &T {
        self.inner.inner()
    }

    /// Takes the transport back.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::ChannelConfig;
    use crate::{ChannelFrameTransport, MessageChannelAdapter};
    use bytes::Bytes;
    use xrpc_proto::{MessageKind, Metadata};

    /// A packet's metadata crosses a byte channel's `send_packet`.
    #[tokio::test]
    async fn send_packet_carries_metadata() {
        let (a, b) = ChannelFrameTransport::create_pair("md", ChannelConfig::default());
        let (a, b) = (MessageChannelAdapter::new(a), MessageChannelAdapter::new(b));
        let mut metadata = Metadata::new();
        metadata.insert("tenant", "acme").unwrap();
        let packet = Packet {
            header: Header::new(MessageKind::Notification, 0),
            method: Bytes::from_static(b"log"),
            metadata: metadata.clone(),
            body: Body::Data(Payload::Bytes(Bytes::from_static(b"x"))),
        };
        a.send_packet(packet).await.unwrap();
        let got = b.recv_packet().await.unwrap();
        assert_eq!(got.metadata, metadata);
        assert_eq!(got.method_str(), "log");
    }
}
