//! Connection tests in one process (listener and clients on threads): the
//! rendezvous, both directions, zero-copy send and receive, waiters, orderly
//! close and configuration errors.
#![cfg(not(loom))]

use std::thread;
use std::time::{Duration, Instant};

use xrpc_shm::testing::unique_name;
use xrpc_shm::{ShmConfig, ShmConnection, ShmError, ShmListener};

fn small() -> ShmConfig {
    ShmConfig {
        ring_capacity: 64 * 1024,
        max_frame_size: 16 * 1024,
        ..ShmConfig::default()
    }
}

const T: Option<Duration> = Some(Duration::from_secs(10));

/// A connected (server side, client side) pair.
fn pair(tag: &str, config: ShmConfig) -> (ShmConnection, ShmConnection) {
    let n = unique_name(tag);
    let listener = ShmListener::bind(&n, config.clone()).unwrap();
    let client = thread::spawn(move || ShmConnection::connect(&n, config).unwrap());
    let server = listener.accept().unwrap();
    (server, client.join().unwrap())
}

#[test]
fn echo_both_ways_with_every_api() {
    let (server, mut client) = pair("echo", small());
    assert_eq!(client.max_frame_size(), 16 * 1024);
    let echo = thread::spawn(move || {
        let (mut tx, mut rx) = server.split();
        loop {
            let frame = match rx.recv(T) {
                Ok(f) => f,
                Err(ShmError::Disconnected) => return,
                Err(e) => panic!("server recv: {e}"),
            };
            // Zero-copy both ways: borrow in place, write in place.
            let mut slot = tx.reserve(frame.len(), T).unwrap();
            slot.copy_from_slice(&frame);
            drop(frame);
            slot.commit();
        }
    });
    let mut buf = Vec::new();
    for i in 0..2_000usize {
        let len = (i * 37) % (16 * 1024 + 1);
        let msg: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
        client.send(&msg, T).unwrap();
        client.receiver().recv_into(&mut buf, T).unwrap();
        assert_eq!(buf, msg, "frame {i}");
    }
    client.send(b"bytes", T).unwrap();
    assert_eq!(&client.recv_bytes(T).unwrap()[..], b"bytes");
    assert!(matches!(
        client.send(&vec![0; 16 * 1024 + 1], T),
        Err(ShmError::FrameTooLarge { .. })
    ));
    drop(client);
    echo.join().unwrap();
}

#[test]
fn timeouts_and_waiters() {
    let (mut server, client) = pair("wait", small());
    let (mut ctx, _crx) = client.split();
    let start = Instant::now();
    assert!(matches!(
        server.receiver().recv(Some(Duration::from_millis(50))),
        Err(ShmError::Timeout)
    ));
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(server.receiver().try_recv().unwrap().is_none());

    // A waiter on another thread wakes when a frame arrives.
    let waiter = server.receiver().waiter();
    let w = thread::spawn(move || waiter.wait_readable(T));
    thread::sleep(Duration::from_millis(30));
    ctx.try_send(b"wake").unwrap();
    assert!(w.join().unwrap().unwrap());
    assert_eq!(&*server.receiver().try_recv().unwrap().unwrap(), b"wake");

    // Fill the client's send ring, then wait for room from another thread.
    while ctx.try_send(&[1; 4096]).is_ok() {}
    assert!(matches!(ctx.try_send(&[1; 4096]), Err(ShmError::Full)));
    let sw = ctx.waiter();
    assert!(
        !sw.wait_writable(4096, Some(Duration::from_millis(20)))
            .unwrap()
    );
    let w = thread::spawn(move || sw.wait_writable(4096, T));
    thread::sleep(Duration::from_millis(30));
    // Room goes back in batches (every quarter ring, and when the consumer finds the ring
    // empty): drain it.
    while server.receiver().try_recv().unwrap().is_some() {}
    assert!(w.join().unwrap().unwrap());
    ctx.try_send(&[1; 4096]).unwrap();
}

#[test]
fn orderly_close_drains_then_disconnects() {
    let (mut server, client) = pair("close", small());
    let (mut tx, rx) = client.split();
    tx.send(b"one", T).unwrap();
    tx.send(b"two", T).unwrap();
    drop(tx);
    let r = server.receiver();
    assert_eq!(&*r.recv(T).unwrap(), b"one");
    assert_eq!(&*r.recv(T).unwrap(), b"two");
    assert!(matches!(r.recv(T), Err(ShmError::Disconnected)));
    // The client still reads what the server sends...
    server.send(b"to client", T).unwrap();
    let mut rx = rx;
    assert_eq!(&*rx.recv(T).unwrap(), b"to client");
    // ...and once it is gone, the server's sends fail.
    drop(rx);
    assert!(matches!(
        server.send(b"late", T),
        Err(ShmError::Disconnected)
    ));
}

#[test]
fn rendezvous_errors() {
    let n = unique_name("dup");
    let _l = ShmListener::bind(&n, small()).unwrap();
    assert!(matches!(
        ShmListener::bind(&n, small()),
        Err(ShmError::Io(_))
    ));
    let nobody = unique_name("nobody");
    assert!(matches!(
        ShmConnection::connect(&nobody, small()),
        Err(ShmError::NoServer(n)) if n == nobody
    ));
    assert!(matches!(
        ShmListener::bind("", small()),
        Err(ShmError::InvalidConfig(_))
    ));
    let bad = ShmConfig {
        ring_capacity: 5000,
        ..small()
    };
    assert!(matches!(
        ShmListener::bind(&unique_name("bad"), bad),
        Err(ShmError::InvalidConfig(_))
    ));
    let bad = ShmConfig {
        max_frame_size: 1 << 32,
        ..small()
    };
    assert!(matches!(bad.validate(), Err(ShmError::InvalidConfig(_))));
}

#[test]
fn a_dropped_listener_frees_the_name() {
    let n = unique_name("rebind");
    drop(ShmListener::bind(&n, small()).unwrap());
    let _again = ShmListener::bind(&n, small()).unwrap();
}

#[test]
fn halves_and_waiters_can_move_between_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync + Clone>() {}
    send::<xrpc_shm::ShmSender>();
    send::<xrpc_shm::ShmReceiver>();
    send::<ShmConnection>();
    send::<ShmListener>();
    send_sync::<xrpc_shm::RecvWaiter>();
    send_sync::<xrpc_shm::SendWaiter>();
    send_sync::<xrpc_shm::Doorbell>();
    send_sync::<xrpc_shm::PeerFd>();
    send::<xrpc_shm::ShmConnector>();
}

/// Whether `fd` is readable (or hung up) right now.
fn readable(fd: impl std::os::fd::AsFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&fd, PollFlags::IN | PollFlags::RDHUP)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&zero)).unwrap() > 0
}

#[test]
fn doorbells_ring_for_announced_sleepers_only() {
    let (mut server, client) = pair("bell", small());
    let (mut ctx, crx) = client.split();
    let rw = server.receiver().waiter();
    let bell = rw.doorbell().clone();

    // The client counts the times its sends woke the server.
    let woken = || crx.waiter().peer_woken();
    // Nobody sleeps: a publish rings nothing.
    ctx.try_send(b"a").unwrap();
    assert!(!readable(&bell));
    assert_eq!(woken(), 0);
    // A frame is visible: no sleep.
    assert!(rw.prepare_sleep().unwrap().is_none());
    drop(server.receiver().try_recv().unwrap().unwrap());
    // A consumer finds the ring empty before it sleeps (handing back its room).
    assert!(server.receiver().try_recv().unwrap().is_none());

    // An announced sleep on an empty ring: the next publish rings.
    let guard = rw.prepare_sleep().unwrap().expect("empty ring: sleep");
    assert!(!readable(&bell));
    ctx.try_send(b"b").unwrap();
    assert!(readable(&bell));
    assert_eq!(woken(), 1);
    // The client's next wait for frames spins twice its budget (the answer comes after the
    // server's wake-up); the one after that, with no wake-up since, at most its budget.
    let budget = small().spin_budget;
    assert_eq!(crx.waiter().backoff().spin_limit(), 2 * budget);
    assert!(crx.waiter().backoff().spin_limit() <= budget);
    bell.drain().unwrap();
    assert!(!readable(&bell));
    bell.drain().unwrap(); // draining a quiet doorbell does not block
    drop(guard);
    drop(server.receiver().try_recv().unwrap().unwrap());
    ctx.try_send(b"c").unwrap();
    assert!(!readable(&bell), "the announcement was retracted");
    assert_eq!(woken(), 1);
    drop(server.receiver().try_recv().unwrap().unwrap());

    // The send side: a full ring, an announced sleep, the consumer frees room.
    let sw = ctx.waiter();
    while ctx.try_send(&[1; 4096]).is_ok() {}
    let guard = sw.prepare_sleep(4096).unwrap().expect("full ring: sleep");
    assert!(!readable(sw.doorbell()));
    while server.receiver().try_recv().unwrap().is_some() {}
    assert!(readable(sw.doorbell()));
    sw.doorbell().drain().unwrap();
    drop(guard);
    assert!(sw.prepare_sleep(4096).unwrap().is_none(), "room now");

    // Peer death: both doorbells become readable (the end of the stream), check_peer
    // confirms, and a drain marks the connection dead.
    let ssw = server.sender().waiter();
    assert!(!readable(&bell) && !readable(ssw.doorbell()));
    rw.check_peer().unwrap();
    drop((ctx, crx, sw));
    assert!(readable(&bell) && readable(ssw.doorbell()));
    assert!(matches!(rw.check_peer(), Err(ShmError::Disconnected)));
    bell.drain().unwrap();
    assert!(matches!(rw.prepare_sleep(), Err(ShmError::Disconnected)));
    assert!(matches!(ssw.prepare_sleep(1), Err(ShmError::Disconnected)));
}

#[test]
fn the_non_blocking_connector_finishes_when_the_segment_arrives() {
    let n = unique_name("connector");
    let listener = ShmListener::bind(&n, small()).unwrap();
    let mut connector = xrpc_shm::ShmConnector::start(&n, small()).unwrap();
    assert!(
        connector.try_finish().unwrap().is_none(),
        "not accepted yet"
    );
    assert!(!readable(connector.socket()));
    let mut server = listener.accept().unwrap();
    assert!(readable(connector.socket()));
    let mut client = connector.try_finish().unwrap().expect("segment arrived");
    assert!(connector.try_finish().is_err(), "only once");
    client.send(b"hi", T).unwrap();
    assert_eq!(&server.recv_bytes(T).unwrap()[..], b"hi");
    assert!(matches!(
        xrpc_shm::ShmConnector::start(&unique_name("nobody-nb"), small()),
        Err(ShmError::NoServer(_))
    ));
}

/// A fake server of service `name` that answers one client with `HELLO` and the given fds.
fn fake_server(name: &str, fds: Vec<std::os::fd::OwnedFd>) -> thread::JoinHandle<()> {
    use rustix::net::{
        AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix,
        SocketFlags, SocketType,
    };
    use std::os::fd::AsFd;
    let addr = SocketAddrUnix::new_abstract_name(format!("xrpc-shm/{name}").as_bytes()).unwrap();
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    rustix::net::bind(&sock, &addr).unwrap();
    rustix::net::listen(&sock, 1).unwrap();
    thread::spawn(move || {
        let conn = rustix::net::accept(&sock).unwrap();
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
        rustix::net::sendmsg(
            &conn,
            &[std::io::IoSlice::new(b"XRPCSHM3")],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .unwrap();
        // Keep the socket open until the client has judged the handshake.
        let _ = rustix::net::recv(&conn, &mut [0u8; 1], rustix::net::RecvFlags::empty());
    })
}

#[test]
fn hostile_handshakes_are_refused() {
    use rustix::event::{EventfdFlags, eventfd};
    use rustix::net::{AddressFamily, SocketFlags, SocketType, socketpair};
    let memfd = || rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    let pair = |kind| {
        socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None)
            .unwrap()
            .0
    };
    let unconnected = || {
        rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    };
    let cases: Vec<(&str, Vec<std::os::fd::OwnedFd>)> = vec![
        ("one-fd", vec![memfd()]),
        (
            "three-fds",
            vec![memfd(), pair(SocketType::STREAM), pair(SocketType::STREAM)],
        ),
        (
            "eventfd-room",
            vec![memfd(), eventfd(0, EventfdFlags::CLOEXEC).unwrap()],
        ),
        ("datagram-room", vec![memfd(), pair(SocketType::DGRAM)]),
        ("unconnected-room", vec![memfd(), unconnected()]),
    ];
    for (tag, fds) in cases {
        let name = unique_name(tag);
        let server = fake_server(&name, fds);
        match ShmConnection::connect(&name, small()) {
            // Each case is refused for its own reason (not, say, the empty memfd).
            Err(ShmError::Handshake(msg)) => {
                let want = if tag.ends_with("-room") {
                    "invalid room socket"
                } else {
                    "expected 2 fds"
                };
                assert!(msg.contains(want), "{tag}: {msg}");
            }
            other => panic!(
                "{tag}: expected a handshake error, got {:?}",
                other.map(|_| ())
            ),
        }
        server.join().unwrap();
    }
}

#[test]
fn frames_larger_than_the_ring_pass_between_threads() {
    let config = ShmConfig {
        ring_capacity: 64 * 1024,
        max_frame_size: 1 << 20,
        ..ShmConfig::default()
    };
    let (server, mut client) = pair("pieces", config);
    assert_eq!(client.max_frame_size(), 1 << 20);
    assert_eq!(client.sender().max_piece(), 32 * 1024 - 8);
    let echo = thread::spawn(move || {
        let (mut tx, mut rx) = server.split();
        loop {
            // Every receive API: in place (reassembled), copied, handed over.
            let frame = match rx.recv_bytes(T) {
                Ok(f) => f,
                Err(ShmError::Disconnected) => return,
                Err(e) => panic!("server recv: {e}"),
            };
            tx.send(&frame, T).unwrap();
        }
    });
    let mut buf = Vec::new();
    for (i, len) in [
        200_000usize,
        10,
        1 << 20,
        32 * 1024 - 8,
        32 * 1024 - 7,
        65_536,
    ]
    .into_iter()
    .enumerate()
    {
        let msg: Vec<u8> = (0..len).map(|j| (i * 7 + j) as u8).collect();
        client.send(&msg, T).unwrap();
        if i % 2 == 0 {
            client.receiver().recv_into(&mut buf, T).unwrap();
            assert_eq!(buf, msg, "frame {i}");
        } else {
            assert_eq!(&*client.receiver().recv(T).unwrap(), &msg[..], "frame {i}");
        }
    }
    assert!(matches!(
        client.send(&vec![0; (1 << 20) + 1], T),
        Err(ShmError::FrameTooLarge { .. })
    ));
    drop(client);
    echo.join().unwrap();
}

/// A server's segment may declare frames up to 4 GiB: a client never accepts (nor reassembles
/// into memory) frames above its own configured maximum. A larger one is skipped, reported as
/// `FrameTooLarge` with its first bytes, and the connection goes on with the next frame.
#[test]
fn a_client_keeps_its_own_frame_limit() {
    let n = unique_name("limit");
    let big = ShmConfig {
        max_frame_size: 1 << 20,
        ..small()
    };
    let listener = ShmListener::bind(&n, big).unwrap();
    let server = thread::spawn(move || {
        let mut s = listener.accept().unwrap();
        assert_eq!(s.max_frame_size(), 1 << 20);
        // Within the server's limit, above the client's: skipped on the client's side.
        s.send(&vec![7u8; 100 * 1024], T).unwrap();
        s.send(b"after", T).unwrap();
        s
    });
    let mut client = ShmConnection::connect(&n, small()).unwrap();
    assert_eq!(client.max_frame_size(), 16 * 1024);
    match client.recv_bytes(T) {
        Err(ShmError::FrameTooLarge { size, max }) => {
            assert_eq!((size, max), (100 * 1024, 16 * 1024));
        }
        other => panic!("a frame above the client's limit: {other:?}"),
    }
    assert_eq!(client.receiver().skipped_head(), &[7u8; 64][..]);
    assert_eq!(client.receiver().partial_bytes(), 0);
    assert_eq!(&client.recv_bytes(T).unwrap()[..], b"after");
    drop(server.join().unwrap());
}

/// Each side knows the other's pid, uid and gid; a client the server's admission turns down
/// is refused in the handshake — a typed error, no segment — and the listener goes on.
#[test]
fn credentials_and_refusal_in_the_handshake() {
    let me = (
        std::process::id(),
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let n = unique_name("creds");
    let listener = ShmListener::bind(&n, small()).unwrap();
    let name = n.clone();
    let refused = thread::spawn(move || ShmConnection::connect(&name, small()));
    let name = n.clone();
    let mut asked = Vec::new();
    let mut turned_down = false;
    let server = thread::scope(|s| {
        let admitted = s.spawn(|| {
            // Waits for the refused client to be turned down first.
            let err = refused.join().unwrap().err().expect("refused");
            let admitted = ShmConnection::connect(&name, small()).unwrap();
            (err, admitted)
        });
        let server = listener
            .accept_admitting(|peer| {
                let peer = peer.copied().expect("credentials");
                asked.push((peer.pid, peer.uid, peer.gid));
                // The first client is turned down, the next admitted.
                let admit = turned_down;
                turned_down = true;
                admit
            })
            .unwrap();
        (server, admitted.join().unwrap())
    });
    let (server, (err, client)) = server;
    match err {
        ShmError::Refused { name, uid, gid } => {
            assert_eq!((name.as_str(), uid, gid), (n.as_str(), me.1, me.2));
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert_eq!(asked, vec![me, me]);
    let seen = server.peer_credentials().unwrap();
    assert_eq!(
        (seen.pid, seen.uid, seen.gid),
        me,
        "the server sees its client"
    );
    let seen = client.peer_credentials().unwrap();
    assert_eq!(
        (seen.pid, seen.uid, seen.gid),
        me,
        "the client sees its server"
    );
}
