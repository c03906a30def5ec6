//! Streaming RPC over TCP, client and server in one process.
//!
//! - server streaming: `register_stream` / `call_server_stream` — one request, many items;
//! - client streaming: `register_client_stream` / `call_client_stream` — many items, one
//!   response;
//! - bidirectional: `register_bidi` / `call_bidi` — items both ways, concurrently;
//! - cancellation: dropping a `StreamReceiver` before the end cancels the call, and the server
//!   stops the handler (an endless ticker here).
//!
//! Streams are flow-controlled: a server-stream sender waits once the client has
//! `RpcClientConfig::stream_window` (default 32) items it has not taken yet.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example streaming
//! ```

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use xrpc::{
    MessageChannelAdapter, RequestStream, RpcClient, RpcServer, ServerStreamSender, TcpConfig,
    TcpFrameTransport, TcpFrameTransportListener,
};

type BoxError = Box<dyn Error + Send + Sync>;

/// An item of the `countdown` server stream.
#[derive(Debug, Serialize, Deserialize)]
struct Tick {
    remaining: u32,
    label: String,
}

/// The response of the `word_count` client stream.
#[derive(Debug, Serialize, Deserialize)]
struct Summary {
    lines: u32,
    words: u32,
    longest: String,
}

/// What the server knows about the endless `ticker` stream, to show its cancellation.
#[derive(Default)]
struct TickerProbe {
    sent: AtomicU64,
    stopped: Notify,
}

/// Runs when the ticker handler's future is dropped — which is how the server stops a
/// handler whose call was cancelled.
struct StopGuard(Arc<TickerProbe>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.stopped.notify_one();
    }
}

fn server(probe: Arc<TickerProbe>) -> RpcServer {
    let server = RpcServer::new();

    // Server streaming: `n`, `n - 1`, ..., 1, then the handler returns and the stream ends.
    server.register_stream(
        "countdown",
        |from: u32, tx: ServerStreamSender<Tick>| async move {
            for remaining in (1..=from).rev() {
                let label = if remaining == 1 { "ignition" } else { "hold" };
                tx.send(&Tick {
                    remaining,
                    label: label.to_string(),
                })
                .await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        },
    );

    // Server streaming without end: only a cancel stops it.
    server.register_stream(
        "ticker",
        move |every_ms: u64, tx: ServerStreamSender<u64>| {
            let probe = probe.clone();
            async move {
                let _guard = StopGuard(probe.clone());
                for n in 0.. {
                    tx.send(&n).await?;
                    probe.sent.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(every_ms)).await;
                }
                Ok(())
            }
        },
    );

    // Client streaming: lines in, one summary out once the client finishes its stream.
    server.register_client_stream(
        "word_count",
        |mut lines: RequestStream<String>| async move {
            let mut summary = Summary {
                lines: 0,
                words: 0,
                longest: String::new(),
            };
            while let Some(line) = lines.recv().await {
                let line = line?;
                println!("  server <- {line:?}");
                summary.lines += 1;
                for word in line.split_whitespace() {
                    summary.words += 1;
                    if word.len() > summary.longest.len() {
                        summary.longest = word.to_string();
                    }
                }
            }
            Ok(summary)
        },
    );

    // Bidirectional: every incoming message is answered as soon as it arrives.
    server.register_bidi(
        "shout",
        |mut inbox: RequestStream<String>, outbox: ServerStreamSender<String>| async move {
            while let Some(msg) = inbox.recv().await {
                outbox.send(&format!("{}!", msg?.to_uppercase())).await?;
            }
            Ok(())
        },
    );

    server
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let probe = Arc::new(TickerProbe::default());
    let server = server(probe.clone());
    let listener = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default()).await?;
    let addr = listener.local_addr()?;
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve_listener(listener).await }
    });
    println!("server on {addr}, methods {:?}", server.methods());

    let transport = TcpFrameTransport::connect(addr, TcpConfig::default()).await?;
    let client = RpcClient::new(MessageChannelAdapter::new(transport));
    let _handle = client.start();

    // --- server streaming -------------------------------------------------------------------
    println!("\n[server streaming] countdown(5)");
    let mut ticks = client
        .call_server_stream::<_, Tick>("countdown", &5u32)
        .await?;
    while let Some(tick) = ticks.recv().await {
        let tick = tick?;
        println!("  client <- {} {}", tick.remaining, tick.label);
    }
    println!("  stream ended");
    // A receiver is also a `futures::Stream`; `collect` gathers it in one go.
    let all = client
        .call_server_stream::<_, Tick>("countdown", &3u32)
        .await?
        .collect()
        .await?;
    let collected: Vec<u32> = all.iter().map(|t| t.remaining).collect();
    println!("  countdown(3) collected: {collected:?}");

    // --- client streaming -------------------------------------------------------------------
    println!("\n[client streaming] word_count");
    let (lines, summary) = client
        .call_client_stream::<String, Summary>("word_count")
        .await?;
    for line in [
        "streams are flow controlled",
        "the sender waits for credit",
        "finish ends the stream",
    ] {
        println!("  client -> {line:?}");
        lines.send(&line.to_string()).await?;
    }
    lines.finish().await?;
    let summary = summary.await?;
    println!(
        "  client <- {} lines, {} words, longest word {:?}",
        summary.lines, summary.words, summary.longest
    );

    // --- bidirectional ----------------------------------------------------------------------
    println!("\n[bidirectional] shout");
    let (outbox, mut inbox) = client.call_bidi::<String, String>("shout").await?;
    // Send from another task while this one reads: both directions are live at once.
    let sending = tokio::spawn(async move {
        for word in ["hello", "bidirectional", "streams"] {
            println!("  client -> {word:?}");
            outbox.send(&word.to_string()).await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        outbox.finish().await
    });
    while let Some(reply) = inbox.recv().await {
        println!("  client <- {:?}", reply?);
    }
    sending.await??;
    println!("  both sides finished");

    // --- cancellation -----------------------------------------------------------------------
    println!("\n[cancellation] ticker(every 10 ms), endless");
    let mut ticker = client
        .call_server_stream::<_, u64>("ticker", &10u64)
        .await?;
    for _ in 0..5 {
        if let Some(n) = ticker.recv().await {
            println!("  client <- tick {}", n?);
        }
    }
    println!("  client drops the receiver");
    drop(ticker); // `ticker.cancel()` says the same more explicitly
    tokio::time::timeout(Duration::from_secs(2), probe.stopped.notified())
        .await
        .map_err(|_| "the server did not stop the cancelled ticker")?;
    let sent = probe.sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let later = probe.sent.load(Ordering::SeqCst);
    if later != sent {
        return Err(
            format!("the cancelled ticker sent on: {sent} ticks, 50 ms later {later}").into(),
        );
    }
    println!("  server stopped the handler after {sent} ticks; 50 ms later still {later}");
    println!("  pending calls on the client: {}", client.pending_calls());

    client.close().await;
    server.shutdown();
    serving.await??;
    println!("\ndone");
    Ok(())
}
