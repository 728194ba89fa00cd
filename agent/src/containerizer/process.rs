//! The process containerizer: each task is a child process in its own process group,
//! and the group is the unit of a kill (until cgroups make the cgroup the unit, issue 3).
//!
//! ```text
//! launch: sandbox dir, stdout, stderr ─▶ /bin/sh -c CMD | exec CMD ARGS, cwd = sandbox,
//!         setpgid(0, 0), uid/gid of the task's user (agent as root)
//! wait:   reap the leader ─▶ SIGKILL what is left of the group (unless a kill is
//!         running its grace period) ─▶ wait until no live process is in the group
//! kill:   SIGTERM to the group ─▶ grace (ends early when the group is gone) ─▶ SIGKILL
//! ```
//!
//! A process that leaves the group (`setsid`, a double-forked daemon) escapes; cgroups
//! close that hole.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User};
use tokio::process::{Child, Command};

use crate::sandbox;

use super::{
    BoxFuture, ContainerError, ContainerHandle, ContainerId, Containerizer, ExitKind, LaunchSpec,
    Termination, task_environment,
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
}

/// Runs tasks as process groups. See the module docs.
#[derive(Default)]
pub struct ProcessContainerizer {
    /// Short critical sections only; never held across an `.await`.
    procs: Mutex<HashMap<ContainerId, Proc>>,
}

impl ProcessContainerizer {
    pub fn new() -> ProcessContainerizer {
        ProcessContainerizer::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContainerId, Proc>> {
        // A panic while holding the lock leaves the map consistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn launch_now(&self, spec: LaunchSpec) -> Result<ContainerHandle, ContainerError> {
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
            // std drops the supplementary groups when root switches uid.
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            cmd.env("USER", &user.name)
                .env("LOGNAME", &user.name)
                .env("HOME", &user.dir);
        }
        cmd.envs(task_environment(&spec));

        let child = cmd
            .spawn()
            .map_err(|source| ContainerError::Spawn { program, source })?;
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
            },
        );
        Ok(ContainerHandle {
            id: spec.container_id,
            pid: Some(pid),
        })
    }

    async fn wait_inner(&self, id: ContainerId) -> Result<Termination, ContainerError> {
        let (mut child, pgid) = {
            let mut procs = self.lock();
            let proc = procs
                .get_mut(&id)
                .ok_or_else(|| ContainerError::NotFound(id.clone()))?;
            let child = proc
                .child
                .take()
                .ok_or_else(|| ContainerError::AlreadyWaited(id.clone()))?;
            (child, proc.pgid)
        };
        let status = child.wait().await;
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

    async fn kill_inner(&self, id: ContainerId, grace: Duration) -> Result<(), ContainerError> {
        let deadline = Instant::now() + grace;
        let pgid = {
            let mut procs = self.lock();
            let Some(proc) = procs.get_mut(&id) else {
                return Ok(()); // already ended and reaped
            };
            proc.kill_deadline = Some(deadline);
            proc.pgid
        };
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
