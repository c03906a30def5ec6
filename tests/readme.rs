//! The README's examples, compiled and run: "First contact" (a service defined as a trait, then
//! the same call through the string API: a listener that serves any number of clients, which
//! connect from async code) and "Porting from xrpc-rs" (the original xrpc-rs README example,
//! verbatim but for the crate name).
//!
//! Each example's code sits below between `// README <example>` and `// README end` lines, with
//! the service name as a parameter, `my_service`, so that every run binds a name of its own
//! (two test runs at once never meet). `the_readme_shows_this_code` checks that the README's
//! code block under `<!-- tests/readme.rs: <example> -->` is exactly that code with the
//! parameter written as the literal `"my_service"`.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use xrpc_shm::testing::unique_name;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[rustfmt::skip]
mod a_service {
    use super::BoxError;

    // README a service
    use xrpc::{
        MessageChannelAdapter, RpcClient, RpcServer, SharedMemoryConfig,
        SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
    };

    #[xrpc::service]
    pub trait Calculator {
        async fn add(&self, a: i64, b: i64) -> i64;
    }

    struct Calc;

    impl Calculator for Calc {
        async fn add(&self, a: i64, b: i64) -> i64 {
            a + b
        }
    }
    // README end

    pub async fn server(my_service: &str) -> Result<(), BoxError> {
        // README a service
        // =================== Server: one listener, any number of clients (a segment each)
        let listener = SharedMemoryFrameTransportListener::bind(my_service, SharedMemoryConfig::default())?;
        let server = RpcServer::new();
        server.add_service(CalculatorServer::new(Calc));
        server.serve_listener(listener).await?; // until server.shutdown()
        // README end
        Ok(())
    }

    pub async fn client(my_service: &str) -> Result<(), BoxError> {
        // README a service
        // =================== Client, generated from the trait, in async code
        let transport = SharedMemoryFrameTransport::connect(my_service, SharedMemoryConfig::default()).await?;
        let calc = CalculatorClient::new(RpcClient::new(MessageChannelAdapter::new(transport)));
        assert_eq!(calc.add(1, 2).await?, 3);
        // README end
        Ok(())
    }
}

#[rustfmt::skip]
mod first_contact {
    use super::BoxError;

    // README first contact
    use xrpc::{
        MessageChannelAdapter, RpcClient, RpcServer, SharedMemoryConfig,
        SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
    };
    use serde::{Serialize, Deserialize};

    #[derive(Serialize, Deserialize)]
    struct AddRequest { a: i32, b: i32 }
    #[derive(Serialize, Deserialize)]
    struct AddResponse { result: i32 }
    // README end

    pub async fn server(my_service: &str) -> Result<(), BoxError> {
        // README first contact
        // =================== Server: one listener, any number of clients (a segment each)
        let listener = SharedMemoryFrameTransportListener::bind(my_service, SharedMemoryConfig::default())?;
        let server = RpcServer::new();
        server.register_typed("add", |req: AddRequest| async move {
            Ok(AddResponse { result: req.a + req.b })
        });
        server.serve_listener(listener).await?; // until server.shutdown()
        // README end
        Ok(())
    }

    pub async fn client(my_service: &str) -> Result<(), BoxError> {
        // README first contact
        // =================== Client, in async code
        let transport = SharedMemoryFrameTransport::connect(my_service, SharedMemoryConfig::default()).await?;
        let client = RpcClient::new(MessageChannelAdapter::new(transport));
        let resp: AddResponse = client.call("add", &AddRequest { a: 1, b: 2 }).await?;
        assert_eq!(resp.result, 3);
        // README end
        Ok(())
    }
}

#[rustfmt::skip]
mod porting {
    use super::BoxError;

    // README porting from xrpc-rs
    use xrpc::{
        RpcClient, RpcServer, MessageChannelAdapter,
        SharedMemoryFrameTransport, SharedMemoryConfig,
    };
    use serde::{Serialize, Deserialize};
    use std::sync::Arc;

    #[derive(Serialize, Deserialize)]
    struct AddRequest { a: i32, b: i32 }
    #[derive(Serialize, Deserialize)]
    struct AddResponse { result: i32 }
    // README end

    pub async fn server(my_service: &str) -> Result<(), BoxError> {
        // README porting from xrpc-rs
        // =================== Server
        let transport = SharedMemoryFrameTransport::create_server(my_service, SharedMemoryConfig::default())?;
        let channel = Arc::new(MessageChannelAdapter::new(transport));
        let server = RpcServer::new();
        server.register_typed("add", |req: AddRequest| async move {
            Ok(AddResponse { result: req.a + req.b })
        });
        server.serve(channel).await?;
        // README end
        Ok(())
    }

    pub async fn client(my_service: &str) -> Result<(), BoxError> {
        // README porting from xrpc-rs
        // =================== Client
        let transport = SharedMemoryFrameTransport::connect_client(my_service)?;
        let channel = MessageChannelAdapter::new(transport);
        let client = RpcClient::new(channel);
        let _handle = client.start();
        let resp: AddResponse = client.call("add", &AddRequest { a: 1, b: 2 }).await?;
        assert_eq!(resp.result, 3);
        // README end
        Ok(())
    }
}

/// A service name of this run, for the life of the test binary.
fn service(tag: &str) -> &'static str {
    Box::leak(unique_name(tag).into_boxed_str())
}

/// Polls `server` once — it binds its name before its first wait — then runs it in a task.
async fn start<F>(server: F) -> tokio::task::JoinHandle<Result<(), BoxError>>
where
    F: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let mut server: Pin<Box<F>> = Box::pin(server);
    let first = std::future::poll_fn(|cx| Poll::Ready(server.as_mut().poll(cx))).await;
    if let Poll::Ready(r) = first {
        panic!("the server ended before serving: {r:?}");
    }
    tokio::spawn(server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_example_serves_many_clients() {
    let my_service = service("a-service");
    let server = start(a_service::server(my_service)).await;
    let (a, b) = tokio::join!(a_service::client(my_service), a_service::client(my_service));
    for r in [a, b] {
        r.unwrap();
    }
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_contact_example_serves_many_clients() {
    let my_service = service("first-contact");
    let server = start(first_contact::server(my_service)).await;
    // Three clients at once, each on its own connection.
    let (a, b, c) = tokio::join!(
        first_contact::client(my_service),
        first_contact::client(my_service),
        first_contact::client(my_service),
    );
    for r in [a, b, c] {
        r.unwrap();
    }
    assert!(
        !server.is_finished(),
        "the server serves on after its clients left"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_readme_example_runs() {
    let my_service = service("porting");
    let server = start(porting::server(my_service)).await;
    // The original client connects with a blocking call: run it off the runtime's workers.
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Handle::current().block_on(porting::client(my_service))
    })
    .await
    .unwrap()
    .unwrap();
    // The client is gone: the server's connection ends and `serve` returns.
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns when the client disconnects")
        .unwrap()
        .unwrap();
}

/// The lines of this file between `// README <example>` and `// README end`, each run
/// dedented, the runs joined by a blank line, with the parameter `my_service` written as the
/// literal the README shows.
fn code_here(example: &str) -> String {
    let source = include_str!("readme.rs");
    let start = format!("// README {example}");
    let mut runs: Vec<String> = Vec::new();
    let mut run: Option<Vec<&str>> = None;
    for line in source.lines() {
        let marker = line.trim();
        match run.as_mut() {
            None if marker == start => run = Some(Vec::new()),
            None => {}
            Some(lines) if marker == "// README end" => {
                runs.push(dedent(lines));
                run = None;
            }
            Some(lines) => lines.push(line),
        }
    }
    assert!(run.is_none(), "`{start}` without `// README end`");
    assert!(!runs.is_empty(), "no `{start}` in tests/readme.rs");
    runs.join("\n\n").replace("my_service", "\"my_service\"")
}

fn dedent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ```rust block right after `<!-- tests/readme.rs: <example> -->` in the README.
fn code_in_readme(example: &str) -> String {
    let readme = include_str!("../README.md");
    let marker = format!("<!-- tests/readme.rs: {example} -->");
    let at = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no `{marker}`"));
    let rest = readme[at + marker.len()..].trim_start();
    let body = rest
        .strip_prefix("```rust\n")
        .unwrap_or_else(|| panic!("no ```rust block right after `{marker}`"));
    let end = body.find("\n```").expect("the code block ends");
    body[..end]
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_readme_shows_this_code() {
    for example in ["a service", "first contact", "porting from xrpc-rs"] {
        let (here, readme) = (code_here(example), code_in_readme(example));
        assert!(
            here == readme,
            "README.md's \"{example}\" code differs from tests/readme.rs.\n\
             --- tests/readme.rs ---\n{here}\n--- README.md ---\n{readme}"
        );
    }
}
