//! Typed calls with the blocking adapter over a Unix socket or shared memory, the server on
//! another thread of this process: a small program to profile (`valgrind --tool=callgrind`)
//! the blocking call path, and to compare it with another build of the same program.
//!
//! `cargo run --release -p xrpc-bench --example blocking_calls -- [CALLS] [unix|shm]`

use serde::{Deserialize, Serialize};
use xrpc_blocking::{
    RpcClient, RpcError, RpcServer, SharedMemoryConfig, SharedMemoryFrameTransport,
    SharedMemoryFrameTransportListener, UnixConfig, UnixFrameTransport, UnixFrameTransportListener,
};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Msg {
    seq: u64,
    data: [u8; 24],
}

/// Calls before the timed ones.
const WARMUP: u64 = 1_000;

fn main() -> Result<(), RpcError> {
    let calls: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let server = RpcServer::new();
    server.register_typed("echo", |m: Msg| Ok(m));
    let name = format!("xrpc-blocking-calls-{}", std::process::id());
    match std::env::args().nth(2).as_deref() {
        Some("shm") => {
            let listener =
                SharedMemoryFrameTransportListener::bind(&name, SharedMemoryConfig::default())?;
            let serving = {
                let server = server.clone();
                std::thread::spawn(move || server.serve_listener(listener))
            };
            let client = RpcClient::new(SharedMemoryFrameTransport::connect(
                &name,
                SharedMemoryConfig::default(),
            )?);
            run(&client, calls)?;
            drop(client);
            server.shutdown();
            let _ = serving.join();
        }
        _ => {
            let path = std::env::temp_dir()
                .join(format!("{name}.sock"))
                .display()
                .to_string();
            let listener = UnixFrameTransportListener::bind(&path, UnixConfig::default())?;
            let serving = {
                let server = server.clone();
                std::thread::spawn(move || server.serve_listener(listener))
            };
            let client = RpcClient::new(UnixFrameTransport::connect(&path, UnixConfig::default())?);
            run(&client, calls)?;
            drop(client);
            server.shutdown();
            let _ = serving.join();
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

/// `calls` timed calls on `client` after the warm-up ones; prints the mean.
fn run(client: &RpcClient, calls: u64) -> Result<(), RpcError> {
    let call = |i: u64| -> Result<(), RpcError> {
        let r: Msg = client.call(
            "echo",
            &Msg {
                seq: i,
                data: [0xab; 24],
            },
        )?;
        assert_eq!(r.seq, i);
        Ok(())
    };
    for i in 0..WARMUP {
        call(i)?;
    }
    let t = std::time::Instant::now();
    for i in 0..calls {
        call(i)?;
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / calls as f64;
    println!("{calls} calls after {WARMUP} warm-up calls, {per:.2} µs each (mean)");
    Ok(())
}
