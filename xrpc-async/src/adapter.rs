//! [`adapter_api!`](crate::adapter_api): the names every adapter crate gives its users, in one
//! place, so that `xrpc_tokio::RpcClient` and `xrpc_smol::RpcClient` say the same thing.

/// Declares, at the root of an adapter crate whose runtime is `$runtime` (named `$name` in the
/// docs), the API every adapter shares: the re-exports of the async layer and of its own
/// `transport` module, and the aliases `RpcClient<T, C = BincodeCodec>`,
/// `RpcServer<C = BincodeCodec>` and `ClientHandle` for that runtime. The crate must have a
/// `transport` module naming the transports and depend on `xrpc-proto`.
#[macro_export]
macro_rules! adapter_api {
    ($runtime:ident, $name:literal) => {
        pub use transport::{
            ArcFrameTransport, ChannelConfig, ChannelFrameTransport, FrameTransport, RetryPolicy,
            SharedMemoryConfig, SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
            TcpConfig, TcpFrameTransport, TcpFrameTransportListener, TransportError,
            TransportStats, UnixConfig, UnixFrameTransport, UnixFrameTransportListener,
        };
        pub use $crate::{
            CallContext, ChannelError, FrameListener, MessageChannel, MessageChannelAdapter,
            Payload, RequestStream, RpcClientConfig, RpcError, SerdeChannel, ServerStreamSender,
            StreamReceiver, StreamSender, TypedChannel,
        };
        pub use ::xrpc_proto::{BincodeCodec, CallKind, CallOptions};

        #[doc = concat!("An RPC client on ", $name, " ([`xrpc_async::RpcClient`]), Bincode by default.")]
        pub type RpcClient<T, C = BincodeCodec> = $crate::RpcClient<T, C, $runtime>;

        #[doc = concat!("An RPC server on ", $name, " ([`xrpc_async::RpcServer`]), Bincode by default.")]
        pub type RpcServer<C = BincodeCodec> = $crate::RpcServer<C, $runtime>;

        /// Keeps a client's driver task; returned by
        /// [`RpcClient::start`](xrpc_async::RpcClient::start).
        pub type ClientHandle = $crate::ClientHandle<$runtime>;
    };
}
