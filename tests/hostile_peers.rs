//! Hostile peers (issue 14): raw sockets that write what no xrpc endpoint would — garbage,
//! truncated frames, 4 GiB length prefixes, unknown kinds, duplicate request ids, answers sent
//! to a server — and a shared-memory peer that scribbles the ring heads, tails and record
//! lengths. Each time the server closes that connection only, never panics, and keeps serving
//! a well-behaved client. A client facing a hostile server ignores answers to calls it never
//! made, and fails its pending call with a typed error on garbage.
//!
//! (Decoder-level cases live in `xrpc-proto`'s tests, ring-level ones in `xrpc-shm`'s; the
//! hangs of a correct peer in `tests/rpc_robustness.rs`. Here they meet a real server over
//! real transports.)

#[macro_use]
mod reliability;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reliability::{Addr, AnyClient, AnyListener, Echo, Kind, test_server};
use xrpc::{MessageChannelAdapter, RequestStream, RpcClient, RpcServer, UnixConfig};
use xrpc::{RpcError, UnixFrameTransport};

/// How long a hostile connection may stay open after its offence (a malformed message ends
/// the reading at once; the calls it started get the shutdown grace, 5 s by default).
const CLOSED_WITHIN: Duration = Duration::from_secs(10);

/// The names of the threads that panicked (a server task that panicked would also close its
/// connection: closing alone does not prove there was no panic).
static PANICKED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A two-worker runtime whose threads (workers and blocking) are named `name`, with panics
/// counted by thread name: each test runs its endpoints on a runtime of its own name and checks
/// with [`panics_in`] that none of its threads panicked.
fn counted_runtime(name: &str) -> tokio::runtime::Runtime {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            PANICKED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(name);
            default(info);
        }));
    });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

/// How many threads named `name` panicked.
fn panics_in(name: &str) -> usize {
    let panicked = PANICKED.lock().unwrap_or_else(|e| e.into_inner());
    panicked.iter().filter(|n| *n == name).count()
}

// ---- hand-made messages (docs/PROTOCOL.md §1–§3) ----

const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;
const ERROR: u8 = 3;
const NOTIFICATION: u8 = 4;
const STREAM_ITEM: u8 = 5;
const STREAM_END: u8 = 6;
const PING: u8 = 8;
const PONG: u8 = 9;
const CREDIT: u8 = 10;
const CANCEL: u8 = 7;
const CLIENT_STREAM: u8 = 0x02;
const HAS_WINDOW: u8 = 0x08;
const HAS_METADATA: u8 = 0x10;

/// A message with a metadata block (`block` after its u16 length, PROTOCOL.md §2.5).
fn with_metadata(kind: u8, id: u64, method: &str, block: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = message(kind, HAS_METADATA, id, method, b"");
    m.extend_from_slice(&(block.len() as u16).to_le_bytes());
    m.extend_from_slice(block);
    m.extend_from_slice(payload);
    m
}

/// A metadata block of `n` entries `k<i>` of `size`-byte values.
fn metadata_block(n: usize, size: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..n {
        let key = format!("k{i}");
        b.push(key.len() as u8);
        b.extend_from_slice(key.as_bytes());
        b.extend_from_slice(&(size as u16).to_le_bytes());
        b.extend(std::iter::repeat_n(b'v', size));
    }
    b
}

/// A message (no length prefix): fixed header, optional window, method, payload.
fn message(kind: u8, flags: u8, id: u64, method: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![b'X', b'R', 1, kind, flags, 0, 0, method.len() as u8];
    m.extend_from_slice(&id.to_le_bytes());
    if flags & HAS_WINDOW != 0 {
        m.extend_from_slice(&1u32.to_le_bytes());
    }
    m.extend_from_slice(method.as_bytes());
    m.extend_from_slice(payload);
    m
}

/// `message` with its 4-byte length prefix.
fn frame(kind: u8, flags: u8, id: u64, method: &str, payload: &[u8]) -> Vec<u8> {
    prefixed(&message(kind, flags, id, method, payload))
}

fn prefixed(m: &[u8]) -> Vec<u8> {
    let mut f = (m.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(m);
    f
}

/// What a hostile client sends, and whether it then half-closes its side.
struct Offence {
    name: &'static str,
    bytes: Vec<u8>,
    half_close: bool,
}

fn offences() -> Vec<Offence> {
    let o = |name, bytes| Offence {
        name,
        bytes,
        half_close: false,
    };
    let mut garbage = Vec::with_capacity(64 * 1024);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while garbage.len() < 64 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        garbage.extend_from_slice(&x.to_le_bytes());
    }
    let mut bad_magic = frame(PING, 0, 1, "", b"");
    bad_magic[4] = b'Y';
    let mut bad_version = frame(PING, 0, 1, "", b"");
    bad_version[6] = 2;
    let mut reserved_flags = frame(PING, 0, 1, "", b"");
    reserved_flags[8] = 0x80;
    let mut bad_compression = frame(PING, 0, 1, "", b"");
    bad_compression[10] = 7;
    let mut corrupt_zstd = message(REQUEST, 0, 1, "slow", &[16, 0, 0, 0, 1, 2, 3, 4, 5]);
    corrupt_zstd[6] = 2;
    let mut duplicate = frame(REQUEST, 0, 5, "slow", b"a");
    duplicate.extend(frame(REQUEST, 0, 5, "slow", b"b"));
    let mut past_credit = frame(REQUEST, CLIENT_STREAM, 3, "stall", b"");
    for _ in 0..64 {
        past_credit.extend(frame(STREAM_ITEM, 0, 3, "", &[0]));
    }
    let mut half = (16u32 << 20).to_le_bytes().to_vec();
    half.extend(vec![0u8; 1 << 20]);
    // A frame over the maximum is skipped (issue 24): its head, here garbage, says it is no
    // message at all.
    let over = |len: u32| {
        let mut b = len.to_le_bytes().to_vec();
        b.extend_from_slice(&[0xA5; 4096]);
        b
    };
    vec![
        o("64 KiB of garbage", garbage),
        o("a 4 GiB length prefix (then garbage)", over(u32::MAX)),
        o(
            "a length prefix over the maximum (then garbage)",
            over(16u32 << 20 | 1),
        ),
        o("a zero-length frame", 0u32.to_le_bytes().to_vec()),
        o("a frame shorter than a header", prefixed(b"XR\x01\x08")),
        o("bad magic", bad_magic),
        o("version 2", bad_version),
        o("kind 0", frame(0, 0, 1, "", b"")),
        o("kind 11", frame(11, 0, 1, "", b"")),
        o("kind 255", frame(255, 0, 1, "", b"")),
        o("reserved flag bits", reserved_flags),
        o("compression 7", bad_compression),
        o("a corrupt Zstd body", prefixed(&corrupt_zstd)),
        o(
            "a method length past the end",
            prefixed(&{
                let mut m = message(REQUEST, 0, 1, "slow", b"");
                m[7] = 200;
                m
            }),
        ),
        o(
            "a method name that is not UTF-8",
            frame(REQUEST, 0, 1, "\u{0}", b"")
                .iter()
                .enumerate()
                .map(|(i, b)| if i == 20 { 0xFF } else { *b })
                .collect(),
        ),
        o("a Credit without its window", frame(CREDIT, 0, 1, "", b"")),
        o(
            "a metadata value past the end of its block",
            prefixed(&with_metadata(
                REQUEST,
                1,
                "slow",
                &[1, b'k', 200, 0, b'v'],
                b"",
            )),
        ),
        o(
            "a metadata key twice",
            prefixed(&with_metadata(
                NOTIFICATION,
                0,
                "slow",
                &[1, b'k', 0, 0, 1, b'k', 0, 0],
                b"",
            )),
        ),
        o(
            "a metadata key with a control character",
            prefixed(&with_metadata(REQUEST, 1, "slow", &[1, 0x07, 0, 0], b"")),
        ),
        o(
            "a metadata block longer than its frame",
            prefixed(&{
                let mut m = with_metadata(REQUEST, 1, "slow", &[1, b'k', 0, 0], b"");
                m[20..22].copy_from_slice(&u16::MAX.to_le_bytes()); // after "slow"
                m
            }),
        ),
        o(
            "metadata on a Cancel",
            prefixed(&with_metadata(CANCEL, 1, "", &[1, b'k', 0, 0], b"")),
        ),
        o(
            "a Response sent to the server",
            frame(RESPONSE, 0, 1, "", b"x"),
        ),
        o(
            "an Error sent to the server",
            frame(ERROR, 0, 1, "", &[1, 0]),
        ),
        o("a duplicate request id", duplicate),
        o("stream items past the granted credit", past_credit),
        Offence {
            name: "a frame cut short, then the end of input",
            bytes: half,
            half_close: true,
        },
    ]
}

// ---- the server side ----

/// The test server plus `slow` (answers its payload after 200 ms) and `stall` (a client
/// stream it never reads).
fn hostile_test_server() -> RpcServer {
    let server = test_server();
    server.register("slow", |b: Bytes| async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(b)
    });
    server.register_client_stream("stall", |items: RequestStream<u8>| async move {
        let _keep = items;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(0u8)
    });
    server
}

/// A raw connection to a server.
enum Raw {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Raw {
    fn connect(addr: &Addr) -> Raw {
        match addr {
            Addr::Tcp(a) => Raw::Tcp(TcpStream::connect(a).unwrap()),
            Addr::Unix(p) => Raw::Unix(UnixStream::connect(p).unwrap()),
            Addr::Shm(_) => unreachable!("shared memory has its own hostile peer"),
        }
    }

    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Raw::Tcp(s) => s,
            Raw::Unix(s) => s,
        }
    }

    fn set_read_timeout(&self, t: Duration) {
        match self {
            Raw::Tcp(s) => s.set_read_timeout(Some(t)).unwrap(),
            Raw::Unix(s) => s.set_read_timeout(Some(t)).unwrap(),
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Raw::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Raw::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }

    /// Reads (and drops) whatever the server sends until it closes the connection; panics if
    /// it is still open after `within`.
    fn wait_closed(&mut self, within: Duration, what: &str) -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 64 * 1024];
        loop {
            let left = within.saturating_sub(start.elapsed());
            assert!(!left.is_zero(), "{what}: still open after {within:?}");
            self.set_read_timeout(left);
            match self.io().read(&mut buf) {
                Ok(0) => return start.elapsed(),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return start.elapsed(),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("{what}: read failed: {e}"),
            }
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn hostile_clients(kind: Kind) {
    let threads = &format!("hostile-{kind:?}");
    let rt = counted_runtime(threads);
    rt.block_on(async {
        let (listener, addr) = AnyListener::bind(&Addr::fresh(kind, "hostile"))
            .await
            .unwrap();
        tokio::spawn(listener.serve(hostile_test_server()));
        let good = AnyClient::connect_retrying(&addr).await;
        // The control: a well-formed Ping is answered and the connection stays open (so that
        // "closed" below is the server's answer to the offence).
        let addr2 = addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut raw = Raw::connect(&addr2);
            raw.io().write_all(&frame(PING, 0, 1, "", b"hi")).unwrap();
            let pong = frame(PONG, 0, 1, "", b"hi");
            let mut got = vec![0u8; pong.len()];
            raw.set_read_timeout(Duration::from_secs(5));
            raw.io().read_exact(&mut got).unwrap();
            assert_eq!(got, pong);
            raw.set_read_timeout(Duration::from_millis(300));
            match raw.io().read(&mut got) {
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                other => panic!("a well-behaved raw client was cut off: {other:?}"),
            }
        })
        .await
        .unwrap();
        for (n, offence) in offences().into_iter().enumerate() {
            let what = format!("{kind:?}, {}", offence.name);
            let addr2 = addr.clone();
            let took = tokio::task::spawn_blocking(move || {
                let mut raw = Raw::connect(&addr2);
                // The server may close before all is written: a failed write is fine.
                let _ = raw.io().write_all(&offence.bytes);
                if offence.half_close {
                    raw.shutdown_write();
                }
                raw.wait_closed(CLOSED_WITHIN, &what)
            })
            .await
            .unwrap();
            println!("{kind:?}: {} — closed after {took:?}", offences()[n].name);
            // The server goes on serving others.
            let req = Echo::new(n as u32, 1);
            assert_eq!(
                good.echo(&req).await.unwrap(),
                req,
                "{kind:?}: served after {n}"
            );
        }
    });
    assert_eq!(panics_in(threads), 0, "a thread of this test panicked");
}

#[test]
fn hostile_clients_over_tcp() {
    hostile_clients(Kind::Tcp);
}

#[test]
fn hostile_clients_over_unix() {
    hostile_clients(Kind::Unix);
}

/// Well-formed metadata over the server's limits (4 KiB, 32 entries by default), from a raw
/// peer: a request is answered `ResourceExhausted` naming the limit, without running its
/// handler; a notification is dropped and counted; the connection goes on serving.
#[test]
fn metadata_over_the_limits_fails_its_call_and_the_connection_lives() {
    let rt = counted_runtime("metadata-limits");
    rt.block_on(async {
        let server = hostile_test_server();
        let (listener, addr) = AnyListener::bind(&Addr::fresh(Kind::Tcp, "metadata"))
            .await
            .unwrap();
        tokio::spawn(listener.serve(server.clone()));
        tokio::task::spawn_blocking(move || {
            let mut raw = Raw::connect(&addr);
            raw.set_read_timeout(Duration::from_secs(10));
            // 60 KiB of metadata (the most a header carries is 64 KiB), then 100 entries.
            let big = metadata_block(1, 60 * 1024);
            let many = metadata_block(100, 0);
            let mut bytes = prefixed(&with_metadata(REQUEST, 1, "slow", &big, b"x"));
            bytes.extend(prefixed(&with_metadata(REQUEST, 2, "slow", &many, b"x")));
            bytes.extend(prefixed(&with_metadata(
                NOTIFICATION,
                0,
                "slow",
                &big,
                b"x",
            )));
            bytes.extend(prefixed(&with_metadata(
                NOTIFICATION,
                0,
                "slow",
                &many,
                b"x",
            )));
            // Within the limits: served.
            let fine = metadata_block(2, 16);
            bytes.extend(prefixed(&with_metadata(REQUEST, 3, "slow", &fine, b"ok")));
            raw.io().write_all(&bytes).unwrap();
            let mut answers = std::collections::HashMap::new();
            while answers.len() < 3 {
                let mut len = [0u8; 4];
                raw.io().read_exact(&mut len).unwrap();
                let mut m = vec![0u8; u32::from_le_bytes(len) as usize];
                raw.io().read_exact(&mut m).unwrap();
                let id = u64::from_le_bytes(m[8..16].try_into().unwrap());
                answers.insert(id, (m[3], m[16..].to_vec()));
            }
            let text = |id: u64| {
                let (kind, payload) = &answers[&id];
                assert_eq!(*kind, ERROR, "call {id}");
                assert_eq!(payload[..2], [9, 0], "ResourceExhausted");
                String::from_utf8(payload[2..].to_vec()).unwrap()
            };
            assert_eq!(
                text(1),
                "metadata of 61445 bytes exceeds max_metadata_bytes 4096"
            );
            assert_eq!(
                text(2),
                "metadata of 100 entries exceeds max_metadata_entries 32"
            );
            assert_eq!(
                answers[&3],
                (RESPONSE, b"ok".to_vec()),
                "the connection lives"
            );
        })
        .await
        .unwrap();
        let n = server.stats().notifications;
        assert_eq!(n.metadata_over_limit, 2, "{n:?}");
    });
    assert_eq!(panics_in("metadata-limits"), 0);
}

// ---- the client side ----

/// Reads one length-prefixed message (panics on EOF).
fn read_message(s: &mut UnixStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("a frame from the client");
    let mut m = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut m).expect("a frame from the client");
    m
}

/// The id, codec and payload of a Request (docs/PROTOCOL.md §2).
fn parse_request(m: &[u8]) -> (u64, u8, Vec<u8>) {
    assert_eq!(m[3], REQUEST, "a Request");
    let id = u64::from_le_bytes(m[8..16].try_into().unwrap());
    let mut at = 16 + if m[4] & 0x01 != 0 { 8 } else { 0 };
    at += if m[4] & HAS_WINDOW != 0 { 4 } else { 0 };
    at += m[7] as usize;
    (id, m[5], m[at..].to_vec())
}

/// A client on one end of a socket pair, `raw_server` on a thread with the other end; the
/// client's calls time out after 30 s (the default).
fn client_against(
    rt: &tokio::runtime::Runtime,
    raw_server: impl FnOnce(UnixStream) + Send + 'static,
) -> RpcClient<MessageChannelAdapter<UnixFrameTransport>> {
    let (c, s) = UnixStream::pair().unwrap();
    std::thread::spawn(move || raw_server(s));
    c.set_nonblocking(true).unwrap();
    let _enter = rt.enter();
    let c = tokio::net::UnixStream::from_std(c).unwrap();
    let client = RpcClient::new(MessageChannelAdapter::new(
        UnixFrameTransport::from_stream(c, UnixConfig::default(), "client").unwrap(),
    ));
    let _ = client.start();
    client
}

#[test]
fn a_client_ignores_answers_to_calls_it_never_made() {
    let threads = "a_client_ignores_answers_to_ca";
    let rt = counted_runtime(threads);
    let client = client_against(&rt, |mut s| {
        loop {
            let Ok(len) = (|| -> std::io::Result<[u8; 4]> {
                let mut len = [0u8; 4];
                s.read_exact(&mut len)?;
                Ok(len)
            })() else {
                return;
            };
            let mut m = vec![0u8; u32::from_le_bytes(len) as usize];
            s.read_exact(&mut m).unwrap();
            let (id, codec, payload) = parse_request(&m);
            let mut out = Vec::new();
            // Answers to calls never made, stream messages for streams that do not exist,
            // unsolicited Pongs and credit, and kinds a client never receives.
            out.extend(frame(RESPONSE, 0, id + 100, "", &payload));
            out.extend(frame(ERROR, 0, id + 1000, "", &[2, 0, b'n', b'o']));
            out.extend(frame(STREAM_ITEM, 0, 77, "", b"item"));
            out.extend(frame(STREAM_END, 0, 78, "", b""));
            out.extend(frame(CREDIT, HAS_WINDOW, 79, "", b""));
            out.extend(frame(PONG, 0, 5, "", b"pong"));
            out.extend(frame(REQUEST, 0, 80, "echo", &payload));
            out.extend(frame(NOTIFICATION, 0, 0, "echo", &payload));
            out.extend(frame(7, 0, id, "", b"")); // Cancel
            // Then the real answer.
            let mut answer = message(RESPONSE, 0, id, "", &payload);
            answer[5] = codec;
            out.extend(prefixed(&answer));
            s.write_all(&out).unwrap();
        }
    });
    rt.block_on(async {
        for seq in 0..3 {
            let req = Echo::new(1, seq);
            let answer: Echo =
                tokio::time::timeout(Duration::from_secs(5), client.call("echo", &req))
                    .await
                    .expect("answered")
                    .expect("the right answer, despite the strays");
            assert_eq!(answer, req);
        }
    });
    assert_eq!(panics_in(threads), 0, "a thread of this test panicked");
}

#[test]
fn a_client_fails_its_call_on_a_hostile_server() {
    let threads = "a_client_fails_its_call_on_a_h";
    let rt = counted_runtime(threads);
    /// What the hostile server answers to the request of the given id.
    type Answer = fn(u64) -> Vec<u8>;
    let answers: Vec<(&str, Answer)> = vec![
        ("garbage", |_| vec![0xA5; 4096]),
        ("a 4 GiB length prefix, then garbage", |_| {
            let mut b = u32::MAX.to_le_bytes().to_vec();
            b.extend_from_slice(&[0xA5; 4096]);
            b
        }),
        ("kind 11", |id| frame(11, 0, id, "", b"")),
        ("a stream item on a unary call", |id| {
            frame(STREAM_ITEM, 0, id, "", b"x")
        }),
        ("a Response that does not decode", |id| {
            let mut m = message(RESPONSE, 0, id, "", &[0xFF; 3]);
            m[5] = 1; // bincode
            prefixed(&m)
        }),
    ];
    for (what, answer) in answers {
        let client = client_against(&rt, move |mut s| {
            let m = read_message(&mut s);
            let (id, _, _) = parse_request(&m);
            let _ = s.write_all(&answer(id));
            // Keep the connection open: the client must notice the offence by itself.
            std::thread::sleep(Duration::from_secs(8));
        });
        let r: Result<Echo, RpcError> = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                client.call("echo", &Echo::new(1, 1)),
            )
            .await
            .unwrap_or_else(|_| panic!("{what}: the call still pending after 5 s"))
        });
        let err = r.expect_err(what);
        assert!(!matches!(err, RpcError::Timeout), "{what}: {err:?}");
        println!("a hostile server's {what}: the call failed with {err:?}");
    }
    assert_eq!(panics_in(threads), 0, "a thread of this test panicked");
}

// ---- a hostile shared-memory peer (docs/PROTOCOL.md §8) ----

const KIND_FRAME: u64 = 0x4652_4d58;
const KIND_PAD: u64 = 0x5041_4458;
const KIND_FIRST: u64 = 0x5453_5258;
const KIND_NEXT: u64 = 0x544e_4358;

/// A shared-memory client that does the handshake by hand and then writes into the segment
/// whatever it likes (through the memfd, `pwrite`: no mapping needed).
struct Scribbler {
    /// The rendezvous socket: a byte on it rings the server's consumer doorbell.
    sock: UnixStream,
    segment: std::fs::File,
    /// The room socket (the server's producer doorbell is at its other end).
    _room: UnixStream,
    /// Ring capacity `C`.
    cap: u64,
    /// Our published position in ring 0.
    head: u64,
}

impl Scribbler {
    fn connect(service: &str) -> Scribbler {
        use std::os::fd::OwnedFd;
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::fs::FileExt;
        use std::os::unix::net::SocketAddr;
        let addr = SocketAddr::from_abstract_name(format!("xrpc-shm/{service}")).unwrap();
        let sock = UnixStream::connect_addr(&addr).unwrap();
        let mut hello = [0u8; 16];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let msg = rustix::net::recvmsg(
            &sock,
            &mut [std::io::IoSliceMut::new(&mut hello)],
            &mut control,
            rustix::net::RecvFlags::CMSG_CLOEXEC,
        )
        .unwrap();
        assert_eq!(&hello[..msg.bytes], b"XRPCSHM3");
        let mut fds: Vec<OwnedFd> = Vec::new();
        for m in control.drain() {
            if let rustix::net::RecvAncillaryMessage::ScmRights(it) = m {
                fds.extend(it);
            }
        }
        assert_eq!(fds.len(), 2, "a segment and the room socket");
        let mut fds = fds.into_iter();
        let segment = std::fs::File::from(fds.next().unwrap());
        let room = UnixStream::from(fds.next().unwrap());
        let mut cap = [0u8; 8];
        segment.read_exact_at(&mut cap, 16).unwrap();
        Scribbler {
            sock,
            segment,
            _room: room,
            cap: u64::from_le_bytes(cap),
            head: 0,
        }
    }

    fn write(&self, offset: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        self.segment.write_all_at(bytes, offset).unwrap();
    }

    fn read_u64(&self, offset: u64) -> u64 {
        use std::os::unix::fs::FileExt;
        let mut w = [0u8; 8];
        self.segment.read_exact_at(&mut w, offset).unwrap();
        u64::from_ne_bytes(w)
    }

    /// Ring 0 (client → server): head, tail, data.
    const HEAD0: u64 = 128;
    const TAIL0: u64 = 256;
    const DATA0: u64 = 512;

    /// Ring 1 (server → client) head and tail.
    fn head1(&self) -> u64 {
        512 + self.cap
    }

    fn tail1(&self) -> u64 {
        512 + self.cap + 128
    }

    /// Stores ring 0's head and rings the server's doorbell (unless the server closed the
    /// connection already).
    fn publish(&mut self, head: u64) {
        self.head = head;
        self.write(Self::HEAD0, &head.to_ne_bytes());
        let _ = (&self.sock).write(&[1]);
    }

    /// Writes a record (header and payload) at our position in ring 0, without publishing it;
    /// returns the position after it.
    /// A record that does not fit before the end of the data goes to its start, after a
    /// padding record (§8.3).
    fn record(&mut self, kind: u64, len: u64, payload: &[u8]) -> u64 {
        let size = 8 + (payload.len() as u64).div_ceil(8) * 8;
        let at = self.head % self.cap;
        if at + size > self.cap {
            let pad = self.cap - at - 8;
            self.write(Self::DATA0 + at, &(pad | KIND_PAD << 32).to_ne_bytes());
            self.head += self.cap - at;
        }
        let at = self.head % self.cap;
        self.write(Self::DATA0 + at, &(len | kind << 32).to_ne_bytes());
        self.write(Self::DATA0 + at + 8, payload);
        self.head + size
    }

    /// Publishes one well-formed frame record holding `message`.
    fn send(&mut self, message: &[u8]) {
        let next = self.record(KIND_FRAME, message.len() as u64, message);
        self.publish(next);
    }

    /// Waits until the server has consumed everything published.
    fn wait_consumed(&self) {
        let start = Instant::now();
        while self.read_u64(Self::TAIL0) != self.head {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the server reads nothing"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until the server has consumed everything published, or has closed the
    /// connection (then returns at once).
    fn wait_consumed_or_closed(&self) {
        let start = Instant::now();
        while self.read_u64(Self::TAIL0) != self.head {
            let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
            let closed = matches!(
                rustix::net::recv(&self.sock, &mut [0u8; 1], flags),
                Ok((0, _))
            );
            if closed || start.elapsed() > Duration::from_secs(5) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until the server shuts the rendezvous socket down (how a side that finds the
    /// memory corrupt closes the connection); panics after `within`. Doorbell bytes (a
    /// closing ring wakes its peer) are skipped.
    fn wait_closed(&mut self, within: Duration, what: &str) -> Duration {
        let start = Instant::now();
        loop {
            let left = within
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(1));
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.read(&mut [0u8; 16]) {
                Ok(0) => return start.elapsed(),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return start.elapsed(),
                Ok(_) if start.elapsed() < within => {}
                other => {
                    panic!("{what}: the connection is still open after {within:?}: {other:?}")
                }
            }
        }
    }
}

#[test]
fn hostile_shared_memory_peers() {
    let threads = "hostile_shared_memory_peers";
    let rt = counted_runtime(threads);
    let addr = Addr::fresh(Kind::Shm, "scribble");
    let service = match &addr {
        Addr::Shm(n) => n.clone(),
        _ => unreachable!(),
    };
    rt.block_on(async {
        let (listener, _) = AnyListener::bind(&addr).await.unwrap();
        tokio::spawn(listener.serve(hostile_test_server()));
        let good = AnyClient::connect_retrying(&addr).await;
        let ping = message(PING, 0, 1, "", b"hi");

        // The control: a well-formed Ping record is answered (ring 1's head moves), and the
        // connection stays open.
        let mut s = Scribbler::connect(&service);
        s.send(&ping);
        s.wait_consumed();
        let start = Instant::now();
        while s.read_u64(s.head1()) == 0 {
            assert!(start.elapsed() < Duration::from_secs(5), "no Pong");
            std::thread::sleep(Duration::from_millis(1));
        }
        s.sock
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            matches!(s.sock.read(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock),
            "a well-behaved shared-memory peer was cut off"
        );

        type Attack = fn(&mut Scribbler, &[u8]);
        let attacks: Vec<(&str, Attack)> = vec![
            ("head not a multiple of 8", |s, _| s.publish(3)),
            ("head more than a ring ahead of tail", |s, _| {
                let c = s.cap;
                s.publish(c + 8)
            }),
            ("head moving backwards", |s, ping| {
                s.send(ping);
                s.wait_consumed();
                s.publish(0);
            }),
            ("a record of unknown kind", |s, _| {
                let next = s.record(0xDEAD_BEEF, 8, &[0; 8]);
                s.publish(next)
            }),
            ("a record longer than a ring's piece", |s, _| {
                let l = s.cap / 2;
                s.record(KIND_FRAME, l, &[]);
                s.publish(8 + l)
            }),
            ("a record past the published bytes", |s, _| {
                s.record(KIND_FRAME, 64, &[]);
                s.publish(16)
            }),
            ("a first piece above the maximum frame", |s, _| {
                let mut p = (u64::from(u32::MAX) + 1).to_le_bytes().to_vec();
                p.extend([0u8; 8]);
                let next = s.record(KIND_FIRST, 16, &p);
                s.publish(next)
            }),
            ("a next piece with no first piece", |s, _| {
                let next = s.record(KIND_NEXT, 8, &[0; 8]);
                s.publish(next)
            }),
            ("a padding record that does not reach the end", |s, _| {
                let next = s.record(KIND_PAD, 8, &[0; 8]);
                s.publish(next)
            }),
            ("a frame record holding garbage", |s, _| s.send(&[0xFF; 40])),
            ("the tail of the server's ring scribbled", |s, _| {
                // The server reads our tail when its ring looks full: Pongs of a quarter of
                // the ring each fill it.
                let t = s.tail1();
                s.write(t, &(1u64 << 40).to_ne_bytes());
                let big = message(PING, 0, 1, "", &vec![7u8; s.cap as usize / 4]);
                for _ in 0..6 {
                    s.send(&big);
                    s.wait_consumed_or_closed();
                }
            }),
            ("the closed bits set", |s, _| {
                s.write(Scribbler::HEAD0 + 256, &3u32.to_ne_bytes());
                s.publish(s.head)
            }),
        ];
        for (n, (what, attack)) in attacks.into_iter().enumerate() {
            let (ping, service) = (ping.clone(), service.clone());
            let took = tokio::task::spawn_blocking(move || {
                let mut s = Scribbler::connect(&service);
                attack(&mut s, &ping);
                s.wait_closed(CLOSED_WITHIN, what)
            })
            .await
            .unwrap();
            println!("shm: {what} — closed after {took:?}");
            let req = Echo::new(n as u32, 2);
            assert_eq!(good.echo(&req).await.unwrap(), req, "served after {what}");
        }
    });
    assert_eq!(panics_in(threads), 0, "a thread of this test panicked");
}

#[test]
fn a_client_fails_a_stream_whose_server_sends_past_its_credit() {
    let threads = "a_client_fails_a_stream_whose_";
    let rt = counted_runtime(threads);
    let client = client_against(&rt, |mut s| {
        let m = read_message(&mut s);
        let (id, _, _) = parse_request(&m);
        assert!(
            m[4] & HAS_WINDOW != 0,
            "a server-stream request carries its window"
        );
        let window = u32::from_le_bytes(m[16..20].try_into().unwrap());
        let mut out = Vec::new();
        for n in 0..window as u64 + 10 {
            let mut item = message(STREAM_ITEM, 0, id, "", &[n as u8]);
            item[5] = 1; // bincode: a one-byte varint
            out.extend(prefixed(&item));
        }
        let _ = s.write_all(&out);
        std::thread::sleep(Duration::from_secs(8));
    });
    rt.block_on(async {
        let mut items = client
            .call_server_stream::<_, u8>("ticks", &0u64)
            .await
            .unwrap();
        // Read nothing until every item is in: taking items grants credit (half a window at a
        // time), which would make later items legitimate.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut ok = 0;
        let err = loop {
            match tokio::time::timeout(Duration::from_secs(5), items.recv()).await {
                Ok(Some(Ok(_))) => ok += 1,
                Ok(Some(Err(e))) => break e,
                Ok(None) => panic!("the stream ended normally after {ok} items"),
                Err(_) => panic!("the stream hangs after {ok} items"),
            }
        };
        println!("a server past its credit: {ok} items, then {err:?}");
        assert!(ok <= 32, "{ok} items taken beyond the window of 32");
        assert!(!matches!(err, RpcError::Timeout), "{err:?}");
    });
    assert_eq!(panics_in(threads), 0, "a thread of this test panicked");
}

// ---- doorbells no peer can make blocking (issue 24) ----

/// Runs `f` on a thread of its own and fails the test if it has not returned within `within`:
/// a runtime whose thread is stuck in a doorbell would never return (nor time out).
fn watchdog<T: Send + 'static>(
    within: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("{what}: stuck after {within:?}"))
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A hostile shared-memory client announces sleepers everywhere (so that the server rings it
/// after each answer and each release), makes every doorbell it reaches blocking, fills the
/// server's doorbells and never reads its own, and sends 20,000 Pings: the server, on one
/// thread, answers them all and serves a good client meanwhile, each call within its deadline.
/// (With the eventfd doorbells of protocol version 2 this froze the server.)
#[test]
fn a_hostile_shared_memory_client_cannot_freeze_the_server() {
    const PINGS: usize = 20_000;
    let addr = Addr::fresh(Kind::Shm, "bells");
    let service = match &addr {
        Addr::Shm(n) => n.clone(),
        _ => unreachable!(),
    };
    watchdog(Duration::from_secs(120), "the server", move || {
        current_thread_runtime().block_on(async {
            let (listener, _) = AnyListener::bind(&addr).await.unwrap();
            tokio::spawn(listener.serve(test_server()));
            let good = AnyClient::connect_retrying(&addr).await;
            let attack = tokio::task::spawn_blocking(move || {
                let mut h = xrpc_shm::testing::HostilePeer::connect(&service).unwrap();
                h.make_doorbells_blocking().unwrap();
                h.announce_sleepers_everywhere();
                let filled = h.fill_peer_doorbells();
                let ping = message(PING, 0, 1, "", b"hi");
                let (mut sent, start) = (0, Instant::now());
                while sent < PINGS && start.elapsed() < Duration::from_secs(60) {
                    h.consume_all();
                    match h.publish(&ping) {
                        Ok(()) => sent += 1,
                        Err(xrpc_shm::ShmError::Full) => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
                // Each Pong is at least 24 bytes of ring: wait until all are answered.
                while h.received() < 24 * PINGS as u64 && start.elapsed() < Duration::from_secs(60)
                {
                    h.consume_all();
                    std::thread::yield_now();
                }
                (h, filled, sent)
            });
            let mut n = 0u64;
            let mut slowest = Duration::ZERO;
            while !attack.is_finished() {
                let req = Echo::new(1, n);
                let start = Instant::now();
                let answer = good.echo_within(&req, Duration::from_secs(2)).await;
                assert_eq!(answer.unwrap(), req, "call {n} during the attack");
                slowest = slowest.max(start.elapsed());
                n += 1;
            }
            let (h, filled, sent) = attack.await.unwrap();
            assert_eq!(sent, PINGS);
            assert!(
                h.received() >= 24 * PINGS as u64,
                "the server stopped answering the hostile client after {} bytes",
                h.received()
            );
            println!(
                "a hostile shm client ({filled} bytes in the server's doorbells, {sent} Pings \
                 answered against full, blocking doorbells): {n} calls of a good client \
                 answered meanwhile, the slowest in {slowest:?}"
            );
            drop(h);
            let req = Echo::new(2, 0);
            assert_eq!(good.echo(&req).await.unwrap(), req);
        })
    });
}

/// A hostile shared-memory server announces sleepers everywhere (so that the client rings it
/// after each release), clears `O_NONBLOCK` on the client's end of the room socket (whose file
/// flags it shares), fills the client's doorbells, never reads its own, never answers, and
/// floods the client with answers to calls it never made. The client, on one thread: its
/// calls to that server end by their deadline, and its calls to another server are answered.
/// (With the eventfd doorbells of protocol version 2 the client froze.)
#[test]
fn a_hostile_shared_memory_server_cannot_freeze_a_client() {
    let name = xrpc_shm::testing::unique_name("hostile-shm-server");
    let listener = xrpc_shm::ShmListener::bind(&name, xrpc_shm::ShmConfig::default()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hostile = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut h = xrpc_shm::testing::HostilePeer::accept(&listener).unwrap();
            h.make_doorbells_blocking().unwrap();
            h.announce_sleepers_everywhere();
            let filled = h.fill_peer_doorbells();
            let answer = message(RESPONSE, 0, 1 << 40, "", b"");
            let mut published = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) && !h.peer_hung_up() {
                h.consume_all();
                // One at a time: the client hands the room of each back at once (it has read
                // everything), ringing our room doorbell, full and blocking.
                if h.peer_read_all() {
                    h.publish(&answer).unwrap();
                    published += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            (filled, published)
        })
    };
    // A good server in a runtime of its own.
    let good_rt = counted_runtime("hostile_shm_server_good");
    let good_addr = good_rt.block_on(reliability::spawn_test_server(&Addr::fresh(
        Kind::Shm,
        "good-shm-server",
    )));
    let outcome = watchdog(Duration::from_secs(60), "the client", move || {
        current_thread_runtime().block_on(async {
            let good = AnyClient::connect_retrying(&good_addr).await;
            let victim = RpcClient::new(MessageChannelAdapter::new(
                xrpc::SharedMemoryFrameTransport::connect(
                    &name,
                    xrpc::SharedMemoryConfig::default(),
                )
                .await
                .unwrap(),
            ));
            victim.try_start().unwrap();
            let mut outcomes = Vec::new();
            for n in 0..5u64 {
                let start = Instant::now();
                let r = victim
                    .call_with_timeout::<_, Echo>("echo", &Echo::new(9, n), Duration::from_secs(1))
                    .await;
                let took = start.elapsed();
                assert!(r.is_err(), "the hostile server never answers");
                assert!(
                    took < Duration::from_secs(3),
                    "call {n} ended after {took:?}: {r:?}"
                );
                let req = Echo::new(3, n);
                assert_eq!(
                    good.echo_within(&req, Duration::from_secs(2))
                        .await
                        .unwrap(),
                    req
                );
                outcomes.push((took, r.unwrap_err().to_string()));
            }
            outcomes
        })
    });
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (filled, published) = hostile.join().unwrap();
    println!(
        "a hostile shm server ({filled} bytes in the client's doorbells, {published} answers to \
         calls never made): the client's calls to it ended by their deadline ({:?}, {}), its \
         calls to another server answered",
        outcome[0].0, outcome[0].1
    );
}
