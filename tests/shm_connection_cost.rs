//! What a shared-memory connection costs its server (issue 24, item 5): descriptors and
//! resident memory per connected client that has made calls.
//!
//! The test binary re-runs itself as the test server (a tokio server in a process of its own),
//! connects `XRPC_SHM_CLIENTS` clients (default 1,000), lets each make `XRPC_SHM_CALLS` echo
//! calls (default 72) of `XRPC_SHM_CALL_SIZE` bytes (default 16 KiB: small beside the 1 MiB
//! ring, and together more than a ring's worth each way, so that a ring that cycles through
//! its pages would have touched them all), and asks the server what it holds (`resources`:
//! `/proc/self`). It prints the descriptors and the resident set per connection and checks the
//! bounds of docs/SECURITY.md: at most 2 descriptors per connection, and the server's resident
//! set under 256 MiB with 1,000 clients.

#[macro_use]
mod reliability;

use std::time::Instant;

use bytes::Bytes;

use reliability::{Addr, AnyClient, Kind, runtime};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use xrpc_shm::testing::peer_role;

/// The child process (the server). A no-op as an ordinary test.
#[test]
fn peer_entry() {
    let Some((role, arg)) = peer_role() else {
        return;
    };
    assert_eq!(role, "server");
    // Every client is this user: a per-peer share below the cap would reclaim idle ones.
    let config = xrpc::ServerConfig {
        max_connections: 2048,
        max_connections_per_peer: 2048,
        ..Default::default()
    };
    reliability::run_server_process_with(&arg, config);
}

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Raises the soft limit of open files to the hard one (a client holds 2 descriptors per
/// connection, the server as many; the server process inherits the limit).
fn raise_fd_limit() -> u64 {
    let old = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: old.maximum,
            maximum: old.maximum,
        },
    )
    .expect("raise RLIMIT_NOFILE");
    old.maximum.unwrap_or(u64::MAX)
}

#[test]
fn a_thousand_shared_memory_clients_fit_in_256_mib() {
    let clients = env_or("XRPC_SHM_CLIENTS", 1000);
    let calls = env_or("XRPC_SHM_CALLS", 72);
    let size = env_or("XRPC_SHM_CALL_SIZE", 16 << 10);
    let limit = raise_fd_limit();
    assert!(
        limit >= 2 * clients as u64 + 64,
        "RLIMIT_NOFILE {limit} is too low for {clients} clients (a client and its server each \
         hold 2 descriptors per connection)"
    );
    let (mut server, addr, _pid) =
        reliability::spawn_server_process(&Addr::fresh(Kind::Shm, "cost"));
    runtime().block_on(async {
        let probe = AnyClient::connect_retrying(&addr).await;
        let base = probe.resources().await.unwrap();
        let start = Instant::now();
        let mut open = Vec::with_capacity(clients);
        let mut callers = Vec::with_capacity(clients);
        for n in 0..clients {
            let c = AnyClient::connect(&addr).await.unwrap();
            // Each client makes its calls in a task of its own: the clients call concurrently.
            let caller = c.clone();
            open.push(c);
            callers.push(tokio::spawn(async move {
                for seq in 0..calls {
                    let req = Bytes::from(vec![(n + seq) as u8; size]);
                    assert_eq!(caller.echo_raw(req.clone()).await.unwrap(), req);
                }
            }));
        }
        for caller in callers {
            caller.await.unwrap();
        }
        let took = start.elapsed();
        let now = probe.resources().await.unwrap();
        let fds = (now.fds - base.fds) as f64 / clients as f64;
        let rss = now.rss.saturating_sub(base.rss);
        println!(
            "{clients} shared-memory clients, {calls} calls of {size} B each, in {took:.2?}: server holds \
             {fds:.2} descriptors per connection; resident set {} MiB ({} MiB before them, {} KiB \
             per connection)",
            now.rss >> 20,
            base.rss >> 20,
            (rss / clients as u64) >> 10
        );
        assert!(fds <= 2.0, "{fds} descriptors per connection");
        if clients >= 1000 {
            assert!(
                now.rss < 256 << 20,
                "server resident set {} MiB with {clients} clients",
                now.rss >> 20
            );
        }
    });
    server.kill();
}
