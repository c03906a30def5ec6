//! Processes of their own: peer rows measured in a fresh process, the peers' server processes,
//! and the peers' own small programs (`--peer-alone`).
//!
//! A peer row runs as fast as the peer does alone only if nothing else of the benchmark is
//! alive beside it: no thread left over by an earlier row, no runtime, no allocator state. So
//! each measurement of a peer row re-executes this binary as
//! `xrpc-bench --isolated "<row>" <kind> <a> <b>`: the child runs that one measurement (starting
//! the peer's server process itself, as the peer's own examples do), prints it as one line
//! ([`Measured::to_line`]) and exits, while this process waits in a blocking `wait`. The peer's
//! own small program (`--peer-alone <peer>`, in `alone.rs`) runs the same way beside it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::measure::{Measured, Recorder};
use crate::subjects::{self, Group, Outcome, Skip, Subject};

/// The argument that makes this binary measure one row in a process of its own.
pub const ISOLATED_ARG: &str = "--isolated";

/// Longest a child process may take before it gives up on itself (its watchdog exits it).
const CHILD_DEADLINE: Duration = Duration::from_secs(300);

/// Ends this process after `deadline`, whatever it is doing: a hung peer must not hang the
/// benchmark (a sleeping thread; it costs nothing meanwhile).
pub fn watchdog(deadline: Duration, what: &'static str) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!("{what}: still running after {deadline:?}; exiting");
        std::process::exit(3);
    });
}

/// A stand-alone figure: round-trip percentiles of a peer's own small program.
#[derive(Debug, Clone, Copy)]
pub struct Alone {
    /// p50, µs.
    pub p50: f64,
    /// p99, µs.
    pub p99: f64,
}

/// A row measured in a process of its own (see the module documentation).
pub struct Isolated {
    inner: Box<dyn Subject>,
}

impl Isolated {
    /// Measures `inner` in child processes.
    pub fn new(inner: Box<dyn Subject>) -> Self {
        Self { inner }
    }

    fn run(&self, kind: &str, a: usize, b: usize) -> Outcome {
        let out = run_self(&[
            ISOLATED_ARG,
            &self.inner.name(),
            kind,
            &a.to_string(),
            &b.to_string(),
        ])?;
        let line = out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(RESULT))
            .ok_or_else(|| Skip::Absent(format!("the child printed no result: {out:?}")))?;
        match line.split_once(' ').unwrap_or((line, "")) {
            ("measured", m) => Measured::from_line(m).map_err(Skip::Absent),
            ("not-applicable", _) => Err(Skip::NotApplicable),
            (_, reason) => Err(Skip::Absent(reason.to_string())),
        }
    }
}

impl Subject for Isolated {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn group(&self) -> Group {
        self.inner.group()
    }
    fn round_trips(&self, rec: Recorder) -> Outcome {
        self.run("round-trips", rec.warmup, rec.calls)
    }
    fn in_flight(&self, k: usize, calls: usize) -> Outcome {
        self.run("in-flight", k, calls)
    }
    fn one_way(&self, size: usize, count: usize) -> Outcome {
        self.run("one-way", size, count)
    }
    fn alone_program(&self) -> Option<&'static str> {
        self.inner.alone_program()
    }
}

/// Runs the peer's own small program `peer` (`--peer-alone`) for `calls` round trips in a
/// fresh process.
pub fn run_alone(peer: &str, calls: usize) -> Result<Alone, Skip> {
    let out = run_self(&[crate::alone::ARG, peer, &calls.to_string()])?;
    let line = out
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(RESULT))
        .ok_or_else(|| Skip::Absent(format!("{peer} alone printed no result: {out:?}")))?;
    let mut nums = line.split_ascii_whitespace().skip(1).map(str::parse::<f64>);
    match (line.starts_with("alone "), nums.next(), nums.next()) {
        (true, Some(Ok(p50)), Some(Ok(p99))) => Ok(Alone { p50, p99 }),
        _ => Err(Skip::Absent(format!("{peer} alone: {line}"))),
    }
}

/// What starts a child's result line on its standard output.
pub const RESULT: &str = "xrpc-bench result: ";

/// Runs this binary with `args`, waiting (blocked, not polling) for it to end; its standard
/// output.
fn run_self(args: &[&str]) -> Result<String, Skip> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out)?;
    }
    let status = child.wait()?;
    if !status.success() && !out.contains(RESULT) {
        return Err(Skip::Absent(format!("child {args:?} ended with {status}")));
    }
    Ok(out)
}

/// The child's side of [`Isolated`]: `args` = row, kind, a, b. Prints the result line.
pub fn child(args: &[String]) {
    watchdog(CHILD_DEADLINE, "isolated row");
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    let num = |i: usize| arg(i).parse::<usize>().unwrap_or(0);
    let outcome = match subjects::direct().into_iter().find(|s| s.name() == arg(0)) {
        None => Err(Skip::Absent(format!("no row named {:?}", arg(0)))),
        Some(s) => crate::guarded(|| match arg(1) {
            "round-trips" => s.round_trips(Recorder {
                warmup: num(2),
                calls: num(3),
            }),
            "in-flight" => s.in_flight(num(2), num(3)),
            "one-way" => s.one_way(num(2), num(3)),
            other => Err(Skip::Absent(format!("unknown measurement {other:?}"))),
        }),
    };
    match outcome {
        Ok(m) => println!("{RESULT}measured {}", m.to_line()),
        Err(Skip::NotApplicable) => println!("{RESULT}not-applicable"),
        Err(Skip::Absent(reason)) => {
            println!("{RESULT}absent {}", reason.replace('\n', " "))
        }
    }
}

/// A peer's server process: this binary re-executed with the peer's serve arguments. It
/// prints one line when it is ready; it exits when its standard input ends (this handle
/// dropped, or this process gone).
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// What the server said when ready (after `ready`).
    pub ready: String,
}

impl ServerProcess {
    /// Starts the server process with `args` and waits for its `ready` line.
    pub fn start(args: &[&str]) -> Result<Self, Skip> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        let mut server = ServerProcess {
            child,
            stdin,
            ready: String::new(),
        };
        match line.trim().strip_prefix("ready") {
            Some(rest) => {
                server.ready = rest.trim().to_string();
                Ok(server)
            }
            None => Err(Skip::Absent(format!("server {args:?} said {line:?}"))),
        }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Its standard input ends: it exits.
        drop(self.stdin.take());
        let start = std::time::Instant::now();
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

/// In a server process: calls `gone` once standard input ends (the process that started it
/// dropped its handle or died). The thread waits in a blocking read.
pub fn on_parent_gone(gone: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        gone();
    });
}
