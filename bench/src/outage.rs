//! `strata-bench outage`: how long real agents take to come back after the master was
//! away. A master and N agents (the agent library with its real registration backoff
//! and its default flags; the fake containerizer, since no task runs) share this
//! process; the master stops for `--outage`, starts again on the same port and work
//! dir, and the bench times from the new master serving until every agent is
//! registered again (`strata_master_agents_active` on its `/metrics`).
//!
//! Goal: a few seconds however long the outage was (the registration backoff doubled
//! through an outage before, and a 6.4 s outage cost an agent 26.7 s).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Outcome;
use crate::cluster::{Parts, work_dir};
use crate::stats::Samples;

#[derive(clap::Args, Debug)]
pub struct OutageArgs {
    /// Agents to run (each with the agent's default registration backoff, 1s doubling
    /// to 1m).
    #[arg(long, default_value_t = 50)]
    pub agents: u32,
    /// How long the master stays away each time.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub outage: Duration,
    /// Outages to measure.
    #[arg(long, default_value_t = 2)]
    pub restarts: u32,
    /// Give up waiting for the agents after this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// A master in this process, stoppable on its own.
struct Master {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start_master(addr: SocketAddr, dir: &std::path::Path) -> anyhow::Result<Master> {
    // The old master's socket may linger a moment after it stopped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "port not free yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr} again")),
        }
    };
    let options = strata_master::MasterOptions::new(dir.to_path_buf());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        strata_master::serve(listener, options, async move {
            let _ = stopped.await;
        })
        .await
        .map_err(anyhow::Error::from)
    });
    Ok(Master { stop, task })
}

impl Master {
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("the master panicked")?
    }
}

/// Agents registered and connected, from the master's metrics (0 while it does not
/// answer).
async fn active_agents(http: &reqwest::Client, addr: SocketAddr) -> u64 {
    let Ok(resp) = http.get(format!("http://{addr}/metrics")).send().await else {
        return 0;
    };
    let Ok(text) = resp.text().await else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("strata_master_agents_active "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn wait_for_agents(
    http: &reqwest::Client,
    addr: SocketAddr,
    want: u64,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let active = active_agents(http, addr).await;
        if active >= want {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < timeout,
            "only {active} of {want} agents back after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn bench_outage(args: OutageArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.agents >= 1, "--agents must be at least 1");
    anyhow::ensure!(args.restarts >= 1, "--restarts must be at least 1");
    let dir = work_dir("strata-bench-outage")?;
    let master_dir = dir.join("master");
    let addr = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let mut master = Some(start_master(addr, &master_dir).await?);
    let mut parts = Parts::new();
    for i in 0..args.agents {
        let mut options =
            strata_agent::AgentOptions::new(addr.to_string(), dir.join(format!("agent-{i}")));
        options.containerizer = strata_agent::ContainerizerConfig::Fake {
            task_duration: Duration::from_secs(3600),
        };
        options.resources = strata_proto::Resources::parse("cpus:4;mem:4096")?;
        parts.agent(options).await?;
    }
    let http = reqwest::Client::new();
    let result = measure(&args, &http, addr, &master_dir, &mut master).await;
    parts.stop().await;
    if let Some(master) = master {
        let _ = master.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let samples = result?;
    let median = samples.percentile(0.5).as_secs_f64();
    let slowest = samples.percentile(1.0).as_secs_f64();
    println!("time_to_all_agents_back_median: {median:.2} s");
    println!("time_to_all_agents_back_max: {slowest:.2} s");
    Ok(Outcome {
        code: 0,
        figure: format!(
            "all {} agents back {median:.2} s (median), {slowest:.2} s (max) after a {:?} outage",
            args.agents, args.outage
        ),
    })
}

/// The outages, one after the other; `master` is the one running (none between a stop
/// and a start that failed).
async fn measure(
    args: &OutageArgs,
    http: &reqwest::Client,
    addr: SocketAddr,
    master_dir: &std::path::Path,
    master: &mut Option<Master>,
) -> anyhow::Result<Samples> {
    let want = u64::from(args.agents);
    wait_for_agents(http, addr, want, args.timeout).await?;
    println!("agents: {} (default registration backoff)", args.agents);
    println!("outage: {:?}", args.outage);
    let mut samples = Vec::new();
    for round in 1..=args.restarts {
        if let Some(m) = master.take() {
            m.stop().await?;
        }
        tokio::time::sleep(args.outage).await;
        *master = Some(start_master(addr, master_dir).await?);
        let back = wait_for_agents(http, addr, want, args.timeout).await?;
        println!(
            "restart {round}: all agents back {:.2} s after the master",
            back.as_secs_f64()
        );
        samples.push(back);
    }
    Ok(Samples::new(samples))
}
