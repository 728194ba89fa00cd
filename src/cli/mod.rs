//! The `strata` commands of the container framework: `app`, `task`, `agent` and
//! `framework`, talking to the App API (`strata serve`, [`client`]) and to the master's
//! operator gRPC API ([`master_client`]).
//!
//! ```text
//!   app.rs ───────────▶ client.rs (App API, HTTP), task.rs (its task table)
//!   task.rs ──────────▶ client.rs, master_client.rs
//!   cluster.rs ───────▶ master_client.rs (operator API, gRPC)
//! ```
//!
//! Each command group is an [`clap::Args`] struct holding the [`Global`] flags and a
//! subcommand, e.g. `Command::App(cli::AppArgs)` in the top-level enum, run with
//! `args.run().await` (an exit code). `Global` is flattened per group rather than at
//! the top, so its `--master` does not clash with `strata run --master`.

pub mod app;
pub mod client;
pub mod cluster;
pub mod master_client;
pub mod output;
pub mod task;

pub use app::AppCommand;
pub use client::ApiClient;
pub use cluster::{AgentCommand, FrameworkCommand};
pub use master_client::MasterClient;
pub use output::Output;
pub use task::TaskCommand;

/// Flags every command of these groups takes, before or after the subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// The App API server (`strata serve`), host:port or http://host:port.
    #[arg(
        long,
        global = true,
        env = "STRATA_SERVER",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub server: String,
    /// The master (its operator gRPC API), for `agent` and `framework` commands and
    /// for the logs of a task the app server no longer knows; host:port or
    /// http://host:port.
    #[arg(
        long,
        global = true,
        env = "STRATA_MASTER",
        default_value = "127.0.0.1:5050",
        value_name = "ADDR"
    )]
    pub master: String,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl Global {
    /// A client of the App API at `--server`.
    pub fn client(&self) -> ApiClient {
        ApiClient::new(&self.server)
    }

    /// A client of the master's operator API at `--master`.
    pub fn master_client(&self) -> MasterClient {
        MasterClient::new(&self.master)
    }
}

/// `strata app ...`: deploy, list, show, scale, restart and remove apps.
#[derive(clap::Args, Debug, Clone)]
pub struct AppArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: AppCommand,
}

impl AppArgs {
    pub async fn run(self) -> anyhow::Result<u8> {
        self.command.run(&self.global).await
    }
}

/// `strata task ...`: list tasks, read their output, kill them.
#[derive(clap::Args, Debug, Clone)]
pub struct TaskArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: TaskCommand,
}

impl TaskArgs {
    pub async fn run(self) -> anyhow::Result<u8> {
        self.command.run(&self.global).await
    }
}

/// `strata agent ...`: the agents the master knows.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: AgentCommand,
}

impl AgentArgs {
    pub async fn run(self) -> anyhow::Result<u8> {
        self.command.run(&self.global).await
    }
}

/// `strata framework ...`: the frameworks registered with the master.
#[derive(clap::Args, Debug, Clone)]
pub struct FrameworkArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: FrameworkCommand,
}

impl FrameworkArgs {
    pub async fn run(self) -> anyhow::Result<u8> {
        self.command.run(&self.global).await
    }
}
