//! `strata-bench docker`: Docker task launches through Strata against bare
//! `docker run -d` of the same image with the same options, in one run.
//!
//! ```text
//! master + one agent (--containerizers docker) in this process, the local engine
//! 1. sequential: --launches tasks one at a time, ACCEPT ─▶ TASK_RUNNING each (p50, p99)
//!    beside as many `docker run -d` one at a time (until the CLI returns: running)
//! 2. burst: --burst tasks in one ACCEPT, time until all are TASK_RUNNING
//!    beside as many `docker run -d` started at once, time until all returned
//! ```
//!
//! Bare containers get what Strata gives its containers: `--init`, host network, the
//! memory and cpu limits and a bind-mounted directory. Every container of the bench is
//! killed and removed between phases. The closing lines are the ratios
//! (Strata / bare; the goal is at most 1.2).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use strata_proto::v1;

use crate::Outcome;
use crate::cluster::{Parts, work_dir};
use crate::engine::{docker_cli, docker_rm_labelled, ensure_image};
use crate::framework::Framework;
use crate::stats::{Samples, ms};

#[derive(clap::Args, Debug)]
pub struct DockerBenchArgs {
    /// The image both sides run (`sleep 3600` in it); scripts/docker-setup.sh builds the default.
    #[arg(long, default_value = "strata-test/busybox:latest")]
    pub image: String,
    /// Sequential launches on each side.
    #[arg(long, default_value_t = 50)]
    pub launches: u32,
    /// Containers launched at once on each side.
    #[arg(long, default_value_t = 50)]
    pub burst: u32,
    /// cpus per container.
    #[arg(long, default_value_t = 0.1)]
    pub cpus: f64,
    /// Memory per container, MiB.
    #[arg(long, default_value_t = 32.0)]
    pub mem: f64,
    /// The engine's socket.
    #[arg(long, default_value = "/var/run/docker.sock")]
    pub docker_socket: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
}

/// What one side measured.
struct Figures {
    sequential: Samples,
    burst: Duration,
}

pub async fn bench_docker(args: DockerBenchArgs) -> anyhow::Result<Outcome> {
    ensure!(
        args.launches >= 1 && args.burst >= 1,
        "--launches and --burst must be at least 1"
    );
    ensure!(
        args.cpus > 0.0 && args.mem >= 8.0,
        "--cpus must be positive and --mem at least 8"
    );
    ensure_image(&args.image).await?;

    let work = work_dir("strata-bench-docker")?;
    let run_label = format!("strata.bench={}", uuid::Uuid::new_v4().simple());

    let result = tokio::time::timeout(Duration::from_secs(args.timeout), async {
        let strata = strata_side(&args, &work).await.context("Strata side")?;
        let bare = bare_side(&args, &work, &run_label)
            .await
            .context("bare docker side")?;
        Ok::<_, anyhow::Error>((strata, bare))
    })
    .await;
    let _ = docker_rm_labelled(&run_label).await;
    let _ = std::fs::remove_dir_all(&work);
    let (strata, bare) = result
        .map_err(|_| anyhow::anyhow!("the bench did not finish within {} s", args.timeout))??;

    let line = |name: &str, s: Duration, b: Duration, unit_ms: bool| {
        let (sv, bv, unit) = if unit_ms {
            (ms(s), ms(b), "ms")
        } else {
            (s.as_secs_f64(), b.as_secs_f64(), "s")
        };
        println!(
            "{name}: strata {sv:.1} {unit}, docker run -d {bv:.1} {unit}, ratio {:.2}",
            s.as_secs_f64() / b.as_secs_f64().max(1e-9)
        );
    };
    println!(
        "docker bench: image {}, {} cpus, {} MiB, {} sequential launches, {} at once",
        args.image, args.cpus, args.mem, args.launches, args.burst
    );
    let p50 = (
        strata.sequential.percentile(0.50),
        bare.sequential.percentile(0.50),
    );
    let p99 = (
        strata.sequential.percentile(0.99),
        bare.sequential.percentile(0.99),
    );
    line("launch_p50", p50.0, p50.1, true);
    line("launch_p99", p99.0, p99.1, true);
    line(
        &format!("burst_{}_all_running", args.burst),
        strata.burst,
        bare.burst,
        false,
    );
    Ok(Outcome {
        code: 0,
        figure: format!(
            "strata vs docker run -d: launch p50 {:.1} vs {:.1} ms, p99 {:.1} vs {:.1} ms, {} at once {:.1} vs {:.1} s",
            ms(p50.0),
            ms(p50.1),
            ms(p99.0),
            ms(p99.1),
            args.burst,
            strata.burst.as_secs_f64(),
            bare.burst.as_secs_f64()
        ),
    })
}

/// A master and one Docker agent in this process, and a framework measuring ACCEPT to
/// TASK_RUNNING.
async fn strata_side(args: &DockerBenchArgs, work: &Path) -> anyhow::Result<Figures> {
    let mut parts = Parts::new();
    let mut master_opts = strata_master::MasterOptions::new(work.join("master"));
    master_opts.allocation_interval = Duration::from_millis(20);
    let master_addr = parts.master(master_opts).await?;
    let mut opts = strata_agent::AgentOptions::new(master_addr.to_string(), work.join("agent"));
    opts.resources = strata_proto::Resources::parse("cpus:256;mem:1048576;disk:100000")?;
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
        let mut fw = Framework::subscribe(&master_addr.to_string(), "strata-bench-docker").await?;
        let mut sequential = Vec::new();
        for i in 0..args.launches {
            let ids = vec![format!("seq-{i}")];
            let took = fw.launch_and_wait_running(&ids, args).await?;
            sequential.push(took);
        }
        fw.kill_all().await?;
        let ids: Vec<String> = (0..args.burst).map(|i| format!("burst-{i}")).collect();
        let burst = fw.launch_and_wait_running(&ids, args).await?;
        fw.kill_all().await?;
        fw.teardown().await;
        Ok::<_, anyhow::Error>(Figures {
            sequential: Samples::new(sequential),
            burst,
        })
    }
    .await;
    parts.stop().await;
    result
}

impl Framework {
    /// Launches `ids` in one ACCEPT on the first offer that holds them all; returns the
    /// time from the ACCEPT until the last of them is TASK_RUNNING.
    async fn launch_and_wait_running(
        &mut self,
        ids: &[String],
        args: &DockerBenchArgs,
    ) -> anyhow::Result<Duration> {
        let each = strata_proto::Resources::cpus_mem(args.cpus, args.mem);
        let mut all = strata_proto::Resources::new();
        for _ in ids {
            all.add(&each);
        }
        let offer = loop {
            let fits = self.offers.iter().position(|o| {
                strata_proto::Resources::try_from_proto(&o.resources)
                    .is_ok_and(|r| r.contains(&all))
            });
            if let Some(i) = fits {
                break self.offers.remove(i);
            }
            self.next().await?;
        };
        let tasks: Vec<v1::TaskInfo> = ids
            .iter()
            .map(|id| v1::TaskInfo {
                task_id: id.clone(),
                name: id.clone(),
                agent_id: offer.agent_id.clone(),
                resources: each.to_proto(),
                command: Some(v1::CommandInfo {
                    shell: false,
                    value: "sleep".into(),
                    arguments: vec!["3600".into()],
                    ..Default::default()
                }),
                container: Some(v1::ContainerInfo {
                    r#type: v1::container_info::Type::Docker as i32,
                    docker: Some(v1::DockerInfo {
                        image: args.image.clone(),
                        ..Default::default()
                    }),
                    volumes: vec![],
                }),
                ..Default::default()
            })
            .collect();
        let started = Instant::now();
        self.client
            .accept(v1::AcceptRequest {
                header: Some(self.header.clone()),
                offer_ids: vec![offer.id.clone()],
                operations: vec![v1::Operation {
                    operation: Some(v1::operation::Operation::Launch(v1::Launch {
                        task_infos: tasks,
                    })),
                }],
                filters: Some(v1::Filters {
                    refuse_seconds: Some(0.0),
                }),
            })
            .await
            .context("accept")?;
        let mut waiting: HashMap<&str, ()> = ids.iter().map(|id| (id.as_str(), ())).collect();
        while !waiting.is_empty() {
            let Some(status) = self.next().await? else {
                continue;
            };
            match status.state() {
                v1::TaskState::TaskRunning => {
                    if waiting.remove(status.task_id.as_str()).is_some() {
                        self.running
                            .push((status.task_id.clone(), status.agent_id.clone()));
                    }
                }
                v1::TaskState::TaskStaging | v1::TaskState::TaskStarting => {}
                other => bail!(
                    "task {} went {}: {}",
                    status.task_id,
                    other.as_str_name(),
                    status.message
                ),
            }
        }
        Ok(started.elapsed())
    }
}

/// The same containers with the docker CLI.
async fn bare_side(args: &DockerBenchArgs, work: &Path, label: &str) -> anyhow::Result<Figures> {
    let sandbox = work.join("bare-sandbox");
    std::fs::create_dir_all(&sandbox)?;
    let quota = ((args.cpus * 100_000.0) as i64).max(1000).to_string();
    let shares = ((args.cpus * 1024.0) as i64).max(2).to_string();
    let mem = format!("{}m", args.mem as i64);
    let volume = format!("{}:/mnt/sandbox:rw", sandbox.display());
    let run_args: Vec<String> = [
        "run",
        "-d",
        "--init",
        "--network",
        "host",
        "--label",
        label,
        "--memory",
        &mem,
        "--memory-swap",
        &mem,
        "--cpu-period",
        "100000",
        "--cpu-quota",
        &quota,
        "--cpu-shares",
        &shares,
        "-v",
        &volume,
        "-w",
        "/mnt/sandbox",
        &args.image,
        "sleep",
        "3600",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run_args: Vec<&str> = run_args.iter().map(String::as_str).collect();

    let mut sequential = Vec::new();
    for _ in 0..args.launches {
        let started = Instant::now();
        docker_cli(&run_args).await?;
        sequential.push(started.elapsed());
    }
    docker_rm_labelled(label).await?;

    let started = Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..args.burst {
        let a: Vec<String> = run_args.iter().map(|s| s.to_string()).collect();
        runs.spawn(async move {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            docker_cli(&a).await
        });
    }
    while let Some(r) = runs.join_next().await {
        r.context("docker run task")??;
    }
    let burst = started.elapsed();
    docker_rm_labelled(label).await?;
    Ok(Figures {
        sequential: Samples::new(sequential),
        burst,
    })
}
