//! The interop matrix: every client adapter against every server adapter over every
//! cross-process transport. One body ([`cell`]) per (client, server, transport): the server
//! runs in a child process (this test binary re-run as the peer), the client here; each cell
//! makes a unary call, reads a server stream of 10,000 items, lets a call time out, gets a
//! remote error, and has the server killed (SIGKILL) under a pending call.
//!
//! An adapter joins the matrix by implementing [`Adapter`] (serve in the child; connect a
//! [`ClientUnderTest`] here) and adding its rows to `tests/interop.rs`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use xrpc_async::RpcError;
use xrpc_shm::testing::{Peer, peer_role, unique_name};

/// A transport that crosses processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP over loopback; the server binds port 0 and prints its address.
    Tcp,
    /// A Unix socket at a fresh path.
    Unix,
    /// Shared memory under a fresh service name.
    Shm,
}

/// The request of `add`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddRequest {
    /// Left operand.
    pub a: i32,
    /// Right operand.
    pub b: i32,
}

/// The response of `add`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddResponse {
    /// `a + b`.
    pub result: i32,
}

/// What a cell does with a client, whatever its adapter (blocking calls: async adapters run
/// them on their executor).
pub trait ClientUnderTest {
    /// `add(a, b)`.
    fn add(&self, a: i32, b: i32) -> Result<i32, RpcError>;
    /// Reads the whole `count(n)` stream; the items in order.
    fn count(&self, n: u32) -> Result<Vec<u32>, RpcError>;
    /// `sleep_ms(ms)` with a call timeout.
    fn sleep_ms(&self, ms: u64, timeout: Duration) -> Result<u64, RpcError>;
    /// `fail(message)`.
    fn fail(&self, message: &str) -> Result<(), RpcError>;
}

/// An adapter in the matrix.
pub trait Adapter {
    /// Its name in messages.
    const NAME: &'static str;
    /// In the child: serves, on `transport` at `addr` (for TCP, binds port 0),
    /// - `add(AddRequest) -> AddResponse`;
    /// - `count(n: u32)`: a server stream of `0..n` (`u32`);
    /// - `sleep_ms(ms: u64) -> u64`: answers after `ms` milliseconds;
    /// - `fail(message: String) -> ()`: a remote error with `message`;
    ///
    /// prints `ready <addr>` once listening, and serves until killed.
    fn serve(transport: Transport, addr: &str);
    /// Connects a client to the server at `addr`.
    fn connect(transport: Transport, addr: &str) -> Box<dyn ClientUnderTest + Send + Sync>;
}

/// One cell: client adapter `C` against server adapter `S` over `transport`; `test` is the
/// name of the calling test (the child re-runs it).
pub fn cell<C: Adapter, S: Adapter>(test: &str, transport: Transport) {
    if let Some((_, addr)) = peer_role() {
        S::serve(transport, &addr);
        return;
    }
    let addr = match transport {
        Transport::Tcp => "127.0.0.1:0".to_string(),
        Transport::Unix => std::env::temp_dir()
            .join(unique_name("interop.sock"))
            .display()
            .to_string(),
        Transport::Shm => unique_name("interop"),
    };
    let mut server = Peer::spawn(test, "server", &addr);
    let ready = server.wait_for_line("ready");
    // The test harness may print the test's name before it on the same line.
    let addr = ready
        .rsplit("ready ")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let who = format!(
        "{} client -> {} server over {transport:?}",
        C::NAME,
        S::NAME
    );
    let client = C::connect(transport, &addr);

    // A unary call.
    assert_eq!(client.add(20, 22).expect(&who), 42, "{who}");
    // A server stream of 10,000 items, in order.
    let items = client.count(10_000).expect(&who);
    assert_eq!(items.len(), 10_000, "{who}");
    assert!(
        items.iter().enumerate().all(|(i, v)| *v == i as u32),
        "{who}"
    );
    // A timeout: the call ends with Timeout, on time.
    let t0 = Instant::now();
    match client.sleep_ms(5_000, Duration::from_millis(100)) {
        Err(RpcError::Timeout) => {}
        other => panic!("{who}: expected a timeout, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(3), "{who}: late timeout");
    // A remote error, with its message.
    match client.fail("no such thing") {
        Err(RpcError::ServerError { message, .. }) => assert_eq!(message, "no such thing"),
        other => panic!("{who}: expected a remote error, got {other:?}"),
    }
    // The connection still serves.
    assert_eq!(client.add(1, 2).expect(&who), 3, "{who}");

    // The server killed under a pending call: the call ends with Disconnected, soon.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = tx.send(client.sleep_ms(30_000, Duration::from_secs(60)));
        });
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        server.kill();
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Err(RpcError::Disconnected(_))) => {}
            Ok(other) => panic!("{who}: expected Disconnected, got {other:?}"),
            Err(_) => panic!("{who}: the pending call did not end after the server died"),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{who}: slow detection"
        );
    });
}

/// Declares one `#[test]` per cell: `name => ClientAdapter, ServerAdapter, Transport;`.
macro_rules! matrix {
    ($($name:ident => $client:ty, $server:ty, $transport:ident;)*) => {$(
        #[test]
        fn $name() {
            $crate::interop::cell::<$client, $server>(
                stringify!($name),
                $crate::interop::Transport::$transport,
            );
        }
    )*};
}
pub(crate) use matrix;
