//! `hello`: the smallest useful Strata framework, written against the SDK.
//!
//! ```text
//! cargo run --example hello -- --master 127.0.0.1:5050 --tasks 10 \\
//!     --ca-file WORK/master/tls/ca.crt --credential-file WORK/admin-credential.json
//! cargo run --example hello -- --master 127.0.0.1:5050 --tasks 10 --insecure  # an --insecure master
//! ```
//!
//! Launches N short shell tasks, packing as many into each offer as fit, declines the
//! offers it cannot use and suppresses offers once everything is launched. Exits 0 when
//! every task is TASK_FINISHED, and non-zero, with the reason, as soon as one fails, is
//! killed, is lost or is refused. `docs/writing-a-scheduler.md` walks through this file.
//!
//! ```text
//! offers ──▶ OfferPool (pack pending tasks) ──▶ launch per offer, decline the rest
//!                                               └─ all launched? suppress
//! status_update ──▶ FINISHED: count; all done? teardown ──▶ exit 0
//!               └─▶ any other terminal state: teardown ──▶ exit 1 with the reason
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
#[path = "common/connection.rs"]
mod connection;

use strata_framework_sdk::{
    Driver, DriverHandle, DriverOptions, OfferPool, Scheduler, SdkError, TaskBuilder, is_terminal,
    offer_ids, reason_of, state_of, v1,
};

/// Launch N short shell tasks on a Strata cluster and wait for all of them to finish.
#[derive(Parser, Debug)]
#[command(name = "hello")]
struct Args {
    /// The master's address (host:port).
    #[arg(long, default_value = "127.0.0.1:5050", env = "STRATA_MASTER")]
    master: String,
    /// TLS and the credential (or --insecure).
    #[command(flatten)]
    connection: connection::Connection,
    /// How many tasks to run.
    #[arg(long, default_value_t = 5)]
    tasks: usize,
    /// CPUs per task.
    #[arg(long, default_value_t = 0.1)]
    cpus: f64,
    /// Memory per task, MiB.
    #[arg(long, default_value_t = 32.0)]
    mem: f64,
    /// Give up (and tear the framework down) after this many seconds; 0 waits forever.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// The scheduler: which tasks still need an offer, which run where, how many finished.
struct Hello {
    total: usize,
    cpus: f64,
    mem: f64,
    /// Indices of the tasks waiting for an offer.
    pending: VecDeque<usize>,
    /// Task id → hostname of every launched task.
    launched: HashMap<String, String>,
    /// Ids of the tasks that reached TASK_FINISHED (a set: updates can repeat).
    finished: HashSet<String>,
    /// Whether offers are suppressed (everything launched).
    suppressed: bool,
    /// Why the run failed, when it did.
    failure: Option<String>,
}

impl Hello {
    fn new(total: usize, cpus: f64, mem: f64) -> Self {
        Hello {
            total,
            cpus,
            mem,
            pending: (0..total).collect(),
            launched: HashMap::new(),
            finished: HashSet::new(),
            suppressed: false,
            failure: None,
        }
    }

    /// The description of task `i`.
    fn task(&self, i: usize) -> TaskBuilder {
        TaskBuilder::new(format!("hello-{i}"))
            .shell(format!(
                "echo hello from task {i} on $(hostname); sleep 0.1"
            ))
            .cpus(self.cpus)
            .mem(self.mem)
    }

    /// Records a failure and removes the framework (killing whatever still runs);
    /// `Driver::run` then returns and `main` reports the failure.
    async fn fail(&mut self, driver: &DriverHandle, reason: String) {
        self.failure.get_or_insert(reason);
        if let Err(e) = driver.teardown().await {
            eprintln!("hello: could not tear the framework down: {e}");
        }
    }
}

impl Scheduler for Hello {
    async fn registered(&mut self, _driver: &DriverHandle, framework_id: &str, _master_id: &str) {
        println!("registered as framework {framework_id}; waiting for offers");
    }

    async fn reregistered(&mut self, driver: &DriverHandle, framework_id: &str, _master: &str) {
        println!("re-registered as framework {framework_id} after losing the master");
        // The master made its offers afresh and may have missed updates: ask for the
        // state of every task, and for offers again if some tasks still wait.
        self.suppressed = false;
        if let Err(e) = driver.reconcile(vec![]).await {
            eprintln!("hello: reconcile failed: {e}");
        }
        if !self.pending.is_empty() {
            let _ = driver.revive().await;
        }
    }

    async fn disconnected(&mut self, _driver: &DriverHandle) {
        println!("lost the master; reconnecting");
    }

    async fn offers(&mut self, driver: &DriverHandle, offers: Vec<v1::Offer>) {
        if self.pending.is_empty() {
            // Nothing to run: keep these resources away from us for a while.
            let _ = driver.decline(offer_ids(&offers), Some(60.0)).await;
            if !self.suppressed && driver.suppress().await.is_ok() {
                self.suppressed = true;
            }
            return;
        }

        // Pack as many pending tasks as fit, offer by offer.
        let mut pool = OfferPool::new(offers);
        let mut placed = HashMap::new(); // task id → index, for this round
        while let Some(&i) = self.pending.front() {
            let task = self.task(i);
            match pool.place(&task) {
                Ok(Some(_offer)) => {
                    self.pending.pop_front();
                    placed.insert(task.task_id().to_string(), i);
                }
                Ok(None) => break, // these offers are full
                Err(e) => return self.fail(driver, format!("task {i} is invalid: {e}")).await,
            }
        }
        let placement = pool.into_placement();
        let unused = placement.unused_ids();

        for launch in placement.launches {
            let host = launch.offer.hostname.clone();
            let ids: Vec<String> = launch.tasks.iter().map(|t| t.task_id.clone()).collect();
            match driver
                .launch(vec![launch.offer.id.clone()], launch.tasks)
                .await
            {
                Ok(()) => {
                    println!("launching {} on {host}", ids.join(", "));
                    for id in ids {
                        self.launched.insert(id, host.clone());
                    }
                }
                // The master never saw the call: these tasks wait for the next offers.
                Err(SdkError::Disconnected) => {
                    self.pending
                        .extend(ids.iter().filter_map(|id| placed.get(id)));
                }
                Err(e) => {
                    return self
                        .fail(driver, format!("launching on {host} failed: {e}"))
                        .await;
                }
            }
        }

        if !unused.is_empty() {
            let _ = driver.decline(unused, None).await;
        }
        if self.pending.is_empty() && !self.suppressed && driver.suppress().await.is_ok() {
            self.suppressed = true;
            println!("all {} tasks launched; suppressing offers", self.total);
        }
    }

    async fn status_update(&mut self, driver: &DriverHandle, status: v1::TaskStatus) {
        let state = state_of(&status);
        let host = self
            .launched
            .get(&status.task_id)
            .map(String::as_str)
            .unwrap_or("?");
        if state == v1::TaskState::TaskFinished {
            self.finished.insert(status.task_id.clone());
        }
        println!(
            "[{}/{} finished] {} {} on {host}",
            self.finished.len(),
            self.total,
            status.task_id,
            state.as_str_name()
        );
        if self.finished.len() == self.total {
            println!("all {} tasks finished", self.total);
            // Done: remove the framework from the master; Driver::run returns Ok.
            if let Err(e) = driver.teardown().await {
                eprintln!("hello: teardown failed: {e}");
            }
        } else if is_terminal(state) && state != v1::TaskState::TaskFinished {
            let mut reason = format!("task {} ended {}", status.task_id, state.as_str_name());
            if let Some(code) = status.exit_status {
                reason.push_str(&format!(" with exit status {code}"));
            }
            if !status.message.is_empty() {
                reason.push_str(&format!(": {}", status.message));
            }
            reason.push_str(&format!(" ({})", reason_of(&status).as_str_name()));
            self.fail(driver, reason).await;
        }
    }

    async fn error(&mut self, _driver: &DriverHandle, message: &str) {
        eprintln!("hello: the master reported an error: {message}");
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.tasks == 0 {
        println!("nothing to do: --tasks 0");
        return Ok(());
    }
    let framework = v1::FrameworkInfo {
        name: "hello".into(),
        // Keep our tasks through a short master or scheduler outage.
        failover_timeout_seconds: 60.0,
        ..Default::default()
    };
    let options = DriverOptions {
        subscribe_timeout: Some(Duration::from_secs(30)),
        ..DriverOptions::default()
    };
    // A secure master: its CA and our credential (or --insecure).
    let options = DriverOptions {
        tls: args.connection.tls()?,
        ..options
    };
    let hello = Hello::new(args.tasks, args.cpus, args.mem);
    // Refuse a bad --cpus/--mem before talking to the master.
    hello
        .task(0)
        .build("check")
        .context("invalid task resources")?;
    let driver = Driver::new(args.master.clone(), framework, hello).with_options(options);

    // Ctrl-C or the overall timeout tear the framework down, which ends `run`.
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
            _ = tokio::signal::ctrl_c() => eprintln!("hello: interrupted; tearing the framework down"),
            _ = expired => eprintln!("hello: timed out after {timeout}s; tearing the framework down"),
        }
        // Stops the driver even when the call fails (say, while disconnected).
        let _ = handle.teardown().await;
    });

    let result = driver.run().await;
    watcher.abort();
    let hello = result.context("the framework driver failed")?;
    if let Some(failure) = hello.failure {
        bail!(failure);
    }
    if hello.finished.len() < hello.total {
        bail!(
            "stopped with {} of {} tasks finished",
            hello.finished.len(),
            hello.total
        );
    }
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
            eprintln!("hello: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
