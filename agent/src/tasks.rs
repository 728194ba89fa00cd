//! The task manager: what the agent runs, each task's life, and the status updates it
//! produces. Sans-IO: the agent loop feeds it master messages and container events
//! with the current time and carries out the [`Action`]s it returns.
//!
//! ```text
//!            RunTask                 launched Ok                 exited
//!  (none) ──────────▶ Launching ─────────────────▶ Running ─────────────▶ Terminated
//!                      │  STARTING                   │ RUNNING           FINISHED/FAILED
//!                      │ kill (remembered)           │ kill                   ▲
//!                      ▼                             ▼                        │
//!                 launched Ok ──▶ Killing ◀──────────┘ (KILLING if capable)   │
//!                                    └──────────── exited: KILLED ────────────┘
//! ```
//!
//! A task is forgotten (moved to the bounded list of completed tasks) once it is
//! Terminated and its last update is acknowledged; its sandbox stays on disk.
//!
//! A task with a `health_check` gets a checker ([`crate::health`]) when it becomes
//! Running ([`Action::StartHealthCheck`]), stopped when it is being killed or has ended
//! ([`Action::StopHealthCheck`]). What the checker sees comes back through
//! [`TaskManager::health`]: TASK_RUNNING updates with `healthy` set, or a kill whose
//! TASK_KILLED says which check failed.
//!
//! Disk isolation ([`crate::disk`]) measures the running tasks ([`TaskManager::disk_targets`])
//! and hands back those over their `disk` ([`TaskManager::disk_limit`]): they are killed
//! as any agent-initiated kill is (their kill policy's grace, then SIGKILL), once, and
//! end TASK_FAILED with `REASON_CONTAINER_LIMITATION_DISK` and the usage in the message.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use strata_proto::v1::{self, TaskState, TaskStatusReason};
use strata_proto::{Resources, is_terminal, state_name};

use crate::checkpoint::{self, KillRecord, TaskRecord, UpdateRecord};
use crate::containerizer::{
    ContainerError, ContainerHandle, ContainerId, LaunchSpec, Termination, task_environment,
};
use crate::health::{Checker, HealthEvent};
use crate::sandbox;
use crate::task_key::TaskKey;
use crate::updates::{Ack, StatusUpdates};

/// How many completed tasks the agent remembers for `/state` and `/files/read`.
const MAX_COMPLETED: usize = 1000;
/// The longest kill grace period the agent honours.
const MAX_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Where a task is in its life; see the module docs. The state reported to the
/// master (`Task::state`) follows it but is not the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Launching,
    Running,
    Killing,
    Terminated,
}

impl Phase {
    fn can_kill(self) -> bool {
        matches!(self, Phase::Launching | Phase::Running)
    }

    fn can_move_to(self, to: Phase) -> bool {
        use Phase::*;
        matches!(
            (self, to),
            (Launching, Running | Killing | Terminated)
                | (Running, Killing | Terminated)
                | (Killing, Terminated)
        )
    }
}

/// Who asked for a kill: it shapes the message of the TASK_KILLED update.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KillCause {
    Framework,
    FrameworkShutdown,
    AgentShutdown,
    /// The task's health check failed too often; says how.
    HealthCheck(String),
    /// The task used more disk than its `disk` (disk isolation); says how much.
    DiskLimit(String),
}

impl KillCause {
    /// The checkpointed form of a kill in progress.
    fn record(&self, grace: Duration) -> KillRecord {
        let (cause, message) = match self {
            KillCause::Framework => ("framework", String::new()),
            KillCause::FrameworkShutdown => ("framework_shutdown", String::new()),
            KillCause::AgentShutdown => ("agent_shutdown", String::new()),
            KillCause::HealthCheck(m) => ("health_check", m.clone()),
            KillCause::DiskLimit(m) => ("disk_limit", m.clone()),
        };
        KillRecord {
            grace_seconds: grace.as_secs_f64(),
            cause: cause.to_string(),
            message,
        }
    }

    /// A kill in progress, from the checkpoint.
    fn restore(record: &KillRecord) -> (Duration, KillCause) {
        let grace = Duration::try_from_secs_f64(record.grace_seconds)
            .unwrap_or_default()
            .min(MAX_GRACE);
        let cause = match record.cause.as_str() {
            "framework_shutdown" => KillCause::FrameworkShutdown,
            "agent_shutdown" => KillCause::AgentShutdown,
            "health_check" => KillCause::HealthCheck(record.message.clone()),
            "disk_limit" => KillCause::DiskLimit(record.message.clone()),
            _ => KillCause::Framework,
        };
        (grace, cause)
    }
}

/// Why `wait` could not tell how a container ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WaitError {
    /// The containerizer lost track of it (or failed).
    Failed(String),
    /// It ended while the agent was down and nothing recorded how (after recovery).
    EndedWhileDown(String),
}

impl From<ContainerError> for WaitError {
    fn from(e: ContainerError) -> WaitError {
        match e {
            ContainerError::EndedWhileDown(message) => WaitError::EndedWhileDown(message),
            other => WaitError::Failed(other.to_string()),
        }
    }
}

#[derive(Debug)]
struct Task {
    framework: v1::FrameworkInfo,
    info: v1::TaskInfo,
    container_id: ContainerId,
    handle: Option<ContainerHandle>,
    sandbox: PathBuf,
    phase: Phase,
    /// The latest state the agent reported.
    state: TaskState,
    /// Set once a kill is asked for: its grace period and cause.
    kill: Option<(Duration, KillCause)>,
    /// The health last reported (tasks with a health check, once checked).
    healthy: Option<bool>,
}

/// What changed for the checkpoint since the manager was last asked.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// More than tasks changed: write a whole snapshot.
    pub all: bool,
    pub tasks: HashSet<TaskKey>,
}

impl Changes {
    pub(crate) fn is_empty(&self) -> bool {
        !self.all && self.tasks.is_empty()
    }
}

/// What the agent loop must do for the task manager.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send this update to the master (if connected; it is retried anyway).
    Send(v1::TaskStatus),
    /// Launch the container (which prepares its sandbox).
    Launch(Box<LaunchSpec>),
    /// Kill the container with this grace period.
    Kill {
        key: TaskKey,
        container: ContainerId,
        grace: Duration,
    },
    /// Wait for the container to end.
    Wait {
        key: TaskKey,
        container: ContainerId,
    },
    /// Start checking the health of the task, which is running in `container`.
    StartHealthCheck {
        key: TaskKey,
        container: ContainerId,
        checker: Box<Checker>,
    },
    /// Stop checking the health of the task (if it is checked).
    StopHealthCheck { key: TaskKey },
}

/// A task as `/state` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentTaskView {
    pub framework_id: String,
    /// The principal the master stamped on the task's framework ("" when insecure):
    /// the object of the agent's `view_tasks` and `access_sandboxes` ACLs.
    pub framework_principal: String,
    pub task_id: String,
    pub name: String,
    pub state: &'static str,
    pub sandbox: String,
    pub container_id: String,
    pub pid: Option<u32>,
    /// Status updates not yet acknowledged.
    pub pending_updates: usize,
    /// What the task's health check found last; `None`: no health check, or no result
    /// yet.
    pub healthy: Option<bool>,
}

#[derive(Debug, Clone)]
struct CompletedTask {
    name: String,
    framework_principal: String,
    state: TaskState,
    sandbox: PathBuf,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct TaskManager {
    work_dir: PathBuf,
    agent_id: String,
    tasks: HashMap<TaskKey, Task>,
    completed: HashMap<TaskKey, CompletedTask>,
    /// Eviction order of `completed`, oldest first.
    completed_order: VecDeque<TaskKey>,
    updates: StatusUpdates,
    default_kill_grace: Duration,
    /// Whether the containerizer's launches are worth a TASK_STARTING.
    reports_starting: bool,
    shutting_down: bool,
    /// Tasks whose checkpointed state changed since the last `take_changes`.
    changed: HashSet<TaskKey>,
    /// Something beyond single tasks changed (the agent id): the next checkpoint
    /// write is a whole snapshot.
    changed_all: bool,
    /// The user of tasks that name none (neither their command nor their framework):
    /// the agent's `--default-user`, checked at start; `None`: the agent's own user.
    default_user: Option<String>,
    /// The master's ledger of this agent's reservations and persistent volumes, as
    /// last checkpointed ([`crate::volumes`]).
    ledger: crate::volumes::Ledger,
}

impl TaskManager {
    pub(crate) fn new(
        work_dir: PathBuf,
        agent_id: String,
        updates: StatusUpdates,
        default_kill_grace: Duration,
        reports_starting: bool,
    ) -> TaskManager {
        TaskManager {
            work_dir,
            agent_id,
            tasks: HashMap::new(),
            completed: HashMap::new(),
            completed_order: VecDeque::new(),
            updates,
            default_kill_grace,
            reports_starting,
            shutting_down: false,
            changed: HashSet::new(),
            changed_all: false,
            default_user: None,
            ledger: crate::volumes::Ledger::default(),
        }
    }

    /// The ledger the tasks' volumes are looked up in.
    pub(crate) fn set_ledger(&mut self, ledger: crate::volumes::Ledger) {
        self.ledger = ledger;
    }

    pub(crate) fn ledger(&self) -> &crate::volumes::Ledger {
        &self.ledger
    }

    /// The volumes `info` uses: (role, id, its data), whether the ledger still lists
    /// them or not (a task keeps using a volume the ledger dropped).
    fn volumes_of(&self, info: &v1::TaskInfo) -> Vec<(String, String, PathBuf)> {
        let Ok(resources) = Resources::try_from_proto(&info.resources) else {
            return Vec::new();
        };
        resources
            .volumes()
            .filter_map(|e| crate::volumes::data_of(&self.work_dir, e))
            .collect()
    }

    /// The data of the volumes that tasks not yet ended use (never removed).
    pub(crate) fn volumes_in_use(&self) -> HashSet<PathBuf> {
        self.tasks
            .values()
            .filter(|t| t.phase != Phase::Terminated)
            .flat_map(|t| self.volumes_of(&t.info))
            .map(|(_, _, path)| path)
            .collect()
    }

    /// The tasks not yet ended that use each volume: (role, id) and the task.
    pub(crate) fn volume_users(&self) -> Vec<(String, String, TaskKey)> {
        let mut out: Vec<(String, String, TaskKey)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.phase != Phase::Terminated)
            .flat_map(|(key, t)| {
                self.volumes_of(&t.info)
                    .into_iter()
                    .map(move |(role, id, _)| (role, id, key.clone()))
            })
            .collect();
        out.sort();
        out
    }

    /// The mounts of a task's volumes, or why it cannot have them (a volume not in the
    /// ledger). A volume's root goes to the task's user unless a task not yet ended
    /// uses it already.
    fn volume_mounts(
        &self,
        resources: &Resources,
    ) -> Result<Vec<crate::volumes::VolumeMount>, String> {
        if resources.volumes().next().is_none() {
            // The usual launch: no walk over every task (that made each launch O(tasks)).
            return Ok(Vec::new());
        }
        let in_use = self.volumes_in_use();
        resources
            .volumes()
            .filter_map(|e| Some((e, e.persistence()?)))
            .map(|(e, p)| {
                let role = e.role.as_deref().unwrap_or("*");
                let Some(v) = self.ledger.volume(role, &p.id) else {
                    return Err(format!(
                        "volume '{}' of role '{role}' is not on this agent (its ledger does not list it)",
                        p.id
                    ));
                };
                strata_proto::resources::valid_container_path(&p.container_path)?;
                Ok(crate::volumes::VolumeMount {
                    role: v.role.clone(),
                    id: v.id.clone(),
                    host_path: v.path.clone(),
                    container_path: p.container_path.clone(),
                    read_only: p.read_only,
                    chown: !in_use.contains(&v.path),
                })
            })
            .collect()
    }

    /// Runs the tasks that name no user as `user` (the agent's `--default-user`,
    /// already checked to exist); `None` or empty: as the agent's own user.
    pub(crate) fn with_default_user(mut self, user: Option<String>) -> TaskManager {
        self.default_user = user.filter(|u| !u.is_empty());
        self
    }

    /// Who a task runs as: its command's user, else its framework's, else the
    /// agent's default user; `None`: the agent's own user.
    fn user_of(&self, command: &v1::CommandInfo, framework: &v1::FrameworkInfo) -> Option<String> {
        [&command.user, &framework.user]
            .into_iter()
            .find(|u| !u.is_empty())
            .or(self.default_user.as_ref())
            .cloned()
    }

    pub(crate) fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// What changed since the last call: the checkpoint writes it.
    pub(crate) fn take_changes(&mut self) -> Changes {
        Changes {
            all: std::mem::take(&mut self.changed_all),
            tasks: std::mem::take(&mut self.changed),
        }
    }

    /// Gives back changes a failed checkpoint write did not record.
    pub(crate) fn keep_changes(&mut self, changes: Changes) {
        self.changed_all |= changes.all;
        self.changed.extend(changes.tasks);
    }

    /// The checkpoint lines of the changed tasks: each task's whole record (none once
    /// forgotten) and its whole update queue.
    pub(crate) fn task_changes(&self, changes: &Changes) -> Vec<checkpoint::TaskChange> {
        changes
            .tasks
            .iter()
            .map(|key| checkpoint::TaskChange {
                framework_id: key.framework_id.clone(),
                task_id: key.task_id.clone(),
                task: self.tasks.get(key).map(|t| task_record(key, t)),
                updates: self.update_records(key).collect(),
            })
            .collect()
    }

    fn update_records<'a>(&'a self, key: &'a TaskKey) -> impl Iterator<Item = UpdateRecord> + 'a {
        self.updates.pending(key).map(|s| UpdateRecord {
            framework_id: s.framework_id.clone(),
            task_id: s.task_id.clone(),
            uuid: s.uuid.clone(),
            state: state_name(strata_proto::states::state_from_i32(s.state)).to_string(),
            status: checkpoint::encode(s),
        })
    }

    /// The master asked to run a task.
    pub(crate) fn run_task(&mut self, run: v1::RunTask, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let (Some(framework), Some(info)) = (run.framework, run.task) else {
            tracing::warn!("RunTask without framework or task; ignored");
            return actions;
        };
        if framework.id.is_empty() || info.task_id.is_empty() {
            tracing::warn!(framework_id = %framework.id, task_id = %info.task_id, "RunTask with an empty id; ignored");
            return actions;
        }
        let key = TaskKey {
            framework_id: framework.id.clone(),
            task_id: info.task_id.clone(),
        };
        if self.shutting_down {
            // As Mesos does: no update; the master reconciles the task later.
            tracing::warn!(framework_id = %key.framework_id, task_id = %key.task_id, "agent is shutting down; RunTask ignored");
            return actions;
        }
        let reject = |this: &mut TaskManager,
                      actions: &mut Vec<Action>,
                      reason,
                      message: String| {
            tracing::warn!(framework_id = %key.framework_id, task_id = %key.task_id, %message, "task refused");
            let status = this.status(&key, TaskState::TaskError, reason, message, None);
            this.queue(&key, status, now, actions);
        };
        if let Err(e) = sandbox::validate_id("framework", &key.framework_id)
            .and_then(|()| sandbox::validate_id("task", &key.task_id))
        {
            reject(
                self,
                &mut actions,
                TaskStatusReason::ReasonTaskInvalid,
                e.to_string(),
            );
            return actions;
        }
        if self.tasks.contains_key(&key) {
            let message = format!("task '{}' is already running on this agent", key.task_id);
            reject(
                self,
                &mut actions,
                TaskStatusReason::ReasonDuplicateTaskId,
                message,
            );
            return actions;
        }
        let resources = match Resources::try_from_proto(&info.resources) {
            Ok(r) => r,
            Err(e) => {
                reject(
                    self,
                    &mut actions,
                    TaskStatusReason::ReasonTaskInvalid,
                    format!("invalid resources: {e}"),
                );
                return actions;
            }
        };
        let Some(command) = info.command.clone().filter(|c| !c.value.trim().is_empty()) else {
            let message = "task has no command to run".to_string();
            reject(
                self,
                &mut actions,
                TaskStatusReason::ReasonTaskInvalid,
                message,
            );
            return actions;
        };
        if let Some(check) = &info.health_check
            && let Err(e) = strata_proto::health::validate(check)
        {
            reject(
                self,
                &mut actions,
                TaskStatusReason::ReasonTaskInvalid,
                format!("invalid health check: {e}"),
            );
            return actions;
        }
        let volumes = match self.volume_mounts(&resources) {
            Ok(v) => v,
            Err(message) => {
                tracing::warn!(framework_id = %key.framework_id, task_id = %key.task_id, %message, "task refused");
                let status = self.status(
                    &key,
                    TaskState::TaskFailed,
                    TaskStatusReason::ReasonContainerLaunchFailed,
                    message,
                    None,
                );
                self.queue(&key, status, now, &mut actions);
                return actions;
            }
        };
        let user = self.user_of(&command, &framework);
        let sandbox = sandbox::sandbox_path(&self.work_dir, &key.framework_id, &key.task_id);
        let container_id = ContainerId::random();
        let spec = LaunchSpec {
            container_id: container_id.clone(),
            agent_id: self.agent_id.clone(),
            framework_id: key.framework_id.clone(),
            framework: framework.clone(),
            task: info.clone(),
            command,
            resources,
            sandbox: sandbox.clone(),
            user,
            objects: None,
            volumes,
        };
        tracing::info!(framework_id = %key.framework_id, task_id = %key.task_id, container = %container_id, "launching task");
        self.forget_completed(&key);
        self.tasks.insert(
            key.clone(),
            Task {
                framework,
                info,
                container_id,
                handle: None,
                sandbox,
                phase: Phase::Launching,
                state: TaskState::TaskStaging,
                kill: None,
                healthy: None,
            },
        );
        self.changed.insert(key.clone());
        if self.reports_starting {
            self.report(
                &key,
                TaskState::TaskStarting,
                TaskStatusReason::ReasonUnspecified,
                String::new(),
                None,
                now,
                &mut actions,
            );
        }
        actions.push(Action::Launch(Box::new(spec)));
        actions
    }

    /// The master asked to kill a task.
    pub(crate) fn kill_task(&mut self, kill: v1::KillTask, now: Instant) -> Vec<Action> {
        let key = TaskKey {
            framework_id: kill.framework_id,
            task_id: kill.task_id,
        };
        let mut actions = Vec::new();
        if self.tasks.contains_key(&key) {
            let grace = grace_of(kill.kill_policy.as_ref());
            self.kill(&key, grace, KillCause::Framework, now, &mut actions);
        } else if self.completed.contains_key(&key) || self.updates.len(&key) > 0 {
            tracing::debug!(framework_id = %key.framework_id, task_id = %key.task_id, "kill of a task that has ended; ignored");
        } else {
            tracing::info!(framework_id = %key.framework_id, task_id = %key.task_id, "kill of an unknown task");
            let message = format!("task '{}' is unknown to this agent", key.task_id);
            let status = self.status(
                &key,
                TaskState::TaskLost,
                TaskStatusReason::ReasonTaskUnknown,
                message,
                None,
            );
            self.queue(&key, status, now, &mut actions);
        }
        actions
    }

    /// The master asked to shut a framework down: kill all its tasks.
    pub(crate) fn shutdown_framework(&mut self, framework_id: &str, now: Instant) -> Vec<Action> {
        let keys: Vec<TaskKey> = self
            .tasks
            .keys()
            .filter(|k| k.framework_id == framework_id)
            .cloned()
            .collect();
        tracing::info!(framework_id, tasks = keys.len(), "shutting down framework");
        let mut actions = Vec::new();
        for key in keys {
            self.kill(&key, None, KillCause::FrameworkShutdown, now, &mut actions);
        }
        actions
    }

    /// The agent is shutting down: kill every task with `grace`, refuse new ones.
    pub(crate) fn shutdown(&mut self, grace: Duration, now: Instant) -> Vec<Action> {
        self.shutting_down = true;
        let keys: Vec<TaskKey> = self.tasks.keys().cloned().collect();
        let mut actions = Vec::new();
        for key in keys {
            self.kill(
                &key,
                Some(grace),
                KillCause::AgentShutdown,
                now,
                &mut actions,
            );
        }
        actions
    }

    /// Whether every task has ended (the agent may stop).
    pub(crate) fn all_terminated(&self) -> bool {
        self.tasks.values().all(|t| t.phase == Phase::Terminated)
    }

    /// The master acknowledged an update.
    pub(crate) fn acknowledge(&mut self, ack: v1::AcknowledgeUpdate, now: Instant) -> Vec<Action> {
        let key = TaskKey {
            framework_id: ack.framework_id,
            task_id: ack.task_id,
        };
        let mut actions = Vec::new();
        match self.updates.acknowledge(&key, &ack.uuid, now) {
            Ack::Acked { next, .. } => {
                self.changed.insert(key.clone());
                actions.extend(next.map(Action::Send));
                self.forget_if_done(&key);
            }
            Ack::NotHead | Ack::Unknown => {
                tracing::debug!(framework_id = %key.framework_id, task_id = %key.task_id, uuid = %ack.uuid, "acknowledgement of no pending update; ignored");
            }
        }
        actions
    }

    /// A launch finished.
    pub(crate) fn launched(
        &mut self,
        key: &TaskKey,
        container: &ContainerId,
        result: Result<ContainerHandle, String>,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(task) = self
            .tasks
            .get_mut(key)
            .filter(|t| &t.container_id == container)
        else {
            return actions;
        };
        match result {
            Ok(handle) => {
                task.handle = Some(handle);
                self.changed.insert(key.clone());
                actions.push(Action::Wait {
                    key: key.clone(),
                    container: container.clone(),
                });
                if let Some((grace, _)) = task.kill.clone() {
                    // Killed while launching: never report it running.
                    if self.transition(key, Phase::Killing) {
                        self.report_killing(key, now, &mut actions);
                        actions.push(Action::Kill {
                            key: key.clone(),
                            container: container.clone(),
                            grace,
                        });
                    }
                } else if self.transition(key, Phase::Running) {
                    self.report(
                        key,
                        TaskState::TaskRunning,
                        TaskStatusReason::ReasonUnspecified,
                        String::new(),
                        None,
                        now,
                        &mut actions,
                    );
                    self.start_health_check(key, &mut actions);
                }
            }
            Err(message) => {
                let killed = task.kill.is_some();
                if self.transition(key, Phase::Terminated) {
                    tracing::warn!(framework_id = %key.framework_id, task_id = %key.task_id, %message, "launch failed");
                    let (state, reason, message) = if killed {
                        (
                            TaskState::TaskKilled,
                            TaskStatusReason::ReasonTaskKilledDuringLaunch,
                            format!("task killed during launch ({message})"),
                        )
                    } else {
                        (
                            TaskState::TaskFailed,
                            TaskStatusReason::ReasonContainerLaunchFailed,
                            format!("cannot launch the task: {message}"),
                        )
                    };
                    self.report(key, state, reason, message, None, now, &mut actions);
                }
            }
        }
        actions
    }

    /// A container ended (or could not be waited for).
    pub(crate) fn exited(
        &mut self,
        key: &TaskKey,
        container: &ContainerId,
        result: Result<Termination, WaitError>,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let Some(task) = self.tasks.get(key).filter(|t| &t.container_id == container) else {
            return actions;
        };
        let kill = task.kill.clone();
        let checked = task.info.health_check.is_some();
        if !self.transition(key, Phase::Terminated) {
            return actions;
        }
        if checked {
            actions.push(Action::StopHealthCheck { key: key.clone() });
        }
        let health_kill = matches!(kill, Some((_, KillCause::HealthCheck(_))));
        let (state, reason, message, exit_status) = match (result, kill) {
            // Over its disk: a limitation, as an OOM kill is (Mesos reports it so).
            (Ok(t), Some((_, KillCause::DiskLimit(why)))) => (
                TaskState::TaskFailed,
                TaskStatusReason::ReasonContainerLimitationDisk,
                format!("{why} ({})", t.exit.describe()),
                Some(t.exit.exit_status()),
            ),
            (
                Err(WaitError::Failed(message) | WaitError::EndedWhileDown(message)),
                Some((_, KillCause::DiskLimit(why))),
            ) => (
                TaskState::TaskFailed,
                TaskStatusReason::ReasonContainerLimitationDisk,
                format!("{why} ({message})"),
                None,
            ),
            (Ok(t), Some((_, cause))) => {
                let why = match &cause {
                    KillCause::Framework => "task killed",
                    KillCause::FrameworkShutdown => {
                        "task killed because its framework was shut down"
                    }
                    KillCause::AgentShutdown => "task killed because the agent is shutting down",
                    KillCause::HealthCheck(message) | KillCause::DiskLimit(message) => {
                        message.as_str()
                    }
                };
                let reason = match cause {
                    KillCause::FrameworkShutdown => TaskStatusReason::ReasonFrameworkRemoved,
                    KillCause::HealthCheck(_) => TaskStatusReason::ReasonTaskHealthCheckFailed,
                    _ => TaskStatusReason::ReasonTaskKilled,
                };
                (
                    TaskState::TaskKilled,
                    reason,
                    format!("{why} ({})", t.exit.describe()),
                    Some(t.exit.exit_status()),
                )
            }
            (Ok(t), None) => match t.limitation {
                Some(limit) => (
                    TaskState::TaskFailed,
                    limit.reason,
                    limit.message,
                    Some(t.exit.exit_status()),
                ),
                None if t.exit.exit_status() == 0 => (
                    TaskState::TaskFinished,
                    TaskStatusReason::ReasonCommandExited,
                    t.exit.describe(),
                    Some(0),
                ),
                None => (
                    TaskState::TaskFailed,
                    TaskStatusReason::ReasonCommandExited,
                    t.exit.describe(),
                    Some(t.exit.exit_status()),
                ),
            },
            (
                Err(WaitError::Failed(message) | WaitError::EndedWhileDown(message)),
                Some((_, KillCause::HealthCheck(why))),
            ) => (
                TaskState::TaskKilled,
                TaskStatusReason::ReasonTaskHealthCheckFailed,
                format!("{why} ({message})"),
                None,
            ),
            (Err(WaitError::Failed(message) | WaitError::EndedWhileDown(message)), Some(_)) => (
                TaskState::TaskKilled,
                TaskStatusReason::ReasonTaskKilled,
                message,
                None,
            ),
            (Err(WaitError::Failed(message)), None) => (
                TaskState::TaskFailed,
                TaskStatusReason::ReasonExecutorTerminated,
                format!("lost track of the task: {message}"),
                None,
            ),
            (Err(WaitError::EndedWhileDown(message)), None) => (
                TaskState::TaskFailed,
                TaskStatusReason::ReasonAgentRestarted,
                message,
                None,
            ),
        };
        tracing::info!(framework_id = %key.framework_id, task_id = %key.task_id, state = state_name(state), %message, "task ended");
        let mut status = self.status(key, state, reason, message, exit_status);
        if health_kill {
            status.healthy = Some(false);
        }
        self.report_status(key, status, now, &mut actions);
        actions
    }

    /// A health checker has news: report the task's health (a TASK_RUNNING update with
    /// `healthy` set) and/or kill it (its kill policy applies). News of a task that is
    /// no longer running in that container is stale and ignored.
    pub(crate) fn health(&mut self, event: HealthEvent, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let key = &event.key;
        let running = self.tasks.get(key).is_some_and(|t| {
            t.container_id == event.container
                && t.phase == Phase::Running
                && t.info.health_check.is_some()
        });
        if !running {
            tracing::debug!(framework_id = %key.framework_id, task_id = %key.task_id, "health news of a task no longer running; ignored");
            return actions;
        }
        let verdict = event.verdict;
        if let Some(healthy) = verdict.report {
            if let Some(task) = self.tasks.get_mut(key) {
                task.healthy = Some(healthy);
            }
            let mut status = self.status(
                key,
                TaskState::TaskRunning,
                TaskStatusReason::ReasonTaskHealthCheckStatusUpdated,
                verdict.message.clone(),
                None,
            );
            status.healthy = Some(healthy);
            self.report_status(key, status, now, &mut actions);
        }
        if verdict.kill {
            if let Some(task) = self.tasks.get_mut(key) {
                task.healthy = Some(false);
            }
            self.kill(
                key,
                None,
                KillCause::HealthCheck(verdict.message),
                now,
                &mut actions,
            );
        }
        actions
    }

    /// The running tasks whose disk to measure: each one's sandbox and volumes, and
    /// its `disk` in bytes (which counts its volumes). Tasks being killed or launched
    /// are left out.
    pub(crate) fn disk_targets(&self) -> Vec<crate::disk::DiskTarget> {
        self.tasks
            .iter()
            .filter(|(_, t)| t.phase == Phase::Running && t.handle.is_some())
            .map(|(key, t)| crate::disk::DiskTarget {
                key: key.clone(),
                container: t.container_id.clone(),
                paths: std::iter::once(t.sandbox.clone())
                    .chain(self.volumes_of(&t.info).into_iter().map(|(_, _, p)| p))
                    .collect(),
                limit_bytes: Resources::try_from_proto(&t.info.resources)
                    .ok()
                    .and_then(|r| crate::disk::limit_bytes(&r)),
            })
            .collect()
    }

    /// Disk isolation found the task in `container` over its `disk`: it is killed (its
    /// kill policy applies) and will end TASK_FAILED with the disk reason and
    /// `message`. A task already being killed, or no longer in that container, is left
    /// alone: a task is killed for its disk once.
    pub(crate) fn disk_limit(
        &mut self,
        key: &TaskKey,
        container: &ContainerId,
        message: String,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let running = self
            .tasks
            .get(key)
            .is_some_and(|t| &t.container_id == container && t.phase == Phase::Running);
        if running {
            tracing::warn!(framework_id = %key.framework_id, task_id = %key.task_id, %message, "killing a task over its disk limit");
            self.kill(key, None, KillCause::DiskLimit(message), now, &mut actions);
        }
        actions
    }

    /// Retries that are due.
    pub(crate) fn retries_due(&mut self, now: Instant) -> Vec<Action> {
        self.updates
            .due(now)
            .into_iter()
            .map(Action::Send)
            .collect()
    }

    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.updates.next_deadline()
    }

    /// The master (re-)registered the agent: adopt the id it gave and resend every
    /// unacknowledged update.
    pub(crate) fn registered(&mut self, agent_id: &str, now: Instant) -> Vec<Action> {
        if self.agent_id != agent_id {
            self.agent_id = agent_id.to_string();
            self.updates.restamp_agent(agent_id);
            self.changed_all = true;
        }
        self.updates
            .heads(now)
            .into_iter()
            .map(Action::Send)
            .collect()
    }

    /// What the agent reports when it registers: every task it has not forgotten.
    pub(crate) fn running_tasks(&self) -> Vec<v1::RunningTask> {
        let mut out: Vec<v1::RunningTask> = self
            .tasks
            .iter()
            .map(|(key, t)| v1::RunningTask {
                framework_id: key.framework_id.clone(),
                task: Some(t.info.clone()),
                state: t.state as i32,
                framework: Some(t.framework.clone()),
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.framework_id, a.task.as_ref().map(|t| &t.task_id))
                .cmp(&(&b.framework_id, b.task.as_ref().map(|t| &t.task_id)))
        });
        out
    }

    /// Active and completed tasks, for `/state`.
    pub(crate) fn views(&self) -> (Vec<AgentTaskView>, Vec<AgentTaskView>) {
        let mut active: Vec<AgentTaskView> = self
            .tasks
            .iter()
            .map(|(key, t)| AgentTaskView {
                framework_id: key.framework_id.clone(),
                framework_principal: t.framework.principal.clone(),
                task_id: key.task_id.clone(),
                name: t.info.name.clone(),
                state: state_name(t.state),
                sandbox: t.sandbox.display().to_string(),
                container_id: t.container_id.0.clone(),
                pid: t.handle.as_ref().and_then(|h| h.pid),
                pending_updates: self.updates.len(key),
                healthy: t.healthy,
            })
            .collect();
        active.sort_by(|a, b| (&a.framework_id, &a.task_id).cmp(&(&b.framework_id, &b.task_id)));
        let completed = self
            .completed_order
            .iter()
            .filter_map(|key| self.completed.get(key).map(|c| (key, c)))
            .map(|(key, c)| AgentTaskView {
                framework_id: key.framework_id.clone(),
                framework_principal: c.framework_principal.clone(),
                task_id: key.task_id.clone(),
                name: c.name.clone(),
                state: state_name(c.state),
                sandbox: c.sandbox.display().to_string(),
                container_id: String::new(),
                pid: None,
                pending_updates: 0,
                healthy: None,
            })
            .collect();
        (active, completed)
    }

    /// The containers of tasks that run (or are being killed), for usage reports.
    pub(crate) fn running_containers(&self) -> Vec<(TaskKey, ContainerId)> {
        let mut out: Vec<(TaskKey, ContainerId)> = self
            .tasks
            .iter()
            .filter(|(_, t)| {
                matches!(t.phase, Phase::Running | Phase::Killing) && t.handle.is_some()
            })
            .map(|(key, t)| (key.clone(), t.container_id.clone()))
            .collect();
        out.sort();
        out
    }

    /// The sandbox and state of an active or completed task.
    pub(crate) fn lookup(&self, key: &TaskKey) -> Option<(PathBuf, TaskState)> {
        if let Some(t) = self.tasks.get(key) {
            return Some((t.sandbox.clone(), t.state));
        }
        self.completed
            .get(key)
            .map(|c| (c.sandbox.clone(), c.state))
    }

    /// The principal stamped on the framework of an active or completed task.
    pub(crate) fn framework_principal(&self, key: &TaskKey) -> Option<String> {
        if let Some(t) = self.tasks.get(key) {
            return Some(t.framework.principal.clone());
        }
        self.completed
            .get(key)
            .map(|c| c.framework_principal.clone())
    }

    /// The sandboxes of every task the agent knows (their logs are rotated, and they
    /// are never collected).
    pub(crate) fn live_sandboxes(&self) -> HashSet<PathBuf> {
        self.tasks.values().map(|t| t.sandbox.clone()).collect()
    }

    /// Everything a restarted agent needs, for a checkpoint snapshot.
    pub(crate) fn checkpoint(&self) -> checkpoint::State {
        let mut tasks: Vec<TaskRecord> = self
            .tasks
            .iter()
            .map(|(key, t)| task_record(key, t))
            .collect();
        tasks.sort_by(|a, b| (&a.framework_id, &a.task_id).cmp(&(&b.framework_id, &b.task_id)));
        let mut keys: Vec<&TaskKey> = self.updates.keys().collect();
        keys.sort();
        let updates = keys
            .into_iter()
            .flat_map(|key| self.update_records(key))
            .collect();
        checkpoint::State {
            version: checkpoint::VERSION,
            generation: 0,
            agent_id: self.agent_id.clone(),
            tasks,
            updates,
        }
    }

    /// Takes back what a previous run checkpointed. Tasks whose container the
    /// containerizer `recovered` are running again (or being killed again, when a kill
    /// was in progress) and waited for: a container that ended while the agent was down
    /// is reported by its wait like any other. The other unfinished tasks are reported
    /// lost: the containerizer could not find them (a launch the checkpoint did not
    /// see complete, a containerizer that cannot recover). Pending updates are queued
    /// again, to be sent on registration, in order per task.
    pub(crate) fn restore(
        &mut self,
        state: checkpoint::State,
        recovered: &[ContainerId],
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        for u in state.updates {
            match checkpoint::decode::<v1::TaskStatus>(&u.status) {
                Ok(status) => {
                    let key = TaskKey {
                        framework_id: u.framework_id,
                        task_id: u.task_id,
                    };
                    self.updates.push(&key, status, now);
                }
                Err(e) => {
                    tracing::warn!(task_id = %u.task_id, error = %e, "dropping an unreadable checkpointed update")
                }
            }
        }
        for r in state.tasks {
            let (framework, info) = match (
                checkpoint::decode::<v1::FrameworkInfo>(&r.framework_info),
                checkpoint::decode::<v1::TaskInfo>(&r.task_info),
            ) {
                (Ok(f), Ok(t)) => (f, t),
                _ => {
                    tracing::warn!(task_id = %r.task_id, "dropping an unreadable checkpointed task");
                    continue;
                }
            };
            let key = TaskKey {
                framework_id: r.framework_id,
                task_id: r.task_id,
            };
            let state = TaskState::from_str_name(&r.state).unwrap_or(TaskState::TaskStaging);
            let running =
                r.container.is_some() && recovered.contains(&r.container_id) && !is_terminal(state);
            let kill = r.kill.as_ref().map(KillCause::restore);
            let phase = match (running, &kill) {
                (false, _) => Phase::Terminated,
                (true, Some(_)) => Phase::Killing,
                (true, None) => Phase::Running,
            };
            let launching = r.container.is_none();
            self.tasks.insert(
                key.clone(),
                Task {
                    framework,
                    info,
                    container_id: r.container_id.clone(),
                    handle: r.container,
                    sandbox: r.sandbox,
                    phase,
                    state,
                    kill: kill.clone(),
                    healthy: None,
                },
            );
            if running {
                tracing::info!(framework_id = %key.framework_id, task_id = %key.task_id, container = %r.container_id, killing = kill.is_some(), "task recovered");
                actions.push(Action::Wait {
                    key: key.clone(),
                    container: r.container_id.clone(),
                });
                match kill {
                    // The kill was in progress when the agent stopped: it starts again.
                    Some((grace, _)) => actions.push(Action::Kill {
                        key: key.clone(),
                        container: r.container_id,
                        grace,
                    }),
                    None => self.start_health_check(&key, &mut actions),
                }
            } else if !is_terminal(state) {
                let message = if launching {
                    "the agent restarted while the task was launching; it was not recovered (what had started of it was cleaned up, if the containerizer could find it)"
                } else {
                    "the agent restarted and could not recover the task (its processes may still run)"
                };
                tracing::warn!(framework_id = %key.framework_id, task_id = %key.task_id, launching, "task not recovered after an agent restart; reporting it lost");
                self.report(
                    &key,
                    TaskState::TaskLost,
                    TaskStatusReason::ReasonAgentRestarted,
                    message.to_string(),
                    None,
                    now,
                    &mut actions,
                );
            } else {
                self.forget_if_done(&key);
            }
        }
        self.changed_all = true;
        // Nothing is sent before the agent registers; registration resends the heads.
        actions.retain(|a| !matches!(a, Action::Send(_)));
        actions
    }

    // ---- internals ----

    /// Builds an agent-generated update with a fresh uuid.
    fn status(
        &self,
        key: &TaskKey,
        state: TaskState,
        reason: TaskStatusReason,
        message: String,
        exit_status: Option<i32>,
    ) -> v1::TaskStatus {
        v1::TaskStatus {
            task_id: key.task_id.clone(),
            state: state as i32,
            message,
            source: v1::TaskStatusSource::SourceAgent as i32,
            reason: reason as i32,
            agent_id: self.agent_id.clone(),
            framework_id: key.framework_id.clone(),
            uuid: uuid::Uuid::new_v4().to_string(),
            timestamp: strata_proto::now_unix_seconds(),
            exit_status,
            healthy: None,
            data: Vec::new(),
        }
    }

    fn queue(
        &mut self,
        key: &TaskKey,
        status: v1::TaskStatus,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        self.changed.insert(key.clone());
        if let Some(head) = self.updates.push(key, status, now) {
            actions.push(Action::Send(head));
        }
    }

    /// Sets the task's state to the update's and queues the update.
    fn report_status(
        &mut self,
        key: &TaskKey,
        status: v1::TaskStatus,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if let Some(task) = self.tasks.get_mut(key) {
            task.state = strata_proto::states::state_from_i32(status.state);
        }
        self.queue(key, status, now, actions);
    }

    /// The task's volumes as its COMMAND health checks on the host bind them: (data,
    /// mount point in the sandbox, read-only), shallow ones first.
    fn health_check_volumes(&self, task: &Task) -> Vec<(PathBuf, PathBuf, bool)> {
        let Ok(resources) = Resources::try_from_proto(&task.info.resources) else {
            return Vec::new();
        };
        let mut out: Vec<(usize, (PathBuf, PathBuf, bool))> = resources
            .volumes()
            .filter_map(|e| {
                let p = e.persistence()?;
                let (_, _, data) = crate::volumes::data_of(&self.work_dir, e)?;
                Some((
                    p.container_path.split('/').count(),
                    (data, task.sandbox.join(&p.container_path), p.read_only),
                ))
            })
            .collect();
        out.sort_by_key(|(depth, _)| *depth);
        out.into_iter().map(|(_, v)| v).collect()
    }

    /// Starts the health checker of a task that has just become Running, if it has a
    /// health check. The check was validated when the task arrived; the environment is
    /// the one the task was given.
    fn start_health_check(&self, key: &TaskKey, actions: &mut Vec<Action>) {
        let Some(task) = self.tasks.get(key) else {
            return;
        };
        let Some(check) = &task.info.health_check else {
            return;
        };
        let spec = match strata_proto::health::validate(check) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::error!(framework_id = %key.framework_id, task_id = %key.task_id, error = %e, "invalid health check of a running task; not checking it");
                return;
            }
        };
        let command = task.info.command.clone().unwrap_or_default();
        let user = self.user_of(&command, &task.framework);
        let spec_for_env = LaunchSpec {
            container_id: task.container_id.clone(),
            agent_id: self.agent_id.clone(),
            framework_id: key.framework_id.clone(),
            framework: task.framework.clone(),
            task: task.info.clone(),
            command,
            resources: Resources::try_from_proto(&task.info.resources).unwrap_or_default(),
            sandbox: task.sandbox.clone(),
            user: user.clone(),
            objects: None,
            volumes: Vec::new(),
        };
        let checker = Checker {
            spec,
            sandbox: task.sandbox.clone(),
            env: task_environment(&spec_for_env),
            user,
            in_container: strata_proto::container::is_docker(&task.info),
            volumes: self.health_check_volumes(task),
        };
        actions.push(Action::StartHealthCheck {
            key: key.clone(),
            container: task.container_id.clone(),
            checker: Box::new(checker),
        });
    }

    /// Sets the task's state and queues the update that says so.
    #[allow(clippy::too_many_arguments)]
    fn report(
        &mut self,
        key: &TaskKey,
        state: TaskState,
        reason: TaskStatusReason,
        message: String,
        exit_status: Option<i32>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if let Some(task) = self.tasks.get_mut(key) {
            task.state = state;
        }
        let status = self.status(key, state, reason, message, exit_status);
        self.queue(key, status, now, actions);
    }

    fn report_killing(&mut self, key: &TaskKey, now: Instant, actions: &mut Vec<Action>) {
        let capable = self.tasks.get(key).is_some_and(|t| {
            t.framework
                .capabilities
                .contains(&(v1::FrameworkCapability::TaskKillingState as i32))
        });
        if capable {
            self.report(
                key,
                TaskState::TaskKilling,
                TaskStatusReason::ReasonUnspecified,
                String::new(),
                None,
                now,
                actions,
            );
        }
    }

    /// Starts (or remembers, while launching) a kill. `grace: None` uses the task's kill
    /// policy, else the default.
    fn kill(
        &mut self,
        key: &TaskKey,
        grace: Option<Duration>,
        cause: KillCause,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let default = self.default_kill_grace;
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        if !task.phase.can_kill() {
            tracing::debug!(framework_id = %key.framework_id, task_id = %key.task_id, phase = ?task.phase, "kill of a task already ending; ignored");
            return;
        }
        let grace = grace
            .or_else(|| grace_of(task.info.kill_policy.as_ref()))
            .unwrap_or(default)
            .min(MAX_GRACE);
        tracing::info!(framework_id = %key.framework_id, task_id = %key.task_id, ?grace, ?cause, "killing task");
        task.kill = Some((grace, cause));
        self.changed.insert(key.clone());
        if task.phase == Phase::Running {
            let container = task.container_id.clone();
            let checked = task.info.health_check.is_some();
            if self.transition(key, Phase::Killing) {
                if checked {
                    actions.push(Action::StopHealthCheck { key: key.clone() });
                }
                self.report_killing(key, now, actions);
                actions.push(Action::Kill {
                    key: key.clone(),
                    container,
                    grace,
                });
            }
        }
        // Launching: the kill starts when the launch completes (see `launched`).
    }

    /// Moves a task to `to` if that is a legal step; an illegal one is logged, not obeyed.
    fn transition(&mut self, key: &TaskKey, to: Phase) -> bool {
        let Some(task) = self.tasks.get_mut(key) else {
            return false;
        };
        if !task.phase.can_move_to(to) {
            tracing::error!(framework_id = %key.framework_id, task_id = %key.task_id, from = ?task.phase, ?to, "illegal task transition refused");
            return false;
        }
        task.phase = to;
        self.changed.insert(key.clone());
        true
    }

    /// Forgets a task once it has ended and its last update was acknowledged.
    fn forget_if_done(&mut self, key: &TaskKey) {
        let done = self
            .tasks
            .get(key)
            .is_some_and(|t| t.phase == Phase::Terminated)
            && self.updates.len(key) == 0;
        if !done {
            return;
        }
        if let Some(task) = self.tasks.remove(key) {
            tracing::debug!(framework_id = %key.framework_id, task_id = %key.task_id, "task forgotten");
            self.completed.insert(
                key.clone(),
                CompletedTask {
                    name: task.info.name,
                    framework_principal: task.framework.principal,
                    state: task.state,
                    sandbox: task.sandbox,
                },
            );
            self.completed_order.push_back(key.clone());
            while self.completed_order.len() > MAX_COMPLETED {
                if let Some(old) = self.completed_order.pop_front() {
                    self.completed.remove(&old);
                }
            }
            self.changed.insert(key.clone());
        }
    }

    fn forget_completed(&mut self, key: &TaskKey) {
        if self.completed.remove(key).is_some() {
            self.completed_order.retain(|k| k != key);
        }
    }

    /// The head of every task's update queue: (task id, uuid).
    #[cfg(test)]
    fn updates_for_tests(&self) -> Vec<(String, String)> {
        self.updates
            .keys()
            .filter_map(|k| self.updates.pending(k).next())
            .map(|s| (s.task_id.clone(), s.uuid.clone()))
            .collect()
    }

    #[cfg(test)]
    fn phase(&self, key: &TaskKey) -> Option<Phase> {
        self.tasks.get(key).map(|t| t.phase)
    }
}

/// A task's checkpointed form.
fn task_record(key: &TaskKey, t: &Task) -> TaskRecord {
    TaskRecord {
        framework_id: key.framework_id.clone(),
        task_id: key.task_id.clone(),
        state: state_name(t.state).to_string(),
        sandbox: t.sandbox.clone(),
        container_id: t.container_id.clone(),
        container: t.handle.clone(),
        framework_info: checkpoint::encode(&t.framework),
        task_info: checkpoint::encode(&t.info),
        kill: t.kill.as_ref().map(|(grace, cause)| cause.record(*grace)),
    }
}

/// The grace period a kill policy asks for, when it is a sane number.
fn grace_of(policy: Option<&v1::KillPolicy>) -> Option<Duration> {
    policy
        .and_then(|p| p.grace_period_seconds)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// The sandbox of a task that is not in memory (e.g. from before a restart), if it
/// exists on disk. Ids are validated first.
pub(crate) fn sandbox_on_disk(work_dir: &Path, key: &TaskKey) -> Option<PathBuf> {
    sandbox::validate_id("framework", &key.framework_id).ok()?;
    sandbox::validate_id("task", &key.task_id).ok()?;
    let path = sandbox::sandbox_path(work_dir, &key.framework_id, &key.task_id);
    path.is_dir().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerizer::ExitKind;

    fn manager(reports_starting: bool) -> TaskManager {
        TaskManager::new(
            PathBuf::from("/work"),
            "agent-1".into(),
            StatusUpdates::new(Duration::from_secs(10), Duration::from_secs(600)),
            Duration::from_secs(3),
            reports_starting,
        )
    }

    fn run(task_id: &str, capabilities: Vec<i32>) -> v1::RunTask {
        v1::RunTask {
            framework: Some(v1::FrameworkInfo {
                id: "fw".into(),
                capabilities,
                ..Default::default()
            }),
            task: Some(v1::TaskInfo {
                task_id: task_id.into(),
                command: Some(v1::CommandInfo {
                    shell: true,
                    value: "true".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    fn key(task_id: &str) -> TaskKey {
        TaskKey {
            framework_id: "fw".into(),
            task_id: task_id.into(),
        }
    }

    fn sent(actions: &[Action]) -> Vec<(TaskState, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(s) => Some((
                    strata_proto::states::state_from_i32(s.state),
                    s.uuid.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    fn ack(m: &mut TaskManager, task_id: &str, uuid: &str, now: Instant) -> Vec<Action> {
        m.acknowledge(
            v1::AcknowledgeUpdate {
                framework_id: "fw".into(),
                task_id: task_id.into(),
                uuid: uuid.into(),
            },
            now,
        )
    }

    fn with_volume(mut run: v1::RunTask, id: &str) -> v1::RunTask {
        run.task.as_mut().unwrap().resources.push(v1::Resource {
            name: "disk".into(),
            scalar: 8.0,
            ranges: vec![],
            role: "db".into(),
            disk: Some(v1::DiskInfo {
                persistence: Some(v1::disk_info::Persistence {
                    id: id.into(),
                    principal: String::new(),
                }),
                container_path: "data".into(),
                mode: v1::volume::Mode::Ro as i32,
                source: None,
            }),
        });
        run
    }

    fn launched_volumes(actions: &[Action]) -> Vec<crate::volumes::VolumeMount> {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Launch(spec) => Some(spec.volumes.clone()),
                _ => None,
            })
            .expect("a launch")
    }

    #[test]
    fn a_task_gets_only_volumes_of_the_ledger_and_the_first_user_owns_them() {
        let now = Instant::now();
        let mut m = manager(false);
        let actions = m.run_task(with_volume(run("t1", vec![]), "v1"), now);
        assert!(!actions.iter().any(|a| matches!(a, Action::Launch(_))));
        let Some(Action::Send(failed)) = actions.first() else {
            panic!("no update: {actions:?}");
        };
        assert_eq!(failed.state, TaskState::TaskFailed as i32);
        assert_eq!(
            failed.message,
            "volume 'v1' of role 'db' is not on this agent (its ledger does not list it)"
        );

        let volume = with_volume(run("x", vec![]), "v1").task.unwrap().resources;
        m.set_ledger(crate::volumes::Ledger::new(
            Path::new("/work"),
            v1::CheckpointResources {
                reserved: vec![],
                volumes: volume,
            },
        ));
        let first = launched_volumes(&m.run_task(with_volume(run("t2", vec![]), "v1"), now));
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0].host_path,
            PathBuf::from("/work/volumes/roles/db/v1")
        );
        assert_eq!(first[0].container_path, "data");
        assert!(first[0].read_only);
        assert!(first[0].chown, "the first task to use it gets it");
        let second = launched_volumes(&m.run_task(with_volume(run("t3", vec![]), "v1"), now));
        assert!(!second[0].chown, "not taken from a task using it");
        assert!(
            m.volumes_in_use()
                .contains(Path::new("/work/volumes/roles/db/v1"))
        );
        // Dropped from the ledger, it stays in use by its tasks.
        m.set_ledger(crate::volumes::Ledger::default());
        assert_eq!(m.volumes_in_use().len(), 1);
    }

    fn launch_container(actions: &[Action]) -> ContainerId {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Launch(spec) => Some(spec.container_id.clone()),
                _ => None,
            })
            .expect("a launch")
    }

    #[test]
    fn a_task_runs_finishes_and_is_forgotten_after_the_last_ack() {
        let now = Instant::now();
        let mut m = manager(true);
        let actions = m.run_task(run("t1", vec![]), now);
        let starting = sent(&actions);
        assert_eq!(starting[0].0, TaskState::TaskStarting);
        let c = launch_container(&actions);
        let handle = ContainerHandle::new(c.clone(), Some(42));
        let actions = m.launched(&key("t1"), &c, Ok(handle), now);
        assert!(actions.iter().any(|a| matches!(a, Action::Wait { .. })));
        assert!(
            sent(&actions).is_empty(),
            "RUNNING waits behind the unacknowledged STARTING"
        );
        let running = sent(&ack(&mut m, "t1", &starting[0].1, now));
        assert_eq!(running[0].0, TaskState::TaskRunning);
        let exit = Termination {
            exit: ExitKind::Exited(0),
            limitation: None,
        };
        assert!(sent(&m.exited(&key("t1"), &c, Ok(exit), now)).is_empty());
        let finished = sent(&ack(&mut m, "t1", &running[0].1, now));
        assert_eq!(finished[0].0, TaskState::TaskFinished);
        assert_eq!(
            m.running_tasks().len(),
            1,
            "reported until the terminal update is acknowledged"
        );
        ack(&mut m, "t1", &finished[0].1, now);
        assert!(m.running_tasks().is_empty());
        assert_eq!(
            m.lookup(&key("t1")).map(|(_, s)| s),
            Some(TaskState::TaskFinished)
        );
    }

    /// Writes what changed, as the agent loop does, and checks that the checkpoint
    /// read back is the manager's whole state.
    fn write_and_compare(m: &mut TaskManager, log: &mut checkpoint::Log, dir: &Path) {
        let changes = m.take_changes();
        if changes.all || log.wants_compaction() {
            log.compact(m.checkpoint()).unwrap();
        } else {
            log.append(&m.task_changes(&changes)).unwrap();
        }
        let mut on_disk = checkpoint::read(dir).unwrap().unwrap();
        on_disk.generation = 0;
        assert_eq!(on_disk, m.checkpoint());
    }

    #[test]
    fn the_changes_written_add_up_to_the_whole_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = checkpoint::Log::open(dir.path().to_path_buf());
        let now = Instant::now();
        let mut m = manager(true);
        let capable = vec![v1::FrameworkCapability::TaskKillingState as i32];
        let mut containers = HashMap::new();
        for id in ["a", "b", "c"] {
            let actions = m.run_task(run(id, capable.clone()), now);
            containers.insert(id, launch_container(&actions));
            write_and_compare(&mut m, &mut log, dir.path());
        }
        for id in ["a", "b", "c"] {
            let c = containers[id].clone();
            let handle = ContainerHandle::new(c.clone(), Some(42));
            m.launched(&key(id), &c, Ok(handle), now);
            write_and_compare(&mut m, &mut log, dir.path());
        }
        // Acknowledgements, a kill in progress, an end and a forgotten task.
        for (id, uuid) in m.updates_for_tests() {
            ack(&mut m, &id, &uuid, now);
            write_and_compare(&mut m, &mut log, dir.path());
        }
        m.kill_task(
            v1::KillTask {
                framework_id: "fw".into(),
                task_id: "b".into(),
                ..Default::default()
            },
            now,
        );
        write_and_compare(&mut m, &mut log, dir.path());
        let exit = Termination {
            exit: ExitKind::Exited(0),
            limitation: None,
        };
        m.exited(&key("c"), &containers["c"], Ok(exit), now);
        write_and_compare(&mut m, &mut log, dir.path());
        for _ in 0..4 {
            for (id, uuid) in m.updates_for_tests() {
                ack(&mut m, &id, &uuid, now);
                write_and_compare(&mut m, &mut log, dir.path());
            }
        }
        assert!(m.lookup(&key("c")).is_some() && !m.tasks.contains_key(&key("c")));
        // A new agent id restamps every update: a whole snapshot.
        m.registered("agent-2", now);
        write_and_compare(&mut m, &mut log, dir.path());
        assert_eq!(
            checkpoint::read(dir.path()).unwrap().unwrap().agent_id,
            "agent-2"
        );
    }

    #[test]
    fn kill_during_launch_never_reports_running() {
        let now = Instant::now();
        let mut m = manager(false);
        let actions = m.run_task(
            run("t1", vec![v1::FrameworkCapability::TaskKillingState as i32]),
            now,
        );
        assert!(
            sent(&actions).is_empty(),
            "no STARTING for an instant containerizer"
        );
        let c = launch_container(&actions);
        let actions = m.kill_task(
            v1::KillTask {
                framework_id: "fw".into(),
                task_id: "t1".into(),
                kill_policy: None,
            },
            now,
        );
        assert!(actions.is_empty());
        let actions = m.launched(
            &key("t1"),
            &c,
            Ok(ContainerHandle::new(c.clone(), None)),
            now,
        );
        assert_eq!(sent(&actions)[0].0, TaskState::TaskKilling);
        assert!(
            actions.iter().any(
                |a| matches!(a, Action::Kill { grace, .. } if *grace == Duration::from_secs(3))
            )
        );
        assert_eq!(m.phase(&key("t1")), Some(Phase::Killing));
        let exit = Termination {
            exit: ExitKind::Signaled(15),
            limitation: None,
        };
        m.exited(&key("t1"), &c, Ok(exit), now);
        assert_eq!(m.phase(&key("t1")), Some(Phase::Terminated));
        assert!(m.all_terminated());
    }

    #[test]
    fn bad_tasks_duplicates_and_unknown_kills_get_clear_updates() {
        let now = Instant::now();
        let mut m = manager(false);
        let actions = m.run_task(run("../etc", vec![]), now);
        assert_eq!(sent(&actions)[0].0, TaskState::TaskError);
        assert!(!actions.iter().any(|a| matches!(a, Action::Launch(_))));

        m.run_task(run("t1", vec![]), now);
        let actions = m.run_task(run("t1", vec![]), now);
        assert_eq!(sent(&actions)[0].0, TaskState::TaskError);
        assert!(!actions.iter().any(|a| matches!(a, Action::Launch(_))));

        let actions = m.kill_task(
            v1::KillTask {
                framework_id: "fw".into(),
                task_id: "nope".into(),
                kill_policy: None,
            },
            now,
        );
        assert_eq!(sent(&actions)[0].0, TaskState::TaskLost);

        let mut no_cmd = run("t2", vec![]);
        no_cmd.task.as_mut().unwrap().command = None;
        assert_eq!(sent(&m.run_task(no_cmd, now))[0].0, TaskState::TaskError);
    }

    #[test]
    fn health_news_becomes_updates_and_a_kill_with_its_reason() {
        use crate::health::Verdict;
        let now = Instant::now();
        let mut m = manager(false);
        let mut r = run("t1", vec![]);
        r.task.as_mut().unwrap().health_check = Some(v1::HealthCheck {
            r#type: v1::health_check::Type::Tcp as i32,
            port: 31000,
            consecutive_failures: Some(2),
            ..Default::default()
        });
        let c = launch_container(&m.run_task(r, now));
        let handle = ContainerHandle::new(c.clone(), Some(42));
        let actions = m.launched(&key("t1"), &c, Ok(handle), now);
        let running = sent(&actions);
        assert_eq!(running[0].0, TaskState::TaskRunning);
        let checker = actions
            .iter()
            .find_map(|a| match a {
                Action::StartHealthCheck {
                    key: k,
                    container,
                    checker,
                } if *k == key("t1") && *container == c => Some(checker),
                _ => None,
            })
            .expect("the checker starts with TASK_RUNNING");
        assert_eq!(checker.spec.consecutive_failures, 2);
        assert_eq!(
            checker.spec.delay,
            Duration::from_secs(15),
            "defaults apply"
        );
        assert!(
            checker
                .env
                .iter()
                .any(|(k, v)| k == "STRATA_TASK_ID" && v == "t1")
        );
        ack(&mut m, "t1", &running[0].1, now);

        let event = |container: &ContainerId, report, kill, message: &str| HealthEvent {
            key: key("t1"),
            container: container.clone(),
            verdict: Verdict {
                report,
                kill,
                message: message.into(),
            },
        };
        // News about another container of the task is stale.
        let other = ContainerId::random();
        assert!(
            m.health(event(&other, Some(false), true, "old"), now)
                .is_empty()
        );

        let actions = m.health(event(&c, Some(false), false, "health check failed: x"), now);
        let update = actions
            .iter()
            .find_map(|a| match a {
                Action::Send(s) => Some(s.clone()),
                _ => None,
            })
            .expect("a health update");
        assert_eq!(update.state, TaskState::TaskRunning as i32);
        assert_eq!(update.healthy, Some(false));
        assert_eq!(
            update.reason,
            TaskStatusReason::ReasonTaskHealthCheckStatusUpdated as i32
        );
        assert_eq!(update.message, "health check failed: x");
        assert_eq!(m.views().0[0].healthy, Some(false));
        ack(&mut m, "t1", &update.uuid, now);

        let actions = m.health(
            event(&c, None, true, "health check failed 2 times in a row: x"),
            now,
        );
        assert!(
            sent(&actions).is_empty(),
            "no KILLING without the capability"
        );
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::StopHealthCheck { .. }))
        );
        assert!(
            actions.iter().any(
                |a| matches!(a, Action::Kill { grace, .. } if *grace == Duration::from_secs(3))
            )
        );
        assert_eq!(m.phase(&key("t1")), Some(Phase::Killing));
        // The checker may have had news in flight: ignored once the task is killing.
        assert!(
            m.health(event(&c, Some(true), false, "late"), now)
                .is_empty()
        );

        let exit = Termination {
            exit: ExitKind::Signaled(15),
            limitation: None,
        };
        let actions = m.exited(&key("t1"), &c, Ok(exit), now);
        let killed = actions
            .iter()
            .find_map(|a| match a {
                Action::Send(s) => Some(s.clone()),
                _ => None,
            })
            .expect("the terminal update");
        assert_eq!(killed.state, TaskState::TaskKilled as i32);
        assert_eq!(killed.healthy, Some(false));
        assert_eq!(
            killed.reason,
            TaskStatusReason::ReasonTaskHealthCheckFailed as i32
        );
        assert_eq!(
            killed.message,
            "health check failed 2 times in a row: x (killed by signal 15 (SIGTERM))"
        );
    }

    #[test]
    fn a_task_over_its_disk_is_killed_once_and_fails_with_the_disk_reason() {
        let now = Instant::now();
        let mut m = manager(false);
        let mut r = run("t1", vec![]);
        r.task.as_mut().unwrap().resources = Resources::parse("cpus:1;disk:10").unwrap().to_proto();
        r.task.as_mut().unwrap().kill_policy = Some(v1::KillPolicy {
            grace_period_seconds: Some(2.0),
        });
        let c = launch_container(&m.run_task(r, now));
        assert!(
            m.disk_targets().is_empty(),
            "a launching task is not measured"
        );
        let handle = ContainerHandle::new(c.clone(), Some(42));
        let running = sent(&m.launched(&key("t1"), &c, Ok(handle), now));
        ack(&mut m, "t1", &running[0].1, now);
        let targets = m.disk_targets();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].limit_bytes, Some(10 * crate::disk::MIB));
        assert_eq!(
            targets[0].paths,
            vec![PathBuf::from("/work/frameworks/fw/tasks/t1")]
        );

        let message = "disk limit exceeded: the task uses 21.3 MB of its 10 MB (sandbox)";
        // News about another container of the task is stale.
        assert!(
            m.disk_limit(&key("t1"), &ContainerId::random(), message.into(), now)
                .is_empty()
        );
        let actions = m.disk_limit(&key("t1"), &c, message.into(), now);
        assert!(
            actions.iter().any(
                |a| matches!(a, Action::Kill { grace, .. } if *grace == Duration::from_secs(2))
            )
        );
        assert_eq!(m.phase(&key("t1")), Some(Phase::Killing));
        assert!(
            m.disk_targets().is_empty(),
            "a task being killed is not measured"
        );
        // The next measurement (already in flight) finds it over again: one kill only.
        assert!(m.disk_limit(&key("t1"), &c, message.into(), now).is_empty());
        // A restarted agent resumes the kill with its cause.
        let record = m.checkpoint().tasks[0].kill.clone().unwrap();
        assert_eq!(record.cause, "disk_limit");
        assert_eq!(
            KillCause::restore(&record).1,
            KillCause::DiskLimit(message.into())
        );

        let exit = Termination {
            exit: ExitKind::Signaled(15),
            limitation: None,
        };
        let actions = m.exited(&key("t1"), &c, Ok(exit), now);
        let failed = actions
            .iter()
            .find_map(|a| match a {
                Action::Send(s) => Some(s.clone()),
                _ => None,
            })
            .expect("the terminal update");
        assert_eq!(failed.state, TaskState::TaskFailed as i32);
        assert_eq!(
            failed.reason,
            TaskStatusReason::ReasonContainerLimitationDisk as i32
        );
        assert_eq!(
            failed.message,
            format!("{message} (killed by signal 15 (SIGTERM))")
        );
    }

    #[test]
    fn a_task_with_a_bad_health_check_is_refused() {
        let now = Instant::now();
        let mut m = manager(false);
        let mut r = run("t1", vec![]);
        r.task.as_mut().unwrap().health_check = Some(v1::HealthCheck {
            r#type: v1::health_check::Type::Command as i32,
            ..Default::default()
        });
        let actions = m.run_task(r, now);
        assert!(!actions.iter().any(|a| matches!(a, Action::Launch(_))));
        let Some(Action::Send(status)) = actions.first() else {
            panic!("a TASK_ERROR: {actions:?}");
        };
        assert_eq!(status.state, TaskState::TaskError as i32);
        assert_eq!(
            status.message,
            "invalid health check: health_check.command is empty: a COMMAND check needs a shell command"
        );
    }

    #[test]
    fn checkpoint_roundtrip_reports_unrecovered_tasks_lost() {
        let now = Instant::now();
        let mut m = manager(true);
        let actions = m.run_task(run("t1", vec![]), now);
        let c = launch_container(&actions);
        m.launched(
            &key("t1"),
            &c,
            Ok(ContainerHandle::new(c.clone(), Some(7))),
            now,
        );
        let state = m.checkpoint();
        let json = serde_json::to_string(&state).unwrap();
        let state: checkpoint::State = serde_json::from_str(&json).unwrap();

        let mut restarted = manager(true);
        restarted.restore(state, &[], now);
        assert_eq!(restarted.phase(&key("t1")), Some(Phase::Terminated));
        let pending: Vec<TaskState> = restarted
            .updates
            .pending(&key("t1"))
            .map(|s| strata_proto::states::state_from_i32(s.state))
            .collect();
        assert_eq!(
            pending,
            vec![
                TaskState::TaskStarting,
                TaskState::TaskRunning,
                TaskState::TaskLost
            ]
        );
        assert_eq!(restarted.registered("agent-1", now).len(), 1);
    }

    #[test]
    fn recovered_tasks_run_again_kills_resume_and_unknown_ends_fail() {
        let now = Instant::now();
        let mut m = manager(false);
        let mut containers = Vec::new();
        for id in ["t1", "t2"] {
            let c = launch_container(&m.run_task(run(id, vec![]), now));
            m.launched(
                &key(id),
                &c,
                Ok(ContainerHandle::new(c.clone(), Some(7))),
                now,
            );
            containers.push(c);
        }
        let kill = m.kill_task(
            v1::KillTask {
                framework_id: "fw".into(),
                task_id: "t2".into(),
                kill_policy: Some(v1::KillPolicy {
                    grace_period_seconds: Some(5.0),
                }),
            },
            now,
        );
        assert!(kill.iter().any(|a| matches!(a, Action::Kill { .. })));
        let json = serde_json::to_string(&m.checkpoint()).unwrap();
        let state: checkpoint::State = serde_json::from_str(&json).unwrap();

        let mut restarted = manager(false);
        let actions = restarted.restore(state, &containers, now);
        assert_eq!(restarted.phase(&key("t1")), Some(Phase::Running));
        assert_eq!(restarted.phase(&key("t2")), Some(Phase::Killing));
        let waits = actions
            .iter()
            .filter(|a| matches!(a, Action::Wait { .. }))
            .count();
        assert_eq!(waits, 2);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::Kill { key: k, grace, .. }
                if *k == key("t2") && *grace == Duration::from_secs(5))),
            "the kill in progress starts again: {actions:?}"
        );
        assert_eq!(restarted.running_tasks().len(), 2);

        let message = "the task ended while the agent was down and its outcome is unknown: x";
        let ended = restarted.exited(
            &key("t1"),
            &containers[0],
            Err(WaitError::EndedWhileDown(message.into())),
            now,
        );
        assert!(ended.is_empty(), "RUNNING is still unacknowledged");
        let pending: Vec<v1::TaskStatus> = restarted.updates.pending(&key("t1")).cloned().collect();
        let last = pending.last().unwrap();
        assert_eq!(last.state, TaskState::TaskFailed as i32);
        assert_eq!(last.reason, TaskStatusReason::ReasonAgentRestarted as i32);
        assert_eq!(last.message, message);
        assert_eq!(last.exit_status, None);

        let exit = Termination {
            exit: ExitKind::Signaled(9),
            limitation: None,
        };
        restarted.exited(&key("t2"), &containers[1], Ok(exit), now);
        let last = restarted
            .updates
            .pending(&key("t2"))
            .last()
            .unwrap()
            .clone();
        assert_eq!(last.state, TaskState::TaskKilled as i32);
        assert_eq!(last.message, "task killed (killed by signal 9 (SIGKILL))");
    }
}
