//! `strata-master`: runs a Strata master on one port (gRPC and HTTP).
//!
//! Flags are checked before anything starts: a bad value exits 2 with the reason; a
//! work dir that cannot be used or a port that cannot be bound exits 1. Once bound it
//! prints `strata-master listening on ADDR` to stdout (then, with `--dns-listen`,
//! `strata-master: DNS on ADDR ...`), and runs until SIGINT or SIGTERM, then shuts
//! down gracefully.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use strata_logging::{LogFormat, init_logging};
use strata_master::{
    FileStore, MasterOptions, Security, TlsOptions, parse_duration, parse_weights,
};

/// mimalloc instead of glibc's malloc: gRPC streams allocate and free on every worker
/// thread, and glibc's arena locks took a quarter of the CPU of a 10,000-agent
/// re-registration storm (`strata bench failover`: 3.3 s with glibc, 1.6 s with this).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Strata master: offers agents' resources to frameworks.
#[derive(Parser, Debug)]
#[command(name = "strata-master", version)]
struct Args {
    /// Address to serve gRPC and HTTP on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:5050")]
    listen: SocketAddr,
    /// Directory of the registry (what survives a restart); created if missing.
    #[arg(long)]
    work_dir: PathBuf,
    /// Role weights for DRF, e.g. `prod=2,dev=1` (roles not named weigh 1).
    #[arg(long, value_parser = parse_weights_flag, default_value = "")]
    weights: Weights,
    /// Batch allocation interval.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    allocation_interval: Duration,
    /// Interval of HEARTBEAT events to frameworks.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    heartbeat_interval: Duration,
    /// How often agents must send a heartbeat; the unit of the agent timeout.
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    agent_ping_timeout: Duration,
    /// Missed agent pings after which an agent is unreachable.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_agent_ping_timeouts: u32,
    /// After a master restart, how long known agents have to re-register.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    agent_reregister_timeout: Duration,
    /// refuse_seconds applied when a framework's DECLINE or ACCEPT sets no filter.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    default_refuse: Duration,
    /// Rescind offers not answered within this time (default: never).
    #[arg(long, value_parser = parse_duration)]
    offer_timeout: Option<Duration>,
    /// On shutdown, how long open connections get to finish.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    shutdown_grace: Duration,
    /// Serve plain text with no authentication: anyone who reaches the port controls
    /// the cluster. For development only.
    #[arg(long)]
    insecure: bool,
    /// The credentials file (Mesos' JSON: `{"credentials": [{"principal": P, "secret":
    /// S}]}`); default WORK_DIR/credentials.json, made with the principal `admin` at
    /// first start.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// The ACL file (Mesos' JSON: `{"permissive": false, "run_tasks": [{"principals":
    /// {...}, "users": {...}}], ...}`, see docs/security.md). Default: the built-in
    /// ACLs (operator actions for `admin` only, no task as root). SIGHUP and
    /// `POST /security/reload` read it (and the credentials) again.
    #[arg(long)]
    acls: Option<PathBuf>,
    /// Per-principal rate limits of the scheduler API (Mesos' --rate_limits): JSON, or
    /// a file of it, e.g. `{"limits": [{"principal": "batch", "qps": 50, "capacity":
    /// 500}], "aggregate_default_qps": 100}`. Calls over a principal's rate wait; past
    /// its capacity of waiting calls they are refused (RESOURCE_EXHAUSTED).
    #[arg(long, value_parser = strata_master::rate::RateLimitsConfig::parse_flag)]
    rate_limits: Option<strata_master::rate::RateLimitsConfig>,
    /// The most frameworks one principal may have registered at once.
    #[arg(long, default_value_t = 1000)]
    max_frameworks_per_principal: usize,
    /// The most distinct roles the frameworks of one principal may use at once.
    #[arg(long, default_value_t = 1000)]
    max_roles_per_principal: usize,
    /// A name (DNS or IP) clients reach the master by, put in its certificate besides
    /// `strata-master`, localhost, the hostname and the listen address (repeatable).
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// How long agents' certificates are valid; agents renew them at two thirds.
    #[arg(long, value_parser = parse_duration, default_value = "30d")]
    agent_cert_ttl: Duration,
    /// Serve DNS (UDP and TCP) on this address: `SERVICE.DOMAIN` (A/AAAA),
    /// `_PORT._tcp.SERVICE.DOMAIN` (SRV) and `TASK.FRAMEWORK.DOMAIN` for every running
    /// task with discovery info (port 0: any free port). Default: no DNS server.
    #[arg(long)]
    dns_listen: Option<SocketAddr>,
    /// The domain the DNS server answers for.
    #[arg(long, default_value = strata_master::dns::DEFAULT_DOMAIN)]
    dns_domain: String,
    /// The key that encrypts secrets in the registry (XChaCha20-Poly1305): 64 hex
    /// digits, mode 0600, created at the first start. Default WORK_DIR/secrets.key.
    /// Back it up, apart from the registry's backups: without it no secret opens.
    #[arg(long)]
    secrets_key_file: Option<PathBuf>,
    /// Log lines on stderr: `text` (coloured on a terminal only) or `json` (one object
    /// per line). `RUST_LOG` sets the level (default info).
    #[arg(long, value_enum, env = "STRATA_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Role weights as parsed from `--weights`.
#[derive(Clone, Debug)]
struct Weights(std::collections::HashMap<String, f64>);

fn parse_weights_flag(s: &str) -> Result<Weights, strata_master::OptionsError> {
    parse_weights(s).map(Weights)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = init_logging(args.log_format, "info") {
        eprintln!("strata-master: {e}");
        return ExitCode::from(1);
    }
    // Secrets pass through this process (issue 16): no core dump may hold them, and
    // no other user may ptrace it.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot make the process non-dumpable; a core dump could hold secrets");
    }

    let options = MasterOptions {
        work_dir: args.work_dir.clone(),
        allocation_interval: args.allocation_interval,
        framework_heartbeat_interval: args.heartbeat_interval,
        agent_ping_timeout: args.agent_ping_timeout,
        max_agent_ping_timeouts: args.max_agent_ping_timeouts,
        agent_reregister_timeout: args.agent_reregister_timeout,
        default_refuse: args.default_refuse,
        weights: args.weights.0.clone(),
        offer_timeout: args.offer_timeout,
        shutdown_grace: args.shutdown_grace,
        security: if args.insecure {
            Security::Insecure
        } else {
            Security::Tls(TlsOptions {
                names: args.tls_names.clone(),
                credentials: args.credentials.clone(),
                agent_cert_ttl: args.agent_cert_ttl,
            })
        },
        acls: args.acls.clone(),
        rate_limits: args.rate_limits.clone(),
        max_frameworks_per_principal: args.max_frameworks_per_principal,
        max_roles_per_principal: args.max_roles_per_principal,
        dns_listen: args.dns_listen,
        dns_domain: args.dns_domain.clone(),
        secrets_key_file: args.secrets_key_file.clone(),
    };
    if let Some(path) = &args.acls
        && let Err(e) = strata_security::Acls::load(path)
    {
        eprintln!("strata-master: --acls: {e}");
        return ExitCode::from(2);
    }
    if args.agent_cert_ttl < Duration::from_secs(60) {
        eprintln!("strata-master: --agent-cert-ttl must be at least 1m");
        return ExitCode::from(2);
    }
    if let Err(e) = options.validate() {
        eprintln!("strata-master: {e}");
        return ExitCode::from(2);
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata-master: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args.listen, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-master: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(listen: SocketAddr, options: MasterOptions) -> anyhow::Result<()> {
    // Open the registry first: an unusable or corrupt work dir stops us before the
    // port is taken.
    let shutdown = shutdown_signal()?;
    let store = FileStore::open(&options.work_dir)
        .with_context(|| format!("cannot open the registry in {}", options.work_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is the port in use?)"))?;
    let bound = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let dns = match options.dns_listen {
        Some(addr) => Some(
            strata_master::dns::DnsServer::bind(addr)
                .await
                .with_context(|| {
                    format!("cannot serve DNS on {addr} (UDP and TCP; is the port in use?)")
                })?,
        ),
        None => None,
    };
    // The CA, join token and credentials exist before the first line is printed, so
    // that whoever waits for it can read them.
    if let Security::Tls(tls) = &options.security {
        strata_master::security::prepare(&options.work_dir, tls)
            .context("cannot set up TLS and authentication")?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "strata-master listening on {bound}").context("cannot write to stdout")?;
        if let Some(dns) = &dns {
            writeln!(
                out,
                "strata-master: DNS on {} (UDP and TCP) for the domain {}",
                dns.local_addr(),
                options.dns_domain
            )
            .context("cannot write to stdout")?;
        }
        match &options.security {
            Security::Tls(tls) => {
                let dir = strata_master::security::tls_dir(&options.work_dir);
                let credentials = tls.credentials.clone().unwrap_or_else(|| {
                    strata_master::security::default_credentials_path(&options.work_dir)
                });
                writeln!(
                    out,
                    "strata-master: TLS on; cluster CA {ca}; agents join with --join-token-file {token}; credentials in {creds}",
                    ca = dir.join("ca.crt").display(),
                    token = dir.join("join-token").display(),
                    creds = credentials.display(),
                )
                .context("cannot write to stdout")?;
            }
            // The master logs a warning of its own (in the chosen log format).
            Security::Insecure => {}
        }
        out.flush().context("cannot write to stdout")?;
    }
    strata_master::serve_with_dns(listener, dns, options, Box::new(store), shutdown)
        .await
        .context("master failed")?;
    Ok(())
}

/// A future that completes on SIGINT or SIGTERM. The handlers are installed now, so
/// a signal that arrives before the future is first polled is not lost.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    })
}
