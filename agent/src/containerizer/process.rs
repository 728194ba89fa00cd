//! The process containerizer: each task is a child process in its own process group
//! and, with cgroups isolation (issue 3, [`crate::isolation`]), in its own cgroup,
//! which is then the unit of a kill. Every task runs under a monitor
//! ([`crate::isolation::child`]) that records how it ended, so that an agent that died
//! and restarted can re-attach to it or report its real end.
//!
//! ```text
//! launch: sandbox dir, stdout, stderr (the task writes them itself), status file
//!         ─▶ [configs and secrets (crate::objects): config files in the sandbox,
//!            secret files staged on a tmpfs, variables in the task's environment]
//!         ─▶ [cgroup created with the task's limits]
//!         ─▶ monitor (setpgid(0, 0), [joined its cgroup, pid namespace]) ─▶ fork
//!            ─▶ /bin/sh -c CMD | exec CMD ARGS, cwd = sandbox, uid/gid of the task's user
//!            [the task's process binds the secrets tmpfs at <sandbox>/secrets in a
//!            mount namespace of its own; the agent then detaches it from the host]
//!         ─▶ handle: monitor pid + start time, status file, cgroup (checkpointed)
//! wait:   reap the monitor (it ends as the task did) ─▶ SIGKILL what is left of the
//!         cgroup / group (unless a kill is running its grace period) ─▶ wait until
//!         nothing is left ─▶ [OOM kill in the cgroup? memory limitation] ─▶ [remove the cgroup]
//! kill:   SIGTERM to the cgroup / group (the monitor ignores it) ─▶ grace (ends early
//!         when it is empty) ─▶ SIGKILL (cgroup: frozen, every process SIGKILLed, thawed)
//! usage:  [statistics of the cgroup]
//! recover: per checkpointed handle: monitor alive with the same start time ─▶ adopted
//!         (watched in /proc every 200 ms; its end read from the status file), else the
//!         status file says how the task ended (nothing there: the end is unknown);
//!         then as wait. Cgroups of this agent and status files no handle claims are removed.
//! ```
//!
//! Without cgroups a process that leaves the group (`setsid`, a double-forked daemon)
//! escapes; in a cgroup nothing does.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use crate::cgroups::{Cgroups, Limits, limits::human_bytes};
use crate::isolation::Isolation;
use crate::isolation::child::{ChildSetup, RecordedEnd, SecretsBind, VolumeBind, parse_status};
use crate::objects::{self, Staging, TaskObjects};
use crate::sandbox;
use std::sync::Arc;
use strata_proto::v1::{ObjectKind, TaskStatusReason};

use super::{
    BoxFuture, ContainerError, ContainerHandle, ContainerId, Containerizer, ExitKind, LaunchSpec,
    Limitation, Recovery, ResourceUsage, Termination, task_environment,
};

/// How often a kill or a wait looks whether the group is gone.
const POLL: Duration = Duration::from_millis(50);
/// After the leader of a killed group exits, how long past the kill's deadline `wait`
/// waits for the kill to SIGKILL the rest before doing it itself (in case the kill was
/// abandoned).
const KILL_SLACK: Duration = Duration::from_secs(1);
/// After a SIGKILL, how long `wait` waits for the group to disappear before it reports
/// the end anyway (a process stuck in the kernel cannot be helped).
const SIGKILL_WAIT: Duration = Duration::from_secs(10);

/// How often the monitor of a task adopted after a restart (no longer the agent's
/// child, so not waitable) is looked for in /proc.
const ADOPTED_POLL: Duration = Duration::from_millis(200);
/// How often a running task's memory cgroup is checked for an OOM kill: a task one
/// of whose processes the kernel killed for memory is ended at once, as Mesos'
/// memory isolator does (else a task whose child died of it runs on, degraded).
const OOM_POLL: Duration = Duration::from_secs(1);
/// Suffix of the files the monitors write their task's end to, in the runtime dir.
const STATUS_SUFFIX: &str = ".status";

/// What a restarted agent needs to find a process task again; checkpointed in its
/// [`ContainerHandle`] (whose `pid` is the monitor's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecovery {
    /// The monitor's start time, in clock ticks after boot (`/proc/PID/stat` field 22):
    /// a reused pid has another.
    pub start_time: u64,
    /// The kernel's boot id at launch (`/proc/sys/kernel/random/boot_id`): after a
    /// reboot nothing of the task runs, whatever the pids say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// Where the monitor writes how the task ended (`exit N` / `signal N`); `None`
    /// when the agent has no runtime dir (then an end while it is down is unknown).
    pub status_file: Option<PathBuf>,
    /// The task's cgroup, relative to each hierarchy's root, when it has one.
    pub cgroup: Option<String>,
    /// The cgroup's limits (statistics, the OOM message).
    pub limits: Option<Limits>,
}

/// How `wait` learns that a task ended.
enum EndSource {
    /// Launched by this agent: the monitor is its child and is reaped.
    Child(Child),
    /// Recovered while running: the monitor (no longer a child) is watched in /proc;
    /// its status file tells the end.
    Adopted { pid: Pid, start_time: u64 },
    /// Recovered after it ended: its status file tells how, if it does.
    Ended,
}

/// One running task.
struct Proc {
    /// The group id, which is the monitor's pid.
    pgid: Pid,
    /// Taken by `wait`.
    end: Option<EndSource>,
    /// Set by `kill`: when its grace period ends. `wait` leaves the group alone until then.
    kill_deadline: Option<Instant>,
    /// The limits of its cgroup (named by the container id), when it has one.
    cgroup: Option<Limits>,
    /// Where its monitor writes the task's end; removed once the end is reported.
    status_file: Option<PathBuf>,
    /// Recovered after the agent restarted and found already ended: whatever is left of
    /// its process group is not killed (the group id may have been reused meanwhile).
    stale_group: bool,
    /// A kill's SIGKILL was sent (it ends the monitor too, before it records anything).
    sigkilled: bool,
}

/// Runs tasks as process groups, in cgroups when the isolation says so. See the
/// module docs.
pub struct ProcessContainerizer {
    /// Short critical sections only; never held across an `.await`.
    procs: Mutex<HashMap<ContainerId, Proc>>,
    /// What every task gets, decided at agent start.
    isolation: Isolation,
    /// Where the monitors' status files go (`WORK_DIR/runtime`); `None`: nowhere (the
    /// end of a task that ends while the agent is down cannot be known).
    runtime_dir: Option<PathBuf>,
    /// This boot of the kernel, when it can be read.
    boot_id: Option<String>,
}

impl Default for ProcessContainerizer {
    fn default() -> Self {
        ProcessContainerizer::new()
    }
}

impl ProcessContainerizer {
    /// Process groups only, no isolation.
    pub fn new() -> ProcessContainerizer {
        ProcessContainerizer::with_isolation(Isolation::none())
    }

    /// With the isolation found at start ([`Isolation::detect`]).
    pub fn with_isolation(isolation: Isolation) -> ProcessContainerizer {
        ProcessContainerizer {
            procs: Mutex::default(),
            isolation,
            runtime_dir: None,
            boot_id: boot_id(),
        }
    }

    /// Keeps the monitors' status files in `dir` (created if needed; the agent uses
    /// `WORK_DIR/runtime`), which makes the end of a task that ends while the agent is
    /// down known to the next run. Without it (or when `dir` cannot be created) that
    /// end is unknown.
    pub fn with_runtime_dir(mut self, dir: PathBuf) -> ProcessContainerizer {
        match std::fs::create_dir_all(&dir) {
            Ok(()) => self.runtime_dir = Some(dir),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create the runtime dir; the end of a task that ends while the agent is down will be unknown")
            }
        }
        self
    }

    pub fn isolation(&self) -> &Isolation {
        &self.isolation
    }

    fn cgroups(&self) -> Option<&Arc<Cgroups>> {
        self.isolation.cgroups.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContainerId, Proc>> {
        // A panic while holding the lock leaves the map consistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn launch_now(
        &self,
        spec: LaunchSpec,
        user: Option<User>,
        logs: sandbox::LogFiles,
    ) -> Result<ContainerHandle, ContainerError> {
        if let Some(why) = &self.isolation.unavailable {
            return Err(ContainerError::Isolation(why.clone()));
        }
        // Configs and secrets (issue 16): config files in the sandbox now; secret
        // files on a staging tmpfs the task binds (dropped, so detached from the
        // host, when this returns: the task has its own by then, or failed).
        let (staging, secrets) = match spec.objects.as_deref() {
            Some(objects) => self.prepare_objects(&spec, objects, user.as_ref())?,
            None => (None, None),
        };
        // Persistent volumes (issue 17): their mount points in the sandbox now; the
        // task's process binds them in its own mount namespace.
        let volumes = self.prepare_volumes(&spec, user.as_ref())?;
        // Created by `prepare` for the task's user, never through a link.
        let (stdout, stderr) = (logs.stdout, logs.stderr);

        let command = &spec.command;
        let (program, mut cmd) = if command.shell {
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-c").arg(&command.value);
            ("/bin/sh".to_string(), cmd)
        } else {
            let mut cmd = Command::new(&command.value);
            cmd.args(&command.arguments);
            (command.value.clone(), cmd)
        };
        cmd.current_dir(&spec.sandbox)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            // The task must outlive the agent (recovery, issue 6): never kill on drop.
            .kill_on_drop(false);
        // The agent's own configuration is not the task's business.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STRATA_") {
                cmd.env_remove(key);
            }
        }
        if let Some(user) = &user {
            cmd.env("USER", &user.name)
                .env("LOGNAME", &user.name)
                .env("HOME", &user.dir);
        }
        cmd.envs(task_environment(&spec));
        if let Some(objects) = spec.objects.as_deref() {
            // After the command's own: a reference wins; but never over Strata's.
            cmd.envs(
                objects
                    .env(None)
                    .filter(|(name, _)| !name.starts_with("STRATA_")),
            );
        }

        let cgroup = match self.cgroups() {
            Some(cgroups) => {
                let options = cgroups.options();
                let limits =
                    Limits::for_task(&spec.resources, options.enable_cfs, options.pids_max);
                let join = cgroups.create(&spec.container_id.0, &limits).map_err(|e| {
                    ContainerError::Isolation(format!("cannot set up the task's cgroup: {e}"))
                })?;
                Some((limits, join))
            }
            None => None,
        };
        let (limits, join) = match cgroup {
            Some((limits, join)) => (Some(limits), join.0),
            None => (None, Vec::new()),
        };
        let status_file = self
            .runtime_dir
            .as_ref()
            .map(|dir| status_path(dir, &spec.container_id));
        let status = match &status_file {
            Some(path) => match open_status_file(path) {
                Ok(f) => Some(f),
                Err(e) => {
                    if let Some(cgroups) = self.cgroups() {
                        let _ = cgroups.destroy(&spec.container_id.0);
                    }
                    return Err(ContainerError::Isolation(format!(
                        "cannot create the task's status file {}: {e}",
                        path.display()
                    )));
                }
            },
            None => None,
        };
        // Joining a cgroup or namespace comes first, as root: the hook switches user
        // (std would switch before the hook runs).
        ChildSetup {
            join,
            pid_namespace: self.isolation.pid_namespace,
            credentials: user.as_ref().map(|u| (u.uid.as_raw(), u.gid.as_raw())),
            monitor: true,
            status,
            secrets,
            volumes,
        }
        .install(&mut cmd);

        let spawned = cmd.spawn();
        drop(cmd); // closes the agent's copies of the cgroup and status files
        // The task has exec'd with the secrets bound (or failed): off the host.
        drop(staging);
        let child = match spawned {
            Ok(child) => child,
            Err(source) => {
                if let Some(cgroups) = self.cgroups()
                    && let Err(e) = cgroups.destroy(&spec.container_id.0)
                {
                    tracing::warn!(container = %spec.container_id, error = %e, "cannot remove the cgroup of a task that did not start");
                }
                if let Some(path) = &status_file {
                    let _ = std::fs::remove_file(path);
                }
                return Err(ContainerError::Spawn { program, source });
            }
        };
        let pid = child.id().ok_or_else(|| ContainerError::Spawn {
            program: command.value.clone(),
            source: std::io::Error::other("the process ended before its pid was read"),
        })?;
        let pgid = Pid::from_raw(pid as i32);
        // The monitor is a child not yet reaped: its /proc entry exists.
        let start_time = proc_stat(pgid).map_or(0, |s| s.start_time);
        tracing::debug!(container = %spec.container_id, pid, task_id = %spec.task.task_id, "process started");
        let recovery = ProcessRecovery {
            start_time,
            boot_id: self.boot_id.clone(),
            status_file: status_file.clone(),
            cgroup: limits
                .and(self.cgroups())
                .map(|c| c.path_of(&spec.container_id.0)),
            limits,
        };
        self.lock().insert(
            spec.container_id.clone(),
            Proc {
                pgid,
                end: Some(EndSource::Child(child)),
                kill_deadline: None,
                cgroup: limits,
                status_file,
                stale_group: false,
                sigkilled: false,
            },
        );
        Ok(ContainerHandle {
            id: spec.container_id,
            pid: Some(pid),
            recovery: Some(Recovery::Process(recovery)),
        })
    }

    /// Writes the task's config files into the sandbox and stages its secret files
    /// (see [`crate::objects`]): the staging tmpfs and what the task's process binds.
    fn prepare_objects(
        &self,
        spec: &LaunchSpec,
        objects: &TaskObjects,
        user: Option<&User>,
    ) -> Result<(Option<Staging>, Option<SecretsBind>), ContainerError> {
        let owner = owner_of(user);
        objects::write_config_files(objects, &spec.sandbox, owner)
            .map_err(ContainerError::Sandbox)?;
        if !objects.has_secret_files() {
            return Ok((None, None));
        }
        let Some(runtime_dir) = &self.runtime_dir else {
            return Err(ContainerError::Isolation(
                "secrets need the agent's runtime dir (WORK_DIR/runtime), which could not be created".into(),
            ));
        };
        let files: Vec<(&str, &[u8])> = objects.files(ObjectKind::Secret).collect();
        let chown_to = owner.unwrap_or_else(|| {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        });
        let staging = Staging::create(
            &runtime_dir.join(objects::STAGING_DIR),
            &spec.container_id,
            &files,
            chown_to,
        )
        .map_err(ContainerError::Isolation)?;
        let target = objects::secrets_mountpoint(&spec.sandbox, owner).map_err(|e| {
            ContainerError::Sandbox(format!(
                "cannot create the secrets directory in the sandbox: {e}"
            ))
        })?;
        let bind = SecretsBind {
            source: staging.path().to_path_buf(),
            target,
            target_path: spec.sandbox.join(strata_proto::objects::SECRETS_DIR),
        };
        Ok((Some(staging), Some(bind)))
    }

    /// The binds of the task's persistent volumes (see [`crate::volumes`]): each
    /// volume's root given to the task's user (unless another task uses it), its
    /// mount point made in the sandbox. A volume inside another is bound after it.
    fn prepare_volumes(
        &self,
        spec: &LaunchSpec,
        user: Option<&User>,
    ) -> Result<Vec<VolumeBind>, ContainerError> {
        let mut mounts = spec.volumes.clone();
        mounts.sort_by_key(|m| m.container_path.split('/').count());
        let targets = crate::volumes::prepare_mounts(&mounts, &spec.sandbox, owner_of(user))
            .map_err(ContainerError::Sandbox)?;
        Ok(mounts
            .into_iter()
            .zip(targets)
            .map(|(m, target)| VolumeBind {
                source: m.host_path,
                target,
                target_path: spec.sandbox.join(&m.container_path),
                read_only: m.read_only,
            })
            .collect())
    }

    async fn wait_inner(&self, id: ContainerId) -> Result<Termination, ContainerError> {
        let (end, pgid, cgroup, status_file, stale_group) = {
            let mut procs = self.lock();
            let proc = procs
                .get_mut(&id)
                .ok_or_else(|| ContainerError::NotFound(id.clone()))?;
            let end = proc
                .end
                .take()
                .ok_or_else(|| ContainerError::AlreadyWaited(id.clone()))?;
            (
                end,
                proc.pgid,
                proc.cgroup,
                proc.status_file.clone(),
                proc.stale_group,
            )
        };
        let ended = async {
            match end {
                EndSource::Child(mut child) => {
                    child
                        .wait()
                        .await
                        .map(exit_kind)
                        .map_err(|source| ContainerError::Wait {
                            id: id.clone(),
                            source,
                        })
                }
                EndSource::Adopted { pid, start_time } => {
                    while monitor_alive(pid, start_time) {
                        tokio::time::sleep(ADOPTED_POLL).await;
                    }
                    let sigkilled = self.lock().get(&id).is_some_and(|p| p.sigkilled);
                    match recorded_end(&id, status_file.as_deref(), true) {
                        // The kill's SIGKILL ended the monitor with the task: nothing was
                        // recorded, but how the task ended is known.
                        Err(ContainerError::EndedWhileDown(_)) if sigkilled => {
                            Ok(ExitKind::Signaled(Signal::SIGKILL as i32))
                        }
                        other => other,
                    }
                }
                EndSource::Ended => recorded_end(&id, status_file.as_deref(), false),
            }
        };
        let mut ended = std::pin::pin!(ended);
        let watched = self
            .cgroups()
            .cloned()
            .filter(|_| cgroup.is_some_and(|l| l.mem_bytes.is_some()));
        let exit: Result<ExitKind, ContainerError> = match watched {
            None => ended.await,
            Some(cgroups) => loop {
                tokio::select! {
                    exit = &mut ended => break exit,
                    () = tokio::time::sleep(OOM_POLL) => {}
                }
                if cgroups.oom_killed(&id.0) {
                    tracing::info!(container = %id, "the kernel killed a process of the task for memory: ending the task");
                    let name = id.0.clone();
                    let killer = cgroups.clone();
                    let _ = tokio::task::spawn_blocking(move || killer.kill_now(&name)).await;
                    break ended.await;
                }
            },
        };
        let limitation = match (self.cgroups().cloned(), cgroup) {
            (Some(cgroups), Some(limits)) => self.end_cgroup(&id, cgroups, &limits).await,
            _ if stale_group => None,
            _ => {
                self.end_group(&id, pgid).await;
                None
            }
        };
        self.lock().remove(&id);
        if let Some(path) = &status_file
            && let Err(e) = std::fs::remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(container = %id, file = %path.display(), error = %e, "cannot remove the task's status file");
        }
        match (exit, limitation) {
            (Ok(exit), limitation) => Ok(Termination { exit, limitation }),
            // Nothing recorded the end, but the kernel killed it for memory: by SIGKILL.
            (Err(ContainerError::EndedWhileDown(_)), Some(limitation)) => Ok(Termination {
                exit: ExitKind::Signaled(Signal::SIGKILL as i32),
                limitation: Some(limitation),
            }),
            (Err(e), _) => Err(e),
        }
    }

    /// After the leader of a container without a cgroup ended: whatever it left
    /// behind in its group dies with it, unless a kill is giving it its grace period.
    async fn end_group(&self, id: &ContainerId, pgid: Pid) {
        let mut sigkill_sent: Option<Instant> = None;
        loop {
            if !group_alive(pgid) {
                break;
            }
            let deadline = self.lock().get(id).and_then(|p| p.kill_deadline);
            let now = Instant::now();
            let may_kill = deadline.is_none_or(|d| now >= d + KILL_SLACK);
            match sigkill_sent {
                None if may_kill => {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    sigkill_sent = Some(now);
                }
                Some(at) if now.duration_since(at) > SIGKILL_WAIT => {
                    tracing::warn!(container = %id, pgid = pgid.as_raw(), "processes survive SIGKILL; reporting the end anyway");
                    break;
                }
                _ => {}
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// After the leader of a container with a cgroup was reaped: waits for what is left
    /// in the cgroup (a kill in its grace period), SIGKILLs it, tells whether the kernel
    /// killed something for memory, and removes the cgroup.
    async fn end_cgroup(
        &self,
        id: &ContainerId,
        cgroups: Arc<Cgroups>,
        limits: &Limits,
    ) -> Option<Limitation> {
        loop {
            if cgroups.procs(&id.0).is_empty() {
                break;
            }
            let deadline = self.lock().get(id).and_then(|p| p.kill_deadline);
            if deadline.is_none_or(|d| Instant::now() >= d + KILL_SLACK) {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let oom = cgroups.oom_killed(&id.0);
        let name = id.0.clone();
        let destroyed = {
            let cgroups = cgroups.clone();
            tokio::task::spawn_blocking(move || cgroups.destroy(&name)).await
        };
        match destroyed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(container = %id, error = %e, "cannot destroy the task's cgroup")
            }
            Err(e) => tracing::warn!(container = %id, error = %e, "the cgroup destroyer failed"),
        }
        oom.then(|| Limitation {
            reason: TaskStatusReason::ReasonContainerLimitationMemory,
            message: match limits.mem_bytes {
                Some(limit) => format!(
                    "task used more than its memory limit of {} and was killed by the kernel",
                    human_bytes(limit)
                ),
                None => "task ran out of memory and was killed by the kernel".to_string(),
            },
        })
    }

    /// A kill of a container in a cgroup: SIGTERM to every process in it, the grace,
    /// then SIGKILL to everything (frozen first, so nothing forks away).
    async fn kill_cgroup(
        &self,
        id: ContainerId,
        cgroups: Arc<Cgroups>,
        deadline: Instant,
        grace: Duration,
    ) -> Result<(), ContainerError> {
        let signalled = cgroups.signal(&id.0, Signal::SIGTERM);
        if signalled == 0 {
            return Ok(());
        }
        tracing::debug!(container = %id, processes = signalled, ?grace, "sent SIGTERM to the cgroup");
        loop {
            if cgroups.procs(&id.0).is_empty() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
        tracing::debug!(container = %id, "grace period over; sending SIGKILL to the cgroup");
        if let Some(proc) = self.lock().get_mut(&id) {
            proc.sigkilled = true;
        }
        let name = id.0.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || cgroups.kill_now(&name)).await {
            tracing::warn!(container = %id, error = %e, "the cgroup killer failed; wait will retry");
        }
        Ok(())
    }

    async fn kill_inner(&self, id: ContainerId, grace: Duration) -> Result<(), ContainerError> {
        let deadline = Instant::now() + grace;
        let (pgid, cgroup, stale_group) = {
            let mut procs = self.lock();
            let Some(proc) = procs.get_mut(&id) else {
                return Ok(()); // already ended and reaped
            };
            proc.kill_deadline = Some(deadline);
            (proc.pgid, proc.cgroup.is_some(), proc.stale_group)
        };
        if cgroup && let Some(cgroups) = self.cgroups().cloned() {
            return self.kill_cgroup(id, cgroups, deadline, grace).await;
        }
        if stale_group {
            return Ok(()); // ended while the agent was down; its group id is not its own
        }
        match killpg(pgid, Signal::SIGTERM) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Ok(()),
            Err(source) => return Err(ContainerError::Signal { id, source }),
        }
        tracing::debug!(container = %id, pgid = pgid.as_raw(), ?grace, "sent SIGTERM to the process group");
        loop {
            if !group_alive(pgid) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(POLL.min(deadline - now)).await;
        }
        tracing::debug!(container = %id, pgid = pgid.as_raw(), "grace period over; sending SIGKILL");
        if let Some(proc) = self.lock().get_mut(&id) {
            proc.sigkilled = true;
        }
        match killpg(pgid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(ContainerError::Signal { id, source }),
        }
    }
}

impl ProcessContainerizer {
    /// Takes the process tasks of `handles` back: running ones are adopted, ended ones
    /// are kept for `wait` to report. Returns their ids.
    fn adopt(&self, handles: Vec<ContainerHandle>) -> Vec<ContainerId> {
        let mut recovered = Vec::new();
        for handle in handles {
            let (Some(Recovery::Process(info)), Some(pid)) = (handle.recovery, handle.pid) else {
                continue;
            };
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            let pid = Pid::from_raw(raw);
            let id = handle.id;
            let cgroup = match (&info.cgroup, self.cgroups()) {
                (None, _) => None,
                (Some(path), Some(cgroups)) if *path == cgroups.path_of(&id.0) => {
                    Some(info.limits.unwrap_or_default())
                }
                (Some(path), _) => {
                    tracing::warn!(container = %id, cgroup = %path, "the task's cgroup is not under this agent's cgroups (was --isolation or --cgroups-root changed?); it is handled as a process group");
                    None
                }
            };
            let same_boot = info.boot_id.is_none() || info.boot_id == self.boot_id;
            let alive = same_boot && monitor_alive(pid, info.start_time);
            tracing::info!(container = %id, pid = pid.as_raw(), running = alive, "recovered a process task");
            let end = if alive {
                EndSource::Adopted {
                    pid,
                    start_time: info.start_time,
                }
            } else {
                EndSource::Ended
            };
            self.lock().insert(
                id.clone(),
                Proc {
                    pgid: pid,
                    end: Some(end),
                    kill_deadline: None,
                    cgroup,
                    status_file: info.status_file,
                    stale_group: !alive,
                    sigkilled: false,
                },
            );
            recovered.push(id);
        }
        recovered
    }
}

impl Containerizer for ProcessContainerizer {
    fn name(&self) -> &'static str {
        "process"
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<ContainerHandle, ContainerError>> {
        Box::pin(async move {
            let user = resolve_user(spec.user.as_deref())?;
            let logs = sandbox::prepare(&spec.sandbox, owner_of(user.as_ref()))
                .await
                .map_err(|e| ContainerError::Sandbox(e.to_string()))?;
            self.launch_now(spec, user, logs)
        })
    }

    fn wait(&self, id: ContainerId) -> BoxFuture<'_, Result<Termination, ContainerError>> {
        Box::pin(self.wait_inner(id))
    }

    fn kill(&self, id: ContainerId, grace: Duration) -> BoxFuture<'_, Result<(), ContainerError>> {
        Box::pin(self.kill_inner(id, grace))
    }

    /// Re-attaches to the tasks of a previous run (see the module docs), then removes
    /// the cgroups and status files no recovered task claims.
    fn recover(
        &self,
        handles: Vec<ContainerHandle>,
    ) -> BoxFuture<'_, Result<Vec<ContainerId>, ContainerError>> {
        Box::pin(async move {
            let recovered = self.adopt(handles);
            if let Some(cgroups) = self.cgroups().cloned() {
                let keep: Vec<String> = recovered.iter().map(|id| id.0.clone()).collect();
                let removed = tokio::task::spawn_blocking(move || cgroups.remove_orphans(&keep))
                    .await
                    .unwrap_or_default();
                if !removed.is_empty() {
                    tracing::info!(
                        count = removed.len(),
                        "removed orphan cgroups of a previous run"
                    );
                }
            }
            if let Some(dir) = &self.runtime_dir {
                let keep: HashSet<PathBuf> = self
                    .lock()
                    .values()
                    .filter_map(|p| p.status_file.clone())
                    .collect();
                remove_stale_status_files(dir, &keep);
            }
            Ok(recovered)
        })
    }

    fn usage(&self, id: ContainerId) -> BoxFuture<'_, Result<ResourceUsage, ContainerError>> {
        let limits = self.lock().get(&id).map(|p| p.cgroup);
        Box::pin(async move {
            let (Some(cgroups), Some(Some(limits))) = (self.cgroups(), limits) else {
                return match limits {
                    None => Err(ContainerError::NotFound(id)),
                    Some(_) => Err(ContainerError::Unsupported("process (without cgroups)")),
                };
            };
            let s = cgroups
                .statistics(&id.0, &limits)
                .ok_or_else(|| ContainerError::NotFound(id.clone()))?;
            Ok(ResourceUsage {
                cpu_time_seconds: s.cpus_total_time_secs,
                mem_bytes: s.mem_total_bytes,
                mem_peak_bytes: s.mem_peak_bytes,
                processes: s.processes,
                threads: s.threads,
                cpu_user_seconds: s.cpus_user_time_secs,
                cpu_system_seconds: s.cpus_system_time_secs,
                cpus_nr_periods: s.cpus_nr_periods,
                cpus_nr_throttled: s.cpus_nr_throttled,
                cpus_throttled_seconds: s.cpus_throttled_time_secs,
                cpus_limit: limits.cpus(),
                mem_limit_bytes: limits.mem_bytes,
            })
        })
    }
}

/// The user to switch to, when there is one and the agent can switch (it runs as
/// root). An agent that is not root runs tasks as itself. `name` is the task's user
/// as the agent decided it (the command's, else the framework's, else the agent's
/// `--default-user`, `nobody` unless set; see [`crate::AgentOptions::default_user`]);
/// `None` or empty: the agent's own user. Also used by COMMAND health checks, which
/// run as the task's user, and for the owner of a Docker task's sandbox.
pub(crate) fn resolve_user(name: Option<&str>) -> Result<Option<User>, ContainerError> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if !nix::unistd::geteuid().is_root() {
        tracing::debug!(
            user = name,
            "agent is not root; running the task as the agent's user"
        );
        return Ok(None);
    }
    match User::from_name(name) {
        Ok(Some(user)) => Ok(Some(user)),
        Ok(None) => Err(ContainerError::UnknownUser(name.to_string())),
        Err(source) => Err(ContainerError::UserLookup {
            user: name.to_string(),
            source,
        }),
    }
}

/// The owner [`sandbox::prepare`] gives a sandbox of a task run as `user`.
pub(crate) fn owner_of(user: Option<&User>) -> sandbox::Owner {
    user.map(|u| (u.uid.as_raw(), u.gid.as_raw()))
}

fn exit_kind(status: std::process::ExitStatus) -> ExitKind {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitKind::Exited(code),
        (None, Some(sig)) => ExitKind::Signaled(sig),
        (None, None) => ExitKind::Exited(-1),
    }
}

/// Whether a live (not zombie) process is in the group. Orphaned members are
/// reparented to init, which may be slow to reap them (or never, in some containers),
/// so a group of zombies counts as gone.
pub(crate) fn group_alive(pgid: Pid) -> bool {
    match killpg(pgid, None) {
        Err(_) => false,
        Ok(()) => live_group_members(pgid.as_raw()) > 0,
    }
}

/// Counts the non-zombie processes whose process group is `pgid`, from /proc.
fn live_group_members(pgid: i32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 1; // cannot tell: assume alive, so a kill still escalates
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // "pid (comm) state ppid pgrp ..."; comm may contain spaces and ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
            pgrp == Some(pgid) && !matches!(state, Some("Z") | Some("X"))
        })
        .count()
}

/// The status file of a container in the runtime dir.
fn status_path(dir: &Path, id: &ContainerId) -> PathBuf {
    dir.join(format!("{}{STATUS_SUFFIX}", id.0))
}

/// Creates (empties) a status file for the monitor to write: never through a symlink,
/// readable by the agent only.
fn open_status_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Removes the status files in `dir` that `keep` does not name (tasks of a previous
/// run that were not recovered).
fn remove_stale_status_files(dir: &Path, keep: &HashSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.to_string_lossy().ends_with(STATUS_SUFFIX) && !keep.contains(&path) {
            tracing::debug!(file = %path.display(), "removing a stale status file");
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// How a recovered task ended, from its monitor's status file. `running_until_now`:
/// the monitor was watched until it ended (else it had ended while the agent was down).
fn recorded_end(
    id: &ContainerId,
    status_file: Option<&Path>,
    running_until_now: bool,
) -> Result<ExitKind, ContainerError> {
    let text = status_file.map(std::fs::read_to_string);
    match text.as_ref().map(|t| t.as_deref().map(parse_status)) {
        Some(Ok(Some(RecordedEnd::Exited(code)))) => Ok(ExitKind::Exited(code)),
        Some(Ok(Some(RecordedEnd::Signaled(sig)))) => Ok(ExitKind::Signaled(sig)),
        other => {
            let why = match other {
                None => "the agent keeps no status files".to_string(),
                Some(Err(e)) => format!("its status file cannot be read: {e}"),
                _ => "its monitor recorded no exit status (it was killed)".to_string(),
            };
            tracing::warn!(container = %id, %why, "the end of a recovered task is unknown");
            let when = if running_until_now {
                "the task ended after the agent restarted"
            } else {
                "the task ended while the agent was down"
            };
            Err(ContainerError::EndedWhileDown(format!(
                "{when} and its outcome is unknown: {why}"
            )))
        }
    }
}

/// What the agent reads of `/proc/PID/stat`.
struct ProcStat {
    /// One letter: R, S, D, Z, X, ...
    state: char,
    /// Clock ticks after boot (field 22).
    start_time: u64,
}

fn proc_stat(pid: Pid) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw())).ok()?;
    parse_proc_stat(&stat)
}

/// Parses `pid (comm) state ppid ...`; comm may contain spaces and ')'.
fn parse_proc_stat(stat: &str) -> Option<ProcStat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 was the state; the start time is field 22.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// Whether the monitor `pid` that started at `start_time` is still alive (a zombie,
/// or another process that reused the pid, is not). A start time of 0 was not read at
/// launch: the pid alone decides.
fn monitor_alive(pid: Pid, start_time: u64) -> bool {
    proc_stat(pid).is_some_and(|s| {
        (s.start_time == start_time || start_time == 0) && !matches!(s.state, 'Z' | 'X')
    })
}

/// The kernel's boot id, if it can be read.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1;

    fn spec(dir: &Path, task_id: &str, command: &str) -> LaunchSpec {
        LaunchSpec {
            container_id: ContainerId::random(),
            agent_id: "a1".into(),
            framework_id: "f1".into(),
            framework: v1::FrameworkInfo::default(),
            task: v1::TaskInfo {
                task_id: task_id.into(),
                ..Default::default()
            },
            command: v1::CommandInfo {
                shell: true,
                value: command.into(),
                ..Default::default()
            },
            resources: strata_proto::Resources::new(),
            sandbox: dir.join(task_id),
            user: None,
            objects: None,
            volumes: Vec::new(),
        }
    }

    /// A containerizer as a (re)started agent has it: no isolation, a runtime dir.
    fn containerizer(dir: &Path) -> ProcessContainerizer {
        ProcessContainerizer::new().with_runtime_dir(dir.join("runtime"))
    }

    async fn recorded(path: &Path) -> String {
        for _ in 0..400 {
            match std::fs::read_to_string(path) {
                Ok(s) if s.ends_with('\n') => return s,
                _ => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
        panic!("nothing recorded in {}", path.display());
    }

    fn status_file_of(handle: &ContainerHandle) -> PathBuf {
        match &handle.recovery {
            Some(Recovery::Process(p)) => p.status_file.clone().expect("a status file"),
            other => panic!("no process recovery info: {other:?}"),
        }
    }

    #[test]
    fn proc_stat_fields_are_read_past_odd_command_names() {
        let stat = "4242 (a b) c) S 1 4242 4242 0 -1 4194560 120 0 0 0 1 2 0 0 20 0 1 0 987654 1234567 300 18446744073709551615";
        let s = parse_proc_stat(stat).unwrap();
        assert_eq!((s.state, s.start_time), ('S', 987654));
        assert!(parse_proc_stat("4242 (x) Z").is_none());
        let me = proc_stat(nix::unistd::getpid()).unwrap();
        assert!(monitor_alive(nix::unistd::getpid(), me.start_time));
        assert!(!monitor_alive(nix::unistd::getpid(), me.start_time + 1));
    }

    #[tokio::test]
    async fn the_monitor_records_the_end_and_the_agent_sees_it_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let c = containerizer(dir.path());
        let handle = c.launch(spec(dir.path(), "t", "exit 3")).await.unwrap();
        let status = status_file_of(&handle);
        let t = c.wait(handle.id.clone()).await.unwrap();
        assert_eq!(t.exit, ExitKind::Exited(3));
        assert!(!status.exists(), "removed once the end is reported");

        let handle = c
            .launch(spec(dir.path(), "s", "kill -TERM $$"))
            .await
            .unwrap();
        let t = c.wait(handle.id).await.unwrap();
        assert_eq!(
            t.exit,
            ExitKind::Signaled(15),
            "the monitor dies as the task did"
        );
    }

    #[tokio::test]
    async fn a_task_that_ended_while_no_agent_ran_is_recovered_with_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let first = containerizer(dir.path());
        let handle = first.launch(spec(dir.path(), "t", "exit 3")).await.unwrap();
        let status = status_file_of(&handle);
        // The agent dies: nobody waits for the task.
        drop(first);
        assert_eq!(recorded(&status).await, "exit 3\n");
        // A file of a task the checkpoint does not know is cleaned up.
        let stale = dir.path().join("runtime").join("gone.status");
        std::fs::write(&stale, "exit 0\n").unwrap();

        let second = containerizer(dir.path());
        let other = ContainerHandle::new(ContainerId::random(), Some(1));
        let ids = second.recover(vec![handle.clone(), other]).await.unwrap();
        assert_eq!(
            ids,
            vec![handle.id.clone()],
            "handles without process info are not its"
        );
        assert!(!stale.exists());
        let t = second.wait(handle.id).await.unwrap();
        assert_eq!(t.exit, ExitKind::Exited(3));
        assert_eq!(t.limitation, None);
        assert!(!status.exists());
    }

    #[tokio::test]
    async fn a_running_task_is_adopted_and_its_end_read_when_its_monitor_ends() {
        let dir = tempfile::tempdir().unwrap();
        let first = containerizer(dir.path());
        let gate = dir.path().join("go");
        let command = format!(
            "while [ ! -e {} ]; do sleep 0.02; done; exit 7",
            gate.display()
        );
        let handle = first.launch(spec(dir.path(), "t", &command)).await.unwrap();
        drop(first);

        let second = containerizer(dir.path());
        assert_eq!(second.recover(vec![handle.clone()]).await.unwrap().len(), 1);
        let waited = tokio::spawn(async move { second.wait(handle.id).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waited.is_finished(), "the task still runs");
        std::fs::write(&gate, "").unwrap();
        let t = tokio::time::timeout(Duration::from_secs(10), waited)
            .await
            .expect("the end is seen")
            .unwrap()
            .unwrap();
        assert_eq!(t.exit, ExitKind::Exited(7));
    }

    #[tokio::test]
    async fn a_task_whose_monitor_recorded_nothing_has_an_unknown_end() {
        let dir = tempfile::tempdir().unwrap();
        let first = containerizer(dir.path());
        let handle = first
            .launch(spec(dir.path(), "t", "sleep 1000"))
            .await
            .unwrap();
        drop(first);
        // The monitor and its task are SIGKILLed together while no agent runs.
        let pgid = Pid::from_raw(handle.pid.unwrap() as i32);
        killpg(pgid, Signal::SIGKILL).unwrap();
        for _ in 0..400 {
            if !group_alive(pgid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }

        let second = containerizer(dir.path());
        assert_eq!(second.recover(vec![handle.clone()]).await.unwrap().len(), 1);
        match second.wait(handle.id).await {
            Err(ContainerError::EndedWhileDown(m)) => assert_eq!(
                m,
                "the task ended while the agent was down and its outcome is unknown: its monitor recorded no exit status (it was killed)"
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
}
