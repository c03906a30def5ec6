//! One driver per connection: a single future that reads the transport into the session,
//! fires the session's timer, writes the session's output, and closes the transport once the
//! session is over. Calls, streams and handlers never touch the transport: they change the
//! session under its lock and wake the driver.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::BytesMut;
use xrpc_proto::Session;

use crate::channel::{ChannelError, MessageChannel};
use crate::runtime::{Runtime, Timer};
use crate::transport::{FrameTransport, TransportError};

/// What the driver needs of a connection's state (the client's or the server's): its session,
/// and the routing of the session's events to the calls and handlers that wait for them.
pub(crate) trait Driven: Send + 'static {
    /// The session: a [`ClientSession`](xrpc_proto::ClientSession) or a
    /// [`ServerSession`](xrpc_proto::ServerSession).
    type Session: Session;
    /// Work the driver does outside the lock after routing events (starting handlers).
    type Work: Send;

    fn session(&mut self) -> &mut Self::Session;
    /// Whether other tasks are likely to add output in a moment (calls in flight together):
    /// the driver then lets them run once before it writes, so that their output leaves in
    /// the same write.
    fn batches(&mut self) -> bool {
        false
    }
    /// Routes the session's events: wakes waiting calls and streams, and collects `work`.
    fn dispatch(&mut self, work: &mut Vec<Self::Work>);
}

/// A connection's state, shared by its driver and its application handles.
pub(crate) struct Shared<S> {
    state: Mutex<S>,
    driver: Mutex<Option<Waker>>,
    /// The driver is due to look at the session's output: set by whoever queued output and
    /// woke it (or by the driver when it puts a write off), cleared by the driver before it
    /// looks. Output queued while it is set needs no wake-up of its own (see
    /// [`output_queued`](Self::output_queued)).
    output_due: AtomicBool,
}

impl<S> Shared<S> {
    pub(crate) fn new(state: S) -> Self {
        Self {
            state: Mutex::new(state),
            driver: Mutex::new(None),
            output_due: AtomicBool::new(false),
        }
    }

    /// Output was queued (under the lock, now released): whether the driver must be woken
    /// for it. `false` when a wake-up for output is due already — the driver has not looked
    /// at the output since, and when it does (after clearing the mark, before taking the
    /// lock) it finds this output too. So calls in flight together wake it once per batch.
    pub(crate) fn output_queued(&self) -> bool {
        !self.output_due.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the driver: the session has output, a new deadline, or events to route. The
    /// waker stays registered: the next wake-up reaches the driver too, even if it was not
    /// polled in between (a client's driver waker picks whom to wake each time).
    pub(crate) fn wake(&self) {
        let waker = self
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn register(&self, waker: &Waker) {
        let mut slot = self.driver.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

/// Drives the connection of `shared` over `channel` until its session is over; `run` does the
/// work that routing collected (outside the lock). Closes the channel at the end.
pub(crate) async fn drive<S, M, R>(
    rt: &R,
    shared: Arc<Shared<S>>,
    channel: &M,
    mut run: impl FnMut(&Arc<Shared<S>>, S::Work),
    mut tick: impl FnMut(&mut S, Instant),
) where
    S: Driven,
    M: MessageChannel,
    R: Runtime,
{
    // If this future is dropped before the session ends (the driver task aborted, its runtime
    // shut down), the session ends now: every waiting call gets its typed error.
    let mut stopped = Stopped(Some(&*shared));
    let values = channel.carries_values();
    let transport = channel.transport();
    let shared_ref = &shared;
    // Bytes: frames are fed to the session as they are decoded, and output is encoded straight
    // into the transport's write buffer. Values: packets move as they are.
    let read_frames = || {
        transport.recv_frames_with(READ_BATCH, move |f| {
            shared_ref.lock().session().handle_frame(rt.now(), f)
        })
    };
    let write_frames = || {
        transport.send_batch_with(move |buf: &mut BytesMut| {
            shared_ref.lock().session().poll_transmit(buf);
            Ok::<_, TransportError>(())
        })
    };
    let read_packet = || async move {
        let p = channel.recv_packet().await?;
        shared_ref.lock().session().handle_packet(rt.now(), p);
        Ok::<_, ChannelError>(())
    };
    let write_packets = || async move {
        loop {
            let Some(p) = shared_ref.lock().session().poll_packet() else {
                return Ok::<_, ChannelError>(());
            };
            channel.send_packet(p).await?;
        }
    };
    // Each future slot starts empty; its type is that of its factory's future.
    let mut rf = pin!(if false { Some(read_frames()) } else { None });
    let mut wf = pin!(if false { Some(write_frames()) } else { None });
    let mut rp = pin!(if false { Some(read_packet()) } else { None });
    let mut wp = pin!(if false { Some(write_packets()) } else { None });
    let mut timer = rt.timer(rt.now());
    let mut sleeping_until: Option<Instant> = None;
    let mut work = Vec::new();
    // Whether the transport last held part of a frame, or a write under way (the session keeps
    // their deadlines).
    let mut partial = false;
    let mut unwritten = false;
    // Polls of this future, and the poll in which a write was put off (see `batches`): the
    // write waits for the next poll, once per batch.
    let mut polls: u64 = 0;
    let mut put_off: Option<u64> = None;

    std::future::poll_fn(|cx| {
        shared.register(cx.waker());
        polls += 1;
        let mut first_turn = true;
        // Reads made in this poll (see READS_PER_POLL).
        let mut reads = 0;
        loop {
            let mut progress = false;
            let deferring = put_off == Some(polls);
            if !deferring {
                // Looking at the output now: output queued from here on wakes the driver.
                shared.output_due.store(false, Ordering::Release);
            }
            // Time, routing, and what to write.
            let (mut write, batches) = {
                let mut st = shared.lock();
                let now = rt.now();
                tick(&mut st, now);
                // Deadlines that passed while the driver was not polled; later turns of this
                // poll follow at once, and a deadline that passes meanwhile fires the timer
                // armed when the driver goes to sleep.
                if first_turn && st.session().poll_timeout().is_some_and(|t| t <= now) {
                    st.session().handle_timeout(now);
                }
                first_turn = false;
                st.dispatch(&mut work);
                let writing = wf.is_some() || wp.is_some();
                if !writing && !st.session().has_transmit() {
                    // Everything handed out was written: a closing session learns it here.
                    written(st.session(), values);
                }
                let write = !writing && st.session().has_transmit();
                (write, write && put_off.is_none() && st.batches())
            };
            if deferring {
                write = false;
            } else if batches {
                // Calls in flight together: let the tasks that are ready run first (this
                // future is polled again after them), so that their requests go in this
                // write. The mark stays set: their output needs no wake-up.
                put_off = Some(polls);
                shared.output_due.store(true, Ordering::Release);
                cx.waker().wake_by_ref();
                write = false;
            }
            if !work.is_empty() {
                progress = true;
                for w in work.drain(..) {
                    run(&shared, w);
                }
            }
            if write {
                put_off = None;
                if values {
                    wp.set(Some(write_packets()));
                } else {
                    wf.set(Some(write_frames()));
                }
            }
            let write_done = if let Some(f) = wf.as_mut().as_pin_mut() {
                f.poll(cx).map(|r| r.map_err(ChannelError::from))
            } else if let Some(f) = wp.as_mut().as_pin_mut() {
                f.poll(cx)
            } else {
                Poll::Pending
            };
            // A finished write alone needs no new turn unless output was queued meanwhile
            // (checked below, under the lock taken there anyway).
            let mut wrote = false;
            if let Poll::Ready(res) = write_done {
                wf.set(None);
                wp.set(None);
                wrote = true;
                if let Err(e) = res {
                    shared
                        .lock()
                        .session()
                        .handle_transport_error(&e.to_string());
                }
            }
            // Read, while the session wants input — after writing: a transport may spin a
            // moment in a read (shared memory does), which must not hold up an answer.
            let (reading, wants) = {
                let mut st = shared.lock();
                (
                    rf.is_some() || rp.is_some(),
                    st.session().wants_read() && !st.session().is_closed(),
                )
            };
            if !reading && wants {
                if values {
                    rp.set(Some(read_packet()));
                } else {
                    rf.set(Some(read_frames()));
                }
            }
            let read = if let Some(f) = rf.as_mut().as_pin_mut() {
                f.poll(cx)
                    .map(|r| r.map(|_| ()).map_err(ChannelError::from))
            } else if let Some(f) = rp.as_mut().as_pin_mut() {
                f.poll(cx)
            } else {
                Poll::Pending
            };
            if let Poll::Ready(res) = read {
                rf.set(None);
                rp.set(None);
                progress = true;
                reads += 1;
                if let Err(e) = res {
                    let mut st = shared.lock();
                    match e {
                        ChannelError::Transport(TransportError::ConnectionClosed) => {
                            st.session().handle_eof(rt.now())
                        }
                        // A frame over the maximum: it fails alone.
                        ChannelError::Transport(TransportError::FrameSkipped(frame)) => {
                            st.session().handle_skipped(rt.now(), &frame)
                        }
                        e => st.session().handle_transport_error(&e.to_string()),
                    }
                }
            }
            // Over: a write still under way is abandoned (the session's grace has passed);
            // what the end itself decided (failed calls, stopped handlers) is routed first.
            // Else, with nothing more to do, the next deadline to sleep until.
            let next = {
                let mut st = shared.lock();
                let held = transport.partial_frame();
                if held > 0 || partial {
                    st.session().handle_partial(rt.now(), held);
                    // A new partial frame has a new deadline: compute the timer again.
                    progress |= held > 0 && !partial;
                    partial = held > 0;
                }
                let writing = wf.is_some() || wp.is_some();
                if writing || unwritten {
                    // A transport that cannot tell counts one byte until the write is done.
                    let bytes = if writing {
                        transport.unwritten().max(1)
                    } else {
                        0
                    };
                    st.session().handle_unwritten(rt.now(), bytes);
                    progress |= writing && !unwritten;
                    unwritten = writing;
                }
                if wrote && !progress {
                    if st.session().has_transmit() {
                        progress = true;
                    } else {
                        // Everything handed out was written (see the top of the loop).
                        written(st.session(), values);
                    }
                }
                if st.session().is_closed() {
                    st.dispatch(&mut work);
                    work.clear();
                    return Poll::Ready(());
                }
                if progress {
                    None
                } else {
                    st.session().poll_timeout()
                }
            };
            if progress && reads >= READS_PER_POLL {
                // Input keeps coming: let the executor's other tasks (other connections) run
                // before this one reads on — a peer that writes as fast as it can must not
                // hold a worker thread for as long as it writes.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if progress {
                continue;
            }
            // Sleep until the next deadline (or until woken). The timer is moved only to an
            // earlier instant: deadlines of calls in flight mostly move later (each finished
            // call uncovers a later one), and a timer that fires early is harmless — the
            // session expires nothing before its time and the timer is re-armed.
            if let Some(at) = next
                && sleeping_until.is_none_or(|armed| at < armed)
            {
                sleeping_until = Some(at);
                timer.reset(at);
            }
            if let Some(at) = sleeping_until
                && Pin::new(&mut timer).poll(cx).is_ready()
            {
                let mut st = shared.lock();
                st.session().handle_timeout(rt.now().max(at));
                sleeping_until = None;
                continue;
            }
            return Poll::Pending;
        }
    })
    .await;
    stopped.0 = None;
    let _ = channel.close().await;
}

/// Ends the session of a driver dropped before it (see [`drive`]).
struct Stopped<'a, S: Driven>(Option<&'a Shared<S>>);

impl<S: Driven> Drop for Stopped<'_, S> {
    fn drop(&mut self) {
        if let Some(shared) = self.0 {
            let mut st = shared.lock();
            if !st.session().is_closed() {
                st.session()
                    .handle_transport_error("the connection's driver was stopped");
            }
            st.dispatch(&mut Vec::new());
        }
    }
}

/// Tells the session that everything it handed out was written (an empty poll).
fn written<S: Session>(session: &mut S, values: bool) {
    if values {
        // Nothing is queued, so nothing is taken.
        let _ = session.poll_packet();
    } else {
        session.poll_transmit(&mut BytesMut::new());
    }
}

/// Most frames a read hands to the session at once (one lock each).
const READ_BATCH: usize = 16;

/// Most reads the driver makes in one poll before it lets other tasks run (so at most
/// `READ_BATCH * READS_PER_POLL` frames).
const READS_PER_POLL: usize = 4;
