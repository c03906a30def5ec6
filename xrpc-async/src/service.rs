//! Services defined as a trait with `#[service]` (`xrpc-macros`): what the generated code calls.
//!
//! A generated client calls through a [`Caller`] (unary calls; [`RpcClient`] and
//! [`LoadBalancedClient`] of any runtime), a [`StreamCaller`] (the streaming kinds;
//! [`RpcClient`]) or a [`BlockingCaller`] (every kind, synchronously; `xrpc_blocking::RpcClient`
//! implements it). A generated server adapter is a [`Service`]: it registers each method on a
//! [`Registry`] — [`RpcServer`] of any runtime, or `xrpc_blocking::RpcServer`, where the
//! service's `async fn`s run to completion on the server's handler threads.
//!
//! Each call carries its [`Method`]'s signature (the argument and result types as the trait
//! writes them, and their fingerprint), and each registration records it on the server: a
//! client built from another version of the trait gets [`RpcError::TypeMismatch`] naming both.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_proto::Codec;
pub use xrpc_proto::{BincodeCodec, CallKind, CallOptions, Metadata, RpcError, Signature};

use crate::balance::LoadBalancedClient;
use crate::channel::MessageChannel;
pub use crate::rpc::{CallContext, RequestStream, ServerStreamSender};
use crate::rpc::{RpcClient, RpcServer, StreamReceiver, StreamSender};
use crate::runtime::Runtime;

/// A method of a service: its name on the wire (`"Calculator.add"`), its kind and its
/// signature.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    name: &'static str,
    kind: CallKind,
    signature: Signature,
    context: bool,
}

impl Method {
    /// Method `name` of kind `kind` whose types read `signature` (`"(i64, i64) -> i64"`);
    /// `context`: whether its handler reads the call's context.
    pub const fn new(
        name: &'static str,
        kind: CallKind,
        signature: &'static str,
        context: bool,
    ) -> Self {
        Self {
            name,
            kind,
            signature: Signature::new(signature),
            context,
        }
    }

    /// The name on the wire.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Who streams.
    pub fn kind(&self) -> CallKind {
        self.kind
    }

    /// The types and their fingerprint.
    pub fn signature(&self) -> Signature {
        self.signature
    }

    /// Whether its handler reads the call's context (a blocking server runs such a handler on
    /// its pool, where the connection's thread can tell it that the call was stopped).
    pub fn uses_context(&self) -> bool {
        self.context
    }

    /// `options` for a call of this method: its kind and signature.
    pub fn options(&self, options: CallOptions) -> CallOptions {
        options.with_kind(self.kind).with_signature(self.signature)
    }
}

/// Compiles when `T` can travel as an argument, an item or a result (serde both ways): the
/// generated code calls it with each such type, so a type that cannot is an error at that type.
pub fn assert_wire<T: Serialize + DeserializeOwned + Send + 'static>() {}

/// Unary calls of a generated client.
pub trait Caller: Send + Sync {
    /// Calls `method` with `request` and decodes its response.
    fn call<Req, Resp>(
        &self,
        method: &'static Method,
        request: &Req,
        options: CallOptions,
    ) -> impl Future<Output = Result<Resp, RpcError>> + Send
    where
        Req: Serialize + Sync + ?Sized,
        Resp: DeserializeOwned + Send + 'static;
}

/// A caller behind a pointer calls as the caller does: a borrowed one, or a shared one (a
/// `LoadBalancedClient`, which is not `Clone`, shared by clients with different options:
/// `CalculatorClient::new(Arc::new(balanced))`).
impl<P> Caller for P
where
    P: std::ops::Deref<Target: Caller> + Send + Sync,
{
    fn call<Req, Resp>(
        &self,
        method: &'static Method,
        request: &Req,
        options: CallOptions,
    ) -> impl Future<Output = Result<Resp, RpcError>> + Send
    where
        Req: Serialize + Sync + ?Sized,
        Resp: DeserializeOwned + Send + 'static,
    {
        (**self).call(method, request, options)
    }
}

/// The streaming calls of a generated client.
pub trait StreamCaller: Caller {
    /// The items the server sends.
    type Receiver<Item>;
    /// Where the client sends its items.
    type Sender<Item>;
    /// The single response of a client stream.
    type Response<Resp>;

    /// Calls a server-streaming `method`.
    fn call_server_stream<Req, Item>(
        &self,
        method: &'static Method,
        request: &Req,
        options: CallOptions,
    ) -> impl Future<Output = Result<Self::Receiver<Item>, RpcError>> + Send
    where
        Req: Serialize + Sync + ?Sized,
        Item: DeserializeOwned + Send + 'static;

    /// Calls a client-streaming `method`.
    fn call_client_stream<Item, Resp>(
        &self,
        method: &'static Method,
        options: CallOptions,
    ) -> impl Future<Output = Result<ClientStreamEnds<Self, Item, Resp>, RpcError>> + Send
    where
        Item: Serialize + Send + 'static,
        Resp: DeserializeOwned + Send + 'static;

    /// Opens a bidirectional `method`.
    fn call_bidi<Req, Resp>(
        &self,
        method: &'static Method,
        options: CallOptions,
    ) -> impl Future<Output = Result<BidiEnds<Self, Req, Resp>, RpcError>> + Send
    where
        Req: Serialize + Send + 'static,
        Resp: DeserializeOwned + Send + 'static;
}

/// The two ends of a client-streaming call through `T`: where its items go, its response.
pub type ClientStreamEnds<T, Item, Resp> = (
    <T as StreamCaller>::Sender<Item>,
    <T as StreamCaller>::Response<Resp>,
);

/// The two ends of a bidirectional call through `T`: where its items go, where the server's
/// come from.
pub type BidiEnds<T, Req, Resp> = (
    <T as StreamCaller>::Sender<Req>,
    <T as StreamCaller>::Receiver<Resp>,
);

/// The two ends of a client-streaming call through the blocking `T`.
pub type BlockingClientStreamEnds<T, Item, Resp> = (
    <T as BlockingCaller>::Sender<Item>,
    <T as BlockingCaller>::Response<Resp>,
);

/// The two ends of a bidirectional call through the blocking `T`.
pub type BlockingBidiEnds<T, Req, Resp> = (
    <T as BlockingCaller>::Sender<Req>,
    <T as BlockingCaller>::Receiver<Resp>,
);

/// Every call of a generated blocking client, synchronous (`xrpc_blocking::RpcClient`).
pub trait BlockingCaller: Send + Sync {
    /// The items the server sends (an iterator).
    type Receiver<Item>;
    /// Where the client sends its items.
    type Sender<Item>;
    /// The single response of a client stream.
    type Response<Resp>;

    /// Calls `method` with `request` and decodes its response.
    fn call<Req, Resp>(
        &self,
        method: &'static Method,
        request: &Req,
        options: CallOptions,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + Sync + ?Sized,
        Resp: DeserializeOwned + Send + 'static;

    /// Calls a server-streaming `method`.
    fn call_server_stream<Req, Item>(
        &self,
        method: &'static Method,
        request: &Req,
        options: CallOptions,
    ) -> Result<Self::Receiver<Item>, RpcError>
    where
        Req: Serialize + Sync + ?Sized,
        Item: DeserializeOwned + Send + 'static;

    /// Calls a client-streaming `method`.
    fn call_client_stream<Item, Resp>(
        &self,
        method: &'static Method,
        options: CallOptions,
    ) -> Result<BlockingClientStreamEnds<Self, Item, Resp>, RpcError>
    where
        Item: Serialize + Send + 'static,
        Resp: DeserializeOwned + Send + 'static;

    /// Opens a bidirectional `method`.
    fn call_bidi<Req, Resp>(
        &self,
        method: &'static Method,
        options: CallOptions,
    ) -> Result<BlockingBidiEnds<Self, Req, Resp>, RpcError>
    where
        Req: Serialize + Send + 'static,
        Resp: DeserializeOwned + Send + 'static;
}

/// Where a generated server adapter registers its methods, each with its signature.
pub trait Registry {
    /// The codec of the stream handles its handlers get.
    type Codec: Codec;

    /// A unary `method`.
    fn unary<Req, Resp, F, Fut>(&self, method: &'static Method, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static;

    /// A server-streaming `method`.
    fn server_stream<Req, Item, F, Fut>(&self, method: &'static Method, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Item: Serialize + Send + 'static,
        F: Fn(CallContext, Req, ServerStreamSender<Item, Self::Codec>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static;

    /// A client-streaming `method`.
    fn client_stream<Item, Resp, F, Fut>(&self, method: &'static Method, handler: F)
    where
        Item: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, RequestStream<Item, Self::Codec>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static;

    /// A bidirectional `method`.
    fn bidi<Req, Resp, F, Fut>(&self, method: &'static Method, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(
                CallContext,
                RequestStream<Req, Self::Codec>,
                ServerStreamSender<Resp, Self::Codec>,
            ) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static;
}

/// A service's server adapter (`CalculatorServer`): registers its methods on a registry.
pub trait Service<Reg: ?Sized> {
    /// Registers every method on `registry`.
    fn register(self, registry: &Reg);
}

impl<C: Codec, R: Runtime> RpcServer<C, R> {
    /// Registers every method of a service defined with `#[service]`:
    /// `server.add_service(CalculatorServer::new(MyCalculator))`.
    pub fn add_service(&self, service: impl Service<Self>) -> &Self {
        service.register(self);
        self
    }
}

impl<C: Codec, R: Runtime> Registry for RpcServer<C, R> {
    type Codec = C;

    fn unary<Req, Resp, F, Fut>(&self, method: &'static Method, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        self.register_typed_with_context(method.name, handler);
        self.set_signature(method.name, method.signature);
    }

    fn server_stream<Req, Item, F, Fut>(&self, method: &'static Method, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Item: Serialize + Send + 'static,
        F: Fn(CallContext, Req, ServerStreamSender<Item, C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        self.register_stream_with_context(method.name, handler);
        self.set_signature(method.name, method.signature);
    }

    fn client_stream<Item, Resp, F, Fut>(&self, method: &'static Method, handler: F)
    where
        Item: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, RequestStream<Item, C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RpcError>> + Send + 'static,
    {
        self.register_client_stream_with_context(method.name, handler);
        self.set_signature(method.name, method.signature);
    }

    fn bidi<Req, Resp, F, Fut>(&self, method: &'static Method, handler: F)
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(CallContext, RequestStream<Req, C>, ServerStreamSender<Resp, C>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        self.register_bidi_with_context(method.name, handler);
        self.set_signature(method.name, method.signature);
    }
}

impl<T: MessageChannel, C: Codec, R: Runtime> Caller for RpcClient<T, C, R> {
    fn call<Req, Resp>(
        &self,
        method: &'static Method,
        request: &Req,
        options: CallOptions,
    ) -> impl Future<Output = Result<Resp, RpcError>> + Send
    where
        Req: Serialize + Sync + ?Sized,
        Resp: DeserializeOwned + Send + 'static,
    {
        self.call_with_options(method.name, request, method.options(options))
    }
}

/// The single response of a client stream on an async client.
pub type PendingResponse<Resp> = Pin<Box<dyn Future<Output = Result<Resp, RpcError>> + Send>>;

impl<T: MessageChannel, C: Codec, R: Runtime> StreamCaller for RpcClient<T, C, R> {
    type Receiver<Item> = StreamReceiver<Item, C>;
    type Sender<Item> = StreamSender<Item, C>;
    type Response<Resp> = PendingResponse<Resp>;

    fn call_server_stream<Req, Item>(
        &self,
        method: &'static Method,
        request: &Req,
        options: CallOptions,
    ) -> impl Future<Output = Result<StreamReceiver<Item, C>, RpcError>> + Send
    where
        Req: Serialize + Sync + ?Sized,
        Item: DeserializeOwned + Send + 'static,
    {
        self.call_server_stream_with_options(method.name, request, method.options(options))
    }

    async fn call_client_stream<Item, Resp>(
        &self,
        method: &'static Method,
        options: CallOptions,
    ) -> Result<(StreamSender<Item, C>, PendingResponse<Resp>), RpcError>
    where
        Item: Serialize + Send + 'static,
        Resp: DeserializeOwned + Send + 'static,
    {
        let (sender, response) = self
            .call_client_stream_with_options(method.name, method.options(options))
            .await?;
        Ok((sender, Box::pin(response) as PendingResponse<Resp>))
    }

    fn call_bidi<Req, Resp>(
        &self,
        method: &'static Method,
        options: CallOptions,
    ) -> impl Future<Output = Result<(StreamSender<Req, C>, StreamReceiver<Resp, C>), RpcError>> + Send
    where
        Req: Serialize + Send + 'static,
        Resp: DeserializeOwned + Send + 'static,
    {
        self.call_bidi_with_options(method.name, method.options(options))
    }
}

impl<T: MessageChannel, C: Codec, R: Runtime> Caller for LoadBalancedClient<T, C, R> {
    fn call<Req, Resp>(
        &self,
        method: &'static Method,
        request: &Req,
        options: CallOptions,
    ) -> impl Future<Output = Result<Resp, RpcError>> + Send
    where
        Req: Serialize + Sync + ?Sized,
        Resp: DeserializeOwned + Send + 'static,
    {
        // Not idempotent: once sent, a call is not tried again elsewhere.
        self.call_with_options(method.name, request, method.options(options), false)
    }
}
