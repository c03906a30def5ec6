//! Streams of a call, on either side: [`StreamReceiver`] (items coming in, with flow-control
//! credit granted as the application takes them) and [`StreamSender`] (items going out, waiting
//! for credit when the peer is slow). Both talk to their connection's session through
//! [`StreamCtl`], which answers every act as the session decides (see `xrpc_proto::call`);
//! neither touches the transport. The handles of one call share a [`CallRef`]: the last one
//! dropped releases the call.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_proto::{BincodeCodec, Codec, Payload, PayloadOf, RpcError, decode_as};

/// What a stream needs from its connection, on the client or the server side.
pub(crate) trait StreamCtl: Send + Sync + 'static {
    /// The next item of call `id`'s incoming stream (`None` at its normal end); taking one
    /// grants credit.
    fn poll_item(&self, id: u64, cx: &mut Context<'_>) -> Poll<Option<Result<Payload, RpcError>>>;
    /// The application dropped the receiving end of call `id` before its end.
    fn abandon(&self, id: u64);
    /// Queues `payload` (taken from the slot) on call `id`'s outgoing stream, or waits for
    /// credit.
    fn poll_send(
        &self,
        id: u64,
        payload: &mut Option<Payload>,
        codec: u8,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), RpcError>>;
    /// Ends call `id`'s outgoing stream.
    fn finish(&self, id: u64);
    /// The last handle of call `id` is gone.
    fn release(&self, id: u64);
}

/// A call as its handles share it; the last one dropped releases it.
pub(crate) struct CallRef {
    ctl: Arc<dyn StreamCtl>,
    id: u64,
    /// The method, to name it when an item cannot be decoded.
    method: bytes::Bytes,
}

impl CallRef {
    pub(crate) fn new(ctl: Arc<dyn StreamCtl>, id: u64, method: bytes::Bytes) -> Arc<Self> {
        Arc::new(Self { ctl, id, method })
    }

    fn method(&self) -> &str {
        std::str::from_utf8(&self.method).unwrap_or_default()
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn ctl(&self) -> &dyn StreamCtl {
        &*self.ctl
    }
}

impl Drop for CallRef {
    fn drop(&mut self) {
        self.ctl.release(self.id);
    }
}

/// The receiving end of a stream: a [`futures_core::Stream`] of decoded items.
///
/// The stream ends (`None`) when the peer ends it normally; an error item ends it abnormally.
/// Dropping the receiver before the end cancels the call.
pub struct StreamReceiver<Item, C: Codec = BincodeCodec> {
    call: Arc<CallRef>,
    codec: C,
    done: bool,
    _item: PhantomData<fn() -> Item>,
}

/// The stream of items a client-streaming or bidirectional handler receives.
pub type RequestStream<Item, C = BincodeCodec> = StreamReceiver<Item, C>;

impl<Item: DeserializeOwned + 'static, C: Codec> StreamReceiver<Item, C> {
    pub(crate) fn new(call: Arc<CallRef>, codec: C) -> Self {
        Self {
            call,
            codec,
            done: false,
            _item: PhantomData,
        }
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.call.id()
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
        match self.call.ctl().poll_item(self.call.id(), cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(payload))) => Poll::Ready(Some(decode_as(
                &self.codec,
                PayloadOf::Item(self.call.method()),
                payload,
            ))),
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
            self.call.ctl().abandon(self.call.id());
        }
    }
}

/// The sending end of a stream. [`send`](Self::send) waits while the peer has granted no
/// credit, so a slow consumer holds a fast producer back.
pub struct StreamSender<Item, C: Codec = BincodeCodec> {
    call: Arc<CallRef>,
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
    pub(crate) fn new(call: Arc<CallRef>, codec: C, finish_on_drop: bool) -> Self {
        Self {
            call,
            codec,
            finished: false,
            finish_on_drop,
            _item: PhantomData,
        }
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.call.id()
    }

    /// Sends one item, waiting for flow-control credit if needed. Fails when the call is over:
    /// with the error that ended it (`Cancelled`, `Timeout`, `Disconnected`…), or with a
    /// stream error "the call is over" if it ended normally or the stream was finished.
    pub async fn send(&self, item: &Item) -> Result<(), RpcError> {
        let mut slot = Some(Payload::Bytes(self.codec.encode(item)?));
        let (ctl, id) = (self.call.ctl(), self.call.id());
        std::future::poll_fn(|cx| ctl.poll_send(id, &mut slot, C::ID, cx)).await
    }

    /// Ends the stream normally.
    pub async fn finish(mut self) -> Result<(), RpcError> {
        self.finished = true;
        self.call.ctl().finish(self.call.id());
        Ok(())
    }
}

impl<Item, C: Codec> Drop for StreamSender<Item, C> {
    fn drop(&mut self) {
        if !self.finished && self.finish_on_drop {
            self.call.ctl().finish(self.call.id());
        }
    }
}
