//! A service defined once, as a trait, with `#[xrpc::service]`: the server implements the
//! trait, the client is generated — typed, one method per method of the trait. Server and
//! client run in this one process, over shared memory; then the same service is called from a
//! blocking client (no async runtime on its side).
//!
//! ```text
//! cargo run --example service_macro           # over shared memory
//! cargo run --example service_macro -- --tcp  # the same over TCP
//! ```
//!
//! Over TCP by changing one line: in `main`, `At::SharedMemory(..)` becomes
//! `At::Tcp("127.0.0.1:47820")` (what `--tcp` does). Only the transport changes: the service,
//! its implementation and the client code stay as they are.
//!
//! Each method is called on the wire as `"Calculator.add"`: a client of the string API
//! (`client.call("Calculator.add", &(1i64, 2i64))`) reaches it too; the arguments travel as one
//! value (a tuple of them when there are several). Each call also carries its signature, so a
//! client built from another version of the trait gets `RpcError::TypeMismatch`, never a
//! silently misread answer.

use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use xrpc::service::StreamCaller;
use xrpc::{
    CallContext, CallOptions, FrameListener, MessageChannel, MessageChannelAdapter, Metadata,
    RpcClient, RpcError, RpcServer, ServerStreamSender, SharedMemoryConfig,
    SharedMemoryFrameTransport, SharedMemoryFrameTransportListener, TcpConfig, TcpFrameTransport,
    TcpFrameTransportListener,
};

type BoxError = Box<dyn Error + Send + Sync>;

/// An application error: it travels typed, as the `Err` of `div`'s result.
#[derive(Debug, Serialize, Deserialize)]
pub enum CalcError {
    /// `div` by zero.
    DivideByZero,
}

/// The service: its methods are the wire's `"Calculator.add"`, `"Calculator.div"`, ...
#[xrpc::service]
pub trait Calculator {
    /// The sum of `a` and `b`.
    async fn add(&self, a: i64, b: i64) -> i64;
    /// `a / b`, or a typed error.
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError>;
    /// Who calls: the call's context (its metadata, deadline, cancellation) is an optional
    /// first argument.
    async fn hello(&self, ctx: &CallContext) -> String;
    /// `from`, `from - 1`, ..., `1`: a server stream.
    async fn countdown(&self, from: u32, out: ServerStreamSender<u32>) -> Result<(), RpcError>;
}

/// The implementation, on the server.
struct Calc;

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        let q = a.checked_div(b).ok_or(CalcError::DivideByZero)?;
        Ok(q)
    }

    async fn hello(&self, ctx: &CallContext) -> String {
        let who = ctx.metadata().get_str("user").unwrap_or("stranger");
        format!("hello {who}")
    }

    async fn countdown(&self, from: u32, out: ServerStreamSender<u32>) -> Result<(), RpcError> {
        for n in (1..=from).rev() {
            out.send(&n).await?;
        }
        Ok(())
    }
}

/// Where the service lives.
#[derive(Clone, Copy)]
enum At {
    SharedMemory(&'static str),
    Tcp(&'static str),
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The one line that picks the transport: At::Tcp("127.0.0.1:47820") for TCP.
    let at = At::SharedMemory("calculator-example");
    let at = if std::env::args().any(|a| a == "--tcp") {
        At::Tcp("127.0.0.1:0")
    } else {
        at
    };

    // =================== Server: the trait's implementation, added as a service
    let server = RpcServer::new();
    server.add_service(CalculatorServer::new(Calc));

    match at {
        At::SharedMemory(name) => {
            let name = std::env::var("XRPC_SERVICE").unwrap_or_else(|_| name.to_string());
            let listener =
                SharedMemoryFrameTransportListener::bind(&name, SharedMemoryConfig::default())?;
            serve(&server, listener);
            // =================== Client: generated, typed
            let transport =
                SharedMemoryFrameTransport::connect(&name, SharedMemoryConfig::default()).await?;
            let client = RpcClient::new(MessageChannelAdapter::new(transport));
            use_calculator(&CalculatorClient::new(client.clone())).await?;
            string_api(&client).await?;
            println!("over shared memory ({name})");
            blocking_client(move || {
                xrpc_blocking::SharedMemoryFrameTransport::connect_client(&name).map(Into::into)
            })
            .await?;
        }
        At::Tcp(addr) => {
            let listener = TcpFrameTransportListener::bind(addr, TcpConfig::default()).await?;
            let addr: SocketAddr = listener.local_addr()?;
            serve(&server, listener);
            let transport = TcpFrameTransport::connect(addr, TcpConfig::default()).await?;
            let client = RpcClient::new(MessageChannelAdapter::new(transport));
            use_calculator(&CalculatorClient::new(client.clone())).await?;
            string_api(&client).await?;
            println!("over TCP ({addr})");
            blocking_client(move || {
                xrpc_blocking::TcpFrameTransport::connect(addr, xrpc_blocking::TcpConfig::default())
                    .map(Into::into)
            })
            .await?;
        }
    }
    server.shutdown();
    Ok(())
}

/// Serves `listener` in a task until the server shuts down.
fn serve(server: &RpcServer, listener: impl FrameListener) {
    let server = server.clone();
    tokio::spawn(async move { server.serve_listener(listener).await });
}

/// The generated client, over any connection.
async fn use_calculator<T: StreamCaller + Clone>(calc: &CalculatorClient<T>) -> Result<(), BoxError>
where
    T::Receiver<u32>: futures_util::Stream<Item = Result<u32, RpcError>> + Unpin,
{
    println!("add(1, 2) = {}", calc.add(1, 2).await?);
    println!("div(7, 2) = {:?}", calc.div(7, 2).await?);
    println!("div(1, 0) = {:?}", calc.div(1, 0).await?);

    // Per-call options: a deadline, metadata the handler reads from its context.
    let mut metadata = Metadata::new();
    metadata.insert("user", b"ada")?;
    let options = CallOptions::default()
        .with_timeout(Duration::from_secs(1))
        .with_metadata(metadata);
    println!("{}", calc.with_options(options).hello().await?);

    let items: Vec<u32> = calc
        .countdown(3)
        .await?
        .map(|n| n.unwrap_or(0))
        .collect()
        .await;
    println!("countdown(3) = {items:?}");
    Ok(())
}

/// The same server through the string API: the method's wire name, its arguments as a tuple.
async fn string_api<T: MessageChannel>(client: &RpcClient<T>) -> Result<(), BoxError> {
    let sum: i64 = client.call("Calculator.add", &(40i64, 2i64)).await?;
    println!("string API: \"Calculator.add\" (40, 2) = {sum}");
    Ok(())
}

/// The same service from a blocking client, on a thread of its own: synchronous methods.
async fn blocking_client(
    connect: impl FnOnce() -> Result<xrpc_blocking::AnyFrameTransport, xrpc_blocking::TransportError>
    + Send
    + 'static,
) -> Result<(), BoxError> {
    tokio::task::spawn_blocking(move || -> Result<(), BoxError> {
        let calc = CalculatorBlockingClient::new(xrpc_blocking::RpcClient::new(connect()?));
        println!("blocking: add(20, 22) = {}", calc.add(20, 22)?);
        let items: Vec<u32> = calc.countdown(2)?.collect::<Result<_, _>>()?;
        println!("blocking: countdown(2) = {items:?}");
        Ok(())
    })
    .await?
}
