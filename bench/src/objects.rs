//! `strata-bench objects`: what configs and secrets (issue 16) cost at launch.
//!
//! ```text
//! master (in this process, insecure) ◀─ Operator.CreateObject: 2 secrets, 1 config
//!   │ offers                         ▲ AgentLink.FetchObjects (per task, at launch)
//!   ▼                                │
//! framework (raw scheduler gRPC) ─ACCEPT (--batch tasks each)─▶ one real agent
//!                                     (process containerizer, no cgroups, tasks run
//!                                      as `nobody`: `sleep 30`), on a Tokio runtime
//!                                      and threads of its own
//! --rounds rounds, each: `plain` (no objects) then `objects` (each task: a secret as
//! a file on its tmpfs, a secret as a variable, a config as a file in the sandbox)
//! ```
//!
//! Each round launches `--tasks` tasks, `--batch` per ACCEPT (the next ACCEPT as soon
//! as the master offers what the last one left), measures every task from the ACCEPT
//! that launched it to its TASK_RUNNING and the round's throughput (tasks over the
//! time from its first ACCEPT to its last TASK_RUNNING), then kills every task and
//! waits for all to end. The master makes at most one offer per agent per tick of
//! its driver ([`strata_master::driver::TICK`], 100 ms), so with one agent a round's
//! throughput is at most `--batch` tasks per tick (100 tasks/s by default) whatever
//! the agent does; `--batch` as large as `--tasks` (one ACCEPT) measures the agent's
//! own launch rate instead. The figures of a mode are the medians over its rounds; the
//! closing lines are the ratios objects/plain.
//!
//! The agent runs on a runtime of its own (two workers, as an agent process on this
//! machine would have), so that its launch work neither holds up nor is held up by
//! the master's and the framework's tasks, and so that its CPU time can be read: the
//! sum over its threads (`/proc/self/task/*/stat`, named [`crate::real_agent::AGENT_THREAD`]). Besides,
//! the whole process's (`getrusage(RUSAGE_SELF)`: master, agent, framework) and its
//! reaped children's (`RUSAGE_CHILDREN`: the tasks' processes, whose pre-exec setup
//! binds the secrets). All are counted over each round, launch and kill, per task.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng;
use strata_proto::v1::{self, ObjectKind, object_ref, operator_client::OperatorClient};

use crate::Outcome;
use crate::cluster::{Parts, work_dir};
use crate::framework::Framework;
use crate::real_agent::{AgentThread, agent_cpu, cpu, loadavg};
use crate::stats::{Samples, ms};

#[derive(clap::Args, Debug)]
pub struct ObjectsBenchArgs {
    /// Tasks launched per round (each mode).
    #[arg(long, default_value_t = 100)]
    pub tasks: u32,
    /// Tasks per ACCEPT.
    #[arg(long, default_value_t = 10)]
    pub batch: u32,
    /// Rounds; each runs `plain` then `objects`.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Bytes of each secret and of the config.
    #[arg(long, default_value_t = 1024)]
    pub value_bytes: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

const TASK_CPUS: f64 = 0.01;
const TASK_MEM: f64 = 8.0;
const SECRET_FILE: &str = "bench-file-secret";
const SECRET_ENV: &str = "bench-env-secret";
const CONFIG: &str = "bench-config";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Objects,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Objects => "objects",
        }
    }
}

/// What one round of one mode measured.
#[derive(Debug, Clone, Copy)]
struct RoundFigures {
    throughput: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time of the agent's threads per task, ms.
    cpu_agent_ms: f64,
    /// CPU time of this process per task (master, agent, framework), ms.
    cpu_self_ms: f64,
    /// CPU time of reaped children per task (the tasks' processes), ms.
    cpu_children_ms: f64,
    /// Launches that failed (not in the other figures).
    failed: u32,
}

pub async fn bench_objects(args: ObjectsBenchArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.tasks >= 1, "--tasks must be at least 1");
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(
        (1..=500 * 1024).contains(&args.value_bytes),
        "--value-bytes must be 1 to 512000"
    );
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the objects bench runs real tasks as `nobody` and mounts their secrets' tmpfs: run it as root"
    );
    let work = work_dir("strata-bench-objects")?;
    let result = tokio::time::timeout(Duration::from_secs(args.timeout), run(&args, &work))
        .await
        .map_err(|_| anyhow::anyhow!("bench did not finish within {} s", args.timeout))
        .and_then(|r| r);
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn run(args: &ObjectsBenchArgs, work: &Path) -> anyhow::Result<Outcome> {
    let mut parts = Parts::new();
    let mut master_options = strata_master::MasterOptions::new(work.join("master"));
    master_options.allocation_interval = Duration::from_millis(50);
    let master = parts.master(master_options).await?;
    // Room for every task of a round, and then some: the tasks are `sleep`, no cgroup
    // holds them to these figures.
    let agent_resources = strata_proto::Resources::cpus_mem(
        (f64::from(args.tasks) * TASK_CPUS).ceil() + 1.0,
        f64::from(args.tasks) * TASK_MEM + 1024.0,
    );
    let mut opts = strata_agent::AgentOptions::new(master.to_string(), work.join("agent"));
    opts.resources = agent_resources.clone();
    opts.registration_backoff = Duration::from_millis(50);
    opts.containerizer = strata_agent::ContainerizerConfig::Process;
    // Process groups only (no cgroups, no pid namespace): a task with secret files
    // still gets its own mount namespace for them.
    opts.isolation.mode = strata_agent::isolation::IsolationMode::Explicit(vec![]);
    opts.service_proxy = None;
    let agent = AgentThread::start(opts)?;
    eprintln!(
        "bench: master on {master}, one agent (process containerizer, isolation none), {} tasks of `sleep 30` per round, {} per ACCEPT, {} rounds of plain then objects ({} B values)",
        args.tasks, args.batch, args.rounds, args.value_bytes
    );
    println!("load_before: {}", loadavg());
    println!(
        "throughput_cap: {:.0} tasks/s (one offer per master tick of {} ms, {} tasks per ACCEPT)",
        f64::from(args.batch) / strata_master::driver::TICK.as_secs_f64(),
        strata_master::driver::TICK.as_millis(),
        args.batch
    );

    let result = measure(args, &master.to_string(), &agent_resources).await;
    agent.stop().await;
    parts.stop().await;
    let (plain, objects) = result?;
    println!("load_after: {}", loadavg());
    Ok(report(args, &plain, &objects))
}

async fn measure(
    args: &ObjectsBenchArgs,
    master: &str,
    agent_resources: &strata_proto::Resources,
) -> anyhow::Result<(Vec<RoundFigures>, Vec<RoundFigures>)> {
    create_objects(master, args.value_bytes).await?;
    let mut fw = Framework::subscribe(master, "strata-bench-objects").await?;
    let (mut plain, mut objects) = (Vec::new(), Vec::new());
    let mut serial = 0u32;
    for round in 1..=args.rounds {
        for (mode, runs) in [(Mode::Plain, &mut plain), (Mode::Objects, &mut objects)] {
            fw.wait_for_whole_agent(agent_resources).await?;
            let agent_before = agent_cpu();
            let self_before = cpu(nix::sys::resource::UsageWho::RUSAGE_SELF);
            let children_before = cpu(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
            let (elapsed, latencies, failures) = fw.launch_round(args, mode, &mut serial).await?;
            fw.kill_all().await?;
            let agent_cpu = agent_cpu().saturating_sub(agent_before);
            let self_cpu =
                cpu(nix::sys::resource::UsageWho::RUSAGE_SELF).saturating_sub(self_before);
            let children_cpu =
                cpu(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).saturating_sub(children_before);
            let samples = Samples::new(latencies);
            let n = samples.len() as f64;
            // Per task that ran (divided by 1 when none did).
            let per = n.max(1.0);
            let figures = RoundFigures {
                throughput: n / elapsed.as_secs_f64().max(f64::EPSILON),
                p50_ms: ms(samples.percentile(0.5)),
                p99_ms: ms(samples.percentile(0.99)),
                cpu_agent_ms: ms(agent_cpu) / per,
                cpu_self_ms: ms(self_cpu) / per,
                cpu_children_ms: ms(children_cpu) / per,
                failed: failures.len() as u32,
            };
            let mut messages: Vec<&String> = failures.iter().collect();
            messages.sort();
            messages.dedup();
            for m in messages {
                let count = failures.iter().filter(|f| *f == m).count();
                println!(
                    "round {round} {}: {count} launch(es) failed: {m}",
                    mode.name()
                );
            }
            println!(
                "round {round} {}: {} tasks in {:.3} s, {:.0} tasks/s, launch {}, cpu per task: agent {:.2} ms, process {:.2} ms, tasks {:.2} ms",
                mode.name(),
                samples.len(),
                elapsed.as_secs_f64(),
                figures.throughput,
                samples.summary_ms(),
                figures.cpu_agent_ms,
                figures.cpu_self_ms,
                figures.cpu_children_ms
            );
            runs.push(figures);
        }
    }
    fw.teardown().await;
    Ok((plain, objects))
}

fn report(args: &ObjectsBenchArgs, plain: &[RoundFigures], objects: &[RoundFigures]) -> Outcome {
    for (mode, runs) in [(Mode::Plain, plain), (Mode::Objects, objects)] {
        let name = mode.name();
        let list = runs
            .iter()
            .map(|f| format!("{:.0}", f.throughput))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{name}_throughput: {:.0} tasks/s (runs: {list})",
            median(runs, |f| f.throughput)
        );
        println!(
            "{name}_launch_latency_p50: {:.1} ms",
            median(runs, |f| f.p50_ms)
        );
        println!(
            "{name}_launch_latency_p99: {:.1} ms",
            median(runs, |f| f.p99_ms)
        );
        println!(
            "{name}_cpu_per_task: agent {:.2} ms, process {:.2} ms (master, agent, framework), tasks {:.2} ms",
            median(runs, |f| f.cpu_agent_ms),
            median(runs, |f| f.cpu_self_ms),
            median(runs, |f| f.cpu_children_ms)
        );
        println!(
            "{name}_launch_failures: {} of {}",
            failed(runs),
            runs.len() as u32 * args.tasks
        );
    }
    let ratio = |f: fn(&RoundFigures) -> f64| median(objects, f) / median(plain, f);
    let p50 = ratio(|f| f.p50_ms);
    let p99 = ratio(|f| f.p99_ms);
    let throughput = ratio(|f| f.throughput);
    let extra = |f: fn(&RoundFigures) -> f64| median(objects, f) - median(plain, f);
    println!(
        "objects_extra_cpu_per_task: agent {:.2} ms, process {:.2} ms, tasks {:.2} ms",
        extra(|f| f.cpu_agent_ms),
        extra(|f| f.cpu_self_ms),
        extra(|f| f.cpu_children_ms)
    );
    println!("ratio_launch_latency_p50: {p50:.2} (objects/plain)");
    println!("ratio_launch_latency_p99: {p99:.2} (objects/plain)");
    println!("ratio_throughput: {throughput:.2} (objects/plain)");
    let failures = match (failed(plain), failed(objects)) {
        (0, 0) => String::new(),
        (p, o) => format!(
            "; FAILED launches: {p} plain, {o} objects of {} each",
            args.rounds * args.tasks
        ),
    };
    Outcome {
        code: 0,
        figure: format!(
            "objects/plain: p50 {p50:.2} ({:.1} vs {:.1} ms), p99 {p99:.2} ({:.1} vs {:.1} ms), throughput {throughput:.2} ({:.0} vs {:.0} tasks/s); agent CPU per task {:.2} vs {:.2} ms; medians of {} rounds of {} tasks, {} per ACCEPT, 2 secrets + 1 config of {} B per task{failures}",
            median(objects, |f| f.p50_ms),
            median(plain, |f| f.p50_ms),
            median(objects, |f| f.p99_ms),
            median(plain, |f| f.p99_ms),
            median(objects, |f| f.throughput),
            median(plain, |f| f.throughput),
            median(objects, |f| f.cpu_agent_ms),
            median(plain, |f| f.cpu_agent_ms),
            args.rounds,
            args.tasks,
            args.batch,
            args.value_bytes
        ),
    }
}

fn failed(runs: &[RoundFigures]) -> u32 {
    runs.iter().map(|f| f.failed).sum()
}

fn median(runs: &[RoundFigures], f: impl Fn(&RoundFigures) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Printable random bytes (a secret may go into a variable: UTF-8, no NUL).
fn value(len: usize) -> Vec<u8> {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .collect()
}

/// The two secrets and the config every `objects` task uses, through the operator API.
async fn create_objects(master: &str, bytes: usize) -> anyhow::Result<()> {
    let mut operator = OperatorClient::connect(format!("http://{master}"))
        .await
        .context("connect to the master's operator API")?;
    for (kind, name) in [
        (ObjectKind::Secret, SECRET_FILE),
        (ObjectKind::Secret, SECRET_ENV),
        (ObjectKind::Config, CONFIG),
    ] {
        operator
            .create_object(v1::CreateObjectRequest {
                kind: kind as i32,
                name: name.into(),
                data: value(bytes),
                update: false,
            })
            .await
            .with_context(|| format!("create {name}"))?;
    }
    Ok(())
}

/// The references of an `objects` task (the latest versions, pinned at ACCEPT).
fn references() -> Vec<v1::ObjectRef> {
    let reference = |kind: ObjectKind, name: &str, target| v1::ObjectRef {
        kind: kind as i32,
        name: name.into(),
        version: 0,
        target: Some(target),
    };
    vec![
        reference(
            ObjectKind::Secret,
            SECRET_FILE,
            object_ref::Target::File("bench-secret".into()),
        ),
        reference(
            ObjectKind::Secret,
            SECRET_ENV,
            object_ref::Target::Env("BENCH_SECRET".into()),
        ),
        reference(
            ObjectKind::Config,
            CONFIG,
            object_ref::Target::File("configs/bench.conf".into()),
        ),
    ]
}

impl Framework {
    /// Waits until the offers held cover the whole agent; when they are several, declines
    /// them and waits for the one offer of it all, so that every round starts alike.
    async fn wait_for_whole_agent(
        &mut self,
        agent_resources: &strata_proto::Resources,
    ) -> anyhow::Result<()> {
        let held = |offers: &[v1::Offer]| {
            let mut sum = strata_proto::Resources::new();
            for o in offers {
                if let Ok(r) = strata_proto::Resources::try_from_proto(&o.resources) {
                    sum.add(&r);
                }
            }
            sum
        };
        while !held(&self.offers).contains(agent_resources) {
            self.next().await?;
        }
        if self.offers.len() > 1 {
            let ids = self.offers.drain(..).map(|o| o.id).collect();
            self.client
                .decline(v1::DeclineRequest {
                    header: Some(self.header.clone()),
                    offer_ids: ids,
                    filters: Some(v1::Filters {
                        refuse_seconds: Some(0.0),
                    }),
                })
                .await
                .context("decline")?;
            while !held(&self.offers).contains(agent_resources) {
                self.next().await?;
            }
        }
        Ok(())
    }

    /// Launches `--tasks` tasks of `mode`, `--batch` per ACCEPT, each on the next offer
    /// as it comes; the time from the first ACCEPT to the last TASK_RUNNING, every
    /// running task's time from its ACCEPT to its TASK_RUNNING, and the messages of
    /// the launches that failed (counted, not retried).
    async fn launch_round(
        &mut self,
        args: &ObjectsBenchArgs,
        mode: Mode,
        serial: &mut u32,
    ) -> anyhow::Result<(Duration, Vec<Duration>, Vec<String>)> {
        let each = strata_proto::Resources::cpus_mem(TASK_CPUS, TASK_MEM);
        let mut launched = 0u32;
        let mut launched_at: HashMap<String, Instant> = HashMap::new();
        let mut latencies = Vec::with_capacity(args.tasks as usize);
        let mut first_accept: Option<Instant> = None;
        let mut failures = Vec::new();
        // Offers too small for one task, kept aside for the next round.
        let mut small = Vec::new();
        while latencies.len() + failures.len() < args.tasks as usize {
            while launched < args.tasks
                && let Some(offer) = self.offers.pop()
            {
                let mut left = strata_proto::Resources::try_from_proto(&offer.resources)?;
                let mut tasks = Vec::new();
                while launched < args.tasks
                    && tasks.len() < args.batch as usize
                    && left.contains(&each)
                {
                    left.subtract(&each);
                    launched += 1;
                    *serial += 1;
                    let id = format!("{}-{serial}", mode.name());
                    tasks.push(v1::TaskInfo {
                        task_id: id.clone(),
                        name: id,
                        agent_id: offer.agent_id.clone(),
                        resources: each.to_proto(),
                        command: Some(v1::CommandInfo {
                            shell: false,
                            value: "sleep".into(),
                            arguments: vec!["30".into()],
                            ..Default::default()
                        }),
                        objects: match mode {
                            Mode::Plain => vec![],
                            Mode::Objects => references(),
                        },
                        ..Default::default()
                    });
                }
                if tasks.is_empty() {
                    small.push(offer);
                    continue;
                }
                let now = Instant::now();
                first_accept.get_or_insert(now);
                for t in &tasks {
                    launched_at.insert(t.task_id.clone(), now);
                }
                self.client
                    .accept(v1::AcceptRequest {
                        header: Some(self.header.clone()),
                        offer_ids: vec![offer.id.clone()],
                        operations: vec![v1::Operation {
                            operation: Some(v1::operation::Operation::Launch(v1::Launch {
                                task_infos: tasks,
                            })),
                        }],
                        // What is left comes back in the next offer at once.
                        filters: Some(v1::Filters {
                            refuse_seconds: Some(0.0),
                        }),
                    })
                    .await
                    .context("accept")?;
            }
            let Some(status) = self.next().await? else {
                continue;
            };
            match status.state() {
                v1::TaskState::TaskRunning => {
                    if let Some(at) = launched_at.remove(&status.task_id) {
                        latencies.push(at.elapsed());
                        self.running
                            .push((status.task_id.clone(), status.agent_id.clone()));
                    }
                }
                v1::TaskState::TaskStaging | v1::TaskState::TaskStarting => {}
                other
                    if strata_proto::is_terminal(other)
                        && launched_at.remove(&status.task_id).is_some() =>
                {
                    failures.push(format!("{}: {}", other.as_str_name(), status.message));
                }
                other => bail!(
                    "task {} went {}: {}",
                    status.task_id,
                    other.as_str_name(),
                    status.message
                ),
            }
        }
        self.offers.extend(small);
        let elapsed = first_accept.map(|t| t.elapsed()).unwrap_or_default();
        Ok((elapsed, latencies, failures))
    }
}
