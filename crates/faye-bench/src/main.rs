//! `faye-bench`: load a Bayeux server on this machine and report deliveries/s,
//! latency percentiles, loss and the server's memory and CPU.

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    faye_bench::main(faye_bench::Cli::parse()).await
}
