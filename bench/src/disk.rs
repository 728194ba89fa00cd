//! `strata-bench disk`: what disk isolation (issue 17) costs: launch latency and the
//! agent's CPU with 200 tasks under a short `--container-disk-watch-interval`, against
//! disk isolation off, in one run.
//!
//! ```text
//! master (in this process) ◀── framework (raw scheduler gRPC, ACCEPTs of --batch tasks)
//!   │ offers                       │
//!   ▼                              ▼
//! mode `du`: one real agent (process containerizer, no cgroups, tasks as `nobody`),
//!            --container-disk-watch-interval --interval (1s), enforcing
//! mode `off`: a fresh agent, --container-disk-watch-interval 0 (disk isolation off)
//! each mode: --tasks tasks, each writes --files files of --file-bytes into its sandbox
//!            (shell builtins, no fork) and then sleeps; ACCEPT → TASK_RUNNING per task;
//!            then a steady --window with all running: CPU of the process and of the
//!            agent's threads over it; then every task is killed and the agent stopped
//! --rounds rounds (2), the order alternating: du, off, off, du, ...
//! ```
//!
//! Per mode: launch p50/p99 over every task of its rounds, CPU the mean of its rounds.
//!
//! The agent runs on a runtime of its own (two workers, its blocking pool, where the
//! du walks run, all threads named [`crate::real_agent::AGENT_THREAD`]): its CPU is the sum over those
//! threads (`/proc/self/task/*/stat`). The process's CPU (`getrusage(RUSAGE_SELF)`)
//! includes the master and the framework too, which do the same (nothing) in both
//! modes during the window; nothing is subtracted. Both are given as a share of one
//! core over the window.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strata_proto::v1;

use crate::Outcome;
use crate::cluster::{Parts, work_dir};
use crate::framework::Framework;
use crate::real_agent::{AgentThread, agent_cpu, cpu, loadavg};
use crate::stats::{Samples, ms};

#[derive(clap::Args, Debug)]
pub struct DiskBenchArgs {
    /// Tasks per mode.
    #[arg(long, default_value_t = 200)]
    pub tasks: u32,
    /// Files each task writes into its sandbox before it sleeps.
    #[arg(long, default_value_t = 50)]
    pub files: u32,
    /// Bytes of each file.
    #[arg(long, default_value_t = 4096)]
    pub file_bytes: u32,
    /// The agent's --container-disk-watch-interval in the `du` mode.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// The steady window over which CPU is measured, seconds.
    #[arg(long, default_value_t = 20)]
    pub window: u64,
    /// Tasks per ACCEPT. The master offers the rest at its next tick (100 ms), so 10
    /// is 100 launches/s, which one agent on two busy cores keeps up with; at 20 per
    /// ACCEPT launches queue in the agent and the latency measures the queue.
    #[arg(long, default_value_t = 10)]
    pub batch: u32,
    /// Rounds, the modes' order alternating (du, off, then off, du, ...), so that
    /// neither mode always runs first on a cold master; the figures pool the rounds.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
}

const TASK_CPUS: f64 = 0.01;
const TASK_MEM: f64 = 8.0;
/// Each task's `disk`, MB: far above what it writes (nothing is killed).
const TASK_DISK: f64 = 10.0;
/// After the last TASK_RUNNING, before the window: the tasks write their files.
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Du,
    Off,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Du => "du",
            Mode::Off => "off",
        }
    }
}

#[derive(Debug, Clone)]
struct Figures {
    latencies: Vec<Duration>,
    /// Share of one core, percent, over the window.
    cpu_process_pct: f64,
    cpu_agent_pct: f64,
    /// Tasks whose `/monitor/statistics` entry had `disk_used_bytes` after the window.
    measured: usize,
    /// Their mean usage, bytes.
    mean_used: f64,
}

pub async fn bench_disk(args: DiskBenchArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.tasks >= 1, "--tasks must be at least 1");
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(args.window >= 1, "--window must be at least 1 s");
    anyhow::ensure!(
        !args.interval.is_zero(),
        "--interval must be more than 0 (the `off` mode is the other one)"
    );
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the disk bench runs real tasks as `nobody`: run it as root"
    );
    let work = work_dir("strata-bench-disk")?;
    let result = tokio::time::timeout(Duration::from_secs(args.timeout), run(&args, &work))
        .await
        .map_err(|_| anyhow::anyhow!("bench did not finish within {} s", args.timeout))
        .and_then(|r| r);
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn run(args: &DiskBenchArgs, work: &std::path::Path) -> anyhow::Result<Outcome> {
    let mut parts = Parts::new();
    let mut master_options = strata_master::MasterOptions::new(work.join("master"));
    master_options.allocation_interval = Duration::from_millis(50);
    let master = parts.master(master_options).await?.to_string();
    let fs = strata_agent::disk::Filesystem::of(work)
        .map(|f| f.to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    eprintln!(
        "bench: master on {master}; per mode one agent (process containerizer, isolation none), {} tasks each writing {} files of {} B then `sleep 600`, {} per ACCEPT; CPU over {} s with all running; work dir on {fs}",
        args.tasks, args.files, args.file_bytes, args.batch, args.window
    );
    println!("load_before: {}", loadavg());
    let mut fw = Framework::subscribe(&master, "strata-bench-disk").await?;
    let mut results = Vec::new();
    for round in 1..=args.rounds {
        let order = if round % 2 == 1 {
            [Mode::Du, Mode::Off]
        } else {
            [Mode::Off, Mode::Du]
        };
        for mode in order {
            let figures = run_mode(args, mode, round, &master, work, &mut fw).await;
            match figures {
                Ok(f) => results.push((mode, f)),
                Err(e) => {
                    fw.teardown().await;
                    parts.stop().await;
                    return Err(e.context(format!("round {round}, mode {}", mode.name())));
                }
            }
        }
    }
    fw.teardown().await;
    parts.stop().await;
    println!("load_after: {}", loadavg());
    Ok(report(args, &results, &fs))
}

async fn run_mode(
    args: &DiskBenchArgs,
    mode: Mode,
    round: u32,
    master: &str,
    work: &std::path::Path,
    fw: &mut Framework,
) -> anyhow::Result<Figures> {
    let hostname = format!("bench-disk-{}-{round}", mode.name());
    let tasks = f64::from(args.tasks);
    let resources = strata_proto::Resources::parse(&format!(
        "cpus:{};mem:{};disk:{}",
        (tasks * TASK_CPUS).ceil() + 1.0,
        tasks * TASK_MEM + 1024.0,
        tasks * TASK_DISK + 1024.0
    ))?;
    let mut opts = strata_agent::AgentOptions::new(
        master,
        work.join(format!("agent-{}-{round}", mode.name())),
    );
    opts.resources = resources;
    opts.hostname = Some(hostname.clone());
    opts.registration_backoff = Duration::from_millis(50);
    opts.containerizer = strata_agent::ContainerizerConfig::Process;
    opts.isolation.mode = strata_agent::isolation::IsolationMode::Explicit(vec![]);
    opts.service_proxy = None;
    opts.disk_isolation.watch_interval = match mode {
        Mode::Du => args.interval,
        Mode::Off => Duration::ZERO,
    };
    let agent = AgentThread::start(opts)?;
    let result = measure(args, mode, round, &hostname, &agent, fw).await;
    let killed = fw.kill_all().await;
    agent.stop().await;
    let figures = result?;
    killed?;
    println!(
        "round {round} {}: {} tasks, launch {}, cpu over {} s: process {:.1}%, agent threads {:.1}% of one core; {} tasks with disk_used_bytes (mean {:.0} KiB)",
        mode.name(),
        figures.latencies.len(),
        Samples::new(figures.latencies.clone()).summary_ms(),
        args.window,
        figures.cpu_process_pct,
        figures.cpu_agent_pct,
        figures.measured,
        figures.mean_used / 1024.0
    );
    Ok(figures)
}

async fn measure(
    args: &DiskBenchArgs,
    mode: Mode,
    round: u32,
    hostname: &str,
    agent: &AgentThread,
    fw: &mut Framework,
) -> anyhow::Result<Figures> {
    let latencies = launch(args, mode, round, hostname, fw).await?;
    tokio::time::sleep(SETTLE).await;
    let window = Duration::from_secs(args.window);
    let process_before = cpu(nix::sys::resource::UsageWho::RUSAGE_SELF);
    let agent_before = agent_cpu();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let process = cpu(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .saturating_sub(process_before)
        .as_secs_f64();
    let agent_cpu = agent_cpu().saturating_sub(agent_before).as_secs_f64();
    let (measured, mean_used) = disk_statistics(agent).await?;
    if mode == Mode::Du && measured < args.tasks as usize {
        bail!(
            "disk isolation measured {measured} of {} tasks in /monitor/statistics",
            args.tasks
        );
    }
    Ok(Figures {
        latencies,
        cpu_process_pct: process / elapsed * 100.0,
        cpu_agent_pct: agent_cpu / elapsed * 100.0,
        measured,
        mean_used,
    })
}

/// Launches `--tasks` tasks on the agent named `hostname`, `--batch` per ACCEPT, each
/// batch on the next offer of it; every task's time from its ACCEPT to TASK_RUNNING.
async fn launch(
    args: &DiskBenchArgs,
    mode: Mode,
    round: u32,
    hostname: &str,
    fw: &mut Framework,
) -> anyhow::Result<Vec<Duration>> {
    let prefix = format!("{}{round}-", mode.name());
    let each = strata_proto::Resources::parse(&format!(
        "cpus:{TASK_CPUS};mem:{TASK_MEM};disk:{TASK_DISK}"
    ))?;
    let command = format!(
        "i=0; while [ $i -lt {} ]; do i=$((i+1)); printf '%{}s' x > f$i; done; exec sleep 600",
        args.files, args.file_bytes
    );
    let mut launched = 0u32;
    let mut launched_at = std::collections::HashMap::new();
    let mut latencies = Vec::with_capacity(args.tasks as usize);
    while latencies.len() < args.tasks as usize {
        // Offers of another agent (the last mode's, stopped) are not used.
        fw.offers.retain(|o| o.hostname == hostname);
        while launched < args.tasks
            && let Some(offer) = fw.offers.pop()
        {
            let mut left = strata_proto::Resources::try_from_proto(&offer.resources)?;
            let mut tasks = Vec::new();
            while launched < args.tasks && tasks.len() < args.batch as usize && left.contains(&each)
            {
                left.subtract(&each);
                launched += 1;
                let id = format!("{prefix}{launched}");
                tasks.push(v1::TaskInfo {
                    task_id: id.clone(),
                    name: id,
                    agent_id: offer.agent_id.clone(),
                    resources: each.to_proto(),
                    command: Some(v1::CommandInfo {
                        shell: true,
                        value: command.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            if tasks.is_empty() {
                continue;
            }
            let now = Instant::now();
            for t in &tasks {
                launched_at.insert(t.task_id.clone(), now);
            }
            fw.client
                .accept(v1::AcceptRequest {
                    header: Some(fw.header.clone()),
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
        }
        let Some(status) = fw.next().await? else {
            continue;
        };
        match status.state() {
            v1::TaskState::TaskRunning => {
                if let Some(at) = launched_at.remove(&status.task_id) {
                    latencies.push(at.elapsed());
                    fw.running
                        .push((status.task_id.clone(), status.agent_id.clone()));
                }
            }
            v1::TaskState::TaskStaging | v1::TaskState::TaskStarting => {}
            other if strata_proto::is_terminal(other) && !status.task_id.starts_with(&prefix) => {}
            other => bail!(
                "task {} went {}: {}",
                status.task_id,
                other.as_str_name(),
                status.message
            ),
        }
    }
    Ok(latencies)
}

/// How many tasks `/monitor/statistics` shows a `disk_used_bytes` for, and their mean.
async fn disk_statistics(agent: &AgentThread) -> anyhow::Result<(usize, f64)> {
    let url = format!("http://{}/monitor/statistics", agent.addr);
    let body: serde_json::Value = reqwest::get(&url)
        .await
        .with_context(|| format!("GET {url}"))?
        .json()
        .await
        .context("/monitor/statistics")?;
    let used: Vec<u64> = body
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["statistics"]["disk_used_bytes"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    let mean = used.iter().sum::<u64>() as f64 / used.len().max(1) as f64;
    Ok((used.len(), mean))
}

/// A mode's figures over its rounds: every launch, the mean CPU, the last count.
fn pooled(results: &[(Mode, Figures)], mode: Mode) -> Option<Figures> {
    let runs: Vec<&Figures> = results
        .iter()
        .filter(|(m, _)| *m == mode)
        .map(|(_, f)| f)
        .collect();
    let n = runs.len() as f64;
    let last = runs.last()?;
    Some(Figures {
        latencies: runs.iter().flat_map(|f| f.latencies.clone()).collect(),
        cpu_process_pct: runs.iter().map(|f| f.cpu_process_pct).sum::<f64>() / n,
        cpu_agent_pct: runs.iter().map(|f| f.cpu_agent_pct).sum::<f64>() / n,
        measured: last.measured,
        mean_used: last.mean_used,
    })
}

fn report(args: &DiskBenchArgs, results: &[(Mode, Figures)], fs: &str) -> Outcome {
    let (Some(du), Some(off)) = (pooled(results, Mode::Du), pooled(results, Mode::Off)) else {
        return Outcome {
            code: 1,
            figure: String::new(),
        };
    };
    let p = |f: &Figures, q: f64| ms(Samples::new(f.latencies.clone()).percentile(q));
    for (mode, f) in [(Mode::Du, &du), (Mode::Off, &off)] {
        let name = mode.name();
        println!("{name}_launch_latency_p50: {:.1} ms", p(f, 0.5));
        println!("{name}_launch_latency_p99: {:.1} ms", p(f, 0.99));
        println!("{name}_cpu_process: {:.1} % of one core", f.cpu_process_pct);
        println!(
            "{name}_cpu_agent_threads: {:.1} % of one core",
            f.cpu_agent_pct
        );
    }
    println!(
        "du_extra_cpu: process {:+.1} %, agent threads {:+.1} % of one core",
        du.cpu_process_pct - off.cpu_process_pct,
        du.cpu_agent_pct - off.cpu_agent_pct
    );
    println!(
        "ratio_launch_latency_p99: {:.2} (du/off)",
        p(&du, 0.99) / p(&off, 0.99)
    );
    Outcome {
        code: 0,
        figure: format!(
            "du every {:?} vs off, {} tasks x {} files of {} B, {} rounds (order alternating): launch p50 {:.1} vs {:.1} ms, p99 {:.1} vs {:.1} ms; CPU over {} s with all running (mean of rounds): process {:.1} vs {:.1} %, agent threads {:.1} vs {:.1} % of one core; {} tasks measured, mean {:.0} KiB each; work dir on {fs}",
            args.interval,
            args.tasks,
            args.files,
            args.file_bytes,
            args.rounds,
            p(&du, 0.5),
            p(&off, 0.5),
            p(&du, 0.99),
            p(&off, 0.99),
            args.window,
            du.cpu_process_pct,
            off.cpu_process_pct,
            du.cpu_agent_pct,
            off.cpu_agent_pct,
            du.measured,
            du.mean_used / 1024.0
        ),
    }
}
