//! Regressions found in review: calls and streams that could hang, answers that could be lost —
//! the ones that need a real socket or real threads. Those that only waited a fixed time for
//! the state they check (a shutdown whose last call is cancelled, senders waiting for credit,
//! an aborted driver, the stream of a cancelled call) run on a virtual clock in
//! `xrpc-async/tests/rpc/` (`shutdown.rs`, `streams.rs`, `calls.rs`).

use std::time::Duration;

use bytes::Bytes;
use xrpc::proto::{ClientConfig, Header, Message, MessageKind};
use xrpc::{
    ChannelConfig, ChannelFrameTransport, MessageChannel, MessageChannelAdapter, RpcClient,
    RpcServer, UnixConfig, UnixFrameTransport,
};

type Chan = MessageChannelAdapter<ChannelFrameTransport>;

fn pair() -> (Chan, Chan) {
    let (a, b) = ChannelFrameTransport::create_pair("robustness", ChannelConfig::default());
    (MessageChannelAdapter::new(a), MessageChannelAdapter::new(b))
}

/// Requests followed by a half-close of the client's write side are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_a_half_close_are_answered() {
    let (c, s) = std::os::unix::net::UnixStream::pair().unwrap();
    for x in [&c, &s] {
        x.set_nonblocking(true).unwrap();
    }
    let c_dup = c.try_clone().unwrap();
    let server = RpcServer::new();
    server.register("echo", |b: Bytes| async move { Ok(b) });
    let s = tokio::net::UnixStream::from_std(s).unwrap();
    let sch = MessageChannelAdapter::new(
        UnixFrameTransport::from_stream(s, UnixConfig::default(), "s").unwrap(),
    );
    let serve = tokio::spawn(async move { server.serve(sch).await });
    let c = tokio::net::UnixStream::from_std(c).unwrap();
    let cch = MessageChannelAdapter::new(
        UnixFrameTransport::from_stream(c, UnixConfig::default(), "c").unwrap(),
    );
    for id in 1..=3u64 {
        let msg = Message::new(
            Header::new(MessageKind::Request, id),
            "echo",
            Bytes::from_static(b"hi"),
        )
        .unwrap();
        cch.send(&msg).await.unwrap();
    }
    c_dup.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answered = 0;
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(2), cch.recv()).await {
        assert_eq!(m.header.kind, MessageKind::Response);
        answered += 1;
    }
    assert_eq!(answered, 3);
    let _ = serve.await;
}

/// A handler that panics while it builds its future (before any `.await`) fails its call
/// with a Panic error; the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_before_its_future_fails_only_its_call() {
    let (a, b) = pair();
    let server = RpcServer::new();
    server.register(
        "boom",
        |_b: Bytes| -> std::future::Ready<Result<Bytes, xrpc::RpcError>> {
            panic!("no future for you")
        },
    );
    server.register("ok", |b: Bytes| async move { Ok(b) });
    tokio::spawn(async move { server.serve(b).await });
    let client = RpcClient::new(a);
    match client.call_raw("boom", Bytes::new()).await {
        Err(xrpc::RpcError::ServerError { code, message }) => {
            assert_eq!(code, xrpc::proto::ErrorCode::Panic);
            assert!(message.contains("no future for you"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        client
            .call_raw("ok", Bytes::from_static(b"x"))
            .await
            .unwrap(),
        Bytes::from_static(b"x")
    );
}

/// Calls from several threads and tasks at once on one client: a call that drove the
/// connection and then finds other calls in flight hands the driver back to its task — a
/// write the driver put off for the batch must not wait for a wake-up that went to that call
/// (found as a stalled call under load).
#[test]
fn calls_from_many_threads_and_tasks_at_once_all_complete() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (a, b) = pair();
    let server = RpcServer::new();
    server.register("echo", |b: Bytes| async move { Ok(b) });
    let _guard = rt.enter();
    let s2 = server.clone();
    rt.spawn(async move { s2.serve(b).await });
    let config = ClientConfig {
        default_timeout: Some(Duration::from_secs(10)),
        ..ClientConfig::default()
    };
    let client = RpcClient::with_config(a, config);
    let _driver = client.start();
    let started = std::time::Instant::now();
    let callers: Vec<_> = (0..6)
        .map(|t| {
            let client = client.clone();
            let handle = rt.handle().clone();
            std::thread::spawn(move || {
                for i in 0..300u32 {
                    let body = Bytes::from(format!("{t}-{i}"));
                    // Half the threads call from `block_on` (the caller drives), half from a
                    // task of the runtime.
                    let got = if t % 2 == 0 {
                        handle.block_on(client.call_raw("echo", body.clone()))
                    } else {
                        let c = client.clone();
                        let b2 = body.clone();
                        handle
                            .block_on(handle.spawn(async move { c.call_raw("echo", b2).await }))
                            .expect("task")
                    };
                    assert_eq!(got.expect("call"), body);
                }
            })
        })
        .collect();
    for c in callers {
        c.join().expect("caller thread");
    }
    // Each call takes microseconds; a stalled one waits for its 10 s timeout or forever.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}
