//! tower middleware around an xrpc client and around a handler (feature `tower`): one server
//! on TCP loopback, one client, and the layers at work — a timeout, a retry of refused calls,
//! a rate limit and a concurrency limit on the client; a concurrency limit with load shedding
//! around a handler, whose refusals the client sees as `ResourceExhausted`.
//!
//! ```text
//! cargo run --example tower_layers --features tower
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use xrpc::tower::{BoxError, Call, CallRetry, ServerCall};
use xrpc::{
    BincodeCodec, Codec, ErrorCode, MessageChannelAdapter, RpcClient, RpcError, RpcServer,
    TcpConfig, TcpFrameTransport, TcpFrameTransportListener,
};

/// A layer's own error (`Overloaded`, `Elapsed`) as the refusal a client acts on: a
/// load-balanced client tries another server, a `CallRetry` retries it.
fn refusal(e: BoxError) -> RpcError {
    match e.downcast::<RpcError>() {
        Ok(e) => *e,
        Err(e) => RpcError::ServerError {
            code: ErrorCode::ResourceExhausted,
            message: e.to_string(),
        },
    }
}

/// The server: `add` (typed, behind tower), `slow` (answers after 200 ms), `flaky` (refuses
/// its first two calls), `busy` (two at a time, a third is shed).
fn server(busy_peak: Arc<AtomicUsize>) -> RpcServer {
    let server = RpcServer::new();
    server.register_service(
        "add",
        service_fn(|call: ServerCall| async move {
            let (a, b): (i64, i64) = BincodeCodec.decode(&call.payload)?;
            Ok::<_, RpcError>(BincodeCodec.encode(&(a + b))?)
        }),
    );
    server.register_service(
        "slow",
        service_fn(|call: ServerCall| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, RpcError>(call.payload)
        }),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    server.register_service(
        "flaky",
        service_fn(move |call: ServerCall| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    return Err(RpcError::ServerError {
                        code: ErrorCode::ResourceExhausted,
                        message: format!("busy (call {})", n + 1),
                    });
                }
                Ok(call.payload)
            }
        }),
    );
    let running = Arc::new(AtomicUsize::new(0));
    let busy = service_fn(move |call: ServerCall| {
        let (running, peak) = (running.clone(), busy_peak.clone());
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, RpcError>(call.payload)
        }
    });
    // Outermost first: errors mapped, shed when not ready, two at a time.
    server.register_service(
        "busy",
        ServiceBuilder::new()
            .map_err(refusal)
            .load_shed()
            .concurrency_limit(2)
            .service(busy),
    );
    server
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let listener = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default()).await?;
    let addr = listener.local_addr()?;
    let peak = Arc::new(AtomicUsize::new(0));
    let server = server(peak.clone());
    tokio::spawn(async move { server.serve_listener(listener).await });

    let transport = TcpFrameTransport::connect(addr, TcpConfig::default()).await?;
    let client = RpcClient::new(MessageChannelAdapter::new(transport));

    // The client's stack, outermost first: at most 4 calls at once and 100 per second, each
    // given 100 ms, retried up to 3 times when the server refused it.
    let mut stack = ServiceBuilder::new()
        .concurrency_limit(4)
        .rate_limit(100, Duration::from_secs(1))
        .timeout(Duration::from_millis(100))
        .retry(CallRetry::new(3).with_backoff(Duration::from_millis(5)))
        .service(client.clone());

    let add = Call::encode(&BincodeCodec, "add", &(2i64, 3i64))?;
    let sum: i64 = BincodeCodec.decode(&stack.ready().await?.call(add).await?)?;
    println!("add: 2 + 3 = {sum}");

    let started = Instant::now();
    let slow = Call::new("slow", "zzz".into());
    match stack.ready().await?.call(slow).await {
        Err(e) if e.is::<tower::timeout::error::Elapsed>() => println!(
            "timeout: slow gave up after {} ms ({e})",
            started.elapsed().as_millis() / 10 * 10
        ),
        other => return Err(format!("slow should have timed out: {other:?}").into()),
    }

    let flaky = Call::new("flaky", "again".into());
    let answer = stack.ready().await?.call(flaky).await?;
    println!(
        "retry: flaky answered {:?} after two refusals",
        String::from_utf8_lossy(&answer)
    );

    // Six calls at once on a handler that takes two: the rest are shed, not queued.
    let calls = (0..6).map(|_| {
        let mut c = client.clone();
        async move { c.ready().await?.call(Call::new("busy", "x".into())).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let shed = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(RpcError::ServerError {
                    code: ErrorCode::ResourceExhausted,
                    ..
                })
            )
        })
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    println!(
        "load-shed: {ok} answered, {shed} refused (ResourceExhausted); at most {} handlers at once",
        peak.load(Ordering::SeqCst)
    );
    if ok + shed != 6 || ok < 2 || peak.load(Ordering::SeqCst) > 2 {
        return Err(format!("unexpected results: {results:?}").into());
    }

    // A client-side load shed: with the one slot of its concurrency limit taken, a call is
    // refused at once instead of waiting.
    let mut shedding = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .service(client.clone());
    let mut holder = shedding.clone();
    let held = tokio::spawn(async move {
        let slow = Call::new("slow", "hold".into());
        holder.ready().await?.call(slow).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    match shedding
        .ready()
        .await?
        .call(Call::new("add", "".into()))
        .await
    {
        Err(e) if e.is::<tower::load_shed::error::Overloaded>() => {
            println!("client load-shed: refused at once ({e})");
        }
        other => return Err(format!("the call should have been shed: {other:?}").into()),
    }
    held.await?
        .map_err(|e| format!("the held call failed: {e}"))?;
    println!("done");
    Ok(())
}
