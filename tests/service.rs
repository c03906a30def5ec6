//! Services defined with `#[xrpc::service]`: the Calculator served and called under tokio, smol
//! and blocking (one body per client kind, run against each server); a client of the string
//! API calling the same server; typed application errors; every stream kind; the call's
//! context; a client built from another version of the trait failing with both types named.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use xrpc::service::StreamCaller;
use xrpc::{CallContext, RequestStream, RpcError, ServerStreamSender};

/// An application error, typed: it travels as the `Err` of the method's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DivError {
    /// The divisor was zero.
    DivideByZero,
}

#[xrpc::service]
pub trait Calculator {
    /// Unary, several arguments.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// A typed application error.
    async fn div(&self, a: i64, b: i64) -> Result<i64, DivError>;
    /// No argument, the call's context.
    async fn whoami(&self, ctx: &CallContext) -> String;
    /// A server stream.
    async fn count(&self, n: u32, out: ServerStreamSender<u32>) -> Result<(), RpcError>;
    /// A client stream.
    async fn sum(&self, items: RequestStream<i64>) -> Result<i64, RpcError>;
    /// Bidirectional.
    async fn shout(
        &self,
        items: RequestStream<String>,
        out: ServerStreamSender<String>,
    ) -> Result<(), RpcError>;
}

struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, DivError> {
        let q = a.checked_div(b).ok_or(DivError::DivideByZero)?;
        Ok(q)
    }

    async fn whoami(&self, ctx: &CallContext) -> String {
        let user = ctx.metadata().get_str("user").unwrap_or("nobody");
        format!("{user} calling {}", ctx.method())
    }

    async fn count(&self, n: u32, out: ServerStreamSender<u32>) -> Result<(), RpcError> {
        for i in 0..n {
            out.send(&i).await?;
        }
        Ok(())
    }

    async fn sum(&self, mut items: RequestStream<i64>) -> Result<i64, RpcError> {
        let mut total = 0;
        while let Some(item) = items.recv().await {
            total += item?;
        }
        Ok(total)
    }

    async fn shout(
        &self,
        mut items: RequestStream<String>,
        out: ServerStreamSender<String>,
    ) -> Result<(), RpcError> {
        while let Some(item) = items.recv().await {
            out.send(&item?.to_uppercase()).await?;
        }
        Ok(())
    }
}

/// The same service as another version of its crate declares it: `add` now takes `i32`s.
#[allow(dead_code)]
mod v2 {
    use xrpc::{RpcError, ServerStreamSender};

    #[xrpc::service(name = "Calculator")]
    pub trait Calculator {
        async fn add(&self, a: i32, b: i32) -> i32;
        async fn count(&self, n: u64, out: ServerStreamSender<u64>) -> Result<(), RpcError>;
    }
}

fn metadata_user(name: &str) -> xrpc::Metadata {
    let mut m = xrpc::Metadata::new();
    m.insert("user", name.as_bytes()).unwrap();
    m
}

/// Every behaviour, through an async generated client over any caller.
async fn exercise<T>(calc: &CalculatorClient<T>)
where
    T: StreamCaller,
    T::Receiver<u32>: futures_util::Stream<Item = Result<u32, RpcError>> + Unpin,
    T::Receiver<String>: futures_util::Stream<Item = Result<String, RpcError>> + Unpin,
    T: Clone,
{
    use futures_util::StreamExt;
    assert_eq!(calc.add(40, 2).await.unwrap(), 42);
    assert_eq!(calc.div(7, 2).await.unwrap(), Ok(3));
    assert_eq!(calc.div(7, 0).await.unwrap(), Err(DivError::DivideByZero));
    let me = calc.with_options(xrpc::CallOptions::default().with_metadata(metadata_user("ada")));
    assert_eq!(me.whoami().await.unwrap(), "ada calling Calculator.whoami");
    assert_eq!(
        calc.whoami().await.unwrap(),
        "nobody calling Calculator.whoami"
    );
    let items: Vec<u32> = calc
        .count(100)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, (0..100).collect::<Vec<_>>());
}

/// A tokio server of the calculator on a TCP port of its own (in a task of the current
/// runtime): the server and its address.
async fn serve_calculator_on_tokio() -> (xrpc::RpcServer, std::net::SocketAddr) {
    let listener = xrpc::TcpFrameTransportListener::bind("127.0.0.1:0", xrpc::TcpConfig::default())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = xrpc::RpcServer::new();
    server.add_service(CalculatorServer::new(Calc));
    let s = server.clone();
    tokio::spawn(async move { s.serve_listener(listener).await });
    (server, addr)
}

#[test]
fn calculator_on_tokio() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (server, addr) = serve_calculator_on_tokio().await;
        let transport = xrpc::TcpFrameTransport::connect(addr, xrpc::TcpConfig::default())
            .await
            .unwrap();
        let client = xrpc::RpcClient::new(xrpc::MessageChannelAdapter::new(transport));
        let calc = CalculatorClient::new(client.clone());
        exercise(&calc).await;
        streams_async(&calc).await;

        // The string API reaches the same methods: the arguments as a tuple.
        let sum: i64 = client.call("Calculator.add", &(1i64, 2i64)).await.unwrap();
        assert_eq!(sum, 3);
        let q: Result<i64, DivError> = client.call("Calculator.div", &(9i64, 3i64)).await.unwrap();
        assert_eq!(q, Ok(3));

        // Another version of the trait: refused, both types named.
        let old = v2::CalculatorClient::new(client.clone());
        let err = old.add(1, 2).await.unwrap_err();
        type_mismatch(&err);
        // A stream is refused as well: its first item is the error.
        let first = match old.count(3).await {
            Ok(mut items) => items.recv().await.expect("an error, not the end"),
            Err(e) => Err(e),
        };
        let err = first.unwrap_err();
        assert!(matches!(err, RpcError::TypeMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("u64 -> stream u64"), "{err}");
        assert!(err.to_string().contains("u32 -> stream u32"), "{err}");
        server.shutdown();
    });
}

/// The client's and the server's types are both in the error.
fn type_mismatch(err: &RpcError) {
    let text = err.to_string();
    assert!(matches!(err, RpcError::TypeMismatch { .. }), "{err:?}");
    assert!(text.contains("Calculator.add"), "{text}");
    assert!(text.contains("(i32, i32) -> i32"), "{text}");
    assert!(text.contains("(i64, i64) -> i64"), "{text}");
}

/// Client and bidirectional streams through a generated async client of an `RpcClient`.
async fn streams_async<T, C, R>(calc: &CalculatorClient<xrpc_async::RpcClient<T, C, R>>)
where
    T: xrpc_async::MessageChannel,
    C: xrpc::Codec,
    R: xrpc_async::Runtime,
{
    let (tx, total) = calc.sum().await.unwrap();
    for i in 1..=10 {
        tx.send(&i).await.unwrap();
    }
    tx.finish().await.unwrap();
    assert_eq!(total.await.unwrap(), 55);

    let (tx, mut rx) = calc.shout().await.unwrap();
    for word in ["a", "b", "c"] {
        tx.send(&word.to_string()).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap(), word.to_uppercase());
    }
    tx.finish().await.unwrap();
    assert!(rx.recv().await.is_none());
}

#[test]
fn calculator_on_smol() {
    smol::block_on(async {
        let listener = xrpc_smol::TcpFrameTransportListener::bind(
            "127.0.0.1:0",
            xrpc_smol::TcpConfig::default(),
        )
        .await
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let server = xrpc_smol::RpcServer::new();
        server.add_service(CalculatorServer::new(Calc));
        let s = server.clone();
        let task = smol::spawn(async move { s.serve_listener(listener).await });
        let transport =
            xrpc_smol::TcpFrameTransport::connect(addr, xrpc_smol::TcpConfig::default())
                .await
                .unwrap();
        let client = xrpc_smol::RpcClient::new(xrpc_smol::MessageChannelAdapter::new(transport));
        let calc = CalculatorClient::new(client);
        exercise(&calc).await;
        streams_async(&calc).await;
        server.shutdown();
        let _ = task.await;
    });
}

/// Every behaviour through the generated blocking client.
fn exercise_blocking(calc: &CalculatorBlockingClient<xrpc_blocking::RpcClient>) {
    assert_eq!(calc.add(40, 2).unwrap(), 42);
    assert_eq!(calc.div(7, 0).unwrap(), Err(DivError::DivideByZero));
    let me = calc.with_metadata(metadata_user("bob"));
    assert_eq!(me.whoami().unwrap(), "bob calling Calculator.whoami");
    let items: Vec<u32> = calc.count(50).unwrap().map(Result::unwrap).collect();
    assert_eq!(items, (0..50).collect::<Vec<_>>());
    let (tx, total) = calc.sum().unwrap();
    for i in 1..=10 {
        tx.send(&i).unwrap();
    }
    tx.finish().unwrap();
    assert_eq!(total.wait().unwrap(), 55);
    let (tx, mut rx) = calc.shout().unwrap();
    tx.send(&"hi".to_string()).unwrap();
    assert_eq!(rx.next().unwrap().unwrap(), "HI");
    tx.finish().unwrap();
    assert!(rx.next().is_none());
    let timed = calc.with_timeout(Duration::from_secs(5));
    assert_eq!(timed.add(1, 1).unwrap(), 2);
}

#[test]
fn calculator_on_blocking() {
    let listener = xrpc_blocking::TcpFrameTransportListener::bind(
        "127.0.0.1:0",
        xrpc_blocking::TcpConfig::default(),
    )
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = xrpc_blocking::RpcServer::new();
    server.add_service(CalculatorServer::new(Calc));
    let s = server.clone();
    let serving = std::thread::spawn(move || s.serve_listener(listener));
    let client = xrpc_blocking::RpcClient::new(
        xrpc_blocking::TcpFrameTransport::connect(addr, xrpc_blocking::TcpConfig::default())
            .unwrap(),
    );
    exercise_blocking(&CalculatorBlockingClient::new(client.clone()));
    // The string API on the blocking client, the same server.
    let sum: i64 = client.call("Calculator.add", &(2i64, 3i64)).unwrap();
    assert_eq!(sum, 5);
    let err = v2::CalculatorBlockingClient::new(client)
        .add(1, 2)
        .unwrap_err();
    type_mismatch(&err);
    server.shutdown();
    serving.join().unwrap().unwrap();
}

/// A blocking client of the tokio server: the same wire.
#[test]
fn blocking_client_of_tokio_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (server, addr) = rt.block_on(serve_calculator_on_tokio());
    let client = xrpc_blocking::RpcClient::new(
        xrpc_blocking::TcpFrameTransport::connect(addr, xrpc_blocking::TcpConfig::default())
            .unwrap(),
    );
    exercise_blocking(&CalculatorBlockingClient::new(client));
    server.shutdown();
}

/// The generated client over a load-balanced client of two servers: its unary methods are
/// answered through the balancer (how calls spread is `tests/load_balancing.rs`'s), and another
/// version of the trait is refused there too (the servers check the signatures).
#[test]
fn calculator_over_a_load_balanced_client() {
    use std::sync::Arc;
    use xrpc::{Endpoint, LoadBalancedClient, LoadBalancer, RoundRobin, StaticDiscovery};

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = xrpc::RpcServer::new();
        server.add_service(CalculatorServer::new(Calc));
        let mut endpoints = Vec::new();
        for _ in 0..2 {
            let listener =
                xrpc::TcpFrameTransportListener::bind("127.0.0.1:0", xrpc::TcpConfig::default())
                    .await
                    .unwrap();
            endpoints.push(Endpoint::Tcp(listener.local_addr().unwrap()));
            let s = server.clone();
            tokio::spawn(async move { s.serve_listener(listener).await });
        }
        let lb = Arc::new(LoadBalancer::new(
            Arc::new(StaticDiscovery::new(endpoints)),
            RoundRobin::new(),
        ));
        let balanced: LoadBalancedClient<_> =
            LoadBalancedClient::new(lb, xrpc::TcpConnector::default());
        balanced.init().await.unwrap();
        let balanced = Arc::new(balanced);
        let calc = CalculatorClient::new(balanced.clone());
        for i in 0..4 {
            assert_eq!(calc.add(i, 1).await.unwrap(), i + 1);
        }
        assert_eq!(calc.div(1, 0).await.unwrap(), Err(DivError::DivideByZero));
        let timed = calc.with_timeout(Duration::from_secs(5));
        assert_eq!(timed.add(2, 2).await.unwrap(), 4);
        let err = v2::CalculatorClient::new(&*balanced)
            .add(1, 2)
            .await
            .unwrap_err();
        type_mismatch(&err);
        server.shutdown();
    });
}
