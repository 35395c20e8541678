//! `faye-bench`: load a Bayeux server on this machine and report deliveries/s,
//! latency percentiles, loss and the server's memory and CPU.

use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = faye_bench::Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.threads() {
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build()?.block_on(faye_bench::main(cli))
}
