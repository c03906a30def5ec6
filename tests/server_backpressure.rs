//! A client that sends and never reads cannot grow the server's memory without bound: once
//! the answers it does not read pile up past `ServerConfig::max_transmit_backlog`, the server
//! stops reading from it, so its own writes stall. Nothing is lost: when it reads again, every
//! answer arrives.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::BytesMut;
use xrpc::proto::{
    CompressionConfig, FrameDecoder, Header, Message, MessageEncoder, MessageKind, ServerConfig,
};
use xrpc::{BincodeCodec, MessageChannelAdapter, RpcServer, UnixConfig, UnixFrameTransport};

const PAYLOAD: usize = 64 * 1024;
/// What the client tries to send without reading: far more than the backlog and the socket
/// buffers together.
const LIMIT: usize = 128 * 1024 * 1024;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Serves one end of a socket pair; returns the other end.
fn serve(
    rt: &tokio::runtime::Runtime,
    server: RpcServer,
) -> (
    UnixStream,
    tokio::task::JoinHandle<Result<(), xrpc::RpcError>>,
) {
    let (client, server_side) = UnixStream::pair().unwrap();
    (client, serve_on(rt, server, server_side))
}

/// Serves `server_side` in a task of `rt`.
fn serve_on(
    rt: &tokio::runtime::Runtime,
    server: RpcServer,
    server_side: UnixStream,
) -> tokio::task::JoinHandle<Result<(), xrpc::RpcError>> {
    server_side.set_nonblocking(true).unwrap();
    rt.spawn(async move {
        let s = tokio::net::UnixStream::from_std(server_side).unwrap();
        let ch = MessageChannelAdapter::new(
            UnixFrameTransport::from_stream(s, UnixConfig::default(), "server").unwrap(),
        );
        server.serve(ch).await
    })
}

/// `n` ping frames with 64 KiB payloads: the server answers each with a pong of the same size.
fn pings(n: u64) -> bytes::Bytes {
    let mut frames = BytesMut::new();
    let mut enc = MessageEncoder::new(1 << 24, CompressionConfig::none());
    for id in 1..=n {
        enc.encode(
            &Header::new(MessageKind::Ping, id),
            "",
            &vec![7u8; PAYLOAD],
            &mut frames,
        )
        .unwrap();
    }
    frames.freeze()
}

/// Sends pings without reading until a write makes no progress for a second (or `LIMIT`
/// bytes went out); returns the bytes written and whether it stalled.
fn send_until_stalled(writer: &mut UnixStream, frame: &[u8]) -> (usize, bool) {
    writer
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut written = 0usize;
    while written < LIMIT {
        let at = written % frame.len();
        match writer.write(&frame[at..]) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (written, true);
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    (written, false)
}

#[test]
fn a_client_that_never_reads_is_held_back_and_then_answered() {
    let rt = runtime();
    let config = ServerConfig {
        max_transmit_backlog: 1024 * 1024,
        ..ServerConfig::default()
    };
    let (client, serve) = serve(&rt, RpcServer::with_config(BincodeCodec, config));

    let frame = pings(1);
    let mut writer = client.try_clone().unwrap();
    let (mut written, stalled) = send_until_stalled(&mut writer, &frame);
    assert!(
        stalled,
        "the server read all {} MiB without the client reading a single answer",
        LIMIT >> 20
    );
    assert!(
        written < 48 * 1024 * 1024,
        "the server read {} MiB before holding the client back",
        written >> 20
    );

    // Read again: every ping is answered, in full.
    let mut reader = client.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reading = std::thread::spawn(move || {
        let mut dec = FrameDecoder::new(1 << 24);
        let mut pongs = 0usize;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return pongs,
                Ok(n) => dec.handle_bytes(&buf[..n]),
                Err(e) => panic!("read failed after {pongs} pongs: {e}"),
            }
            while let Some(f) = dec.poll_frame().unwrap() {
                let m = Message::decode_raw(f).unwrap();
                assert_eq!(m.header.kind, MessageKind::Pong);
                assert_eq!(m.into_parts().3.len(), PAYLOAD);
                pongs += 1;
            }
        }
    });
    // Finish the frame cut short by the stall, then stop sending.
    writer.set_write_timeout(None).unwrap();
    let rest = (frame.len() - written % frame.len()) % frame.len();
    writer
        .write_all(&frame[frame.len() - rest..])
        .expect("the server reads again once the client reads");
    written += rest;
    writer.shutdown(std::net::Shutdown::Write).unwrap();
    let pongs = reading.join().unwrap();
    assert_eq!(pongs, written / frame.len(), "every ping was answered");
    rt.block_on(serve).unwrap().unwrap();
}

/// A graceful shutdown does not wait forever for a client that never reads its answers.
#[test]
fn shutdown_does_not_wait_forever_for_a_client_that_never_reads() {
    let rt = runtime();
    let config = ServerConfig {
        shutdown_flush_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let server = RpcServer::with_config(BincodeCodec, config);
    let (client, serve) = serve(&rt, server.clone());
    let frame = pings(64);
    // 4 MiB of pongs: more than the socket buffers hold, so the server's write is stuck.
    let mut writer = client.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = writer.write_all(&frame);
    std::thread::sleep(Duration::from_millis(200));
    server.shutdown();
    let done = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), serve).await });
    assert!(
        done.is_ok(),
        "the shutdown waited for a client that never reads"
    );
    drop(client);
}

/// Dropping the `serve` future while its write waits for a client that does not read closes
/// the connection at once (the write task does not keep it open).
#[test]
fn dropping_serve_closes_a_connection_whose_write_is_stuck() {
    let rt = runtime();
    let config = ServerConfig {
        max_transmit_backlog: 1024 * 1024,
        shutdown_flush_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let (mut client, serve) = serve(&rt, RpcServer::with_config(BincodeCodec, config));
    let frame = pings(1);
    let (_, stalled) = send_until_stalled(&mut client, &frame);
    assert!(stalled);
    serve.abort();
    let _ = rt.block_on(serve);
    // The stuck write gets `shutdown_flush_timeout` to finish, then the connection closes.
    std::thread::sleep(Duration::from_millis(600));
    match client.write(&frame) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => {}
        other => panic!("the connection is still open after serve was dropped: {other:?}"),
    }
}

/// A client dropped while a big write of its requests is still under way: its reader is gone,
/// so the server's answers pile up and the server stops reading — the client's write could
/// then never finish and would hold both ends open. Dropping the client closes it instead.
#[test]
fn a_client_dropped_mid_write_does_not_hold_the_server() {
    let rt = runtime();
    let server = RpcServer::new();
    server.register("echo", |b: bytes::Bytes| async move { Ok(b) });
    let (client_side, serve) = serve(&rt, server);
    rt.block_on(async move {
        client_side.set_nonblocking(true).unwrap();
        let s = tokio::net::UnixStream::from_std(client_side).unwrap();
        let config = xrpc::RpcClientConfig {
            close_timeout: Duration::from_millis(200),
            ..xrpc::RpcClientConfig::default()
        };
        let client = xrpc::RpcClient::with_config(
            MessageChannelAdapter::new(
                UnixFrameTransport::from_stream(s, UnixConfig::default(), "client").unwrap(),
            ),
            config,
        );
        let payload = bytes::Bytes::from(vec![7u8; PAYLOAD]);
        let calls: Vec<_> = (0..400)
            .map(|_| {
                let (c, p) = (client.clone(), payload.clone());
                tokio::spawn(async move { c.call_raw("echo", p).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        for c in &calls {
            c.abort();
        }
        for c in calls {
            let _ = c.await;
        }
        drop(client);
        // It ends with an error or not (the close may cut a request in half), but it ends.
        let _ = tokio::time::timeout(Duration::from_secs(10), serve)
            .await
            .expect("serve returned once the client was dropped")
            .unwrap();
    });
}

/// A client that half-closes and never reads: once the grace period is over, serve returns
/// and the server's end of the connection is closed (not held open by the write that cannot
/// finish).
#[test]
fn the_grace_period_ends_the_connection_at_peer_eof() {
    use std::os::fd::AsRawFd;
    let rt = runtime();
    let config = ServerConfig {
        shutdown_flush_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let server = RpcServer::with_config(BincodeCodec, config);
    let (mut client, server_side) = UnixStream::pair().unwrap();
    let fd_link = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
    let fd = server_side.as_raw_fd();
    let socket = fd_link(fd).unwrap();
    let serve = serve_on(&rt, server, server_side);
    // 4 MiB of pings: under the backlog limit, more than the socket buffers hold.
    let frame = pings(64);
    client
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.write_all(&frame).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), serve).await })
        .expect("serve returned after the grace period")
        .unwrap()
        .unwrap();
    // The socket is released soon after (the aborted write lets go of it).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while fd_link(fd).as_ref() == Some(&socket) {
        assert!(
            std::time::Instant::now() < deadline,
            "serve returned, yet its socket is still open"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(client);
}

/// A notification sent just before the client is dropped still arrives in full, although its
/// write was still under way at the drop (the connection closes only if the server stops
/// reading).
#[test]
fn a_notification_sent_just_before_the_drop_arrives() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let rt = runtime();
    let got = Arc::new(AtomicUsize::new(0));
    let server = RpcServer::new();
    let g = got.clone();
    server.register("sink", move |b: bytes::Bytes| {
        g.store(b.len(), Ordering::SeqCst);
        async { Ok(bytes::Bytes::new()) }
    });
    let (client_side, serve) = serve(&rt, server);
    let len = 4 << 20; // more than the socket buffers take at once
    rt.block_on(async move {
        client_side.set_nonblocking(true).unwrap();
        let s = tokio::net::UnixStream::from_std(client_side).unwrap();
        let client = xrpc::RpcClient::new(MessageChannelAdapter::new(
            UnixFrameTransport::from_stream(s, UnixConfig::default(), "client").unwrap(),
        ));
        client.notify("sink", &vec![7u8; len]).await.unwrap();
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(5), serve).await;
    });
    // Bincode prefixes the bytes with their length.
    assert!(
        got.load(Ordering::SeqCst) >= len,
        "the notification was cut: the server got {} bytes",
        got.load(Ordering::SeqCst)
    );
}
