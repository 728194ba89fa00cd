//! The Docker containerizer: each task is a container on the local Docker engine,
//! driven through its Engine API (bollard) over the unix socket.
//!
//! ```text
//! new:    connect (negotiate the API version)
//! recover: inspect the checkpointed containers ─▶ re-attach (wait, logs from where
//!         they stopped) ─▶ remove containers labelled with this agent's id that no
//!         task claims (orphans of an earlier run)
//! launch: sandbox ─▶ image (pull policy) ─▶ create strata-<agent>-<container>
//!         (labels, env, /mnt/sandbox, network, ports, cpus/mem limits, init)
//!         ─▶ start ─▶ follow `logs` into the sandbox's stdout / stderr
//! wait:   /wait ─▶ inspect (ExitCode, OOMKilled) ─▶ drain the logs ─▶ remove after
//!         --docker-remove-delay (the reaper task)
//! kill:   docker stop -t grace (SIGTERM to the container's init, which forwards it;
//!         SIGKILL when the grace ends) ─▶ docker kill if stop failed
//! exec:   docker exec /bin/sh -c CMD in /mnt/sandbox (COMMAND health checks) ─▶ its
//!         exit code; dropped before the end: its process is SIGKILLed by host pid
//! ```
//!
//! When the engine is unreachable, launches fail with a message that names the socket;
//! a wait that loses the engine for longer than [`ENGINE_LOSS_GRACE`] reports the task
//! failed. Process tasks are not affected (the [`super::ComposingContainerizer`] routes
//! them elsewhere).
//!
//! Containers run with Docker's init (`--init`) as PID 1: signals reach the command
//! and zombies are reaped. A command killed by signal N makes the container exit
//! with 128 + N, which [`exit_kind`] reads back as a signal.
//!
//! The task's user: the image decides who runs the command, unless the task's
//! command names a user (`CommandInfo.user`, a name or uid the image knows), which is
//! then the container's `User`. Neither the framework's user nor the agent's
//! `--default-user` is applied inside the container (they name host users); the
//! sandbox on the host belongs to the task's host user (the command's, else the
//! framework's, else `--default-user`) when that user exists here, else to the agent.
//! `usage` is not implemented yet.
//!
//! Host paths (issue 14): a volume's `host_path` is mounted only when it is at or
//! below one of `--docker-volume-allow` (empty by default: no host paths at all),
//! after `..` is refused and symlinks are resolved (the resolved path is what is
//! mounted, so a link planted below an allowed path cannot reach out of it). `/`, the
//! engine's socket and any directory holding it are never mounted, and listing them
//! stops the agent at start. A refused volume fails the task with the path and the
//! flag in its message. The log copier appends to the sandbox's `stdout` / `stderr`
//! only through [`sandbox::open_for_output`]: never through a symlink, only to a
//! regular file with one link, so a container cannot make the agent write elsewhere.
//!
//! Configs and secrets (issue 16, [`crate::objects`]): secret files and the secret
//! variables' file `.strata-env` are staged on a tmpfs that the container binds
//! read-only at `/run/secrets`; once the container has started the agent detaches
//! the tmpfs from the host (the container's bind, rprivate as Docker makes it, keeps
//! it until the container is removed). A shell command then starts with `.
//! /run/secrets/.strata-env`, which exports the secret variables: they never reach
//! the engine, which keeps a container's `Env` on disk. Secret files are 0400, owned
//! by the container's user when the command names it by number (`uid[:gid]`), else
//! by root: a container running as a named non-root user of its image cannot read
//! them (give the user as a number). Config variables go into the container's `Env`;
//! config files of relative paths into the sandbox (0444, the sandbox's owner's),
//! of absolute paths into `WORK_DIR/runtime/docker-configs/<container>/` on the host,
//! bound read-only at that path and removed when the container has ended.
//!
//! Docker named volumes (issue 17): a volume with `docker_volume` is the engine's
//! volume of that name, bound at its container path with its mode. At launch the agent
//! inspects it and, when the engine has none of that name, creates it (driver
//! `driver`, else `local`; labels [`LABEL_VOLUME`]`=true` and
//! [`LABEL_VOLUME_AGENT`]`=<agent id>`) before creating the container, so the engine
//! never makes it unlabelled on its own. A volume that exists (made by the user, or by
//! an earlier task here or on another agent of this engine) is used as it is; only a
//! `driver` that differs from the existing volume's fails the task. Strata never
//! removes a named volume: containers are removed without `v` (and the engine never
//! removes named volumes with a container anyway), recovery and hygiene leave volumes
//! alone, and a launch that fails after creating one keeps it for the next. The
//! agent's `GET /volumes` lists them ([`list_volumes`]).
//!
//! Recovery (an agent that died and restarted): the containers keep running without
//! the agent. `recover` inspects each checkpointed container by name: one that exists
//! (running or exited) is taken back, its output copied again into the sandbox from
//! where the previous run stopped (the engine's log is read from its start and the
//! bytes already in `stdout` / `stderr` are skipped: exact, no duplicates, as long as
//! the engine keeps the whole log), and `wait` reports its end (exit code, OOM) as
//! usual; one that is gone is reported with an unknown outcome. Then the containers
//! labelled with this agent's id that no task claims are removed.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ExecConfig, HostConfig, HostConfigLogConfig, PortBinding, PortMap,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
    ListVolumesOptions, LogsOptions, RemoveContainerOptions, StopContainerOptions,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use strata_proto::container::SANDBOX_MOUNT;
use strata_proto::objects::{DOCKER_SECRET_ENV_FILE, DOCKER_SECRETS_DIR};
use strata_proto::v1::{self, ObjectKind, TaskStatusReason, docker_info, volume};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::objects::{self, Staging, TaskObjects};
use crate::sandbox;

use super::{
    BoxFuture, ContainerError, ContainerHandle, ContainerId, Containerizer, ExitKind, LaunchSpec,
    Limitation, Recovery, Termination, task_environment,
};

/// Where config files of absolute container paths are kept, under the runtime dir.
const CONFIGS_RUNTIME_DIR: &str = "docker-configs";

/// Who a Docker task's secret files belong to: the container's user when the command
/// names it by number (`uid` or `uid:gid`), else root (an image's named user has no
/// meaning on the host). Files are 0400: a container that runs as a named non-root
/// user cannot read them unless the command gives the user as a number.
pub fn container_owner(user: &str) -> (u32, u32) {
    let mut parts = user.splitn(2, ':');
    let uid = parts.next().and_then(|u| u.parse::<u32>().ok());
    let gid = parts.next().and_then(|g| g.parse::<u32>().ok());
    match uid {
        Some(uid) => (uid, gid.unwrap_or(uid)),
        None => (0, 0),
    }
}

/// The engine's socket when none is given.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Label keys on every container the agent creates.
pub const LABEL_AGENT: &str = "strata.agent_id";
pub const LABEL_FRAMEWORK: &str = "strata.framework_id";
pub const LABEL_TASK: &str = "strata.task_id";
pub const LABEL_CONTAINER: &str = "strata.container_id";
/// Label keys on every Docker named volume the agent creates: `strata.volume=true`
/// and `strata.agent_id=<the id of the agent that created it>` (the label its containers carry too).
pub const LABEL_VOLUME: &str = "strata.volume";
pub const LABEL_VOLUME_AGENT: &str = LABEL_AGENT;
/// Label key on a container that mounts named volumes: their names, comma separated
/// (names have no commas), so `/volumes` tells them from the image's anonymous ones.
pub const LABEL_CONTAINER_VOLUMES: &str = "strata.docker_volumes";
/// The driver of a named volume the agent creates when the task names none.
pub const DEFAULT_VOLUME_DRIVER: &str = "local";
/// Container names start with this, then the agent id and the container id.
pub const NAME_PREFIX: &str = "strata-";

/// How long connecting to the engine (and negotiating the API version) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of ordinary requests (a pull or a stop may take longer; see their callers).
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// How long a wait keeps retrying an engine that stopped answering before it gives
/// the task up as failed.
pub const ENGINE_LOSS_GRACE: Duration = Duration::from_secs(10);
/// How long `wait` lets the log follower copy what is left after the container ended.
const LOG_DRAIN: Duration = Duration::from_secs(5);
/// How long an exec whose output has ended may take to report its exit code.
const EXEC_EXIT_WAIT: Duration = Duration::from_secs(5);
/// CFS period for the cpu limit (Mesos and Docker use 100 ms).
const CPU_PERIOD_US: i64 = 100_000;

/// The usual places of the engine's socket: never mounted into a container, whatever
/// `--docker-socket` says.
pub const KNOWN_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

/// Settings of the Docker containerizer (`--docker-socket`, `--docker-remove-delay`,
/// `--docker-volume-allow`).
#[derive(Debug, Clone, PartialEq)]
pub struct DockerOptions {
    /// The engine's unix socket.
    pub socket: PathBuf,
    /// How long an ended container is kept (for `docker logs`/`inspect`) before the
    /// agent removes it.
    pub remove_delay: Duration,
    /// Host paths (absolute directories or files) that tasks' volumes may mount: a
    /// volume's `host_path` must be one of them or below one. Empty (the default): no
    /// host path at all. Checked at start by [`DockerOptions::check`].
    pub volume_allow: Vec<PathBuf>,
}

impl Default for DockerOptions {
    fn default() -> Self {
        DockerOptions {
            socket: PathBuf::from(DEFAULT_SOCKET),
            remove_delay: Duration::from_secs(60),
            volume_allow: Vec::new(),
        }
    }
}

impl DockerOptions {
    /// Checks `volume_allow`: absolute paths without `..`, none of them `/`, the
    /// engine's socket or a directory that holds it. Says which entry is wrong and why.
    pub fn check(&self) -> Result<(), String> {
        for entry in &self.volume_allow {
            let normal = normalize(entry).map_err(|why| format!("'{}' {why}", entry.display()))?;
            let resolved = resolve(&normal);
            for p in [&normal, &resolved] {
                if let Some(why) = self.forbidden(p) {
                    return Err(format!("'{}' is never allowed: {why}", entry.display()));
                }
            }
        }
        Ok(())
    }

    /// Why a host path may never be mounted (`None`: it may be, if allowed).
    fn forbidden(&self, path: &Path) -> Option<String> {
        if path == Path::new("/") {
            return Some("it is the host's root".into());
        }
        for socket in self.sockets() {
            if socket.starts_with(path) {
                return Some(if socket == path {
                    "it is the Docker engine's socket".into()
                } else {
                    format!("it holds the Docker engine's socket {}", socket.display())
                });
            }
        }
        None
    }

    /// The engine's socket, its usual places, and where they resolve to.
    fn sockets(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = KNOWN_SOCKETS.iter().map(PathBuf::from).collect();
        out.push(normalize(&self.socket).unwrap_or_else(|_| self.socket.clone()));
        let resolved: Vec<PathBuf> = out.iter().map(|p| resolve(p)).collect();
        out.extend(resolved);
        out
    }

    /// The path to mount for a task's volume whose host path is `host_path`, or why it
    /// is refused (the message names the path and the flag).
    pub fn allowed_host_path(&self, host_path: &str) -> Result<PathBuf, String> {
        let refuse = |why: String| {
            let allowed = if self.volume_allow.is_empty() {
                "none are allowed on this agent".to_string()
            } else {
                let list: Vec<String> = self
                    .volume_allow
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                format!("allowed: {}", list.join(","))
            };
            format!(
                "volume host path '{host_path}' is refused: {why} (host paths must be listed in the agent's --docker-volume-allow; {allowed})"
            )
        };
        let normal = normalize(Path::new(host_path)).map_err(|why| refuse(why.into()))?;
        let resolved = resolve(&normal);
        for p in [&normal, &resolved] {
            if let Some(why) = self.forbidden(p) {
                return Err(refuse(why));
            }
        }
        let under_allowed = |p: &Path| {
            self.volume_allow.iter().any(|a| {
                let a = normalize(a).unwrap_or_else(|_| a.clone());
                p.starts_with(&a) || p.starts_with(resolve(&a))
            })
        };
        if !under_allowed(&normal) {
            return Err(refuse("it is not under an allowed path".into()));
        }
        if !under_allowed(&resolved) {
            return Err(refuse(format!(
                "it resolves (through a symlink) to {}, which is not under an allowed path",
                resolved.display()
            )));
        }
        Ok(resolved)
    }
}

/// `path` without `.` components, or why it is not acceptable (relative, or with a
/// `..` component).
fn normalize(path: &Path) -> Result<PathBuf, &'static str> {
    use std::path::Component;
    if !path.is_absolute() {
        return Err("is not an absolute path");
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => return Err("contains '..'"),
            Component::Prefix(_) => return Err("is not a unix path"),
        }
    }
    Ok(out)
}

/// `path` (normalized) with the symlinks of its longest existing part resolved; the
/// part that does not exist yet (Docker creates it) is kept as it is.
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// What a restarted agent needs to find a Docker task again; checkpointed in its
/// [`ContainerHandle`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerRecovery {
    /// The container's name (`strata-<agent>-<container>`, with the agent id of the
    /// launch).
    pub name: String,
    /// The task's sandbox, where its output goes.
    pub sandbox: PathBuf,
    /// The memory limit, for the OOM message.
    pub mem_mib: Option<f64>,
}

/// One container this agent runs.
struct Entry {
    /// The container's name (`strata-<agent>-<container>`), which the engine accepts
    /// wherever an id is expected.
    name: String,
    /// Copies the container's output into the sandbox; awaited by `wait`.
    logs: Option<JoinHandle<()>>,
    /// The memory limit, for the OOM message.
    mem_mib: Option<f64>,
    /// Set once `wait` runs, so a second wait is refused.
    waited: bool,
    /// Recovered from a checkpoint but gone from the engine: its end is unknown.
    missing: bool,
}

/// Runs tasks as Docker containers. See the module docs.
pub struct DockerContainerizer {
    options: DockerOptions,
    /// The connected client; `None` until the engine first answers. The lock is held
    /// only to clone or store it, never across an `.await`.
    client: Mutex<Option<Docker>>,
    /// Whether the engine answered when the containerizer was created.
    available_at_start: bool,
    /// The agent id at start: containers labelled with it that no task claims are
    /// removed by `recover`.
    agent_id: String,
    /// Short critical sections only; never held across an `.await`.
    containers: Mutex<HashMap<ContainerId, Entry>>,
    /// Ended containers to remove after `remove_delay`, handed to the reaper. Unbounded:
    /// one small message per ended container, consumed as fast as timers fire.
    removals: mpsc::UnboundedSender<(String, tokio::time::Instant)>,
    /// The reaper task; owned here and stopped when the containerizer is dropped
    /// (containers it had not removed yet are orphans the next start removes).
    reaper: JoinHandle<()>,
    /// The agent's runtime dir (`WORK_DIR/runtime`): secrets are staged below it and
    /// config files for absolute paths in containers are kept in its `docker/`.
    /// `None`: tasks with configs or secrets that need it fail to launch.
    runtime_dir: Option<PathBuf>,
}

impl Drop for DockerContainerizer {
    fn drop(&mut self) {
        self.reaper.abort();
    }
}

impl DockerContainerizer {
    /// Connects to the engine at `options.socket`. `agent_id` is the id this agent had
    /// in an earlier run (empty: none): [`Containerizer::recover`] removes the
    /// containers carrying its label that no task claims. When the engine does not
    /// answer the containerizer is created anyway ([`available`](Self::available) is
    /// false) and every launch retries the connection. Must run inside a tokio runtime.
    pub async fn new(options: DockerOptions, agent_id: &str) -> DockerContainerizer {
        let (removals, removals_rx) = mpsc::unbounded_channel();
        let client = connect(&options.socket).await;
        let available_at_start = client.is_ok();
        let reaper = tokio::spawn(reap(
            client.as_ref().ok().cloned(),
            options.socket.clone(),
            removals_rx,
        ));
        let this = DockerContainerizer {
            options,
            client: Mutex::new(client.as_ref().ok().cloned()),
            available_at_start,
            agent_id: agent_id.to_string(),
            containers: Mutex::new(HashMap::new()),
            removals,
            reaper,
            runtime_dir: None,
        };
        match &client {
            Ok(docker) => {
                tracing::info!(socket = %this.options.socket.display(), api = %docker.client_version(), "Docker engine answers");
            }
            Err(e) => {
                tracing::warn!(socket = %this.options.socket.display(), error = %e, "the Docker engine does not answer; Docker tasks will fail until it does");
            }
        }
        this
    }

    /// Stages secrets and keeps config files of absolute container paths under `dir`
    /// (the agent's `WORK_DIR/runtime`).
    pub fn with_runtime_dir(mut self, dir: PathBuf) -> DockerContainerizer {
        self.runtime_dir = Some(dir);
        self
    }

    /// Where the config files of a container's absolute paths are kept on the host
    /// (removed when the container has ended).
    fn config_dir(&self, id: &ContainerId) -> Option<PathBuf> {
        self.runtime_dir
            .as_ref()
            .map(|d| d.join(CONFIGS_RUNTIME_DIR).join(&id.0))
    }

    /// Removes the config files kept for container `id`.
    fn remove_config_dir(&self, id: &ContainerId) {
        if let Some(dir) = self.config_dir(id)
            && let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(container = %id, dir = %dir.display(), error = %e, "cannot remove the container's config files");
        }
    }

    /// Delivers a task's configs and secrets (see the module docs): config files of
    /// relative paths into the sandbox, of absolute paths into [`Self::config_dir`]
    /// (bound read-only), secret files and the secret variables' env file onto a
    /// staging tmpfs (bound read-only at `/run/secrets`).
    fn prepare_objects(
        &self,
        spec: &LaunchSpec,
        objects: &TaskObjects,
        owner: sandbox::Owner,
    ) -> Result<(Option<Staging>, Vec<String>), ContainerError> {
        let mut binds = Vec::new();
        objects::write_config_files(objects, &spec.sandbox, owner)
            .map_err(ContainerError::Sandbox)?;
        let absolute: Vec<(&str, &[u8])> = objects
            .files(ObjectKind::Config)
            .filter(|(p, _)| p.starts_with('/'))
            .collect();
        let needs_runtime =
            !absolute.is_empty() || objects.has_secret_files() || objects.has_secret_env();
        if needs_runtime && self.runtime_dir.is_none() {
            return Err(ContainerError::Docker(
                "configs and secrets need the agent's runtime dir (WORK_DIR/runtime)".into(),
            ));
        }
        if !absolute.is_empty()
            && let Some(dir) = self.config_dir(&spec.container_id)
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| {
                    ContainerError::Sandbox(format!("cannot create {}: {e}", dir.display()))
                })?;
            for (i, (path, data)) in absolute.iter().enumerate() {
                let name = format!("config-{i}");
                objects::write_file_at(&dir, &name, data, objects::CONFIG_FILE_MODE, None)
                    .map_err(|e| {
                        ContainerError::Sandbox(format!("cannot write config file '{path}': {e}"))
                    })?;
                binds.push(format!("{}:{path}:ro", dir.join(name).display()));
            }
        }
        if !objects.has_secret_files() && !objects.has_secret_env() {
            return Ok((None, binds));
        }
        let env_file = objects.secret_env_file();
        let mut files: Vec<(&str, &[u8])> = objects.files(ObjectKind::Secret).collect();
        if objects.has_secret_env() {
            files.push((DOCKER_SECRET_ENV_FILE, env_file.as_bytes()));
        }
        let base = self
            .runtime_dir
            .as_ref()
            .map(|d| d.join(objects::STAGING_DIR))
            .unwrap_or_default();
        let staging = Staging::create(
            &base,
            &spec.container_id,
            &files,
            container_owner(&spec.command.user),
        )
        .map_err(ContainerError::Docker)?;
        binds.push(format!(
            "{}:{DOCKER_SECRETS_DIR}:ro",
            staging.path().display()
        ));
        Ok((Some(staging), binds))
    }

    /// Whether the engine answered when the containerizer was created: the agent
    /// advertises Docker only then.
    pub fn available(&self) -> bool {
        self.available_at_start
    }

    /// Kills and removes every container labelled with `agent_id` whose container id
    /// is not in `keep`. Returns how many it removed.
    pub async fn remove_orphans(
        &self,
        docker: &Docker,
        agent_id: &str,
        keep: &HashSet<ContainerId>,
    ) -> Result<usize, ContainerError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_AGENT}={agent_id}")],
        )]);
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.engine_error("cannot list containers", &e))?;
        let mut removed = 0;
        for c in list {
            let labels = c.labels.unwrap_or_default();
            if labels
                .get(LABEL_CONTAINER)
                .is_some_and(|id| keep.contains(&ContainerId(id.clone())))
            {
                continue;
            }
            let Some(id) = c.id else { continue };
            tracing::info!(container = %id, task_id = labels.get(LABEL_TASK).map(String::as_str).unwrap_or(""), "removing an orphaned container of an earlier run");
            match docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        // Volumes are kept (named ones are never Strata's to remove).
                        v: false,
                        ..Default::default()
                    }),
                )
                .await
            {
                Ok(()) => removed += 1,
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "cannot remove an orphaned container")
                }
            }
        }
        Ok(removed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContainerId, Entry>> {
        // Single inserts and removes: a poisoned map is still consistent.
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client, connecting (again) when there is none yet.
    async fn client(&self) -> Result<Docker, ContainerError> {
        let cached = self
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(docker) = cached {
            return Ok(docker);
        }
        let docker = connect(&self.options.socket)
            .await
            .map_err(|e| ContainerError::Docker(e.to_string()))?;
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(docker.clone());
        Ok(docker)
    }

    /// A user-facing message for a failed engine request: the engine's own message
    /// when it answered, else that it could not be reached.
    fn engine_error(&self, what: &str, e: &EngineError) -> ContainerError {
        ContainerError::Docker(describe_engine_error(what, e, &self.options.socket))
    }

    async fn launch_inner(&self, spec: LaunchSpec) -> Result<ContainerHandle, ContainerError> {
        strata_proto::container::validate(&spec.task, &spec.resources)
            .map_err(|e| ContainerError::Docker(e.message))?;
        let container = spec.task.container.clone().unwrap_or_default();
        let docker_info = container.docker.clone().ok_or_else(|| {
            ContainerError::Docker("the task has no container.docker (no image)".into())
        })?;
        let mut volumes = container.volumes.clone();
        // Host paths only: a named volume is the engine's (created below).
        for v in volumes.iter_mut().filter(|v| v.docker_volume.is_empty()) {
            let allowed = self
                .options
                .allowed_host_path(&v.host_path)
                .map_err(ContainerError::Docker)?;
            v.host_path = allowed.display().to_string();
        }
        // The host user the task's sandbox belongs to, when there is one here (the
        // container's user is the image's, or the command's, which the host may not know).
        let owner = match super::process::resolve_user(spec.user.as_deref()) {
            Ok(user) => super::process::owner_of(user.as_ref()),
            Err(e) => {
                tracing::debug!(error = %e, "the sandbox of the Docker task stays the agent's");
                None
            }
        };
        // The files are opened again by the log copier (and after a restart).
        sandbox::prepare(&spec.sandbox, owner)
            .await
            .map_err(|e| ContainerError::Sandbox(e.to_string()))?;
        // Persistent volumes (issue 17): their mount points in the sandbox (the
        // sandbox's owner's, made without following links), their roots given to the
        // task's host user, and two binds each (see `persistent_volume_binds`).
        crate::volumes::prepare_mounts(&spec.volumes, &spec.sandbox, owner)
            .map_err(ContainerError::Sandbox)?;
        let persistent_binds = persistent_volume_binds(&spec.volumes);
        // Docker takes a relative bind source for a named volume: make it absolute.
        let sandbox_dir = std::fs::canonicalize(&spec.sandbox).map_err(|e| {
            ContainerError::Sandbox(format!("cannot resolve {}: {e}", spec.sandbox.display()))
        })?;
        let docker = self.client().await?;
        let image = image_reference(docker_info.image.trim());
        self.ensure_image(&docker, &image, &docker_info).await?;
        // Named volumes before the container: the engine would make a missing one
        // itself, without our labels.
        for v in volumes.iter().filter(|v| !v.docker_volume.is_empty()) {
            self.ensure_volume(&docker, v, &spec.agent_id).await?;
        }

        // Configs and secrets (issue 16): the staging tmpfs is detached from the host
        // when this returns (the started container keeps its bind of it).
        let (staging, object_binds) = match spec.objects.as_deref() {
            Some(objects) => match self.prepare_objects(&spec, objects, owner) {
                Ok(prepared) => prepared,
                Err(e) => {
                    self.remove_config_dir(&spec.container_id);
                    return Err(e);
                }
            },
            None => (None, Vec::new()),
        };
        let name = container_name(&spec.agent_id, &spec.container_id);
        let mut body = container_body(&spec, &docker_info, &volumes, &sandbox_dir, &image);
        if let Some(host) = body.host_config.as_mut() {
            let binds = host.binds.get_or_insert_with(Vec::new);
            binds.extend(persistent_binds);
            binds.extend(object_binds);
        }
        docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| {
                self.remove_config_dir(&spec.container_id);
                self.engine_error(
                    &format!("cannot create the container of image '{image}'"),
                    &e,
                )
            })?;
        if let Err(e) = docker.start_container(&name, None).await {
            let err = self.engine_error("cannot start the container", &e);
            remove_now(&docker, &name).await;
            self.remove_config_dir(&spec.container_id);
            return Err(err);
        }
        // Started: the container's mount namespace holds the secrets now.
        drop(staging);
        tracing::debug!(container = %spec.container_id, name = %name, %image, task_id = %spec.task.task_id, "container started");
        let logs = tokio::spawn(follow_logs(
            docker.clone(),
            name.clone(),
            spec.sandbox.clone(),
            false,
        ));
        let mem = spec.resources.mem();
        let mem_mib = (!mem.is_zero()).then(|| mem.as_f64());
        self.lock().insert(
            spec.container_id.clone(),
            Entry {
                name: name.clone(),
                logs: Some(logs),
                mem_mib,
                waited: false,
                missing: false,
            },
        );
        Ok(ContainerHandle {
            id: spec.container_id,
            pid: None,
            recovery: Some(Recovery::Docker(DockerRecovery {
                name,
                sandbox: spec.sandbox,
                mem_mib,
            })),
        })
    }

    /// Makes sure `image` is on the engine, pulling it as the pull policy says.
    async fn ensure_image(
        &self,
        docker: &Docker,
        image: &str,
        info: &v1::DockerInfo,
    ) -> Result<(), ContainerError> {
        let policy = docker_info::PullPolicy::try_from(info.pull_policy).unwrap_or_default();
        let always = info.force_pull || policy == docker_info::PullPolicy::Always;
        if !always {
            match docker.inspect_image(image).await {
                Ok(_) => return Ok(()),
                Err(e) if status_of(&e) == Some(404) => {
                    if policy == docker_info::PullPolicy::Never {
                        return Err(ContainerError::Docker(format!(
                            "image '{image}' is not on this agent and the pull policy is NEVER: load it (docker pull / docker load) or allow pulls"
                        )));
                    }
                }
                Err(e) => {
                    return Err(self.engine_error(&format!("cannot inspect image '{image}'"), &e));
                }
            }
        }
        tracing::info!(%image, "pulling image");
        let mut pull = docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(image.to_string()),
                ..Default::default()
            }),
            None,
            None,
        );
        while let Some(progress) = pull.next().await {
            if let Err(e) = progress {
                return Err(self.engine_error(&format!("cannot pull image '{image}'"), &e));
            }
        }
        Ok(())
    }

    /// Makes sure the named volume of `v` exists: used as it is when the engine has
    /// it (refused only when `v.driver` names another driver), else created with the
    /// driver and this agent's labels. Never removed by Strata.
    async fn ensure_volume(
        &self,
        docker: &Docker,
        v: &v1::Volume,
        agent_id: &str,
    ) -> Result<(), ContainerError> {
        let name = v.docker_volume.as_str();
        match docker.inspect_volume(name).await {
            Ok(existing) => {
                if !v.driver.is_empty() && existing.driver != v.driver {
                    return Err(ContainerError::Docker(format!(
                        "Docker volume '{name}' exists with driver '{}', not '{}': use the volume's driver or another name",
                        existing.driver, v.driver
                    )));
                }
                tracing::debug!(volume = %name, driver = %existing.driver, "using an existing Docker volume");
                Ok(())
            }
            Err(e) if status_of(&e) == Some(404) => {
                let driver = if v.driver.is_empty() {
                    DEFAULT_VOLUME_DRIVER
                } else {
                    v.driver.as_str()
                };
                let labels = HashMap::from([
                    (LABEL_VOLUME.to_string(), "true".to_string()),
                    (LABEL_VOLUME_AGENT.to_string(), agent_id.to_string()),
                ]);
                // Two launches racing here both succeed: the engine answers a create of
                // an existing name and driver with that volume.
                let created = docker
                    .create_volume(VolumeCreateRequest {
                        name: Some(name.to_string()),
                        driver: Some(driver.to_string()),
                        labels: Some(labels),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| {
                        self.engine_error(
                            &format!("cannot create Docker volume '{name}' (driver '{driver}')"),
                            &e,
                        )
                    })?;
                tracing::info!(volume = %name, %driver, mountpoint = %created.mountpoint, "created a Docker volume (Strata never removes it)");
                Ok(())
            }
            Err(e) => Err(self.engine_error(&format!("cannot inspect Docker volume '{name}'"), &e)),
        }
    }

    async fn wait_inner(&self, id: ContainerId) -> Result<Termination, ContainerError> {
        let (name, mem_mib, missing) = {
            let mut containers = self.lock();
            let entry = containers
                .get_mut(&id)
                .ok_or_else(|| ContainerError::NotFound(id.clone()))?;
            if entry.waited {
                return Err(ContainerError::AlreadyWaited(id));
            }
            entry.waited = true;
            (entry.name.clone(), entry.mem_mib, entry.missing)
        };
        if missing {
            self.lock().remove(&id);
            self.remove_config_dir(&id);
            return Err(ContainerError::EndedWhileDown(format!(
                "the task ended while the agent was down and its outcome is unknown: its container {name} no longer exists"
            )));
        }
        let result = self.wait_for_end(&name).await;
        self.remove_config_dir(&id);
        let logs = self.lock().remove(&id).and_then(|e| e.logs);
        if let Some(mut logs) = logs
            && tokio::time::timeout(LOG_DRAIN, &mut logs).await.is_err()
        {
            tracing::warn!(container = %id, "the container's output did not end; stopped copying it");
            logs.abort();
        }
        let state = match result {
            Ok(state) => state,
            Err(e) => {
                let _ = self.removals.send((name, tokio::time::Instant::now()));
                return Err(e);
            }
        };
        self.schedule_removal(name).await;
        let exit = exit_kind(state.exit_code);
        let limitation = state.oom_killed.then(|| Limitation {
            reason: TaskStatusReason::ReasonContainerLimitationMemory,
            message: match mem_mib {
                Some(mib) => format!(
                    "the container used more than its memory limit of {mib} MiB and was killed ({})",
                    exit.describe()
                ),
                None => format!("the container ran out of memory ({})", exit.describe()),
            },
        });
        Ok(Termination { exit, limitation })
    }

    /// Waits until the container is not running, riding out a short loss of the
    /// engine, and reads how it ended.
    async fn wait_for_end(&self, name: &str) -> Result<EndState, ContainerError> {
        let mut lost_since: Option<Instant> = None;
        loop {
            let attempt = async {
                let docker = self.client().await?;
                let mut wait = docker.wait_container(name, None);
                match wait.next().await {
                    // A non-zero exit comes back as an error carrying the code.
                    Some(Ok(_)) | Some(Err(EngineError::DockerContainerWaitError { .. })) => {}
                    Some(Err(e)) if status_of(&e) == Some(404) => {
                        return Err(ContainerError::NotFound(ContainerId(name.to_string())));
                    }
                    Some(Err(e)) => {
                        return Err(self.engine_error("cannot wait for the container", &e));
                    }
                    None => {
                        return Err(ContainerError::Docker(
                            "the engine closed the wait for the container".into(),
                        ));
                    }
                }
                let inspect = docker
                    .inspect_container(name, None)
                    .await
                    .map_err(|e| self.engine_error("cannot inspect the container", &e))?;
                let state = inspect.state.unwrap_or_default();
                Ok::<_, ContainerError>(EndState {
                    exit_code: state.exit_code.unwrap_or(-1),
                    oom_killed: state.oom_killed.unwrap_or(false),
                })
            };
            match attempt.await {
                Ok(state) => return Ok(state),
                Err(ContainerError::NotFound(_)) => {
                    return Err(ContainerError::Docker(format!(
                        "container {name} disappeared (removed outside Strata?)"
                    )));
                }
                Err(e) => {
                    let message = e.to_string();
                    let since = *lost_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= ENGINE_LOSS_GRACE {
                        return Err(ContainerError::Docker(format!(
                            "lost the Docker engine while container {name} ran: {message}"
                        )));
                    }
                    tracing::warn!(container = %name, error = %message, "waiting for the Docker engine to answer again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn schedule_removal(&self, name: String) {
        if self.options.remove_delay.is_zero() {
            if let Ok(docker) = self.client().await {
                remove_now(&docker, &name).await;
            }
            return;
        }
        let at = tokio::time::Instant::now() + self.options.remove_delay;
        let _ = self.removals.send((name, at));
    }

    async fn kill_inner(&self, id: ContainerId, grace: Duration) -> Result<(), ContainerError> {
        let Some(name) = self.lock().get(&id).map(|e| e.name.clone()) else {
            return Ok(()); // already ended and forgotten
        };
        let docker = self.client().await?;
        let seconds = grace.as_secs_f64().ceil().min(f64::from(i32::MAX)) as i32;
        // `docker stop` answers when the container has stopped: give it the grace period.
        let stopper = docker
            .clone()
            .with_timeout(grace + Duration::from_secs(REQUEST_TIMEOUT_SECS));
        tracing::debug!(container = %id, %name, ?grace, "stopping the container");
        let stopped = stopper
            .stop_container(
                &name,
                Some(StopContainerOptions {
                    t: Some(seconds),
                    signal: None,
                }),
            )
            .await;
        match stopped {
            Ok(()) => Ok(()),
            // 304: already stopped; 404: already gone.
            Err(e) if matches!(status_of(&e), Some(304) | Some(404)) => Ok(()),
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "docker stop failed; killing the container");
                match docker
                    .kill_container(&name, Some(KillContainerOptions::default()))
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(e) if matches!(status_of(&e), Some(404) | Some(409)) => Ok(()),
                    Err(e) => Err(self.engine_error("cannot kill the container", &e)),
                }
            }
        }
    }

    /// Takes back the Docker tasks of `handles` (see the module docs), then removes the
    /// containers labelled with this agent's id that none of them claims.
    async fn recover_inner(
        &self,
        handles: Vec<ContainerHandle>,
    ) -> Result<Vec<ContainerId>, ContainerError> {
        let docker = self.client().await.ok();
        let mut recovered = Vec::new();
        for handle in handles {
            let Some(Recovery::Docker(info)) = handle.recovery else {
                continue;
            };
            let id = handle.id;
            let missing = match &docker {
                Some(docker) => match docker.inspect_container(&info.name, None).await {
                    Ok(_) => false,
                    Err(e) if status_of(&e) == Some(404) => true,
                    // `wait` rides out an engine that does not answer, then fails.
                    Err(e) => {
                        tracing::warn!(container = %id, name = %info.name, error = %e, "cannot inspect a recovered container");
                        false
                    }
                },
                None => false,
            };
            tracing::info!(container = %id, name = %info.name, missing, "recovered a Docker task");
            let logs = match (&docker, missing) {
                (Some(docker), false) => Some(tokio::spawn(follow_logs(
                    docker.clone(),
                    info.name.clone(),
                    info.sandbox.clone(),
                    true,
                ))),
                _ => None,
            };
            self.lock().insert(
                id.clone(),
                Entry {
                    name: info.name,
                    logs,
                    mem_mib: info.mem_mib,
                    waited: false,
                    missing,
                },
            );
            recovered.push(id);
        }
        if let Some(docker) = &docker
            && !self.agent_id.is_empty()
        {
            let keep: HashSet<ContainerId> = recovered.iter().cloned().collect();
            if let Err(e) = self.remove_orphans(docker, &self.agent_id, &keep).await {
                tracing::warn!(error = %e, "cannot remove orphaned containers");
            }
        }
        // Config files of containers no task claims any more.
        if let Some(dir) = self
            .runtime_dir
            .as_ref()
            .map(|d| d.join(CONFIGS_RUNTIME_DIR))
            && let Ok(entries) = std::fs::read_dir(&dir)
        {
            for entry in entries.flatten() {
                let id = ContainerId(entry.file_name().to_string_lossy().into_owned());
                if !recovered.contains(&id) {
                    self.remove_config_dir(&id);
                }
            }
        }
        Ok(recovered)
    }

    /// `docker exec` of `/bin/sh -c command` in the container's sandbox; see
    /// [`Containerizer::exec`].
    async fn exec_inner(
        &self,
        id: ContainerId,
        command: String,
    ) -> Result<ExitKind, ContainerError> {
        let name = self
            .lock()
            .get(&id)
            .map(|e| e.name.clone())
            .ok_or_else(|| ContainerError::NotFound(id.clone()))?;
        let docker = self.client().await?;
        let exec = docker
            .create_exec(
                &name,
                ExecConfig {
                    cmd: Some(vec!["/bin/sh".to_string(), "-c".to_string(), command]),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    working_dir: Some(SANDBOX_MOUNT.to_string()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.engine_error("cannot exec in the container", &e))?;
        let mut guard = ExecGuard {
            docker: Some(docker.clone()),
            exec_id: exec.id.clone(),
        };
        let started = docker
            .start_exec(
                &exec.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| self.engine_error("cannot start the exec", &e))?;
        if let StartExecResults::Attached { mut output, .. } = started {
            // The output is not kept; its end is the command's end.
            while let Some(chunk) = output.next().await {
                if chunk.is_err() {
                    break;
                }
            }
        }
        // The engine may take a moment to record the exit code after the stream ends.
        let deadline = Instant::now() + EXEC_EXIT_WAIT;
        loop {
            let inspect = docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| self.engine_error("cannot inspect the exec", &e))?;
            if inspect.running != Some(true)
                && let Some(code) = inspect.exit_code
            {
                guard.docker = None;
                return Ok(exit_kind(code));
            }
            if Instant::now() >= deadline {
                return Err(ContainerError::Docker(
                    "the exec's output ended but the engine reports no exit code".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Kills the process of an exec that is dropped before it ended (a health check that
/// ran out of time): the engine has no API to stop an exec, so the agent SIGKILLs its
/// host pid, best effort.
struct ExecGuard {
    /// `None` once the exec has ended.
    docker: Option<Docker>,
    exec_id: String,
}

impl Drop for ExecGuard {
    fn drop(&mut self) {
        let Some(docker) = self.docker.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let exec_id = std::mem::take(&mut self.exec_id);
        runtime.spawn(async move {
            match docker.inspect_exec(&exec_id).await {
                Ok(inspect) if inspect.running == Some(true) => {
                    if let Some(pid) = inspect.pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 0)
                        && let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
                    {
                        tracing::warn!(exec = %exec_id, pid, error = %e, "cannot stop a health check command in a container");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(exec = %exec_id, error = %e, "cannot inspect an abandoned exec"),
            }
        });
    }
}

impl Containerizer for DockerContainerizer {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<ContainerHandle, ContainerError>> {
        Box::pin(self.launch_inner(spec))
    }

    fn wait(&self, id: ContainerId) -> BoxFuture<'_, Result<Termination, ContainerError>> {
        Box::pin(self.wait_inner(id))
    }

    fn kill(&self, id: ContainerId, grace: Duration) -> BoxFuture<'_, Result<(), ContainerError>> {
        Box::pin(self.kill_inner(id, grace))
    }

    fn recover(
        &self,
        handles: Vec<ContainerHandle>,
    ) -> BoxFuture<'_, Result<Vec<ContainerId>, ContainerError>> {
        Box::pin(self.recover_inner(handles))
    }

    fn exec(
        &self,
        id: ContainerId,
        command: String,
    ) -> BoxFuture<'_, Result<ExitKind, ContainerError>> {
        Box::pin(self.exec_inner(id, command))
    }
}

/// How a container ended, from `inspect`.
#[derive(Debug, Default)]
struct EndState {
    exit_code: i64,
    oom_killed: bool,
}

/// Connects to the engine's unix socket and settles on an API version both speak
/// (Debian's 20.10 engine speaks 1.41; bollard defaults to newer).
pub async fn connect(socket: &Path) -> Result<Docker, ConnectError> {
    let path = socket.display().to_string();
    let docker =
        Docker::connect_with_unix(&path, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            .map_err(|e| ConnectError {
                socket: path.clone(),
                reason: e.to_string(),
            })?;
    match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(ConnectError {
            socket: path,
            reason: e.to_string(),
        }),
        Err(_) => Err(ConnectError {
            socket: path,
            reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
        }),
    }
}

/// A Docker named volume as the agent's `GET /volumes` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedVolume {
    pub name: String,
    pub driver: String,
    /// Where the engine keeps its data on this host.
    pub mountpoint: String,
    /// When the engine created it, as the engine says it (RFC 3339; empty when it
    /// does not say).
    pub created_at: String,
    /// Whether this agent created it (labelled `strata.agent_id=<this agent's id>`);
    /// false: it existed before (the user's, or another agent's) and a task here
    /// mounts it now.
    pub created_by_agent: bool,
    /// The volume's labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The tasks whose running containers mount it now.
    pub tasks: Vec<VolumeUser>,
}

/// A running task that mounts a named volume.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolumeUser {
    pub framework_id: String,
    pub task_id: String,
    /// Where the volume is mounted in the task's container.
    pub container_path: String,
    pub read_only: bool,
}

/// The named volumes of agent `agent_id` on the engine: those it created (labelled
/// with its id) and those its running containers mount now, each with the tasks
/// using it, sorted by name. The error is a message for the caller.
pub async fn list_volumes(
    docker: &Docker,
    socket: &Path,
    agent_id: &str,
) -> Result<Vec<NamedVolume>, String> {
    let failed = |what: &str, e: &EngineError| describe_engine_error(what, e, socket);
    // Who mounts what now: the running containers of this agent, and of their mounts
    // only the named volumes their task asked for (not an image's anonymous ones).
    let running = docker
        .list_containers(Some(ListContainersOptions {
            all: false,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_AGENT}={agent_id}")],
            )])),
            ..Default::default()
        }))
        .await
        .map_err(|e| failed("cannot list containers", &e))?;
    let mut users: std::collections::BTreeMap<String, Vec<VolumeUser>> = Default::default();
    for c in running {
        let labels = c.labels.unwrap_or_default();
        let Some(asked) = labels.get(LABEL_CONTAINER_VOLUMES) else {
            continue;
        };
        let asked: HashSet<&str> = asked.split(',').collect();
        for m in c.mounts.unwrap_or_default() {
            let Some(name) = m.name.filter(|n| asked.contains(n.as_str())) else {
                continue;
            };
            users.entry(name).or_default().push(VolumeUser {
                framework_id: labels.get(LABEL_FRAMEWORK).cloned().unwrap_or_default(),
                task_id: labels.get(LABEL_TASK).cloned().unwrap_or_default(),
                container_path: m.destination.unwrap_or_default(),
                read_only: m.rw == Some(false),
            });
        }
    }
    let mut found = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_VOLUME_AGENT}={agent_id}")],
            )])),
        }))
        .await
        .map_err(|e| failed("cannot list volumes", &e))?
        .volumes
        .unwrap_or_default();
    // Volumes in use that this agent did not create.
    for name in users.keys() {
        if found.iter().any(|v| &v.name == name) {
            continue;
        }
        match docker.inspect_volume(name).await {
            Ok(v) => found.push(v),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(failed(&format!("cannot inspect volume '{name}'"), &e)),
        }
    }
    let mut out: Vec<NamedVolume> = found
        .into_iter()
        .map(|v| NamedVolume {
            created_by_agent: v.labels.get(LABEL_VOLUME_AGENT).map(String::as_str)
                == Some(agent_id),
            tasks: users.remove(&v.name).unwrap_or_default(),
            created_at: v.created_at.map(|d| d.to_string()).unwrap_or_default(),
            labels: v.labels.into_iter().collect(),
            name: v.name,
            driver: v.driver,
            mountpoint: v.mountpoint,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The engine could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the Docker engine at {socket} does not answer ({reason}): is dockerd running? (see --docker-socket)"
)]
pub struct ConnectError {
    pub socket: String,
    pub reason: String,
}

/// The HTTP status of an engine's answer, when it answered.
fn status_of(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn describe_engine_error(what: &str, e: &EngineError, socket: &Path) -> String {
    match e {
        EngineError::DockerResponseServerError { message, .. } => {
            format!("{what}: {}", message.trim())
        }
        EngineError::DockerStreamError { error } => format!("{what}: {}", error.trim()),
        other => format!(
            "{what}: the Docker engine at {} does not answer ({other}): is dockerd running?",
            socket.display()
        ),
    }
}

/// Removes a container now (force: kills it if it runs); failures are logged. Its
/// volumes are kept: a named volume outlives its tasks (see the module docs).
async fn remove_now(docker: &Docker, name: &str) {
    let result = docker
        .remove_container(
            name,
            Some(RemoveContainerOptions {
                force: true,
                v: false,
                ..Default::default()
            }),
        )
        .await;
    match result {
        Ok(()) => tracing::debug!(%name, "container removed"),
        Err(e) if status_of(&e) == Some(404) => {}
        Err(e) => tracing::warn!(%name, error = %e, "cannot remove the container"),
    }
}

/// The reaper: removes ended containers when their delay is over. Ends when the
/// containerizer drops its sender (or aborts it).
async fn reap(
    mut docker: Option<Docker>,
    socket: PathBuf,
    mut removals: mpsc::UnboundedReceiver<(String, tokio::time::Instant)>,
) {
    // Due times only grow by a constant delay, so a queue in arrival order is sorted.
    let mut queue: std::collections::VecDeque<(String, tokio::time::Instant)> = Default::default();
    loop {
        let next_due = queue.front().map(|(_, at)| *at);
        tokio::select! {
            received = removals.recv() => match received {
                Some(item) => queue.push_back(item),
                None => return,
            },
            _ = async {
                match next_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                let Some((name, _)) = queue.pop_front() else { continue };
                if docker.is_none() {
                    docker = connect(&socket).await.ok();
                }
                match &docker {
                    Some(d) => remove_now(d, &name).await,
                    None => tracing::warn!(%name, "cannot remove the container: the Docker engine does not answer"),
                }
            }
        }
    }
}

/// Copies the container's stdout and stderr, from its start until it ends, to the
/// sandbox's `stdout` and `stderr` files (appending, as a process task's are).
/// `resume`: a restarted agent takes over from an earlier run, which copied what is
/// already in the files: the engine's log is read again from its start and as many
/// bytes of each stream as the file holds, plus what log rotation dropped from it
/// ([`crate::hygiene::rotated_bytes`]), are skipped.
async fn follow_logs(docker: Docker, name: String, sandbox: PathBuf, resume: bool) {
    // Never through a symlink, only a regular file with one link: a container owns
    // its sandbox and could have put anything there (issue 14).
    let open = |file: sandbox::LogFile| {
        let sandbox = sandbox.clone();
        async move {
            let f = tokio::task::spawn_blocking(move || sandbox::open_for_output(&sandbox, file))
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
            let f = tokio::fs::File::from_std(f);
            let len = f.metadata().await?.len();
            Ok::<_, std::io::Error>((f, len))
        }
    };
    let ((mut out, out_len), (mut err, err_len)) = match (
        open(sandbox::LogFile::Stdout).await,
        open(sandbox::LogFile::Stderr).await,
    ) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(%name, error = %e, "cannot open the sandbox's output files");
            return;
        }
    };
    // Bytes of each stream already in the sandbox, not to be written again.
    let (mut skip_out, mut skip_err) = if resume {
        (
            out_len + crate::hygiene::rotated_bytes(&sandbox, "stdout"),
            err_len + crate::hygiene::rotated_bytes(&sandbox, "stderr"),
        )
    } else {
        (0, 0)
    };
    let mut logs = docker.logs(
        &name,
        Some(LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    while let Some(chunk) = logs.next().await {
        let written = match chunk {
            Ok(bollard::container::LogOutput::StdOut { message })
            | Ok(bollard::container::LogOutput::Console { message }) => {
                let rest = skip(&message, &mut skip_out);
                write_all_flush(&mut out, rest).await
            }
            Ok(bollard::container::LogOutput::StdErr { message }) => {
                let rest = skip(&message, &mut skip_err);
                write_all_flush(&mut err, rest).await
            }
            Ok(bollard::container::LogOutput::StdIn { .. }) => Ok(()),
            Err(e) => {
                tracing::debug!(%name, error = %e, "the container's log stream ended");
                break;
            }
        };
        if let Err(e) = written {
            tracing::warn!(%name, error = %e, "cannot write the container's output to the sandbox");
            break;
        }
    }
}

/// What is left of `data` once the first `*to_skip` bytes (across calls) are dropped.
fn skip<'a>(data: &'a [u8], to_skip: &mut u64) -> &'a [u8] {
    let n = usize::try_from(*to_skip)
        .unwrap_or(usize::MAX)
        .min(data.len());
    *to_skip -= n as u64;
    &data[n..]
}

async fn write_all_flush(file: &mut tokio::fs::File, data: &[u8]) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    file.write_all(data).await?;
    file.flush().await
}

/// `strata-<agent id>-<container id>`, with characters Docker refuses in names
/// replaced by '-'.
pub fn container_name(agent_id: &str, container_id: &ContainerId) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!(
        "{NAME_PREFIX}{}-{}",
        clean(agent_id),
        clean(&container_id.0)
    )
}

/// The image with `:latest` added when it names no tag or digest (a pull of an
/// untagged name would fetch every tag).
pub fn image_reference(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The binds of a task's persistent volumes: each volume's data at
/// `<sandbox mount>/<container_path>` (where a process task sees it) and at
/// `/<container_path>`, read-only when the volume is RO. After the sandbox's own bind,
/// so the one inside it lands on top.
fn persistent_volume_binds(volumes: &[crate::volumes::VolumeMount]) -> Vec<String> {
    let mut out = Vec::with_capacity(volumes.len() * 2);
    for v in volumes {
        let mode = if v.read_only { "ro" } else { "rw" };
        let path = v.container_path.trim_end_matches('/');
        let source = v.host_path.display();
        out.push(format!("{source}:{SANDBOX_MOUNT}/{path}:{mode}"));
        out.push(format!("{source}:/{path}:{mode}"));
    }
    out
}

/// What the engine is asked to create for the task.
fn container_body(
    spec: &LaunchSpec,
    docker: &v1::DockerInfo,
    volumes: &[v1::Volume],
    sandbox_dir: &Path,
    image: &str,
) -> ContainerCreateBody {
    let command = &spec.command;
    let objects = spec.objects.as_deref();
    let (entrypoint, cmd) = if command.shell {
        // Secret variables are set by the shell from the tmpfs, never handed to the
        // engine (validate_task allows them with a shell command only).
        let value = if objects.is_some_and(TaskObjects::has_secret_env) {
            format!(
                ". {DOCKER_SECRETS_DIR}/{DOCKER_SECRET_ENV_FILE}\n{}",
                command.value
            )
        } else {
            command.value.clone()
        };
        (vec!["/bin/sh".to_string(), "-c".to_string()], vec![value])
    } else {
        (vec![command.value.clone()], command.arguments.clone())
    };
    let mut env: Vec<String> = task_environment(spec)
        .into_iter()
        .map(|(k, v)| {
            if k == "STRATA_SANDBOX" {
                format!("{k}={SANDBOX_MOUNT}")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    // Config variables (not secret: the engine keeps `Env` on disk) win over the
    // command's own, never over Strata's.
    if let Some(objects) = objects {
        env.extend(
            objects
                .env(Some(ObjectKind::Config))
                .filter(|(k, _)| !k.starts_with("STRATA_"))
                .map(|(k, v)| format!("{k}={v}")),
        );
    }
    let mut labels = HashMap::from([
        (LABEL_AGENT.to_string(), spec.agent_id.clone()),
        (LABEL_FRAMEWORK.to_string(), spec.framework_id.clone()),
        (LABEL_TASK.to_string(), spec.task.task_id.clone()),
        (LABEL_CONTAINER.to_string(), spec.container_id.0.clone()),
    ]);
    let named: Vec<&str> = volumes
        .iter()
        .map(|v| v.docker_volume.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    if !named.is_empty() {
        labels.insert(LABEL_CONTAINER_VOLUMES.to_string(), named.join(","));
    }

    let mut binds = vec![format!("{}:{SANDBOX_MOUNT}:rw", sandbox_dir.display())];
    for v in volumes {
        let mode = match volume::Mode::try_from(v.mode).unwrap_or_default() {
            volume::Mode::Ro => "ro",
            _ => "rw",
        };
        // A source without a leading '/' is a named volume to the engine.
        let source = if v.docker_volume.is_empty() {
            &v.host_path
        } else {
            &v.docker_volume
        };
        binds.push(format!("{source}:{}:{mode}", v.container_path));
    }
    let network = match docker_info::Network::try_from(docker.network).unwrap_or_default() {
        docker_info::Network::Unspecified | docker_info::Network::Host => "host",
        docker_info::Network::Bridge => "bridge",
        docker_info::Network::None => "none",
    };
    let mut exposed = Vec::new();
    let mut bindings: PortMap = HashMap::new();
    for m in &docker.port_mappings {
        let protocol = if m.protocol.is_empty() {
            "tcp"
        } else {
            m.protocol.as_str()
        };
        let key = format!("{}/{protocol}", m.container_port);
        exposed.push(key.clone());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: None,
                host_port: Some(m.host_port.to_string()),
            });
    }
    let mem = spec.resources.mem();
    let memory = (!mem.is_zero()).then(|| (mem.as_f64() * 1024.0 * 1024.0) as i64);
    let cpus = spec.resources.cpus();
    let (cpu_shares, cpu_quota) = if cpus.is_zero() {
        (None, None)
    } else {
        let c = cpus.as_f64();
        (
            Some(((c * 1024.0) as i64).max(2)),
            Some(((c * CPU_PERIOD_US as f64) as i64).max(1000)),
        )
    };
    let host_config = HostConfig {
        binds: Some(binds),
        network_mode: Some(network.to_string()),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        memory,
        // Swap equal to memory: no swap beyond the limit.
        memory_swap: memory,
        cpu_shares,
        cpu_period: cpu_quota.map(|_| CPU_PERIOD_US),
        cpu_quota,
        init: Some(true),
        // The agent copies the output from the engine's log: use a driver it can read.
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".to_string()),
            config: None,
        }),
        ..Default::default()
    };
    // The image decides who runs the command, unless the command names a user.
    let user = (!command.user.is_empty()).then(|| command.user.clone());
    ContainerCreateBody {
        image: Some(image.to_string()),
        user,
        entrypoint: Some(entrypoint),
        cmd: Some(cmd),
        env: Some(env),
        working_dir: Some(SANDBOX_MOUNT.to_string()),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// A container's exit code as an exit: with Docker's init as PID 1, a command killed
/// by signal N exits the container with 128 + N.
pub fn exit_kind(code: i64) -> ExitKind {
    match code {
        129..=159 => ExitKind::Signaled((code - 128) as i32),
        c => ExitKind::Exited(i32::try_from(c).unwrap_or(-1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::Resources;

    fn allowing(paths: &[&Path]) -> DockerOptions {
        DockerOptions {
            volume_allow: paths.iter().map(|p| p.to_path_buf()).collect(),
            ..DockerOptions::default()
        }
    }

    #[test]
    fn persistent_volumes_are_bound_under_the_sandbox_and_at_the_root() {
        let mount = |id: &str, path: &str, read_only: bool| crate::volumes::VolumeMount {
            role: "db".into(),
            id: id.into(),
            host_path: PathBuf::from(format!("/w/volumes/roles/db/{id}")),
            container_path: path.into(),
            read_only,
            chown: true,
        };
        assert_eq!(
            persistent_volume_binds(&[mount("v1", "data", false), mount("v2", "etc/conf", true)]),
            [
                "/w/volumes/roles/db/v1:/mnt/sandbox/data:rw",
                "/w/volumes/roles/db/v1:/data:rw",
                "/w/volumes/roles/db/v2:/mnt/sandbox/etc/conf:ro",
                "/w/volumes/roles/db/v2:/etc/conf:ro",
            ]
        );
    }

    #[test]
    fn by_default_no_host_path_is_mounted() {
        let e = DockerOptions::default()
            .allowed_host_path("/data")
            .unwrap_err();
        assert_eq!(
            e,
            "volume host path '/data' is refused: it is not under an allowed path (host paths must be listed in the agent's --docker-volume-allow; none are allowed on this agent)"
        );
    }

    #[test]
    fn host_paths_are_mounted_only_from_the_allow_list() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let data = std::fs::canonicalize(&data).unwrap();
        let o = allowing(&[&data]);
        assert_eq!(o.check(), Ok(()));
        let inside = format!("{}/cache/./x", data.display());
        assert_eq!(o.allowed_host_path(&inside).unwrap(), data.join("cache/x"));
        assert_eq!(
            o.allowed_host_path(&data.display().to_string()).unwrap(),
            data
        );

        let refused = |p: &str| o.allowed_host_path(p).unwrap_err();
        let e = refused(&format!("{}/../etc", data.display()));
        assert!(
            e.contains("contains '..'") && e.contains("--docker-volume-allow"),
            "{e}"
        );
        assert!(refused("relative/path").contains("is not an absolute path"));
        let e = refused("/etc");
        assert!(
            e.contains("'/etc' is refused: it is not under an allowed path"),
            "{e}"
        );
        assert!(e.contains(&format!("allowed: {}", data.display())), "{e}");
        // A prefix of the name is not a parent directory.
        assert!(refused(&format!("{}x", data.display())).contains("not under an allowed path"));
        assert!(refused("/").contains("it is the host's root"));
        assert!(refused("/var/run/docker.sock").contains("the Docker engine's socket"));
        assert!(refused("/run/docker.sock").contains("the Docker engine's socket"));
        assert!(refused("/run").contains("it holds the Docker engine's socket"));

        // A symlink planted below an allowed path (by an earlier task) leads nowhere.
        std::os::unix::fs::symlink("/", data.join("root")).unwrap();
        std::os::unix::fs::symlink("/etc", data.join("etc")).unwrap();
        let e = refused(&format!("{}/root", data.display()));
        assert!(e.contains("it is the host's root"), "{e}");
        let e = refused(&format!("{}/etc/ssh", data.display()));
        assert!(
            e.contains(
                "it resolves (through a symlink) to /etc/ssh, which is not under an allowed path"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_root_and_the_docker_socket_cannot_be_allowed() {
        for (entry, why) in [
            ("/", "'/' is never allowed: it is the host's root"),
            (
                "/var/run/docker.sock",
                "'/var/run/docker.sock' is never allowed: it is the Docker engine's socket",
            ),
            (
                "/run",
                "'/run' is never allowed: it holds the Docker engine's socket /run/docker.sock",
            ),
            ("/srv/../", "'/srv/../' contains '..'"),
            ("srv", "'srv' is not an absolute path"),
        ] {
            let e = allowing(&[Path::new("/srv"), Path::new(entry)])
                .check()
                .unwrap_err();
            assert_eq!(e, why, "{entry}");
        }
        let custom = DockerOptions {
            socket: PathBuf::from("/opt/docker/engine.sock"),
            volume_allow: vec![PathBuf::from("/opt/docker")],
            ..DockerOptions::default()
        };
        assert!(
            custom
                .check()
                .unwrap_err()
                .contains("/opt/docker/engine.sock")
        );
    }

    #[test]
    fn resumed_logs_skip_what_the_sandbox_has() {
        let mut left = 5;
        assert_eq!(skip(b"abc", &mut left), b"");
        assert_eq!(left, 2);
        assert_eq!(skip(b"defgh", &mut left), b"fgh");
        assert_eq!(left, 0);
        assert_eq!(skip(b"ij", &mut left), b"ij");
    }

    #[test]
    fn names_and_images() {
        assert_eq!(
            container_name("a1/b", &ContainerId("c 1".into())),
            "strata-a1-b-c-1"
        );
        assert_eq!(image_reference("busybox"), "busybox:latest");
        assert_eq!(image_reference("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            image_reference("registry:5000/team/app"),
            "registry:5000/team/app:latest"
        );
        assert_eq!(image_reference("app@sha256:abc"), "app@sha256:abc");
        assert_eq!(exit_kind(0), ExitKind::Exited(0));
        assert_eq!(exit_kind(3), ExitKind::Exited(3));
        assert_eq!(exit_kind(137), ExitKind::Signaled(9));
    }

    #[test]
    fn the_container_carries_the_tasks_limits_ports_and_labels() {
        let docker = v1::DockerInfo {
            image: "busybox".into(),
            network: docker_info::Network::Bridge as i32,
            port_mappings: vec![docker_info::PortMapping {
                host_port: 31000,
                container_port: 80,
                protocol: String::new(),
            }],
            ..Default::default()
        };
        let spec = LaunchSpec {
            container_id: ContainerId("c1".into()),
            agent_id: "a1".into(),
            framework_id: "f1".into(),
            framework: Default::default(),
            task: v1::TaskInfo {
                task_id: "t1".into(),
                ..Default::default()
            },
            command: v1::CommandInfo {
                shell: true,
                value: "echo hi".into(),
                ..Default::default()
            },
            resources: Resources::parse("cpus:0.5;mem:64;ports:[31000-31000]").unwrap(),
            sandbox: PathBuf::from("/w/sb"),
            user: None,
            objects: None,
            volumes: Vec::new(),
        };
        let vol = v1::Volume {
            host_path: "/data".into(),
            container_path: "/in".into(),
            mode: volume::Mode::Ro as i32,
            ..Default::default()
        };
        let named = v1::Volume {
            docker_volume: "pgdata".into(),
            container_path: "/var/lib/db".into(),
            ..Default::default()
        };
        let body = container_body(
            &spec,
            &docker,
            &[vol, named],
            Path::new("/w/sb"),
            "busybox:latest",
        );
        assert_eq!(body.entrypoint.unwrap(), ["/bin/sh", "-c"]);
        assert_eq!(body.cmd.unwrap(), ["echo hi"]);
        let env = body.env.unwrap();
        assert!(env.contains(&"STRATA_SANDBOX=/mnt/sandbox".to_string()));
        assert!(env.contains(&"PORT0=31000".to_string()));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_TASK], "t1");
        assert_eq!(labels[LABEL_CONTAINER_VOLUMES], "pgdata");
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.cpu_quota, Some(50_000));
        assert_eq!(host.cpu_period, Some(100_000));
        assert_eq!(host.cpu_shares, Some(512));
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        assert_eq!(
            host.binds.unwrap(),
            [
                "/w/sb:/mnt/sandbox:rw",
                "/data:/in:ro",
                "pgdata:/var/lib/db:rw"
            ]
        );
        let ports = host.port_bindings.unwrap();
        assert_eq!(
            ports["80/tcp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("31000")
        );
    }

    #[test]
    fn secret_variables_reach_the_shell_through_the_tmpfs_never_the_engine() {
        use strata_proto::v1::object_ref::Target;
        let reference = |kind: ObjectKind, name: &str, target: Target| v1::ObjectRef {
            kind: kind as i32,
            name: name.into(),
            version: 1,
            target: Some(target),
        };
        let value = |kind: ObjectKind, name: &str, data: &[u8]| v1::ObjectValue {
            kind: kind as i32,
            name: name.into(),
            version: 1,
            data: data.to_vec(),
        };
        let refs = vec![
            reference(ObjectKind::Secret, "pw", Target::Env("PW".into())),
            reference(ObjectKind::Config, "mode", Target::Env("MODE".into())),
        ];
        let objects = TaskObjects::resolve(
            &refs,
            vec![
                value(ObjectKind::Secret, "pw", b"s3cr3t-planted"),
                value(ObjectKind::Config, "mode", b"blue"),
            ],
        )
        .unwrap();
        let spec = LaunchSpec {
            container_id: ContainerId("c1".into()),
            agent_id: "a1".into(),
            framework_id: "f1".into(),
            framework: v1::FrameworkInfo::default(),
            task: v1::TaskInfo {
                task_id: "t1".into(),
                objects: refs,
                ..Default::default()
            },
            command: v1::CommandInfo {
                shell: true,
                value: "echo $PW".into(),
                ..Default::default()
            },
            resources: Resources::new(),
            sandbox: PathBuf::from("/w/sb"),
            user: None,
            objects: Some(std::sync::Arc::new(objects)),
            volumes: Vec::new(),
        };
        let body = container_body(
            &spec,
            &v1::DockerInfo::default(),
            &[],
            Path::new("/w/sb"),
            "busybox:latest",
        );
        assert_eq!(
            body.cmd.clone().unwrap(),
            [". /run/secrets/.strata-env\necho $PW"]
        );
        let env = body.env.clone().unwrap();
        assert!(env.contains(&"MODE=blue".to_string()), "{env:?}");
        assert!(!format!("{body:?}").contains("s3cr3t"));
        assert_eq!(
            spec.objects.unwrap().secret_env_file().as_str(),
            "export PW='s3cr3t-planted'\n"
        );
    }

    #[test]
    fn secret_files_belong_to_a_numeric_container_user_else_root() {
        assert_eq!(container_owner(""), (0, 0));
        assert_eq!(container_owner("nobody"), (0, 0));
        assert_eq!(container_owner("1000"), (1000, 1000));
        assert_eq!(container_owner("1000:50"), (1000, 50));
        assert_eq!(container_owner("1000:staff"), (1000, 1000));
    }
}
