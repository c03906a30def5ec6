//! The RPC suite, one generic body per behaviour, run over every transport.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use xrpc::{
    ArcFrameTransport, ChannelConfig, ChannelFrameTransport, MessageChannel, MessageChannelAdapter,
    RpcClient, RpcError, RpcServer, ServerStreamSender, SharedMemoryConfig,
    SharedMemoryFrameTransport, SharedMemoryFrameTransportListener, TcpConfig, TcpFrameTransport,
    TcpFrameTransportListener, UnixConfig, UnixFrameTransport, UnixFrameTransportListener,
};
use xrpc_shm::testing::unique_name;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct AddRequest {
    a: i32,
    b: i32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct AddResponse {
    result: i32,
}

/// A connected pair of message channels over one kind of transport.
trait Pair {
    type C: MessageChannel;
    type S: MessageChannel;
    async fn pair() -> (Self::C, Self::S);
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

struct Unix;
impl Pair for Unix {
    type C = MessageChannelAdapter<UnixFrameTransport>;
    type S = MessageChannelAdapter<UnixFrameTransport>;
    async fn pair() -> (Self::C, Self::S) {
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

struct Channel;
impl Pair for Channel {
    type C = MessageChannelAdapter<ChannelFrameTransport>;
    type S = MessageChannelAdapter<ChannelFrameTransport>;
    async fn pair() -> (Self::C, Self::S) {
        let (c, s) = ChannelFrameTransport::create_pair("suite", ChannelConfig::default());
        (MessageChannelAdapter::new(c), MessageChannelAdapter::new(s))
    }
}

struct Shm;
impl Pair for Shm {
    type C = MessageChannelAdapter<SharedMemoryFrameTransport>;
    type S = MessageChannelAdapter<SharedMemoryFrameTransport>;
    async fn pair() -> (Self::C, Self::S) {
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

struct ArcT;
impl Pair for ArcT {
    type C = MessageChannelAdapter<ArcFrameTransport>;
    type S = MessageChannelAdapter<ArcFrameTransport>;
    async fn pair() -> (Self::C, Self::S) {
        let (c, s) = ArcFrameTransport::create_pair("suite");
        (MessageChannelAdapter::new(c), MessageChannelAdapter::new(s))
    }
}

fn server() -> RpcServer {
    let server = RpcServer::new();
    server.register_typed("add", |req: AddRequest| async move {
        Ok(AddResponse {
            result: req.a + req.b,
        })
    });
    server.register_typed("echo", |v: u64| async move { Ok(v) });
    server.register_typed("sleep_ms", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    });
    server.register_typed("fail", |msg: String| async move {
        Err::<(), _>(RpcError::server(msg))
    });
    server.register_typed("panic", |_: ()| async move {
        if true {
            panic!("handler blew up");
        }
        Ok(())
    });
    server.register_stream("count", |n: u32, tx: ServerStreamSender<u32>| async move {
        for i in 0..n {
            tx.send(&i).await?;
        }
        Ok(())
    });
    server.register_client_stream("sum", |mut items: xrpc::RequestStream<u64>| async move {
        let mut sum = 0;
        while let Some(v) = items.recv().await {
            sum += v?;
        }
        Ok(sum)
    });
    server.register_bidi(
        "double",
        |mut items: xrpc::RequestStream<i64>, tx: ServerStreamSender<i64>| async move {
            while let Some(v) = items.recv().await {
                tx.send(&(v? * 2)).await?;
            }
            Ok(())
        },
    );
    server.register_bidi(
        "first_only",
        |mut items: xrpc::RequestStream<i64>, tx: ServerStreamSender<i64>| async move {
            let first = items.recv().await.transpose()?.unwrap_or(0);
            drop(items); // reads no more, but keeps running
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(&first).await?;
            Ok(())
        },
    );
    server
}

/// Starts `server` on the server end of a fresh pair and returns a started client.
async fn connect<P: Pair>(
    server: &RpcServer,
) -> (
    RpcClient<P::C>,
    tokio::task::JoinHandle<Result<(), RpcError>>,
) {
    let (c, s) = P::pair().await;
    let srv = server.clone();
    let task = tokio::spawn(async move { srv.serve(s).await });
    let client = RpcClient::new(c);
    let _handle = client.start();
    (client, task)
}

async fn unary_and_errors<P: Pair>() {
    let (client, _srv) = connect::<P>(&server()).await;
    let resp: AddResponse = client
        .call("add", &AddRequest { a: 1, b: 2 })
        .await
        .unwrap();
    assert_eq!(resp.result, 3);
    match client.call::<_, ()>("nope", &()).await {
        Err(RpcError::MethodNotFound(m)) => assert!(m.contains("nope")),
        other => panic!("{other:?}"),
    }
    match client.call::<_, ()>("fail", &"bad input".to_string()).await {
        Err(RpcError::ServerError { message, .. }) => assert_eq!(message, "bad input"),
        other => panic!("{other:?}"),
    }
    match client.call::<_, ()>("panic", &()).await {
        Err(RpcError::ServerError { code, message }) => {
            assert_eq!(code, xrpc::proto::ErrorCode::Panic);
            assert!(message.contains("blew up"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The server keeps serving after a panic.
    let v: u64 = client.call("echo", &7u64).await.unwrap();
    assert_eq!(v, 7);
    // A request of the wrong type is a serialization error on the server, reported back.
    assert!(client.call::<_, u64>("echo", &"text").await.is_err());
}

async fn thousand_concurrent_calls<P: Pair>() {
    let (client, _srv) = connect::<P>(&server()).await;
    let calls = (0..1000u64).map(|i| {
        let client = client.clone();
        async move {
            let v: u64 = client.call("echo", &i).await.unwrap();
            assert_eq!(v, i);
        }
    });
    futures_util::future::join_all(calls).await;
    assert_eq!(client.pending_calls(), 0);
}

async fn timeouts_and_cancellation<P: Pair>() {
    let server = server();
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let (s2, d2) = (started.clone(), dropped.clone());
    server.register_typed("forever", move |_: ()| {
        let guard = OnDrop(d2.clone());
        s2.fetch_add(1, Ordering::SeqCst);
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let (client, _srv) = connect::<P>(&server).await;
    let t0 = Instant::now();
    let r = client
        .call_with_timeout::<_, u64>("sleep_ms", &5_000u64, Duration::from_millis(50))
        .await;
    assert!(matches!(r, Err(RpcError::Timeout)), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    // Dropping a call future cancels the handler on the server.
    let fut = client.call::<_, ()>("forever", &());
    let _ = tokio::time::timeout(Duration::from_millis(50), fut).await;
    for _ in 0..100 {
        if dropped.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the server dropped the cancelled handler"
    );
    assert_eq!(client.pending_calls(), 0);
}

async fn disconnect_fails_pending_calls<P: Pair>() {
    let (client, srv) = connect::<P>(&server()).await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.call::<_, u64>("sleep_ms", &60_000u64).await })
        })
        .collect();
    while client.pending_calls() < 10 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t0 = Instant::now();
    srv.abort(); // the server task and its connection go away
    for c in calls {
        let r = c.await.unwrap();
        assert!(matches!(r, Err(RpcError::Disconnected(_))), "{r:?}");
    }
    let waited = t0.elapsed();
    assert!(waited < Duration::from_millis(100), "took {waited:?}");
    assert!(matches!(
        client.call::<_, u64>("echo", &1u64).await,
        Err(RpcError::Disconnected(_))
    ));
}

async fn streams<P: Pair>() {
    let (client, _srv) = connect::<P>(&server()).await;
    let rx = client
        .call_server_stream::<_, u32>("count", &100u32)
        .await
        .unwrap();
    assert_eq!(rx.collect().await.unwrap(), (0..100).collect::<Vec<_>>());
    let mut rx = client
        .call_server_stream::<_, u32>("count", &3u32)
        .await
        .unwrap();
    let mut got = vec![];
    while let Some(v) = rx.next().await {
        got.push(v.unwrap());
    }
    assert_eq!(got, vec![0, 1, 2]);

    let (tx, resp) = client.call_client_stream::<u64, u64>("sum").await.unwrap();
    for i in 1..=100 {
        tx.send(&i).await.unwrap();
    }
    tx.finish().await.unwrap();
    assert_eq!(resp.await.unwrap(), 5050);

    let (tx, mut rx) = client.call_bidi::<i64, i64>("double").await.unwrap();
    let producer = tokio::spawn(async move {
        for i in 0..50 {
            tx.send(&i).await.unwrap();
        }
        tx.finish().await.unwrap();
    });
    let mut out = vec![];
    while let Some(v) = rx.recv().await {
        out.push(v.unwrap());
    }
    producer.await.unwrap();
    assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());

    // A handler that stops reading does not leave the client waiting for credit.
    let (tx, mut rx) = client.call_bidi::<i64, i64>("first_only").await.unwrap();
    let producer = tokio::spawn(async move {
        for i in 7..207 {
            tx.send(&i).await.unwrap();
        }
        tx.finish().await.unwrap();
    });
    tokio::time::timeout(Duration::from_secs(5), producer)
        .await
        .expect("the producer is not stalled")
        .unwrap();
    assert_eq!(rx.recv().await.unwrap().unwrap(), 7);
    assert!(rx.recv().await.is_none());
}

async fn slow_consumer_holds_the_producer<P: Pair>() {
    let server = server();
    let produced = Arc::new(AtomicUsize::new(0));
    let p2 = produced.clone();
    server.register_stream("firehose", move |_: (), tx: ServerStreamSender<u64>| {
        let p = p2.clone();
        async move {
            for i in 0.. {
                tx.send(&i).await?;
                p.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    });
    let (client, _srv) = connect::<P>(&server).await;
    let mut rx = client
        .call_server_stream::<_, u64>("firehose", &())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let window = xrpc::RpcClientConfig::default().stream_window as usize;
    let held = produced.load(Ordering::SeqCst);
    assert!(
        held <= window,
        "producer ran ahead to {held} items (window {window})"
    );
    // Consuming releases it, in steps of half the window.
    for _ in 0..(window * 3) {
        rx.recv().await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = produced.load(Ordering::SeqCst);
    assert!(after > held && after <= window * 4, "{held} -> {after}");
    drop(rx);
}

async fn notifications_and_deadlines<P: Pair>() {
    let server = server();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    server.register_typed("note", move |v: usize| {
        s2.fetch_add(v, Ordering::SeqCst);
        async { Ok(()) }
    });
    server.register_typed_with_context("deadline_ms", |ctx: xrpc::CallContext, _: ()| async move {
        Ok(ctx
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()).as_millis() as u64))
    });
    let (client, _srv) = connect::<P>(&server).await;
    client.notify("note", &5usize).await.unwrap();
    let left: Option<u64> = client
        .call_with_timeout("deadline_ms", &(), Duration::from_millis(800))
        .await
        .unwrap();
    let left = left.expect("the handler sees the deadline");
    assert!(left > 500 && left <= 800, "{left}");
    for _ in 0..100 {
        if seen.load(Ordering::SeqCst) == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(seen.load(Ordering::SeqCst), 5);
}

async fn graceful_shutdown<P: Pair>() {
    let server = server();
    let (client, srv) = connect::<P>(&server).await;
    let c2 = client.clone();
    let slow = tokio::spawn(async move { c2.call::<_, u64>("sleep_ms", &100u64).await });
    while client.pending_calls() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    server.shutdown();
    assert_eq!(slow.await.unwrap().unwrap(), 100, "in-flight calls finish");
    tokio::time::timeout(Duration::from_secs(2), srv)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
}

async fn heartbeats_detect_a_silent_server<P: Pair>() {
    // The server end is connected but never served: it reads nothing and answers nothing.
    let (c, _silent) = P::pair().await;
    let config = xrpc::RpcClientConfig {
        heartbeat_interval: Some(Duration::from_millis(20)),
        heartbeat_misses: 3,
        default_timeout: None,
        ..Default::default()
    };
    let client = RpcClient::with_config(c, config);
    let t0 = Instant::now();
    let r = client.call::<_, u64>("echo", &1u64).await;
    let took = t0.elapsed();
    assert!(
        matches!(r, Err(RpcError::Disconnected(ref m)) if m.contains("heartbeat")),
        "{r:?}"
    );
    assert!(
        took >= Duration::from_millis(60) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // A live server keeps answering pings: no false alarm over many intervals.
    let (c, s) = P::pair().await;
    let srv = server();
    tokio::spawn(async move { srv.serve(s).await });
    let client = RpcClient::with_config(c, config);
    let v: u64 = client.call("sleep_ms", &300u64).await.unwrap();
    assert_eq!(v, 300);
}

async fn an_oversized_request_fails_only_its_call<P: Pair>() {
    let server = server();
    server.register_typed("len", |v: Vec<u8>| async move { Ok(v.len()) });
    let (client, _srv) = connect::<P>(&server).await;
    let big = vec![7u8; 17 << 20]; // above every transport's default frame limit
    let small = (0..20u64).map(|i| {
        let c = client.clone();
        tokio::spawn(async move { c.call::<_, u64>("echo", &i).await })
    });
    let small: Vec<_> = small.collect();
    let r = client.call::<_, usize>("len", &big).await;
    // The same on every transport, in-process ones included: the request cannot fit in a frame.
    assert!(matches!(&r, Err(RpcError::FrameTooLarge { .. })), "{r:?}");
    for (i, s) in small.into_iter().enumerate() {
        assert_eq!(
            s.await.unwrap().unwrap(),
            i as u64,
            "the other calls are unaffected"
        );
    }
    let v: u64 = client.call("echo", &99u64).await.unwrap();
    assert_eq!(v, 99);
}

macro_rules! suite {
    ($($transport:ident => $p:ty),* $(,)?) => {$(
        mod $transport {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unary_and_errors() { super::unary_and_errors::<$p>().await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn thousand_concurrent_calls() { super::thousand_concurrent_calls::<$p>().await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn timeouts_and_cancellation() { super::timeouts_and_cancellation::<$p>().await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn disconnect_fails_pending_calls() { super::disconnect_fails_pending_calls::<$p>().await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn streams() { super::streams::<$p>().await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn slow_consumer_holds_the_producer() { super::slow_consumer_holds_the_producer::<$p>().await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn notifications_and_deadlines() { super::notifications_and_deadlines::<$p>().await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn graceful_shutdown() { super::graceful_shutdown::<$p>().await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_oversized_request_fails_only_its_call() { super::an_oversized_request_fails_only_its_call::<$p>().await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn heartbeats_detect_a_silent_server() { super::heartbeats_detect_a_silent_server::<$p>().await }
        }
    )*};
}

suite! {
    tcp => Tcp,
    unix => Unix,
    channel => Channel,
    arc => ArcT,
    shm => Shm,
}

/// A value that refuses to be serialized: a call carrying it can only succeed if no codec runs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Unserializable(u64);

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this type must not be serialized",
        ))
    }
}

fn typed_server() -> RpcServer {
    let server = RpcServer::new();
    server.register_typed("inc", |v: Unserializable| async move {
        Ok(Unserializable(v.0 + 1))
    });
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_typed_calls_skip_the_codec() {
    let (client, _srv) = connect::<ArcT>(&typed_server()).await;
    let v: Unserializable = client.call_typed("inc", Unserializable(41)).await.unwrap();
    assert_eq!(v, Unserializable(42));
    // Over a byte transport the same call needs the codec, which refuses.
    let (client, _srv) = connect::<Tcp>(&typed_server()).await;
    let r = client
        .call_typed::<_, Unserializable>("inc", Unserializable(41))
        .await;
    assert!(matches!(r, Err(RpcError::Serialization(_))), "{r:?}");
}
