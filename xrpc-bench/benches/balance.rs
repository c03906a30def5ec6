//! Load balancing, measured (nothing asserted):
//!
//! 1. Overhead: a small call (`add`) over a Unix socket by a plain `RpcClient` and by a
//!    `LoadBalancedClient` (one endpoint, so every call is the same call plus the balancer's
//!    pick, pool checkout and outcome), one call at a time, in interleaved rounds on the same
//!    server; median per-call latency of each and their ratio.
//! 2. Policy cost: a pick and its finish alone, in the core and through `LoadBalancer`; and by
//!    the size of the endpoint set (3 to 10,000): a discovery update of all new endpoints, one
//!    replacing half of them, and a pick and its finish with p2c.
//! 3. Spread: three servers, one answering ten times slower (10 ms against 1 ms of handler
//!    time), `INFLIGHT` calls at once for `SPREAD_MS` per strategy; the share of calls each
//!    server got.
//!
//! `cargo bench -p xrpc-bench --bench balance`. Environment: `ITERS` (2000), `ROUNDS` (15),
//! `SPREAD_MS` (2000), `INFLIGHT` (8).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::{Deserialize, Serialize};
use xrpc::{
    Endpoint, LeastConnections, LoadBalanceStrategy, LoadBalancedClient, LoadBalancer,
    MessageChannelAdapter, P2c, RoundRobin, RpcClient, RpcServer, ScoreBased, StaticDiscovery,
    UnixConfig, UnixConnector, UnixFrameTransport, UnixFrameTransportListener,
};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct AddRequest {
    a: i32,
    b: i32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct AddResponse {
    result: i32,
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "xrpc-bench-balance-{}-{name}.sock",
        std::process::id()
    ))
}

/// A server on a fresh Unix socket: `add`, and `work` that takes `delay`.
async fn server(name: &str, delay: Duration) -> Endpoint {
    let path = socket_path(name);
    let _ = std::fs::remove_file(&path);
    let listener = UnixFrameTransportListener::bind(&path, UnixConfig::default())
        .await
        .unwrap();
    let server = RpcServer::new();
    server.register_typed("add", |r: AddRequest| async move {
        Ok(AddResponse { result: r.a + r.b })
    });
    let who = name.to_owned();
    server.register_typed("work", move |(): ()| {
        let who = who.clone();
        async move {
            tokio::time::sleep(delay).await;
            Ok(who)
        }
    });
    tokio::spawn(async move { server.serve_listener(listener).await });
    Endpoint::Unix(path)
}

type Balanced = LoadBalancedClient<MessageChannelAdapter<UnixFrameTransport>>;

fn balanced(endpoints: Vec<Endpoint>, strategy: impl LoadBalanceStrategy) -> Balanced {
    let lb = Arc::new(LoadBalancer::new(
        Arc::new(StaticDiscovery::new(endpoints)),
        strategy,
    ));
    LoadBalancedClient::new(lb, UnixConnector::default())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn overhead() {
    let iters = env("ITERS", 2000) as usize;
    let rounds = env("ROUNDS", 15) as usize;
    let ep = server("overhead", Duration::ZERO).await;
    let Endpoint::Unix(path) = &ep else {
        unreachable!()
    };
    let transport = UnixFrameTransport::connect(path, UnixConfig::default())
        .await
        .unwrap();
    let plain = RpcClient::new(MessageChannelAdapter::new(transport));
    let rr = balanced(vec![ep.clone()], RoundRobin::new());
    let p2c = balanced(vec![ep.clone()], P2c::new());
    let req = AddRequest { a: 1, b: 2 };
    // Warm-up: connections made, code paged in.
    for _ in 0..1000 {
        let _: AddResponse = plain.call("add", &req).await.unwrap();
        let _: AddResponse = rr.call("add", &req).await.unwrap();
        let _: AddResponse = p2c.call("add", &req).await.unwrap();
    }
    let (mut tp, mut trr, mut tp2c) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Each round starts with another client, so that none always runs first.
        for k in 0..3 {
            let which = (round + k) % 3;
            let t = Instant::now();
            for _ in 0..iters {
                let r: AddResponse = match which {
                    0 => plain.call("add", &req).await,
                    1 => rr.call("add", &req).await,
                    _ => p2c.call("add", &req).await,
                }
                .unwrap();
                std::hint::black_box(r);
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
            [&mut tp, &mut trr, &mut tp2c][which].push(us);
        }
    }
    // Paired per round (noise on a shared machine moves whole rounds), then the median.
    let mut rr_ratio: Vec<f64> = trr.iter().zip(&tp).map(|(r, p)| r / p).collect();
    let mut p2c_ratio: Vec<f64> = tp2c.iter().zip(&tp).map(|(q, p)| q / p).collect();
    let (rr_ratio, p2c_ratio) = (median(&mut rr_ratio), median(&mut p2c_ratio));
    let (p, r, q) = (median(&mut tp), median(&mut trr), median(&mut tp2c));
    println!("## Overhead: one call at a time over a Unix socket ({rounds} rounds of {iters})\n");
    println!("| client | median µs/call | median of per-round ratios to plain |");
    println!("|---|---|---|");
    println!("| RpcClient | {p:.2} | 1.000 |");
    println!("| LoadBalancedClient, round robin | {r:.2} | {rr_ratio:.3} |");
    println!("| LoadBalancedClient, p2c | {q:.2} | {p2c_ratio:.3} |");
    println!();
}

async fn spread() {
    let ms = env("SPREAD_MS", 2000);
    let inflight = env("INFLIGHT", 8) as usize;
    let fast = Duration::from_millis(1);
    let eps = vec![
        server("fast-1", fast).await,
        server("fast-2", fast).await,
        server("slow", fast * 10).await,
    ];
    println!(
        "## Spread: three servers, `slow` answers in 10 ms, the others in 1 ms; {inflight} calls at once, {ms} ms per strategy\n"
    );
    println!("| strategy | calls | fast-1 | fast-2 | slow | calls/s |");
    println!("|---|---|---|---|---|---|");
    let strategies: Vec<(&str, Box<dyn LoadBalanceStrategy>)> = vec![
        ("round robin", Box::new(RoundRobin::new())),
        ("least connections", Box::new(LeastConnections::new())),
        ("score based", Box::new(ScoreBased::new())),
        ("p2c", Box::new(P2c::new())),
    ];
    for (name, strategy) in strategies {
        let client = Arc::new(balanced(eps.clone(), strategy));
        client.init().await.unwrap();
        let until = Instant::now() + Duration::from_millis(ms);
        let workers = (0..inflight).map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut got: Vec<String> = Vec::new();
                while Instant::now() < until {
                    got.push(client.call("work", &()).await.unwrap());
                }
                got
            })
        });
        let all: Vec<String> = join_all(workers)
            .await
            .into_iter()
            .flat_map(|r| r.unwrap())
            .collect();
        let n = all.len() as f64;
        let share = |who: &str| all.iter().filter(|s| *s == who).count() as f64 / n * 100.0;
        println!(
            "| {name} | {} | {:.1} % | {:.1} % | {:.1} % | {:.0} |",
            all.len(),
            share("fast-1"),
            share("fast-2"),
            share("slow"),
            n / (ms as f64 / 1000.0)
        );
    }
    println!();
}

/// The policy alone: a pick and its finish on the core balancer (three endpoints), and the
/// same through the async layer's `LoadBalancer` (clock reads, its lock), without IO.
fn policy_cost() {
    use xrpc::proto::balance::{Balancer, LoadBalancerConfig, Outcome, Rng};
    let n = 1_000_000u32;
    let eps: Vec<Endpoint> = (0..3)
        .map(|i| Endpoint::tcp_from_str(&format!("127.0.0.1:{}", 9000 + i)).unwrap())
        .collect();
    println!("## Policy cost: pick + finish, three endpoints, {n} times (no IO)\n");
    println!("| strategy | core `Balancer` ns | `LoadBalancer` ns |");
    println!("|---|---|---|");
    type Make = fn() -> Box<dyn LoadBalanceStrategy>;
    let strategies: Vec<(&str, Make)> = vec![
        ("round robin", || Box::new(RoundRobin::new())),
        ("p2c", || Box::new(P2c::new())),
        ("score based", || Box::new(ScoreBased::new())),
    ];
    for (name, make) in strategies {
        let mut b = Balancer::new(make(), LoadBalancerConfig::default(), Rng::new(1));
        b.update(eps.clone());
        let now = Instant::now();
        let t = Instant::now();
        for _ in 0..n {
            let p = b.pick(now).unwrap();
            b.finish(&p, now, Outcome::Success);
        }
        let core = t.elapsed().as_nanos() as f64 / f64::from(n);
        let lb = LoadBalancer::new(Arc::new(StaticDiscovery::new(eps.clone())), make());
        lb.refresh(Instant::now()).unwrap();
        let t = Instant::now();
        for _ in 0..n {
            let p = lb.with(|b| b.pick(Instant::now())).unwrap();
            lb.with(|b| b.finish(&p, Instant::now(), Outcome::Success));
        }
        let full = t.elapsed().as_nanos() as f64 / f64::from(n);
        println!("| {name} | {core:.0} | {full:.0} |");
    }
    println!();
}

/// The policy by the size of the endpoint set: a discovery update (all new, then half
/// replaced) and a pick and its finish (p2c), in the core, without IO.
fn set_size() {
    use xrpc::proto::balance::{Balancer, LoadBalancerConfig, Outcome, Rng};
    let endpoints = |prefix: u32, n: u32| -> Vec<Endpoint> {
        (0..n)
            .map(|i| {
                Endpoint::tcp_from_str(&format!("127.{prefix}.{}.{}:80", i / 250, i % 250 + 1))
                    .unwrap()
            })
            .collect()
    };
    println!("## Set size: discovery updates and picks (p2c, no IO)\n");
    println!("| endpoints | update, all new µs | update, half replaced µs | pick + finish ns |");
    println!("|---|---|---|---|");
    for n in [3, 100, 1_000, 10_000] {
        let first = endpoints(1, n);
        let mut second = first[n as usize / 2..].to_vec();
        second.extend(endpoints(2, n - n / 2));
        let mut b = Balancer::new(P2c::new(), LoadBalancerConfig::default(), Rng::new(1));
        let t = Instant::now();
        b.update(first);
        let added = t.elapsed().as_secs_f64() * 1e6;
        let t = Instant::now();
        b.update(second);
        let replaced = t.elapsed().as_secs_f64() * 1e6;
        let picks = 20_000u32;
        let now = Instant::now();
        let t = Instant::now();
        for _ in 0..picks {
            let p = b.pick(now).unwrap();
            b.finish(&p, now, Outcome::Success);
        }
        let pick = t.elapsed().as_nanos() as f64 / f64::from(picks);
        println!("| {n} | {added:.0} | {replaced:.0} | {pick:.0} |");
    }
    println!();
}

fn main() {
    policy_cost();
    set_size();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        overhead().await;
        spread().await;
    });
    for name in ["overhead", "fast-1", "fast-2", "slow"] {
        let _ = std::fs::remove_file(socket_path(name));
    }
}
