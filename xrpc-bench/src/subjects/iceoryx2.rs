//! iceoryx2 0.10 request-response as its own benchmark and examples run it: two processes (the
//! row's process is the client; it starts the server, this binary re-executed with
//! `--serve-iceoryx2 <service> <settings>`), both busy-polling, a raw 32-byte POD payload copied
//! in with `send_copy` (no serialization). The round trips use the service's default settings
//! (`request_response::<Pod, Pod>().open_or_create()`, as its example); the in-flight run needs
//! 64 active requests per client (the default allows 4), so its service says so. CPU time per
//! call adds the server process's (read from `/proc`, 10 ms resolution); allocations are the
//! client's only.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;

use super::{Group, Outcome, Skip, Subject, check_echo};
use crate::measure::{Recorder, Span, other_process_cpu};
use crate::process::{ServerProcess, on_parent_gone};

/// The argument that turns this binary into the iceoryx2 server.
pub const SERVE_ARG: &str = "--serve-iceoryx2";

/// Requests in flight the in-flight run's service allows per client (the run keeps 64).
const MAX_IN_FLIGHT: usize = 64;

/// A request or a response: 32 bytes of plain data in shared memory.
#[derive(Debug, Clone, Copy, ZeroCopySend)]
#[repr(C)]
pub struct Pod {
    /// The call's number.
    pub seq: u64,
    /// Filler up to 32 bytes.
    pub data: [u8; 24],
}

impl Pod {
    /// The message of call `seq`.
    pub fn new(seq: u64) -> Self {
        Pod {
            seq,
            data: [0xab; 24],
        }
    }
}

/// The `seq` that tells the server to answer and exit.
pub const STOP: u64 = u64::MAX;

/// The service's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settings {
    /// iceoryx2's defaults.
    Default,
    /// Room for [`MAX_IN_FLIGHT`] requests in flight.
    InFlight,
}

impl Settings {
    fn arg(self) -> &'static str {
        match self {
            Settings::Default => "default",
            Settings::InFlight => "in-flight",
        }
    }
}

/// The rows of this module.
pub fn rows() -> Vec<Box<dyn Subject>> {
    vec![Box::new(Iceoryx2)]
}

struct Iceoryx2;

type Service =
    iceoryx2::service::port_factory::request_response::PortFactory<ipc::Service, Pod, (), Pod, ()>;

/// Opens (or creates) the request-response service `name` with `settings` (both sides use
/// the same).
fn open(node: &Node<ipc::Service>, name: &str, settings: Settings) -> Result<Service, Skip> {
    let name: ServiceName = name.try_into()?;
    let builder = node.service_builder(&name).request_response::<Pod, Pod>();
    Ok(match settings {
        Settings::Default => builder.open_or_create()?,
        Settings::InFlight => builder
            .max_active_requests_per_client(MAX_IN_FLIGHT)
            .max_loaned_requests(MAX_IN_FLIGHT)
            .open_or_create()?,
    })
}

/// The server process (`args`: service name, settings): answers every request with a copy of
/// it, busy-polling, until told to stop or its parent is gone.
pub fn serve(args: &[String]) -> Result<(), Skip> {
    let name = args.first().ok_or("no service name")?;
    let settings = match args.get(1).map(String::as_str) {
        Some("in-flight") => Settings::InFlight,
        _ => Settings::Default,
    };
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let service = open(&node, name, settings)?;
    let server = service.server_builder().create()?;
    let gone = Arc::new(AtomicBool::new(false));
    let g = gone.clone();
    on_parent_gone(move || g.store(true, Ordering::Relaxed));
    println!("ready");
    loop {
        match server.receive()? {
            Some(req) => {
                let pod = *req.payload();
                req.send_copy(pod)?;
                if pod.seq == STOP {
                    return Ok(());
                }
            }
            None if gone.load(Ordering::Relaxed) => return Ok(()),
            None => std::hint::spin_loop(),
        }
    }
}

/// A server process and a client port connected to it.
pub struct Session {
    client: iceoryx2::port::client::Client<ipc::Service, Pod, (), Pod, ()>,
    _service: Service,
    _node: Node<ipc::Service>,
    server: ServerProcess,
}

impl Session {
    /// Creates a service with `settings`, starts its server process and a client.
    pub fn start(settings: Settings) -> Result<Self, Skip> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("xrpc-bench/{}/{n}", std::process::id());
        let node = NodeBuilder::new().create::<ipc::Service>()?;
        let service = open(&node, &name, settings)?;
        let server = ServerProcess::start(&[SERVE_ARG, &name, settings.arg()])?;
        let client = service.client_builder().create()?;
        Ok(Session {
            client,
            _service: service,
            _node: node,
            server,
        })
    }

    /// One call, busy-polling for the answer.
    pub fn call(&self, seq: u64) -> Result<u64, Skip> {
        let pending = self.client.send_copy(Pod::new(seq))?;
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
        other_process_cpu(self.server.id()).unwrap_or_default()
    }

    /// Tells the server to stop and waits for it (kills it after a while).
    pub fn stop(self) {
        let _ = self.call(STOP);
    }
}

impl Subject for Iceoryx2 {
    fn name(&self) -> String {
        "iceoryx2 req-resp · shm (2 processes, busy-poll)".into()
    }
    fn group(&self) -> Group {
        Group::Peer
    }
    fn alone_program(&self) -> Option<&'static str> {
        Some("iceoryx2")
    }
    fn round_trips(&self, rec: Recorder) -> Outcome {
        let s = Session::start(Settings::Default)?;
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
        let s = Session::start(Settings::InFlight)?;
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
                let p = s.client.send_copy(Pod::new(sent as u64))?;
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
