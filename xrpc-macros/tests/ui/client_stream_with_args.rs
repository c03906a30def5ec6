use xrpc_tokio::{RequestStream, RpcError};

#[xrpc_tokio::service]
pub trait Summer {
    async fn sum(&self, start: i64, items: RequestStream<i64>) -> Result<i64, RpcError>;
}

fn main() {}
