//! Streams and their credit: who waits, and who is woken when. (Moved from
//! `tests/rpc_robustness.rs`, where each waited a fixed 100 or 200 ms of real time for the
//! state it checks, and from the conformance suite's `slow_consumer_holds_the_producer`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::{Either, select};
use xrpc_async::testing::TestRuntime;
use xrpc_async::{RequestStream, RpcClientConfig, Runtime, ServerStreamSender};
use xrpc_proto::ServerConfig;

use crate::{MS, connect, server};

/// A server stream's producer runs exactly a window ahead of a consumer that does not read,
/// and consuming releases it in steps of half the window.
#[test]
fn a_slow_consumer_holds_the_producer_to_its_window() {
    let rt = TestRuntime::new();
    let server = server(&rt, ServerConfig::default());
    let produced = Arc::new(AtomicUsize::new(0));
    let p = produced.clone();
    server.register_stream("firehose", move |_: (), tx: ServerStreamSender<u64>| {
        let p = p.clone();
        async move {
            for i in 0.. {
                tx.send(&i).await?;
                p.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    });
    let (client, _serving) = connect(&rt, &server, RpcClientConfig::default());
    let mut rx = rt
        .block_on(client.call_server_stream::<_, u64>("firehose", &()))
        .unwrap();
    rt.advance(100 * MS);
    let window = RpcClientConfig::default().stream_window as usize;
    assert_eq!(produced.load(Ordering::SeqCst), window);
    // Half a window consumed, less one: no new credit yet.
    rt.block_on(async {
        for i in 0..(window / 2 - 1) {
            assert_eq!(rx.recv().await.unwrap().unwrap(), i as u64);
        }
    });
    rt.run_until_stalled();
    assert_eq!(produced.load(Ordering::SeqCst), window);
    rt.block_on(async { rx.recv().await.unwrap().unwrap() });
    rt.run_until_stalled();
    assert_eq!(produced.load(Ordering::SeqCst), window + window / 2);
    drop(rx);
}

/// A client stream sender waiting for credit returns (with an error) once its call ends.
#[test]
fn a_sender_waiting_for_credit_wakes_when_the_call_ends() {
    let rt = TestRuntime::new();
    let server = server(&rt, ServerConfig::default());
    server.register_bidi(
        "bidi",
        |rs: RequestStream<u32>, _tx: ServerStreamSender<u32>| async move {
            let _keep = rs; // never reads: no credit comes back
            std::future::pending::<()>().await;
            Ok(())
        },
    );
    let (client, _serving) = connect(&rt, &server, RpcClientConfig::default());
    let (tx, rx) = rt.block_on(client.call_bidi::<u32, u32>("bidi")).unwrap();
    let sender = rt.spawn_with_handle(async move {
        let mut n = 0u32;
        while tx.send(&n).await.is_ok() {
            n += 1;
        }
        n
    });
    rt.advance(100 * MS);
    assert!(
        !sender.is_finished(),
        "the sender is held at the credit limit"
    );
    drop(rx); // cancels the call
    rt.run_until_stalled();
    let sent = sender.try_take().expect("the waiting sender returned");
    assert!(sent > 0);
}

/// Two tasks sending on one shared stream sender both wait for credit and both are woken (one
/// slot for a waker lost a wake-up, and that task hung).
#[test]
fn tasks_sharing_a_stream_sender_all_get_credit() {
    let rt = TestRuntime::new();
    let server = server(&rt, ServerConfig::default());
    let r = rt.clone();
    server.register_client_stream("sum", move |mut items: RequestStream<u32>| {
        let r = r.clone();
        async move {
            // Reads late: both senders run out of credit and wait.
            r.sleep(100 * MS).await;
            let mut n = 0u32;
            while let Some(item) = items.recv().await {
                item?;
                n += 1;
            }
            Ok(n)
        }
    });
    let (client, _serving) = connect(&rt, &server, RpcClientConfig::default());
    let (sender, response) = rt
        .block_on(client.call_client_stream::<u32, u32>("sum"))
        .unwrap();
    let sender = Arc::new(sender);
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let s = sender.clone();
            rt.spawn_with_handle(async move {
                for i in 0..40 {
                    s.send(&i).await.unwrap();
                }
            })
        })
        .collect();
    rt.advance(100 * MS - MS);
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "both wait for credit"
    );
    rt.advance(MS);
    rt.run_until_stalled();
    for t in &tasks {
        assert!(
            t.is_finished(),
            "a sender waiting for credit was never woken"
        );
    }
    drop(sender);
    assert_eq!(rt.block_on(response).unwrap(), 80);
}

/// A client stream read after its call was cancelled fails with `Cancelled` rather than ending
/// as if the client had sent everything (a handler that handed its stream to another task
/// would otherwise take part of the input for all of it).
#[test]
fn a_client_stream_of_a_cancelled_call_does_not_end_normally() {
    let rt = TestRuntime::new();
    let server = server(&rt, ServerConfig::default());
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let (s, r) = (seen.clone(), rt.clone());
    server.register_client_stream("upload", move |mut rs: RequestStream<u32>| {
        let seen = s.clone();
        r.spawn(async move {
            loop {
                let next = rs.recv().await;
                let mut seen = seen.lock().unwrap();
                match next {
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
        });
        async move {
            std::future::pending::<()>().await;
            Ok(0u32)
        }
    });
    let (client, _serving) = connect(&rt, &server, RpcClientConfig::default());
    let (tx, resp) = rt
        .block_on(client.call_client_stream::<u32, u32>("upload"))
        .unwrap();
    rt.block_on(tx.send(&7)).unwrap();
    // The call is cancelled (its response future dropped) before the client ends its stream.
    let gave_up = rt.block_on(async {
        matches!(
            select(std::pin::pin!(resp), rt.sleep(200 * MS)).await,
            Either::Right(_)
        )
    });
    assert!(gave_up);
    drop(tx);
    rt.run_until_stalled();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.first().map(String::as_str), Some("item 7"), "{seen:?}");
    assert!(
        seen.last().is_some_and(|s| s.starts_with("error")),
        "the stream of a cancelled call ended normally: {seen:?}"
    );
}
