//! The agent's HTTP API (axum), served on the agent's listener:
//!
//! - `GET /health` → `ok`
//! - `GET /state` → JSON [`StateView`]: id, hostname, resources, attributes, tasks.
//!   The agent's own facts are anyone's (who is authenticated); `tasks` and
//!   `completed_tasks` list only the tasks of frameworks the caller may see
//!   (`view_tasks`, object: the framework's principal).
//! - `GET /files/read?framework_id=F&task_id=T&file=stdout|stderr&offset=N&length=M`,
//!   or `...&path=P&offset=N&length=M` with any regular file below the sandbox (exactly
//!   one of `file` and `path`: both or neither is 400) →
//!   `{"data", "offset", "next_offset", "eof", "size", "state"}`: text of the file from
//!   `offset`, at most `length` bytes (default 64 KiB, at most 4 MiB). 404 with a
//!   reason when the task or the file is unknown; 400 for a bad request (a bad path:
//!   absolute, a `..` component, a NUL, more than 4096 bytes; `path` naming the
//!   sandbox itself; a component on the way that is not a directory); 403
//!   `{"error": "<who> is not authorized to read sandboxes of ..."}` when the ACLs
//!   refuse the caller `access_sandboxes` on the task's framework's principal (a
//!   sandbox only on disk, of a task the agent no longer knows, has no principal
//!   recorded: the object is `""`, which only a rule for any framework allows); 403
//!   also when the file is not one the agent serves: a symlink at any component of
//!   the path, not a regular file, a hard link (more than one link), or owned by
//!   neither the task's user nor the agent ([`crate::sandbox`] has the rules).
//! - `GET /files/browse?framework_id=F&task_id=T&path=P` (`path` absent or empty: the
//!   sandbox) → `{"path", "state", "entries": [{"name", "path", "kind", "size",
//!   "mode", "mtime"}], "truncated"}`: the directory `P` of the sandbox (`path`
//!   normalised, `""` for the sandbox; `kind` `dir`, `file`, `symlink` or `other`;
//!   `mode` as `ls -l` shows it; `mtime` in Unix seconds), directories first, then
//!   by name, at most 10,000 entries (`truncated`: there are more). Found, authorized
//!   and refused as `/files/read`: 404 for an unknown task or directory, 400 for a
//!   bad path or one that is not a directory, 403 without `access_sandboxes` or
//!   through a symlink (listed as `symlink`, never followed).
//! - `GET /monitor/statistics` → JSON list, one entry per running task with a cgroup
//!   whose framework the caller may see (`view_tasks`): `{"framework_id",
//!   "executor_id", "task_id", "container_id", "statistics": {cpu times, memory now
//!   and peak, processes, limits}}` (Mesos' shape, [`crate::usage`]).
//! - `GET /volumes` → `{"agent_id", "volumes": [{"name", "driver", "mountpoint",
//!   "created_at", "created_by_agent", "labels", "tasks": [{"framework_id",
//!   "task_id", "container_path", "read_only"}]}], "persistent": [{"role",
//!   "persistence_id", "principal", "container_path", "mode", "size_mb", "source",
//!   "path", "used_bytes", "tasks": [{"framework_id", "task_id"}]}]}`: the Docker
//!   named volumes this agent created (labelled `strata.agent_id=<its id>`) and those
//!   its running tasks mount now, from the engine
//!   ([`crate::containerizer::docker::list_volumes`]), and the persistent volumes of
//!   the master's ledger of this agent ([`crate::volumes`]; `used_bytes` is the last
//!   disk measurement). Authorized as `/state`: the volumes are the agent's facts,
//!   anyone's (who is authenticated); `tasks` lists only the tasks of frameworks the
//!   caller may see (`view_tasks`). An agent without a Docker containerizer lists no
//!   Docker volumes and says why in `"docker"`; 503 when the engine does not answer.
//!
//! Handlers ask the agent loop through a bounded channel and read files themselves,
//! so a slow reader never holds up the loop. Every request passes the one
//! authentication layer (set up in [`crate::run`]), which puts the caller's
//! [`Principal`] in the request; the handlers ask the agent's one [`Authorizer`]
//! (the master's ACLs, refreshed by [`crate::security::refresh_security`]) what it
//! may read and see. A request without a principal (no layer) is anonymous.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::Json;
use axum::Router;
use axum::extract::{Extension, Query as QueryParams, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use strata_proto::state_name;
use strata_proto::v1::TaskState;
use strata_security::principal::ON_BEHALF_OF;
use strata_security::{Action, Authorizer, Principal};
use tokio::sync::{mpsc, oneshot};

use crate::agent::{KnownTask, Query, StateView};
use crate::containerizer::docker::{self, NamedVolume};
use crate::sandbox::{self, LogFile, SandboxError, SandboxPath};
use crate::task_key::TaskKey;
use crate::tasks::sandbox_on_disk;

/// Default `length` of `/files/read`.
pub const DEFAULT_READ_LENGTH: u64 = 64 * 1024;

#[derive(Clone)]
pub(crate) struct HttpState {
    pub queries: mpsc::Sender<Query>,
    pub work_dir: PathBuf,
    /// Asked for usage by `/monitor/statistics`, outside the agent loop.
    pub containerizer: std::sync::Arc<dyn crate::Containerizer>,
    /// Who may read which sandboxes and see which tasks.
    pub authorizer: Authorizer,
    /// The service proxy, for `/state` (`None`: `--service-proxy off`).
    pub proxy: Option<crate::proxy::ServiceProxy>,
    /// The Docker engine's socket, for `/volumes` (`None`: no Docker containerizer).
    pub docker_socket: Option<PathBuf>,
}

pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/state", get(get_state))
        .route("/files/read", get(read_file))
        .route("/files/browse", get(browse_files))
        .route("/monitor/statistics", get(monitor_statistics))
        .route("/volumes", get(get_volumes))
        .with_state(state)
}

/// An error answer: a status and a reason in JSON.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn unavailable() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "the agent is shutting down".into(),
    )
}

/// The caller the authentication layer found; anonymous without the layer.
type Caller = Option<Extension<Principal>>;

fn caller(principal: Caller) -> Principal {
    principal.map_or(Principal::Anonymous, |Extension(p)| p)
}

/// Whom a sandbox read is for: the caller, or the principal the master names when it
/// relays a dashboard's read (`x-strata-on-behalf-of`, honoured from the master's own
/// certificate only: the master authenticated that principal; the ACLs are then asked
/// about it, never about the master).
fn sandbox_reader(principal: Caller, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let principal = caller(principal);
    let named = headers.get(ON_BEHALF_OF);
    match (&principal, named) {
        (Principal::Master, Some(name)) => {
            let name = name.to_str().unwrap_or("").trim();
            if name.is_empty() || name.len() > strata_proto::limits::MAX_ID_BYTES {
                return Err(bad_request(format!(
                    "{ON_BEHALF_OF} must name a principal (at most {} bytes)",
                    strata_proto::limits::MAX_ID_BYTES
                )));
            }
            Ok(Principal::from_name(name))
        }
        (Principal::Master, None) => Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "the master reads sandboxes only on behalf of someone: {ON_BEHALF_OF} is missing"
            ),
        )),
        (_, Some(_)) => Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "only the master may read on behalf of another principal ({ON_BEHALF_OF}); {principal} may not"
            ),
        )),
        (_, None) => Ok(principal),
    }
}

async fn agent_state(state: &HttpState) -> Result<StateView, ApiError> {
    let (tx, rx) = oneshot::channel();
    state
        .queries
        .send(Query::State(tx))
        .await
        .map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

/// `view` without the tasks of frameworks `principal` may not see.
fn visible_state(mut view: StateView, authorizer: &Authorizer, principal: &Principal) -> StateView {
    let sees = |t: &crate::AgentTaskView| {
        authorizer.permits(principal, Action::ViewTasks, &t.framework_principal)
    };
    view.tasks.retain(sees);
    view.completed_tasks.retain(sees);
    view
}

async fn get_state(
    State(state): State<HttpState>,
    principal: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view = agent_state(&state).await?;
    let visible = visible_state(view, &state.authorizer, &caller(principal));
    let mut json = serde_json::to_value(visible).unwrap_or_default();
    // The service proxy's ports: listening or why not, backends, connections.
    if let (Some(proxy), Some(object)) = (&state.proxy, json.as_object_mut()) {
        object.insert(
            "service_proxy".into(),
            serde_json::to_value(proxy.status()).unwrap_or_default(),
        );
    }
    Ok(Json(json))
}

async fn monitor_statistics(
    State(state): State<HttpState>,
    principal: Caller,
) -> Result<Json<Vec<crate::usage::MonitorEntry>>, ApiError> {
    let entries = crate::usage::collect(&state.queries, state.containerizer.as_ref())
        .await
        .ok_or_else(unavailable)?;
    let view = agent_state(&state).await?;
    Ok(Json(visible_entries(
        entries,
        &view,
        &state.authorizer,
        &caller(principal),
    )))
}

/// `entries` without those of frameworks `principal` may not see. The principals of
/// the tasks' frameworks come from the tasks of `view`; an entry whose task is not
/// among them (it was forgotten meanwhile) is left out.
fn visible_entries(
    mut entries: Vec<crate::usage::MonitorEntry>,
    view: &StateView,
    authorizer: &Authorizer,
    principal: &Principal,
) -> Vec<crate::usage::MonitorEntry> {
    let principals: HashMap<(&str, &str), &str> = view
        .tasks
        .iter()
        .map(|t| {
            (
                (t.framework_id.as_str(), t.task_id.as_str()),
                t.framework_principal.as_str(),
            )
        })
        .collect();
    entries.retain(|e| {
        principals
            .get(&(e.framework_id.as_str(), e.task_id.as_str()))
            .is_some_and(|p| authorizer.permits(principal, Action::ViewTasks, p))
    });
    entries
}

/// The answer of `GET /volumes`.
#[derive(Debug, Serialize)]
struct VolumesAnswer {
    agent_id: String,
    volumes: Vec<NamedVolume>,
    /// Why no Docker volumes are listed (an agent without Docker).
    #[serde(skip_serializing_if = "Option::is_none")]
    docker: Option<String>,
    persistent: Vec<crate::volumes::PersistentVolumeView>,
}

async fn get_volumes(
    State(state): State<HttpState>,
    principal: Caller,
) -> Result<Json<VolumesAnswer>, ApiError> {
    let view = agent_state(&state).await?;
    let principal = caller(principal);
    let (tx, rx) = oneshot::channel();
    state
        .queries
        .send(Query::Volumes(tx))
        .await
        .map_err(|_| unavailable())?;
    let persistent = visible_persistent(
        rx.await.map_err(|_| unavailable())?,
        &view,
        &state.authorizer,
        &principal,
    );
    let Some(socket) = &state.docker_socket else {
        return Ok(Json(VolumesAnswer {
            agent_id: view.id,
            volumes: Vec::new(),
            docker: Some("this agent runs no Docker containerizer: Docker volumes are listed by agents started with --containerizers process,docker".into()),
            persistent,
        }));
    };
    let engine_down = |e: String| ApiError(StatusCode::SERVICE_UNAVAILABLE, e);
    let docker = docker::connect(socket)
        .await
        .map_err(|e| engine_down(e.to_string()))?;
    let volumes = docker::list_volumes(&docker, socket, &view.id)
        .await
        .map_err(engine_down)?;
    Ok(Json(VolumesAnswer {
        volumes: visible_volumes(volumes, &view, &state.authorizer, &principal),
        agent_id: view.id,
        docker: None,
        persistent,
    }))
}

/// `volumes` (persistent ones) with their `tasks` cut to those `principal` may see.
fn visible_persistent(
    mut volumes: Vec<crate::volumes::PersistentVolumeView>,
    view: &StateView,
    authorizer: &Authorizer,
    principal: &Principal,
) -> Vec<crate::volumes::PersistentVolumeView> {
    let may_see = visible_task(view, authorizer, principal);
    for v in &mut volumes {
        v.tasks.retain(|t| may_see(&t.framework_id, &t.task_id));
    }
    volumes
}

/// `volumes` with their `tasks` cut to those of frameworks `principal` may see (the
/// volumes themselves are the agent's facts). A task not among the running tasks of
/// `view` (it ended meanwhile) is left out.
fn visible_volumes(
    mut volumes: Vec<NamedVolume>,
    view: &StateView,
    authorizer: &Authorizer,
    principal: &Principal,
) -> Vec<NamedVolume> {
    let may_see = visible_task(view, authorizer, principal);
    for v in &mut volumes {
        v.tasks.retain(|t| may_see(&t.framework_id, &t.task_id));
    }
    volumes
}

/// Whether `principal` may see the running task (framework id, task id) of `view`:
/// `view_tasks` of its framework's principal.
fn visible_task<'a>(
    view: &'a StateView,
    authorizer: &'a Authorizer,
    principal: &'a Principal,
) -> impl Fn(&str, &str) -> bool + 'a {
    let principals: HashMap<(&str, &str), &str> = view
        .tasks
        .iter()
        .map(|t| {
            (
                (t.framework_id.as_str(), t.task_id.as_str()),
                t.framework_principal.as_str(),
            )
        })
        .collect();
    move |framework_id, task_id| {
        principals
            .get(&(framework_id, task_id))
            .is_some_and(|p| authorizer.permits(principal, Action::ViewTasks, p))
    }
}

#[derive(Debug, Deserialize)]
struct ReadParams {
    framework_id: String,
    task_id: String,
    /// `stdout` or `stderr`; or else `path`.
    file: Option<String>,
    /// Any regular file below the sandbox ([`SandboxPath`]); or else `file`.
    path: Option<String>,
    #[serde(default)]
    offset: u64,
    length: Option<u64>,
}

#[derive(Debug, Serialize)]
struct ReadAnswer {
    data: String,
    offset: u64,
    /// Where the next read should start.
    next_offset: u64,
    eof: bool,
    /// The file's size when read (smaller than `offset`: truncated since).
    size: u64,
    state: &'static str,
}

fn bad_request(reason: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, reason.into())
}

/// The sandbox and state of task `key`, when `principal` may access it: the task the
/// agent knows, or else a sandbox of it still on disk. 404 when there is neither, 403
/// when the ACLs refuse `access_sandboxes` on the framework's principal.
async fn task_sandbox(
    state: &HttpState,
    principal: &Principal,
    key: TaskKey,
) -> Result<(PathBuf, TaskState), ApiError> {
    let (tx, rx) = oneshot::channel();
    state
        .queries
        .send(Query::Task {
            key: key.clone(),
            reply: tx,
        })
        .await
        .map_err(|_| unavailable())?;
    let known = rx.await.map_err(|_| unavailable())?;
    let KnownTask {
        sandbox,
        state: task_state,
        framework_principal,
    } = match known {
        Some(found) => found,
        // Not in memory (e.g. from before a restart) but its sandbox is still on disk;
        // its framework's principal is not recorded there.
        None => match sandbox_on_disk(&state.work_dir, &key) {
            Some(path) => KnownTask {
                sandbox: path,
                state: TaskState::TaskUnknown,
                framework_principal: String::new(),
            },
            None => {
                return Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!(
                        "unknown task '{}' of framework '{}'",
                        key.task_id, key.framework_id
                    ),
                ));
            }
        },
    };
    state
        .authorizer
        .authorize(principal, Action::AccessSandboxes, &framework_principal)
        .map_err(|denied| ApiError(StatusCode::FORBIDDEN, denied.to_string()))?;
    Ok((sandbox, task_state))
}

/// The answer to a sandbox that could not be listed or read.
fn sandbox_error(e: SandboxError) -> ApiError {
    let status = match e {
        SandboxError::BadPath { .. } | SandboxError::NotADirectory { .. } => {
            StatusCode::BAD_REQUEST
        }
        SandboxError::NoFile { .. } | SandboxError::NoDir { .. } => StatusCode::NOT_FOUND,
        SandboxError::NotRegular { .. } | SandboxError::Refused { .. } => StatusCode::FORBIDDEN,
        SandboxError::InvalidId(_) | SandboxError::Create { .. } | SandboxError::Read { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError(status, e.to_string())
}

async fn read_file(
    State(state): State<HttpState>,
    principal: Caller,
    headers: HeaderMap,
    params: Result<QueryParams<ReadParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReadAnswer>, ApiError> {
    let principal = sandbox_reader(principal, &headers)?;
    let QueryParams(p) = params.map_err(|e| bad_request(e.body_text()))?;
    let file: SandboxPath = match (&p.file, &p.path) {
        (Some(file), None) => LogFile::parse(file)
            .ok_or_else(|| bad_request(format!("unknown file '{file}': use stdout or stderr")))?
            .into(),
        (None, Some(path)) => {
            let path = SandboxPath::parse(path).map_err(sandbox_error)?;
            if path.is_root() {
                return Err(bad_request(
                    "the path names the sandbox itself, not a file: list it with /files/browse",
                ));
            }
            path
        }
        (Some(_), Some(_)) => {
            return Err(bad_request(
                "give either file (stdout or stderr) or path (a file below the sandbox), not both",
            ));
        }
        (None, None) => {
            return Err(bad_request(
                "missing file (stdout or stderr) or path (a file below the sandbox)",
            ));
        }
    };
    let key = TaskKey {
        framework_id: p.framework_id,
        task_id: p.task_id,
    };
    let (sandbox, task_state) = task_sandbox(&state, &principal, key).await?;
    let length = p.length.unwrap_or(DEFAULT_READ_LENGTH);
    let chunk = sandbox::read(sandbox, file, p.offset, length)
        .await
        .map_err(sandbox_error)?;
    Ok(Json(ReadAnswer {
        data: chunk.data,
        offset: p.offset,
        next_offset: chunk.next_offset,
        eof: chunk.eof,
        size: chunk.size,
        state: state_name(task_state),
    }))
}

#[derive(Debug, Deserialize)]
struct BrowseParams {
    framework_id: String,
    task_id: String,
    /// The directory to list, from the sandbox; absent or empty: the sandbox.
    #[serde(default)]
    path: String,
}

#[derive(Debug, Serialize)]
struct BrowseAnswer {
    /// The listed directory, normalised (`""`: the sandbox).
    path: String,
    state: &'static str,
    entries: Vec<sandbox::Entry>,
    /// More than [`sandbox::MAX_LIST`] entries: not all are listed.
    truncated: bool,
}

async fn browse_files(
    State(state): State<HttpState>,
    principal: Caller,
    headers: HeaderMap,
    params: Result<QueryParams<BrowseParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BrowseAnswer>, ApiError> {
    let principal = sandbox_reader(principal, &headers)?;
    let QueryParams(p) = params.map_err(|e| bad_request(e.body_text()))?;
    let path = SandboxPath::parse(&p.path).map_err(sandbox_error)?;
    let key = TaskKey {
        framework_id: p.framework_id,
        task_id: p.task_id,
    };
    let (sandbox, task_state) = task_sandbox(&state, &principal, key).await?;
    let listing = sandbox::browse(sandbox, path)
        .await
        .map_err(sandbox_error)?;
    Ok(Json(BrowseAnswer {
        path: listing.path,
        state: state_name(task_state),
        entries: listing.entries,
        truncated: listing.truncated,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use strata_security::Acls;

    use super::*;
    use crate::tasks::AgentTaskView;

    fn user(name: &str) -> Option<Extension<Principal>> {
        Some(Extension(Principal::User(name.into())))
    }

    fn task_view(framework_id: &str, task_id: &str, principal: &str) -> AgentTaskView {
        AgentTaskView {
            framework_id: framework_id.into(),
            framework_principal: principal.into(),
            task_id: task_id.into(),
            name: task_id.into(),
            state: "TASK_RUNNING",
            sandbox: String::new(),
            container_id: String::new(),
            pid: None,
            pending_updates: 0,
            healthy: None,
        }
    }

    /// An agent loop that knows task `fw-web/t1` of principal `web` (its sandbox in
    /// `work_dir`) and, in `/state`, a task of `db` too.
    fn agent(work_dir: &std::path::Path) -> HttpState {
        let (queries, mut rx) = mpsc::channel(8);
        let sandbox = sandbox::sandbox_path(work_dir, "fw-web", "t1");
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::write(sandbox.join("stdout"), "hello from web\n").unwrap();
        tokio::spawn(async move {
            while let Some(q) = rx.recv().await {
                match q {
                    Query::Task { key, reply } => {
                        let known =
                            (key.framework_id == "fw-web" && key.task_id == "t1").then(|| {
                                KnownTask {
                                    sandbox: sandbox.clone(),
                                    state: TaskState::TaskRunning,
                                    framework_principal: "web".into(),
                                }
                            });
                        let _ = reply.send(known);
                    }
                    Query::State(reply) => {
                        let _ = reply.send(StateView {
                            id: "agent-1".into(),
                            hostname: "h".into(),
                            address: "h:5051".into(),
                            master: "m:5050".into(),
                            registered: true,
                            containerizer: "fake",
                            resources: strata_proto::Resources::parse("cpus:1").unwrap(),
                            attributes: Default::default(),
                            tasks: vec![task_view("fw-web", "t1", "web")],
                            completed_tasks: vec![task_view("fw-db", "t2", "db")],
                            disk: None,
                            checkpoint_error: None,
                        });
                    }
                    Query::Containers(reply) => {
                        let _ = reply.send(Vec::new());
                    }
                    Query::ReportUsage(_) => {}
                    Query::Volumes(reply) => {
                        let _ = reply.send(Vec::new());
                    }
                }
            }
        });
        HttpState {
            queries,
            work_dir: work_dir.to_path_buf(),
            containerizer: Arc::new(crate::FakeContainerizer::new(Duration::from_secs(60))),
            authorizer: Authorizer::new(Acls::secure_default()),
            proxy: None,
            docker_socket: None,
        }
    }

    fn params(
        framework_id: &str,
        task_id: &str,
    ) -> Result<QueryParams<ReadParams>, axum::extract::rejection::QueryRejection> {
        Ok(QueryParams(ReadParams {
            framework_id: framework_id.into(),
            task_id: task_id.into(),
            file: Some("stdout".into()),
            path: None,
            offset: 0,
            length: None,
        }))
    }

    fn on_behalf_of(name: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ON_BEHALF_OF, name.parse().unwrap());
        headers
    }

    /// The master relays a dashboard's reads with its own certificate, naming the
    /// caller: the ACLs are asked about the caller. Nobody else may name anyone.
    #[tokio::test]
    async fn the_master_reads_on_behalf_of_a_caller_and_nobody_else_may() {
        let dir = tempfile::tempdir().unwrap();
        let state = agent(dir.path());
        let master = || Some(Extension(Principal::Master));
        let answer = read_file(
            State(state.clone()),
            master(),
            on_behalf_of("web"),
            params("fw-web", "t1"),
        )
        .await
        .unwrap_or_else(|e| panic!("{} {}", e.0, e.1));
        assert_eq!(answer.data, "hello from web\n");
        // On behalf of someone the ACLs refuse: refused as that someone.
        let Err(ApiError(status, message)) = read_file(
            State(state.clone()),
            master(),
            on_behalf_of("intruder"),
            params("fw-web", "t1"),
        )
        .await
        else {
            panic!("the master read web's sandbox for intruder");
        };
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            message.starts_with("intruder is not authorized"),
            "{message}"
        );
        // The master on its own behalf: refused.
        let Err(ApiError(status, _)) = read_file(
            State(state.clone()),
            master(),
            HeaderMap::new(),
            params("fw-web", "t1"),
        )
        .await
        else {
            panic!("the master read a sandbox for nobody");
        };
        assert_eq!(status, StatusCode::FORBIDDEN);
        // The attacker: a user (or an agent) naming the operator gets nothing.
        for who in [
            user("intruder"),
            Some(Extension(Principal::Agent("n1".into()))),
        ] {
            let Err(ApiError(status, message)) = browse_files(
                State(state.clone()),
                who,
                on_behalf_of("admin"),
                browse_params("fw-web", "t1", ""),
            )
            .await
            else {
                panic!("a caller spoke for the admin");
            };
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert!(message.contains("only the master may"), "{message}");
        }
    }

    #[tokio::test]
    async fn sandboxes_are_read_by_their_owner_and_the_operator_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = agent(dir.path());
        // The owner and the operator read the task's stdout.
        for who in ["web", "admin"] {
            let answer = read_file(
                State(state.clone()),
                user(who),
                HeaderMap::new(),
                params("fw-web", "t1"),
            )
            .await
            .unwrap_or_else(|e| panic!("{who}: {} {}", e.0, e.1));
            assert_eq!(answer.data, "hello from web\n", "{who}");
        }
        // Another principal, and nobody, are refused with who and what.
        let Err(ApiError(status, message)) = read_file(
            State(state.clone()),
            user("intruder"),
            HeaderMap::new(),
            params("fw-web", "t1"),
        )
        .await
        else {
            panic!("intruder read web's sandbox");
        };
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            message,
            "intruder is not authorized to read sandboxes of tasks of frameworks of 'web': no rule of access_sandboxes allows it and the ACLs are not permissive"
        );
        let Err(ApiError(status, message)) = read_file(
            State(state.clone()),
            None,
            HeaderMap::new(),
            params("fw-web", "t1"),
        )
        .await
        else {
            panic!("anonymous read web's sandbox");
        };
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            message.starts_with("anonymous is not authorized"),
            "{message}"
        );
        // ACLs that allow it (refreshed from the master) apply at once.
        state.authorizer.set(
            Acls::parse(
                r#"{"permissive": false, "access_sandboxes": [
                    {"principals": {"values": ["intruder"]}, "framework_principals": {"values": ["web"]}}]}"#,
            )
            .unwrap(),
        );
        assert!(
            read_file(
                State(state.clone()),
                user("intruder"),
                HeaderMap::new(),
                params("fw-web", "t1")
            )
            .await
            .is_ok()
        );
    }

    #[tokio::test]
    async fn a_sandbox_only_on_disk_is_the_operators() {
        let dir = tempfile::tempdir().unwrap();
        let state = agent(dir.path());
        let orphan = sandbox::sandbox_path(dir.path(), "fw-old", "t9");
        std::fs::create_dir_all(&orphan).unwrap();
        std::fs::write(orphan.join("stdout"), "old\n").unwrap();
        let Err(ApiError(status, message)) = read_file(
            State(state.clone()),
            user("web"),
            HeaderMap::new(),
            params("fw-old", "t9"),
        )
        .await
        else {
            panic!("web read a sandbox of no known framework");
        };
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            message.contains("web is not authorized to read sandboxes"),
            "{message}"
        );
        let answer = read_file(
            State(state.clone()),
            user("admin"),
            HeaderMap::new(),
            params("fw-old", "t9"),
        )
        .await
        .unwrap_or_else(|e| panic!("{} {}", e.0, e.1));
        assert_eq!(answer.data, "old\n");
        // Unknown tasks stay 404 (checked before the ACLs: nothing to authorize).
        let Err(ApiError(status, _)) = read_file(
            State(state),
            user("admin"),
            HeaderMap::new(),
            params("fw-none", "t0"),
        )
        .await
        else {
            panic!("read an unknown task");
        };
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn state_lists_only_the_tasks_the_caller_may_see() {
        let dir = tempfile::tempdir().unwrap();
        let state = agent(dir.path());
        let tasks = |view: &serde_json::Value| {
            let mut ids: Vec<String> = ["tasks", "completed_tasks"]
                .iter()
                .flat_map(|k| view[k].as_array().cloned().unwrap_or_default())
                .map(|t| t["task_id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        };
        let Json(web) = get_state(State(state.clone()), user("web")).await.unwrap();
        assert_eq!(tasks(&web), ["t1"]);
        let Json(admin) = get_state(State(state.clone()), user("admin"))
            .await
            .unwrap();
        assert_eq!(tasks(&admin), ["t1", "t2"]);
        let Json(intruder) = get_state(State(state.clone()), user("intruder"))
            .await
            .unwrap();
        assert!(tasks(&intruder).is_empty());
        // The agent's own facts are anyone's.
        assert_eq!(intruder["id"], "agent-1");
        assert_eq!(intruder["resources"], admin["resources"]);
        let Json(anonymous) = get_state(State(state), None).await.unwrap();
        assert!(tasks(&anonymous).is_empty());
    }

    #[tokio::test]
    async fn statistics_list_only_the_tasks_the_caller_may_see() {
        let dir = tempfile::tempdir().unwrap();
        let state = agent(dir.path());
        let view = agent_state(&state).await.unwrap();
        let entry = |framework_id: &str, task_id: &str| crate::usage::MonitorEntry {
            framework_id: framework_id.into(),
            executor_id: task_id.into(),
            task_id: task_id.into(),
            container_id: format!("c-{task_id}"),
            statistics: Default::default(),
        };
        // t1 is web's; t2 is not among the running tasks; t3 is unknown.
        let entries = vec![
            entry("fw-web", "t1"),
            entry("fw-db", "t2"),
            entry("fw-x", "t3"),
        ];
        let seen = |who: Principal| -> Vec<String> {
            visible_entries(entries.clone(), &view, &state.authorizer, &who)
                .into_iter()
                .map(|e| e.task_id)
                .collect()
        };
        assert_eq!(seen(Principal::User("web".into())), ["t1"]);
        assert_eq!(seen(Principal::User("admin".into())), ["t1"]);
        assert!(seen(Principal::User("intruder".into())).is_empty());
        assert!(seen(Principal::Anonymous).is_empty());
    }

    #[tokio::test]
    async fn volumes_show_only_the_tasks_the_caller_may_see() {
        let dir = tempfile::tempdir().unwrap();
        let state = agent(dir.path());
        let view = agent_state(&state).await.unwrap();
        let user_of = |framework_id: &str, task_id: &str| docker::VolumeUser {
            framework_id: framework_id.into(),
            task_id: task_id.into(),
            container_path: "/data".into(),
            read_only: false,
        };
        // t1 is web's and runs; t2 (db's) has ended; t3 is unknown.
        let volumes = vec![docker::NamedVolume {
            name: "pgdata".into(),
            driver: "local".into(),
            mountpoint: "/var/lib/docker/volumes/pgdata/_data".into(),
            created_at: "2026-12-07T13:00:00Z".into(),
            created_by_agent: true,
            labels: Default::default(),
            tasks: vec![
                user_of("fw-web", "t1"),
                user_of("fw-db", "t2"),
                user_of("fw-x", "t3"),
            ],
        }];
        let seen = |who: Principal| -> Vec<String> {
            let v = visible_volumes(volumes.clone(), &view, &state.authorizer, &who);
            assert_eq!(v.len(), 1, "the volume itself is anyone's");
            v[0].tasks.iter().map(|t| t.task_id.clone()).collect()
        };
        assert_eq!(seen(Principal::User("web".into())), ["t1"]);
        assert_eq!(seen(Principal::User("admin".into())), ["t1"]);
        assert!(seen(Principal::User("intruder".into())).is_empty());
        assert!(seen(Principal::Anonymous).is_empty());
        // Without Docker there are no Docker volumes to list, and the answer says why.
        let Ok(Json(answer)) = get_volumes(State(state), user("admin")).await else {
            panic!("no answer about the volumes of an agent without Docker");
        };
        assert!(answer.volumes.is_empty());
        let why = answer.docker.unwrap_or_default();
        assert!(why.contains("no Docker containerizer"), "{why}");
    }

    fn read_params(
        framework_id: &str,
        task_id: &str,
        file: Option<&str>,
        path: Option<&str>,
    ) -> Result<QueryParams<ReadParams>, axum::extract::rejection::QueryRejection> {
        Ok(QueryParams(ReadParams {
            framework_id: framework_id.into(),
            task_id: task_id.into(),
            file: file.map(Into::into),
            path: path.map(Into::into),
            offset: 0,
            length: None,
        }))
    }

    fn browse_params(
        framework_id: &str,
        task_id: &str,
        path: &str,
    ) -> Result<QueryParams<BrowseParams>, axum::extract::rejection::QueryRejection> {
        Ok(QueryParams(BrowseParams {
            framework_id: framework_id.into(),
            task_id: task_id.into(),
            path: path.into(),
        }))
    }

    /// Web's sandbox with `logs/app.log` (0640, mtime 1,700,000,000) and `logs/old/`.
    fn with_logs(work_dir: &std::path::Path) {
        let sandbox = sandbox::sandbox_path(work_dir, "fw-web", "t1");
        std::fs::create_dir_all(sandbox.join("logs/old")).unwrap();
        let log = sandbox.join("logs/app.log");
        std::fs::write(&log, "started\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&log)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .unwrap();
    }

    #[tokio::test]
    async fn the_sandbox_is_browsed_by_its_owner_and_the_operator_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = agent(dir.path());
        with_logs(dir.path());
        for who in ["web", "admin"] {
            let Json(root) = browse_files(
                State(state.clone()),
                user(who),
                HeaderMap::new(),
                browse_params("fw-web", "t1", ""),
            )
            .await
            .unwrap_or_else(|e| panic!("{who}: {} {}", e.0, e.1));
            let names: Vec<&str> = root.entries.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, ["logs", "stdout"], "{who}");
        }
        // What the browser gets, exactly.
        let Json(logs) = browse_files(
            State(state.clone()),
            user("web"),
            HeaderMap::new(),
            browse_params("fw-web", "t1", "./logs/"),
        )
        .await
        .unwrap();
        let json = serde_json::to_value(&logs).unwrap();
        let old_mtime = json["entries"][0]["mtime"].clone();
        assert!(old_mtime.as_i64().unwrap() > 1_700_000_000);
        assert_eq!(
            json,
            serde_json::json!({
                "path": "logs",
                "state": "TASK_RUNNING",
                "entries": [
                    {"name": "old", "path": "logs/old", "kind": "dir",
                     "size": json["entries"][0]["size"], "mode": json["entries"][0]["mode"],
                     "mtime": old_mtime},
                    {"name": "app.log", "path": "logs/app.log", "kind": "file", "size": 8,
                     "mode": "-rw-r-----", "mtime": 1_700_000_000},
                ],
                "truncated": false,
            })
        );
        assert!(
            json["entries"][0]["mode"]
                .as_str()
                .unwrap()
                .starts_with('d')
        );

        let refused = |who: Option<Extension<Principal>>| {
            let state = state.clone();
            async move {
                match browse_files(
                    State(state),
                    who,
                    HeaderMap::new(),
                    browse_params("fw-web", "t1", ""),
                )
                .await
                {
                    Err(ApiError(status, message)) => (status, message),
                    Ok(_) => panic!("browsed web's sandbox"),
                }
            }
        };
        assert_eq!(
            refused(user("intruder")).await,
            (
                StatusCode::FORBIDDEN,
                "intruder is not authorized to read sandboxes of tasks of frameworks of 'web': no rule of access_sandboxes allows it and the ACLs are not permissive".into()
            )
        );
        let (status, message) = refused(None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            message.starts_with("anonymous is not authorized"),
            "{message}"
        );

        // Unknown tasks and directories: 404; bad paths and files: 400.
        let status_of = |framework_id: &'static str, path: &'static str| {
            let state = state.clone();
            async move {
                match browse_files(
                    State(state),
                    user("admin"),
                    HeaderMap::new(),
                    browse_params(framework_id, "t1", path),
                )
                .await
                {
                    Err(ApiError(status, message)) => (status, message),
                    Ok(_) => panic!("browsed {framework_id} {path}"),
                }
            }
        };
        assert_eq!(
            status_of("fw-none", "").await,
            (
                StatusCode::NOT_FOUND,
                "unknown task 't1' of framework 'fw-none'".into()
            )
        );
        assert_eq!(
            status_of("fw-web", "logs/nope").await,
            (
                StatusCode::NOT_FOUND,
                "no directory 'logs/nope' in the sandbox of the task".into()
            )
        );
        assert_eq!(
            status_of("fw-web", "../../..").await,
            (
                StatusCode::BAD_REQUEST,
                "invalid path: it has a '..' component: a path stays below the sandbox of the task"
                    .into()
            )
        );
        assert_eq!(
            status_of("fw-web", "/etc").await,
            (
                StatusCode::BAD_REQUEST,
                "invalid path: it is absolute: a path is relative to the sandbox of the task"
                    .into()
            )
        );
        assert_eq!(
            status_of("fw-web", "logs/app.log").await,
            (
                StatusCode::BAD_REQUEST,
                "'logs/app.log' in the sandbox of the task is not a directory".into()
            )
        );
    }

    #[tokio::test]
    async fn any_file_of_the_sandbox_is_read_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let state = agent(dir.path());
        with_logs(dir.path());
        let read = |who: &str, file: Option<&'static str>, path: Option<&'static str>| {
            read_file(
                State(state.clone()),
                user(who),
                HeaderMap::new(),
                read_params("fw-web", "t1", file, path),
            )
        };
        let Json(answer) = read("web", None, Some("logs/app.log")).await.unwrap();
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            serde_json::json!({"data": "started\n", "offset": 0, "next_offset": 8, "eof": true, "size": 8, "state": "TASK_RUNNING"})
        );
        // stdout by either name.
        let Json(by_path) = read("admin", None, Some("stdout")).await.unwrap();
        let Json(by_file) = read("admin", Some("stdout"), None).await.unwrap();
        assert_eq!(by_path.data, "hello from web\n");
        assert_eq!(by_file.data, by_path.data);

        let error = |r: Result<Json<ReadAnswer>, ApiError>| match r {
            Err(ApiError(status, message)) => (status, message),
            Ok(Json(a)) => panic!("read {:?}", a.data),
        };
        assert_eq!(
            error(read("web", Some("stdout"), Some("logs/app.log")).await),
            (
                StatusCode::BAD_REQUEST,
                "give either file (stdout or stderr) or path (a file below the sandbox), not both"
                    .into()
            )
        );
        assert_eq!(
            error(read("web", None, None).await),
            (
                StatusCode::BAD_REQUEST,
                "missing file (stdout or stderr) or path (a file below the sandbox)".into()
            )
        );
        assert_eq!(
            error(read("web", None, Some("./")).await).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            error(read("web", None, Some("logs/../../../../etc/shadow")).await).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            error(read("web", None, Some("logs/missing.log")).await),
            (
                StatusCode::NOT_FOUND,
                "no file 'logs/missing.log' in the sandbox of the task".into()
            )
        );
        assert_eq!(
            error(read("web", None, Some("logs/old")).await),
            (
                StatusCode::FORBIDDEN,
                "'logs/old' in the sandbox of the task is not a regular file".into()
            )
        );
        let (status, message) = error(read("intruder", None, Some("logs/app.log")).await);
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            message.starts_with("intruder is not authorized to read sandboxes"),
            "{message}"
        );
    }

    /// Serves the router on a local port, every request from `who` (as the
    /// authentication layer would say).
    async fn serve(state: HttpState, who: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(state).layer(Extension(Principal::User(who.into())));
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    async fn get(url: &str) -> (u16, serde_json::Value) {
        let resp = reqwest::get(url).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn a_task_cannot_read_the_agents_files_through_its_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let state = agent(dir.path());
        let sandbox = sandbox::sandbox_path(dir.path(), "fw-web", "t1");
        // What the task made: `evil -> /`, `sub -> /etc`, and a link deeper down.
        std::os::unix::fs::symlink("/", sandbox.join("evil")).unwrap();
        std::os::unix::fs::symlink("/etc", sandbox.join("sub")).unwrap();
        std::fs::create_dir(sandbox.join("d")).unwrap();
        std::os::unix::fs::symlink("../evil", sandbox.join("d/up")).unwrap();
        // Owner and operator alike: nobody gets through.
        for who in ["web", "admin"] {
            let base = serve(state.clone(), who).await;
            let files = format!("{base}/files");
            let q = "framework_id=fw-web&task_id=t1";
            let (status, root) = get(&format!("{files}/browse?{q}")).await;
            assert_eq!(status, 200, "{root}");
            let kinds: Vec<(&str, &str)> = root["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
                .collect();
            assert_eq!(
                kinds,
                [
                    ("d", "dir"),
                    ("evil", "symlink"),
                    ("stdout", "file"),
                    ("sub", "symlink")
                ]
            );
            for (endpoint, path, at) in [
                ("read", "evil/etc/shadow", "evil"),
                ("read", "sub/shadow", "sub"),
                ("read", "sub/passwd", "sub"),
                ("read", "d/up/etc/shadow", "d/up"),
                ("read", "evil", "evil"),
                ("browse", "evil", "evil"),
                ("browse", "evil/etc", "evil"),
                ("browse", "sub", "sub"),
                ("browse", "d/up", "d/up"),
            ] {
                let (status, body) = get(&format!("{files}/{endpoint}?{q}&path={path}")).await;
                assert_eq!(status, 403, "{who} {endpoint} {path}: {body}");
                assert_eq!(
                    body["error"],
                    format!(
                        "refusing to serve '{at}' of the task: it is a symbolic link, which the agent does not follow"
                    ),
                    "{endpoint} {path}"
                );
            }
            // Leaving the sandbox by name, escaped or not, is a bad request.
            for path in [
                "%2Fetc%2Fshadow",
                "..%2F..%2F..%2Fetc%2Fshadow",
                "../../etc/shadow",
            ] {
                for endpoint in ["read", "browse"] {
                    let (status, body) = get(&format!("{files}/{endpoint}?{q}&path={path}")).await;
                    assert_eq!(status, 400, "{endpoint} {path}: {body}");
                }
            }
            let (status, body) = get(&format!("{files}/read?{q}&path=a%00b")).await;
            assert_eq!(
                (status, &body["error"]),
                (400, &"invalid path: it contains a NUL byte".into())
            );
            // Both names of a file: 400, and says why.
            let (status, body) = get(&format!("{files}/read?{q}&file=stdout&path=stdout")).await;
            assert_eq!(status, 400);
            assert_eq!(
                body["error"],
                "give either file (stdout or stderr) or path (a file below the sandbox), not both"
            );
            // stdout as before.
            let (status, body) = get(&format!("{files}/read?{q}&file=stdout")).await;
            assert_eq!(status, 200);
            assert_eq!(body["data"], "hello from web\n");
        }
        // A caller without access_sandboxes learns nothing of it.
        let base = serve(state.clone(), "intruder").await;
        for endpoint in ["browse?", "read?path=stdout&"] {
            let (status, body) = get(&format!(
                "{base}/files/{endpoint}framework_id=fw-web&task_id=t1"
            ))
            .await;
            assert_eq!(status, 403, "{body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("intruder is not authorized to read sandboxes"),
                "{body}"
            );
        }
    }
}
