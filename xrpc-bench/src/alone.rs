//! Each peer measured alone by its own small program, written against the peer's API the way
//! its examples and benchmarks are, in a fresh process:
//! `xrpc-bench --peer-alone iceoryx2|tarpc-tcp|tarpc-unix|ipc-channel [CALLS]` prints
//! `alone <p50 µs> <p99 µs>` of a 32-byte echo after a warm-up. The benchmark runs it beside the
//! peer's row; the two must agree within 15% for the goals to compare against the row.
//!
//! Nothing here uses the benchmark's harness (no subject, recorder or span): only the peer's
//! server process ([`crate::process::ServerProcess`], the same for both) is shared. The process
//! has the benchmark's counting allocator (a relaxed add per allocation) and nothing else.

use std::time::{Duration, Instant};

use crate::process::{RESULT, ServerProcess, watchdog};
use crate::subjects::{Msg, Skip, iceoryx2, ipc_channel, tarpc};

/// The argument that runs a peer's own program.
pub const ARG: &str = "--peer-alone";

/// Untimed calls first.
const WARMUP: usize = 1_000;

/// Runs the program named by `args[0]` for `args[1]` calls (default 10,000) and prints its
/// figure.
pub fn main(args: &[String]) {
    watchdog(Duration::from_secs(300), "peer alone");
    let calls = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let res = match args.first().map(String::as_str) {
        Some("iceoryx2") => iceoryx2_alone(calls),
        Some("tarpc-tcp") => tarpc_alone(true, calls),
        Some("tarpc-unix") => tarpc_alone(false, calls),
        Some("ipc-channel") => ipc_channel_alone(calls),
        other => Err(Skip::Absent(format!("no program for {other:?}"))),
    };
    match res {
        Ok(mut v) => {
            v.sort_unstable();
            let pick = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            println!("{RESULT}alone {:.3} {:.3}", us(pick(0.5)), us(pick(0.99)));
        }
        Err(e) => println!("{RESULT}absent {e:?}"),
    }
}

/// Times `calls` calls of `call` after the warm-up; the times.
fn time(calls: usize, mut call: impl FnMut(u64)) -> Vec<Duration> {
    for i in 0..WARMUP {
        call(i as u64);
    }
    (0..calls)
        .map(|i| {
            let t = Instant::now();
            call((WARMUP + i) as u64);
            t.elapsed()
        })
        .collect()
}

/// iceoryx2 request-response as its benchmark runs it: a client and a server process, both
/// busy-polling; the service with its default settings, as its example opens it.
fn iceoryx2_alone(calls: usize) -> Result<Vec<Duration>, Skip> {
    use ::iceoryx2::prelude::*;
    let name = format!("xrpc-bench-alone/{}", std::process::id());
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let service_name: ServiceName = name.as_str().try_into()?;
    let service = node
        .service_builder(&service_name)
        .request_response::<iceoryx2::Pod, iceoryx2::Pod>()
        .open_or_create()?;
    let _server = ServerProcess::start(&[iceoryx2::SERVE_ARG, &name, "default"])?;
    let client = service.client_builder().create()?;
    let call = |seq: u64| -> Result<u64, Skip> {
        let pending = client.send_copy(iceoryx2::Pod::new(seq))?;
        loop {
            if let Some(r) = pending.receive()? {
                return Ok(r.payload().seq);
            }
            std::hint::spin_loop();
        }
    };
    let mut failed = None;
    let v = time(calls, |i| match call(i) {
        Ok(seq) => assert_eq!(seq, i),
        Err(e) => failed = Some(e),
    });
    let _ = call(iceoryx2::STOP);
    failed.map_or(Ok(v), Err)
}

/// tarpc as its example service runs: a server process and this client, each on a default
/// multi-thread runtime (`#[tokio::main]`), calls in the body of `block_on`.
fn tarpc_alone(tcp: bool, calls: usize) -> Result<Vec<Duration>, Skip> {
    use ::tarpc::tokio_serde::formats::Bincode;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let config = ::tarpc::client::Config::default();
        let path = std::env::temp_dir().join(format!(
            "xrpc-bench-tarpc-alone-{}.sock",
            std::process::id()
        ));
        let (_server, client) = if tcp {
            let server = ServerProcess::start(&[tarpc::SERVE_ARG, "tcp"])?;
            let t = ::tarpc::serde_transport::tcp::connect(server.ready.as_str(), Bincode::default)
                .await?;
            (server, tarpc::EchoClient::new(config, t).spawn())
        } else {
            let p = path.to_string_lossy().into_owned();
            let server = ServerProcess::start(&[tarpc::SERVE_ARG, "unix", &p])?;
            let t = ::tarpc::serde_transport::unix::connect(&path, Bincode::default).await?;
            (server, tarpc::EchoClient::new(config, t).spawn())
        };
        let mut v = Vec::with_capacity(calls);
        for i in 0..WARMUP + calls {
            let t = Instant::now();
            let r = client
                .echo(::tarpc::context::current(), Msg::new(i))
                .await?;
            assert_eq!(r.seq, i as u64);
            if i >= WARMUP {
                v.push(t.elapsed());
            }
        }
        let _ = std::fs::remove_file(&path);
        Ok(v)
    })
}

/// ipc-channel across two processes, set up as its cross-process tests do (a one-shot server,
/// the child connects and sends its channels), blocking receives.
fn ipc_channel_alone(calls: usize) -> Result<Vec<Duration>, Skip> {
    let s = ipc_channel::Session::start()?;
    let mut failed = None;
    let v = time(calls, |i| {
        let r =
            s.tx.send(Msg::new(i as usize))
                .map_err(Skip::from)
                .and_then(|()| Ok(s.rx.recv()?));
        match r {
            Ok(m) => assert_eq!(m.seq, i),
            Err(e) => failed = Some(e),
        }
    });
    failed.map_or(Ok(v), Err)
}
