//! `kill -9` of either peer, over TCP, Unix sockets and shared memory, at random points of
//! unary calls and of streams (issue 14):
//!
//! - the server killed: every pending call of every client — unary calls in a loop, a call
//!   that never gets an answer, calls of 3 MiB (in pieces over shared memory), a server stream,
//!   a client stream — ends with a typed error, soon
//!   (the detection time, p50 and max, is printed); a client that connects then is refused with
//!   a typed error; a server restarted under the same name (port, path, service) serves again;
//! - a client killed: the server frees everything it held for it — descriptors, shared-memory
//!   mappings, stream handlers — as its own `/proc/self` shows (the time it takes is printed).
//!
//! The server, and the killed client, run in child processes (this binary re-run, see
//! `xrpc_shm::testing::Peer`). `XRPC_SOAK=1` runs more rounds; `XRPC_SEED` repeats a run.

#[macro_use]
mod reliability;

use std::time::{Duration, Instant};

use reliability::{Addr, AnyClient, Echo, Kind, Rng, p50_max, runtime, scale};
use xrpc::RpcError;
use xrpc_shm::testing::{Peer, peer_role};

/// A pending call must have ended this long after the kill (it is measured, not asserted,
/// below this: the figures printed are the point).
const ENDS_WITHIN: Duration = Duration::from_secs(10);

/// The child processes: a test server, or a busy client. A no-op as an ordinary test.
#[test]
fn peer_entry() {
    let Some((role, arg)) = peer_role() else {
        return;
    };
    match role.as_str() {
        "server" => reliability::run_server_process(&arg),
        "client" => run_busy_client(&Addr::decode(&arg)),
        other => panic!("unknown role {other}"),
    }
}

/// This binary re-run as a test server on `addr`; returns it with the address it bound.
fn spawn_server(addr: &Addr) -> (Peer, Addr) {
    let (server, bound, _) = reliability::spawn_server_process(addr);
    (server, bound)
}

/// In a child: a client that keeps the server busy with every kind of call until killed.
fn run_busy_client(addr: &Addr) {
    runtime().block_on(async {
        let c = AnyClient::connect_retrying(addr).await;
        for i in 0..4u32 {
            let c = c.clone();
            tokio::spawn(async move {
                for seq in 0u64.. {
                    let _ = c.echo(&Echo::new(i, seq)).await;
                }
            });
        }
        let large = c.clone();
        tokio::spawn(async move {
            let req = bytes::Bytes::from(vec![1; 3 << 20]);
            loop {
                let _ = large.echo_raw(req.clone()).await;
            }
        });
        let hang = c.clone();
        tokio::spawn(async move { hang.hang().await });
        let mut ticks = c.ticks(500).await.unwrap();
        ticks.recv().await.unwrap().unwrap();
        tokio::spawn(async move { while let Some(Ok(_)) = ticks.recv().await {} });
        let (started, is_started) = tokio::sync::oneshot::channel();
        let sc = c.clone();
        tokio::spawn(async move {
            on!(&sc, c => {
                let (tx, _response) = c.call_client_stream::<u64, u64>("sum").await.unwrap();
                tx.send(&1).await.unwrap();
                let _ = started.send(());
                while tx.send(&1).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        });
        is_started.await.unwrap();
        c.echo(&Echo::new(99, 0)).await.unwrap();
        println!("ready");
        std::future::pending::<()>().await;
    });
}

/// How one pending call ended: which call, its error, when.
type Ended = (&'static str, RpcError, Instant);

/// Starts, on client `c`, every kind of call, each in its own task, and returns the tasks: each
/// ends when its call fails.
async fn pending_calls(c: &AnyClient, n: u32) -> Vec<tokio::task::JoinHandle<Ended>> {
    let mut tasks = Vec::new();
    for i in 0..4u32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let client = n * 16 + i;
            for seq in 0u64.. {
                let req = Echo::new(client, seq);
                match c.echo(&req).await {
                    Ok(answer) => assert_eq!(answer, req, "an answer to another call"),
                    Err(e) => return ("unary", e, Instant::now()),
                }
            }
            unreachable!()
        }));
    }
    // Calls of 3 MiB: over shared memory they cross the 1 MiB rings in pieces, so the kill may
    // come in the middle of one.
    let large = c.clone();
    tasks.push(tokio::spawn(async move {
        for seq in 0u64.. {
            let mut req = vec![n as u8; 3 << 20];
            req[..8].copy_from_slice(&seq.to_le_bytes());
            let req = bytes::Bytes::from(req);
            match large.echo_raw(req.clone()).await {
                Ok(answer) => assert!(answer == req, "an answer to another call"),
                Err(e) => return ("large unary", e, Instant::now()),
            }
        }
        unreachable!()
    }));
    let hang = c.clone();
    tasks.push(tokio::spawn(async move {
        let e = hang.hang().await.expect_err("`hang` never answers");
        ("unanswered unary", e, Instant::now())
    }));
    let mut ticks = c.ticks(200).await.expect("start a server stream");
    ticks
        .recv()
        .await
        .expect("a first item")
        .expect("a first item");
    tasks.push(tokio::spawn(async move {
        loop {
            match ticks.recv().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return ("server stream", e, Instant::now()),
                None => panic!("the server stream ended normally: the server's death was lost"),
            }
        }
    }));
    let (started, is_started) = tokio::sync::oneshot::channel();
    let c = c.clone();
    tasks.push(tokio::spawn(async move {
        on!(&c, c => {
            let (tx, response) = c.call_client_stream::<u64, u64>("sum").await.unwrap();
            tx.send(&1).await.expect("a first item");
            let _ = started.send(());
            while tx.send(&1).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let e = response.await.expect_err("the client stream's call ends with an error");
            ("client stream", e, Instant::now())
        })
    }));
    is_started.await.expect("the client stream started");
    tasks
}

/// Kills the server at random points of its clients' calls, `rounds` times, restarting it
/// under the same address each time.
fn server_killed(kind: Kind) {
    let mut rng = Rng::from_env(&format!("server_killed({kind:?})"));
    let rt = runtime();
    let rounds = scale(3, 25);
    let mut addr = Addr::fresh(kind, "ks");
    let mut times = Vec::new();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..rounds {
        // Round 0 binds a fresh address; every later round restarts under the same one.
        let (mut server, bound) = spawn_server(&addr);
        addr = bound;
        rt.block_on(async {
            let mut tasks = Vec::new();
            for n in 0..3 {
                let c = AnyClient::connect_retrying(&addr).await;
                let answer = c.echo(&Echo::new(n, 0)).await;
                assert_eq!(answer.unwrap(), Echo::new(n, 0), "round {round}: served");
                tasks.extend(pending_calls(&c, n).await);
            }
            tokio::time::sleep(Duration::from_millis(rng.range(5, 150))).await;
            let t0 = Instant::now();
            server.kill();
            for t in tasks {
                let (what, err, at) = tokio::time::timeout(ENDS_WITHIN, t)
                    .await
                    .unwrap_or_else(|_| panic!("a call still pending {ENDS_WITHIN:?} after kill"))
                    .expect("the call's task");
                assert!(
                    !matches!(err, RpcError::Timeout | RpcError::Cancelled),
                    "{what}: the server's death ended as {err:?}"
                );
                let variant = format!("{err:?}");
                let variant = variant
                    .split(['(', ' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_string();
                *kinds.entry(format!("{what}: {variant}")).or_default() += 1;
                times.push(at.saturating_duration_since(t0));
            }
            // Nobody serves the address now: connecting fails at once, with a typed error.
            let refused = tokio::time::timeout(ENDS_WITHIN, AnyClient::connect(&addr)).await;
            assert!(
                matches!(refused, Ok(Err(RpcError::Transport(_)))),
                "connecting to a dead server: {:?}",
                refused.map(|r| r.map(|_| ()))
            );
        });
    }
    // The last restart serves too.
    let (server, _) = spawn_server(&addr);
    rt.block_on(async {
        let c = AnyClient::connect_retrying(&addr).await;
        assert_eq!(c.echo(&Echo::new(7, 7)).await.unwrap(), Echo::new(7, 7));
    });
    drop(server);
    reliability::remove_socket_file(&addr);
    let n = times.len();
    let (p50, max) = p50_max(&mut times);
    println!(
        "kill -9 of the server over {kind:?}: {n} pending calls in {rounds} rounds all ended with \
         a typed error; detection p50 {p50:?}, max {max:?}; errors: {kinds:?}"
    );
}

/// Kills a busy client at random points, `rounds` times, and watches the server let go of
/// everything it held for it.
fn client_killed(kind: Kind) {
    let mut rng = Rng::from_env(&format!("client_killed({kind:?})"));
    let rt = runtime();
    let rounds = scale(3, 25);
    let (server, addr) = spawn_server(&Addr::fresh(kind, "kc"));
    let mut times = Vec::new();
    let (base, end) = rt.block_on(async {
        let monitor = AnyClient::connect_retrying(&addr).await;
        let base = monitor.resources().await.unwrap();
        assert_eq!(base.live_handlers, 0, "{base:?}");
        for round in 0..rounds {
            let mut client = Peer::spawn("peer_entry", "client", &addr.encode());
            client.wait_for_line("ready");
            // What the server holds for the client: a socket (two sockets and the mapping of
            // its segment over shared memory), and its two stream handlers (the client's first items may
            // still be on their way to the second).
            let start = Instant::now();
            let busy = loop {
                let busy = monitor.resources().await.unwrap();
                if busy.live_handlers == 2 || start.elapsed() > Duration::from_secs(5) {
                    break busy;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            assert!(busy.fds > base.fds, "round {round}: {busy:?} vs {base:?}");
            assert_eq!(busy.live_handlers, 2, "round {round}: {busy:?}");
            if kind == Kind::Shm {
                assert!(busy.memfd_maps > base.memfd_maps, "{busy:?} vs {base:?}");
            }
            tokio::time::sleep(Duration::from_millis(rng.range(0, 100))).await;
            let t0 = Instant::now();
            client.kill();
            loop {
                let now = monitor.resources().await.unwrap();
                if now.same_as(&base) {
                    times.push(t0.elapsed());
                    break;
                }
                assert!(
                    t0.elapsed() < ENDS_WITHIN,
                    "round {round}: {ENDS_WITHIN:?} after the client's kill the server still \
                     holds {now:?} (before the client: {base:?})"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        (base, monitor.resources().await.unwrap())
    });
    drop(server);
    reliability::remove_socket_file(&addr);
    let (p50, max) = p50_max(&mut times);
    println!(
        "kill -9 of a client over {kind:?}: the server freed its descriptors, mappings and \
         stream handlers in {rounds} rounds; p50 {p50:?}, max {max:?}; before the first \
         client {} fds, {} memfd mappings, {} mappings in all; after the last {}, {}, {}",
        base.fds, base.memfd_maps, base.maps, end.fds, end.memfd_maps, end.maps
    );
}

#[test]
fn server_killed_over_tcp() {
    if peer_role().is_none() {
        server_killed(Kind::Tcp);
    }
}

#[test]
fn server_killed_over_unix() {
    if peer_role().is_none() {
        server_killed(Kind::Unix);
    }
}

#[test]
fn server_killed_over_shm() {
    if peer_role().is_none() {
        server_killed(Kind::Shm);
    }
}

#[test]
fn client_killed_over_tcp() {
    if peer_role().is_none() {
        client_killed(Kind::Tcp);
    }
}

#[test]
fn client_killed_over_unix() {
    if peer_role().is_none() {
        client_killed(Kind::Unix);
    }
}

#[test]
fn client_killed_over_shm() {
    if peer_role().is_none() {
        client_killed(Kind::Shm);
    }
}
