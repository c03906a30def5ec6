//! What the blocking server bounds and how it shares its threads, end to end through the
//! synchronous API over TCP: the handler pool that one connection cannot hold, the limits of
//! `ServerConfig` (connections, calls in progress, notifications, output to a client that
//! reads nothing, idle connections), graceful shutdown (noticed with no polling, refusing new
//! connections, cancelling at its drain deadline), and an idle client's heartbeats. (The rules
//! themselves live in `xrpc-proto` and are tested there; the async server these run on is
//! tested for every adapter in the workspace's `tests/`.)

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use xrpc_async::FrameTransport;
use xrpc_blocking::{
    BincodeCodec, Blocking, CallContext, HandlerThreads, RpcClient, RpcClientConfig, RpcError,
    RpcServer, ServerConfig, ServerStreamSender, TcpConfig, TcpFrameTransport,
    TcpFrameTransportListener,
};
use xrpc_proto::{Codec, ErrorCode, Header, MessageEncoder, MessageKind};

const MS: Duration = Duration::from_millis(1);

/// Serves `server` on a fresh TCP listener from a thread.
fn serve(server: &RpcServer) -> (SocketAddr, JoinHandle<Result<(), RpcError>>) {
    let l = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default()).unwrap();
    let addr = l.local_addr().unwrap();
    let s = server.clone();
    (addr, thread::spawn(move || s.serve_listener(l)))
}

fn client(addr: SocketAddr, config: RpcClientConfig) -> RpcClient {
    let t = TcpFrameTransport::connect(addr, TcpConfig::default()).unwrap();
    RpcClient::with_config(t, config)
}

/// Waits until `f` holds (checking every 5 ms) or `limit` passes; returns whether it held.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(5 * MS);
    }
    f()
}

/// A stream handler that sends until its call is over.
fn firehose(_: (), tx: ServerStreamSender<u64>) -> Result<(), RpcError> {
    (0u64..).try_for_each(|i| tx.send(&i))
}

/// One connection opening 64 server streams with a window of 1 and reading none holds at most
/// its share of the handler pool: another client's calls and streams go on. (With a share as
/// large as the pool it held every thread, and the other client waited.)
#[test]
fn one_connection_cannot_hold_the_handler_pool() {
    let server = RpcServer::new().with_handler_threads(HandlerThreads {
        max: 8,
        per_connection: 2,
    });
    server.register_stream("firehose", firehose);
    server.register_stream("count", |n: u64, tx: ServerStreamSender<u64>| {
        (0..n).try_for_each(|i| tx.send(&i))
    });
    server.register_typed("add", |(a, b): (u64, u64)| Ok(a + b));
    let (addr, _serving) = serve(&server);
    let greedy = client(
        addr,
        RpcClientConfig {
            stream_window: 1,
            ..RpcClientConfig::default()
        },
    );
    let unread: Vec<_> = (0..64)
        .map(|_| {
            greedy
                .call_server_stream::<_, u64>("firehose", &())
                .unwrap()
        })
        .collect();
    thread::sleep(200 * MS);
    let other = client(addr, RpcClientConfig::default());
    let t0 = Instant::now();
    let sum: u64 = other
        .call_with_timeout("add", &(2u64, 3u64), Duration::from_secs(5))
        .unwrap();
    assert_eq!(sum, 5);
    let items: Vec<u64> = other
        .call_server_stream::<_, u64>("count", &100u64)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(items, (0..100).collect::<Vec<_>>());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    drop(unread);
}

/// At `max_connections` a newcomer takes the place of an idle connection (admission, issue
/// 24); while every connection is busy it is closed at once and the busy one is served.
#[test]
fn at_max_connections_a_newcomer_replaces_an_idle_connection_or_is_closed() {
    let config = ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    };
    let server = RpcServer::with_config(BincodeCodec, config);
    server.register_typed("add", |(a, b): (u64, u64)| Ok(a + b));
    server.register_typed("sleep_ms", |ms: u64| {
        thread::sleep(Duration::from_millis(ms));
        Ok(ms)
    });
    let (addr, _serving) = serve(&server);
    let first = client(addr, RpcClientConfig::default());
    assert_eq!(first.call::<_, u64>("add", &(1u64, 1u64)).unwrap(), 2);
    // Busy: a call in flight.
    let busy = {
        let first = first.clone();
        thread::spawn(move || first.call::<_, u64>("sleep_ms", &1_000u64))
    };
    thread::sleep(200 * MS);
    let second = client(addr, RpcClientConfig::default());
    let t0 = Instant::now();
    let r = second.call_with_timeout::<_, u64>("add", &(1u64, 1u64), Duration::from_secs(5));
    assert!(matches!(r, Err(RpcError::Disconnected(_))), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(busy.join().unwrap().unwrap(), 1_000);
    // Idle now: a newcomer takes its place.
    let third = client(addr, RpcClientConfig::default());
    assert_eq!(third.call::<_, u64>("add", &(2u64, 2u64)).unwrap(), 4);
    assert!(matches!(
        first.call::<_, u64>("add", &(3u64, 3u64)),
        Err(RpcError::Disconnected(_))
    ));
}

/// Calls beyond `max_concurrent_calls` on one connection are refused, the others answered.
#[test]
fn calls_beyond_the_limit_are_refused() {
    let config = ServerConfig {
        max_concurrent_calls: 2,
        ..ServerConfig::default()
    };
    let server = RpcServer::with_config(BincodeCodec, config);
    server.register_typed("sleep", |ms: u64| {
        thread::sleep(Duration::from_millis(ms));
        Ok(())
    });
    let (addr, _serving) = serve(&server);
    let c = client(addr, RpcClientConfig::default());
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            thread::spawn(move || c.call::<_, ()>("sleep", &300u64))
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for call in calls {
        match call.join().unwrap() {
            Ok(()) => ok += 1,
            Err(RpcError::ServerError {
                code: ErrorCode::ResourceExhausted,
                ..
            }) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(ok >= 2 && refused >= 1, "{ok} answered, {refused} refused");
}

/// An idle connection is closed after `idle_timeout`; the client notices on its own (its
/// driver reads while it makes no call).
#[test]
fn an_idle_connection_is_closed() {
    let config = ServerConfig {
        idle_timeout: Some(300 * MS),
        ..ServerConfig::default()
    };
    let server = RpcServer::with_config(BincodeCodec, config);
    server.register_typed("add", |(a, b): (u64, u64)| Ok(a + b));
    let (addr, _serving) = serve(&server);
    let c = client(addr, RpcClientConfig::default());
    assert_eq!(c.call::<_, u64>("add", &(1u64, 1u64)).unwrap(), 2);
    let t0 = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || !c.is_connected()),
        "the idle connection was never closed"
    );
    assert!(t0.elapsed() >= 200 * MS, "closed early: {:?}", t0.elapsed());
}

/// The voluntary context switches of thread `tid` of this process so far.
fn wake_ups(tid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// An idle server's listening thread sleeps until something happens: it does not wake up to
/// look for a shutdown (the old blocking server did, every 100 ms), and a shutdown still ends
/// it at once.
#[test]
fn shutdown_is_noticed_without_polling() {
    let server = RpcServer::new();
    let l = TcpFrameTransportListener::bind("127.0.0.1:0", TcpConfig::default()).unwrap();
    let (tx, rx) = mpsc::channel();
    let s = server.clone();
    let serving = thread::spawn(move || {
        tx.send(rustix::thread::gettid().as_raw_nonzero().get())
            .unwrap();
        s.serve_listener(l)
    });
    let tid = rx.recv().unwrap();
    thread::sleep(100 * MS);
    let before = wake_ups(tid);
    thread::sleep(600 * MS);
    let idle = wake_ups(tid) - before;
    assert!(
        idle <= 1,
        "the idle listener woke up {idle} times in 600 ms"
    );
    let t0 = Instant::now();
    server.shutdown();
    serving.join().unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

/// During a graceful shutdown the calls in progress finish, and a connection made meanwhile
/// is refused at once (the listener is closed as the shutdown starts).
#[test]
fn a_connection_made_during_shutdown_is_refused() {
    let server = RpcServer::new();
    let running = Arc::new(AtomicBool::new(false));
    let r = running.clone();
    server.register_typed("slow", move |ms: u64| {
        r.store(true, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(ms));
        Ok(ms)
    });
    let (addr, serving) = serve(&server);
    let c = client(addr, RpcClientConfig::default());
    let busy = thread::spawn(move || c.call::<_, u64>("slow", &600u64));
    assert!(eventually(Duration::from_secs(3), || running.load(Ordering::SeqCst)));
    server.shutdown();
    thread::sleep(100 * MS);
    assert!(
        !serving.is_finished(),
        "the busy call keeps the shutdown going"
    );
    let t0 = Instant::now();
    match TcpStream::connect(addr) {
        Err(_) => {}
        Ok(mut late) => {
            // It raced the close: its connection ends at once, unanswered.
            late.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            assert!(matches!(late.read(&mut [0u8; 16]), Ok(0) | Err(_)));
            assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        }
    }
    assert_eq!(
        busy.join().unwrap().unwrap(),
        600,
        "the call in progress finishes"
    );
    serving.join().unwrap().unwrap();
}

/// A graceful shutdown ends at its drain deadline even with a stream open to a client that
/// reads nothing: the stream's handler learns that its call is over (its send fails).
#[test]
fn the_drain_deadline_ends_a_stream_nobody_reads() {
    let config = ServerConfig {
        drain_timeout: 300 * MS,
        ..ServerConfig::default()
    };
    let server = RpcServer::with_config(BincodeCodec, config);
    let ended = Arc::new(AtomicBool::new(false));
    let e = ended.clone();
    server.register_stream("firehose", move |(): (), tx: ServerStreamSender<u64>| {
        let r = firehose((), tx);
        e.store(true, Ordering::SeqCst);
        r
    });
    let (addr, serving) = serve(&server);
    let c = client(
        addr,
        RpcClientConfig {
            stream_window: 1,
            ..RpcClientConfig::default()
        },
    );
    let mut stream = c.call_server_stream::<_, u64>("firehose", &()).unwrap();
    assert_eq!(stream.next().unwrap().unwrap(), 0);
    let t0 = Instant::now();
    server.shutdown();
    serving.join().unwrap().unwrap();
    let took = t0.elapsed();
    assert!(
        took >= 250 * MS && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert!(eventually(Duration::from_secs(2), || ended.load(Ordering::SeqCst)));
}

/// Notifications count against `max_concurrent_calls` (the others are dropped), and one that
/// runs past `notification_timeout` is told to stop.
#[test]
fn notifications_are_bounded_in_number_and_time() {
    let config = ServerConfig {
        max_concurrent_calls: 4,
        notification_timeout: 300 * MS,
        ..ServerConfig::default()
    };
    let server = RpcServer::with_config(BincodeCodec, config);
    let (running, peak, started) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (r, p, s) = (running.clone(), peak.clone(), started.clone());
    server.register_typed("note", move |ms: u64| {
        s.fetch_add(1, Ordering::SeqCst);
        let now = r.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(now, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(ms));
        r.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    });
    let stopped = Arc::new(AtomicBool::new(false));
    let st = stopped.clone();
    server.register_typed_with_context("watch", move |ctx: CallContext, (): ()| {
        let t0 = Instant::now();
        while !ctx.is_cancelled() && t0.elapsed() < Duration::from_secs(5) {
            thread::sleep(2 * MS);
        }
        st.store(ctx.is_cancelled(), Ordering::SeqCst);
        Ok(())
    });
    let (addr, _serving) = serve(&server);
    let c = client(addr, RpcClientConfig::default());
    for _ in 0..50 {
        c.notify("note", &200u64).unwrap();
    }
    assert!(eventually(Duration::from_secs(5), || started
        .load(Ordering::SeqCst)
        > 0
        && running.load(Ordering::SeqCst) == 0));
    thread::sleep(300 * MS);
    let (peak, started) = (peak.load(Ordering::SeqCst), started.load(Ordering::SeqCst));
    assert!(peak <= 4, "{peak} notification handlers at once");
    assert!(started < 50, "all {started} notifications ran");
    c.notify("watch", &()).unwrap();
    assert!(
        eventually(Duration::from_secs(3), || stopped.load(Ordering::SeqCst)),
        "the notification's handler was never told to stop"
    );
}

/// A stream to a client that reads nothing (a window of `u32::MAX`) is bounded by the server's
/// output budget: its handler's sends wait. When the client leaves, the handler stops.
#[test]
fn a_stream_to_a_client_that_reads_nothing_is_bounded() {
    const ITEM: usize = 64 * 1024;
    let config = ServerConfig {
        max_queued_output_total: 4 << 20,
        max_transmit_backlog: 4 << 20,
        ..ServerConfig::default()
    };
    let server = RpcServer::with_config(BincodeCodec, config);
    let produced = Arc::new(AtomicUsize::new(0));
    let p = produced.clone();
    server.register_stream("produce", move |(): (), tx: ServerStreamSender<String>| {
        let item = "x".repeat(ITEM);
        loop {
            tx.send(&item)?;
            p.fetch_add(1, Ordering::Relaxed);
        }
    });
    let (addr, _serving) = serve(&server);
    let raw = TcpFrameTransport::connect(addr, TcpConfig::default())
        .unwrap()
        .into_inner();
    let request = Header {
        server_stream: true,
        window: Some(u32::MAX),
        ..Header::new(MessageKind::Request, 1).with_codec(BincodeCodec::ID)
    };
    let mut frame = BytesMut::new();
    MessageEncoder::default()
        .encode(&request, "produce", b"", &mut frame)
        .unwrap();
    Blocking::block_on(raw.send_frame(&frame[4..])).unwrap();
    thread::sleep(Duration::from_secs(1));
    let n = produced.load(Ordering::Relaxed);
    assert!(n > 0, "the stream never started");
    // 4 MiB of budget, a batch being written, the socket buffers, and slack: 32 MiB. Without
    // the bound it is gigabytes.
    assert!(
        n * ITEM <= 32 << 20,
        "{n} items produced for a client that reads nothing"
    );
    drop(raw);
    thread::sleep(500 * MS);
    let after = produced.load(Ordering::Relaxed);
    thread::sleep(500 * MS);
    assert!(
        produced.load(Ordering::Relaxed) - after <= 1,
        "the handler ran on after its client left"
    );
}

/// An idle client sends its heartbeats: a server that answers nothing is noticed with no call
/// made (the old blocking client only pinged while a call waited).
#[test]
fn an_idle_client_notices_a_silent_server() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = thread::spawn(move || {
        let (conn, _) = silent.accept().unwrap();
        thread::sleep(Duration::from_secs(3));
        drop(conn);
    });
    let c = client(
        addr,
        RpcClientConfig {
            heartbeat_interval: Some(20 * MS),
            heartbeat_misses: 3,
            ..RpcClientConfig::default()
        },
    );
    let t0 = Instant::now();
    assert!(
        eventually(Duration::from_secs(2), || !c.is_connected()),
        "an idle client never noticed that its server answers nothing"
    );
    assert!(t0.elapsed() >= 50 * MS, "{:?}", t0.elapsed());
    let _ = holder.join();

    // A live server answers the pings of an idle client.
    let server = RpcServer::new();
    server.register_typed("add", |(a, b): (u64, u64)| Ok(a + b));
    let (addr, _serving) = serve(&server);
    let c = client(
        addr,
        RpcClientConfig {
            heartbeat_interval: Some(20 * MS),
            heartbeat_misses: 5,
            ..RpcClientConfig::default()
        },
    );
    thread::sleep(500 * MS);
    assert!(c.is_connected());
    assert_eq!(c.call::<_, u64>("add", &(1u64, 2u64)).unwrap(), 3);
}
