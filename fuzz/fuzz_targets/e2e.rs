//! A client and a server session end to end (after h2's `fuzz_e2e`): operations taken from the
//! input — calls of every kind, notifications, cancels, handler outcomes, stream items both
//! ways, consumption, shutdown, close, the clock, and the delivery of bytes in chunks of any
//! size (sometimes with a byte flipped) — drive both through an in-memory pipe. Checked
//! throughout: nothing panics, the bounds hold (stream credit, queued output, decompressed
//! bytes held), and in the end every call the client started ended exactly once.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::task::Poll;

use xrpc_proto::{
    CallKind, CallOptions, CallWake, ClientConfig, ClientSession, CompressionConfig,
    MethodTable, HandlerOutcome, Payload, ServerConfig, ServerSession, ServerSessionEvent, WireConfig,
};

const CODEC: u8 = 1;
const METHODS: [&str; 5] = ["u", "s", "c", "b", "nope"];
const KINDS: [CallKind; 4] = [
    CallKind::Unary,
    CallKind::ServerStreaming,
    CallKind::ClientStreaming,
    CallKind::Bidirectional,
];

struct World {
    now: Instant,
    client: ClientSession,
    server: ServerSession,
    routes: MethodTable<()>,
    c2s: BytesMut,
    s2c: BytesMut,
    /// Calls the client started, and how many times each ended.
    started: HashMap<u64, u32>,
    /// Calls the server is running (by id), and notification tokens.
    running: Vec<u64>,
    notifications: Vec<u64>,
    /// Server-stream items the client received and has not consumed, by call.
    unconsumed: HashMap<u64, u32>,
    /// Client-stream items the server received and its handler has not taken, by call.
    server_unconsumed: HashMap<u64, u32>,
    sc: ServerConfig,
}

impl World {
    fn new(u: &mut Unstructured<'_>) -> Result<Self> {
        let now = Instant::now();
        let compression = match u.int_in_range(0..=2u8)? {
            0 => CompressionConfig::none(),
            1 => CompressionConfig::lz4().with_threshold(64),
            _ => CompressionConfig::zstd(1).with_threshold(64),
        };
        let wire = WireConfig::default()
            .with_max_frame_size(64 * 1024)
            .with_compression(compression);
        let sc = ServerConfig {
            max_concurrent_calls: 8,
            max_transmit_backlog: 4096,
            max_queued_output_total: 1 << 20,
            max_stream_credit: 8,
            notification_timeout: Duration::from_millis(50),
            idle_timeout: Some(Duration::from_millis(500)),
            frame_timeout: Some(Duration::from_millis(200)),
            decompression_budget: 16 * 1024,
            accept_compressed: u.arbitrary()?,
            drain_timeout: Duration::from_millis(100),
            shutdown_flush_timeout: Duration::from_millis(100),
            ..ServerConfig::default()
        };
        let cc = ClientConfig {
            default_timeout: Some(Duration::from_millis(300)),
            stream_window: u.int_in_range(1..=20)?,
            heartbeat_interval: Some(Duration::from_millis(100)),
            max_stream_credit: 8,
            decompression_budget: 16 * 1024,
            ..ClientConfig::default()
        };
        let mut routes = MethodTable::new();
        for (name, kind) in METHODS.iter().zip(KINDS) {
            routes.insert(*name, kind, ());
        }
        Ok(Self {
            now,
            client: ClientSession::new(cc, wire, now),
            server: ServerSession::new(sc, wire, CODEC, now),
            routes,
            c2s: BytesMut::new(),
            s2c: BytesMut::new(),
            started: HashMap::new(),
            running: Vec::new(),
            notifications: Vec::new(),
            unconsumed: HashMap::new(),
            server_unconsumed: HashMap::new(),
            sc,
        })
    }

    fn payload(u: &mut Unstructured<'_>) -> Result<Payload> {
        let len = u.int_in_range(0..=3000usize)?;
        let byte: u8 = u.arbitrary()?;
        Ok(Payload::Bytes(Bytes::from(vec![byte; len])))
    }

    fn pick(u: &mut Unstructured<'_>, ids: &[u64]) -> Result<Option<u64>> {
        if ids.is_empty() {
            return Ok(None);
        }
        Ok(Some(ids[u.choose_index(ids.len())?]))
    }

    /// Moves the sessions' output into the pipes and routes their events.
    fn pump(&mut self) {
        let mut out = BytesMut::new();
        while self.client.poll_transmit(&mut out) {}
        self.c2s.extend_from_slice(&out);
        out.clear();
        while self.server.poll_transmit(&mut out) {}
        self.s2c.extend_from_slice(&out);
        while let Some(ev) = self.server.poll_event(&self.routes) {
            match ev {
                ServerSessionEvent::Call { call, .. } => self.running.push(call.id),
                ServerSessionEvent::Notification { token, .. } => self.notifications.push(token),
                ServerSessionEvent::Cancelled { id } => {
                    self.running.retain(|r| *r != id);
                    self.server_unconsumed.remove(&id);
                }
                ServerSessionEvent::NotificationStopped { token } => {
                    self.notifications.retain(|t| *t != token)
                }
                ServerSessionEvent::Wake(CallWake::Recv(id)) => {
                    *self.server_unconsumed.entry(id).or_default() += 1
                }
                ServerSessionEvent::Wake(_) => {}
            }
        }
        while let Some(wake) = self.client.poll_wake() {
            match wake {
                CallWake::Ended(id) => {
                    *self.started.entry(id).or_default() += 1;
                    self.unconsumed.remove(&id);
                }
                CallWake::Recv(id) => *self.unconsumed.entry(id).or_default() += 1,
                CallWake::Send(_) => {}
            }
        }
    }

    fn check_bounds(&self) {
        for id in &self.running {
            if let Some(credit) = self.server.send_credit(*id) {
                assert!(credit <= u64::from(self.sc.max_stream_credit), "credit {credit}");
            }
        }
        assert!(self.server.decompressed_bytes() <= self.sc.decompression_budget);
        assert!(self.client.decompressed_bytes() <= 16 * 1024);
    }

    fn step(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        match u.int_in_range(0..=15u8)? {
            0 | 1 => {
                let method = METHODS[u.choose_index(METHODS.len())?];
                let kind = KINDS[u.choose_index(KINDS.len())?];
                let payload = Self::payload(u)?;
                let mut opts = CallOptions::unary(CODEC).with_kind(kind);
                if u.arbitrary()? {
                    opts = opts.with_timeout(Duration::from_millis(u.int_in_range(1..=400)?));
                }
                if let Ok(id) = self.client.start_call(self.now, method, payload, opts) {
                    self.started.insert(id, 0);
                }
            }
            2 => {
                let method = METHODS[u.choose_index(METHODS.len())?];
                let _ = self.client.notify(method, Self::payload(u)?, CODEC);
            }
            3 => {
                let ids: Vec<u64> = self.started.keys().copied().collect();
                if let Some(id) = Self::pick(u, &ids)? {
                    // A cancelled call ends with a wake-up of its own.
                    self.client.cancel(id);
                }
            }
            4 => {
                if let Some(id) = Self::pick(u, &self.running.clone())? {
                    let outcome = match u.int_in_range(0..=3u8)? {
                        0 => HandlerOutcome::Response(Self::payload(u)?),
                        1 => HandlerOutcome::StreamEnd,
                        2 => HandlerOutcome::Error(xrpc_proto::RemoteError::new(
                            xrpc_proto::ErrorCode::Handler,
                            "fuzz",
                        )),
                        _ => HandlerOutcome::Panic("fuzz".into()),
                    };
                    self.server.complete(self.now, id, outcome);
                    self.running.retain(|r| *r != id);
                }
            }
            5 | 6 => {
                if let Some(id) = Self::pick(u, &self.running.clone())? {
                    let _ = self.server.send_item(id, Self::payload(u)?);
                }
            }
            7 => {
                let ids: Vec<u64> = self.started.keys().copied().collect();
                if let Some(id) = Self::pick(u, &ids)? {
                    if u.arbitrary()? {
                        let _ = self.client.send_item(id, Self::payload(u)?, CODEC);
                    } else {
                        self.client.finish_stream(id);
                    }
                }
            }
            8 => {
                let ids: Vec<u64> = self.unconsumed.keys().copied().collect();
                if let Some(id) = Self::pick(u, &ids)? {
                    self.unconsumed.remove(&id);
                    while let Poll::Ready(Some(Ok(_))) = self.client.next_item(id) {}
                }
                let ids: Vec<u64> = self.server_unconsumed.keys().copied().collect();
                if let Some(id) = Self::pick(u, &ids)? {
                    self.server_unconsumed.remove(&id);
                    if u.arbitrary()? {
                        while let Poll::Ready(Some(Ok(_))) = self.server.next_item(id) {}
                    } else {
                        self.server.stream_abandoned(id);
                    }
                }
            }
            9 => {
                if let Some(t) = Self::pick(u, &self.notifications.clone())? {
                    self.server.notification_done(self.now, t);
                    self.notifications.retain(|x| *x != t);
                }
            }
            10 | 11 => {
                // Deliver bytes one way, in a chunk of any size, sometimes with a byte flipped.
                let to_server: bool = u.arbitrary()?;
                let pipe = if to_server { &mut self.c2s } else { &mut self.s2c };
                if !pipe.is_empty() {
                    let n = u.int_in_range(1..=pipe.len())?;
                    let mut chunk = pipe.split_to(n);
                    if u.ratio(1, 64)? {
                        let i = u.choose_index(chunk.len())?;
                        chunk[i] ^= u.arbitrary::<u8>()? | 1;
                    }
                    if to_server {
                        if self.server.wants_read() {
                            self.server.handle_bytes(self.now, &chunk);
                        } else {
                            // Not read yet: back into the pipe.
                            let rest = self.c2s.split();
                            self.c2s.extend_from_slice(&chunk);
                            self.c2s.extend_from_slice(&rest);
                        }
                    } else {
                        self.client.handle_bytes(self.now, &chunk);
                    }
                }
            }
            12 => {
                self.now += Duration::from_millis(u.int_in_range(1..=250)?);
                self.client.handle_timeout(self.now);
                self.server.handle_timeout(self.now);
            }
            13 => self.server.start_shutdown(self.now),
            14 => {
                if u.ratio(1, 8)? {
                    self.client.close(self.now, "fuzz");
                }
            }
            _ => {
                if u.ratio(1, 16)? {
                    self.server.handle_eof(self.now);
                }
            }
        }
        self.pump();
        self.check_bounds();
        Ok(())
    }

    /// Lets everything in flight arrive and every deadline pass, then closes the client: every
    /// call it started must have ended exactly once.
    fn finish(&mut self) {
        for _ in 0..64 {
            let c2s = self.c2s.split();
            if self.server.wants_read() {
                self.server.handle_bytes(self.now, &c2s);
            }
            let s2c = self.s2c.split();
            self.client.handle_bytes(self.now, &s2c);
            self.now += Duration::from_millis(100);
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
            self.pump();
            self.check_bounds();
        }
        self.client.close(self.now, "the end");
        self.pump();
        for (id, ended) in &self.started {
            assert_eq!(*ended, 1, "call {id} ended {ended} times");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mut world) = World::new(&mut u) else {
        return;
    };
    for _ in 0..256 {
        if u.is_empty() || world.step(&mut u).is_err() {
            break;
        }
    }
    world.finish();
});
