//! What idle shared-memory connections cost a tokio server, and what they do to a working
//! client's latency.
//!
//! The process runs an echo server (a multi-thread runtime with 2 workers) and spawns copies of
//! itself as clients:
//!
//! 1. a working client alone: 64 B echo calls, p50 / p99 latency;
//! 2. `XRPC_IDLE_CLIENTS` (default 2000) idle clients in one child process, each with a task
//!    waiting in `recv_frame` (as a connection's driver does), and the server with a task
//!    waiting in `recv_frame` for each; then, over `XRPC_IDLE_SECS` (default 5) seconds, the
//!    server process's CPU time (`/proc/self/stat`) and thread count (`/proc/self/status`), and
//!    the same of the idle child;
//! 3. the working client again, with the idle clients connected.
//!
//! Run with `cargo run --release -p xrpc-tokio --example shm_idle`. Each process needs two
//! descriptors per connection (the rendezvous socket and the room socket, its doorbells):
//! check `ulimit -n`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xrpc_tokio::{
    FrameTransport, SharedMemoryConfig, SharedMemoryFrameTransport,
    SharedMemoryFrameTransportListener,
};

const ROLE: &str = "XRPC_IDLE_ROLE";
const NAME: &str = "XRPC_IDLE_NAME";
const CALLS: usize = 5_000;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// CPU time (user + system) of process `pid` ("self" for this one).
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may contain spaces) start at state (field 3).
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10) // CLK_TCK = 100 on Linux
}

fn threads(pid: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads line")
}

fn spawn(role: &str, name: &str) -> Child {
    Command::new(std::env::current_exe().expect("exe"))
        .env(ROLE, role)
        .env(NAME, name)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child")
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("idle") => return idle_child(),
        Ok("work") => return work_child(),
        _ => {}
    }
    let idle = env_or("XRPC_IDLE_CLIENTS", 2000usize);
    let secs = env_or("XRPC_IDLE_SECS", 5u64);
    let name = format!("idle-bench-{}", std::process::id());
    let rt = runtime();
    let listener = Arc::new(
        SharedMemoryFrameTransportListener::bind(&name, SharedMemoryConfig::default())
            .expect("bind"),
    );
    rt.spawn(async move {
        loop {
            let t = listener.accept().await.expect("accept");
            tokio::spawn(async move {
                while let Ok(frame) = t.recv_frame().await {
                    if t.send_frame(&frame).await.is_err() {
                        break;
                    }
                }
            });
        }
    });

    let work = |label: &str| {
        let mut child = spawn("work", &name);
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        for line in out.lines() {
            println!("{label}: {}", line.expect("line"));
        }
        assert!(child.wait().expect("wait").success());
    };

    println!("server threads before any client: {}", threads("self"));
    work("working client alone");

    let mut idle_child = spawn("idle", &name);
    let pid = idle_child.id().to_string();
    let mut out = BufReader::new(idle_child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let start = Instant::now();
    out.read_line(&mut line).expect("idle child");
    println!(
        "{idle} idle clients connected in {:.2?}: {}",
        start.elapsed(),
        line.trim()
    );
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, child0, t0) = (cpu_time("self"), cpu_time(&pid), Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let (cpu1, child1, wall) = (cpu_time("self"), cpu_time(&pid), t0.elapsed());
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64();
    println!(
        "idle for {wall:.2?}: server process CPU {:.2?} ({:.2}% of a core), threads {}; idle-client process CPU {:.2?} ({:.2}% of a core), threads {}",
        cpu1 - cpu0,
        pct(cpu1 - cpu0),
        threads("self"),
        child1 - child0,
        pct(child1 - child0),
        threads(&pid),
    );
    work(&format!("working client with {idle} idle"));
    let _ = idle_child.kill();
    let _ = idle_child.wait();
}

/// Connects `XRPC_IDLE_CLIENTS` clients, each with a task waiting for a frame, reports, then
/// idles until killed.
fn idle_child() {
    let n = env_or("XRPC_IDLE_CLIENTS", 2000usize);
    let name = std::env::var(NAME).expect("name");
    let rt = runtime();
    rt.block_on(async {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Arc::new(
                SharedMemoryFrameTransport::connect(&name, SharedMemoryConfig::default())
                    .await
                    .expect("connect"),
            );
            let reader = t.clone();
            tokio::spawn(async move { while reader.recv_frame().await.is_ok() {} });
            clients.push(t);
        }
        println!("connected, threads {}", threads("self"));
        std::future::pending::<()>().await;
    });
}

/// Makes `CALLS` 64 B echo calls from a task and prints the latency percentiles.
fn work_child() {
    let name = std::env::var(NAME).expect("name");
    let rt = runtime();
    let mut lat = rt.block_on(async move {
        tokio::spawn(async move {
            let t = SharedMemoryFrameTransport::connect(&name, SharedMemoryConfig::default())
                .await
                .expect("connect");
            let msg = [7u8; 64];
            let mut lat = Vec::with_capacity(CALLS);
            for i in 0..CALLS + 500 {
                let start = Instant::now();
                t.send_frame(&msg).await.expect("send");
                let back = t.recv_frame().await.expect("recv");
                assert_eq!(back.len(), 64);
                if i >= 500 {
                    lat.push(start.elapsed());
                }
            }
            lat
        })
        .await
        .expect("work task")
    });
    lat.sort();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    println!(
        "{CALLS} calls of 64 B: p50 {:.2?}, p90 {:.2?}, p99 {:.2?}",
        p(0.5),
        p(0.9),
        p(0.99)
    );
}
