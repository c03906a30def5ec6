//! The fake-clock pipe of the session tests: a client and a server session joined by two
//! byte pipes that deliver bytes in chunks of any size (after quinn-proto's `Pair`).
#![allow(dead_code)] // each test file uses its own part

use std::collections::HashMap;
use std::task::Poll;
use std::time::{Duration, Instant};

use xrpc_proto::bytes::{Bytes, BytesMut};
use xrpc_proto::{
    CallError, CallKind, CallOptions, CallWake, ClientConfig, ClientSession, HandlerOutcome,
    MethodTable, Payload, RemoteError, ServerConfig, ServerCounters, ServerSession,
    ServerSessionEvent, WireConfig,
};

pub const MS: Duration = Duration::from_millis(1);
pub const CODEC: u8 = 1;

/// Client and server sessions joined by two byte pipes.
pub struct Pair {
    pub now: Instant,
    pub client: ClientSession,
    pub server: ServerSession,
    pub routes: MethodTable<&'static str>,
    /// Bytes are delivered in chunks of this size.
    pub chunk: usize,
    /// The client's wake-ups, in order.
    pub client_wakes: Vec<CallWake>,
    /// The outcome of each call, taken from the session once it ended.
    pub outcomes: HashMap<u64, Result<Payload, CallError>>,
    pub server_events: Vec<ServerSessionEvent<&'static str>>,
    /// Bytes the client wrote that the server has not yet read.
    pub c2s: BytesMut,
    pub s2c: BytesMut,
    /// The server reads only while this holds (a test can stop it).
    pub server_reads: bool,
    /// The server's counters.
    pub counters: ServerCounters,
}

impl Pair {
    pub fn new(cc: ClientConfig, sc: ServerConfig, wire: WireConfig) -> Self {
        let now = Instant::now();
        let mut routes = MethodTable::new();
        routes.insert("add", CallKind::Unary, "add");
        routes.insert("count", CallKind::ServerStreaming, "count");
        routes.insert("log", CallKind::Unary, "log");
        routes.insert("chat", CallKind::Bidirectional, "chat");
        let counters = ServerCounters::default();
        let mut server = ServerSession::new(sc, wire, CODEC, now);
        server.set_counters(counters.clone());
        Self {
            now,
            client: ClientSession::new(cc, wire, now),
            server,
            counters,
            routes,
            chunk: 7,
            client_wakes: Vec::new(),
            outcomes: HashMap::new(),
            server_events: Vec::new(),
            c2s: BytesMut::new(),
            s2c: BytesMut::new(),
            server_reads: true,
        }
    }

    pub fn default() -> Self {
        Self::new(
            ClientConfig::default(),
            ServerConfig::default(),
            WireConfig::default(),
        )
    }

    /// Moves bytes and events both ways until nothing moves.
    pub fn run(&mut self) {
        loop {
            let mut moved = false;
            let mut out = BytesMut::new();
            while self.client.poll_transmit(&mut out) {}
            moved |= !out.is_empty();
            self.c2s.extend_from_slice(&out);
            while self.server_reads && self.server.wants_read() && !self.c2s.is_empty() {
                let n = self.chunk.min(self.c2s.len());
                let chunk = self.c2s.split_to(n);
                self.server.read_buffer().extend_from_slice(&chunk);
                self.server.handle_read(self.now);
                moved = true;
            }
            while let Some(ev) = self.server.poll_event(&self.routes) {
                self.server_events.push(ev);
                moved = true;
            }
            let mut out = BytesMut::new();
            while self.server.poll_transmit(&mut out) {}
            moved |= !out.is_empty();
            self.s2c.extend_from_slice(&out);
            while !self.s2c.is_empty() {
                let n = self.chunk.min(self.s2c.len());
                let chunk = self.s2c.split_to(n);
                self.client.handle_bytes(self.now, &chunk);
                moved = true;
            }
            while let Some(wake) = self.client.poll_wake() {
                self.client_wakes.push(wake);
                self.take_outcome(wake);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Takes the outcome of call `id` once it ended: its response or why it failed (a server
    /// stream that ended normally has no response: `Protocol`).
    fn take_outcome(&mut self, wake: CallWake) {
        if let CallWake::Ended(id) = wake
            && !self.outcomes.contains_key(&id)
            && let Poll::Ready(res) = self.client.take_response(id)
        {
            self.outcomes.insert(id, res);
        }
    }

    /// The items of call `id`'s server stream taken so far, and how it ended (`Some(None)`:
    /// normally) if it did.
    pub fn take_items(&mut self, id: u64) -> (usize, Option<Option<CallError>>) {
        let mut n = 0;
        loop {
            match self.client.next_item(id) {
                Poll::Ready(Some(Ok(_))) => n += 1,
                Poll::Ready(Some(Err(e))) => return (n, Some(Some(e))),
                Poll::Ready(None) => return (n, Some(None)),
                Poll::Pending => return (n, None),
            }
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.run();
    }

    pub fn call(&mut self, method: &str, payload: &'static [u8]) -> u64 {
        self.call_with(method, payload, CallOptions::unary(CODEC))
    }

    pub fn call_with(&mut self, method: &str, payload: &'static [u8], opts: CallOptions) -> u64 {
        let id = self
            .client
            .start_call(
                self.now,
                method,
                Payload::Bytes(Bytes::from_static(payload)),
                opts,
            )
            .unwrap();
        self.run();
        id
    }

    /// Starts a unary call whose request is an in-process value (not sent until handed over).
    pub fn call_value(&mut self, method: &str, value: u32) -> u64 {
        self.client
            .start_call(
                self.now,
                method,
                Payload::Value(Box::new(value)),
                CallOptions::unary(CODEC),
            )
            .unwrap()
    }

    /// Hands the client's next packet to the server at `at`, as the in-process transport does
    /// (values as they are).
    pub fn hand_packet(&mut self, at: Instant) {
        let packet = self.client.poll_packet().unwrap();
        self.server.handle_packet(at, packet);
    }

    /// Takes the server's `Call` events: (id, handler, payload).
    pub fn take_calls(&mut self) -> Vec<(u64, &'static str, Bytes)> {
        let mut calls = Vec::new();
        self.server_events.retain_mut(|ev| match ev {
            ServerSessionEvent::Call { call, handler } => {
                let Payload::Bytes(b) = &call.payload else {
                    panic!("a byte transport delivered a value")
                };
                calls.push((call.id, *handler, b.clone()));
                false
            }
            _ => true,
        });
        calls
    }

    pub fn complete(&mut self, id: u64, outcome: HandlerOutcome) -> bool {
        let sent = self.server.complete(self.now, id, outcome);
        self.run();
        sent
    }

    pub fn client_outcome(&self, id: u64) -> Option<&Result<Payload, CallError>> {
        self.outcomes.get(&id)
    }

    pub fn failed(&self, id: u64) -> CallError {
        match self.client_outcome(id) {
            Some(Err(error)) => error.clone(),
            other => panic!("call {id}: expected a failure, got {other:?}"),
        }
    }

    pub fn remote(&self, id: u64) -> RemoteError {
        match self.failed(id) {
            CallError::Remote(e) => e,
            other => panic!("call {id}: expected a remote error, got {other:?}"),
        }
    }

    /// Sends `n` notifications to "log" and runs.
    pub fn notify(&mut self, n: usize) {
        for _ in 0..n {
            self.client
                .notify("log", Payload::Bytes(Bytes::from_static(b"n")), CODEC)
                .unwrap();
        }
        self.run();
    }

    /// The tokens of the notifications the server started.
    pub fn notification_tokens(&self) -> Vec<u64> {
        self.server_events
            .iter()
            .filter_map(|e| match e {
                ServerSessionEvent::Notification { token, .. } => Some(*token),
                _ => None,
            })
            .collect()
    }

    pub fn cancelled(&self) -> Vec<u64> {
        self.server_events
            .iter()
            .filter_map(|ev| match ev {
                ServerSessionEvent::Cancelled { id } => Some(*id),
                _ => None,
            })
            .collect()
    }
}

pub fn bytes(p: &Payload) -> &[u8] {
    match p {
        Payload::Bytes(b) => b,
        Payload::Value(_) => panic!("a value"),
    }
}
