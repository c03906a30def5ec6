//! Layers 1 and 2 over shared memory, across two processes: typed messages without RPC.
//!
//! ```text
//! # terminal 1
//! cargo run --example message_transport_shm -- server
//! # terminal 2
//! cargo run --example message_transport_shm -- client
//! ```
//!
//! The server accepts any number of clients (each gets its own shared-memory segment) and
//! answers every request message with a response carrying the payload reversed.

use std::time::Instant;

use bytes::Bytes;
use xrpc::proto::{Header, Message, MessageKind};
use xrpc::{
    CompressionConfig, MessageChannel, MessageChannelAdapter, SharedMemoryConfig,
    SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
};

const SERVICE: &str = "xrpc_message_demo";

async fn server() -> Result<(), Box<dyn std::error::Error>> {
    let listener =
        SharedMemoryFrameTransportListener::bind(SERVICE, SharedMemoryConfig::default())?;
    println!("server: waiting for clients on shared memory service {SERVICE:?}");
    loop {
        let transport = listener.accept().await?;
        println!("server: client connected");
        tokio::spawn(async move {
            let channel = MessageChannelAdapter::new(transport);
            let mut n = 0u64;
            while let Ok(msg) = channel.recv().await {
                let reversed: Vec<u8> = msg.payload.iter().rev().copied().collect();
                let reply = Message::new(
                    Header::new(MessageKind::Response, msg.header.id),
                    "",
                    Bytes::from(reversed),
                );
                match reply {
                    Ok(reply) if channel.send(&reply).await.is_ok() => n += 1,
                    _ => break,
                }
            }
            println!("server: client gone after {n} messages");
        });
    }
}

async fn client() -> Result<(), Box<dyn std::error::Error>> {
    let transport =
        SharedMemoryFrameTransport::connect(SERVICE, SharedMemoryConfig::default()).await?;
    // Payloads of 1 KiB and more are LZ4-compressed; the server reads either.
    let channel = MessageChannelAdapter::with_compression(transport, CompressionConfig::lz4());
    for (id, text) in ["hello, shared memory", "xrpc"].iter().enumerate() {
        let msg = Message::new(
            Header::new(MessageKind::Request, id as u64 + 1),
            "reverse",
            Bytes::copy_from_slice(text.as_bytes()),
        )?;
        let t0 = Instant::now();
        channel.send(&msg).await?;
        let reply = channel.recv().await?;
        println!(
            "client: {text:?} -> {:?} in {:?}",
            String::from_utf8_lossy(&reply.payload),
            t0.elapsed()
        );
    }
    let big = Bytes::from("0123456789".repeat(10_000));
    let msg = Message::new(
        Header::new(MessageKind::Request, 99),
        "reverse",
        big.clone(),
    )?;
    channel.send(&msg).await?;
    let reply = channel.recv().await?;
    assert_eq!(reply.payload.len(), big.len());
    let stats = channel.stats().unwrap_or_default();
    println!(
        "client: a {} byte message went out as {} bytes (lz4), {} frames sent in all",
        big.len(),
        stats.bytes_sent,
        stats.frames_sent
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1).as_deref() {
        Some("server") => server().await,
        Some("client") => client().await,
        _ => {
            eprintln!("usage: message_transport_shm (server | client)");
            std::process::exit(2);
        }
    }
}
