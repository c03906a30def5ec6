//! The rpc layer of `xrpc-async` on [`TestRuntime`]: a client and a server over the in-process
//! channel transport, on a virtual clock that jumps to the next deadline. Every timing rule
//! above the core — call deadlines, heartbeats, the drain and flush deadlines, idle and
//! partial-frame deadlines, notification deadlines, the client's close grace — is checked at
//! its exact instant, and a virtual microsecond before it; no test sleeps or starts a thread.

mod calls;
mod driver_order;
mod harness;
mod heartbeats;
mod raw;
mod server_deadlines;
mod shutdown;
mod streams;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use xrpc_async::testing::TestRuntime;
use xrpc_async::{
    ChannelConfig, ChannelFrameTransport, MessageChannelAdapter, RpcClient, RpcClientConfig,
    RpcServer,
};
use xrpc_proto::{BincodeCodec, ServerConfig};

pub const MS: Duration = Duration::from_millis(1);
/// The clock's resolution in these tests: "a virtual microsecond before".
pub const US: Duration = Duration::from_micros(1);

pub type Chan = MessageChannelAdapter<ChannelFrameTransport>;
pub type Client = RpcClient<Chan, BincodeCodec, TestRuntime>;
pub type Server = RpcServer<BincodeCodec, TestRuntime>;

/// Two connected ends of the in-process channel transport, `capacity` frames each way.
pub fn pair_with_capacity(capacity: usize) -> (Chan, Chan) {
    let config = ChannelConfig {
        capacity,
        ..ChannelConfig::default()
    };
    let (a, b) = ChannelFrameTransport::create_pair("test", config);
    (MessageChannelAdapter::new(a), MessageChannelAdapter::new(b))
}

pub fn pair() -> (Chan, Chan) {
    pair_with_capacity(ChannelConfig::default().capacity)
}

/// A client on `rt` over `channel`.
pub fn client(rt: &TestRuntime, channel: Chan, config: RpcClientConfig) -> Client {
    RpcClient::with_runtime(channel, config, BincodeCodec, rt.clone())
}

/// A server on `rt` whose `sleep` handler waits its argument's milliseconds of virtual time
/// and returns it, and whose `echo` handler answers at once.
pub fn server(rt: &TestRuntime, config: ServerConfig) -> Server {
    let server = RpcServer::with_runtime(BincodeCodec, config, rt.clone());
    let r = rt.clone();
    server.register_typed("sleep", move |ms: u64| {
        let r = r.clone();
        async move {
            r.sleep(Duration::from_millis(ms)).await;
            Ok(ms)
        }
    });
    server.register_typed("echo", |v: u64| async move { Ok(v) });
    server
}

/// Serves `server` on the server end of a fresh pair in a task; returns a client over the other
/// end and the task's handle.
pub fn connect(
    rt: &TestRuntime,
    server: &Server,
    config: RpcClientConfig,
) -> (
    Client,
    xrpc_async::testing::JoinHandle<Result<(), xrpc_async::RpcError>>,
) {
    let (c, s) = pair();
    let srv = server.clone();
    let serving = rt.spawn_with_handle(async move { srv.serve(s).await });
    (client(rt, c, config), serving)
}

/// Client settings with no default call timeout (a test sets the one it checks).
pub fn no_timeout() -> RpcClientConfig {
    RpcClientConfig {
        default_timeout: None,
        ..RpcClientConfig::default()
    }
}

/// Counts the handlers alive: one guard lives in each handler's future.
pub struct Alive(Arc<AtomicUsize>);

impl Alive {
    pub fn new(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Registers `forever`, a unary handler that never finishes, counting its live futures.
pub fn register_forever(server: &Server) -> Arc<AtomicUsize> {
    let alive = Arc::new(AtomicUsize::new(0));
    let a = alive.clone();
    server.register_typed("forever", move |_: ()| {
        let guard = Alive::new(&a);
        async move {
            let _guard = guard;
            std::future::pending::<Result<(), xrpc_async::RpcError>>().await
        }
    });
    alive
}
