//! Serving one connection: the [`ServerSession`] driven by one future ([`RpcServer::serve`]),
//! the handlers it starts, and the streams they use.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use xrpc_proto::idmap::{IdMap, id_map};
use xrpc_proto::{
    CallKind, Codec, HandlerOutcome, IncomingCall, MethodTable, Payload, RpcError, ServerSession,
    ServerSessionEvent, StreamSendError, handler_outcome, panic_message,
};

use super::driver::{Driven, Shared, drive};
use super::recycle::Started;
use super::server::{CallContext, HandlerFn, RpcServer};
use super::stream::{Refused, StreamCtl};
use crate::channel::MessageChannel;
use crate::runtime::{Runtime, Task};
use crate::signal::Signal;
use crate::transport::FrameTransport;

/// A connection's state as its driver and its handlers share it.
pub(crate) type Connection<R> = Shared<ServerState<R>>;

/// A handler running on the connection, as its streams see it.
struct Running {
    task: Option<Box<dyn Task>>,
    /// Raised when the call is stopped (its handler sees it in its [`CallContext`]).
    cancel: Arc<Signal>,
    /// Items of the client's stream not yet taken (bounded by the credit window).
    items: VecDeque<Payload>,
    /// The client ended its stream.
    ended: bool,
    recv: Option<Waker>,
    /// Senders waiting for credit (a `StreamSender` may be shared by several tasks).
    send: Vec<Waker>,
}

impl Running {
    fn stop(self) {
        self.cancel.raise();
        if let Some(t) = self.task {
            t.abort();
        }
        for w in self.recv.into_iter().chain(self.send) {
            w.wake();
        }
    }
}

/// What routing hands the driver to start, outside the lock.
pub(crate) enum Work {
    Call(IncomingCall<Payload>, HandlerFn, Arc<Signal>),
    Notification(u64, Bytes, Payload, HandlerFn, Arc<Signal>),
}

pub(crate) struct ServerState<R: Runtime> {
    session: ServerSession,
    /// The server's runtime (its clock).
    rt: R,
    running: IdMap<Running>,
    /// Notification handlers running, by token.
    notifications: IdMap<Running>,
    routes: Arc<RwLock<MethodTable<HandlerFn>>>,
    shutdown_seen: bool,
    /// Cancel signals of calls that ended without being cancelled and that nobody else holds,
    /// for the next calls (no allocation per call).
    spare: Vec<Arc<Signal>>,
}

/// Most cancel signals a connection keeps for reuse.
const SPARE_SIGNALS: usize = 64;

impl Running {
    /// A running call's state, with a cancel signal from `spare` if there is one.
    fn new(spare: &mut Vec<Arc<Signal>>) -> Self {
        Self {
            task: None,
            cancel: spare.pop().unwrap_or_default(),
            items: VecDeque::new(),
            ended: false,
            recv: None,
            send: Vec::new(),
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
            notifications,
            routes,
            spare,
            ..
        } = self;
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
                    handler,
                } => {
                    let r = Running::new(spare);
                    let cancel = r.cancel.clone();
                    notifications.insert(token, r);
                    work.push(Work::Notification(token, method, payload, handler, cancel));
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
                }
                ServerSessionEvent::StreamItem { id, payload } => {
                    if let Some(r) = running.get_mut(&id) {
                        r.items.push_back(payload);
                        if let Some(w) = r.recv.take() {
                            w.wake();
                        }
                    }
                }
                ServerSessionEvent::StreamEnd { id } => {
                    if let Some(r) = running.get_mut(&id) {
                        r.ended = true;
                        if let Some(w) = r.recv.take() {
                            w.wake();
                        }
                    }
                }
                ServerSessionEvent::SendCredit { id } => {
                    if let Some(r) = running.get_mut(&id) {
                        r.send.drain(..).for_each(Waker::wake);
                    }
                }
            }
        }
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
            session, running, ..
        } = &mut *st;
        let Some(r) = running.get_mut(&id) else {
            // The call was stopped (cancelled, past its deadline, the connection or the server
            // ending) before the client ended its stream: not an end the handler may take for
            // the whole input.
            return Poll::Ready(Some(Err(RpcError::Cancelled)));
        };
        if let Some(item) = r.items.pop_front() {
            session.stream_consumed(id, 1);
            drop(st);
            self.conn.wake();
            return Poll::Ready(Some(Ok(item)));
        }
        if r.ended {
            return Poll::Ready(None);
        }
        r.recv = Some(cx.waker().clone());
        Poll::Pending
    }

    fn abandon(&self, id: u64, _unread: u32) {
        let mut st = self.conn.lock();
        let ServerState {
            session, running, ..
        } = &mut *st;
        if let Some(r) = running.get_mut(&id) {
            let unread = u32::try_from(r.items.len()).unwrap_or(u32::MAX);
            r.items.clear();
            r.ended = true;
            session.stream_abandoned(id, unread);
        }
        drop(st);
        self.conn.wake();
    }

    fn poll_send(
        &self,
        id: u64,
        payload: &mut Option<Payload>,
        _codec: u8,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Refused>> {
        let mut st = self.conn.lock();
        let Some(p) = payload.take() else {
            return Poll::Ready(Ok(()));
        };
        match st.session.send_stream_item(id, p) {
            Ok(()) => {
                drop(st);
                self.conn.wake();
                Poll::Ready(Ok(()))
            }
            Err(StreamSendError::NoCredit(p)) => {
                *payload = Some(p);
                match st.running.get_mut(&id) {
                    Some(r) => {
                        if !r.send.iter().any(|w| w.will_wake(cx.waker())) {
                            r.send.push(cx.waker().clone());
                        }
                        Poll::Pending
                    }
                    None => Poll::Ready(Err(Refused::Closed)),
                }
            }
            Err(StreamSendError::Closed(_)) => Poll::Ready(Err(Refused::Closed)),
        }
    }

    fn finish(&self, id: u64) {
        let mut st = self.conn.lock();
        let now = st.rt.now();
        st.session.complete(now, id, HandlerOutcome::StreamEnd);
        // The call is over: a handler still reading the client's stream sees its end.
        if let Some(r) = st.running.get_mut(&id) {
            r.ended = true;
            if let Some(w) = r.recv.take() {
                w.wake();
            }
        }
        drop(st);
        self.conn.wake();
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

/// Reports the end of call `id`'s handler.
fn complete<R: Runtime>(conn: &Connection<R>, id: u64, outcome: HandlerOutcome) {
    let mut st = conn.lock();
    if let Some(r) = st.running.remove(&id) {
        r.recycle(&mut st.spare);
    }
    let now = st.rt.now();
    st.session.complete(now, id, outcome);
}

/// Starts what routing collected. A unary handler that finishes at once runs here, on the
/// driver (no task hand-off), outside the connection's lock; others get a task.
fn start<R: Runtime>(
    rt: &R,
    number: u64,
    conn: &Arc<Connection<R>>,
    ctl: &Arc<dyn StreamCtl>,
    work: Work,
) {
    match work {
        Work::Call(call, handler, cancel) => {
            let id = call.id;
            let ctx = CallContext {
                id,
                method: call.method,
                deadline: call.deadline,
                kind: call.kind,
                cancel,
            };
            let built = std::panic::catch_unwind(AssertUnwindSafe(|| {
                handler(ctx, call.payload, ctl.clone())
            }));
            // A unary handler that finished in its first poll (made while starting it) is
            // answered here, on the driver: no task.
            let fut = match built {
                Ok(Started::Done(res)) => return complete(conn, id, handler_outcome(Ok(res))),
                Ok(Started::Running(fut)) => CatchUnwind(fut),
                Err(panic) => {
                    return complete(conn, id, HandlerOutcome::Panic(panic_message(&*panic)));
                }
            };
            let c = conn.clone();
            let task = rt.spawn_handler(number, async move {
                let res = fut.await;
                complete(&c, id, handler_outcome(res));
                c.wake();
            });
            match conn.lock().running.get_mut(&id) {
                Some(r) => r.task = Some(Box::new(task)),
                // Cancelled meanwhile (or already done: then this does nothing).
                None => task.abort(),
            }
        }
        Work::Notification(token, method, payload, handler, cancel) => {
            let ctx = CallContext {
                id: 0,
                method,
                deadline: None,
                kind: CallKind::Unary,
                cancel,
            };
            let c = conn.clone();
            let done = move |c: &Connection<R>| {
                let mut st = c.lock();
                st.notifications.remove(&token);
                let now = st.rt.now();
                st.session.notification_done(now, token);
            };
            let Ok(Started::Running(fut)) =
                std::panic::catch_unwind(AssertUnwindSafe(|| handler(ctx, payload, ctl.clone())))
            else {
                // Done already (or panicked while starting).
                return done(&c);
            };
            let fut = CatchUnwind(fut);
            let task = rt.spawn_handler(number, async move {
                let _ = fut.await;
                done(&c);
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
        let running: Vec<Running> = {
            let mut st = self.0.lock();
            let calls: Vec<Running> = st.running.drain().map(|(_, r)| r).collect();
            calls
                .into_iter()
                .chain(st.notifications.drain().map(|(_, r)| r))
                .collect()
        };
        for r in running {
            r.stop();
        }
    }
}

impl<C: Codec, R: Runtime> RpcServer<C, R> {
    /// Serves one connection until the peer closes it or the server shuts down. Returns an
    /// error if the client broke the protocol or the transport failed.
    pub async fn serve<T: MessageChannel>(&self, channel: T) -> Result<(), RpcError> {
        let shared = &self.shared;
        let number = shared.connections_served.fetch_add(1, Ordering::Relaxed);
        let mut session =
            ServerSession::new(shared.config, channel.wire_config(), C::ID, shared.rt.now());
        session.set_output_budget(shared.output.clone());
        channel.transport().set_read_budget(shared.reads.clone());
        let conn = Arc::new(Connection::new(ServerState {
            session,
            rt: shared.rt.clone(),
            running: id_map(),
            notifications: id_map(),
            routes: shared.handlers.clone(),
            shutdown_seen: false,
            spare: Vec::new(),
        }));
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
        drive(
            rt,
            conn.clone(),
            &channel,
            |c, w| start(rt, number, c, &ctl, w),
            |st, now| {
                if !st.shutdown_seen && shared.shutdown.is_raised() {
                    st.shutdown_seen = true;
                    st.session.start_shutdown(now);
                }
                // The server's output or read buffers fell back: every connection retries its
                // waiting streams and reads.
                if shared.output.take_freed() | shared.reads.take_freed() {
                    shared.wake_connections();
                }
                st.session.handle_budget_freed();
            },
        )
        .await;
        // Its read buffer goes back to the budget: connections waiting for it read again.
        drop(channel);
        if shared.reads.take_freed() {
            shared.wake_connections();
        }
        let reason = conn.lock().session.close_reason().cloned();
        xrpc_proto::served(reason)
    }
}
