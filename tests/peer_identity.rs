//! Peer identity on local transports (issue 27): over Unix sockets and shared memory a server
//! reads its client's credentials (`SO_PEERCRED`), shows them to handlers, and admits only the
//! users and groups of its [`PeerPolicy`]; a refused client gets a typed error
//! ([`RpcError::PeerRefused`]) it can tell from a network failure, and the server counts it.
//!
//! One body per behaviour, for every adapter (tokio, smol, blocking) and both local transports:
//! - `allowed`: a listed user is served, and the handler sees the caller's pid, uid and gid;
//! - `refused`: an unlisted user is refused at connect (in this process: the list names
//!   another uid), counted, and the server goes on serving;
//! - `another_user`: a client running as `nobody` (this test binary re-run under uid/gid
//!   65534, which needs root) is refused by a list that does not name it — through a socket
//!   file opened to everyone (mode 0666), so that the list and not the file mode refuses it —
//!   and, with no list, cannot connect to a default (0600) Unix socket at all and is refused
//!   by a shared-memory server (another user). Skipped, with the reason printed, when not
//!   running as root or when `nobody` cannot run this binary.
//!
//! The file modes of what a listener creates are checked in `modes_are_owner_only`.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xrpc::{PeerPolicy, RpcError};
use xrpc_shm::testing::{Peer, peer_role, unique_name};

/// A transport with peer credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Unix,
    Shm,
}

/// A process's identity, as `whoami` answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Who {
    pid: u32,
    uid: u32,
    gid: u32,
}

impl Who {
    /// This process.
    fn me() -> Self {
        Self {
            pid: std::process::id(),
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }
    }
}

/// The uid and gid of `nobody`.
const NOBODY: u32 = 65534;

/// A server running on a thread of its own; shut down and joined when dropped.
struct Server {
    refused: Box<dyn Fn() -> u64 + Send + Sync>,
    stop: Box<dyn Fn() + Send + Sync>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn refused(&self) -> u64 {
        (self.refused)()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        (self.stop)();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An adapter under test.
trait Adapter {
    /// Its name in messages.
    const NAME: &'static str;
    /// Serves `whoami` (the caller's credentials, as its call context shows them) on
    /// `transport` at `addr` with `policy` (a Unix socket file with `mode`); returns once
    /// listening.
    fn start(transport: Transport, addr: &str, policy: PeerPolicy, mode: u32) -> Server;
    /// Connects to `addr` and calls `whoami` once.
    fn whoami(transport: Transport, addr: &str) -> Result<Option<Who>, RpcError>;
}

fn fresh_addr(transport: Transport) -> String {
    match transport {
        Transport::Unix => std::env::temp_dir()
            .join(unique_name("peer.sock"))
            .display()
            .to_string(),
        Transport::Shm => unique_name("peer"),
    }
}

fn allowed<A: Adapter>(transport: Transport) {
    let who = format!("{} over {transport:?}", A::NAME);
    let addr = fresh_addr(transport);
    let me = Who::me();
    let server = A::start(transport, &addr, PeerPolicy::any().allow_uid(me.uid), 0o600);
    let seen = A::whoami(transport, &addr).unwrap_or_else(|e| panic!("{who}: {e}"));
    assert_eq!(seen, Some(me), "{who}: the handler sees the caller");
    // By group alone, too.
    drop(server);
    let addr = fresh_addr(transport);
    let server = A::start(transport, &addr, PeerPolicy::any().allow_gid(me.gid), 0o600);
    assert_eq!(
        A::whoami(transport, &addr).unwrap_or_else(|e| panic!("{who}: {e}")),
        Some(me),
        "{who}"
    );
    assert_eq!(server.refused(), 0, "{who}");
}

fn refused<A: Adapter>(transport: Transport) {
    let who = format!("{} over {transport:?}", A::NAME);
    let addr = fresh_addr(transport);
    let me = Who::me();
    let other = me.uid.wrapping_add(4242);
    let server = A::start(transport, &addr, PeerPolicy::any().allow_uid(other), 0o600);
    match A::whoami(transport, &addr) {
        Err(RpcError::PeerRefused(m)) => {
            let expected = match transport {
                // The server's reason, from its refusal frame.
                Transport::Unix => format!("peer uid {} gid {}", me.uid, me.gid),
                // The shared-memory handshake carries no text: the client names itself.
                Transport::Shm => format!("(uid {}, gid {})", me.uid, me.gid),
            };
            assert!(m.contains(&expected), "{who}: {m:?} lacks {expected:?}");
        }
        other => panic!("{who}: expected PeerRefused, got {other:?}"),
    }
    assert_eq!(server.refused(), 1, "{who}: the refusal is counted");
    // A second refused client, then the server still serves a connection it admits.
    assert!(matches!(
        A::whoami(transport, &addr),
        Err(RpcError::PeerRefused(_))
    ));
    assert_eq!(server.refused(), 2, "{who}");
}

/// In the child process run as `nobody`: calls `whoami` and prints the outcome.
fn play_client<A: Adapter>(transport: Transport, addr: &str) {
    match A::whoami(transport, addr) {
        Ok(w) => println!("outcome answered {w:?}"),
        Err(RpcError::PeerRefused(m)) => println!("outcome refused {m}"),
        Err(e) => println!("outcome failed {e}"),
    }
}

/// Why a client cannot be run as `nobody` here, if it cannot.
fn cannot_run_as_nobody() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not running as root (setuid to nobody needs it)".into());
    }
    let exe = std::env::current_exe().ok()?;
    // Every directory up to the binary must let others search it, and the binary run.
    for dir in exe.ancestors().skip(1) {
        let mode = std::fs::metadata(dir).ok()?.permissions().mode();
        if mode & 0o001 == 0 {
            return Some(format!("{} is not searchable by others", dir.display()));
        }
    }
    let mode = std::fs::metadata(&exe).ok()?.permissions().mode();
    (mode & 0o001 == 0).then(|| format!("{} is not executable by others", exe.display()))
}

/// Runs `test`'s client as `nobody` against `addr`; the outcome line it printed.
fn as_nobody(test: &str, addr: &str) -> String {
    let mut cmd = Peer::command(test, "client", addr);
    cmd.uid(NOBODY).gid(NOBODY);
    let mut client = Peer::spawn_command(cmd);
    let line = client.wait_for_line("outcome");
    client.wait_timeout(Duration::from_secs(10));
    line
}

fn another_user<A: Adapter>(test: &str, transport: Transport) {
    if let Some((_, addr)) = peer_role() {
        return play_client::<A>(transport, &addr);
    }
    let who = format!("{} over {transport:?}", A::NAME);
    if let Some(why) = cannot_run_as_nobody() {
        println!("skipped {test}: {why}");
        return;
    }
    // Listed: root only. The socket file lets anyone connect: the list refuses nobody.
    let addr = fresh_addr(transport);
    let server = A::start(transport, &addr, PeerPolicy::any().allow_uid(0), 0o666);
    let line = as_nobody(test, &addr);
    assert!(
        line.contains("outcome refused") && line.contains("65534"),
        "{who}: {line}"
    );
    assert_eq!(server.refused(), 1, "{who}");
    drop(server);

    // No list: the defaults keep another user out.
    let addr = fresh_addr(transport);
    let server = A::start(transport, &addr, PeerPolicy::any(), 0o600);
    let line = as_nobody(test, &addr);
    match transport {
        // The socket file (0600) does not let nobody connect: a connection failure.
        Transport::Unix => assert!(
            line.contains("outcome failed") && line.contains("ermission denied"),
            "{who}: {line}"
        ),
        // The rendezvous has no file permissions: the server refuses another user.
        Transport::Shm => {
            assert!(line.contains("outcome refused"), "{who}: {line}");
            assert_eq!(server.refused(), 1, "{who}");
        }
    }
}

/// What a listener creates is owner-only: the socket file 0600 (or the mode asked for), a
/// directory it creates 0700.
#[test]
fn modes_are_owner_only() {
    let rt = tokio_runtime();
    rt.block_on(async {
        let dir = std::env::temp_dir().join(unique_name("peer-dir"));
        let path = dir.join("nested").join("s.sock");
        let l = xrpc::UnixFrameTransportListener::bind(&path, xrpc::UnixConfig::default())
            .await
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600, "the socket file");
        assert_eq!(
            mode(path.parent().unwrap()),
            0o700,
            "a directory it created"
        );
        assert_eq!(mode(&dir), 0o700, "a directory it created");
        // Nothing else is left in the directory (the private directory it bound in is gone).
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("s.sock")]);
        // A client connects through the linked path.
        xrpc::UnixFrameTransport::connect(&path, xrpc::UnixConfig::default())
            .await
            .unwrap();
        drop(l);
        let wide = dir.join("wide.sock");
        let _l = xrpc::UnixFrameTransportListener::bind(
            &wide,
            xrpc::UnixConfig::default().with_socket_mode(0o660),
        )
        .await
        .unwrap();
        assert_eq!(mode(&wide), 0o660);
        // A live socket is not replaced.
        assert!(
            xrpc::UnixFrameTransportListener::bind(&wide, xrpc::UnixConfig::default())
                .await
                .is_err()
        );
        drop(_l);
        let _ = std::fs::remove_dir_all(&dir);
    });
}

// ---- the adapters ----------------------------------------------------------------------

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The credentials a handler sees in its call context.
fn seen(ctx: &xrpc::CallContext) -> Option<Who> {
    ctx.peer().credentials.map(|c| Who {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
    })
}

macro_rules! async_adapter {
    ($adapter:ident, $name:literal, $krate:ident, $block_on:expr) => {
        struct $adapter;

        impl Adapter for $adapter {
            const NAME: &'static str = $name;

            fn start(transport: Transport, addr: &str, policy: PeerPolicy, mode: u32) -> Server {
                use $krate::*;
                let (tx, rx) = mpsc::channel();
                let addr = addr.to_owned();
                let thread = std::thread::spawn(move || {
                    let block_on = $block_on;
                    block_on(async move {
                        let server = RpcServer::new();
                        server.register_typed_with_context(
                            "whoami",
                            |ctx: CallContext, (): ()| async move { Ok(seen(&ctx)) },
                        );
                        server.set_peer_policy(policy);
                        let served = match transport {
                            Transport::Unix => {
                                let config = UnixConfig::default().with_socket_mode(mode);
                                let l = UnixFrameTransportListener::bind(&addr, config)
                                    .await
                                    .unwrap();
                                tx.send(server.clone()).unwrap();
                                server.serve_listener(l).await
                            }
                            Transport::Shm => {
                                let l = SharedMemoryFrameTransportListener::bind(
                                    &addr,
                                    SharedMemoryConfig::default(),
                                )
                                .unwrap();
                                tx.send(server.clone()).unwrap();
                                server.serve_listener(l).await
                            }
                        };
                        served.unwrap();
                    })
                });
                let server = rx.recv().expect("the server started");
                let stop = server.clone();
                Server {
                    refused: Box::new(move || server.peers_refused()),
                    stop: Box::new(move || stop.shutdown()),
                    thread: Some(thread),
                }
            }

            fn whoami(transport: Transport, addr: &str) -> Result<Option<Who>, RpcError> {
                use $krate::*;
                let block_on = $block_on;
                block_on(async move {
                    match transport {
                        Transport::Unix => {
                            let t =
                                UnixFrameTransport::connect(addr, UnixConfig::default()).await?;
                            let client: RpcClient<_> =
                                RpcClient::new(MessageChannelAdapter::new(t));
                            client.call("whoami", &()).await
                        }
                        Transport::Shm => {
                            let t = SharedMemoryFrameTransport::connect(
                                addr,
                                SharedMemoryConfig::default(),
                            )
                            .await?;
                            let client: RpcClient<_> =
                                RpcClient::new(MessageChannelAdapter::new(t));
                            client.call("whoami", &()).await
                        }
                    }
                })
            }
        }
    };
}

fn tokio_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio_runtime().block_on(f)
}

async_adapter!(Tokio, "tokio", xrpc, tokio_block_on);
async_adapter!(Smol, "smol", xrpc_smol, smol::block_on);

struct Blocking;

impl Adapter for Blocking {
    const NAME: &'static str = "blocking";

    fn start(transport: Transport, addr: &str, policy: PeerPolicy, mode: u32) -> Server {
        use xrpc_blocking::*;
        let server = RpcServer::new();
        server.register_typed_with_context("whoami", |ctx: CallContext, (): ()| Ok(seen(&ctx)));
        server.set_peer_policy(policy);
        let (tx, rx) = mpsc::channel();
        let addr = addr.to_owned();
        let serving = server.clone();
        let thread = std::thread::spawn(move || {
            let served = match transport {
                Transport::Unix => {
                    let config = UnixConfig::default().with_socket_mode(mode);
                    let l = UnixFrameTransportListener::bind(&addr, config).unwrap();
                    tx.send(()).unwrap();
                    serving.serve_listener(l)
                }
                Transport::Shm => {
                    let l = SharedMemoryFrameTransportListener::bind(
                        &addr,
                        SharedMemoryConfig::default(),
                    )
                    .unwrap();
                    tx.send(()).unwrap();
                    serving.serve_listener(l)
                }
            };
            served.unwrap();
        });
        rx.recv().expect("the server started");
        let stop = server.clone();
        Server {
            refused: Box::new(move || server.peers_refused()),
            stop: Box::new(move || stop.shutdown()),
            thread: Some(thread),
        }
    }

    fn whoami(transport: Transport, addr: &str) -> Result<Option<Who>, RpcError> {
        use xrpc_blocking::*;
        let client = match transport {
            Transport::Unix => {
                RpcClient::new(UnixFrameTransport::connect(addr, UnixConfig::default())?)
            }
            Transport::Shm => RpcClient::new(SharedMemoryFrameTransport::connect(
                addr,
                SharedMemoryConfig::default(),
            )?),
        };
        client.call("whoami", &())
    }
}

/// Declares the tests of every behaviour for an adapter: `module => Adapter;`.
macro_rules! behaviours {
    ($($module:ident => $adapter:ty;)*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn allowed_over_unix() {
                allowed::<$adapter>(Transport::Unix);
            }

            #[test]
            fn allowed_over_shm() {
                allowed::<$adapter>(Transport::Shm);
            }

            #[test]
            fn refused_over_unix() {
                refused::<$adapter>(Transport::Unix);
            }

            #[test]
            fn refused_over_shm() {
                refused::<$adapter>(Transport::Shm);
            }

            #[test]
            fn another_user_over_unix() {
                another_user::<$adapter>(
                    concat!(stringify!($module), "::another_user_over_unix"),
                    Transport::Unix,
                );
            }

            #[test]
            fn another_user_over_shm() {
                another_user::<$adapter>(
                    concat!(stringify!($module), "::another_user_over_shm"),
                    Transport::Shm,
                );
            }
        }
    )*};
}

behaviours! {
    tokio_adapter => Tokio;
    smol_adapter => Smol;
    blocking_adapter => Blocking;
}

/// Refused connections are kept open a moment (for the refusal to be read), but at most 64 at
/// once: a flood of refused connects holds a bounded number of descriptors, and the server
/// goes on serving.
#[test]
fn a_flood_of_refused_peers_holds_a_bounded_number_of_descriptors() {
    let addr = fresh_addr(Transport::Unix);
    let me = Who::me();
    let server = xrpc::RpcServer::new();
    server.register_typed("ping", |(): ()| async move { Ok(()) });
    server.set_peer_policy(PeerPolicy::any().allow_uid(me.uid.wrapping_add(4242)));
    let rt = tokio_runtime();
    let listener = rt
        .block_on(xrpc::UnixFrameTransportListener::bind(
            &addr,
            xrpc::UnixConfig::default(),
        ))
        .unwrap();
    let serving = server.clone();
    let served = rt.spawn(async move { serving.serve_listener(listener).await });
    const FLOOD: u64 = 300;
    // Connects and stays (a refused peer that went away is closed at once).
    let flood: Vec<_> = (0..FLOOD)
        .map(|_| std::os::unix::net::UnixStream::connect(&addr).unwrap())
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.peers_refused() < FLOOD {
        assert!(
            std::time::Instant::now() < deadline,
            "refusals: {}",
            server.peers_refused()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // The server's ends still open: our end reads neither the end of the stream nor an error
    // (it reads the refusal frame, then would block). Counted from our side, so that the other
    // tests of this binary, opening descriptors meanwhile, do not count.
    let server_ends_open = |flood: &[std::os::unix::net::UnixStream]| {
        let mut buf = [0u8; 256];
        flood
            .iter()
            .filter(|s| {
                s.set_nonblocking(true).unwrap();
                let mut s: &std::os::unix::net::UnixStream = s;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => return false,
                        Ok(_) => continue,
                        Err(e) => return e.kind() == std::io::ErrorKind::WouldBlock,
                    }
                }
            })
            .count()
    };
    // The ones past the cap close right after their frame: wait for that, well within the
    // linger (1 s), after which every one closes anyway.
    let settle = std::time::Instant::now() + Duration::from_millis(500);
    let mut held = server_ends_open(&flood);
    while held > 64 && std::time::Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(5));
        held = server_ends_open(&flood);
    }
    assert!(
        held <= 64,
        "{held} connections held open after {FLOOD} refusals"
    );
    drop(flood);
    // The server still serves a peer it admits.
    server.set_peer_policy(PeerPolicy::any().allow_uid(me.uid));
    let t0 = std::time::Instant::now();
    let client = rt.block_on(async {
        let t = xrpc::UnixFrameTransport::connect(&addr, xrpc::UnixConfig::default()).await?;
        let client: xrpc::RpcClient<_> = xrpc::RpcClient::new(xrpc::MessageChannelAdapter::new(t));
        client.call::<_, ()>("ping", &()).await
    });
    client.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    server.shutdown();
    rt.block_on(served).unwrap().unwrap();
}
