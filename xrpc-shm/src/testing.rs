//! Heap-backed rings for tests, loom models and fuzzing (feature
//! `test-util`). Not part of the transport API.
//!
//! The ring here is the very algorithm that runs in shared memory, on a heap
//! storage, plus a [`Scribbler`] that plays a hostile peer by overwriting the
//! shared header and data between operations.

use std::time::Duration;

#[cfg(not(loom))]
pub use crate::conn::hostile::HostilePeer;
pub use crate::ring::{Consumer, Frame, Producer, Slot};
pub use crate::storage::{HeapStorage, RingStorage};

use crate::error::{Result, ShmError};
use crate::ring::RingWaiter;
use crate::sync::Ordering::SeqCst;
use crate::wait::{Sleeper, WaitCfg};

/// Both ends of a fresh heap-backed ring, and a scribbler on its memory.
/// `capacity` is a power of two in `[32, 1 GiB]`; `max_frame` is at most
/// `capacity / 2 - 8`.
pub fn heap_ring(
    capacity: usize,
    max_frame: usize,
) -> Result<(Producer<HeapStorage>, Consumer<HeapStorage>, Scribbler)> {
    let storage = HeapStorage::new(capacity)?;
    let (p, c) = crate::ring::split(storage.clone(), max_frame)?;
    Ok((p, c, Scribbler { storage }))
}

/// [`heap_ring`] whose consumer delivers frames of at most `recv_max` bytes and skips the
/// larger ones its producer may send (up to `send_max`), as a client whose max frame size is
/// below its server's does.
pub fn heap_ring_with_limits(
    capacity: usize,
    send_max: usize,
    recv_max: usize,
) -> Result<(Producer<HeapStorage>, Consumer<HeapStorage>, Scribbler)> {
    let storage = HeapStorage::new(capacity)?;
    Ok((
        Producer::new(storage.clone(), send_max)?,
        Consumer::new(storage.clone(), recv_max, send_max)?,
        Scribbler { storage },
    ))
}

/// Largest frame a ring of `capacity` bytes carries in one piece (larger
/// frames, up to the configured max frame size, travel in pieces).
pub fn max_piece_for(capacity: usize) -> usize {
    crate::layout::max_payload_for(capacity)
}

/// How the blocking helpers sleep: unbounded futex waits under loom (a lost
/// wake-up is then a deadlock loom reports), 10 ms slices otherwise.
fn wait_cfg() -> WaitCfg<'static> {
    WaitCfg {
        spin: Duration::ZERO,
        gauge: None,
        slice: if cfg!(loom) {
            None
        } else {
            Some(Duration::from_millis(10))
        },
        deadline: None,
        after_waking_peer: false,
    }
}

/// Sends `frame` (in pieces if it is larger than one), sleeping (with the
/// futex handshake) while the ring is full.
pub fn send_blocking(p: &mut Producer<HeapStorage>, frame: &[u8]) -> Result<()> {
    let mut sent = 0;
    loop {
        match p.try_send_from(frame, &mut sent) {
            Err(ShmError::Full) => {
                p.wait_writable(frame.len() - sent, &wait_cfg(), &mut || Ok(()))?;
            }
            other => return other,
        }
    }
}

/// Receives one frame (copied), sleeping while the ring is empty.
pub fn recv_blocking(c: &mut Consumer<HeapStorage>) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    loop {
        if c.try_recv_into(&mut buf)? {
            return Ok(buf);
        }
        c.wait_readable(&wait_cfg(), &mut || Ok(()))?;
    }
}

/// The waiting side of one end of a heap ring, as an adapter holds it apart
/// from the end: the same `RingWaiter` predicates and announce/re-check
/// protocol that `RecvWaiter::prepare_sleep` / `SendWaiter::prepare_sleep`
/// run, with the doorbell modelled by a counter in the heap storage.
pub struct HeapWaiter {
    waiter: RingWaiter<HeapStorage>,
    storage: HeapStorage,
    who: Sleeper,
}

impl HeapWaiter {
    /// The waiter of a consumer end (sleeps until frames come).
    pub fn consumer(c: &Consumer<HeapStorage>) -> Self {
        Self::new(c.storage().clone(), Sleeper::Consumer)
    }

    /// The waiter of a producer end (sleeps until room is freed).
    pub fn producer(p: &Producer<HeapStorage>) -> Self {
        Self::new(p.storage().clone(), Sleeper::Producer)
    }

    fn new(storage: HeapStorage, who: Sleeper) -> Self {
        HeapWaiter {
            waiter: RingWaiter::new(storage.clone(), who),
            storage,
            who,
        }
    }

    /// One sleep as a reactor-based adapter does it: announce and re-check
    /// (`prepare_sleep`); if still not ready, sleep until the doorbell is
    /// readable, drain it, and retract the announcement. Returns whether it
    /// slept.
    pub fn sleep_once(&self, len: usize) -> bool {
        let Some(guard) = self.waiter.prepare_sleep(len) else {
            return false;
        };
        self.storage.doorbell_wait(self.who);
        self.storage.doorbell_drain(self.who);
        drop(guard);
        true
    }
}

/// Receives one frame (copied) the way a reactor-based adapter does: try,
/// then [`HeapWaiter::sleep_once`], and try again.
pub fn recv_reactor(c: &mut Consumer<HeapStorage>, w: &HeapWaiter) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    loop {
        if c.try_recv_into(&mut buf)? {
            return Ok(buf);
        }
        w.sleep_once(0);
    }
}

/// Sends `frame` the way a reactor-based adapter does: try, then
/// [`HeapWaiter::sleep_once`] while the ring is full, and try again.
pub fn send_reactor(p: &mut Producer<HeapStorage>, w: &HeapWaiter, frame: &[u8]) -> Result<()> {
    let mut sent = 0;
    loop {
        match p.try_send_from(frame, &mut sent) {
            Err(ShmError::Full) => {
                w.sleep_once(frame.len() - sent);
            }
            other => return other,
        }
    }
}

/// Closes the producer end: the consumer drains, then sees `Disconnected`.
pub fn close_producer(p: &Producer<HeapStorage>) {
    p.close();
}

/// Closes the consumer end: the producer, even one asleep on a full ring, sees `Disconnected`.
pub fn close_consumer(c: &Consumer<HeapStorage>) {
    c.close();
}

/// A hostile peer: overwrites shared words and bytes of a heap ring.
pub struct Scribbler {
    storage: HeapStorage,
}

impl Scribbler {
    /// Number of shared header fields [`Scribbler::header`] addresses.
    pub const HEADER_FIELDS: u8 = 7;

    /// Data capacity of the ring.
    pub fn capacity(&self) -> usize {
        self.storage.capacity()
    }

    /// Overwrites header field `field % HEADER_FIELDS` (head, tail, closed,
    /// data_seq, data_waiters, space_seq, space_waiters) with `value`
    /// (truncated to the field's width).
    pub fn header(&self, field: u8, value: u64) {
        let h = self.storage.header();
        let c = &h.ctl.0;
        match field % Self::HEADER_FIELDS {
            0 => h.head.0.store(value, SeqCst),
            1 => h.tail.0.store(value, SeqCst),
            2 => c.closed.store(value as u32, SeqCst),
            3 => c.data_seq.store(value as u32, SeqCst),
            4 => c.data_waiters.store(value as u32, SeqCst),
            5 => c.space_seq.store(value as u32, SeqCst),
            _ => c.space_waiters.store(value as u32, SeqCst),
        }
    }

    /// Reads header field `field % HEADER_FIELDS`.
    pub fn read_header(&self, field: u8) -> u64 {
        let h = self.storage.header();
        let c = &h.ctl.0;
        match field % Self::HEADER_FIELDS {
            0 => h.head.0.load(SeqCst),
            1 => h.tail.0.load(SeqCst),
            2 => c.closed.load(SeqCst).into(),
            3 => c.data_seq.load(SeqCst).into(),
            4 => c.data_waiters.load(SeqCst).into(),
            5 => c.space_seq.load(SeqCst).into(),
            _ => c.space_waiters.load(SeqCst).into(),
        }
    }

    /// Overwrites data byte `offset % capacity` with `byte`. Only call it
    /// while no other thread uses the ring.
    pub fn data(&self, offset: usize, byte: u8) {
        let off = offset % self.capacity();
        self.storage.track_write(off, 1);
        // SAFETY: `off < capacity` and the region is valid per the storage
        // contract; the caller guarantees no concurrent access in this
        // process.
        unsafe { self.storage.data().add(off).write_volatile(byte) }
    }
}

/// A global allocator that forwards to [`std::alloc::System`] and, on threads that ask for it,
/// remembers the largest single allocation — for tests that bound what a decoder may allocate
/// on hostile input (`xrpc-proto`'s property tests install it). It also counts every allocation
/// of the process ([`allocations`]; `xrpc-bench` reports allocations per call with it). It lives
/// here because it needs `unsafe`, which only this crate may contain.
///
/// ```ignore
/// #[global_allocator]
/// static ALLOC: xrpc_shm::testing::LargestAlloc = xrpc_shm::testing::LargestAlloc;
/// let (v, largest) = xrpc_shm::testing::largest_alloc_during(|| vec![0u8; 100]);
/// ```
#[cfg(not(loom))]
pub struct LargestAlloc;

#[cfg(not(loom))]
mod largest_alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Allocations (`alloc`, `alloc_zeroed`, `realloc`) of all threads so far.
    static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        // `const` initialisers without destructors: touching them never allocates, so the
        // allocator itself may use them.
        static TRACKING: Cell<bool> = const { Cell::new(false) };
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    fn record(size: usize) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        let _ = TRACKING.try_with(|t| {
            if t.get() {
                let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
            }
        });
    }

    // SAFETY: every method forwards to `System` with the caller's arguments unchanged; `record`
    // only reads and writes thread-locals that never allocate.
    unsafe impl GlobalAlloc for super::LargestAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            record(layout.size());
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            record(layout.size());
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            record(new_size);
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    /// Runs `f` and returns its result with the largest single allocation it made on this
    /// thread (0 when [`LargestAlloc`](super::LargestAlloc) is not the global allocator).
    /// Allocations C libraries make through `malloc` are not seen.
    pub fn largest_alloc_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
        LARGEST.with(|l| l.set(0));
        TRACKING.with(|t| t.set(true));
        let r = f();
        TRACKING.with(|t| t.set(false));
        (r, LARGEST.with(Cell::get))
    }

    /// Heap allocations (`alloc`, `alloc_zeroed`, `realloc`) made by every thread of the process
    /// so far, through [`LargestAlloc`](super::LargestAlloc) (0 when it is not the global
    /// allocator). Allocations C libraries make through `malloc` are not seen.
    pub fn allocations() -> u64 {
        ALLOCATIONS.load(Ordering::Relaxed)
    }
}

#[cfg(not(loom))]
pub use largest_alloc::{allocations, largest_alloc_during};

#[cfg(not(loom))]
pub use names_and_peers::{Peer, peer_role, unique_name};

/// Test helpers for names and processes: plain `std` (a process-wide counter, child
/// processes), not modelled by loom, hence absent under `cfg(loom)`.
#[cfg(not(loom))]
mod names_and_peers {
    use std::io::{BufRead, BufReader, Lines};
    use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// A name no other test, no other run of the same test binary and no other process uses
    /// at the same time: `xrpc-test-<pid>-<n>-<tag>`, `<n>` counting the calls in this process.
    ///
    /// Use it for everything a test binds in a global namespace — shared-memory service names
    /// (abstract Unix sockets), Unix socket paths (`std::env::temp_dir().join(unique_name("x"))`)
    /// — so that tests running in parallel, and two `cargo test` runs at once, never meet.
    /// Keep `tag` short: an abstract socket name holds at most 107 bytes.
    ///
    /// ```
    /// let a = xrpc_shm::testing::unique_name("svc");
    /// let b = xrpc_shm::testing::unique_name("svc");
    /// assert_ne!(a, b);
    /// assert!(a.ends_with("-svc"));
    /// ```
    pub fn unique_name(tag: &str) -> String {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("xrpc-test-{}-{n}-{tag}", std::process::id())
    }

    /// Set in a process started by [`Peer::command`]: the role it plays.
    const PEER_ROLE_ENV: &str = "XRPC_TEST_PEER_ROLE";
    /// Set in a process started by [`Peer::command`]: the role's argument (a service name, say).
    const PEER_ARG_ENV: &str = "XRPC_TEST_PEER_ARG";

    /// In a test binary re-run by [`Peer::command`]: the `(role, argument)` it was started
    /// with; `None` in an ordinary test run.
    ///
    /// The test that [`Peer::command`] names calls this first and, when it gets `Some`, plays
    /// the peer instead of running as a test:
    ///
    /// ```no_run
    /// # fn serve(_service: &str) {}
    /// // #[test]
    /// fn server_dies_mid_call() {
    ///     if let Some((_role, service)) = xrpc_shm::testing::peer_role() {
    ///         return serve(&service); // in the child: print "ready", then serve
    ///     }
    ///     let service = xrpc_shm::testing::unique_name("dies");
    ///     let mut server =
    ///         xrpc_shm::testing::Peer::spawn("server_dies_mid_call", "server", &service);
    ///     server.wait_for_line("ready");
    ///     // ... the test, in the parent; dropping `server` kills the child
    /// }
    /// ```
    pub fn peer_role() -> Option<(String, String)> {
        let role = std::env::var(PEER_ROLE_ENV).ok()?;
        Some((role, std::env::var(PEER_ARG_ENV).unwrap_or_default()))
    }

    /// A peer in another process, killed (SIGKILL) and reaped when the `Peer` is dropped, so a
    /// failing test leaves no process behind. Usually it is the running test binary re-run by
    /// [`Peer::command`]: it runs only the test `test` (exactly, with output shown), in which
    /// [`peer_role`] returns `(role, arg)`; [`Peer::spawn_command`] holds any other program.
    pub struct Peer {
        child: Child,
        stdout: Option<Lines<BufReader<ChildStdout>>>,
    }

    impl Peer {
        /// The command that re-runs this test binary as the peer `role` with `arg`, its stdout
        /// piped (read it with [`Peer::wait_for_line`]). Adjust it (say, `CommandExt::uid`) and
        /// start it with [`Peer::spawn_command`], or use [`Peer::spawn`].
        pub fn command(test: &str, role: &str, arg: &str) -> Command {
            let exe = std::env::current_exe().expect("the path of the running test binary");
            let mut cmd = Command::new(exe);
            cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env(PEER_ROLE_ENV, role)
                .env(PEER_ARG_ENV, arg)
                .stdin(Stdio::null())
                .stdout(Stdio::piped());
            cmd
        }

        /// Starts [`Peer::command`]`(test, role, arg)`.
        pub fn spawn(test: &str, role: &str, arg: &str) -> Peer {
            Self::spawn_command(Self::command(test, role, arg))
        }

        /// Starts `cmd`: one made by [`Peer::command`], or any other program to hold as a
        /// peer (pipe its stdout to use [`Peer::wait_for_line`]).
        pub fn spawn_command(mut cmd: Command) -> Peer {
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start the peer process {cmd:?}: {e}"));
            let stdout = child.stdout.take().map(|out| BufReader::new(out).lines());
            Peer { child, stdout }
        }

        /// Reads the peer's stdout up to the first line containing `needle` and returns that
        /// line. Panics if the peer closes its stdout (exits) first.
        pub fn wait_for_line(&mut self, needle: &str) -> String {
            let lines = self
                .stdout
                .as_mut()
                .expect("the peer's stdout is piped (see Peer::command)");
            for line in lines {
                let line = line.expect("read the peer's stdout");
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("the peer process ended without printing a line with {needle:?}");
        }

        /// Kills the peer (SIGKILL) and reaps it.
        pub fn kill(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }

        /// The peer's exit status if it has exited, without waiting.
        pub fn try_wait(&mut self) -> Option<ExitStatus> {
            self.child.try_wait().expect("poll the peer process")
        }

        /// Waits for the peer to exit by itself; kills it and panics if it has not within
        /// `within`.
        pub fn wait_timeout(&mut self, within: Duration) -> ExitStatus {
            let start = Instant::now();
            loop {
                if let Some(status) = self.child.try_wait().expect("wait for the peer process") {
                    return status;
                }
                if start.elapsed() > within {
                    self.kill();
                    panic!("the peer process did not exit within {within:?}");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    impl Drop for Peer {
        fn drop(&mut self) {
            self.kill();
        }
    }
}

/// The model the `shm_ring` fuzz target checks the ring against, as a function so that a
/// unit test replays the inputs it found (`ring/tests.rs`).
///
/// `data` is a sequence of operations on a heap ring of 128 bytes: send (a part of) a frame of
/// up to 307 bytes, give up a frame under way, receive a frame, or play a hostile peer by
/// scribbling a value over a shared header field or a byte of the data region. The producer
/// sends frames of up to 300 bytes, more than the ring holds, so most travel in pieces; the
/// consumer takes frames of up to `recv_max` bytes (at most 300) and skips larger ones. The
/// reader must only ever
/// return frames (never longer than its maximum), skipped frames or errors: no panic, no hang,
/// no out-of-bounds access, no reassembly buffer beyond the maximum. While nothing was
/// scribbled, the frames received must also be exactly the frames sent, in order (a skipped
/// frame reported with its size and first bytes), and a producer whose consumer has read every
/// frame published must find room for the next.
pub fn run_ring_model(data: &[u8], recv_max: usize) {
    use std::collections::VecDeque;

    const CAPACITY: usize = 128;
    const SEND_MAX: usize = 300;
    let recv_max = recv_max.min(SEND_MAX);

    let Ok((mut producer, mut consumer, scribbler)) =
        heap_ring_with_limits(CAPACITY, SEND_MAX, recv_max)
    else {
        return;
    };
    let piece = max_piece_for(CAPACITY);
    let mut input = data.iter().copied();
    let mut next = move || input.next();
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    // The frame being sent and how much of it is in the ring.
    let mut pending: Option<(Vec<u8>, usize)> = None;
    // Pieces of a frame given up may still sit in the ring (until a read empties it).
    let mut stale_pieces = false;
    let mut scribbled = false;
    let mut seq = 0u8;
    while let Some(op) = next() {
        match op % 9 {
            0..=2 => {
                let (frame, mut sent) = match pending.take() {
                    Some(p) => p,
                    None => {
                        let len = (usize::from(next().unwrap_or(0))
                            | (usize::from(next().unwrap_or(0)) << 8))
                            % (SEND_MAX + 8);
                        ((0..len).map(|i| seq ^ i as u8).collect(), 0)
                    }
                };
                match producer.try_send_from(&frame, &mut sent) {
                    Ok(()) => {
                        seq = seq.wrapping_add(1);
                        model.push_back(frame);
                    }
                    Err(ShmError::FrameTooLarge { size, max }) => {
                        assert!(size > max && max == SEND_MAX)
                    }
                    Err(ShmError::Full) => {
                        assert!(
                            scribbled || stale_pieces || sent > 0 || !model.is_empty(),
                            "empty ring refused a frame"
                        );
                        assert!(
                            frame.len() > piece || sent == 0,
                            "a small frame went in part"
                        );
                        pending = Some((frame, sent));
                    }
                    Err(ShmError::Corrupt(_) | ShmError::Disconnected) => {
                        assert!(scribbled, "error without a hostile peer")
                    }
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            3 => {
                // Give up the frame under way: the next frame starts over.
                if let Some((_, sent)) = pending.take() {
                    stale_pieces |= sent > 0;
                }
            }
            4..=6 => match consumer.try_recv().map(|f| f.map(|f| f.to_vec())) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= recv_max);
                    if !scribbled {
                        assert_eq!(Some(&frame[..]), model.pop_front().as_deref());
                    }
                }
                Ok(None) => {
                    assert!(scribbled || model.is_empty(), "lost a frame");
                    stale_pieces = false;
                }
                Err(ShmError::FrameTooLarge { size, max }) => {
                    assert!(size > max && max == recv_max && size <= SEND_MAX);
                    if !scribbled {
                        let sent = model
                            .pop_front()
                            .expect("a frame skipped that was never sent");
                        assert_eq!(size, sent.len(), "skipped a frame of another size");
                        assert_eq!(consumer.skipped_head(), &sent[..sent.len().min(64)]);
                    }
                }
                Err(ShmError::Corrupt(_) | ShmError::Disconnected) => {
                    assert!(scribbled, "error without a hostile peer")
                }
                Err(e) => panic!("unexpected error {e}"),
            },
            7 => {
                let field = next().unwrap_or(0) % Scribbler::HEADER_FIELDS;
                let mut value = [0u8; 8];
                for b in &mut value {
                    *b = next().unwrap_or(0);
                }
                let value = match value[7] % 3 {
                    // Near the current value: plausible-looking indices.
                    0 => scribbler
                        .read_header(field)
                        .wrapping_add(u64::from(value[0]) % 64)
                        .wrapping_sub(32),
                    _ => u64::from_le_bytes(value),
                };
                scribbler.header(field, value);
                scribbled = true;
            }
            _ => {
                let offset = usize::from(next().unwrap_or(0));
                let byte = next().unwrap_or(0);
                scribbler.data(offset, byte);
                scribbled = true;
            }
        }
    }
}
