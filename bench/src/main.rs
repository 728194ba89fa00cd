//! `strata-bench`: Strata's benchmarks, a binary beside the `strata` CLI as
//! redis-benchmark is beside redis-server. Each bench runs the real master and agents
//! (the libraries) in this process and prints `name: value unit` lines.
//!
//! ```text
//! strata-bench [--agents N --tasks N]  launch throughput and latency, fake agents (launch.rs)
//!   [--secure]                         the same with TLS, agent certificates, credentials
//! strata-bench failover [--secure]     master restart under 10,000 agents (failover/)
//! strata-bench security                launch and failover, insecure beside secure (security.rs)
//! strata-bench outage                  real agents back after a long master outage (outage.rs)
//! strata-bench docker                  Docker launches against `docker run -d` (docker.rs)
//! strata-bench apps                    app deploys against Swarm and the floor (apps.rs)
//! strata-bench stall                   the driver's stall from the largest requests (stall/)
//! strata-bench proxy                   service proxy vs direct and HAProxy (services/proxy.rs)
//! strata-bench propagation             kill to out of every agent's proxy (services/propagation.rs)
//! strata-bench objects                 launches with configs and secrets vs without (objects.rs)
//! strata-bench disk                    disk isolation (du every 1s) vs off, 200 tasks (disk.rs)
//! strata-bench dashboard               the web dashboard's first paint in Chromium, and the
//!                                      master's CPU with 10 dashboards open (dashboard.rs)
//!   --record [--note TEXT]             then append the figure to bench/HISTORY.md (record.rs)
//! ```

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

/// mimalloc, as in `strata` and `strata-master`: the master in this process allocates
/// and frees on every worker thread, and glibc's arena locks were a quarter of the CPU
/// time of a 10,000-agent re-registration storm (`strata-bench failover`: 3.3 s with
/// glibc, 1.6 s with this).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod apps;
mod cluster;
mod dashboard;
mod disk;
mod docker;
mod engine;
mod failover;
mod framework;
mod launch;
mod objects;
mod outage;
mod real_agent;
mod record;
mod rlimit;
mod secure;
mod security;
mod services;
mod stall;
mod stats;

#[derive(Parser)]
#[command(
    name = "strata-bench",
    version,
    about = "Strata's benchmarks. Without a command: launch throughput and latency of a master, fake agents and a framework in one process"
)]
struct Cli {
    #[command(flatten)]
    launch: launch::LaunchArgs,
    #[command(flatten)]
    record: record::RecordArgs,
    #[command(subcommand)]
    kind: Option<Kind>,
}

/// Other benchmarks than the default launch run.
#[derive(Subcommand)]
enum Kind {
    /// Docker task launches (one at a time, and many at once) against bare `docker run -d`.
    Docker(docker::DockerBenchArgs),
    /// Deploying N instances with `strata app deploy --wait`, beside Docker Swarm and
    /// the engine's own `docker run -d` floor.
    Apps(apps::AppsBenchArgs),
    /// Master failover at scale: N simulated agents with T tasks re-register after a
    /// master restart; time until all are back.
    Failover(failover::FailoverBenchArgs),
    /// Real agents (default backoff) after the master was away for `--outage`: time
    /// until all are registered again.
    Outage(outage::OutageArgs),
    /// How long the largest request the limits allow (of each kind: ACCEPT, DECLINE,
    /// SUBSCRIBE, UpdateWeights, RECONCILE) keeps the master's driver busy, as a
    /// concurrent cheap call sees it; goal under 10 ms.
    Stall(stall::StallArgs),
    /// The cost of TLS and authorization: launch runs insecure and secure alternately,
    /// and a failover run of each, in one invocation; the medians side by side and the
    /// ratios secure/insecure (goal: within 10%).
    Security(security::SecurityArgs),
    /// The service proxy's throughput and latency (HTTP/1.1, keep-alive and a
    /// connection per request) against a direct connection to one backend and against
    /// HAProxy (`mode tcp`, `balance leastconn`) with the same backends, alternated in
    /// one run; goal: added p50 no worse than HAProxy's, throughput at least 0.9x.
    Proxy(services::proxy::ProxyBenchArgs),
    /// From a task's kill to its removal from the service proxy of every agent (3
    /// in-process agents); goal p99 under 100 ms.
    Propagation(services::propagation::PropagationArgs),
    /// What configs and secrets cost at launch: one real agent (process containerizer),
    /// tasks launched in batches without objects (`plain`) and with two secrets (a file
    /// on the task's tmpfs, a variable) and a config file each (`objects`), alternating;
    /// launch latency p50/p99 and throughput per mode and the ratios objects/plain.
    /// Needs root.
    Objects(objects::ObjectsBenchArgs),
    /// What disk isolation costs: one real agent (process containerizer) with 200
    /// tasks that each wrote 50 small files, measured every `--interval` (1s), against
    /// an agent with disk isolation off (`--container-disk-watch-interval 0`); launch
    /// latency p50/p99 and CPU over a steady window per mode. Needs root.
    Disk(disk::DiskBenchArgs),
    /// The master's web dashboard (issue 18) with N simulated agents and T tasks (as
    /// `failover --master-process`): first contentful paint of the overview, the task
    /// list and last pages in headless Chromium (goal under 1 s), and the master's
    /// extra CPU while 10 overview dashboards are open (goal under 5% of a core).
    Dashboard(dashboard::DashboardArgs),
    /// The proxy bench's service proxy as a process of its own (started by
    /// `strata-bench proxy`; not for direct use).
    #[command(hide = true)]
    ProxyChild(services::proxy::ChildArgs),
    /// The failover bench's master as a process of its own (started by
    /// `strata-bench failover --master-process` or `--secure`; not for direct use).
    #[command(hide = true)]
    FailoverMaster(failover::master::ChildArgs),
}

/// What a bench run ends with.
pub struct Outcome {
    /// The process's exit code (non-zero: the run measured, but something failed).
    pub code: u8,
    /// The headline figure, for `--record`.
    pub figure: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = strata_logging::init_logging(strata_logging::LogFormat::Text, "warn") {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let (bench, result) = runtime.block_on(async move {
        match cli.kind {
            None => ("launch", launch::launch(cli.launch).await),
            Some(Kind::Docker(args)) => ("docker", docker::bench_docker(args).await),
            Some(Kind::Apps(args)) => ("apps", apps::bench_apps(args).await),
            Some(Kind::Failover(args)) => ("failover", failover::bench_failover(args).await),
            Some(Kind::Outage(args)) => ("outage", outage::bench_outage(args).await),
            Some(Kind::Stall(args)) => ("stall", stall::bench_stall(args).await),
            Some(Kind::Security(args)) => ("security", security::bench_security(args).await),
            Some(Kind::Proxy(args)) => ("proxy", services::proxy::bench_proxy(args).await),
            Some(Kind::Propagation(args)) => (
                "propagation",
                services::propagation::bench_propagation(args).await,
            ),
            Some(Kind::Objects(args)) => ("objects", objects::bench_objects(args).await),
            Some(Kind::Disk(args)) => ("disk", disk::bench_disk(args).await),
            Some(Kind::Dashboard(args)) => ("dashboard", dashboard::bench_dashboard(args).await),
            Some(Kind::ProxyChild(args)) => ("proxy-child", services::proxy::run_child(args).await),
            Some(Kind::FailoverMaster(args)) => {
                ("failover-master", failover::master::run_child(args).await)
            }
        }
    });
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(1);
        }
    };
    if cli.record.record {
        if outcome.code != 0 {
            eprintln!(
                "bench: not recorded: the run failed (exit code {})",
                outcome.code
            );
        } else {
            let history = cli.record.history_file();
            let row =
                record::Row::now(bench, &outcome.figure, &history, cli.record.note.as_deref());
            match record::append(&history, &row) {
                Ok(()) => eprintln!(
                    "bench: recorded in {}: {}",
                    history.display(),
                    row.to_markdown()
                ),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return std::process::ExitCode::from(1);
                }
            }
        }
    }
    std::process::ExitCode::from(outcome.code)
}
