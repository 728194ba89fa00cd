//! The agent's HTTP API (axum), served on the agent's listener:
//!
//! - `GET /health` → `ok`
//! - `GET /state` → JSON [`StateView`]: id, hostname, resources, attributes, tasks.
//! - `GET /files/read?framework_id=F&task_id=T&file=stdout|stderr&offset=N&length=M` →
//!   `{"data", "offset", "next_offset", "eof", "state"}`: text of a sandbox file from
//!   `offset`, at most `length` bytes (default 64 KiB, at most 4 MiB). 404 with a
//!   reason when the task or the file is unknown; 400 for a bad request; 403 when the
//!   file is not one the agent serves: a symlink, not a regular file, a hard link
//!   (more than one link), or owned by neither the task's user nor the agent
//!   ([`crate::sandbox`] has the rules).
//! - `GET /monitor/statistics` → JSON list, one entry per running task with a cgroup:
//!   `{"framework_id", "executor_id", "task_id", "container_id", "statistics": {cpu
//!   times, memory now and peak, processes, limits}}` (Mesos' shape, [`crate::usage`]).
//!
//! Handlers ask the agent loop through a bounded channel and read files themselves,
//! so a slow reader never holds up the loop. Every request passes [`router`]'s one
//! stack, where authentication will sit later.

use std::path::PathBuf;

use axum::Json;
use axum::Router;
use axum::extract::{Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use strata_proto::state_name;
use strata_proto::v1::TaskState;
use tokio::sync::{mpsc, oneshot};

use crate::agent::{Query, StateView};
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
}

pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/state", get(get_state))
        .route("/files/read", get(read_file))
        .route("/monitor/statistics", get(monitor_statistics))
        .with_state(state)
}

/// An error answer: a status and a reason in JSON.
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

async fn get_state(State(state): State<HttpState>) -> Result<Json<StateView>, ApiError> {
    let (tx, rx) = oneshot::channel();
    state
        .queries
        .send(Query::State(tx))
        .await
        .map_err(|_| unavailable())?;
    rx.await.map(Json).map_err(|_| unavailable())
}

async fn monitor_statistics(
    State(state): State<HttpState>,
) -> Result<Json<Vec<crate::usage::MonitorEntry>>, ApiError> {
    crate::usage::collect(&state.queries, state.containerizer.as_ref())
        .await
        .map(Json)
        .ok_or_else(unavailable)
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
    params: Result<QueryParams<ReadParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReadAnswer>, ApiError> {
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
    let (sandbox, task_state) = match known {
        Some(found) => found,
        // Not in memory (e.g. from before a restart) but its sandbox is still on disk.
        None => match sandbox_on_disk(&state.work_dir, &key) {
            Some(path) => (path, TaskState::TaskUnknown),
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
