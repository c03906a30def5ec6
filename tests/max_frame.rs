//! The same maximum frame on every socket-like transport: a value bigger than a shared-memory
//! ring round-trips over shm, Unix and TCP alike, and a value above the maximum frame size
//! (16 MiB by default, `xrpc_proto::DEFAULT_MAX_FRAME_SIZE`) fails its call with
//! `RpcError::FrameTooLarge` on each, leaving the connection usable.

use std::sync::atomic::{AtomicUsize, Ordering};

use xrpc::{
    MessageChannel, MessageChannelAdapter, RpcClient, RpcError, RpcServer, SharedMemoryConfig,
    SharedMemoryFrameTransport, SharedMemoryFrameTransportListener, TcpConfig, TcpFrameTransport,
    TcpFrameTransportListener, UnixConfig, UnixFrameTransport, UnixFrameTransportListener,
};

/// A connected (client, server) pair of message channels over one transport.
trait Pair {
    type C: MessageChannel;
    type S: MessageChannel;
    async fn pair() -> (Self::C, Self::S);
}

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "xrpc-max-frame-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

struct Shm;
impl Pair for Shm {
    type C = MessageChannelAdapter<SharedMemoryFrameTransport>;
    type S = MessageChannelAdapter<SharedMemoryFrameTransport>;
    async fn pair() -> (Self::C, Self::S) {
        let name = unique("shm");
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

struct Unix;
impl Pair for Unix {
    type C = MessageChannelAdapter<UnixFrameTransport>;
    type S = MessageChannelAdapter<UnixFrameTransport>;
    async fn pair() -> (Self::C, Self::S) {
        let path = std::env::temp_dir().join(format!("{}.sock", unique("unix")));
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

struct Tcp;
impl Pair for Tcp {
    type C = MessageChannelAdapter<TcpFrameTransport>;
    type S = MessageChannelAdapter<TcpFrameTransport>;
    async fn pair() -> (Self::C, Self::S) {
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

async fn the_same_max_frame_everywhere<P: Pair>() {
    let server = RpcServer::new();
    server.register_typed("echo", |v: Vec<u8>| async move { Ok(v) });
    let (c, s) = P::pair().await;
    tokio::spawn(async move { server.serve(s).await });
    let client = RpcClient::new(c);
    let _handle = client.start();

    // 300 KiB: more than the old shm limit (256 KiB), less than 16 MiB.
    let value: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    let back: Vec<u8> = client.call("echo", &value).await.unwrap();
    assert_eq!(back, value);

    // Larger than a shm ring (1 MiB by default): passes through it in pieces.
    let value: Vec<u8> = (0..5 << 20).map(|i| (i % 253) as u8).collect();
    let back: Vec<u8> = client.call("echo", &value).await.unwrap();
    assert_eq!(back, value);

    // Above the maximum frame: this call fails with FrameTooLarge, the connection lives on.
    let max = xrpc::proto::DEFAULT_MAX_FRAME_SIZE;
    let too_big = vec![1u8; max + 1];
    match client.call::<_, Vec<u8>>("echo", &too_big).await {
        Err(RpcError::FrameTooLarge { size, max: m }) => {
            assert!(size > max, "size {size}");
            assert_eq!(m, max);
        }
        other => panic!("expected FrameTooLarge, got {:?}", other.map(|v| v.len())),
    }
    let back: Vec<u8> = client.call("echo", &vec![9u8; 10]).await.unwrap();
    assert_eq!(back, vec![9u8; 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shm() {
    the_same_max_frame_everywhere::<Shm>().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix() {
    the_same_max_frame_everywhere::<Unix>().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp() {
    the_same_max_frame_everywhere::<Tcp>().await
}
