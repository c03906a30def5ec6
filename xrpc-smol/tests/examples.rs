//! Runs the `smol_add_server` and `smol_add_client` examples against each other, over TCP and shared
//! memory, and checks what the client prints. The examples are built (or brought up to date)
//! first with the cargo that runs the tests; the server gets a free port (`127.0.0.1:0`) or a
//! unique service name, so runs at once never meet.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use xrpc_shm::testing::unique_name;

/// The binary of example `name`, built first.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the path of this test binary");
    // <target>/<profile>/deps/examples-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "xrpc-smol", "--example", name])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building example {name} failed: {status}");
    profile_dir.join("examples").join(name)
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `add_server` with `args` and `env`, and returns it with the first line it prints.
fn start_server(args: &[&str], env: (&str, &str)) -> (Server, String) {
    let mut child = Command::new(example("smol_add_server"))
        .args(args)
        .env(env.0, env.1)
        .stdout(Stdio::piped())
        .spawn()
        .expect("add_server starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("add_server prints where it serves");
    (server, line)
}

/// Runs `add_client` with `args` and `env`; returns what it printed.
fn run_client(args: &[&str], env: (&str, &str)) -> String {
    let out = Command::new(example("smol_add_client"))
        .args(args)
        .env(env.0, env.1)
        .output()
        .expect("add_client runs");
    assert!(out.status.success(), "add_client failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn add_over_tcp() {
    let (_server, line) = start_server(&[], ("XRPC_ADDR", "127.0.0.1:0"));
    let addr = line
        .trim()
        .strip_prefix("serving add on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert_eq!(run_client(&[], ("XRPC_ADDR", addr)), "1 + 2 = 3\n");
}

#[test]
fn add_over_shared_memory() {
    let name = unique_name("add_smol");
    let (_server, line) = start_server(&["--shm"], ("XRPC_SERVICE", &name));
    assert!(line.contains(&name), "{line}");
    assert_eq!(
        run_client(&["--shm"], ("XRPC_SERVICE", &name)),
        "1 + 2 = 3\n"
    );
}
