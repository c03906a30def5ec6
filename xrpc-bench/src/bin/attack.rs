//! The attacks of issues 14 and 24, measured per server adapter: for each, a server with the
//! default configuration runs in a child process (this binary, `--server <adapter> <socket
//! path>`, listening on that Unix socket and on a TCP port of loopback), a well-behaved client
//! calls it sequentially — first idle, then while an attacker works — and the table printed at
//! the end gives the server's peak RSS (`VmHWM`), the client's p50 and p99 latency idle →
//! under attack, and the verdict against the goal:
//!
//! - the server's RSS stays below 256 MiB, and the client's p50 within 3x of idle;
//! - shutdown with an open stream ends within the drain deadline (10 s by default);
//! - a connection made during shutdown is refused at once;
//! - a fresh client is answered within 1 s while one peer holds idle connections (issue 24);
//! - an answer over the client's maximum frame fails that call alone; a duplicate request id
//!   closes its connection at once (issue 24).
//!
//! Every attack is short (4 s) and bounded: a server above 1 GiB is killed (the verdict says
//! so), a shutdown is given 25 s at most.
//!
//! ```text
//! cargo run --release -p xrpc-bench --bin attack                      # tokio, smol, blocking servers
//! cargo run --release -p xrpc-bench --bin attack -- --adapter smol --only bombs
//! ```

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use xrpc::proto::{
    BincodeCodec, Codec as _, CompressionConfig, Header, MessageEncoder, MessageKind,
};
use xrpc::{
    MessageChannelAdapter, RpcClient, TcpConfig, TcpFrameTransport, UnixConfig, UnixFrameTransport,
};
use xrpc_async::{FrameListener, Runtime, ServerStreamSender};

/// How long each attack runs while the client measures.
const ATTACK: Duration = Duration::from_secs(4);
/// How long the idle baseline is measured.
const IDLE: Duration = Duration::from_secs(2);
/// A server above this is killed: the attack cannot eat the machine.
const RSS_CAP: u64 = 1 << 30;
/// The goal of issue 14.
const RSS_GOAL: u64 = 256 << 20;
/// The default drain deadline (`ServerConfig::drain_timeout`).
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// The longest a shutdown is watched.
const SHUTDOWN_CAP: Duration = Duration::from_secs(25);
/// A call of the well-behaved client that takes longer counts as this long.
const CALL_CAP: Duration = Duration::from_secs(2);
/// Largest frame and decompressed payload the server accepts by default.
const MAX_FRAME: usize = 16 << 20;

type Client = RpcClient<MessageChannelAdapter<UnixFrameTransport>>;
type TcpClient = RpcClient<MessageChannelAdapter<TcpFrameTransport>>;

/// The server adapters measured.
const ADAPTERS: [&str; 3] = ["tokio", "smol", "blocking"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "--server" {
        return serve(&args[2], Path::new(&args[3]));
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let adapters: Vec<&str> = match flag("--adapter") {
        Some(a) => ADAPTERS.iter().copied().filter(|x| *x == a).collect(),
        None => ADAPTERS.to_vec(),
    };
    let only = flag("--only").unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    println!(
        "xrpc attack figures, commit {}, {} cores, load average {}; server: default configuration",
        commit.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    type Attack = (&'static str, Via, fn(&Server, Arc<AtomicBool>) -> Note);
    let attacks: [Attack; 8] = [
        (
            "1. unbounded stream credit (4 streams granting u32::MAX, never read)",
            Via::Unix,
            credit_attack,
        ),
        (
            "2. notification flood (to a handler that sleeps 10 s)",
            Via::Unix,
            notification_flood,
        ),
        (
            "3. Zstd bombs (2 connections, 16 MiB from ~0.5 KiB each, kept 10 s)",
            Via::Unix,
            zstd_bombs,
        ),
        (
            "4. slow and partial frames (50 × 16 MiB − 1 byte, 200 × 10 bytes)",
            Via::Unix,
            partial_frames,
        ),
        (
            "7. lockout: 1,100 idle TCP connections of one peer, pinging; fresh TCP clients",
            Via::Unix,
            lockout,
        ),
        (
            "8. Zstd bombs to a typed handler whose decode fails (2 TCP connections)",
            Via::Tcp,
            typed_bombs,
        ),
        (
            "9. Zstd bombs kept 10 s over 8 connections",
            Via::Unix,
            bombs_on_8,
        ),
        (
            "10. notification flood over 32 connections (10 s handlers)",
            Via::Unix,
            notifications_on_32,
        ),
    ];
    let mut rows = Vec::new();
    for adapter in adapters {
        for (name, via, attack) in attacks {
            if name.contains(&only) {
                rows.push(run(adapter, name, via, attack));
            }
        }
        for connect_during in [false, true] {
            let row = shutdown_attack(adapter, connect_during, &only);
            rows.extend(row);
        }
        if "11. an answer over the client's maximum frame".contains(&only) {
            rows.push(oversize_answer(adapter));
        }
        if "12. a duplicate request id".contains(&only) {
            rows.push(duplicate_id(adapter));
        }
    }
    println!();
    println!(
        "| adapter | attack | server peak RSS | client p50 idle → under attack | client p99 idle → under attack | verdict |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.adapter, r.attack, r.rss, r.p50, r.p99, r.verdict
        );
    }
}

// ---- the server (child process) ----

/// A request the typed `point` handler decodes (a bomb's 16 MiB of zeros does not).
#[derive(Debug, Serialize, Deserialize)]
struct Point {
    x: u64,
    y: u64,
}

/// Sleeps on `R`'s clock.
async fn nap<R: Runtime>(d: Duration) {
    let rt = R::default();
    rt.timer(rt.now() + d).await;
}

/// The methods of the attacked server, on runtime `R`.
fn methods<R: Runtime>(server: &xrpc_async::RpcServer<BincodeCodec, R>) {
    server.register("echo", |b: Bytes| async move { Ok(b) });
    // Holds its payload for 10 s (a handler that keeps what it is given).
    server.register("keep", |b: Bytes| async move {
        nap::<R>(Duration::from_secs(10)).await;
        Ok(Bytes::from(b.len().to_le_bytes().to_vec()))
    });
    server.register("slow", |_b: Bytes| async move {
        nap::<R>(Duration::from_secs(10)).await;
        Ok(Bytes::new())
    });
    server.register_typed("point", |p: Point| async move { Ok(p.x + p.y) });
    server.register_typed("bytes", |n: usize| async move { Ok(vec![7u8; n]) });
    // Produces 64 KiB items as fast as its credit allows.
    server.register_stream(
        "flood",
        |_: (), tx: ServerStreamSender<Vec<u8>, BincodeCodec>| async move {
            let item = vec![7u8; 64 * 1024];
            loop {
                tx.send(&item).await?;
            }
        },
    );
    // An open stream that never sends.
    server.register_stream(
        "idle",
        |_: (), _tx: ServerStreamSender<u64, BincodeCodec>| async move {
            std::future::pending::<()>().await;
            Ok(())
        },
    );
    let s = server.clone();
    server.register_typed("shutdown", move |_: ()| {
        s.shutdown();
        async { Ok(()) }
    });
}

/// Serves on `unix` and `tcp` until shutdown, after printing `ready <tcp address>`.
async fn serve_on<R: Runtime, U: FrameListener, T: FrameListener>(
    unix: U,
    tcp: T,
    addr: SocketAddr,
) {
    let server = xrpc_async::RpcServer::<BincodeCodec, R>::new();
    methods(&server);
    println!("ready {addr}");
    let (a, b) =
        futures::future::join(server.serve_listener(unix), server.serve_listener(tcp)).await;
    a.expect("serve unix");
    b.expect("serve tcp");
}

fn serve(adapter: &str, path: &Path) {
    match adapter {
        "tokio" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(async {
                let unix = xrpc::UnixFrameTransportListener::bind(path, UnixConfig::default())
                    .await
                    .expect("bind unix");
                let tcp =
                    xrpc::TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default())
                        .await
                        .expect("bind tcp");
                let addr = tcp.local_addr().expect("tcp address");
                serve_on::<xrpc::Tokio, _, _>(unix, tcp, addr).await;
            }),
        "smol" => smol::block_on(async {
            let unix =
                xrpc_smol::UnixFrameTransportListener::bind(path, xrpc_smol::UnixConfig::default())
                    .await
                    .expect("bind unix");
            let tcp = xrpc_smol::TcpFrameTransportListener::bind(
                "127.0.0.1:0",
                xrpc_smol::TcpConfig::default(),
            )
            .await
            .expect("bind tcp");
            let addr = tcp.local_addr().expect("tcp address");
            serve_on::<xrpc_smol::Smol, _, _>(unix, tcp, addr).await;
        }),
        "blocking" => serve_blocking(path),
        other => panic!("unknown adapter {other}"),
    }
}

/// The methods of [`methods`] on the blocking adapter's server, served on `path` and a TCP
/// port of loopback until shutdown.
fn serve_blocking(path: &Path) {
    use xrpc_blocking as b;
    let server = b::RpcServer::new();
    server.register("echo", Ok);
    server.register("keep", |b: Bytes| {
        std::thread::sleep(Duration::from_secs(10));
        Ok(Bytes::from(b.len().to_le_bytes().to_vec()))
    });
    server.register("slow", |_b: Bytes| {
        std::thread::sleep(Duration::from_secs(10));
        Ok(Bytes::new())
    });
    server.register_typed("point", |p: Point| Ok(p.x + p.y));
    server.register_typed("bytes", |n: usize| Ok(vec![7u8; n]));
    server.register_stream(
        "flood",
        |_: (), tx: b::ServerStreamSender<Vec<u8>, BincodeCodec>| {
            let item = vec![7u8; 64 * 1024];
            loop {
                tx.send(&item)?;
            }
        },
    );
    server.register_stream(
        "idle",
        |_: (), _tx: b::ServerStreamSender<u64, BincodeCodec>| loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
    );
    let s = server.clone();
    server.register_typed("shutdown", move |_: ()| {
        s.shutdown();
        Ok(())
    });
    let unix =
        b::UnixFrameTransportListener::bind(path, b::UnixConfig::default()).expect("bind unix");
    let tcp = b::TcpFrameTransportListener::bind("127.0.0.1:0", b::TcpConfig::default())
        .expect("bind tcp");
    println!("ready {}", tcp.local_addr().expect("tcp address"));
    let on_tcp = server.clone();
    let tcp_thread = std::thread::spawn(move || on_tcp.serve_listener(tcp));
    server.serve_listener(unix).expect("serve unix");
    tcp_thread
        .join()
        .expect("the tcp listener's thread")
        .expect("serve tcp");
}

/// The server in a child process, and what it holds.
struct Server {
    child: Arc<Mutex<Child>>,
    /// The server's stdout, kept open so that its prints never fail.
    _stdout: std::process::ChildStdout,
    pid: u32,
    path: PathBuf,
    /// Its TCP address.
    tcp: SocketAddr,
    /// Largest `VmHWM` seen, bytes.
    peak: Arc<AtomicU64>,
    /// Set when the monitor killed it at [`RSS_CAP`].
    capped: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    monitor: Option<std::thread::JoinHandle<()>>,
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Server {
    fn start(adapter: &str) -> Server {
        static SERVERS: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "xrpc-attack-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::SeqCst)
        ));
        let exe = std::env::current_exe().expect("this binary");
        let mut child = Command::new(exe)
            .arg("--server")
            .arg(adapter)
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server");
        let mut out = child.stdout.take().expect("piped");
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !(line.starts_with(b"ready ") && line.ends_with(b"\n")) {
            match out.read(&mut b) {
                Ok(1) => line.push(b[0]),
                _ => panic!("the server did not start"),
            }
            if line.ends_with(b"\n") && !line.starts_with(b"ready ") {
                line.clear();
            }
        }
        let tcp: SocketAddr = std::str::from_utf8(&line[6..])
            .expect("an address")
            .trim()
            .parse()
            .expect("the server's TCP address");
        let pid = child.id();
        let child = Arc::new(Mutex::new(child));
        let (peak, capped, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let monitor = {
            let (child, peak, capped, stop) =
                (child.clone(), peak.clone(), capped.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Some(hwm) = status_kib(pid, "VmHWM:") {
                        peak.fetch_max(hwm * 1024, Ordering::SeqCst);
                    }
                    if status_kib(pid, "VmRSS:").is_some_and(|rss| rss * 1024 > RSS_CAP) {
                        capped.store(true, Ordering::SeqCst);
                        let mut c = child.lock().unwrap();
                        let _ = c.kill();
                        let _ = c.wait();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Server {
            child,
            _stdout: out,
            pid,
            path,
            tcp,
            peak,
            capped,
            stop,
            monitor: Some(monitor),
        }
    }

    fn connect_raw(&self) -> std::io::Result<UnixStream> {
        UnixStream::connect(&self.path)
    }

    async fn client(&self) -> Client {
        let t = UnixFrameTransport::connect(&self.path, UnixConfig::default())
            .await
            .expect("connect the well-behaved client");
        let c = RpcClient::new(MessageChannelAdapter::new(t));
        let _ = c.start();
        c
    }

    async fn tcp_client(&self) -> Result<TcpClient, xrpc::TransportError> {
        let t = TcpFrameTransport::connect(self.tcp, TcpConfig::default()).await?;
        let c = RpcClient::new(MessageChannelAdapter::new(t));
        let _ = c.start();
        Ok(c)
    }

    async fn good(&self, via: Via) -> Good {
        match via {
            Via::Unix => Good::Unix(self.client().await),
            Via::Tcp => Good::Tcp(
                self.tcp_client()
                    .await
                    .expect("connect the well-behaved client"),
            ),
        }
    }

    fn connect_tcp(&self) -> std::io::Result<TcpStream> {
        TcpStream::connect(self.tcp)
    }

    fn exited(&self) -> bool {
        matches!(self.child.lock().unwrap().try_wait(), Ok(Some(_)))
    }

    /// Stops watching and kills the server; returns its peak RSS and whether it hit the cap.
    fn finish(mut self) -> (u64, bool) {
        if let Some(hwm) = status_kib(self.pid, "VmHWM:") {
            self.peak.fetch_max(hwm * 1024, Ordering::SeqCst);
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(m) = self.monitor.take() {
            let _ = m.join();
        }
        let mut c = self.child.lock().unwrap();
        let _ = c.kill();
        let _ = c.wait();
        let _ = std::fs::remove_file(&self.path);
        (
            self.peak.load(Ordering::SeqCst),
            self.capped.load(Ordering::SeqCst),
        )
    }
}

// ---- the well-behaved client ----

/// Which transport the well-behaved client uses.
#[derive(Debug, Clone, Copy)]
enum Via {
    Unix,
    Tcp,
}

/// The well-behaved client.
enum Good {
    Unix(Client),
    Tcp(TcpClient),
}

impl Good {
    async fn echo(&self, payload: Bytes) -> Result<Bytes, xrpc::RpcError> {
        match self {
            Good::Unix(c) => c.call_raw("echo", payload).await,
            Good::Tcp(c) => c.call_raw("echo", payload).await,
        }
    }
}

/// Sequential 64-byte echo calls for `d`: the latencies (capped at [`CALL_CAP`]).
async fn latencies(client: &Good, d: Duration) -> Vec<Duration> {
    let payload = Bytes::from(vec![1u8; 64]);
    let start = Instant::now();
    let mut v = Vec::new();
    while start.elapsed() < d {
        let t = Instant::now();
        match tokio::time::timeout(CALL_CAP, client.echo(payload.clone())).await {
            Ok(Ok(_)) => v.push(t.elapsed()),
            Ok(Err(_)) | Err(_) => {
                v.push(CALL_CAP.max(t.elapsed()));
                // A failed call (the server is gone): do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    v
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn mib(b: u64) -> String {
    format!("{} MiB", b >> 20)
}

struct Row {
    adapter: &'static str,
    attack: String,
    rss: String,
    p50: String,
    p99: String,
    verdict: String,
}

/// What an attack reports besides the figures (e.g. connections still open); a note that
/// starts with [`MISSED`] says the attack's own goal was missed.
type Note = String;

/// The start of a note whose attack missed its own goal (a fresh client not answered, say).
const MISSED: &str = "missed: ";

/// Announces attack `name`; starts its server and the client's runtime.
fn start(adapter: &str, name: &str) -> (Server, tokio::runtime::Runtime) {
    eprintln!("{adapter}: {name}…");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    (Server::start(adapter), rt)
}

/// Runs `attack` against a fresh server while the client measures; `attack` runs on its own
/// threads until `stop` is set, and returns a note for the verdict.
fn run(
    adapter: &'static str,
    name: &str,
    via: Via,
    attack: fn(&Server, Arc<AtomicBool>) -> Note,
) -> Row {
    let (server, rt) = start(adapter, name);
    let client = rt.block_on(server.good(via));
    let mut idle = rt.block_on(latencies(&client, IDLE));
    let stop = Arc::new(AtomicBool::new(false));
    let note = std::thread::scope(|s| {
        let attacker = {
            let stop = stop.clone();
            let server = &server;
            s.spawn(move || attack(server, stop))
        };
        let mut busy = rt.block_on(latencies(&client, ATTACK));
        stop.store(true, Ordering::SeqCst);
        let note = attacker
            .join()
            .unwrap_or_else(|_| "the attacker panicked".into());
        (note, std::mem::take(&mut busy))
    });
    let (note, mut busy) = note;
    drop(client);
    let (peak, capped) = server.finish();
    let (i50, i99) = (percentile(&mut idle, 0.5), percentile(&mut idle, 0.99));
    let (b50, b99) = (percentile(&mut busy, 0.5), percentile(&mut busy, 0.99));
    let mut problems = Vec::new();
    if capped {
        problems.push(format!("RSS over the {} cap: killed", mib(RSS_CAP)));
    } else if peak >= RSS_GOAL {
        problems.push(format!("RSS {} ≥ {}", mib(peak), mib(RSS_GOAL)));
    }
    let note = match note.strip_prefix(MISSED) {
        Some(rest) => {
            problems.push("its own goal missed".to_string());
            rest.to_string()
        }
        None => note,
    };
    if b50 > i50 * 3 {
        problems.push(format!(
            "p50 {:.0}x idle",
            b50.as_secs_f64() / i50.as_secs_f64()
        ));
    }
    let verdict = if problems.is_empty() {
        format!("meets the goal{}", note_suffix(&note))
    } else {
        format!("**fails**: {}{}", problems.join(", "), note_suffix(&note))
    };
    Row {
        adapter,
        attack: name.to_string(),
        rss: if capped {
            format!("> {} (killed)", mib(RSS_CAP))
        } else {
            mib(peak)
        },
        p50: format!("{} → {}", ms(i50), ms(b50)),
        p99: format!("{} → {}", ms(i99), ms(b99)),
        verdict,
    }
}

fn note_suffix(note: &str) -> String {
    if note.is_empty() {
        String::new()
    } else {
        format!("; {note}")
    }
}

// ---- the attacks ----

fn encode(header: &Header, method: &str, payload: &[u8], compression: CompressionConfig) -> Bytes {
    let mut out = BytesMut::new();
    MessageEncoder::new(MAX_FRAME, compression)
        .encode(header, method, payload, &mut out)
        .expect("encode an attack frame");
    out.freeze()
}

/// Writes `bytes` until done or `stop`; false if the server closed the connection.
fn write_until(sock: &mut UnixStream, bytes: &[u8], stop: &AtomicBool) -> bool {
    let _ = sock.set_write_timeout(Some(Duration::from_millis(50)));
    write_all_until(sock, bytes, stop)
}

/// Writes `bytes` until done or `stop` (on a socket with a write timeout, so that `stop` is
/// seen while the server does not read); false if the server closed the connection.
fn write_all_until<W: Write>(sock: &mut W, bytes: &[u8], stop: &AtomicBool) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        match sock.write(&bytes[at..]) {
            Ok(0) => return false,
            Ok(n) => at += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return false,
        }
    }
    true
}

fn wait(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the server closed `sock` (it reads as the end, or reset).
fn is_closed(mut sock: &UnixStream) -> bool {
    let _ = sock.set_nonblocking(true);
    let mut b = [0u8; 4096];
    loop {
        match sock.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

fn credit_attack(server: &Server, stop: Arc<AtomicBool>) -> Note {
    let Ok(mut sock) = server.connect_raw() else {
        return "connect failed".into();
    };
    for id in 1..=4u64 {
        let mut h = Header::new(MessageKind::Request, id);
        h.codec = 1; // bincode: the request `()` is empty
        h.server_stream = true;
        h.window = Some(u32::MAX);
        let _ = write_until(
            &mut sock,
            &encode(&h, "flood", &[], CompressionConfig::none()),
            &stop,
        );
    }
    wait(&stop); // never reads
    String::new()
}

fn notification_flood(server: &Server, stop: Arc<AtomicBool>) -> Note {
    let Ok(mut sock) = server.connect_raw() else {
        return "connect failed".into();
    };
    let one = encode(
        &Header::new(MessageKind::Notification, 0),
        "slow",
        b"x",
        CompressionConfig::none(),
    );
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    let mut sent = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if !write_until(&mut sock, &batch, &stop) {
            return format!("the server closed the flood after {sent} notifications");
        }
        sent += 1000;
    }
    format!("{sent} notifications sent")
}

fn zstd_bombs(server: &Server, stop: Arc<AtomicBool>) -> Note {
    let zeros = vec![0u8; MAX_FRAME - 64 * 1024];
    let bomb = encode(
        &Header::new(MessageKind::Request, 1),
        "keep",
        &zeros,
        CompressionConfig::zstd(19),
    );
    let sent = AtomicU64::new(0);
    let closed = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let Ok(mut sock) = server.connect_raw() else {
                    return;
                };
                let mut frame = bomb.to_vec();
                for id in 1u64.. {
                    // The id: after the 4-byte prefix and 8 header bytes.
                    frame[12..20].copy_from_slice(&id.to_le_bytes());
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if !write_until(&mut sock, &frame, &stop) {
                        closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    format!(
        "{} bombs of {} B sent ({} MiB inflated), {} of 2 connections closed by the server",
        sent.load(Ordering::SeqCst),
        bomb.len(),
        (sent.load(Ordering::SeqCst) * zeros.len() as u64) >> 20,
        closed.load(Ordering::SeqCst)
    )
}

fn partial_frames(server: &Server, stop: Arc<AtomicBool>) -> Note {
    let big = MAX_FRAME as u32;
    let mut frame = big.to_le_bytes().to_vec();
    frame.extend(vec![0u8; MAX_FRAME - 1]); // one byte short
    let mut socks: Vec<UnixStream> = Vec::new();
    // 200 connections that send 10 bytes of a frame.
    let mut short = 12u32.to_le_bytes().to_vec();
    short.extend(b"XR\x01\x08\x00\x00");
    for _ in 0..200 {
        if let Ok(mut s) = server.connect_raw() {
            let _ = s.write_all(&short);
            socks.push(s);
        }
    }
    // 50 that stop one byte short of 16 MiB.
    let bigs: Vec<UnixStream> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let (frame, stop) = (&frame, &stop);
                s.spawn(move || {
                    let mut sock = server.connect_raw().ok()?;
                    write_until(&mut sock, frame, stop);
                    Some(sock)
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect()
    });
    socks.extend(bigs);
    wait(&stop);
    let open = socks.iter().filter(|s| !is_closed(s)).count();
    format!("{open} of 250 connections still open at the end")
}

/// Attack 5 (`connect_during == false`): shutdown with an idle server stream open; attack 6:
/// the same, and a new connection made during the shutdown.
fn shutdown_attack(adapter: &'static str, connect_during: bool, only: &str) -> Option<Row> {
    let name = if connect_during {
        "6. connect during shutdown (an idle stream holds the shutdown open)"
    } else {
        "5. shutdown with an open stream (one idle server stream)"
    };
    if !name.contains(only) {
        return None;
    }
    let (server, rt) = start(adapter, name);
    let (took, refused) = rt.block_on(async {
        let streamer = server.client().await;
        let _stream = streamer
            .call_server_stream::<_, u64>("idle", &())
            .await
            .expect("open the idle stream");
        let admin = server.client().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = Instant::now();
        let _ = admin.call::<_, ()>("shutdown", &()).await;
        let refused = if connect_during {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let t = Instant::now();
            let outcome = tokio::time::timeout(Duration::from_secs(3), async {
                let tr = UnixFrameTransport::connect(&server.path, UnixConfig::default()).await?;
                let c: Client = RpcClient::new(MessageChannelAdapter::new(tr));
                c.call_raw("echo", Bytes::from_static(b"hi")).await
            })
            .await;
            Some(match outcome {
                Ok(Err(e)) => (true, t.elapsed(), e.to_string()),
                Ok(Ok(_)) => (false, t.elapsed(), "served".to_string()),
                Err(_) => (false, t.elapsed(), "no answer".to_string()),
            })
        } else {
            None
        };
        while !server.exited() && t0.elapsed() < SHUTDOWN_CAP {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (t0.elapsed(), refused)
    });
    let ended = server.exited();
    let (peak, _) = server.finish();
    let shutdown = if ended {
        format!("shutdown took {:.1} s", took.as_secs_f64())
    } else {
        format!(
            "still running {} s after shutdown()",
            SHUTDOWN_CAP.as_secs()
        )
    };
    let verdict = match refused {
        None if ended && took <= DRAIN_DEADLINE + Duration::from_secs(1) => {
            format!(
                "meets the goal: {shutdown} (drain deadline {} s)",
                DRAIN_DEADLINE.as_secs()
            )
        }
        None => format!(
            "**fails**: {shutdown} (drain deadline {} s)",
            DRAIN_DEADLINE.as_secs()
        ),
        Some((true, t, e)) if t < Duration::from_millis(200) => {
            format!("meets the goal: refused in {} ({e}); {shutdown}", ms(t))
        }
        Some((_, t, e)) => format!("**fails**: {e} after {}; {shutdown}", ms(t)),
    };
    Some(Row {
        adapter,
        attack: name.to_string(),
        rss: mib(peak),
        p50: "—".into(),
        p99: "—".into(),
        verdict,
    })
}

// ---- the attacks of issue 24 ----

/// A `Ping` frame, prefixed.
fn ping(id: u64) -> Bytes {
    encode(
        &Header::new(MessageKind::Ping, id),
        "",
        b"",
        CompressionConfig::none(),
    )
}

/// Attack 7: one peer opens 1,100 TCP connections (more than the cap, 1,024) and pings each
/// every second (a ping moves the idle deadline: before issue 24 that locked every new
/// client out for good). Meanwhile a fresh TCP client (the same peer) tries to get an answer
/// every 500 ms, within 1 s each.
fn lockout(server: &Server, stop: Arc<AtomicBool>) -> Note {
    let mut hogs: Vec<TcpStream> = Vec::new();
    let t0 = Instant::now();
    for i in 0..1100u64 {
        let Ok(mut s) = server.connect_tcp() else {
            continue;
        };
        let _ = s.write_all(&ping(i));
        hogs.push(s);
    }
    let (opened, opening) = (hogs.len(), t0.elapsed());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (mut tried, mut answered, mut slowest) = (0, 0, Duration::ZERO);
    let mut last_ping = Instant::now();
    // At least 5 tries, even if opening the connections took the whole attack.
    while tried < 5 || !stop.load(Ordering::SeqCst) {
        if last_ping.elapsed() >= Duration::from_secs(1) {
            for (i, s) in hogs.iter_mut().enumerate() {
                let _ = s.set_nonblocking(true);
                let _ = s.write(&ping(i as u64));
            }
            last_ping = Instant::now();
        }
        let t = Instant::now();
        tried += 1;
        let ok = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), async {
                let c = server.tcp_client().await.ok()?;
                c.call_raw("echo", Bytes::from_static(b"fresh")).await.ok()
            })
            .await
            .ok()
            .flatten()
            .is_some()
        });
        if ok {
            answered += 1;
            slowest = slowest.max(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    format!(
        "{}{opened} connections opened in {}; fresh TCP clients answered within 1 s: {answered} of {tried}{}",
        if answered < tried { MISSED } else { "" },
        ms(opening),
        if answered > 0 {
            format!(" (slowest {})", ms(slowest))
        } else {
            String::new()
        }
    )
}

/// A Zstd bomb: a request whose payload is 16 MiB − 64 KiB of zeros in about 0.5 KiB.
fn bomb(method: &str) -> (Bytes, usize) {
    let zeros = vec![0u8; MAX_FRAME - 64 * 1024];
    let mut h = Header::new(MessageKind::Request, 1);
    h.codec = BincodeCodec::ID;
    (
        encode(&h, method, &zeros, CompressionConfig::zstd(19)),
        zeros.len(),
    )
}

/// Writes `bomb` on `sock` as fast as it takes it (ids counting up) until `stop`; returns
/// how many were sent and whether the server closed the connection.
fn keep_bombing<W: Write>(sock: &mut W, bomb: &Bytes, stop: &AtomicBool) -> (u64, bool) {
    let mut frame = bomb.to_vec();
    let mut sent = 0;
    for id in 1u64.. {
        // The id: after the 4-byte prefix and 8 header bytes.
        frame[12..20].copy_from_slice(&id.to_le_bytes());
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if !write_all_until(sock, &frame, stop) {
            return (sent, true);
        }
        sent += 1;
    }
    (sent, false)
}

/// Attack 8 (issue 24, item 3): two TCP connections write Zstd bombs, as fast as the server
/// takes them, to a typed handler whose decode then fails — each payload is dropped at once,
/// so the budget of bytes held never fills; only a rate of inflation bounds the work. The
/// attacker reads the server's answers (so the server never stops reading it for backlog).
fn typed_bombs(server: &Server, stop: Arc<AtomicBool>) -> Note {
    let (bomb, inflated) = bomb("point");
    let sent = AtomicU64::new(0);
    let closed = AtomicU64::new(0);
    let answers = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            let Ok(sock) = server.connect_tcp() else {
                continue;
            };
            let mut reader = sock.try_clone().expect("a second handle");
            let (halt, answers) = (&stop, &answers);
            s.spawn(move || {
                let _ = reader.set_read_timeout(Some(Duration::from_millis(100)));
                let mut buf = vec![0u8; 64 * 1024];
                while !halt.load(Ordering::SeqCst) {
                    match reader.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            answers.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => return,
                    }
                }
            });
            let (stop, bomb, sent, closed) = (&stop, &bomb, &sent, &closed);
            s.spawn(move || {
                let mut sock = sock;
                let _ = sock.set_write_timeout(Some(Duration::from_millis(100)));
                let (n, was_closed) = keep_bombing(&mut sock, bomb, stop);
                sent.fetch_add(n, Ordering::SeqCst);
                if was_closed {
                    closed.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let sent = sent.load(Ordering::SeqCst);
    format!(
        "{sent} bombs of {} B sent ({} MiB they would inflate to), {} KiB of answers read, {} of 2 connections closed",
        bomb.len(),
        (sent * inflated as u64) >> 20,
        answers.load(Ordering::SeqCst) >> 10,
        closed.load(Ordering::SeqCst)
    )
}

/// Attack 9 (issue 24, item 4): the bombs of attack 3, to the handler that keeps its payload
/// 10 s, over 8 connections (each connection's budget of bytes held, 64 MiB, added up to
/// ~520 MiB before a server-wide one).
fn bombs_on_8(server: &Server, stop: Arc<AtomicBool>) -> Note {
    let (bomb, _) = bomb("keep");
    let sent = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            let Ok(mut sock) = server.connect_raw() else {
                continue;
            };
            let (stop, bomb, sent) = (&stop, &bomb, &sent);
            s.spawn(move || {
                let _ = sock.set_write_timeout(Some(Duration::from_millis(100)));
                let (n, _) = keep_bombing(&mut sock, bomb, stop);
                sent.fetch_add(n, Ordering::SeqCst);
            });
        }
    });
    format!("{} bombs sent", sent.load(Ordering::SeqCst))
}

/// Attack 10 (issue 24, item 4): notifications to a handler that sleeps 10 s, written as fast
/// as the server takes them, on 32 connections (each may run 10,000 at once: 320,000
/// handlers held 347 MiB before a server-wide limit).
fn notifications_on_32(server: &Server, stop: Arc<AtomicBool>) -> Note {
    let one = encode(
        &Header::new(MessageKind::Notification, 0),
        "slow",
        b"x",
        CompressionConfig::none(),
    );
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    let sent = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..32 {
            let Ok(mut sock) = server.connect_raw() else {
                continue;
            };
            let (stop, batch, sent) = (&stop, &batch, &sent);
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if !write_until(&mut sock, batch, stop) {
                        return;
                    }
                    sent.fetch_add(1000, Ordering::SeqCst);
                }
            });
        }
    });
    format!("{} notifications sent", sent.load(Ordering::SeqCst))
}

/// Runs `check` against a fresh server of `adapter` (given its Unix socket; no latency
/// figures): a row whose verdict is what `check` says.
fn check_row<F: Future<Output = (bool, String)>>(
    adapter: &'static str,
    name: &str,
    check: impl FnOnce(PathBuf) -> F,
) -> Row {
    let (server, rt) = start(adapter, name);
    let (ok, what) = rt.block_on(check(server.path.clone()));
    let (peak, _) = server.finish();
    Row {
        adapter,
        attack: name.to_string(),
        rss: mib(peak),
        p50: "—".into(),
        p99: "—".into(),
        verdict: if ok {
            format!("meets the goal: {what}")
        } else {
            format!("**fails**: {what}")
        },
    }
}

/// Check 11 (issue 24, item 6): a client whose maximum frame is 1 MiB calls a method that
/// answers 2 MiB, then a small call on the same connection.
fn oversize_answer(adapter: &'static str) -> Row {
    check_row(
        adapter,
        "11. an answer over the client's maximum frame (1 MiB client, 2 MiB answer)",
        |path| async move {
            let config = UnixConfig::default().with_max_frame_size(1 << 20);
            let t = UnixFrameTransport::connect(&path, config)
                .await
                .expect("connect");
            let c: Client = RpcClient::new(MessageChannelAdapter::new(t));
            let _ = c.start();
            let big = c.call::<_, Vec<u8>>("bytes", &(2usize << 20)).await;
            let next = c.call::<_, Vec<u8>>("bytes", &10usize).await;
            let ok = matches!(big, Err(xrpc::RpcError::FrameTooLarge { .. })) && next.is_ok();
            let big = match big {
                Ok(v) => format!("{} bytes", v.len()),
                Err(e) => e.to_string(),
            };
            let next = match next {
                Ok(_) => "answered".to_string(),
                Err(e) => e.to_string(),
            };
            (ok, format!("the 2 MiB call: {big}; the next call: {next}"))
        },
    )
}

/// Check 12 (issue 24, item 8): a second request with the id of a call in progress (to a
/// handler that sleeps 10 s); the time until the server closes the connection.
fn duplicate_id(adapter: &'static str) -> Row {
    check_row(
        adapter,
        "12. a duplicate request id (the first call still running)",
        |path| async move {
            let Ok(mut sock) = UnixStream::connect(&path) else {
                return (false, "connect failed".into());
            };
            let mut h = Header::new(MessageKind::Request, 1);
            h.codec = BincodeCodec::ID;
            let req = encode(&h, "slow", b"", CompressionConfig::none());
            let _ = sock.write_all(&req);
            std::thread::sleep(Duration::from_millis(100));
            let t = Instant::now();
            let _ = sock.write_all(&req);
            let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = [0u8; 4096];
            let closed = loop {
                match sock.read(&mut buf) {
                    Ok(0) | Err(_) => break t.elapsed(),
                    Ok(_) => {}
                }
            };
            (
                closed < Duration::from_secs(1),
                format!("closed after {}", ms(closed)),
            )
        },
    )
}
