//! ipc-channel 0.23 (servo's): typed `IpcSender<Msg>` / `IpcReceiver<Msg>` pairs (bincode
//! over a Unix socket per channel) for calls, `IpcBytesSender` for one-way bytes. Both ends in
//! this process, on two threads: the channels are the same as between processes.

use ipc_channel::ipc::{self, IpcReceiver, IpcSender};

use super::baseline::join_or_leave;
use super::{Group, Msg, Outcome, Skip, Subject, check_echo};
use crate::measure::{Recorder, Span};

/// The rows of this module.
pub fn rows() -> Vec<Box<dyn Subject>> {
    vec![Box::new(IpcChannel)]
}

struct IpcChannel;

/// A client's ends and the echo thread behind them.
type EchoPair = (
    IpcSender<Msg>,
    IpcReceiver<Msg>,
    std::thread::JoinHandle<()>,
);

fn echo_pair() -> Result<EchoPair, Skip> {
    let (req_tx, req_rx) = ipc::channel::<Msg>()?;
    let (resp_tx, resp_rx) = ipc::channel::<Msg>()?;
    let server = std::thread::spawn(move || {
        while let Ok(m) = req_rx.recv() {
            if resp_tx.send(m).is_err() {
                break;
            }
        }
    });
    Ok((req_tx, resp_rx, server))
}

impl Subject for IpcChannel {
    fn name(&self) -> String {
        "ipc-channel · unix socket (threads)".into()
    }
    fn group(&self) -> Group {
        Group::Peer
    }
    fn round_trips(&self, rec: Recorder) -> Outcome {
        let (tx, rx, server) = echo_pair()?;
        let m = rec.run(|i| {
            tx.send(Msg::new(i)).expect("ipc-channel send");
            let r = rx.recv().expect("ipc-channel recv");
            check_echo(i as u64, r.seq);
        });
        drop((tx, rx));
        join_or_leave(server, "ipc-channel server");
        Ok(m)
    }
    fn in_flight(&self, k: usize, calls: usize) -> Outcome {
        let (tx, rx, server) = echo_pair()?;
        let span = Span::start();
        let mut sent = 0;
        while sent < k.min(calls) {
            tx.send(Msg::new(sent))?;
            sent += 1;
        }
        for i in 0..calls {
            check_echo(i as u64, rx.recv()?.seq);
            if sent < calls {
                tx.send(Msg::new(sent))?;
                sent += 1;
            }
        }
        let m = span.finish(calls as u64);
        drop((tx, rx));
        join_or_leave(server, "ipc-channel server");
        Ok(m)
    }
    fn one_way(&self, size: usize, count: usize) -> Outcome {
        let (tx, rx) = ipc::bytes_channel()?;
        let (ack_tx, ack_rx) = ipc::channel::<u8>()?;
        let receiver = std::thread::spawn(move || -> Result<(), Skip> {
            for _ in 0..count {
                rx.recv()?;
            }
            ack_tx.send(1)?;
            Ok(())
        });
        let msg = vec![0xabu8; size];
        let span = Span::start();
        for _ in 0..count {
            tx.send(&msg)?;
        }
        ack_rx.recv()?;
        let m = span.finish(count as u64);
        join_or_leave(receiver, "ipc-channel receiver").transpose()?;
        Ok(m)
    }
}
