//! Layer 1 on its own: the same byte exchange over every in-tree frame transport.
//!
//! For each transport the example connects a pair of ends in this process, runs an echo task
//! on one end and, from the other, sends frames of 64 B, 4 KiB, 64 KiB and 1 MiB, checks every
//! echo and prints the round-trip time of each size — one line per transport:
//!
//! - `TcpFrameTransport` over `127.0.0.1:0` (an ephemeral port),
//! - `UnixFrameTransport` over a socket in the temp directory,
//! - `ChannelFrameTransport` (in-process, each frame copied once),
//! - `ArcFrameTransport` (in-process, frames moved as `Bytes` without copying), plus its typed
//!   path: `send_typed` / `recv_typed` move a Rust value behind an `Arc`, no serialization.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example byte_transports
//! ```

use std::error::Error;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use xrpc::{
    ArcFrameTransport, ChannelConfig, ChannelFrameTransport, FrameTransport, TcpConfig,
    TcpFrameTransport, TcpFrameTransportListener, TransportError, UnixConfig, UnixFrameTransport,
    UnixFrameTransportListener,
};

type BoxError = Box<dyn Error + Send + Sync>;

/// The frame sizes each transport carries.
const SIZES: [usize; 4] = [64, 4 * 1024, 64 * 1024, 1024 * 1024];

/// Echoes every frame back until the peer closes the connection.
async fn echo<T: FrameTransport>(transport: T) -> Result<(), TransportError> {
    loop {
        match transport.recv_frame().await {
            Ok(frame) => transport.send_frame(&frame).await?,
            Err(TransportError::ConnectionClosed) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Echoes per frame size; the median is reported (the first, warm-up echo is not counted).
const ROUNDS: usize = 20;

/// The test frame of `size` bytes.
fn frame(size: usize) -> Bytes {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Sends frames of each size, checks the echoes and returns the median round-trip times.
async fn exchange<T: FrameTransport>(client: &T) -> Result<Vec<Duration>, BoxError> {
    let mut rtts = Vec::with_capacity(SIZES.len());
    for size in SIZES {
        let frame = frame(size);
        let mut samples = Vec::with_capacity(ROUNDS);
        for round in 0..=ROUNDS {
            let t0 = Instant::now();
            client.send_frame(&frame).await?;
            let echoed = client.recv_frame().await?;
            if round > 0 {
                samples.push(t0.elapsed());
            }
            if echoed != frame {
                return Err(format!("{}: the echo of {size} bytes differs", client.name()).into());
            }
        }
        rtts.push(median(samples));
    }
    Ok(rtts)
}

/// One output line: transport name, round trips per size, and the client's counters.
fn report<T: FrameTransport>(label: &str, client: &T, rtts: &[Duration], extra: &str) {
    let mut line = format!("{label:<8}");
    for (size, rtt) in SIZES.iter().zip(rtts) {
        let _ = write!(line, " {:>6}: {:>9.1?}", human(*size), rtt);
    }
    if let Some(s) = client.stats() {
        let _ = write!(
            line,
            "  | sent {} frames, {}",
            s.frames_sent,
            human(s.bytes_sent as usize)
        );
    }
    println!("{line}{extra}");
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1024 * 1024 && n % (1024 * 1024) == 0 => format!("{} MiB", n / (1024 * 1024)),
        n if n >= 1024 * 1024 => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
        n if n >= 1024 && n % 1024 == 0 => format!("{} KiB", n / 1024),
        n if n >= 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

async fn tcp() -> Result<(), BoxError> {
    let listener = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default()).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (transport, _peer) = listener.accept().await?;
        echo(transport).await
    });
    let client = TcpFrameTransport::connect(addr, TcpConfig::default()).await?;
    let rtts = exchange(&client).await?;
    report("tcp", &client, &rtts, &format!("  ({addr})"));
    client.close().await?;
    server.await??;
    Ok(())
}

async fn unix() -> Result<(), BoxError> {
    let path =
        std::env::temp_dir().join(format!("xrpc-byte-transports-{}.sock", std::process::id()));
    // `bind` replaces a stale socket file left by a dead process; dropping the listener
    // removes the file.
    let listener = UnixFrameTransportListener::bind(&path, UnixConfig::default()).await?;
    let server = tokio::spawn(async move {
        let (transport, _peer) = listener.accept().await?;
        echo(transport).await
    });
    let client = UnixFrameTransport::connect(&path, UnixConfig::default()).await?;
    let rtts = exchange(&client).await?;
    report("unix", &client, &rtts, &format!("  ({})", path.display()));
    client.close().await?;
    server.await??;
    Ok(())
}

async fn channel() -> Result<(), BoxError> {
    let (client, server) = ChannelFrameTransport::create_pair("demo", ChannelConfig::default());
    let server = tokio::spawn(echo(server));
    let rtts = exchange(&client).await?;
    report("channel", &client, &rtts, "");
    client.close().await?;
    server.await??;
    Ok(())
}

/// A value sent through the typed path: never serialized, only its `Arc` moves.
#[derive(Debug)]
struct Order {
    id: u64,
    symbol: &'static str,
    quantity: u32,
}

async fn arc() -> Result<(), BoxError> {
    let (client, server) = ArcFrameTransport::create_pair("demo");
    let server = tokio::spawn(async move {
        // Bytes path: echo without copying (`send_bytes` moves the received `Bytes` back).
        for _ in 0..SIZES.len() * (ROUNDS + 1) {
            let frame = server.recv_frame().await?;
            server.send_bytes(frame).await?;
        }
        // Typed path: receive an `Order`, answer with a `String`.
        let order = server.recv_typed::<Order>().await?;
        let ack = format!(
            "filled order #{} ({} x {})",
            order.id, order.quantity, order.symbol
        );
        server.send_typed(ack).await?;
        Ok::<_, TransportError>(())
    });

    // The bytes exchange, sending with `send_bytes` (no copy) instead of `send_frame`.
    let mut rtts = Vec::with_capacity(SIZES.len());
    for size in SIZES {
        let frame = frame(size);
        let mut samples = Vec::with_capacity(ROUNDS);
        for round in 0..=ROUNDS {
            let t0 = Instant::now();
            client.send_bytes(frame.clone()).await?; // a reference count, not a copy
            let echoed = client.recv_frame().await?;
            if round > 0 {
                samples.push(t0.elapsed());
            }
            // Zero-copy both ways: the echo is the very buffer that was sent.
            if echoed.as_ptr() != frame.as_ptr() || echoed.len() != size {
                return Err(format!("arc: the echo of {size} bytes is not the sent buffer").into());
            }
        }
        rtts.push(median(samples));
    }
    report("arc", &client, &rtts, "");

    // The typed exchange: a Rust value goes over, another comes back, nothing is serialized.
    let t0 = Instant::now();
    client
        .send_typed(Order {
            id: 42,
            symbol: "XRPC",
            quantity: 100,
        })
        .await?;
    let ack = client.recv_typed::<String>().await?;
    let typed_rtt = t0.elapsed();
    println!("arc      send_typed(Order) -> recv_typed::<String>(): {typed_rtt:>7.1?}  {ack:?}");
    server.await??;
    client.close().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let build = if cfg!(debug_assertions) {
        " (a debug build, slower: add --release)"
    } else {
        ""
    };
    println!(
        "median round trip of {ROUNDS} frames per size, echoed by a task on the other end{build}\n"
    );
    tcp().await?;
    unix().await?;
    channel().await?;
    arc().await?;
    Ok(())
}
