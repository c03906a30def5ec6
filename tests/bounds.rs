//! The six defects of issue 14, end to end: a server on TCP, Unix and shared memory (the tokio
//! adapter, served by `serve_listener`) under each attack, with a hostile raw peer where a
//! well-behaved client could not mount it. The core rules behind them are tested without IO
//! in `xrpc-proto/tests/bounds.rs`; here each is seen from outside: what a handler managed to
//! queue, how many handlers are alive, what was refused, when a connection closes.

use std::future::Future;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use xrpc::proto::{ClientConfig, ErrorCode, Header, MessageEncoder, MessageKind, ServerConfig};
use xrpc::{
    BincodeCodec, Codec, CompressionConfig, FrameListener, FrameTransport, MessageChannelAdapter,
    RpcClient, RpcError, RpcServer, ServerStreamSender, SharedMemoryConfig,
    SharedMemoryFrameTransport, SharedMemoryFrameTransportListener, TcpConfig, TcpFrameTransport,
    TcpFrameTransportListener, TransportError, UnixConfig, UnixFrameTransport,
    UnixFrameTransportListener,
};
use xrpc_shm::testing::unique_name;

const MS: Duration = Duration::from_millis(1);

/// A transport to serve on and connect over.
trait Net: Send + Sync + 'static {
    type T: FrameTransport;
    type L: FrameListener<Transport = Self::T>;
    /// A listener, and what `connect` needs to reach it.
    fn bind() -> impl Future<Output = (Self::L, String)> + Send;
    fn connect(target: &str) -> impl Future<Output = Result<Self::T, TransportError>> + Send;
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
    async fn connect(target: &str) -> Result<Self::T, TransportError> {
        TcpFrameTransport::connect(target, TcpConfig::default()).await
    }
}

struct Unix;
impl Net for Unix {
    type T = UnixFrameTransport;
    type L = UnixFrameTransportListener;
    async fn bind() -> (Self::L, String) {
        let path = std::env::temp_dir().join(unique_name("bounds.sock"));
        let l = UnixFrameTransportListener::bind(&path, UnixConfig::default())
            .await
            .unwrap();
        (l, path.to_string_lossy().into_owned())
    }
    async fn connect(target: &str) -> Result<Self::T, TransportError> {
        UnixFrameTransport::connect(target, UnixConfig::default()).await
    }
}

struct Shm;
impl Net for Shm {
    type T = SharedMemoryFrameTransport;
    type L = SharedMemoryFrameTransportListener;
    async fn bind() -> (Self::L, String) {
        let name = unique_name("bounds");
        let l =
            SharedMemoryFrameTransportListener::bind(&name, SharedMemoryConfig::default()).unwrap();
        (l, name)
    }
    async fn connect(target: &str) -> Result<Self::T, TransportError> {
        SharedMemoryFrameTransport::connect(target, SharedMemoryConfig::default()).await
    }
}

/// Serves `server` on a fresh listener of `N` in a task.
async fn serve<N: Net>(
    server: &RpcServer,
) -> (String, tokio::task::JoinHandle<Result<(), RpcError>>) {
    let (l, target) = N::bind().await;
    let s = server.clone();
    (
        target,
        tokio::spawn(async move { s.serve_listener(l).await }),
    )
}

async fn client<N: Net>(target: &str) -> RpcClient<MessageChannelAdapter<N::T>> {
    let config = ClientConfig {
        default_timeout: Some(Duration::from_secs(10)),
        ..ClientConfig::default()
    };
    RpcClient::with_config(
        MessageChannelAdapter::new(N::connect(target).await.unwrap()),
        config,
    )
}

/// One message as a frame (no length prefix), the way a hostile peer writes it.
fn message(header: Header, method: &str, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    MessageEncoder::default()
        .encode(&header, method, payload, &mut out)
        .unwrap();
    out.split_off(4).freeze()
}

/// Waits until `f` holds (checking every 10 ms) or `limit` passes; returns whether it held.
async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(10 * MS).await;
    }
    f()
}

/// Whether the server closes the raw connection `t` within `limit`.
async fn closed_within<T: FrameTransport>(t: &T, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, t.recv_frame()).await,
        Ok(Err(_))
    )
}

const ITEM: usize = 64 * 1024;

/// Defect 1: a request with a window of `u32::MAX` from a client that reads nothing let a
/// handler queue items without end (2.4 GiB in 8 s), and it ran on after the client left.
/// Now its sends wait once the connection's queued output reaches its budget (8 MiB): what
/// it managed to produce is bounded by the budget plus what the transport itself buffers.
async fn a_stream_to_a_client_that_reads_nothing_is_bounded<N: Net>() {
    let server = RpcServer::new();
    let produced = Arc::new(AtomicUsize::new(0));
    let p = produced.clone();
    server.register_stream("produce", move |_: (), tx: ServerStreamSender<String>| {
        let p = p.clone();
        async move {
            // A string encodes with one copy (a `Vec<u8>` byte by byte): a fast producer.
            let item = "x".repeat(ITEM);
            loop {
                tx.send(&item).await?;
                p.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let (target, _serving) = serve::<N>(&server).await;
    let raw = N::connect(&target).await.unwrap();
    let request = Header {
        server_stream: true,
        window: Some(u32::MAX),
        ..Header::new(MessageKind::Request, 1).with_codec(BincodeCodec::ID)
    };
    raw.send_frame(&message(request, "produce", b""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // 8 MiB of budget, a 64 KiB batch being written, the socket buffers or the ring, and
    // slack: 48 MiB. Without the bounds it was gigabytes.
    let n = produced.load(Ordering::Relaxed);
    assert!(n > 0, "the stream never started");
    assert!(
        n * ITEM <= 48 << 20,
        "{n} items ({} MiB) produced for a client that reads nothing",
        (n * ITEM) >> 20
    );
    // The client leaves: the handler produces nothing more.
    raw.close().await.unwrap();
    drop(raw);
    tokio::time::sleep(500 * MS).await;
    let after_close = produced.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        produced.load(Ordering::Relaxed) - after_close <= 1,
        "the handler ran on after its client left"
    );
}

/// Counts the handlers alive (a guard in each handler's future).
struct Alive(Arc<AtomicUsize>);
impl Alive {
    fn new(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n.clone())
    }
}
impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A server whose "sleep" handler never finishes, counting the handlers alive.
fn sleeping_server(config: ServerConfig) -> (RpcServer, Arc<AtomicUsize>) {
    let server = RpcServer::with_config(BincodeCodec, config);
    let alive = Arc::new(AtomicUsize::new(0));
    let a = alive.clone();
    server.register_typed("sleep", move |_: ()| {
        let guard = Alive::new(&a);
        async move {
            let _guard = guard;
            std::future::pending::<Result<(), RpcError>>().await
        }
    });
    (server, alive)
}

/// Defect 2: every notification spawned a task that ignored its timeout (1.07 million live
/// tasks in 5 s). Now they count against the concurrency limit and are stopped at their
/// deadline, and when their connection ends. (Past the limit one is dropped and the connection
/// is not read until a handler ends: the rest wait in the transport and run after.)
async fn notifications_are_bounded_in_number_and_time<N: Net>() {
    let config = ServerConfig {
        max_concurrent_calls: 64,
        notification_timeout: 300 * MS,
        ..ServerConfig::default()
    };
    let (server, alive) = sleeping_server(config);
    let (target, _serving) = serve::<N>(&server).await;
    let c = client::<N>(&target).await;
    for _ in 0..100 {
        c.notify("sleep", &()).await.unwrap();
    }
    // (A notification is sent after `notify` returns: wait for the handlers to start.)
    let mut peak = 0;
    let mut sample = || {
        let n = alive.load(Ordering::SeqCst);
        peak = peak.max(n);
        n
    };
    assert!(
        eventually(Duration::from_secs(3), || sample() == 64).await,
        "the handlers never started"
    );
    assert!(
        eventually(Duration::from_secs(3), || sample() == 0).await,
        "{} notification handlers alive past their deadline",
        alive.load(Ordering::SeqCst)
    );
    assert!(peak <= 64, "{peak} notification handlers alive at once");

    // With the default deadline (30 s), the end of the connection stops them.
    let (server, alive) = sleeping_server(ServerConfig::default());
    let (target, _serving) = serve::<N>(&server).await;
    let c = client::<N>(&target).await;
    for _ in 0..10 {
        c.notify("sleep", &()).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(3), || alive.load(Ordering::SeqCst)
            == 10)
        .await
    );
    // (Shared memory tells the peer when the transport is dropped, not at `close`.)
    c.close().await;
    drop(c);
    assert!(
        eventually(Duration::from_secs(3), || alive.load(Ordering::SeqCst) == 0).await,
        "{} notification handlers outlived their connection",
        alive.load(Ordering::SeqCst)
    );
}

/// Defect 3: 534 B of Zstd inflated to 16 MiB each and a handler that kept its payloads held
/// them all (+592 MiB for 21 KiB sent). Now decompressed bytes held count against a
/// per-connection budget, and a server can refuse compressed input.
async fn compressed_input_is_bounded_or_refused<N: Net>() {
    const BUDGET: usize = 8 << 20;
    const PAYLOAD: usize = 1 << 20;
    let config = ServerConfig {
        decompression_budget: BUDGET,
        ..ServerConfig::default()
    };
    let server = RpcServer::with_config(BincodeCodec, config);
    let kept = Arc::new(std::sync::Mutex::new(Vec::<Bytes>::new()));
    let k = kept.clone();
    server.register("keep", move |payload: Bytes| {
        k.lock().unwrap().push(payload);
        async { Ok(Bytes::new()) }
    });
    let (target, _serving) = serve::<N>(&server).await;
    let zstd = |t| MessageChannelAdapter::with_compression(t, CompressionConfig::zstd(3));
    let c = RpcClient::new(zstd(N::connect(&target).await.unwrap()));
    let bomb = Bytes::from(vec![0u8; PAYLOAD]);
    let mut refused = 0;
    for _ in 0..20 {
        match c.call_raw("keep", bomb.clone()).await {
            Ok(_) => {}
            Err(RpcError::ServerError {
                code: ErrorCode::ResourceExhausted,
                ..
            }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let held: usize = kept.lock().unwrap().iter().map(Bytes::len).sum();
    assert!(
        held <= BUDGET,
        "{} MiB of inflated payloads held",
        held >> 20
    );
    assert_eq!(refused, 20 - held / PAYLOAD);
    // Payloads released free the budget.
    kept.lock().unwrap().clear();
    c.call_raw("keep", bomb.clone()).await.unwrap();

    // Refused outright: answered, never inflated.
    let config = ServerConfig {
        accept_compressed: false,
        ..ServerConfig::default()
    };
    let server = RpcServer::with_config(BincodeCodec, config);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    server.register("keep", move |_: Bytes| {
        r.store(true, Ordering::SeqCst);
        async { Ok(Bytes::new()) }
    });
    let (target, _serving) = serve::<N>(&server).await;
    let c = RpcClient::new(zstd(N::connect(&target).await.unwrap()));
    match c.call_raw("keep", bomb).await {
        Err(RpcError::ServerError { code, message }) => {
            assert_eq!(code, ErrorCode::Unsupported);
            assert_eq!(message, "compressed input is not accepted");
        }
        other => panic!("{other:?}"),
    }
    assert!(!ran.load(Ordering::SeqCst));
}

/// Defect 4: connections that sent nothing, or part of a frame, were held forever, and any
/// number of them. Now an idle connection is closed after `idle_timeout`, and a listener
/// serves `max_connections` at most: one more takes the place of the oldest idle connection
/// (issue 24: refusing it let one peer lock everyone out), or is closed at once when every
/// connection has a call in progress.
async fn idle_and_surplus_connections_are_closed<N: Net>() {
    let config = ServerConfig {
        idle_timeout: Some(300 * MS),
        max_connections: 2,
        ..ServerConfig::default()
    };
    let (server, alive) = sleeping_server(config);
    let (target, _serving) = serve::<N>(&server).await;
    let a = N::connect(&target).await.unwrap();
    let b = N::connect(&target).await.unwrap();
    tokio::time::sleep(50 * MS).await;
    let t = Instant::now();
    let surplus = N::connect(&target).await.unwrap();
    assert!(
        closed_within(&a, 200 * MS).await,
        "the oldest idle connection was not reclaimed"
    );
    assert!(
        closed_within(&b, Duration::from_secs(3)).await,
        "idle, not closed"
    );
    assert!(t.elapsed() >= 100 * MS, "closed before its idle deadline");
    assert!(closed_within(&surplus, Duration::from_secs(3)).await);
    // Two connections with calls in progress: a third is closed at once.
    let c1 = client::<N>(&target).await;
    let c2 = client::<N>(&target).await;
    let busy: Vec<_> = [c1, c2]
        .into_iter()
        .map(|c| tokio::spawn(async move { c.call::<(), ()>("sleep", &()).await }))
        .collect();
    assert!(eventually(Duration::from_secs(3), || alive.load(Ordering::SeqCst) == 2).await);
    tokio::time::sleep(50 * MS).await;
    let third = N::connect(&target).await;
    if let Ok(c) = third {
        assert!(
            closed_within(&c, 200 * MS).await,
            "a third connection was served while both were busy"
        );
    }
    drop(busy);
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// Defect 4 (byte streams): 200 connections that sent 10 bytes of a frame were all still open
/// after 15 s. Now a frame must be whole within `frame_timeout` of its first bytes — even on a
/// connection with a call in progress (which is not idle). Shared memory delivers whole frames
/// (a frame larger than the ring comes in pieces the ring itself bounds), so it has no case.
async fn partial_frame_body(mut raw: Box<dyn ReadWrite>) {
    // A call in progress: the connection is not idle.
    let request = Header::new(MessageKind::Request, 1).with_codec(BincodeCodec::ID);
    let frame = message(request, "sleep", b"");
    let mut bytes = (frame.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&frame);
    // Then 10 bytes of a 16 MiB frame.
    bytes.extend_from_slice(&(16u32 << 20).to_le_bytes());
    bytes.extend_from_slice(b"XR\x01\x01\x00\x01");
    raw.write_all(&bytes).unwrap();
    let t = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 4096];
        loop {
            match raw.read(&mut buf) {
                Ok(0) => return true,
                // The read timeout: still open.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false;
                }
                Err(_) => return true,
                Ok(_) if t.elapsed() > Duration::from_secs(5) => return false,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(closed, "a partial frame held the connection for 5 s");
    let waited = t.elapsed();
    assert!(
        waited >= 250 * MS,
        "closed after {waited:?}, before the deadline"
    );
}

fn partial_frame_server() -> RpcServer {
    let config = ServerConfig {
        frame_timeout: Some(300 * MS),
        ..ServerConfig::default()
    };
    sleeping_server(config).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_a_partial_frame_is_closed_in_time() {
    let server = partial_frame_server();
    let (target, _serving) = serve::<Tcp>(&server).await;
    let raw = std::net::TcpStream::connect(&target).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    partial_frame_body(Box::new(raw)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_a_partial_frame_is_closed_in_time() {
    let server = partial_frame_server();
    let (target, _serving) = serve::<Unix>(&server).await;
    let raw = std::os::unix::net::UnixStream::connect(&target).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    partial_frame_body(Box::new(raw)).await;
}

/// Defect 4 over shared memory: a frame larger than the ring comes in pieces, which the
/// server copies out as they come; a peer that stops mid-frame is closed at `frame_timeout`
/// like one on a socket (the transport reports the bytes it holds to the session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shm_a_partial_frame_is_closed_in_time() {
    let server = partial_frame_server();
    let (target, _serving) = serve::<Shm>(&server).await;
    let closed = tokio::task::spawn_blocking(move || {
        let mut raw =
            xrpc_shm::ShmConnection::connect(&target, xrpc_shm::ShmConfig::default()).unwrap();
        // Part of a 12 MiB frame (the ring holds 4 MiB), then nothing.
        let frame = vec![0u8; 12 << 20];
        let mut sent = 0;
        let t = Instant::now();
        while sent < 6 << 20 && t.elapsed() < Duration::from_secs(2) {
            let _ = raw.sender().try_send_from(&frame, &mut sent);
        }
        assert!(sent > 0 && sent < frame.len(), "sent {sent} bytes");
        let t = Instant::now();
        let res = raw.recv_bytes(Some(Duration::from_secs(5)));
        (res, t.elapsed())
    })
    .await
    .unwrap();
    match closed {
        (Err(e), waited) => {
            assert!(
                !matches!(e, xrpc_shm::ShmError::Timeout),
                "a partial frame held the connection for 5 s"
            );
            assert!(
                waited >= 200 * MS,
                "closed after {waited:?}, before the deadline"
            );
        }
        (Ok(f), _) => panic!("the server sent a frame of {} bytes", f.len()),
    }
}

/// Defect 4 (server-wide): 50 connections that stopped one byte short of a 16 MiB frame held
/// 804 MiB. Now read buffers past 128 KiB each take room from one budget for the whole server
/// (`max_read_buffers_total`): a connection that finds none waits, unread, and reads again
/// once another connection's frame is whole (`finish`) or that connection ends.
async fn a_large_frame_waits_for_read_room_held_by_another<N: Net>(
    raw: fn(&str) -> Box<dyn ReadWrite>,
    finish: bool,
) {
    let config = ServerConfig {
        max_read_buffers_total: 2 << 20,
        ..ServerConfig::default()
    };
    let server = RpcServer::with_config(BincodeCodec, config);
    server.register_typed(
        "len",
        |v: Vec<u8>| async move { Ok::<_, RpcError>(v.len()) },
    );
    let (target, _serving) = serve::<N>(&server).await;
    // The other connection: all but the last byte of a 1.9 MiB request, which the budget
    // has room for — and then not much more.
    let big = xrpc::Codec::encode(&BincodeCodec, &vec![7u8; 1900 << 10]).unwrap();
    let request = Header::new(MessageKind::Request, 1).with_codec(BincodeCodec::ID);
    let frame = message(request, "len", &big);
    let mut bytes = (frame.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&frame);
    let mut other = raw(&target);
    let (head, last) = bytes.split_at(bytes.len() - 1);
    let last = last.to_vec();
    other = tokio::task::spawn_blocking({
        let head = head.to_vec();
        move || {
            other.write_all(&head).unwrap();
            other
        }
    })
    .await
    .unwrap();
    // A well-behaved client's 1 MiB call needs room the budget no longer has: it waits.
    let c = client::<N>(&target).await;
    let payload = vec![1u8; 1 << 20];
    let call = tokio::spawn(async move { c.call::<_, usize>("len", &payload).await });
    tokio::time::sleep(500 * MS).await;
    assert!(!call.is_finished(), "the call did not wait for read room");
    // The other frame ends (its room goes back), or its connection does.
    let t = Instant::now();
    if finish {
        other.write_all(&last).unwrap();
    } else {
        drop(other);
    }
    let answer = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the waiting connection reads again")
        .unwrap();
    assert_eq!(answer.unwrap(), 1 << 20);
    println!("read room came back after {:?}", t.elapsed());
}

fn raw_tcp(target: &str) -> Box<dyn ReadWrite> {
    Box::new(std::net::TcpStream::connect(target).unwrap())
}

fn raw_unix(target: &str) -> Box<dyn ReadWrite> {
    Box::new(std::os::unix::net::UnixStream::connect(target).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_read_room_comes_back_when_a_frame_ends() {
    a_large_frame_waits_for_read_room_held_by_another::<Tcp>(raw_tcp, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_read_room_comes_back_when_a_connection_ends() {
    a_large_frame_waits_for_read_room_held_by_another::<Tcp>(raw_tcp, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_read_room_comes_back_when_a_frame_ends() {
    a_large_frame_waits_for_read_room_held_by_another::<Unix>(raw_unix, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_read_room_comes_back_when_a_connection_ends() {
    a_large_frame_waits_for_read_room_held_by_another::<Unix>(raw_unix, false).await;
}

/// Defect 5: graceful shutdown never ended while a server-stream or bidi call was open, and
/// handlers got no signal. Now the drain deadline cancels them (their clients are answered
/// `ShuttingDown`), and a handler's context says so.
async fn shutdown_ends_at_the_drain_deadline_with_streams_open<N: Net>() {
    let config = ServerConfig {
        drain_timeout: 300 * MS,
        ..ServerConfig::default()
    };
    let server = RpcServer::with_config(BincodeCodec, config);
    server.register_stream("idle_stream", |_: (), _tx: ServerStreamSender<u32>| {
        std::future::pending::<Result<(), RpcError>>()
    });
    server.register_bidi(
        "idle_bidi",
        |_rx: xrpc::RequestStream<u32>, _tx: ServerStreamSender<u32>| {
            std::future::pending::<Result<(), RpcError>>()
        },
    );
    let seen = Arc::new(AtomicBool::new(false));
    let s = seen.clone();
    server.register_typed_with_context("watch", move |ctx: xrpc::CallContext, _: ()| {
        // Work the handler started elsewhere learns of the cancellation from its context.
        let s = s.clone();
        let cancelled = ctx.cancelled();
        tokio::spawn(async move {
            cancelled.await;
            s.store(true, Ordering::SeqCst);
        });
        std::future::pending::<Result<(), RpcError>>()
    });
    let (target, serving) = serve::<N>(&server).await;
    let c = client::<N>(&target).await;
    let mut stream = c
        .call_server_stream::<(), u32>("idle_stream", &())
        .await
        .unwrap();
    let (_tx, mut rx) = c.call_bidi::<u32, u32>("idle_bidi").await.unwrap();
    let c2 = c.clone();
    let watch = tokio::spawn(async move { c2.call::<(), ()>("watch", &()).await });
    tokio::time::sleep(100 * MS).await;
    assert!(!seen.load(Ordering::SeqCst));
    let t = Instant::now();
    server.shutdown();
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("shutdown ended within its drain deadline")
        .unwrap()
        .unwrap();
    assert!(
        t.elapsed() >= 250 * MS,
        "the drain deadline was not waited for"
    );
    let shutting_down = |r: Option<Result<u32, RpcError>>| matches!(r, Some(Err(RpcError::ServerError { code, .. })) if code == ErrorCode::ShuttingDown);
    let r = stream.recv().await;
    assert!(shutting_down(r), "server stream");
    let r = rx.recv().await;
    assert!(shutting_down(r), "bidi");
    assert!(
        matches!(watch.await.unwrap(), Err(RpcError::ServerError { code, .. }) if code == ErrorCode::ShuttingDown)
    );
    assert!(
        eventually(Duration::from_secs(1), || seen.load(Ordering::SeqCst)).await,
        "the handler's context never said it was cancelled"
    );
}

/// Defect 6: a connection opened during a shutdown was accepted by the kernel and never
/// served. Now the listener closes when the shutdown starts: a connect is refused at once (or,
/// if it raced the close, its connection ends at once).
async fn a_connection_made_during_shutdown_is_refused_at_once<N: Net>() {
    let config = ServerConfig {
        drain_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    };
    let (server, alive) = sleeping_server(config);
    let (target, serving) = serve::<N>(&server).await;
    let c = client::<N>(&target).await;
    let c2 = c.clone();
    let _busy = tokio::spawn(async move { c2.call::<(), ()>("sleep", &()).await });
    assert!(eventually(Duration::from_secs(3), || alive.load(Ordering::SeqCst) == 1).await);
    server.shutdown();
    tokio::time::sleep(100 * MS).await;
    assert!(
        !serving.is_finished(),
        "the busy call keeps the shutdown going"
    );
    let t = Instant::now();
    let late = tokio::time::timeout(Duration::from_secs(2), async {
        let raw = N::connect(&target).await?;
        match raw.recv_frame().await {
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await;
    match late {
        Ok(Err(_)) => {}
        Ok(Ok(())) => panic!("a connection made during shutdown got a frame"),
        Err(_) => panic!("a connection made during shutdown hung for 2 s"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "refused after {:?}",
        t.elapsed()
    );
    server.shutdown();
}

/// Instantiates each body for every transport.
macro_rules! on_every_transport {
    ($($body:ident),* $(,)?) => {
        mod tcp {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    super::$body::<super::Tcp>().await;
                }
            )*
        }
        mod unix {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    super::$body::<super::Unix>().await;
                }
            )*
        }
        mod shm {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    super::$body::<super::Shm>().await;
                }
            )*
        }
    };
}

on_every_transport!(
    a_stream_to_a_client_that_reads_nothing_is_bounded,
    notifications_are_bounded_in_number_and_time,
    compressed_input_is_bounded_or_refused,
    idle_and_surplus_connections_are_closed,
    shutdown_ends_at_the_drain_deadline_with_streams_open,
    a_connection_made_during_shutdown_is_refused_at_once,
);
