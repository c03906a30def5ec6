//! Streams of a call, on either side: [`StreamReceiver`] (items coming in, with flow-control
//! credit granted as the application takes them) and [`StreamSender`] (items going out, waiting
//! for credit when the peer is slow). Both talk to their connection's state through
//! [`StreamCtl`]; neither touches the transport.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_proto::{BincodeCodec, Codec, Payload, RpcError, decode_payload};

/// Why a stream item was not queued.
pub(crate) enum Refused {
    Closed,
}

/// What a stream needs from its connection, on the client or the server side.
pub(crate) trait StreamCtl: Send + Sync + 'static {
    /// The next item of stream `id` (`None` at its normal end); taking one grants credit.
    fn poll_item(&self, id: u64, cx: &mut Context<'_>) -> Poll<Option<Result<Payload, RpcError>>>;
    /// The application dropped the receiving end of stream `id` early, with `unread` items
    /// received but never taken.
    fn abandon(&self, id: u64, unread: u32);
    /// Queues `payload` (taken from the slot) on stream `id`, or waits for credit.
    fn poll_send(
        &self,
        id: u64,
        payload: &mut Option<Payload>,
        codec: u8,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Refused>>;
    /// Ends the outgoing stream `id`.
    fn finish(&self, id: u64);
}

/// The receiving end of a stream: a [`futures_core::Stream`] of decoded items.
///
/// The stream ends (`None`) when the peer ends it normally; an error item ends it abnormally.
/// Dropping the receiver before the end cancels the call.
pub struct StreamReceiver<Item, C: Codec = BincodeCodec> {
    ctl: Arc<dyn StreamCtl>,
    id: u64,
    codec: C,
    done: bool,
    _item: PhantomData<fn() -> Item>,
}

/// The stream of items a client-streaming or bidirectional handler receives.
pub type RequestStream<Item, C = BincodeCodec> = StreamReceiver<Item, C>;

impl<Item: DeserializeOwned + 'static, C: Codec> StreamReceiver<Item, C> {
    pub(crate) fn new(ctl: Arc<dyn StreamCtl>, id: u64, codec: C) -> Self {
        Self {
            ctl,
            id,
            codec,
            done: false,
            _item: PhantomData,
        }
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next item, `None` at the normal end of the stream.
    pub async fn recv(&mut self) -> Option<Result<Item, RpcError>> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    /// Collects every item until the end of the stream, or the first error.
    pub async fn collect(mut self) -> Result<Vec<Item>, RpcError> {
        let mut out = Vec::new();
        while let Some(item) = self.recv().await {
            out.push(item?);
        }
        Ok(out)
    }

    /// Cancels the call (the same as dropping the receiver).
    pub fn cancel(self) {}

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item, RpcError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.ctl.poll_item(self.id, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(payload))) => {
                Poll::Ready(Some(decode_payload(&self.codec, payload)))
            }
        }
    }
}

// Nothing in a receiver is pinned structurally.
impl<Item, C: Codec> Unpin for StreamReceiver<Item, C> {}

impl<Item: DeserializeOwned + 'static, C: Codec> futures_core::Stream for StreamReceiver<Item, C> {
    type Item = Result<Item, RpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}

impl<Item, C: Codec> Drop for StreamReceiver<Item, C> {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.ctl.abandon(self.id, 0);
        }
    }
}

/// The sending end of a stream. [`send`](Self::send) waits while the peer has granted no
/// credit, so a slow consumer holds a fast producer back.
pub struct StreamSender<Item, C: Codec = BincodeCodec> {
    ctl: Arc<dyn StreamCtl>,
    id: u64,
    codec: C,
    finished: bool,
    /// Whether dropping the sender ends the stream (client streams) or leaves that to the
    /// handler's return (server streams).
    finish_on_drop: bool,
    _item: PhantomData<fn(Item)>,
}

/// The sender a server-streaming or bidirectional handler writes items to.
pub type ServerStreamSender<Item, C = BincodeCodec> = StreamSender<Item, C>;

impl<Item: Serialize, C: Codec> StreamSender<Item, C> {
    pub(crate) fn new(ctl: Arc<dyn StreamCtl>, id: u64, codec: C, finish_on_drop: bool) -> Self {
        Self {
            ctl,
            id,
            codec,
            finished: false,
            finish_on_drop,
            _item: PhantomData,
        }
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends one item, waiting for flow-control credit if needed. Fails when the call is over
    /// (cancelled, failed, or the connection closed).
    pub async fn send(&self, item: &Item) -> Result<(), RpcError> {
        let mut slot = Some(Payload::Bytes(self.codec.encode(item)?));
        std::future::poll_fn(|cx| self.ctl.poll_send(self.id, &mut slot, C::ID, cx))
            .await
            .map_err(|Refused::Closed| RpcError::StreamError("the stream is closed".into()))
    }

    /// Ends the stream normally.
    pub async fn finish(mut self) -> Result<(), RpcError> {
        self.finished = true;
        self.ctl.finish(self.id);
        Ok(())
    }
}

impl<Item, C: Codec> Drop for StreamSender<Item, C> {
    fn drop(&mut self) {
        if !self.finished && self.finish_on_drop {
            self.ctl.finish(self.id);
        }
    }
}
