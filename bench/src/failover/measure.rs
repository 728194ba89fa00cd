//! The run itself: the setup (agents registered, tasks RUNNING and acknowledged), then
//! each master restart timed until every agent is back, and the report.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;

use strata_security::ClientTls;

use super::agent::{ConnGroup, SimAgent};
use super::framework::{Framework, FwReport};
use super::master::{MasterSpec, RunningMaster, cpu_time, progress, wait_serving};
use super::{FailoverBenchArgs, FailoverFigures, Shared, Stage, endpoint, jitter};
use crate::Outcome;
use crate::secure;
use crate::stats::{Samples, ms};

/// The issue's goal for `time_to_all_agents_back` at 10,000 agents and 100,000 tasks.
const GOAL: Duration = Duration::from_secs(2);
/// After all agents are back, how long the bench waits before reconciling.
const RECONCILE_SETTLE: Duration = Duration::from_millis(100);
/// How long the framework part of a restart may take before it is reported failed.
const FRAMEWORK_TIMEOUT: Duration = Duration::from_secs(30);

/// What `bench_failover` decided from the arguments and the open-files limit.
pub(super) struct Setup {
    /// The agents to simulate.
    pub(super) agents: u32,
    pub(super) per_conn: u32,
    pub(super) master_process: bool,
    /// The open-files limit a master process asks for.
    pub(super) nofile: u64,
}

/// The setup: a master (in this process or its own), the framework, `setup.agents`
/// simulated agents registered and `args.tasks` tasks launched through offers,
/// RUNNING and acknowledged. Prints the setup's lines.
pub(super) async fn start(
    args: &FailoverBenchArgs,
    setup: &Setup,
    work: &std::path::Path,
    agent_res: strata_proto::Resources,
) -> anyhow::Result<Cluster> {
    let n_agents = setup.agents;
    let per_conn = setup.per_conn;
    let connections = n_agents.div_ceil(per_conn);
    let phase_timeout = Duration::from_secs(args.timeout);
    let master_dir = work.join("master");

    // Secure: the credentials file, and the cluster CA made in the master's work dir
    // before it first starts (it loads it), so that the bench issues every agent's
    // certificate itself.
    let mut tls = ClientTls::insecure();
    let mut credentials = None;
    let mut certificates = Vec::new();
    if args.secure {
        let (path, credential) = secure::write_credentials(work)?;
        let prepared = strata_master::security::prepare(&master_dir, &secure::tls_options(&path))?;
        credentials = Some(path);
        tls = secure::user_tls(&master_dir, &credential)?;
        let issuing = Instant::now();
        let ca = prepared.ca;
        certificates = tokio::task::spawn_blocking(move || {
            (0..n_agents)
                .map(|_| {
                    let node = uuid::Uuid::new_v4();
                    ca.issue(
                        &format!("{}{node}", strata_security::principal::AGENT_CN_PREFIX),
                        &[],
                        Duration::from_secs(24 * 3600),
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await??;
        println!(
            "secure_agent_certificates_issued: {} in {:.3} s",
            certificates.len(),
            issuing.elapsed().as_secs_f64()
        );
    }
    let spec = MasterSpec {
        work_dir: master_dir.clone(),
        process: setup.master_process,
        credentials,
        nofile: setup.nofile,
    };
    let (master, addr) = RunningMaster::start(&spec, "127.0.0.1:0".parse()?).await?;
    if let Some(n) = master.nofile() {
        println!("master_rlimit_nofile: {n}");
        if n < setup.nofile {
            eprintln!(
                "bench: warning: the master process's open-files limit is {n}, below the {} this run may need",
                setup.nofile
            );
        }
    }
    let (http, url) = secure::http(&tls, addr)?;
    wait_serving(&http, &url, Instant::now() + phase_timeout).await?;

    let (epoch_tx, epoch_rx) = watch::channel(1u64);
    let (registered_tx, mut registered_rx) = mpsc::unbounded_channel();
    let (stages_tx, stages_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        addr: addr.to_string(),
        tls: tls.clone(),
        master: epoch_rx,
        jitter: Duration::from_millis(args.jitter_ms),
        acks: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
        waiting: AtomicUsize::new(0),
        registered: registered_tx,
        stages: stages_tx,
    });

    // The framework first, so that offers flow as agents arrive.
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let (reconcile_tx, reconcile_rx) = mpsc::unbounded_channel();
    let framework = Framework {
        shared: shared.clone(),
        tasks: args.tasks,
        per_agent: args.tasks.div_ceil(n_agents),
        reports: reports_tx,
        reconcile: reconcile_rx,
        reconcile_on_subscribe: args.reconcile_on_subscribe,
    };
    let mut background = JoinSet::new();
    background.spawn(framework.run());

    eprintln!(
        "bench: master on {addr}, {n_agents} simulated agents over {connections} connections, {} tasks",
        args.tasks
    );
    let setup_started = Instant::now();
    let resources = agent_res.to_proto();
    let mut group = None;
    let mut certificates = certificates.into_iter();
    for i in 0..n_agents {
        if i % per_conn == 0 {
            // Secure: the agent's own certificate (one agent per connection).
            let agent_tls = match certificates.next() {
                Some(issued) => ClientTls {
                    ca_pem: tls.ca_pem.clone(),
                    identity: Some((issued.cert_pem, issued.key_pem)),
                    credential: None,
                },
                None => ClientTls::insecure(),
            };
            group = Some(Arc::new(ConnGroup {
                endpoint: endpoint(&agent_tls, &addr.to_string())?,
                channel: Mutex::new(None),
            }));
        }
        let agent = SimAgent {
            index: i,
            id: String::new(),
            resources: resources.clone(),
            tasks: Vec::new(),
            prepared: None,
            group: group.clone().context("no connection group")?,
            shared: shared.clone(),
        };
        // The first registrations are spread over a second (a cluster coming up).
        background.spawn(async move {
            agent.run(jitter(Duration::from_secs(1))).await;
            Ok(())
        });
    }

    // Setup: all agents registered, all tasks RUNNING and acknowledged.
    let deadline = Instant::now() + phase_timeout;
    let mut registered = 0usize;
    while registered < n_agents as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, registered_rx.recv()).await {
            Ok(Some(_)) => registered += 1,
            _ => anyhow::bail!("only {registered} of {n_agents} agents registered"),
        }
    }
    let agents_up = setup_started.elapsed();
    println!("setup_agents_registered: {:.3} s", agents_up.as_secs_f64());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reports.recv()).await {
            Ok(Some(FwReport::SetupDone)) => break,
            Ok(Some(FwReport::Unexpected(u))) => anyhow::bail!("setup: unexpected update {u}"),
            Ok(Some(_)) => {}
            _ => anyhow::bail!("setup: the tasks did not all reach TASK_RUNNING"),
        }
    }
    while shared.acks.load(Ordering::Relaxed) < args.tasks as usize {
        anyhow::ensure!(
            Instant::now() < deadline,
            "setup: only {} of {} updates acknowledged",
            shared.acks.load(Ordering::Relaxed),
            args.tasks
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "setup_tasks_running_and_acknowledged: {:.3} s",
        setup_started.elapsed().as_secs_f64()
    );
    println!(
        "setup_failed_attempts: {}",
        shared.failures.swap(0, Ordering::Relaxed)
    );
    let (agents, tasks, _) = progress(&http, &url).await?;
    anyhow::ensure!(
        agents == u64::from(n_agents) && tasks == u64::from(args.tasks),
        "before the restart the master shows {agents} agents and {tasks} tasks"
    );

    Ok(Cluster {
        master,
        spec,
        tls,
        addr,
        http,
        url,
        shared,
        epoch_tx,
        registered_rx,
        stages_rx,
        reports,
        reconcile_tx,
        background,
        setup_time: setup_started.elapsed(),
    })
}

/// A cluster set up: the master serving, every agent registered, every task RUNNING
/// and acknowledged; what the restarts (or another bench) go on with.
pub(super) struct Cluster {
    pub(super) master: RunningMaster,
    pub(super) spec: MasterSpec,
    pub(super) tls: ClientTls,
    pub(super) addr: SocketAddr,
    /// A client for the master's HTTP endpoints, and its base URL.
    pub(super) http: reqwest::Client,
    pub(super) url: String,
    pub(super) shared: Arc<Shared>,
    /// The "detector": the epoch of the master the agents and framework talk to.
    pub(super) epoch_tx: watch::Sender<u64>,
    pub(super) registered_rx: mpsc::UnboundedReceiver<(u64, Instant)>,
    pub(super) stages_rx: mpsc::UnboundedReceiver<(u64, Stage, Instant)>,
    pub(super) reports: mpsc::UnboundedReceiver<FwReport>,
    pub(super) reconcile_tx: mpsc::UnboundedSender<f64>,
    /// The framework and the simulated agents.
    pub(super) background: JoinSet<anyhow::Result<()>>,
    /// From the first agent started to every task acknowledged.
    pub(super) setup_time: Duration,
}

impl Cluster {
    /// Stops the master and the simulated agents and framework.
    pub(super) async fn stop(mut self) -> anyhow::Result<()> {
        let stopped = self.master.stop().await;
        self.background.abort_all();
        while self.background.join_next().await.is_some() {}
        stopped
    }
}

pub(super) async fn run(
    args: &FailoverBenchArgs,
    setup: &Setup,
    work: &std::path::Path,
    agent_res: strata_proto::Resources,
) -> anyhow::Result<(Outcome, FailoverFigures)> {
    let Cluster {
        mut master,
        spec,
        tls,
        addr,
        url,
        shared,
        epoch_tx,
        mut registered_rx,
        mut stages_rx,
        mut reports,
        reconcile_tx,
        mut background,
        ..
    } = start(args, setup, work, agent_res).await?;
    let n_agents = setup.agents;
    let phase_timeout = Duration::from_secs(args.timeout);

    let mut samples = Vec::new();
    let (mut master_cpus, mut bench_cpus) = (Vec::new(), Vec::new());
    let mut framework_failures = 0u32;
    for restart in 1..=args.restarts {
        let epoch = u64::from(restart) + 1;
        let p = format!("restart_{restart}");

        // Stop the master; start a new one on the same address and work dir.
        let stopping = Instant::now();
        master.stop().await?;
        let stopped = stopping.elapsed();
        // The agents are other machines: what they do before dialling the new master
        // (notice the stream end, build their Register) is no load on it. Wait for
        // them here so that it does not count against the new master in this process.
        while shared.waiting.load(Ordering::Relaxed) < n_agents as usize {
            anyhow::ensure!(
                stopping.elapsed() < phase_timeout,
                "{p}: only {} of {n_agents} agents noticed the master stopped",
                shared.waiting.load(Ordering::Relaxed),
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shared.waiting.store(0, Ordering::Relaxed);
        let agents_waiting = stopping.elapsed();

        let bound = Instant::now();
        master = RunningMaster::start(&spec, addr)
            .await
            .context("cannot start the master again on its address")?
            .0;
        let (http, _) = secure::http(&tls, addr)?;
        wait_serving(&http, &url, bound + phase_timeout).await?;
        let t0 = Instant::now();
        let cpu_at_t0 = (cpu_time(master.pid()), cpu_time(None));
        // The detector: agents and framework learn of the new master now.
        let _ = epoch_tx.send(epoch);

        // Poll until every agent is ACTIVE with every task known.
        let deadline = t0 + phase_timeout;
        let mut polls = Vec::new();
        let back = loop {
            let asked = Instant::now();
            let (agents, tasks, _) = progress(&http, &url).await?;
            let answered = Instant::now();
            polls.push(answered - asked);
            if agents == u64::from(n_agents) && tasks == u64::from(args.tasks) {
                break answered - t0;
            }
            anyhow::ensure!(
                answered < deadline,
                "{p}: after {:?}, {agents} of {n_agents} agents active and {tasks} of {} tasks running",
                answered - t0,
                args.tasks
            );
            tokio::time::sleep_until((asked + Duration::from_millis(args.poll_ms)).into()).await;
        };
        // CPU time spent from t0 until all were back: the master's (when it runs
        // apart) and this process's (the simulated agents and framework, and the
        // master when it runs here).
        let master_cpu = master
            .pid()
            .map(|pid| cpu_time(Some(pid)).saturating_sub(cpu_at_t0.0));
        let bench_cpu = cpu_time(None).saturating_sub(cpu_at_t0.1);

        // The agents' side: when each heard Registered (a little after the master
        // counted it ACTIVE).
        let mut latencies = Vec::new();
        let heard_by = Instant::now() + Duration::from_secs(5);
        while latencies.len() < n_agents as usize {
            let left = heard_by.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, registered_rx.recv()).await {
                Ok(Some((e, at))) if e == epoch => latencies.push(at.saturating_duration_since(t0)),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        let latencies = Samples::new(latencies);
        let polls = Samples::new(polls);

        println!("{p}_old_master_stop: {:.1} ms", ms(stopped));
        println!(
            "{p}_agents_waiting_for_new_master: {:.1} ms after the stop began",
            ms(agents_waiting)
        );
        println!("{p}_new_master_startup: {:.1} ms", ms(t0 - bound));
        println!("{p}_agents_reregistered: {}", latencies.len());
        if let Some(cpu) = master_cpu {
            println!(
                "{p}_master_cpu_until_all_back: {:.0} ms (master process, user + system)",
                ms(cpu)
            );
            master_cpus.push(cpu);
        }
        println!(
            "{p}_bench_cpu_until_all_back: {:.0} ms (simulated agents and framework{})",
            ms(bench_cpu),
            if master_cpu.is_some() {
                ""
            } else {
                ", and the master"
            }
        );
        bench_cpus.push(bench_cpu);
        for (name, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            println!(
                "{p}_agent_reregistered_{name}: {:.1} ms",
                ms(latencies.percentile(q))
            );
        }
        let mut stages: HashMap<&str, Vec<Duration>> = HashMap::new();
        while let Ok((e, stage, at)) = stages_rx.try_recv() {
            if e == epoch {
                let name = match stage {
                    Stage::Dial => "dialled",
                    Stage::Connected => "connected",
                    Stage::Attached => "attached",
                };
                stages
                    .entry(name)
                    .or_default()
                    .push(at.saturating_duration_since(t0));
            }
        }
        for name in ["dialled", "connected", "attached"] {
            let v = Samples::new(stages.remove(name).unwrap_or_default());
            println!("{p}_agents_{name}: {}", v.summary_ms());
        }
        println!(
            "{p}_agents_reregistered_per_100ms: {}",
            latencies
                .histogram(Duration::from_millis(100))
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!(
            "{p}_metrics_polls: {} (p50 {:.2} ms, max {:.2} ms)",
            polls.len(),
            ms(polls.percentile(0.5)),
            ms(polls.percentile(1.0))
        );
        println!("{p}_time_to_all_agents_back: {:.1} ms", ms(back));

        // The framework: re-subscribed, then a full reconciliation, and every task
        // confirmed RUNNING. A failure here is reported, and fails the run at the end.
        let mut unexpected = Vec::new();
        let fw_deadline = Instant::now() + phase_timeout.min(FRAMEWORK_TIMEOUT);
        let mut next_report = async || {
            let left = fw_deadline.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, reports.recv())
                .await
                .ok()
                .flatten()
        };
        // Let the master's own updates for the tasks that came back reach the
        // framework first: they are told from the answers by their timestamps.
        tokio::time::sleep(RECONCILE_SETTLE).await;
        let reconcile_sent = Instant::now();
        let since = strata_proto::now_unix_seconds() - RECONCILE_SETTLE.as_secs_f64() / 2.0;
        let _ = reconcile_tx.send(since);
        let (mut confirmed, mut reconciled) = (false, false);
        while !(confirmed && reconciled) {
            let Some(report) = next_report().await else {
                break;
            };
            match report {
                FwReport::Subscribed(e, at) if e == epoch => {
                    println!("{p}_framework_resubscribed: {:.1} ms", ms(at - t0));
                }
                FwReport::AllConfirmed(e, at) if e == epoch => {
                    println!("{p}_framework_all_tasks_confirmed: {:.1} ms", ms(at - t0));
                    confirmed = true;
                }
                FwReport::Reconciled(at) => {
                    println!(
                        "{p}_implicit_reconcile_{}_tasks: {:.1} ms",
                        args.tasks,
                        ms(at - reconcile_sent)
                    );
                    reconciled = true;
                }
                FwReport::Unexpected(u) => unexpected.push(u),
                _ => {}
            }
        }
        if !(confirmed && reconciled && unexpected.is_empty()) {
            framework_failures += 1;
        }
        if !confirmed {
            println!("{p}_framework_all_tasks_confirmed: failed (not every task confirmed)");
        }
        if !reconciled {
            println!("{p}_implicit_reconcile: failed (not every task answered)");
        }
        println!("{p}_unexpected_updates: {}", unexpected.len());
        println!(
            "{p}_failed_attempts: {}",
            shared.failures.swap(0, Ordering::Relaxed)
        );
        for u in unexpected.iter().take(5) {
            eprintln!("bench: unexpected update: {u}");
        }
        samples.push(back);
    }

    if let Err(e) = master.stop().await {
        eprintln!("bench: {e:#}");
    }
    background.abort_all();
    while background.join_next().await.is_some() {}

    let samples = Samples::new(samples);
    let median = samples.percentile(0.5);
    println!(
        "goal time_to_all_agents_back < {} ms (Mesos 1.5: about 4500 ms in-process): {}",
        GOAL.as_millis(),
        if median < GOAL { "met" } else { "NOT met" }
    );
    if framework_failures > 0 {
        eprintln!(
            "bench: the framework's side failed in {framework_failures} of {} restarts (see above)",
            samples.len()
        );
    }
    println!("time_to_all_agents_back: {:.1} ms", ms(median));
    let figures = FailoverFigures {
        agents: n_agents,
        median_ms: ms(median),
        master_cpu_ms: (!master_cpus.is_empty())
            .then(|| ms(Samples::new(master_cpus).percentile(0.5))),
        bench_cpu_ms: ms(Samples::new(bench_cpus).percentile(0.5)),
    };
    let outcome = Outcome {
        code: u8::from(framework_failures > 0),
        figure: format!(
            "time_to_all_agents_back {:.1} ms (median of {} restarts{})",
            ms(median),
            samples.len(),
            if args.secure { ", secure" } else { "" }
        ),
    };
    Ok((outcome, figures))
}
