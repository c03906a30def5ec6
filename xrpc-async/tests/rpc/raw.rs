//! What a socket does and the in-process channel transport does not, for the server's side of
//! a test: [`ByteStream`] reads a byte stream the peer writes in chunks of any size (a frame
//! may stop half-way, which [`FrameTransport::partial_frame`] reports) and that the peer may
//! end while still reading its answers (a half-close). [`Peer`] is that hostile or
//! well-behaved raw peer.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use xrpc_async::{ChannelFrameTransport, FrameTransport, MessageChannelAdapter, TransportError};
use xrpc_proto::{BincodeCodec, Codec, FrameDecoder, Header, Message, MessageEncoder, MessageKind};

use crate::pair_with_capacity;

/// The server's end: frames out as they are, bytes in through a frame decoder. An empty chunk
/// from the peer is the end of its output (its later reads still get answers).
pub struct ByteStream {
    inner: ChannelFrameTransport,
    decoder: Mutex<(FrameDecoder, bool)>,
}

impl ByteStream {
    fn decoder(&self) -> std::sync::MutexGuard<'_, (FrameDecoder, bool)> {
        self.decoder.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FrameTransport for ByteStream {
    async fn send_frame(&self, frame: &[u8]) -> Result<(), TransportError> {
        self.inner.send_frame(frame).await
    }

    async fn recv_frame(&self) -> Result<Bytes, TransportError> {
        loop {
            {
                let mut d = self.decoder();
                let (decoder, ended) = &mut *d;
                if let Some(frame) = decoder
                    .poll_frame()
                    .map_err(|e| TransportError::Protocol(e.to_string()))?
                {
                    return Ok(frame);
                }
                if *ended {
                    return Err(TransportError::ConnectionClosed);
                }
            }
            let chunk = self.inner.recv_frame().await?;
            let mut d = self.decoder();
            if chunk.is_empty() {
                d.1 = true;
            } else {
                d.0.handle_bytes(&chunk);
            }
        }
    }

    fn partial_frame(&self) -> usize {
        self.decoder().0.partial_bytes()
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    async fn close(&self) -> Result<(), TransportError> {
        self.inner.close().await
    }

    fn stats(&self) -> Option<xrpc_async::TransportStats> {
        self.inner.stats()
    }

    fn name(&self) -> &str {
        "byte-stream"
    }
}

/// The raw peer of a [`ByteStream`].
pub struct Peer {
    pub transport: ChannelFrameTransport,
}

/// A peer and the server's end of its connection, `capacity` chunks or frames each way.
pub fn byte_stream(capacity: usize) -> (Peer, MessageChannelAdapter<ByteStream>) {
    let (peer, server) = pair_with_capacity(capacity);
    let server = ByteStream {
        inner: server.into_inner(),
        decoder: Mutex::new((FrameDecoder::new(xrpc_proto::DEFAULT_MAX_FRAME_SIZE), false)),
    };
    (
        Peer {
            transport: peer.into_inner(),
        },
        MessageChannelAdapter::new(server),
    )
}

/// A message as it goes on a byte stream: length prefix, then the frame.
pub fn prefixed(header: Header, method: &str, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    MessageEncoder::default()
        .encode(&header, method, payload, &mut out)
        .unwrap();
    out.freeze()
}

impl Peer {
    /// Writes `bytes` (any part of the stream).
    pub async fn write(&self, bytes: Bytes) {
        self.transport.send_bytes(bytes).await.unwrap();
    }

    /// Writes a whole request `id` for `method` with `arg` and the header's `timeout`.
    pub async fn call<A: serde::Serialize>(
        &self,
        id: u64,
        method: &str,
        arg: &A,
        timeout: Option<Duration>,
    ) {
        let header = Header {
            timeout,
            ..Header::new(MessageKind::Request, id).with_codec(BincodeCodec::ID)
        };
        let payload = BincodeCodec.encode(arg).unwrap();
        self.write(prefixed(header, method, &payload)).await;
    }

    /// Ends its output (it can still read).
    pub async fn shutdown_write(&self) {
        self.write(Bytes::new()).await;
    }

    /// The next message from the server, or the transport's error once it closed.
    pub async fn recv(&self) -> Result<Message, TransportError> {
        let frame = self.transport.recv_frame().await?;
        Ok(Message::decode_raw(frame).unwrap())
    }
}
