//! xrpc on tokio: bare frames and typed calls over shared memory, Unix, TCP, TLS over TCP, the
//! in-process channel transport and the Arc transport.
//!
//! The server runs on its own thread with a current-thread runtime (as another process would);
//! the client on a 2-worker multi-thread runtime, as `#[tokio::main]` gives on this machine,
//! either in a spawned task (`spawned`) or in the body of `block_on` (`main`, what
//! `#[tokio::main] async fn main` does). The in-process transports also have a `one thread`
//! row: server and client are tasks of one current-thread runtime.

use std::sync::Arc;
use std::time::Duration;

use xrpc::{
    ArcFrameTransport, ChannelConfig, ChannelFrameTransport, FrameTransport, MessageChannelAdapter,
    RpcClient, RpcServer, SharedMemoryConfig, SharedMemoryFrameTransport,
    SharedMemoryFrameTransportListener, TcpConfig, TcpFrameTransport, TlsClientConfig,
    TlsFrameTransport, TlsServerConfig, UnixConfig, UnixFrameTransport,
};

use super::baseline::join_or_leave;
use super::{Group, Msg, ONE_WAY_LAPS, Outcome, Skip, Subject, check_echo, one_way_laps_awaited};
use crate::measure::{Recorder, Span};

/// The rows of this module.
pub fn rows() -> Vec<Box<dyn Subject>> {
    let mut rows: Vec<Box<dyn Subject>> = Vec::new();
    for net in [
        Net::Shm,
        Net::Unix,
        Net::Tcp,
        Net::Tls,
        Net::Channel,
        Net::Arc,
    ] {
        rows.push(Box::new(XrpcTokio {
            net,
            what: What::Frames,
        }));
        for caller in [Caller::Spawned, Caller::Main, Caller::OneThread] {
            if caller == Caller::OneThread && !matches!(net, Net::Channel | Net::Arc) {
                continue;
            }
            rows.push(Box::new(XrpcTokio {
                net,
                what: What::Calls(caller),
            }));
        }
    }
    for net in [Net::Unix, Net::Tcp] {
        for caller in [Caller::Spawned, Caller::Main] {
            rows.push(Box::new(RawTokio { net, caller }));
        }
    }
    rows
}

/// Which transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// `SharedMemoryFrameTransport`.
    Shm,
    /// `UnixFrameTransport` on a socket pair.
    Unix,
    /// `TcpFrameTransport` on loopback.
    Tcp,
    /// `TlsFrameTransport` on loopback (rustls, TLS 1.3, ring; the handshake before the span).
    Tls,
    /// `ChannelFrameTransport` (in-process, serialized frames).
    Channel,
    /// `ArcFrameTransport` (in-process; used here for frames, like the channel one).
    Arc,
}

impl Net {
    fn name(self) -> &'static str {
        match self {
            Net::Shm => "shm",
            Net::Unix => "unix",
            Net::Tcp => "tcp",
            Net::Tls => "tls",
            Net::Channel => "in-process channel",
            Net::Arc => "in-process arc",
        }
    }
}

/// Where the client's code runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// In a task spawned on the runtime.
    Spawned,
    /// In the body of `block_on` (`#[tokio::main]`).
    Main,
    /// In a task of a current-thread runtime whose other task is the server.
    OneThread,
}

/// What is exchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// Bare frames: `send_frame` / `recv_frame`, the server echoes.
    Frames,
    /// Typed calls, `RpcClient::call::<Msg, Msg>("echo", ..)` to an `RpcServer`.
    Calls(Caller),
}

/// An xrpc-on-tokio row.
pub struct XrpcTokio {
    net: Net,
    what: What,
}

/// One end of a connection, before its runtime exists.
enum Half {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
    TlsClient(std::net::TcpStream),
    TlsServer(std::net::TcpStream),
    ShmServer(SharedMemoryFrameTransportListener),
    ShmClient(String),
    Channel(ChannelFrameTransport),
    Arc(ArcFrameTransport),
}

/// (client, server) ends for `net`, unconnected to any runtime yet.
fn halves(net: Net) -> Result<(Half, Half), Skip> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    Ok(match net {
        Net::Unix => {
            let (c, s) = std::os::unix::net::UnixStream::pair()?;
            (Half::Unix(c), Half::Unix(s))
        }
        Net::Tcp | Net::Tls => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            let c = std::net::TcpStream::connect(l.local_addr()?)?;
            let (s, _) = l.accept()?;
            if net == Net::Tls {
                (Half::TlsClient(c), Half::TlsServer(s))
            } else {
                (Half::Tcp(c), Half::Tcp(s))
            }
        }
        Net::Shm => {
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("xrpc-bench-{}-{n}", std::process::id());
            let l = SharedMemoryFrameTransportListener::bind(&name, SharedMemoryConfig::default())?;
            (Half::ShmClient(name), Half::ShmServer(l))
        }
        Net::Channel => {
            let (c, s) = ChannelFrameTransport::create_pair("bench", ChannelConfig::default());
            (Half::Channel(c), Half::Channel(s))
        }
        Net::Arc => {
            let (c, s) = ArcFrameTransport::create_pair("bench");
            (Half::Arc(c), Half::Arc(s))
        }
    })
}

/// Turns `$half` into a transport `$t` (inside a runtime) and evaluates `$body` with it.
macro_rules! with_transport {
    ($half:expr, |$t:ident| $body:expr) => {
        match $half {
            Half::Unix(s) => {
                s.set_nonblocking(true)?;
                let s = tokio::net::UnixStream::from_std(s)?;
                let $t = UnixFrameTransport::from_stream(s, UnixConfig::default(), "bench")?;
                $body
            }
            Half::Tcp(s) => {
                s.set_nonblocking(true)?;
                let s = tokio::net::TcpStream::from_std(s)?;
                let $t = TcpFrameTransport::from_stream(s, TcpConfig::default())?;
                $body
            }
            Half::TlsClient(s) => {
                s.set_nonblocking(true)?;
                let s = tokio::net::TcpStream::from_std(s)?;
                let (_, tls) = tls_configs()?;
                let name = xrpc::rustls::pki_types::ServerName::try_from("localhost")
                    .map_err(|e| Skip::Absent(e.to_string()))?;
                let $t = TlsFrameTransport::client_from_stream(s, TcpConfig::default(), tls, name)
                    .await?;
                $body
            }
            Half::TlsServer(s) => {
                s.set_nonblocking(true)?;
                let s = tokio::net::TcpStream::from_std(s)?;
                let (tls, _) = tls_configs()?;
                let $t =
                    TlsFrameTransport::server_from_stream(s, TcpConfig::default(), tls).await?;
                $body
            }
            Half::ShmServer(l) => {
                let $t = l.accept().await?;
                $body
            }
            Half::ShmClient(name) => {
                let $t = SharedMemoryFrameTransport::connect(&name, SharedMemoryConfig::default())
                    .await?;
                $body
            }
            Half::Channel($t) => $body,
            Half::Arc($t) => $body,
        }
    };
}

/// The TLS rows' configurations: a CA made at the first use, a server certificate for
/// `localhost` signed by it, a client that trusts it.
fn tls_configs() -> Result<&'static (TlsServerConfig, TlsClientConfig), Skip> {
    static CONFIGS: std::sync::OnceLock<Result<(TlsServerConfig, TlsClientConfig), String>> =
        std::sync::OnceLock::new();
    let made = CONFIGS.get_or_init(|| {
        let fail = |e: &dyn std::fmt::Display| e.to_string();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(&e))?;
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().map_err(|e| fail(&e))?;
        let ca_cert = ca.self_signed(&ca_key).map_err(|e| fail(&e))?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(|e| fail(&e))?;
        let key = rcgen::KeyPair::generate().map_err(|e| fail(&e))?;
        let cert = params.signed_by(&key, &issuer).map_err(|e| fail(&e))?;
        let key = xrpc::rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let server = TlsServerConfig::new(vec![cert.der().clone()], key).map_err(|e| fail(&e))?;
        let client = TlsClientConfig::new([ca_cert.der().clone()]).map_err(|e| fail(&e))?;
        Ok((server, client))
    });
    made.as_ref()
        .map_err(|e| Skip::Absent(format!("TLS certificates: {e}")))
}

/// What the server does.
#[derive(Clone, Copy)]
enum Serve {
    /// An `RpcServer` with method `echo`.
    Calls,
    /// Echo every frame.
    Echo,
    /// Receive `count` frames, answer one.
    Sink(usize),
}

/// The server: its own thread and current-thread runtime.
fn spawn_server(half: Half, serve: Serve) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return eprintln!("server runtime: {e}"),
        };
        let r: Result<(), Skip> =
            rt.block_on(async move { with_transport!(half, |t| run_server(t, serve).await) });
        if let Err(Skip::Absent(e)) = r {
            eprintln!("server: {e}");
        }
    })
}

async fn run_server<T: FrameTransport>(t: T, serve: Serve) -> Result<(), Skip> {
    match serve {
        Serve::Calls => {
            let server: RpcServer = RpcServer::new();
            server.register_typed("echo", |m: Msg| async move { Ok(m) });
            // Ends with an error when the client hangs up: that is the normal end here.
            let _ = server.serve(MessageChannelAdapter::new(t)).await;
        }
        Serve::Echo => {
            while let Ok(f) = t.recv_frame().await {
                if t.send_frame(&f).await.is_err() {
                    break;
                }
            }
        }
        Serve::Sink(count) => {
            for _ in 0..ONE_WAY_LAPS {
                for _ in 0..count {
                    t.recv_frame().await?;
                }
                t.send_frame(&[1]).await?;
            }
            // Wait for the client to hang up before dropping our end.
            let _ = t.recv_frame().await;
        }
    }
    Ok(())
}

/// The client's part of a measurement.
#[derive(Clone, Copy)]
enum Job {
    RoundTrips(Recorder),
    InFlight { k: usize, calls: usize },
    OneWay { size: usize, count: usize },
}

/// Runs `job` as the client of a fresh connection over `net`, with the server doing `serve`.
fn measure(net: Net, serve: Serve, caller: Caller, what: What, job: Job) -> Outcome {
    let (client, server) = halves(net)?;
    if caller == Caller::OneThread {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return rt.block_on(async move {
            let server =
                tokio::spawn(
                    async move { with_transport!(server, |t| run_server(t, serve).await) },
                );
            let out =
                tokio::spawn(
                    async move { with_transport!(client, |t| run_client(t, what, job).await) },
                )
                .await
                .unwrap_or_else(|e| Err(Skip::Absent(format!("client task: {e}"))));
            // The server ends when the client hangs up.
            let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
            out
        });
    }
    let server = spawn_server(server, serve);
    let out = run_as(caller, async move {
        with_transport!(client, |t| run_client(t, what, job).await)
    });
    join_or_leave(server, "xrpc server thread");
    out
}

/// Runs the client `fut` on a 2-worker multi-thread runtime, in the body of its `block_on`
/// (`Caller::Main`) or in a task spawned on it.
fn run_as<F>(caller: Caller, fut: F) -> Outcome
where
    F: std::future::Future<Output = Outcome> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let out = match caller {
        Caller::Main => rt.block_on(fut),
        Caller::Spawned | Caller::OneThread => rt
            .block_on(rt.spawn(fut))
            .unwrap_or_else(|e| Err(Skip::Absent(format!("client task: {e}")))),
    };
    rt.shutdown_timeout(Duration::from_secs(1));
    out
}

async fn run_client<T: FrameTransport>(t: T, what: What, job: Job) -> Outcome {
    match (what, job) {
        (What::Calls(caller), Job::RoundTrips(rec)) => {
            let client = RpcClient::new(MessageChannelAdapter::new(t));
            let m = rec
                .run_async(|i| {
                    let client = &client;
                    async move {
                        let r: Msg = client.call("echo", &Msg::new(i)).await.expect("call");
                        check_echo(i as u64, r.seq);
                    }
                })
                .await;
            let _ = caller;
            client.close().await;
            Ok(m)
        }
        (What::Calls(caller), Job::InFlight { k, calls }) => {
            let client = RpcClient::new(MessageChannelAdapter::new(t));
            // Warm up (and start the connection) before the span.
            let _: Msg = client.call("echo", &Msg::new(0)).await?;
            let span = Span::start();
            let per = calls.div_ceil(k);
            let one = |w: usize, client: RpcClient<_>| async move {
                for j in 0..per {
                    let i = w * per + j;
                    let r: Msg = client.call("echo", &Msg::new(i)).await.expect("call");
                    check_echo(i as u64, r.seq);
                }
            };
            match caller {
                Caller::Spawned | Caller::OneThread => {
                    let tasks: Vec<_> = (0..k)
                        .map(|w| tokio::spawn(one(w, client.clone())))
                        .collect();
                    for t in tasks {
                        t.await?;
                    }
                }
                Caller::Main => {
                    futures::future::join_all((0..k).map(|w| one(w, client.clone()))).await;
                }
            }
            let m = span.finish((per * k) as u64);
            client.close().await;
            Ok(m)
        }
        (What::Calls(_), Job::OneWay { .. }) => Err(Skip::NotApplicable),
        (What::Frames, Job::RoundTrips(rec)) => {
            let mut frame = Msg::new(0).to_bytes();
            let m = rec
                .run_async(|i| {
                    frame[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    let (t, frame) = (&t, frame);
                    async move {
                        t.send_frame(&frame).await.expect("send");
                        let r = t.recv_frame().await.expect("recv");
                        check_echo(i as u64, u64::from_le_bytes(r[..8].try_into().unwrap()));
                    }
                })
                .await;
            let _ = t.close().await;
            Ok(m)
        }
        (What::Frames, Job::InFlight { k, calls }) => {
            // A writer keeps `k` frames outstanding; the reader returns credit per answer.
            let t = Arc::new(t);
            let credit = Arc::new(tokio::sync::Semaphore::new(k));
            let span = Span::start();
            let writer = {
                let (t, credit) = (t.clone(), credit.clone());
                tokio::spawn(async move {
                    for i in 0..calls {
                        credit.acquire().await?.forget();
                        t.send_frame(&Msg::new(i).to_bytes()).await?;
                    }
                    Ok::<_, Skip>(())
                })
            };
            for i in 0..calls {
                let r = t.recv_frame().await?;
                check_echo(i as u64, u64::from_le_bytes(r[..8].try_into().unwrap()));
                credit.add_permits(1);
            }
            let m = span.finish(calls as u64);
            writer.await??;
            let _ = t.close().await;
            Ok(m)
        }
        (What::Frames, Job::OneWay { size, count }) => {
            let msg = vec![0xabu8; size];
            let (t, msg) = (&t, &msg);
            let m = one_way_laps_awaited(count, move || async move {
                for _ in 0..count {
                    t.send_frame(msg).await?;
                }
                t.recv_frame().await?;
                Ok(())
            })
            .await?;
            let _ = t.close().await;
            Ok(m)
        }
    }
}

impl Subject for XrpcTokio {
    fn name(&self) -> String {
        match self.what {
            What::Frames => format!("xrpc tokio frames · {}", self.net.name()),
            What::Calls(Caller::Spawned) => {
                format!("xrpc tokio call · {} (spawned)", self.net.name())
            }
            What::Calls(Caller::Main) => format!("xrpc tokio call · {} (main)", self.net.name()),
            What::Calls(Caller::OneThread) => {
                format!("xrpc tokio call · {} (one thread)", self.net.name())
            }
        }
    }
    fn group(&self) -> Group {
        Group::Xrpc
    }
    fn round_trips(&self, rec: Recorder) -> Outcome {
        let (serve, caller) = self.serve_and_caller();
        measure(self.net, serve, caller, self.what, Job::RoundTrips(rec))
    }
    fn in_flight(&self, k: usize, calls: usize) -> Outcome {
        let (serve, caller) = self.serve_and_caller();
        measure(
            self.net,
            serve,
            caller,
            self.what,
            Job::InFlight { k, calls },
        )
    }
    fn one_way(&self, size: usize, count: usize) -> Outcome {
        if self.what != What::Frames {
            return Err(Skip::NotApplicable);
        }
        measure(
            self.net,
            Serve::Sink(count),
            Caller::Spawned,
            self.what,
            Job::OneWay { size, count },
        )
    }
}

impl XrpcTokio {
    fn serve_and_caller(&self) -> (Serve, Caller) {
        match self.what {
            What::Frames => (Serve::Echo, Caller::Spawned),
            What::Calls(c) => (Serve::Calls, c),
        }
    }
}

/// A raw byte ping-pong on tokio sockets with the same runtime layout as the xrpc rows (server:
/// its own current-thread runtime; client: a spawned task on a 2-worker runtime, or the body of
/// its `block_on`): what an xrpc call on tokio from the same caller is compared with.
pub struct RawTokio {
    net: Net,
    caller: Caller,
}

impl RawTokio {
    fn run<F, Fut>(&self, client: F) -> Outcome
    where
        F: FnOnce(Box<dyn Io>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Outcome> + Send,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (c, s) = halves(self.net)?;
        let server = std::thread::spawn(move || -> Result<(), Skip> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut s = tokio::io::BufReader::new(to_io(s)?);
                let mut buf = [0u8; 32];
                while s.read_exact(&mut buf).await.is_ok() {
                    if s.write_all(&buf).await.is_err() {
                        break;
                    }
                }
                Ok(())
            })
        });
        let out = run_as(self.caller, async move { client(to_io(c)?).await });
        join_or_leave(server, "raw tokio server");
        out
    }
}

/// A tokio byte stream.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

fn to_io(h: Half) -> Result<Box<dyn Io>, Skip> {
    Ok(match h {
        Half::Unix(s) => {
            s.set_nonblocking(true)?;
            Box::new(tokio::net::UnixStream::from_std(s)?)
        }
        Half::Tcp(s) => {
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            Box::new(tokio::net::TcpStream::from_std(s)?)
        }
        _ => return Err(Skip::NotApplicable),
    })
}

impl Subject for RawTokio {
    fn name(&self) -> String {
        match self.caller {
            Caller::Main => format!("raw bytes · {} (tokio main)", self.net.name()),
            Caller::Spawned | Caller::OneThread => {
                format!("raw bytes · {} (tokio)", self.net.name())
            }
        }
    }
    fn group(&self) -> Group {
        Group::Baseline
    }
    fn round_trips(&self, rec: Recorder) -> Outcome {
        self.run(move |mut s| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut answer = [0u8; 32];
            for i in 0..rec.warmup {
                s.write_all(&Msg::new(i).to_bytes()).await?;
                s.read_exact(&mut answer).await?;
            }
            let mut samples = Vec::with_capacity(rec.calls);
            let span = Span::start();
            for i in rec.warmup..rec.warmup + rec.calls {
                let t = std::time::Instant::now();
                s.write_all(&Msg::new(i).to_bytes()).await?;
                s.read_exact(&mut answer).await?;
                samples.push(t.elapsed());
                check_echo(
                    i as u64,
                    u64::from_le_bytes(answer[..8].try_into().unwrap()),
                );
            }
            let mut m = span.finish(rec.calls as u64);
            m.samples = samples;
            Ok(m)
        })
    }
    fn in_flight(&self, k: usize, calls: usize) -> Outcome {
        self.run(move |s| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (r, mut w) = tokio::io::split(s);
            let mut r = tokio::io::BufReader::new(r);
            let credit = Arc::new(tokio::sync::Semaphore::new(k));
            let span = Span::start();
            let writer = {
                let credit = credit.clone();
                tokio::spawn(async move {
                    for i in 0..calls {
                        credit.acquire().await?.forget();
                        w.write_all(&Msg::new(i).to_bytes()).await?;
                    }
                    Ok::<_, Skip>(w)
                })
            };
            let mut answer = [0u8; 32];
            for i in 0..calls {
                r.read_exact(&mut answer).await?;
                check_echo(
                    i as u64,
                    u64::from_le_bytes(answer[..8].try_into().unwrap()),
                );
                credit.add_permits(1);
            }
            let m = span.finish(calls as u64);
            drop(writer.await??);
            Ok(m)
        })
    }
}
