//! A service defined with this crate's `#[xrpc_blocking::service]` (the facade found by its
//! own name), served by the blocking server and called by the generated blocking client: the
//! trait's `async fn`s run to completion on the server's threads; a method that reads its
//! context runs on the handler pool and sees its call stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use xrpc_blocking::service::{RequestStream, ServerStreamSender};
use xrpc_blocking::{
    CallContext, RpcClient, RpcError, RpcServer, TcpConfig, TcpFrameTransport,
    TcpFrameTransportListener,
};

#[xrpc_blocking::service]
pub trait Store {
    /// Unary, one argument: it travels as itself.
    async fn double(&self, n: u64) -> u64;
    /// Waits until its call is stopped (its deadline here).
    async fn wait_for_stop(&self, ctx: &CallContext) -> bool;
    /// A server stream.
    async fn range(&self, n: u32, out: ServerStreamSender<u32>) -> Result<(), RpcError>;
    /// A client stream.
    async fn total(&self, items: RequestStream<u64>) -> Result<u64, RpcError>;
}

struct Mem {
    /// Set when `wait_for_stop` saw its call stopped.
    stopped: Arc<AtomicBool>,
}

impl Store for Mem {
    async fn double(&self, n: u64) -> u64 {
        n * 2
    }

    async fn wait_for_stop(&self, ctx: &CallContext) -> bool {
        ctx.cancelled().await;
        self.stopped.store(true, Ordering::SeqCst);
        true
    }

    async fn range(&self, n: u32, out: ServerStreamSender<u32>) -> Result<(), RpcError> {
        for i in 0..n {
            out.send(&i).await?;
        }
        Ok(())
    }

    async fn total(&self, mut items: RequestStream<u64>) -> Result<u64, RpcError> {
        let mut t = 0;
        while let Some(i) = items.recv().await {
            t += i?;
        }
        Ok(t)
    }
}

#[test]
fn a_service_on_the_blocking_server() {
    let listener = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default()).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = RpcServer::new();
    let stopped = Arc::new(AtomicBool::new(false));
    server.add_service(StoreServer::new(Mem {
        stopped: stopped.clone(),
    }));
    assert_eq!(
        server.methods(),
        [
            "Store.double",
            "Store.range",
            "Store.total",
            "Store.wait_for_stop"
        ]
    );
    let s = server.clone();
    let serving = std::thread::spawn(move || s.serve_listener(listener));

    let client = RpcClient::new(TcpFrameTransport::connect(addr, TcpConfig::default()).unwrap());
    let store = StoreBlockingClient::new(client.clone());
    assert_eq!(store.double(21).unwrap(), 42);
    // One argument travels as itself: the string API sends the bare value.
    assert_eq!(client.call::<_, u64>("Store.double", &5u64).unwrap(), 10);
    let items: Vec<u32> = store.range(5).unwrap().map(Result::unwrap).collect();
    assert_eq!(items, [0, 1, 2, 3, 4]);
    let (tx, total) = store.total().unwrap();
    for i in 1..=4 {
        tx.send(&i).unwrap();
    }
    tx.finish().unwrap();
    assert_eq!(total.wait().unwrap(), 10);

    // The handler sees its deadline pass; the client gets its timeout.
    let t0 = Instant::now();
    let r = store
        .with_timeout(Duration::from_millis(100))
        .wait_for_stop();
    assert!(matches!(r, Err(RpcError::Timeout)), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let seen = Instant::now();
    while !stopped.load(Ordering::SeqCst) {
        assert!(
            seen.elapsed() < Duration::from_secs(5),
            "the handler never saw its stop"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // ...and the connection goes on.
    assert_eq!(store.double(1).unwrap(), 2);

    server.shutdown();
    serving.join().unwrap().unwrap();
}
