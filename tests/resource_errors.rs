//! Resource errors are typed errors (issue 14), over TCP, Unix sockets and shared memory:
//!
//! - a client out of file descriptors (`EMFILE`, its `RLIMIT_NOFILE` lowered in a child
//!   process) gets a typed error from `connect` — for shared memory, where the server creates
//!   the memfd and the room socket, the limit is the server's, see the next point — and connects
//!   again once descriptors are free;
//! - a server out of file descriptors (sockets, or the memfd and the room socket pair of a
//!   shared-memory connection) keeps running: the calls of clients it could not accept end with a typed error,
//!   and once descriptors are free it serves new clients;
//! - a shared-memory client that cannot map the server's segment (its `RLIMIT_AS` lowered)
//!   gets a typed error, and the server serves the next client;
//! - a Unix socket path in a directory the process may not write to, and a path where another
//!   user's server listens: binding fails with a typed error, and the other user's socket is
//!   left alone.

#[macro_use]
mod reliability;

use std::time::{Duration, Instant};

use reliability::{Addr, AnyClient, Echo, Kind, Resources, runtime};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use xrpc::{RpcError, TransportError, UnixConfig, UnixFrameTransportListener};
use xrpc_shm::testing::{Peer, peer_role, unique_name};

/// Lowers this process's soft limit of open files to what it has open now plus `spare`.
fn leave_spare_fds(spare: usize) {
    let old = getrlimit(Resource::Nofile);
    let now = Resources::of_self().fds as u64;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(now + spare as u64),
            maximum: old.maximum,
        },
    )
    .expect("lower RLIMIT_NOFILE");
}

/// Restores the soft limit of open files to the hard one.
fn restore_fds() {
    let old = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: old.maximum,
            maximum: old.maximum,
        },
    )
    .expect("raise RLIMIT_NOFILE");
}

fn is_emfile(e: &RpcError) -> bool {
    let text = e.to_string();
    text.contains("Too many open files") || text.contains("os error 24")
}

/// The child processes. A no-op as an ordinary test.
#[test]
fn peer_entry() {
    let Some((role, arg)) = peer_role() else {
        return;
    };
    match role.as_str() {
        "server" => reliability::run_server_process(&arg),
        "client-out-of-fds" => client_out_of_fds(&Addr::decode(&arg)),
        "server-out-of-fds" => server_out_of_fds(&Addr::decode(&arg)),
        "other-user" => other_user(&arg),
        "big-segments" => big_segments(&arg),
        "no-address-space" => no_address_space(&arg),
        other => panic!("unknown role {other}"),
    }
}

/// In a child: connects until out of descriptors, checks the error, frees some and connects
/// again. Prints `ok` at the end.
fn client_out_of_fds(addr: &Addr) {
    runtime().block_on(async {
        leave_spare_fds(8);
        let mut clients = Vec::new();
        let err = loop {
            match tokio::time::timeout(Duration::from_secs(10), AnyClient::connect(addr)).await {
                Ok(Ok(c)) => clients.push(c),
                Ok(Err(e)) => break e,
                Err(_) => panic!("connect hung with {} clients open", clients.len()),
            }
            assert!(
                clients.len() < 100,
                "100 clients connected with 8 spare descriptors"
            );
        };
        println!("after {} clients: {err}", clients.len());
        // Over shared memory the descriptors come in the handshake: the kernel drops those
        // the process has no room for, and the handshake sees them missing.
        let shm_truncated =
            matches!(addr, Addr::Shm(_)) && err.to_string().contains("truncated: true");
        assert!(
            matches!(&err, RpcError::Transport(_)) && (is_emfile(&err) || shm_truncated),
            "out of descriptors: {err:?}"
        );
        for c in &clients {
            let req = Echo::new(1, 1);
            assert_eq!(
                c.echo(&req).await.unwrap(),
                req,
                "the open clients still work"
            );
        }
        clients.clear();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let c = AnyClient::connect(addr)
            .await
            .expect("connect once descriptors are free");
        assert_eq!(c.echo(&Echo::new(2, 2)).await.unwrap(), Echo::new(2, 2));
        println!("ok");
    });
}

/// In a child: serves with only a few spare descriptors; raises its limit again when the
/// parent says so (its `restore` method).
fn server_out_of_fds(addr: &Addr) {
    runtime().block_on(async {
        let (listener, bound) = reliability::AnyListener::bind(addr).await.unwrap();
        let server = reliability::test_server();
        server.register_typed("restore", |_: ()| async move {
            restore_fds();
            Ok(())
        });
        tokio::spawn(listener.serve(server));
        leave_spare_fds(12);
        println!("ready {} {}", bound.encode(), std::process::id());
        std::future::pending::<()>().await;
    });
}

fn client_runs_out(kind: Kind) {
    let rt = runtime();
    // Over shared memory the server creates the segment's descriptors: it runs in a process
    // of its own, not short of them.
    let mut server = None;
    let addr = if kind == Kind::Shm {
        let (peer, addr, _) = reliability::spawn_server_process(&Addr::fresh(kind, "emfc"));
        server = Some(peer);
        addr
    } else {
        rt.block_on(reliability::spawn_test_server(&Addr::fresh(kind, "emfc")))
    };
    let mut child = Peer::spawn("peer_entry", "client-out-of-fds", &addr.encode());
    let line = child.wait_for_line("after ");
    println!("{kind:?}: a client out of descriptors: {line}");
    child.wait_for_line("ok");
    assert!(child.wait_timeout(Duration::from_secs(10)).success());
    drop(server);
}

fn server_runs_out(kind: Kind) {
    let rt = runtime();
    let mut server = Peer::spawn(
        "peer_entry",
        "server-out-of-fds",
        &Addr::fresh(kind, "emfs").encode(),
    );
    let line = server.wait_for_line("ready ");
    let addr = Addr::decode(
        line.split("ready ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap(),
    );
    rt.block_on(async {
        let first = AnyClient::connect_retrying(&addr).await;
        // More clients than the server has descriptors for: each call ends, answered or with
        // a typed error.
        let mut clients = Vec::new();
        let (mut served, mut failed) = (0, Vec::new());
        for n in 0..16u32 {
            let outcome = tokio::time::timeout(Duration::from_secs(10), async {
                let c = AnyClient::connect(&addr).await?;
                let answer = c.echo_within(&Echo::new(n, 0), Duration::from_secs(2)).await;
                clients.push(c);
                answer
            })
            .await
            .unwrap_or_else(|_| panic!("client {n}: connect or call hung"));
            match outcome {
                Ok(e) => {
                    assert_eq!(e, Echo::new(n, 0));
                    served += 1
                }
                Err(e) => failed.push(e.to_string()),
            }
            if failed.len() == 3 {
                break; // enough: each costs its 2 s timeout
            }
        }
        println!(
            "{kind:?}: a server out of descriptors served {served} new clients, then failed 3: {:?}",
            failed.first()
        );
        assert!(!failed.is_empty(), "the server never ran out of descriptors");
        // The first client is still served.
        assert_eq!(first.echo(&Echo::new(99, 1)).await.unwrap(), Echo::new(99, 1));
        // Free descriptors: new clients are served again.
        drop(clients);
        on!(&first, c => c.call::<_, ()>("restore", &()).await.unwrap());
        let start = Instant::now();
        loop {
            let tried = async {
                let c = AnyClient::connect(&addr).await?;
                c.echo_within(&Echo::new(7, 7), Duration::from_secs(2)).await
            };
            match tried.await {
                Ok(e) => {
                    assert_eq!(e, Echo::new(7, 7));
                    break;
                }
                Err(e) => assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{kind:?}: no new client served 10 s after descriptors were freed: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    server.kill();
    reliability::remove_socket_file(&addr);
}

#[test]
fn a_client_out_of_descriptors_over_tcp() {
    client_runs_out(Kind::Tcp);
}

#[test]
fn a_client_out_of_descriptors_over_unix() {
    client_runs_out(Kind::Unix);
}

#[test]
fn a_client_out_of_descriptors_over_shm() {
    client_runs_out(Kind::Shm);
}

#[test]
fn a_server_out_of_descriptors_over_tcp() {
    server_runs_out(Kind::Tcp);
}

#[test]
fn a_server_out_of_descriptors_over_unix() {
    server_runs_out(Kind::Unix);
}

#[test]
fn a_server_out_of_descriptors_over_shm() {
    server_runs_out(Kind::Shm);
}

/// `nobody`: the other user.
const OTHER_UID: u32 = 65534;

/// In a child running as another user: binding in `dir` (not writable by us) fails, and so
/// does binding where the owner of `dir` listens.
fn other_user(paths: &str) {
    let (unwritable, taken) = paths.split_once('|').expect("two paths");
    runtime().block_on(async {
        for (what, path) in [
            ("an unwritable directory", unwritable),
            ("another user's socket", taken),
        ] {
            match UnixFrameTransportListener::bind(path, UnixConfig::default()).await {
                Ok(_) => panic!("bound {path}: {what}"),
                Err(e @ TransportError::ConnectionFailed(_)) => {
                    assert!(
                        e.to_string().contains("ermission denied")
                            || e.to_string().contains("in use"),
                        "{what}: {e}"
                    );
                    println!("{what}: {e}");
                }
                Err(e) => panic!("{what}: {e:?}"),
            }
        }
        println!("ok");
    });
}

#[test]
fn unix_paths_we_may_not_use_are_typed_errors() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to start a process as another user");
        return;
    }
    // A directory only its owner (root) may write to, with a live server of its owner inside.
    let dir = std::env::temp_dir().join(unique_name("perm"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt = runtime();
    let taken = dir.join("taken.sock");
    let addr = rt.block_on(reliability::spawn_test_server(&Addr::Unix(taken.clone())));
    let unwritable = dir.join("new.sock");
    let mut cmd = Peer::command(
        "peer_entry",
        "other-user",
        &format!("{}|{}", unwritable.display(), taken.display()),
    );
    cmd.uid(OTHER_UID).gid(OTHER_UID);
    let mut child = Peer::spawn_command(cmd);
    println!("{}", child.wait_for_line("an unwritable directory"));
    println!("{}", child.wait_for_line("another user's socket"));
    child.wait_for_line("ok");
    assert!(child.wait_timeout(Duration::from_secs(10)).success());
    // The owner's server was left alone.
    assert!(taken.exists(), "another user's bind removed our socket");
    rt.block_on(async {
        let c = AnyClient::connect(&addr).await.unwrap();
        assert_eq!(c.echo(&Echo::new(3, 3)).await.unwrap(), Echo::new(3, 3));
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rings of 64 MiB: a segment of 128 MiB to map.
const BIG_RING: usize = 64 << 20;

/// In a child: a shared-memory server of service `name` whose segments are 128 MiB.
fn big_segments(name: &str) {
    runtime().block_on(async {
        let config = xrpc::SharedMemoryConfig {
            buffer_size: BIG_RING,
            ..xrpc::SharedMemoryConfig::default()
        };
        let listener = xrpc::SharedMemoryFrameTransportListener::bind(name, config).unwrap();
        println!("ready");
        reliability::test_server()
            .serve_listener(listener)
            .await
            .unwrap();
    });
}

/// In a child: with 32 MiB of address space to spare, connecting to `name` (whose segments
/// are 128 MiB) fails with a typed error. Prints `ok`.
fn no_address_space(name: &str) {
    runtime().block_on(async {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmSize:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        let limit = vm_kib * 1024 + (32 << 20);
        setrlimit(
            Resource::As,
            Rlimit {
                current: Some(limit),
                maximum: getrlimit(Resource::As).maximum,
            },
        )
        .expect("lower RLIMIT_AS");
        let config = xrpc::SharedMemoryConfig::default();
        match xrpc::SharedMemoryFrameTransport::connect(name, config).await {
            Ok(_) => panic!("mapped a 128 MiB segment with 32 MiB of address space to spare"),
            Err(e) => {
                println!("cannot map: {e}");
                assert!(
                    matches!(
                        e,
                        TransportError::SharedMemoryCreation(_)
                            | TransportError::ConnectionFailed(_)
                    ),
                    "{e:?}"
                );
            }
        }
        println!("ok");
    });
}

/// Ignored in CI: under the lowered `RLIMIT_AS` the child's runtime threads sometimes cannot map
/// their stacks and the child aborts (stack guard) before it reaches the mapping — seen on a
/// fresh CI machine. Run with `--include-ignored` on a machine where it is stable.
#[test]
#[ignore = "environment-sensitive: RLIMIT_AS also starves the child's thread stacks"]
fn a_client_that_cannot_map_the_segment_gets_a_typed_error() {
    let name = unique_name("bigseg");
    let mut server = Peer::spawn("peer_entry", "big-segments", &name);
    server.wait_for_line("ready");
    let mut child = Peer::spawn("peer_entry", "no-address-space", &name);
    println!("{}", child.wait_for_line("cannot map"));
    child.wait_for_line("ok");
    assert!(child.wait_timeout(Duration::from_secs(10)).success());
    // The server serves the next client.
    runtime().block_on(async {
        let c = AnyClient::connect_retrying(&Addr::Shm(name.clone())).await;
        assert_eq!(c.echo(&Echo::new(4, 4)).await.unwrap(), Echo::new(4, 4));
    });
    server.kill();
}
