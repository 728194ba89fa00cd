//! `strata-bench apps`: deploying N instances of a Docker image with the container
//! framework (`strata app deploy --wait`), beside Docker Swarm
//! (`docker service create --replicas N`, until `docker service ls` shows N/N) and the
//! engine's own floor (N `docker run -d` issued `--parallel` at a time), in one run on
//! the same engine.
//!
//! ```text
//! 1. master + one agent (--containerizers docker) in this process, `strata serve` as a
//!    child process; `strata app deploy -f SPEC --wait` as another, timed until it
//!    returns (the `strata` binary: `--strata`, else the one beside this binary)
//! 2. floor: N `docker run -d` through the CLI, --parallel at a time
//! 3. swarm: `docker swarm init` (left afterwards if this bench made it), a service of
//!    N replicas, timed until `docker service ls` shows N/N
//! ```
//!
//! Every container is removed between phases. The closing lines are the ratios to the
//! floor (the goal for Strata: within 1.1x).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::Outcome;
use crate::cluster::{Parts, work_dir};
use crate::engine::{docker_cli, docker_rm_labelled, ensure_image};

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
    /// The `strata` binary that runs `strata serve` and `strata app deploy`. Default:
    /// the one beside this binary (`cargo build --release -p strata` builds it), else
    /// `strata` on the PATH.
    #[arg(long)]
    pub strata: Option<PathBuf>,
}

pub async fn bench_apps(args: AppsBenchArgs) -> anyhow::Result<Outcome> {
    ensure!(
        (1..=1000).contains(&args.instances),
        "--instances must be in 1..=1000"
    );
    ensure!(args.parallel >= 1, "--parallel must be at least 1");
    let strata_bin = strata_binary(args.strata.as_deref());
    let version = tokio::process::Command::new(&strata_bin)
        .arg("--version")
        .output()
        .await;
    ensure!(
        version.is_ok_and(|out| out.status.success()),
        "cannot run {}: build it with `cargo build --release -p strata`, or name it with --strata",
        strata_bin.display()
    );
    eprintln!(
        "bench: strata serve and strata app deploy from {}",
        strata_bin.display()
    );
    ensure_image(&args.image).await?;
    let work = work_dir("strata-bench-apps")?;
    let label = format!("strata.bench={}", uuid::Uuid::new_v4().simple());
    let result = tokio::time::timeout(Duration::from_secs(args.timeout), async {
        let strata = strata_side(&args, &strata_bin, &work)
            .await
            .context("Strata side")?;
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
    let swarm = swarm.map_or(String::new(), |s| format!(", swarm {:.2} s", secs(s)));
    Ok(Outcome {
        code: 0,
        figure: format!(
            "{n} instances: strata {:.2} s, floor {:.2} s{swarm} (strata/floor {:.2})",
            secs(strata),
            secs(floor),
            secs(strata) / secs(floor).max(1e-9)
        ),
    })
}

/// Master and a Docker agent in this process, the container framework as a
/// `strata serve` process; `strata app deploy --wait` deploys the app and waits.
async fn strata_side(args: &AppsBenchArgs, strata: &Path, work: &Path) -> anyhow::Result<Duration> {
    let mut parts = Parts::new();
    let mut master_opts = strata_master::MasterOptions::new(work.join("master"));
    master_opts.allocation_interval = Duration::from_millis(50);
    let master_addr = parts.master(master_opts).await?;
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
            ..Default::default()
        },
        process: false,
    };
    parts.agent(opts).await?;

    let result = async {
        let serve = Serve::start(strata, master_addr, &work.join("apps")).await?;
        let took = deploy(args, strata, serve.api, work).await;
        serve.stop().await;
        took
    }
    .await;
    parts.stop().await;
    result
}

/// Waits until the framework at `api` has subscribed, then times
/// `strata app deploy --wait` of the bench's app, and removes it.
async fn deploy(
    args: &AppsBenchArgs,
    strata: &Path,
    api: SocketAddr,
    work: &Path,
) -> anyhow::Result<Duration> {
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
        ensure!(
            Instant::now() < deadline,
            "the framework did not subscribe within 60 s"
        );
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
    let started = Instant::now();
    let out = tokio::process::Command::new(strata)
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
    let _ = tokio::process::Command::new(strata)
        .args(["app", "rm", "bench", "--wait", "--timeout", "120"])
        .args(["--server", &api.to_string()])
        .output()
        .await;
    Ok(took)
}

/// `--strata`, else the `strata` beside this binary (cargo builds both into the same
/// target directory), else `strata` on the PATH.
fn strata_binary(given: Option<&Path>) -> PathBuf {
    if let Some(path) = given {
        return path.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("strata")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("strata"))
}

/// The container framework, `strata serve`, as a child process.
struct Serve {
    child: tokio::process::Child,
    /// Where its App API listens (it picks an ephemeral port and prints it).
    api: SocketAddr,
    /// Reads what it prints after that, so that it never writes into a closed pipe.
    drain: tokio::task::JoinHandle<()>,
}

impl Serve {
    /// Starts `strata serve` against the master with the bench's settings (a 200 ms
    /// tick, default 1 s) and waits until it prints where its App API listens.
    async fn start(strata: &Path, master: SocketAddr, state_dir: &Path) -> anyhow::Result<Serve> {
        let mut child = tokio::process::Command::new(strata)
            .args(["serve", "--master", &master.to_string()])
            .args(["--listen", "127.0.0.1:0", "--role", "*", "--name", "strata"])
            .args(["--failover-timeout", "1h", "--tick", "200ms", "--state-dir"])
            .arg(state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {} serve", strata.display()))?;
        let stdout = child.stdout.take().context("strata serve's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        // "strata serve: master ADDR; App API listening on ADDR"
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .context("strata serve did not say where it listens (see its errors above)")?;
        let api = first
            .rsplit_once("listening on ")
            .and_then(|(_, addr)| addr.trim().parse().ok())
            .with_context(|| format!("strata serve printed {first:?}, without an address"))?;
        let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Serve { child, api, drain })
    }

    /// SIGTERM, then SIGKILL if it has not ended within 30 s.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        self.drain.abort();
        let _ = self.drain.await;
    }
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
