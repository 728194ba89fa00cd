//! `strata local`: a master, N agents and the container framework in this one process,
//! for trying Strata on one machine. The agents split the machine's cores and memory
//! between them and get disjoint port ranges, so that what they offer adds up to the machine.
//! Each agent has a `rack` attribute (`rack-1`, `rack-2`, alternating), so that
//! constraints on attributes (`rack MAX_PER 3`, `rack CLUSTER rack-1`) can be tried.
//!
//! Secure by default, as a real cluster is:
//!
//! ```text
//!  WORK/master/tls/ca.crt, join-token     the master's cluster CA and agents' token
//!  WORK/master/credentials.json           principals (admin + a random secret)
//!        │ read once the master made them
//!        ├─▶ agents: join with the token (mutual TLS from then on)
//!        ├─▶ the container framework: WORK/admin-credential.json, the CA, and
//!        │   credentials.json for the App API's callers
//!        └─▶ the CLI: WORK/config.json and the default CLI config path
//!            (master, apps, ca_file, principal, secret); WORK/admin.secret for curl
//! ```
//!
//! `--insecure` runs everything in plain text without authentication, as before.
//!
//! `--acls FILE` (Mesos' ACL format) is what the cluster's callers may do: the
//! master, its agents and the App API apply it (each re-reads it on SIGHUP).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use strata_security::Credential;
use strata_security::credentials::{ADMIN, secret_in_file};
use strata_security::files::write_private;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::config::{self, CliConfig};

#[derive(clap::Args, Debug)]
pub struct LocalArgs {
    /// Where the master listens (gRPC and HTTP on one port).
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub master: SocketAddr,
    /// How many agents to run; they listen on the ports after the master's (on ports the
    /// kernel picks when the master's is 0).
    #[arg(long, default_value_t = 2)]
    pub agents: u16,
    /// Work directory: `master/` and `agent-N/` are made inside it.
    #[arg(long, default_value = "/tmp/strata-local")]
    pub work_dir: PathBuf,
    /// Containerizer of the agents: `process` runs real processes, `process,docker` also
    /// Docker tasks (`strata run --image`), `fake` runs nothing (for scale runs only).
    #[arg(long, default_value = "process")]
    pub containerizer: String,
    /// Where the container framework's App API listens (`strata app ...` talks to it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub apps_listen: SocketAddr,
    /// The role the bundled container framework runs in: it may use unreserved
    /// resources and this role's reservations, and resident apps (persistent volumes)
    /// reserve for it.
    #[arg(long, default_value = "apps")]
    pub role: String,
    /// No TLS and no authentication anywhere (for development only): anyone who can
    /// reach the ports runs commands on this machine. The CLI then needs --insecure
    /// (or STRATA_INSECURE=1) too.
    #[arg(long)]
    pub insecure: bool,
    /// An ACL file in Mesos' format (docs/security.md) for the whole local cluster:
    /// the master, its agents and the App API apply it; re-read on SIGHUP. Default:
    /// the built-in ACLs (the insecure ones with --insecure).
    #[arg(long, value_name = "PATH")]
    pub acls: Option<PathBuf>,
}

/// What a secure local cluster hands to its parts and its user.
struct Secrets {
    /// The agents' join token.
    join_token: String,
    /// The cluster CA.
    ca_file: PathBuf,
    /// The master's credentials file (the App API accepts the same callers).
    credentials: PathBuf,
    /// The admin's credential, as `strata serve --credential-file` reads it.
    credential_file: PathBuf,
    /// The admin's secret alone, for `curl -u admin:$(cat ...)`.
    secret_file: PathBuf,
    credential: Credential,
}

/// Makes the master's CA, join token and credentials in `master_dir` (what the master
/// finds at its start), and writes the admin's credential for the framework and curl.
fn set_up_security(
    work_dir: &Path,
    master_dir: &Path,
    tls: &strata_master::TlsOptions,
) -> anyhow::Result<Secrets> {
    let prepared = strata_master::security::prepare(master_dir, tls)
        .context("cannot set up the master's TLS and credentials")?;
    let tls_dir = strata_master::security::tls_dir(master_dir);
    let join_token = prepared.join_token.to_string();
    let credentials = prepared.credentials_path;
    let secret = secret_in_file(&credentials, ADMIN)?;
    let credential = Credential::new(ADMIN, secret);
    let credential_file = work_dir.join("admin-credential.json");
    let json = serde_json::to_string_pretty(&credential).context("credential as JSON")?;
    write_private(&credential_file, json.as_bytes())?;
    let secret_file = work_dir.join("admin.secret");
    write_private(&secret_file, credential.secret.as_bytes())?;
    Ok(Secrets {
        join_token,
        ca_file: tls_dir.join("ca.crt"),
        credentials,
        credential_file,
        secret_file,
        credential,
    })
}

/// Writes the CLI config (mode 0600) to `WORK/config.json` and to `$STRATA_CONFIG`, or
/// else the default path (keeping a different file there as `config.json.bak`).
/// Returns where it wrote.
fn write_cli_config(
    work_dir: &Path,
    master: SocketAddr,
    apps: SocketAddr,
    secrets: &Secrets,
) -> anyhow::Result<Vec<String>> {
    let config = CliConfig {
        master: Some(master.to_string()),
        apps: Some(apps.to_string()),
        ca_file: Some(secrets.ca_file.clone()),
        principal: Some(secrets.credential.principal.clone()),
        secret: Some(secrets.credential.secret.clone()),
    };
    let text = serde_json::to_string_pretty(&config).context("CLI config as JSON")? + "\n";
    let own = work_dir.join("config.json");
    write_private(&own, text.as_bytes())?;
    let mut written = vec![own.display().to_string()];
    let user = match config::process_env("STRATA_CONFIG").filter(|p| !p.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => config::default_path(&config::process_env).ok(),
    };
    let Some(user) = user.filter(|p| *p != own) else {
        return Ok(written);
    };
    if let Ok(old) = std::fs::read_to_string(&user)
        && old != text
    {
        let backup = user.with_extension("json.bak");
        std::fs::rename(&user, &backup).with_context(|| {
            format!(
                "cannot keep the previous CLI config {} as {}",
                user.display(),
                backup.display()
            )
        })?;
        written.push(format!(
            "{} (the previous one is now {})",
            user.display(),
            backup.display()
        ));
    } else {
        written.push(user.display().to_string());
    }
    write_private(&user, text.as_bytes())?;
    Ok(written)
}

pub async fn local(args: LocalArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(
        args.agents >= 1 && args.agents <= 64,
        "--agents must be between 1 and 64"
    );
    // A bad ACL file stops us before anything starts (serve reads it again).
    if let Some(acls) = &args.acls {
        strata_security::Acls::load(acls).context("--acls")?;
    }
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("cannot create the work dir {}", args.work_dir.display()))?;
    // Absolute, so that the CLI config's paths work from any directory.
    let work_dir = std::fs::canonicalize(&args.work_dir)
        .with_context(|| format!("cannot resolve the work dir {}", args.work_dir.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let master_listener = TcpListener::bind(args.master).await.with_context(|| {
        format!(
            "cannot listen on {} (is another master running?)",
            args.master
        )
    })?;
    let master_addr = master_listener.local_addr()?;
    if args.insecure {
        eprintln!(
            "strata local: WARNING: --insecure: no TLS and no authentication; anyone who can \
             reach {master_addr}, the agents' ports or the App API runs commands on this \
             machine. For development only."
        );
    }
    let master_dir = work_dir.join("master");
    let mut master_opts = strata_master::MasterOptions::new(master_dir.clone());
    master_opts.acls = args.acls.clone();
    let secrets = if args.insecure {
        None
    } else {
        let tls = strata_master::TlsOptions::default();
        let secrets = set_up_security(&work_dir, &master_dir, &tls)?;
        master_opts.security = strata_master::Security::Tls(tls);
        Some(secrets)
    };
    let scheme = if args.insecure { "http" } else { "https" };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn({
        let stop = stopped(stop_rx.clone());
        async move {
            strata_master::serve(master_listener, master_opts, stop)
                .await
                .context("master")
        }
    });
    match &secrets {
        Some(s) => println!(
            "strata local: master on https://{master_addr} (TLS; cluster CA {})",
            s.ca_file.display()
        ),
        None => println!(
            "strata local: master on http://{master_addr} (state: http://{master_addr}/state)"
        ),
    }

    let containerizer = match args.containerizer.as_str() {
        "process" => strata_agent::ContainerizerConfig::Process,
        "fake" => strata_agent::ContainerizerConfig::Fake {
            task_duration: std::time::Duration::from_secs(5),
        },
        "process,docker" | "docker" => strata_agent::ContainerizerConfig::Docker {
            docker: strata_agent::DockerOptions::default(),
            process: true,
        },
        other => {
            anyhow::bail!("unknown containerizer '{other}' (known: process, process,docker, fake)")
        }
    };
    let (cpus, mem) = machine_share(args.agents);
    for i in 0..args.agents {
        // The ports after the master's, or ports the kernel picks when it picked the
        // master's (`--master 127.0.0.1:0`): the next port may be anyone's then.
        let port = if args.master.port() == 0 {
            0
        } else {
            master_addr.port().checked_add(1 + i).with_context(|| {
                format!(
                    "no port left above the master's {} for agent {}",
                    master_addr.port(),
                    i + 1
                )
            })?
        };
        let addr = SocketAddr::new(master_addr.ip(), port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for agent {}", i + 1))?;
        let addr = listener.local_addr()?;
        // 1,000 ports each from 31000, fewer when that would pass 65535.
        let per = ((65_535 - 31_000) / u32::from(args.agents)).min(1000);
        let ports_from = 31_000 + u32::from(i) * per;
        let resources = format!(
            "cpus:{cpus};mem:{mem};disk:10000;ports:[{ports_from}-{}]",
            ports_from + per - 1
        );
        let mut opts = strata_agent::AgentOptions::new(
            master_addr.to_string(),
            work_dir.join(format!("agent-{}", i + 1)),
        );
        opts.insecure = args.insecure;
        opts.join_token = secrets.as_ref().map(|s| s.join_token.clone());
        opts.resources = strata_proto::Resources::parse(&resources)?;
        opts.hostname = Some(format!("strata-agent-{}", i + 1));
        opts.attributes = vec![("rack".to_string(), format!("rack-{}", i % 2 + 1))];
        opts.containerizer = containerizer.clone();
        tasks.spawn({
            let stop = stopped(stop_rx.clone());
            async move {
                // `strata local` stopping stops the whole cluster: nothing is left
                // running behind it.
                let stop = async move {
                    stop.await;
                    strata_agent::Shutdown::KillTasks
                };
                strata_agent::run(listener, opts, stop)
                    .await
                    .with_context(|| format!("agent {}", i + 1))
            }
        });
        println!("strata local: agent {} on {addr} ({resources})", i + 1);
    }
    let apps_listener = TcpListener::bind(args.apps_listen)
        .await
        .with_context(|| format!("cannot listen on {} for the App API", args.apps_listen))?;
    let apps_addr = apps_listener.local_addr()?;
    let serve_args = crate::app::serve::ServeArgs {
        master: master_addr.to_string(),
        listen: apps_addr,
        state_dir: work_dir.join("apps"),
        role: args.role.clone(),
        name: "strata".to_string(),
        failover_timeout: Duration::from_secs(7 * 24 * 3600),
        tick: Duration::from_secs(1),
        insecure: args.insecure,
        ca_file: secrets.as_ref().map(|s| s.ca_file.clone()),
        credential_file: secrets.as_ref().map(|s| s.credential_file.clone()),
        credentials: secrets.as_ref().map(|s| s.credentials.clone()),
        // the same file as the master's.
        acls: args.acls.clone(),
        service_ports: Default::default(),
    };
    tasks.spawn({
        let stop = stopped(stop_rx.clone());
        async move {
            crate::app::serve::run(serve_args, apps_listener, stop)
                .await
                .context("container framework")
        }
    });
    println!(
        "strata local: container framework, App API on {scheme}://{apps_addr} (`strata app list`)"
    );
    match &secrets {
        Some(s) => {
            for path in write_cli_config(&work_dir, master_addr, apps_addr, s)? {
                println!(
                    "strata local: CLI config (master, App API, CA, admin credential) written to {path}"
                );
            }
            println!(
                "strata local: the admin's secret is in {} (and {}); the HTTP API with curl:",
                s.secret_file.display(),
                s.credentials.display()
            );
            println!(
                "    curl --cacert {} -u \"admin:$(cat {})\" https://{master_addr}/state",
                s.ca_file.display(),
                s.secret_file.display()
            );
        }
        None => println!(
            "strata local: the CLI needs --insecure (or STRATA_INSECURE=1) for this cluster, e.g. `strata app list --insecure`"
        ),
    }
    println!("strata local: up; Ctrl-C stops it");

    let result = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        Some(done) = tasks.join_next() => match done {
            Ok(Ok(())) => Err(anyhow::anyhow!("a part of the local cluster stopped on its own")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("a part of the local cluster crashed: {e}")),
        },
    };
    println!("strata local: stopping");
    let _ = stop_tx.send(true);
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            eprintln!("strata local: {e:#}");
        }
    }
    result.map(|()| 0)
}

/// Each agent's share of the machine: cores and memory (MiB, less 1 GiB for the system)
/// divided evenly.
fn machine_share(agents: u16) -> (f64, u64) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let mem_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(2048);
    let usable = mem_mib.saturating_sub(1024).max(256);
    let n = f64::from(agents);
    (
        (cores / n * 100.0).floor() / 100.0,
        usable / u64::from(agents),
    )
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
