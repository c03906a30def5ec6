//! Message compression: the same RPC over TCP without compression, with LZ4 and with Zstd.
//!
//! `MessageChannelAdapter::with_compression(transport, CompressionConfig::lz4())` (or
//! `::zstd(level)`) compresses every outgoing payload of at least 1 KiB (see
//! `CompressionConfig::with_threshold`); the receiver decompresses whatever arrives, so the two
//! ends need not agree on a setting. Here both ends use the same one and the client sends a
//! batch of 4000 log lines (about 490 KiB encoded, highly repetitive) to a `grep` method that
//! answers with the matching lines. The byte counts come from the client channel's transport
//! statistics (`MessageChannel::stats`): the frame bytes actually written to and read from the
//! socket.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example compression
//! ```

use std::error::Error;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use xrpc::{
    BincodeCodec, Codec, CompressionConfig, MessageChannel, MessageChannelAdapter, RpcClient,
    RpcServer, TcpConfig, TcpFrameTransport, TcpFrameTransportListener,
};

type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Debug, Serialize, Deserialize)]
struct GrepRequest {
    pattern: String,
    lines: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct GrepResponse {
    scanned: usize,
    matches: Vec<String>,
}

/// Deterministic, realistic-looking service logs (a tiny LCG instead of a `rand` dependency).
fn log_lines(n: usize) -> Vec<String> {
    const LEVELS: [&str; 8] = [
        "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "INFO", "ERROR",
    ];
    const PATHS: [&str; 5] = [
        "/api/v1/orders",
        "/api/v1/orders/{id}",
        "/api/v1/quotes",
        "/healthz",
        "/api/v1/positions",
    ];
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize
    };
    (0..n)
        .map(|i| {
            let (level, path) = (LEVELS[next() % 8], PATHS[next() % 5]);
            format!(
                "2025-06-01T12:{:02}:{:02}.{:03}Z {level:<5} gateway worker-{} request_id={:08x} \
                 method=GET path={path} status={} latency_ms={}",
                (i / 60) % 60,
                i % 60,
                next() % 1000,
                next() % 8,
                next() % 0xffff_ffff,
                if level == "ERROR" { 500 } else { 200 },
                next() % 250,
            )
        })
        .collect()
}

fn server() -> RpcServer {
    let server = RpcServer::new();
    server.register_typed("grep", |req: GrepRequest| async move {
        let scanned = req.lines.len();
        let matches = req
            .lines
            .into_iter()
            .filter(|l| l.contains(&req.pattern))
            .collect();
        Ok(GrepResponse { scanned, matches })
    });
    server
}

struct Run {
    name: &'static str,
    sent: u64,
    received: u64,
    elapsed: Duration,
    matches: usize,
}

/// Connects a client and a server over TCP, both compressing per `config`, and makes one call.
async fn run(
    name: &'static str,
    config: CompressionConfig,
    request: &GrepRequest,
) -> Result<Run, BoxError> {
    let listener = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default()).await?;
    let addr = listener.local_addr()?;
    let server = server();
    let serving = tokio::spawn(async move {
        let (transport, _peer) = listener.accept().await?;
        server
            .serve(MessageChannelAdapter::with_compression(transport, config))
            .await?;
        Ok::<_, BoxError>(())
    });

    let transport = TcpFrameTransport::connect(addr, TcpConfig::default()).await?;
    let client = RpcClient::new(MessageChannelAdapter::with_compression(transport, config));
    let _handle = client.start();

    let t0 = Instant::now();
    let resp: GrepResponse = client.call("grep", request).await?;
    let elapsed = t0.elapsed();
    assert_eq!(resp.scanned, request.lines.len());

    let stats = client
        .channel()
        .stats()
        .ok_or("the TCP transport keeps stats")?;
    client.close().await;
    serving.await??;
    Ok(Run {
        name,
        sent: stats.bytes_sent,
        received: stats.bytes_received,
        elapsed,
        matches: resp.matches.len(),
    })
}

fn kib(n: u64) -> String {
    format!("{:.1} KiB", n as f64 / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let request = GrepRequest {
        pattern: "ERROR".into(),
        lines: log_lines(4000),
    };
    println!("sample line: {}", request.lines[0]);
    let payload = BincodeCodec.encode(&request)?.len() as u64;
    println!(
        "request: {} lines, {} encoded (bincode)\n",
        request.lines.len(),
        kib(payload)
    );

    let mut runs = Vec::new();
    for (name, config) in [
        ("none", CompressionConfig::none()),
        ("lz4", CompressionConfig::lz4()),
        ("zstd(3)", CompressionConfig::zstd(3)),
    ] {
        runs.push(run(name, config, &request).await?);
    }

    // Compression changes the bytes on the wire, never the answer.
    assert!(runs.iter().all(|r| r.matches == runs[0].matches));
    let base = runs[0].sent + runs[0].received;
    println!(
        "{:<8} {:>12} {:>12} {:>12} {:>7} {:>10}",
        "codec", "sent", "received", "total", "ratio", "call time"
    );
    for r in &runs {
        let total = r.sent + r.received;
        println!(
            "{:<8} {:>12} {:>12} {:>12} {:>6.1}x {:>10.1?}",
            r.name,
            kib(r.sent),
            kib(r.received),
            kib(total),
            base as f64 / total as f64,
            r.elapsed
        );
    }
    let build = if cfg!(debug_assertions) {
        "; call times are of a debug build: add --release"
    } else {
        ""
    };
    println!(
        "\n(wire bytes as counted by the client's TcpFrameTransport; {} ERROR lines came back \
         each time; ratio = uncompressed total / total{build})",
        runs[0].matches
    );
    Ok(())
}
