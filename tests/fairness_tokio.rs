//! The fairness suite ([`fairness`]: issue 24's attacks end to end) on tokio, over TCP and Unix
//! sockets.

mod fairness;

use std::future::Future;

use fairness::Net;
use xrpc::{
    TcpConfig, TcpFrameTransport, TcpFrameTransportListener, Tokio, TransportError, UnixConfig,
    UnixFrameTransport, UnixFrameTransportListener,
};
use xrpc_shm::testing::unique_name;

/// Runs a body on a fresh two-worker runtime.
fn block_on<F: Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(body)
}

fairness::suite! {
    tcp => Tcp, Tokio, block_on;
    unix => Unix, Tokio, block_on;
}

struct Tcp;
impl Net for Tcp {
    type T = TcpFrameTransport;
    type L = TcpFrameTransportListener;
    async fn bind() -> (Self::L, String) {
        let l = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default())
            .await
            .unwrap();
        let addr = l.local_addr().unwrap().to_string();
        (l, addr)
    }
    async fn connect(target: &str, max_frame: usize) -> Result<Self::T, TransportError> {
        let config = TcpConfig::default().with_max_frame_size(max_frame);
        TcpFrameTransport::connect(target, config).await
    }
}

struct Unix;
impl Net for Unix {
    type T = UnixFrameTransport;
    type L = UnixFrameTransportListener;
    async fn bind() -> (Self::L, String) {
        let path = std::env::temp_dir().join(unique_name("fairness.sock"));
        let l = UnixFrameTransportListener::bind(&path, UnixConfig::default())
            .await
            .unwrap();
        (l, path.to_string_lossy().into_owned())
    }
    async fn connect(target: &str, max_frame: usize) -> Result<Self::T, TransportError> {
        let config = UnixConfig::default().with_max_frame_size(max_frame);
        UnixFrameTransport::connect(target, config).await
    }
}
