//! Layer 4: discovery, load balancing, failover and connection pooling, on any runtime. The
//! policy is the core's ([`xrpc_proto::balance`]); this module reads the clock of its runtime,
//! runs discovery as a task of it, holds the connections and makes the calls. Connecting to an endpoint is IO: the
//! adapter provides a [`Connect`] (the tokio adapter's `ClientFactory`, declared with
//! [`client_factory!`](crate::client_factory)).
//!
//! | module | owns |
//! |---|---|
//! | [`discovery`] | [`Discovery`], [`StaticDiscovery`], [`DnsDiscovery`] and its [`Resolver`] |
//! | [`load_balancer`] | [`LoadBalancer`]: the shared balancer, refreshed from discovery by a task |
//! | [`pool`] | [`ConnectionPool`], [`PoolGuard`] and [`Connect`] |
//! | [`client`] | [`LoadBalancedClient`], [`BalancedStream`] |

pub mod client;
pub mod discovery;
pub mod load_balancer;
pub mod pool;

pub use client::{BalancedStream, LoadBalancedClient};
pub use discovery::{
    Discovery, Discovery as ServiceDiscovery, DiscoveryError, DnsDiscovery, Resolver,
    StaticDiscovery, SystemResolver,
};
pub use load_balancer::LoadBalancer;
pub use pool::{Connect, ConnectFn, ConnectFuture, ConnectionPool, PoolGuard};
pub use xrpc_proto::balance::{
    Endpoint, EndpointError, EndpointStatus, HealthState, LeastConnections, LoadBalanceStrategy,
    LoadBalancerConfig, P2c, PoolConfig, Random, RoundRobin, ScoreBased, Strategy,
    WeightedRoundRobin,
};

#[doc(hidden)]
pub use xrpc_proto::{BincodeCodec as __BincodeCodec, Codec as __Codec};

/// Declares, in an adapter crate, the original API's `ClientFactory<T, C>` trait for runtime
/// `$runtime`, and makes `Arc<F>` of any factory `F` a [`Connect`], so that
/// `LoadBalancedClient::new(lb, Arc::new(factory))` reads as in the original README.
///
/// The trait's method has the shape `#[async_trait]` gives `async fn create(&self, endpoint:
/// &Endpoint) -> Result<RpcClient<T, C>, RpcError>`: a factory written with `async_trait`
/// implements it as is; without, `create` returns `Box::pin(async move { .. })`.
#[macro_export]
macro_rules! client_factory {
    ($runtime:ty) => {
        /// Makes connected clients for endpoints (the original API's `ClientFactory`):
        /// implement it with `#[async_trait]` and an `async fn create`.
        pub trait ClientFactory<
            T: $crate::MessageChannel,
            C: $crate::balance::__Codec = $crate::balance::__BincodeCodec,
        >: Send + Sync + 'static
        {
            /// A client connected to `endpoint`.
            fn create<'life0, 'life1, 'async_trait>(
                &'life0 self,
                endpoint: &'life1 $crate::balance::Endpoint,
            ) -> ::std::pin::Pin<
                Box<
                    dyn ::std::future::Future<
                            Output = Result<$crate::RpcClient<T, C, $runtime>, $crate::RpcError>,
                        > + Send
                        + 'async_trait,
                >,
            >
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                Self: 'async_trait;
        }

        impl<F, T, C> $crate::balance::Connect<$runtime, T, C> for ::std::sync::Arc<F>
        where
            F: ClientFactory<T, C>,
            T: $crate::MessageChannel,
            C: $crate::balance::__Codec,
        {
            fn connect<'a>(
                &'a self,
                endpoint: &'a $crate::balance::Endpoint,
            ) -> $crate::balance::ConnectFuture<'a, T, C, $runtime> {
                (**self).create(endpoint)
            }
        }
    };
}
