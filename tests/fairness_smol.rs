//! The fairness suite ([`fairness`]: issue 24's attacks end to end) on smol, over TCP and Unix
//! sockets.

mod fairness;

use fairness::Net;
use xrpc_shm::testing::unique_name;
use xrpc_smol::{
    Smol, TcpConfig, TcpFrameTransport, TcpFrameTransportListener, TransportError, UnixConfig,
    UnixFrameTransport, UnixFrameTransportListener,
};

fairness::suite! {
    tcp => Tcp, Smol, smol::block_on;
    unix => Unix, Smol, smol::block_on;
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
        let path = std::env::temp_dir().join(unique_name("fairness-smol.sock"));
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
