use xrpc_tokio::ServerStreamSender;

#[xrpc_tokio::service]
pub trait Ticker {
    async fn ticks(&self, n: u32, out: ServerStreamSender<u64>) -> u32;
}

fn main() {}
