#[xrpc_tokio::service]
pub trait Calculator {
    async fn add<T>(&self, a: T, b: T) -> i64;
}

fn main() {}
