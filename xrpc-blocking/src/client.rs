//! [`RpcClient`]: blocking calls over one connection, from any number of threads.
//!
//! There is no background thread: **the calling thread drives the connection**. A call queues
//! its request in the [`ClientSession`] and writes it; then, while it waits for its answer,
//! one waiting thread at a time — the leader — reads the transport and feeds the session,
//! routing what arrives to the other waiting threads (parked with `std::thread::park`) and
//! waking them. When the leader's own answer arrives it hands the reading role to another
//! waiter and returns. The session's next deadline bounds every wait (a read timeout for the
//! leader, a park timeout for the others), so timeouts fire without a timer thread. Over
//! shared memory the leader waits on the ring itself (spin, then futex).

use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use xrpc_proto::idmap::{IdMap, id_map};
use xrpc_proto::{
    BincodeCodec, CallKind, CallOptions, ClientConfig, ClientSession, Codec, Payload, SendError,
    WireConfig, decode_payload, payload_bytes,
};

use crate::RpcError;
use crate::link::{Driven, Link, fire_timers};
use crate::stream::{BidiCall, ClientStreamCall, PendingResponse, StreamReceiver, StreamSender};
use crate::transport::{FrameTransport, Reader};

/// Client settings (the session's [`ClientConfig`]).
pub type RpcClientConfig = ClientConfig;

/// Longest park of a waiting thread: a bound on any wake-up this design could miss.
const MAX_PARK: Duration = Duration::from_secs(1);

/// The threads waiting for one call.
#[derive(Default)]
struct Waiter {
    threads: Vec<Thread>,
}

pub(crate) struct ClientState {
    session: ClientSession,
    waiters: IdMap<Waiter>,
    /// A thread is reading the transport (the leader).
    reading: bool,
}

impl Driven for ClientState {
    type Session = ClientSession;

    fn session(&mut self) -> &mut ClientSession {
        &mut self.session
    }

    fn route(&mut self) {
        while let Some(wake) = self.session.poll_wake() {
            if let Some(w) = self.waiters.get_mut(&wake.id()) {
                w.threads.drain(..).for_each(|t| t.unpark());
            }
        }
    }
}

impl ClientState {
    /// A thread parked on another call, to take over reading.
    fn next_leader(&self, me: &Thread) -> Option<Thread> {
        self.waiters
            .values()
            .flat_map(|w| w.threads.iter())
            .find(|t| t.id() != me.id())
            .cloned()
    }
}

/// One connection, shared by the clones of a client and by its streams.
pub(crate) struct Conn {
    link: Link<ClientState>,
    /// Taken by the leader only.
    reader: Mutex<Box<dyn Reader>>,
}

/// What a waiting thread checks, under the lock, each time it wakes: `Some` ends the wait.
pub(crate) type Ready<'a, T> = &'a mut dyn FnMut(&mut ClientState) -> Option<T>;

impl Conn {
    fn start(&self, method: &str, payload: Payload, opts: CallOptions) -> Result<u64, RpcError> {
        let id = {
            let mut st = self.link.lock();
            let id = st
                .session
                .start_call(Instant::now(), method, payload, opts)?;
            st.waiters.insert(id, Waiter::default());
            id
        };
        self.link.flush();
        Ok(id)
    }

    /// Waits until `ready` says the wait for call `id` is over, driving the connection
    /// meanwhile when no other thread does (see the [module docs](self)).
    pub(crate) fn wait<T>(&self, id: u64, ready: Ready<'_, T>) -> T {
        let me = thread::current();
        let mut st = self.link.lock();
        loop {
            let timeout = fire_timers(&mut st.session, Instant::now());
            st.route();
            if let Some(v) = ready(&mut st) {
                if let Some(w) = st.waiters.get_mut(&id) {
                    w.threads.retain(|t| t.id() != me.id());
                }
                let leader = (!st.reading).then(|| st.next_leader(&me)).flatten();
                let flush = st.session.has_transmit();
                drop(st);
                if let Some(t) = leader {
                    t.unpark();
                }
                if flush {
                    self.link.flush();
                }
                return v;
            }
            if st.session.has_transmit() {
                // Cancels of expired calls, credit, pongs.
                drop(st);
                self.link.flush();
                st = self.link.lock();
                continue;
            }
            if !st.reading && st.session.wants_read() {
                st.reading = true;
                drop(st);
                {
                    let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
                    self.link.read(&mut **reader, timeout);
                }
                st = self.link.lock();
                st.reading = false;
                continue;
            }
            if let Some(w) = st.waiters.get_mut(&id)
                && !w.threads.iter().any(|t| t.id() == me.id())
            {
                w.threads.push(me.clone());
            }
            drop(st);
            thread::park_timeout(timeout.map_or(MAX_PARK, |t| t.min(MAX_PARK)));
            st = self.link.lock();
        }
    }

    /// Gives up on call `id` (its stream or response was dropped) and tells the server.
    pub(crate) fn cancel(&self, id: u64) {
        let pending = {
            let mut st = self.link.lock();
            st.waiters.remove(&id);
            let pending = st.session.cancel(id);
            st.session.release(id);
            pending
        };
        if pending {
            self.link.flush();
        }
    }

    /// Runs `f` on the session, then writes what it queued.
    pub(crate) fn with_session<T>(&self, f: impl FnOnce(&mut ClientSession) -> T) -> T {
        let (r, flush) = {
            let mut st = self.link.lock();
            (f(&mut st.session), st.session.has_transmit())
        };
        if flush {
            self.link.flush();
        }
        r
    }

    fn close(&self, reason: &str) {
        {
            let mut st = self.link.lock();
            st.session.close(Instant::now(), reason);
            st.route();
        }
        // Writes what may still go (notifications), then ends the transport: a thread
        // reading wakes up.
        self.link.flush();
        self.link.closer.close();
    }
}

impl ClientState {
    /// The outcome of unary or client-streaming call `id`, once it came.
    pub(crate) fn response(&mut self, id: u64) -> Option<Result<Payload, RpcError>> {
        match self.session.take_response(id) {
            Poll::Ready(r) => {
                self.waiters.remove(&id);
                Some(r.map_err(RpcError::from))
            }
            Poll::Pending => None,
        }
    }

    /// The next item of call `id`'s server stream: `Some(None)` at its end.
    pub(crate) fn next_item(&mut self, id: u64) -> Option<Option<Result<Payload, RpcError>>> {
        match self.session.next_item(id) {
            Poll::Ready(r) => Some(r.map(|r| r.map_err(RpcError::from))),
            Poll::Pending => None,
        }
    }

    /// Queues `item` on call `id`'s client stream once the server granted credit.
    pub(crate) fn send_item(
        &mut self,
        id: u64,
        codec: u8,
        item: &mut Option<Payload>,
    ) -> Option<Result<(), RpcError>> {
        match self.session.send_item(id, item.take()?, codec) {
            Ok(()) => Some(Ok(())),
            Err(SendError::NoCredit(p)) => {
                *item = Some(p);
                None
            }
            Err(SendError::Over(e)) => Some(Err(e.into())),
        }
    }
}

/// Dropped with the last clone of an [`RpcClient`]: closes the connection.
struct Lifetime(Arc<Conn>);

impl Drop for Lifetime {
    fn drop(&mut self) {
        self.0.close("the client was dropped");
    }
}

/// A blocking RPC client over one connection, with codec `C` (Bincode by default); the
/// [crate docs](crate) show one in a plain `fn main`.
///
/// Cheap to clone; every method takes `&self`, so any number of threads may call at once
/// (each waits for its own answer, and one of them reads for all: see the crate docs).
#[derive(Clone)]
pub struct RpcClient<C: Codec = BincodeCodec> {
    conn: Arc<Conn>,
    _life: Arc<Lifetime>,
    codec: C,
}

impl RpcClient<BincodeCodec> {
    /// A client over `transport` with the default configuration (30 s call timeout).
    pub fn new(transport: impl FrameTransport) -> Self {
        Self::with_config(transport, ClientConfig::default())
    }

    /// A client with an explicit configuration (timeouts, stream window, heartbeats).
    pub fn with_config(transport: impl FrameTransport, config: ClientConfig) -> Self {
        Self::with_config_and_codec(transport, config, BincodeCodec)
    }
}

impl<C: Codec> RpcClient<C> {
    /// A client with another codec.
    pub fn with_codec(transport: impl FrameTransport, codec: C) -> Self {
        Self::with_config_and_codec(transport, ClientConfig::default(), codec)
    }

    /// A client with an explicit configuration and codec.
    pub fn with_config_and_codec(
        transport: impl FrameTransport,
        config: ClientConfig,
        codec: C,
    ) -> Self {
        let io = transport.into_io();
        let wire = WireConfig::default().with_max_frame_size(io.max_frame_size);
        let state = ClientState {
            session: ClientSession::new(config, wire, Instant::now()),
            waiters: id_map(),
            reading: false,
        };
        let (link, reader) = Link::new(state, io);
        let conn = Arc::new(Conn {
            link,
            reader: Mutex::new(reader),
        });
        Self {
            _life: Arc::new(Lifetime(conn.clone())),
            conn,
            codec,
        }
    }

    /// The same client with another default timeout for its unary and client-streaming calls
    /// (shared with its clones).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.conn
            .with_session(|s| s.set_default_timeout(Some(timeout)));
        self
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        self.conn.link.lock().session.is_open()
    }

    /// Calls waiting for an answer.
    pub fn pending_calls(&self) -> usize {
        self.conn.link.lock().session.pending_calls()
    }

    /// Closes the connection: every pending call fails with `Disconnected`.
    pub fn close(&self) {
        self.conn.close("client closed");
    }

    fn call_payload(
        &self,
        method: &str,
        payload: Payload,
        opts: CallOptions,
    ) -> Result<Payload, RpcError> {
        let id = self.conn.start(method, payload, opts)?;
        self.conn.wait(id, &mut |st| st.response(id))
    }

    /// Sends raw payload bytes to `method` and waits for the raw response.
    pub fn call_raw(&self, method: &str, payload: Bytes) -> Result<Bytes, RpcError> {
        let resp = self.call_payload(method, Payload::Bytes(payload), CallOptions::unary(C::ID))?;
        payload_bytes(resp)
    }

    /// Calls `method` with `request` and decodes the response.
    pub fn call<Req: Serialize + ?Sized, Resp: DeserializeOwned + 'static>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<Resp, RpcError> {
        self.call_with_options(method, request, CallOptions::unary(C::ID))
    }

    /// Like [`call`](Self::call) with a timeout for this call.
    pub fn call_with_timeout<Req: Serialize + ?Sized, Resp: DeserializeOwned + 'static>(
        &self,
        method: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        let opts = CallOptions::unary(C::ID).with_timeout(timeout);
        self.call_with_options(method, request, opts)
    }

    /// Like [`call`](Self::call) with explicit options.
    pub fn call_with_options<Req: Serialize + ?Sized, Resp: DeserializeOwned + 'static>(
        &self,
        method: &str,
        request: &Req,
        mut opts: CallOptions,
    ) -> Result<Resp, RpcError> {
        let payload = Payload::Bytes(self.codec.encode(request)?);
        opts.codec = C::ID;
        decode_payload(&self.codec, self.call_payload(method, payload, opts)?)
    }

    /// Sends a one-way notification.
    pub fn notify<Req: Serialize + ?Sized>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<(), RpcError> {
        let payload = Payload::Bytes(self.codec.encode(request)?);
        self.conn
            .with_session(|s| s.notify(method, payload, C::ID))?;
        Ok(())
    }

    /// Calls a server-streaming method: one request, then its items as an iterator.
    pub fn call_server_stream<Req: Serialize + ?Sized, Item: DeserializeOwned + 'static>(
        &self,
        method: &str,
        request: &Req,
    ) -> Result<StreamReceiver<Item, C>, RpcError> {
        let payload = Payload::Bytes(self.codec.encode(request)?);
        let opts = CallOptions::unary(C::ID).with_kind(CallKind::ServerStreaming);
        let id = self.conn.start(method, payload, opts)?;
        let conn = self.conn.clone();
        Ok(StreamReceiver::new(conn, id, self.codec.clone()))
    }

    fn begin_client_stream<Item: Serialize>(
        &self,
        method: &str,
        kind: CallKind,
    ) -> Result<StreamSender<Item, C>, RpcError> {
        let (opts, empty) = (CallOptions::unary(C::ID).with_kind(kind), Bytes::new());
        let id = self.conn.start(method, Payload::Bytes(empty), opts)?;
        Ok(StreamSender::new(self.conn.clone(), id, self.codec.clone()))
    }

    /// Calls a client-streaming method: send items with the [`StreamSender`],
    /// [`finish`](StreamSender::finish) it, then [`wait`](PendingResponse::wait) for the
    /// single response.
    pub fn call_client_stream<Item: Serialize, Resp: DeserializeOwned + 'static>(
        &self,
        method: &str,
    ) -> Result<ClientStreamCall<Item, Resp, C>, RpcError> {
        let sender = self.begin_client_stream(method, CallKind::ClientStreaming)?;
        let response = PendingResponse::new(self.conn.clone(), sender.id(), self.codec.clone());
        Ok((sender, response))
    }

    /// Opens a bidirectional stream: items go out through the sender and come back through
    /// the receiver (use them from two threads, or alternate within the credit window).
    pub fn call_bidi<Req: Serialize, Resp: DeserializeOwned + 'static>(
        &self,
        method: &str,
    ) -> Result<BidiCall<Req, Resp, C>, RpcError> {
        let sender = self.begin_client_stream(method, CallKind::Bidirectional)?;
        let receiver = StreamReceiver::new(self.conn.clone(), sender.id(), self.codec.clone());
        Ok((sender, receiver))
    }
}
