//! Shared pieces of the reliability suite (`tests/kill_peer.rs`, `tests/hostile_peers.rs`,
//! `tests/load_integrity.rs`, `tests/resource_errors.rs`): an address on one of the three
//! transports, a client of any of them, a test server (run in this process or in a child
//! process), what a process holds (`/proc`), a seeded random source and the soak switch.
#![allow(dead_code)] // each test binary uses a part

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use xrpc::{
    MessageChannelAdapter, RequestStream, RpcClient, RpcError, RpcServer, ServerStreamSender,
    SharedMemoryConfig, SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
    StreamReceiver, TcpConfig, TcpFrameTransport, TcpFrameTransportListener, UnixConfig,
    UnixFrameTransport, UnixFrameTransportListener,
};
use xrpc_shm::testing::unique_name;

/// Whether the long soak runs (`XRPC_SOAK=1`) instead of the short CI suite.
pub fn soak() -> bool {
    std::env::var("XRPC_SOAK").is_ok_and(|v| v == "1")
}

/// `short` in the CI suite, `long` with `XRPC_SOAK=1`.
pub fn scale(short: usize, long: usize) -> usize {
    if soak() { long } else { short }
}

/// The three transports a server listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Unix,
    Shm,
}

pub const KINDS: [Kind; 3] = [Kind::Tcp, Kind::Unix, Kind::Shm];

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Shm(String),
}

impl Addr {
    /// A fresh address of `kind` (TCP: an ephemeral port on loopback, chosen at bind).
    pub fn fresh(kind: Kind, tag: &str) -> Addr {
        match kind {
            Kind::Tcp => Addr::Tcp("127.0.0.1:0".parse().unwrap()),
            Kind::Unix => Addr::Unix(std::env::temp_dir().join(unique_name(tag))),
            Kind::Shm => Addr::Shm(unique_name(tag)),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Addr::Tcp(_) => Kind::Tcp,
            Addr::Unix(_) => Kind::Unix,
            Addr::Shm(_) => Kind::Shm,
        }
    }

    /// `tcp:<addr>`, `unix:<path>` or `shm:<name>`: how an address travels to a child process.
    pub fn encode(&self) -> String {
        match self {
            Addr::Tcp(a) => format!("tcp:{a}"),
            Addr::Unix(p) => format!("unix:{}", p.display()),
            Addr::Shm(n) => format!("shm:{n}"),
        }
    }

    pub fn decode(s: &str) -> Addr {
        let (kind, rest) = s.split_once(':').expect("kind:address");
        match kind {
            "tcp" => Addr::Tcp(rest.parse().expect("a socket address")),
            "unix" => Addr::Unix(PathBuf::from(rest)),
            "shm" => Addr::Shm(rest.to_string()),
            other => panic!("unknown transport {other}"),
        }
    }
}

pub type TcpClient = RpcClient<MessageChannelAdapter<TcpFrameTransport>>;
pub type UnixClient = RpcClient<MessageChannelAdapter<UnixFrameTransport>>;
pub type ShmClient = RpcClient<MessageChannelAdapter<SharedMemoryFrameTransport>>;

/// A client of any of the three transports. [`on!`] runs one expression on whichever it is.
#[derive(Clone)]
pub enum AnyClient {
    Tcp(TcpClient),
    Unix(UnixClient),
    Shm(ShmClient),
}

/// `on!(client, c => expr)`: `expr` with `c` bound to the concrete client.
macro_rules! on {
    ($client:expr, $c:ident => $e:expr) => {
        match $client {
            $crate::reliability::AnyClient::Tcp($c) => $e,
            $crate::reliability::AnyClient::Unix($c) => $e,
            $crate::reliability::AnyClient::Shm($c) => $e,
        }
    };
}

impl AnyClient {
    /// Connects to `addr` (one attempt) and starts the client's driver.
    pub async fn connect(addr: &Addr) -> Result<AnyClient, RpcError> {
        // One attempt each (the default).
        let client = match addr {
            Addr::Tcp(a) => AnyClient::Tcp(RpcClient::new(MessageChannelAdapter::new(
                TcpFrameTransport::connect(*a, TcpConfig::default()).await?,
            ))),
            Addr::Unix(p) => AnyClient::Unix(RpcClient::new(MessageChannelAdapter::new(
                UnixFrameTransport::connect(p, UnixConfig::default()).await?,
            ))),
            Addr::Shm(n) => AnyClient::Shm(RpcClient::new(MessageChannelAdapter::new(
                SharedMemoryFrameTransport::connect(n, SharedMemoryConfig::default()).await?,
            ))),
        };
        on!(&client, c => { c.try_start()?; });
        Ok(client)
    }

    /// Connects, retrying for up to 10 s (a child server that is still starting).
    pub async fn connect_retrying(addr: &Addr) -> AnyClient {
        let start = Instant::now();
        loop {
            match Self::connect(addr).await {
                Ok(c) => return c,
                Err(e) if start.elapsed() > Duration::from_secs(10) => {
                    panic!("cannot connect to {addr:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    pub async fn echo(&self, v: &Echo) -> Result<Echo, RpcError> {
        on!(self, c => c.call("echo", v).await)
    }

    /// `echo_raw`: raw bytes (no serialization, for large payloads).
    pub async fn echo_raw(&self, b: bytes::Bytes) -> Result<bytes::Bytes, RpcError> {
        on!(self, c => c.call_raw("echo_raw", b).await)
    }

    /// `echo` with a timeout of its own.
    pub async fn echo_within(&self, v: &Echo, timeout: Duration) -> Result<Echo, RpcError> {
        on!(self, c => c.call_with_timeout("echo", v, timeout).await)
    }

    pub async fn hang(&self) -> Result<(), RpcError> {
        on!(self, c => c.call_with_timeout("hang", &(), Duration::from_secs(3600)).await)
    }

    pub async fn ticks(&self, period_us: u64) -> Result<StreamReceiver<u64>, RpcError> {
        on!(self, c => c.call_server_stream("ticks", &period_us).await)
    }

    pub async fn resources(&self) -> Result<Resources, RpcError> {
        on!(self, c => c.call("resources", &()).await)
    }
}

/// The request and answer of `echo`: who asked, which call, a payload to check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    pub client: u32,
    pub seq: u64,
    pub payload: Vec<u8>,
}

impl Echo {
    /// Call `seq` of `client`, with a payload of 0..256 bytes derived from both.
    pub fn new(client: u32, seq: u64) -> Echo {
        let n = ((client as u64 * 7919 + seq * 31) % 256) as usize;
        let payload = (0..n)
            .map(|i| (i as u64 ^ seq ^ client as u64) as u8)
            .collect();
        Echo {
            client,
            seq,
            payload,
        }
    }
}

/// What a process holds, as `/proc/self` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Open file descriptors.
    pub fds: usize,
    /// Mappings of memfd files (shared-memory segments).
    pub memfd_maps: usize,
    /// All mappings (heap arenas and thread stacks come and go: compared loosely).
    pub maps: usize,
    /// Stream handlers (`ticks`, `sum`) still running.
    pub live_handlers: usize,
    /// Resident set, bytes.
    pub rss: u64,
}

impl Resources {
    /// What this process holds now.
    pub fn of_self() -> Resources {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        Resources {
            fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()),
            memfd_maps: maps.lines().filter(|l| l.contains("/memfd:")).count(),
            maps: maps.lines().count(),
            live_handlers: LIVE_HANDLERS.load(Ordering::SeqCst),
            rss: rss_of("self"),
        }
    }

    /// Holds the same descriptors, mappings and handlers as `base` (the RSS may differ).
    pub fn same_as(&self, base: &Resources) -> bool {
        self.fds == base.fds
            && self.memfd_maps == base.memfd_maps
            && self.live_handlers == base.live_handlers
    }
}

/// Resident set of process `pid` (`"self"` for this one), bytes, from `/proc/<pid>/statm`.
pub fn rss_of(pid: &str) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Peak resident set (`VmHWM`) of process `pid`, bytes.
pub fn peak_rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Stream handlers of the test server still running.
static LIVE_HANDLERS: AtomicUsize = AtomicUsize::new(0);

/// Counts a running stream handler until dropped (the handler returned or was stopped).
struct Live;

impl Live {
    fn new() -> Live {
        LIVE_HANDLERS.fetch_add(1, Ordering::SeqCst);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE_HANDLERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The test server's methods: `echo` (answers its request), `echo_raw` (the same for raw
/// bytes), `hang` (never answers), `ticks`
/// (a server stream of a counter, one item per period), `blobs` (a server stream of byte
/// blobs, one per period), `flood` (a server stream of items as fast as credit allows),
/// `idle` (a server stream that never sends), `keep` (holds its raw payload 10 s), `nap` (a
/// raw method that sleeps 10 s), `sum` (adds a client stream) and
/// `resources` (what the serving process holds).
pub fn test_server() -> RpcServer {
    test_server_with(xrpc::ServerConfig::default())
}

/// [`test_server`] with settings of its own.
pub fn test_server_with(config: xrpc::ServerConfig) -> RpcServer {
    let server = RpcServer::with_config(xrpc::BincodeCodec, config);
    server.register_typed("echo", |e: Echo| async move { Ok(e) });
    server.register("echo_raw", |b: bytes::Bytes| async move { Ok(b) });
    server.register_typed("hang", |_: ()| async move {
        std::future::pending::<()>().await;
        Ok(())
    });
    server.register_stream(
        "ticks",
        |period_us: u64, tx: ServerStreamSender<u64>| async move {
            let _live = Live::new();
            let period = Duration::from_micros(period_us.max(1));
            for n in 0u64.. {
                tx.send(&n).await?;
                tokio::time::sleep(period).await;
            }
            Ok(())
        },
    );
    server.register_stream(
        "blobs",
        |(period_us, size): (u64, usize), tx: ServerStreamSender<Vec<u8>>| async move {
            let _live = Live::new();
            let period = Duration::from_micros(period_us.max(1));
            let blob = vec![0x5Au8; size.min(1 << 20)];
            loop {
                tx.send(&blob).await?;
                tokio::time::sleep(period).await;
            }
        },
    );
    server.register_client_stream("sum", |mut items: RequestStream<u64>| async move {
        let _live = Live::new();
        let mut sum = 0u64;
        while let Some(item) = items.recv().await {
            sum = sum.wrapping_add(item?);
        }
        Ok(sum)
    });
    server.register_stream(
        "flood",
        |size: usize, tx: ServerStreamSender<Vec<u8>>| async move {
            let _live = Live::new();
            let item = vec![7u8; size.min(1 << 20)];
            loop {
                tx.send(&item).await?;
            }
        },
    );
    server.register("keep", |b: bytes::Bytes| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(bytes::Bytes::from(b.len().to_le_bytes().to_vec()))
    });
    server.register("nap", |_: bytes::Bytes| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(bytes::Bytes::new())
    });
    server.register_stream("idle", |_: (), _tx: ServerStreamSender<u64>| async move {
        let _live = Live::new();
        std::future::pending::<()>().await;
        Ok(())
    });
    server.register_typed("resources", |_: ()| async move { Ok(Resources::of_self()) });
    server
}

/// A listener of any of the three transports.
pub enum AnyListener {
    Tcp(TcpFrameTransportListener),
    Unix(UnixFrameTransportListener),
    Shm(SharedMemoryFrameTransportListener),
}

impl AnyListener {
    /// Binds `addr`; returns the listener and the address it is bound to.
    pub async fn bind(addr: &Addr) -> Result<(AnyListener, Addr), xrpc::TransportError> {
        Ok(match addr {
            Addr::Tcp(a) => {
                let l = TcpFrameTransportListener::bind(a, TcpConfig::default()).await?;
                let bound = Addr::Tcp(l.local_addr()?);
                (AnyListener::Tcp(l), bound)
            }
            Addr::Unix(p) => (
                AnyListener::Unix(
                    UnixFrameTransportListener::bind(p, UnixConfig::default()).await?,
                ),
                addr.clone(),
            ),
            Addr::Shm(n) => (
                AnyListener::Shm(SharedMemoryFrameTransportListener::bind(
                    n,
                    SharedMemoryConfig::default(),
                )?),
                addr.clone(),
            ),
        })
    }

    /// Serves `server` on this listener until its shutdown.
    pub async fn serve(self, server: RpcServer) -> Result<(), RpcError> {
        match self {
            AnyListener::Tcp(l) => server.serve_listener(l).await,
            AnyListener::Unix(l) => server.serve_listener(l).await,
            AnyListener::Shm(l) => server.serve_listener(l).await,
        }
    }
}

/// Binds `addr` and serves [`test_server`] on it in a task of the current runtime; returns
/// the bound address.
pub async fn spawn_test_server(addr: &Addr) -> Addr {
    let (listener, bound) = AnyListener::bind(addr).await.expect("bind the test server");
    tokio::spawn(listener.serve(test_server()));
    bound
}

/// In a child process: serves [`test_server`] on `addr`, prints `ready <bound address> <pid>` and
/// serves until killed.
pub fn run_server_process(addr: &str) {
    run_server_process_with(addr, xrpc::ServerConfig::default());
}

/// [`run_server_process`] with settings of its own.
pub fn run_server_process_with(addr: &str, config: xrpc::ServerConfig) {
    runtime().block_on(async {
        let (listener, bound) = AnyListener::bind(&Addr::decode(addr))
            .await
            .expect("bind the test server");
        println!("ready {} {}", bound.encode(), std::process::id());
        listener.serve(test_server_with(config)).await.unwrap();
    });
}

/// This test binary re-run as a test server on `addr` (its test `peer_entry` must call
/// [`run_server_process`] for the role `server`); returns it with the address it bound and its
/// process id.
pub fn spawn_server_process(addr: &Addr) -> (xrpc_shm::testing::Peer, Addr, u32) {
    let mut server = xrpc_shm::testing::Peer::spawn("peer_entry", "server", &addr.encode());
    let line = server.wait_for_line("ready ");
    let mut words = line
        .split("ready ")
        .nth(1)
        .expect("ready <address> <pid>")
        .split_whitespace();
    let bound = Addr::decode(words.next().expect("an address"));
    let pid = words
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a process id");
    (server, bound, pid)
}

/// Removes the socket file of a Unix address (a server killed in a child process leaves it).
pub fn remove_socket_file(addr: &Addr) {
    if let Addr::Unix(p) = addr {
        let _ = std::fs::remove_file(p);
    }
}

/// A two-worker tokio runtime, as the tests use.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A small seeded random source (xorshift64*): the seed comes from `XRPC_SEED`, or the clock,
/// and is printed so that a failing run can be repeated.
pub struct Rng(u64);

impl Rng {
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("XRPC_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("{test}: XRPC_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// The p50 and the maximum of `times`.
pub fn p50_max(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    if times.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    (times[times.len() / 2], times[times.len() - 1])
}
