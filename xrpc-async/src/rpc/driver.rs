//! One driver per connection: a single future that reads the transport into the session,
//! fires the session's timer, writes the session's output, and closes the transport once the
//! session is over. Calls, streams and handlers never touch the transport: they change the
//! session under its lock and wake the driver.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::BytesMut;
use futures_util::FutureExt;
use futures_util::future::Either;
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
    /// Whether running work may make more to do at once (a handler that answered queued
    /// output): the turn then writes it and another turn follows. Waking calls does not.
    const WORK_MAKES_MORE: bool = true;

    fn session(&mut self) -> &mut Self::Session;
    /// Whether other tasks are likely to add output in a moment (calls in flight together):
    /// the driver then lets them run once before it writes, so that their output leaves in
    /// the same write.
    fn batches(&mut self) -> bool {
        false
    }
    /// Routes the session's events: wakes waiting calls and streams, and collects `work`.
    fn dispatch(&mut self, work: &mut Vec<Self::Work>);
    /// What becomes of work routed as the session ended, outside the lock: the server starts
    /// no handler then; the client still wakes its calls.
    fn at_end(work: Self::Work);
}

/// A connection's state, shared by its driver and its application handles.
pub(crate) struct ConnectionCore<S> {
    state: Mutex<S>,
    driver: Mutex<Option<Waker>>,
    /// The driver is due to look at the session's output: set by whoever queued output and
    /// woke it (or by the driver when it puts a write off), cleared by the driver before it
    /// looks. Output queued while it is set needs no wake-up of its own (see
    /// [`output_queued`](Self::output_queued)).
    output_due: AtomicBool,
}

impl<S> ConnectionCore<S> {
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
/// work that routing collected (outside the lock), `tick` runs first in every turn (the
/// server's shutdown and budget checks), given the clock (read at its first use in the turn).
/// Closes the channel at the end.
pub(crate) async fn drive<S, M, R>(
    rt: &R,
    shared: Arc<ConnectionCore<S>>,
    channel: &M,
    run: impl FnMut(&Arc<ConnectionCore<S>>, S::Work),
    tick: impl FnMut(&mut S, &mut dyn FnMut() -> Instant),
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
    let read = || {
        if values {
            Either::Left(async move {
                let p = channel.recv_packet().await?;
                shared_ref.lock().session().handle_packet(rt.now(), p);
                Ok::<_, ChannelError>(())
            })
        } else {
            // The frames of one read arrived together: one clock read for all of them.
            let mut at = None;
            Either::Right(
                transport
                    .recv_frames_with(READ_BATCH, move |f| {
                        let now = *at.get_or_insert_with(|| rt.now());
                        shared_ref.lock().session().handle_frame(now, f)
                    })
                    .map(|r| r.map(drop).map_err(ChannelError::from)),
            )
        }
    };
    let write = || {
        if values {
            Either::Left(async move {
                loop {
                    let Some(p) = shared_ref.lock().session().poll_packet() else {
                        return Ok::<_, ChannelError>(());
                    };
                    channel.send_packet(p).await?;
                }
            })
        } else {
            Either::Right(
                transport
                    .send_batch_with(move |buf: &mut BytesMut| {
                        shared_ref.lock().session().poll_transmit(buf);
                        Ok::<_, TransportError>(())
                    })
                    .map(|r| r.map_err(ChannelError::from)),
            )
        }
    };
    // The IO under way; each slot starts empty, its type that of its factory's future.
    let reading = pin!(if false { Some(read()) } else { None });
    let writing = pin!(if false { Some(write()) } else { None });
    let mut driver = Driver {
        rt,
        shared: &shared,
        transport,
        values,
        read,
        write,
        reading,
        writing,
        run,
        tick,
        timer: rt.timer(rt.now()),
        sleeping_until: None,
        work: Vec::new(),
        partial: false,
        unwritten: false,
        reads: 0,
        awaited: true,
        polls: 0,
        put_off: None,
        registered: None,
    };
    std::future::poll_fn(|cx| driver.poll(cx)).await;
    stopped.0 = None;
    let _ = channel.close().await;
}

/// The state of one connection's driver between polls (see [`Driver::poll`]).
struct Driver<'a, S: Driven, T, R: Runtime, RF, WF, MR, MW, Run, Tick> {
    rt: &'a R,
    shared: &'a Arc<ConnectionCore<S>>,
    transport: &'a T,
    /// Whether packets move as values (the in-process value transport), not bytes.
    values: bool,
    /// Makes the future of one read (which feeds the session) and of one write (which drains
    /// it).
    read: MR,
    write: MW,
    reading: Pin<&'a mut Option<RF>>,
    writing: Pin<&'a mut Option<WF>>,
    run: Run,
    tick: Tick,
    timer: R::Timer,
    sleeping_until: Option<Instant>,
    /// What routing collected, to run outside the lock.
    work: Vec<S::Work>,
    /// Whether the transport last held part of a frame, or a write under way (the session
    /// keeps their deadlines).
    partial: bool,
    unwritten: bool,
    /// Reads made in this poll (see [`READS_PER_POLL`]).
    reads: usize,
    /// What the transport was last told of the session's `awaits_input`.
    awaited: bool,
    /// Polls of the driver, and the poll in which a write was put off (see
    /// [`Driven::batches`]): the write waits for the next poll, once per batch.
    polls: u64,
    put_off: Option<u64>,
    /// The waker last registered with the connection (its driver is polled with the same one
    /// poll after poll: registering it again would only take a lock).
    registered: Option<Waker>,
}

/// What one turn of the driver learned of its IO, for the end of the turn.
#[derive(Default)]
struct Turn {
    /// Something happened that may have made more to do: run another turn.
    again: bool,
    /// A write finished.
    wrote: bool,
    /// How the write that finished in this turn failed, if it did.
    write_failed: Option<ChannelError>,
    /// How the read that finished in this turn failed, if it did.
    read_failed: Option<ChannelError>,
}

impl<'a, S, T, R, RF, WF, MR, MW, Run, Tick> Driver<'a, S, T, R, RF, WF, MR, MW, Run, Tick>
where
    S: Driven,
    T: FrameTransport,
    R: Runtime,
    RF: Future<Output = Result<(), ChannelError>>,
    WF: Future<Output = Result<(), ChannelError>>,
    MR: Fn() -> RF,
    MW: Fn() -> WF,
    Run: FnMut(&Arc<ConnectionCore<S>>, S::Work),
    Tick: FnMut(&mut S, &mut dyn FnMut() -> Instant),
{
    /// One poll: turns of a fixed order of steps — the session (time, routing, what to write
    /// and read), the work routing collected, output, input, the end of the turn — until no
    /// step wants another; then the timer, armed for the session's next deadline. A turn that
    /// follows another at once keeps the session's lock from the end of the last one.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.shared.register(cx.waker());
            self.registered = Some(cx.waker().clone());
        }
        self.polls += 1;
        self.reads = 0;
        let mut first_turn = true;
        let mut held = None;
        loop {
            let (write, read) = self.drive_session(cx, first_turn, held.take());
            first_turn = false;
            let more = self.run_work() && S::WORK_MAKES_MORE;
            // The work may have queued output (a handler that answered at once): it is written
            // in this turn, as soon as it is queued.
            let write = write || (more && self.output_after_work(cx));
            let mut turn = Turn {
                again: more,
                ..Turn::default()
            };
            self.drive_write(cx, write, &mut turn);
            // The work may have made more to do (events, a handler's stream): the read waits
            // for the next turn — a read may spin.
            if !turn.again {
                self.drive_read(cx, read, &mut turn);
            }
            let (step, st) = self.end_turn(&mut turn);
            match step {
                Step::Over => {
                    drop(st);
                    self.work.drain(..).for_each(S::at_end);
                    return Poll::Ready(());
                }
                Step::Again if self.reads >= READS_PER_POLL => {
                    // Input keeps coming: let the executor's other tasks (other connections)
                    // run before this one reads on — a peer that writes as fast as it can must
                    // not hold a worker thread for as long as it writes.
                    drop(st);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Step::Again => held = Some(st),
                Step::Sleep(next) => {
                    drop(st);
                    if self.drive_timer(cx, next) {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// The session, under its lock: the time (deadlines that passed while the driver was not
    /// polled are looked for in the first turn of a poll; later turns follow at once, and
    /// the timer armed at sleep covers the rest), routing its events, whether to start a
    /// write and a read, and whether input is awaited. `held`: the lock, if the last turn's
    /// end kept it.
    fn drive_session(
        &mut self,
        cx: &Context<'_>,
        first_turn: bool,
        held: Option<MutexGuard<'a, S>>,
    ) -> (bool, bool) {
        let deferring = self.put_off == Some(self.polls);
        if !deferring {
            // Looking at the output now: output queued from here on wakes the driver.
            self.shared.output_due.store(false, Ordering::Release);
        }
        let shared = self.shared;
        let mut st = held.unwrap_or_else(|| shared.lock());
        // The clock is read only where a turn needs it: the first turn's deadlines, a tick that
        // acts (most turns of a call need neither).
        let rt = self.rt;
        let mut now = None;
        let mut clock = || *now.get_or_insert_with(|| rt.now());
        (self.tick)(&mut st, &mut clock);
        if first_turn && let Some(t) = st.session().poll_timeout() {
            let now = clock();
            if t <= now {
                st.session().handle_timeout(now);
            }
        }
        st.dispatch(&mut self.work);
        let write = self.starts_write(&mut st, cx, deferring);
        let read = self.reading.is_none() && st.session().wants_read() && !st.session().is_closed();
        // Whether a call waits for input: a read that spins first (shared memory) spins only
        // then (the transport is told before the read is polled).
        let awaited = st.session().awaits_input();
        if awaited != self.awaited {
            self.awaited = awaited;
            self.transport.set_input_awaited(awaited);
        }
        (write, read)
    }

    /// Whether a write starts now, the session's lock held (`st`): output is queued and no
    /// write is under way — unless this poll puts its write off (`deferring`), or puts it off
    /// now for the output of calls in flight together.
    fn starts_write(&mut self, st: &mut S, cx: &Context<'_>, deferring: bool) -> bool {
        let writing = self.writing.is_some();
        if !writing && !st.session().has_transmit() {
            // Everything handed out was written: a closing session learns it here.
            written(st.session(), self.values);
        }
        let write = !writing && st.session().has_transmit();
        if deferring {
            return false;
        }
        if write && self.put_off.is_none() && st.batches() {
            // Calls in flight together: let the tasks that are ready run first (this future is
            // polled again after them), so that their requests go in this write. The mark
            // stays set: their output needs no wake-up.
            self.put_off = Some(self.polls);
            self.shared.output_due.store(true, Ordering::Release);
            cx.waker().wake_by_ref();
            return false;
        }
        write
    }

    /// After the work ran: whether a write starts for the output it queued.
    fn output_after_work(&mut self, cx: &Context<'_>) -> bool {
        let shared = self.shared;
        let mut st = shared.lock();
        let deferring = self.put_off == Some(self.polls);
        self.starts_write(&mut st, cx, deferring)
    }

    /// Starts what routing collected, outside the lock; whether there was any.
    fn run_work(&mut self) -> bool {
        if self.work.is_empty() {
            return false;
        }
        for w in self.work.drain(..) {
            (self.run)(self.shared, w);
        }
        true
    }

    /// Starts a write if `start`, and polls the one under way.
    fn drive_write(&mut self, cx: &mut Context<'_>, start: bool, turn: &mut Turn) {
        if start {
            self.put_off = None;
            self.writing.set(Some((self.write)()));
        }
        let Some(f) = self.writing.as_mut().as_pin_mut() else {
            return;
        };
        if let Poll::Ready(res) = f.poll(cx) {
            self.writing.set(None);
            // A finished write alone needs no new turn unless output was queued meanwhile
            // (checked at the end of the turn, under the lock taken there anyway).
            turn.wrote = true;
            turn.write_failed = res.err();
        }
    }

    /// Starts a read if `start`, and polls the one under way — after writing: a transport may
    /// spin a moment in a read (shared memory does), which must not hold up an answer.
    fn drive_read(&mut self, cx: &mut Context<'_>, start: bool, turn: &mut Turn) {
        if start {
            self.reading.set(Some((self.read)()));
        }
        let Some(f) = self.reading.as_mut().as_pin_mut() else {
            return;
        };
        if let Poll::Ready(res) = f.poll(cx) {
            self.reading.set(None);
            self.reads += 1;
            turn.again = true;
            turn.read_failed = res.err();
        }
    }

    /// The end of a turn, under the session's lock: how the IO failed, a partial frame, a
    /// write under way, what was written; then whether the session is over (what the end itself decided — failed
    /// calls, stopped handlers — is routed first; a write still under way is abandoned, the
    /// session's grace having passed), wants another turn, or sleeps until its next deadline.
    /// The lock is handed back still held: a turn that follows at once keeps it. `turn` is
    /// borrowed, not moved: with its two optional errors it is too large to move without a
    /// call to `memcpy`, and turns end several times a call.
    fn end_turn(&mut self, turn: &mut Turn) -> (Step, MutexGuard<'a, S>) {
        let shared = self.shared;
        let mut st = shared.lock();
        if let Some(e) = turn.write_failed.take() {
            st.session().handle_transport_error(&e.to_string());
        }
        match turn.read_failed.take() {
            Some(ChannelError::Transport(TransportError::ConnectionClosed)) => {
                st.session().handle_eof(self.rt.now())
            }
            // A frame over the maximum: it fails alone.
            Some(ChannelError::Transport(TransportError::FrameSkipped(frame))) => {
                st.session().handle_skipped(self.rt.now(), &frame)
            }
            Some(e) => st.session().handle_transport_error(&e.to_string()),
            None => {}
        }
        let held = self.transport.partial_frame();
        if held > 0 || self.partial {
            st.session().handle_partial(self.rt.now(), held);
            // A new partial frame has a new deadline: compute the timer again.
            turn.again |= held > 0 && !self.partial;
            self.partial = held > 0;
        }
        let writing = self.writing.is_some();
        if writing || self.unwritten {
            // A transport that cannot tell counts one byte until the write is done.
            let bytes = if writing {
                self.transport.unwritten().max(1)
            } else {
                0
            };
            st.session().handle_unwritten(self.rt.now(), bytes);
            // A write that stays under way has a deadline: compute the timer again.
            turn.again |= writing && !self.unwritten;
            self.unwritten = writing;
        }
        if turn.wrote && !turn.again {
            if st.session().has_transmit() {
                turn.again = true;
            } else {
                // Everything handed out was written (see `drive_session`).
                written(st.session(), self.values);
            }
        }
        if st.session().is_closed() {
            st.dispatch(&mut self.work);
            return (Step::Over, st);
        }
        let step = if turn.again {
            Step::Again
        } else {
            Step::Sleep(st.session().poll_timeout())
        };
        (step, st)
    }

    /// Sleeps until `next` (or until woken); whether the timer fired, which takes another
    /// turn. The timer is moved only to an earlier instant: deadlines of calls in flight
    /// mostly move later (each finished call uncovers a later one), and a timer that fires
    /// early is harmless — the session expires nothing before its time and the timer is
    /// armed again.
    fn drive_timer(&mut self, cx: &mut Context<'_>, next: Option<Instant>) -> bool {
        if let Some(at) = next
            && self.sleeping_until.is_none_or(|armed| at < armed)
        {
            self.sleeping_until = Some(at);
            self.timer.reset(at);
        }
        let Some(at) = self.sleeping_until else {
            return false;
        };
        if Pin::new(&mut self.timer).poll(cx).is_pending() {
            return false;
        }
        self.sleeping_until = None;
        let now = self.rt.now().max(at);
        self.shared.lock().session().handle_timeout(now);
        true
    }
}

/// What a turn of the driver ends with.
enum Step {
    /// The session is over.
    Over,
    /// Another turn.
    Again,
    /// Nothing more to do until woken or the session's next deadline.
    Sleep(Option<Instant>),
}

/// Ends the session of a driver dropped before it (see [`drive`]).
struct Stopped<'a, S: Driven>(Option<&'a ConnectionCore<S>>);

impl<S: Driven> Drop for Stopped<'_, S> {
    fn drop(&mut self) {
        if let Some(shared) = self.0 {
            let mut work = Vec::new();
            let mut st = shared.lock();
            if !st.session().is_closed() {
                st.session()
                    .handle_transport_error("the connection's driver was stopped");
            }
            st.dispatch(&mut work);
            drop(st);
            work.into_iter().for_each(S::at_end);
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
