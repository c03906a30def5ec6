//! The conformance suite: one body per behaviour of [`RpcClient`] and [`RpcServer`], written
//! against the runtime-neutral API of `xrpc_async` alone, which every adapter instantiates for
//! each of its transports.
//!
//! A body is `async fn case<P: Pair, R: Runtime>()`: [`Pair`] makes a connected pair of message
//! channels over one transport of one adapter, `R` is the adapter's [`Runtime`]. Spawning,
//! sleeping, time limits and the clock go through `R` ([`task`]); nothing here names tokio. An adapter's
//! test file includes this module and adds one line per transport to [`suite!`]:
//!
//! ```ignore
//! mod conformance;
//! conformance::suite! {
//!     tcp => TcpPair, Tokio, block_on;   // test module name => pair, runtime, block_on
//! }
//! ```
//!
//! `block_on: fn(F) -> F::Output` runs one body to completion on the adapter's executor (tokio:
//! a fresh runtime with two workers per case). Every case becomes `#[test] fn <module>::<case>`.
//! `tests/conformance_tokio.rs` is the tokio instantiation over TCP, Unix, shared memory, the
//! in-process channel and `Arc`; `tests/conformance_smol.rs` the same with smol's transports,
//! its `Runtime` and `smol::block_on`; `tests/conformance_blocking.rs` the same with the
//! blocking adapter's: its runtime of plain threads, `Blocking`, and `Blocking::block_on`; and
//! `tests/conformance_virtual_clock.rs` on `xrpc_async::testing::TestRuntime`: one thread and a
//! virtual clock.
//!
//! # The blocking adapter
//!
//! `xrpc-blocking` is this layer on its `Blocking` runtime: its synchronous `RpcClient` is the
//! async client below, each call run by `Blocking::block_on`, and its `RpcServer` the async
//! server with synchronous handlers. The bodies run the async client on that runtime. (Making
//! the synchronous client the one the bodies exercise would need more than a change of client
//! type: a synchronous call cannot be dropped to cancel it, nor held unpolled, nor carry an
//! in-process value — three bodies test exactly that.) The synchronous API is covered by
//! `xrpc-blocking/tests/rpc.rs`.

pub mod task;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use xrpc_async::{
    ArcFrameTransport, CallContext, ChannelConfig, ChannelFrameTransport, MessageChannel,
    MessageChannelAdapter, RequestStream, RpcClient, RpcClientConfig, RpcError, RpcServer, Runtime,
    ServerStreamSender,
};
use xrpc_proto::{BincodeCodec, CallOptions, ErrorCode, Metadata};

use task::{JoinHandle, now, sleep, spawn, timeout};

/// A connected pair of message channels over one transport of one adapter.
pub trait Pair {
    /// The client's end.
    type Client: MessageChannel;
    /// The server's end.
    type Server: MessageChannel;
    /// Whether the transport moves in-process values without serializing them
    /// ([`MessageChannel::carries_values`]); [`typed_calls_skip_the_codec_where_values_travel`]
    /// checks that the channel says so.
    const CARRIES_VALUES: bool;

    /// A fresh pair, connected.
    fn pair() -> impl Future<Output = (Self::Client, Self::Server)>;
}

/// The in-process transports need no runtime: every adapter's suite runs over these.
pub struct Channel;
impl Pair for Channel {
    type Client = MessageChannelAdapter<ChannelFrameTransport>;
    type Server = MessageChannelAdapter<ChannelFrameTransport>;
    const CARRIES_VALUES: bool = false;
    async fn pair() -> (Self::Client, Self::Server) {
        let (c, s) = ChannelFrameTransport::create_pair("suite", ChannelConfig::default());
        (MessageChannelAdapter::new(c), MessageChannelAdapter::new(s))
    }
}

/// The in-process value transport (values move unserialized).
pub struct ArcT;
impl Pair for ArcT {
    type Client = MessageChannelAdapter<ArcFrameTransport>;
    type Server = MessageChannelAdapter<ArcFrameTransport>;
    const CARRIES_VALUES: bool = true;
    async fn pair() -> (Self::Client, Self::Server) {
        let (c, s) = ArcFrameTransport::create_pair("suite");
        (MessageChannelAdapter::new(c), MessageChannelAdapter::new(s))
    }
}

/// Instantiates every case of the suite, one test module per line:
/// `name => Pair, Runtime, block_on;`. See the [module documentation](self).
macro_rules! suite {
    ($($name:ident => $pair:ty, $runtime:ty, $block_on:path;)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance::suite!(@cases $pair, $runtime, $block_on;
                unary_and_errors,
                thousand_concurrent_calls,
                timeouts_and_cancellation,
                disconnect_fails_pending_calls,
                streams,
                slow_consumer_holds_the_producer,
                notifications_and_deadlines,
                graceful_shutdown,
                an_oversized_request_fails_only_its_call,
                the_same_max_frame_everywhere,
                heartbeats_detect_a_silent_server,
                typed_calls_skip_the_codec_where_values_travel,
                a_call_not_polled_stalls_no_one,
                metadata_reaches_every_handler_kind,
                a_stream_handler_ends_at_shutdown,
                undelivered_notifications_are_counted,
            );
        }
    )*};
    (@cases $pair:ty, $runtime:ty, $block_on:path; $($case:ident,)*) => {$(
        #[test]
        fn $case() {
            $block_on($crate::conformance::$case::<$pair, $runtime>())
        }
    )*};
}
pub(crate) use suite;

type Client<P, R> = RpcClient<<P as Pair>::Client, BincodeCodec, R>;
type Server<R> = RpcServer<BincodeCodec, R>;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct AddRequest {
    a: i32,
    b: i32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct AddResponse {
    result: i32,
}

/// The server every body starts from: unary, failing, panicking and streaming methods.
fn server<R: Runtime>() -> Server<R> {
    let server = Server::<R>::new();
    server.register_typed("add", |req: AddRequest| async move {
        Ok(AddResponse {
            result: req.a + req.b,
        })
    });
    server.register_typed("echo", |v: u64| async move { Ok(v) });
    server.register_typed("echo_bytes", |v: Vec<u8>| async move { Ok(v) });
    server.register_typed("sleep_ms", |ms: u64| async move {
        sleep::<R>(Duration::from_millis(ms)).await;
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
    server.register_client_stream("sum", |mut items: RequestStream<u64>| async move {
        let mut sum = 0;
        while let Some(v) = items.recv().await {
            sum += v?;
        }
        Ok(sum)
    });
    server.register_bidi(
        "double",
        |mut items: RequestStream<i64>, tx: ServerStreamSender<i64>| async move {
            while let Some(v) = items.recv().await {
                tx.send(&(v? * 2)).await?;
            }
            Ok(())
        },
    );
    server.register_bidi(
        "first_only",
        |mut items: RequestStream<i64>, tx: ServerStreamSender<i64>| async move {
            let first = items.recv().await.transpose()?.unwrap_or(0);
            drop(items); // reads no more, but keeps running
            sleep::<R>(Duration::from_millis(100)).await;
            tx.send(&first).await?;
            Ok(())
        },
    );
    server
}

/// Serves `server` on the server end of a fresh pair and returns a started client.
async fn connect<P: Pair, R: Runtime>(
    server: &Server<R>,
) -> (Client<P, R>, JoinHandle<Result<(), RpcError>, R>) {
    let (c, s) = P::pair().await;
    let srv = server.clone();
    let task = spawn::<R, _>(async move { srv.serve(s).await });
    let client = RpcClient::new(c);
    let _handle = client.start();
    (client, task)
}

/// A unary call answers; an unknown method, a handler's error, a handler's panic and a request
/// of the wrong type are each reported to their call, and the server keeps serving.
pub async fn unary_and_errors<P: Pair, R: Runtime>() {
    let (client, _srv) = connect::<P, R>(&server()).await;
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
            assert_eq!(code, ErrorCode::Panic);
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

/// A thousand calls in flight on one connection all get their own answer.
pub async fn thousand_concurrent_calls<P: Pair, R: Runtime>() {
    let (client, _srv) = connect::<P, R>(&server()).await;
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

/// A waiting call drives its connection itself, but one whose future is held without being
/// polled stalls no other call: the driver's task takes over (this hangs if it does not).
pub async fn a_call_not_polled_stalls_no_one<P: Pair, R: Runtime>() {
    let (client, _srv) = connect::<P, R>(&server()).await;
    let c = client.clone();
    let polled = Arc::new(AtomicBool::new(false));
    let p = polled.clone();
    let holder = spawn::<R, _>(async move {
        // Polled once (it takes the driver's seat), then held for 3 s without a poll.
        let mut held = Box::pin(c.call::<_, u64>("sleep_ms", &2_000u64));
        std::future::poll_fn(|cx| {
            assert!(held.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        p.store(true, Ordering::SeqCst);
        sleep::<R>(Duration::from_secs(3)).await;
        drop(held);
    });
    // Waited for without blocking the thread (the holder may need it to run).
    timeout::<R, _>(Duration::from_secs(5), async {
        while !polled.load(Ordering::SeqCst) {
            sleep::<R>(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the held call was polled");
    let started = now::<R>();
    for i in 0..20 {
        let resp: AddResponse = timeout::<R, _>(
            Duration::from_secs(2),
            client.call("add", &AddRequest { a: i, b: 1 }),
        )
        .await
        .expect("a call stalled behind a held call future")
        .unwrap();
        assert_eq!(resp.result, i + 1);
    }
    assert!(now::<R>() - started < Duration::from_secs(2));
    let _ = holder.await;
}

/// A call times out on time; dropping a call future cancels its handler on the server.
pub async fn timeouts_and_cancellation<P: Pair, R: Runtime>() {
    let server = server::<R>();
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
    let (client, _srv) = connect::<P, R>(&server).await;
    let t0 = now::<R>();
    let r = client
        .call_with_timeout::<_, u64>("sleep_ms", &5_000u64, Duration::from_millis(50))
        .await;
    assert!(matches!(r, Err(RpcError::Timeout)), "{r:?}");
    assert!(now::<R>() - t0 < Duration::from_secs(2));
    // Dropping a call future cancels the handler on the server. The future is dropped once the
    // handler runs, not after a fixed time (it was 50 ms): on a loaded machine — 65 of these
    // tests share smol's one executor thread — the request may not be written by then, and a
    // call dropped before its request left is rightly never sent. A request that never reaches
    // the server fails the test after 5 s.
    {
        let fut = std::pin::pin!(client.call::<_, ()>("forever", &()));
        let handler_runs = std::pin::pin!(async {
            while started.load(Ordering::SeqCst) == 0 {
                sleep::<R>(Duration::from_millis(2)).await;
            }
        });
        let raced = timeout::<R, _>(
            Duration::from_secs(5),
            futures_util::future::select(fut, handler_runs),
        )
        .await;
        assert!(
            matches!(raced, Ok(futures_util::future::Either::Right(_))),
            "the handler of `forever` did not start within 5 s"
        );
        // The call future is dropped here.
    }
    for _ in 0..100 {
        if dropped.load(Ordering::SeqCst) {
            break;
        }
        sleep::<R>(Duration::from_millis(5)).await;
    }
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the server dropped the cancelled handler"
    );
    assert_eq!(client.pending_calls(), 0);
}

/// When the server goes away, every pending call fails at once with `Disconnected`, and so do
/// later calls.
pub async fn disconnect_fails_pending_calls<P: Pair, R: Runtime>() {
    let (client, srv) = connect::<P, R>(&server()).await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = client.clone();
            spawn::<R, _>(async move { c.call::<_, u64>("sleep_ms", &60_000u64).await })
        })
        .collect();
    while client.pending_calls() < 10 {
        sleep::<R>(Duration::from_millis(1)).await;
    }
    sleep::<R>(Duration::from_millis(20)).await;
    let t0 = now::<R>();
    srv.abort(); // the server task and its connection go away
    for c in calls {
        let r = c.await;
        assert!(matches!(r, Err(RpcError::Disconnected(_))), "{r:?}");
    }
    let waited = now::<R>() - t0;
    assert!(waited < Duration::from_millis(100), "took {waited:?}");
    assert!(matches!(
        client.call::<_, u64>("echo", &1u64).await,
        Err(RpcError::Disconnected(_))
    ));
}

/// Server, client and bidirectional streams deliver every item in order; a handler that stops
/// reading does not leave the client waiting for credit.
pub async fn streams<P: Pair, R: Runtime>() {
    let (client, _srv) = connect::<P, R>(&server()).await;
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
    let producer = spawn::<R, _>(async move {
        for i in 0..50 {
            tx.send(&i).await.unwrap();
        }
        tx.finish().await.unwrap();
    });
    let mut out = vec![];
    while let Some(v) = rx.recv().await {
        out.push(v.unwrap());
    }
    producer.await;
    assert_eq!(out, (0..50).map(|i| i * 2).collect::<Vec<_>>());

    // A handler that stops reading does not leave the client waiting for credit.
    let (tx, mut rx) = client.call_bidi::<i64, i64>("first_only").await.unwrap();
    let producer = spawn::<R, _>(async move {
        for i in 7..207 {
            tx.send(&i).await.unwrap();
        }
        tx.finish().await.unwrap();
    });
    timeout::<R, _>(Duration::from_secs(5), producer)
        .await
        .expect("the producer is not stalled");
    assert_eq!(rx.recv().await.unwrap().unwrap(), 7);
    assert!(rx.recv().await.is_none());
}

/// A server stream's producer runs at most a window ahead of its consumer.
pub async fn slow_consumer_holds_the_producer<P: Pair, R: Runtime>() {
    let server = server::<R>();
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
    let (client, _srv) = connect::<P, R>(&server).await;
    let mut rx = client
        .call_server_stream::<_, u64>("firehose", &())
        .await
        .unwrap();
    sleep::<R>(Duration::from_millis(100)).await;
    let window = RpcClientConfig::default().stream_window as usize;
    let held = produced.load(Ordering::SeqCst);
    assert!(
        held <= window,
        "producer ran ahead to {held} items (window {window})"
    );
    // Consuming releases it, in steps of half the window.
    for _ in 0..(window * 3) {
        rx.recv().await.unwrap().unwrap();
    }
    sleep::<R>(Duration::from_millis(50)).await;
    let after = produced.load(Ordering::SeqCst);
    assert!(after > held && after <= window * 4, "{held} -> {after}");
    drop(rx);
}

/// A notification reaches its handler; a handler sees its call's deadline.
pub async fn notifications_and_deadlines<P: Pair, R: Runtime>() {
    let server = server::<R>();
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    server.register_typed("note", move |v: usize| {
        s2.fetch_add(v, Ordering::SeqCst);
        async { Ok(()) }
    });
    server.register_typed_with_context("deadline_ms", |ctx: CallContext, _: ()| async move {
        Ok(ctx
            .deadline
            .map(|d| d.saturating_duration_since(now::<R>()).as_millis() as u64))
    });
    let (client, _srv) = connect::<P, R>(&server).await;
    client.notify("note", &5usize).await.unwrap();
    let left: Option<u64> = client
        .call_with_timeout("deadline_ms", &(), Duration::from_millis(800))
        .await
        .unwrap();
    // The timeout crossed the transport. How much of it is left exactly (all of it, counted
    // from receipt) is checked on a virtual clock in `xrpc-async/tests/rpc/calls.rs`; here a
    // loaded machine may stall the handler for any part of the 800 ms.
    let left = left.expect("the handler sees the deadline");
    assert!(left <= 800, "{left}");
    for _ in 0..100 {
        if seen.load(Ordering::SeqCst) == 5 {
            break;
        }
        sleep::<R>(Duration::from_millis(2)).await;
    }
    assert_eq!(seen.load(Ordering::SeqCst), 5);
}

/// What a handler's context says of its call: its kind, whether it is a notification, and
/// the value of the metadata key `tenant`.
fn seen(ctx: &CallContext) -> String {
    format!(
        "{} {:?} notification={} tenant={}",
        ctx.method(),
        ctx.kind,
        ctx.notification,
        ctx.metadata().get_str("tenant").unwrap_or("-"),
    )
}

/// The metadata of a call reaches its handler's context, for every kind of handler: unary,
/// notification, server, client and bidirectional streams.
pub async fn metadata_reaches_every_handler_kind<P: Pair, R: Runtime>() {
    let server = server::<R>();
    let notes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let n2 = notes.clone();
    server.register_typed_with_context("m.unary", |ctx: CallContext, _: ()| async move {
        Ok(seen(&ctx))
    });
    server.register_typed_with_context("m.note", move |ctx: CallContext, _: ()| {
        n2.lock().unwrap().push(seen(&ctx));
        async { Ok(()) }
    });
    server.register_stream_with_context(
        "m.server",
        |ctx: CallContext, _: (), tx: ServerStreamSender<String>| async move {
            tx.send(&seen(&ctx)).await
        },
    );
    server.register_client_stream_with_context(
        "m.client",
        |ctx: CallContext, mut items: RequestStream<u32>| async move {
            while items.recv().await.is_some() {}
            Ok(seen(&ctx))
        },
    );
    server.register_bidi_with_context(
        "m.bidi",
        |ctx: CallContext, mut items: RequestStream<u32>, tx: ServerStreamSender<String>| async move {
            while items.recv().await.is_some() {}
            tx.send(&seen(&ctx)).await
        },
    );
    let (client, _srv) = connect::<P, R>(&server).await;
    let mut md = Metadata::new();
    md.insert("tenant", "acme").unwrap();
    let opts = || CallOptions::default().with_metadata(md.clone());

    let unary: String = client
        .call_with_options("m.unary", &(), opts())
        .await
        .unwrap();
    assert_eq!(unary, "m.unary Unary notification=false tenant=acme");
    let plain: String = client.call("m.unary", &()).await.unwrap();
    assert_eq!(plain, "m.unary Unary notification=false tenant=-");

    let rx = client
        .call_server_stream_with_options::<_, String>("m.server", &(), opts())
        .await
        .unwrap();
    assert_eq!(
        rx.collect().await.unwrap(),
        vec!["m.server ServerStreaming notification=false tenant=acme"]
    );

    let (tx, resp) = client
        .call_client_stream_with_options::<u32, String>("m.client", opts())
        .await
        .unwrap();
    tx.send(&1).await.unwrap();
    tx.finish().await.unwrap();
    assert_eq!(
        resp.await.unwrap(),
        "m.client ClientStreaming notification=false tenant=acme"
    );

    let (tx, rx) = client
        .call_bidi_with_options::<u32, String>("m.bidi", opts())
        .await
        .unwrap();
    tx.send(&1).await.unwrap();
    tx.finish().await.unwrap();
    assert_eq!(
        rx.collect().await.unwrap(),
        vec!["m.bidi Bidirectional notification=false tenant=acme"]
    );

    client
        .notify_with_options("m.note", &(), opts())
        .await
        .unwrap();
    let t0 = now::<R>();
    while notes.lock().unwrap().is_empty() {
        assert!(
            now::<R>() - t0 < Duration::from_secs(5),
            "the notification never ran"
        );
        sleep::<R>(Duration::from_millis(2)).await;
    }
    assert_eq!(
        notes.lock().unwrap()[..],
        ["m.note Unary notification=true tenant=acme".to_string()]
    );
}

/// A notification the server cannot deliver is counted in its stats, by reason: an unknown
/// method, a streaming method, a payload its handler cannot decode.
pub async fn undelivered_notifications_are_counted<P: Pair, R: Runtime>() {
    let server = server::<R>();
    let (client, _srv) = connect::<P, R>(&server).await;
    client.notify("no.such.method", &()).await.unwrap();
    client.notify("count", &3u32).await.unwrap();
    client.notify("add", &()).await.unwrap(); // an empty payload is no `AddRequest`
    let t0 = now::<R>();
    while server.stats().notifications.total() < 3 {
        assert!(
            now::<R>() - t0 < Duration::from_secs(5),
            "{:?}",
            server.stats()
        );
        sleep::<R>(Duration::from_millis(2)).await;
    }
    let n = server.stats().notifications;
    assert_eq!(
        (n.unknown_method, n.wrong_kind, n.undecodable, n.total()),
        (1, 1, 1, 3),
        "{n:?}"
    );
}

/// An endless stream handler that watches its context's shutdown ends when the server shuts
/// down, and `serve` returns well before the drain timeout (10 s) would cancel it.
pub async fn a_stream_handler_ends_at_shutdown<P: Pair, R: Runtime>() {
    let server = server::<R>();
    let started = Arc::new(AtomicBool::new(false));
    let s2 = started.clone();
    server.register_stream_with_context(
        "ticks",
        move |ctx: CallContext, _: (), tx: ServerStreamSender<u64>| {
            let started = s2.clone();
            async move {
                started.store(true, Ordering::SeqCst);
                let mut i = 0;
                while !ctx.is_shutting_down() {
                    tx.send(&i).await?;
                    i += 1;
                    sleep::<R>(Duration::from_millis(1)).await;
                }
                Ok(())
            }
        },
    );
    let (client, srv) = connect::<P, R>(&server).await;
    let mut rx = client
        .call_server_stream::<_, u64>("ticks", &())
        .await
        .unwrap();
    let reader = spawn::<R, _>(async move {
        let mut n = 0u64;
        while let Some(item) = rx.recv().await {
            item.unwrap();
            n += 1;
        }
        n
    });
    let t0 = now::<R>();
    while !started.load(Ordering::SeqCst) {
        assert!(
            now::<R>() - t0 < Duration::from_secs(5),
            "the handler never ran"
        );
        sleep::<R>(Duration::from_millis(1)).await;
    }
    let t0 = now::<R>();
    server.shutdown();
    timeout::<R, _>(Duration::from_secs(5), srv)
        .await
        .expect("serve returns well before the 10 s drain timeout")
        .unwrap();
    assert!(now::<R>() - t0 < Duration::from_secs(5));
    // The stream ended normally: its handler returned.
    let n = timeout::<R, _>(Duration::from_secs(5), reader)
        .await
        .expect("the stream ends");
    assert!(n >= 1, "{n}");
}

/// After `shutdown`, calls in flight still finish, and `serve` returns.
pub async fn graceful_shutdown<P: Pair, R: Runtime>() {
    let server = server::<R>();
    // The shutdown starts once the call's handler runs (not after a fixed time: under load the
    // request may not have reached the server yet, and one that comes after the shutdown is
    // rightly refused).
    let started = Arc::new(AtomicBool::new(false));
    let s2 = started.clone();
    server.register_typed("slow", move |ms: u64| {
        s2.store(true, Ordering::SeqCst);
        async move {
            sleep::<R>(Duration::from_millis(ms)).await;
            Ok(ms)
        }
    });
    let (client, srv) = connect::<P, R>(&server).await;
    let c2 = client.clone();
    let slow = spawn::<R, _>(async move { c2.call::<_, u64>("slow", &100u64).await });
    let t0 = now::<R>();
    while !started.load(Ordering::SeqCst) {
        assert!(
            now::<R>() - t0 < Duration::from_secs(5),
            "the handler never ran"
        );
        sleep::<R>(Duration::from_millis(1)).await;
    }
    server.shutdown();
    assert_eq!(slow.await.unwrap(), 100, "in-flight calls finish");
    timeout::<R, _>(Duration::from_secs(2), srv)
        .await
        .expect("serve returns after shutdown")
        .unwrap();
}

/// Heartbeats over this transport: a server that answers nothing is declared gone after the
/// missed pings, and a live one's pongs come back through the transport. When — at
/// `(1 + heartbeat_misses)` intervals, and no false alarm over 500 intervals with 3 misses of
/// 20 ms — is checked on a virtual clock in `xrpc-async/tests/rpc/heartbeats.rs`; with real
/// timers a loaded machine can stall a task for several intervals (3 misses of 20 ms failed a
/// loaded debug run), so here the live server is allowed as many misses as it takes.
pub async fn heartbeats_detect_a_silent_server<P: Pair, R: Runtime>() {
    // The server end is connected but never served: it reads nothing and answers nothing.
    let (c, _silent) = P::pair().await;
    let config = RpcClientConfig {
        heartbeat_interval: Some(Duration::from_millis(20)),
        heartbeat_misses: 3,
        default_timeout: None,
        ..Default::default()
    };
    let t0 = now::<R>();
    let client: Client<P, R> = RpcClient::with_config(c, config);
    let r = client.call::<_, u64>("echo", &1u64).await;
    let took = now::<R>() - t0;
    assert!(
        matches!(r, Err(RpcError::Disconnected(ref m)) if m.contains("heartbeat")),
        "{r:?}"
    );
    // Timers never fire early: 4 intervals at least (the first ping, then 3 missed).
    assert!(
        took >= Duration::from_millis(80) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // A live server answers the pings: pongs arrive beside the call's answer.
    let (c, s) = P::pair().await;
    let srv = server::<R>();
    let _srv = spawn::<R, _>(async move { srv.serve(s).await });
    let live = RpcClientConfig {
        heartbeat_misses: u32::MAX,
        ..config
    };
    let client: Client<P, R> = RpcClient::with_config(c, live);
    let v: u64 = client.call("sleep_ms", &200u64).await.unwrap();
    assert_eq!(v, 200);
    let pongs = timeout::<R, _>(Duration::from_secs(5), async {
        // The answer and at least one pong (the first ping left 20 ms into the 200 ms call).
        while client.stats().unwrap().frames_received < 2 {
            sleep::<R>(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(pongs.is_ok(), "no pong came back: {:?}", client.stats());
}

/// The same maximum frame on every transport: a value bigger than a shared-memory ring
/// round-trips (in pieces there), and a value above the maximum frame size (16 MiB,
/// `xrpc_proto::DEFAULT_MAX_FRAME_SIZE`) fails its call with `FrameTooLarge` naming both sizes,
/// leaving the connection usable.
pub async fn the_same_max_frame_everywhere<P: Pair, R: Runtime>() {
    let (client, _srv) = connect::<P, R>(&server()).await;
    // 300 KiB: more than the old shm limit (256 KiB); 5 MiB: more than a 1 MiB shm ring.
    for len in [300 * 1024, 5 << 20] {
        let value: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let back: Vec<u8> = client.call("echo_bytes", &value).await.unwrap();
        assert_eq!(back, value, "{len} bytes");
    }
    let max = xrpc_proto::DEFAULT_MAX_FRAME_SIZE;
    match client
        .call::<_, Vec<u8>>("echo_bytes", &vec![1u8; max + 1])
        .await
    {
        Err(RpcError::FrameTooLarge { size, max: m }) => {
            assert!(size > max, "size {size}");
            assert_eq!(m, max);
        }
        other => panic!("expected FrameTooLarge, got {:?}", other.map(|v| v.len())),
    }
    let back: Vec<u8> = client.call("echo_bytes", &vec![9u8; 10]).await.unwrap();
    assert_eq!(back, vec![9u8; 10]);
}

/// A request too large for a frame fails its own call with `FrameTooLarge`; the calls around it
/// and the connection are unaffected.
pub async fn an_oversized_request_fails_only_its_call<P: Pair, R: Runtime>() {
    let server = server::<R>();
    server.register_typed("len", |v: Vec<u8>| async move { Ok(v.len()) });
    let (client, _srv) = connect::<P, R>(&server).await;
    let big = vec![7u8; 17 << 20]; // above every transport's default frame limit
    let small: Vec<_> = (0..20u64)
        .map(|i| {
            let c = client.clone();
            spawn::<R, _>(async move { c.call::<_, u64>("echo", &i).await })
        })
        .collect();
    let r = client.call::<_, usize>("len", &big).await;
    // The same on every transport, in-process ones included: the request cannot fit in a frame.
    assert!(matches!(&r, Err(RpcError::FrameTooLarge { .. })), "{r:?}");
    for (i, s) in small.into_iter().enumerate() {
        assert_eq!(s.await.unwrap(), i as u64, "the other calls are unaffected");
    }
    let v: u64 = client.call("echo", &99u64).await.unwrap();
    assert_eq!(v, 99);
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

/// `call_typed` moves the request and the response as values where the transport carries
/// values (`Arc`), never running the codec; over a byte transport it needs the codec, which
/// the unserializable request refuses.
pub async fn typed_calls_skip_the_codec_where_values_travel<P: Pair, R: Runtime>() {
    let server = Server::<R>::new();
    server.register_typed("inc", |v: Unserializable| async move {
        Ok(Unserializable(v.0 + 1))
    });
    let (client, _srv) = connect::<P, R>(&server).await;
    assert_eq!(client.channel().carries_values(), P::CARRIES_VALUES);
    let r = client
        .call_typed::<_, Unserializable>("inc", Unserializable(41))
        .await;
    if P::CARRIES_VALUES {
        assert_eq!(r.unwrap(), Unserializable(42));
    } else {
        assert!(matches!(r, Err(RpcError::Serialization(_))), "{r:?}");
    }
}
