//! The core stands alone: an xrpc client with no async runtime — `std::net` and this thread
//! drive a [`ClientSession`] against the tokio example server.
//!
//! ```text
//! cargo run --example rpc_client_server -- server      # terminal 1 (XRPC_ADDR to move it)
//! cargo run -p xrpc-proto --example std_client         # terminal 2
//! ```
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::task::Poll;
use std::time::{Duration, Instant};

use serde::Serialize;
use xrpc_proto::bytes::BytesMut;
use xrpc_proto::{BincodeCodec, CallError, CallKind, CallOptions, ClientSession, Codec, Payload};

type Error = Box<dyn std::error::Error>;

/// A socket and the session it carries: the whole adapter.
struct Connection {
    sock: TcpStream,
    session: ClientSession,
    out: BytesMut,
}

impl Connection {
    fn connect(addr: &str) -> Result<Self, Error> {
        let sock = TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        let session = ClientSession::new(Default::default(), Default::default(), Instant::now());
        Ok(Self {
            sock,
            session,
            out: BytesMut::new(),
        })
    }

    fn start(
        &mut self,
        method: &str,
        req: &impl Serialize,
        opts: CallOptions,
    ) -> Result<u64, Error> {
        let payload = Payload::Bytes(BincodeCodec.encode(req)?);
        Ok(self
            .session
            .start_call(Instant::now(), method, payload, opts)?)
    }

    /// Drives the connection until `ready` has an answer from the session: writes what the
    /// session has to send, reads, and fires its timers when the socket stays quiet until the
    /// next deadline.
    fn until<T>(
        &mut self,
        mut ready: impl FnMut(&mut ClientSession) -> Poll<T>,
    ) -> Result<T, Error> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            while self.session.poll_transmit(&mut self.out) {
                self.sock.write_all(&self.out)?;
                self.out.clear();
            }
            // One thread waits for everything: nobody else to wake.
            while self.session.poll_wake().is_some() {}
            if let Poll::Ready(v) = ready(&mut self.session) {
                return Ok(v);
            }
            if self.session.is_closed() {
                return Err(self.session.close_reason().unwrap_or("closed").into());
            }
            let now = Instant::now();
            let wait = self
                .session
                .poll_timeout()
                .map(|t| t.saturating_duration_since(now));
            if wait == Some(Duration::ZERO) {
                self.session.handle_timeout(now);
                continue;
            }
            self.sock.set_read_timeout(wait)?;
            match self.sock.read(&mut buf) {
                Ok(0) => self.session.handle_eof(Instant::now()),
                Ok(n) => self.session.handle_bytes(Instant::now(), &buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.session.handle_timeout(Instant::now())
                }
                Err(e) => self.session.handle_transport_error(e),
            }
        }
    }

    /// The outcome of unary call `id`.
    fn wait(&mut self, id: u64) -> Result<Result<Payload, CallError>, Error> {
        self.until(|s| s.take_response(id))
    }
}

fn bytes(p: Payload) -> Result<xrpc_proto::bytes::Bytes, Error> {
    match p {
        Payload::Bytes(b) => Ok(b),
        Payload::Value(_) => Err("a value over TCP".into()),
    }
}

fn main() -> Result<(), Error> {
    let addr = std::env::var("XRPC_ADDR").unwrap_or_else(|_| "127.0.0.1:47800".into());
    let mut c = Connection::connect(&addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    let unary = CallOptions::unary(BincodeCodec::ID);

    // 1. A unary call. Bincode encodes `AddRequest { a, b }` as the tuple `(a, b)`, and
    // `AddResponse { result }` as `result`.
    let id = c.start("add", &(1i32, 2i32), unary.clone())?;
    let sum: i32 = BincodeCodec.decode(&bytes(c.wait(id)??)?)?;
    println!("std_client: add(1, 2) = {sum}");

    // 2. A server stream of 100 items, granting credit as items are taken.
    let id = c.start(
        "count",
        &100u32,
        unary.clone().with_kind(CallKind::ServerStreaming),
    )?;
    let (mut items, mut sum) = (0u32, 0u64);
    while let Some(item) = c.until(|s| s.next_item(id))? {
        sum += u64::from(BincodeCodec.decode::<u32>(&bytes(item?)?)?);
        items += 1;
    }
    println!("std_client: count(100) streamed {items} items, sum {sum}");

    // 3. A call whose deadline passes: 500 ms of work, 50 ms allowed.
    let t0 = Instant::now();
    let id = c.start(
        "sleep",
        &500u64,
        unary.with_timeout(Duration::from_millis(50)),
    )?;
    match c.wait(id)? {
        Err(CallError::Timeout) => println!(
            "std_client: sleep(500 ms) timed out after {:?}",
            t0.elapsed()
        ),
        other => return Err(format!("expected a timeout, got {other:?}").into()),
    }
    Ok(())
}
