//! The original README's `add` service, across two processes, over TCP or shared memory.
//!
//! ```text
//! # terminal 1
//! cargo run --example rpc_client_server -- server
//! # terminal 2
//! cargo run --example rpc_client_server -- client
//! ```
//!
//! Add `--shm` to both commands to use shared memory (service `my_service`, or `XRPC_SERVICE`)
//! instead of TCP. The TCP address defaults to `127.0.0.1:47800`; set `XRPC_ADDR` to change it
//! (the server accepts port 0, picks a free port and prints it). If the port is taken, the
//! server stops with a message naming it rather than leaving the client to call whatever
//! listens there.

use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use xrpc::{
    MessageChannel, MessageChannelAdapter, RpcClient, RpcError, RpcServer, SharedMemoryConfig,
    SharedMemoryFrameTransport, SharedMemoryFrameTransportListener, TcpConfig, TcpFrameTransport,
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

fn addr() -> String {
    std::env::var("XRPC_ADDR").unwrap_or_else(|_| "127.0.0.1:47800".to_string())
}

fn service() -> String {
    std::env::var("XRPC_SERVICE").unwrap_or_else(|_| "my_service".to_string())
}

fn shm() -> bool {
    std::env::args().any(|a| a == "--shm")
}

async fn server() -> Result<(), Error> {
    let server = RpcServer::new();
    server.register_typed("add", |req: AddRequest| async move {
        Ok(AddResponse {
            result: req.a + req.b,
        })
    });
    // For the std-only client of `xrpc-proto` (`cargo run -p xrpc-proto --example std_client`):
    // a server stream of `n` numbers, and a call that takes `ms` milliseconds.
    server.register_stream(
        "count",
        |n: u32, items: xrpc::ServerStreamSender<u32>| async move {
            for i in 0..n {
                items.send(&i).await?;
            }
            Ok(())
        },
    );
    server.register_typed("sleep", |ms: u64| async move {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        Ok(())
    });
    server.register_typed("shutdown", {
        let server = server.clone();
        move |_: ()| {
            server.shutdown();
            async { Ok(()) }
        }
    });
    if shm() {
        let service = service();
        let listener =
            SharedMemoryFrameTransportListener::bind(&service, SharedMemoryConfig::default())
                .map_err(|e| {
                    format!(
                        "cannot serve shared memory service {service:?}: {e} (is another \
                         server using the name? pick another with XRPC_SERVICE)"
                    )
                })?;
        println!("server: listening on shared memory service {service:?}");
        server.serve_listener(listener).await?;
    } else {
        let addr = addr();
        let listener = TcpFrameTransportListener::bind(addr.as_str(), TcpConfig::default())
            .await
            .map_err(|e| {
                // The error names the address.
                format!(
                    "{e} (is another server using the port? pick another with XRPC_ADDR; \
                     port 0 picks a free one)"
                )
            })?;
        println!("server: listening on {}", listener.local_addr()?);
        server.serve_listener(listener).await?;
    }
    println!("server: shut down");
    Ok(())
}

async fn client() -> Result<(), Error> {
    if shm() {
        // The original README's client, with only the import path changed.
        let service = service();
        let transport = SharedMemoryFrameTransport::connect_client(&service).map_err(|e| {
            format!(
                "cannot connect to shared memory service {service:?}: {e} (is \
                 `rpc_client_server server --shm` running?)"
            )
        })?;
        let channel = MessageChannelAdapter::new(transport);
        let client = RpcClient::new(channel);
        let _handle = client.start();
        run_client(&client).await
    } else {
        let addr = addr();
        let transport = TcpFrameTransport::connect(&addr, TcpConfig::default())
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to {addr}: {e} (is `rpc_client_server server` running \
                     there? set XRPC_ADDR to its address)"
                )
            })?;
        // A process at that address that is not this example's server never answers: give up
        // after 5 s instead of waiting for ever.
        let client = RpcClient::new(Arc::new(MessageChannelAdapter::new(transport)))
            .with_timeout(Duration::from_secs(5));
        let _handle = client.start();
        run_client(&client).await.map_err(|e| -> Error {
            format!("calling the server at {addr} failed: {e} (is it this example's server?)")
                .into()
        })
    }
}

async fn run_client<T: MessageChannel>(client: &RpcClient<T>) -> Result<(), Error> {
    let t0 = Instant::now();
    let resp: AddResponse = client.call("add", &AddRequest { a: 1, b: 2 }).await?;
    println!("client: add(1, 2) = {} ({:?})", resp.result, t0.elapsed());
    assert_eq!(resp.result, 3);

    let n = 10_000;
    let t0 = Instant::now();
    for i in 0..n {
        let r: AddResponse = client.call("add", &AddRequest { a: i, b: i }).await?;
        assert_eq!(r.result, 2 * i);
    }
    let per_call = t0.elapsed() / n as u32;
    println!("client: {n} sequential calls, {per_call:?} per round trip");

    if std::env::args().any(|a| a == "--stop-server") {
        let _: Result<(), RpcError> = client.call("shutdown", &()).await;
        println!("client: asked the server to shut down");
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let result = match std::env::args().nth(1).as_deref() {
        Some("server") => server().await,
        // The calls run in a task on the runtime's workers, where the client's reader runs
        // too: an answer then wakes its caller on the same thread. (The body of
        // `#[tokio::main]` runs on the main thread, not a worker, so each answer would cost a
        // wake-up across threads — on shared memory that is most of the round trip.)
        Some("client") => tokio::spawn(client())
            .await
            .unwrap_or_else(|e| Err(e.into())),
        _ => {
            eprintln!("usage: rpc_client_server (server | client [--stop-server]) [--shm]");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("rpc_client_server: {e}");
        std::process::exit(1);
    }
}
