//! `xrpc-shm`: the lock-free shared-memory transport core of xrpc.
//!
//! Two processes exchange variable-length frames through a pair of
//! single-producer/single-consumer rings that live in one sealed `memfd`
//! segment per connection. The rendezvous is an abstract-namespace Unix socket
//! (nothing is left on disk after a crash); the same socket stays open for the
//! life of the connection and is the peer-death detector.
//!
//! * [`ShmListener::bind`] / [`ShmListener::accept`] serve many clients, one
//!   segment each; [`ShmConnection::connect`] is the client side.
//! * Only processes of the same user (or root) get in: abstract socket names
//!   have no file permissions, so both sides check the peer's credentials
//!   (`SO_PEERCRED`) — a server refuses other users' clients (they read
//!   `XRPCSHMR` and fail with [`ShmError::Refused`]; no segment is made), and a
//!   client refuses a server of another user that took the name first. A server
//!   may decide otherwise ([`ShmListener::accept_admitting`]); each side
//!   knows the other's pid, uid and gid ([`ShmConnection::peer_credentials`]).
//!   Segments are owner-only (mode 0600) memfds.
//! * A connection splits into a [`ShmSender`] and a [`ShmReceiver`]; each is
//!   `Send`, so a reader thread and a writer thread can each own one.
//! * Frames are received in place ([`FrameRef`], zero-copy) or copied out
//!   ([`ShmReceiver::recv_bytes`], [`ShmReceiver::recv_into`]); they are sent
//!   by copy ([`ShmSender::try_send`]) or written in place
//!   ([`ShmSender::try_reserve`] + [`SendSlot::commit`]).
//! * No allocation and no system call happen per frame while both sides are
//!   busy: a side that finds nothing to do follows one wait policy
//!   ([`Backoff`]: spin, adaptively and at most [`ShmConfig::spin_budget`],
//!   then yield, then sleep) and announces that it sleeps, so that the peer
//!   wakes it only then — by bumping a shared futex *and* ringing the
//!   sleeper's [`Doorbell`] (one byte sent on a socket with `MSG_DONTWAIT`:
//!   nothing the peer does makes a ring wait), so that a side may sleep on
//!   either: a thread on the futex, a task in its runtime's reactor.
//! * A connection holds two descriptors on each side (the rendezvous socket
//!   and a second socket, the two doorbells); the segment's memfd is closed
//!   once mapped. A producer that finds its ring empty starts over at the
//!   ring's start, so a connection of small frames keeps only the first 32 KiB
//!   of its rings resident, however long it runs.
//! * A frame larger than the receiver's max frame size (the peer's may be
//!   larger) is skipped without being buffered and reported as
//!   [`ShmError::FrameTooLarge`]; the connection goes on.
//! * Everything read from the mapping is untrusted: each side keeps its own
//!   index privately, reads the peer's index once, validates it, and reports
//!   any violation as [`ShmError::Corrupt`] (the connection is then dead).
//!
//! The API is runtime-neutral: a blocking caller uses `send` / `recv`; an
//! async adapter calls the non-blocking `try_*` methods on its task and, when
//! they report "empty" or "full", runs the [`Backoff`] steps of a
//! [`RecvWaiter`] / [`SendWaiter`] (both `Send + Sync + Clone`, they never
//! touch the ring indices), and finally announces its sleep
//! ([`RecvWaiter::prepare_sleep`]) and registers the [`Doorbell`] with its
//! reactor (it is readable on a ring and on the peer's death).
//!
//! The ring algorithm is generic over its storage; under `--cfg loom` it is
//! checked with a heap-backed storage (see `tests/loom.rs`). The `test-util`
//! feature exposes that heap-backed ring in [`testing`] for fuzzing.
//!
//! **Features.** `rings` (on by default; Linux): the rings, segments and connections above.
//! Without it the crate holds only the wait policy ([`Backoff`], [`WaitStep`]), which builds
//! on any platform: the in-process transports of `xrpc-async` wait by it too, so that a build
//! without shared memory keeps their waits as they are. `test-util` (implies `rings`): the
//! [`testing`] helpers.
//!
//! This is the only crate of xrpc that contains `unsafe`; every block carries a
//! `// SAFETY:` comment.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
#[cfg(feature = "rings")]
mod error;
#[cfg(feature = "rings")]
mod layout;
#[cfg(feature = "rings")]
mod ring;
#[cfg(feature = "rings")]
mod storage;
#[cfg(feature = "rings")]
mod sync;
#[cfg(feature = "rings")]
mod wait;

#[cfg(all(feature = "rings", not(loom)))]
mod config;
#[cfg(all(feature = "rings", not(loom)))]
mod conn;
#[cfg(all(feature = "rings", not(loom)))]
mod futex;
#[cfg(all(feature = "rings", not(loom)))]
mod segment;

#[cfg(all(feature = "rings", any(test, loom, feature = "test-util")))]
pub mod testing;

pub use backoff::{Backoff, DEFAULT_SPIN_BUDGET, SpinGauge, WaitStep};
#[cfg(feature = "rings")]
pub use error::{Result, ShmError};
#[cfg(feature = "rings")]
pub use wait::{SleepGuard, Sleeper};

#[cfg(all(feature = "rings", not(loom)))]
pub use config::{SharedMemoryConfig, ShmConfig};
#[cfg(all(feature = "rings", not(loom)))]
pub use conn::{
    Doorbell, FrameRef, PeerCredentials, PeerFd, RecvWaiter, SendSlot, SendWaiter, ShmConnection,
    ShmConnector, ShmListener, ShmReceiver, ShmSender, is_own_user_or_root,
};
