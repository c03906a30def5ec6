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
    drop(server.receiver().try_recv().unwrap().unwrap());
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
    assert!(matches!(
        ShmConnection::connect(&unique_name("nobody"), small()),
        Err(ShmError::Io(_))
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
        max_frame_size: 32 * 1024,
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
}
