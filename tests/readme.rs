//! The original xrpc-rs README example, verbatim but for the crate name, over shared memory.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use xrpc::{
    MessageChannelAdapter, RpcClient, RpcServer, SharedMemoryConfig, SharedMemoryFrameTransport,
};

#[derive(Serialize, Deserialize)]
struct AddRequest {
    a: i32,
    b: i32,
}
#[derive(Serialize, Deserialize)]
struct AddResponse {
    result: i32,
}

async fn server() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // =================== Server
    let transport =
        SharedMemoryFrameTransport::create_server("my_service", SharedMemoryConfig::default())?;
    let channel = Arc::new(MessageChannelAdapter::new(transport));
    let server = RpcServer::new();
    server.register_typed("add", |req: AddRequest| async move {
        Ok(AddResponse {
            result: req.a + req.b,
        })
    });
    server.serve(channel).await?;
    Ok(())
}

async fn client() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // =================== Client
    let transport = SharedMemoryFrameTransport::connect_client("my_service")?;
    let channel = MessageChannelAdapter::new(transport);
    let client = RpcClient::new(channel);
    let _handle = client.start();
    let resp: AddResponse = client.call("add", &AddRequest { a: 1, b: 2 }).await?;
    assert_eq!(resp.result, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_readme_example_runs() {
    let srv = tokio::spawn(server());
    // The server binds before its first await; give the task a moment to run.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    tokio::task::spawn_blocking(|| {
        tokio::runtime::Handle::current().block_on(async { client().await.unwrap() })
    })
    .await
    .unwrap();
    // The client is gone: the server's connection ends and `serve` returns.
    tokio::time::timeout(std::time::Duration::from_secs(5), srv)
        .await
        .expect("serve returns when the client disconnects")
        .unwrap()
        .unwrap();
}
