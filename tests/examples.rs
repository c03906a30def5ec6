//! Runs every example and checks what it prints: each case fails unless its example ran to the
//! end (or, for a server, up to where the test stops it) and said what it should.
//!
//! `cargo test` builds the examples (into `target/<profile>/examples/`, next to this test's
//! `deps/` directory) before it runs any test. An example binary that is missing — `cargo test
//! --test examples` builds none, and cargo skips an example whose `required-features` are off
//! (`custom_codec` needs `codec-json`) — or older than its source is built here, with the
//! cargo that runs the tests, into the same target directory.
//!
//! Every name a case binds is its own: shared-memory services from `unique_name`, TCP ports
//! chosen by the system (port 0), so two runs at once never meet.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use xrpc_shm::testing::{Peer, unique_name};

/// The root crate's features this test was built with: an example built here gets the same
/// ones (plus its own required features), so cargo reuses what it built for the tests.
fn features_of_this_build() -> Vec<&'static str> {
    let mut f = Vec::new();
    if cfg!(feature = "codec-json") {
        f.push("codec-json");
    }
    if cfg!(feature = "codec-messagepack") {
        f.push("codec-messagepack");
    }
    if cfg!(feature = "codec-cbor") {
        f.push("codec-cbor");
    }
    if cfg!(feature = "codec-postcard") {
        f.push("codec-postcard");
    }
    if cfg!(feature = "tower") {
        f.push("tower");
    }
    if cfg!(feature = "tracing") {
        f.push("tracing");
    }
    f
}

/// The binary of example `name` (which needs the cargo features `required`), built (or brought
/// up to date) first. `package/name` names an example of another package of the workspace.
fn example(name: &str, required: &[&str]) -> PathBuf {
    let (package, name) = name.split_once('/').unwrap_or(("xrpc", name));
    let exe = std::env::current_exe().expect("the path of this test binary");
    // <target>/<profile>/deps/examples-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    // Cargo decides what is stale (the example or the library under it): a no-op when the
    // binary is current.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        package,
        "--example",
        name,
        "--manifest-path",
    ])
    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
    .arg("--target-dir")
    .arg(target_dir);
    match profile_dir.file_name().and_then(|p| p.to_str()) {
        Some("debug") => {}
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
        None => panic!("no profile directory in {}", profile_dir.display()),
    }
    // The features are the root crate's: another package's example is built without them.
    let mut features = if package == "xrpc" {
        features_of_this_build()
    } else {
        Vec::new()
    };
    features.extend_from_slice(required);
    features.dedup();
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    eprintln!("building example {name}: {cmd:?}");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build example {name}: {e}"));
    assert!(
        status.success(),
        "building example {name} failed ({status})"
    );
    assert!(
        path.is_file(),
        "cargo built example {name}, but {} is not there",
        path.display()
    );
    path
}

/// What a finished example did.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Panics unless the example succeeded and printed every one of `lines` (as substrings).
    fn assert_printed(&self, name: &str, lines: &[&str]) {
        assert!(
            self.status.success(),
            "example {name} failed ({}):\n{}\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        for line in lines {
            assert!(
                self.stdout.contains(line),
                "example {name} did not print {line:?}:\n{}",
                self.stdout
            );
        }
    }
}

/// Runs `cmd` to the end (at most a minute), collecting its output.
fn run(mut cmd: Command) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let limit = Duration::from_secs(60);
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            break status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn example_command(name: &str, required: &[&str]) -> Command {
    Command::new(example(name, required))
}

#[test]
fn byte_transports() {
    let ran = run(example_command("byte_transports", &[]));
    ran.assert_printed(
        "byte_transports",
        &[
            "\ntcp ",
            "\nunix ",
            "\nchannel ",
            "\narc ",
            "filled order #42",
        ],
    );
    // The debug-build note appears in a debug build only (the example and this test share
    // the profile).
    assert_eq!(
        ran.stdout.contains("debug build"),
        cfg!(debug_assertions),
        "{}",
        ran.stdout
    );
}

#[test]
fn streaming() {
    run(example_command("streaming", &[])).assert_printed(
        "streaming",
        &[
            "client <- 1 ignition",
            "countdown(3) collected: [3, 2, 1]",
            "client <- 3 lines, 13 words",
            "client <- \"STREAMS!\"",
            "server stopped the handler",
            "\ndone",
        ],
    );
}

#[test]
fn service_macro() {
    let mut shm = example_command("service_macro", &[]);
    shm.env("XRPC_SERVICE", unique_name("service-example"));
    let mut tcp = example_command("service_macro", &[]);
    tcp.arg("--tcp");
    for (cmd, over) in [(shm, "over shared memory"), (tcp, "over TCP")] {
        run(cmd).assert_printed(
            "service_macro",
            &[
                "add(1, 2) = 3",
                "div(7, 2) = Ok(3)",
                "div(1, 0) = Err(DivideByZero)",
                "hello ada",
                "countdown(3) = [3, 2, 1]",
                "string API: \"Calculator.add\" (40, 2) = 42",
                over,
                "blocking: add(20, 22) = 42",
                "blocking: countdown(2) = [2, 1]",
            ],
        );
    }
}

#[test]
fn compression() {
    let ran = run(example_command("compression", &[]));
    ran.assert_printed("compression", &["\nnone ", "\nlz4 ", "\nzstd(3) "]);
    assert_eq!(
        ran.stdout.contains("debug build"),
        cfg!(debug_assertions),
        "{}",
        ran.stdout
    );
}

#[test]
fn custom_codec() {
    let ran = run(example_command("custom_codec", &["codec-json"]));
    ran.assert_printed(
        "custom_codec",
        &[
            "[json (id 2)]",
            "[pretty-json (id 200)]",
            "[bincode client -> json server] answered in bincode: add(1, 2) = 3",
            "[pretty-json client -> json server] refused: Unsupported",
        ],
    );
    assert_eq!(ran.stdout.matches("add(40, 2) = 42").count(), 2);
}

#[test]
fn tower_layers() {
    run(example_command("tower_layers", &["tower"])).assert_printed(
        "tower_layers",
        &[
            "add: 2 + 3 = 5",
            "timeout: slow gave up after",
            "retry: flaky answered \"again\" after two refusals",
            "refused (ResourceExhausted); at most 2 handlers at once",
            "client load-shed: refused at once",
            "done",
        ],
    );
}

#[test]
fn demo() {
    // The README's first command: its own server process, shared memory and TCP, from the
    // tokio client and from the blocking one.
    let mut cmd = example_command("demo", &[]);
    cmd.env("XRPC_DEMO_CALLS", "300");
    run(cmd).assert_printed(
        "demo",
        &[
            "shm: add(1, 2) = 3",
            "shm: 300 calls",
            "tcp: add(1, 2) = 3",
            "tcp: 300 calls",
            "blocking shm: add(1, 2) = 3",
            "blocking shm: 300 calls",
            "blocking tcp: 300 calls",
            "server process exited (exit status: 0)",
        ],
    );
}

#[test]
fn load_balancing() {
    // Three server processes, one killed and restarted: no call lost, the restarted one back
    // in rotation (the example fails otherwise).
    run(example_command("load_balancing", &[])).assert_printed(
        "load_balancing",
        &[
            "-- killed server-2",
            "-- restarted server-2",
            "failed: 0",
            "no call lost; the restarted server is back in rotation",
        ],
    );
}

/// `rpc_client_server server` with `env`, once it listens; returns it and the line that says
/// where.
fn rpc_server(extra_args: &[&str], env: &[(&str, &str)]) -> (Peer, String) {
    let mut cmd = example_command("rpc_client_server", &[]);
    cmd.arg("server")
        .args(extra_args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut server = Peer::spawn_command(cmd);
    let line = server.wait_for_line("server: listening on ");
    (server, line)
}

#[test]
fn rpc_client_server_over_tcp() {
    // Port 0: the server picks a free port and prints it.
    let (mut server, line) = rpc_server(&[], &[("XRPC_ADDR", "127.0.0.1:0")]);
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("server: listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let mut client = example_command("rpc_client_server", &[]);
    client
        .args(["client", "--stop-server"])
        .env("XRPC_ADDR", addr.to_string());
    run(client).assert_printed(
        "rpc_client_server client",
        &["client: add(1, 2) = 3", "sequential calls"],
    );
    assert!(server.wait_timeout(Duration::from_secs(10)).success());
}

#[test]
fn rpc_client_server_over_shared_memory() {
    let service = unique_name("rpc-example");
    let (mut server, line) = rpc_server(&["--shm"], &[("XRPC_SERVICE", &service)]);
    assert!(line.contains(&service), "{line}");
    let mut client = example_command("rpc_client_server", &[]);
    client
        .args(["client", "--shm", "--stop-server"])
        .env("XRPC_SERVICE", &service);
    run(client).assert_printed(
        "rpc_client_server client --shm",
        &["client: add(1, 2) = 3", "sequential calls"],
    );
    assert!(server.wait_timeout(Duration::from_secs(10)).success());
}

#[test]
fn rpc_client_server_stops_when_its_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut server = example_command("rpc_client_server", &[]);
    server.arg("server").env("XRPC_ADDR", &addr);
    let ran = run(server);
    assert!(!ran.status.success(), "the server ran on a taken port");
    assert!(
        ran.stderr.contains(&addr) && ran.stderr.contains("in use"),
        "the error does not name the taken port {addr}:\n{}",
        ran.stderr
    );
}

#[test]
fn rpc_client_server_client_fails_clearly_on_a_foreign_server() {
    // Something that is not the example's server holds the port: it accepts (the kernel
    // does) but never answers.
    let foreign = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = foreign.local_addr().unwrap().to_string();
    let mut client = example_command("rpc_client_server", &[]);
    client.arg("client").env("XRPC_ADDR", &addr);
    let ran = run(client);
    assert!(
        !ran.status.success(),
        "the client believed a foreign server"
    );
    assert!(
        ran.stderr.contains(&addr),
        "the error does not name {addr}:\n{}",
        ran.stderr
    );
}

#[test]
fn message_transport_shm() {
    let service = unique_name("message-example");
    let mut cmd = example_command("message_transport_shm", &[]);
    cmd.arg("server")
        .env("XRPC_SERVICE", &service)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut server = Peer::spawn_command(cmd);
    server.wait_for_line("server: waiting for clients");
    let mut client = example_command("message_transport_shm", &[]);
    client.arg("client").env("XRPC_SERVICE", &service);
    run(client).assert_printed(
        "message_transport_shm client",
        &["-> \"cprx\"", "went out as one frame of"],
    );
    // The server serves until killed (dropping `server` kills it).
}

/// `xrpc-blocking`'s `add_server` with `args` and `env`, once it listens; returns it and where.
fn blocking_add_server(args: &[&str], env: &[(&str, &str)]) -> (Peer, String) {
    let mut cmd = example_command("xrpc-blocking/add_server", &[]);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut server = Peer::spawn_command(cmd);
    let line = server.wait_for_line("add_server: listening on ");
    (server, line)
}

/// The blocking examples, each with the other over every transport, and each with the tokio
/// example over TCP and shared memory: the client's output, then the server's clean exit.
#[test]
fn blocking_add_client_and_server_with_each_other_and_with_tokio() {
    let sock = std::env::temp_dir().join(unique_name("add.sock"));
    let sock = sock.to_str().expect("a UTF-8 temporary path");
    let service = unique_name("add-example");
    let shm_env = [("XRPC_SERVICE", service.as_str())];
    let tcp_env = [("XRPC_ADDR", "127.0.0.1:0")];
    let listening = |line: &str, prefix: &str| {
        let at = line.find(prefix).map(|i| &line[i + prefix.len()..]);
        at.map(str::trim)
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string()
    };
    /// Whether the server is the blocking one, the transport's arguments, the server's env.
    type Case<'a> = (bool, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case<'_>; 5] = [
        (true, &[], &tcp_env),
        (true, &["--unix", sock], &[]),
        (true, &["--shm"], &shm_env),
        (false, &[], &tcp_env),
        (false, &["--shm"], &shm_env),
    ];
    for (blocking_server, args, env) in cases {
        let (mut server, addr) = if blocking_server {
            let (server, line) = blocking_add_server(args, env);
            (server, listening(&line, "add_server: listening on "))
        } else {
            let (server, line) = rpc_server(args, env);
            (server, listening(&line, "server: listening on "))
        };
        let client_env = |cmd: &mut Command| {
            cmd.envs(env.iter().copied());
            if env.first().is_some_and(|(k, _)| *k == "XRPC_ADDR") {
                cmd.env("XRPC_ADDR", &addr);
            }
        };
        let mut client = example_command("xrpc-blocking/add_client", &[]);
        client.args(args).args(["--calls", "100", "--stop-server"]);
        client_env(&mut client);
        run(client).assert_printed(
            &format!("add_client {args:?} against add_server: {blocking_server}"),
            &[
                "add_client: add(1, 2) = 3",
                "sum 4950",
                "100 calls, round trip p50",
            ],
        );
        assert!(server.wait_timeout(Duration::from_secs(10)).success());
        if blocking_server && args.first() != Some(&"--unix") {
            // The tokio example's client against the blocking server.
            let (mut server, line) = blocking_add_server(args, env);
            let addr = listening(&line, "add_server: listening on ");
            let mut client = example_command("rpc_client_server", &[]);
            client.arg("client").args(args).arg("--stop-server");
            client.envs(env.iter().copied());
            if !args.contains(&"--shm") {
                client.env("XRPC_ADDR", &addr);
            }
            run(client).assert_printed("rpc_client_server client", &["client: add(1, 2) = 3"]);
            assert!(server.wait_timeout(Duration::from_secs(10)).success());
        }
    }
}
