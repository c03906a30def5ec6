//! The interop matrix (see `tests/common/interop.rs`): every client adapter × every server
//! adapter × {TCP, Unix, shared memory} — {tokio, smol, blocking}² × 3 = 27 cells.

#[path = "common/interop.rs"]
mod interop;

use std::sync::Arc;
use std::time::Duration;

use interop::{Adapter, AddRequest, AddResponse, ClientUnderTest, Transport, matrix};
use xrpc_async::RpcError;

/// Runs a future to completion on an adapter's executor.
trait BlockOn: Send + Sync + 'static {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output;
}

impl BlockOn for tokio::runtime::Runtime {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::runtime::Runtime::block_on(self, f)
    }
}

/// smol's executor (its global one runs the spawned tasks).
struct SmolExec;

impl BlockOn for SmolExec {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        smol::block_on(f)
    }
}

/// A client of an async adapter: its executor and a client over one transport.
struct AsyncClient<T: xrpc::MessageChannel, R: xrpc_async::Runtime, E: BlockOn> {
    exec: E,
    client: xrpc_async::RpcClient<T, xrpc::BincodeCodec, R>,
}

impl<T: xrpc::MessageChannel, R: xrpc_async::Runtime, E: BlockOn> ClientUnderTest
    for AsyncClient<T, R, E>
{
    fn add(&self, a: i32, b: i32) -> Result<i32, RpcError> {
        self.exec.block_on(async {
            let r: AddResponse = self.client.call("add", &AddRequest { a, b }).await?;
            Ok(r.result)
        })
    }

    fn count(&self, n: u32) -> Result<Vec<u32>, RpcError> {
        self.exec.block_on(async {
            let mut rx = self
                .client
                .call_server_stream::<_, u32>("count", &n)
                .await?;
            let mut items = Vec::new();
            while let Some(item) = rx.recv().await {
                items.push(item?);
            }
            Ok(items)
        })
    }

    fn sleep_ms(&self, ms: u64, timeout: Duration) -> Result<u64, RpcError> {
        self.exec
            .block_on(self.client.call_with_timeout("sleep_ms", &ms, timeout))
    }

    fn fail(&self, message: &str) -> Result<(), RpcError> {
        self.exec.block_on(self.client.call("fail", &message))
    }
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// An async adapter of the matrix: `$adapter` over crate `$krate` (the adapters share their
/// names), run by executor `$exec`, sleeping with `$sleep`.
macro_rules! async_adapter {
    ($adapter:ident, $name:literal, $krate:ident, $exec:expr, $sleep:path) => {
        struct $adapter;

        impl Adapter for $adapter {
            const NAME: &'static str = $name;

            fn serve(transport: Transport, addr: &str) {
                use $krate::*;
                let exec = $exec;
                exec.block_on(async {
                    let server = RpcServer::new();
                    server.register_typed("add", |r: AddRequest| async move {
                        Ok(AddResponse { result: r.a + r.b })
                    });
                    server.register_stream(
                        "count",
                        |n: u32, tx: ServerStreamSender<u32>| async move {
                            for i in 0..n {
                                tx.send(&i).await?;
                            }
                            Ok(())
                        },
                    );
                    server.register_typed("sleep_ms", |ms: u64| async move {
                        $sleep(Duration::from_millis(ms)).await;
                        Ok(ms)
                    });
                    server.register_typed("fail", |m: String| async move {
                        Err::<(), _>(RpcError::server(m))
                    });
                    let served = match transport {
                        Transport::Tcp => {
                            let l = TcpFrameTransportListener::bind(addr, TcpConfig::default())
                                .await
                                .unwrap();
                            println!("ready {}", l.local_addr().unwrap());
                            server.serve_listener(l).await
                        }
                        Transport::Unix => {
                            let l = UnixFrameTransportListener::bind(addr, UnixConfig::default())
                                .await
                                .unwrap();
                            println!("ready {addr}");
                            server.serve_listener(l).await
                        }
                        Transport::Shm => {
                            let l = SharedMemoryFrameTransportListener::bind(
                                addr,
                                SharedMemoryConfig::default(),
                            )
                            .unwrap();
                            println!("ready {addr}");
                            server.serve_listener(l).await
                        }
                    };
                    served.unwrap();
                });
            }

            fn connect(transport: Transport, addr: &str) -> Box<dyn ClientUnderTest + Send + Sync> {
                use $krate::*;
                fn boxed<T: MessageChannel, E: BlockOn>(
                    exec: E,
                    t: T,
                ) -> Box<dyn ClientUnderTest + Send + Sync> {
                    let client: RpcClient<T> = exec.block_on(async { RpcClient::new(t) });
                    Box::new(AsyncClient { exec, client })
                }
                let exec = $exec;
                match transport {
                    Transport::Tcp => {
                        let addr: std::net::SocketAddr = addr.parse().unwrap();
                        let t = exec
                            .block_on(TcpFrameTransport::connect(addr, TcpConfig::default()))
                            .unwrap();
                        boxed(exec, MessageChannelAdapter::new(t))
                    }
                    Transport::Unix => {
                        let t = exec
                            .block_on(UnixFrameTransport::connect(addr, UnixConfig::default()))
                            .unwrap();
                        boxed(exec, MessageChannelAdapter::new(t))
                    }
                    Transport::Shm => {
                        let t = exec
                            .block_on(SharedMemoryFrameTransport::connect(
                                addr,
                                SharedMemoryConfig::default(),
                            ))
                            .unwrap();
                        boxed(exec, MessageChannelAdapter::new(t))
                    }
                }
            }
        }
    };
}

async fn smol_sleep(d: Duration) {
    smol::Timer::after(d).await;
}

async_adapter!(Tokio, "tokio", xrpc, tokio_runtime(), tokio::time::sleep);
async_adapter!(Smol, "smol", xrpc_smol, SmolExec, smol_sleep);

/// The blocking adapter.
struct Blocking;

impl ClientUnderTest for xrpc_blocking::RpcClient {
    fn add(&self, a: i32, b: i32) -> Result<i32, RpcError> {
        let r: AddResponse = self.call("add", &AddRequest { a, b })?;
        Ok(r.result)
    }

    fn count(&self, n: u32) -> Result<Vec<u32>, RpcError> {
        self.call_server_stream::<_, u32>("count", &n)?.collect()
    }

    fn sleep_ms(&self, ms: u64, timeout: Duration) -> Result<u64, RpcError> {
        self.call_with_timeout("sleep_ms", &ms, timeout)
    }

    fn fail(&self, message: &str) -> Result<(), RpcError> {
        self.call("fail", &message)
    }
}

impl Adapter for Blocking {
    const NAME: &'static str = "blocking";

    fn serve(transport: Transport, addr: &str) {
        use xrpc_blocking::*;
        let server = RpcServer::new();
        server.register_typed("add", |r: AddRequest| Ok(AddResponse { result: r.a + r.b }));
        server.register_stream("count", |n: u32, tx: ServerStreamSender<u32>| {
            (0..n).try_for_each(|i| tx.send(&i))
        });
        server.register_typed("sleep_ms", |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok(ms)
        });
        server.register_typed("fail", |m: String| Err::<(), _>(RpcError::server(m)));
        let served = match transport {
            Transport::Tcp => {
                let l = TcpFrameTransportListener::bind(addr, TcpConfig::default()).unwrap();
                println!("ready {}", l.local_addr().unwrap());
                server.serve_listener(l)
            }
            Transport::Unix => {
                let l = UnixFrameTransportListener::bind(addr, UnixConfig::default()).unwrap();
                println!("ready {addr}");
                server.serve_listener(l)
            }
            Transport::Shm => {
                let l =
                    SharedMemoryFrameTransportListener::bind(addr, SharedMemoryConfig::default())
                        .unwrap();
                println!("ready {addr}");
                server.serve_listener(l)
            }
        };
        served.unwrap();
    }

    fn connect(transport: Transport, addr: &str) -> Box<dyn ClientUnderTest + Send + Sync> {
        use xrpc_blocking::*;
        Box::new(match transport {
            Transport::Tcp => {
                RpcClient::new(TcpFrameTransport::connect(addr, TcpConfig::default()).unwrap())
            }
            Transport::Unix => {
                RpcClient::new(UnixFrameTransport::connect(addr, UnixConfig::default()).unwrap())
            }
            Transport::Shm => RpcClient::new(
                SharedMemoryFrameTransport::connect(addr, SharedMemoryConfig::default()).unwrap(),
            ),
        })
    }
}

#[allow(dead_code)]
fn _assert_send_sync(_: Arc<dyn ClientUnderTest + Send + Sync>) {}

matrix! {
    tokio_to_tokio_over_tcp => Tokio, Tokio, Tcp;
    tokio_to_tokio_over_unix => Tokio, Tokio, Unix;
    tokio_to_tokio_over_shm => Tokio, Tokio, Shm;
    tokio_to_blocking_over_tcp => Tokio, Blocking, Tcp;
    tokio_to_blocking_over_unix => Tokio, Blocking, Unix;
    tokio_to_blocking_over_shm => Tokio, Blocking, Shm;
    blocking_to_tokio_over_tcp => Blocking, Tokio, Tcp;
    blocking_to_tokio_over_unix => Blocking, Tokio, Unix;
    blocking_to_tokio_over_shm => Blocking, Tokio, Shm;
    blocking_to_blocking_over_tcp => Blocking, Blocking, Tcp;
    blocking_to_blocking_over_unix => Blocking, Blocking, Unix;
    blocking_to_blocking_over_shm => Blocking, Blocking, Shm;
    smol_to_smol_over_tcp => Smol, Smol, Tcp;
    smol_to_smol_over_unix => Smol, Smol, Unix;
    smol_to_smol_over_shm => Smol, Smol, Shm;
    smol_to_tokio_over_tcp => Smol, Tokio, Tcp;
    smol_to_tokio_over_unix => Smol, Tokio, Unix;
    smol_to_tokio_over_shm => Smol, Tokio, Shm;
    tokio_to_smol_over_tcp => Tokio, Smol, Tcp;
    tokio_to_smol_over_unix => Tokio, Smol, Unix;
    tokio_to_smol_over_shm => Tokio, Smol, Shm;
    smol_to_blocking_over_tcp => Smol, Blocking, Tcp;
    smol_to_blocking_over_unix => Smol, Blocking, Unix;
    smol_to_blocking_over_shm => Smol, Blocking, Shm;
    blocking_to_smol_over_tcp => Blocking, Smol, Tcp;
    blocking_to_smol_over_unix => Blocking, Smol, Unix;
    blocking_to_smol_over_shm => Blocking, Smol, Shm;
}
