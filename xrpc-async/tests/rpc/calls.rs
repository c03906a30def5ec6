//! A call's deadline, cancellation and disconnection, seen from the client.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use xrpc_async::testing::TestRuntime;
use xrpc_async::{CallContext, RpcClientConfig, RpcError, Runtime};
use xrpc_proto::ServerConfig;

use crate::{Client, MS, US, client, connect, no_timeout, pair, register_forever, server};

/// An answer takes no virtual time: nothing in the path waits on a timer.
#[test]
fn a_call_is_answered_at_once() {
    let rt = TestRuntime::new();
    let (client, _serving) = connect(&rt, &server(&rt, ServerConfig::default()), no_timeout());
    let v: u64 = rt.block_on(client.call("echo", &7u64)).unwrap();
    assert_eq!(v, 7);
    assert_eq!(rt.elapsed(), Duration::ZERO);
    // A handler that sleeps 40 ms answers 40 ms later, to the microsecond.
    let v: u64 = rt.block_on(client.call("sleep", &40u64)).unwrap();
    assert_eq!(v, 40);
    assert_eq!(rt.elapsed(), 40 * MS);
}

/// A call's timeout fires exactly at its deadline, not a virtual microsecond before — the
/// client's own deadline: the server end here reads nothing (a served call also gets the
/// server's `DeadlineExceeded` at that instant, see `server_deadlines`). (Real-clock
/// counterpart: the first half of the conformance suite's `timeouts_and_cancellation`, which
/// can only check "well within 2 s".)
#[test]
fn a_call_times_out_exactly_at_its_deadline() {
    let rt = TestRuntime::new();
    let (c, _silent) = pair();
    let client = client(&rt, c, no_timeout());
    let c = client.clone();
    let call = rt.spawn_with_handle(async move {
        c.call_with_timeout::<_, u64>("sleep", &5_000u64, 50 * MS)
            .await
    });
    rt.advance(50 * MS - US);
    assert!(!call.is_finished(), "timed out before its deadline");
    rt.advance(US);
    let r = call.try_take().expect("not timed out at its deadline");
    assert!(matches!(r, Err(RpcError::Timeout)), "{r:?}");
    assert_eq!(client.pending_calls(), 0);
    assert!(client.is_connected(), "a timeout ends only its call");
}

/// `ClientConfig::default_timeout` and `RpcClient::with_timeout` bound calls made without a
/// timeout of their own (the server end reads nothing).
#[test]
fn the_default_timeout_bounds_calls_without_their_own() {
    let rt = TestRuntime::new();
    let config = RpcClientConfig {
        default_timeout: Some(200 * MS),
        ..RpcClientConfig::default()
    };
    let (c, _silent) = pair();
    let client = client(&rt, c, config);
    let t0 = rt.now();
    let r = rt.block_on(client.call::<_, u64>("sleep", &10_000u64));
    assert!(matches!(r, Err(RpcError::Timeout)), "{r:?}");
    assert_eq!(rt.now() - t0, 200 * MS);
    let client = client.with_timeout(70 * MS);
    let t0 = rt.now();
    let r = rt.block_on(client.call::<_, u64>("sleep", &10_000u64));
    assert!(matches!(r, Err(RpcError::Timeout)), "{r:?}");
    assert_eq!(rt.now() - t0, 70 * MS);
}

/// Dropping a call future cancels its handler on the server at the same virtual instant.
/// (Real-clock counterpart: the second half of `timeouts_and_cancellation`, which had to wait
/// for the handler to start instead of dropping the call after a fixed 50 ms.)
#[test]
fn dropping_a_call_stops_its_handler_at_once() {
    let rt = TestRuntime::new();
    let server = server(&rt, ServerConfig::default());
    let alive = register_forever(&server);
    let (client, _serving) = connect(&rt, &server, no_timeout());
    let c = client.clone();
    let call = rt.spawn_with_handle(async move { c.call::<_, ()>("forever", &()).await });
    rt.advance(10 * MS);
    assert_eq!(alive.load(Ordering::SeqCst), 1, "the handler runs");
    assert_eq!(client.pending_calls(), 1);
    call.abort();
    rt.run_until_stalled();
    assert_eq!(alive.load(Ordering::SeqCst), 0, "the handler was dropped");
    assert_eq!(client.pending_calls(), 0);
    assert_eq!(rt.elapsed(), 10 * MS);
}

/// A handler sees its call's deadline, the client's timeout counted from receipt, exactly, and
/// the receipt itself, on the runtime's clock. (Real-clock counterpart:
/// `notifications_and_deadlines` in the conformance suite, which can only check that between
/// 500 and 800 ms of an 800 ms timeout are left.)
#[test]
fn a_handler_sees_its_deadline_and_its_receipt() {
    let rt = TestRuntime::new();
    let server = server(&rt, ServerConfig::default());
    let r = rt.clone();
    server.register_typed_with_context("deadline", move |ctx: CallContext, _: ()| {
        let left = ctx.deadline.map(|d| d - r.now());
        // The deadline counts from the receipt (123 ms after the connection started).
        let from_receipt = ctx.deadline.map(|d| d - ctx.started());
        async move { Ok((left, from_receipt)) }
    });
    let (client, _serving) = connect(&rt, &server, no_timeout());
    rt.advance(123 * MS);
    let (left, from_receipt): (Option<Duration>, Option<Duration>) = rt
        .block_on(client.call_with_timeout("deadline", &(), 800 * MS))
        .unwrap();
    assert_eq!(left, Some(800 * MS));
    assert_eq!(from_receipt, Some(800 * MS));
    let (left, _): (Option<Duration>, Option<Duration>) =
        rt.block_on(client.call("deadline", &())).unwrap();
    assert_eq!(left, None, "a call without a timeout has no deadline");
}

/// When the server goes away, every pending call fails with `Disconnected` at that instant,
/// and later calls fail at once. (Real-clock counterpart: `disconnect_fails_pending_calls`,
/// which allows 100 ms.)
#[test]
fn a_lost_server_fails_every_pending_call_at_once() {
    let rt = TestRuntime::new();
    let (client, serving) = connect(&rt, &server(&rt, ServerConfig::default()), no_timeout());
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = client.clone();
            rt.spawn_with_handle(async move { c.call::<_, u64>("sleep", &60_000u64).await })
        })
        .collect();
    rt.advance(20 * MS);
    assert_eq!(client.pending_calls(), 10);
    serving.abort();
    rt.run_until_stalled();
    for c in calls {
        let r = c.try_take().expect("the call ended with its connection");
        assert!(matches!(r, Err(RpcError::Disconnected(_))), "{r:?}");
    }
    assert_eq!(rt.elapsed(), 20 * MS);
    let r = rt.block_on(client.call::<_, u64>("echo", &1u64));
    assert!(matches!(r, Err(RpcError::Disconnected(_))), "{r:?}");
}

/// Stopping a client's driver (`ClientHandle::abort`) ends every pending call with
/// `Disconnected` instead of leaving it waiting. (Moved from `tests/rpc_robustness.rs`, where
/// it slept 50 ms for the call to be sent.)
#[test]
fn aborting_the_driver_fails_pending_calls() {
    let rt = TestRuntime::new();
    let server = server(&rt, ServerConfig::default());
    let alive = register_forever(&server);
    let (client, _serving) = connect(&rt, &server, no_timeout());
    let handle = client.start();
    let c = client.clone();
    let call = rt.spawn_with_handle(async move { c.call::<_, ()>("forever", &()).await });
    rt.run_until_stalled();
    assert_eq!(
        alive.load(Ordering::SeqCst),
        1,
        "the call reached its handler"
    );
    handle.abort();
    rt.run_until_stalled();
    let r = call.try_take().expect("the call ended with its driver");
    assert!(matches!(r, Err(RpcError::Disconnected(_))), "{r:?}");
}

/// A waker that looks at the client when woken (it takes the connection's lock).
struct LooksAtTheClient {
    client: Client,
    pending: AtomicUsize,
}

impl Wake for LooksAtTheClient {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let n = self.client.pending_calls();
        self.pending.store(n + 1, Ordering::SeqCst);
    }
}

/// The driver wakes a waiting call after it releases the connection's lock: a call woken
/// under it would find it taken (another thread's call sleeps again at once; here, on the
/// driver's own thread, it would deadlock).
#[test]
fn a_call_is_woken_after_the_connection_is_unlocked() {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = TestRuntime::new();
        let (client, _serving) = connect(&rt, &server(&rt, ServerConfig::default()), no_timeout());
        let look = Arc::new(LooksAtTheClient {
            client: client.clone(),
            pending: AtomicUsize::new(0),
        });
        let waker = Waker::from(look.clone());
        let mut cx = Context::from_waker(&waker);
        let mut call = Box::pin(client.call::<_, u64>("echo", &5u64));
        // The server has not run yet: the call waits, its waker left with the connection.
        assert!(call.as_mut().poll(&mut cx).is_pending());
        rt.run_until_stalled();
        let woken = look.pending.load(Ordering::SeqCst);
        let answer = call.as_mut().poll(&mut cx);
        let _ = done.send((woken, matches!(answer, Poll::Ready(Ok(5)))));
    });
    let (woken, answered) = finished
        .recv_timeout(Duration::from_secs(20))
        .expect("the call's waker ran under the connection's lock (deadlock)");
    assert!(woken > 0, "the call was not woken");
    assert!(answered, "the call did not get its answer");
}
