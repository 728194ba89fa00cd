//! `strata run`: Strata's `mesos-execute`. Launches one task, reports its state
//! changes on stderr, streams its output, and exits with its exit status.
//!
//! ```text
//! strata run --master M [--cpus 0.5] [--mem 64] [--name N] [--env K=V]... -- CMD ARGS...
//!
//! Driver ──SUBSCRIBE──▶ master
//! offers ──▶ first one that fits ──▶ LAUNCH, SUPPRESS, decline the rest
//!        └─ none within --offer-timeout ──▶ "no offer fit ...; largest seen ..." exit 1
//! TASK_RUNNING ──▶ follower task polls GET <agent>/files/read (stdout, stderr) with a
//!                  growing offset and copies the output to our stdout / stderr
//! terminal ──▶ follower reads to the end ──▶ TEARDOWN ──▶ exit with the task's status
//! Ctrl-C ──▶ KILL the task (a second Ctrl-C tears down at once) ──▶ exit 130
//! ```
//!
//! One argument after `--` runs with `/bin/sh -c`; several are executed directly.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use strata_framework_sdk::{
    Driver, DriverHandle, DriverOptions, Resources, SandboxClient, Scheduler, SdkError,
    TaskBuilder, is_terminal, offer_ids, offer_resources, reason_of, state_of, v1,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Arguments of `strata run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The master's address (host:port).
    #[arg(long, default_value = "127.0.0.1:5050", env = "STRATA_MASTER")]
    pub master: String,
    /// CPUs for the task.
    #[arg(long, default_value_t = 0.5)]
    pub cpus: f64,
    /// Memory for the task, MiB.
    #[arg(long, default_value_t = 64.0)]
    pub mem: f64,
    /// Disk for the task, MiB.
    #[arg(long)]
    pub disk: Option<f64>,
    /// Task name; the task id is the name plus a random suffix.
    #[arg(long, default_value = "strata-run")]
    pub name: String,
    /// Environment variable for the task (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Role to subscribe with (default: "*").
    #[arg(long)]
    pub role: Option<String>,
    /// Run the task as this user (when the agent runs as root).
    #[arg(long)]
    pub user: Option<String>,
    /// Give up when no offer fits within this time (e.g. 30s, 2m, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub offer_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when the task is killed (Ctrl-C).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub kill_grace: Duration,
    // Docker tasks (`--image`, issue 4) add their container to the task built in
    // `task_builder`; nothing else here depends on how the task runs.
    /// The command: one argument runs with /bin/sh -c, several are executed directly.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

/// `500ms`, `30s`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not a duration like 500ms, 30s, 2m or 1h");
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad())
}

/// The task as the arguments describe it.
fn task_builder(args: &RunArgs, task_id: &str) -> anyhow::Result<TaskBuilder> {
    let mut task = TaskBuilder::new(task_id)
        .name(&args.name)
        .cpus(args.cpus)
        .mem(args.mem)
        .kill_grace(args.kill_grace);
    if let Some(disk) = args.disk {
        task = task.disk(disk);
    }
    if let Some(user) = &args.user {
        task = task.user(user);
    }
    for (k, v) in &args.env {
        task = task.env(k, v);
    }
    task = match args.command.as_slice() {
        [] => bail!("no command given: strata run [OPTIONS] -- CMD [ARGS...]"),
        [script] => task.shell(script),
        [program, rest @ ..] => task.exec(program).args(rest),
    };
    // Refuse bad numbers before talking to the master.
    task.build("check").context("invalid task")?;
    Ok(task)
}

/// What the scheduler and the Ctrl-C / timeout watcher share.
#[derive(Default)]
struct Progress {
    registered: bool,
    /// Set once the LAUNCH was accepted by the master.
    launched: bool,
    offers_seen: usize,
    /// The largest offer seen (by cpus, then mem) and its host, for the timeout message.
    largest: Option<(Resources, String)>,
    /// Set by the watcher when it stops the run (timeout, Ctrl-C before launch).
    failure: Option<String>,
    interrupted: bool,
}

type SharedProgress = Arc<Mutex<Progress>>;

fn lock(p: &SharedProgress) -> std::sync::MutexGuard<'_, Progress> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the task was launched.
struct Placed {
    agent_id: String,
    hostname: String,
    agent_address: String,
}

/// The output follower of a running task: tell it to finish, then await it.
struct Follower {
    finish: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The one-task scheduler.
struct RunOne {
    task: TaskBuilder,
    progress: SharedProgress,
    placed: Option<Placed>,
    follower: Option<Follower>,
    /// The task's terminal status.
    outcome: Option<v1::TaskStatus>,
    sandbox: SandboxClient,
}

impl RunOne {
    fn task_id(&self) -> &str {
        self.task.task_id()
    }

    fn start_following(&mut self, driver: &DriverHandle) {
        if self.follower.is_some() {
            return;
        }
        let (Some(placed), Some(framework_id)) = (&self.placed, driver.framework_id()) else {
            return;
        };
        let (finish, finished) = oneshot::channel();
        let task = tokio::spawn(follow(
            self.sandbox.clone(),
            placed.agent_address.clone(),
            framework_id,
            self.task_id().to_string(),
            finished,
        ));
        self.follower = Some(Follower { finish, task });
    }

    async fn stop_following(&mut self) {
        if let Some(follower) = self.follower.take() {
            let _ = follower.finish.send(());
            let mut task = follower.task;
            if tokio::time::timeout(Duration::from_secs(15), &mut task)
                .await
                .is_err()
            {
                eprintln!("strata run: gave up reading the task's output");
                task.abort();
            }
        }
    }
}

impl Scheduler for RunOne {
    async fn registered(&mut self, _driver: &DriverHandle, _framework_id: &str, _master_id: &str) {
        lock(&self.progress).registered = true;
    }

    async fn reregistered(&mut self, driver: &DriverHandle, _framework_id: &str, _master_id: &str) {
        eprintln!("strata run: re-subscribed to the master");
        if let Some(placed) = &self.placed {
            let task = v1::ReconcileTask {
                task_id: self.task_id().to_string(),
                agent_id: placed.agent_id.clone(),
            };
            let _ = driver.reconcile(vec![task]).await;
        }
    }

    async fn disconnected(&mut self, _driver: &DriverHandle) {
        eprintln!("strata run: lost the master; reconnecting");
    }

    async fn offers(&mut self, driver: &DriverHandle, offers: Vec<v1::Offer>) {
        {
            let mut progress = lock(&self.progress);
            progress.offers_seen += offers.len();
            for offer in &offers {
                let Ok(resources) = offer_resources(offer) else {
                    continue;
                };
                let bigger = match &progress.largest {
                    None => true,
                    Some((best, _)) => {
                        (resources.cpus(), resources.mem()) > (best.cpus(), best.mem())
                    }
                };
                if bigger {
                    progress.largest = Some((resources, offer.hostname.clone()));
                }
            }
        }
        if self.placed.is_some() {
            let _ = driver.decline(offer_ids(&offers), Some(3600.0)).await;
            return;
        }

        let mut chosen = None;
        for offer in &offers {
            match self.task.build_for(offer) {
                Ok(info) => {
                    chosen = Some((offer.clone(), info));
                    break;
                }
                Err(SdkError::DoesNotFit { .. }) => continue,
                Err(e) => {
                    lock(&self.progress).failure = Some(format!("cannot build the task: {e}"));
                    let _ = driver.teardown().await;
                    return;
                }
            }
        }
        let rest: Vec<String> = offers
            .iter()
            .filter(|o| chosen.as_ref().is_none_or(|(c, _)| c.id != o.id))
            .map(|o| o.id.clone())
            .collect();

        if let Some((offer, info)) = chosen {
            match driver.launch(vec![offer.id.clone()], vec![info]).await {
                Ok(()) => {
                    eprintln!(
                        "task {}: launching on agent {}",
                        self.task_id(),
                        offer.hostname
                    );
                    self.placed = Some(Placed {
                        agent_id: offer.agent_id.clone(),
                        hostname: offer.hostname.clone(),
                        agent_address: offer.agent_address.clone(),
                    });
                    lock(&self.progress).launched = true;
                    let _ = driver.suppress().await;
                }
                Err(e @ SdkError::Rpc(_)) => {
                    lock(&self.progress).failure =
                        Some(format!("the master refused the launch: {e}"));
                    let _ = driver.teardown().await;
                    return;
                }
                // Disconnected or timed out: wait for the next offers.
                Err(e) => eprintln!("strata run: launch failed ({e}); waiting for another offer"),
            }
        }
        if !rest.is_empty() {
            let refuse = if self.placed.is_some() { 3600.0 } else { 2.0 };
            let _ = driver.decline(rest, Some(refuse)).await;
        }
    }

    async fn status_update(&mut self, driver: &DriverHandle, status: v1::TaskStatus) {
        if status.task_id != self.task_id() || self.outcome.is_some() {
            return;
        }
        let state = state_of(&status);
        let host = self
            .placed
            .as_ref()
            .map(|p| p.hostname.as_str())
            .unwrap_or("?");
        let mut line = format!(
            "task {}: {} on agent {host}",
            status.task_id,
            state.as_str_name()
        );
        if !status.message.is_empty() {
            line.push_str(&format!(": {}", status.message));
        }
        eprintln!("{line}");

        if matches!(
            state,
            v1::TaskState::TaskRunning | v1::TaskState::TaskKilling
        ) || is_terminal(state)
        {
            self.start_following(driver);
        }
        if is_terminal(state) {
            self.stop_following().await;
            if state != v1::TaskState::TaskFinished {
                let mut why = format!("task {} {}", status.task_id, state.as_str_name());
                if let Some(code) = status.exit_status {
                    why.push_str(&format!(" with exit status {code}"));
                }
                if !status.message.is_empty() {
                    why.push_str(&format!(": {}", status.message));
                }
                why.push_str(&format!(" ({})", reason_of(&status).as_str_name()));
                eprintln!("strata run: {why}");
            }
            self.outcome = Some(status);
            // One task, one framework: remove it from the master now.
            let _ = driver.teardown().await;
        }
    }

    async fn error(&mut self, _driver: &DriverHandle, message: &str) {
        eprintln!("strata run: the master reported an error: {message}");
    }
}

/// Copies the task's stdout and stderr to ours, polling the agent with a growing
/// offset until told to finish, then reads both files to their end.
async fn follow(
    sandbox: SandboxClient,
    agent: String,
    framework_id: String,
    task_id: String,
    mut finish: oneshot::Receiver<()>,
) {
    let mut offsets = [0u64; 2];
    let mut idle_wait = Duration::from_millis(100);
    let mut finishing = false;
    let mut last_error = None;
    loop {
        let mut progressed = false;
        for (i, file) in ["stdout", "stderr"].into_iter().enumerate() {
            // A bounded number of chunks per round keeps both files moving.
            for _ in 0..64 {
                match sandbox
                    .read(&agent, &framework_id, &task_id, file, offsets[i])
                    .await
                {
                    Ok(chunk) if !chunk.data.is_empty() => {
                        offsets[i] = chunk.resume_offset();
                        progressed = true;
                        last_error = None;
                        let written = if i == 0 {
                            let mut out = std::io::stdout().lock();
                            out.write_all(chunk.data.as_bytes())
                                .and_then(|()| out.flush())
                        } else {
                            let mut err = std::io::stderr().lock();
                            err.write_all(chunk.data.as_bytes())
                                .and_then(|()| err.flush())
                        };
                        if written.is_err() {
                            return; // our own stdout is gone (closed pipe): stop copying
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        // Early on the agent may not know the task yet; retry quietly.
                        last_error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        if finishing {
            if let Some(e) = last_error {
                eprintln!("strata run: could not read the task's output: {e}");
            }
            return;
        }
        idle_wait = if progressed {
            Duration::from_millis(100)
        } else {
            (idle_wait * 2).min(Duration::from_secs(1))
        };
        tokio::select! {
            _ = &mut finish => finishing = true,
            _ = tokio::time::sleep(idle_wait) => {}
        }
    }
}

/// The exit code for a terminal status: 0 when finished, the task's own exit status
/// when it has one, 1 otherwise.
fn exit_code(status: &v1::TaskStatus) -> u8 {
    if state_of(status) == v1::TaskState::TaskFinished {
        return 0;
    }
    match status.exit_status {
        Some(code) if (1..=255).contains(&code) => code as u8,
        _ => 1,
    }
}

/// Why no offer was used, for the offer timeout.
fn no_offer_reason(progress: &Progress, needs: &str, waited: Duration) -> String {
    match &progress.largest {
        None => format!(
            "no offers arrived within {waited:?} (are any agents registered, with free resources?)"
        ),
        Some((largest, host)) => format!(
            "no offer fit {needs} within {waited:?}; the largest of {} offers seen was {largest} on {host}",
            progress.offers_seen
        ),
    }
}

/// Stops the run on the offer timeout and on Ctrl-C.
async fn watch(
    handle: DriverHandle,
    progress: SharedProgress,
    offer_timeout: Duration,
    task_id: String,
    grace: Duration,
    needs: String,
) {
    let deadline = tokio::time::sleep(offer_timeout);
    tokio::pin!(deadline);
    let mut deadline_passed = false;
    let mut interrupts = 0;
    loop {
        tokio::select! {
            _ = &mut deadline, if !deadline_passed => {
                deadline_passed = true;
                let reason = {
                    let p = lock(&progress);
                    // Before the first subscription the driver's own timeout speaks.
                    (p.registered && !p.launched).then(|| no_offer_reason(&p, &needs, offer_timeout))
                };
                if let Some(reason) = reason {
                    lock(&progress).failure = Some(reason);
                    let _ = handle.teardown().await;
                }
            }
            signal = tokio::signal::ctrl_c() => {
                if signal.is_err() {
                    return; // no signal handling on this platform: nothing to watch
                }
                interrupts += 1;
                let launched = {
                    let mut p = lock(&progress);
                    p.interrupted = true;
                    p.launched
                };
                if launched && interrupts == 1 {
                    eprintln!("strata run: killing task {task_id} (Ctrl-C again to stop waiting)");
                    if let Err(e) = handle.kill(&task_id, Some(grace)).await {
                        eprintln!("strata run: kill failed: {e}");
                    }
                } else {
                    lock(&progress).failure.get_or_insert_with(|| "interrupted".to_string());
                    // Stops the driver even when the call fails (say, while disconnected).
                    let _ = handle.teardown().await;
                }
            }
        }
    }
}

/// `strata run`: returns the process exit code.
pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let task_id = format!("{}-{}", args.name, &suffix[..8]);
    let task = task_builder(&args, &task_id)?;
    let mut needs = task.requested()?.to_string();
    if needs.is_empty() {
        needs = "no resources".into();
    }

    let framework = v1::FrameworkInfo {
        name: "strata-run".into(),
        roles: args.role.iter().cloned().collect(),
        // Long enough to ride out a master restart; every normal exit tears the
        // framework down, so this only matters if `strata run` itself is killed.
        failover_timeout_seconds: 30.0,
        capabilities: vec![v1::FrameworkCapability::TaskKillingState as i32],
        ..Default::default()
    };
    let options = DriverOptions {
        subscribe_timeout: Some(args.offer_timeout.max(Duration::from_secs(1))),
        ..DriverOptions::default()
    };
    let progress = SharedProgress::default();
    let scheduler = RunOne {
        task,
        progress: progress.clone(),
        placed: None,
        follower: None,
        outcome: None,
        sandbox: SandboxClient::new(),
    };
    let driver = Driver::new(args.master.clone(), framework, scheduler).with_options(options);
    let watcher = tokio::spawn(watch(
        driver.handle(),
        progress.clone(),
        args.offer_timeout,
        task_id,
        args.kill_grace,
        needs,
    ));
    let result = driver.run().await;
    watcher.abort();

    let (interrupted, failure) = {
        let p = lock(&progress);
        (p.interrupted, p.failure.clone())
    };
    let outcome = match result {
        Ok(scheduler) => scheduler.outcome,
        Err(SdkError::Aborted(_)) if interrupted => None,
        Err(e) => {
            return Err(e).context(format!(
                "cannot run the task via the master at {}",
                args.master
            ));
        }
    };
    match outcome {
        Some(status) if interrupted => Ok(if exit_code(&status) == 0 { 0 } else { 130 }),
        Some(status) => Ok(exit_code(&status)),
        None if interrupted => {
            eprintln!("strata run: interrupted");
            Ok(130)
        }
        None => bail!(failure.unwrap_or_else(|| "stopped before the task finished".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }

    #[test]
    fn exit_codes_follow_the_task() {
        let status = |state: v1::TaskState, code: Option<i32>| v1::TaskStatus {
            state: state as i32,
            exit_status: code,
            ..Default::default()
        };
        assert_eq!(exit_code(&status(v1::TaskState::TaskFinished, Some(0))), 0);
        assert_eq!(exit_code(&status(v1::TaskState::TaskFailed, Some(3))), 3);
        assert_eq!(exit_code(&status(v1::TaskState::TaskFailed, Some(0))), 1);
        assert_eq!(
            exit_code(&status(v1::TaskState::TaskKilled, Some(143))),
            143
        );
        assert_eq!(exit_code(&status(v1::TaskState::TaskLost, None)), 1);
        assert_eq!(exit_code(&status(v1::TaskState::TaskFailed, Some(-1))), 1);
    }
}
