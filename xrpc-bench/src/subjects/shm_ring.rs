//! xrpc-shm's ring on its own, with its blocking API between two threads (`ShmConnection`:
//! `send`, and `recv` borrowing the frame in place): the bare shared-memory frame path under
//! every xrpc adapter, without a runtime.

use std::time::Duration;

use xrpc_shm::{ShmConfig, ShmConnection, ShmListener};

use super::baseline::join_or_leave;
use super::{Group, Msg, ONE_WAY_LAPS, Outcome, Skip, Subject, check_echo, one_way_laps};
use crate::measure::{Recorder, Span};

/// The rows of this module.
pub fn rows() -> Vec<Box<dyn Subject>> {
    vec![Box::new(ShmRing)]
}

struct ShmRing;

const WAIT: Option<Duration> = Some(Duration::from_secs(30));

/// What the server thread does with each frame.
#[derive(Clone, Copy)]
enum Serve {
    Echo,
    Sink(usize),
}

/// A connected client and the server thread behind it.
fn connect(serve: Serve) -> Result<(ShmConnection, std::thread::JoinHandle<()>), Skip> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("xrpc-bench-ring-{}-{n}", std::process::id());
    let listener = ShmListener::bind(&name, ShmConfig::default())?;
    let server = std::thread::spawn(move || {
        let Ok(mut conn) = listener.accept() else {
            return;
        };
        match serve {
            Serve::Echo => loop {
                // Copy out before answering: the frame is borrowed from the receive ring.
                let mut buf = [0u8; 64];
                let n = match conn.receiver().recv(WAIT) {
                    Ok(f) if f.len() <= buf.len() => {
                        buf[..f.len()].copy_from_slice(&f);
                        f.len()
                    }
                    _ => return,
                };
                if conn.send(&buf[..n], WAIT).is_err() {
                    return;
                }
            },
            Serve::Sink(count) => {
                for _ in 0..ONE_WAY_LAPS {
                    for _ in 0..count {
                        if conn.receiver().recv(WAIT).is_err() {
                            return;
                        }
                    }
                    if conn.send(&[1], WAIT).is_err() {
                        return;
                    }
                }
                // Keep the connection until the client hangs up.
                let _ = conn.receiver().recv(WAIT);
            }
        }
    });
    let conn = ShmConnection::connect(&name, ShmConfig::default())?;
    Ok((conn, server))
}

impl Subject for ShmRing {
    fn name(&self) -> String {
        "xrpc-shm ring frames · shm (blocking threads)".into()
    }
    fn group(&self) -> Group {
        Group::Xrpc
    }
    fn round_trips(&self, rec: Recorder) -> Outcome {
        let (mut conn, server) = connect(Serve::Echo)?;
        let m = rec.run(|i| {
            conn.send(&Msg::new(i).to_bytes(), WAIT).expect("ring send");
            let f = conn.receiver().recv(WAIT).expect("ring recv");
            check_echo(i as u64, u64::from_le_bytes(f[..8].try_into().unwrap()));
        });
        drop(conn);
        join_or_leave(server, "ring server");
        Ok(m)
    }
    fn in_flight(&self, k: usize, calls: usize) -> Outcome {
        let (mut conn, server) = connect(Serve::Echo)?;
        let span = Span::start();
        let mut sent = 0;
        while sent < k.min(calls) {
            conn.send(&Msg::new(sent).to_bytes(), WAIT)?;
            sent += 1;
        }
        for i in 0..calls {
            {
                let f = conn.receiver().recv(WAIT)?;
                check_echo(i as u64, u64::from_le_bytes(f[..8].try_into().unwrap()));
            }
            if sent < calls {
                conn.send(&Msg::new(sent).to_bytes(), WAIT)?;
                sent += 1;
            }
        }
        let m = span.finish(calls as u64);
        drop(conn);
        join_or_leave(server, "ring server");
        Ok(m)
    }
    fn one_way(&self, size: usize, count: usize) -> Outcome {
        let (mut conn, server) = connect(Serve::Sink(count))?;
        let msg = vec![0xabu8; size];
        let m = one_way_laps(count, || {
            for _ in 0..count {
                conn.send(&msg, WAIT)?;
            }
            conn.receiver().recv(WAIT)?;
            Ok(())
        })?;
        drop(conn);
        join_or_leave(server, "ring server");
        Ok(m)
    }
}
