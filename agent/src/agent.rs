//! The agent's event loop: one tokio task owns the task manager, the master link and
//! the containers' jobs, so no state is shared behind locks.
//!
//! ```text
//!  master stream ─ RunTask/KillTask/Ack/... ─┐
//!  container jobs ─ launched/exited/killed ──┤                       ┌─▶ status updates, heartbeats ─▶ master
//!  timers ─ retries, checkpoint, reconnect ──┼─▶ AgentLoop ─ Action ─┼─▶ launch / wait / kill jobs (JoinSet)
//!  HTTP handlers ─ Query (oneshot reply) ────┤    (TaskManager)      ├─▶ checkpoint writes (blocking pool)
//!  health checkers ─ HealthEvent ────────────┤                       └─▶ start / stop health checkers
//!  shutdown signal ──────────────────────────┘
//! ```
//!
//! A launch job of a task that references configs or secrets fetches their values from
//! the master first ([`crate::objects::fetch`], on the link's current endpoint); a
//! failed fetch is a failed launch.
//!
//! Disk isolation ([`crate::disk`]): every `--container-disk-watch-interval` the loop
//! hands the running tasks' paths to a [`DiskJob`] on the blocking pool; what it
//! measures is kept for `/monitor/statistics` and the usage reports, and a task over
//! its `disk` is killed through the task manager (when enforcing).
//!
//! Persistent volumes ([`crate::volumes`]): a `CheckpointResources` from the master is
//! written to the work dir, then applied (volume directories created, destroyed ones'
//! data removed, never a volume a task uses) on the loop's thread, in order with the
//! launches that follow it; the ledger goes back to the master in every `Register`.
//!
//! Every job is spawned into the loop's `JoinSet` and carries its task's key back,
//! even when it panics; on return the loop stops them all. Health checkers
//! ([`crate::health`]) run as tasks of their own, one per checked task, aborted when the
//! task stops running and when the loop returns.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde::Serialize;
use strata_proto::v1::{self, TaskState, agent_message, master_message};
use strata_proto::{Resources, VERSION};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tonic::transport::Endpoint;

use crate::Shutdown;
use crate::checkpoint::{self, CheckpointError};
use crate::containerizer::{BoxFuture, ContainerHandle, ContainerId, Containerizer, Termination};
use crate::disk::{DiskIsolationOptions, DiskJob, DiskPass};
use crate::health::{self, HealthEvent};
use crate::hygiene::{HygieneJob, HygieneOptions, HygieneReport};
use crate::link::{self, Backoff, Connection, LinkError};
use crate::objects;
use crate::task_key::TaskKey;
use crate::tasks::{Action, AgentTaskView, TaskManager, WaitError};

/// After the kills of a shutdown have had their grace period, how much longer the
/// agent waits for the tasks to end before it stops anyway.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);
/// How long an agent stopping with its tasks running waits for launches in flight.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound of the loop's configurable timers.
const MAX_TIMER: Duration = Duration::from_secs(24 * 3600);
/// How long a stopping agent waits for its last updates to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Room for health checkers' news; a full queue makes checkers wait, not lose news.
const HEALTH_QUEUE: usize = 256;
/// Most events handled between two checkpoint writes.
const MAX_BATCH: usize = 256;

/// A question from the HTTP API, answered by the loop.
pub(crate) enum Query {
    State(oneshot::Sender<StateView>),
    /// The sandbox, state and framework principal of a task it knows.
    Task {
        key: TaskKey,
        reply: oneshot::Sender<Option<KnownTask>>,
    },
    /// The containers of the running tasks (`/monitor/statistics`, usage reports).
    Containers(oneshot::Sender<Vec<RunningContainer>>),
    /// Resource usage to send to the master, if connected (never retried: the next
    /// report replaces it). The loop adds the volumes' usage.
    ReportUsage(v1::UsageReport),
    /// The persistent volumes of the ledger (`GET /volumes`).
    Volumes(oneshot::Sender<Vec<crate::volumes::PersistentVolumeView>>),
}

/// A running task's container, as `/monitor/statistics` needs it.
#[derive(Debug, Clone)]
pub(crate) struct RunningContainer {
    pub key: TaskKey,
    pub container: ContainerId,
    /// What disk isolation measured last: (used, limit) bytes; `None` before the
    /// first measurement or with disk isolation off.
    pub disk: Option<(u64, Option<u64>)>,
}

/// A task the loop knows, as `/files/read` needs it.
#[derive(Debug, Clone)]
pub(crate) struct KnownTask {
    pub sandbox: PathBuf,
    pub state: TaskState,
    /// The principal stamped on the task's framework (the ACLs' object).
    pub framework_principal: String,
}

/// `GET /state`.
#[derive(Debug, Clone, Serialize)]
pub struct StateView {
    /// Empty until the master first registers the agent.
    pub id: String,
    pub hostname: String,
    /// The address advertised to the master for this HTTP API.
    pub address: String,
    pub master: String,
    /// Whether the agent is registered with the master right now.
    pub registered: bool,
    pub containerizer: &'static str,
    pub resources: Resources,
    pub attributes: BTreeMap<String, String>,
    pub tasks: Vec<AgentTaskView>,
    /// Recently forgotten tasks (terminal and acknowledged), oldest first.
    pub completed_tasks: Vec<AgentTaskView>,
    /// The work dir's disk and what the last hygiene pass did (`None` before the
    /// first).
    pub disk: Option<HygieneReport>,
    /// Why the checkpoint cannot be written (a full disk, ...): launches fail until it
    /// can. `None` while it can.
    pub checkpoint_error: Option<String>,
}

/// What the agent tells the master about itself (all but the id).
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub hostname: String,
    pub address: String,
    pub master: String,
    pub resources: Resources,
    pub attributes: Vec<(String, String)>,
}

/// Tunables the loop needs from the options.
#[derive(Debug, Clone)]
pub(crate) struct LoopConfig {
    pub work_dir: PathBuf,
    pub registration_backoff: Duration,
    pub registration_backoff_max: Duration,
    pub executor_shutdown_grace_period: Duration,
    pub checkpoint_interval: Duration,
    pub hygiene: HygieneOptions,
    pub disk_isolation: DiskIsolationOptions,
}

/// A finished job: what a launch, wait or kill came to.
enum Job {
    Launched {
        key: TaskKey,
        container: ContainerId,
        result: Result<ContainerHandle, String>,
    },
    Exited {
        key: TaskKey,
        container: ContainerId,
        result: Result<Termination, WaitError>,
    },
    Killed {
        key: TaskKey,
        container: ContainerId,
        result: Result<(), String>,
    },
}

/// One wake-up of the loop.
// A master message (a RunTask carries a whole TaskInfo) is the largest variant; one
// Event exists at a time and is consumed at once, so boxing it would only add an
// allocation per message.
#[allow(clippy::large_enum_variant)]
enum Event {
    Shutdown(Shutdown),
    Connected(Result<Connection, LinkError>),
    ReconnectDue,
    FromMaster(Result<Option<v1::MasterMessage>, tonic::Status>),
    Heartbeat,
    Job(Result<Job, JoinError>),
    Timer,
    Query(Query),
    CheckpointSynced(Result<Result<(), CheckpointError>, JoinError>),
    HygieneDone(Result<HygieneReport, JoinError>),
    DiskMeasured(Result<DiskPass, JoinError>),
    Health(HealthEvent),
}

pub(crate) struct AgentLoop {
    config: LoopConfig,
    identity: Identity,
    containerizer: Arc<dyn Containerizer>,
    manager: TaskManager,
    /// The master's endpoint; a renewed certificate replaces it.
    endpoint: watch::Receiver<Endpoint>,
    /// The channel launches fetch their configs and secrets over.
    fetch_channel: objects::FetchChannel,
    backoff: Backoff,
    /// When the next registration attempt starts (no attempt running, not connected).
    reconnect_at: Option<Instant>,
    /// The registration attempt running now.
    connecting: Option<BoxFuture<'static, Result<Connection, LinkError>>>,
    /// Set while registered: messages up to the master.
    outbound: Option<mpsc::Sender<v1::AgentMessage>>,
    /// Set while registered: messages down from the master.
    inbound: Option<tonic::Streaming<v1::MasterMessage>>,
    /// Set while registered.
    heartbeat: Option<tokio::time::Interval>,
    /// Launch, wait and kill jobs of the containers.
    jobs: JoinSet<Job>,
    queries: mpsc::Receiver<Query>,
    /// Writes the checkpoint ahead (here); its fsyncs run on the blocking pool.
    log: checkpoint::Log,
    /// Actions of this batch of events, done (after one checkpoint write) by `flush`.
    deferred: Vec<Action>,
    /// Checkpoint writes not yet made durable by a sync.
    checkpoint_unsynced: bool,
    /// Why the last checkpoint write failed (said once in the log, until one works).
    checkpoint_failing: Option<String>,
    /// When the next hygiene pass is due (none while one runs).
    hygiene_at: Option<Instant>,
    /// The hygiene pass in flight, on the blocking pool.
    hygiene_job: Option<JoinHandle<HygieneReport>>,
    /// What the last pass found.
    last_hygiene: Option<HygieneReport>,
    /// When the next disk measurement is due (none while one runs, or when off).
    disk_at: Option<Instant>,
    /// The disk measurement in flight, on the blocking pool.
    disk_job: Option<JoinHandle<DiskPass>>,
    /// The last measurement of each running task, by task.
    disk_usage: HashMap<TaskKey, crate::disk::DiskMeasurement>,
    /// The bytes each persistent volume held at the last measurement, by (role, id).
    volume_usage: HashMap<(String, String), u64>,
    /// The sync in flight, on the blocking pool.
    sync_job: Option<JoinHandle<Result<(), CheckpointError>>>,
    last_sync: Option<Instant>,
    shutting_down: bool,
    shutdown_deadline: Option<Instant>,
    /// Set when the agent stops leaving its tasks running: when it stops at the
    /// latest (launches in flight may finish until then, so none is cut in half).
    leaving: Option<Instant>,
    /// Launches started and not yet finished.
    launches_in_flight: usize,
    /// Set when the master said an operator marked this agent gone (its message).
    gone: Option<String>,
    /// The running health checkers, by task.
    health_checks: HashMap<TaskKey, JoinHandle<()>>,
    /// Cloned into each checker; the loop holds one, so `health_rx` never closes.
    health_tx: mpsc::Sender<HealthEvent>,
    health_rx: mpsc::Receiver<HealthEvent>,
}

impl AgentLoop {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: LoopConfig,
        identity: Identity,
        containerizer: Arc<dyn Containerizer>,
        manager: TaskManager,
        endpoint: watch::Receiver<Endpoint>,
        queries: mpsc::Receiver<Query>,
    ) -> AgentLoop {
        let backoff = Backoff::new(config.registration_backoff, config.registration_backoff_max);
        // Bounded so that `now + ...` never overflows, whatever the options say.
        let mut config = config;
        config.executor_shutdown_grace_period =
            config.executor_shutdown_grace_period.min(MAX_TIMER);
        config.checkpoint_interval = config.checkpoint_interval.min(MAX_TIMER);
        let (health_tx, health_rx) = mpsc::channel(HEALTH_QUEUE);
        let log = checkpoint::Log::open(config.work_dir.clone());
        config.disk_isolation.watch_interval = config.disk_isolation.watch_interval.min(MAX_TIMER);
        let disk_at = config
            .disk_isolation
            .enabled()
            .then(|| Instant::now() + config.disk_isolation.watch_interval);
        AgentLoop {
            config,
            identity,
            containerizer,
            manager,
            fetch_channel: objects::FetchChannel::new(endpoint.clone()),
            endpoint,
            backoff,
            reconnect_at: None,
            connecting: None,
            outbound: None,
            inbound: None,
            heartbeat: None,
            jobs: JoinSet::new(),
            queries,
            log,
            deferred: Vec::new(),
            checkpoint_unsynced: false,
            checkpoint_failing: None,
            hygiene_at: Some(Instant::now()),
            hygiene_job: None,
            last_hygiene: None,
            disk_at,
            disk_job: None,
            disk_usage: HashMap::new(),
            volume_usage: HashMap::new(),
            sync_job: None,
            last_sync: None,
            shutting_down: false,
            shutdown_deadline: None,
            leaving: None,
            launches_in_flight: 0,
            gone: None,
            health_checks: HashMap::new(),
            health_tx,
            health_rx,
        }
    }

    /// Runs until `shutdown` resolves, or the master says this agent was marked gone,
    /// and the tasks have been killed (or the shutdown deadline passed). `initial` are
    /// actions from recovery. Returns the master's message when the agent is gone.
    pub(crate) async fn run(
        mut self,
        initial: Vec<Action>,
        shutdown: impl Future<Output = Shutdown> + Send,
    ) -> Option<String> {
        let mut shutdown = std::pin::pin!(shutdown);
        self.execute(initial);
        self.flush();
        // The first attempt starts at once; only failures back off.
        self.start_connect();
        loop {
            let event = self.next_event(shutdown.as_mut()).await;
            let now = Instant::now();
            let mut more = !matches!(event, Event::Timer);
            self.handle(event, now);
            // Whatever else is ready joins this batch, so that one checkpoint write
            // covers all of it (a write per event is quadratic in the tasks run). A
            // timer ends the batch: what it is due for (a durable checkpoint, the
            // shutdown deadline) is dealt with below, and until then it stays due.
            for _ in 1..MAX_BATCH {
                if !more {
                    break;
                }
                let Some(event) = self.next_event(shutdown.as_mut()).now_or_never() else {
                    break;
                };
                more = !matches!(event, Event::Timer);
                self.handle(event, now);
            }
            self.flush();
            self.maybe_checkpoint(now);
            self.maybe_hygiene(now);
            self.maybe_measure_disk(now);
            if let Some(deadline) = self.leaving {
                if self.launches_in_flight == 0 {
                    tracing::info!(
                        "stopping; the tasks keep running and the next run recovers them"
                    );
                    break;
                }
                if now >= deadline {
                    tracing::warn!(
                        launches = self.launches_in_flight,
                        "launches still in flight at the stop deadline; stopping anyway"
                    );
                    break;
                }
            }
            if self.shutting_down {
                if self.manager.all_terminated() {
                    tracing::info!("all tasks have ended");
                    break;
                }
                if self.shutdown_deadline.is_some_and(|d| now >= d) {
                    tracing::warn!(
                        "tasks did not end within the shutdown grace period; stopping anyway"
                    );
                    break;
                }
            }
        }
        let gone = self.gone.take();
        self.finish().await;
        gone
    }

    /// The next thing to handle. Every branch is cancel-safe: `run` also polls this
    /// once without waiting, and a branch that is not ready loses nothing.
    async fn next_event<S: Future<Output = Shutdown>>(&mut self, shutdown: Pin<&mut S>) -> Event {
        let timer = self.next_timer();
        let stopping = self.shutting_down || self.leaving.is_some();
        tokio::select! {
            mode = shutdown, if !stopping => Event::Shutdown(mode),
            r = poll_boxed(&mut self.connecting) => Event::Connected(r),
            () = sleep_until(self.reconnect_at) => Event::ReconnectDue,
            m = next_message(&mut self.inbound) => Event::FromMaster(m),
            () = tick(&mut self.heartbeat) => Event::Heartbeat,
            Some(j) = self.jobs.join_next(), if !self.jobs.is_empty() => Event::Job(j),
            () = sleep_until(timer) => Event::Timer,
            Some(q) = self.queries.recv() => Event::Query(q),
            r = poll_join(&mut self.sync_job) => Event::CheckpointSynced(r),
            r = poll_join(&mut self.hygiene_job) => Event::HygieneDone(r),
            r = poll_join(&mut self.disk_job) => Event::DiskMeasured(r),
            Some(h) = self.health_rx.recv() => Event::Health(h),
        }
    }

    fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Shutdown(Shutdown::KeepTasks) => {
                // SIGTERM or SIGINT: a restart or an upgrade (what `systemctl
                // restart` sends). The tasks run on and the next run recovers them,
                // as after a crash; the agent only lets launches in flight finish, so
                // that none is recorded half-started. Nothing new arrives meanwhile.
                tracing::info!(
                    launches_in_flight = self.launches_in_flight,
                    "stopping the agent; its tasks keep running"
                );
                self.disconnect();
                self.connecting = None;
                self.reconnect_at = None;
                self.leaving = Some(now + LEAVE_TIMEOUT);
            }
            Event::Shutdown(Shutdown::KillTasks) => {
                // SIGUSR1, `strata local` stopping: the agent leaves nothing behind.
                tracing::info!("shutting down: killing all tasks");
                self.begin_shutdown(now);
            }
            Event::Connected(result) => {
                self.connecting = None;
                match result {
                    Ok(conn) => self.on_registered(conn, now),
                    Err(LinkError::Gone(message)) => {
                        // The master already reported its tasks gone: none may run on.
                        tracing::error!(%message, "the master marked this agent gone: killing all tasks and stopping");
                        self.gone = Some(message);
                        self.begin_shutdown(now);
                    }
                    Err(e) => {
                        let unreachable = matches!(e, LinkError::Connect(_));
                        let delay = self.schedule_reconnect(now, unreachable);
                        tracing::warn!(error = %e, retry_in = ?delay, "registration with the master failed");
                    }
                }
            }
            Event::ReconnectDue => self.start_connect(),
            Event::FromMaster(Ok(Some(msg))) => self.on_master_message(msg, now),
            Event::FromMaster(result) => {
                let reason = match result {
                    Err(status) => format!("{}: {}", status.code(), status.message()),
                    _ => "the master closed the stream".to_string(),
                };
                self.disconnect();
                let delay = self.schedule_reconnect(now, false);
                tracing::warn!(%reason, retry_in = ?delay, "lost the master; will re-register");
            }
            Event::Heartbeat => self.send(agent_message::Message::Heartbeat(v1::AgentHeartbeat {})),
            Event::Job(Ok(job)) => self.on_job(job, now),
            Event::Job(Err(e)) => tracing::error!(error = %e, "a container job was cancelled"),
            Event::Timer => {
                let actions = self.manager.retries_due(now);
                if !actions.is_empty() {
                    tracing::debug!(
                        count = actions.len(),
                        "retrying unacknowledged status updates"
                    );
                }
                self.execute(actions);
            }
            Event::Query(q) => self.answer(q),
            Event::CheckpointSynced(result) => {
                self.sync_job = None;
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot sync the checkpoint"),
                    Err(e) => tracing::error!(error = %e, "the checkpoint writer failed"),
                }
            }
            Event::Health(event) => {
                let actions = self.manager.health(event, now);
                self.execute(actions);
            }
            Event::HygieneDone(result) => {
                self.hygiene_job = None;
                self.hygiene_at = Some(now + self.config.hygiene.disk_watch_interval);
                match result {
                    Ok(report) => self.on_hygiene(report),
                    Err(e) => tracing::error!(error = %e, "the disk hygiene pass failed"),
                }
            }
            Event::DiskMeasured(result) => {
                self.disk_job = None;
                self.disk_at = Some(now + self.config.disk_isolation.watch_interval);
                match result {
                    Ok(measurements) => self.on_disk_measured(measurements, now),
                    Err(e) => tracing::error!(error = %e, "the disk measurement failed"),
                }
            }
        }
    }

    /// Kills every task (SIGTERM, grace, SIGKILL); the loop ends when all have ended.
    fn begin_shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        let grace = self.config.executor_shutdown_grace_period;
        self.shutting_down = true;
        self.shutdown_deadline = Some(now + grace + SHUTDOWN_SLACK);
        let actions = self.manager.shutdown(grace, now);
        self.execute(actions);
    }

    fn on_registered(&mut self, conn: Connection, now: Instant) {
        let registered = conn.registered;
        if registered.agent_id.is_empty() {
            let delay = self.schedule_reconnect(now, false);
            tracing::warn!(retry_in = ?delay, "the master registered the agent without an id; retrying");
            return;
        }
        let reregistered = self.manager.agent_id() == registered.agent_id;
        if !reregistered
            && let Err(e) = checkpoint::write_agent_id(&self.config.work_dir, &registered.agent_id)
        {
            tracing::error!(error = %e, "cannot persist the agent id; a restart will register as a new agent");
        }
        let period = link::heartbeat_interval(registered.heartbeat_interval_seconds);
        tracing::info!(
            agent_id = %registered.agent_id,
            master_id = %registered.master_id,
            heartbeat = ?period,
            reregistered,
            "registered with the master"
        );
        self.backoff.reset();
        self.outbound = Some(conn.outbound);
        self.inbound = Some(conn.inbound);
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.heartbeat = Some(heartbeat);
        let actions = self.manager.registered(&registered.agent_id, now);
        self.execute(actions);
    }

    fn on_master_message(&mut self, msg: v1::MasterMessage, now: Instant) {
        use master_message::Message;
        let actions = match msg.message {
            Some(Message::RunTask(run)) => self.manager.run_task(run, now),
            Some(Message::RunTasks(run)) => {
                let mut actions = Vec::new();
                for task in run.tasks {
                    let one = v1::RunTask {
                        framework: run.framework.clone(),
                        task: Some(task),
                    };
                    actions.extend(self.manager.run_task(one, now));
                }
                actions
            }
            Some(Message::KillTask(kill)) => self.manager.kill_task(kill, now),
            Some(Message::ShutdownFramework(s)) => {
                self.manager.shutdown_framework(&s.framework_id, now)
            }
            Some(Message::Acknowledge(ack)) => self.manager.acknowledge(ack, now),
            Some(Message::Registered(r)) => {
                // A master may confirm the registration again; adopt a new id if it gives one.
                if !r.agent_id.is_empty() && r.agent_id != self.manager.agent_id() {
                    if let Err(e) = checkpoint::write_agent_id(&self.config.work_dir, &r.agent_id) {
                        tracing::error!(error = %e, "cannot persist the agent id");
                    }
                    self.manager.registered(&r.agent_id, now)
                } else {
                    Vec::new()
                }
            }
            Some(Message::Error(e)) => {
                tracing::error!(message = %e.message, "the master reports an error");
                Vec::new()
            }
            Some(Message::Ping(_)) => {
                self.send(agent_message::Message::Heartbeat(v1::AgentHeartbeat {}));
                Vec::new()
            }
            Some(Message::CheckpointResources(ledger)) => {
                self.on_checkpoint_resources(ledger);
                Vec::new()
            }
            Some(Message::FrameworkMessage(m)) => {
                tracing::debug!(framework_id = %m.framework_id, task_id = %m.task_id, "framework message dropped: command tasks have no executor to receive it");
                Vec::new()
            }
            None => {
                tracing::debug!("empty message from the master; ignored");
                Vec::new()
            }
        };
        self.execute(actions);
    }

    /// The master's whole ledger of this agent: written to the work dir first, then
    /// the volumes' directories made to match it (see [`crate::volumes`]). A ledger
    /// that cannot be written is not acted on (the master sends it again at the next
    /// change and registration).
    fn on_checkpoint_resources(&mut self, proto: v1::CheckpointResources) {
        let work_dir = self.config.work_dir.clone();
        if let Err(e) = crate::volumes::write(&work_dir, &proto) {
            tracing::error!(error = %e, "cannot checkpoint the master's ledger of reservations and volumes; not acting on it");
            return;
        }
        let ledger = crate::volumes::Ledger::new(&work_dir, proto);
        let in_use = self.manager.volumes_in_use();
        let applied = crate::volumes::apply(&work_dir, &ledger, self.manager.ledger(), &in_use);
        for path in &applied.created {
            tracing::info!(path = %path.display(), "persistent volume created");
        }
        for path in &applied.removed {
            tracing::info!(path = %path.display(), "persistent volume destroyed: its data was removed");
        }
        for path in &applied.kept_in_use {
            tracing::warn!(path = %path.display(), "the master's ledger no longer lists a volume a task is using; its data is kept");
        }
        for error in &applied.errors {
            tracing::error!(%error, "persistent volumes");
        }
        tracing::debug!(
            reserved = ledger.proto.reserved.len(),
            volumes = ledger.volumes.len(),
            "checkpointed the master's ledger"
        );
        let listed: std::collections::HashSet<(String, String)> = ledger
            .volumes
            .iter()
            .map(|v| (v.role.clone(), v.id.clone()))
            .collect();
        self.volume_usage.retain(|k, _| listed.contains(k));
        self.manager.set_ledger(ledger);
    }

    fn on_job(&mut self, job: Job, now: Instant) {
        let actions = match job {
            Job::Launched {
                key,
                container,
                result,
            } => {
                self.launches_in_flight = self.launches_in_flight.saturating_sub(1);
                self.manager.launched(&key, &container, result, now)
            }
            Job::Exited {
                key,
                container,
                result,
            } => self.manager.exited(&key, &container, result, now),
            Job::Killed {
                key,
                container,
                result,
            } => {
                if let Err(e) = result {
                    tracing::warn!(framework_id = %key.framework_id, task_id = %key.task_id, %container, error = %e, "kill failed");
                }
                Vec::new()
            }
        };
        self.execute(actions);
    }

    /// Queues what the task manager asked for; [`Self::flush`] does it. An update
    /// issued while not registered is not queued: the manager keeps it and sends it
    /// again (stamped with the agent id) on registration, so queuing it too would send
    /// it twice.
    fn execute(&mut self, actions: Vec<Action>) {
        let registered = self.outbound.is_some();
        self.deferred.extend(
            actions
                .into_iter()
                .filter(|a| registered || !matches!(a, Action::Send(_))),
        );
    }

    /// Does the queued actions, in order. What the world will see (a container
    /// started, an update sent) is in the checkpoint first: an agent killed right
    /// after never forgets a task it launched, nor re-opens one whose end it reported.
    fn flush(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let actions = std::mem::take(&mut self.deferred);
        // A launch whose task is not in the checkpoint is not started: an agent that
        // restarted would not know it (its process would be orphaned). It fails with
        // the reason instead. Updates still go out: they are retried from memory.
        let mut unwritten = None;
        if actions
            .iter()
            .any(|a| matches!(a, Action::Launch(_) | Action::Send(_)))
        {
            unwritten = self.write_ahead().err();
        }
        for action in actions {
            match action {
                Action::Send(status) => {
                    let update = v1::StatusUpdate {
                        status: Some(status),
                    };
                    self.send(agent_message::Message::StatusUpdate(update));
                }
                Action::Launch(spec) => {
                    let containerizer = self.containerizer.clone();
                    let key = TaskKey {
                        framework_id: spec.framework_id.clone(),
                        task_id: spec.task.task_id.clone(),
                    };
                    let container = spec.container_id.clone();
                    let refused = unwritten.clone();
                    let link = self.fetch_channel.clone();
                    self.launches_in_flight += 1;
                    self.spawn_job(
                        key.clone(),
                        container.clone(),
                        JobKind::Launch,
                        async move {
                            if let Some(e) = refused {
                                return Err(format!("the agent cannot write its checkpoint: {e}"));
                            }
                            let mut spec = spec;
                            // The task's configs and secrets, from the master (issue 16):
                            // held in memory for the launch only, see `objects`.
                            spec.objects = objects::fetch(
                                &link,
                                &spec.agent_id,
                                &spec.framework_id,
                                &spec.task,
                            )
                            .await?
                            .map(Arc::new);
                            containerizer.launch(*spec).await.map_err(|e| e.to_string())
                        },
                        move |key, container, result| Job::Launched {
                            key,
                            container,
                            result,
                        },
                    );
                }
                Action::Wait { key, container } => {
                    let containerizer = self.containerizer.clone();
                    let id = container.clone();
                    self.spawn_job(
                        key,
                        container,
                        JobKind::Wait,
                        async move { Ok(containerizer.wait(id).await.map_err(WaitError::from)) },
                        |key, container, result| Job::Exited {
                            key,
                            container,
                            // A panic of the containerizer is a failed wait.
                            result: result.map_err(WaitError::Failed).and_then(|r| r),
                        },
                    );
                }
                Action::Kill {
                    key,
                    container,
                    grace,
                } => {
                    let containerizer = self.containerizer.clone();
                    let id = container.clone();
                    self.spawn_job(
                        key,
                        container,
                        JobKind::Kill,
                        async move {
                            containerizer
                                .kill(id, grace)
                                .await
                                .map_err(|e| e.to_string())
                        },
                        |key, container, result| Job::Killed {
                            key,
                            container,
                            result,
                        },
                    );
                }
                Action::StartHealthCheck {
                    key,
                    container,
                    checker,
                } => {
                    let checker = health::run(
                        *checker,
                        key.clone(),
                        container,
                        self.containerizer.clone(),
                        self.health_tx.clone(),
                    );
                    if let Some(old) = self.health_checks.insert(key, tokio::spawn(checker)) {
                        old.abort();
                    }
                }
                Action::StopHealthCheck { key } => {
                    if let Some(checker) = self.health_checks.remove(&key) {
                        checker.abort();
                    }
                }
            }
        }
    }

    /// Spawns a job whose result (or panic) comes back as a [`Job`] for its task.
    fn spawn_job<T, F, W>(
        &mut self,
        key: TaskKey,
        container: ContainerId,
        kind: JobKind,
        fut: F,
        wrap: W,
    ) where
        T: Send + 'static,
        F: Future<Output = Result<T, String>> + Send + 'static,
        W: FnOnce(TaskKey, ContainerId, Result<T, String>) -> Job + Send + 'static,
    {
        self.jobs.spawn(async move {
            let result = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => r,
                Err(_) => Err(format!("the containerizer panicked during {kind:?}")),
            };
            wrap(key, container, result)
        });
    }

    fn send(&mut self, message: agent_message::Message) {
        let Some(outbound) = &self.outbound else {
            return;
        };
        match outbound.try_send(v1::AgentMessage {
            message: Some(message),
        }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("outbound queue to the master is full; the message will be retried");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!(
                    "the master stream is closing; message dropped (updates are retried)"
                );
            }
        }
    }

    fn start_connect(&mut self) {
        self.reconnect_at = None;
        if self.shutting_down {
            return;
        }
        let agent_id = self.manager.agent_id().to_string();
        let register = v1::Register {
            agent_info: Some(v1::AgentInfo {
                id: agent_id.clone(),
                hostname: self.identity.hostname.clone(),
                address: self.identity.address.clone(),
                resources: self.identity.resources.to_proto(),
                attributes: self
                    .identity
                    .attributes
                    .iter()
                    .map(|(name, value)| v1::Attribute {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                // `principal` is the master's to set (from the agent's certificate).
                ..Default::default()
            }),
            tasks: self.manager.running_tasks(),
            version: VERSION.to_string(),
            // What this agent checkpointed of the master's ledger, for a master that
            // does not know it (a new registry).
            checkpointed: self
                .manager
                .ledger()
                .from_master
                .then(|| self.manager.ledger().proto.clone()),
        };
        tracing::info!(
            master = %self.identity.master,
            agent_id = %agent_id,
            tasks = register.tasks.len(),
            "registering with the master"
        );
        let endpoint = self.endpoint.borrow().clone();
        self.connecting = Some(Box::pin(link::connect(endpoint, register)));
    }

    /// Schedules the next registration attempt; `unreachable`: the last one could not
    /// reach the master at all (see [`Backoff::next_delay`]).
    fn schedule_reconnect(&mut self, now: Instant, unreachable: bool) -> Duration {
        let delay = self.backoff.next_delay(unreachable);
        self.reconnect_at = Some(now + delay);
        delay
    }

    fn disconnect(&mut self) {
        // Updates of this batch go out on the stream they were meant for.
        self.flush();
        self.outbound = None;
        self.inbound = None;
        self.heartbeat = None;
    }

    fn next_timer(&self) -> Option<Instant> {
        let checkpoint = match (self.checkpoint_unsynced, &self.sync_job, self.last_sync) {
            (true, None, Some(last)) => Some(last + self.config.checkpoint_interval),
            (true, None, None) => Some(Instant::now()),
            _ => None,
        };
        [
            self.manager.next_retry(),
            checkpoint,
            self.shutdown_deadline,
            self.leaving,
            self.hygiene_at,
            self.disk_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Writes what changed since the last write, now, on the loop's thread: the
    /// changed tasks' lines appended to the log (no fsync; a sync follows within
    /// `checkpoint_interval`), or a snapshot when one is due. What a failed write
    /// missed stays changed, for the next write.
    fn write_ahead(&mut self) -> Result<(), String> {
        let changes = self.manager.take_changes();
        if changes.is_empty() {
            return Ok(());
        }
        let written = if changes.all || self.log.wants_compaction() {
            self.log.compact(self.manager.checkpoint())
        } else {
            self.log.append(&self.manager.task_changes(&changes))
        };
        match written {
            Ok(()) => {
                if self.checkpoint_failing.take().is_some() {
                    tracing::info!("the checkpoint can be written again");
                }
                self.checkpoint_unsynced = true;
                Ok(())
            }
            Err(e) => {
                self.manager.keep_changes(changes);
                // Said once, not at every batch while the disk stays full.
                if self.checkpoint_failing.replace(e.to_string()).is_none() {
                    tracing::error!(error = %e, "cannot write the checkpoint: launches fail until it can be written again");
                } else {
                    tracing::debug!(error = %e, "cannot write the checkpoint");
                }
                Err(e.to_string())
            }
        }
    }

    /// Writes what this batch changed, and starts a sync of the checkpoint when it
    /// has unsynced writes and the last sync is old enough.
    fn maybe_checkpoint(&mut self, now: Instant) {
        let _ = self.write_ahead();
        if !self.checkpoint_unsynced || self.sync_job.is_some() {
            return;
        }
        if self
            .last_sync
            .is_some_and(|last| now < last + self.config.checkpoint_interval)
        {
            return;
        }
        let job = self.log.sync_job();
        self.checkpoint_unsynced = false;
        self.last_sync = Some(now);
        self.sync_job = Some(tokio::task::spawn_blocking(move || job.run()));
    }

    /// Starts a disk hygiene pass (log rotation, sandbox collection) when one is due.
    fn maybe_hygiene(&mut self, now: Instant) {
        if self.hygiene_job.is_some()
            || self.leaving.is_some()
            || self.hygiene_at.is_none_or(|at| now < at)
        {
            return;
        }
        self.hygiene_at = None;
        let job = HygieneJob {
            work_dir: self.config.work_dir.clone(),
            live: self.manager.live_sandboxes(),
            options: self.config.hygiene.clone(),
        };
        self.hygiene_job = Some(tokio::task::spawn_blocking(move || {
            job.run(std::time::SystemTime::now())
        }));
    }

    /// Starts measuring the running tasks' disk when it is due.
    fn maybe_measure_disk(&mut self, now: Instant) {
        if self.disk_job.is_some() || self.disk_at.is_none_or(|at| now < at) {
            return;
        }
        if self.leaving.is_some() || self.shutting_down {
            // Stopping: no more measurements (and no timer left due, to spin on).
            self.disk_at = None;
            return;
        }
        let targets = self.manager.disk_targets();
        let volumes: Vec<(String, String, PathBuf)> = self
            .manager
            .ledger()
            .volumes
            .iter()
            .map(|v| (v.role.clone(), v.id.clone(), v.path.clone()))
            .collect();
        if targets.is_empty() && volumes.is_empty() {
            self.disk_usage.clear();
            self.volume_usage.clear();
            self.disk_at = Some(now + self.config.disk_isolation.watch_interval);
            return;
        }
        self.disk_at = None;
        let job = DiskJob {
            targets,
            volumes,
            max_entries: self.config.disk_isolation.max_entries,
        };
        self.disk_job = Some(tokio::task::spawn_blocking(move || job.run()));
    }

    /// Keeps what a disk measurement found (it replaces the last), and kills the tasks
    /// over their `disk` when enforcing.
    fn on_disk_measured(&mut self, pass: DiskPass, now: Instant) {
        let measurements = pass.tasks;
        self.volume_usage = pass
            .volumes
            .into_iter()
            .filter(|v| self.manager.ledger().volume(&v.role, &v.id).is_some())
            .map(|v| ((v.role, v.id), v.used_bytes))
            .collect();
        let partial = measurements.iter().filter(|m| m.partial).count();
        if partial > 0 {
            tracing::warn!(
                tasks = partial,
                max_entries = self.config.disk_isolation.max_entries,
                "disk isolation: sandboxes with more entries than a walk looks at; their usage is a lower bound"
            );
        }
        let mut actions = Vec::new();
        self.disk_usage.clear();
        for m in measurements {
            for error in &m.errors {
                tracing::debug!(framework_id = %m.key.framework_id, task_id = %m.key.task_id, %error, "disk isolation");
            }
            if self.config.disk_isolation.enforce
                && let Some(message) = m.exceeded()
            {
                actions.extend(self.manager.disk_limit(&m.key, &m.container, message, now));
            }
            self.disk_usage.insert(m.key.clone(), m);
        }
        self.execute(actions);
    }

    fn on_hygiene(&mut self, report: HygieneReport) {
        if report.sandboxes_removed > 0 || report.logs_rotated > 0 {
            tracing::info!(
                sandboxes_removed = report.sandboxes_removed,
                logs_rotated = report.logs_rotated,
                gc_delay_secs = report.effective_gc_delay_secs,
                "disk hygiene"
            );
        }
        for error in &report.errors {
            tracing::warn!(%error, "disk hygiene");
        }
        let full = |r: &HygieneReport| {
            r.disk
                .is_some_and(|d| d.used >= 1.0 - self.config.hygiene.gc_disk_headroom)
        };
        let was_full = self.last_hygiene.as_ref().is_some_and(full);
        if full(&report) && !was_full {
            tracing::warn!(disk = ?report.disk, "the work dir's disk is nearly full: finished sandboxes are removed at once");
        } else if !full(&report) && was_full {
            tracing::info!(disk = ?report.disk, "the work dir's disk has room again");
        }
        self.last_hygiene = Some(report);
    }

    fn answer(&mut self, query: Query) {
        match query {
            Query::State(reply) => {
                let (tasks, completed_tasks) = self.manager.views();
                let _ = reply.send(StateView {
                    id: self.manager.agent_id().to_string(),
                    hostname: self.identity.hostname.clone(),
                    address: self.identity.address.clone(),
                    master: self.identity.master.clone(),
                    registered: self.outbound.is_some(),
                    containerizer: self.containerizer.name(),
                    resources: self.identity.resources.clone(),
                    attributes: self.identity.attributes.iter().cloned().collect(),
                    tasks,
                    completed_tasks,
                    disk: self.last_hygiene.clone(),
                    checkpoint_error: self.checkpoint_failing.clone(),
                });
            }
            Query::Task { key, reply } => {
                let known = self.manager.lookup(&key).map(|(sandbox, state)| KnownTask {
                    sandbox,
                    state,
                    framework_principal: self.manager.framework_principal(&key).unwrap_or_default(),
                });
                let _ = reply.send(known);
            }
            Query::Containers(reply) => {
                let containers = self
                    .manager
                    .running_containers()
                    .into_iter()
                    .map(|(key, container)| {
                        let disk = self
                            .disk_usage
                            .get(&key)
                            .filter(|m| m.container == container)
                            .map(|m| (m.used_bytes, m.limit_bytes));
                        RunningContainer {
                            key,
                            container,
                            disk,
                        }
                    })
                    .collect();
                let _ = reply.send(containers);
            }
            Query::ReportUsage(mut report) => {
                let mut volumes: Vec<v1::VolumeUsage> = self
                    .volume_usage
                    .iter()
                    .map(|((role, id), used)| v1::VolumeUsage {
                        role: role.clone(),
                        persistence_id: id.clone(),
                        used_bytes: *used,
                    })
                    .collect();
                volumes.sort_by(|a, b| {
                    (&a.role, &a.persistence_id).cmp(&(&b.role, &b.persistence_id))
                });
                report.volumes = volumes;
                if !report.tasks.is_empty() || !report.volumes.is_empty() {
                    self.send(agent_message::Message::UsageReport(report));
                }
            }
            Query::Volumes(reply) => {
                let users = self.manager.volume_users();
                let views = self
                    .manager
                    .ledger()
                    .volumes
                    .iter()
                    .map(|v| crate::volumes::PersistentVolumeView {
                        role: v.role.clone(),
                        persistence_id: v.id.clone(),
                        principal: v.principal.clone(),
                        container_path: v.container_path.clone(),
                        mode: if v.read_only { "RO" } else { "RW" },
                        size_mb: v.size_milli as f64 / 1000.0,
                        source: if v.mount.is_some() {
                            "mount"
                        } else {
                            "work_dir"
                        },
                        path: v.path.display().to_string(),
                        used_bytes: self
                            .volume_usage
                            .get(&(v.role.clone(), v.id.clone()))
                            .copied(),
                        tasks: users
                            .iter()
                            .filter(|(role, id, _)| *role == v.role && *id == v.id)
                            .map(|(_, _, key)| crate::volumes::VolumeTask {
                                framework_id: key.framework_id.clone(),
                                task_id: key.task_id.clone(),
                            })
                            .collect(),
                    })
                    .collect();
                let _ = reply.send(views);
            }
        }
    }

    /// Stops what is left: writes the last checkpoint, lets the last updates leave,
    /// stops every job.
    async fn finish(mut self) {
        self.flush();
        if let Some(job) = self.sync_job.take() {
            let _ = job.await;
        }
        let _ = self.write_ahead();
        let job = self.log.sync_job();
        match tokio::task::spawn_blocking(move || job.run()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write the final checkpoint"),
            Err(e) => tracing::error!(error = %e, "the checkpoint writer failed"),
        }
        if let Some(outbound) = self.outbound.take() {
            let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
            while outbound.capacity() < outbound.max_capacity()
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        for (_, checker) in self.health_checks.drain() {
            checker.abort();
        }
        self.jobs.shutdown().await;
        self.connecting = None;
        self.inbound = None;
        tracing::info!("agent stopped");
    }
}

#[derive(Debug, Clone, Copy)]
enum JobKind {
    Launch,
    Wait,
    Kill,
}

async fn poll_boxed<T>(fut: &mut Option<BoxFuture<'static, T>>) -> T {
    match fut {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn poll_join<T>(job: &mut Option<JoinHandle<T>>) -> Result<T, JoinError> {
    match job {
        Some(j) => j.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

async fn next_message(
    inbound: &mut Option<tonic::Streaming<v1::MasterMessage>>,
) -> Result<Option<v1::MasterMessage>, tonic::Status> {
    match inbound {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

async fn tick(heartbeat: &mut Option<tokio::time::Interval>) {
    match heartbeat {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
