//! ipc-channel 0.23 (servo's) between two processes, as its own cross-process tests set it up:
//! the row's process opens an `IpcOneShotServer`, starts the server process (this binary
//! re-executed with `--serve-ipc-channel <token>`), which connects to it and sends the ends of
//! its channels over it. Calls are typed `IpcSender<Msg>` / `IpcReceiver<Msg>` pairs (bincode
//! over a Unix socket per channel, blocking receives); one-way bytes go over an
//! `IpcBytesSender`, announced by their count.

use ipc_channel::ipc::{self, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender};

use super::{Group, Msg, Outcome, Skip, Subject, check_echo, one_way_laps};
use crate::measure::{Recorder, Span, other_process_cpu};
use crate::process::{ServerProcess, on_parent_gone};

/// The argument that turns this binary into the ipc-channel server.
pub const SERVE_ARG: &str = "--serve-ipc-channel";

/// The rows of this module.
pub fn rows() -> Vec<Box<dyn Subject>> {
    vec![Box::new(IpcChannel)]
}

struct IpcChannel;

/// What the server process hands the client: requests in, answers out, a count of one-way
/// messages, the one-way messages, and the server's acknowledgement of them.
type Ends = (
    IpcSender<Msg>,
    IpcReceiver<Msg>,
    IpcSender<u64>,
    IpcBytesSender,
    IpcReceiver<u8>,
);

/// The server process (`args`: the one-shot server's token): echoes every request, and
/// acknowledges each announced run of one-way messages once it has them all.
pub fn serve(args: &[String]) -> Result<(), Skip> {
    on_parent_gone(|| std::process::exit(0));
    let token = args.first().ok_or("no token")?.clone();
    let (req_tx, req_rx) = ipc::channel::<Msg>()?;
    let (resp_tx, resp_rx) = ipc::channel::<Msg>()?;
    let (count_tx, count_rx) = ipc::channel::<u64>()?;
    let (bytes_tx, bytes_rx) = ipc::bytes_channel()?;
    let (ack_tx, ack_rx) = ipc::channel::<u8>()?;
    IpcSender::<Ends>::connect(token)?.send((req_tx, resp_rx, count_tx, bytes_tx, ack_rx))?;
    println!("ready");
    std::thread::spawn(move || {
        while let Ok(n) = count_rx.recv() {
            for _ in 0..n {
                if bytes_rx.recv().is_err() {
                    return;
                }
            }
            if ack_tx.send(1).is_err() {
                return;
            }
        }
    });
    while let Ok(m) = req_rx.recv() {
        if resp_tx.send(m).is_err() {
            break;
        }
    }
    Ok(())
}

/// A server process and the client's ends of its channels.
pub struct Session {
    /// Requests to the server.
    pub tx: IpcSender<Msg>,
    /// Its answers.
    pub rx: IpcReceiver<Msg>,
    count: IpcSender<u64>,
    bytes: IpcBytesSender,
    ack: IpcReceiver<u8>,
    server: ServerProcess,
}

impl Session {
    /// Starts a server process and takes its channels.
    pub fn start() -> Result<Self, Skip> {
        let (boot, token) = IpcOneShotServer::<Ends>::new()?;
        let server = ServerProcess::start(&[SERVE_ARG, &token])?;
        let (_, (tx, rx, count, bytes, ack)) = boot.accept()?;
        Ok(Session {
            tx,
            rx,
            count,
            bytes,
            ack,
            server,
        })
    }

    /// One call.
    pub fn call(&self, i: usize) -> Result<Msg, Skip> {
        self.tx.send(Msg::new(i))?;
        Ok(self.rx.recv()?)
    }

    fn server_cpu(&self) -> std::time::Duration {
        other_process_cpu(self.server.id()).unwrap_or_default()
    }
}

impl Subject for IpcChannel {
    fn name(&self) -> String {
        "ipc-channel · unix socket (2 processes)".into()
    }
    fn group(&self) -> Group {
        Group::Peer
    }
    fn alone_program(&self) -> Option<&'static str> {
        Some("ipc-channel")
    }
    fn round_trips(&self, rec: Recorder) -> Outcome {
        let s = Session::start()?;
        let cpu0 = s.server_cpu();
        let mut m = rec.run(|i| {
            let r = s.call(i).expect("ipc-channel call");
            check_echo(i as u64, r.seq);
        });
        m.cpu += s.server_cpu().saturating_sub(cpu0);
        Ok(m)
    }
    fn in_flight(&self, k: usize, calls: usize) -> Outcome {
        let s = Session::start()?;
        s.call(0)?;
        let cpu0 = s.server_cpu();
        let span = Span::start();
        let mut sent = 0;
        while sent < k.min(calls) {
            s.tx.send(Msg::new(sent))?;
            sent += 1;
        }
        for i in 0..calls {
            check_echo(i as u64, s.rx.recv()?.seq);
            if sent < calls {
                s.tx.send(Msg::new(sent))?;
                sent += 1;
            }
        }
        let mut m = span.finish(calls as u64);
        m.cpu += s.server_cpu().saturating_sub(cpu0);
        Ok(m)
    }
    fn one_way(&self, size: usize, count: usize) -> Outcome {
        let s = Session::start()?;
        let msg = vec![0xabu8; size];
        one_way_laps(count, || {
            s.count.send(count as u64)?;
            for _ in 0..count {
                s.bytes.send(&msg)?;
            }
            s.ack.recv()?;
            Ok(())
        })
    }
}
