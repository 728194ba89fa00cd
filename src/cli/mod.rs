//! The `strata` commands of the container framework: `app`, `service`, `task`, `agent`,
//! `framework`, `secret`, `config` and `volume`, talking to the App API (`strata serve`,
//! [`client`]) and to the master's operator gRPC API ([`master_client`]).
//!
//! ```text
//!   app.rs ───────────▶ client.rs (App API, HTTP), task.rs (its task table)
//!   task.rs ──────────▶ client.rs, master_client.rs
//!   cluster.rs ───────▶ master_client.rs (operator API, gRPC)
//!   objects.rs ───────▶ master_client.rs (`strata secret`, `strata config`)
//!   volumes.rs ───────▶ master_client.rs (`strata volume`), the SDK's ops (volumes)
//!   task.rs ──────────▶ the SDK's SandboxClient (task output, from the agents)
//!   every command ────▶ config.rs (flags, environment, the CLI config: where the
//!                       servers are, the cluster CA, the credential)
//! ```
//!
//! Each command group is an [`clap::Args`] struct holding the [`Global`] flags and a
//! subcommand, e.g. `Command::App(cli::AppArgs)` in the top-level enum, run with
//! `args.run().await` (an exit code). `Global` is flattened per group rather than at
//! the top, so its `--master` does not clash with `strata run --master`.

pub mod app;
pub mod client;
pub mod cluster;
pub mod config;
pub mod events;
pub mod master_client;
pub mod objects;
pub mod output;
pub mod service;
pub mod task;
pub mod volumes;

pub use app::AppCommand;
pub use client::{ApiClient, ApiError};
pub use cluster::{AgentCommand, FrameworkCommand};
pub use config::{Choices, ConfigError, Settings};
pub use master_client::MasterClient;
pub use objects::{ConfigCommand, SecretCommand};
pub use output::Output;
pub use service::ServiceCommand;
use strata_framework_sdk::{SandboxClient, SdkError};
pub use task::TaskCommand;
pub use volumes::VolumeCommand;

/// Flags every command of these groups takes, before or after the subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// The App API server (`strata serve`), host:port. Default: the CLI config's
    /// `apps`, else 127.0.0.1:8080.
    #[arg(long, global = true, env = "STRATA_SERVER", value_name = "ADDR")]
    pub server: Option<String>,
    /// The master (its operator gRPC API), for `agent`, `framework` and `volume` commands and
    /// for the logs of a task the app server no longer knows; host:port. Default: the
    /// CLI config's `master`, else 127.0.0.1:5050.
    #[arg(long, global = true, env = "STRATA_MASTER", value_name = "ADDR")]
    pub master: Option<String>,
    /// The CLI config (JSON: master, apps, ca_file, principal, secret). Default:
    /// $XDG_CONFIG_HOME/strata/config.json, else ~/.config/strata/config.json
    /// (`strata local` writes it).
    #[arg(long, global = true, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Plain text and no credential, for a cluster started with --insecure (never
    /// for a real one: anyone on the network can read and change what is sent).
    #[arg(
        long,
        global = true,
        env = "STRATA_INSECURE",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub insecure: bool,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl Global {
    /// Where the servers are and how to talk to them: the flags, the environment, the
    /// CLI config, the defaults.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let choices = Choices {
            master: self.master.clone(),
            apps: self.server.clone(),
            insecure: self.insecure,
            config: self.config.clone(),
        };
        Settings::resolve(&choices, &config::process_env)
    }

    /// A client of the App API.
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        Ok(self.settings()?.apps_client()?)
    }

    /// A client of the master's operator API.
    pub fn master_client(&self) -> anyhow::Result<MasterClient> {
        Ok(self.settings()?.master_client())
    }
}

impl Settings {
    /// A client of the App API at `apps`.
    pub fn apps_client(&self) -> Result<ApiClient, ApiError> {
        ApiClient::with_tls(&self.apps, &self.tls)
    }

    /// A client of the master's operator API at `master`.
    pub fn master_client(&self) -> MasterClient {
        MasterClient::with_tls(&self.master, self.tls.clone())
    }

    /// A reader of task files on the agents (https by their address with TLS).
    pub fn sandbox_client(&self) -> Result<SandboxClient, SdkError> {
        SandboxClient::with_tls(&self.tls)
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

/// `strata service ...`: the apps' service ports and the instances behind them.
#[derive(clap::Args, Debug, Clone)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: ServiceCommand,
}

impl ServiceArgs {
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

/// `strata secret ...`: the master's secrets (values never shown).
#[derive(clap::Args, Debug, Clone)]
pub struct SecretArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: SecretCommand,
}

impl SecretArgs {
    pub async fn run(self) -> anyhow::Result<u8> {
        self.command.run(&self.global).await
    }
}

/// `strata config ...`: the master's configs.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: ConfigCommand,
}

impl ConfigArgs {
    pub async fn run(self) -> anyhow::Result<u8> {
        self.command.run(&self.global).await
    }
}

/// `strata volume ...`: the cluster's persistent volumes.
#[derive(clap::Args, Debug, Clone)]
pub struct VolumeArgs {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: VolumeCommand,
}

impl VolumeArgs {
    pub async fn run(self) -> anyhow::Result<u8> {
        self.command.run(&self.global).await
    }
}
