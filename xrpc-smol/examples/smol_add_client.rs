//! Calls the `add` service of `add_server` (same flags) from a plain `fn main` on smol.
//!
//! ```text
//! cargo run -p xrpc-smol --example smol_add_client            # TCP to 127.0.0.1:47810 (XRPC_ADDR)
//! cargo run -p xrpc-smol --example smol_add_client -- --shm   # shared memory (XRPC_SERVICE)
//! ```

use serde::{Deserialize, Serialize};
use xrpc_smol::{
    MessageChannelAdapter, RpcClient, SharedMemoryConfig, SharedMemoryFrameTransport, TcpConfig,
    TcpFrameTransport,
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let request = AddRequest { a: 1, b: 2 };
        let response: AddResponse = if std::env::args().any(|a| a == "--shm") {
            let name = std::env::var("XRPC_SERVICE").unwrap_or_else(|_| "add_smol".into());
            let transport =
                SharedMemoryFrameTransport::connect(&name, SharedMemoryConfig::default()).await?;
            let client = RpcClient::new(MessageChannelAdapter::new(transport));
            let _driver = client.start();
            client.call("add", &request).await?
        } else {
            let addr = std::env::var("XRPC_ADDR").unwrap_or_else(|_| "127.0.0.1:47810".into());
            let transport = TcpFrameTransport::connect(&addr, TcpConfig::default()).await?;
            let client = RpcClient::new(MessageChannelAdapter::new(transport));
            let _driver = client.start();
            client.call("add", &request).await?
        };
        println!("{} + {} = {}", request.a, request.b, response.result);
        assert_eq!(response.result, 3);
        Ok(())
    })
}
