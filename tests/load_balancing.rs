//! Layer 4 end to end over TCP: the original README's load-balancing snippet (verbatim but for
//! the import and the addresses), failover when a server process is killed mid-run, DNS
//! discovery refreshed from a resolver the test controls, the connection pool's reuse, growth,
//! idle timeout and health check, and a remote application error that ejects nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use xrpc::{
    DnsDiscovery, Endpoint, HealthState, LoadBalancedClient, LoadBalancer, MessageChannelAdapter,
    PoolConfig, RoundRobin, RpcError, RpcServer, StaticDiscovery, TcpConfig, TcpConnector,
    TcpFrameTransport, TcpFrameTransportListener,
};
use xrpc_shm::testing::{Peer, peer_role};

type Client = LoadBalancedClient<MessageChannelAdapter<TcpFrameTransport>>;

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    n: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Response {
    server: String,
    n: u32,
}

/// Registers the test's methods: `method` (the README's), `whoami`, `slow` (answers after
/// `n` ms) and `fail` (an application error).
fn register(server: &RpcServer, name: &str) {
    let name = name.to_owned();
    let n1 = name.clone();
    server.register_typed("method", move |r: Request| {
        let server = n1.clone();
        async move { Ok(Response { server, n: r.n }) }
    });
    let n2 = name.clone();
    server.register_typed("whoami", move |(): ()| {
        let n = n2.clone();
        async move { Ok(n) }
    });
    let n3 = name.clone();
    server.register_typed("slow", move |ms: u64| {
        let n = n3.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(n)
        }
    });
    server.register_typed("fail", |(): ()| async move {
        Err::<(), _>(RpcError::server("no such key"))
    });
}

/// A server in this process on `addr`; its address.
async fn start_server(name: &str, addr: &str) -> (SocketAddr, RpcServer) {
    let listener = TcpFrameTransportListener::bind(addr, TcpConfig::default())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = RpcServer::new();
    register(&server, name);
    let s = server.clone();
    tokio::spawn(async move { s.serve_listener(listener).await });
    (addr, server)
}

#[allow(clippy::disallowed_names)]
#[rustfmt::skip]
mod readme {
    use super::{Request, Response};
    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    // README load balancing
    use xrpc::{
        LoadBalancedClient, LoadBalancer, ClientFactory, Endpoint,
        StaticDiscovery, RoundRobin, RpcClient, MessageChannelAdapter,
        TcpFrameTransport, TcpConfig, BincodeCodec, RpcError,
    };
    use async_trait::async_trait;
    use std::sync::Arc;

    struct TcpFactory;

    #[async_trait]
    impl ClientFactory<MessageChannelAdapter<TcpFrameTransport>, BincodeCodec> for TcpFactory {
        async fn create(&self, endpoint: &Endpoint)
            -> Result<RpcClient<MessageChannelAdapter<TcpFrameTransport>, BincodeCodec>, RpcError>
        {
            let Endpoint::Tcp(addr) = endpoint else {
                return Err(RpcError::ClientError("Expected TCP".into()));
            };
            let transport = TcpFrameTransport::connect(*addr, TcpConfig::default())
                .await.map_err(RpcError::Transport)?;
            Ok(RpcClient::new(MessageChannelAdapter::new(transport)))
        }
    }
    // README end

    /// The snippet, with the test's addresses for the README's 8001..8003; returns the servers
    /// that answered it and three more calls.
    pub async fn run(addrs: [&str; 3]) -> Result<Vec<String>, BoxError> {
        let request = Request { n: 7 };
        // README load balancing
        // Setup load balancer
        let endpoints = vec![
            Endpoint::tcp_from_str(addrs[0])?,
            Endpoint::tcp_from_str(addrs[1])?,
            Endpoint::tcp_from_str(addrs[2])?,
        ];
        let discovery = Arc::new(StaticDiscovery::new(endpoints));
        let lb = Arc::new(LoadBalancer::new(discovery, RoundRobin::new()));
        let client = LoadBalancedClient::new(lb, Arc::new(TcpFactory));
        client.init().await?;
        // Calls automatically distributed across servers with failover
        let response: Response = client.call("method", &request).await?;
        // README end
        assert_eq!(response.n, 7);
        let mut servers = vec![response.server];
        for n in 0..2 {
            let r: Response = client.call("method", &Request { n }).await?;
            servers.push(r.server);
        }
        Ok(servers)
    }
}

#[tokio::test]
async fn the_readme_snippet_compiles_and_runs() {
    let mut addrs = Vec::new();
    for name in ["a", "b", "c"] {
        addrs.push(start_server(name, "127.0.0.1:0").await.0.to_string());
    }
    let mut servers = readme::run([&addrs[0], &addrs[1], &addrs[2]])
        .await
        .unwrap();
    servers.sort();
    assert_eq!(servers, ["a", "b", "c"], "round robin over the three");
}

/// A balanced client over `endpoints`, round robin.
fn client_over(endpoints: Vec<Endpoint>, pool: PoolConfig) -> Client {
    let lb = Arc::new(LoadBalancer::new(
        Arc::new(StaticDiscovery::new(endpoints)),
        RoundRobin::new(),
    ));
    LoadBalancedClient::with_pool_config(lb, TcpConnector::default(), pool)
}

/// The peer process of `failover_when_a_server_is_killed_mid_run`: serves as `name@addr`.
async fn serve_as_peer(arg: &str) {
    let (name, addr) = arg.split_once('@').unwrap();
    let (addr, _server) = start_server(name, addr).await;
    println!("listening on {addr}");
    std::future::pending::<()>().await;
}

fn spawn_server(name: &str) -> (Peer, SocketAddr) {
    let mut peer = Peer::spawn(
        "failover_when_a_server_is_killed_mid_run",
        "server",
        &format!("{name}@127.0.0.1:0"),
    );
    let line = peer.wait_for_line("listening on ");
    let addr = line.trim().rsplit(' ').next().unwrap().parse().unwrap();
    (peer, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_when_a_server_is_killed_mid_run() {
    if let Some((_, arg)) = peer_role() {
        return serve_as_peer(&arg).await;
    }
    let mut peers = Vec::new();
    let mut endpoints = Vec::new();
    for name in ["s1", "s2", "s3"] {
        let (peer, addr) = spawn_server(name);
        peers.push(peer);
        endpoints.push(Endpoint::Tcp(addr));
    }
    let client = client_over(endpoints.clone(), PoolConfig::default());
    client.init().await.unwrap();

    // Nine slow calls, three on each server (round robin), s2 killed while they run: the
    // idempotent ones all succeed, on another server for s2's three.
    let calls = (0..9).map(|_| client.call_idempotent::<_, String>("slow", &1000u64));
    let killer = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peers[1].kill();
    };
    let (results, ()) = tokio::join!(join_all(calls), killer);
    let answered: Vec<String> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(answered.len(), 9);
    assert!(answered.iter().all(|s| s != "s2"), "{answered:?}");

    // Again with s2 back and calls that are not idempotent: the three cut by the kill end
    // with an error that names the endpoint and says why they were not retried.
    let (peer, addr) = {
        let mut peer = Peer::spawn(
            "failover_when_a_server_is_killed_mid_run",
            "server",
            &format!("s2@{}", endpoints[1]).replace("tcp://", ""),
        );
        let line = peer.wait_for_line("listening on ");
        (peer, line.trim().rsplit(' ').next().unwrap().to_owned())
    };
    peers[1] = peer;
    assert_eq!(Endpoint::tcp_from_str(&addr).unwrap(), endpoints[1]);
    // s2 was ejected: wait for its probe to re-admit it (back-off 1 s, then 2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s: String = client.call("whoami", &()).await.unwrap();
        let healthy = client
            .load_balancer()
            .status()
            .iter()
            .all(|s| s.health == HealthState::Healthy);
        if s == "s2" && healthy {
            break;
        }
        assert!(Instant::now() < deadline, "s2 was not re-admitted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Line the round robin up so that the next nine calls go three to each server.
    let before = client.load_balancer().status();
    let calls = (0..9).map(|_| client.call::<_, String>("slow", &1000u64));
    let killer = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peers[1].kill();
    };
    let (results, ()) = tokio::join!(join_all(calls), killer);
    let after = client.load_balancer().status();
    let picked_s2 = after[1].calls - before[1].calls;
    let mut failed = 0;
    for r in &results {
        match r {
            Ok(s) => assert_ne!(s, "s2"),
            Err(RpcError::Disconnected(m)) => {
                failed += 1;
                assert!(
                    m.contains(&endpoints[1].to_string()) && m.contains("not idempotent"),
                    "{m}"
                );
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(picked_s2, 3, "{before:?} {after:?}");
    assert_eq!(failed, 3, "{results:?}");
    // Later calls, not idempotent either, go to the live servers: a connection refused is
    // never a call that ran.
    for _ in 0..10 {
        let s: String = client.call("whoami", &()).await.unwrap();
        assert_ne!(s, "s2");
    }
}

#[tokio::test]
async fn a_remote_application_error_ejects_nothing() {
    let mut endpoints = Vec::new();
    for name in ["a", "b"] {
        endpoints.push(Endpoint::Tcp(start_server(name, "127.0.0.1:0").await.0));
    }
    let client = client_over(endpoints, PoolConfig::default());
    for _ in 0..10 {
        let e = client.call::<_, ()>("fail", &()).await.unwrap_err();
        assert!(matches!(e, RpcError::ServerError { .. }), "{e}");
    }
    let status = client.load_balancer().status();
    assert!(
        status.iter().all(|s| s.health == HealthState::Healthy),
        "{status:?}"
    );
    assert!(status.iter().all(|s| s.calls == 5), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_refresh_adds_and_removes_endpoints_without_dropping_calls() {
    let mut addrs = HashMap::new();
    for name in ["a", "b", "c"] {
        addrs.insert(name, start_server(name, "127.0.0.1:0").await.0);
    }
    let records = Arc::new(Mutex::new(vec![addrs["a"], addrs["b"]]));
    let r = records.clone();
    let resolver = move |host: &str, _port: u16| {
        assert_eq!(host, "svc.test");
        Ok(r.lock().unwrap().clone())
    };
    let discovery = DnsDiscovery::with_resolver("svc.test", 1, resolver)
        .with_refresh_interval(Duration::from_millis(50));
    let lb = Arc::new(LoadBalancer::new(Arc::new(discovery), RoundRobin::new()));
    let client = Arc::new(LoadBalancedClient::new(lb.clone(), TcpConnector::default()));
    client.init().await.unwrap();

    let whoami = async |client: &Client| -> String { client.call("whoami", &()).await.unwrap() };
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..4 {
        seen.push(whoami(&client).await);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["a", "b"]);

    // Slow calls in flight on a (to be removed) and b (to stay) while the records change.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.call::<_, String>("slow", &2000u64).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    *records.lock().unwrap() = vec![addrs["b"], addrs["c"]];
    let want = vec![Endpoint::Tcp(addrs["b"]), Endpoint::Tcp(addrs["c"])];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // A call starts the refresh when it is due.
        whoami(&client).await;
        let mut now = lb.endpoints();
        now.sort();
        let mut w = want.clone();
        w.sort();
        if now == w {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the records were not applied: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The change came while the slow calls were in flight (else this test proves nothing).
    assert!(
        slow.iter().all(|s| !s.is_finished()),
        "the slow calls ended early"
    );
    let mut slow_answers: Vec<String> = Vec::new();
    for s in slow {
        slow_answers.push(s.await.unwrap().unwrap());
    }
    slow_answers.sort();
    assert_eq!(slow_answers, ["a", "b"], "calls in flight were dropped");
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..6 {
        seen.push(whoami(&client).await);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["b", "c"]);
    // The removed endpoint's connection left the pool.
    let pooled: Vec<Endpoint> = client
        .pool()
        .connections()
        .into_iter()
        .map(|(e, _)| e)
        .collect();
    assert!(!pooled.contains(&Endpoint::Tcp(addrs["a"])), "{pooled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_reuses_grows_expires_and_checks_connections() {
    let (a, server_a) = start_server("a", "127.0.0.1:0").await;
    let (b, _server_b) = start_server("b", "127.0.0.1:0").await;
    let pool = PoolConfig {
        max_connections: 2,
        target_in_flight: 2,
        idle_timeout: Duration::from_millis(300),
        ..PoolConfig::default()
    };
    let client = client_over(vec![Endpoint::Tcp(a), Endpoint::Tcp(b)], pool);
    let conns = |client: &Client| {
        let mut c: HashMap<Endpoint, usize> = client.pool().connections().into_iter().collect();
        c.retain(|_, n| *n > 0);
        c
    };
    // Sequential calls reuse one connection an endpoint.
    for _ in 0..20 {
        let _: String = client.call("whoami", &()).await.unwrap();
    }
    assert_eq!(conns(&client).values().copied().collect::<Vec<_>>(), [1, 1]);
    // Many calls at once: a second connection each, never a third.
    let calls = (0..16).map(|_| client.call::<_, String>("slow", &100u64));
    for r in join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(conns(&client).values().copied().collect::<Vec<_>>(), [2, 2]);
    // Idle past the timeout: closed at the next sweep (at most once a second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _: String = client.call("whoami", &()).await.unwrap();
    let total: usize = conns(&client).values().sum();
    assert_eq!(total, 1, "{:?}", conns(&client));
    // A server gone: its broken connection is dropped when checked, and the call goes on
    // elsewhere.
    for _ in 0..4 {
        let _: String = client.call("whoami", &()).await.unwrap();
    }
    server_a.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..4 {
        let s: String = client.call("whoami", &()).await.unwrap();
        assert_eq!(s, "b");
    }
    assert_eq!(
        conns(&client).get(&Endpoint::Tcp(a)),
        None,
        "{:?}",
        conns(&client)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_and_shared_memory_endpoints_are_balanced_too() {
    use xrpc::{
        SharedMemoryConfig, SharedMemoryConnector, SharedMemoryFrameTransport,
        SharedMemoryFrameTransportListener, UnixConfig, UnixConnector, UnixFrameTransport,
        UnixFrameTransportListener,
    };
    use xrpc_shm::testing::unique_name;

    fn serve<L: xrpc::FrameListener>(name: &str, listener: L) {
        let server = RpcServer::new();
        register(&server, name);
        tokio::spawn(async move { server.serve_listener(listener).await });
    }
    fn lb(endpoints: Vec<Endpoint>) -> Arc<LoadBalancer> {
        Arc::new(LoadBalancer::new(
            Arc::new(StaticDiscovery::new(endpoints)),
            RoundRobin::new(),
        ))
    }

    let mut unix = Vec::new();
    let mut shm = Vec::new();
    for name in ["a", "b"] {
        let path = std::env::temp_dir().join(format!("{}.sock", unique_name("lb")));
        let listener = UnixFrameTransportListener::bind(&path, UnixConfig::default())
            .await
            .unwrap();
        serve(name, listener);
        unix.push(Endpoint::Unix(path));
        let service = unique_name("lb");
        let listener =
            SharedMemoryFrameTransportListener::bind(&service, SharedMemoryConfig::default())
                .unwrap();
        serve(name, listener);
        shm.push(Endpoint::SharedMemory(service));
    }
    let over_unix: LoadBalancedClient<MessageChannelAdapter<UnixFrameTransport>> =
        LoadBalancedClient::new(lb(unix.clone()), UnixConnector::default());
    let over_shm: LoadBalancedClient<MessageChannelAdapter<SharedMemoryFrameTransport>> =
        LoadBalancedClient::new(lb(shm), SharedMemoryConnector::default());
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(over_unix.call::<_, String>("whoami", &()).await.unwrap());
        seen.push(over_shm.call::<_, String>("whoami", &()).await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);
    // A connector refuses an endpoint of another kind, naming it.
    let wrong: LoadBalancedClient<MessageChannelAdapter<UnixFrameTransport>> =
        LoadBalancedClient::new(
            lb(vec![Endpoint::shared_memory("x")]),
            UnixConnector::default(),
        );
    let e = wrong.call::<_, String>("whoami", &()).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("expected a unix:// endpoint, got shm://x"),
        "{e}"
    );
    for e in unix {
        if let Endpoint::Unix(p) = e {
            let _ = std::fs::remove_file(p);
        }
    }
}
