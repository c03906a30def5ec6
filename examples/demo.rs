//! The self-contained demo: starts its own server process, calls it over shared memory (the
//! fastest transport between processes) and over TCP, and prints answers and round-trip times
//! — from the tokio client, then from `xrpc-blocking`'s synchronous client (no runtime: the
//! calling thread waits for its answer on the ring itself).
//!
//! ```text
//! cargo run --release --example demo
//! ```
//!
//! `XRPC_DEMO_CALLS` sets the number of timed calls per transport (default 20 000).

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The line on which the server process tells its parent its TCP address.
const TCP_LINE: &str = "demo server: tcp ";

/// The server process: `demo serve <service>`. It binds the shared-memory service its parent
/// named and a free TCP port, and prints that port's address on stdout ([`TCP_LINE`]).
async fn serve(service: &str) -> Result<(), BoxError> {
    let server = RpcServer::new();
    server.register_typed("add", |req: AddRequest| async move {
        Ok(AddResponse {
            result: req.a + req.b,
        })
    });
    server.register_typed("shutdown", {
        let server = server.clone();
        move |_: ()| {
            server.shutdown();
            async { Ok(()) }
        }
    });
    let shm = SharedMemoryFrameTransportListener::bind(service, SharedMemoryConfig::default())?;
    let tcp = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default()).await?;
    // Tell the parent the port; the shared-memory service it found by name. Nothing else is
    // printed on stdout.
    println!("{TCP_LINE}{}", tcp.local_addr()?);
    let (a, b) = tokio::join!(server.serve_listener(shm), server.serve_listener(tcp));
    a?;
    b?;
    Ok(())
}

/// Prints round-trip percentiles of `n` timed calls (`call(i)` makes call `i`).
fn timed(
    label: &str,
    n: usize,
    mut call: impl FnMut(i32) -> Result<(), RpcError>,
) -> Result<(), RpcError> {
    for i in 0..(n / 10) as i32 {
        call(i)?;
    }
    let mut rtts = Vec::with_capacity(n);
    for i in 0..n as i32 {
        let t0 = Instant::now();
        call(i)?;
        rtts.push(t0.elapsed());
    }
    rtts.sort();
    println!(
        "  {label}: {n} calls, round trip p50 {:.1} µs, p99 {:.1} µs",
        percentile(&rtts, 0.5).as_secs_f64() * 1e6,
        percentile(&rtts, 0.99).as_secs_f64() * 1e6,
    );
    Ok(())
}

/// The same calls from the blocking adapter's client, over shared memory and TCP.
fn blocking_calls(service: &str, addr: &str) -> Result<(), RpcError> {
    use xrpc_blocking::{RpcClient, SharedMemoryFrameTransport, TcpFrameTransport};
    let n = calls();
    for (label, client) in [
        (
            "blocking shm",
            RpcClient::new(SharedMemoryFrameTransport::connect_client(service)?),
        ),
        (
            "blocking tcp",
            RpcClient::new(TcpFrameTransport::connect(addr, Default::default())?),
        ),
    ] {
        let resp: AddResponse = client.call("add", &AddRequest { a: 1, b: 2 })?;
        println!("  {label}: add(1, 2) = {}", resp.result);
        timed(label, n, |i| {
            let r: AddResponse = client.call("add", &AddRequest { a: i, b: 1 })?;
            assert_eq!(r.result, i + 1);
            Ok(())
        })?;
    }
    Ok(())
}

/// Timed calls per transport: `XRPC_DEMO_CALLS`, default 20,000.
fn calls() -> usize {
    std::env::var("XRPC_DEMO_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

async fn measure<T: MessageChannel>(label: &str, client: &RpcClient<T>) -> Result<(), RpcError> {
    for (a, b) in [(1, 2), (40, 2), (-7, 7)] {
        let resp: AddResponse = client.call("add", &AddRequest { a, b }).await?;
        println!("  {label}: add({a}, {b}) = {}", resp.result);
    }
    let n = calls();
    for i in 0..(n / 10) as i32 {
        let _: AddResponse = client.call("add", &AddRequest { a: i, b: 1 }).await?;
    }
    let mut rtts = Vec::with_capacity(n);
    for i in 0..n as i32 {
        let t0 = Instant::now();
        let r: AddResponse = client.call("add", &AddRequest { a: i, b: 1 }).await?;
        rtts.push(t0.elapsed());
        assert_eq!(r.result, i + 1);
    }
    rtts.sort();
    println!(
        "  {label}: {n} calls, round trip p50 {:.1} µs, p99 {:.1} µs",
        percentile(&rtts, 0.5).as_secs_f64() * 1e6,
        percentile(&rtts, 0.99).as_secs_f64() * 1e6,
    );
    Ok(())
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the server's TCP address from its stdout; `None` if it exited without printing it.
fn read_tcp_addr(stdout: ChildStdout) -> (Option<String>, Lines<BufReader<ChildStdout>>) {
    let mut lines = BufReader::new(stdout).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix(TCP_LINE).map(str::to_owned));
    (addr, lines)
}

async fn run() -> Result<(), BoxError> {
    // The parent names the shared-memory service (unique to this run) and learns the TCP
    // address from the child itself: it never calls a server other than its own.
    let service = format!("xrpc-demo-{}", std::process::id());
    println!("starting the server process…");
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe()?)
            .args(["serve", &service])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let stdout = child.0.stdout.take().ok_or("the server's stdout")?;
    // It binds shared memory first, then TCP, then prints the TCP address.
    let read = tokio::task::spawn_blocking(move || read_tcp_addr(stdout));
    let (addr, _stdout) = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| "the server did not start within 10 s")??;
    let Some(addr) = addr else {
        let status = child.0.wait()?;
        return Err(format!("the server exited ({status}) before it was ready").into());
    };
    println!("server pid {} is up\n", child.0.id());

    println!("shared memory (service {service:?}):");
    let transport =
        SharedMemoryFrameTransport::connect(&service, SharedMemoryConfig::default()).await?;
    let client = RpcClient::new(MessageChannelAdapter::new(transport));
    let _handle = client.start();
    measure("shm", &client).await?;

    println!("\nTCP ({addr}):");
    let transport = TcpFrameTransport::connect(&addr, TcpConfig::default()).await?;
    let tcp_client = RpcClient::new(MessageChannelAdapter::new(transport));
    measure("tcp", &tcp_client).await?;

    println!("\nthe blocking client (xrpc-blocking, no runtime), shared memory and TCP:");
    let (svc, tcp_addr) = (service.clone(), addr.clone());
    tokio::task::spawn_blocking(move || blocking_calls(&svc, &tcp_addr)).await??;

    let _: Result<(), RpcError> = client.call("shutdown", &()).await;
    let status = tokio::task::spawn_blocking(move || {
        let mut child = child;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    })
    .await?;
    match status {
        Some(s) => println!("\nserver process exited ({s})"),
        None => println!("\nserver process did not exit in time; killed it"),
    }
    if cfg!(debug_assertions) {
        println!("(a debug build: the round trips of `--release` are several times shorter)");
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    // One thread per process: on a small machine each side keeps its own core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") && args.len() == 3 {
        return rt.block_on(serve(&args[2]));
    }
    rt.block_on(run())
}
