//! The conformance suite ([`conformance`]) on smol, over every transport of `xrpc-smol`: TCP,
//! Unix, shared memory, the in-process channel and `Arc`. Each case runs under
//! `smol::block_on`; the server and the clients' drivers are tasks of smol's global executor.

mod conformance;

use conformance::{ArcT, Channel, Pair};
use futures_util::future::join;
use xrpc_shm::testing::unique_name;
use xrpc_smol::{
    MessageChannelAdapter, SharedMemoryConfig, SharedMemoryFrameTransport,
    SharedMemoryFrameTransportListener, Smol, TcpConfig, TcpFrameTransport,
    TcpFrameTransportListener, UnixConfig, UnixFrameTransport, UnixFrameTransportListener,
};

conformance::suite! {
    tcp => Tcp, Smol, smol::block_on;
    unix => Unix, Smol, smol::block_on;
    shm => Shm, Smol, smol::block_on;
    channel => Channel, Smol, smol::block_on;
    arc => ArcT, Smol, smol::block_on;
}

struct Tcp;
impl Pair for Tcp {
    type Client = MessageChannelAdapter<TcpFrameTransport>;
    type Server = MessageChannelAdapter<TcpFrameTransport>;
    const CARRIES_VALUES: bool = false;
    async fn pair() -> (Self::Client, Self::Server) {
        let l = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default())
            .await
            .unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = join(
            TcpFrameTransport::connect(addr, TcpConfig::default()),
            l.accept(),
        )
        .await;
        (
            MessageChannelAdapter::new(c.unwrap()),
            MessageChannelAdapter::new(s.unwrap().0),
        )
    }
}

struct Unix;
impl Pair for Unix {
    type Client = MessageChannelAdapter<UnixFrameTransport>;
    type Server = MessageChannelAdapter<UnixFrameTransport>;
    const CARRIES_VALUES: bool = false;
    async fn pair() -> (Self::Client, Self::Server) {
        let path = std::env::temp_dir().join(unique_name("suite-smol.sock"));
        let l = UnixFrameTransportListener::bind(&path, UnixConfig::default())
            .await
            .unwrap();
        let (c, s) = join(
            UnixFrameTransport::connect(&path, UnixConfig::default()),
            l.accept(),
        )
        .await;
        (
            MessageChannelAdapter::new(c.unwrap()),
            MessageChannelAdapter::new(s.unwrap().0),
        )
    }
}

struct Shm;
impl Pair for Shm {
    type Client = MessageChannelAdapter<SharedMemoryFrameTransport>;
    type Server = MessageChannelAdapter<SharedMemoryFrameTransport>;
    const CARRIES_VALUES: bool = false;
    async fn pair() -> (Self::Client, Self::Server) {
        let name = unique_name("suite-smol");
        let config = SharedMemoryConfig::default();
        let l = SharedMemoryFrameTransportListener::bind(&name, config.clone()).unwrap();
        let (c, s) = join(
            SharedMemoryFrameTransport::connect(&name, config),
            l.accept(),
        )
        .await;
        (
            MessageChannelAdapter::new(c.unwrap()),
            MessageChannelAdapter::new(s.unwrap()),
        )
    }
}
