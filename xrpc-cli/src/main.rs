//! `xrpc`: call, ping and inspect xrpc services from a shell.
//!
//! ```text
//! xrpc call  <target> <method> '<json>'   call a method, print the JSON answer
//! xrpc ping  <target> [-c N] [-i SECS]    round-trip times (min/avg/p99/max)
//! xrpc methods <target>                   the registered methods and their signatures
//! xrpc stats <target>                     uptime, connections, calls, errors, bytes, latency
//! xrpc list                               the shm and Unix services of this machine
//! ```
//!
//! Targets: `shm:NAME`, `unix:PATH`, `tcp:HOST:PORT`, `tls:HOST:PORT` (with `--ca FILE` and
//! `--server-name NAME`). The tool sends JSON; a server answers a request in any built-in codec
//! it was built with (PROTOCOL.md, "Codecs"), so the server needs its `codec-json` feature.
//!
//! Exit codes: 0 success, 1 the server answered an error, 2 bad usage or input, 3 the service
//! cannot be reached (no such service, refused), 4 timed out.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;
use xrpc_proto::JsonCodec;
use xrpc_proto::introspect::{self, MethodInfo, StatsReport};
use xrpc_tokio::{
    MessageChannelAdapter, RpcClient, RpcError, SharedMemoryConfig, SharedMemoryFrameTransport,
    TcpConfig, TcpFrameTransport, TlsClientConfig, TlsFrameTransport, TransportError, UnixConfig,
    UnixFrameTransport,
};

mod list;

const USAGE: &str = "\
usage: xrpc [options] <command>

commands:
  call <target> <method> [<json>]   call a method with JSON arguments (default: null)
  ping <target>                     round-trip times, like ping (-c count, -i interval)
  methods <target>                  the registered methods and their signatures
  stats <target>                    what the server counted
  list                              the shared-memory and Unix services of this machine

targets: shm:NAME  unix:PATH  tcp:HOST:PORT  tls:HOST:PORT

options:
  --json               output for scripts (one JSON document)
  --timeout SECS       connect and call timeout (default 5)
  --ca FILE            TLS: trusted root certificates (PEM)
  --server-name NAME   TLS: the name the server's certificate must carry
  -c N                 ping: stop after N replies (default: until interrupted)
  -i SECS              ping: interval (default 1)
  -h, --help           this text
  -V, --version        the version

exit codes: 0 ok, 1 the server answered an error, 2 bad usage or input,
            3 cannot reach the service, 4 timed out";

/// Why the tool stops: what to print, and its exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }
}

/// Where a service is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Shm(String),
    Unix(PathBuf),
    Tcp(String),
    Tls(String),
}

impl Target {
    fn parse(s: &str) -> Result<Self, Failure> {
        let (scheme, rest) = s.split_once(':').ok_or_else(|| {
            Failure::usage(format!(
                "target {s:?} has no scheme: write shm:NAME, unix:PATH, tcp:HOST:PORT or tls:HOST:PORT"
            ))
        })?;
        if rest.is_empty() {
            return Err(Failure::usage(format!("target {s:?} has no address")));
        }
        Ok(match scheme {
            "shm" => Self::Shm(rest.to_owned()),
            "unix" => Self::Unix(PathBuf::from(rest)),
            "tcp" => Self::Tcp(rest.to_owned()),
            "tls" => Self::Tls(rest.to_owned()),
            other => {
                return Err(Failure::usage(format!(
                    "unknown scheme {other:?} in {s:?}: use shm, unix, tcp or tls"
                )));
            }
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shm(n) => write!(f, "shm:{n}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp:{a}"),
            Self::Tls(a) => write!(f, "tls:{a}"),
        }
    }
}

/// The command line, parsed.
#[derive(Debug)]
struct Options {
    json: bool,
    timeout: Duration,
    ca: Option<PathBuf>,
    server_name: Option<String>,
    count: Option<u64>,
    interval: Duration,
    /// The command and its operands.
    words: Vec<String>,
}

fn seconds(flag: &str, v: Option<String>) -> Result<Duration, Failure> {
    let v = v.ok_or_else(|| Failure::usage(format!("{flag} needs a value")))?;
    v.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| Failure::usage(format!("{flag}: {v:?} is not a number of seconds")))
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, Failure> {
    let mut o = Options {
        json: false,
        timeout: Duration::from_secs(5),
        ca: None,
        server_name: None,
        count: None,
        interval: Duration::from_secs(1),
        words: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => o.json = true,
            "--timeout" => o.timeout = seconds("--timeout", args.next())?,
            "-i" => o.interval = seconds("-i", args.next())?,
            "--ca" => {
                o.ca = Some(PathBuf::from(
                    args.next()
                        .ok_or_else(|| Failure::usage("--ca needs a file"))?,
                ))
            }
            "--server-name" => {
                o.server_name = Some(
                    args.next()
                        .ok_or_else(|| Failure::usage("--server-name needs a name"))?,
                )
            }
            "-c" => {
                let v = args
                    .next()
                    .ok_or_else(|| Failure::usage("-c needs a count"))?;
                o.count = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| Failure::usage(format!("-c: {v:?} is not a count")))?,
                );
            }
            "-h" | "--help" => o.words = vec!["help".into()],
            "-V" | "--version" => o.words = vec!["version".into()],
            // A JSON argument may start with '-' (a negative number).
            s if s.starts_with('-') && s.len() > 1 && !looks_like_number(s) => {
                return Err(Failure::usage(format!("unknown option {s}\n\n{USAGE}")));
            }
            _ => o.words.push(a),
        }
    }
    Ok(o)
}

fn looks_like_number(s: &str) -> bool {
    s[1..].starts_with(|c: char| c.is_ascii_digit())
}

/// A connected client (JSON codec) over whichever transport the target names.
enum Client {
    Shm(RpcClient<MessageChannelAdapter<SharedMemoryFrameTransport>, JsonCodec>),
    Unix(RpcClient<MessageChannelAdapter<UnixFrameTransport>, JsonCodec>),
    Tcp(RpcClient<MessageChannelAdapter<TcpFrameTransport>, JsonCodec>),
    Tls(RpcClient<MessageChannelAdapter<TlsFrameTransport>, JsonCodec>),
}

/// Runs `$body` with `$c` the inner client.
macro_rules! with_client {
    ($client:expr, |$c:ident| $body:expr) => {
        match $client {
            Client::Shm($c) => $body,
            Client::Unix($c) => $body,
            Client::Tcp($c) => $body,
            Client::Tls($c) => $body,
        }
    };
}

fn client<T: xrpc_tokio::FrameTransport>(t: T) -> RpcClient<MessageChannelAdapter<T>, JsonCodec> {
    RpcClient::with_codec(MessageChannelAdapter::new(t), JsonCodec)
}

impl Client {
    async fn connect(target: &Target, o: &Options) -> Result<Self, Failure> {
        if matches!(target, Target::Tls(_)) && o.ca.is_none() {
            return Err(Failure::usage(format!(
                "{target}: a tls: target needs --ca FILE (the roots to trust)"
            )));
        }
        let tcp = TcpConfig {
            connect_timeout: o.timeout,
            max_attempts: 1,
            ..TcpConfig::default()
        };
        let connecting = async {
            Ok::<_, TransportError>(match target {
                Target::Shm(name) => Self::Shm(client(
                    SharedMemoryFrameTransport::connect(name, SharedMemoryConfig::default())
                        .await?,
                )),
                Target::Unix(path) => {
                    let config = UnixConfig {
                        connect_timeout: o.timeout,
                        max_attempts: 1,
                        ..UnixConfig::default()
                    };
                    Self::Unix(client(UnixFrameTransport::connect(path, config).await?))
                }
                Target::Tcp(addr) => Self::Tcp(client(
                    TcpFrameTransport::connect(addr.as_str(), tcp).await?,
                )),
                Target::Tls(addr) => {
                    let tls = tls_config(o)?;
                    Self::Tls(client(
                        TlsFrameTransport::connect(addr.as_str(), tcp, tls).await?,
                    ))
                }
            })
        };
        match tokio::time::timeout(o.timeout, connecting).await {
            Err(_) => Err(Failure {
                code: 4,
                message: format!("{target}: timed out connecting after {:?}", o.timeout),
            }),
            Ok(Err(e)) => Err(connect_failure(target, &e)),
            Ok(Ok(c)) => Ok(c),
        }
    }

    async fn call(&self, method: &str, args: &Value, timeout: Duration) -> Result<Value, RpcError> {
        with_client!(self, |c| c.call_with_timeout(method, args, timeout).await)
    }
}

fn tls_config(o: &Options) -> Result<TlsClientConfig, TransportError> {
    // `connect` checked that there is one.
    let roots = match &o.ca {
        Some(path) => xrpc_tokio::load_certificates(path)?,
        None => Vec::new(),
    };
    let tls = TlsClientConfig::new(roots)?;
    match &o.server_name {
        Some(name) => tls.with_server_name(name.clone()),
        None => Ok(tls),
    }
}

/// A connect error a person can act on.
fn connect_failure(target: &Target, e: &TransportError) -> Failure {
    let text = e.to_string();
    let hint = match target {
        _ if matches!(e, TransportError::PeerRefused(_)) => {
            " (the server's allow-list does not admit this user)"
        }
        Target::Shm(_) => " (no such service? `xrpc list` shows the services of this machine)",
        Target::Unix(_) if text.contains("No such file") => {
            " (no such socket? `xrpc list` shows the services of this machine)"
        }
        _ if text.contains("refused") => " (nothing listens there?)",
        _ => "",
    };
    Failure {
        code: 3,
        message: format!("{target}: cannot connect: {text}{hint}"),
    }
}

/// A call's error a person can act on, with its exit code.
fn call_failure(target: &Target, method: &str, e: RpcError) -> Failure {
    let (code, hint) = match &e {
        RpcError::Timeout => (4, ""),
        RpcError::MethodNotFound(_) => (1, " (`xrpc methods` lists the methods)"),
        RpcError::ServerError {
            code: xrpc_proto::ErrorCode::Unsupported,
            message,
        } if message.contains("json (2)") => (
            1,
            " (the server cannot read JSON: build it with the `codec-json` feature)",
        ),
        RpcError::ServerError { .. } | RpcError::TypeMismatch { .. } => (1, ""),
        RpcError::Transport(_) | RpcError::Disconnected(_) | RpcError::PeerRefused(_) => (3, ""),
        _ => (1, ""),
    };
    Failure {
        code,
        message: format!("{target}: {method}: {e}{hint}"),
    }
}

/// Parses the JSON argument; an error names its line and column.
fn parse_json(text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text).map_err(|e| {
        // serde_json's text ends with the position: `… at line 2 column 3`.
        Failure::usage(format!("bad JSON argument: {e}"))
    })
}

fn target_of(words: &[String], command: &str) -> Result<Target, Failure> {
    let t = words
        .get(1)
        .ok_or_else(|| Failure::usage(format!("usage: xrpc {command} <target> …")))?;
    Target::parse(t)
}

fn print_json(v: &impl serde::Serialize, pretty: bool) {
    let text = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    };
    println!(
        "{}",
        text.unwrap_or_else(|e| format!("\"unprintable: {e}\""))
    );
}

/// Colours on a terminal only.
struct Style {
    on: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
}

async fn run(o: Options) -> Result<(), Failure> {
    let style = Style {
        on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let words = &o.words;
    let command = words.first().map(String::as_str).unwrap_or("help");
    match command {
        "help" => {
            println!("{USAGE}");
            Ok(())
        }
        "version" => {
            println!("xrpc {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        "call" => {
            let target = target_of(words, "call")?;
            let method = words
                .get(2)
                .ok_or_else(|| Failure::usage("usage: xrpc call <target> <method> [<json>]"))?;
            if words.len() > 4 {
                return Err(Failure::usage(
                    "xrpc call takes one JSON argument: quote it ('{\"a\": 1}')",
                ));
            }
            let args = match words.get(3) {
                Some(text) => parse_json(text)?,
                None => Value::Null,
            };
            let client = Client::connect(&target, &o).await?;
            let v = client
                .call(method, &args, o.timeout)
                .await
                .map_err(|e| call_failure(&target, method, e))?;
            print_json(&v, !o.json);
            Ok(())
        }
        "ping" => ping(&o, &style).await,
        "methods" => {
            let target = target_of(words, "methods")?;
            let client = Client::connect(&target, &o).await?;
            let v = client
                .call(introspect::METHODS, &Value::Null, o.timeout)
                .await
                .map_err(|e| call_failure(&target, introspect::METHODS, e))?;
            if o.json {
                print_json(&v, false);
                return Ok(());
            }
            let methods: Vec<MethodInfo> = serde_json::from_value(v).map_err(|e| Failure {
                code: 1,
                message: format!(
                    "{target}: unexpected answer to {}: {e}",
                    introspect::METHODS
                ),
            })?;
            for m in methods {
                let mut line = style.bold(&m.name);
                if m.kind != "unary" {
                    line.push_str(&format!(" [{}]", m.kind));
                }
                if let Some(sig) = m.signature {
                    line.push_str(&format!("  {sig}"));
                }
                println!("{line}");
            }
            Ok(())
        }
        "stats" => {
            let target = target_of(words, "stats")?;
            let client = Client::connect(&target, &o).await?;
            let v = client
                .call(introspect::STATS, &Value::Null, o.timeout)
                .await
                .map_err(|e| call_failure(&target, introspect::STATS, e))?;
            if o.json {
                print_json(&v, false);
                return Ok(());
            }
            let s: StatsReport = serde_json::from_value(v).map_err(|e| Failure {
                code: 1,
                message: format!("{target}: unexpected answer to {}: {e}", introspect::STATS),
            })?;
            print_stats(&s, &style);
            Ok(())
        }
        "list" => list::run(&o, &style).await,
        other => Err(Failure::usage(format!(
            "unknown command {other:?}\n\n{USAGE}"
        ))),
    }
}

fn print_stats(s: &StatsReport, style: &Style) {
    println!(
        "uptime {:.1}s  connections {}  calls {}  errors {}  bytes in {}  out {}  peers refused {}  notifications dropped {}",
        s.uptime_ms as f64 / 1000.0,
        s.connections,
        s.calls,
        s.errors,
        s.bytes_in,
        s.bytes_out,
        s.peers_refused,
        s.notifications_dropped
    );
    if s.methods.is_empty() {
        return;
    }
    println!(
        "{}",
        style.bold(&format!(
            "{:<32} {:>10} {:>8} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9}",
            "method",
            "calls",
            "errors",
            "bytes in",
            "bytes out",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "max µs"
        ))
    );
    for m in &s.methods {
        println!(
            "{:<32} {:>10} {:>8} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9}",
            m.name,
            m.calls,
            m.errors,
            m.bytes_in,
            m.bytes_out,
            m.latency_us.p50,
            m.latency_us.p90,
            m.latency_us.p99,
            m.latency_us.max
        );
    }
}

/// `xrpc ping`: a call of `xrpc.ping` per interval. Any answer of the server (an error too:
/// a server without JSON, or with introspection off) is a reply.
async fn ping(o: &Options, style: &Style) -> Result<(), Failure> {
    let target = target_of(&o.words, "ping")?;
    let client = Client::connect(&target, o).await?;
    let mut rtts: Vec<Duration> = Vec::new();
    let mut lost = 0u64;
    let mut seq = 0u64;
    // Ctrl-C ends the run with its summary, as ping's does.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        seq += 1;
        let start = Instant::now();
        let res = tokio::select! {
            res = client.call(introspect::PING, &Value::Null, o.timeout) => res,
            _ = &mut interrupted => {
                seq -= 1;
                break;
            }
        };
        let rtt = start.elapsed();
        let answered = match &res {
            Ok(_) => true,
            Err(
                RpcError::ServerError { .. }
                | RpcError::MethodNotFound(_)
                | RpcError::Decode { .. },
            ) => true,
            Err(_) => false,
        };
        if answered {
            rtts.push(rtt);
            if !o.json {
                println!(
                    "reply from {target}: seq={seq} time={}",
                    style.green(&format!("{:.1} µs", rtt.as_secs_f64() * 1e6))
                );
            }
        } else {
            lost += 1;
            if !o.json {
                let e = res.err().map(|e| e.to_string()).unwrap_or_default();
                println!("{} seq={seq}: {e}", style.red("no reply"));
            }
            if !client_alive(&client) {
                break;
            }
        }
        if o.count.is_some_and(|c| seq >= c) {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(o.interval) => {}
            _ = &mut interrupted => break,
        }
    }
    let summary = Summary::of(&rtts);
    if o.json {
        print_json(
            &serde_json::json!({
                "target": target.to_string(),
                "sent": seq,
                "received": rtts.len(),
                "lost": lost,
                "min_us": summary.min, "avg_us": summary.avg,
                "p99_us": summary.p99, "max_us": summary.max,
            }),
            false,
        );
    } else {
        println!("--- {target} ping statistics ---");
        println!(
            "{seq} calls, {} replies, {lost} lost; rtt min/avg/p99/max = {:.1}/{:.1}/{:.1}/{:.1} µs",
            rtts.len(),
            summary.min,
            summary.avg,
            summary.p99,
            summary.max
        );
    }
    if rtts.is_empty() {
        return Err(Failure {
            code: 4,
            message: format!("{target}: no reply"),
        });
    }
    Ok(())
}

fn client_alive(c: &Client) -> bool {
    with_client!(c, |c| c.is_connected())
}

/// Round-trip statistics, in microseconds.
#[derive(Debug, Default, PartialEq)]
struct Summary {
    min: f64,
    avg: f64,
    p99: f64,
    max: f64,
}

impl Summary {
    fn of(rtts: &[Duration]) -> Self {
        if rtts.is_empty() {
            return Self::default();
        }
        let mut us: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        // Nearest rank.
        let rank = ((us.len() as f64) * 0.99).ceil() as usize;
        Self {
            min: us[0],
            avg: us.iter().sum::<f64>() / us.len() as f64,
            p99: us[rank.clamp(1, us.len()) - 1],
            max: us[us.len() - 1],
        }
    }
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(f) => return fail(f),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(Failure {
                code: 1,
                message: format!("cannot start the runtime: {e}"),
            });
        }
    };
    match rt.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(f),
    }
}

fn fail(f: Failure) -> ExitCode {
    let prefix = if std::io::stderr().is_terminal() {
        "\x1b[31mxrpc:\x1b[0m"
    } else {
        "xrpc:"
    };
    eprintln!("{prefix} {}", f.message);
    ExitCode::from(f.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(Target::parse("shm:a").unwrap(), Target::Shm("a".into()));
        assert_eq!(
            Target::parse("tcp:127.0.0.1:80").unwrap(),
            Target::Tcp("127.0.0.1:80".into())
        );
        assert!(Target::parse("nope").is_err());
        assert!(Target::parse("ftp:x").is_err());
        assert!(Target::parse("shm:").is_err());
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let e = parse_json("{\"a\":\n  x}").unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("line 2 column 3"), "{}", e.message);
    }

    #[test]
    fn seconds_out_of_range_are_usage_errors() {
        for v in ["1e20", "-1", "NaN", "inf", "x"] {
            let e = seconds("--timeout", Some(v.into())).unwrap_err();
            assert_eq!(e.code, 2, "{v}");
        }
        assert_eq!(
            seconds("-i", Some("0.5".into())).unwrap(),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn negative_numbers_are_arguments() {
        let o = parse_args(["call", "shm:a", "neg", "-5"].map(String::from)).unwrap();
        assert_eq!(o.words[3], "-5");
        assert!(parse_args(["--nope"].map(String::from)).is_err());
    }

    #[test]
    fn summary_percentiles() {
        let rtts: Vec<_> = (1..=100).map(Duration::from_micros).collect();
        let s = Summary::of(&rtts);
        assert_eq!((s.min, s.p99, s.max), (1.0, 99.0, 100.0));
        assert!((s.avg - 50.5).abs() < 1e-9);
    }
}
