//! The simplest way to use xrpc: a blocking client in a plain `fn main`.
//!
//! ```text
//! cargo run -p xrpc-blocking --example add_client                 # TCP, XRPC_ADDR or 127.0.0.1:47800
//! cargo run -p xrpc-blocking --example add_client -- --shm        # shared memory, XRPC_SERVICE or my_service
//! cargo run -p xrpc-blocking --example add_client -- --unix PATH  # a Unix socket
//! ```
//!
//! The server is `add_server` of this crate or the tokio example `rpc_client_server -- server`.
//! `--calls N` times N sequential calls and prints the round trip's percentiles;
//! `--stop-server` asks the server to shut down at the end.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use xrpc_blocking::{
    RpcClient, RpcError, SharedMemoryFrameTransport, TcpConfig, TcpFrameTransport, UnixConfig,
    UnixFrameTransport,
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

fn connect(args: &[String]) -> Result<RpcClient, RpcError> {
    if args.iter().any(|a| a == "--shm") {
        let service = std::env::var("XRPC_SERVICE").unwrap_or_else(|_| "my_service".into());
        return Ok(RpcClient::new(SharedMemoryFrameTransport::connect_client(
            &service,
        )?));
    }
    if let Some(i) = args.iter().position(|a| a == "--unix") {
        let path = args.get(i + 1).map_or("/tmp/xrpc-add.sock", String::as_str);
        return Ok(RpcClient::new(UnixFrameTransport::connect(
            path,
            UnixConfig::default(),
        )?));
    }
    let addr = std::env::var("XRPC_ADDR").unwrap_or_else(|_| "127.0.0.1:47800".into());
    Ok(RpcClient::new(TcpFrameTransport::connect(
        addr.as_str(),
        TcpConfig::default(),
    )?))
}

fn main() -> Result<(), RpcError> {
    let args: Vec<String> = std::env::args().collect();
    let client = connect(&args)?;

    let resp: AddResponse = client.call("add", &AddRequest { a: 1, b: 2 })?;
    println!("add_client: add(1, 2) = {}", resp.result);

    let items = client.call_server_stream::<_, u32>("count", &100u32)?;
    let sum = items.sum::<Result<u32, RpcError>>()?;
    println!("add_client: count(100) streamed, sum {sum}");

    if let Some(n) = args
        .iter()
        .position(|a| a == "--calls")
        .and_then(|i| args.get(i + 1))
    {
        let n: usize = n
            .parse()
            .map_err(|e| RpcError::ClientError(format!("--calls: {e}")))?;
        let n = n.max(1);
        let mut took: Vec<Duration> = Vec::with_capacity(n);
        for i in 0..n {
            let a = i32::try_from(i % 1000).unwrap_or(0);
            let t0 = Instant::now();
            let r: AddResponse = client.call("add", &AddRequest { a, b: 1 })?;
            took.push(t0.elapsed());
            assert_eq!(r.result, a + 1);
        }
        let mean = took.iter().sum::<Duration>() / n as u32;
        took.sort();
        let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
        println!(
            "add_client: {n} calls, round trip p50 {:?}, p99 {:?}, p99.9 {:?}, mean {mean:?}",
            at(0.5),
            at(0.99),
            at(0.999)
        );
    }

    if args.iter().any(|a| a == "--stop-server") {
        let _: Result<(), RpcError> = client.call("shutdown", &());
        println!("add_client: asked the server to shut down");
    }
    Ok(())
}
