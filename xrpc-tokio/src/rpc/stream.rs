//! Streams of a call, on either side: [`StreamReceiver`] (items coming in, with flow-control
//! credit granted as the application takes them) and [`StreamSender`] (items going out, waiting
//! for credit when the peer is slow).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc};
use xrpc_proto::{BincodeCodec, Codec};

use super::error::RpcError;
use super::io::decode_payload;
use crate::channel::Payload;

/// Why a stream item was not queued.
pub(crate) enum Refused {
    NoCredit(Payload),
    Closed,
}

/// What a stream needs from its connection, on the client or the server side.
pub(crate) trait StreamCtl: Send + Sync + 'static {
    /// The application took `n` items of stream `id`.
    fn consumed(&self, id: u64, n: u32);
    /// The application dropped the receiving end of stream `id` early, with `unread` items
    /// received but never taken.
    fn abandon(&self, id: u64, unread: u32);
    /// Queues one item of stream `id`.
    fn try_send_item(&self, id: u64, payload: Payload, codec: u8) -> Result<(), Refused>;
    /// Ends the outgoing stream `id`.
    fn finish(&self, id: u64);
    /// Writes what is queued.
    fn flush_queued(self: Arc<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The receiving end of a stream: a [`futures_core::Stream`] of decoded items.
///
/// The stream ends (`None`) when the peer ends it normally; an error item ends it abnormally.
/// Dropping the receiver before the end cancels the call.
pub struct StreamReceiver<Item, C: Codec = BincodeCodec> {
    ctl: Arc<dyn StreamCtl>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Result<Payload, RpcError>>,
    codec: C,
    done: bool,
    _item: PhantomData<fn() -> Item>,
}

/// The stream of items a client-streaming or bidirectional handler receives.
pub type RequestStream<Item, C = BincodeCodec> = StreamReceiver<Item, C>;

impl<Item: DeserializeOwned + 'static, C: Codec> StreamReceiver<Item, C> {
    pub(crate) fn new(
        ctl: Arc<dyn StreamCtl>,
        id: u64,
        rx: mpsc::UnboundedReceiver<Result<Payload, RpcError>>,
        codec: C,
    ) -> Self {
        Self {
            ctl,
            id,
            rx,
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
    pub fn cancel(mut self) {
        self.abandon();
    }

    fn abandon(&mut self) {
        if !self.done {
            self.done = true;
            self.ctl
                .abandon(self.id, u32::try_from(self.rx.len()).unwrap_or(u32::MAX));
        }
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Item, RpcError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
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
                self.ctl.consumed(self.id, 1);
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
            self.ctl
                .abandon(self.id, u32::try_from(self.rx.len()).unwrap_or(u32::MAX));
        }
    }
}

/// The sending end of a stream. [`send`](Self::send) waits while the peer has granted no
/// credit, so a slow consumer holds a fast producer back.
pub struct StreamSender<Item, C: Codec = BincodeCodec> {
    ctl: Arc<dyn StreamCtl>,
    id: u64,
    credit: Arc<Notify>,
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
    pub(crate) fn new(
        ctl: Arc<dyn StreamCtl>,
        id: u64,
        credit: Arc<Notify>,
        codec: C,
        finish_on_drop: bool,
    ) -> Self {
        Self {
            ctl,
            id,
            credit,
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
        let mut payload = Payload::Bytes(self.codec.encode(item)?);
        loop {
            let notified = self.credit.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.ctl.try_send_item(self.id, payload, C::ID) {
                Ok(()) => {
                    self.ctl.clone().flush_queued().await;
                    return Ok(());
                }
                Err(Refused::NoCredit(p)) => {
                    payload = p;
                    notified.await;
                }
                Err(Refused::Closed) => {
                    return Err(RpcError::StreamError("the stream is closed".into()));
                }
            }
        }
    }

    /// Ends the stream normally.
    pub async fn finish(mut self) -> Result<(), RpcError> {
        self.finished = true;
        self.ctl.finish(self.id);
        self.ctl.clone().flush_queued().await;
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
