//! tarpc 0.38 as its example service runs: two processes, each on a multi-thread tokio runtime
//! with the default number of workers (what `#[tokio::main]` builds). The server process (this
//! binary re-executed with `--serve-tarpc tcp|unix`) serves each connection with
//! `BaseChannel::with_defaults(..).execute(EchoServer.serve())`, every request in a spawned
//! task; the client (the row's process) builds `EchoClient::new(client::Config::default(), ..)`
//! and calls in the body of `block_on`, as the example's `main` does. The service is
//! `echo(Msg) -> Msg` over `serde_transport::{tcp, unix}::{listen, connect}` with the bincode
//! format (the example uses JSON; the payload here is binary), their default socket settings.

use std::sync::Arc;

use futures::StreamExt;
use tarpc::server::Channel as _;
use tarpc::tokio_serde::formats::Bincode;

use super::{Group, Msg, Outcome, Skip, Subject, check_echo};
use crate::measure::{Recorder, Span, other_process_cpu};
use crate::process::{ServerProcess, on_parent_gone};

/// The argument that turns this binary into the tarpc server.
pub const SERVE_ARG: &str = "--serve-tarpc";

/// The rows of this module.
pub fn rows() -> Vec<Box<dyn Subject>> {
    vec![
        Box::new(Tarpc { tcp: true }),
        Box::new(Tarpc { tcp: false }),
    ]
}

/// The tarpc version of the service.
#[tarpc::service]
pub trait Echo {
    /// Returns its argument.
    async fn echo(m: Msg) -> Msg;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: tarpc::context::Context, m: Msg) -> Msg {
        m
    }
}

/// A tarpc row.
struct Tarpc {
    tcp: bool,
}

/// The server process (`args`: `tcp`, or `unix` and a socket path): listens with
/// `serde_transport::{tcp, unix}::listen` as the example service does, prints
/// `ready <address>` and serves every connection until its parent is gone.
pub fn serve(args: &[String]) -> Result<(), Skip> {
    on_parent_gone(|| std::process::exit(0));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match args.first().map(String::as_str) {
            Some("unix") => {
                let path = args.get(1).ok_or("no socket path")?;
                let _ = std::fs::remove_file(path);
                let incoming = tarpc::serde_transport::unix::listen(path, Bincode::default).await?;
                println!("ready {path}");
                serve_all(incoming).await;
            }
            _ => {
                let incoming =
                    tarpc::serde_transport::tcp::listen("127.0.0.1:0", Bincode::default).await?;
                println!("ready {}", incoming.local_addr());
                serve_all(incoming).await;
            }
        }
        Ok(())
    })
}

/// Serves every connection of `incoming` as the example service does: a `BaseChannel` with
/// defaults per connection, every request in a spawned task.
async fn serve_all<T, E>(incoming: impl futures::Stream<Item = Result<T, E>>)
where
    T: tarpc::Transport<tarpc::Response<EchoResponse>, tarpc::ClientMessage<EchoRequest>>
        + Send
        + 'static,
{
    incoming
        .filter_map(|r| std::future::ready(r.ok()))
        .map(tarpc::server::BaseChannel::with_defaults)
        .map(|channel| {
            channel
                .execute(EchoServer.serve())
                .for_each(|resp| async move {
                    tokio::spawn(resp);
                })
        })
        .buffer_unordered(10)
        .for_each(|_| async {})
        .await;
}

/// A tarpc server process and a client of it, on this process's runtime.
pub struct Session {
    /// The client (made inside the runtime).
    pub client: EchoClient,
    server: ServerProcess,
    /// The socket path to remove at the end (Unix).
    path: Option<std::path::PathBuf>,
}

impl Session {
    /// Starts a server process and connects to it; call inside the client's runtime.
    pub async fn start(tcp: bool) -> Result<Self, Skip> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let config = tarpc::client::Config::default();
        let (server, path, client) = if tcp {
            let server = ServerProcess::start(&[SERVE_ARG, "tcp"])?;
            let t = tarpc::serde_transport::tcp::connect(server.ready.as_str(), Bincode::default)
                .await?;
            (server, None, EchoClient::new(config, t).spawn())
        } else {
            let path = std::env::temp_dir()
                .join(format!("xrpc-bench-tarpc-{}-{n}.sock", std::process::id()));
            let p = path.to_string_lossy().into_owned();
            let server = ServerProcess::start(&[SERVE_ARG, "unix", &p])?;
            let t = tarpc::serde_transport::unix::connect(&path, Bincode::default).await?;
            (server, Some(path), EchoClient::new(config, t).spawn())
        };
        Ok(Session {
            client,
            server,
            path,
        })
    }

    /// CPU time of the server process so far.
    pub fn server_cpu(&self) -> std::time::Duration {
        other_process_cpu(self.server.id()).unwrap_or_default()
    }

    /// One call.
    pub async fn call(&self, i: usize) -> Result<Msg, Skip> {
        Ok(self
            .client
            .echo(tarpc::context::current(), Msg::new(i))
            .await?)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Tarpc {
    /// Runs `body` in the body of `block_on` of a default multi-thread runtime (what
    /// `#[tokio::main]` builds), with a fresh server process.
    fn run<F, Fut>(&self, body: F) -> Outcome
    where
        F: FnOnce(Arc<Session>) -> Fut,
        Fut: std::future::Future<Output = Outcome>,
    {
        let rt = tokio::runtime::Runtime::new()?;
        let tcp = self.tcp;
        let out = rt.block_on(async move {
            let s = Arc::new(Session::start(tcp).await?);
            let cpu0 = s.server_cpu();
            let mut m = body(s.clone()).await?;
            // CPU per call counts both processes.
            m.cpu += s.server_cpu().saturating_sub(cpu0);
            Ok(m)
        });
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
        out
    }
}

impl Subject for Tarpc {
    fn name(&self) -> String {
        format!(
            "tarpc · {} (2 processes)",
            if self.tcp { "tcp" } else { "unix" }
        )
    }
    fn group(&self) -> Group {
        Group::Peer
    }
    fn alone_program(&self) -> Option<&'static str> {
        Some(if self.tcp { "tarpc-tcp" } else { "tarpc-unix" })
    }
    fn round_trips(&self, rec: Recorder) -> Outcome {
        self.run(move |s| async move {
            let m = rec
                .run_async(|i| {
                    let s = &s;
                    async move {
                        let r = s.call(i).await.expect("tarpc call");
                        check_echo(i as u64, r.seq);
                    }
                })
                .await;
            Ok(m)
        })
    }
    fn in_flight(&self, k: usize, calls: usize) -> Outcome {
        self.run(move |s| async move {
            s.call(0).await?;
            let per = calls.div_ceil(k);
            let span = Span::start();
            let tasks: Vec<_> = (0..k)
                .map(|w| {
                    let client = s.client.clone();
                    tokio::spawn(async move {
                        for j in 0..per {
                            let i = w * per + j;
                            let r = client.echo(tarpc::context::current(), Msg::new(i)).await?;
                            check_echo(i as u64, r.seq);
                        }
                        Ok::<_, Skip>(())
                    })
                })
                .collect();
            for t in tasks {
                t.await??;
            }
            Ok(span.finish((per * k) as u64))
        })
    }
}
