//! The ends of a connection and their deadlines: a graceful shutdown drains calls in flight and
//! cancels the rest at `drain_timeout`; a closing server waits at most
//! `shutdown_flush_timeout` for a client that does not read; a dropped client waits at most
//! `close_timeout` for a server that does not read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use xrpc_async::testing::TestRuntime;
use xrpc_async::{
    CallContext, FrameTransport, MessageChannel, RequestStream, RpcClientConfig, RpcError,
    ServerStreamSender,
};
use xrpc_proto::{ErrorCode, Header, MessageKind, ServerConfig};

use crate::raw::{byte_stream, prefixed};
use crate::{MS, US, client, connect, no_timeout, pair_with_capacity, register_forever, server};

fn shutting_down<T: std::fmt::Debug>(r: &Result<T, RpcError>) -> bool {
    matches!(
        r,
        Err(RpcError::ServerError {
            code: ErrorCode::ShuttingDown,
            ..
        })
    )
}

/// After `shutdown`, a call in flight still finishes, a new call is refused, and a call still
/// running at `drain_timeout` is answered `ShuttingDown` then — not a microsecond before — and
/// its handler stopped; `serve` returns at that instant. (Real-clock counterpart: the
/// conformance suite's `graceful_shutdown`.)
#[test]
fn shutdown_drains_calls_in_flight_then_cancels_them_at_the_drain_deadline() {
    let rt = TestRuntime::new();
    let config = ServerConfig {
        drain_timeout: 300 * MS,
        ..ServerConfig::default()
    };
    let server = server(&rt, config);
    let alive = register_forever(&server);
    let (client, serving) = connect(&rt, &server, no_timeout());
    let c = client.clone();
    let quick = rt.spawn_with_handle(async move { c.call::<_, u64>("sleep", &100u64).await });
    let c = client.clone();
    let stuck = rt.spawn_with_handle(async move { c.call::<_, ()>("forever", &()).await });
    rt.advance(10 * MS);
    server.shutdown();
    rt.advance(10 * MS);
    let late = rt.block_on(client.call::<_, u64>("echo", &1u64));
    assert!(shutting_down(&late), "a call after shutdown: {late:?}");
    rt.advance(80 * MS);
    assert_eq!(
        quick.try_take().expect("finished in the drain").unwrap(),
        100
    );
    rt.advance(210 * MS - US);
    assert!(!stuck.is_finished() && !serving.is_finished());
    assert_eq!(alive.load(Ordering::SeqCst), 1);
    rt.advance(US);
    let r = stuck.try_take().expect("cancelled at the drain deadline");
    assert!(shutting_down(&r), "{r:?}");
    assert_eq!(alive.load(Ordering::SeqCst), 0);
    serving
        .try_take()
        .expect("serve returned at the drain deadline")
        .unwrap();
    assert_eq!(rt.elapsed(), 310 * MS);
}

/// A shutdown with a server stream, a bidirectional call and a unary call open ends at the
/// drain deadline: each client is answered `ShuttingDown`, and work a handler started
/// elsewhere learns from its context. (Real-clock counterpart:
/// `shutdown_ends_at_the_drain_deadline_with_streams_open` in `tests/bounds.rs`.)
#[test]
fn shutdown_ends_at_the_drain_deadline_with_streams_open() {
    let rt = TestRuntime::new();
    let config = ServerConfig {
        drain_timeout: 300 * MS,
        ..ServerConfig::default()
    };
    let server = server(&rt, config);
    server.register_stream("idle_stream", |_: (), _tx: ServerStreamSender<u32>| {
        std::future::pending::<Result<(), RpcError>>()
    });
    server.register_bidi(
        "idle_bidi",
        |_rx: RequestStream<u32>, _tx: ServerStreamSender<u32>| {
            std::future::pending::<Result<(), RpcError>>()
        },
    );
    let seen = Arc::new(AtomicBool::new(false));
    let (s, r) = (seen.clone(), rt.clone());
    server.register_typed_with_context("watch", move |ctx: CallContext, _: ()| {
        let (s, cancelled) = (s.clone(), ctx.cancelled());
        xrpc_async::Runtime::spawn(&r, async move {
            cancelled.await;
            s.store(true, Ordering::SeqCst);
        });
        std::future::pending::<Result<(), RpcError>>()
    });
    let (client, serving) = connect(&rt, &server, no_timeout());
    let (mut stream, (_tx, mut rx)) = rt.block_on(async {
        let stream = client
            .call_server_stream::<(), u32>("idle_stream", &())
            .await
            .unwrap();
        (
            stream,
            client.call_bidi::<u32, u32>("idle_bidi").await.unwrap(),
        )
    });
    let c = client.clone();
    let watch = rt.spawn_with_handle(async move { c.call::<(), ()>("watch", &()).await });
    rt.advance(100 * MS);
    server.shutdown();
    rt.advance(300 * MS - US);
    assert!(!serving.is_finished() && !watch.is_finished());
    assert!(!seen.load(Ordering::SeqCst));
    rt.advance(US);
    assert!(
        serving.is_finished(),
        "serve returned at the drain deadline"
    );
    assert!(shutting_down(&watch.try_take().unwrap()));
    assert!(
        seen.load(Ordering::SeqCst),
        "the context said it was cancelled"
    );
    let r = rt.block_on(stream.recv()).unwrap();
    assert!(shutting_down(&r), "server stream: {r:?}");
    let r = rt.block_on(rx.recv()).unwrap();
    assert!(shutting_down(&r), "bidi: {r:?}");
    assert_eq!(rt.elapsed(), 400 * MS);
}

/// The last call of a server that is shutting down is cancelled by its client: the shutdown
/// completes at that instant, not at the drain deadline. (Moved from
/// `tests/rpc_robustness.rs`, where it slept 50 ms twice and hoped the call had arrived.)
#[test]
fn shutdown_completes_when_the_last_call_is_cancelled() {
    let rt = TestRuntime::new();
    let server = server(&rt, ServerConfig::default());
    let alive = register_forever(&server);
    let (client, serving) = connect(&rt, &server, no_timeout());
    let c = client.clone();
    let call = rt.spawn_with_handle(async move { c.call::<_, ()>("forever", &()).await });
    rt.advance(10 * MS);
    assert_eq!(alive.load(Ordering::SeqCst), 1);
    server.shutdown();
    rt.advance(10 * MS);
    assert!(!serving.is_finished());
    call.abort(); // drops the call future: a Cancel goes to the server
    rt.run_until_stalled();
    serving
        .try_take()
        .expect("shutdown finished when its last call was cancelled")
        .unwrap();
    assert_eq!(rt.elapsed(), 20 * MS);
}

/// 64 pings, each answered by a pong of the same size, over a connection whose client never
/// reads: the server's write is stuck.
fn pings() -> Bytes {
    let mut out = Vec::new();
    for id in 1..=64 {
        out.extend_from_slice(&prefixed(
            Header::new(MessageKind::Ping, id),
            "",
            &[7u8; 100],
        ));
    }
    Bytes::from(out)
}

/// A graceful shutdown does not wait for a client that never reads: with no call in flight the
/// connection closes once its answers are written or `shutdown_flush_timeout` passes, exactly.
/// (Real-clock counterpart: `shutdown_does_not_wait_forever_for_a_client_that_never_reads` in
/// `tests/server_backpressure.rs`, over a Unix socket whose buffers must fill.)
#[test]
fn a_shutdown_waits_at_most_the_flush_deadline_for_a_client_that_never_reads() {
    let rt = TestRuntime::new();
    let config = ServerConfig {
        shutdown_flush_timeout: 200 * MS,
        ..ServerConfig::default()
    };
    let server = server(&rt, config);
    let (peer, s) = byte_stream(2);
    let srv = server.clone();
    let serving = rt.spawn_with_handle(async move { srv.serve(s).await });
    rt.block_on(peer.write(pings()));
    rt.advance(10 * MS);
    server.shutdown();
    rt.advance(200 * MS - US);
    assert!(!serving.is_finished(), "closed before the flush deadline");
    rt.advance(US);
    assert!(serving.is_finished(), "waited past the flush deadline");
    assert!(!peer.transport.is_connected());
    assert_eq!(rt.elapsed(), 210 * MS);
}

/// A client that half-closes and never reads: the answers queued for it get
/// `shutdown_flush_timeout` from its end of input, then the connection closes. (Real-clock
/// counterpart: `the_grace_period_ends_the_connection_at_peer_eof` in
/// `tests/server_backpressure.rs`.)
#[test]
fn the_flush_deadline_ends_the_connection_at_peer_eof() {
    let rt = TestRuntime::new();
    let config = ServerConfig {
        shutdown_flush_timeout: 200 * MS,
        ..ServerConfig::default()
    };
    let (peer, s) = byte_stream(2);
    let srv = server(&rt, config);
    let serving = rt.spawn_with_handle(async move { srv.serve(s).await });
    rt.advance(5 * MS);
    rt.block_on(async {
        peer.write(pings()).await;
        peer.shutdown_write().await;
    });
    rt.advance(200 * MS - US);
    assert!(!serving.is_finished(), "closed before the flush deadline");
    rt.advance(US);
    serving
        .try_take()
        .expect("serve returned at the flush deadline")
        .unwrap();
    assert_eq!(rt.elapsed(), 205 * MS);
    // What it read before the deadline was answered (two pongs fit in the pipe).
    let m = rt.block_on(peer.recv()).unwrap();
    assert_eq!(m.header.kind, MessageKind::Pong);
}

/// The last client handle dropped while a write waits for a server that does not read: the
/// connection is closed `close_timeout` later, exactly.
#[test]
fn a_dropped_client_waits_at_most_its_close_deadline_for_its_write() {
    let rt = TestRuntime::new();
    // One frame fits; the server end reads nothing.
    let (c, s) = pair_with_capacity(1);
    let config = RpcClientConfig {
        close_timeout: 200 * MS,
        ..RpcClientConfig::default()
    };
    let client = client(&rt, c, config);
    rt.block_on(async {
        for i in 0..3u32 {
            client.notify("note", &i).await.unwrap();
        }
    });
    rt.advance(5 * MS);
    drop(client);
    rt.advance(200 * MS - US);
    assert!(s.is_connected(), "closed before the close deadline");
    rt.advance(US);
    assert!(!s.is_connected(), "not closed at the close deadline");
    assert_eq!(rt.elapsed(), 205 * MS);
}

/// A notification sent just before the last client handle is dropped still arrives whole, and
/// the connection then closes without waiting for the close deadline. (Real-clock
/// counterpart: `a_notification_sent_just_before_the_drop_arrives` in
/// `tests/server_backpressure.rs`, with 4 MiB over a Unix socket.)
#[test]
fn a_notification_sent_just_before_the_drop_arrives() {
    let rt = TestRuntime::new();
    let server = server(&rt, ServerConfig::default());
    let got = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let g = got.clone();
    server.register_typed("sink", move |v: Vec<u8>| {
        g.store(v.len(), Ordering::SeqCst);
        async { Ok(()) }
    });
    // A pipe of one frame: the notification waits behind the one before it.
    let (c, s) = pair_with_capacity(1);
    let srv = server.clone();
    let serving = rt.spawn_with_handle(async move { srv.serve(s).await });
    let client = client(&rt, c, RpcClientConfig::default());
    rt.block_on(async {
        client.notify("sink", &vec![1u8; 10]).await.unwrap();
        client.notify("sink", &vec![7u8; 1 << 20]).await.unwrap();
    });
    drop(client);
    rt.run_until_stalled();
    assert_eq!(got.load(Ordering::SeqCst), 1 << 20);
    assert!(serving.is_finished(), "the connection closed once written");
    assert_eq!(rt.elapsed(), std::time::Duration::ZERO);
}
