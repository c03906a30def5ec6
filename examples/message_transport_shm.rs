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
//! answers every request message with a response carrying the payload reversed. The service is
//! `xrpc_message_demo`; set `XRPC_SERVICE` (on both sides) to use another name.

use std::time::Instant;

use bytes::Bytes;
use xrpc::proto::{Header, Message, MessageKind};
use xrpc::{
    CompressionConfig, MessageChannel, MessageChannelAdapter, SharedMemoryConfig,
    SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
};

fn service() -> String {
    std::env::var("XRPC_SERVICE").unwrap_or_else(|_| "xrpc_message_demo".to_string())
}

async fn server() -> Result<(), Box<dyn std::error::Error>> {
    let service = service();
    let listener =
        SharedMemoryFrameTransportListener::bind(&service, SharedMemoryConfig::default()).map_err(
            |e| {
                format!(
                    "cannot serve shared memory service {service:?}: {e} (is another server \
                     using the name? pick another with XRPC_SERVICE)"
                )
            },
        )?;
    println!("server: waiting for clients on shared memory service {service:?}");
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
    let service = service();
    let transport = SharedMemoryFrameTransport::connect(&service, SharedMemoryConfig::default())
        .await
        .map_err(|e| {
            format!(
                "cannot connect to shared memory service {service:?}: {e} (is \
                 `message_transport_shm server` running?)"
            )
        })?;
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
    let before = channel.stats().unwrap_or_default();
    channel.send(&msg).await?;
    let after = channel.stats().unwrap_or_default();
    let reply = channel.recv().await?;
    let reversed: Vec<u8> = big.iter().rev().copied().collect();
    assert_eq!(reply.payload, reversed);
    println!(
        "client: a message with a {} byte payload went out as one frame of {} bytes (lz4); \
         {} frames sent in all",
        big.len(),
        after.bytes_sent - before.bytes_sent,
        after.frames_sent
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
