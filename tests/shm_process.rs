//! RPC over shared memory between two real processes: the test binary re-runs itself as the
//! server, then the client calls it, and the server is killed with SIGKILL mid-call.

use std::time::{Duration, Instant};

use xrpc::{
    MessageChannelAdapter, RpcClient, RpcError, RpcServer, SharedMemoryConfig,
    SharedMemoryFrameTransport, SharedMemoryFrameTransportListener,
};
use xrpc_shm::testing::{Peer, peer_role, unique_name};

/// In the child: serve until killed.
fn run_server(service: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = RpcServer::new();
        server.register_typed("add", |(a, b): (i64, i64)| async move { Ok(a + b) });
        server.register_typed("hang", |_: ()| async move {
            std::future::pending::<()>().await;
            Ok(())
        });
        let listener =
            SharedMemoryFrameTransportListener::bind(service, SharedMemoryConfig::default())
                .unwrap();
        println!("ready");
        server.serve_listener(listener).await.unwrap();
    });
}

/// This test binary, re-run as the server of `service`, once it is ready.
fn spawn_server(test: &str, service: &str) -> Peer {
    let mut server = Peer::spawn(test, "server", service);
    server.wait_for_line("ready");
    server
}

async fn connect(service: &str) -> RpcClient<MessageChannelAdapter<SharedMemoryFrameTransport>> {
    let t = SharedMemoryFrameTransport::connect(service, SharedMemoryConfig::default())
        .await
        .unwrap();
    let client = RpcClient::new(MessageChannelAdapter::new(t));
    let _ = client.start();
    client
}

#[test]
fn kill_9_of_the_server_fails_pending_calls_fast() {
    if let Some((_, service)) = peer_role() {
        return run_server(&service);
    }
    let service = unique_name("kill");
    let mut server = spawn_server("kill_9_of_the_server_fails_pending_calls_fast", &service);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Several clients, each on its own segment.
        let mut clients = Vec::new();
        for _ in 0..8 {
            clients.push(connect(&service).await);
        }
        for (i, c) in clients.iter().enumerate() {
            let v: i64 = c.call("add", &(i as i64, 1i64)).await.unwrap();
            assert_eq!(v, i as i64 + 1);
        }
        let pending: Vec<_> = clients
            .iter()
            .map(|c| {
                let c = c.clone();
                tokio::spawn(async move { c.call::<_, ()>("hang", &()).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        server.kill(); // SIGKILL
        for p in pending {
            let r = p.await.unwrap();
            assert!(matches!(r, Err(RpcError::Disconnected(_))), "{r:?}");
        }
        let took = t0.elapsed();
        println!("all 8 pending calls failed {took:?} after SIGKILL");
        assert!(took < Duration::from_millis(500), "took {took:?}");
        let r = clients[0].call::<_, i64>("add", &(1i64, 1i64)).await;
        assert!(matches!(r, Err(RpcError::Disconnected(_))), "{r:?}");
    });
}

#[test]
fn a_restarted_server_reuses_the_name() {
    if let Some((_, service)) = peer_role() {
        return run_server(&service);
    }
    let service = unique_name("restart");
    let rt = tokio::runtime::Runtime::new().unwrap();
    for round in 0..2 {
        // Nothing of the killed server blocks the next one from binding the same name.
        let mut server = spawn_server("a_restarted_server_reuses_the_name", &service);
        rt.block_on(async {
            let c = connect(&service).await;
            let v: i64 = c.call("add", &(round, 40i64)).await.unwrap();
            assert_eq!(v, round + 40);
        });
        server.kill();
    }
}
