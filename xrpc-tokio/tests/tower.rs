//! The `tower` feature: layers around a client and around a handler, each test able to fail.
#![cfg(feature = "tower")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use xrpc_proto::ErrorCode;
use xrpc_tokio::tower::{BoxError, Call, CallRetry, ServerCall};
use xrpc_tokio::{
    ChannelConfig, ChannelFrameTransport, MessageChannelAdapter, RpcClient, RpcError, RpcServer,
};

type Client = RpcClient<MessageChannelAdapter<ChannelFrameTransport>>;

/// A client connected in process to `server`, served on a task.
fn connect(server: &RpcServer) -> Client {
    let (a, b) = ChannelFrameTransport::create_pair("tower", ChannelConfig::default());
    let server = server.clone();
    tokio::spawn(async move { server.serve(MessageChannelAdapter::new(b)).await });
    RpcClient::new(MessageChannelAdapter::new(a))
}

fn call(method: &'static str) -> Call {
    Call::new(method, Bytes::from_static(b"ping"))
}

/// Answers its payload after `delay`.
async fn echo_after(delay: Duration, call: ServerCall) -> Result<Bytes, RpcError> {
    tokio::time::sleep(delay).await;
    Ok(call.payload)
}

#[tokio::test]
async fn a_timeout_layer_around_the_client_fires() {
    let server = RpcServer::new();
    server.register_service(
        "slow",
        service_fn(|c| echo_after(Duration::from_millis(300), c)),
    );
    server.register_service("fast", service_fn(|c| echo_after(Duration::ZERO, c)));
    let mut svc = ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .service(connect(&server));
    let ok = svc.ready().await.unwrap().call(call("fast")).await.unwrap();
    assert_eq!(ok, Bytes::from_static(b"ping"));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(call("slow"))
        .await
        .unwrap_err();
    assert!(
        err.is::<tower::timeout::error::Elapsed>(),
        "expected the layer's timeout, got {err}"
    );
}

#[tokio::test]
async fn a_concurrency_limit_around_a_handler_holds_on_the_server() {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    let handler = service_fn(move |c: ServerCall| {
        let (r, m) = (r.clone(), m.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            r.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, RpcError>(c.payload)
        }
    });
    let server = RpcServer::new();
    server.register_service(
        "limited",
        ServiceBuilder::new().concurrency_limit(2).service(handler),
    );
    let client = connect(&server);
    let calls = (0..8).map(|_| {
        let mut c = client.clone();
        async move { c.ready().await?.call(call("limited")).await }
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.unwrap(), Bytes::from_static(b"ping"));
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "at most two handlers at once"
    );
}

/// A handler failing with `code` its first `failures` calls; counts its calls.
fn flaky(code: ErrorCode, failures: usize, calls: Arc<AtomicUsize>) -> RpcServer {
    let server = RpcServer::new();
    server.register_service(
        "flaky",
        service_fn(move |c: ServerCall| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < failures {
                    Err(RpcError::ServerError {
                        code,
                        message: "not now".into(),
                    })
                } else {
                    Ok(c.payload)
                }
            }
        }),
    );
    server
}

#[tokio::test]
async fn a_retry_layer_retries_a_refused_call_and_not_a_handler_error() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = flaky(ErrorCode::ResourceExhausted, 2, calls.clone());
    let mut svc = ServiceBuilder::new()
        .retry(CallRetry::new(3))
        .service(connect(&server));
    let ok = svc.ready().await.unwrap().call(call("flaky")).await;
    assert_eq!(ok.unwrap(), Bytes::from_static(b"ping"));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "two refusals, then the answer"
    );

    // A handler's own error says the server works: never retried.
    let calls = Arc::new(AtomicUsize::new(0));
    let server = flaky(ErrorCode::Handler, 1, calls.clone());
    let mut svc = ServiceBuilder::new()
        .retry(CallRetry::new(3))
        .service(connect(&server));
    let err = svc.ready().await.unwrap().call(call("flaky")).await;
    assert!(matches!(
        err,
        Err(RpcError::ServerError {
            code: ErrorCode::Handler,
            ..
        })
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn load_shedding_around_a_handler_refuses_past_its_limit() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let handler = service_fn(move |c: ServerCall| {
        let g = g.clone();
        async move {
            let _ = g.acquire().await;
            Ok::<_, RpcError>(c.payload)
        }
    });
    let server = RpcServer::new();
    server.register_service(
        "shed",
        ServiceBuilder::new()
            // The layer's `Overloaded` as the refusal a client fails over on.
            .map_err(|e: BoxError| match e.downcast::<RpcError>() {
                Ok(e) => *e,
                Err(e) => RpcError::ServerError {
                    code: ErrorCode::ResourceExhausted,
                    message: e.to_string(),
                },
            })
            .load_shed()
            .concurrency_limit(1)
            .service(handler),
    );
    let client = connect(&server);
    let mut first = client.clone();
    let held = tokio::spawn(async move { first.ready().await?.call(call("shed")).await });
    // Until the first call holds the only slot.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut second = client.clone();
    let err = second.ready().await.unwrap().call(call("shed")).await;
    assert!(
        matches!(
            &err,
            Err(RpcError::ServerError {
                code: ErrorCode::ResourceExhausted,
                ..
            })
        ),
        "{err:?}"
    );
    gate.add_permits(1);
    assert_eq!(held.await.unwrap().unwrap(), Bytes::from_static(b"ping"));
}

#[tokio::test]
async fn a_closed_client_is_not_ready() {
    let server = RpcServer::new();
    let mut client = connect(&server);
    assert!(client.ready().await.is_ok());
    client.close().await;
    let err = client.ready().await.map(drop).unwrap_err();
    assert!(matches!(err, RpcError::Disconnected(_)), "{err:?}");
}

#[tokio::test]
async fn a_load_balanced_client_is_a_service_and_fails_over_a_refusal() {
    use xrpc_tokio::{
        Endpoint, LoadBalancedClient, LoadBalancer, RoundRobin, StaticDiscovery, TcpConfig,
        TcpConnector, TcpFrameTransport, TcpFrameTransportListener,
    };
    // Server 0 refuses every call (and counts them); server 1 answers.
    let refused = Arc::new(AtomicUsize::new(0));
    let mut endpoints = Vec::new();
    for refuses in [true, false] {
        let listener = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default())
            .await
            .unwrap();
        endpoints
            .push(Endpoint::tcp_from_str(&listener.local_addr().unwrap().to_string()).unwrap());
        let server = if refuses {
            flaky(ErrorCode::ResourceExhausted, usize::MAX, refused.clone())
        } else {
            flaky(ErrorCode::Handler, 0, Arc::new(AtomicUsize::new(0)))
        };
        tokio::spawn(async move { server.serve_listener(listener).await });
    }
    let lb = Arc::new(LoadBalancer::new(
        Arc::new(StaticDiscovery::new(endpoints)),
        RoundRobin::new(),
    ));
    let client: LoadBalancedClient<MessageChannelAdapter<TcpFrameTransport>> =
        LoadBalancedClient::new(lb, TcpConnector::default());
    let client = Arc::new(client);
    let mut svc = ServiceBuilder::new()
        .timeout(Duration::from_secs(5))
        .service(client);
    for _ in 0..4 {
        let answer = svc.ready().await.unwrap().call(call("flaky")).await;
        assert_eq!(answer.unwrap(), Bytes::from_static(b"ping"));
    }
    assert!(refused.load(Ordering::SeqCst) >= 1, "server 0 was tried");
}

/// A service of the `#[service]` macro, for a generated client over layers.
#[xrpc_tokio::service]
pub trait Clock {
    async fn wait_ms(&self, ms: u64) -> u64;
}

struct ClockImpl;

impl Clock for ClockImpl {
    async fn wait_ms(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

#[tokio::test]
async fn a_generated_client_calls_through_layers() {
    use xrpc_tokio::tower::TowerCaller;
    let server = RpcServer::new();
    server.add_service(ClockServer::new(ClockImpl));
    let layered = ServiceBuilder::new()
        .timeout(Duration::from_millis(100))
        .service(connect(&server));
    let clock = ClockClient::new(TowerCaller::new(layered));
    // Through the layers to the server and back, typed (and with the method's signature).
    assert_eq!(clock.wait_ms(1).await.unwrap(), 1);
    // The timeout layer's error is the call's client error, with the layer's message.
    let err = clock.wait_ms(1_000).await.unwrap_err();
    assert!(
        matches!(&err, RpcError::ClientError(m) if m.contains("timed out")),
        "expected the layer's timeout, got {err:?}"
    );
}
