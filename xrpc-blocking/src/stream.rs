//! Streams of a call, on either side, as synchronous handles over the async layer's: a
//! [`StreamReceiver`] is an iterator of the peer's items, a [`StreamSender`] sends items
//! (waiting for flow-control credit), a [`PendingResponse`] waits for a client stream's single
//! response. Each waits on the calling thread ([`Blocking::block_on`]).

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_proto::{BincodeCodec, Codec, RpcError};

use crate::runtime::Blocking;

/// The receiving end of a stream: an iterator of `Result<Item, RpcError>` that ends after the
/// last item, or after the error that ended the call. Dropping it before its end cancels the
/// call (client side) or stops reading the client's items (server side).
pub struct StreamReceiver<Item, C: Codec = BincodeCodec> {
    inner: xrpc_async::StreamReceiver<Item, C>,
}

/// The items a client-streaming or bidirectional handler receives.
pub type RequestStream<Item, C = BincodeCodec> = StreamReceiver<Item, C>;

impl<Item, C: Codec> std::fmt::Debug for StreamReceiver<Item, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReceiver").finish_non_exhaustive()
    }
}

impl<Item: DeserializeOwned + 'static, C: Codec> StreamReceiver<Item, C> {
    pub(crate) fn new(inner: xrpc_async::StreamReceiver<Item, C>) -> Self {
        Self { inner }
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.inner.id()
    }

    /// Cancels the call (as dropping the receiver does).
    pub fn cancel(self) {}
}

impl<Item: DeserializeOwned + 'static, C: Codec> Iterator for StreamReceiver<Item, C> {
    type Item = Result<Item, RpcError>;

    fn next(&mut self) -> Option<Self::Item> {
        Blocking::block_on(self.inner.recv())
    }
}

/// The sending end of a stream: [`send`](Self::send) blocks while the peer has granted no
/// credit. On a client stream, [`finish`](Self::finish) (or dropping the sender) ends it; a
/// server stream ends when its handler returns.
pub struct StreamSender<Item, C: Codec = BincodeCodec> {
    inner: xrpc_async::StreamSender<Item, C>,
}

/// The sender a server-streaming or bidirectional handler writes its items to.
pub type ServerStreamSender<Item, C = BincodeCodec> = StreamSender<Item, C>;

impl<Item, C: Codec> std::fmt::Debug for StreamSender<Item, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSender").finish_non_exhaustive()
    }
}

impl<Item: Serialize, C: Codec> StreamSender<Item, C> {
    pub(crate) fn new(inner: xrpc_async::StreamSender<Item, C>) -> Self {
        Self { inner }
    }

    /// The call id.
    pub fn id(&self) -> u64 {
        self.inner.id()
    }

    /// Sends one item, waiting for credit. Fails once the call is over (cancelled, expired, its
    /// connection gone): a handler stops then.
    pub fn send(&self, item: &Item) -> Result<(), RpcError> {
        Blocking::block_on(self.inner.send(item))
    }

    /// Ends the stream normally.
    pub fn finish(self) -> Result<(), RpcError> {
        Blocking::block_on(self.inner.finish())
    }
}

/// The single response of a client-streaming call: [`wait`](Self::wait) for it once the stream
/// is finished. Dropping it unwaited cancels the call.
pub struct PendingResponse<Resp> {
    inner: Pin<Box<dyn Future<Output = Result<Resp, RpcError>> + Send>>,
}

impl<Resp> std::fmt::Debug for PendingResponse<Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingResponse").finish_non_exhaustive()
    }
}

impl<Resp> PendingResponse<Resp> {
    pub(crate) fn new(
        inner: impl Future<Output = Result<Resp, RpcError>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(inner),
        }
    }

    /// Waits for the response.
    pub fn wait(self) -> Result<Resp, RpcError> {
        Blocking::block_on(self.inner)
    }
}

/// The two ends of a client-streaming call: the items go out through the sender, then the
/// response comes.
pub type ClientStreamCall<Item, Resp, C = BincodeCodec> =
    (StreamSender<Item, C>, PendingResponse<Resp>);

/// The two ends of a bidirectional call.
pub type BidiCall<Req, Resp, C = BincodeCodec> = (StreamSender<Req, C>, StreamReceiver<Resp, C>);
