//! [`RpcClient`]: the async layer's client ([`xrpc_async::RpcClient`]) on the [`Blocking`]
//! runtime, called synchronously. A call waits on the calling thread, and while it is the only
//! call in flight it drives the connection itself on that thread (it writes its request and
//! reads its answer, waiting in its own `poll(2)` or spinning on a shared-memory ring): no
//! hand-off. Calls in flight together, streams and the time between calls (heartbeats, the
//! server's close) are the driver's: a thread of the client's own.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_async::{MessageChannelAdapter, RpcClientConfig, TransportStats};
use xrpc_proto::{BincodeCodec, CallOptions, Codec, RpcError};

use crate::runtime::Blocking;
use crate::stream::{BidiCall, ClientStreamCall, PendingResponse, StreamReceiver, StreamSender};
use crate::transport::AnyFrameTransport;

/// The connection of a client.
type Channel = MessageChannelAdapter<AnyFrameTransport>;

/// A blocking RPC client over one connection, with codec `C` (Bincode by default); the
/// [crate docs](crate) show one in a plain `fn main`.
///
/// Cheap to clone; every method takes `&self`, so any number of threads may call at once. The
/// connection closes when the last clone is dropped (or at [`close`](Self::close)).
pub struct RpcClient<C: Codec = BincodeCodec> {
    inner: xrpc_async::RpcClient<Channel, C, Blocking>,
}

impl<C: Codec> Clone for RpcClient<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<C: Codec> std::fmt::Debug for RpcClient<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl RpcClient<BincodeCodec> {
    /// A client over `transport` with the default configuration (30 s call timeout).
    pub fn new(transport: impl Into<AnyFrameTransport>) -> Self {
        Self::with_config(transport, RpcClientConfig::default())
    }

    /// A client with an explicit configuration (timeouts, stream window, heartbeats).
    pub fn with_config(transport: impl Into<AnyFrameTransport>, config: RpcClientConfig) -> Self {
        Self::with_config_and_codec(transport, config, BincodeCodec)
    }
}

impl<C: Codec> RpcClient<C> {
    /// A client with another codec.
    pub fn with_codec(transport: impl Into<AnyFrameTransport>, codec: C) -> Self {
        Self::with_config_and_codec(transport, RpcClientConfig::default(), codec)
    }

    /// A client with an explicit configuration and codec. Its driver starts at once (so an
    /// idle client sends its heartbeats and notices the server's close).
    pub fn with_config_and_codec(
        transport: impl Into<AnyFrameTransport>,
        config: RpcClientConfig,
        codec: C,
    ) -> Self {
        let channel = MessageChannelAdapter::new(transport.into());
        let inner =
            xrpc_async::RpcClient::with_runtime(channel, config, codec, Blocking::default());
        // The blocking runtime can always spawn; were its thread refused, the first call
        // would try again.
        let _ = inner.try_start();
        Self { inner }
    }

    /// The same client with another default timeout for its unary and client-streaming calls
    /// (shared with its clones).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self {
            inner: self.inner.with_timeout(timeout),
        }
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// Calls waiting for an answer.
    pub fn pending_calls(&self) -> usize {
        self.inner.pending_calls()
    }

    /// The transport's counters (frames and bytes sent and received).
    pub fn stats(&self) -> Option<TransportStats> {
        self.inner.stats()
    }

    /// Closes the connection: every pending call fails with `Disconnected`.
    pub fn close(&self) {
        Blocking::block_on(self.inner.close());
    }

    /// Sends raw payload bytes to `method` and waits for the raw response.
    pub fn call_raw(&self, method: &str, payload: Bytes) -> Result<Bytes, RpcError> {
        Blocking::block_on(self.inner.call_raw(method, payload))
    }

    /// Calls `method` with `request` and decodes the response.
    pub fn call<Req, Resp>(&self, method: &str, request: &Req) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned + 'static,
    {
        Blocking::block_on(self.inner.call(method, request))
    }

    /// Like [`call`](Self::call) with a timeout for this call.
    pub fn call_with_timeout<Req, Resp>(
        &self,
        method: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned + 'static,
    {
        Blocking::block_on(self.inner.call_with_timeout(method, request, timeout))
    }

    /// Like [`call`](Self::call) with explicit options.
    pub fn call_with_options<Req, Resp>(
        &self,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned + 'static,
    {
        Blocking::block_on(self.inner.call_with_options(method, request, options))
    }

    /// Sends a one-way notification.
    pub fn notify<Req: Serialize + ?Sized>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<(), RpcError> {
        Blocking::block_on(self.inner.notify(method, request))
    }

    /// Like [`notify`](Self::notify) with options (metadata, signature, handler timeout).
    pub fn notify_with_options<Req: Serialize + ?Sized>(
        &self,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<(), RpcError> {
        Blocking::block_on(self.inner.notify_with_options(method, request, options))
    }

    /// Like [`call_server_stream`](Self::call_server_stream) with options (timeout,
    /// metadata, signature).
    pub fn call_server_stream_with_options<Req, Item>(
        &self,
        method: &str,
        request: &Req,
        options: CallOptions,
    ) -> Result<StreamReceiver<Item, C>, RpcError>
    where
        Req: Serialize + ?Sized,
        Item: DeserializeOwned + 'static,
    {
        Blocking::block_on(
            self.inner
                .call_server_stream_with_options(method, request, options),
        )
        .map(StreamReceiver::new)
    }

    /// Like [`call_client_stream`](Self::call_client_stream) with options (timeout,
    /// metadata, signature).
    pub fn call_client_stream_with_options<Item, Resp>(
        &self,
        method: &str,
        options: CallOptions,
    ) -> Result<ClientStreamCall<Item, Resp, C>, RpcError>
    where
        Item: Serialize + 'static,
        Resp: DeserializeOwned + Send + 'static,
    {
        let (sender, response) =
            Blocking::block_on(self.inner.call_client_stream_with_options(method, options))?;
        Ok((StreamSender::new(sender), PendingResponse::new(response)))
    }

    /// Like [`call_bidi`](Self::call_bidi) with options (timeout, metadata, signature).
    pub fn call_bidi_with_options<Req, Resp>(
        &self,
        method: &str,
        options: CallOptions,
    ) -> Result<BidiCall<Req, Resp, C>, RpcError>
    where
        Req: Serialize,
        Resp: DeserializeOwned + 'static,
    {
        let (sender, receiver) =
            Blocking::block_on(self.inner.call_bidi_with_options(method, options))?;
        Ok((StreamSender::new(sender), StreamReceiver::new(receiver)))
    }

    /// Calls a server-streaming method: one request, then its items as an iterator.
    pub fn call_server_stream<Req, Item>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<StreamReceiver<Item, C>, RpcError>
    where
        Req: Serialize + ?Sized,
        Item: DeserializeOwned + 'static,
    {
        Blocking::block_on(self.inner.call_server_stream(method, request)).map(StreamReceiver::new)
    }

    /// Calls a client-streaming method: send items with the [`StreamSender`],
    /// [`finish`](StreamSender::finish) it, then [`wait`](PendingResponse::wait) for the
    /// single response.
    pub fn call_client_stream<Item, Resp>(
        &self,
        method: &str,
    ) -> Result<ClientStreamCall<Item, Resp, C>, RpcError>
    where
        Item: Serialize + 'static,
        Resp: DeserializeOwned + Send + 'static,
    {
        let (sender, response) = Blocking::block_on(self.inner.call_client_stream(method))?;
        Ok((StreamSender::new(sender), PendingResponse::new(response)))
    }

    /// Opens a bidirectional stream: items go out through the sender and come back through
    /// the receiver (use them from two threads, or alternate within the credit window).
    pub fn call_bidi<Req, Resp>(&self, method: &str) -> Result<BidiCall<Req, Resp, C>, RpcError>
    where
        Req: Serialize,
        Resp: DeserializeOwned + 'static,
    {
        let (sender, receiver) = Blocking::block_on(self.inner.call_bidi(method))?;
        Ok((StreamSender::new(sender), StreamReceiver::new(receiver)))
    }
}
