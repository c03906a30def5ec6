//! A small typed RPC call, `add(AddRequest { a, b }) -> AddResponse { result }`, over TCP and
//! Unix sockets: xrpc's `RpcClient`/`RpcServer` beside a raw tokio ping-pong of the same bytes
//! on the same kind of socket, and beside `tarpc` doing the same call, all in the same run.
//!
//! Latency: one call at a time, `ITERS` calls after `WARMUP` warm-up calls, `ROUNDS` rounds with
//! the three implementations interleaved (xrpc, raw, tarpc, xrpc, ...) so that noise on a shared
//! machine hits all alike; p50/p99 over all rounds.
//!
//! raw   = the client writes a request-sized frame (xrpc's request frame length, prefix
//!         included, measured at start-up), the server reads exactly that many bytes and answers
//!         with a response-sized frame; no encoding, no dispatch.
//! xrpc  = `RpcClient::call("add", ..)` on a `MessageChannelAdapter` over `TcpFrameTransport` /
//!         `UnixFrameTransport`, served by `RpcServer::serve` (default configurations).
//! tarpc = a `#[tarpc::service]` client and a `BaseChannel` server, over
//!         `serde_transport::new(Framed<_, LengthDelimitedCodec>, Bincode)` — what
//!         `serde_transport::tcp::connect` / `unix::connect` build, but on the same pre-connected
//!         socket as the others (so TCP_NODELAY is on for all three).
//!
//! Throughput: one connection, `INFLIGHT` tasks each looping calls for `TPUT_MS` ms per round
//! (`ROUNDS` rounds, interleaved); calls/s. The raw pipelined baseline keeps as many frames in
//! flight with a writer and a reader task; its writer writes every frame it has credit for in
//! one `write_all`, and its server answers every request a read brought in with one write (the
//! batching an RPC stack could do at best).
//!
//! Shared memory (`PARTS=shm`): a bare frame ping-pong on the `xrpc-shm` ring and the same call
//! over `SharedMemoryFrameTransport`, beside raw Unix and TCP ping-pongs in the same rounds.
//!
//! Runtimes: `mt` = client and server on one 2-worker multi-thread runtime; `ct` = a
//! current-thread runtime per side, each on its own OS thread.
//!
//! `cargo bench -p xrpc-bench --bench rpc`. Environment: `ITERS` (20000), `ROUNDS` (3),
//! `TPUT_MS` (700), `INFLIGHT` (64), and filters `KINDS` (`tcp,unix`), `SETUPS` (`mt,ct`),
//! `PARTS` (`lat,tput,shm`), `IMPS` (`xrpc,raw,tarpc`) to profile one case.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tarpc::server::Channel as _;
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use xrpc::{
    MessageChannel, MessageChannelAdapter, RpcClient, RpcServer, SharedMemoryConfig,
    SharedMemoryFrameTransport, SharedMemoryFrameTransportListener, TcpConfig, TcpFrameTransport,
    UnixConfig, UnixFrameTransport,
};

const WARMUP: usize = 2_000;

/// The request of the benchmarked call.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AddRequest {
    a: i32,
    b: i32,
}

/// The response of the benchmarked call.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AddResponse {
    result: i32,
}

/// The tarpc version of the service.
#[tarpc::service]
trait Adder {
    /// Adds.
    async fn add(req: AddRequest) -> AddResponse;
}

#[derive(Clone)]
struct AdderServer;

impl Adder for AdderServer {
    async fn add(self, _: tarpc::context::Context, req: AddRequest) -> AddResponse {
        AddResponse {
            result: req.a + req.b,
        }
    }
}

/// The i-th request; small operands keep every request the same size on the wire.
fn request(i: usize) -> AddRequest {
    AddRequest {
        a: (i % 64) as i32,
        b: 1,
    }
}

fn check(i: usize, r: AddResponse) {
    assert_eq!(black_box(r).result, (i % 64) as i32 + 1);
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Tcp,
    Unix,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Setup {
    Mt,
    Ct,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Imp {
    Xrpc,
    Raw,
    Tarpc,
}

const IMPS: [Imp; 3] = [Imp::Xrpc, Imp::Raw, Imp::Tarpc];

/// Frame lengths, prefix included, of xrpc's request and response for the call.
#[derive(Clone, Copy, Debug)]
struct Frames {
    req: usize,
    resp: usize,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

// ---- sockets ------------------------------------------------------------------------------

enum Sock {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

/// A connected pair (client, server), non-blocking, TCP_NODELAY on.
fn sock_pair(kind: Kind) -> (Sock, Sock) {
    match kind {
        Kind::Tcp => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().unwrap();
            for x in [&c, &s] {
                x.set_nodelay(true).unwrap();
                x.set_nonblocking(true).unwrap();
            }
            (Sock::Tcp(c), Sock::Tcp(s))
        }
        Kind::Unix => {
            let (c, s) = std::os::unix::net::UnixStream::pair().unwrap();
            for x in [&c, &s] {
                x.set_nonblocking(true).unwrap();
            }
            (Sock::Unix(c), Sock::Unix(s))
        }
    }
}

/// What each implementation is handed: a tokio stream, or an xrpc channel over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Dispatches on the socket kind: `$io` gets a tokio stream, `$ch` an xrpc message channel.
macro_rules! with_sock {
    ($sock:expr, |$s:ident| $body:expr) => {
        match $sock {
            Sock::Tcp(x) => {
                let $s = tokio::net::TcpStream::from_std(x).unwrap();
                $body
            }
            Sock::Unix(x) => {
                let $s = tokio::net::UnixStream::from_std(x).unwrap();
                $body
            }
        }
    };
}

macro_rules! with_channel {
    ($sock:expr, |$c:ident| $body:expr) => {
        match $sock {
            Sock::Tcp(x) => {
                let s = tokio::net::TcpStream::from_std(x).unwrap();
                let $c = MessageChannelAdapter::new(
                    TcpFrameTransport::from_stream(s, TcpConfig::default()).unwrap(),
                );
                $body
            }
            Sock::Unix(x) => {
                let s = tokio::net::UnixStream::from_std(x).unwrap();
                let $c = MessageChannelAdapter::new(
                    UnixFrameTransport::from_stream(s, UnixConfig::default(), "bench").unwrap(),
                );
                $body
            }
        }
    };
}

// ---- servers ------------------------------------------------------------------------------

fn xrpc_server() -> RpcServer {
    let server = RpcServer::new();
    server.register_typed("add", |req: AddRequest| async move {
        Ok(AddResponse {
            result: req.a + req.b,
        })
    });
    server
}

async fn raw_server<S: Io>(s: S, f: Frames) {
    // Buffered reads, and one write for all the requests a read brought in, so that pipelined
    // requests cost one syscall per batch rather than per frame (ping-pong gets one of each).
    let mut s = BufReader::new(s);
    let mut req = vec![0u8; f.req];
    let resp = frame_of(f.resp);
    let mut out = Vec::new();
    while s.read_exact(&mut req).await.is_ok() {
        out.extend_from_slice(&resp);
        while s.buffer().len() >= f.req {
            s.consume(f.req);
            out.extend_from_slice(&resp);
        }
        if s.write_all(&out).await.is_err() {
            break;
        }
        out.clear();
    }
}

fn tarpc_transport<S: Io, In, Out>(s: S) -> impl tarpc::Transport<Out, In>
where
    In: for<'de> Deserialize<'de>,
    Out: Serialize,
{
    tarpc::serde_transport::new(
        Framed::new(s, LengthDelimitedCodec::new()),
        Bincode::default(),
    )
}

async fn tarpc_server<S: Io>(s: S) {
    tarpc::server::BaseChannel::with_defaults(tarpc_transport(s))
        .execute(AdderServer.serve())
        .for_each(|resp| async move {
            tokio::spawn(resp);
        })
        .await;
}

fn server(imp: Imp, sock: Sock, f: Frames) -> BoxFut<()> {
    Box::pin(async move {
        match imp {
            Imp::Xrpc => with_channel!(sock, |c| {
                let _ = xrpc_server().serve(c).await;
            }),
            Imp::Raw => with_sock!(sock, |s| raw_server(s, f).await),
            Imp::Tarpc => with_sock!(sock, |s| tarpc_server(s).await),
        }
    })
}

/// A frame of `len` bytes, prefix included.
fn frame_of(len: usize) -> Vec<u8> {
    let mut v = ((len - 4) as u32).to_le_bytes().to_vec();
    v.resize(len, 0xab);
    v
}

// ---- latency clients ----------------------------------------------------------------------

async fn timed_loop<F, Fut>(n: usize, mut call: F) -> Vec<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut out = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let t = Instant::now();
        call(i).await;
        if i >= WARMUP {
            out.push(t.elapsed());
        }
    }
    out
}

async fn xrpc_latency<C: MessageChannel>(c: C, n: usize) -> Vec<Duration> {
    let client = RpcClient::new(c);
    let _h = client.start();
    let out = timed_loop(n, |i| {
        let client = &client;
        async move {
            let r: AddResponse = client.call("add", &request(i)).await.unwrap();
            check(i, r);
        }
    })
    .await;
    client.close().await;
    out
}

async fn raw_latency<S: Io>(mut s: S, f: Frames, n: usize) -> Vec<Duration> {
    let req = frame_of(f.req);
    let mut resp = vec![0u8; f.resp];
    let mut out = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let t = Instant::now();
        s.write_all(&req).await.unwrap();
        s.read_exact(&mut resp).await.unwrap();
        if i >= WARMUP {
            out.push(t.elapsed());
        }
        black_box(&resp);
    }
    out
}

async fn tarpc_latency<S: Io>(s: S, n: usize) -> Vec<Duration> {
    let client = AdderClient::new(tarpc::client::Config::default(), tarpc_transport(s)).spawn();
    timed_loop(n, |i| {
        let client = &client;
        async move {
            let r = client
                .add(tarpc::context::current(), request(i))
                .await
                .unwrap();
            check(i, r);
        }
    })
    .await
}

fn latency_client(imp: Imp, sock: Sock, f: Frames, n: usize) -> BoxFut<Vec<Duration>> {
    Box::pin(async move {
        match imp {
            Imp::Xrpc => with_channel!(sock, |c| xrpc_latency(c, n).await),
            Imp::Raw => with_sock!(sock, |s| raw_latency(s, f, n).await),
            Imp::Tarpc => with_sock!(sock, |s| tarpc_latency(s, n).await),
        }
    })
}

// ---- throughput clients -------------------------------------------------------------------

/// Runs `k` tasks, each calling `call` in a loop for `dur`; returns (calls, elapsed).
async fn pipelined<F, Fut>(k: usize, dur: Duration, call: F) -> (u64, Duration)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let start = Instant::now();
    let end = start + dur;
    let tasks: Vec<_> = (0..k)
        .map(|t| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut i = t;
                while Instant::now() < end {
                    call(i).await;
                    n += 1;
                    i += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    (total, start.elapsed())
}

async fn xrpc_tput<C: MessageChannel>(c: C, k: usize, dur: Duration) -> (u64, Duration) {
    let client = RpcClient::new(c);
    let _h = client.start();
    let c2 = client.clone();
    let out = pipelined(k, dur, move |i| {
        let client = c2.clone();
        async move {
            let r: AddResponse = client.call("add", &request(i)).await.unwrap();
            check(i, r);
        }
    })
    .await;
    client.close().await;
    out
}

async fn tarpc_tput<S: Io>(s: S, k: usize, dur: Duration) -> (u64, Duration) {
    let client = AdderClient::new(tarpc::client::Config::default(), tarpc_transport(s)).spawn();
    pipelined(k, dur, move |i| {
        let client = client.clone();
        async move {
            let r = client
                .add(tarpc::context::current(), request(i))
                .await
                .unwrap();
            check(i, r);
        }
    })
    .await
}

/// A writer keeps `k` request frames in flight, writing all it has credit for at once; a reader
/// counts responses until `dur` is up.
async fn raw_tput<S: Io>(s: S, f: Frames, k: usize, dur: Duration) -> (u64, Duration) {
    let (r, mut w) = tokio::io::split(s);
    let credit = Arc::new(tokio::sync::Semaphore::new(k));
    let req = frame_of(f.req);
    let c2 = credit.clone();
    let writer = async move {
        let mut out = Vec::new();
        loop {
            c2.acquire().await.unwrap().forget();
            let more = c2.available_permits();
            if more > 0 {
                c2.try_acquire_many(more as u32).unwrap().forget();
            }
            for _ in 0..=more {
                out.extend_from_slice(&req);
            }
            w.write_all(&out).await.unwrap();
            out.clear();
        }
    };
    let start = Instant::now();
    let end = start + dur;
    let reader = async move {
        let mut r = BufReader::new(r);
        let mut resp = vec![0u8; f.resp];
        let mut n = 0u64;
        while Instant::now() < end {
            r.read_exact(&mut resp).await.unwrap();
            credit.add_permits(1);
            n += 1;
        }
        n
    };
    tokio::select! {
        n = reader => (n, start.elapsed()),
        _ = writer => unreachable!(),
    }
}

fn tput_client(
    imp: Imp,
    sock: Sock,
    f: Frames,
    k: usize,
    dur: Duration,
) -> BoxFut<(u64, Duration)> {
    Box::pin(async move {
        match imp {
            Imp::Xrpc => with_channel!(sock, |c| xrpc_tput(c, k, dur).await),
            Imp::Raw => with_sock!(sock, |s| raw_tput(s, f, k, dur).await),
            Imp::Tarpc => with_sock!(sock, |s| tarpc_tput(s, k, dur).await),
        }
    })
}

// ---- plumbing -----------------------------------------------------------------------------

/// Runs `server` and `client` on a fresh socket pair in `setup`; returns the client's result
/// once the server is gone.
fn run<T: Send + 'static>(
    kind: Kind,
    setup: Setup,
    server: impl FnOnce(Sock) -> BoxFut<()> + Send + 'static,
    client: impl FnOnce(Sock) -> BoxFut<T> + Send + 'static,
) -> T {
    let (c, s) = sock_pair(kind);
    match setup {
        Setup::Mt => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let out = rt.block_on(async move {
                let srv = tokio::spawn(server(s));
                let out = tokio::spawn(client(c)).await.unwrap();
                srv.abort();
                out
            });
            rt.shutdown_timeout(Duration::from_secs(1));
            out
        }
        Setup::Ct => {
            let ct = || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
            };
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let srv = std::thread::spawn(move || {
                ct().block_on(async move {
                    tokio::select! {
                        _ = server(s) => {}
                        _ = stopped => {}
                    }
                })
            });
            let out = ct().block_on(client(c));
            let _ = stop.send(());
            srv.join().unwrap();
            out
        }
    }
}

/// Measures xrpc's request and response frame lengths for the call (prefix included).
fn measure_frames(kind: Kind) -> Frames {
    const CALLS: u64 = 100;
    let f = Frames { req: 0, resp: 0 };
    run(
        kind,
        Setup::Ct,
        move |s| server(Imp::Xrpc, s, f),
        |c| {
            Box::pin(async move {
                with_channel!(c, |ch| {
                    let client = RpcClient::new(ch);
                    for i in 0..CALLS as usize {
                        let r: AddResponse = client.call("add", &request(i)).await.unwrap();
                        check(i, r);
                    }
                    let st = client.channel().stats().expect("stream transports count");
                    client.close().await;
                    assert_eq!(st.frames_sent, CALLS);
                    assert_eq!(st.frames_received, CALLS);
                    assert_eq!(st.bytes_sent % CALLS, 0, "requests of one size");
                    assert_eq!(st.bytes_received % CALLS, 0, "responses of one size");
                    Frames {
                        req: (st.bytes_sent / CALLS) as usize + 4,
                        resp: (st.bytes_received / CALLS) as usize + 4,
                    }
                })
            })
        },
    )
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p / 100.0) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e6
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether `item` is selected by the comma-separated filter in env `name` (unset: all).
fn selected(name: &str, item: &str) -> bool {
    std::env::var(name).map_or(true, |v| v.split(',').any(|x| x.trim() == item))
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Tcp => "tcp",
        Kind::Unix => "unix",
    }
}

fn setup_name(s: Setup) -> &'static str {
    match s {
        Setup::Mt => "mt",
        Setup::Ct => "ct",
    }
}

fn imp_name(i: Imp) -> &'static str {
    match i {
        Imp::Xrpc => "xrpc",
        Imp::Raw => "raw",
        Imp::Tarpc => "tarpc",
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported (use the env filters).
    let n = env("ITERS", 20_000);
    let rounds = env("ROUNDS", 3).max(1);
    let tput_ms = env("TPUT_MS", 700) as u64;
    let k = env("INFLIGHT", 64);
    let kinds: Vec<Kind> = [Kind::Tcp, Kind::Unix]
        .into_iter()
        .filter(|k| selected("KINDS", kind_name(*k)))
        .collect();
    let setups: Vec<Setup> = [Setup::Mt, Setup::Ct]
        .into_iter()
        .filter(|s| selected("SETUPS", setup_name(*s)))
        .collect();
    let imps: Vec<Imp> = IMPS
        .into_iter()
        .filter(|i| selected("IMPS", imp_name(*i)))
        .collect();
    let frames: Vec<Frames> = kinds.iter().map(|k| measure_frames(*k)).collect();
    println!(
        "add(AddRequest {{ a: i32, b: i32 }}) -> AddResponse {{ result: i32 }}; xrpc frames: \
         request {} B, response {} B (4-byte prefix included); raw ping-pong sends the same.",
        frames[0].req, frames[0].resp
    );
    println!(
        "mt = one 2-worker multi-thread runtime for both sides; ct = a current-thread runtime \
         per side, each on its own OS thread."
    );

    if selected("PARTS", "lat") {
        println!();
        println!(
            "Latency, one call at a time: {n} calls x {rounds} rounds after {WARMUP} warm-up, µs"
        );
        println!(
            "| socket | runtime | xrpc p50 | xrpc p99 | raw p50 | raw p99 | tarpc p50 | tarpc p99 | xrpc/raw p50 | xrpc/raw p99 | xrpc/tarpc p50 |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for (kind, f) in kinds.iter().zip(&frames) {
            for setup in &setups {
                let (kind, setup, f) = (*kind, *setup, *f);
                let mut samples: [Vec<Duration>; 3] = Default::default();
                for _ in 0..rounds {
                    for imp in &imps {
                        let imp = *imp;
                        samples[imp as usize].extend(run(
                            kind,
                            setup,
                            move |s| server(imp, s, f),
                            move |c| latency_client(imp, c, f, n),
                        ));
                    }
                }
                for s in &mut samples {
                    s.sort_unstable();
                }
                let q = |imp: Imp, p: f64| {
                    let s = &samples[imp as usize];
                    if s.is_empty() { f64::NAN } else { pct(s, p) }
                };
                println!(
                    "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} |",
                    kind_name(kind),
                    setup_name(setup),
                    q(Imp::Xrpc, 50.0),
                    q(Imp::Xrpc, 99.0),
                    q(Imp::Raw, 50.0),
                    q(Imp::Raw, 99.0),
                    q(Imp::Tarpc, 50.0),
                    q(Imp::Tarpc, 99.0),
                    q(Imp::Xrpc, 50.0) / q(Imp::Raw, 50.0),
                    q(Imp::Xrpc, 99.0) / q(Imp::Raw, 99.0),
                    q(Imp::Xrpc, 50.0) / q(Imp::Tarpc, 50.0),
                );
            }
        }
    }

    if selected("PARTS", "tput") {
        let dur = Duration::from_millis(tput_ms);
        println!();
        println!(
            "Pipelined throughput, one connection, {k} calls in flight: {rounds} rounds x {tput_ms} ms \
             interleaved; median of the rounds, k calls/s"
        );
        println!("| socket | runtime | xrpc | tarpc | raw | xrpc/tarpc | xrpc/raw |");
        println!("|---|---|---|---|---|---|---|");
        for (kind, f) in kinds.iter().zip(&frames) {
            for setup in &setups {
                let (kind, setup, f) = (*kind, *setup, *f);
                let mut rates: [Vec<f64>; 3] = Default::default();
                for _ in 0..rounds {
                    for imp in &imps {
                        let imp = *imp;
                        let (calls, took) = run(
                            kind,
                            setup,
                            move |s| server(imp, s, f),
                            move |c| tput_client(imp, c, f, k, dur),
                        );
                        rates[imp as usize].push(calls as f64 / took.as_secs_f64() / 1e3);
                    }
                }
                let mut m = |imp: Imp| {
                    let r = &mut rates[imp as usize];
                    if r.is_empty() { f64::NAN } else { median(r) }
                };
                let (x, t, r) = (m(Imp::Xrpc), m(Imp::Tarpc), m(Imp::Raw));
                println!(
                    "| {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
                    kind_name(kind),
                    setup_name(setup),
                    x,
                    t,
                    r,
                    x / t,
                    x / r,
                );
            }
        }
    }

    if selected("PARTS", "shm") {
        shm_section(
            n,
            rounds,
            frames
                .first()
                .copied()
                .unwrap_or(Frames { req: 33, resp: 21 }),
        );
    }
}

// ---- shared memory --------------------------------------------------------------------------

/// Shared memory between two threads of this process (the transport is the same between
/// processes; `cargo bench -p xrpc-shm` measures both): a bare frame ping-pong on the ring, and
/// the same `add` call over `SharedMemoryFrameTransport`, beside raw Unix and TCP ping-pongs of
/// the same bytes measured in the same rounds.
fn shm_section(n: usize, rounds: usize, f: Frames) {
    println!();
    println!(
        "Shared memory, one call at a time: {n} calls x {rounds} rounds after {WARMUP} warm-up, \
         same bytes as above; bare = xrpc-shm ring ping-pong (blocking API, two threads)"
    );
    println!(
        "| transport | runtime | p50 µs | p99 µs | raw unix p50 / this p50 | raw tcp p50 / this p50 |"
    );
    println!("|---|---|---|---|---|---|");
    let mut bare = Vec::new();
    let mut rpc_ct = Vec::new();
    let mut rpc_mt = Vec::new();
    let mut unix = Vec::new();
    let mut tcp = Vec::new();
    for round in 0..rounds {
        bare.extend(shm_bare_latency(n, f, round));
        rpc_ct.extend(shm_rpc_latency(Setup::Ct, n, round));
        rpc_mt.extend(shm_rpc_latency(Setup::Mt, n, round));
        for (kind, out) in [(Kind::Unix, &mut unix), (Kind::Tcp, &mut tcp)] {
            out.extend(run(
                kind,
                Setup::Ct,
                move |s| server(Imp::Raw, s, f),
                move |c| latency_client(Imp::Raw, c, f, n),
            ));
        }
    }
    for v in [&mut bare, &mut rpc_ct, &mut rpc_mt, &mut unix, &mut tcp] {
        v.sort_unstable();
    }
    let (u50, t50) = (pct(&unix, 50.0), pct(&tcp, 50.0));
    for (name, setup, v) in [
        ("shm bare frames", "threads", &bare),
        ("shm xrpc call", "ct", &rpc_ct),
        ("shm xrpc call", "mt", &rpc_mt),
        ("raw unix", "ct", &unix),
        ("raw tcp", "ct", &tcp),
    ] {
        let p50 = pct(v, 50.0);
        println!(
            "| {name} | {setup} | {p50:.2} | {:.2} | {:.1} | {:.1} |",
            pct(v, 99.0),
            u50 / p50,
            t50 / p50
        );
    }
}

fn shm_name(what: &str, round: usize) -> String {
    format!("xrpc-bench-{what}-{}-{round}", std::process::id())
}

fn shm_bare_latency(n: usize, f: Frames, round: usize) -> Vec<Duration> {
    let name = shm_name("bare", round);
    let listener = xrpc_shm::ShmListener::bind(&name, xrpc_shm::ShmConfig::default()).unwrap();
    let resp = vec![0u8; f.resp - 4];
    let server = std::thread::spawn(move || {
        let mut conn = listener.accept().unwrap();
        let t = Some(Duration::from_secs(10));
        while conn.recv_bytes(t).is_ok() {
            if conn.send(&resp, t).is_err() {
                break;
            }
        }
    });
    let mut conn = xrpc_shm::ShmConnection::connect(&name, xrpc_shm::ShmConfig::default()).unwrap();
    let req = vec![1u8; f.req - 4];
    let t = Some(Duration::from_secs(10));
    let mut out = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let t0 = Instant::now();
        conn.send(&req, t).unwrap();
        black_box(conn.recv_bytes(t).unwrap());
        if i >= WARMUP {
            out.push(t0.elapsed());
        }
    }
    drop(conn);
    server.join().unwrap();
    out
}

fn shm_rpc_latency(setup: Setup, n: usize, round: usize) -> Vec<Duration> {
    let name = shm_name(if setup == Setup::Ct { "ct" } else { "mt" }, round);
    let listener =
        SharedMemoryFrameTransportListener::bind(&name, SharedMemoryConfig::default()).unwrap();
    let serve = async move {
        let t = listener.accept().await.unwrap();
        let _ = xrpc_server().serve(MessageChannelAdapter::new(t)).await;
    };
    let client = {
        let name = name.clone();
        async move {
            let t = SharedMemoryFrameTransport::connect(&name, SharedMemoryConfig::default())
                .await
                .unwrap();
            xrpc_latency(MessageChannelAdapter::new(t), n).await
        }
    };
    match setup {
        Setup::Mt => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let out = rt.block_on(async move {
                let srv = tokio::spawn(serve);
                let out = tokio::spawn(client).await.unwrap();
                let _ = srv.await;
                out
            });
            rt.shutdown_timeout(Duration::from_secs(1));
            out
        }
        Setup::Ct => {
            let ct = || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
            };
            let srv = std::thread::spawn(move || ct().block_on(serve));
            let out = ct().block_on(client);
            srv.join().unwrap();
            out
        }
    }
}
