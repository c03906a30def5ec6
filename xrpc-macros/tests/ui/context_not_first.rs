use xrpc_tokio::CallContext;

#[xrpc_tokio::service]
pub trait Calculator {
    async fn add(&self, a: i64, ctx: &CallContext) -> i64;
}

fn main() {}
