//! The rows of the table: every implementation measured, behind one small trait.
//!
//! A row is a [`Subject`]: it names itself and runs up to three kinds of measurement; the ones
//! it does not support keep their default ([`Skip::NotApplicable`]). Adding a row for a new
//! adapter is one `impl Subject` (or one more variant of an existing one) and one line in
//! [`all`].

pub mod adapter_rows;
pub mod baseline;
pub mod iceoryx2;
pub mod ipc_channel;
pub mod shm_ring;
pub mod tarpc;
pub mod tokio_rows;

use serde::{Deserialize, Serialize};

use crate::measure::{Measured, Recorder, Span};

/// Which part of the table a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// No RPC stack: raw sockets, a pipe, spinning threads, memcpy.
    Baseline,
    /// xrpc itself.
    Xrpc,
    /// A peer crate from the registry.
    Peer,
}

impl Group {
    /// Lower-case name, for the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Group::Baseline => "baseline",
            Group::Xrpc => "xrpc",
            Group::Peer => "peer",
        }
    }
}

/// Why a measurement has no number.
#[derive(Debug, Clone)]
pub enum Skip {
    /// The row does not do this kind of measurement (a memcpy has no round trip).
    NotApplicable,
    /// It should, but could not: the reason (does not build, failed at run time).
    Absent(String),
}

impl<E: std::fmt::Display> From<E> for Skip {
    fn from(e: E) -> Self {
        Skip::Absent(e.to_string())
    }
}

/// What a measurement returns.
pub type Outcome = Result<Measured, Skip>;

/// One row of the table.
pub trait Subject {
    /// The row's name, unique in the table: "what · transport (how)".
    fn name(&self) -> String;

    /// Its part of the table.
    fn group(&self) -> Group;

    /// Round trips of the small message ([`Msg`], about 32 B each way), one at a time, timed
    /// per call by `rec` (which also counts CPU time and allocations over the timed calls).
    fn round_trips(&self, rec: Recorder) -> Outcome {
        let _ = rec;
        Err(Skip::NotApplicable)
    }

    /// `calls` round trips of the small message with `k` in flight at once; one span.
    fn in_flight(&self, k: usize, calls: usize) -> Outcome {
        let _ = (k, calls);
        Err(Skip::NotApplicable)
    }

    /// `count` messages of `size` bytes sent one way, in order; the span ends when the receiver
    /// has the last one. The span is the second of two such laps on one connection (see
    /// [`one_way_laps`]).
    fn one_way(&self, size: usize, count: usize) -> Outcome {
        let _ = (size, count);
        Err(Skip::NotApplicable)
    }

    /// For a peer: the name of its own small program (`xrpc-bench --peer-alone <name>`), whose
    /// stand-alone figure is printed beside the row.
    fn alone_program(&self) -> Option<&'static str> {
        None
    }
}

/// The small message of every round trip: 32 bytes of POD (8 + 24), echoed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[repr(C)]
pub struct Msg {
    /// The call's number; the answer must carry the same.
    pub seq: u64,
    /// Filler up to 32 bytes.
    pub data: [u8; 24],
}

impl Msg {
    /// The `i`-th message.
    pub fn new(i: usize) -> Self {
        Msg {
            seq: i as u64,
            data: [0xab; 24],
        }
    }

    /// The message as 32 raw bytes (what the raw baselines send).
    pub fn to_bytes(self) -> [u8; 32] {
        let mut b = [0xab; 32];
        b[..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..].copy_from_slice(&self.data);
        b
    }
}

/// If `args` start a peer's server process (`--serve-…`), runs it and returns its exit code.
pub fn serve(args: &[String]) -> Option<i32> {
    let rest = args.get(1..).unwrap_or_default();
    let res = match args.first()?.as_str() {
        iceoryx2::SERVE_ARG => iceoryx2::serve(rest),
        tarpc::SERVE_ARG => tarpc::serve(rest),
        ipc_channel::SERVE_ARG => ipc_channel::serve(rest),
        _ => return None,
    };
    Some(match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}: {e:?}", args[0]);
            1
        }
    })
}

/// Laps of a one-way measurement on one connection: `lap` sends `count` messages and waits for the
/// receiver's acknowledgement of the last. The first lap is a warm-up (a fresh connection
/// touches its buffers for the first time: a shared-memory ring's pages fault in, socket
/// buffers grow), as the round trips' warm-up calls are; the second is timed.
pub const ONE_WAY_LAPS: usize = 2;

/// Runs the [`ONE_WAY_LAPS`] laps of a one-way measurement of `count` messages, timing the last.
pub fn one_way_laps(count: usize, mut lap: impl FnMut() -> Result<(), Skip>) -> Outcome {
    futures::executor::block_on(one_way_laps_awaited(count, || std::future::ready(lap())))
}

/// [`one_way_laps`] with laps that are awaited.
pub async fn one_way_laps_awaited<F, Fut>(count: usize, mut lap: F) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Skip>>,
{
    for _ in 1..ONE_WAY_LAPS {
        lap().await?;
    }
    let span = Span::start();
    lap().await?;
    Ok(span.finish(count as u64))
}

/// Fails a run whose answer is not the echo of its call.
pub fn check_echo(sent: u64, got: u64) {
    assert_eq!(sent, got, "answer to call {sent} carries {got}");
}

/// Every row, in table order; a peer's measurements run in a process of their own
/// ([`Isolated`](crate::process::Isolated)).
pub fn all() -> Vec<Box<dyn Subject>> {
    direct()
        .into_iter()
        .map(|s| match s.group() {
            Group::Peer => Box::new(crate::process::Isolated::new(s)) as Box<dyn Subject>,
            _ => s,
        })
        .collect()
}

/// Every row, each measured in this process.
pub fn direct() -> Vec<Box<dyn Subject>> {
    let mut rows: Vec<Box<dyn Subject>> = Vec::new();
    rows.extend(baseline::rows());
    rows.extend(shm_ring::rows());
    rows.extend(tokio_rows::rows());
    rows.extend(adapter_rows::rows());
    rows.extend(tarpc::rows());
    rows.extend(iceoryx2::rows());
    rows.extend(ipc_channel::rows());
    rows
}
