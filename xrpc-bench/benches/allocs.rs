//! Heap allocations per small typed call (`add`), client and server in one process, over each
//! transport: a counting global allocator, `CALLS` calls after a warm-up, both sides counted.
//!
//! `cargo bench -p xrpc-bench --bench allocs`. Instruction counts are steady; this is the
//! number to drive to zero on the shared-memory path. `ALLOC_TRACE=n` prints where the first
//! `n` allocations of each measured window come from (a backtrace each, on stderr; the
//! count then includes the tracing's own allocations).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use xrpc::{
    ArcFrameTransport, ChannelConfig, ChannelFrameTransport, MessageChannelAdapter, RpcClient,
    RpcServer, SharedMemoryConfig, SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
    UnixConfig, UnixFrameTransport, UnixFrameTransportListener,
};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Allocations still to trace (`ALLOC_TRACE`), set for each measured window.
static TRACE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set while a trace is being printed: its own allocations are not traced.
    static TRACING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn counted() {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    if TRACE.load(Ordering::Relaxed) > 0 && TRACING.try_with(|t| !t.replace(true)).unwrap_or(false)
    {
        if TRACE
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            eprintln!(
                "allocation:\n{}",
                std::backtrace::Backtrace::force_capture()
            );
        }
        TRACING.with(|t| t.set(false));
    }
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        counted();
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        counted();
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Serialize, Deserialize)]
struct AddRequest {
    a: i32,
    b: i32,
}

#[derive(Serialize, Deserialize)]
struct AddResponse {
    result: i32,
}

fn server() -> RpcServer {
    let server = RpcServer::new();
    server.register_typed("add", |r: AddRequest| async move {
        Ok(AddResponse { result: r.a + r.b })
    });
    server
}

async fn count<T: xrpc::MessageChannel>(name: &str, client: &RpcClient<T>, calls: u64) {
    for i in 0..2_000 {
        let _: AddResponse = client
            .call("add", &AddRequest { a: i, b: 1 })
            .await
            .unwrap();
    }
    let trace = std::env::var("ALLOC_TRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    TRACE.store(trace, Ordering::Relaxed);
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in 0..calls {
        let r: AddResponse = client
            .call("add", &AddRequest { a: i as i32, b: 1 })
            .await
            .unwrap();
        assert_eq!(r.result, i as i32 + 1);
    }
    let per = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / calls as f64;
    TRACE.store(0, Ordering::Relaxed);
    println!("| {name} | {per:.2} |");
}

fn main() {
    let calls: u64 = std::env::var("CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("| transport | heap allocations per call (client + server) |\n|---|---|");
    rt.block_on(async {
        let name = format!("allocs-{}", std::process::id());
        let listener =
            SharedMemoryFrameTransportListener::bind(&name, SharedMemoryConfig::default()).unwrap();
        let s = server();
        let s2 = s.clone();
        tokio::spawn(async move { s2.serve_listener(listener).await });
        let t = SharedMemoryFrameTransport::connect(&name, SharedMemoryConfig::default())
            .await
            .unwrap();
        let client = RpcClient::new(MessageChannelAdapter::new(t));
        count("shm", &client, calls).await;

        let path = std::env::temp_dir().join(format!("xrpc-allocs-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixFrameTransportListener::bind(&path, UnixConfig::default())
            .await
            .unwrap();
        let s3 = s.clone();
        tokio::spawn(async move { s3.serve_listener(listener).await });
        let t = UnixFrameTransport::connect(&path, UnixConfig::default())
            .await
            .unwrap();
        let client = RpcClient::new(MessageChannelAdapter::new(t));
        count("unix", &client, calls).await;
        let _ = std::fs::remove_file(&path);

        let (c, t) = ChannelFrameTransport::create_pair("allocs", ChannelConfig::default());
        let s4 = s.clone();
        tokio::spawn(async move { s4.serve(MessageChannelAdapter::new(t)).await });
        let client = RpcClient::new(MessageChannelAdapter::new(c));
        count("in-process channel", &client, calls).await;

        let (c, t) = ArcFrameTransport::create_pair("allocs");
        let s5 = s.clone();
        tokio::spawn(async move { s5.serve(MessageChannelAdapter::new(t)).await });
        let client = RpcClient::new(MessageChannelAdapter::new(c));
        count("in-process arc", &client, calls).await;
        s.shutdown();
    });
}
