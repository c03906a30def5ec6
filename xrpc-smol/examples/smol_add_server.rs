//! The README's `add` service on smol: serves every client until stopped.
//!
//! ```text
//! cargo run -p xrpc-smol --example smol_add_server            # TCP on 127.0.0.1:47810 (XRPC_ADDR)
//! cargo run -p xrpc-smol --example smol_add_server -- --shm   # shared memory, service `add_smol` (XRPC_SERVICE)
//! ```
//! Then `cargo run -p xrpc-smol --example smol_add_client` (with the same `--shm`).

use serde::{Deserialize, Serialize};
use xrpc_smol::{
    RpcServer, SharedMemoryConfig, SharedMemoryFrameTransportListener, TcpConfig,
    TcpFrameTransportListener,
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
        let server = RpcServer::new();
        server.register_typed("add", |req: AddRequest| async move {
            Ok(AddResponse {
                result: req.a + req.b,
            })
        });
        if std::env::args().any(|a| a == "--shm") {
            let name = std::env::var("XRPC_SERVICE").unwrap_or_else(|_| "add_smol".into());
            let listener =
                SharedMemoryFrameTransportListener::bind(&name, SharedMemoryConfig::default())?;
            println!("serving add on shared memory service {name}");
            server.serve_listener(listener).await?;
        } else {
            let addr = std::env::var("XRPC_ADDR").unwrap_or_else(|_| "127.0.0.1:47810".into());
            let listener =
                TcpFrameTransportListener::bind(addr.as_str(), TcpConfig::default()).await?;
            println!("serving add on {}", listener.local_addr()?);
            server.serve_listener(listener).await?;
        }
        Ok(())
    })
}
