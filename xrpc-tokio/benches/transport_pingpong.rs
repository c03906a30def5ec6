//! 64-byte frame ping-pong round trip over TCP and Unix sockets: xrpc's frame transports (and
//! the message channel on top) against a raw tokio ping-pong of the same bytes on the same kind
//! of socket, in the same run.
//!
//! raw    = `write_all(4-byte prefix + 64 bytes)`, `read_exact(68 bytes)` on a tokio stream.
//! frame  = `TcpFrameTransport` / `UnixFrameTransport` `send_frame` + `recv_frame`.
//! msg    = `MessageChannelAdapter` over the same transport: a Request with a 64-byte payload,
//!          answered by a Response with the same payload (header encode + decode both ways).
//!
//! Runtimes: `ct` = a current-thread runtime per side, each on its own OS thread;
//! `mt` = both sides on one 2-worker multi-thread runtime.
//!
//! `cargo bench -p xrpc-tokio --bench transport_pingpong` (env `ITERS`, `ROUNDS` to change the
//! sample size).

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use xrpc_proto::{Header, Message, MessageKind};
use xrpc_tokio::{
    FrameTransport, MessageChannel, MessageChannelAdapter, TcpConfig, TcpFrameTransport,
    UnixConfig, UnixFrameTransport,
};

const PAYLOAD: usize = 64;
const WARMUP: usize = 2_000;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Tcp,
    Unix,
}

#[derive(Clone, Copy, PartialEq)]
enum Imp {
    Raw,
    Frame,
    Msg,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    CurrentThread,
    MultiThread,
}

enum Std {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

fn std_pair(kind: Kind) -> (Std, Std) {
    match kind {
        Kind::Tcp => {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (s, _) = l.accept().unwrap();
            for x in [&c, &s] {
                x.set_nodelay(true).unwrap();
                x.set_nonblocking(true).unwrap();
            }
            (Std::Tcp(c), Std::Tcp(s))
        }
        Kind::Unix => {
            let (c, s) = std::os::unix::net::UnixStream::pair().unwrap();
            for x in [&c, &s] {
                x.set_nonblocking(true).unwrap();
            }
            (Std::Unix(c), Std::Unix(s))
        }
    }
}

// ---- raw ----------------------------------------------------------------------------------

async fn raw_server<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = [0u8; 4 + PAYLOAD];
    while s.read_exact(&mut buf).await.is_ok() {
        if s.write_all(&buf).await.is_err() {
            break;
        }
    }
}

async fn raw_client<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, n: usize) -> Vec<Duration> {
    let mut msg = (PAYLOAD as u32).to_le_bytes().to_vec();
    msg.extend([0xab; PAYLOAD]);
    let mut buf = [0u8; 4 + PAYLOAD];
    let mut out = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let t = Instant::now();
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        if i >= WARMUP {
            out.push(t.elapsed());
        }
    }
    out
}

// ---- xrpc frames --------------------------------------------------------------------------

async fn frame_server<T: FrameTransport>(t: T) {
    while let Ok(f) = t.recv_frame().await {
        if t.send_frame(&f).await.is_err() {
            break;
        }
    }
}

async fn frame_client<T: FrameTransport>(t: T, n: usize) -> Vec<Duration> {
    let msg = [0xab; PAYLOAD];
    let mut out = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let start = Instant::now();
        t.send_frame(&msg).await.unwrap();
        let f = t.recv_frame().await.unwrap();
        assert_eq!(f.len(), PAYLOAD);
        if i >= WARMUP {
            out.push(start.elapsed());
        }
    }
    out
}

// ---- xrpc messages ------------------------------------------------------------------------

async fn msg_server<C: MessageChannel>(c: C) {
    while let Ok(m) = c.recv().await {
        let h = Header::new(MessageKind::Response, m.header.id);
        let reply = c.send_with(&h, "", |b| {
            b.extend_from_slice(&m.payload);
            Ok(())
        });
        if reply.await.is_err() {
            break;
        }
    }
}

async fn msg_client<C: MessageChannel>(c: C, n: usize) -> Vec<Duration> {
    let payload = Bytes::from_static(&[0xab; PAYLOAD]);
    let mut out = Vec::with_capacity(n);
    for i in 0..WARMUP + n {
        let start = Instant::now();
        let h = Header::new(MessageKind::Request, i as u64);
        let req = Message::new(h, "echo", payload.clone()).unwrap();
        c.send(&req).await.unwrap();
        let m = c.recv().await.unwrap();
        assert_eq!(m.header.id, i as u64);
        if i >= WARMUP {
            out.push(start.elapsed());
        }
    }
    out
}

// ---- plumbing -----------------------------------------------------------------------------

fn tcp(s: std::net::TcpStream) -> tokio::net::TcpStream {
    tokio::net::TcpStream::from_std(s).unwrap()
}

fn unix(s: std::os::unix::net::UnixStream) -> tokio::net::UnixStream {
    tokio::net::UnixStream::from_std(s).unwrap()
}

fn tcp_t(s: std::net::TcpStream) -> TcpFrameTransport {
    TcpFrameTransport::from_stream(tcp(s), TcpConfig::default()).unwrap()
}

fn unix_t(s: std::os::unix::net::UnixStream) -> UnixFrameTransport {
    UnixFrameTransport::from_stream(unix(s), UnixConfig::default(), "bench").unwrap()
}

async fn server(s: Std, imp: Imp) {
    match (s, imp) {
        (Std::Tcp(s), Imp::Raw) => raw_server(tcp(s)).await,
        (Std::Tcp(s), Imp::Frame) => frame_server(tcp_t(s)).await,
        (Std::Tcp(s), Imp::Msg) => msg_server(MessageChannelAdapter::new(tcp_t(s))).await,
        (Std::Unix(s), Imp::Raw) => raw_server(unix(s)).await,
        (Std::Unix(s), Imp::Frame) => frame_server(unix_t(s)).await,
        (Std::Unix(s), Imp::Msg) => msg_server(MessageChannelAdapter::new(unix_t(s))).await,
    }
}

async fn client(s: Std, imp: Imp, n: usize) -> Vec<Duration> {
    match (s, imp) {
        (Std::Tcp(s), Imp::Raw) => raw_client(tcp(s), n).await,
        (Std::Tcp(s), Imp::Frame) => frame_client(tcp_t(s), n).await,
        (Std::Tcp(s), Imp::Msg) => msg_client(MessageChannelAdapter::new(tcp_t(s)), n).await,
        (Std::Unix(s), Imp::Raw) => raw_client(unix(s), n).await,
        (Std::Unix(s), Imp::Frame) => frame_client(unix_t(s), n).await,
        (Std::Unix(s), Imp::Msg) => msg_client(MessageChannelAdapter::new(unix_t(s)), n).await,
    }
}

fn run(kind: Kind, mode: Mode, imp: Imp, n: usize) -> Vec<Duration> {
    let (c, s) = std_pair(kind);
    match mode {
        Mode::CurrentThread => {
            let ct = || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
            };
            let srv = std::thread::spawn(move || ct().block_on(server(s, imp)));
            // The client's stream is dropped at the end, which ends the server.
            let out = ct().block_on(client(c, imp, n));
            srv.join().unwrap();
            out
        }
        Mode::MultiThread => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let srv = tokio::spawn(server(s, imp));
                let out = tokio::spawn(client(c, imp, n)).await.unwrap();
                srv.await.unwrap();
                out
            })
        }
    }
}

fn pct(sorted: &[Duration], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_secs_f64() * 1e6
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let n = env("ITERS", 20_000);
    let rounds = env("ROUNDS", 3);
    println!(
        "64-byte ping-pong round trip, {n} iterations x {rounds} rounds (after {WARMUP} warm-up), µs"
    );
    println!(
        "| socket | runtime | raw p50 | raw p99 | frame p50 | frame p99 | frame/raw p50 | msg p50 | msg p99 | msg/raw p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for kind in [Kind::Tcp, Kind::Unix] {
        for mode in [Mode::CurrentThread, Mode::MultiThread] {
            let mut samples = [Vec::new(), Vec::new(), Vec::new()];
            // Interleave the implementations so drift on a shared machine hits all alike.
            for _ in 0..rounds {
                for (i, imp) in [Imp::Raw, Imp::Frame, Imp::Msg].into_iter().enumerate() {
                    samples[i].extend(run(kind, mode, imp, n));
                }
            }
            for s in &mut samples {
                s.sort_unstable();
            }
            let [raw, frame, msg] = &samples;
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:.2} |",
                if kind == Kind::Tcp { "tcp" } else { "unix" },
                if mode == Mode::CurrentThread {
                    "ct per side"
                } else {
                    "mt (2 workers)"
                },
                pct(raw, 50),
                pct(raw, 99),
                pct(frame, 50),
                pct(frame, 99),
                pct(frame, 50) / pct(raw, 50),
                pct(msg, 50),
                pct(msg, 99),
                pct(msg, 50) / pct(raw, 50),
            );
        }
    }
}
