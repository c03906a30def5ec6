//! Typed calls over an in-process transport, client and server tasks on one current-thread
//! runtime: a small program to profile (`valgrind --tool=callgrind`) the in-process call path.
//!
//! `cargo run --release -p xrpc-bench --example one_thread_calls -- [channel|arc] [CALLS]`

use serde::{Deserialize, Serialize};
use xrpc::{
    ArcFrameTransport, ChannelConfig, ChannelFrameTransport, FrameTransport, MessageChannelAdapter,
    RpcClient, RpcServer,
};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Msg {
    seq: u64,
    data: [u8; 24],
}

async fn run<T: FrameTransport>(c: T, s: T, calls: u64) {
    let server: RpcServer = RpcServer::new();
    server.register_typed("echo", |m: Msg| async move { Ok(m) });
    let serving = tokio::spawn(async move {
        let _ = server.serve(MessageChannelAdapter::new(s)).await;
    });
    let client = RpcClient::new(MessageChannelAdapter::new(c));
    let t = std::time::Instant::now();
    for i in 0..calls {
        let r: Msg = client
            .call(
                "echo",
                &Msg {
                    seq: i,
                    data: [0xab; 24],
                },
            )
            .await
            .expect("call");
        assert_eq!(r.seq, i);
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / calls as f64;
    println!("{calls} calls, {per:.3} µs each (mean)");
    client.close().await;
    let _ = serving.await;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = args.first().map_or("channel", String::as_str).to_string();
    let calls: u64 = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        tokio::spawn(async move {
            match kind.as_str() {
                "arc" => {
                    let (c, s) = ArcFrameTransport::create_pair("profile");
                    run(c, s, calls).await
                }
                _ => {
                    let (c, s) =
                        ChannelFrameTransport::create_pair("profile", ChannelConfig::default());
                    run(c, s, calls).await
                }
            }
        })
        .await
        .expect("client task");
    });
}
