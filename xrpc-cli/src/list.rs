//! `xrpc list`: the services in this user's registry (shared memory and Unix sockets), each with
//! whether it answers a ping within a short timeout. Entries of processes that are gone are
//! removed as they are seen.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::Value;
use xrpc_proto::introspect;
use xrpc_tokio::RpcError;
use xrpc_tokio::registry;

use crate::{Client, Failure, Options, Style, Target};

/// How long a listed service has to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);

/// What a listed service did.
fn probe_status(res: &Result<Duration, String>) -> (&'static str, String) {
    match res {
        Ok(rtt) => ("answers", format!("{:.0} µs", rtt.as_secs_f64() * 1e6)),
        Err(e) => ("not answering", e.clone()),
    }
}

async fn probe(target: &Target, o: &Options) -> Result<Duration, String> {
    let short = Options {
        timeout: o.timeout.min(ANSWER_TIMEOUT),
        json: o.json,
        ca: None,
        server_name: None,
        count: None,
        interval: o.interval,
        words: Vec::new(),
    };
    let client = Client::connect(target, &short)
        .await
        .map_err(|f| f.message)?;
    let start = Instant::now();
    match client
        .call(introspect::PING, &Value::Null, short.timeout)
        .await
    {
        // Any answer of the server is an answer (an error too: no JSON, introspection off).
        Ok(_)
        | Err(
            RpcError::ServerError { .. } | RpcError::MethodNotFound(_) | RpcError::Decode { .. },
        ) => Ok(start.elapsed()),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) async fn run(o: &Options, style: &Style) -> Result<(), Failure> {
    let dir = registry::dir();
    let entries = registry::entries().map_err(|e| Failure {
        code: 1,
        message: format!("cannot read the registry {}: {e}", dir.display()),
    })?;
    let progress = std::io::stderr().is_terminal() && !o.json;
    let mut rows = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if progress {
            eprint!("\rprobing {}/{} …", i + 1, entries.len());
            let _ = std::io::stderr().flush();
        }
        if registry::prune(e) {
            rows.push((e, ("gone", "process exited; entry removed".to_string())));
            continue;
        }
        let status = match Target::parse(&e.target) {
            Ok(t) => probe_status(&probe(&t, o).await),
            Err(f) => ("not answering", f.message),
        };
        rows.push((e, status));
    }
    if progress {
        eprint!("\r\x1b[K");
    }
    if o.json {
        let v: Vec<Value> = rows
            .iter()
            .map(|(e, (status, detail))| {
                serde_json::json!({
                    "target": e.target, "pid": e.pid, "status": status, "detail": detail,
                })
            })
            .collect();
        crate::print_json(&v, false);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no services registered in {}", dir.display());
        return Ok(());
    }
    println!(
        "{}",
        style.bold(&format!(
            "{:<48} {:>8}  {:<14} detail",
            "target", "pid", "status"
        ))
    );
    for (e, (status, detail)) in rows {
        let padded = format!("{status:<14}");
        let painted = if status == "answers" {
            style.green(&padded)
        } else {
            style.red(&padded)
        };
        println!("{:<48} {:>8}  {painted} {detail}", e.target, e.pid);
    }
    Ok(())
}
