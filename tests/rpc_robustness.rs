//! Regressions found in review: calls and streams that could hang, answers that could be lost.

use std::time::Duration;

use bytes::Bytes;
use xrpc::proto::{ClientConfig, Header, Message, MessageKind};
use xrpc::{
    ChannelConfig, ChannelFrameTransport, MessageChannel, MessageChannelAdapter, RequestStream,
    RpcClient, RpcServer, ServerStreamSender, UnixConfig, UnixFrameTransport,
};

type Chan = MessageChannelAdapter<ChannelFrameTransport>;

fn pair() -> (Chan, Chan) {
    let (a, b) = ChannelFrameTransport::create_pair("robustness", ChannelConfig::default());
    (MessageChannelAdapter::new(a), MessageChannelAdapter::new(b))
}

/// The last call of a server that is shutting down is cancelled by its client: the shutdown
/// must complete (nothing else will wake the server's timer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_when_the_last_call_is_cancelled() {
    let (a, b) = pair();
    let server = RpcServer::new();
    server.register("forever", |_b: Bytes| async move {
        std::future::pending::<()>().await;
        Ok(Bytes::new())
    });
    let s2 = server.clone();
    let serve = tokio::spawn(async move { s2.serve(b).await });
    let config = ClientConfig {
        default_timeout: None,
        ..ClientConfig::default()
    };
    let client = RpcClient::with_config(a, config);
    let c2 = client.clone();
    let call = tokio::spawn(async move { c2.call_raw("forever", Bytes::new()).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    call.abort(); // drops the call future: a Cancel goes to the server
    tokio::time::timeout(Duration::from_secs(3), serve)
        .await
        .expect("graceful shutdown finished after the last call was cancelled")
        .unwrap()
        .unwrap();
}

/// A client stream sender waiting for credit returns (with an error) once its call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_waiting_for_credit_wakes_when_the_call_ends() {
    let (a, b) = pair();
    let server = RpcServer::new();
    server.register_bidi(
        "bidi",
        |rs: RequestStream<u32>, _tx: ServerStreamSender<u32>| async move {
            let _keep = rs; // never reads: no credit comes back
            std::future::pending::<()>().await;
            Ok(())
        },
    );
    tokio::spawn(async move { server.serve(b).await });
    let client = RpcClient::new(a);
    let (tx, rx) = client.call_bidi::<u32, u32>("bidi").await.unwrap();
    let sender = tokio::spawn(async move {
        let mut n = 0u32;
        loop {
            if tx.send(&n).await.is_err() {
                return n;
            }
            n += 1;
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !sender.is_finished(),
        "the sender is held at the credit limit"
    );
    drop(rx); // cancels the call
    let sent = tokio::time::timeout(Duration::from_secs(3), sender)
        .await
        .expect("the waiting sender returned")
        .unwrap();
    assert!(sent > 0);
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

/// Stopping a client's driver (its task aborted) ends every pending call with a typed error
/// instead of leaving it waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_the_driver_fails_pending_calls() {
    let (a, b) = pair();
    let server = RpcServer::new();
    server.register("forever", |_b: Bytes| async move {
        std::future::pending::<()>().await;
        Ok(Bytes::new())
    });
    tokio::spawn(async move { server.serve(b).await });
    let config = ClientConfig {
        default_timeout: None,
        ..ClientConfig::default()
    };
    let client = RpcClient::with_config(a, config);
    let handle = client.start();
    let c2 = client.clone();
    let call = tokio::spawn(async move { c2.call_raw("forever", Bytes::new()).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    handle.abort();
    let r = tokio::time::timeout(Duration::from_secs(3), call)
        .await
        .expect("the call ended after the driver stopped")
        .unwrap();
    assert!(matches!(r, Err(xrpc::RpcError::Disconnected(_))), "{r:?}");
}

/// Two tasks sending on one shared stream sender both wait for credit and both are woken: a
/// sender keeps every waiting task's waker (one slot lost a wake-up, and that task hung).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_sharing_a_stream_sender_all_get_credit() {
    let (a, b) = pair();
    let server = RpcServer::new();
    server.register_client_stream("sum", |mut items: RequestStream<u32>| async move {
        // Reads slowly: both senders run out of credit (16 items) and wait.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut n = 0u32;
        while let Some(item) = items.recv().await {
            item?;
            n += 1;
        }
        Ok(n)
    });
    tokio::spawn(async move { server.serve(b).await });
    let client = RpcClient::new(a);
    let (sender, response) = client.call_client_stream::<u32, u32>("sum").await.unwrap();
    let sender = std::sync::Arc::new(sender);
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let s = sender.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    s.send(&i).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("a sender waiting for credit was never woken")
            .unwrap();
    }
    drop(sender);
    assert_eq!(response.await.unwrap(), 80);
}

/// A client stream read after its call was cancelled fails with `Cancelled` rather than
/// ending as if the client had sent everything (a handler that handed its stream to another
/// task would otherwise take part of the input for all of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_of_a_cancelled_call_does_not_end_normally() {
    let (a, b) = pair();
    let server = RpcServer::new();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<Vec<String>>();
    let seen_tx = std::sync::Mutex::new(Some(seen_tx));
    server.register_client_stream("upload", move |mut rs: RequestStream<u32>| {
        let report = seen_tx.lock().unwrap().take();
        async move {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    match rs.recv().await {
                        Some(Ok(v)) => seen.push(format!("item {v}")),
                        Some(Err(e)) => {
                            seen.push(format!("error {e}"));
                            break;
                        }
                        None => {
                            seen.push("end".into());
                            break;
                        }
                    }
                }
                if let Some(r) = report {
                    let _ = r.send(seen);
                }
            });
            std::future::pending::<()>().await;
            Ok(0u32)
        }
    });
    tokio::spawn(async move { server.serve(b).await });
    let client = RpcClient::new(a);
    let (tx, resp) = client
        .call_client_stream::<u32, u32>("upload")
        .await
        .unwrap();
    tx.send(&7).await.unwrap();
    // The call is cancelled before the client ends its stream.
    let _ = tokio::time::timeout(Duration::from_millis(200), resp).await;
    drop(tx);
    let seen = tokio::time::timeout(Duration::from_secs(3), seen_rx)
        .await
        .expect("the reader finished")
        .unwrap();
    assert_eq!(seen.first().map(String::as_str), Some("item 7"), "{seen:?}");
    assert!(
        seen.last().is_some_and(|s| s.starts_with("error")),
        "the stream of a cancelled call ended normally: {seen:?}"
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
