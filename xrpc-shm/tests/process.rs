//! Cross-process tests: the test binary re-executes itself as a child
//! process (`testing::Peer`, the role picks what it does) to be a real peer — eight
//! clients on one server, and `kill -9` of either side while the other is
//! blocked in `recv` or in `send` on a full ring.
#![cfg(not(loom))]

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use xrpc_shm::testing::{Peer, peer_role, unique_name};
use xrpc_shm::{ShmConfig, ShmConnection, ShmError, ShmListener};

/// A child never outlives this, even if the parent test died.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);
/// Asserted bound for noticing a dead peer (the design target is 100 ms).
const DEATH_BOUND: Duration = Duration::from_millis(500);

fn config() -> ShmConfig {
    ShmConfig {
        ring_capacity: 64 * 1024,
        max_frame_size: 16 * 1024,
        ..ShmConfig::default()
    }
}

/// This test binary, re-run as the peer `role` on the service `name`.
fn spawn_child(role: &str, name: &str) -> Peer {
    Peer::spawn("child_entry", role, name)
}

/// Connects, retrying while the child server is not bound yet.
fn connect_retrying(name: &str) -> ShmConnection {
    let start = Instant::now();
    loop {
        match ShmConnection::connect(name, config()) {
            Ok(c) => return c,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("connect {name}: {e}"),
        }
    }
}

/// The child side. A no-op when run as an ordinary test.
#[test]
fn child_entry() {
    let Some((role, name)) = peer_role() else {
        return;
    };
    match role.as_str() {
        "echo_server" => {
            let listener = ShmListener::bind(&name, config()).unwrap();
            let handlers: Vec<_> = (0..8)
                .map(|_| {
                    let conn = listener.accept().unwrap();
                    thread::spawn(move || {
                        let (mut tx, mut rx) = conn.split();
                        let t = Some(CHILD_LIFETIME);
                        loop {
                            match rx.recv(t) {
                                Ok(f) => tx.send(&f, t).unwrap(),
                                Err(ShmError::Disconnected) => return,
                                Err(e) => panic!("echo server: {e}"),
                            }
                        }
                    })
                })
                .collect();
            for h in handlers {
                h.join().unwrap();
            }
        }
        "idle_server" => {
            let listener = ShmListener::bind(&name, config()).unwrap();
            let _conn = listener.accept().unwrap();
            thread::sleep(CHILD_LIFETIME);
        }
        "foreign_client" => {
            // Runs as another user: the server must not hand it a segment, and says so.
            match ShmConnection::connect(&name, config()) {
                Ok(_) => std::process::exit(10),
                Err(ShmError::Refused { uid, .. }) if uid == OTHER_UID => std::process::exit(0),
                Err(e) => {
                    eprintln!("foreign client: {e}");
                    std::process::exit(11)
                }
            }
        }
        "foreign_server" => {
            let listener = ShmListener::bind(&name, config()).unwrap();
            let _ = listener.accept();
            thread::sleep(CHILD_LIFETIME);
        }
        "idle_client" => {
            let _conn = connect_retrying(&name);
            thread::sleep(CHILD_LIFETIME);
        }
        other => panic!("unknown child role {other}"),
    }
    std::process::exit(0);
}

#[test]
fn eight_clients_on_one_server_process() {
    let name = unique_name("eight");
    let mut server = spawn_child("echo_server", &name);
    let clients: Vec<_> = (0..8usize)
        .map(|k| {
            let name = name.clone();
            thread::spawn(move || {
                let mut conn = connect_retrying(&name);
                let mut buf = Vec::new();
                for i in 0..300usize {
                    let len = (i * 131 + k * 17) % (16 * 1024 + 1);
                    let msg: Vec<u8> = (0..len).map(|j| (i ^ j ^ k) as u8).collect();
                    conn.send(&msg, Some(Duration::from_secs(10))).unwrap();
                    conn.receiver()
                        .recv_into(&mut buf, Some(Duration::from_secs(10)))
                        .unwrap();
                    assert_eq!(buf, msg, "client {k} frame {i}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert!(server.wait_timeout(Duration::from_secs(10)).success());
}

/// Kills `child` after a short delay on another thread; returns when the kill
/// happened.
fn kill_later(mut child: Peer) -> mpsc::Receiver<Instant> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(150));
        let at = Instant::now();
        child.kill(); // SIGKILL
        tx.send(at).unwrap();
    });
    rx
}

fn assert_noticed(what: &str, result: Result<(), ShmError>, killed: &mpsc::Receiver<Instant>) {
    let noticed = Instant::now();
    let killed_at = killed.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        matches!(result, Err(ShmError::Disconnected)),
        "{what}: expected Disconnected, got {result:?}"
    );
    let latency = noticed.saturating_duration_since(killed_at);
    println!("{what}: peer death noticed after {latency:?}");
    assert!(latency < DEATH_BOUND, "{what}: took {latency:?}");
}

#[test]
fn server_killed_while_client_blocks_in_recv() {
    let name = unique_name("kill-server");
    let server = spawn_child("idle_server", &name);
    let mut conn = connect_retrying(&name);
    let killed = kill_later(server);
    let r = conn
        .receiver()
        .recv(Some(Duration::from_secs(10)))
        .map(drop);
    assert_noticed("client recv", r, &killed);
}

#[test]
fn client_killed_while_server_blocks_in_recv() {
    let name = unique_name("kill-client-recv");
    let listener = ShmListener::bind(&name, config()).unwrap();
    let client = spawn_child("idle_client", &name);
    let mut conn = listener.accept().unwrap();
    let killed = kill_later(client);
    let r = conn
        .receiver()
        .recv(Some(Duration::from_secs(10)))
        .map(drop);
    assert_noticed("server recv", r, &killed);
}

#[test]
fn client_killed_while_server_blocks_in_send_on_full_ring() {
    let name = unique_name("kill-client-send");
    let listener = ShmListener::bind(&name, config()).unwrap();
    let client = spawn_child("idle_client", &name);
    let mut conn = listener.accept().unwrap();
    let tx = conn.sender();
    while tx.try_send(&[7; 1024]).is_ok() {}
    assert!(matches!(tx.try_send(&[7; 1024]), Err(ShmError::Full)));
    let killed = kill_later(client);
    let r = tx.send(&[7; 1024], Some(Duration::from_secs(10)));
    assert_noticed("server send", r, &killed);
}

/// `nobody`: the other user of the credential tests.
const OTHER_UID: u32 = 65534;

fn spawn_as_other_user(role: &str, name: &str) -> Peer {
    use std::os::unix::process::CommandExt;
    let mut cmd = Peer::command("child_entry", role, name);
    cmd.uid(OTHER_UID).gid(OTHER_UID);
    Peer::spawn_command(cmd)
}

/// Abstract socket names have no file permissions: the peer's credentials keep other users out.
#[test]
fn other_users_are_refused_both_ways() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to start a process as another user");
        return;
    }
    // A client of another user gets no segment from our server.
    let name = unique_name("foreign-client");
    let listener = ShmListener::bind(&name, config()).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut client = spawn_as_other_user("foreign_client", &name);
    let status = loop {
        match listener.accept() {
            Ok(_) => panic!("a process of another user was accepted"),
            Err(ShmError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if let Some(s) = client.try_wait() {
            break s;
        }
        thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "the foreign client was refused, with ShmError::Refused"
    );

    // A server of another user that took the name is refused by our client.
    let name = unique_name("foreign-server");
    let mut server = spawn_as_other_user("foreign_server", &name);
    let start = Instant::now();
    let err = loop {
        match ShmConnection::connect(&name, config()) {
            Ok(_) => panic!("connected to a server of another user"),
            Err(ShmError::Handshake(m)) => break m,
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("connect: {e}"),
        }
    };
    assert!(err.contains("another user"), "{err}");
    server.kill();
}
