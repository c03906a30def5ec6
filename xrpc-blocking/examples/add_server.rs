//! The `add` service with no async runtime: a plain `fn main`, a thread per connection.
//!
//! ```text
//! cargo run -p xrpc-blocking --example add_server                 # TCP, XRPC_ADDR or 127.0.0.1:47800
//! cargo run -p xrpc-blocking --example add_server -- --shm        # shared memory, XRPC_SERVICE or my_service
//! cargo run -p xrpc-blocking --example add_server -- --unix PATH  # a Unix socket
//! ```
//!
//! Any xrpc client calls it: `add_client` of this crate, or the tokio example
//! `rpc_client_server -- client`.

use serde::{Deserialize, Serialize};
use xrpc_blocking::{
    RpcError, RpcServer, ServerStreamSender, SharedMemoryConfig,
    SharedMemoryFrameTransportListener, TcpConfig, TcpFrameTransportListener, UnixConfig,
    UnixFrameTransportListener,
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

fn main() -> Result<(), RpcError> {
    let server = RpcServer::new();
    server.register_typed("add", |req: AddRequest| {
        Ok(AddResponse {
            result: req.a + req.b,
        })
    });
    server.register_stream("count", |n: u32, items: ServerStreamSender<u32>| {
        (0..n).try_for_each(|i| items.send(&i))
    });
    server.register_typed("shutdown", {
        let server = server.clone();
        move |(): ()| {
            server.shutdown();
            Ok(())
        }
    });

    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--shm") {
        let service = std::env::var("XRPC_SERVICE").unwrap_or_else(|_| "my_service".into());
        let listener =
            SharedMemoryFrameTransportListener::bind(&service, SharedMemoryConfig::default())?;
        println!("add_server: listening on shared memory service {service:?}");
        server.serve_listener(listener)?;
    } else if let Some(i) = args.iter().position(|a| a == "--unix") {
        let path = args.get(i + 1).map_or("/tmp/xrpc-add.sock", String::as_str);
        let listener = UnixFrameTransportListener::bind(path, UnixConfig::default())?;
        println!("add_server: listening on {path}");
        server.serve_listener(listener)?;
    } else {
        let addr = std::env::var("XRPC_ADDR").unwrap_or_else(|_| "127.0.0.1:47800".into());
        let listener = TcpFrameTransportListener::bind(addr.as_str(), TcpConfig::default())?;
        println!("add_server: listening on {}", listener.local_addr()?);
        server.serve_listener(listener)?;
    }
    println!("add_server: shut down");
    Ok(())
}
