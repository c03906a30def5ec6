//! Baselines without any RPC stack, measured in the same run: raw Unix-socket, TCP-loopback and
//! pipe ping-pongs between two threads with blocking std IO, two threads spinning on one cache
//! line (the floor of any cross-thread round trip), and a `memcpy` of each size.

use std::io::{BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Group, Msg, ONE_WAY_LAPS, Outcome, Skip, Subject, check_echo, one_way_laps};
use crate::measure::{Recorder, Span};

/// The rows of this module.
pub fn rows() -> Vec<Box<dyn Subject>> {
    vec![
        Box::new(Spin),
        Box::new(Memcpy),
        Box::new(Raw(Stream::Unix)),
        Box::new(Raw(Stream::Tcp)),
        Box::new(Raw(Stream::Pipe)),
    ]
}

/// Two threads passing a counter through one cache line, both spinning.
struct Spin;

impl Subject for Spin {
    fn name(&self) -> String {
        "spin · cache line (2 threads)".into()
    }
    fn group(&self) -> Group {
        Group::Baseline
    }
    fn round_trips(&self, rec: Recorder) -> Outcome {
        let line = Arc::new(CacheLine(AtomicU64::new(0)));
        let total = (rec.warmup + rec.calls) as u64;
        let peer = {
            let line = line.clone();
            std::thread::spawn(move || {
                // Answers call i (written as 2i+1) with 2i+2.
                for i in 0..total {
                    while line.0.load(Ordering::Acquire) != 2 * i + 1 {
                        std::hint::spin_loop();
                    }
                    line.0.store(2 * i + 2, Ordering::Release);
                }
            })
        };
        let m = rec.run(|i| {
            let i = i as u64;
            line.0.store(2 * i + 1, Ordering::Release);
            while line.0.load(Ordering::Acquire) != 2 * i + 2 {
                std::hint::spin_loop();
            }
        });
        peer.join()
            .map_err(|_| Skip::Absent("spin peer panicked".into()))?;
        Ok(m)
    }
}

#[repr(align(128))]
struct CacheLine(AtomicU64);

/// A `memcpy` of each size within this thread: the ceiling of any one-way copy.
struct Memcpy;

/// How many times more bytes the memcpy row copies than the others send.
const MEMCPY_ROUNDS: usize = 16;

impl Subject for Memcpy {
    fn name(&self) -> String {
        "memcpy · same thread".into()
    }
    fn group(&self) -> Group {
        Group::Baseline
    }
    fn one_way(&self, size: usize, count: usize) -> Outcome {
        // A copy takes so little time that a run of `count` fits in one time slice or not at
        // all on a busy machine: copy `MEMCPY_ROUNDS` times as much, so preemption averages out
        // as it does for the other rows.
        let count = count * MEMCPY_ROUNDS;
        let src = vec![0xabu8; size];
        let mut dst = vec![0u8; size];
        dst.copy_from_slice(&src);
        let span = Span::start();
        for _ in 0..count {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        Ok(span.finish(count as u64))
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Unix,
    Tcp,
    Pipe,
}

/// A raw byte ping-pong: the client writes the 32-byte message, the server thread reads it and
/// writes it back. Blocking std IO, no framing beyond the fixed size.
struct Raw(Stream);

type Halves = (Box<dyn Read + Send>, Box<dyn Write + Send>);

impl Raw {
    /// (client, server) ends, each a reader and a writer.
    fn connect(&self) -> std::io::Result<(Halves, Halves)> {
        Ok(match self.0 {
            Stream::Unix => {
                let (c, s) = std::os::unix::net::UnixStream::pair()?;
                (
                    (Box::new(c.try_clone()?), Box::new(c)),
                    (Box::new(s.try_clone()?), Box::new(s)),
                )
            }
            Stream::Tcp => {
                let l = std::net::TcpListener::bind("127.0.0.1:0")?;
                let c = std::net::TcpStream::connect(l.local_addr()?)?;
                let (s, _) = l.accept()?;
                c.set_nodelay(true)?;
                s.set_nodelay(true)?;
                (
                    (Box::new(c.try_clone()?), Box::new(c)),
                    (Box::new(s.try_clone()?), Box::new(s)),
                )
            }
            Stream::Pipe => {
                let (to_server_r, to_server_w) = std::io::pipe()?;
                let (to_client_r, to_client_w) = std::io::pipe()?;
                (
                    (Box::new(to_client_r), Box::new(to_server_w)),
                    (Box::new(to_server_r), Box::new(to_client_w)),
                )
            }
        })
    }

    /// Echoes fixed-size messages until the client hangs up; answers all the complete requests
    /// one read brought in with one write.
    fn echo_server((r, mut w): Halves, size: usize) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(64 * 1024, r);
            let mut buf = vec![0u8; size];
            let mut out = Vec::new();
            while r.read_exact(&mut buf).is_ok() {
                out.extend_from_slice(&buf);
                while r.buffer().len() >= size {
                    r.read_exact(&mut buf).expect("buffered");
                    out.extend_from_slice(&buf);
                }
                if w.write_all(&out).is_err() {
                    break;
                }
                out.clear();
            }
        })
    }
}

impl Subject for Raw {
    fn name(&self) -> String {
        match self.0 {
            Stream::Unix => "raw bytes · unix (threads)",
            Stream::Tcp => "raw bytes · tcp (threads)",
            Stream::Pipe => "raw bytes · pipe (threads)",
        }
        .into()
    }
    fn group(&self) -> Group {
        Group::Baseline
    }

    fn round_trips(&self, rec: Recorder) -> Outcome {
        let ((mut r, mut w), server) = self.connect()?;
        let server = Self::echo_server(server, 32);
        let mut answer = [0u8; 32];
        let m = rec.run(|i| {
            let msg = Msg::new(i).to_bytes();
            w.write_all(&msg).expect("raw write");
            r.read_exact(&mut answer).expect("raw read");
            check_echo(
                i as u64,
                u64::from_le_bytes(answer[..8].try_into().unwrap()),
            );
        });
        drop((r, w));
        let _ = server.join();
        Ok(m)
    }

    fn in_flight(&self, k: usize, calls: usize) -> Outcome {
        // One thread keeps `k` requests outstanding: it writes `k`, then one more per answer.
        let ((r, mut w), server) = self.connect()?;
        let server = Self::echo_server(server, 32);
        let mut r = BufReader::with_capacity(64 * 1024, r);
        let mut answer = [0u8; 32];
        let span = Span::start();
        let mut sent = 0;
        while sent < k.min(calls) {
            w.write_all(&Msg::new(sent).to_bytes())?;
            sent += 1;
        }
        for i in 0..calls {
            r.read_exact(&mut answer)?;
            check_echo(
                i as u64,
                u64::from_le_bytes(answer[..8].try_into().unwrap()),
            );
            if sent < calls {
                w.write_all(&Msg::new(sent).to_bytes())?;
                sent += 1;
            }
        }
        let m = span.finish(calls as u64);
        drop((r, w));
        let _ = server.join();
        Ok(m)
    }

    fn one_way(&self, size: usize, count: usize) -> Outcome {
        // The sender writes `count` messages, one write each; the receiver reads them all and
        // answers one byte, for each lap.
        let ((mut r, mut w), (mut sr, mut sw)) = self.connect()?;
        let total = size * count;
        let receiver = std::thread::spawn(move || -> std::io::Result<()> {
            let mut buf = vec![0u8; 256 * 1024];
            for _ in 0..ONE_WAY_LAPS {
                let mut got = 0;
                while got < total {
                    let n = sr.read(&mut buf)?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    got += n;
                }
                sw.write_all(&[1])?;
            }
            Ok(())
        });
        let msg = vec![0xabu8; size];
        let m = one_way_laps(count, || {
            for _ in 0..count {
                w.write_all(&msg)?;
            }
            let mut ack = [0u8; 1];
            r.read_exact(&mut ack)?;
            Ok(())
        })?;
        receiver
            .join()
            .map_err(|_| Skip::Absent("receiver panicked".into()))??;
        Ok(m)
    }
}

/// How long a thread waits for a peer before a run is declared hung.
pub const HANG: Duration = Duration::from_secs(30);

/// Waits for `handle` up to [`HANG`]; a thread still running then is left behind (and named).
pub fn join_or_leave<T>(handle: std::thread::JoinHandle<T>, what: &str) -> Option<T> {
    let start = Instant::now();
    while !handle.is_finished() {
        if start.elapsed() > HANG {
            eprintln!("warning: {what} still running after {HANG:?}; left behind");
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    handle.join().ok()
}
