//! iceoryx2 0.10 request-response, its best case: two processes (this binary re-executed with
//! `--serve-iceoryx2 <service>` as the server), both busy-polling, a raw 32-byte POD payload
//! copied in with `send_copy` (no serialization). CPU time per call adds the server process's
//! (read from `/proc`, 10 ms resolution); allocations are this process's only.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;

use super::{Group, Outcome, Skip, Subject, check_echo};
use crate::measure::{Recorder, Span, other_process_cpu};

/// The argument that turns this binary into the iceoryx2 server.
pub const SERVE_ARG: &str = "--serve-iceoryx2";

/// Requests in flight the service allows per client (the in-flight row needs 64).
const MAX_IN_FLIGHT: usize = 64;

/// A request or a response: 32 bytes of plain data in shared memory.
#[derive(Debug, Clone, Copy, ZeroCopySend)]
#[repr(C)]
struct Pod {
    seq: u64,
    data: [u8; 24],
}

/// The `seq` that tells the server to answer and exit.
const STOP: u64 = u64::MAX;

/// The rows of this module.
pub fn rows() -> Vec<Box<dyn Subject>> {
    vec![Box::new(Iceoryx2)]
}

struct Iceoryx2;

type Service =
    iceoryx2::service::port_factory::request_response::PortFactory<ipc::Service, Pod, (), Pod, ()>;

/// Opens (or creates) the request-response service `name` with the settings both sides use.
fn open(node: &Node<ipc::Service>, name: &str) -> Result<Service, Skip> {
    let name: ServiceName = name.try_into()?;
    Ok(node
        .service_builder(&name)
        .request_response::<Pod, Pod>()
        .max_active_requests_per_client(MAX_IN_FLIGHT)
        .max_loaned_requests(MAX_IN_FLIGHT)
        .max_response_buffer_size(1)
        .open_or_create()?)
}

/// The server process: answers every request with a copy of it until told to stop (or until
/// its parent is gone).
pub fn serve(name: &str) -> Result<(), Skip> {
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let service = open(&node, name)?;
    let server = service.server_builder().create()?;
    let parent = rustix::process::getppid();
    println!("ready");
    let mut idle = 0u32;
    loop {
        match server.receive()? {
            Some(req) => {
                idle = 0;
                let pod = *req.payload();
                req.send_copy(pod)?;
                if pod.seq == STOP {
                    return Ok(());
                }
            }
            None => {
                idle = idle.wrapping_add(1);
                if idle.is_multiple_of(1 << 20) && rustix::process::getppid() != parent {
                    return Ok(());
                }
                std::hint::spin_loop();
            }
        }
    }
}

/// A server process and a client port connected to it.
struct Session {
    child: Child,
    _node: Node<ipc::Service>,
    _service: Service,
    client: iceoryx2::port::client::Client<ipc::Service, Pod, (), Pod, ()>,
}

impl Session {
    fn start() -> Result<Self, Skip> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("xrpc-bench/{}/{n}", std::process::id());
        let node = NodeBuilder::new().create::<ipc::Service>()?;
        let service = open(&node, &name)?;
        let mut child = Command::new(std::env::current_exe()?)
            .args([SERVE_ARG, &name])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Skip::Absent(format!("server said {line:?}")));
        }
        let client = service.client_builder().create()?;
        Ok(Session {
            child,
            _node: node,
            _service: service,
            client,
        })
    }

    /// One call, busy-polling for the answer.
    fn call(&self, seq: u64) -> Result<u64, Skip> {
        let pending = self.client.send_copy(Pod {
            seq,
            data: [0xab; 24],
        })?;
        let start = Instant::now();
        loop {
            if let Some(r) = pending.receive()? {
                return Ok(r.payload().seq);
            }
            if start.elapsed() > super::baseline::HANG {
                return Err(Skip::Absent("no answer from the iceoryx2 server".into()));
            }
            std::hint::spin_loop();
        }
    }

    fn server_cpu(&self) -> Duration {
        other_process_cpu(self.child.id()).unwrap_or_default()
    }

    /// Tells the server to stop and waits for it (kills it after a while).
    fn stop(mut self) {
        let _ = self.call(STOP);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Subject for Iceoryx2 {
    fn name(&self) -> String {
        "iceoryx2 req-resp · shm (2 processes, busy-poll)".into()
    }
    fn group(&self) -> Group {
        Group::Peer
    }
    fn round_trips(&self, rec: Recorder) -> Outcome {
        let s = Session::start()?;
        for i in 0..rec.warmup {
            s.call(i as u64)?;
        }
        let cpu0 = s.server_cpu();
        let mut failed = None;
        let mut m = rec.run(|i| match s.call(i as u64) {
            Ok(seq) => check_echo(i as u64, seq),
            Err(e) => failed = Some(e),
        });
        m.cpu += s.server_cpu().saturating_sub(cpu0);
        s.stop();
        match failed {
            Some(e) => Err(e),
            None => Ok(m),
        }
    }
    fn in_flight(&self, k: usize, calls: usize) -> Outcome {
        let s = Session::start()?;
        s.call(0)?;
        let k = k.min(MAX_IN_FLIGHT);
        let cpu0 = s.server_cpu();
        let span = Span::start();
        let mut pending = VecDeque::with_capacity(k);
        let mut sent = 0;
        let mut done = 0;
        let start = Instant::now();
        while done < calls {
            while sent < calls && pending.len() < k {
                let p = s.client.send_copy(Pod {
                    seq: sent as u64,
                    data: [0xab; 24],
                })?;
                pending.push_back((sent as u64, p));
                sent += 1;
            }
            let Some((seq, p)) = pending.front() else {
                break;
            };
            if let Some(r) = p.receive()? {
                check_echo(*seq, r.payload().seq);
                drop(r);
                pending.pop_front();
                done += 1;
            } else if start.elapsed() > super::baseline::HANG {
                return Err(Skip::Absent("no answer from the iceoryx2 server".into()));
            }
        }
        let mut m = span.finish(done as u64);
        m.cpu += s.server_cpu().saturating_sub(cpu0);
        drop(pending);
        s.stop();
        Ok(m)
    }
}
