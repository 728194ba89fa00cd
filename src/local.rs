//! `strata local`: a master, N agents and the container framework in this one process,
//! for trying Strata on one machine. The agents split the machine's cores and memory
//! between them and get disjoint port ranges, so that what they offer adds up to the machine.
//! Each agent has a `rack` attribute (`rack-1`, `rack-2`, alternating), so that
//! constraints on attributes (`rack MAX_PER 3`, `rack CLUSTER rack-1`) can be tried.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(clap::Args, Debug)]
pub struct LocalArgs {
    /// Where the master listens (gRPC and HTTP on one port).
    #[arg(long, default_value = "127.0.0.1:5050")]
    pub master: SocketAddr,
    /// How many agents to run; they listen on the ports after the master's.
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
}

pub async fn local(args: LocalArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(
        args.agents >= 1 && args.agents <= 64,
        "--agents must be between 1 and 64"
    );
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("cannot create the work dir {}", args.work_dir.display()))?;

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
    let master_opts = strata_master::MasterOptions::new(args.work_dir.join("master"));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn({
        let stop = stopped(stop_rx.clone());
        async move {
            strata_master::serve(master_listener, master_opts, stop)
                .await
                .context("master")
        }
    });
    println!("strata local: master on {master_addr} (state: http://{master_addr}/state)");

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
        let port = master_addr.port().checked_add(1 + i).with_context(|| {
            format!(
                "no port left above the master's {} for agent {}",
                master_addr.port(),
                i + 1
            )
        })?;
        let addr = SocketAddr::new(master_addr.ip(), port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for agent {}", i + 1))?;
        // 1,000 ports each from 31000, fewer when that would pass 65535.
        let per = ((65_535 - 31_000) / u32::from(args.agents)).min(1000);
        let ports_from = 31_000 + u32::from(i) * per;
        let resources = format!(
            "cpus:{cpus};mem:{mem};disk:10000;ports:[{ports_from}-{}]",
            ports_from + per - 1
        );
        let mut opts = strata_agent::AgentOptions::new(
            master_addr.to_string(),
            args.work_dir.join(format!("agent-{}", i + 1)),
        );
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
        state_dir: args.work_dir.join("apps"),
        role: "*".to_string(),
        name: "strata".to_string(),
        failover_timeout: std::time::Duration::from_secs(7 * 24 * 3600),
        tick: std::time::Duration::from_secs(1),
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
        "strata local: container framework, App API on http://{apps_addr} (`strata app list`)"
    );
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
