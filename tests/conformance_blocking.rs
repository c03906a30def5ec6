//! The conformance suite ([`conformance`]) on the blocking adapter's runtime, [`Blocking`]:
//! over its TCP, Unix and shared-memory transports and over the in-process channel and `Arc`
//! transports (which need no reactor). Each case runs under `Blocking::block_on` on the test's
//! thread; the server and the clients' drivers are tasks of `Blocking`, a thread each.
//!
//! The bodies drive the async layer's client ([`xrpc_async::RpcClient`]) on `Blocking` — the
//! client the blocking `RpcClient` wraps, call for call (`Blocking::block_on(client.call(..))`).
//! The synchronous API itself is covered by `xrpc-blocking/tests/rpc.rs`.

mod conformance;

use std::net::TcpStream;

use conformance::{ArcT, Channel, Pair};
use xrpc_async::MessageChannelAdapter;
use xrpc_blocking::Blocking;
use xrpc_blocking::transport::{
    AsyncSharedMemoryFrameTransport, AsyncTcpFrameTransport, AsyncUnixFrameTransport,
};
use xrpc_blocking::{
    SharedMemoryConfig, SharedMemoryFrameTransport, SharedMemoryFrameTransportListener, TcpConfig,
    TcpFrameTransport, TcpFrameTransportListener, UnixConfig, UnixFrameTransport,
    UnixFrameTransportListener,
};
use xrpc_shm::testing::unique_name;

conformance::suite! {
    tcp => Tcp, Blocking, Blocking::block_on;
    unix => Unix, Blocking, Blocking::block_on;
    shm => Shm, Blocking, Blocking::block_on;
    channel => Channel, Blocking, Blocking::block_on;
    arc => ArcT, Blocking, Blocking::block_on;
}

struct Tcp;
impl Pair for Tcp {
    type Client = MessageChannelAdapter<AsyncTcpFrameTransport>;
    type Server = MessageChannelAdapter<AsyncTcpFrameTransport>;
    const CARRIES_VALUES: bool = false;
    async fn pair() -> (Self::Client, Self::Server) {
        let l = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default()).unwrap();
        let addr = l.local_addr().unwrap();
        // The connection completes in the listener's backlog; accepted after.
        let c =
            TcpFrameTransport::from_stream(TcpStream::connect(addr).unwrap(), TcpConfig::default())
                .unwrap();
        let (s, _) = l.accept().unwrap();
        (
            MessageChannelAdapter::new(c.into_inner()),
            MessageChannelAdapter::new(s.into_inner()),
        )
    }
}

struct Unix;
impl Pair for Unix {
    type Client = MessageChannelAdapter<AsyncUnixFrameTransport>;
    type Server = MessageChannelAdapter<AsyncUnixFrameTransport>;
    const CARRIES_VALUES: bool = false;
    async fn pair() -> (Self::Client, Self::Server) {
        let path = std::env::temp_dir().join(unique_name("suite-blocking.sock"));
        let l = UnixFrameTransportListener::bind(&path, UnixConfig::default()).unwrap();
        let c = UnixFrameTransport::connect(&path, UnixConfig::default()).unwrap();
        let s = l.accept().unwrap();
        (
            MessageChannelAdapter::new(c.into_inner()),
            MessageChannelAdapter::new(s.into_inner()),
        )
    }
}

struct Shm;
impl Pair for Shm {
    type Client = MessageChannelAdapter<AsyncSharedMemoryFrameTransport>;
    type Server = MessageChannelAdapter<AsyncSharedMemoryFrameTransport>;
    const CARRIES_VALUES: bool = false;
    async fn pair() -> (Self::Client, Self::Server) {
        let name = unique_name("suite-blocking");
        let config = SharedMemoryConfig::default();
        let l = SharedMemoryFrameTransportListener::bind(&name, config.clone()).unwrap();
        // The handshake needs both ends at once: the server accepts on a thread of its own.
        let (c, s) = std::thread::scope(|scope| {
            let accepted = scope.spawn(|| l.accept().unwrap());
            let c = SharedMemoryFrameTransport::connect(&name, config).unwrap();
            (c, accepted.join().unwrap())
        });
        (
            MessageChannelAdapter::new(c.into_inner()),
            MessageChannelAdapter::new(s.into_inner()),
        )
    }
}
