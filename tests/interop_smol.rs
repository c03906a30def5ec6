//! Interop between the adapters: a smol client calls a tokio server and a tokio client calls
//! a smol server, over TCP, Unix and shared memory. Each side runs on its own executor on its
//! own thread (the server's `block_on` on a thread of its own, the client's on the test's).
//! One body for every cell: a unary call, a remote error, a server stream.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use xrpc_async::{MessageChannel, RpcError, RpcServer, Runtime};
use xrpc_proto::BincodeCodec;
use xrpc_shm::testing::unique_name;

#[derive(Debug, Serialize, Deserialize)]
struct AddRequest {
    a: i32,
    b: i32,
}

#[derive(Debug, Serialize, Deserialize)]
struct AddResponse {
    result: i32,
}

/// Where a server listens.
#[derive(Debug, Clone, Copy)]
enum Net {
    Tcp,
    Unix,
    Shm,
}

/// A listening server's address.
#[derive(Debug, Clone)]
enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Shm(String),
}

/// A server running on a thread of its own.
struct Served<R: Runtime> {
    endpoint: Addr,
    server: RpcServer<BincodeCodec, R>,
    thread: JoinHandle<()>,
}

impl<R: Runtime> Served<R> {
    fn stop(self) {
        self.server.shutdown();
        self.thread.join().expect("the server thread ends cleanly");
    }
}

fn server<R: Runtime>() -> RpcServer<BincodeCodec, R> {
    let server = RpcServer::new();
    server.register_typed("add", |req: AddRequest| async move {
        Ok(AddResponse {
            result: req.a + req.b,
        })
    });
    server.register_typed("fail", |msg: String| async move {
        Err::<(), _>(RpcError::server(msg))
    });
    server.register_stream(
        "count",
        |n: u32, tx: xrpc_async::ServerStreamSender<u32>| async move {
            for i in 0..n {
                tx.send(&i).await?;
            }
            Ok(())
        },
    );
    server
}

/// The client's side of every cell.
async fn calls<T: MessageChannel, R: Runtime>(client: xrpc_async::RpcClient<T, BincodeCodec, R>) {
    let _driver = client.start();
    let resp: AddResponse = client
        .call("add", &AddRequest { a: 20, b: 22 })
        .await
        .unwrap();
    assert_eq!(resp.result, 42);
    match client.call::<_, ()>("fail", &"across".to_string()).await {
        Err(RpcError::ServerError { message, .. }) => assert_eq!(message, "across"),
        other => panic!("expected the handler's error, got {other:?}"),
    }
    let items = client
        .call_server_stream::<_, u32>("count", &1_000u32)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(items, (0..1_000).collect::<Vec<_>>());
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// An async block that binds `$net` with adapter `$adapter`'s listener, sends the endpoint on
/// `$tx` and serves with `$srv` until it is shut down.
macro_rules! listen_and_serve {
    ($adapter:ident, $net:expr, $srv:expr, $tx:expr) => {
        async move {
            use $adapter::*;
            let (net, srv, tx) = ($net, $srv, $tx);
            match net {
                Net::Tcp => {
                    let l = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default())
                        .await
                        .unwrap();
                    tx.send(Addr::Tcp(l.local_addr().unwrap())).unwrap();
                    srv.serve_listener(l).await
                }
                Net::Unix => {
                    let path = std::env::temp_dir().join(unique_name("interop.sock"));
                    let l = UnixFrameTransportListener::bind(&path, UnixConfig::default())
                        .await
                        .unwrap();
                    tx.send(Addr::Unix(path)).unwrap();
                    srv.serve_listener(l).await
                }
                Net::Shm => {
                    let name = unique_name("interop");
                    let config = SharedMemoryConfig::default();
                    let l = SharedMemoryFrameTransportListener::bind(&name, config).unwrap();
                    tx.send(Addr::Shm(name)).unwrap();
                    srv.serve_listener(l).await
                }
            }
            .unwrap()
        }
    };
}

/// An async block that connects to `$endpoint` with adapter `$adapter`'s transport and runs
/// [`calls`] over it.
macro_rules! connect_and_call {
    ($adapter:ident, $endpoint:expr) => {
        async {
            use $adapter::*;
            match $endpoint {
                Addr::Tcp(addr) => {
                    let t = TcpFrameTransport::connect(*addr, TcpConfig::default()).await;
                    calls(RpcClient::new(MessageChannelAdapter::new(t.unwrap()))).await
                }
                Addr::Unix(path) => {
                    let t = UnixFrameTransport::connect(path, UnixConfig::default()).await;
                    calls(RpcClient::new(MessageChannelAdapter::new(t.unwrap()))).await
                }
                Addr::Shm(name) => {
                    let t =
                        SharedMemoryFrameTransport::connect(name, SharedMemoryConfig::default());
                    calls(RpcClient::new(MessageChannelAdapter::new(t.await.unwrap()))).await
                }
            }
        }
    };
}

/// Serves on tokio, on a thread of its own, until stopped.
fn serve_on_tokio(net: Net) -> Served<xrpc::Tokio> {
    let server = server::<xrpc::Tokio>();
    let (tx, rx) = mpsc::channel();
    let srv = server.clone();
    let thread =
        std::thread::spawn(move || tokio_runtime().block_on(listen_and_serve!(xrpc, net, srv, tx)));
    let endpoint = rx.recv().expect("the server listens");
    Served {
        endpoint,
        server,
        thread,
    }
}

/// Serves on smol, on a thread of its own, until stopped.
fn serve_on_smol(net: Net) -> Served<xrpc_smol::Smol> {
    let server = server::<xrpc_smol::Smol>();
    let (tx, rx) = mpsc::channel();
    let srv = server.clone();
    let thread =
        std::thread::spawn(move || smol::block_on(listen_and_serve!(xrpc_smol, net, srv, tx)));
    let endpoint = rx.recv().expect("the server listens");
    Served {
        endpoint,
        server,
        thread,
    }
}

/// A smol client (under `smol::block_on`) calls `endpoint`.
fn smol_client(endpoint: &Addr) {
    smol::block_on(connect_and_call!(xrpc_smol, endpoint))
}

/// A tokio client (on a runtime of its own) calls `endpoint`.
fn tokio_client(endpoint: &Addr) {
    tokio_runtime().block_on(connect_and_call!(xrpc, endpoint))
}

#[test]
fn smol_client_tokio_server_tcp() {
    let served = serve_on_tokio(Net::Tcp);
    smol_client(&served.endpoint);
    served.stop();
}

#[test]
fn smol_client_tokio_server_unix() {
    let served = serve_on_tokio(Net::Unix);
    smol_client(&served.endpoint);
    served.stop();
}

#[test]
fn smol_client_tokio_server_shm() {
    let served = serve_on_tokio(Net::Shm);
    smol_client(&served.endpoint);
    served.stop();
}

#[test]
fn tokio_client_smol_server_tcp() {
    let served = serve_on_smol(Net::Tcp);
    tokio_client(&served.endpoint);
    served.stop();
}

#[test]
fn tokio_client_smol_server_unix() {
    let served = serve_on_smol(Net::Unix);
    tokio_client(&served.endpoint);
    served.stop();
}

#[test]
fn tokio_client_smol_server_shm() {
    let served = serve_on_smol(Net::Shm);
    tokio_client(&served.endpoint);
    served.stop();
}
