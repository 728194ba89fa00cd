//! `strata`: the command-line entry point (run one task, a local cluster, benchmarks).

use clap::{Parser, Subcommand};

mod bench;
mod bench_docker;
mod local;
mod run;

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Strata: a two-level cluster manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Launch one task and follow it to the end (Strata's mesos-execute).
    Run(run::RunArgs),
    /// Run a master and two agents on this machine.
    Local(local::LocalArgs),
    /// Measure launch throughput and latency: master, fake agents and a framework in one process.
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Local(args) => local::local(args).await,
            Command::Bench(args) => bench::bench(args).await,
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
