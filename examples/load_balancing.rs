//! Load balancing with failover: three servers (child processes of this example), one
//! balanced client spreading calls over them, one server killed mid-run and restarted later.
//! The calls go on; once the restarted server answers its re-admission probe it gets its
//! share again. Prints each server's calls per half second.
//!
//! ```text
//! cargo run --example load_balancing
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use xrpc::{
    BincodeCodec, ClientFactory, Endpoint, LoadBalancedClient, LoadBalancer, LoadBalancerConfig,
    MessageChannelAdapter, RoundRobin, RpcClient, RpcError, RpcServer, StaticDiscovery, TcpConfig,
    TcpFrameTransport, TcpFrameTransportListener,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The line on which a server process tells its parent its address.
const LISTENING: &str = "listening on ";

/// The server process: `load_balancing serve <name> <address>`. Answers `whoami` with its
/// name.
async fn serve(name: String, addr: &str) -> Result<(), BoxError> {
    let listener = TcpFrameTransportListener::bind(addr, TcpConfig::default()).await?;
    println!("{LISTENING}{}", listener.local_addr()?);
    let server = RpcServer::new();
    server.register_typed("whoami", move |(): ()| {
        let name = name.clone();
        async move { Ok(name) }
    });
    server.serve_listener(listener).await?;
    Ok(())
}

/// A server process, killed when dropped.
struct Server {
    name: String,
    addr: SocketAddr,
    child: Child,
}

impl Server {
    /// Starts server `name` on `addr` (port 0: any) and waits until it listens.
    fn start(name: &str, addr: &str) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", name, addr])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix(LISTENING)
            .ok_or_else(|| format!("server {name} did not start: {line:?}"))?
            .parse()?;
        Ok(Self {
            name: name.to_owned(),
            addr,
            child,
        })
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Connects to TCP endpoints (as in the original README).
struct TcpFactory;

#[async_trait]
impl ClientFactory<MessageChannelAdapter<TcpFrameTransport>, BincodeCodec> for TcpFactory {
    async fn create(
        &self,
        endpoint: &Endpoint,
    ) -> Result<RpcClient<MessageChannelAdapter<TcpFrameTransport>, BincodeCodec>, RpcError> {
        let Endpoint::Tcp(addr) = endpoint else {
            return Err(RpcError::ClientError("Expected TCP".into()));
        };
        let transport = TcpFrameTransport::connect(*addr, TcpConfig::default())
            .await
            .map_err(RpcError::Transport)?;
        Ok(RpcClient::new(MessageChannelAdapter::new(transport)))
    }
}

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, name, addr] = &args[..]
        && mode == "serve"
    {
        return serve(name.clone(), addr).await;
    }

    let mut servers = Vec::new();
    for i in 1..=3 {
        servers.push(Server::start(&format!("server-{i}"), "127.0.0.1:0")?);
    }
    let endpoints = servers.iter().map(|s| Endpoint::Tcp(s.addr)).collect();
    let discovery = Arc::new(StaticDiscovery::new(endpoints));
    // Eject after 3 failures for 250 ms, probing again with doubling back-off up to 1 s.
    let mut config = LoadBalancerConfig::default();
    config.health.ejection_backoff = Duration::from_millis(250);
    config.health.max_ejection_backoff = Duration::from_secs(1);
    let lb = Arc::new(LoadBalancer::with_config(
        discovery,
        RoundRobin::new(),
        config,
    ));
    let client = Arc::new(LoadBalancedClient::new(lb.clone(), Arc::new(TcpFactory)));
    client.init().await?;

    // Four callers; `whoami` is idempotent, so a call cut by the kill is retried elsewhere.
    let counts: Counts = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (client, counts, failed, stop) =
            (client.clone(), counts.clone(), failed.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.call_idempotent::<_, String>("whoami", &()).await {
                    Ok(name) => *counts.lock().unwrap().entry(name).or_default() += 1,
                    Err(e) => {
                        eprintln!("call failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
    let header: String = names.iter().map(|n| format!("{n:>10}")).collect();
    println!("  time{header}   (calls per half second)");
    let mut last = BTreeMap::new();
    let mut after_restart = None;
    for tick in 1..=14 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counts.lock().unwrap().clone();
        let row: String = names
            .iter()
            .map(|n| {
                let d = now.get(n).unwrap_or(&0) - last.get(n).unwrap_or(&0);
                format!("{d:>10}")
            })
            .collect();
        println!("{:>5.1}s{row}", f64::from(tick) * 0.5);
        last = now;
        match tick {
            4 => {
                servers[1].kill();
                println!("-- killed {}", servers[1].name);
            }
            8 => {
                let addr = servers[1].addr.to_string();
                servers[1] = Server::start("server-2", &addr)?;
                after_restart = Some(*last.get("server-2").unwrap_or(&0));
                println!("-- restarted {} on {addr}", servers[1].name);
            }
            _ => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await?;
    }
    let total: u64 = last.values().sum();
    let regained = last.get("server-2").unwrap_or(&0) - after_restart.unwrap_or(0);
    let failed = failed.load(Ordering::Relaxed);
    println!("total calls: {total}, failed: {failed}");
    println!("server-2 answered {regained} calls after its restart");
    for s in lb.status() {
        println!("  {} {:?}, {} calls picked", s.endpoint, s.health, s.calls);
    }
    if failed > 0 || regained == 0 {
        return Err("calls were lost or the restarted server got no traffic".into());
    }
    println!("no call lost; the restarted server is back in rotation");
    Ok(())
}
