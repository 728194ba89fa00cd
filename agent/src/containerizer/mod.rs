//! The seam between the agent and whatever runs tasks.
//!
//! ```text
//! agent ── launch(spec) ──▶ Containerizer ──▶ ContainerHandle (checkpointed)
//!       ── wait(id) ──────▶                ──▶ Termination (once, when it has ended)
//!       ── kill(id, grace)▶ SIGTERM to the whole container, grace, SIGKILL
//!       ── recover(handles) at start: re-attach to a previous run's containers
//!       ── usage(id): cgroup statistics
//!       ── exec(id, command): a COMMAND health check inside the container (Docker)
//! ```
//!
//! Implementations: [`ProcessContainerizer`] (a process group per task),
//! [`DockerContainerizer`] (a container on the Docker engine per task),
//! [`FakeContainerizer`] (runs nothing, for scale runs), and
//! [`ComposingContainerizer`], which picks the Docker one for tasks whose
//! `TaskInfo.container` is DOCKER and the process one for the others. A
//! cgroups-isolating process containerizer (issue 3) implements the same trait.
//!
//! The trait is object safe (methods return boxed futures) so the agent holds an
//! `Arc<dyn Containerizer>` chosen at start.

pub mod composing;
pub mod docker;
pub mod fake;
pub mod process;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_proto::Resources;
use strata_proto::v1;

use crate::objects::TaskObjects;

pub use composing::ComposingContainerizer;
pub use docker::{DockerContainerizer, DockerOptions};
pub use fake::FakeContainerizer;
pub use process::ProcessContainerizer;

/// A boxed, sendable future: what the trait's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Names one container (one launch of one task) on this agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContainerId(pub String);

impl ContainerId {
    /// A fresh random id.
    pub fn random() -> ContainerId {
        ContainerId(uuid::Uuid::new_v4().to_string())
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything a containerizer needs to start a task. The agent has validated it: the
/// ids are safe, the command is present, the resources are well formed. The
/// containerizer creates the sandbox ([`crate::sandbox::prepare`]) when it runs
/// something there; the fake one does not.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub container_id: ContainerId,
    pub agent_id: String,
    pub framework_id: String,
    pub framework: v1::FrameworkInfo,
    /// The whole task, for containerizers that read more of it (a Docker image, later).
    pub task: v1::TaskInfo,
    pub command: v1::CommandInfo,
    pub resources: Resources,
    pub sandbox: PathBuf,
    /// The user to run as: the command's user, else the framework's, else the
    /// agent's `--default-user` (`nobody` unless set); `None`: the agent's own user.
    /// Process tasks run as it (when the agent is root); a Docker task's sandbox
    /// belongs to it, while the container runs as the image's user (or the command's).
    pub user: Option<String>,
    /// The values of the task's configs and secrets (`TaskInfo.objects`), fetched
    /// from the master by the launch job just before `launch`; `None` when the task
    /// references none (and in every spec built for anything but a launch). Never
    /// shown by `Debug`, wiped when the last launch-time copy is dropped.
    pub objects: Option<Arc<TaskObjects>>,
    /// The persistent volumes the task mounts (issue 17, [`crate::volumes`]): in the
    /// agent's ledger, checked by the agent.
    pub volumes: Vec<crate::volumes::VolumeMount>,
}

/// What `launch` returns and the agent checkpoints, so that a restarted agent can
/// find the container again ([`Containerizer::recover`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerHandle {
    pub id: ContainerId,
    /// The process (group leader) of a process container: the task's monitor.
    pub pid: Option<u32>,
    /// What the containerizer that launched it needs to find it again; `None` for
    /// containerizers that cannot recover (and in checkpoints of older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Recovery>,
}

impl ContainerHandle {
    /// A handle that carries nothing to recover the container with.
    pub fn new(id: ContainerId, pid: Option<u32>) -> ContainerHandle {
        ContainerHandle {
            id,
            pid,
            recovery: None,
        }
    }
}

/// How a restarted agent finds a container again, per containerizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "containerizer", rename_all = "snake_case")]
pub enum Recovery {
    Process(process::ProcessRecovery),
    Docker(docker::DockerRecovery),
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// The main process exited with this code.
    Exited(i32),
    /// The main process was killed by this signal.
    Signaled(i32),
}

impl ExitKind {
    /// The shell's convention: the code, or 128 + signal.
    pub fn exit_status(self) -> i32 {
        match self {
            ExitKind::Exited(code) => code,
            ExitKind::Signaled(sig) => 128 + sig,
        }
    }

    /// A message a user understands: "command exited with status 3", "killed by signal 9 (SIGKILL)".
    pub fn describe(self) -> String {
        match self {
            ExitKind::Exited(code) => format!("command exited with status {code}"),
            ExitKind::Signaled(sig) => match nix::sys::signal::Signal::try_from(sig) {
                Ok(s) => format!("killed by signal {sig} ({})", s.as_str()),
                Err(_) => format!("killed by signal {sig}"),
            },
        }
    }
}

/// A limit the container hit that ended it (e.g. the memory limit, issue 3).
#[derive(Debug, Clone, PartialEq)]
pub struct Limitation {
    pub reason: v1::TaskStatusReason,
    pub message: String,
}

/// The end of a container: how its main process ended and, when known, why.
#[derive(Debug, Clone, PartialEq)]
pub struct Termination {
    pub exit: ExitKind,
    pub limitation: Option<Limitation>,
}

/// Resource usage of a running container (filled in by cgroups, issue 3). `None`: the
/// containerizer cannot tell.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResourceUsage {
    /// cpu time, user + system.
    pub cpu_time_seconds: Option<f64>,
    /// Memory in use now.
    pub mem_bytes: Option<u64>,
    /// Most memory in use at once since the container started.
    pub mem_peak_bytes: Option<u64>,
    pub processes: Option<u64>,
    pub threads: Option<u64>,
    pub cpu_user_seconds: Option<f64>,
    pub cpu_system_seconds: Option<f64>,
    /// CFS periods, those in which the container was throttled, and the time it was.
    pub cpus_nr_periods: Option<u64>,
    pub cpus_nr_throttled: Option<u64>,
    pub cpus_throttled_seconds: Option<f64>,
    /// The limits the container runs under.
    pub cpus_limit: Option<f64>,
    pub mem_limit_bytes: Option<u64>,
}

/// Why a containerizer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("unknown user '{0}' on this agent")]
    UnknownUser(String),
    #[error("cannot look up user '{user}': {source}")]
    UserLookup { user: String, source: nix::Error },
    #[error("cannot start '{program}': {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot prepare the sandbox: {0}")]
    Sandbox(String),
    #[error("no container {0} on this agent")]
    NotFound(ContainerId),
    #[error("container {0} is already being waited for")]
    AlreadyWaited(ContainerId),
    #[error("cannot wait for container {id}: {source}")]
    Wait {
        id: ContainerId,
        source: std::io::Error,
    },
    #[error("cannot signal container {id}: {source}")]
    Signal { id: ContainerId, source: nix::Error },
    #[error("the {0} containerizer does not support this")]
    Unsupported(&'static str),
    /// The Docker engine refused or failed an operation; the message is the engine's.
    #[error("docker: {0}")]
    Docker(String),
    /// The task needs a containerizer this agent was not started with.
    #[error("this agent does not run {0} tasks: start it with --containerizers process,docker")]
    NotEnabled(&'static str),
    /// The task's isolation (cgroup, namespace) cannot be set up; says why.
    #[error("{0}")]
    Isolation(String),
    /// A recovered container ended while the agent was down and nothing recorded how;
    /// says what is known.
    #[error("{0}")]
    EndedWhileDown(String),
}

/// Runs tasks. See the module docs for the life of a container.
pub trait Containerizer: Send + Sync + 'static {
    /// Short name for logs and `/state` ("process", "fake", "docker").
    fn name(&self) -> &'static str;

    /// Whether the agent reports TASK_STARTING while `launch` runs. A containerizer
    /// whose launch is instantaneous (the fake one) says no, and tasks go straight
    /// to TASK_RUNNING.
    fn reports_starting(&self) -> bool {
        true
    }

    /// Prepares the sandbox and starts the task. Resolves when it runs (or failed to start).
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<ContainerHandle, ContainerError>>;

    /// Resolves once, when the container has ended and nothing of it is left running;
    /// the containerizer then forgets it. The agent calls it exactly once per launch.
    fn wait(&self, id: ContainerId) -> BoxFuture<'_, Result<Termination, ContainerError>>;

    /// SIGTERM to everything in the container, then SIGKILL after `grace` if anything
    /// is left. Resolves when the kill is done (the end itself is reported by `wait`).
    /// Killing a container that has ended is not an error.
    fn kill(&self, id: ContainerId, grace: Duration) -> BoxFuture<'_, Result<(), ContainerError>>;

    /// Re-attaches to containers a previous agent run launched, from their checkpointed
    /// handles (those of other containerizers are ignored), and cleans up what a
    /// previous run left that no handle claims (orphan cgroups, containers). Returns
    /// the ids it recovered: `wait` then works for each, whether the container still
    /// runs or ended while the agent was down (resolving at once with how it ended, or
    /// with [`ContainerError::EndedWhileDown`] when nothing recorded it); `kill` and
    /// `usage` work for those that run. The agent reports the other tasks lost. Called
    /// once, at start, before any launch. The default recovers nothing.
    fn recover(
        &self,
        handles: Vec<ContainerHandle>,
    ) -> BoxFuture<'_, Result<Vec<ContainerId>, ContainerError>> {
        drop(handles);
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Resource usage of a running container (issue 3). The default has none.
    fn usage(&self, id: ContainerId) -> BoxFuture<'_, Result<ResourceUsage, ContainerError>> {
        let name = self.name();
        drop(id);
        Box::pin(async move { Err(ContainerError::Unsupported(name)) })
    }

    /// Runs `/bin/sh -c command` inside the running container, in its sandbox and with
    /// its environment, and resolves with how the command ended: the COMMAND health
    /// checks of tasks whose container has its own filesystem (Docker). Dropping the
    /// future stops the command (best effort). The default cannot: process tasks'
    /// checks run on the host.
    fn exec(
        &self,
        id: ContainerId,
        command: String,
    ) -> BoxFuture<'_, Result<ExitKind, ContainerError>> {
        let name = self.name();
        drop((id, command));
        Box::pin(async move { Err(ContainerError::Unsupported(name)) })
    }
}

/// The environment Strata gives every task, on top of the command's own:
/// `STRATA_SANDBOX`, `STRATA_TASK_ID`, `STRATA_FRAMEWORK_ID`, `STRATA_AGENT_ID`, and
/// for the task's ports `PORT0..PORTn`, `PORT` (= `PORT0`) and `PORTS` (comma separated)
/// in ascending order, unless the command sets `PORT0` itself (a framework that knows
/// which port is which, as the container framework does with its spec's order).
/// The Strata variables come last so a command cannot fake them.
pub fn task_environment(spec: &LaunchSpec) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = spec
        .command
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.sort();
    let ports: Vec<u64> = spec
        .resources
        .ports()
        .ranges()
        .iter()
        .flat_map(|&(b, e)| b..=e)
        .take(1000)
        .collect();
    let framework_numbered = env.iter().any(|(k, _)| k == "PORT0");
    let ports = if framework_numbered {
        Vec::new()
    } else {
        ports
    };
    for (i, port) in ports.iter().enumerate() {
        env.push((format!("PORT{i}"), port.to_string()));
    }
    if let Some(first) = ports.first() {
        env.push(("PORT".to_string(), first.to_string()));
        let all: Vec<String> = ports.iter().map(u64::to_string).collect();
        env.push(("PORTS".to_string(), all.join(",")));
    }
    env.push((
        "STRATA_SANDBOX".to_string(),
        spec.sandbox.display().to_string(),
    ));
    env.push(("STRATA_TASK_ID".to_string(), spec.task.task_id.clone()));
    env.push(("STRATA_FRAMEWORK_ID".to_string(), spec.framework_id.clone()));
    env.push(("STRATA_AGENT_ID".to_string(), spec.agent_id.clone()));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_descriptions() {
        assert_eq!(
            ExitKind::Exited(3).describe(),
            "command exited with status 3"
        );
        assert_eq!(
            ExitKind::Signaled(9).describe(),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(ExitKind::Signaled(15).exit_status(), 143);
    }

    #[test]
    fn environment_has_ports_and_strata_variables() {
        let mut command = v1::CommandInfo {
            value: "true".into(),
            ..Default::default()
        };
        command
            .environment
            .insert("STRATA_TASK_ID".into(), "fake".into());
        command.environment.insert("GREETING".into(), "hi".into());
        let spec = LaunchSpec {
            container_id: ContainerId::random(),
            agent_id: "a1".into(),
            framework_id: "f1".into(),
            framework: Default::default(),
            task: v1::TaskInfo {
                task_id: "t1".into(),
                ..Default::default()
            },
            command,
            resources: Resources::parse("cpus:1;ports:[31000-31001,31005-31005]").unwrap(),
            sandbox: PathBuf::from("/w/sb"),
            user: None,
            objects: None,
            volumes: Vec::new(),
        };
        let env = task_environment(&spec);
        let get = |k: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("GREETING"), Some("hi"));
        assert_eq!(get("PORT0"), Some("31000"));
        assert_eq!(get("PORT2"), Some("31005"));
        assert_eq!(get("PORT"), Some("31000"));
        assert_eq!(get("PORTS"), Some("31000,31001,31005"));
        assert_eq!(get("STRATA_TASK_ID"), Some("t1"));
        assert_eq!(get("STRATA_SANDBOX"), Some("/w/sb"));

        // A framework that numbers the ports itself keeps its order.
        let mut spec = spec;
        for (k, v) in [("PORT0", "31005"), ("PORT1", "31000"), ("PORT", "31005")] {
            spec.command.environment.insert(k.into(), v.into());
        }
        let env = task_environment(&spec);
        let get = |k: &str| {
            env.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("PORT0"), vec!["31005"]);
        assert_eq!(get("PORT1"), vec!["31000"]);
        assert!(get("PORT2").is_empty() && get("PORTS").is_empty());
    }
}
