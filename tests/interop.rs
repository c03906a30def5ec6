//! The interop matrix (see `tests/common/interop.rs`): every client adapter × every server
//! adapter × {TCP, Unix, shared memory}.

#[path = "common/interop.rs"]
mod interop;

use std::sync::Arc;
use std::time::Duration;

use interop::{Adapter, AddRequest, AddResponse, ClientUnderTest, Transport, matrix};
use xrpc_async::RpcError;

/// The tokio adapter (`xrpc` re-exports it).
struct Tokio;

/// A tokio client: a runtime of its own and a client over one transport.
struct TokioClient<T: xrpc::MessageChannel> {
    rt: tokio::runtime::Runtime,
    client: xrpc::RpcClient<T>,
}

impl<T: xrpc::MessageChannel> ClientUnderTest for TokioClient<T> {
    fn add(&self, a: i32, b: i32) -> Result<i32, RpcError> {
        self.rt.block_on(async {
            let r: AddResponse = self.client.call("add", &AddRequest { a, b }).await?;
            Ok(r.result)
        })
    }

    fn count(&self, n: u32) -> Result<Vec<u32>, RpcError> {
        self.rt.block_on(async {
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
        self.rt
            .block_on(self.client.call_with_timeout("sleep_ms", &ms, timeout))
    }

    fn fail(&self, message: &str) -> Result<(), RpcError> {
        self.rt.block_on(self.client.call("fail", &message))
    }
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

impl Adapter for Tokio {
    const NAME: &'static str = "tokio";

    fn serve(transport: Transport, addr: &str) {
        use xrpc::*;
        let rt = tokio_runtime();
        rt.block_on(async {
            let server = RpcServer::new();
            server.register_typed("add", |r: AddRequest| async move {
                Ok(AddResponse { result: r.a + r.b })
            });
            server.register_stream("count", |n: u32, tx: ServerStreamSender<u32>| async move {
                for i in 0..n {
                    tx.send(&i).await?;
                }
                Ok(())
            });
            server.register_typed("sleep_ms", |ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(ms)
            });
            server.register_typed("fail", |m: String| async move {
                Err::<(), _>(RpcError::server(m))
            });
            let served = match transport {
                Transport::Tcp => {
                    let l = TcpFrameTransportListener::bind(
                        addr.parse::<std::net::SocketAddr>().unwrap(),
                        TcpConfig::default(),
                    )
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
        use xrpc::*;
        let rt = tokio_runtime();
        fn boxed<T: MessageChannel>(
            rt: tokio::runtime::Runtime,
            t: T,
        ) -> Box<dyn ClientUnderTest + Send + Sync> {
            let client = rt.block_on(async { RpcClient::new(t) });
            Box::new(TokioClient { rt, client })
        }
        match transport {
            Transport::Tcp => {
                let t = rt
                    .block_on(TcpFrameTransport::connect(
                        addr.parse().unwrap(),
                        TcpConfig::default(),
                    ))
                    .unwrap();
                boxed(rt, MessageChannelAdapter::new(t))
            }
            Transport::Unix => {
                let t = rt
                    .block_on(UnixFrameTransport::connect(addr, UnixConfig::default()))
                    .unwrap();
                boxed(rt, MessageChannelAdapter::new(t))
            }
            Transport::Shm => {
                let t = rt
                    .block_on(SharedMemoryFrameTransport::connect(
                        addr,
                        SharedMemoryConfig::default(),
                    ))
                    .unwrap();
                boxed(rt, MessageChannelAdapter::new(t))
            }
        }
    }
}

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
}
