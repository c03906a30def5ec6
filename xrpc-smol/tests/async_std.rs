//! A client and a server of `xrpc-smol` under async-std's executor: the server's accept loop
//! and the calling code are async-std tasks (connection drivers go to smol's global
//! executor), over TCP, Unix and shared memory. One body, one test per transport.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xrpc_shm::testing::unique_name;
use xrpc_smol::{
    FrameListener, FrameTransport, MessageChannelAdapter, RpcClient, RpcError, RpcServer,
    ServerStreamSender, SharedMemoryConfig, SharedMemoryFrameTransport,
    SharedMemoryFrameTransportListener, TcpConfig, TcpFrameTransport, TcpFrameTransportListener,
    UnixConfig, UnixFrameTransport, UnixFrameTransportListener,
};

#[derive(Debug, Serialize, Deserialize)]
struct AddRequest {
    a: i32,
    b: i32,
}

#[derive(Debug, Serialize, Deserialize)]
struct AddResponse {
    result: i32,
}

fn server() -> RpcServer {
    let server = RpcServer::new();
    server.register_typed("add", |req: AddRequest| async move {
        Ok(AddResponse {
            result: req.a + req.b,
        })
    });
    server.register_typed("fail", |msg: String| async move {
        Err::<(), _>(RpcError::server(msg))
    });
    server.register_typed("sleep_ms", |ms: u64| async move {
        async_std::task::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    });
    server.register_stream("count", |n: u32, tx: ServerStreamSender<u32>| async move {
        for i in 0..n {
            tx.send(&i).await?;
        }
        Ok(())
    });
    server
}

/// Serves `listener` from an async-std task, connects with `connect` and checks a unary
/// call, a remote error, a timeout and a server stream of 10,000 items, then shuts down.
async fn body<L, T, Fut>(listener: L, connect: impl FnOnce() -> Fut)
where
    L: FrameListener,
    T: FrameTransport,
    Fut: Future<Output = T>,
{
    // Inside an async-std task (this panics elsewhere).
    let _ = async_std::task::current();
    let server = server();
    let serving = async_std::task::spawn({
        let server = server.clone();
        async move { server.serve_listener(listener).await }
    });
    let client = RpcClient::new(MessageChannelAdapter::new(connect().await));
    let _driver = client.start();

    let resp: AddResponse = client
        .call("add", &AddRequest { a: 40, b: 2 })
        .await
        .unwrap();
    assert_eq!(resp.result, 42);
    match client.call::<_, ()>("fail", &"no".to_string()).await {
        Err(RpcError::ServerError { message, .. }) => assert_eq!(message, "no"),
        other => panic!("expected the handler's error, got {other:?}"),
    }
    match client
        .call_with_timeout::<_, u64>("sleep_ms", &2_000u64, Duration::from_millis(50))
        .await
    {
        Err(RpcError::Timeout) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    let items = client
        .call_server_stream::<_, u32>("count", &10_000u32)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(items, (0..10_000).collect::<Vec<_>>());

    server.shutdown();
    async_std::future::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the server stops after shutdown")
        .unwrap();
}

#[async_std::test]
async fn tcp_under_async_std() {
    let listener = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    body(listener, || async move {
        TcpFrameTransport::connect(addr, TcpConfig::default())
            .await
            .unwrap()
    })
    .await;
}

#[async_std::test]
async fn unix_under_async_std() {
    let path = std::env::temp_dir().join(unique_name("smol-async-std.sock"));
    let listener = UnixFrameTransportListener::bind(&path, UnixConfig::default())
        .await
        .unwrap();
    body(listener, || async {
        UnixFrameTransport::connect(&path, UnixConfig::default())
            .await
            .unwrap()
    })
    .await;
}

#[async_std::test]
async fn shm_under_async_std() {
    let name = unique_name("smol-async-std");
    let listener =
        SharedMemoryFrameTransportListener::bind(&name, SharedMemoryConfig::default()).unwrap();
    body(listener, || async {
        SharedMemoryFrameTransport::connect(&name, SharedMemoryConfig::default())
            .await
            .unwrap()
    })
    .await;
}
