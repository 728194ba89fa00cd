//! `pi`: a batch framework that estimates π by Monte Carlo across many tasks.
//!
//! ```text
//! cargo run --example pi -- --master 127.0.0.1:5050 --tasks 8 --samples 200000
//! # against a secure master (`strata local`: WORK is its work dir), or --insecure:
//! #   --ca-file WORK/master/tls/ca.crt --credential-file WORK/admin-credential.json
//! ```
//!
//! Each task is an `awk` program that draws K random points in the unit square and
//! prints how many fall inside the quarter circle. When a task finishes, the scheduler
//! reads its `stdout` from the agent that ran it (`GET /files/read` on the offer's
//! `agent_address`, through the SDK's `SandboxClient`), and when all M are in it prints
//! 4 · inside / (M · K).
//!
//! ```text
//! offers ──▶ pack pending tasks ──▶ launch (remember each task's agent address)
//! FINISHED ──▶ read stdout from that agent ──▶ parse the count
//!          all counts in? ──▶ teardown ──▶ print the estimate, exit 0
//! any other terminal state, or unreadable output ──▶ teardown ──▶ exit 1
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
#[path = "common/connection.rs"]
mod connection;

use strata_framework_sdk::{
    Driver, DriverHandle, DriverOptions, OfferPool, SandboxClient, Scheduler, SdkError,
    TaskBuilder, is_terminal, offer_ids, reason_of, state_of, v1,
};

/// Estimate π with a Monte Carlo simulation split across Strata tasks.
#[derive(Parser, Debug)]
#[command(name = "pi")]
struct Args {
    /// The master's address (host:port).
    #[arg(long, default_value = "127.0.0.1:5050", env = "STRATA_MASTER")]
    master: String,
    /// TLS and the credential (or --insecure).
    #[command(flatten)]
    connection: connection::Connection,
    /// How many tasks (M) to split the work across.
    #[arg(long, default_value_t = 8)]
    tasks: usize,
    /// Points each task samples (K).
    #[arg(long, default_value_t = 200_000)]
    samples: u64,
    /// CPUs per task.
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory per task, MiB.
    #[arg(long, default_value_t = 32.0)]
    mem: f64,
    /// Base random seed; task i uses seed + i. Random when not given.
    #[arg(long)]
    seed: Option<u32>,
    /// Give up (and tear the framework down) after this many seconds; 0 waits forever.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// Where a launched task runs.
struct Placed {
    index: usize,
    hostname: String,
    agent_address: String,
}

struct Pi {
    tasks: usize,
    samples: u64,
    seed: u32,
    cpus: f64,
    mem: f64,
    /// Indices of the tasks waiting for an offer.
    pending: VecDeque<usize>,
    /// Task id → where it runs.
    placed: HashMap<String, Placed>,
    /// Task index → points inside the quarter circle.
    results: BTreeMap<usize, u64>,
    suppressed: bool,
    sandbox: SandboxClient,
    failure: Option<String>,
}

impl Pi {
    fn task(&self, i: usize) -> TaskBuilder {
        // Some awks (mawk) take the seed as a C int, and may treat 0 specially: keep
        // every task's seed distinct, positive and below 2^31.
        let seed = 1 + (u64::from(self.seed) + i as u64) % ((1 << 31) - 2);
        let program =
            "BEGIN{srand(seed);n=0;for(i=0;i<k;i++){x=rand();y=rand();if(x*x+y*y<=1)n++};print n}";
        TaskBuilder::new(format!("pi-{i}"))
            .shell(format!(
                "awk -v seed={seed} -v k={} '{program}'",
                self.samples
            ))
            .cpus(self.cpus)
            .mem(self.mem)
    }

    async fn fail(&mut self, driver: &DriverHandle, reason: String) {
        self.failure.get_or_insert(reason);
        let _ = driver.teardown().await;
    }

    /// Reads and parses the count a finished task printed.
    async fn collect(&self, driver: &DriverHandle, task_id: &str) -> Result<u64, String> {
        let placed = self
            .placed
            .get(task_id)
            .ok_or("finished but never launched by us")?;
        let framework_id = driver.framework_id().ok_or("no framework id")?;
        let output = self
            .sandbox
            .read_to_end(&placed.agent_address, &framework_id, task_id, "stdout")
            .await
            .map_err(|e| e.to_string())?;
        let count: u64 = output
            .trim()
            .parse()
            .map_err(|_| format!("printed {:?}, not a count", output.trim()))?;
        if count > self.samples {
            return Err(format!("counted {count} of only {} points", self.samples));
        }
        Ok(count)
    }
}

impl Scheduler for Pi {
    async fn reregistered(&mut self, driver: &DriverHandle, _framework_id: &str, _master: &str) {
        self.suppressed = false;
        let _ = driver.reconcile(vec![]).await;
        if !self.pending.is_empty() {
            let _ = driver.revive().await;
        }
    }

    async fn offers(&mut self, driver: &DriverHandle, offers: Vec<v1::Offer>) {
        if self.pending.is_empty() {
            let _ = driver.decline(offer_ids(&offers), Some(60.0)).await;
            if !self.suppressed && driver.suppress().await.is_ok() {
                self.suppressed = true;
            }
            return;
        }
        let mut pool = OfferPool::new(offers);
        let mut indices = HashMap::new(); // task id → index, for this round
        while let Some(&i) = self.pending.front() {
            let task = self.task(i);
            match pool.place(&task) {
                Ok(Some(_)) => {
                    self.pending.pop_front();
                    indices.insert(task.task_id().to_string(), i);
                }
                Ok(None) => break,
                Err(e) => return self.fail(driver, format!("task {i} is invalid: {e}")).await,
            }
        }
        let placement = pool.into_placement();
        let unused = placement.unused_ids();
        for launch in placement.launches {
            let offer = launch.offer;
            let ids: Vec<String> = launch.tasks.iter().map(|t| t.task_id.clone()).collect();
            match driver.launch(vec![offer.id.clone()], launch.tasks).await {
                Ok(()) => {
                    println!("launched {} on {}", ids.join(", "), offer.hostname);
                    for id in ids {
                        let index = indices.get(&id).copied().unwrap_or_default();
                        self.placed.insert(
                            id,
                            Placed {
                                index,
                                hostname: offer.hostname.clone(),
                                agent_address: offer.agent_address.clone(),
                            },
                        );
                    }
                }
                Err(SdkError::Disconnected) => {
                    self.pending
                        .extend(ids.iter().filter_map(|id| indices.get(id)));
                }
                Err(e) => {
                    let reason = format!("launching on {} failed: {e}", offer.hostname);
                    return self.fail(driver, reason).await;
                }
            }
        }
        if !unused.is_empty() {
            let _ = driver.decline(unused, None).await;
        }
        if self.pending.is_empty() && !self.suppressed && driver.suppress().await.is_ok() {
            self.suppressed = true;
        }
    }

    async fn status_update(&mut self, driver: &DriverHandle, status: v1::TaskStatus) {
        let state = state_of(&status);
        if state == v1::TaskState::TaskFinished {
            let Some(index) = self.placed.get(&status.task_id).map(|p| p.index) else {
                return;
            };
            if self.results.contains_key(&index) {
                return; // a repeated update
            }
            match self.collect(driver, &status.task_id).await {
                Ok(count) => {
                    let host = self
                        .placed
                        .get(&status.task_id)
                        .map(|p| p.hostname.as_str())
                        .unwrap_or("?");
                    println!(
                        "[{}/{}] {} on {host}: {count} of {} points inside",
                        self.results.len() + 1,
                        self.tasks,
                        status.task_id,
                        self.samples
                    );
                    self.results.insert(index, count);
                    if self.results.len() == self.tasks {
                        let _ = driver.teardown().await;
                    }
                }
                Err(reason) => {
                    let reason = format!("cannot read the result of {}: {reason}", status.task_id);
                    self.fail(driver, reason).await;
                }
            }
        } else if is_terminal(state) {
            let reason = format!(
                "task {} ended {}{}: {} ({})",
                status.task_id,
                state.as_str_name(),
                status
                    .exit_status
                    .map(|c| format!(" with exit status {c}"))
                    .unwrap_or_default(),
                status.message,
                reason_of(&status).as_str_name()
            );
            self.fail(driver, reason).await;
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.tasks == 0 || args.samples == 0 {
        bail!("--tasks and --samples must be at least 1");
    }
    let seed = args
        .seed
        .unwrap_or_else(|| rand::random_range(1..1_000_000_000));
    let tls = args.connection.tls()?;
    let pi = Pi {
        tasks: args.tasks,
        samples: args.samples,
        seed,
        cpus: args.cpus,
        mem: args.mem,
        pending: (0..args.tasks).collect(),
        placed: HashMap::new(),
        results: BTreeMap::new(),
        suppressed: false,
        // The agents' files: HTTPS with the same CA and credential.
        sandbox: SandboxClient::with_tls(&tls)?,
        failure: None,
    };
    pi.task(0)
        .build("check")
        .context("invalid task resources")?;
    let framework = v1::FrameworkInfo {
        name: "pi".into(),
        failover_timeout_seconds: 60.0,
        ..Default::default()
    };
    let options = DriverOptions {
        subscribe_timeout: Some(Duration::from_secs(30)),
        tls,
        ..DriverOptions::default()
    };
    let driver = Driver::new(args.master.clone(), framework, pi).with_options(options);
    println!(
        "estimating pi with {} tasks x {} points (seed {seed})",
        args.tasks, args.samples
    );

    let handle = driver.handle();
    let timeout = args.timeout;
    let watcher = tokio::spawn(async move {
        let expired = async {
            if timeout == 0 {
                std::future::pending::<()>().await
            }
            tokio::time::sleep(Duration::from_secs(timeout)).await
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => eprintln!("pi: interrupted; tearing the framework down"),
            _ = expired => eprintln!("pi: timed out after {timeout}s; tearing the framework down"),
        }
        // Stops the driver even when the call fails (say, while disconnected).
        let _ = handle.teardown().await;
    });
    let result = driver.run().await;
    watcher.abort();
    let pi = result.context("the framework driver failed")?;
    if let Some(failure) = pi.failure {
        bail!(failure);
    }
    if pi.results.len() < pi.tasks {
        bail!(
            "stopped with {} of {} results in",
            pi.results.len(),
            pi.tasks
        );
    }
    let inside: u64 = pi.results.values().sum();
    let total = pi.tasks as u64 * pi.samples;
    let estimate = 4.0 * inside as f64 / total as f64;
    println!(
        "pi ≈ {estimate:.6} ({inside} of {total} points inside; off by {:.6})",
        (estimate - std::f64::consts::PI).abs()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pi: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
