//! `strata-agent`: parses flags, checks them before anything starts (exit 2 with a
//! clear message when they are wrong), binds the HTTP listener, prints
//! `strata-agent listening on ADDR`, and runs the agent until SIGINT or SIGTERM (stop;
//! the tasks keep running and the next run recovers them) or SIGUSR1 (kill the tasks,
//! then stop).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use strata_agent::{
    AgentOptions, ContainerizerConfig, DockerOptions, Shutdown, config, resolve_resources,
};
use strata_logging::{LogFormat, init_logging};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ContainerizerKind {
    /// Real processes, one process group per task.
    Process,
    /// Runs nothing; tasks finish after --fake-task-duration. For scale runs only.
    Fake,
    /// Docker containers on the local engine, for tasks that name an image.
    Docker,
}

#[derive(Debug, Parser)]
#[command(
    name = "strata-agent",
    version,
    about = "Strata agent: runs tasks on this machine for a Strata master"
)]
struct Args {
    /// The master's address, host:port.
    #[arg(long, default_value = "127.0.0.1:5050", value_parser = parse_master)]
    master: String,
    /// Address of the agent's HTTP API (state, sandbox files); port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:5051")]
    listen: String,
    /// Directory for the agent's id, checkpoint and task sandboxes.
    #[arg(long)]
    work_dir: PathBuf,
    /// Resources to offer, e.g. 'cpus:4;mem:4096;disk:10000;ports:[31000-32000]'. Each
    /// resource named replaces the detected one; the others are detected.
    #[arg(long)]
    resources: Option<String>,
    /// Attributes, e.g. 'rack:r1;zone:a'.
    #[arg(long, value_parser = parse_attributes)]
    attributes: Option<Attributes>,
    /// Hostname reported to the master (default: this machine's).
    #[arg(long)]
    hostname: Option<String>,
    /// host:port the master and users reach this agent's HTTP API at (default: the
    /// bound --listen address; hostname:port when listening on 0.0.0.0).
    #[arg(long)]
    advertise_address: Option<String>,
    /// What runs the tasks, comma separated: 'process', 'docker' (tasks with a Docker
    /// image; advertised as the attribute containerizers:process,docker when the engine
    /// answers), 'process,docker', or 'fake' alone. --containerizer is the same flag.
    #[arg(
        long,
        visible_alias = "containerizer",
        value_enum,
        value_delimiter = ',',
        default_value = "process"
    )]
    containerizers: Vec<ContainerizerKind>,
    /// The Docker engine's unix socket (with --containerizers ...docker).
    #[arg(long, default_value = strata_agent::containerizer::docker::DEFAULT_SOCKET)]
    docker_socket: PathBuf,
    /// How long an ended Docker container is kept before the agent removes it.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    docker_remove_delay: Duration,
    /// Host paths Docker tasks' volumes may mount (at or below one of them), comma
    /// separated absolute paths; default: none. '/', the Docker socket and a directory
    /// holding it are refused.
    #[arg(long, value_delimiter = ',')]
    docker_volume_allow: Vec<PathBuf>,
    /// The user tasks run as when neither their command nor their framework names one
    /// (the agent must be root to switch users). '' runs them as the agent's own user.
    #[arg(long, default_value = strata_agent::config::DEFAULT_USER)]
    default_user: String,
    /// With --containerizer fake: how long each task "runs".
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    fake_task_duration: Duration,
    /// First retry interval of an unacknowledged status update; it doubles up to
    /// --status-retry-max.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    status_retry_interval: Duration,
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    status_retry_max: Duration,
    /// Initial registration backoff (random in [0, b], b doubling up to the max).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    registration_backoff: Duration,
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    registration_backoff_max: Duration,
    /// Grace between SIGTERM and SIGKILL for kills whose kill policy names none.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    default_kill_grace: Duration,
    /// Grace given to every task when the agent shuts down.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    executor_shutdown_grace_period: Duration,
    /// How process tasks are isolated: 'auto' (cgroups when they work here, else none),
    /// 'none', or a comma list of 'cgroups' (cpu, memory, pids limits; required: tasks
    /// fail when cgroups cannot be used) and 'pid' (a pid namespace per task).
    #[arg(long, default_value = "auto", value_parser = parse_isolation)]
    isolation: strata_agent::isolation::IsolationMode,
    /// Parent cgroup of every task's cgroup, relative to the hierarchy root.
    #[arg(long, default_value = "strata")]
    cgroups_root: String,
    /// Cap each task's cpu at its cpus with a CFS quota (100 ms period), on top of shares.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    cgroups_enable_cfs: bool,
    /// Most processes and threads per task (the pids controller); default: no limit.
    #[arg(long)]
    cgroups_pids_max: Option<u64>,
    /// Set the kernel's favordynmods on the cgroup2 mount (Linux 6.0+; a host-wide
    /// setting that outlives the agent): task launches never wait 10-25 ms for an RCU
    /// grace period to join their cgroups, at a small cost to every fork and exit.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    cgroups_favor_dynmods: bool,
    /// How often the tasks' resource usage is sent to the master.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    usage_report_interval: Duration,
    /// How long a finished task's sandbox is kept after its last write; sooner as
    /// the disk fills (Mesos' --gc_delay).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    gc_delay: Duration,
    /// Share of the work dir's disk to keep free: the GC delay shrinks to zero as the
    /// disk's use reaches 1 minus this (Mesos' --gc_disk_headroom).
    #[arg(long, default_value_t = 0.1, value_parser = parse_headroom)]
    gc_disk_headroom: f64,
    /// How often the disk is checked, task logs rotated and sandboxes collected.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    disk_watch_interval: Duration,
    /// Disk isolation: how often each running task's disk (its sandbox) is measured,
    /// du-style (Mesos' --container_disk_watch_interval); 0 turns disk isolation off
    /// (neither measured nor enforced). At least 100ms.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    container_disk_watch_interval: Duration,
    /// Kill a task whose disk use exceeds its `disk` resource (TASK_FAILED,
    /// REASON_CONTAINER_LIMITATION_DISK); =false measures and reports only (Mesos'
    /// --enforce_container_disk_quota). A task without `disk` has no limit.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    enforce_container_disk_quota: bool,
    /// A task's stdout or stderr larger than this is rotated (e.g. 10MiB, 500KB); 0
    /// never rotates.
    #[arg(long, default_value = "10MiB", value_parser = parse_size)]
    task_log_max_size: u64,
    /// Rotated copies kept of each task log (stdout.1 ... stdout.N).
    #[arg(long, default_value_t = 2)]
    task_log_keep: u32,
    /// Plain text to the master and on the agent's API, no authentication: only
    /// against a master started with --insecure (development).
    #[arg(long)]
    insecure: bool,
    /// The master's join token (STRATA-JOIN-1-...), for the first start; the agent
    /// keeps the certificate it gets in WORK_DIR/tls/ and renews it.
    #[arg(
        long,
        env = "STRATA_JOIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "join_token_file"
    )]
    join_token: Option<String>,
    /// A file holding the join token (the master's WORK_DIR/tls/join-token).
    #[arg(long)]
    join_token_file: Option<PathBuf>,
    /// The service proxy: `on` (listens on 0.0.0.0), `off`, or the address to listen
    /// on. It serves every service port of the cluster, forwarding to the service's
    /// healthy instances anywhere (the routing mesh).
    #[arg(long, default_value = "on", value_parser = parse_service_proxy)]
    service_proxy: ServiceProxyFlag,
    /// Log lines on stderr: 'text' (coloured on a terminal only) or 'json' (one object
    /// per line). RUST_LOG sets the level (default info).
    #[arg(long, value_enum, env = "STRATA_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn parse_isolation(s: &str) -> Result<strata_agent::isolation::IsolationMode, String> {
    strata_agent::isolation::parse_isolation(s).map_err(|e| e.to_string())
}

/// Attributes as a clap value (clap wants one type per flag).
#[derive(Debug, Clone)]
struct Attributes(Vec<(String, String)>);

fn parse_attributes(s: &str) -> Result<Attributes, String> {
    config::parse_attributes(s)
        .map(Attributes)
        .map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_master(s: &str) -> Result<String, String> {
    config::master_uri(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// The first address `host:port` resolves to.
fn resolve_listen(listen: &str) -> Option<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    listen.to_socket_addrs().ok()?.next()
}

/// A flag that was wrong: exit 2, like clap's own errors.
fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Secrets pass through this process on their way to tasks (issue 16): no core dump
    // may hold them, and no other user may ptrace it. Tasks are exec'd, which makes
    // them dumpable again.
    let dumpable = nix::sys::prctl::set_dumpable(false);

    // Everything a user can get wrong is checked before anything starts.
    if let Err(e) = strata_agent::check_work_dir(&args.work_dir) {
        return usage_error(format!("invalid --work-dir: {e}"));
    }
    let resources = match resolve_resources(args.resources.as_deref(), &args.work_dir) {
        Ok(r) => r,
        Err(e) => return usage_error(format!("invalid --resources: {e}")),
    };
    let Some(listen) = resolve_listen(&args.listen) else {
        return usage_error(format!(
            "invalid --listen '{}': expected host:port, e.g. 127.0.0.1:5051",
            args.listen
        ));
    };

    let has = |k: ContainerizerKind| args.containerizers.contains(&k);
    let containerizer = if has(ContainerizerKind::Fake) {
        if args
            .containerizers
            .iter()
            .any(|k| *k != ContainerizerKind::Fake)
        {
            return usage_error(
                "invalid --containerizers: 'fake' runs nothing and cannot be combined with others",
            );
        }
        ContainerizerConfig::Fake {
            task_duration: args.fake_task_duration,
        }
    } else if has(ContainerizerKind::Docker) {
        ContainerizerConfig::Docker {
            docker: DockerOptions {
                socket: args.docker_socket.clone(),
                remove_delay: args.docker_remove_delay,
                volume_allow: args.docker_volume_allow.clone(),
            },
            process: has(ContainerizerKind::Process),
        }
    } else {
        ContainerizerConfig::Process
    };

    if let ContainerizerConfig::Docker { docker, .. } = &containerizer
        && let Err(e) = docker.check()
    {
        return usage_error(format!("invalid --docker-volume-allow: {e}"));
    }
    if let Err(e) = config::check_default_user(Some(&args.default_user)) {
        return usage_error(e);
    }
    let join_token = match (&args.join_token, &args.join_token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => {
                return usage_error(format!(
                    "cannot read --join-token-file {}: {e}",
                    file.display()
                ));
            }
        },
        (None, None) => None,
    };
    if let Some(token) = &join_token
        && let Err(e) = strata_security::JoinToken::parse(token)
    {
        return usage_error(format!("--join-token: {e}"));
    }

    if let Err(e) = init_logging(args.log_format, "info") {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    if let Err(e) = dumpable {
        tracing::warn!(error = %e, "cannot make the process non-dumpable; a core dump could hold secrets");
    }

    let mut options = AgentOptions::new(args.master, args.work_dir);
    options.resources = resources;
    options.attributes = args.attributes.map(|a| a.0).unwrap_or_default();
    options.hostname = args.hostname;
    options.advertise_address = args.advertise_address;
    options.containerizer = containerizer;
    options.status_retry_interval = args.status_retry_interval;
    options.status_retry_max = args.status_retry_max;
    options.registration_backoff = args.registration_backoff;
    options.registration_backoff_max = args.registration_backoff_max;
    options.default_kill_grace = args.default_kill_grace;
    options.executor_shutdown_grace_period = args.executor_shutdown_grace_period;
    options.isolation = strata_agent::isolation::IsolationOptions {
        mode: args.isolation,
        cgroups: strata_agent::cgroups::CgroupsOptions {
            root: args.cgroups_root,
            enable_cfs: args.cgroups_enable_cfs,
            pids_max: args.cgroups_pids_max,
            favor_dynmods: args.cgroups_favor_dynmods,
        },
    };
    options.usage_report_interval = args.usage_report_interval;
    options.default_user = Some(args.default_user);
    options.insecure = args.insecure;
    options.join_token = join_token;
    options.service_proxy = args.service_proxy.0;

    options.hygiene = strata_agent::hygiene::HygieneOptions {
        gc_delay: args.gc_delay,
        gc_disk_headroom: args.gc_disk_headroom,
        disk_watch_interval: args.disk_watch_interval.max(Duration::from_millis(100)),
        task_log_max_size: args.task_log_max_size,
        task_log_keep: args.task_log_keep,
    };

    options.disk_isolation = strata_agent::disk::DiskIsolationOptions {
        watch_interval: match args.container_disk_watch_interval {
            Duration::ZERO => Duration::ZERO,
            d => d.max(Duration::from_millis(100)),
        },
        enforce: args.enforce_container_disk_quota,
        ..Default::default()
    };

    match serve(listen, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn serve(listen: std::net::SocketAddr, options: AgentOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let bound = listener
            .local_addr()
            .context("cannot read the bound address")?;
        // The handlers first: a SIGTERM sent as soon as the line below is read must
        // stop the agent gracefully, not kill it.
        let shutdown = shutdown_signal().context("cannot install signal handlers")?;
        println!("strata-agent listening on {bound}");
        strata_agent::run(listener, options, shutdown)
            .await
            .context("agent failed")
    })
}

/// A share of the disk, 0 to 1.
fn parse_headroom(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "'{s}' is not a share of the disk from 0 to 1 (e.g. 0.1)"
        )),
    }
}

/// A size in bytes: `10MiB`, `500KB`, `1048576`; `0` is none.
fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("'{s}' is not a size ({e}); write e.g. 10MiB, 500KB or 0"))
}

/// Resolves on the first SIGINT or SIGTERM (stop, leaving the tasks running: a
/// restart or an upgrade) or SIGUSR1 (kill every task, then stop).
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = Shutdown> + Send + 'static>
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    Ok(async move {
        let (name, mode) = tokio::select! {
            _ = int.recv() => ("SIGINT", Shutdown::KeepTasks),
            _ = term.recv() => ("SIGTERM", Shutdown::KeepTasks),
            _ = usr1.recv() => ("SIGUSR1", Shutdown::KillTasks),
        };
        tracing::info!(signal = name, ?mode, "shutting down");
        mode
    })
}

/// `--service-proxy`: where the proxy listens, or `None` (off).
#[derive(Clone, Debug)]
struct ServiceProxyFlag(Option<std::net::IpAddr>);

fn parse_service_proxy(text: &str) -> Result<ServiceProxyFlag, String> {
    match text.trim() {
        "on" => Ok(ServiceProxyFlag(Some(std::net::IpAddr::from([0, 0, 0, 0])))),
        "off" => Ok(ServiceProxyFlag(None)),
        other => other
            .parse()
            .map(|ip| ServiceProxyFlag(Some(ip)))
            .map_err(|_| {
                format!("'{other}' is not on, off or an IP address to listen on (e.g. 0.0.0.0)")
            }),
    }
}
