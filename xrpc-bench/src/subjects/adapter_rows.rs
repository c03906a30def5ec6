//! xrpc's other adapters, beside the tokio rows: typed calls over shared memory, Unix and TCP
//! with the blocking adapter (no runtime: the calling thread drives the connection) and with
//! the smol adapter (calls in the body of `smol::block_on`). The server is the same adapter's,
//! on its own thread (as another process would be).

use std::time::Duration;

use super::{Group, Msg, Outcome, Skip, Subject, check_echo};
use crate::measure::{Recorder, Span};

/// The rows of this module.
pub fn rows() -> Vec<Box<dyn Subject>> {
    let mut rows: Vec<Box<dyn Subject>> = Vec::new();
    for net in [Net::Shm, Net::Unix, Net::Tcp] {
        rows.push(Box::new(Blocking(net)));
    }
    for net in [Net::Shm, Net::Unix, Net::Tcp] {
        rows.push(Box::new(Smol(net)));
    }
    rows
}

/// Which transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// Shared memory.
    Shm,
    /// A Unix socket.
    Unix,
    /// TCP on loopback.
    Tcp,
}

impl Net {
    fn name(self) -> &'static str {
        match self {
            Net::Shm => "shm",
            Net::Unix => "unix",
            Net::Tcp => "tcp",
        }
    }

    /// A fresh address of this kind: a service name, a socket path, or loopback port 0.
    fn address(self) -> String {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self {
            Net::Shm => format!("xrpc-bench-{}-a{n}", std::process::id()),
            Net::Unix => std::env::temp_dir()
                .join(format!("xrpc-bench-{}-a{n}.sock", std::process::id()))
                .display()
                .to_string(),
            Net::Tcp => "127.0.0.1:0".to_string(),
        }
    }
}

/// Runs `k` workers of `per` calls each (`call(i)` for the worker's share of `0..k * per`).
fn workers(k: usize, calls: usize, call: impl Fn(usize) + Sync) -> Outcome {
    let per = calls.div_ceil(k);
    let span = Span::start();
    std::thread::scope(|s| {
        for w in 0..k {
            let call = &call;
            s.spawn(move || (w * per..(w + 1) * per).for_each(call));
        }
    });
    Ok(span.finish((per * k) as u64))
}

/// The blocking adapter: `xrpc_blocking::RpcClient::call` from the measuring thread.
pub struct Blocking(Net);

impl Blocking {
    fn run(&self, job: impl FnOnce(&xrpc_blocking::RpcClient) -> Outcome) -> Outcome {
        use xrpc_blocking::*;
        let server = RpcServer::new();
        server.register_typed("echo", |m: Msg| Ok(m));
        let addr = self.0.address();
        let (tx, rx) = std::sync::mpsc::channel();
        let srv = server.clone();
        let net = self.0;
        let thread = std::thread::spawn(move || -> Result<(), RpcError> {
            match net {
                Net::Shm => {
                    let l = SharedMemoryFrameTransportListener::bind(
                        &addr,
                        SharedMemoryConfig::default(),
                    )?;
                    let _ = tx.send(addr);
                    srv.serve_listener(l)
                }
                Net::Unix => {
                    let l = UnixFrameTransportListener::bind(&addr, UnixConfig::default())?;
                    let _ = tx.send(addr);
                    srv.serve_listener(l)
                }
                Net::Tcp => {
                    let l = TcpFrameTransportListener::bind(addr.as_str(), TcpConfig::default())?;
                    let _ = tx.send(l.local_addr()?.to_string());
                    srv.serve_listener(l)
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| Skip::Absent("the blocking server did not start".into()))?;
        let client = match self.0 {
            Net::Shm => RpcClient::new(SharedMemoryFrameTransport::connect(
                &addr,
                SharedMemoryConfig::default(),
            )?),
            Net::Unix => RpcClient::new(UnixFrameTransport::connect(&addr, UnixConfig::default())?),
            Net::Tcp => RpcClient::new(TcpFrameTransport::connect(&addr, TcpConfig::default())?),
        };
        let out = job(&client);
        drop(client);
        server.shutdown();
        let _ = thread.join();
        if self.0 == Net::Unix {
            let _ = std::fs::remove_file(&addr);
        }
        out
    }
}

impl Subject for Blocking {
    fn name(&self) -> String {
        format!("xrpc blocking call · {}", self.0.name())
    }
    fn group(&self) -> Group {
        Group::Xrpc
    }
    fn round_trips(&self, rec: Recorder) -> Outcome {
        self.run(|client| {
            Ok(rec.run(|i| {
                let r: Msg = client.call("echo", &Msg::new(i)).expect("call");
                check_echo(i as u64, r.seq);
            }))
        })
    }
    fn in_flight(&self, k: usize, calls: usize) -> Outcome {
        // One thread per call in flight, all on one client (a blocking caller waits).
        self.run(|client| {
            workers(k, calls, |i| {
                let r: Msg = client.call("echo", &Msg::new(i)).expect("call");
                check_echo(i as u64, r.seq);
            })
        })
    }
}

/// The smol adapter: `RpcClient::call` in the body of `smol::block_on`.
pub struct Smol(Net);

/// What a smol client measures.
#[derive(Clone, Copy)]
enum Job {
    RoundTrips(Recorder),
    InFlight { k: usize, calls: usize },
}

/// Runs `job` with a smol client over `t`.
async fn smol_client<T: xrpc_smol::MessageChannel>(t: T, job: Job) -> Outcome {
    let client: xrpc_smol::RpcClient<T> = xrpc_smol::RpcClient::new(t);
    let out = match job {
        Job::RoundTrips(rec) => Ok(rec
            .run_async(|i| {
                let client = &client;
                async move {
                    let r: Msg = client.call("echo", &Msg::new(i)).await.expect("call");
                    check_echo(i as u64, r.seq);
                }
            })
            .await),
        Job::InFlight { k, calls } => {
            let _: Msg = client.call("echo", &Msg::new(0)).await?;
            let per = calls.div_ceil(k);
            let span = Span::start();
            let one = |w: usize| {
                let client = &client;
                async move {
                    for i in w * per..(w + 1) * per {
                        let r: Msg = client.call("echo", &Msg::new(i)).await.expect("call");
                        check_echo(i as u64, r.seq);
                    }
                }
            };
            futures::future::join_all((0..k).map(one)).await;
            Ok(span.finish((per * k) as u64))
        }
    };
    client.close().await;
    out
}

impl Smol {
    fn run(&self, job: Job) -> Outcome {
        use xrpc_smol::*;
        let server = RpcServer::new();
        server.register_typed("echo", |m: Msg| async move { Ok(m) });
        let addr = self.0.address();
        let (tx, rx) = std::sync::mpsc::channel();
        let srv = server.clone();
        let net = self.0;
        let thread = std::thread::spawn(move || {
            smol::block_on(async move {
                match net {
                    Net::Shm => {
                        let l = SharedMemoryFrameTransportListener::bind(
                            &addr,
                            SharedMemoryConfig::default(),
                        )?;
                        let _ = tx.send(addr);
                        srv.serve_listener(l).await
                    }
                    Net::Unix => {
                        let l =
                            UnixFrameTransportListener::bind(&addr, UnixConfig::default()).await?;
                        let _ = tx.send(addr);
                        srv.serve_listener(l).await
                    }
                    Net::Tcp => {
                        let l =
                            TcpFrameTransportListener::bind(addr.as_str(), TcpConfig::default())
                                .await?;
                        let _ = tx.send(l.local_addr()?.to_string());
                        srv.serve_listener(l).await
                    }
                }
            })
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| Skip::Absent("the smol server did not start".into()))?;
        let out = smol::block_on(async {
            match self.0 {
                Net::Shm => {
                    let t =
                        SharedMemoryFrameTransport::connect(&addr, SharedMemoryConfig::default())
                            .await?;
                    smol_client(MessageChannelAdapter::new(t), job).await
                }
                Net::Unix => {
                    let t = UnixFrameTransport::connect(&addr, UnixConfig::default()).await?;
                    smol_client(MessageChannelAdapter::new(t), job).await
                }
                Net::Tcp => {
                    let a: std::net::SocketAddr = addr.parse()?;
                    let t = TcpFrameTransport::connect(a, TcpConfig::default()).await?;
                    smol_client(MessageChannelAdapter::new(t), job).await
                }
            }
        });
        server.shutdown();
        let _ = thread.join();
        if self.0 == Net::Unix {
            let _ = std::fs::remove_file(&addr);
        }
        out
    }
}

impl Subject for Smol {
    fn name(&self) -> String {
        format!("xrpc smol call · {} (main)", self.0.name())
    }
    fn group(&self) -> Group {
        Group::Xrpc
    }
    fn round_trips(&self, rec: Recorder) -> Outcome {
        self.run(Job::RoundTrips(rec))
    }
    fn in_flight(&self, k: usize, calls: usize) -> Outcome {
        self.run(Job::InFlight { k, calls })
    }
}
