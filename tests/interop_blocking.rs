//! The blocking adapter (`xrpc-blocking`) and the tokio adapter speak the same wire format: a
//! blocking client calls the tokio server, and a tokio client calls the blocking server, over
//! TCP, Unix sockets and shared memory. One body (`calls`) runs against every pairing.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use xrpc::{MessageChannel, MessageChannelAdapter, RpcError};
use xrpc_shm::testing::unique_name;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tcp,
    Unix,
    Shm,
}

/// Where a server listens.
#[derive(Debug, Clone)]
enum Addr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
    Shm(String),
}

/// What the body asks of a client, whichever adapter it is.
trait Caller {
    fn add(&self, a: i64, b: i64) -> Result<i64, RpcError>;
    fn count(&self, n: u32) -> Result<Vec<u32>, RpcError>;
    fn sleep(&self, ms: u64, timeout: Duration) -> Result<(), RpcError>;
    fn fail(&self, message: &str) -> Result<(), RpcError>;
}

/// The behaviours: a unary call, a server stream of 10,000 items, a timeout, a remote error.
fn calls(c: &dyn Caller) {
    assert_eq!(c.add(40, 2).unwrap(), 42);
    let items = c.count(10_000).unwrap();
    assert_eq!(items.len(), 10_000);
    assert!(items.iter().enumerate().all(|(i, &v)| v as usize == i));
    let t0 = Instant::now();
    let r = c.sleep(400, Duration::from_millis(50));
    assert!(matches!(r, Err(RpcError::Timeout)), "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(350),
        "{:?}",
        t0.elapsed()
    );
    let r = c.fail("refused");
    assert!(
        matches!(&r, Err(RpcError::ServerError { message, .. }) if message == "refused"),
        "{r:?}"
    );
    assert_eq!(c.add(1, 1).unwrap(), 2, "the connection survives all that");
}

// ---- the blocking side ------------------------------------------------------------------

mod blocking {
    use super::*;
    use xrpc_blocking::{
        FrameListener, RequestStream, RpcClient, RpcServer, ServerStreamSender, SharedMemoryConfig,
        SharedMemoryFrameTransport, SharedMemoryFrameTransportListener, TcpConfig,
        TcpFrameTransport, TcpFrameTransportListener, UnixConfig, UnixFrameTransport,
        UnixFrameTransportListener,
    };

    impl Caller for RpcClient {
        fn add(&self, a: i64, b: i64) -> Result<i64, RpcError> {
            self.call("add", &(a, b))
        }
        fn count(&self, n: u32) -> Result<Vec<u32>, RpcError> {
            self.call_server_stream::<_, u32>("count", &n)?.collect()
        }
        fn sleep(&self, ms: u64, timeout: Duration) -> Result<(), RpcError> {
            self.call_with_timeout("sleep", &ms, timeout)
        }
        fn fail(&self, message: &str) -> Result<(), RpcError> {
            self.call("fail", message)
        }
    }

    /// Client streams (1,000 items, more than the credit window) and bidirectional streams.
    pub fn streams(client: &RpcClient) {
        let (items, response) = client.call_client_stream::<u64, u64>("sum").unwrap();
        if let Err(e) = (1..=1000u64).try_for_each(|i| items.send(&i)) {
            panic!("send: {e:?}; the call ended with {:?}", response.wait());
        }
        items.finish().expect("finish");
        assert_eq!(response.wait().expect("response"), 500_500);
        let (out, back) = client.call_bidi::<u64, u64>("double").unwrap();
        let sender = thread::spawn(move || {
            (0..1000u64).try_for_each(|i| out.send(&i))?;
            out.finish()
        });
        let doubled: Vec<u64> = back.collect::<Result<_, _>>().expect("receive");
        sender.join().unwrap().expect("send both ways");
        assert_eq!(doubled, (0..1000u64).map(|i| 2 * i).collect::<Vec<_>>());
    }

    pub fn client(addr: &Addr) -> RpcClient {
        match addr {
            Addr::Tcp(a) => {
                RpcClient::new(TcpFrameTransport::connect(a, TcpConfig::default()).unwrap())
            }
            Addr::Unix(p) => {
                RpcClient::new(UnixFrameTransport::connect(p, UnixConfig::default()).unwrap())
            }
            Addr::Shm(s) => RpcClient::new(SharedMemoryFrameTransport::connect_client(s).unwrap()),
        }
    }

    /// The blocking server of the test service, serving from a thread until shut down.
    pub struct Server {
        pub addr: Addr,
        server: RpcServer,
        thread: Option<thread::JoinHandle<()>>,
    }

    impl Server {
        pub fn start(kind: Kind) -> Self {
            let server = RpcServer::new();
            server.register_typed("add", |(a, b): (i64, i64)| Ok(a + b));
            server.register_typed("sleep", |ms: u64| {
                thread::sleep(Duration::from_millis(ms));
                Ok(())
            });
            server.register_typed("fail", |m: String| -> Result<(), RpcError> {
                Err(RpcError::server(m))
            });
            server.register_stream("count", |n: u32, items: ServerStreamSender<u32>| {
                (0..n).try_for_each(|i| items.send(&i))
            });
            server.register_client_stream("sum", |items: RequestStream<u64>| {
                items.sum::<Result<u64, RpcError>>()
            });
            server.register_bidi(
                "double",
                |inbox: RequestStream<u64>, outbox: ServerStreamSender<u64>| {
                    inbox.into_iter().try_for_each(|i| outbox.send(&(2 * i?)))
                },
            );
            fn run<L: FrameListener>(s: &RpcServer, l: L) -> Option<thread::JoinHandle<()>> {
                let s = s.clone();
                Some(thread::spawn(move || s.serve_listener(l).unwrap()))
            }
            let (addr, thread) = match kind {
                Kind::Tcp => {
                    let l = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default())
                        .unwrap();
                    (Addr::Tcp(l.local_addr().unwrap()), run(&server, l))
                }
                Kind::Unix => {
                    let p = std::env::temp_dir().join(unique_name("interop.sock"));
                    let l = UnixFrameTransportListener::bind(&p, UnixConfig::default()).unwrap();
                    (Addr::Unix(p), run(&server, l))
                }
                Kind::Shm => {
                    let name = unique_name("interop");
                    let l = SharedMemoryFrameTransportListener::bind(
                        &name,
                        SharedMemoryConfig::default(),
                    )
                    .unwrap();
                    (Addr::Shm(name), run(&server, l))
                }
            };
            Self {
                addr,
                server,
                thread,
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.server.shutdown();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

// ---- the tokio side ---------------------------------------------------------------------

mod tokio_side {
    use super::*;
    use xrpc::{
        RequestStream, RpcClient, RpcServer, ServerStreamSender, SharedMemoryConfig,
        SharedMemoryFrameTransport, SharedMemoryFrameTransportListener, TcpConfig,
        TcpFrameTransport, TcpFrameTransportListener, UnixConfig, UnixFrameTransport,
        UnixFrameTransportListener,
    };

    /// A tokio client, called from a plain thread through its runtime.
    pub struct Client<T: MessageChannel> {
        pub rt: tokio::runtime::Runtime,
        pub client: RpcClient<T>,
    }

    impl<T: MessageChannel> Caller for Client<T> {
        fn add(&self, a: i64, b: i64) -> Result<i64, RpcError> {
            self.rt.block_on(self.client.call("add", &(a, b)))
        }
        fn count(&self, n: u32) -> Result<Vec<u32>, RpcError> {
            self.rt.block_on(async {
                self.client
                    .call_server_stream::<_, u32>("count", &n)
                    .await?
                    .collect()
                    .await
            })
        }
        fn sleep(&self, ms: u64, timeout: Duration) -> Result<(), RpcError> {
            self.rt
                .block_on(self.client.call_with_timeout("sleep", &ms, timeout))
        }
        fn fail(&self, message: &str) -> Result<(), RpcError> {
            self.rt.block_on(self.client.call("fail", message))
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Calls `calls` with a tokio client connected to `addr`.
    pub fn run_client(addr: &Addr) {
        let rt = runtime();
        match addr {
            Addr::Tcp(a) => {
                let t = rt.block_on(TcpFrameTransport::connect(*a, TcpConfig::default()));
                let client =
                    rt.block_on(async { RpcClient::new(MessageChannelAdapter::new(t.unwrap())) });
                calls(&Client { rt, client });
            }
            Addr::Unix(p) => {
                let t = rt.block_on(UnixFrameTransport::connect(p, UnixConfig::default()));
                let client =
                    rt.block_on(async { RpcClient::new(MessageChannelAdapter::new(t.unwrap())) });
                calls(&Client { rt, client });
            }
            Addr::Shm(s) => {
                let t = rt.block_on(SharedMemoryFrameTransport::connect(
                    s,
                    SharedMemoryConfig::default(),
                ));
                let client =
                    rt.block_on(async { RpcClient::new(MessageChannelAdapter::new(t.unwrap())) });
                calls(&Client { rt, client });
            }
        }
    }

    /// The tokio server of the test service, on its own runtime until dropped.
    pub struct Server {
        pub addr: Addr,
        server: RpcServer,
        rt: Option<tokio::runtime::Runtime>,
    }

    impl Server {
        pub fn start(kind: Kind) -> Self {
            let rt = runtime();
            let server = RpcServer::new();
            server.register_typed("add", |(a, b): (i64, i64)| async move { Ok(a + b) });
            server.register_typed("sleep", |ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            });
            server.register_typed("fail", |m: String| async move {
                Err::<(), _>(RpcError::server(m))
            });
            server.register_stream(
                "count",
                |n: u32, items: ServerStreamSender<u32>| async move {
                    for i in 0..n {
                        items.send(&i).await?;
                    }
                    Ok(())
                },
            );
            server.register_client_stream("sum", |mut items: RequestStream<u64>| async move {
                let mut sum = 0;
                while let Some(i) = items.recv().await {
                    sum += i?;
                }
                Ok(sum)
            });
            server.register_bidi(
                "double",
                |mut inbox: RequestStream<u64>, outbox: ServerStreamSender<u64>| async move {
                    while let Some(i) = inbox.recv().await {
                        outbox.send(&(2 * i?)).await?;
                    }
                    Ok(())
                },
            );
            let s = server.clone();
            let addr = rt.block_on(async move {
                match kind {
                    Kind::Tcp => {
                        let l =
                            TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default())
                                .await
                                .unwrap();
                        let addr = l.local_addr().unwrap();
                        tokio::spawn(async move { s.serve_listener(l).await });
                        Addr::Tcp(addr)
                    }
                    Kind::Unix => {
                        let p = std::env::temp_dir().join(unique_name("interop-tokio.sock"));
                        let l = UnixFrameTransportListener::bind(&p, UnixConfig::default())
                            .await
                            .unwrap();
                        tokio::spawn(async move { s.serve_listener(l).await });
                        Addr::Unix(p)
                    }
                    Kind::Shm => {
                        let name = unique_name("interop-tokio");
                        let l = SharedMemoryFrameTransportListener::bind(
                            &name,
                            SharedMemoryConfig::default(),
                        )
                        .unwrap();
                        tokio::spawn(async move { s.serve_listener(l).await });
                        Addr::Shm(name)
                    }
                }
            });
            Self {
                addr,
                server,
                rt: Some(rt),
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.server.shutdown();
            if let Some(rt) = self.rt.take() {
                rt.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }
}

macro_rules! interop {
    ($($module:ident: $kind:ident),*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn a_blocking_client_calls_the_tokio_server() {
                let server = tokio_side::Server::start(Kind::$kind);
                calls(&blocking::client(&server.addr));
            }

            /// Client streams and bidirectional streams from the blocking client.
            #[test]
            fn a_blocking_client_streams_to_the_tokio_server() {
                let server = tokio_side::Server::start(Kind::$kind);
                blocking::streams(&blocking::client(&server.addr));
            }

            /// The same streams served by the blocking server's synchronous handlers.
            #[test]
            fn a_blocking_client_streams_to_the_blocking_server() {
                let server = blocking::Server::start(Kind::$kind);
                blocking::streams(&blocking::client(&server.addr));
            }

            #[test]
            fn a_tokio_client_calls_the_blocking_server() {
                let server = blocking::Server::start(Kind::$kind);
                tokio_side::run_client(&server.addr);
            }
        }
    )*};
}

interop!(tcp: Tcp, unix: Unix, shm: Shm);
