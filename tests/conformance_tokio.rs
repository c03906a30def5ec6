//! The conformance suite ([`conformance`]) on tokio, over every transport of `xrpc-tokio`:
//! TCP, Unix, shared memory, the in-process channel and `Arc`.

mod conformance;

use std::future::Future;

use conformance::{ArcT, Channel, Pair};
use xrpc::{
    MessageChannelAdapter, SharedMemoryConfig, SharedMemoryFrameTransport,
    SharedMemoryFrameTransportListener, TcpConfig, TcpFrameTransport, TcpFrameTransportListener,
    Tokio, UnixConfig, UnixFrameTransport, UnixFrameTransportListener,
};
use xrpc_shm::testing::unique_name;

/// Runs a body on a fresh two-worker runtime, as `#[tokio::test(flavor = "multi_thread",
/// worker_threads = 2)]` does.
fn block_on<F: Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(body)
}

conformance::suite! {
    tcp => Tcp, Tokio, block_on;
    unix => Unix, Tokio, block_on;
    shm => Shm, Tokio, block_on;
    channel => Channel, Tokio, block_on;
    arc => ArcT, Tokio, block_on;
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
        let (c, s) = tokio::join!(
            TcpFrameTransport::connect(addr, TcpConfig::default()),
            l.accept()
        );
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
        let path = std::env::temp_dir().join(unique_name("suite.sock"));
        let _ = std::fs::remove_file(&path);
        let l = UnixFrameTransportListener::bind(&path, UnixConfig::default())
            .await
            .unwrap();
        let (c, s) = tokio::join!(
            UnixFrameTransport::connect(&path, UnixConfig::default()),
            l.accept()
        );
        let _ = std::fs::remove_file(&path);
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
        let name = unique_name("suite");
        let config = SharedMemoryConfig::default();
        let l = SharedMemoryFrameTransportListener::bind(&name, config.clone()).unwrap();
        let (c, s) = tokio::join!(
            SharedMemoryFrameTransport::connect(&name, config),
            l.accept()
        );
        (
            MessageChannelAdapter::new(c.unwrap()),
            MessageChannelAdapter::new(s.unwrap()),
        )
    }
}
