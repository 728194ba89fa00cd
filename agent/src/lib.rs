//! strata-agent: runs tasks in sandboxes on one machine and reports their status to
//! the master.
//!
//! ```text
//!            ┌──────────────────────────── strata-agent ─────────────────────────────┐
//! master ◀──▶│ link (gRPC stream) ◀─▶ AgentLoop (TaskManager, status update queues)  │
//!            │                           │ launch / wait / kill                      │
//!            │                           ▼                                           │
//!            │            Containerizer (process | docker | fake | ...) ─▶ sandboxes │
//!            │ health checkers (HTTP / TCP / COMMAND, one per checked task) ─▶ loop  │
//! HTTP  ◀───▶│ /health /state /files/read ─ Query ─▶ AgentLoop                       │
//!            │   (authenticated; authorized by the master's ACLs, see security)      │
//!            └───────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Entry point: [`run`]. The binary `strata-agent` parses flags into [`AgentOptions`];
//! `strata local` and `strata-bench` call [`run`] directly, many agents per process.
//!
//! Recovery: tasks outlive an agent that dies or is stopped with
//! [`Shutdown::KeepTasks`]. What the agent runs is checkpointed in its work dir
//! ([`checkpoint`]: tasks, their containers, unacknowledged updates;
//! `runtime/`: how each process task ended, written by the task's monitor, see
//! [`isolation::child`]). A new run on the same work dir re-attaches to the tasks that
//! still run and reports the real end of those that ended meanwhile
//! ([`Containerizer::recover`]) before it registers with the master.
//!
//! Configs and secrets (issue 16, [`objects`]): a launch whose task references some
//! first fetches their values from the master (`AgentLink.FetchObjects`, on the
//! link's endpoint) and hands them, in memory only, to the containerizer, which
//! delivers secret files on a tmpfs in the task's own mount namespace (or container),
//! config files in the sandbox and variables in the task's environment.
//!
//! Persistent volumes (issue 17, [`volumes`]): the master sends its whole ledger of
//! this agent's reservations and volumes (`CheckpointResources`); the agent writes it
//! to `WORK_DIR/meta/resources` before acting on it (volume directories under
//! `WORK_DIR/volumes/roles/<role>/<id>` created, destroyed ones' data removed), binds
//! the volumes into the tasks that use them, counts them in the tasks' disk, reports
//! their usage, and sends the ledger back in every `Register`.
// Unsafe code is denied everywhere but in `isolation::child`, the `pre_exec` hook that
// joins a task to its cgroup and namespaces between fork and exec.
#![deny(unsafe_code)]

mod agent;
pub mod cgroups;
pub mod checkpoint;
pub mod config;
pub mod containerizer;
pub mod disk;
mod health;
mod http;
pub mod hygiene;
pub mod isolation;
mod link;
pub mod objects;
pub mod proxy;
pub mod resources_detect;
pub mod sandbox;
pub mod security;
mod services;
mod task_key;
mod tasks;
mod updates;
pub mod usage;
pub mod volumes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

pub use agent::StateView;
pub use checkpoint::CheckpointError;
pub use config::{
    AgentOptions, ConfigError, ContainerizerConfig, parse_attributes, parse_duration,
};
pub use containerizer::{
    ComposingContainerizer, Containerizer, DockerContainerizer, DockerOptions, FakeContainerizer,
    ProcessContainerizer,
};
pub use resources_detect::{detect_resources, resolve_resources};
pub use tasks::AgentTaskView;

use crate::agent::{AgentLoop, Identity, LoopConfig};
use crate::containerizer::ContainerHandle;
use crate::tasks::TaskManager;
use crate::updates::StatusUpdates;

/// How long the HTTP server may take to close its connections at shutdown.
/// How long open connections through the service proxy get when the agent stops.
const PROXY_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
const HTTP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Where process tasks' monitors record how their task ended, under the work dir.
const RUNTIME_DIR: &str = "runtime";

/// Why the agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("work dir: {0} (use a directory the agent can create and write)")]
    WorkDir(#[source] CheckpointError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the listener's address: {0}")]
    Listener(#[source] std::io::Error),
    #[error("identity: {0}")]
    Identity(#[from] security::IdentityError),
    /// Stopped before the agent could join the cluster.
    #[error("stopped before joining the cluster")]
    StoppedBeforeJoining,
    /// The master refused the agent for good; its tasks were killed.
    #[error("{0}")]
    Gone(String),
}

/// What an agent's shutdown does to its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Stop the agent and leave its tasks running; the next run on the same work dir
    /// recovers them. The agent binary does this on SIGTERM and SIGINT (a restart, an
    /// upgrade under systemd), as a Mesos agent does.
    KeepTasks,
    /// Kill every task (SIGTERM, `executor_shutdown_grace_period`, SIGKILL), then
    /// stop. The agent binary does this on SIGUSR1; `strata local` when it stops.
    KillTasks,
}

/// Runs an agent until `shutdown` resolves.
///
/// `listener` serves the agent's HTTP API and its bound address (or
/// `options.advertise_address`; `hostname:port` when bound to every interface) is what
/// the agent advertises to the master. Before it registers, the agent recovers what a
/// previous run left in its work dir: tasks that still run are re-attached (their
/// processes, cgroups and containers), tasks that ended meanwhile are reported with
/// their real end where it was recorded, and unacknowledged updates are sent again.
/// The agent dials `options.master`, registers (re-registering with the same id and its
/// recovered tasks after a restart, from `WORK_DIR/agent_id`), and runs what the master
/// sends. When `shutdown` resolves it writes its checkpoint and returns, leaving its
/// tasks running or killing them first, as the [`Shutdown`] says; it kills them and
/// returns [`AgentError::Gone`] when the master refuses it because an operator marked
/// it gone.
pub async fn run(
    listener: TcpListener,
    options: AgentOptions,
    shutdown: impl Future<Output = Shutdown> + Send + 'static,
) -> Result<(), AgentError> {
    let work_dir = options.work_dir.clone();
    checkpoint::ensure_writable(&work_dir).map_err(AgentError::WorkDir)?;
    let uri = config::master_uri(&options.master)?;
    let local = listener.local_addr().map_err(AgentError::Listener)?;
    let hostname = options.hostname.clone().unwrap_or_else(machine_hostname);
    let address = advertised_address(local, options.advertise_address.as_deref(), &hostname);
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));

    // Who the agent is: its certificate (joined at first start), or nobody (insecure).
    let master_error = |reason: String| ConfigError::Master {
        input: options.master.clone(),
        reason,
    };
    let names = security::names(&hostname, &address);
    let identity = if options.insecure {
        tracing::warn!(
            "INSECURE: plain text to the master and on the agent's API, no authentication (--insecure is for development only)"
        );
        None
    } else {
        let stop = {
            let s = shutdown.clone();
            async move {
                let _ = s.await;
            }
        };
        match security::obtain(
            &options.master,
            &work_dir,
            options.join_token.as_deref(),
            &names,
            stop,
        )
        .await?
        {
            Some(identity) => Some(identity),
            None => return Err(AgentError::StoppedBeforeJoining),
        }
    };
    let endpoint = match &identity {
        Some(identity) => {
            security::endpoint(&options.master, &identity.client_tls()).map_err(master_error)?
        }
        None => link::endpoint(&uri).map_err(|e| master_error(e.to_string()))?,
    };
    let (endpoint_tx, endpoint_rx) = tokio::sync::watch::channel(endpoint);
    let (server_tx, server_rx) =
        tokio::sync::watch::channel(identity.as_ref().map(security::server_tls));

    // No root by default (issue 14): checked before anything starts.
    let default_user = config::check_default_user(options.default_user.as_deref())?;
    if let ContainerizerConfig::Docker { docker, .. } = &options.containerizer {
        docker.check().map_err(ConfigError::DockerVolumeAllow)?;
    }
    if !nix::unistd::geteuid().is_root() {
        tracing::warn!(default_user = ?default_user, "the agent is not root: every task runs as the agent's own user, whatever user it names");
    }

    let agent_id = checkpoint::read_agent_id(&work_dir)
        .map_err(AgentError::WorkDir)?
        .unwrap_or_default();
    let mut attributes = options.attributes.clone();
    // What process tasks get (cgroups, pid namespace): decided once, logged.
    let process_isolation = || {
        let isolation = isolation::Isolation::detect(&options.isolation, &work_dir);
        tracing::info!(isolation = %isolation.describe(), "process task isolation");
        isolation
    };
    // Disk isolation (issue 17): du of each task's sandbox, said once at start.
    tracing::info!(
        "disk isolation: {}",
        options.disk_isolation.describe(&work_dir)
    );
    // The monitors of process tasks record their task's end here, for recovery.
    let runtime_dir = work_dir.join(RUNTIME_DIR);
    let process_containerizer = || {
        ProcessContainerizer::with_isolation(process_isolation())
            .with_runtime_dir(runtime_dir.clone())
    };
    // Secrets staged by a previous run that died before its task bound them.
    objects::remove_leftovers(&runtime_dir);
    let containerizer: Arc<dyn Containerizer> = match &options.containerizer {
        ContainerizerConfig::Process => Arc::new(process_containerizer()),
        ContainerizerConfig::Fake { task_duration } => {
            Arc::new(FakeContainerizer::new(*task_duration))
        }
        ContainerizerConfig::Custom(c) => c.clone(),
        ContainerizerConfig::Docker { docker, process } => {
            let process: Option<Arc<dyn Containerizer>> =
                process.then(|| Arc::new(process_containerizer()) as Arc<dyn Containerizer>);
            // Recovery (below) re-attaches to the containers of an earlier run and
            // removes those no task claims.
            let docker = DockerContainerizer::new(docker.clone(), &agent_id)
                .await
                .with_runtime_dir(runtime_dir.clone());
            let mut names: Vec<&str> = Vec::new();
            if process.is_some() {
                names.push("process");
            }
            if docker.available() {
                names.push("docker");
            }
            let attribute = strata_proto::container::CONTAINERIZERS_ATTRIBUTE;
            if !names.is_empty() && !attributes.iter().any(|(n, _)| n == attribute) {
                attributes.push((attribute.to_string(), names.join(",")));
            }
            Arc::new(ComposingContainerizer::new(
                process,
                Some(Arc::new(docker) as Arc<dyn Containerizer>),
            ))
        }
    };
    let mut manager = TaskManager::new(
        work_dir.clone(),
        agent_id.clone(),
        StatusUpdates::new(options.status_retry_interval, options.status_retry_max),
        options.default_kill_grace,
        containerizer.reports_starting(),
    )
    .with_default_user(default_user);
    // The master's ledger of reservations and volumes, as last checkpointed: sent back
    // at every registration, and where the tasks' volumes are looked up.
    match volumes::read(&work_dir) {
        Ok(Some(ledger)) => {
            let ledger = volumes::Ledger::new(&work_dir, ledger);
            tracing::info!(
                reserved = ledger.proto.reserved.len(),
                volumes = ledger.volumes.len(),
                "read the checkpointed ledger of reservations and volumes"
            );
            manager.set_ledger(ledger);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "ignoring an unreadable ledger of reservations and volumes; the master's registry is the authority")
        }
    }
    let initial = recover(&work_dir, &mut manager, containerizer.as_ref())
        .await
        .map_err(AgentError::WorkDir)?;

    tracing::info!(
        agent_id = %agent_id,
        %hostname,
        %address,
        master = %options.master,
        containerizer = containerizer.name(),
        resources = %options.resources,
        work_dir = %work_dir.display(),
        "agent starting"
    );

    // Who may read which sandboxes and see which tasks: the master's ACLs (fetched
    // with the credentials), the secure defaults until they arrive.
    let authz = match &identity {
        Some(_) => security::authorizer(),
        None => strata_security::Authorizer::insecure(),
    };
    // The routing mesh (issue 15): this agent's proxy for every service port.
    let proxy = options.service_proxy.map(proxy::ServiceProxy::new);
    let (query_tx, query_rx) = mpsc::channel(64);
    let app = http::router(http::HttpState {
        queries: query_tx.clone(),
        work_dir: work_dir.clone(),
        containerizer: containerizer.clone(),
        authorizer: authz.clone(),
        proxy: proxy.clone(),
        docker_socket: match &options.containerizer {
            ContainerizerConfig::Docker { docker, .. } => Some(docker.socket.clone()),
            _ => None,
        },
    });
    let (usage_stop, usage_stopped) = oneshot::channel::<()>();
    let usage_reporter = tokio::spawn(usage::report(
        query_tx,
        containerizer.clone(),
        options.usage_report_interval,
        usage_stopped,
    ));
    // Every request passes the one authentication layer: callers with a credential
    // of the cluster (digests fetched from the master) or a cluster certificate.
    let authn = match &identity {
        Some(_) => security::authenticator(),
        None => strata_security::Authenticator::insecure(),
    };
    let app = app.layer(axum::middleware::from_fn_with_state(
        authn.clone(),
        strata_security::authn::authenticate,
    ));
    let mut background = tokio::task::JoinSet::new();
    if let Some(proxy) = &proxy {
        background.spawn(services::follow(endpoint_rx.clone(), proxy.clone()));
    }
    if let Some(identity) = &identity {
        let (identity_tx, identity_rx) = tokio::sync::watch::channel(identity.clone());
        background.spawn(security::renew_forever(
            options.master.clone(),
            work_dir.clone(),
            names.clone(),
            identity.clone(),
            identity_tx,
            endpoint_tx,
            server_tx,
        ));
        background.spawn(security::refresh_security(
            options.master.clone(),
            identity_rx,
            authn.clone(),
            authz,
        ));
    } else {
        drop((endpoint_tx, server_tx));
    }
    let (http_stop, http_stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(async move {
        let stop = async move {
            let _ = http_stopped.await;
        };
        if let Err(e) = strata_security::tls::serve(listener, app, server_rx, stop).await {
            tracing::error!(error = %e, "the HTTP server failed");
        }
    });

    let identity = Identity {
        hostname,
        address,
        master: options.master.clone(),
        resources: options.resources.clone(),
        attributes,
    };
    let config = LoopConfig {
        work_dir,
        registration_backoff: options.registration_backoff,
        registration_backoff_max: options.registration_backoff_max,
        executor_shutdown_grace_period: options.executor_shutdown_grace_period,
        checkpoint_interval: options.checkpoint_interval,
        hygiene: options.hygiene.clone(),
        disk_isolation: options.disk_isolation.clone(),
    };
    let gone = AgentLoop::new(
        config,
        identity,
        containerizer,
        manager,
        endpoint_rx,
        query_rx,
    )
    .run(initial, shutdown)
    .await;
    background.abort_all();
    if let Some(proxy) = &proxy {
        // Connections through this agent end with it; a moment for those finishing.
        proxy.shutdown(PROXY_SHUTDOWN_GRACE).await;
    }

    let _ = usage_stop.send(());
    let _ = usage_reporter.await;
    let _ = http_stop.send(());
    if tokio::time::timeout(HTTP_SHUTDOWN_TIMEOUT, &mut server)
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open at shutdown; closing them");
        server.abort();
        let _ = server.await;
    }
    match gone {
        Some(message) => Err(AgentError::Gone(message)),
        None => Ok(()),
    }
}

/// Loads the checkpoint of a previous run, asks the containerizer to recover its
/// containers, and hands both to the task manager.
async fn recover(
    work_dir: &std::path::Path,
    manager: &mut TaskManager,
    containerizer: &dyn Containerizer,
) -> Result<Vec<tasks::Action>, CheckpointError> {
    let state = match checkpoint::read(work_dir) {
        Ok(Some(state)) => state,
        Ok(None) => {
            // Nothing to re-attach to, but the containerizer still cleans up what a
            // previous run may have left (orphan cgroups, containers).
            if let Err(e) = containerizer.recover(Vec::new()).await {
                tracing::warn!(error = %e, "cleaning up after a previous run failed");
            }
            return Ok(Vec::new());
        }
        Err(e @ CheckpointError::Corrupt { .. }) => {
            let aside = checkpoint::set_aside(work_dir);
            tracing::error!(error = %e, moved_to = ?aside, "ignoring an unreadable checkpoint");
            if let Err(e) = containerizer.recover(Vec::new()).await {
                tracing::warn!(error = %e, "cleaning up after a previous run failed");
            }
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    // The containers of the tasks that had not ended (a terminal task's container is
    // gone, or an orphan to remove).
    let handles: Vec<ContainerHandle> = state
        .tasks
        .iter()
        .filter(|t| {
            !strata_proto::is_terminal(
                strata_proto::v1::TaskState::from_str_name(&t.state).unwrap_or_default(),
            )
        })
        .filter_map(|t| t.container.clone())
        .collect();
    let recovered = match containerizer.recover(handles).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "container recovery failed; the previous run's tasks are reported lost");
            Vec::new()
        }
    };
    tracing::info!(
        tasks = state.tasks.len(),
        pending_updates = state.updates.len(),
        recovered = recovered.len(),
        "loaded the checkpoint of a previous run"
    );
    Ok(manager.restore(state, &recovered, Instant::now()))
}

/// Creates the work dir if needed and checks the agent can write in it.
pub fn check_work_dir(work_dir: &std::path::Path) -> Result<(), CheckpointError> {
    checkpoint::ensure_writable(work_dir)
}

/// The machine's hostname, or `localhost` when it cannot be read.
pub fn machine_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The address the master and users reach the agent's HTTP API at: the one given
/// (`--advertise-address`), else the listener's bound address, else (bound to every
/// interface) the hostname with the bound port. As in Mesos, the hostname alone never
/// replaces a bound address: it need not resolve (`strata local` names its agents).
fn advertised_address(local: SocketAddr, advertise: Option<&str>, hostname: &str) -> String {
    match advertise {
        Some(a) => a.to_string(),
        None if local.ip().is_unspecified() => format!("{hostname}:{}", local.port()),
        None => local.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses() {
        let bound: SocketAddr = "127.0.0.1:5051".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:5051".parse().unwrap();
        assert_eq!(advertised_address(bound, None, "h"), "127.0.0.1:5051");
        assert_eq!(
            advertised_address(bound, Some("agent1:80"), "h"),
            "agent1:80"
        );
        assert_eq!(advertised_address(any, None, "h"), "h:5051");
    }
}
