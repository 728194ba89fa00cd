//! The App API: JSON over HTTP (`/v1/apps`, `/v1/tasks`, `/v1/deployments`,
//! `/v1/info`, `/ping`), served by `strata serve`. See docs/app-api.md.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::core::{Action, ApiError, Core};
use super::records::now;
use super::service::Service;
use super::spec::{AppSpec, SpecError};
use super::view::{ErrorBody, InfoView, ScaleRequest};

pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route("/v1/info", get(info))
        .route("/v1/apps", get(list_apps).post(create_app))
        .route(
            "/v1/apps/{id}",
            get(get_app).put(put_app).delete(delete_app),
        )
        .route("/v1/apps/{id}/scale", post(scale_app))
        .route("/v1/apps/{id}/restart", post(restart_app))
        .route("/v1/apps/{id}/tasks", get(app_tasks))
        .route("/v1/tasks", get(list_tasks))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/kill", post(kill_task))
        .route("/v1/deployments", get(deployments))
        .with_state(service)
}

/// An error answer with its status code.
pub struct Failure(StatusCode, ErrorBody);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        let code = match e {
            ApiError::AppNotFound(_) | ApiError::TaskNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::AppExists(_) | ApiError::Destroying(_) => StatusCode::CONFLICT,
            ApiError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let field = match &e {
            ApiError::Refused(s) => Some(s.field.clone()),
            _ => None,
        };
        Failure(
            code,
            ErrorBody {
                error: e.to_string(),
                field,
            },
        )
    }
}

impl From<SpecError> for Failure {
    fn from(e: SpecError) -> Failure {
        Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorBody {
                error: format!("spec refused: {e}"),
                field: Some(e.field),
            },
        )
    }
}

type Reply<T> = Result<Json<T>, Failure>;

/// Runs a changing call on the core, persists, and answers; the actions are carried
/// out in order by the executor (the answer does not wait for the master).
async fn change<T: serde::Serialize>(
    service: &Arc<Service>,
    f: impl FnOnce(&mut Core, f64) -> Result<(T, Vec<Action>), ApiError>,
) -> Result<T, Failure> {
    let now = now();
    let value = service.step(|c| match f(c, now) {
        Ok((v, actions)) => (Ok(v), actions),
        Err(e) => (Err(e), Vec::new()),
    })?;
    Ok(value)
}

/// The body of a create or update: JSON, checked field by field.
fn parse_spec(body: &axum::body::Bytes) -> Result<AppSpec, Failure> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            ErrorBody {
                error: format!("the body is not JSON: {e}"),
                field: None,
            },
        )
    })?;
    Ok(AppSpec::from_json(value)?)
}

async fn info(State(s): State<Arc<Service>>) -> Json<InfoView> {
    let connected = s.connected();
    Json(s.read(|c| InfoView {
        framework_id: c.framework_id().map(str::to_string),
        master: s.master.clone(),
        connected,
        apps: c.app_ids().len() as u32,
        tasks: c.task_count() as u32,
        deployments: c.deployments(now()).len() as u32,
        labels: Default::default(),
    }))
}

async fn list_apps(State(s): State<Arc<Service>>) -> Json<Vec<super::view::AppView>> {
    Json(s.read(|c| c.apps(now())))
}

async fn get_app(
    State(s): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Reply<super::view::AppView> {
    s.read(|c| c.app_view(&id, now()))
        .map(Json)
        .ok_or_else(|| ApiError::AppNotFound(id).into())
}

async fn create_app(
    State(s): State<Arc<Service>>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<super::view::AppView>), Failure> {
    let spec = parse_spec(&body)?;
    let view = change(&s, |c, now| c.deploy(spec, true, now)).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn put_app(
    State(s): State<Arc<Service>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Reply<super::view::AppView> {
    let spec = parse_spec(&body)?;
    if spec.id != id {
        return Err(Failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorBody {
                error: format!(
                    "spec refused: id: the body names app \"{}\" but the path names \"{id}\"",
                    spec.id
                ),
                field: Some("id".into()),
            },
        ));
    }
    Ok(Json(change(&s, |c, now| c.deploy(spec, false, now)).await?))
}

async fn delete_app(
    State(s): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Reply<super::view::AppView> {
    Ok(Json(change(&s, |c, now| c.destroy(&id, now)).await?))
}

async fn scale_app(
    State(s): State<Arc<Service>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Reply<super::view::AppView> {
    if s.read(|c| c.app_view(&id, now()).is_none()) {
        return Err(ApiError::AppNotFound(id).into());
    }
    let req: ScaleRequest = serde_json::from_slice(&body).map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            ErrorBody {
                error: format!("the body must be {{\"instances\": N}}: {e}"),
                field: Some("instances".into()),
            },
        )
    })?;
    Ok(Json(
        change(&s, |c, now| c.scale(&id, req.instances, now)).await?,
    ))
}

async fn restart_app(
    State(s): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Reply<super::view::AppView> {
    Ok(Json(change(&s, |c, now| c.restart(&id, now)).await?))
}

async fn app_tasks(
    State(s): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Reply<Vec<super::view::TaskView>> {
    Ok(Json(s.read(|c| c.tasks(Some(&id)))?))
}

#[derive(Deserialize)]
struct TaskQuery {
    app: Option<String>,
}

async fn list_tasks(
    State(s): State<Arc<Service>>,
    Query(q): Query<TaskQuery>,
) -> Reply<Vec<super::view::TaskView>> {
    Ok(Json(s.read(|c| c.tasks(q.app.as_deref()))?))
}

async fn get_task(
    State(s): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Reply<super::view::TaskView> {
    Ok(Json(s.read(|c| c.task(&id))?))
}

async fn kill_task(
    State(s): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Reply<super::view::TaskView> {
    Ok(Json(change(&s, |c, now| c.kill_task(&id, now)).await?))
}

async fn deployments(State(s): State<Arc<Service>>) -> Json<Vec<super::view::DeploymentView>> {
    Json(s.read(|c| c.deployments(now())))
}
