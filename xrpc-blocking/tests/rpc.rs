//! The blocking client against the blocking server, over TCP, Unix sockets and shared memory:
//! one body per behaviour, instantiated for each transport by `suite!`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use xrpc_blocking::{
    BincodeCodec, CallContext, CallOptions, FrameListener, Metadata, RequestStream, RpcClient,
    RpcError, RpcServer, ServerConfig, ServerStreamSender, SharedMemoryConfig,
    SharedMemoryFrameTransport, SharedMemoryFrameTransportListener, TcpConfig, TcpFrameTransport,
    TcpFrameTransportListener, UnixConfig, UnixFrameTransport, UnixFrameTransportListener,
};
use xrpc_shm::testing::{Peer, peer_role, unique_name};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tcp,
    Unix,
    Shm,
}

/// Where a server listens, as text (`tcp:<addr>`, `unix:<path>`, `shm:<service>`), so that a
/// peer process can print it.
#[derive(Debug, Clone)]
struct Addr(String);

static NOTES: AtomicU64 = AtomicU64::new(0);
/// Sum of the tags of the `endless` streams whose handler saw its call end.
static ENDLESS_ENDED: AtomicU64 = AtomicU64::new(0);
/// Sum of the tags of the `until_cancelled` calls whose handler saw its call stopped.
static CANCELLED_SEEN: AtomicU64 = AtomicU64::new(0);

/// The test service.
fn service() -> RpcServer {
    let server = RpcServer::new();
    server.register_typed("add", |(a, b): (i64, i64)| Ok(a + b));
    server.register_typed("echo", |x: (u64, u64)| Ok(x));
    server.register_typed("fail", |msg: String| -> Result<(), RpcError> {
        Err(RpcError::server(msg))
    });
    server.register_typed("sleep", |ms: u64| {
        thread::sleep(Duration::from_millis(ms));
        Ok(())
    });
    server.register_typed("notes", |(): ()| Ok(NOTES.load(Ordering::SeqCst)));
    server.register_typed("note", |n: u64| {
        NOTES.fetch_add(n, Ordering::SeqCst);
        Ok(())
    });
    server.register_stream("count", |n: u32, items: ServerStreamSender<u32>| {
        for i in 0..n {
            items.send(&i)?;
        }
        Ok(())
    });
    server.register_stream("endless", |tag: u64, items: ServerStreamSender<u64>| {
        // Runs until the client is gone; records how it ended.
        let end = (0u64..).try_for_each(|i| items.send(&i));
        ENDLESS_ENDED.fetch_add(tag * u64::from(end.is_err()), Ordering::SeqCst);
        end
    });
    server.register("raw", |b| {
        Ok(b.iter().rev().copied().collect::<Vec<u8>>().into())
    });
    server.register_client_stream("sum", |items: RequestStream<u64>| {
        items.sum::<Result<u64, RpcError>>()
    });
    server.register_bidi(
        "double",
        |items: RequestStream<i64>, out: ServerStreamSender<i64>| {
            items.into_iter().try_for_each(|v| out.send(&(v? * 2)))
        },
    );
    server.register_typed_with_context("deadline_ms", |ctx: CallContext, (): ()| {
        Ok(ctx
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()).as_millis() as u64))
    });
    server.register_typed_with_context("until_cancelled", |ctx: CallContext, tag: u64| {
        // Runs until its call is stopped (here: the client's timeout), then records it.
        let t0 = Instant::now();
        while !ctx.is_cancelled() && t0.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(2));
        }
        CANCELLED_SEEN.fetch_add(tag * u64::from(ctx.is_cancelled()), Ordering::SeqCst);
        Ok(())
    });
    // Each answers what its context says (see `seen`).
    server.register_typed_with_context("ctx.unary", |ctx: CallContext, (): ()| Ok(seen(&ctx)));
    server.register_typed_with_context("ctx.note", |ctx: CallContext, (): ()| {
        NOTE_SEEN.lock().unwrap().push(seen(&ctx));
        Ok(())
    });
    server.register_stream_with_context(
        "ctx.server",
        |ctx: CallContext, (): (), out: ServerStreamSender<String>| out.send(&seen(&ctx)),
    );
    server.register_client_stream_with_context(
        "ctx.client",
        |ctx: CallContext, items: RequestStream<u32>| {
            items.for_each(drop);
            Ok(seen(&ctx))
        },
    );
    server.register_bidi_with_context(
        "ctx.bidi",
        |ctx: CallContext, items: RequestStream<u32>, out: ServerStreamSender<String>| {
            items.for_each(drop);
            out.send(&seen(&ctx))
        },
    );
    server.register_stream_with_context(
        "ticks",
        |ctx: CallContext, (): (), out: ServerStreamSender<u64>| {
            // Endless, until the server shuts down.
            let mut i = 0;
            while !ctx.is_shutting_down() {
                out.send(&i)?;
                i += 1;
                thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        },
    );
    server
}

/// What the handlers of `ctx.note` notifications saw (the tests of each transport share it).
static NOTE_SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// What a handler's context says: the method, the metadata key `tenant`, whether the peer is
/// named (an address over TCP, the socket path or service name otherwise).
fn seen(ctx: &CallContext) -> String {
    let peer = ctx.peer();
    format!(
        "{} tenant={} addr={} path={}",
        ctx.method(),
        ctx.metadata().get_str("tenant").unwrap_or("-"),
        peer.addr.is_some(),
        peer.path.is_some(),
    )
}

/// Binds a listener of `kind` and serves `server` on it from a thread.
fn spawn_server(kind: Kind, server: &RpcServer) -> (Addr, JoinHandle<()>) {
    fn run<L: FrameListener>(server: &RpcServer, l: L) -> JoinHandle<()> {
        let server = server.clone();
        thread::spawn(move || server.serve_listener(l).expect("serve"))
    }
    match kind {
        Kind::Tcp => {
            let l = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default()).unwrap();
            let addr = format!("tcp:{}", l.local_addr().unwrap());
            (Addr(addr), run(server, l))
        }
        Kind::Unix => {
            let path = std::env::temp_dir().join(unique_name("blocking.sock"));
            let l = UnixFrameTransportListener::bind(&path, UnixConfig::default()).unwrap();
            (Addr(format!("unix:{}", path.display())), run(server, l))
        }
        Kind::Shm => {
            let name = unique_name("blocking");
            let l = SharedMemoryFrameTransportListener::bind(&name, SharedMemoryConfig::default())
                .unwrap();
            (Addr(format!("shm:{name}")), run(server, l))
        }
    }
}

fn connect(addr: &Addr) -> RpcClient {
    let (kind, at) = addr.0.split_once(':').unwrap();
    match kind {
        "tcp" => RpcClient::new(TcpFrameTransport::connect(at, TcpConfig::default()).unwrap()),
        "unix" => RpcClient::new(
            UnixFrameTransport::connect(PathBuf::from(at), UnixConfig::default()).unwrap(),
        ),
        _ => RpcClient::new(SharedMemoryFrameTransport::connect_client(at).unwrap()),
    }
}

/// A server of `kind` in this process, and a client connected to it.
struct Pair {
    server: RpcServer,
    thread: Option<JoinHandle<()>>,
    client: RpcClient,
}

impl Pair {
    fn new(kind: Kind) -> Self {
        let server = service();
        let (addr, thread) = spawn_server(kind, &server);
        Self {
            client: connect(&addr),
            server,
            thread: Some(thread),
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.client.close();
        self.server.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn unary(kind: Kind) {
    let p = Pair::new(kind);
    let sum: i64 = p.client.call("add", &(1i64, 2i64)).unwrap();
    assert_eq!(sum, 3);
    let raw = p.client.call_raw("raw", vec![1u8, 2, 3].into()).unwrap();
    assert_eq!(&raw[..], &[3, 2, 1]);
    // A notification arrives (it has no answer: poll until the server counted it).
    let before: u64 = p.client.call("notes", &()).unwrap();
    p.client.notify("note", &1u64).unwrap();
    let t0 = Instant::now();
    while p.client.call::<_, u64>("notes", &()).unwrap() <= before {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the notification never arrived"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// A client that makes no call after its first still notices on its own when the server
/// closes the connection (here, as idle). Over shared memory the connection's read, which
/// nobody awaits after the call, puts its sleep off in case the client calls again at once
/// (see `Reactor::resumes_a_resting_yield_late`): it must still go to sleep on the ring and
/// wake at the close.
fn idle_client_sees_the_close(kind: Kind) {
    let config = ServerConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..ServerConfig::default()
    };
    let server = RpcServer::with_config(BincodeCodec, config);
    server.register_typed("add", |(a, b): (i64, i64)| Ok(a + b));
    let (addr, serving) = spawn_server(kind, &server);
    let client = connect(&addr);
    assert_eq!(client.call::<_, i64>("add", &(1i64, 2i64)).unwrap(), 3);
    let t0 = Instant::now();
    while client.is_connected() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the client never noticed that its idle connection was closed"
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "closed early: {:?}",
        t0.elapsed()
    );
    server.shutdown();
    let _ = serving.join();
}

fn server_stream(kind: Kind) {
    let p = Pair::new(kind);
    let items = p
        .client
        .call_server_stream::<_, u32>("count", &10_000u32)
        .unwrap();
    let mut next = 0u32;
    for item in items {
        assert_eq!(item.unwrap(), next);
        next += 1;
    }
    assert_eq!(next, 10_000);
    // The connection is still good after the stream.
    assert_eq!(p.client.call::<_, i64>("add", &(2i64, 2i64)).unwrap(), 4);
}

fn dropped_stream(kind: Kind, tag: u64) {
    let p = Pair::new(kind);
    let mut items = p
        .client
        .call_server_stream::<_, u64>("endless", &tag)
        .unwrap();
    for i in 0..100 {
        assert_eq!(items.next().unwrap().unwrap(), i);
    }
    drop(items);
    // The server's handler learns that its call was cancelled, and stops.
    let t0 = Instant::now();
    while ENDLESS_ENDED.load(Ordering::SeqCst) & tag == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the handler never stopped"
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(p.client.call::<_, i64>("add", &(3i64, 4i64)).unwrap(), 7);
}

fn client_stream_and_bidi(kind: Kind) {
    let p = Pair::new(kind);
    // More items than the credit window, both ways.
    let (items, response) = p.client.call_client_stream::<u64, u64>("sum").unwrap();
    (1..=1000u64).try_for_each(|i| items.send(&i)).unwrap();
    items.finish().unwrap();
    assert_eq!(response.wait().unwrap(), 500_500);
    let (out, back) = p.client.call_bidi::<i64, i64>("double").unwrap();
    let sender = thread::spawn(move || {
        (0..1000i64).try_for_each(|i| out.send(&i))?;
        out.finish()
    });
    let doubled: Vec<i64> = back.collect::<Result<_, _>>().unwrap();
    sender.join().unwrap().unwrap();
    assert_eq!(doubled, (0..1000).map(|i| 2 * i).collect::<Vec<_>>());
}

fn call_context(kind: Kind, tag: u64) {
    let p = Pair::new(kind);
    // The handler sees the call's deadline.
    let left: Option<u64> = p
        .client
        .call_with_timeout("deadline_ms", &(), Duration::from_millis(800))
        .unwrap();
    let left = left.expect("the handler sees the deadline");
    assert!(left > 400 && left <= 800, "{left} ms left");
    // And learns when its call is stopped: the client gave up at its timeout.
    let r =
        p.client
            .call_with_timeout::<_, ()>("until_cancelled", &tag, Duration::from_millis(100));
    assert!(matches!(r, Err(RpcError::Timeout)), "{r:?}");
    let t0 = Instant::now();
    while CANCELLED_SEEN.load(Ordering::SeqCst) & tag == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the handler never saw its call stopped"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn timeout(kind: Kind) {
    let p = Pair::new(kind);
    let t0 = Instant::now();
    let r = p
        .client
        .call_with_timeout::<_, ()>("sleep", &400u64, Duration::from_millis(50));
    assert!(matches!(r, Err(RpcError::Timeout)), "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(p.client.call::<_, i64>("add", &(5i64, 5i64)).unwrap(), 10);
}

fn remote_error(kind: Kind) {
    let p = Pair::new(kind);
    let r = p.client.call::<_, ()>("fail", "no such luck");
    assert!(
        matches!(&r, Err(RpcError::ServerError { message, .. }) if message == "no such luck"),
        "{r:?}"
    );
    let r = p.client.call::<_, ()>("nope", &());
    assert!(
        matches!(&r, Err(RpcError::MethodNotFound(m)) if m == "nope"),
        "{r:?}"
    );
}

fn many_threads(kind: Kind) {
    let p = Pair::new(kind);
    let workers: Vec<_> = (0..8u64)
        .map(|t| {
            let c = p.client.clone();
            thread::spawn(move || {
                for i in 0..300u64 {
                    let back: (u64, u64) = c.call("echo", &(t, i)).unwrap();
                    assert_eq!(back, (t, i));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(p.client.pending_calls(), 0);
}

fn closed_mid_call(kind: Kind) {
    let p = Pair::new(kind);
    let c = p.client.clone();
    let call = thread::spawn(move || c.call::<_, ()>("sleep", &2_000u64));
    thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    p.client.close();
    let r = call.join().unwrap();
    assert!(matches!(r, Err(RpcError::Disconnected(_))), "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
}

/// Plays the server of a `killed` test in a peer process: serves until killed.
fn serve_as_peer(kind: &str) {
    let kind = match kind {
        "Tcp" => Kind::Tcp,
        "Unix" => Kind::Unix,
        _ => Kind::Shm,
    };
    let server = service();
    let (addr, thread) = spawn_server(kind, &server);
    println!("ready {}", addr.0);
    let _ = thread.join();
}

fn killed(kind: Kind, test: &str) {
    let mut peer = Peer::spawn(test, "server", &format!("{kind:?}"));
    let line = peer.wait_for_line("ready ");
    // The harness may print the test's name on the same line first.
    let at = line.find("ready ").unwrap() + "ready ".len();
    let addr = Addr(line[at..].to_string());
    let client = connect(&addr);
    assert_eq!(client.call::<_, i64>("add", &(1i64, 1i64)).unwrap(), 2);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let c = client.clone();
            thread::spawn(move || c.call::<_, ()>("sleep", &10_000u64))
        })
        .collect();
    thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    peer.kill();
    for c in calls {
        let r = c.join().unwrap();
        assert!(matches!(r, Err(RpcError::Disconnected(_))), "{r:?}");
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let r = client.call::<_, i64>("add", &(1i64, 1i64));
    assert!(matches!(r, Err(RpcError::Disconnected(_))), "{r:?}");
}

/// Every kind of synchronous handler reads the call's metadata and its peer from its context.
fn metadata_everywhere(kind: Kind) {
    let p = Pair::new(kind);
    let mut md = Metadata::new();
    md.insert("tenant", "acme").unwrap();
    let opts = || CallOptions::default().with_metadata(md.clone());
    let (addr, path) = match kind {
        Kind::Tcp => (true, false),
        Kind::Unix | Kind::Shm => (false, true),
    };
    let expect = |method: &str| format!("{method} tenant=acme addr={addr} path={path}");

    let unary: String = p
        .client
        .call_with_options("ctx.unary", &(), opts())
        .unwrap();
    assert_eq!(unary, expect("ctx.unary"));
    let items: Vec<String> = p
        .client
        .call_server_stream_with_options("ctx.server", &(), opts())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(items, vec![expect("ctx.server")]);
    let (tx, response) = p
        .client
        .call_client_stream_with_options::<u32, String>("ctx.client", opts())
        .unwrap();
    tx.send(&1).unwrap();
    tx.finish().unwrap();
    assert_eq!(response.wait().unwrap(), expect("ctx.client"));
    let (tx, rx) = p
        .client
        .call_bidi_with_options::<u32, String>("ctx.bidi", opts())
        .unwrap();
    tx.send(&1).unwrap();
    tx.finish().unwrap();
    assert_eq!(
        rx.collect::<Result<Vec<_>, _>>().unwrap(),
        vec![expect("ctx.bidi")]
    );
    p.client
        .notify_with_options("ctx.note", &(), opts())
        .unwrap();
    let t0 = Instant::now();
    while !NOTE_SEEN.lock().unwrap().contains(&expect("ctx.note")) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the notification never ran"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// An endless stream handler that watches its context ends at the server's shutdown: the
/// server stops well before its 10 s drain timeout.
fn stream_ends_at_shutdown(kind: Kind) {
    let mut p = Pair::new(kind);
    let mut ticks = p.client.call_server_stream::<_, u64>("ticks", &()).unwrap();
    assert_eq!(ticks.next().unwrap().unwrap(), 0);
    let reader = thread::spawn(move || ticks.count());
    let t0 = Instant::now();
    p.server.shutdown();
    p.thread.take().unwrap().join().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    reader.join().unwrap();
}

/// Notifications the server cannot deliver are counted in its stats.
fn undelivered_notifications(kind: Kind) {
    let p = Pair::new(kind);
    p.client.notify("no.such.method", &()).unwrap();
    p.client.notify("count", &3u32).unwrap(); // a stream
    p.client.notify("add", &"not a pair").unwrap(); // cannot be decoded
    let t0 = Instant::now();
    while p.server.stats().notifications.total() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{:?}",
            p.server.stats()
        );
        thread::sleep(Duration::from_millis(1));
    }
    let n = p.server.stats().notifications;
    assert_eq!(
        (n.unknown_method, n.wrong_kind, n.undecodable),
        (1, 1, 1),
        "{n:?}"
    );
}

macro_rules! suite {
    ($($module:ident: $kind:ident, $tag:literal);*) => {$(
        mod $module {
            use super::*;
            #[test] fn every_handler_kind_reads_metadata_and_peer() { metadata_everywhere(Kind::$kind) }
            #[test] fn a_stream_handler_ends_at_shutdown() { stream_ends_at_shutdown(Kind::$kind) }
            #[test] fn undelivered_notifications_are_counted() { undelivered_notifications(Kind::$kind) }
            #[test] fn unary_call() { unary(Kind::$kind) }
            #[test] fn an_idle_client_sees_the_server_close() { idle_client_sees_the_close(Kind::$kind) }
            #[test] fn server_stream_of_10_000_items() { server_stream(Kind::$kind) }
            #[test] fn a_call_times_out() { timeout(Kind::$kind) }
            #[test] fn dropping_a_stream_stops_its_handler() { dropped_stream(Kind::$kind, $tag) }
            #[test] fn a_remote_error() { remote_error(Kind::$kind) }
            #[test] fn client_and_bidirectional_streams() { client_stream_and_bidi(Kind::$kind) }
            #[test] fn a_handler_sees_its_deadline_and_cancellation() { call_context(Kind::$kind, $tag) }
            #[test] fn many_threads_share_one_client() { many_threads(Kind::$kind) }
            #[test] fn closing_the_client_ends_a_pending_call() { closed_mid_call(Kind::$kind) }
            #[test]
            fn the_server_killed_mid_call() {
                if let Some((_, kind)) = peer_role() {
                    return serve_as_peer(&kind);
                }
                killed(Kind::$kind, concat!(stringify!($module), "::the_server_killed_mid_call"))
            }
        }
    )*};
}

suite!(tcp: Tcp, 1; unix: Unix, 2; shm: Shm, 4);

/// A client and a server can be shared by threads.
#[test]
fn the_client_and_server_are_send_and_sync() {
    fn check<T: Send + Sync + Clone>() {}
    check::<RpcClient>();
    check::<RpcServer>();
}

/// The session's frame deadline holds on the blocking server too: a peer that sends 10 bytes
/// of a 16 MiB frame and stops is closed at `frame_timeout`, not held.
#[test]
fn a_partial_frame_is_closed_at_the_frame_deadline() {
    use std::io::{Read, Write};
    let config = xrpc_blocking::ServerConfig {
        frame_timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let server = RpcServer::with_config(xrpc_blocking::BincodeCodec, config);
    let (addr, _serving) = spawn_server(Kind::Tcp, &server);
    let mut raw = std::net::TcpStream::connect(&addr.0["tcp:".len()..]).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(&(16u32 << 20).to_le_bytes()).unwrap();
    raw.write_all(b"XR\x01\x01\x00\x01").unwrap();
    let t = Instant::now();
    let closed =
        matches!(raw.read(&mut [0u8; 64]), Ok(0) | Err(_)) && t.elapsed() < Duration::from_secs(4);
    assert!(
        closed,
        "a partial frame held the connection for {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() >= Duration::from_millis(250), "closed early");
}
