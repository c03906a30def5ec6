//! The watcher: one thread that waits — in an epoll set and a queue of instants — for the
//! interests no frame waits for: those still armed when their `block_on` returned (a client's
//! read between two calls, its heartbeat timer) and those armed outside any `block_on`. It
//! starts with the first of them. Adopting a descriptor is one `epoll_ctl`, taking it back
//! another; neither wakes the watcher (epoll sees the change). A timer earlier than the
//! watcher's next wake-up rings its eventfd.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::{EventfdFlags, PollFlags, Timespec, epoll, eventfd};

use super::wait::{Fd, Interest, Place, State};

/// The epoll data of the watcher's own eventfd (descriptors use their number).
const BELL: u64 = u64::MAX;

/// Events one `epoll_wait` returns at most.
const EVENTS: usize = 64;

struct Watcher {
    epoll: OwnedFd,
    bell: OwnedFd,
    state: Mutex<Watching>,
}

/// An interest the watcher holds, in the generation it was adopted in.
struct Entry {
    interest: Arc<Interest>,
    generation: u64,
}

/// The interests in one descriptor (its epoll events are the union of theirs).
struct Waiters {
    fd: Fd,
    entries: Vec<Entry>,
}

#[derive(Default)]
struct Watching {
    descriptors: HashMap<RawFd, Waiters>,
    timers: BTreeMap<(Instant, u64), Entry>,
    next_key: u64,
    /// When the watcher next wakes on its own (`None`: not before an event).
    wakes_at: Option<Instant>,
}

impl Watcher {
    fn lock(&self) -> MutexGuard<'_, Watching> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ring(&self) {
        let _ = rustix::io::write(&self.bell, &1u64.to_ne_bytes());
    }

    /// The watcher thread's loop.
    fn run(&self) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(EVENTS);
        loop {
            let (due, timeout) = {
                let mut w = self.lock();
                let now = Instant::now();
                let later = w.timers.split_off(&(now, u64::MAX));
                let due = std::mem::replace(&mut w.timers, later);
                w.wakes_at = w.timers.keys().next().map(|k| k.0);
                (due, w.wakes_at.map(|at| at.saturating_duration_since(now)))
            };
            fire(due.into_values());
            events.clear();
            let ts = timeout.and_then(|t| Timespec::try_from(t).ok());
            if epoll::wait(&self.epoll, spare_capacity(&mut events), ts.as_ref()).is_err() {
                // Interrupted (or out of memory): look again shortly.
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            let mut ready = Vec::new();
            {
                let mut w = self.lock();
                for ev in &events {
                    let data = ev.data.u64();
                    if data == BELL {
                        let mut count = [0u8; 8];
                        let _ = rustix::io::read(&self.bell, &mut count);
                        continue;
                    }
                    let Ok(raw) = RawFd::try_from(data) else {
                        continue;
                    };
                    let Some(waiters) = w.descriptors.get_mut(&raw) else {
                        continue;
                    };
                    let flags = ev.flags;
                    let all = flags.intersects(epoll::EventFlags::HUP | epoll::EventFlags::ERR);
                    let (hit, kept): (Vec<Entry>, Vec<Entry>) =
                        waiters.entries.drain(..).partition(|e| {
                            let wants = e.interest.events();
                            all || (wants.contains(PollFlags::IN)
                                && flags.contains(epoll::EventFlags::IN))
                                || (wants.contains(PollFlags::OUT)
                                    && flags.contains(epoll::EventFlags::OUT))
                        });
                    waiters.entries = kept;
                    ready.extend(hit);
                    self.update(&mut w, raw);
                }
            }
            fire(ready.into_iter());
        }
    }

    /// Sets the epoll events of descriptor `raw` to what its waiters want, or removes it.
    fn update(&self, w: &mut Watching, raw: RawFd) {
        let Some(waiters) = w.descriptors.get(&raw) else {
            return;
        };
        if waiters.entries.is_empty() {
            let _ = epoll::delete(&self.epoll, &*waiters.fd);
            w.descriptors.remove(&raw);
        } else {
            let _ = epoll::modify(
                &self.epoll,
                &*waiters.fd,
                epoll::EventData::new_u64(data_of(raw)),
                union(&waiters.entries),
            );
        }
    }
}

fn data_of(raw: RawFd) -> u64 {
    u64::try_from(raw).unwrap_or(BELL)
}

/// The epoll events of what `entries` want.
fn union(entries: &[Entry]) -> epoll::EventFlags {
    let mut flags = epoll::EventFlags::empty();
    for e in entries {
        if e.interest.events().contains(PollFlags::IN) {
            flags |= epoll::EventFlags::IN;
        }
        if e.interest.events().contains(PollFlags::OUT) {
            flags |= epoll::EventFlags::OUT;
        }
    }
    flags
}

/// Fires the entries that are still the watcher's.
fn fire(entries: impl Iterator<Item = Entry>) {
    for e in entries {
        if let Some(w) = e.interest.fire(e.generation, Place::Watcher) {
            w.wake();
        }
    }
}

/// The watcher, started on first use (`None` if it could not be: no descriptors, no thread).
fn watcher() -> Option<&'static Watcher> {
    static WATCHER: OnceLock<Option<Arc<Watcher>>> = OnceLock::new();
    WATCHER
        .get_or_init(|| {
            let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).ok()?;
            let bell = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).ok()?;
            epoll::add(
                &epoll,
                &bell,
                epoll::EventData::new_u64(BELL),
                epoll::EventFlags::IN,
            )
            .ok()?;
            let w = Arc::new(Watcher {
                epoll,
                bell,
                state: Mutex::new(Watching::default()),
            });
            let runner = w.clone();
            std::thread::Builder::new()
                .name("xrpc-watcher".into())
                .spawn(move || runner.run())
                .ok()?;
            Some(w)
        })
        .as_deref()
}

/// Adopts `interest`, armed in `generation` (its state `st` locked, its place already the
/// watcher's). Returns its waker if it cannot be watched: the caller wakes it now (the owner
/// polls again and finds its descriptor ready or not).
pub(super) fn adopt(interest: &Arc<Interest>, generation: u64, st: &mut State) -> Option<Waker> {
    let Some(w) = watcher() else {
        return Interest::fire_now(st);
    };
    let entry = Entry {
        interest: interest.clone(),
        generation,
    };
    let mut ws = w.lock();
    match interest.fd() {
        Some(fd) => {
            let raw = fd.as_fd().as_raw_fd();
            let waiters = ws.descriptors.entry(raw).or_insert_with(|| Waiters {
                fd: fd.clone(),
                entries: Vec::new(),
            });
            let first = waiters.entries.is_empty();
            waiters.entries.push(entry);
            let data = epoll::EventData::new_u64(data_of(raw));
            let flags = union(&waiters.entries);
            let watched = if first {
                epoll::add(&w.epoll, &*waiters.fd, data, flags)
            } else {
                epoll::modify(&w.epoll, &*waiters.fd, data, flags)
            };
            if watched.is_err() {
                waiters.entries.pop();
                w.update(&mut ws, raw);
                return Interest::fire_now(st);
            }
        }
        None => {
            let at = st.at.unwrap_or_else(Instant::now);
            let key = (at, ws.next_key);
            ws.next_key += 1;
            ws.timers.insert(key, entry);
            st.watcher_key = Some(key);
            if ws.wakes_at.is_none_or(|t| at < t) {
                ws.wakes_at = Some(at);
                w.ring();
            }
        }
    }
    None
}

/// Takes `interest` back (its state `st` locked): it is armed elsewhere now, or disarmed.
pub(super) fn remove(interest: &Interest, st: &mut State) {
    let Some(w) = watcher() else {
        return;
    };
    let mut ws = w.lock();
    match interest.fd() {
        Some(fd) => {
            let raw = fd.as_fd().as_raw_fd();
            if let Some(waiters) = ws.descriptors.get_mut(&raw) {
                waiters
                    .entries
                    .retain(|e| !std::ptr::eq(Arc::as_ptr(&e.interest), interest));
                w.update(&mut ws, raw);
            }
        }
        None => {
            if let Some(key) = st.watcher_key.take() {
                ws.timers.remove(&key);
            }
        }
    }
}
