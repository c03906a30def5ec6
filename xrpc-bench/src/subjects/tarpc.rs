//! tarpc 0.38 on tokio, over TCP loopback and a Unix socket pair: a `#[tarpc::service]` with
//! `echo(Msg) -> Msg`, a `BaseChannel` server on its own thread and current-thread runtime, the
//! client in a spawned task on a 2-worker runtime (the layout of the xrpc tokio rows), over
//! `serde_transport::new(Framed<_, LengthDelimitedCodec>, Bincode)` — what
//! `serde_transport::tcp::connect` builds.

use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tarpc::server::Channel as _;
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::baseline::join_or_leave;
use super::{Group, Msg, Outcome, Skip, Subject, check_echo};
use crate::measure::{Recorder, Span};

/// The rows of this module.
pub fn rows() -> Vec<Box<dyn Subject>> {
    vec![
        Box::new(Tarpc { tcp: true }),
        Box::new(Tarpc { tcp: false }),
    ]
}

/// The tarpc version of the service.
#[tarpc::service]
trait Echo {
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

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

fn transport<S: Io, In, Out>(s: S) -> impl tarpc::Transport<Out, In>
where
    In: for<'de> Deserialize<'de>,
    Out: Serialize,
{
    tarpc::serde_transport::new(
        Framed::new(s, LengthDelimitedCodec::new()),
        Bincode::default(),
    )
}

enum Sock {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Sock {
    /// The tokio stream of this socket; call inside a runtime.
    fn into_io(self) -> std::io::Result<Box<dyn Io>> {
        Ok(match self {
            Sock::Tcp(s) => {
                s.set_nonblocking(true)?;
                s.set_nodelay(true)?;
                Box::new(tokio::net::TcpStream::from_std(s)?)
            }
            Sock::Unix(s) => {
                s.set_nonblocking(true)?;
                Box::new(tokio::net::UnixStream::from_std(s)?)
            }
        })
    }
}

impl Tarpc {
    fn pair(&self) -> std::io::Result<(Sock, Sock)> {
        if self.tcp {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            let c = std::net::TcpStream::connect(l.local_addr()?)?;
            let (s, _) = l.accept()?;
            Ok((Sock::Tcp(c), Sock::Tcp(s)))
        } else {
            let (c, s) = std::os::unix::net::UnixStream::pair()?;
            Ok((Sock::Unix(c), Sock::Unix(s)))
        }
    }

    /// Runs `client` against a tarpc server on a fresh connection.
    fn run<F, Fut>(&self, body: F) -> Outcome
    where
        F: FnOnce(EchoClient) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Outcome> + Send,
    {
        let (c, s) = self.pair()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || -> Result<(), Skip> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let serve = tarpc::server::BaseChannel::with_defaults(transport(s.into_io()?))
                    .execute(EchoServer.serve())
                    .for_each(|resp| async move {
                        tokio::spawn(resp);
                    });
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
                Ok(())
            })
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let out = rt
            .block_on(rt.spawn(async move {
                let io = c.into_io()?;
                let client =
                    EchoClient::new(tarpc::client::Config::default(), transport(io)).spawn();
                body(client).await
            }))
            .unwrap_or_else(|e| Err(Skip::Absent(format!("client task: {e}"))));
        rt.shutdown_timeout(Duration::from_secs(1));
        let _ = stop.send(());
        join_or_leave(server, "tarpc server");
        out
    }
}

impl Subject for Tarpc {
    fn name(&self) -> String {
        format!(
            "tarpc · {} (spawned)",
            if self.tcp { "tcp" } else { "unix" }
        )
    }
    fn group(&self) -> Group {
        Group::Peer
    }
    fn round_trips(&self, rec: Recorder) -> Outcome {
        self.run(move |client| async move {
            let m = rec
                .run_async(|i| {
                    let client = &client;
                    async move {
                        let r = client
                            .echo(tarpc::context::current(), Msg::new(i))
                            .await
                            .expect("tarpc call");
                        check_echo(i as u64, r.seq);
                    }
                })
                .await;
            Ok(m)
        })
    }
    fn in_flight(&self, k: usize, calls: usize) -> Outcome {
        self.run(move |client| async move {
            client.echo(tarpc::context::current(), Msg::new(0)).await?;
            let per = calls.div_ceil(k);
            let span = Span::start();
            let tasks: Vec<_> = (0..k)
                .map(|w| {
                    let client = client.clone();
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
