//! `strata run`: Strata's `mesos-execute`. Launches one task, reports its state
//! changes on stderr, streams its output, and exits with its exit status.
//!
//! ```text
//! strata run --master M [--cpus 0.5] [--mem 64] [--name N] [--env K=V]... -- CMD ARGS...
//! strata run --image IMAGE [--network host|bridge|none] [-p PORT]... [--volume H:C[:ro]]...
//!            [--pull if-not-present|always|never] -- CMD ARGS...   (a Docker task, only
//!            on agents whose attribute `containerizers` lists docker)
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
    /// The master's address (host:port). Default: the CLI config's `master`, else
    /// 127.0.0.1:5050.
    #[arg(long, env = "STRATA_MASTER", value_name = "ADDR")]
    pub master: Option<String>,
    /// The CLI config (JSON: master, ca_file, principal, secret); default
    /// $XDG_CONFIG_HOME/strata/config.json, else ~/.config/strata/config.json (`strata
    /// local` writes it). TLS to the master and the agents with its CA and credential.
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Plain text and no credential, for a master started with --insecure.
    #[arg(
        long,
        env = "STRATA_INSECURE",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub insecure: bool,
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
    #[arg(long, default_value = "30s", value_parser = strata_proto::duration::parse)]
    pub offer_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when the task is killed (Ctrl-C), e.g. 3s.
    #[arg(long, default_value = "3s", value_parser = strata_proto::duration::parse)]
    pub kill_grace: Duration,
    /// Run the task in a Docker container of this image (on agents started with
    /// --containerizers process,docker).
    #[arg(long)]
    pub image: Option<String>,
    /// The container's network: host, bridge or none (default: host; bridge with -p).
    #[arg(long, value_parser = parse_network)]
    pub network: Option<v1::docker_info::Network>,
    /// Publish a container port on a host port taken from the offer (repeatable);
    /// `8080` or `53/udp`. The host port is in the task's PORT0, PORT1, ...
    #[arg(short = 'p', long = "publish", value_name = "PORT[/udp]", value_parser = parse_publish)]
    pub publish: Vec<(u16, String)>,
    /// Mount an agent path into the container: HOST:CONTAINER or HOST:CONTAINER:ro (repeatable).
    #[arg(long = "volume", value_name = "HOST:CONTAINER[:ro]", value_parser = parse_volume)]
    pub volumes: Vec<(String, String, bool)>,
    /// When the agent pulls the image: if-not-present (default), always or never.
    #[arg(long, value_parser = parse_pull)]
    pub pull: Option<v1::docker_info::PullPolicy>,
    /// The command: one argument runs with /bin/sh -c, several are executed directly.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_network(s: &str) -> Result<v1::docker_info::Network, String> {
    match s {
        "host" => Ok(v1::docker_info::Network::Host),
        "bridge" => Ok(v1::docker_info::Network::Bridge),
        "none" => Ok(v1::docker_info::Network::None),
        _ => Err(format!("'{s}' is not a network: use host, bridge or none")),
    }
}

fn parse_pull(s: &str) -> Result<v1::docker_info::PullPolicy, String> {
    match s {
        "if-not-present" => Ok(v1::docker_info::PullPolicy::IfNotPresent),
        "always" => Ok(v1::docker_info::PullPolicy::Always),
        "never" => Ok(v1::docker_info::PullPolicy::Never),
        _ => Err(format!(
            "'{s}' is not a pull policy: use if-not-present, always or never"
        )),
    }
}

fn parse_publish(s: &str) -> Result<(u16, String), String> {
    let (port, protocol) = s.split_once('/').unwrap_or((s, "tcp"));
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("'{s}' is not a container port like 8080 or 53/udp"))?;
    match protocol {
        "tcp" | "udp" => Ok((port, protocol.to_string())),
        _ => Err(format!("'{s}': the protocol must be tcp or udp")),
    }
}

fn parse_volume(s: &str) -> Result<(String, String, bool), String> {
    let bad = || format!("'{s}' is not HOST:CONTAINER or HOST:CONTAINER:ro (absolute paths)");
    let parts: Vec<&str> = s.split(':').collect();
    let (host, container, read_only) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        _ => return Err(bad()),
    };
    if !host.starts_with('/') || !container.starts_with('/') {
        return Err(bad());
    }
    Ok((host.to_string(), container.to_string(), read_only))
}

/// Whether the agent of `offer` runs Docker containers (its `containerizers`
/// attribute lists docker).
fn advertises_docker(offer: &v1::Offer) -> bool {
    offer.attributes.iter().any(|a| {
        a.name == strata_proto::container::CONTAINERIZERS_ATTRIBUTE
            && a.value.split(',').any(|c| c.trim() == "docker")
    })
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
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
    match &args.image {
        Some(image) => {
            task = task.docker_image(image);
            if let Some(network) = args.network {
                task = task.network(network);
            }
            for (port, protocol) in &args.publish {
                task = task.port_mapping_with(*port, protocol);
            }
            for (host, container, read_only) in &args.volumes {
                task = task.volume(host, container, *read_only);
            }
            if let Some(pull) = args.pull {
                task = task.pull_policy(pull);
            }
        }
        None if args.network.is_some()
            || !args.publish.is_empty()
            || !args.volumes.is_empty()
            || args.pull.is_some() =>
        {
            bail!(
                "--network, --publish, --volume and --pull are for Docker tasks: add --image IMAGE"
            )
        }
        None => {}
    }
    task = match args.command.as_slice() {
        [] => bail!("no command given: strata run [OPTIONS] -- CMD [ARGS...]"),
        [script] => task.shell(script),
        [program, rest @ ..] => task.exec(program).args(rest),
    };
    // Refuse bad numbers before talking to the master.
    if task.port_count() == 0 {
        task.build("check").context("invalid task")?;
    }
    Ok(task)
}

/// What the scheduler and the Ctrl-C / timeout watcher share.
#[derive(Default)]
struct Progress {
    registered: bool,
    /// Set once the LAUNCH was accepted by the master.
    launched: bool,
    offers_seen: usize,
    /// The task needs an agent that runs Docker containers...
    needs_docker: bool,
    /// ...and this many offers came from such agents.
    docker_offers_seen: usize,
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
    /// A launch whose ACCEPT timed out: the master may or may not have launched the
    /// task. Offers are declined, and the task is not launched again, until an update
    /// settles it (see [`not_launched`]): relaunching the same id would fail as a
    /// duplicate and tear down the task that does run.
    uncertain: Option<Placed>,
    follower: Option<Follower>,
    /// The task's terminal status.
    outcome: Option<v1::TaskStatus>,
    sandbox: SandboxClient,
}

impl RunOne {
    fn task_id(&self) -> &str {
        self.task.task_id()
    }

    /// Asks the master about the task, if it was (or may have been) launched.
    async fn reconcile(&self, driver: &DriverHandle) {
        if let Some(placed) = self.placed.as_ref().or(self.uncertain.as_ref()) {
            let task = v1::ReconcileTask {
                task_id: self.task_id().to_string(),
                agent_id: placed.agent_id.clone(),
            };
            let _ = driver.reconcile(vec![task]).await;
        }
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
        self.reconcile(driver).await;
    }

    async fn disconnected(&mut self, _driver: &DriverHandle) {
        eprintln!("strata run: lost the master; reconnecting");
    }

    async fn offers(&mut self, driver: &DriverHandle, offers: Vec<v1::Offer>) {
        {
            let mut progress = lock(&self.progress);
            progress.offers_seen += offers.len();
            progress.docker_offers_seen += offers.iter().filter(|o| advertises_docker(o)).count();
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
        if self.uncertain.is_some() {
            // Until the master says whether the last launch happened.
            let _ = driver.decline(offer_ids(&offers), Some(2.0)).await;
            return;
        }

        let mut chosen = None;
        let needs_docker = lock(&self.progress).needs_docker;
        for offer in &offers {
            if needs_docker && !advertises_docker(offer) {
                continue;
            }
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
                Err(e @ SdkError::Timeout { .. }) => {
                    // The master may have launched it: ask before launching again.
                    eprintln!(
                        "strata run: no answer to the launch ({e}); asking the master whether task {} started",
                        self.task_id()
                    );
                    self.uncertain = Some(Placed {
                        agent_id: offer.agent_id.clone(),
                        hostname: offer.hostname.clone(),
                        agent_address: offer.agent_address.clone(),
                    });
                    self.reconcile(driver).await;
                }
                // Not sent (disconnected): wait for the next offers.
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
        if self.follower.is_none() && not_launched(&status, self.uncertain.is_some()) {
            // The launch did not happen (the offer was gone, or the master does not
            // know the task after a launch that timed out): launch on another offer.
            eprintln!(
                "strata run: task {} was not launched ({}: {}); waiting for another offer",
                status.task_id,
                reason_of(&status).as_str_name(),
                status.message
            );
            self.placed = None;
            self.uncertain = None;
            lock(&self.progress).launched = false;
            let _ = driver.revive().await;
            return;
        }
        if let Some(placed) = self.uncertain.take() {
            // Any other news of the task: the launch that timed out did happen.
            self.placed = Some(placed);
            lock(&self.progress).launched = true;
            let _ = driver.suppress().await;
        }
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

/// Whether `status` says the task id was never launched, so launching it (again) is
/// safe: TASK_LOST or TASK_DROPPED because the ACCEPT's offer was gone, or — while a
/// launch is `uncertain` — the master's reconciliation answer for a task it does not
/// know (TASK_LOST here: `strata run` is not partition aware). A task that did run
/// answers with its own state (a task that ended stays known to the master until its
/// terminal update is acknowledged).
fn not_launched(status: &v1::TaskStatus, uncertain: bool) -> bool {
    use v1::TaskState::*;
    use v1::TaskStatusReason::*;
    let unknown = matches!(
        state_of(status),
        TaskLost | TaskDropped | TaskGone | TaskUnknown
    );
    unknown
        && match reason_of(status) {
            ReasonInvalidOffers => true,
            ReasonReconciliation => uncertain,
            _ => false,
        }
}

/// Copies chunks of `file` from `offset` on to `out`, moving `offset` along: at most
/// `max_chunks` of them, or (`None`) to the current end of the file. Returns whether
/// anything was copied, or why it stopped early: the agent failed, its offsets do
/// not advance (stop rather than read the same bytes forever), or `out` is gone.
async fn copy_chunks(
    sandbox: &SandboxClient,
    (agent, framework_id, task_id): (&str, &str, &str),
    file: &str,
    offset: &mut u64,
    max_chunks: Option<usize>,
    out: &mut (dyn Write + Send),
) -> Result<bool, CopyError> {
    let mut progressed = false;
    let mut chunks = 0;
    while max_chunks.is_none_or(|max| chunks < max) {
        chunks += 1;
        let chunk = sandbox
            .read(agent, framework_id, task_id, file, *offset)
            .await
            .map_err(|e| CopyError::Read(e.to_string()))?;
        if chunk.truncated_before(*offset) {
            // Truncated since the last read: from its start again, as `tail -f`.
            *offset = 0;
            continue;
        }
        if chunk.data.is_empty() {
            break;
        }
        let Some(next) = chunk.advance_from(*offset) else {
            return Err(CopyError::Read(format!(
                "the agent's {file} does not advance past offset {offset}"
            )));
        };
        out.write_all(chunk.data.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|_| CopyError::Closed)?;
        *offset = next;
        progressed = true;
        if chunk.eof == Some(true) {
            break;
        }
    }
    Ok(progressed)
}

/// Why [`copy_chunks`] stopped early.
#[derive(Debug)]
enum CopyError {
    /// Reading from the agent failed; the text says why.
    Read(String),
    /// Our own output is gone (closed pipe).
    Closed,
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
    let ids = (agent.as_str(), framework_id.as_str(), task_id.as_str());
    loop {
        let mut progressed = false;
        for (i, file) in ["stdout", "stderr"].into_iter().enumerate() {
            // A bounded number of chunks per round keeps both files moving; once the
            // task has ended, each file is read to its end.
            let max_chunks = (!finishing).then_some(64);
            let mut out: Box<dyn Write + Send> = if i == 0 {
                Box::new(std::io::stdout())
            } else {
                Box::new(std::io::stderr())
            };
            match copy_chunks(&sandbox, ids, file, &mut offsets[i], max_chunks, &mut out).await {
                Ok(copied) => {
                    progressed |= copied;
                    if copied {
                        last_error = None;
                    }
                }
                // Our own stdout is gone (closed pipe): stop copying.
                Err(CopyError::Closed) => return,
                // Early on the agent may not know the task yet; retry quietly.
                Err(CopyError::Read(e)) => last_error = Some(e),
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
    if progress.needs_docker && progress.offers_seen > 0 && progress.docker_offers_seen == 0 {
        return format!(
            "none of the {} offers seen within {waited:?} came from an agent that runs Docker containers (start agents with --containerizers process,docker and a running Docker engine)",
            progress.offers_seen
        );
    }
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
    let settings = crate::cli::Settings::resolve(
        &crate::cli::Choices {
            master: args.master.clone(),
            apps: None,
            insecure: args.insecure,
            config: args.config.clone(),
        },
        &crate::cli::config::process_env,
    )?;
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
        tls: settings.tls.clone(),
        ..DriverOptions::default()
    };
    let progress = SharedProgress::default();
    lock(&progress).needs_docker = args.image.is_some();
    let scheduler = RunOne {
        task,
        progress: progress.clone(),
        placed: None,
        uncertain: None,
        follower: None,
        outcome: None,
        sandbox: SandboxClient::with_tls(&settings.tls)?,
    };
    let driver = Driver::new(settings.master.clone(), framework, scheduler).with_options(options);
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
                settings.master
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

    /// `strata run` as clap parses it (the flags are `RunArgs`, flattened).
    #[derive(clap::Parser, Debug)]
    struct Run {
        #[command(flatten)]
        args: RunArgs,
    }

    fn run_flags(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        use clap::Parser;
        let mut argv = vec!["run"];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["--", "true"]);
        Run::try_parse_from(argv).map(|r| r.args)
    }

    #[test]
    fn duration_flags_take_the_one_duration_syntax() {
        let args = run_flags(&[]).unwrap();
        assert_eq!(
            (args.offer_timeout, args.kill_grace),
            (Duration::from_secs(30), Duration::from_secs(3))
        );
        let args = run_flags(&["--offer-timeout", "1m30s", "--kill-grace", "500ms"]).unwrap();
        assert_eq!(
            (args.offer_timeout, args.kill_grace),
            (Duration::from_secs(90), Duration::from_millis(500))
        );
        // A number without a unit is refused, with the form that is expected.
        let err = run_flags(&["--offer-timeout", "30"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--offer-timeout")
                && err.contains("invalid duration '30': '30' has no unit")
                && err.contains("e.g. 30s, 500ms, 2m or 1h30m"),
            "{err}"
        );
        let err = run_flags(&["--kill-grace=-1s"]).unwrap_err().to_string();
        assert!(err.contains("cannot be negative"), "{err}");
    }

    #[test]
    fn docker_flags() {
        assert_eq!(parse_publish("8080"), Ok((8080, "tcp".into())));
        assert_eq!(parse_publish("53/udp"), Ok((53, "udp".into())));
        assert!(parse_publish("0").is_err());
        assert!(parse_publish("80/sctp").is_err());
        assert_eq!(
            parse_volume("/a:/b:ro"),
            Ok(("/a".into(), "/b".into(), true))
        );
        assert_eq!(parse_volume("/a:/b"), Ok(("/a".into(), "/b".into(), false)));
        assert!(parse_volume("a:/b").is_err());
        assert!(parse_volume("/a:/b:x").is_err());
        assert_eq!(
            parse_network("bridge"),
            Ok(v1::docker_info::Network::Bridge)
        );
        assert!(parse_pull("sometimes").is_err());
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }

    fn status(state: v1::TaskState, reason: v1::TaskStatusReason) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: "t".into(),
            state: state as i32,
            reason: reason as i32,
            ..Default::default()
        }
    }

    #[test]
    fn only_a_launch_the_master_never_made_is_retried() {
        use v1::TaskState::*;
        use v1::TaskStatusReason::*;
        // The offer was gone when the ACCEPT arrived.
        assert!(not_launched(&status(TaskLost, ReasonInvalidOffers), false));
        assert!(not_launched(
            &status(TaskDropped, ReasonInvalidOffers),
            false
        ));
        // After an ACCEPT timed out, the master does not know the task.
        assert!(not_launched(&status(TaskLost, ReasonReconciliation), true));
        // ...but once the launch is known to have happened, LOST is the task's end.
        assert!(!not_launched(
            &status(TaskLost, ReasonReconciliation),
            false
        ));
        // The launch that timed out did happen: the task runs or ran.
        assert!(!not_launched(
            &status(TaskStaging, ReasonReconciliation),
            true
        ));
        assert!(!not_launched(&status(TaskRunning, ReasonUnspecified), true));
        assert!(!not_launched(
            &status(TaskFinished, ReasonReconciliation),
            true
        ));
        assert!(!not_launched(
            &status(TaskLost, ReasonAgentUnreachable),
            true
        ));
    }

    /// A fake agent serving `/files/read` for one file of `size` bytes in chunks of
    /// at most `chunk` bytes; with `stuck`, `next_offset` never moves.
    async fn fake_agent(size: usize, chunk: usize, stuck: bool) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let request = String::from_utf8_lossy(&request);
                    let offset: usize = request
                        .split(['?', '&', ' '])
                        .find_map(|kv| kv.strip_prefix("offset="))
                        .and_then(|o| o.parse().ok())
                        .unwrap_or(0);
                    let start = offset.min(size);
                    let end = (start + chunk).min(size);
                    let body = serde_json::json!({
                        "data": "x".repeat(end - start),
                        "offset": offset,
                        "next_offset": if stuck { start } else { end },
                        "eof": end == size,
                    })
                    .to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        addr.to_string()
    }

    #[tokio::test]
    async fn the_last_read_copies_the_whole_file_however_long() {
        // 100 chunks: more than one polling round (64 chunks) takes.
        let agent = fake_agent(100 * 10, 10, false).await;
        let sandbox = SandboxClient::new();
        let ids = (agent.as_str(), "fw", "t");
        let (mut offset, mut out) = (0u64, Vec::new());
        let copied = copy_chunks(&sandbox, ids, "stdout", &mut offset, Some(64), &mut out)
            .await
            .unwrap();
        assert!(copied);
        assert_eq!(
            (offset, out.len()),
            (640, 640),
            "a polling round is bounded"
        );
        copy_chunks(&sandbox, ids, "stdout", &mut offset, None, &mut out)
            .await
            .unwrap();
        assert_eq!(
            (offset, out.len()),
            (1000, 1000),
            "the last read reaches the end"
        );
    }

    #[tokio::test]
    async fn an_agent_whose_offsets_do_not_advance_stops_the_copy() {
        let agent = fake_agent(100, 10, true).await;
        let (mut offset, mut out) = (0u64, Vec::new());
        let sandbox = SandboxClient::new();
        let read = copy_chunks(
            &sandbox,
            (agent.as_str(), "fw", "t"),
            "stdout",
            &mut offset,
            None,
            &mut out,
        );
        let result = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("no endless loop");
        assert!(matches!(result, Err(CopyError::Read(_))), "{result:?}");
        assert!(out.is_empty(), "nothing copied twice");
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
