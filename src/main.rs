//! `strata`: the command-line entry point (run one task, a local cluster, the container
//! framework and its CLI). The benchmarks are the `strata-bench` binary (`bench/`).

use clap::{Parser, Subcommand};
use strata_logging::{LogFormat, init_logging};

/// mimalloc instead of glibc's malloc: the master's gRPC streams allocate and free on
/// every worker thread, and glibc's arena locks were a quarter of the CPU time of a
/// 10,000-agent re-registration storm (`strata-bench failover`, perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod app;
mod cli;
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
    /// Log lines on stderr: `text` (coloured on a terminal only) or `json` (one object
    /// per line). `RUST_LOG` sets the level (default warn).
    #[arg(long, global = true, value_enum, env = "STRATA_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Launch one task and follow it to the end (Strata's mesos-execute).
    Run(run::RunArgs),
    /// Run a master and two agents on this machine.
    Local(local::LocalArgs),
    /// Run the container framework: keep apps running, serve the App API.
    Serve(app::serve::ServeArgs),
    /// Deploy, inspect, scale, restart and remove apps (the container framework).
    App(cli::AppArgs),
    /// List the apps' service ports and the instances behind them.
    Service(cli::ServiceArgs),
    /// List tasks, read their logs, kill them.
    Task(cli::TaskArgs),
    /// List the cluster's agents (from the master).
    Agent(cli::AgentArgs),
    /// List the frameworks registered with the master.
    Framework(cli::FrameworkArgs),
    /// Create, update, list and remove secrets (the master's; values never shown).
    Secret(cli::SecretArgs),
    /// Create, update, list, show and remove configs (the master's).
    Config(cli::ConfigArgs),
    /// List, create and destroy persistent volumes (the master's).
    Volume(cli::VolumeArgs),
    /// Print the cluster's changes (tasks, agents, frameworks) as the master sees them.
    Events(cli::events::EventsArgs),
    /// Print a shell completion script, e.g. `strata completions bash > /etc/bash_completion.d/strata`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.log_format, "warn") {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(1);
    }
    // `strata local` runs a master and agents in this process, and secrets pass
    // through them (issue 16): no core dump may hold them.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot make the process non-dumpable; a core dump could hold secrets");
    }
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
            Command::Serve(args) => app::serve::serve(args).await,
            Command::App(args) => args.run().await,
            Command::Service(args) => args.run().await,
            Command::Task(args) => args.run().await,
            Command::Agent(args) => args.run().await,
            Command::Framework(args) => args.run().await,
            Command::Secret(args) => args.run().await,
            Command::Config(args) => args.run().await,
            Command::Volume(args) => args.run().await,
            Command::Events(args) => args.run().await,
            Command::Completions { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "strata",
                    &mut std::io::stdout(),
                );
                Ok(0)
            }
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
