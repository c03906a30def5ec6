//! Serving one connection: its thread reads the transport into the [`ServerSession`], fires its
//! timers and starts what it routes; handlers write their own answers. Of the calls one read
//! brings, the last unary one runs on the connection's thread (a lone call is answered with no
//! hand-off at all); the others, and every streaming handler (it blocks for credit, which only
//! the connection's thread brings), run on the server's bounded pool.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use xrpc_proto::idmap::{IdMap, id_map};
use xrpc_proto::{
    CallKind, Codec, IncomingCall, MethodTable, Payload, ServerSession, ServerSessionEvent,
    WireConfig, handler_outcome, panic_message,
};

use crate::RpcError;
use crate::link::{Driven, Link, fire_timers};
use crate::server::{Handler, Shared};
use crate::transport::Io;

/// Longest wait of a connection's thread: how soon it notices a shutdown.
const CHECK: Duration = Duration::from_millis(100);

/// A handler in progress, as its stream sender sees it: whether its call is over for the
/// client (cancelled, expired, connection gone), and the threads waiting for credit.
#[derive(Default)]
pub(crate) struct Running {
    pub(crate) cancelled: bool,
    pub(crate) threads: Vec<Thread>,
}

/// What routing hands the connection's thread to start.
pub(crate) enum Work {
    Call(IncomingCall<Payload>, Handler),
    Notification(u64, Payload, Handler),
}

pub(crate) struct ServerState {
    pub(crate) session: ServerSession,
    pub(crate) running: IdMap<Running>,
    routes: Arc<RwLock<MethodTable<Handler>>>,
    work: Vec<Work>,
}

impl Driven for ServerState {
    type Session = ServerSession;

    fn session(&mut self) -> &mut ServerSession {
        &mut self.session
    }

    fn route(&mut self) {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        while let Some(ev) = self.session.poll_event(&*routes) {
            let id = match ev {
                ServerSessionEvent::Call { call, handler } => {
                    self.running.insert(call.id, Running::default());
                    self.work.push(Work::Call(call, handler));
                    continue;
                }
                ServerSessionEvent::Notification {
                    token,
                    payload,
                    handler,
                    ..
                } => {
                    self.work.push(Work::Notification(token, payload, handler));
                    continue;
                }
                // A synchronous handler cannot be stopped: it runs to its end on the bounded
                // pool, and its slot is given back then.
                ServerSessionEvent::NotificationStopped { .. } => continue,
                ServerSessionEvent::Cancelled { id } => {
                    if let Some(r) = self.running.get_mut(&id) {
                        r.cancelled = true;
                    }
                    id
                }
                // Only unary and server-streaming methods are served: the session refuses
                // client streams before they reach here.
                ServerSessionEvent::Wake(wake) => wake.id(),
            };
            if let Some(r) = self.running.get_mut(&id) {
                r.threads.drain(..).for_each(|t| t.unpark());
            }
        }
    }
}

/// A connection as its handlers see it.
pub(crate) struct ServerConn {
    pub(crate) link: Link<ServerState>,
    /// The connection's thread, woken when a handler finishes.
    thread: Thread,
}

/// Runs a handler and reports its outcome (a panic fails the call, not the connection).
fn run(conn: &Arc<ServerConn>, work: Work) {
    match work {
        Work::Call(call, handler) => {
            let IncomingCall { id, payload, .. } = call;
            let res = std::panic::catch_unwind(AssertUnwindSafe(|| handler(conn, id, payload)));
            let mut st = conn.link.lock();
            st.running.remove(&id);
            let res = res.map_err(|p| panic_message(&*p));
            st.session
                .complete(Instant::now(), id, handler_outcome(res));
        }
        Work::Notification(token, payload, handler) => {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handler(conn, 0, payload)));
            conn.link
                .lock()
                .session
                .notification_done(Instant::now(), token);
        }
    }
    conn.link.flush();
    conn.thread.unpark();
}

/// Serves one connection on the calling thread until the client closes it or the server
/// shuts down.
pub(crate) fn serve<C: Codec>(shared: &Shared<C>, io: Io) -> Result<(), RpcError> {
    let wire = WireConfig::default().with_max_frame_size(io.max_frame_size);
    let mut session = ServerSession::new(shared.config, wire, C::ID, Instant::now());
    session.set_read_budget(shared.reads.clone());
    let state = ServerState {
        session,
        running: id_map(),
        routes: shared.routes.clone(),
        work: Vec::new(),
    };
    let (link, mut reader) = Link::new(state, io);
    let conn = Arc::new(ServerConn {
        link,
        thread: thread::current(),
    });
    let mut shutdown_seen = false;
    let mut work = Vec::new();
    loop {
        let (timeout, wants_read, closed) = {
            let mut st = conn.link.lock();
            let now = Instant::now();
            if !shutdown_seen && shared.shutdown.load(Ordering::Acquire) {
                shutdown_seen = true;
                st.session.start_shutdown(now);
            }
            let timeout = fire_timers(&mut st.session, now);
            st.route();
            std::mem::swap(&mut work, &mut st.work);
            (timeout, st.session.wants_read(), st.session.is_closed())
        };
        let unary = |w: &Work| matches!(w, Work::Call(c, _) if c.kind == CallKind::Unary);
        let here = work.iter().rposition(unary).map(|i| work.swap_remove(i));
        for w in work.drain(..) {
            let c = conn.clone();
            shared.pool.run(Box::new(move || run(&c, w)));
        }
        if let Some(w) = here {
            run(&conn, w);
        }
        conn.link.flush();
        if closed {
            break;
        }
        let wait = timeout.map_or(CHECK, |t| t.min(CHECK));
        if wants_read {
            conn.link.read(&mut *reader, Some(wait));
        } else {
            thread::park_timeout(wait);
        }
    }
    // Handlers still running learn that their call is over.
    let mut st = conn.link.lock();
    for r in st.running.values_mut() {
        r.cancelled = true;
        r.threads.drain(..).for_each(|t| t.unpark());
    }
    let reason = st.session.close_reason().cloned();
    drop(st);
    conn.link.closer.close();
    xrpc_proto::served(reason)
}
