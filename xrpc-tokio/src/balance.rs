//! Layer 4 on tokio: the original API's `ClientFactory`, the balanced client named with tokio
//! as its runtime, and connectors that open a connection to a TCP, Unix or shared-memory
//! [`Endpoint`]. The policy is `xrpc_proto::balance`; the rest is `xrpc_async::balance`.

use xrpc_async::balance::{Connect, ConnectFuture, Endpoint};
use xrpc_async::{MessageChannelAdapter, RpcError, TransportError};
use xrpc_proto::{BincodeCodec, Codec};

use crate::runtime::Tokio;
#[cfg(feature = "shm")]
use crate::transport::{SharedMemoryConfig, SharedMemoryFrameTransport};
use crate::transport::{TcpConfig, TcpFrameTransport, UnixConfig, UnixFrameTransport};

xrpc_async::client_factory!(Tokio);

/// A client over many servers on tokio ([`xrpc_async::LoadBalancedClient`]).
pub type LoadBalancedClient<T, C = BincodeCodec> = xrpc_async::LoadBalancedClient<T, C, Tokio>;

/// Connections to many endpoints on tokio ([`xrpc_async::balance::ConnectionPool`]).
pub type ConnectionPool<T, C = BincodeCodec> = xrpc_async::balance::ConnectionPool<T, C, Tokio>;

fn wrong_scheme(expected: &str, endpoint: &Endpoint) -> RpcError {
    RpcError::Transport(TransportError::ConnectionFailed(format!(
        "expected a {expected}:// endpoint, got {endpoint}"
    )))
}

/// Declares a connector for one kind of endpoint: `$name($config)` connects `$variant`
/// endpoints with `$connect`.
macro_rules! connector {
    ($(#[$doc:meta])* $name:ident, $config:ty, $transport:ty, $scheme:literal,
     $variant:pat => $connect:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default)]
        pub struct $name(pub $config);

        impl<C: Codec + Default> Connect<Tokio, MessageChannelAdapter<$transport>, C> for $name {
            fn connect<'a>(
                &'a self,
                endpoint: &'a Endpoint,
            ) -> ConnectFuture<'a, MessageChannelAdapter<$transport>, C, Tokio> {
                let config = self.0.clone();
                Box::pin(async move {
                    let $variant = endpoint else {
                        return Err(wrong_scheme($scheme, endpoint));
                    };
                    let transport = $connect(config).await?;
                    Ok(xrpc_async::RpcClient::with_codec(
                        MessageChannelAdapter::new(transport),
                        C::default(),
                    ))
                })
            }
        }
    };
}

connector!(
    /// Connects to `tcp://` endpoints.
    TcpConnector, TcpConfig, TcpFrameTransport, "tcp",
    Endpoint::Tcp(addr) => |c| TcpFrameTransport::connect(*addr, c)
);
connector!(
    /// Connects to `unix://` endpoints.
    UnixConnector, UnixConfig, UnixFrameTransport, "unix",
    Endpoint::Unix(path) => |c| UnixFrameTransport::connect(path, c)
);
#[cfg(feature = "shm")]
connector!(
    /// Connects to `shm://` endpoints.
    SharedMemoryConnector, SharedMemoryConfig, SharedMemoryFrameTransport, "shm",
    Endpoint::SharedMemory(name) => |c| SharedMemoryFrameTransport::connect(name, c)
);

/// Connects to `tcp://` endpoints with TLS: a balanced client's endpoints are TLS servers.
/// The server name verified is the configuration's
/// ([`with_server_name`](crate::TlsClientConfig::with_server_name)), else the endpoint's IP
/// address.
#[cfg(feature = "tls")]
#[derive(Debug, Clone)]
pub struct TlsConnector {
    /// The TCP side of each connection.
    pub tcp: TcpConfig,
    /// The TLS side of each connection.
    pub tls: crate::transport::TlsClientConfig,
}

#[cfg(feature = "tls")]
impl TlsConnector {
    /// Connects with `tls` and the default TCP configuration.
    pub fn new(tls: crate::transport::TlsClientConfig) -> Self {
        Self {
            tcp: TcpConfig::default(),
            tls,
        }
    }
}

#[cfg(feature = "tls")]
impl<C: Codec + Default>
    Connect<Tokio, MessageChannelAdapter<crate::transport::TlsFrameTransport>, C> for TlsConnector
{
    fn connect<'a>(
        &'a self,
        endpoint: &'a Endpoint,
    ) -> ConnectFuture<'a, MessageChannelAdapter<crate::transport::TlsFrameTransport>, C, Tokio>
    {
        Box::pin(async move {
            let Endpoint::Tcp(addr) = endpoint else {
                return Err(wrong_scheme("tcp", endpoint));
            };
            let transport =
                crate::transport::TlsFrameTransport::connect(*addr, self.tcp, self.tls.clone())
                    .await?;
            Ok(xrpc_async::RpcClient::with_codec(
                MessageChannelAdapter::new(transport),
                C::default(),
            ))
        })
    }
}
