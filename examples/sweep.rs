//! `sweep`: one task per value of P (0 .. N-1), at most M running at once, failed
//! tasks tried again, every task's output gathered and printed as `P<TAB>output`.
//!
//! ```text
//! cargo run --example sweep -- --master 127.0.0.1:5050 --tasks 30 --max-running 5 --retries 2
//! # against a secure master (`strata local`: WORK is its work dir), or --insecure:
//! #   --ca-file WORK/master/tls/ca.crt --credential-file WORK/admin-credential.json
//! offers ──▶ launch while fewer than M run; nothing to launch now: decline 60 s, suppress
//! FINISHED ──▶ spawned SandboxClient read ──▶ driver.send(Output) ──▶ message; all in? teardown
//! FAILED, LOST, ... ──▶ pending again (a new task id), --retries times at most; revive
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
    TaskBuilder, is_terminal, state_of, v1,
};
use tokio::task::JoinSet;

/// Run a command once per parameter value on a Strata cluster and gather the outputs.
#[derive(Parser, Debug)]
struct Args {
    /// The master's address (host:port).
    #[arg(long, default_value = "127.0.0.1:5050", env = "STRATA_MASTER")]
    master: String,
    /// TLS and the credential (or --insecure).
    #[command(flatten)]
    connection: connection::Connection,
    /// How many parameter values, hence tasks: P = 0 .. N-1.
    #[arg(long, default_value_t = 30)]
    tasks: usize,
    /// At most this many tasks run at once.
    #[arg(long, default_value_t = 5)]
    max_running: usize,
    /// How many times a failed task is tried again.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Every task's shell command: `$P` is its parameter, `$ATTEMPT` its try (from 0).
    #[arg(long, default_value = "echo $((P * P))")]
    command: String,
}

/// A parameter and what its task printed: a spawned read sends it to the scheduler.
struct Output(usize, Result<String, SdkError>);

struct Sweep {
    args: Args,
    /// Parameters waiting for an offer.
    pending: VecDeque<usize>,
    /// Parameter → how many of its tries failed.
    failures: Vec<u32>,
    /// Task id → its parameter and its agent's address, for every task running.
    running: HashMap<String, (usize, String)>,
    /// Parameter → what its task printed.
    outputs: BTreeMap<usize, String>,
    sandbox: SandboxClient,
    /// The reads of finished tasks' stdout; they end with the scheduler.
    reads: JoinSet<()>,
    failure: Option<String>,
}

impl Sweep {
    async fn fail(&mut self, driver: &DriverHandle<Output>, reason: String) {
        self.failure.get_or_insert(reason);
        let _ = driver.teardown().await; // kills what still runs; Driver::run returns
    }
}

impl Scheduler<Output> for Sweep {
    async fn reregistered(&mut self, driver: &DriverHandle<Output>, _: &str, _: &str) {
        let _ = driver.reconcile(vec![]).await; // updates missed while away come again
    }

    async fn offers(&mut self, driver: &DriverHandle<Output>, offers: Vec<v1::Offer>) {
        let mut pool = OfferPool::new(offers);
        let mut placed = HashMap::new(); // task id → parameter, for this round
        while self.running.len() + placed.len() < self.args.max_running
            && let Some(&p) = self.pending.front()
        {
            // Each try has a task id of its own: an ended task's id (and sandbox) is not reused.
            let attempt = self.failures[p];
            let task = TaskBuilder::new(format!("sweep-{p}-{attempt}"))
                .shell(self.args.command.as_str())
                .env("P", p.to_string())
                .env("ATTEMPT", attempt.to_string())
                .cpus(0.1)
                .mem(32.0);
            match pool.place(&task) {
                Ok(Some(_)) => placed.insert(task.task_id().to_string(), p),
                Ok(None) => break, // these offers are full
                Err(e) => return self.fail(driver, format!("invalid task: {e}")).await,
            };
            self.pending.pop_front();
        }
        let placement = pool.into_placement();
        let unused = placement.unused_ids();
        for launch in placement.launches {
            let ids: Vec<String> = launch.tasks.iter().map(|t| t.task_id.clone()).collect();
            let (offer_ids, agent) = (vec![launch.offer.id], launch.offer.agent_address);
            match driver.launch(offer_ids, launch.tasks).await {
                Ok(()) => {
                    for id in ids {
                        let p = placed[&id];
                        self.running.insert(id, (p, agent.clone()));
                    }
                }
                // The master never saw the call: these tasks wait for the next offers.
                Err(SdkError::Disconnected) => self.pending.extend(ids.iter().map(|id| placed[id])),
                Err(e) => return self.fail(driver, format!("launch failed: {e}")).await,
            }
        }
        // Nothing more to launch for now: keep offers away until a slot frees (revive).
        let idle = self.pending.is_empty() || self.running.len() >= self.args.max_running;
        if !unused.is_empty() {
            let _ = driver.decline(unused, idle.then_some(60.0)).await;
        }
        if idle {
            let _ = driver.suppress().await;
        }
    }

    async fn status_update(&mut self, driver: &DriverHandle<Output>, status: v1::TaskStatus) {
        let state = state_of(&status);
        if !is_terminal(state) {
            return;
        }
        // Updates can come twice: only the first end of a running task counts.
        let Some((p, agent)) = self.running.remove(&status.task_id) else {
            return;
        };
        if state == v1::TaskState::TaskFinished {
            // Read the output off the driver's loop; it comes back through `message`.
            let (driver, sandbox, id) = (driver.clone(), self.sandbox.clone(), status.task_id);
            self.reads.spawn(async move {
                let fid = driver.framework_id().unwrap_or_default();
                let stdout = sandbox.read_to_end(&agent, &fid, &id, "stdout").await;
                let _ = driver.send(Output(p, stdout));
            });
        } else {
            let (id, name) = (&status.task_id, state.as_str_name());
            let ended = format!("{id} ended {name}: {}", status.message);
            self.failures[p] += 1;
            // TASK_ERROR: the task itself is invalid, and would be again.
            if state == v1::TaskState::TaskError || self.failures[p] > self.args.retries {
                return self.fail(driver, ended).await;
            }
            eprintln!("sweep: {ended}; trying again");
            self.pending.push_back(p);
        }
        // A slot is free: ask for offers again if tasks wait.
        if !self.pending.is_empty() {
            let _ = driver.revive().await;
        }
    }

    async fn message(&mut self, driver: &DriverHandle<Output>, Output(p, stdout): Output) {
        match stdout {
            Ok(text) => self.outputs.insert(p, text.trim_end().to_string()),
            Err(e) => return self.fail(driver, format!("no output for P={p}: {e}")).await,
        };
        let done = self.outputs.len();
        eprintln!("sweep: [{done}/{}] P={p} done", self.args.tasks);
        if done == self.args.tasks {
            let _ = driver.teardown().await;
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.tasks == 0 || args.max_running == 0 {
        bail!("--tasks and --max-running must be at least 1");
    }
    let framework = v1::FrameworkInfo {
        name: "sweep".into(),
        failover_timeout_seconds: 60.0,
        ..Default::default()
    };
    let tls = args.connection.tls()?;
    let options = DriverOptions {
        subscribe_timeout: Some(Duration::from_secs(30)),
        tls: tls.clone(),
        ..DriverOptions::default()
    };
    let master = args.master.clone();
    let sweep = Sweep {
        pending: (0..args.tasks).collect(),
        failures: vec![0; args.tasks],
        args,
        running: HashMap::new(),
        outputs: BTreeMap::new(),
        // The agents' files: HTTPS with the same CA and credential.
        sandbox: SandboxClient::with_tls(&tls)?,
        reads: JoinSet::new(),
        failure: None,
    };
    let driver = Driver::new(master, framework, sweep).with_options(options);

    let handle = driver.handle();
    let ctrl_c = tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = handle.teardown().await; // kills the tasks, ends driver.run() below
    });
    let sweep = driver.run().await.context("the framework driver failed")?;
    ctrl_c.abort();
    if let Some(failure) = sweep.failure {
        bail!(failure);
    }
    if sweep.outputs.len() < sweep.args.tasks {
        bail!("stopped before every output was in");
    }
    for (p, output) in &sweep.outputs {
        println!("{p}\t{output}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    // The SDK logs its warnings (a lost master, a failed acknowledgement) with `tracing`.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("sweep: error: {e:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
