//! The process containerizer: each task is a child process in its own process group
//! and, with cgroups isolation (issue 3, [`crate::isolation`]), in its own cgroup,
//! which is then the unit of a kill.
//!
//! ```text
//! launch: sandbox dir, stdout, stderr ─▶ [cgroup created with the task's limits]
//!         ─▶ /bin/sh -c CMD | exec CMD ARGS, cwd = sandbox, setpgid(0, 0),
//!         [joins its cgroup, pid namespace] before exec, uid/gid of the task's user (agent as root)
//! wait:   reap the leader ─▶ SIGKILL what is left of the cgroup / group (unless a kill
//!         is running its grace period) ─▶ wait until nothing is left
//!         ─▶ [OOM kill in the cgroup? memory limitation] ─▶ [remove the cgroup]
//! kill:   SIGTERM to the cgroup / group ─▶ grace (ends early when it is empty) ─▶ SIGKILL
//!         (cgroup: frozen, every process SIGKILLed, thawed)
//! usage:  [statistics of the cgroup]
//! recover:[cgroups of this agent that no task claims are destroyed]
//! ```
//!
//! Without cgroups a process that leaves the group (`setsid`, a double-forked daemon)
//! escapes; in a cgroup nothing does.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User};
use tokio::process::{Child, Command};

use crate::cgroups::{Cgroups, Limits, limits::human_bytes};
use crate::isolation::Isolation;
use crate::isolation::child::ChildSetup;
use crate::sandbox;
use std::sync::Arc;
use strata_proto::v1::TaskStatusReason;

use super::{
    BoxFuture, ContainerError, ContainerHandle, ContainerId, Containerizer, ExitKind, LaunchSpec,
    Limitation, ResourceUsage, Termination, task_environment,
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

/// One running task.
struct Proc {
    /// The group id, which is the leader's pid.
    pgid: Pid,
    /// Taken by `wait`, which reaps it.
    child: Option<Child>,
    /// Set by `kill`: when its grace period ends. `wait` leaves the group alone until then.
    kill_deadline: Option<Instant>,
    /// The limits of its cgroup (named by the container id), when it has one.
    cgroup: Option<Limits>,
}

/// Runs tasks as process groups, in cgroups when the isolation says so. See the
/// module docs.
#[derive(Default)]
pub struct ProcessContainerizer {
    /// Short critical sections only; never held across an `.await`.
    procs: Mutex<HashMap<ContainerId, Proc>>,
    /// What every task gets, decided at agent start.
    isolation: Isolation,
}

impl ProcessContainerizer {
    /// Process groups only, no isolation.
    pub fn new() -> ProcessContainerizer {
        ProcessContainerizer::default()
    }

    /// With the isolation found at start ([`Isolation::detect`]).
    pub fn with_isolation(isolation: Isolation) -> ProcessContainerizer {
        ProcessContainerizer {
            procs: Mutex::default(),
            isolation,
        }
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

    fn launch_now(&self, spec: LaunchSpec) -> Result<ContainerHandle, ContainerError> {
        if let Some(why) = &self.isolation.unavailable {
            return Err(ContainerError::Isolation(why.clone()));
        }
        let user = resolve_user(spec.user.as_deref())?;
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(spec.sandbox.join(name))
                .map_err(|e| ContainerError::Sandbox(format!("cannot open {name}: {e}")))
        };
        let (stdout, stderr) = (open("stdout")?, open("stderr")?);
        if let Some(user) = &user {
            for path in [
                spec.sandbox.clone(),
                spec.sandbox.join("stdout"),
                spec.sandbox.join("stderr"),
            ] {
                nix::unistd::chown(&path, Some(user.uid), Some(user.gid)).map_err(|e| {
                    ContainerError::Sandbox(format!(
                        "cannot give {} to {}: {e}",
                        path.display(),
                        user.name
                    ))
                })?;
            }
        }

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
        let setup = ChildSetup {
            join,
            pid_namespace: self.isolation.pid_namespace,
            credentials: None,
        };
        if setup.is_empty() {
            if let Some(user) = &user {
                // std drops the supplementary groups when root switches uid.
                cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            }
        } else {
            // Joining a cgroup or namespace comes first, as root: the hook switches user.
            ChildSetup {
                credentials: user.as_ref().map(|u| (u.uid.as_raw(), u.gid.as_raw())),
                ..setup
            }
            .install(&mut cmd);
        }

        let spawned = cmd.spawn();
        drop(cmd); // closes the agent's copies of the cgroup files
        let child = match spawned {
            Ok(child) => child,
            Err(source) => {
                if let Some(cgroups) = self.cgroups()
                    && let Err(e) = cgroups.destroy(&spec.container_id.0)
                {
                    tracing::warn!(container = %spec.container_id, error = %e, "cannot remove the cgroup of a task that did not start");
                }
                return Err(ContainerError::Spawn { program, source });
            }
        };
        let pid = child.id().ok_or_else(|| ContainerError::Spawn {
            program: command.value.clone(),
            source: std::io::Error::other("the process ended before its pid was read"),
        })?;
        let pgid = Pid::from_raw(pid as i32);
        tracing::debug!(container = %spec.container_id, pid, task_id = %spec.task.task_id, "process started");
        self.lock().insert(
            spec.container_id.clone(),
            Proc {
                pgid,
                child: Some(child),
                kill_deadline: None,
                cgroup: limits,
            },
        );
        Ok(ContainerHandle {
            id: spec.container_id,
            pid: Some(pid),
        })
    }

    async fn wait_inner(&self, id: ContainerId) -> Result<Termination, ContainerError> {
        let (mut child, pgid, cgroup) = {
            let mut procs = self.lock();
            let proc = procs
                .get_mut(&id)
                .ok_or_else(|| ContainerError::NotFound(id.clone()))?;
            let child = proc
                .child
                .take()
                .ok_or_else(|| ContainerError::AlreadyWaited(id.clone()))?;
            (child, proc.pgid, proc.cgroup)
        };
        let status = child.wait().await;
        if let (Some(cgroups), Some(limits)) = (self.cgroups().cloned(), cgroup) {
            let limitation = self.end_cgroup(&id, cgroups, &limits).await;
            self.lock().remove(&id);
            let status = status.map_err(|source| ContainerError::Wait {
                id: id.clone(),
                source,
            })?;
            return Ok(Termination {
                exit: exit_kind(status),
                limitation,
            });
        }
        // Whatever the leader left behind dies with it, unless a kill is giving it its
        // grace period.
        let mut sigkill_sent: Option<Instant> = None;
        loop {
            if !group_alive(pgid) {
                break;
            }
            let deadline = self.lock().get(&id).and_then(|p| p.kill_deadline);
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
        self.lock().remove(&id);
        let status = status.map_err(|source| ContainerError::Wait {
            id: id.clone(),
            source,
        })?;
        Ok(Termination {
            exit: exit_kind(status),
            limitation: None,
        })
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
        let name = id.0.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || cgroups.kill_now(&name)).await {
            tracing::warn!(container = %id, error = %e, "the cgroup killer failed; wait will retry");
        }
        Ok(())
    }

    async fn kill_inner(&self, id: ContainerId, grace: Duration) -> Result<(), ContainerError> {
        let deadline = Instant::now() + grace;
        let (pgid, cgroup) = {
            let mut procs = self.lock();
            let Some(proc) = procs.get_mut(&id) else {
                return Ok(()); // already ended and reaped
            };
            proc.kill_deadline = Some(deadline);
            (proc.pgid, proc.cgroup.is_some())
        };
        if cgroup && let Some(cgroups) = self.cgroups().cloned() {
            return self.kill_cgroup(id, cgroups, deadline, grace).await;
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
        match killpg(pgid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(ContainerError::Signal { id, source }),
        }
    }
}

impl Containerizer for ProcessContainerizer {
    fn name(&self) -> &'static str {
        "process"
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<ContainerHandle, ContainerError>> {
        Box::pin(async move {
            sandbox::prepare(&spec.sandbox)
                .await
                .map_err(|e| ContainerError::Sandbox(e.to_string()))?;
            self.launch_now(spec)
        })
    }

    fn wait(&self, id: ContainerId) -> BoxFuture<'_, Result<Termination, ContainerError>> {
        Box::pin(self.wait_inner(id))
    }

    fn kill(&self, id: ContainerId, grace: Duration) -> BoxFuture<'_, Result<(), ContainerError>> {
        Box::pin(self.kill_inner(id, grace))
    }

    /// Re-attaching to a previous run's processes is issue 6: for now every cgroup
    /// under this agent's slot is an orphan; its processes are killed and it is removed.
    fn recover(
        &self,
        handles: Vec<ContainerHandle>,
    ) -> BoxFuture<'_, Result<Vec<ContainerId>, ContainerError>> {
        drop(handles);
        let cgroups = self.cgroups().cloned();
        Box::pin(async move {
            if let Some(cgroups) = cgroups {
                let removed = tokio::task::spawn_blocking(move || cgroups.remove_orphans(&[]))
                    .await
                    .unwrap_or_default();
                if !removed.is_empty() {
                    tracing::info!(
                        count = removed.len(),
                        "removed orphan cgroups of a previous run"
                    );
                }
            }
            Ok(Vec::new())
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
/// root). An agent that is not root runs tasks as itself.
fn resolve_user(name: Option<&str>) -> Result<Option<User>, ContainerError> {
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
