//! The run itself: the setup (agents registered, tasks RUNNING and acknowledged), then
//! each master restart timed until every agent is back, and the report.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;

use super::agent::{ConnGroup, SimAgent};
use super::framework::{Framework, FwReport};
use super::master::{listen, progress, start_master, wait_serving};
use super::{FailoverBenchArgs, Shared, Stage, endpoint, jitter};
use crate::Outcome;
use crate::stats::{Samples, ms};

/// The goal for `time_to_all_agents_back` at 10,000 agents and 100,000 tasks.
const GOAL: Duration = Duration::from_secs(2);
/// After all agents are back, how long the bench waits before reconciling.
const RECONCILE_SETTLE: Duration = Duration::from_millis(100);
/// How long the framework part of a restart may take before it is reported failed.
const FRAMEWORK_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn run(
    args: &FailoverBenchArgs,
    work: &std::path::Path,
    per_conn: u32,
    agent_res: strata_proto::Resources,
) -> anyhow::Result<Outcome> {
    let connections = args.agents.div_ceil(per_conn);
    let phase_timeout = Duration::from_secs(args.timeout);
    let master_dir = work.join("master");
    let listener = listen("127.0.0.1:0".parse()?)?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let mut master = start_master(listener, &master_dir);
    let http = reqwest::Client::new();
    wait_serving(&http, &url, Instant::now() + phase_timeout).await?;

    let (epoch_tx, epoch_rx) = watch::channel(1u64);
    let (registered_tx, mut registered_rx) = mpsc::unbounded_channel();
    let (stages_tx, mut stages_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        url: url.clone(),
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
        per_agent: args.tasks.div_ceil(args.agents),
        reports: reports_tx,
        reconcile: reconcile_rx,
        reconcile_on_subscribe: args.reconcile_on_subscribe,
    };
    let mut background = JoinSet::new();
    background.spawn(framework.run());

    eprintln!(
        "bench: master on {addr}, {} simulated agents over {connections} connections, {} tasks",
        args.agents, args.tasks
    );
    let setup_started = Instant::now();
    let resources = agent_res.to_proto();
    let mut group = None;
    for i in 0..args.agents {
        if i % per_conn == 0 {
            group = Some(Arc::new(ConnGroup {
                endpoint: endpoint(&url)?,
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
    while registered < args.agents as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, registered_rx.recv()).await {
            Ok(Some(_)) => registered += 1,
            _ => anyhow::bail!("only {registered} of {} agents registered", args.agents),
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
        agents == u64::from(args.agents) && tasks == u64::from(args.tasks),
        "before the restart the master shows {agents} agents and {tasks} tasks"
    );

    let mut samples = Vec::new();
    let mut framework_failures = 0u32;
    for restart in 1..=args.restarts {
        let epoch = u64::from(restart) + 1;
        let p = format!("restart_{restart}");

        // Stop the master; start a new one on the same address and work dir.
        let stopping = Instant::now();
        let _ = master.stop.send(());
        master
            .task
            .await
            .context("the master task panicked")?
            .context("the master stopped with an error")?;
        let stopped = stopping.elapsed();
        // The agents are other machines: what they do before dialling the new master
        // (notice the stream end, build their Register) is no load on it. Wait for
        // them here so that it does not count against the new master in this process.
        while shared.waiting.load(Ordering::Relaxed) < args.agents as usize {
            anyhow::ensure!(
                stopping.elapsed() < phase_timeout,
                "{p}: only {} of {} agents noticed the master stopped",
                shared.waiting.load(Ordering::Relaxed),
                args.agents
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shared.waiting.store(0, Ordering::Relaxed);
        let agents_waiting = stopping.elapsed();

        let listener = {
            let mut tries = 0;
            loop {
                match listen(addr) {
                    Ok(l) => break l,
                    Err(e) if tries < 100 => {
                        tries += 1;
                        tracing::debug!(error = %e, "address still in use");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => return Err(e).context("cannot listen on the master's address again"),
                }
            }
        };
        let bound = Instant::now();
        master = start_master(listener, &master_dir);
        let http = reqwest::Client::new();
        wait_serving(&http, &url, bound + phase_timeout).await?;
        let t0 = Instant::now();
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
            if agents == u64::from(args.agents) && tasks == u64::from(args.tasks) {
                break answered - t0;
            }
            anyhow::ensure!(
                answered < deadline,
                "{p}: after {:?}, {agents} of {} agents active and {tasks} of {} tasks running",
                answered - t0,
                args.agents,
                args.tasks
            );
            tokio::time::sleep_until((asked + Duration::from_millis(args.poll_ms)).into()).await;
        };

        // The agents' side: when each heard Registered (a little after the master
        // counted it ACTIVE).
        let mut latencies = Vec::new();
        let heard_by = Instant::now() + Duration::from_secs(5);
        while latencies.len() < args.agents as usize {
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

    let _ = master.stop.send(());
    let _ = master.task.await;
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
    Ok(Outcome {
        code: u8::from(framework_failures > 0),
        figure: format!(
            "time_to_all_agents_back {:.1} ms (median of {} restarts)",
            ms(median),
            samples.len()
        ),
    })
}
