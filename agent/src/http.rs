//! The agent's HTTP API (axum), served on the agent's listener:
//!
//! - `GET /health` → `ok`
//! - `GET /state` → JSON [`StateView`]: id, hostname, resources, attributes, tasks.
//!   The agent's own facts are anyone's (who is authenticated); `tasks` and
//!   `completed_tasks` list only the tasks of frameworks the caller may see
//!   (`view_tasks`, object: the framework's principal).
//! - `GET /files/read?framework_id=F&task_id=T&file=stdout|stderr&offset=N&length=M` →
//!   `{"data", "offset", "next_offset", "eof", "state"}`: text of a sandbox file from
//!   `offset`, at most `length` bytes (default 64 KiB, at most 4 MiB). 404 with a
//!   reason when the task or the file is unknown; 400 for a bad request; 403
//!   `{"error": "<who> is not authorized to read sandboxes of ..."}` when the ACLs
//!   refuse the caller `access_sandboxes` on the task's framework's principal (a
//!   sandbox only on disk, of a task the agent no longer knows, has no principal
//!   recorded: the object is `""`, which only a rule for any framework allows); 403
//!   also when the file is not one the agent serves: a symlink, not a regular file, a
//!   hard link (more than one link), or owned by neither the task's user nor the agent
//!   ([`crate::sandbox`] has the rules).
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
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use strata_proto::state_name;
use strata_proto::v1::TaskState;
use strata_security::{Action, Authorizer, Principal};
use tokio::sync::{mpsc, oneshot};

use crate::agent::{KnownTask, Query, StateView};
use crate::containerizer::docker::{self, NamedVolume};
use crate::sandbox::{self, LogFile, SandboxError};
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
    file: String,
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
    state: &'static str,
}

async fn read_file(
    State(state): State<HttpState>,
    principal: Caller,
    params: Result<QueryParams<ReadParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReadAnswer>, ApiError> {
    let principal = caller(principal);
    let QueryParams(p) = params.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let file = LogFile::parse(&p.file).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("unknown file '{}': use stdout or stderr", p.file),
        )
    })?;
    let key = TaskKey {
        framework_id: p.framework_id,
        task_id: p.task_id,
    };
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
        .authorize(&principal, Action::AccessSandboxes, &framework_principal)
        .map_err(|denied| ApiError(StatusCode::FORBIDDEN, denied.to_string()))?;
    let length = p.length.unwrap_or(DEFAULT_READ_LENGTH);
    match sandbox::read(sandbox, file, p.offset, length).await {
        Ok(chunk) => Ok(Json(ReadAnswer {
            data: chunk.data,
            offset: p.offset,
            next_offset: chunk.next_offset,
            eof: chunk.eof,
            state: state_name(task_state),
        })),
        Err(e @ SandboxError::NoFile { .. }) => Err(ApiError(StatusCode::NOT_FOUND, e.to_string())),
        Err(e @ (SandboxError::NotRegular { .. } | SandboxError::Refused { .. })) => {
            Err(ApiError(StatusCode::FORBIDDEN, e.to_string()))
        }
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
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
            file: "stdout".into(),
            offset: 0,
            length: None,
        }))
    }

    #[tokio::test]
    async fn sandboxes_are_read_by_their_owner_and_the_operator_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = agent(dir.path());
        // The owner and the operator read the task's stdout.
        for who in ["web", "admin"] {
            let answer = read_file(State(state.clone()), user(who), params("fw-web", "t1"))
                .await
                .unwrap_or_else(|e| panic!("{who}: {} {}", e.0, e.1));
            assert_eq!(answer.data, "hello from web\n", "{who}");
        }
        // Another principal, and nobody, are refused with who and what.
        let Err(ApiError(status, message)) = read_file(
            State(state.clone()),
            user("intruder"),
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
        let Err(ApiError(status, message)) =
            read_file(State(state.clone()), None, params("fw-web", "t1")).await
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
        let Err(ApiError(status, message)) =
            read_file(State(state.clone()), user("web"), params("fw-old", "t9")).await
        else {
            panic!("web read a sandbox of no known framework");
        };
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            message.contains("web is not authorized to read sandboxes"),
            "{message}"
        );
        let answer = read_file(State(state.clone()), user("admin"), params("fw-old", "t9"))
            .await
            .unwrap_or_else(|e| panic!("{} {}", e.0, e.1));
        assert_eq!(answer.data, "old\n");
        // Unknown tasks stay 404 (checked before the ACLs: nothing to authorize).
        let Err(ApiError(status, _)) =
            read_file(State(state), user("admin"), params("fw-none", "t0")).await
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
}
