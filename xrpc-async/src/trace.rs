//! (feature `tracing`) Spans, events and trace propagation.
//!
//! **Spans.** Every call has a span on the client (`xrpc.client`) and on the server
//! (`xrpc.server`), with the fields `service` (the method name before its first `.`, if any),
//! `method`, `id` (the request id on its connection), `transport` (`tcp`, `unix`, `shm` or
//! `in-process`), `outcome` (`ok`, or the error: a server's [`ErrorCode`], or the client's
//! own failure such as `Timeout` or `Disconnected`), `error` (its message), `duration_us`,
//! and the trace fields below. The server's span is entered whenever its handler is polled,
//! so the handler's own events and spans fall under it. Events: a connection made and closed
//! (with the reason), a balanced endpoint ejected and re-admitted, a notification the server
//! could not deliver (a warning naming the method).
//!
//! **Propagation.** `tracing` has no trace ids of its own, so xrpc keeps a [`TraceContext`]
//! (the W3C trace id, span id and flags) beside its spans, as tarpc keeps its own
//! `trace::Context` in every request, and records it in the span fields `trace_id`,
//! `span_id` and `parent_id` (lower-case hex, as in `traceparent`). A client call's context
//! is a child of the current one ([`TraceContext::current`]: the server call whose handler is
//! running, or one the application set with [`TraceContext::scope`]), or a new trace; it
//! travels as the call's `traceparent` metadata entry (`00-<trace id>-<span id>-<flags>`),
//! and the server's span takes the same trace id, with the client's span id as `parent_id`.
//! A collector joins the two spans on these fields. An application that uses OpenTelemetry
//! (tracing-opentelemetry, as tonic users do) puts its own `traceparent` in the call's
//! metadata: the client takes it as its parent, and a handler reads the incoming one with
//! [`TraceContext::of`] to set its OpenTelemetry parent.
//!
//! With no subscriber interested in xrpc's spans, a client makes no ids and sends no
//! `traceparent` of its own; it passes on the current context, if there is one, unchanged.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tracing::Span;
use tracing::field::{Empty, display};
use xrpc_proto::{ErrorCode, HandlerOutcome, RpcError};

/// The metadata key of a call's trace context (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";

/// A W3C trace context: which trace a call belongs to and which span is its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace id (16 bytes, never zero).
    pub trace_id: u128,
    /// The span id (8 bytes, never zero).
    pub span_id: u64,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

thread_local! {
    /// The trace context of the code running on this thread, if xrpc or the application set
    /// one (see [`TraceContext::scope`]).
    static CURRENT: Cell<Option<TraceContext>> = const { Cell::new(None) };
    /// The state of this thread's id generator (xorshift64*), seeded at first use.
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// A random non-zero `u64` (not cryptographic: ids need only be unique).
fn random_u64() -> u64 {
    RNG.with(|rng| {
        let mut x = rng.get();
        if x == 0 {
            // A random seed per thread: std's hasher keys are random per process and thread.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(std::process::id().into());
            x = h.finish() | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d).max(1)
    })
}

impl TraceContext {
    /// A new trace: random trace and span ids, sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: (u128::from(random_u64()) << 64) | u128::from(random_u64()),
            span_id: random_u64(),
            flags: 1,
        }
    }

    /// A span of the same trace whose parent is this one: a new span id.
    pub fn child(&self) -> Self {
        Self {
            span_id: random_u64(),
            ..*self
        }
    }

    /// Whether the trace is sampled (flag bit 0).
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// Reads a `traceparent` value: `00-<32 hex>-<16 hex>-<2 hex>` (a later version's value is
    /// read by its first four fields, as the W3C specification asks). `None` if it is
    /// malformed, of version `ff`, or has a zero id.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let s = traceparent.trim();
        let b = s.as_bytes();
        let hex = |r: std::ops::Range<usize>| -> Option<&str> {
            let part = s.get(r)?;
            part.bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
                .then_some(part)
        };
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex(0..2)?;
        // Version 00 is exactly 55 characters; a later one may append fields after a '-'.
        if version == "ff" || (version == "00" && b.len() != 55) || (b.len() > 55 && b[55] != b'-')
        {
            return None;
        }
        let trace_id = u128::from_str_radix(hex(3..35)?, 16).ok()?;
        let span_id = u64::from_str_radix(hex(36..52)?, 16).ok()?;
        let flags = u8::from_str_radix(hex(53..55)?, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The `traceparent` form (see [`Display`](#impl-Display-for-TraceContext)), without
    /// allocating.
    pub fn to_bytes(&self) -> [u8; 55] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        let mut put = |at: usize, digits: usize, v: u128| {
            for i in 0..digits {
                out[at + i] = HEX[((v >> (4 * (digits - 1 - i))) & 0xf) as usize];
            }
        };
        put(3, 32, self.trace_id);
        put(36, 16, self.span_id.into());
        put(53, 2, self.flags.into());
        out
    }

    /// The incoming trace context of a call: its `traceparent` metadata entry, if valid.
    pub fn of(metadata: &xrpc_proto::Metadata) -> Option<Self> {
        metadata.get_str(TRACEPARENT).and_then(Self::parse)
    }

    /// The trace context of the code running on this thread: inside a handler, its call's
    /// (the server span's); inside [`scope`](Self::scope) or [`in_scope`](Self::in_scope),
    /// the one given there.
    pub fn current() -> Option<Self> {
        CURRENT.with(Cell::get)
    }

    /// Runs `f` with this as the current context.
    pub fn in_scope<O>(self, f: impl FnOnce() -> O) -> O {
        let _current = SetCurrent::new(Some(self));
        f()
    }

    /// `future`, with this as the current context whenever it is polled: the calls it makes
    /// belong to this trace.
    pub fn scope<F: Future>(self, future: F) -> Scoped<F> {
        Scoped {
            future: Box::pin(future),
            context: Some(self),
        }
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` form: `00-<trace id>-<span id>-<flags>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// Sets the current context until dropped, then restores the one before.
struct SetCurrent(Option<TraceContext>);

impl SetCurrent {
    fn new(context: Option<TraceContext>) -> Self {
        Self(CURRENT.with(|c| c.replace(context)))
    }
}

impl Drop for SetCurrent {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// A future polled with a trace context current (see [`TraceContext::scope`]).
pub struct Scoped<F> {
    future: Pin<Box<F>>,
    context: Option<TraceContext>,
}

impl<F> fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _current = SetCurrent::new(self.context);
        self.future.as_mut().poll(cx)
    }
}

/// The transport kind of a transport named `name` (`"tcp:127.0.0.1:4000"`): the span field.
pub(crate) fn transport_kind(name: &str) -> &'static str {
    match name.split(':').next() {
        Some("tcp") => "tcp",
        Some("unix") => "unix",
        Some("shm") => "shm",
        Some("tls") => "tls",
        _ => "in-process",
    }
}

/// The service of a method name: the part before its first `.`, if any.
fn service_of(method: &str) -> &str {
    method.split_once('.').map_or("", |(service, _)| service)
}

/// How a call ended, as the span's `outcome` field says it.
enum Ended<'a> {
    Code(ErrorCode),
    Client(&'a RpcError),
    Panic,
}

impl fmt::Display for Ended<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "{code:?}"),
            Self::Panic => f.write_str("Panic"),
            Self::Client(e) => f.write_str(match e {
                RpcError::Transport(_) => "Transport",
                RpcError::Disconnected(_) => "Disconnected",
                RpcError::Timeout => "Timeout",
                RpcError::Cancelled => "Cancelled",
                RpcError::MethodNotFound(_) => "MethodNotFound",
                RpcError::Serialization(_) => "Serialization",
                RpcError::FrameTooLarge { .. } => "FrameTooLarge",
                RpcError::InvalidMessage(_) => "InvalidMessage",
                RpcError::StreamError(_) => "StreamError",
                RpcError::ClientError(_) => "ClientError",
                _ => "Error",
            }),
        }
    }
}

/// Whether a subscriber may want xrpc's spans (level `INFO`): if not, no span is made, nor
/// anything recorded or entered — not even through tracing's `log` compatibility, which a
/// disabled span still goes through.
fn spans_on() -> bool {
    use tracing::Level;
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    Level::INFO <= STATIC_MAX_LEVEL && Level::INFO <= LevelFilter::current()
}

/// Records the ids of `context` (and its parent's span id) on `span`.
fn record_ids(span: &Span, context: &TraceContext, parent: Option<&TraceContext>) {
    span.record(
        "trace_id",
        display(format_args!("{:032x}", context.trace_id)),
    );
    span.record("span_id", display(format_args!("{:016x}", context.span_id)));
    if let Some(p) = parent {
        span.record("parent_id", display(format_args!("{:016x}", p.span_id)));
    }
}

/// Records the duration since `started` (if the span is recorded: the clock is read then
/// only).
fn record_duration(span: &Span, started: Option<Instant>, now: impl FnOnce() -> Instant) {
    if let Some(started) = started {
        let us = now().saturating_duration_since(started).as_micros();
        span.record("duration_us", u64::try_from(us).unwrap_or(u64::MAX));
    }
}

/// Puts the current trace context, unchanged, in the metadata of a call that has no span of
/// its own (a stream), unless the caller put one there.
pub(crate) fn propagate(metadata: &mut xrpc_proto::Metadata) {
    if let Some(context) = TraceContext::current()
        && metadata.get(TRACEPARENT).is_none()
    {
        let _ = metadata.insert(TRACEPARENT, context.to_bytes());
    }
}

/// A client call's span and trace context.
pub(crate) struct ClientTrace {
    span: Span,
    /// When the call started, if the span is recorded.
    started: Option<Instant>,
}

impl ClientTrace {
    /// Opens the span of a call of `method` over `transport` at `now()`, and puts its trace
    /// context in `metadata` (see the module's documentation).
    pub(crate) fn start(
        method: &str,
        transport: &'static str,
        metadata: &mut xrpc_proto::Metadata,
        now: impl FnOnce() -> Instant,
    ) -> Self {
        if !spans_on() {
            propagate(metadata);
            return Self {
                span: Span::none(),
                started: None,
            };
        }
        let span = tracing::info_span!(
            "xrpc.client",
            otel.kind = "client",
            service = service_of(method),
            method,
            transport,
            id = Empty,
            outcome = Empty,
            error = Empty,
            duration_us = Empty,
            trace_id = Empty,
            span_id = Empty,
            parent_id = Empty,
        );
        // The caller's own traceparent wins over the thread's.
        let parent = TraceContext::of(metadata).or_else(TraceContext::current);
        let sent = if span.is_disabled() {
            parent
        } else {
            let context = parent.map_or_else(TraceContext::new_root, |p| p.child());
            record_ids(&span, &context, parent.as_ref());
            Some(context)
        };
        if let Some(context) = sent {
            // A metadata map full already keeps its entries: the call goes untraced.
            let _ = metadata.insert(TRACEPARENT, context.to_bytes());
        }
        let started = (!span.is_disabled()).then(now);
        Self { span, started }
    }

    /// Whether the span is recorded.
    pub(crate) fn is_on(&self) -> bool {
        self.started.is_some()
    }

    /// `future` (the call), polled in the span.
    pub(crate) fn instrument<F: Future + Unpin>(&self, future: F) -> Traced<F> {
        Traced {
            future,
            span: self.span.clone(),
            context: None,
        }
    }

    /// The call's request id.
    pub(crate) fn record_id(&self, id: u64) {
        if self.started.is_some() {
            self.span.record("id", id);
        }
    }

    /// The call ended at `now()` with `result`.
    pub(crate) fn end<T>(&self, result: &Result<T, RpcError>, now: impl FnOnce() -> Instant) {
        if self.span.is_disabled() {
            return;
        }
        record_duration(&self.span, self.started, now);
        match result {
            Ok(_) => self.span.record("outcome", "ok"),
            Err(e) => {
                let ended = match e {
                    RpcError::ServerError { code, .. } => Ended::Code(*code),
                    e => Ended::Client(e),
                };
                self.span.record("outcome", display(ended));
                self.span.record("error", display(e))
            }
        };
    }
}

/// A server call's span and trace context.
#[derive(Clone)]
pub(crate) struct ServerTrace {
    span: Span,
    context: Option<TraceContext>,
    /// When the call started, if the span is recorded.
    started: Option<Instant>,
}

impl ServerTrace {
    /// Opens the span of the call described by `ctx`, arrived over `transport` at `now()`.
    pub(crate) fn start(
        ctx: &crate::rpc::CallContext,
        transport: &'static str,
        now: impl FnOnce() -> Instant,
    ) -> Self {
        if !spans_on() {
            return Self {
                span: Span::none(),
                // Passed on unchanged to the calls the handler makes.
                context: TraceContext::of(ctx.metadata()),
                started: None,
            };
        }
        let method = ctx.method();
        let span = tracing::info_span!(
            "xrpc.server",
            otel.kind = "server",
            service = service_of(method),
            method,
            transport,
            id = ctx.id,
            kind = ?ctx.kind,
            outcome = Empty,
            error = Empty,
            duration_us = Empty,
            trace_id = Empty,
            span_id = Empty,
            parent_id = Empty,
        );
        let parent = TraceContext::of(ctx.metadata());
        let context = if span.is_disabled() {
            // Passed on unchanged to the calls the handler makes.
            parent
        } else {
            let context = parent.map_or_else(TraceContext::new_root, |p| p.child());
            record_ids(&span, &context, parent.as_ref());
            Some(context)
        };
        let started = (!span.is_disabled()).then(now);
        Self {
            span,
            context,
            started,
        }
    }

    /// Runs `f` (starting the handler) in the span, with the call's context current.
    pub(crate) fn in_scope<O>(&self, f: impl FnOnce() -> O) -> O {
        match (self.started, self.context) {
            (None, None) => f(),
            (None, Some(_)) => {
                let _current = SetCurrent::new(self.context);
                f()
            }
            (Some(_), _) => {
                let _current = SetCurrent::new(self.context);
                self.span.in_scope(f)
            }
        }
    }

    /// The handler ended at `now()` with `outcome`.
    pub(crate) fn end(&self, outcome: &HandlerOutcome, now: impl FnOnce() -> Instant) {
        if self.span.is_disabled() {
            return;
        }
        record_duration(&self.span, self.started, now);
        match outcome {
            HandlerOutcome::Response(_) | HandlerOutcome::StreamEnd => {
                self.span.record("outcome", "ok");
            }
            HandlerOutcome::Error(e) => {
                self.span.record("outcome", display(Ended::Code(e.code)));
                self.span.record("error", display(&e.message));
            }
            HandlerOutcome::Panic(message) => {
                self.span.record("outcome", display(Ended::Panic));
                self.span.record("error", display(message));
            }
        }
    }

    /// The notification handler ended at `now` with `result` (`Err`: it panicked).
    pub(crate) fn end_result<T>(
        &self,
        result: &Result<Result<T, RpcError>, String>,
        now: impl FnOnce() -> Instant,
    ) {
        if self.span.is_disabled() {
            return;
        }
        record_duration(&self.span, self.started, now);
        match result {
            Ok(Ok(_)) => {
                self.span.record("outcome", "ok");
            }
            Ok(Err(e)) => {
                self.span
                    .record("outcome", display(Ended::Code(e.to_remote().code)));
                self.span.record("error", display(e));
            }
            Err(message) => {
                self.span.record("outcome", display(Ended::Panic));
                self.span.record("error", display(message));
            }
        }
    }

    /// `future` (the handler), polled in the span with the call's context current.
    pub(crate) fn instrument<F: Future>(&self, future: F) -> Traced<F> {
        Traced {
            future,
            span: self.span.clone(),
            context: self.context,
        }
    }
}

/// A call's or a handler's future, polled in its span (if it is on) with its call's context
/// current (if there is one).
pub(crate) struct Traced<F> {
    future: F,
    span: Span,
    context: Option<TraceContext>,
}

impl<F: Future + Unpin> Future for Traced<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let future = Pin::new(&mut this.future);
        match (this.span.is_disabled(), this.context) {
            (true, None) => future.poll(cx),
            (true, Some(_)) => {
                let _current = SetCurrent::new(this.context);
                future.poll(cx)
            }
            (false, _) => {
                let _current = SetCurrent::new(this.context);
                let _entered = this.span.enter();
                future.poll(cx)
            }
        }
    }
}

/// A connection was made (`side`: "client" or "server").
pub(crate) fn connected(side: &'static str, transport_name: &str) {
    tracing::debug!(
        side,
        transport = transport_kind(transport_name),
        peer = transport_name,
        "xrpc connection opened"
    );
}

/// A connection closed, for `reason`; `abnormal` if it failed (a protocol or transport error,
/// a timeout) rather than closed or shut down.
pub(crate) fn disconnected(
    side: &'static str,
    transport_name: &str,
    reason: &dyn fmt::Display,
    abnormal: bool,
) {
    let transport = transport_kind(transport_name);
    if abnormal {
        tracing::info!(side, transport, peer = transport_name, %reason, "xrpc connection closed");
    } else {
        tracing::debug!(side, transport, peer = transport_name, %reason, "xrpc connection closed");
    }
}

/// A balanced endpoint was ejected or re-admitted.
pub(crate) fn balancer_event(event: &xrpc_proto::balance::BalancerEvent) {
    use xrpc_proto::balance::BalancerEvent;
    match event {
        BalancerEvent::Ejected {
            endpoint, failures, ..
        } => tracing::warn!(%endpoint, failures, "xrpc endpoint ejected"),
        BalancerEvent::Readmitted { endpoint } => {
            tracing::info!(%endpoint, "xrpc endpoint re-admitted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_kinds_by_name() {
        for (name, kind) in [
            ("tcp:127.0.0.1:4000", "tcp"),
            ("tls:127.0.0.1:4000", "tls"),
            ("unix:/tmp/s", "unix"),
            ("shm:svc", "shm"),
            ("channel", "in-process"),
        ] {
            assert_eq!(transport_kind(name), kind, "{name}");
        }
    }

    #[test]
    fn traceparent_round_trips_and_bad_values_are_refused() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::parse(s).unwrap();
        assert_eq!(c.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(c.span_id, 0x00f067aa0ba902b7);
        assert!(c.is_sampled());
        assert_eq!(c.to_string(), s);
        assert_eq!(&c.to_bytes()[..], s.as_bytes());
        // A later version with more fields is read by its first four.
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736+00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_scopes_nest() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(TraceContext::current(), None);
        root.in_scope(|| {
            assert_eq!(TraceContext::current(), Some(root));
            child.in_scope(|| assert_eq!(TraceContext::current(), Some(child)));
            assert_eq!(TraceContext::current(), Some(root));
        });
        assert_eq!(TraceContext::current(), None);
    }
}
