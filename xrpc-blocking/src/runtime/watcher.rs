//! The watcher: one thread that waits — in an epoll set and a queue of instants — for the
//! interests no frame waits for: those still armed when their `block_on` returned (a client's
//! read between two calls, its heartbeat timer) and those armed outside any `block_on`. It
//! starts with the first of them.
//!
//! A timer is watched at once (a wake-up earlier than the watcher's next one rings its
//! eventfd). A descriptor is watched after [`ORPHAN_DELAY`]: it waits in a list until the
//! watcher adds it to its epoll set. A client that calls again before then
//! takes it back from the list — two system calls saved per call (`epoll_ctl` to add, to
//! remove), which is a quarter of a call's on a socket. Nothing waits on such a descriptor
//! meanwhile but input nobody asked for (the server closing an idle connection): whoever needs
//! the connection wakes its driver, which arms the descriptor again where it runs.

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

/// The longest a descriptor left armed by a finished `block_on` waits to be watched.
pub(crate) const ORPHAN_DELAY: Duration = Duration::from_millis(10);

/// How long after the last such descriptor the watcher keeps looking for the next every
/// [`ORPHAN_DELAY`] on its own (no eventfd rung for them meanwhile: a client calling in a loop
/// leaves one per call).
const ORPHANS_RECENT: Duration = Duration::from_secs(1);

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
    /// Descriptor interests to add to the epoll set, each at its instant.
    orphans: Vec<(Instant, Entry)>,
    /// Wake-ups to give, each at its instant: yields a finished `block_on` left.
    deferred: Vec<(Instant, Waker)>,
    /// When the last orphan (descriptor or yield) came.
    last_orphan: Option<Instant>,
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
            let (due, unwatched, resumed, timeout) = {
                let mut w = self.lock();
                let now = Instant::now();
                // Descriptors a finished `block_on` left, once they waited their delay: watched
                // from now on (those epoll refuses fire at once: their owners poll again).
                let (ripe, young): (Vec<_>, Vec<_>) = std::mem::take(&mut w.orphans)
                    .into_iter()
                    .partition(|(at, _)| *at <= now);
                w.orphans = young;
                let mut unwatched = Vec::new();
                for (_, entry) in ripe {
                    if let Err(e) = self.watch(&mut w, entry) {
                        unwatched.push(e);
                    }
                }
                let (ripe, young): (Vec<_>, Vec<_>) = std::mem::take(&mut w.deferred)
                    .into_iter()
                    .partition(|(at, _)| *at <= now);
                w.deferred = young;
                let resumed: Vec<Waker> = ripe.into_iter().map(|(_, waker)| waker).collect();
                let later = w.timers.split_off(&(now, u64::MAX));
                let due = std::mem::replace(&mut w.timers, later);
                if w.last_orphan
                    .is_some_and(|t| now.duration_since(t) > ORPHANS_RECENT)
                {
                    w.last_orphan = None;
                }
                let next_orphan = w
                    .orphans
                    .iter()
                    .map(|(at, _)| *at)
                    .chain(w.deferred.iter().map(|(at, _)| *at))
                    .min()
                    .or(w.last_orphan.map(|_| now + ORPHAN_DELAY));
                let next_timer = w.timers.keys().next().map(|k| k.0);
                w.wakes_at = match (next_orphan, next_timer) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let timeout = w.wakes_at.map(|at| at.saturating_duration_since(now));
                (due, unwatched, resumed, timeout)
            };
            fire(due.into_values().chain(unwatched));
            for w in resumed {
                w.wake();
            }
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

    /// Adds descriptor interest `entry` to the epoll set; gives it back if epoll refuses it.
    fn watch(&self, w: &mut Watching, entry: Entry) -> Result<(), Entry> {
        let Some(fd) = entry.interest.fd().cloned() else {
            return Err(entry);
        };
        let raw = fd.as_fd().as_raw_fd();
        let waiters = w.descriptors.entry(raw).or_insert_with(|| Waiters {
            fd,
            entries: Vec::new(),
        });
        let first = waiters.entries.is_empty();
        waiters.entries.push(entry);
        let data = epoll::EventData::new_u64(data_of(raw));
        let flags = union(&waiters.entries);
        let watched = if first {
            epoll::add(&self.epoll, &*waiters.fd, data, flags)
        } else {
            epoll::modify(&self.epoll, &*waiters.fd, data, flags)
        };
        if watched.is_err() {
            let entry = waiters.entries.pop();
            self.update(w, raw);
            return entry.map_or(Ok(()), Err);
        }
        Ok(())
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
        Some(_) => {
            let now = Instant::now();
            let by = now + ORPHAN_DELAY;
            ws.orphans.push((by, entry));
            ws.last_orphan = Some(now);
            if ws.wakes_at.is_none_or(|t| t > by) {
                ws.wakes_at = Some(by);
                w.ring();
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

/// Wakes `waker` after [`ORPHAN_DELAY`] (once for all wakers that wake the same task).
pub(super) fn defer(waker: Waker) {
    let Some(w) = watcher() else {
        waker.wake();
        return;
    };
    let mut ws = w.lock();
    if ws.deferred.iter().any(|(_, d)| d.will_wake(&waker)) {
        return;
    }
    let now = Instant::now();
    let by = now + ORPHAN_DELAY;
    ws.deferred.push((by, waker));
    ws.last_orphan = Some(now);
    if ws.wakes_at.is_none_or(|t| t > by) {
        ws.wakes_at = Some(by);
        w.ring();
    }
}

/// Takes `interest` back (its state `st` locked): it is armed elsewhere now, or disarmed.
pub(super) fn remove(interest: &Interest, st: &mut State) {
    let Some(w) = watcher() else {
        return;
    };
    let mut ws = w.lock();
    match interest.fd() {
        Some(fd) => {
            let mine = |(_, e): &(Instant, Entry)| std::ptr::eq(Arc::as_ptr(&e.interest), interest);
            if let Some(i) = ws.orphans.iter().position(mine) {
                ws.orphans.swap_remove(i);
                return;
            }
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
