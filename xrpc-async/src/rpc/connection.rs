//! Serving one connection: the [`ServerSession`] driven by one future ([`RpcServer::serve`]),
//! the handlers it starts, and the streams they use.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use xrpc_proto::idmap::{IdMap, id_map};
use xrpc_proto::{
    CallKind, CallWake, Codec, ErrorCode, HandlerOutcome, IncomingCall, Metadata, MethodTable,
    Payload, RemoteError, RpcError, SendError, ServerSession, ServerSessionEvent, Slot,
    handler_outcome, panic_message,
};

use super::driver::{ConnectionCore, Driven, drive};
use super::future_pool::Started;
use super::server::{CallContext, ConnectionContext, Handler, HandlerFn, HandlerResult, RpcServer};
use super::stream::StreamCtl;
use super::wakers::{Wakers, leave_waker};
use crate::channel::MessageChannel;
use crate::runtime::{Runtime, Task};
use crate::signal::Signal;
use crate::transport::FrameTransport;

/// A connection's state as its driver and its handlers share it.
pub(crate) type Connection<R> = ConnectionCore<ServerState<R>>;

/// A handler running on the connection: its task, and the signal its context sees.
struct Running {
    task: Option<Box<dyn Task>>,
    /// Raised when the call is stopped (its handler sees it in its [`CallContext`]).
    cancel: Arc<Signal>,
}

impl Running {
    fn stop(self) {
        self.cancel.raise();
        if let Some(t) = self.task {
            t.abort();
        }
    }
}

/// What routing hands the driver to start, outside the lock.
pub(crate) enum Work {
    Call(IncomingCall<Payload>, HandlerFn, Arc<Signal>),
    Notification(u64, Bytes, Metadata, Payload, HandlerFn, Arc<Signal>),
}

pub(crate) struct ServerState<R: Runtime> {
    session: ServerSession,
    /// The server's runtime (its clock).
    rt: R,
    running: IdMap<Running>,
    /// Whom to wake for the streaming calls, until their handles release them.
    wakers: IdMap<Wakers>,
    /// Notification handlers running, by token.
    notifications: IdMap<Running>,
    routes: Arc<RwLock<MethodTable<HandlerFn>>>,
    shutdown_seen: bool,
    /// Cancel signals of calls that ended without being cancelled and that nobody else holds,
    /// for the next calls (no allocation per call).
    spare: Vec<Arc<Signal>>,
    /// The connection's place in its listener's admission table, if a listener admitted it.
    slot: Option<Slot>,
}

/// Wakes a connection's driver for its listener (a reclaim), without keeping it alive.
struct WakeConnection<R: Runtime>(Weak<Connection<R>>);

impl<R: Runtime> Wake for WakeConnection<R> {
    fn wake(self: Arc<Self>) {
        if let Some(c) = self.0.upgrade() {
            c.wake();
        }
    }
}

/// Most cancel signals a connection keeps for reuse.
const SPARE_SIGNALS: usize = 64;

impl Running {
    /// A running call's state, with a cancel signal from `spare` if there is one.
    fn new(spare: &mut Vec<Arc<Signal>>) -> Self {
        Self {
            task: None,
            cancel: spare.pop().unwrap_or_default(),
        }
    }

    /// Ends a call that was not cancelled: its cancel signal goes to `spare` if nobody else
    /// holds it (the handler's context is gone), it was never raised and nobody waits on it.
    fn recycle(self, spare: &mut Vec<Arc<Signal>>) {
        if spare.len() < SPARE_SIGNALS
            && Arc::strong_count(&self.cancel) == 1
            && self.cancel.is_unused()
        {
            spare.push(self.cancel);
        }
    }
}

impl<R: Runtime> Driven for ServerState<R> {
    type Session = ServerSession;
    type Work = Work;

    fn session(&mut self) -> &mut ServerSession {
        &mut self.session
    }

    fn dispatch(&mut self, work: &mut Vec<Work>) {
        let Self {
            session,
            running,
            wakers,
            notifications,
            routes,
            spare,
            ..
        } = self;
        // Most turns route nothing: the method table is locked only for events.
        if !session.has_event() {
            return;
        }
        let routes = routes.read().unwrap_or_else(PoisonError::into_inner);
        while let Some(ev) = session.poll_event(&*routes) {
            match ev {
                ServerSessionEvent::Call { call, handler } => {
                    let r = Running::new(spare);
                    let cancel = r.cancel.clone();
                    running.insert(call.id, r);
                    work.push(Work::Call(call, handler, cancel));
                }
                ServerSessionEvent::Notification {
                    token,
                    method,
                    payload,
                    metadata,
                    handler,
                } => {
                    let r = Running::new(spare);
                    let cancel = r.cancel.clone();
                    notifications.insert(token, r);
                    work.push(Work::Notification(
                        token, method, metadata, payload, handler, cancel,
                    ));
                }
                ServerSessionEvent::NotificationStopped { token } => {
                    if let Some(r) = notifications.remove(&token) {
                        r.stop();
                    }
                }
                ServerSessionEvent::Cancelled { id } => {
                    if let Some(r) = running.remove(&id) {
                        r.stop();
                    }
                    if let Some(w) = wakers.get_mut(&id) {
                        w.wake(CallWake::Ended(id));
                    }
                }
                ServerSessionEvent::Wake(wake) => {
                    if let Some(w) = wakers.get_mut(&wake.id()) {
                        w.wake(wake);
                    }
                }
            }
        }
    }

    /// The session ended: a call routed then never starts its handler.
    fn at_end(work: Work) {
        drop(work);
    }
}

/// The handlers' way to their connection's streams.
struct Ctl<R: Runtime> {
    conn: Arc<Connection<R>>,
}

impl<R: Runtime> StreamCtl for Ctl<R> {
    fn poll_item(&self, id: u64, cx: &mut Context<'_>) -> Poll<Option<Result<Payload, RpcError>>> {
        let mut st = self.conn.lock();
        let ServerState {
            session, wakers, ..
        } = &mut *st;
        let Poll::Ready(next) = session.next_item(id) else {
            leave_waker(&mut wakers.entry(id).or_default().recv, cx);
            return Poll::Pending;
        };
        // Taking an item may have granted the client credit.
        let credit = session.has_transmit();
        drop(st);
        if credit {
            self.conn.wake();
        }
        Poll::Ready(next.map(|r| r.map_err(RpcError::from)))
    }

    fn abandon(&self, id: u64) {
        self.conn.lock().session.stream_abandoned(id);
        self.conn.wake();
    }

    fn poll_send(
        &self,
        id: u64,
        payload: &mut Option<Payload>,
        _codec: u8,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), RpcError>> {
        let mut st = self.conn.lock();
        let Some(p) = payload.take() else {
            return Poll::Ready(Ok(()));
        };
        match st.session.send_item(id, p) {
            Ok(()) => {
                drop(st);
                self.conn.wake();
                Poll::Ready(Ok(()))
            }
            Err(SendError::NoCredit(p)) => {
                *payload = Some(p);
                st.wakers.entry(id).or_default().wait_send(cx);
                Poll::Pending
            }
            Err(SendError::Over(e)) => Poll::Ready(Err(e.into())),
        }
    }

    fn finish(&self, id: u64) {
        let mut st = self.conn.lock();
        let now = st.rt.now();
        st.session.complete(now, id, HandlerOutcome::StreamEnd);
        drop(st);
        // The call is over: the driver routes that to its streams' waiters (routing here would
        // also take requests that arrived meanwhile, whose handlers only the driver starts).
        self.conn.wake();
    }

    fn release(&self, id: u64) {
        let mut st = self.conn.lock();
        st.wakers.remove(&id);
        st.session.release(id);
    }
}

/// A future that turns a panic while polling its inner future into `Err(message)`.
struct CatchUnwind<F: ?Sized>(Pin<Box<F>>);

impl<F: Future + ?Sized> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic_message(&*panic))),
        }
    }
}

/// Reports the end of call `id`'s handler at `now`.
fn complete<R: Runtime>(conn: &Connection<R>, id: u64, outcome: HandlerOutcome, now: Instant) {
    let mut st = conn.lock();
    if let Some(r) = st.running.remove(&id) {
        r.recycle(&mut st.spare);
    }
    st.session.complete(now, id, outcome);
}

/// The bytes of a payload, as `xrpc.stats` counts them (an in-process value has none).
fn payload_len(p: &Payload) -> u64 {
    match p {
        Payload::Bytes(b) => b.len() as u64,
        Payload::Value(_) => 0,
    }
}

/// Counts a call's end in its method's counters (for `xrpc.stats`).
fn count(handler: &Handler, elapsed: Duration, bytes_in: u64, outcome: &HandlerOutcome) {
    let (error, bytes_out) = match outcome {
        HandlerOutcome::Response(p) => (false, payload_len(p)),
        HandlerOutcome::StreamEnd => (false, 0),
        HandlerOutcome::Error(_) | HandlerOutcome::Panic(_) => (true, 0),
    };
    handler.counters.record(elapsed, error, bytes_in, bytes_out);
}

/// Starts what routing collected. A unary handler that finishes at once runs here, on the
/// driver (no task hand-off), outside the connection's lock; others get a task.
fn start<R: Runtime>(
    rt: &R,
    number: u64,
    conn: &Arc<Connection<R>>,
    ctl: &Arc<dyn StreamCtl>,
    shared: &Arc<ConnectionContext>,
    work: Work,
) {
    match work {
        Work::Call(call, handler, cancel) => {
            let id = call.id;
            // The handler's time counts from the call's receipt (no clock read here).
            let started = call.received;
            let bytes_in = payload_len(&call.payload);
            let ctx = CallContext {
                id,
                method: call.method,
                deadline: call.deadline,
                kind: call.kind,
                notification: false,
                metadata: call.metadata,
                codec: call.codec,
                connection: shared.clone(),
                cancel,
                started,
            };
            #[cfg(feature = "tracing")]
            let trace = crate::trace::ServerTrace::start(&ctx, shared.transport, || rt.now());
            let build = || (handler.run)(ctx, call.payload, ctl);
            #[cfg(feature = "tracing")]
            let build = || trace.in_scope(build);
            let built = std::panic::catch_unwind(AssertUnwindSafe(build));
            #[cfg(feature = "tracing")]
            let span = trace.clone();
            // The end of the handler: its span closed, its statistics counted, its answer
            // queued.
            let end = move |conn: &Connection<R>, outcome: HandlerOutcome, now: Instant| {
                #[cfg(feature = "tracing")]
                trace.end(&outcome, || now);
                count(
                    &handler,
                    now.saturating_duration_since(started),
                    bytes_in,
                    &outcome,
                );
                complete(conn, id, outcome, now);
            };
            // A unary handler that finished in its first poll (made while starting it) is
            // answered here, on the driver: no task.
            let fut = match built {
                Ok(Started::Done(res)) => return end(conn, handler_outcome(Ok(res)), rt.now()),
                Ok(Started::Running(fut)) => fut,
                Err(panic) => {
                    let outcome = HandlerOutcome::Panic(panic_message(&*panic));
                    return end(conn, outcome, rt.now());
                }
            };
            let fut = CatchUnwind(fut);
            #[cfg(feature = "tracing")]
            let fut = span.instrument(fut);
            let c = conn.clone();
            let r = rt.clone();
            let task = rt.spawn_handler(number, async move {
                let outcome = handler_outcome(fut.await);
                end(&c, outcome, r.now());
                c.wake();
            });
            match conn.lock().running.get_mut(&id) {
                Some(r) => r.task = Some(Box::new(task)),
                // Cancelled meanwhile (or already done: then this does nothing).
                None => task.abort(),
            }
        }
        Work::Notification(token, method, metadata, payload, handler, cancel) => {
            let ctx = CallContext {
                id: 0,
                method: method.clone(),
                deadline: None,
                kind: CallKind::Unary,
                notification: true,
                metadata,
                // Notifications are admitted in the server's codec only (or raw).
                codec: 0,
                connection: shared.clone(),
                cancel,
                started: rt.now(),
            };
            let c = conn.clone();
            // The handler's end: its error (a payload it could not decode, say) is counted by
            // the session.
            let done = move |c: &Connection<R>, res: Result<HandlerResult, String>| {
                let mut st = c.lock();
                st.notifications.remove(&token);
                let now = st.rt.now();
                match res {
                    Ok(Ok(_)) => st.session.notification_done(now, token),
                    Ok(Err(e)) => {
                        st.session
                            .notification_failed(now, token, &method, &e.to_remote())
                    }
                    Err(panic) => st.session.notification_failed(
                        now,
                        token,
                        &method,
                        &RemoteError::new(ErrorCode::Panic, panic),
                    ),
                }
            };
            #[cfg(feature = "tracing")]
            let trace = crate::trace::ServerTrace::start(&ctx, shared.transport, || rt.now());
            #[cfg(feature = "tracing")]
            let done = {
                let (trace, r) = (trace.clone(), rt.clone());
                move |c: &Connection<R>, res: Result<HandlerResult, String>| {
                    trace.end_result(&res, || r.now());
                    done(c, res);
                }
            };
            let build = || (handler.run)(ctx, payload, ctl);
            #[cfg(feature = "tracing")]
            let build = || trace.in_scope(build);
            let fut = match std::panic::catch_unwind(AssertUnwindSafe(build)) {
                Ok(Started::Running(fut)) => fut,
                Ok(Started::Done(res)) => return done(&c, Ok(res)),
                Err(panic) => return done(&c, Err(panic_message(&*panic))),
            };
            let fut = CatchUnwind(fut);
            #[cfg(feature = "tracing")]
            let fut = trace.instrument(fut);
            let task = rt.spawn_handler(number, async move {
                let res = fut.await;
                done(&c, res);
                c.wake();
            });
            // Stopped by its deadline or the end of the connection: the session dropped it.
            match conn.lock().notifications.get_mut(&token) {
                Some(r) => r.task = Some(Box::new(task)),
                None => task.abort(),
            }
        }
    }
}

/// Stops every handler still running when serving ends — normally or because the `serve`
/// future was dropped.
struct StopHandlers<R: Runtime>(Arc<Connection<R>>);

impl<R: Runtime> Drop for StopHandlers<R> {
    fn drop(&mut self) {
        let (running, wakers): (Vec<Running>, Vec<Wakers>) = {
            let mut st = self.0.lock();
            let calls: Vec<Running> = st.running.drain().map(|(_, r)| r).collect();
            let running = calls
                .into_iter()
                .chain(st.notifications.drain().map(|(_, r)| r))
                .collect();
            (running, st.wakers.drain().map(|(_, w)| w).collect())
        };
        for r in running {
            r.stop();
        }
        wakers.into_iter().for_each(Wakers::wake_all);
    }
}

impl<C: Codec, R: Runtime> RpcServer<C, R> {
    /// Serves one connection until the peer closes it or the server shuts down. Returns an
    /// error if the client broke the protocol or the transport failed.
    pub async fn serve<T: MessageChannel>(&self, channel: T) -> Result<(), RpcError> {
        self.serve_admitted(channel, None).await
    }

    /// [`serve`](Self::serve) for a connection a listener admitted in `slot`: the driver
    /// keeps the slot's busy mark and closes (or drains) the connection when the listener
    /// reclaims it.
    pub(crate) async fn serve_admitted<T: MessageChannel>(
        &self,
        channel: T,
        slot: Option<Slot>,
    ) -> Result<(), RpcError> {
        let shared = &self.shared;
        let number = shared.connections_served.fetch_add(1, Ordering::Relaxed);
        let mut session =
            ServerSession::new(shared.config, channel.wire_config(), C::ID, shared.rt.now());
        session.set_bounds(&shared.bounds);
        channel
            .transport()
            .set_read_budget(shared.bounds.reads.clone());
        let conn = Arc::new(Connection::new(ServerState {
            session,
            rt: shared.rt.clone(),
            running: id_map(),
            wakers: id_map(),
            notifications: id_map(),
            routes: shared.handlers.clone(),
            shutdown_seen: false,
            spare: Vec::new(),
            slot,
        }));
        let contexts = Arc::new(ConnectionContext {
            peer: channel.transport().peer_info(),
            shutdown: shared.shutdown.clone(),
            #[cfg(feature = "tracing")]
            transport: crate::trace::transport_kind(channel.transport().name()),
        });
        if let Some(slot) = &conn.lock().slot {
            slot.set_waker(Waker::from(Arc::new(WakeConnection(Arc::downgrade(&conn)))));
        }
        {
            let mut conns = shared
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            conns.retain(|c| c.strong_count() > 0);
            conns.push(Arc::downgrade(&conn));
        }
        let _stop = StopHandlers(conn.clone());
        let ctl: Arc<dyn StreamCtl> = Arc::new(Ctl { conn: conn.clone() });
        let rt = &shared.rt;
        #[cfg(feature = "tracing")]
        let name = channel.transport().name().to_owned();
        #[cfg(feature = "tracing")]
        crate::trace::connected("server", &name);
        drive(
            rt,
            conn.clone(),
            &channel,
            |c, w| start(rt, number, c, &ctl, &contexts, w),
            |st, now| {
                if !st.shutdown_seen && shared.shutdown.is_raised() {
                    st.shutdown_seen = true;
                    st.session.start_shutdown(now());
                }
                // The server's output or read buffers fell back: every connection retries its
                // waiting streams and reads.
                if shared.bounds.output.take_freed() | shared.bounds.reads.take_freed() {
                    shared.wake_connections();
                }
                st.session.handle_budget_freed();
                // What the listener's admission sees of the connection, and its reclaim.
                if let Some(slot) = &st.slot {
                    if slot.take_reclaim() {
                        st.session.reclaim(now());
                    }
                    slot.set_busy(!st.session.is_idle());
                }
            },
        )
        .await;
        // Its read buffer goes back to the budget: connections waiting for it read again.
        drop(channel);
        if shared.bounds.reads.take_freed() {
            shared.wake_connections();
        }
        let reason = conn.lock().session.close_reason().cloned();
        #[cfg(feature = "tracing")]
        if let Some(r) = &reason {
            crate::trace::disconnected("server", &name, r, r.is_abnormal());
        }
        xrpc_proto::served(reason)
    }
}
