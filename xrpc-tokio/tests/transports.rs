//! One generic test body per behaviour, instantiated for every transport.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use xrpc_proto::{Codec, CompressionConfig, CompressionType, Header, Message, MessageKind};
use xrpc_tokio::{
    ArcFrameTransport, ChannelConfig, ChannelError, ChannelFrameTransport, FrameTransport,
    MessageChannel, MessageChannelAdapter, RetryPolicy, SerdeChannel, TcpConfig, TcpFrameTransport,
    TcpFrameTransportListener, TransportError, TypedChannel, UnixConfig, UnixFrameTransport,
    UnixFrameTransportListener, ZeroCopyTransport,
};

const DEFAULT_MAX: usize = xrpc_proto::DEFAULT_MAX_FRAME_SIZE;

/// A raw byte-stream peer of a stream transport.
trait RawIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<X: AsyncRead + AsyncWrite + Unpin + Send> RawIo for X {}

/// How to make a connected pair of one transport kind.
trait Harness: 'static {
    type T: FrameTransport;
    /// Two connected ends that accept frames up to `max` bytes.
    fn pair(max: usize) -> impl Future<Output = (Self::T, Self::T)> + Send;
    /// One end whose peer is a raw byte stream (stream transports only).
    fn raw_pair(max: usize) -> impl Future<Output = Option<(Self::T, Box<dyn RawIo>)>> + Send;
}

/// A socket path in the temp directory that no other test or run uses.
fn unix_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(xrpc_shm::testing::unique_name(&format!("{tag}.sock")))
}

struct Tcp;
impl Harness for Tcp {
    type T = TcpFrameTransport;
    async fn pair(max: usize) -> (Self::T, Self::T) {
        let cfg = TcpConfig::default().with_max_frame_size(max);
        let l = TcpFrameTransportListener::bind("127.0.0.1:0", cfg)
            .await
            .unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpFrameTransport::connect(addr, cfg), l.accept());
        (a.unwrap(), b.unwrap().0)
    }
    async fn raw_pair(max: usize) -> Option<(Self::T, Box<dyn RawIo>)> {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let raw = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let t = TcpFrameTransport::from_stream(s, TcpConfig::default().with_max_frame_size(max));
        Some((t.unwrap(), Box::new(raw)))
    }
}

struct Unix;
impl Harness for Unix {
    type T = UnixFrameTransport;
    async fn pair(max: usize) -> (Self::T, Self::T) {
        let cfg = UnixConfig::default().with_max_frame_size(max);
        let path = unix_path("pair");
        let l = UnixFrameTransportListener::bind(&path, cfg).await.unwrap();
        let (a, b) = tokio::join!(UnixFrameTransport::connect(&path, cfg), l.accept());
        (a.unwrap(), b.unwrap().0)
    }
    async fn raw_pair(max: usize) -> Option<(Self::T, Box<dyn RawIo>)> {
        let path = unix_path("raw");
        let l = UnixListener::bind(&path).unwrap();
        let raw = UnixStream::connect(&path).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let _ = std::fs::remove_file(&path);
        let cfg = UnixConfig::default().with_max_frame_size(max);
        let t = UnixFrameTransport::from_stream(s, cfg, "raw").unwrap();
        Some((t, Box::new(raw)))
    }
}

struct Channel;
impl Harness for Channel {
    type T = ChannelFrameTransport;
    async fn pair(max: usize) -> (Self::T, Self::T) {
        let cfg = ChannelConfig {
            capacity: 16,
            max_frame_size: max,
            ..ChannelConfig::default()
        };
        ChannelFrameTransport::create_pair("test", cfg)
    }
    async fn raw_pair(_: usize) -> Option<(Self::T, Box<dyn RawIo>)> {
        None
    }
}

struct ArcT;
impl Harness for ArcT {
    type T = ArcFrameTransport;
    async fn pair(max: usize) -> (Self::T, Self::T) {
        let cfg = ChannelConfig {
            capacity: 16,
            max_frame_size: max,
            ..ChannelConfig::default()
        };
        ArcFrameTransport::create_pair_with_config("test", cfg)
    }
    async fn raw_pair(_: usize) -> Option<(Self::T, Box<dyn RawIo>)> {
        None
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

async fn round_trip<H: Harness>() {
    let (a, b) = H::pair(DEFAULT_MAX).await;
    let sizes = [0usize, 1, 64, 4096, 1 << 20];
    for &size in &sizes {
        let f = pattern(size, 7);
        let (s, r) = tokio::join!(a.send_frame(&f), b.recv_frame());
        s.unwrap();
        assert_eq!(r.unwrap(), f, "a -> b, {size} bytes");
        let (s, r) = tokio::join!(b.send_frame(&f), a.recv_frame());
        s.unwrap();
        assert_eq!(r.unwrap(), f, "b -> a, {size} bytes");
    }
    let total: u64 = sizes.iter().map(|&s| s as u64).sum();
    let st = a.stats().unwrap();
    assert_eq!((st.frames_sent, st.bytes_sent), (5, total));
    assert_eq!((st.frames_received, st.bytes_received), (5, total));
    assert_eq!((st.send_errors, st.recv_errors), (0, 0));
    assert!(a.is_connected() && a.is_healthy() && !a.name().is_empty());
}

async fn pipelined<H: Harness>() {
    let (a, b) = H::pair(DEFAULT_MAX).await;
    let a = Arc::new(a);
    let frame = |i: u32| {
        let mut f = i.to_le_bytes().to_vec();
        f.extend(pattern(i as usize % 300, i as u8));
        f
    };
    let sender = tokio::spawn({
        let a = a.clone();
        async move {
            for i in 0..500 {
                a.send_frame(&frame(i)).await.unwrap();
            }
            // The other half in batches of 50, one write each on byte streams.
            for chunk in (500..1000).collect::<Vec<u32>>().chunks(50) {
                let frames: Vec<Vec<u8>> = chunk.iter().map(|&i| frame(i)).collect();
                let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
                a.send_frames(&refs).await.unwrap();
            }
        }
    });
    for i in 0..1000 {
        assert_eq!(b.recv_frame().await.unwrap(), frame(i), "frame {i}");
    }
    sender.await.unwrap();
    assert_eq!(a.stats().unwrap().frames_sent, 1000);
}

async fn concurrent_senders<H: Harness>() {
    let (a, b) = H::pair(DEFAULT_MAX).await;
    let a = Arc::new(a);
    const TASKS: u8 = 8;
    const PER_TASK: u32 = 250;
    let mut senders = Vec::new();
    for task in 0..TASKS {
        let a = a.clone();
        senders.push(tokio::spawn(async move {
            for seq in 0..PER_TASK {
                let mut f = vec![task];
                f.extend(seq.to_le_bytes());
                f.extend(pattern((seq as usize * 37) % 2000, task));
                a.send_frame(&f).await.unwrap();
            }
        }));
    }
    let mut next = [0u32; TASKS as usize];
    for _ in 0..u32::from(TASKS) * PER_TASK {
        let f = b.recv_frame().await.unwrap();
        let task = f[0];
        let seq = u32::from_le_bytes(f[1..5].try_into().unwrap());
        assert_eq!(seq, next[task as usize], "task {task} out of order");
        assert_eq!(
            &f[5..],
            pattern((seq as usize * 37) % 2000, task),
            "torn frame"
        );
        next[task as usize] += 1;
    }
    for s in senders {
        s.await.unwrap();
    }
}

async fn oversized_send<H: Harness>() {
    let (a, b) = H::pair(1024).await;
    assert!(matches!(
        a.send_frame(&[0; 1025]).await,
        Err(TransportError::MessageTooLarge {
            size: 1025,
            max: 1024
        })
    ));
    // A batch with one oversized frame sends nothing.
    let big = [1u8; 2000];
    assert!(matches!(
        a.send_frames(&[b"small", &big]).await,
        Err(TransportError::MessageTooLarge { size: 2000, .. })
    ));
    assert!(
        a.is_connected(),
        "a refused send does not break the transport"
    );
    a.send_frame(&[9; 1024]).await.unwrap();
    assert_eq!(b.recv_frame().await.unwrap(), vec![9; 1024]);

    // The encode-in-place path checks the size and the prefix it was handed.
    let r: Result<(), TransportError> = a
        .send_frame_with(|b| {
            b.put_u32_le(1025);
            b.put_slice(&[0; 1025]);
            Ok(())
        })
        .await;
    assert!(matches!(
        r,
        Err(TransportError::MessageTooLarge { size: 1025, .. })
    ));
    let r: Result<(), TransportError> = a
        .send_frame_with(|b| {
            b.put_u32_le(5);
            b.put_slice(b"abc");
            Ok(())
        })
        .await;
    assert!(matches!(r, Err(TransportError::Protocol(_))));
    let r: Result<(), TransportError> = a
        .send_frame_with(|_| Err(TransportError::Protocol("encoder failed".into())))
        .await;
    assert!(matches!(r, Err(TransportError::Protocol(m)) if m == "encoder failed"));
    a.send_frame_with(|b| {
        b.put_u32_le(3);
        b.put_slice(b"abc");
        Ok::<_, TransportError>(())
    })
    .await
    .unwrap();
    assert_eq!(b.recv_frame().await.unwrap(), &b"abc"[..]);
    assert!(a.is_connected());
}

async fn oversized_recv<H: Harness>() {
    let Some((t, mut raw)) = H::raw_pair(1024).await else {
        return; // in-process transports have no byte stream to corrupt
    };
    // A frame over the maximum is skipped as it arrives, then reported with its first bytes
    // (an error of that frame alone); the next frame follows.
    raw.write_all(&2000u32.to_le_bytes()).await.unwrap();
    raw.write_all(&[7; 2000]).await.unwrap();
    raw.write_all(&[3, 0, 0, 0, b'a', b'b', b'c'])
        .await
        .unwrap();
    match t.recv_frame().await {
        Err(TransportError::FrameSkipped(s)) => {
            assert_eq!((s.len, s.max), (2000, 1024));
            assert_eq!(&s.head[..], &[7; xrpc_proto::skipped::SKIPPED_HEAD_LEN][..]);
        }
        other => panic!("{other:?}"),
    }
    assert!(t.is_connected());
    assert_eq!(t.recv_frame().await.unwrap(), &b"abc"[..]);
    // A bogus 4 GiB length prefix is skipped too, without allocating: reported once its head
    // is in, then its bytes keep being dropped and count as a partial frame (for the server's
    // frame deadline).
    raw.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    raw.write_all(&[0; 100]).await.unwrap();
    assert!(matches!(
        t.recv_frame().await,
        Err(TransportError::FrameSkipped(s)) if s.len == u32::MAX as usize
    ));
    let r = tokio::time::timeout(Duration::from_millis(200), t.recv_frame()).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(t.partial_frame(), 104);
    assert!(t.is_connected());
    // A stream that ends mid-frame is an error, not a clean close.
    let (t, mut raw) = H::raw_pair(1024).await.unwrap();
    raw.write_all(&[10, 0, 0, 0, 1, 2]).await.unwrap();
    drop(raw);
    assert!(matches!(
        t.recv_frame().await,
        Err(TransportError::ReceiveFailed(_))
    ));
}

async fn peer_close<H: Harness>() {
    // Frames sent before a close are delivered, then ConnectionClosed.
    let (a, b) = H::pair(DEFAULT_MAX).await;
    a.send_frame(b"last words").await.unwrap();
    a.close().await.unwrap();
    a.close().await.unwrap(); // idempotent
    assert!(!a.is_connected());
    assert_eq!(b.recv_frame().await.unwrap(), &b"last words"[..]);
    assert!(matches!(
        b.recv_frame().await,
        Err(TransportError::ConnectionClosed)
    ));
    assert!(a.send_frame(b"x").await.is_err());

    // Dropping the peer closes too.
    let (a, b) = H::pair(DEFAULT_MAX).await;
    drop(a);
    assert!(matches!(
        b.recv_frame().await,
        Err(TransportError::ConnectionClosed)
    ));
    assert_eq!(
        b.stats().unwrap().recv_errors,
        0,
        "a clean close is no error"
    );

    // A local close wakes a receive already waiting.
    let (a, _b) = H::pair(DEFAULT_MAX).await;
    let a = Arc::new(a);
    let waiting = tokio::spawn({
        let a = a.clone();
        async move { a.recv_frame().await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    a.close().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("close must wake the pending recv")
        .unwrap();
    assert!(matches!(r, Err(TransportError::ConnectionClosed)));
}

async fn message_adapter<H: Harness>() {
    let configs = [
        CompressionConfig::none(),
        CompressionConfig::lz4(),
        CompressionConfig::zstd(3),
    ];
    for cfg in configs {
        let (a, b) = H::pair(DEFAULT_MAX).await;
        let a = MessageChannelAdapter::with_compression(a, cfg);
        let b = MessageChannelAdapter::new(b);
        for (i, size) in [0usize, 100, 10_000, 200_000].into_iter().enumerate() {
            let payload = Bytes::from(vec![b'z'; size]);
            let h = Header::new(MessageKind::Request, i as u64).with_codec(1);
            let msg = Message::new(h, "echo", payload.clone()).unwrap();
            let (s, r) = tokio::join!(a.send(&msg), b.recv());
            s.unwrap();
            let got = r.unwrap();
            assert_eq!(
                (got.header.kind, got.header.id),
                (MessageKind::Request, i as u64)
            );
            assert_eq!(got.method(), "echo");
            assert_eq!(got.payload, payload);
            let expected = if size >= cfg.threshold {
                cfg.algorithm
            } else {
                CompressionType::None
            };
            assert_eq!(got.header.compression, expected, "{cfg:?}, {size} bytes");
            // The reply path, payload serialized in place.
            let h = Header::new(MessageKind::Response, i as u64);
            let (s, r) = tokio::join!(
                b.send_with(&h, "", |buf| xrpc_proto::BincodeCodec
                    .encode_into(&size, buf)),
                a.recv()
            );
            s.unwrap();
            let reply = r.unwrap();
            let n: usize = xrpc_proto::BincodeCodec.decode(&reply.payload).unwrap();
            assert_eq!(n, size);
        }
        // A malformed message is a Proto error and leaves the channel usable.
        a.inner().send_frame(b"not a message").await.unwrap();
        assert!(matches!(b.recv().await, Err(ChannelError::Proto(_))));
        let ping = Message::new(Header::new(MessageKind::Ping, 1), "", Bytes::new()).unwrap();
        a.send(&ping).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), ping);
        a.close().await.unwrap();
        assert!(matches!(
            b.recv().await,
            Err(ChannelError::Transport(TransportError::ConnectionClosed))
        ));
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AddRequest {
    a: i32,
    b: i32,
    tag: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AddResponse {
    result: i32,
}

async fn serde_and_typed<H: Harness>() {
    let (a, b) = H::pair(DEFAULT_MAX).await;
    // Through the `Arc<T>: FrameTransport` blanket impl on one side.
    let (a, b) = (SerdeChannel::new(Arc::new(a)), SerdeChannel::new(b));
    let req = AddRequest {
        a: 1,
        b: 2,
        tag: "x".repeat(5000),
    };
    a.send(&req).await.unwrap();
    assert_eq!(b.recv::<AddRequest>().await.unwrap(), req);
    b.send("a str").await.unwrap();
    assert_eq!(a.recv::<String>().await.unwrap(), "a str");
    // The wrong type is a codec error, not a panic.
    a.send(&u8::MAX).await.unwrap();
    assert!(matches!(
        b.recv::<AddRequest>().await,
        Err(ChannelError::Proto(_))
    ));

    let (a, b) = H::pair(DEFAULT_MAX).await;
    let client = TypedChannel::<AddRequest, AddResponse, _>::new(a);
    let server = TypedChannel::<AddResponse, AddRequest, _>::new(b);
    for i in 0..10 {
        let req = AddRequest {
            a: i,
            b: 2 * i,
            tag: String::new(),
        };
        client.send(&req).await.unwrap();
        let got = server.recv().await.unwrap();
        server
            .send(&AddResponse {
                result: got.a + got.b,
            })
            .await
            .unwrap();
        assert_eq!(client.recv().await.unwrap().result, 3 * i);
    }
    client.close().await.unwrap();
    assert!(matches!(
        server.recv().await,
        Err(ChannelError::Transport(TransportError::ConnectionClosed))
    ));
}

macro_rules! transport_tests {
    ($($kind:ident => $h:ty),* $(,)?) => {$(
        mod $kind {
            transport_tests!(@tests $h: round_trip, pipelined, concurrent_senders, oversized_send,
                oversized_recv, peer_close, message_adapter, serde_and_typed);
        }
    )*};
    (@tests $h:ty: $($test:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            tokio::time::timeout(std::time::Duration::from_secs(60), super::$test::<$h>())
                .await
                .expect("test timed out");
        }
    )*};
}

transport_tests! {
    tcp => super::Tcp,
    unix => super::Unix,
    channel => super::Channel,
    arc => super::ArcT,
}

// ---- ArcFrameTransport's typed path -------------------------------------------------------

#[tokio::test]
async fn arc_typed_round_trip_and_mismatch() {
    let (a, b) = ArcFrameTransport::create_pair("typed");
    let big = Arc::new(vec![7u64; 100_000]);
    a.send_arc(big.clone()).await.unwrap();
    let got = b.recv_typed::<Vec<u64>>().await.unwrap();
    assert!(
        Arc::ptr_eq(&got, &big),
        "no copy: the same allocation arrives"
    );

    a.send_typed(AddRequest {
        a: 1,
        b: 2,
        tag: String::new(),
    })
    .await
    .unwrap();
    match b.recv_typed::<String>().await {
        Err(TransportError::TypeMismatch { expected, found }) => {
            assert!(expected.contains("String"));
            assert!(found.contains("AddRequest"));
        }
        other => panic!("expected a type mismatch, got {other:?}"),
    }
    // Still usable afterwards.
    b.send_typed(5u8).await.unwrap();
    assert_eq!(*a.recv_typed::<u8>().await.unwrap(), 5);
    assert!(matches!(
        a.recv_typed_timeout::<u8>(Duration::from_millis(20)).await,
        Err(TransportError::Timeout)
    ));

    // Frames move without copying.
    let frame = Bytes::from(vec![1u8; 4096]);
    a.send_bytes(frame.clone()).await.unwrap();
    let got = b.recv_frame().await.unwrap();
    assert_eq!(got.as_ptr(), frame.as_ptr());

    a.close().await.unwrap();
    assert!(matches!(
        b.recv_typed::<u8>().await,
        Err(TransportError::ConnectionClosed)
    ));
}

#[test]
fn in_process_constructors_need_no_runtime() {
    let _ = ArcFrameTransport::create_pair("no-rt");
    let _ = ChannelFrameTransport::create_pair("no-rt", ChannelConfig::default());
}

// ---- Connection retry ---------------------------------------------------------------------

#[test]
fn retry_policy_delays() {
    let ms = Duration::from_millis;
    let fixed = RetryPolicy::Fixed { delay_ms: 100 };
    assert_eq!([fixed.delay(1), fixed.delay(5)], [ms(100), ms(100)]);
    let linear = RetryPolicy::Linear { base_delay_ms: 10 };
    assert_eq!(
        [linear.delay(0), linear.delay(1), linear.delay(3)],
        [ms(10), ms(10), ms(30)]
    );
    let exp = RetryPolicy::Exponential {
        base_delay_ms: 10,
        max_delay_ms: 1000,
    };
    let d: Vec<_> = (1..=9).map(|n| exp.delay(n)).collect();
    assert_eq!(
        d,
        [10, 20, 40, 80, 160, 320, 640, 1000, 1000].map(ms).to_vec()
    );
    assert_eq!(exp.delay(u32::MAX), ms(1000), "no overflow");
}

fn retry() -> RetryPolicy {
    RetryPolicy::Fixed { delay_ms: 25 }
}

#[tokio::test]
async fn tcp_connect_retries_until_listener_starts() {
    // Find a free port, then release it for the late listener.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let no_retry = TcpFrameTransport::connect(addr, TcpConfig::default()).await;
    assert!(matches!(no_retry, Err(TransportError::ConnectionFailed(_))));

    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let l = TcpFrameTransportListener::bind(addr, TcpConfig::default())
            .await
            .unwrap();
        let (t, _) = l.accept().await.unwrap();
        t.send_frame(b"late hello").await.unwrap();
    });
    let cfg = TcpConfig::default().with_retry(100, retry());
    let t = TcpFrameTransport::connect(addr, cfg).await.unwrap();
    assert_eq!(t.peer_addr(), addr);
    assert_eq!(t.recv_frame().await.unwrap(), &b"late hello"[..]);
    server.await.unwrap();
}

#[tokio::test]
async fn tcp_connect_takes_what_bind_takes() {
    let l = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let port = addr.port();
    let text = addr.to_string();
    let accept = tokio::spawn(async move {
        for _ in 0..5 {
            let (t, _) = l.accept().await.unwrap();
            t.send_frame(b"hi").await.unwrap();
        }
    });
    let c = TcpConfig::default();
    let transports = [
        TcpFrameTransport::connect(addr, c).await,
        TcpFrameTransport::connect(text.as_str(), c).await,
        TcpFrameTransport::connect(&text, c).await,
        TcpFrameTransport::connect(("127.0.0.1", port), c).await,
        // A host name, looked up on the blocking pool; each of its addresses tried in turn
        // (`localhost` may be ::1 first, where nothing listens).
        TcpFrameTransport::connect(("localhost", port), c).await,
    ];
    for t in transports {
        let t = t.unwrap();
        assert_eq!(t.peer_addr(), addr);
        assert_eq!(t.recv_frame().await.unwrap(), &b"hi"[..]);
    }
    accept.await.unwrap();

    let Err(TransportError::ConnectionFailed(e)) =
        TcpFrameTransport::connect("no-such-host.invalid:1", c).await
    else {
        panic!("a name that does not resolve connected");
    };
    assert!(
        e.starts_with("resolve no-such-host.invalid:1 failed"),
        "{e}"
    );
}

#[tokio::test]
async fn unix_connect_retries_until_listener_starts() {
    let path = unix_path("late");
    let no_retry = UnixFrameTransport::connect(&path, UnixConfig::default()).await;
    assert!(matches!(no_retry, Err(TransportError::ConnectionFailed(_))));
    let server = tokio::spawn({
        let path = path.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let l = UnixFrameTransportListener::bind(&path, UnixConfig::default())
                .await
                .unwrap();
            let (t, _) = l.accept().await.unwrap();
            t.send_frame(b"late hello").await.unwrap();
            l
        }
    });
    let cfg = UnixConfig::default().with_retry(100, retry());
    let t = UnixFrameTransport::connect(&path, cfg).await.unwrap();
    assert_eq!(t.recv_frame().await.unwrap(), &b"late hello"[..]);
    let listener = server.await.unwrap();
    drop(listener);
    assert!(!path.exists(), "the listener removes its socket file");
}

#[tokio::test]
async fn unix_bind_replaces_a_stale_socket_but_not_a_live_one() {
    let path = unix_path("stale");
    // A socket file nobody listens on (as a crashed server leaves it).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let live = UnixFrameTransportListener::bind(&path, UnixConfig::default())
        .await
        .unwrap();
    assert!(matches!(
        UnixFrameTransportListener::bind(&path, UnixConfig::default()).await,
        Err(TransportError::ConnectionFailed(_))
    ));
    drop(live);
}

#[tokio::test]
async fn stream_write_timeout_breaks_the_transport() {
    // The peer never reads: a large send fills the socket buffers and times out.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _raw = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    let cfg = TcpConfig {
        write_timeout: Some(Duration::from_millis(100)),
        ..TcpConfig::default()
    };
    let t = TcpFrameTransport::from_stream(s, cfg).unwrap();
    let big = vec![0u8; 8 << 20];
    assert!(matches!(
        t.send_frame(&big).await,
        Err(TransportError::Timeout)
    ));
    assert!(!t.is_connected());
    assert!(matches!(
        t.send_frame(b"x").await,
        Err(TransportError::NotConnected)
    ));
    let r: Result<(), TransportError> = t
        .send_frame_with(|b| {
            b.put_u32_le(0);
            Ok(())
        })
        .await;
    assert!(matches!(r, Err(TransportError::NotConnected)));
}

#[tokio::test]
async fn stream_read_timeout_keeps_the_transport_usable() {
    let cfg = TcpConfig {
        read_timeout: Some(Duration::from_millis(50)),
        ..TcpConfig::default()
    };
    let l = TcpFrameTransportListener::bind("127.0.0.1:0", cfg)
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpFrameTransport::connect(addr, cfg), l.accept());
    let (a, (b, _)) = (a.unwrap(), b.unwrap());
    assert!(matches!(b.recv_frame().await, Err(TransportError::Timeout)));
    assert!(b.is_connected(), "a read timeout loses nothing");
    a.send_frame(b"after the timeout").await.unwrap();
    assert_eq!(b.recv_frame().await.unwrap(), &b"after the timeout"[..]);
}

/// A read budget given while a read is under way applies to that read from its next step: the
/// server hands its budget over before the first read, but a late one must not be lost.
#[tokio::test]
async fn a_read_budget_given_during_a_read_is_taken_up() {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let t = Arc::new(
        UnixFrameTransport::from_stream(
            UnixStream::from_std(a).unwrap(),
            UnixConfig::default(),
            "r",
        )
        .unwrap(),
    );
    let reading = tokio::spawn({
        let t = t.clone();
        async move { t.recv_frame().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Another decoder holds the whole budget with a frame in progress.
    let budget = xrpc_proto::ReadBudget::new(1 << 20);
    let mut other = xrpc_proto::FrameDecoder::new(DEFAULT_MAX);
    other.set_budget(budget.clone());
    other.handle_bytes(&(2u32 << 20).to_le_bytes());
    other.handle_bytes(&vec![0u8; 1 << 20]);
    assert!(budget.held() >= 1 << 19);
    t.set_read_budget(budget.clone());
    // A 2 MiB frame arrives: past the uncharged room it must wait for the budget.
    let mut b = b;
    std::thread::spawn(move || {
        use std::io::Write;
        let _ = b.write_all(&(2u32 << 20).to_le_bytes());
        let _ = b.write_all(&vec![1u8; 2 << 20]);
        b
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !reading.is_finished(),
        "the read did not take the budget up"
    );
    reading.abort();
}

/// A connected shared-memory pair: (client, server). The server's rings are 64 KiB and its
/// maximum frame 1 MiB; the client's maximum frame is `client_max`.
async fn shm_pair_with_client_max(
    tag: &str,
    client_max: usize,
) -> (
    xrpc_tokio::SharedMemoryFrameTransport,
    xrpc_tokio::SharedMemoryFrameTransport,
) {
    use xrpc_tokio::{
        SharedMemoryConfig, SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
    };
    let name = xrpc_shm::testing::unique_name(tag);
    let server_cfg = SharedMemoryConfig {
        buffer_size: 64 * 1024,
        max_frame_size: 1 << 20,
        ..SharedMemoryConfig::default()
    };
    let client_cfg = SharedMemoryConfig {
        max_frame_size: client_max,
        ..SharedMemoryConfig::default()
    };
    let listener = SharedMemoryFrameTransportListener::bind(&name, server_cfg).unwrap();
    let (client, server) = tokio::join!(
        SharedMemoryFrameTransport::connect(&name, client_cfg),
        listener.accept()
    );
    (client.unwrap(), server.unwrap())
}

/// Over shared memory a frame above the client's maximum (the server's is larger) fails its
/// receive alone with `MessageTooLarge`: its bytes are skipped, not buffered, and the
/// connection goes on with the next frame (it was reported as corruption, and closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shm_a_frame_above_the_receivers_max_fails_alone() {
    let (client, server) = shm_pair_with_client_max("shm-too-large", 100 * 1024).await;
    let big = pattern(300 * 1024, 3);
    let sender = tokio::spawn(async move {
        server.send_frame(&big).await.unwrap();
        server.send_frame(b"after").await.unwrap();
        server
    });
    assert!(matches!(
        client.recv_frame().await,
        Err(TransportError::FrameSkipped(f)) if f.len == 300 * 1024 && f.max == 100 * 1024
    ));
    assert!(client.is_connected());
    assert_eq!(client.recv_frame().await.unwrap(), &b"after"[..]);
    drop(sender.await.unwrap());
}

/// Over shared memory a receive takes the frames already in the ring behind the first, up to
/// its maximum; a frame skipped among them (above the receiver's maximum) ends the batch and is
/// reported by the next receive, alone; the frame after it follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shm_a_batch_stops_at_a_skipped_frame_which_the_next_receive_reports() {
    let (client, server) = shm_pair_with_client_max("shm-batch-skip", 1024).await;
    let big = pattern(2048, 3);
    let sender = tokio::spawn(async move {
        server.send_frame(b"one").await.unwrap();
        server.send_frame(b"two").await.unwrap();
        server.send_frame(&big).await.unwrap();
        server.send_frame(b"after").await.unwrap();
        server
    });
    // Let all of them into the ring (the large one fits in it whole).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut got = Vec::new();
    let mut skipped = 0;
    while got.len() < 3 {
        match client.recv_frames_with(16, |f| got.push(f)).await {
            Ok(n) => assert!(n >= 1),
            Err(TransportError::FrameSkipped(f)) => {
                assert_eq!((f.len, f.max), (2048, 1024));
                assert_eq!(got.len(), 2, "reported after the frames before it");
                skipped += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(skipped, 1);
    assert_eq!(got, [&b"one"[..], &b"two"[..], &b"after"[..]]);
    assert!(client.is_connected());
    drop(sender.await.unwrap());
}
