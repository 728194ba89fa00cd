//! `strata bench apps`: deploying N instances of a Docker image with the container
//! framework (`strata app deploy --wait`), beside Docker Swarm
//! (`docker service create --replicas N`, until `docker service ls` shows N/N) and the
//! engine's own floor (N `docker run -d` issued `--parallel` at a time), in one run on
//! the same engine.
//!
//! ```text
//! 1. master + one agent (--containerizers docker) + strata serve in this process;
//!    `strata app deploy -f SPEC --wait` as a child process, timed until it returns
//! 2. floor: N `docker run -d` through the CLI, --parallel at a time
//! 3. swarm: `docker swarm init` (left afterwards if this bench made it), a service of
//!    N replicas, timed until `docker service ls` shows N/N
//! ```
//!
//! Every container is removed between phases. The closing lines are the ratios to the
//! floor (the goal for Strata: within 1.1x).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bench_docker::{docker_cli, docker_rm_labelled};

#[derive(clap::Args, Debug)]
pub struct AppsBenchArgs {
    /// Instances on each side.
    #[arg(long, default_value_t = 50)]
    pub instances: u32,
    /// The image every side runs (`sleep 3600` in it); scripts/docker-setup.sh builds the default.
    #[arg(long, default_value = "strata-test/busybox:latest")]
    pub image: String,
    /// `docker run -d` issued this many at a time for the floor.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Skip Docker Swarm (e.g. where `docker swarm init` is not allowed).
    #[arg(long)]
    pub skip_swarm: bool,
    /// The engine's socket.
    #[arg(long, default_value = "/var/run/docker.sock")]
    pub docker_socket: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
}

pub async fn bench_apps(args: AppsBenchArgs) -> anyhow::Result<u8> {
    ensure!(
        (1..=1000).contains(&args.instances),
        "--instances must be in 1..=1000"
    );
    ensure!(args.parallel >= 1, "--parallel must be at least 1");
    docker_cli(&["image", "inspect", &args.image])
        .await
        .with_context(|| {
            format!(
                "image {} is not on the engine (scripts/docker-setup.sh builds the test image)",
                args.image
            )
        })?;
    let work = std::env::temp_dir().join(format!("strata-bench-apps-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let label = format!("strata.bench={}", uuid::Uuid::new_v4().simple());
    let result = tokio::time::timeout(Duration::from_secs(args.timeout), async {
        let strata = strata_side(&args, &work).await.context("Strata side")?;
        let floor = floor_side(&args, &label).await.context("docker run side")?;
        let swarm = if args.skip_swarm {
            None
        } else {
            Some(swarm_side(&args).await.context("Docker Swarm side")?)
        };
        Ok::<_, anyhow::Error>((strata, floor, swarm))
    })
    .await;
    let _ = docker_rm_labelled(&label).await;
    let _ = std::fs::remove_dir_all(&work);
    let (strata, floor, swarm) = result
        .map_err(|_| anyhow::anyhow!("the bench did not finish within {} s", args.timeout))??;

    let n = args.instances;
    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "apps bench: {n} instances of {} on one engine (floor: docker run -d, {} at a time)",
        args.image, args.parallel
    );
    println!("strata_app_deploy_wait: {:.2} s", secs(strata));
    println!("docker_run_floor: {:.2} s", secs(floor));
    if let Some(s) = swarm {
        println!("docker_swarm_service: {:.2} s", secs(s));
    }
    println!(
        "ratio strata/floor: {:.2}",
        secs(strata) / secs(floor).max(1e-9)
    );
    if let Some(s) = swarm {
        println!("ratio swarm/floor: {:.2}", secs(s) / secs(floor).max(1e-9));
        println!(
            "ratio strata/swarm: {:.2}",
            secs(strata) / secs(s).max(1e-9)
        );
    }
    Ok(0)
}

/// Master, a Docker agent and the container framework in this process; the CLI
/// deploys the app and waits.
async fn strata_side(args: &AppsBenchArgs, work: &std::path::Path) -> anyhow::Result<Duration> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut parts = tokio::task::JoinSet::new();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let master_addr = listener.local_addr()?;
    let mut master_opts = strata_master::MasterOptions::new(work.join("master"));
    master_opts.allocation_interval = Duration::from_millis(50);
    parts.spawn({
        let stop = stopped(stop_rx.clone());
        async move {
            strata_master::serve(listener, master_opts, stop)
                .await
                .map_err(anyhow::Error::from)
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let mut opts = strata_agent::AgentOptions::new(master_addr.to_string(), work.join("agent"));
    opts.resources = strata_proto::Resources::parse(&format!(
        "cpus:{};mem:{};disk:100000;ports:[31000-32000]",
        args.instances + 4,
        args.instances * 64 + 1024
    ))?;
    opts.registration_backoff = Duration::from_millis(50);
    opts.containerizer = strata_agent::ContainerizerConfig::Docker {
        docker: strata_agent::DockerOptions {
            socket: args.docker_socket.clone(),
            remove_delay: Duration::ZERO,
        },
        process: false,
    };
    parts.spawn({
        let stop = stopped(stop_rx.clone());
        async move {
            strata_agent::run(listener, opts, stop)
                .await
                .map_err(anyhow::Error::from)
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?;
    let serve_args = crate::app::serve::ServeArgs {
        master: master_addr.to_string(),
        listen: api,
        state_dir: work.join("apps"),
        role: "*".into(),
        name: "strata".into(),
        failover_timeout: Duration::from_secs(3600),
        tick: Duration::from_millis(200),
    };
    parts.spawn({
        let stop = stopped(stop_rx.clone());
        async move { crate::app::serve::run(serve_args, listener, stop).await }
    });

    let result = async {
        let client = reqwest::Client::new();
        let info = format!("http://{api}/v1/info");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let connected = match client.get(&info).send().await {
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .is_ok_and(|v| v["connected"] == true),
                Err(_) => false,
            };
            if connected {
                break;
            }
            ensure!(Instant::now() < deadline, "the framework did not subscribe within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let spec = work.join("bench.yaml");
        std::fs::write(
            &spec,
            format!(
                "id: bench\ninstances: {}\nimage: {}\npull: never\ncmd: sleep 3600\ncpus: 0.01\nmem: 16\nkill_grace_period_seconds: 0\n",
                args.instances, args.image
            ),
        )?;
        let exe = std::env::current_exe().context("the strata binary")?;
        let started = Instant::now();
        let out = tokio::process::Command::new(&exe)
            .args(["app", "deploy", "--wait", "--timeout", "600", "-f"])
            .arg(&spec)
            .args(["--server", &api.to_string()])
            .output()
            .await
            .context("cannot run strata app deploy")?;
        let took = started.elapsed();
        if !out.status.success() {
            bail!(
                "strata app deploy failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Remove the app and wait until its containers are gone.
        let _ = tokio::process::Command::new(&exe)
            .args(["app", "rm", "bench", "--wait", "--timeout", "120"])
            .args(["--server", &api.to_string()])
            .output()
            .await;
        Ok::<_, anyhow::Error>(took)
    }
    .await;
    let _ = stop_tx.send(true);
    while parts.join_next().await.is_some() {}
    result
}

/// N `docker run -d`, `parallel` at a time.
async fn floor_side(args: &AppsBenchArgs, label: &str) -> anyhow::Result<Duration> {
    let gate = Arc::new(tokio::sync::Semaphore::new(args.parallel));
    let started = Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..args.instances {
        let gate = gate.clone();
        let image = args.image.clone();
        let label = label.to_string();
        runs.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            docker_cli(&["run", "-d", "--label", &label, &image, "sleep", "3600"]).await
        });
    }
    while let Some(r) = runs.join_next().await {
        r??;
    }
    let took = started.elapsed();
    docker_rm_labelled(label).await?;
    Ok(took)
}

/// A Swarm service of N replicas, timed until `docker service ls` shows N/N.
async fn swarm_side(args: &AppsBenchArgs) -> anyhow::Result<Duration> {
    let state = docker_cli(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).await?;
    let we_made_it = state.trim() != "active";
    if we_made_it {
        docker_cli(&["swarm", "init", "--advertise-addr", "127.0.0.1"])
            .await
            .context("docker swarm init")?;
    }
    let name = format!(
        "strata-bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let result = async {
        let want = format!("{}/{}", args.instances, args.instances);
        let started = Instant::now();
        docker_cli(&[
            "service",
            "create",
            "--detach",
            "--name",
            &name,
            "--replicas",
            &args.instances.to_string(),
            &args.image,
            "sleep",
            "3600",
        ])
        .await?;
        loop {
            let replicas = docker_cli(&[
                "service",
                "ls",
                "--filter",
                &format!("name={name}"),
                "--format",
                "{{.Replicas}}",
            ])
            .await?;
            if replicas.trim() == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok::<_, anyhow::Error>(started.elapsed())
    }
    .await;
    let _ = docker_cli(&["service", "rm", &name]).await;
    // Wait for the service's containers to go before leaving the swarm.
    for _ in 0..300 {
        let left = docker_cli(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={name}"),
        ])
        .await
        .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if we_made_it {
        let _ = docker_cli(&["swarm", "leave", "--force"]).await;
    }
    result
}
