//! The running container framework as an actor, in the shape of the master's driver:
//! one task (the [`Framework`]) owns the sans-IO [`Engine`] and its [`StateStore`]; App API
//! handlers and the SDK scheduler callbacks send it [`Command`]s, each with a oneshot
//! reply where the caller needs an answer; an [`Executor`], run beside it in the same
//! future, carries the core's actions out against the master, in the order the core
//! produced them, so that API answers never wait for the master.
//!
//! ```text
//!  App API handlers ──Call / Read (bounded)──────▶ ┌─────────────┐ ─writes─▶ StateStore (redb, one commit per command)
//!  SDK callbacks ──Event (bounded; awaits reply)─▶ │ framework   │
//!  interval (--tick) ──tick, when connected──────▶ │ task: Engine  │ ─Vec<Action> (bounded)─▶ executor ─▶ master
//!  executor ──Feedback (unbounded, argued)───────▶ └─────────────┘   (launch, decline, kill, revive, reconcile)
//! ```
//!
//! Every command runs the core, persists what it changed in one transaction, answers
//! the caller, and only then hands the actions to the executor: nothing goes out that
//! is not recorded.
//!
//! **A write that fails** (a full disk) changes nothing: the core is put back as the
//! store holds it ([`Engine::revert`], from the [`Persisted`] copy), and
//! - an App API change is answered 503 with the store's error, and is not made;
//! - a launch is not sent (the task it would start is not recorded, so nobody could
//!   kill, replace or recognise it after a restart): its offer is declined instead, so
//!   the resources go back to the master; kills are not sent either (the task is not
//!   marked as being killed, so its end would count as a failure); the plans ask for
//!   both again on a later tick;
//! - a status update is not acknowledged, so the agent sends it again later;
//! - declines, revives, suppresses and reconciliations still go out: they depend on
//!   nothing recorded.
//!
//! Reads never touch the store, so GETs keep being answered. The first failure is
//! logged as an error, the recovery once as info, the failures between at debug. Each
//! later write tries the store again (reopening it), so the framework recovers on its
//! own once there is room.

use std::time::Duration;

use strata_framework_sdk::{DriverHandle, Scheduler, SdkError};
use strata_proto::v1;
use tokio::sync::{mpsc, oneshot};

use super::engine::{Action, ApiError, Engine, KeptVersions, ObjectVersions, Persisted};
use super::records::now;
use super::spec::AppSpec;
use super::store::{StateStore, StoreError};
use super::view::{AppTaskView, AppView};

/// Commands waiting for the framework task. When full, API handlers and SDK callbacks
/// wait: back-pressure instead of unbounded memory.
pub const COMMAND_BUFFER: usize = 1024;
/// Batches of actions waiting for the executor. When full (the master is slow to
/// answer), the framework task waits before taking the next command.
pub const ACTION_BUFFER: usize = 1024;
/// How long the offer of a launch that could not be recorded is refused (the master's
/// default): short, so launching resumes soon after the store recovers.
pub const UNRECORDED_REFUSE_SECONDS: f64 = 5.0;

/// A change asked through the App API.
#[derive(Debug)]
pub enum AppCall {
    /// Create (`create_only`) or update an app.
    Deploy {
        spec: Box<AppSpec>,
        create_only: bool,
    },
    Scale {
        id: String,
        instances: u32,
    },
    Restart {
        id: String,
    },
    /// Deploy an earlier version again (`None`: the one before the current one).
    Rollback {
        id: String,
        version: Option<String>,
    },
    Destroy {
        id: String,
        /// Also destroy a resident app's volumes and release its reservations.
        wipe: bool,
    },
    KillTask {
        id: String,
    },
}

/// The answer to an [`AppCall`].
#[derive(Debug)]
pub enum Answer {
    App(Box<AppView>),
    Task(Box<AppTaskView>),
}

/// Why an [`AppCall`] was not made.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Refused(#[from] ApiError),
    #[error(
        "the change was not made: the framework cannot record it ({0}); free space or fix the disk under --state-dir, and retry"
    )]
    NotRecorded(StoreError),
    #[error(transparent)]
    Gone(#[from] FrameworkGone),
}

/// The framework task has stopped (shutdown).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the container framework is stopping")]
pub struct FrameworkGone;

/// What the master told the framework (through the SDK callbacks, and the objects
/// poller of `strata serve`).
#[derive(Debug)]
pub enum Event {
    Subscribed(String),
    Offers(Vec<v1::Offer>),
    Status(Box<v1::TaskStatus>),
    /// The latest version of every config and secret the master lists (issue 16):
    /// apps whose pins differ roll ([`Engine::objects_listed`]).
    Objects(ObjectVersions, KeptVersions),
    /// An agent was removed for good (`strata agent gone`): resident instances kept
    /// there are lost ([`Engine::agent_gone`]).
    AgentGone(String),
}

/// A read of the core: runs in the framework task, between two commands. The flag
/// says whether the framework is connected to the master.
type ReadFn = Box<dyn FnOnce(&Engine, bool) + Send>;

/// What a handler or callback asks of the framework task.
pub enum Command {
    Call {
        call: AppCall,
        reply: oneshot::Sender<Result<Answer, CallError>>,
    },
    /// Answered once what the event changed is durable, or with the store's error.
    Event {
        event: Event,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Read(ReadFn),
}

/// What the executor reports back: the outcome of an action the core must hear of.
#[derive(Debug)]
pub enum Feedback {
    /// The master refused a launch: the tasks never started.
    LaunchRefused(Vec<String>),
    ReviveFailed,
}

/// The handlers' side of the framework task: cheap to clone.
#[derive(Clone)]
pub struct FrameworkHandle {
    commands: mpsc::Sender<Command>,
    /// The master's address (for `/v1/info`).
    pub master: String,
}

impl FrameworkHandle {
    async fn send(&self, command: Command) -> Result<(), FrameworkGone> {
        self.commands.send(command).await.map_err(|_| FrameworkGone)
    }

    /// Runs an App API change; answered once it is durable.
    pub async fn call(&self, call: AppCall) -> Result<Answer, CallError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Call { call, reply }).await?;
        rx.await.map_err(|_| FrameworkGone)?
    }

    /// Hands a scheduler event to the core; `Ok` once what it changed is durable.
    pub async fn event(&self, event: Event) -> Result<Result<(), StoreError>, FrameworkGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Event { event, reply }).await?;
        rx.await.map_err(|_| FrameworkGone)
    }

    /// Reads the core (and whether the framework is connected) between two commands.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine, bool) -> T + Send + 'static,
    ) -> Result<T, FrameworkGone> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Read(Box::new(move |core, connected| {
            let _ = reply.send(f(core, connected));
        })))
        .await?;
        rx.await.map_err(|_| FrameworkGone)
    }
}

/// The framework task's state. Create with [`Framework::new`], run with
/// [`Framework::run`] (and the [`Executor`] beside it).
pub struct Framework {
    core: Engine,
    store: StateStore,
    /// What the store holds: where [`Engine::revert`] puts the core back to.
    persisted: Persisted,
    commands: mpsc::Receiver<Command>,
    /// Unbounded so that the executor never waits for the framework task while that
    /// task waits for room in the executor's bounded queue (a deadlock). Bounded in
    /// practice: the executor sends at most one feedback per action it carries out,
    /// it carries out only what the framework task queued ([`ACTION_BUFFER`] batches),
    /// and the framework task reads this channel before anything else.
    feedback: mpsc::UnboundedReceiver<Feedback>,
    actions: mpsc::Sender<Vec<Action>>,
    /// Taken by [`Framework::run`], which runs it beside the framework task.
    executor: Option<Executor>,
    /// The SDK driver (none in tests without a master).
    driver: Option<DriverHandle>,
    tick: Duration,
    /// The latest write failed (for logging the failure and the recovery once).
    store_failing: bool,
}

impl Framework {
    /// The framework task owning `core` and `store` (`persisted` is what the store
    /// holds), and its handle. `master` is the master's address, `tick` how often the
    /// core is ticked while connected.
    pub fn new(
        core: Engine,
        store: StateStore,
        persisted: Persisted,
        master: String,
        tick: Duration,
    ) -> (Framework, FrameworkHandle) {
        let (commands_tx, commands) = mpsc::channel(COMMAND_BUFFER);
        let (actions_tx, actions) = mpsc::channel(ACTION_BUFFER);
        let (feedback_tx, feedback) = mpsc::unbounded_channel();
        let executor = Executor {
            actions,
            feedback: feedback_tx,
            driver: None,
        };
        let framework = Framework {
            core,
            store,
            persisted,
            commands,
            feedback,
            actions: actions_tx,
            executor: Some(executor),
            driver: None,
            tick,
            store_failing: false,
        };
        let handle = FrameworkHandle {
            commands: commands_tx,
            master,
        };
        (framework, handle)
    }

    fn connected(&self) -> bool {
        self.driver.as_ref().is_some_and(|d| d.is_connected())
    }

    /// Runs the framework task, and the executor beside it (in this same future),
    /// talking to the master through `driver` (`None`: actions are dropped, for tests
    /// without a master), until `stop` resolves or every handle is dropped; then the
    /// executor carries out what is queued (calls fail fast once the SDK driver is
    /// stopped) and this returns.
    pub async fn run(mut self, driver: Option<DriverHandle>, stop: impl Future<Output = ()>) {
        let mut executor = self.executor.take().expect("run once");
        executor.driver = driver.clone();
        self.driver = driver;
        tokio::join!(self.serve(stop), executor.run());
    }

    async fn serve(mut self, stop: impl Future<Output = ()>) {
        let mut interval = tokio::time::interval(self.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => return,
                Some(feedback) = self.feedback.recv() => self.feedback(feedback).await,
                // Before commands, so a steady stream of them cannot starve it; it is
                // ready once per period, so it cannot starve them either.
                _ = interval.tick() => {
                    if self.connected() {
                        let actions = self.core.tick(now());
                        let (_, actions) = self.persist(actions);
                        self.dispatch(actions).await;
                    }
                }
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => return,
                },
            }
        }
    }

    async fn feedback(&mut self, feedback: Feedback) {
        let actions = match feedback {
            Feedback::LaunchRefused(ids) => self.core.launch_failed(&ids, now()),
            Feedback::ReviveFailed => {
                self.core.revive_failed();
                Vec::new()
            }
        };
        let (_, actions) = self.persist(actions);
        self.dispatch(actions).await;
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Read(f) => f(&self.core, self.connected()),
            Command::Call { call, reply } => {
                let now = now();
                let core = &mut self.core;
                let outcome = match call {
                    AppCall::Deploy { spec, create_only } => core
                        .deploy(*spec, create_only, now)
                        .map(|(v, a)| (Answer::App(Box::new(v)), a)),
                    AppCall::Scale { id, instances } => core
                        .scale(&id, instances, now)
                        .map(|(v, a)| (Answer::App(Box::new(v)), a)),
                    AppCall::Restart { id } => core
                        .restart(&id, now)
                        .map(|(v, a)| (Answer::App(Box::new(v)), a)),
                    AppCall::Rollback { id, version } => core
                        .rollback(&id, version.as_deref(), now)
                        .map(|(v, a)| (Answer::App(Box::new(v)), a)),
                    AppCall::Destroy { id, wipe } => core
                        .destroy(&id, wipe, now)
                        .map(|(v, a)| (Answer::App(Box::new(v)), a)),
                    AppCall::KillTask { id } => core
                        .kill_task(&id, now)
                        .map(|(v, a)| (Answer::Task(Box::new(v)), a)),
                };
                let (answer, actions) = match outcome {
                    Ok((answer, actions)) => (Ok(answer), actions),
                    Err(e) => (Err(CallError::Refused(e)), Vec::new()),
                };
                let (persisted, actions) = self.persist(actions);
                let answer = match (answer, persisted) {
                    (Ok(_), Err(e)) => Err(CallError::NotRecorded(e)),
                    (answer, _) => answer,
                };
                let _ = reply.send(answer);
                self.dispatch(actions).await;
            }
            Command::Event { event, reply } => {
                let now = now();
                let actions = match event {
                    Event::Subscribed(framework_id) => self.core.subscribed(&framework_id, now),
                    Event::Offers(offers) => self.core.offers(offers, now),
                    Event::Status(status) => self.core.status(&status, now),
                    Event::Objects(latest, kept) => self.core.objects_listed(latest, kept, now),
                    Event::AgentGone(agent_id) => self.core.agent_gone(&agent_id, now),
                };
                let (persisted, actions) = self.persist(actions);
                let _ = reply.send(persisted);
                self.dispatch(actions).await;
            }
        }
    }

    /// Persists what the core changed, and returns what may go out (see the module
    /// docs): all of `actions` when the write succeeded; otherwise the core is put
    /// back, launches become declines, and kills are dropped.
    fn persist(&mut self, actions: Vec<Action>) -> (Result<(), StoreError>, Vec<Action>) {
        let writes = self.core.take_writes();
        if writes.is_empty() {
            return (Ok(()), actions);
        }
        match self.store.apply(&writes) {
            Ok(()) => {
                self.persisted.record(writes);
                if std::mem::take(&mut self.store_failing) {
                    tracing::info!("the state store can be written again; changes are accepted");
                }
                (Ok(()), actions)
            }
            Err(e) => {
                if !std::mem::replace(&mut self.store_failing, true) {
                    tracing::error!(
                        error = %e,
                        "the state store cannot be written: changes are refused (HTTP 503), \
                         launches and kills are held back and status updates are not \
                         acknowledged until it can; reads are still served"
                    );
                } else {
                    tracing::debug!(error = %e, "the state store still cannot be written");
                }
                self.core.revert(&writes, &self.persisted);
                let actions = actions
                    .into_iter()
                    .filter_map(|a| match a {
                        Action::Launch { offer_id, .. } => Some(Action::Decline {
                            offer_ids: vec![offer_id],
                            refuse_seconds: UNRECORDED_REFUSE_SECONDS,
                        }),
                        Action::Kill { .. } => None,
                        other => Some(other),
                    })
                    .collect();
                (Err(e), actions)
            }
        }
    }

    /// Queues actions for the executor, waiting for room.
    async fn dispatch(&mut self, actions: Vec<Action>) {
        if !actions.is_empty() {
            let _ = self.actions.send(actions).await;
        }
    }
}

/// Carries out the core's actions against the master, one batch after another, in
/// order, and reports the outcomes the core must hear of.
pub struct Executor {
    actions: mpsc::Receiver<Vec<Action>>,
    feedback: mpsc::UnboundedSender<Feedback>,
    driver: Option<DriverHandle>,
}

impl Executor {
    /// Runs until the framework task is gone and the queue is empty.
    pub async fn run(mut self) {
        while let Some(actions) = self.actions.recv().await {
            let Some(driver) = self.driver.clone() else {
                continue;
            };
            for action in actions {
                self.carry_out(&driver, action).await;
            }
        }
    }

    async fn carry_out(&self, driver: &DriverHandle, action: Action) {
        match action {
            Action::Launch {
                offer_id,
                mut operations,
                tasks,
            } => {
                let ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
                if !tasks.is_empty() {
                    operations.push(v1::Operation {
                        operation: Some(v1::operation::Operation::Launch(v1::Launch {
                            task_infos: tasks,
                        })),
                    });
                }
                if let Err(e) = driver.accept(vec![offer_id], operations, None).await {
                    // An operation (RESERVE, CREATE, ...) the master refused while it
                    // applied the others: the launch went ahead, and each task gets
                    // its update (TASK_ERROR when the refusal took its resources).
                    let partly = matches!(&e, SdkError::Rpc(s)
                        if s.code() == tonic::Code::InvalidArgument
                            && s.message().contains("refused, the others applied"));
                    if partly {
                        tracing::warn!(error = %e, "an operation of the accept was refused; the tasks' updates tell what became of them");
                        return;
                    }
                    let refused = matches!(
                        &e,
                        SdkError::Disconnected
                            | SdkError::Stopped
                            | SdkError::InvalidArgument(_)
                            | SdkError::Resources(_)
                            | SdkError::DoesNotFit { .. }
                    ) || matches!(&e, SdkError::Rpc(s) if matches!(
                        s.code(),
                        tonic::Code::InvalidArgument
                            | tonic::Code::FailedPrecondition
                            | tonic::Code::NotFound
                            | tonic::Code::PermissionDenied
                    ));
                    if refused {
                        tracing::warn!(error = %e, "launch not made; the tasks will be launched again");
                        let _ = self.feedback.send(Feedback::LaunchRefused(ids));
                    } else {
                        tracing::warn!(error = %e, "launch outcome unknown; reconciliation will tell");
                    }
                }
            }
            Action::Decline {
                offer_ids,
                refuse_seconds,
            } => {
                if let Err(e) = driver.decline(offer_ids, Some(refuse_seconds)).await {
                    tracing::debug!(error = %e, "decline failed");
                }
            }
            Action::Kill {
                task_id,
                agent_id,
                grace_seconds,
            } => {
                let grace = Duration::try_from_secs_f64(grace_seconds.max(0.0))
                    .unwrap_or(Duration::from_secs(3));
                if let Err(e) = driver.kill_on(&task_id, &agent_id, Some(grace)).await {
                    tracing::debug!(task = %task_id, error = %e, "kill failed; retried later");
                }
            }
            Action::Revive => {
                if let Err(e) = driver.revive().await {
                    tracing::debug!(error = %e, "revive failed; retried on the next tick");
                    let _ = self.feedback.send(Feedback::ReviveFailed);
                }
            }
            Action::Suppress => {
                if let Err(e) = driver.suppress().await {
                    tracing::debug!(error = %e, "suppress failed");
                }
            }
            Action::Reconcile(tasks) => {
                if !tasks.is_empty()
                    && let Err(e) = driver.reconcile(tasks).await
                {
                    tracing::warn!(error = %e, "explicit reconciliation failed");
                }
                if let Err(e) = driver.reconcile(vec![]).await {
                    tracing::warn!(error = %e, "implicit reconciliation failed");
                }
            }
            Action::ReconcileTasks(tasks) => {
                if let Err(e) = driver.reconcile(tasks).await {
                    tracing::debug!(error = %e, "reconciliation failed");
                }
            }
        }
    }
}

/// The SDK scheduler: forwards the master's events to the framework task. Status
/// updates are acknowledged here (automatic acknowledgement is off), and only once
/// what they changed is durable.
pub struct AppScheduler {
    pub framework: FrameworkHandle,
}

impl AppScheduler {
    async fn event(&self, event: Event) -> bool {
        match self.framework.event(event).await {
            Ok(Ok(())) => true,
            // The framework task logged it (once).
            Ok(Err(_)) => false,
            Err(FrameworkGone) => {
                tracing::debug!("event dropped: the framework is stopping");
                false
            }
        }
    }
}

impl Scheduler for AppScheduler {
    async fn registered(&mut self, _driver: &DriverHandle, framework_id: &str, _master: &str) {
        tracing::info!(framework_id, "subscribed");
        self.event(Event::Subscribed(framework_id.to_string()))
            .await;
    }

    async fn reregistered(&mut self, _driver: &DriverHandle, framework_id: &str, _master: &str) {
        tracing::info!(framework_id, "re-subscribed");
        self.event(Event::Subscribed(framework_id.to_string()))
            .await;
    }

    async fn offers(&mut self, _driver: &DriverHandle, offers: Vec<v1::Offer>) {
        self.event(Event::Offers(offers)).await;
    }

    async fn status_update(&mut self, driver: &DriverHandle, status: v1::TaskStatus) {
        let task_id = status.task_id.clone();
        let (agent_id, uuid) = (status.agent_id.clone(), status.uuid.clone());
        if !self.event(Event::Status(Box::new(status))).await {
            // Not recorded: not acknowledged, so the agent sends it again.
            return;
        }
        if uuid.is_empty() {
            // The master's own answers (reconciliation) carry no uuid and take no
            // acknowledgement.
            return;
        }
        let ack = v1::TaskStatus {
            task_id: task_id.clone(),
            agent_id,
            uuid,
            ..Default::default()
        };
        if let Err(e) = driver.acknowledge(&ack).await {
            // The agent retries unacknowledged updates, so this one comes again.
            tracing::debug!(task = %task_id, error = %e, "could not acknowledge a status update");
        }
    }

    async fn failure(&mut self, _driver: &DriverHandle, failure: v1::Failure) {
        if failure.task_id.is_empty() && !failure.agent_id.is_empty() {
            tracing::warn!(agent_id = %failure.agent_id, "the master removed an agent");
            self.event(Event::AgentGone(failure.agent_id)).await;
        }
    }

    async fn error(&mut self, _driver: &DriverHandle, message: &str) {
        tracing::error!(message, "the master refused the framework");
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::{Value, json};
    use strata_proto::Resources;
    use strata_proto::v1::TaskState;

    use super::*;
    use crate::app::api;

    /// A tmpfs of 1 MiB mounted on a fresh directory (unmounted when dropped): a disk
    /// that fills up.
    struct SmallDisk {
        dir: tempfile::TempDir,
    }

    impl SmallDisk {
        fn mount() -> SmallDisk {
            assert!(
                nix::unistd::geteuid().is_root(),
                "this test mounts a 1 MiB tmpfs to fill the framework's disk: run it as root"
            );
            let dir = tempfile::tempdir().expect("a temporary directory");
            nix::mount::mount(
                Some("tmpfs"),
                dir.path(),
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("size=1m"),
            )
            .unwrap_or_else(|e| panic!("mount -t tmpfs -o size=1m on {:?}: {e}", dir.path()));
            SmallDisk { dir }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Writes a file until the disk is full.
        fn fill(&self) -> PathBuf {
            use std::io::Write as _;
            let path = self.path().join("filler");
            let mut file = std::fs::File::create(&path).expect("create the filler");
            let chunk = vec![0u8; 4096];
            loop {
                match file.write(&chunk) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("filling the disk: {e}"),
                }
            }
            let _ = file.sync_all();
            path
        }
    }

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }

    /// The framework (no master) on a store in `dir`, its App API on 127.0.0.1:0.
    async fn start(
        dir: &Path,
    ) -> (
        String,
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let store = StateStore::open(&dir.join("state")).expect("open the store");
        let (framework, handle) = Framework::new(
            Engine::default(),
            store,
            Persisted::default(),
            "127.0.0.1:5050".into(),
            Duration::from_secs(1),
        );
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(framework.run(None, async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = api::router(handle, strata_security::Authenticator::insecure());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (format!("http://{addr}"), stop_tx, task)
    }

    async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
        let mut req = reqwest::Client::new().request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the App API answers");
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn deploy(base: &str, id: &str) -> (u16, Value) {
        let spec = json!({"id": id, "cmd": "sleep 1000", "instances": 2, "cpus": 0.1});
        call(
            reqwest::Method::PUT,
            format!("{base}/v1/apps/{id}"),
            Some(spec),
        )
        .await
    }

    async fn app_ids(base: &str) -> Vec<String> {
        let (code, apps) = call(reqwest::Method::GET, format!("{base}/v1/apps"), None).await;
        assert_eq!(code, 200, "GET /v1/apps: {apps}");
        let mut ids: Vec<String> = apps
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// The attack the security issue names: any web page the user opens posts a
    /// root command to `127.0.0.1:8080` as a "simple" request (text/plain body, no
    /// preflight). Refused, nothing deployed; the CLI's JSON (and YAML) still works.
    #[tokio::test]
    async fn a_web_page_cannot_deploy_through_the_app_api() {
        let dir = tempfile::tempdir().unwrap();
        let (base, stop, task) = start(dir.path()).await;
        let http = reqwest::Client::new();
        let spec = r#"{"id": "pwn", "cmd": "id > /tmp/pwned", "instances": 1, "cpus": 0.1, "user": "root"}"#;
        for (content_type, origin, status) in [
            ("text/plain", Some("http://evil.example"), 403),
            ("text/plain", None, 415),
            ("application/x-www-form-urlencoded", None, 415),
            ("application/json", Some("http://evil.example"), 403),
            ("application/yaml", Some("http://evil.example"), 403),
            ("application/x-yaml", Some("http://evil.example"), 403),
        ] {
            let mut request = http
                .post(format!("{base}/v1/apps"))
                .header("content-type", content_type)
                .body(spec);
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status().as_u16(), status, "{content_type} {origin:?}");
        }
        // Bodyless changes from a page are refused too.
        let r = http
            .post(format!("{base}/v1/apps/anything/restart"))
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert!(app_ids(&base).await.is_empty(), "nothing was deployed");

        // The user's way (the CLI's): JSON.
        let (code, body) = deploy(&base, "web").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(app_ids(&base).await, ["web"]);
        let _ = stop.send(true);
        task.await.unwrap();
    }

    /// The disk under the state dir fills up: a deploy is answered 503 with the
    /// store's error and is not made; the App API keeps answering reads, with what was
    /// recorded before; once there is room again, the same deploy succeeds, and what
    /// the API showed is what the store holds.
    #[tokio::test]
    async fn a_full_disk_refuses_deploys_with_a_clear_error_and_reads_go_on() {
        let disk = SmallDisk::mount();
        let (base, stop, task) = start(disk.path()).await;
        let (code, body) = deploy(&base, "before").await;
        assert_eq!(code, 200, "{body}");

        let filler = disk.fill();
        let mut accepted = vec!["before".to_string()];
        let mut refused = None;
        for i in 0..500 {
            let id = format!("app-{i}");
            let (code, body) = deploy(&base, &id).await;
            match code {
                200 => accepted.push(id),
                503 => {
                    refused = Some((id, body));
                    break;
                }
                _ => panic!("deploy {id}: {code} {body}"),
            }
        }
        let (refused_id, body) = refused.expect("a deploy refused once the disk is full");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("the change was not made: the framework cannot record it")
                && error.contains("No space left on device"),
            "{body}"
        );
        // Refused again (the store is retried, and still full), and reads go on.
        let (code, body) = deploy(&base, &refused_id).await;
        assert_eq!(code, 503, "{body}");
        accepted.sort();
        assert_eq!(app_ids(&base).await, accepted);
        let (code, body) = call(
            reqwest::Method::GET,
            format!("{base}/v1/apps/{refused_id}"),
            None,
        )
        .await;
        assert_eq!(code, 404, "{body}");
        let (code, info) = call(reqwest::Method::GET, format!("{base}/v1/info"), None).await;
        assert_eq!(code, 200, "{info}");
        assert_eq!(info["apps"], accepted.len());
        let (code, pong) = call(reqwest::Method::GET, format!("{base}/ping"), None).await;
        assert_eq!((code, pong), (200, Value::String("pong".into())));

        // Room again: the same deploy is made.
        std::fs::remove_file(filler).unwrap();
        let (code, body) = deploy(&base, &refused_id).await;
        assert_eq!(code, 200, "{body}");
        accepted.push(refused_id);
        accepted.sort();
        assert_eq!(app_ids(&base).await, accepted);

        stop.send(true).unwrap();
        task.await.unwrap();
        let mut store = StateStore::open(&disk.path().join("state")).unwrap();
        let mut stored: Vec<String> = store
            .load()
            .unwrap()
            .apps
            .into_iter()
            .map(|a| a.app.spec.id)
            .collect();
        stored.sort();
        assert_eq!(stored, accepted);
    }

    fn offer(id: &str) -> v1::Offer {
        v1::Offer {
            id: id.into(),
            framework_id: "fw".into(),
            agent_id: "ag1".into(),
            hostname: "h1".into(),
            role: "*".into(),
            resources: Resources::parse("cpus:4;mem:4096;ports:[31000-31010]")
                .unwrap()
                .to_proto(),
            attributes: vec![],
            agent_address: "h1:5051".into(),
        }
    }

    /// A framework with its executor's queue, driven command by command.
    struct Driven {
        framework: Framework,
        executor: Executor,
    }

    impl Driven {
        fn new(dir: &Path) -> Driven {
            let store = StateStore::open(&dir.join("state")).unwrap();
            let (mut framework, _) = Framework::new(
                Engine::default(),
                store,
                Persisted::default(),
                "127.0.0.1:5050".into(),
                Duration::from_secs(1),
            );
            let executor = framework.executor.take().unwrap();
            Driven {
                framework,
                executor,
            }
        }

        /// The actions queued for the master since the last call.
        fn sent(&mut self) -> Vec<Action> {
            let mut all = Vec::new();
            while let Ok(batch) = self.executor.actions.try_recv() {
                all.extend(batch);
            }
            all
        }

        async fn event(&mut self, event: Event) -> (Result<(), StoreError>, Vec<Action>) {
            let (reply, mut rx) = oneshot::channel();
            self.framework
                .command(Command::Event { event, reply })
                .await;
            (rx.try_recv().unwrap(), self.sent())
        }

        async fn call(&mut self, call: AppCall) -> Result<Answer, CallError> {
            let (reply, mut rx) = oneshot::channel();
            self.framework.command(Command::Call { call, reply }).await;
            rx.try_recv().unwrap()
        }

        async fn deploy(&mut self, yaml: &str) -> Result<Answer, CallError> {
            let spec = Box::new(AppSpec::parse(yaml).unwrap());
            self.call(AppCall::Deploy {
                spec,
                create_only: false,
            })
            .await
        }

        fn task_state(&self, id: &str) -> String {
            self.framework.core.task(id).unwrap().state
        }
    }

    fn launched(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .flat_map(|a| match a {
                Action::Launch { tasks, .. } => tasks.iter().map(|t| t.task_id.clone()).collect(),
                _ => vec![],
            })
            .collect()
    }

    fn running(task_id: &str) -> Event {
        Event::Status(Box::new(v1::TaskStatus {
            task_id: task_id.into(),
            agent_id: "ag1".into(),
            state: TaskState::TaskRunning as i32,
            uuid: "u1".into(),
            ..Default::default()
        }))
    }

    /// While the store cannot be written: an offer launches nothing (the task could
    /// not be recorded) and is declined instead; a status update is answered with the
    /// error (so the scheduler does not acknowledge it) and changes nothing. Once
    /// there is room, both go through.
    #[tokio::test]
    async fn unrecorded_launches_become_declines_and_unrecorded_updates_change_nothing() {
        let disk = SmallDisk::mount();
        let mut fw = Driven::new(disk.path());
        assert!(fw.event(Event::Subscribed("fw".into())).await.0.is_ok());
        // Its record bigger than the small apps that fill the store below: its
        // launch's write (its record and the task's) needs more room than their writes.
        let web = format!(
            "id: web\ncmd: sleep 100\ncpus: 1\nlabels:\n  note: {}\n",
            "x".repeat(4000)
        );
        let web = web.as_str();
        assert!(fw.deploy(web).await.is_ok());
        let (ok, actions) = fw.event(Event::Offers(vec![offer("o1")])).await;
        assert!(ok.is_ok());
        let task = launched(&actions).pop().expect("a launch");
        assert!(
            fw.deploy(&format!("{web}instances: 2\n")).await.is_ok(),
            "scale to 2"
        );
        let _ = fw.sent();

        // Fill the disk, and write until the store refuses.
        let filler = disk.fill();
        let mut refused = false;
        for i in 0..500 {
            if fw
                .deploy(&format!("id: other-{i}\ncmd: x\n"))
                .await
                .is_err()
            {
                refused = true;
                break;
            }
        }
        assert!(refused, "the store refuses writes once the disk is full");
        let _ = fw.sent();

        let (outcome, actions) = fw.event(Event::Offers(vec![offer("o2")])).await;
        assert!(outcome.is_err(), "the launch cannot be recorded");
        assert!(launched(&actions).is_empty(), "{actions:?}");
        assert!(
            actions.contains(&Action::Decline {
                offer_ids: vec!["o2".into()],
                refuse_seconds: UNRECORDED_REFUSE_SECONDS
            }),
            "{actions:?}"
        );
        assert_eq!(fw.framework.core.tasks(Some("web")).unwrap().len(), 1);

        let (outcome, _) = fw.event(running(&task)).await;
        assert!(outcome.is_err(), "the update cannot be recorded");
        assert_eq!(fw.task_state(&task), "TASK_STAGING");

        // Room again: the update (sent again by the agent) and the launch go through.
        std::fs::remove_file(filler).unwrap();
        let (outcome, _) = fw.event(running(&task)).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(fw.task_state(&task), "TASK_RUNNING");
        let (outcome, actions) = fw.event(Event::Offers(vec![offer("o3")])).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(launched(&actions).len(), 1, "{actions:?}");
    }
}
