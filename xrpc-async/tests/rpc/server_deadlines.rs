//! The server's deadlines: a call's (answered `DeadlineExceeded`), a notification's, the idle
//! deadline and the partial-frame deadline, each at its exact instant. (Real-clock
//! counterparts, one per transport: `tests/bounds.rs`, which allows seconds for 300 ms
//! deadlines and checks only "not before 250 ms".)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use xrpc_async::testing::TestRuntime;
use xrpc_async::{MessageChannel, RpcClientConfig, RpcError};
use xrpc_proto::{ErrorCode, Header, MessageKind, RemoteError, ServerConfig};

use crate::raw::{Peer, byte_stream, prefixed};
use crate::{Alive, MS, Server, US, client, no_timeout, pair, register_forever, server};

/// Serves `server` on a byte stream of `capacity` chunks each way; returns the raw peer (shared
/// by the test's tasks) and the serving task.
fn serve_raw(
    rt: &TestRuntime,
    server: &Server,
    capacity: usize,
) -> (
    Arc<Peer>,
    xrpc_async::testing::JoinHandle<Result<(), RpcError>>,
) {
    let (peer, s) = byte_stream(capacity);
    let srv = server.clone();
    (
        Arc::new(peer),
        rt.spawn_with_handle(async move { srv.serve(s).await }),
    )
}

/// A request whose header carries a timeout is answered `DeadlineExceeded` at its deadline
/// (counted from receipt), not a microsecond before, and its handler is stopped then.
#[test]
fn the_server_answers_deadline_exceeded_at_the_deadline() {
    let rt = TestRuntime::new();
    let server = server(&rt, ServerConfig::default());
    let alive = register_forever(&server);
    let (peer, _serving) = serve_raw(&rt, &server, 16);
    rt.advance(5 * MS);
    rt.block_on(peer.call(1, "forever", &(), Some(50 * MS)));
    let p = peer.clone();
    let answer = rt.spawn_with_handle(async move { p.recv().await });
    rt.advance(50 * MS - US);
    assert!(!answer.is_finished(), "answered before the deadline");
    assert_eq!(alive.load(Ordering::SeqCst), 1);
    rt.advance(US);
    let m = answer
        .try_take()
        .expect("answered at the deadline")
        .unwrap();
    assert_eq!((m.header.kind, m.header.id), (MessageKind::Error, 1));
    assert_eq!(
        RemoteError::decode(&m.payload).code,
        ErrorCode::DeadlineExceeded
    );
    assert_eq!(alive.load(Ordering::SeqCst), 0, "the handler was stopped");
    assert_eq!(rt.elapsed(), 55 * MS);
}

/// A server's `DeadlineExceeded` is the client's `Timeout` (here from a raw server that answers
/// so before the client's own deadline).
#[test]
fn a_deadline_exceeded_answer_is_a_timeout_for_the_client() {
    let rt = TestRuntime::new();
    let (c, s) = pair();
    let client = client(&rt, c, no_timeout());
    let c2 = client.clone();
    let call = rt.spawn_with_handle(async move {
        c2.call_with_timeout::<_, u64>("echo", &1u64, Duration::from_secs(10))
            .await
    });
    rt.block_on(async {
        let request = s.recv().await.unwrap();
        assert_eq!(request.header.timeout, Some(Duration::from_secs(10)));
        rt.sleep(10 * MS).await;
        let mut payload = bytes::BytesMut::new();
        RemoteError::new(ErrorCode::DeadlineExceeded, "too late").encode_into(&mut payload);
        let answer = xrpc_proto::Message::new(
            Header::new(MessageKind::Error, request.header.id),
            "",
            payload.freeze(),
        )
        .unwrap();
        s.send(&answer).await.unwrap();
    });
    rt.run_until_stalled();
    let r = call.try_take().expect("the answer ended the call");
    assert!(matches!(r, Err(RpcError::Timeout)), "{r:?}");
    assert_eq!(rt.elapsed(), 10 * MS);
}

/// A notification's handler is stopped at `notification_timeout` (or at the shorter timeout
/// its header carries), and notifications count against `max_concurrent_calls`: past it they
/// are dropped. (Real-clock counterpart: `notifications_are_bounded_in_number_and_time` in
/// `tests/bounds.rs`, which polls for 3 s.)
#[test]
fn notification_handlers_are_bounded_in_number_and_stopped_at_their_deadline() {
    let rt = TestRuntime::new();
    let config = ServerConfig {
        max_concurrent_calls: 64,
        notification_timeout: 300 * MS,
        ..ServerConfig::default()
    };
    let server = server(&rt, config);
    let alive = Arc::new(AtomicUsize::new(0));
    let a = alive.clone();
    server.register_typed("sleep_forever", move |_: ()| {
        let guard = Alive::new(&a);
        async move {
            let _guard = guard;
            std::future::pending::<Result<(), RpcError>>().await
        }
    });
    let (peer, _serving) = serve_raw(&rt, &server, 1024);
    rt.block_on(async {
        // One past the limit: it is dropped (and the connection held until a handler ends).
        for _ in 0..65 {
            let payload = xrpc_proto::Codec::encode(&xrpc_proto::BincodeCodec, &()).unwrap();
            let header = Header::new(MessageKind::Notification, 0)
                .with_codec(<xrpc_proto::BincodeCodec as xrpc_proto::Codec>::ID);
            peer.write(prefixed(header, "sleep_forever", &payload))
                .await;
        }
    });
    rt.run_until_stalled();
    assert_eq!(alive.load(Ordering::SeqCst), 64, "at most the call limit");
    rt.advance(300 * MS - US);
    assert_eq!(alive.load(Ordering::SeqCst), 64);
    rt.advance(US);
    assert_eq!(alive.load(Ordering::SeqCst), 0, "stopped at their deadline");
    // A shorter timeout in the header wins.
    rt.block_on(async {
        let payload = xrpc_proto::Codec::encode(&xrpc_proto::BincodeCodec, &()).unwrap();
        let header = Header {
            timeout: Some(40 * MS),
            ..Header::new(MessageKind::Notification, 0)
                .with_codec(<xrpc_proto::BincodeCodec as xrpc_proto::Codec>::ID)
        };
        peer.write(prefixed(header, "sleep_forever", &payload))
            .await;
    });
    rt.run_until_stalled();
    assert_eq!(alive.load(Ordering::SeqCst), 1);
    rt.advance(40 * MS - US);
    assert_eq!(alive.load(Ordering::SeqCst), 1);
    rt.advance(US);
    assert_eq!(alive.load(Ordering::SeqCst), 0);
}

/// With the default deadline (30 s), the end of the connection stops notification handlers,
/// at that instant.
#[test]
fn notification_handlers_stop_with_their_connection() {
    let rt = TestRuntime::new();
    let server = server(&rt, ServerConfig::default());
    let alive = register_forever(&server);
    let (c, s) = pair();
    let srv = server.clone();
    let serving = rt.spawn_with_handle(async move { srv.serve(s).await });
    let client = client(&rt, c, RpcClientConfig::default());
    rt.block_on(async {
        for _ in 0..10 {
            client.notify("forever", &()).await.unwrap();
        }
    });
    rt.advance(MS);
    assert_eq!(alive.load(Ordering::SeqCst), 10);
    rt.block_on(client.close());
    rt.run_until_stalled();
    assert_eq!(alive.load(Ordering::SeqCst), 0);
    assert!(serving.is_finished());
    assert_eq!(rt.elapsed(), MS);
}

/// A connection with no call in progress and nothing received for `idle_timeout` is closed
/// then; a call or any message received starts the idle clock again.
#[test]
fn an_idle_connection_is_closed_at_its_idle_deadline() {
    let rt = TestRuntime::new();
    let config = ServerConfig {
        idle_timeout: Some(300 * MS),
        ..ServerConfig::default()
    };
    let server = server(&rt, config);
    let (peer, serving) = serve_raw(&rt, &server, 16);
    // A call at 100 ms that takes 50 ms: idle again from 150 ms.
    rt.advance(100 * MS);
    rt.block_on(peer.call(1, "sleep", &50u64, None));
    let m = rt.block_on(peer.recv()).unwrap();
    assert_eq!(m.header.kind, MessageKind::Response);
    assert_eq!(rt.elapsed(), 150 * MS);
    let p = peer.clone();
    let closed = rt.spawn_with_handle(async move { p.recv().await });
    rt.advance(300 * MS - US);
    assert!(!closed.is_finished(), "closed before the idle deadline");
    assert!(!serving.is_finished());
    rt.advance(US);
    let r = closed.try_take().expect("closed at the idle deadline");
    assert!(r.is_err(), "{r:?}");
    assert!(serving.is_finished());
    assert_eq!(rt.elapsed(), 450 * MS);
}

/// A frame whose first bytes arrived must be whole within `frame_timeout`, even on a connection
/// with a call in progress (which is not idle): one finished in time is served, one that stays
/// partial closes the connection at its deadline and stops the running handlers. (Real-clock
/// counterparts: the partial-frame cases of `tests/bounds.rs` over TCP, Unix and shared memory.)
#[test]
fn a_partial_frame_closes_the_connection_at_its_deadline() {
    let rt = TestRuntime::new();
    let config = ServerConfig {
        frame_timeout: Some(300 * MS),
        ..ServerConfig::default()
    };
    let server = server(&rt, config);
    let alive = register_forever(&server);
    let (peer, serving) = serve_raw(&rt, &server, 16);
    rt.block_on(peer.call(1, "forever", &(), None));
    // A request in two pieces, the second 1 µs before the frame deadline: served.
    let payload = xrpc_proto::Codec::encode(&xrpc_proto::BincodeCodec, &7u64).unwrap();
    let header = Header::new(MessageKind::Request, 2)
        .with_codec(<xrpc_proto::BincodeCodec as xrpc_proto::Codec>::ID);
    let whole = prefixed(header, "echo", &payload);
    rt.block_on(peer.write(whole.slice(..10)));
    rt.advance(300 * MS - US);
    rt.block_on(peer.write(whole.slice(10..)));
    let m = rt.block_on(peer.recv()).unwrap();
    assert_eq!((m.header.kind, m.header.id), (MessageKind::Response, 2));
    assert_eq!(alive.load(Ordering::SeqCst), 1);
    // Then 10 bytes of a 16 MiB frame, and nothing more.
    let mut stuck = (16u32 << 20).to_le_bytes().to_vec();
    stuck.extend_from_slice(b"XR\x01\x01\x00\x01");
    rt.advance(100 * MS);
    let since = rt.elapsed();
    rt.block_on(peer.write(Bytes::from(stuck)));
    let p = peer.clone();
    let closed = rt.spawn_with_handle(async move { p.recv().await });
    rt.advance(300 * MS - US);
    assert!(!closed.is_finished(), "closed before the frame deadline");
    rt.advance(US);
    let r = closed.try_take().expect("closed at the frame deadline");
    assert!(r.is_err(), "{r:?}");
    assert_eq!(rt.elapsed(), since + 300 * MS);
    assert_eq!(alive.load(Ordering::SeqCst), 0, "its handlers were stopped");
    // A deadline of the server's own is not an error of `serve`.
    assert!(serving.try_take().expect("serve returned").is_ok());
}
