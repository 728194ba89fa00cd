//! The App API: JSON over HTTP (`/v1/apps`, `/v1/tasks`, `/v1/deployments`,
//! `/v1/info`, `/ping`), served by `strata serve`. See docs/app-api.md.
//!
//! ```text
//!  request ─▶ authn::authenticate (401 without a valid credential; /ping is public)
//!          ─▶ users only (403 for an agent's certificate)
//!          ─▶ guard::json (changes only as JSON/YAML, never from a web page: CSRF)
//!          ─▶ handler
//! ```

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use strata_security::{Authenticator, Principal};

use super::engine::{ApiError, Engine};
use super::records::now;
use super::service::{Answer, AppCall, CallError, FrameworkGone, FrameworkHandle};
use super::spec::{AppSpec, SpecError};
use super::view::{AppTaskView, AppView, DeploymentView, ErrorBody, InfoView, ScaleRequest};

type Handle = State<FrameworkHandle>;

/// The paths served without a credential: the liveness check.
pub const PUBLIC: &[&str] = &["/ping"];

/// The App API, behind `authn` ([`Authenticator::insecure`] lets everyone in).
pub fn router(framework: FrameworkHandle, authn: Authenticator) -> Router {
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
        // Changes come from programs, never from a web page (CSRF): see the guard.
        .route_layer(axum::middleware::from_fn(strata_master::guard::json))
        .with_state(framework)
        // Layers run outside in: authentication first, for every path (unknown ones too).
        .layer(axum::middleware::from_fn(users_only))
        .layer(axum::middleware::from_fn_with_state(
            authn,
            strata_security::authn::authenticate,
        ))
}

/// Refuses agents: an agent's certificate is an identity of the cluster, but the App
/// API is for people and programs with a credential (or a user certificate).
async fn users_only(request: Request, next: Next) -> Response {
    if let Some(principal @ Principal::Agent(_)) = request.extensions().get::<Principal>() {
        let reason = "agents may not call the App API";
        strata_security::authn::audit_refused(
            principal,
            request.method().as_str(),
            request.uri().path(),
            reason,
        );
        return Failure(
            StatusCode::FORBIDDEN,
            ErrorBody {
                error: reason.into(),
                field: None,
            },
        )
        .into_response();
    }
    next.run(request).await
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

impl From<CallError> for Failure {
    fn from(e: CallError) -> Failure {
        match e {
            CallError::Refused(e) => e.into(),
            // The store cannot be written (a full disk): the framework is up and
            // answers reads, but cannot take changes for now.
            CallError::NotRecorded(_) => Failure(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorBody {
                    error: e.to_string(),
                    field: None,
                },
            ),
            CallError::Gone(gone) => gone.into(),
        }
    }
}

impl From<FrameworkGone> for Failure {
    fn from(e: FrameworkGone) -> Failure {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorBody {
                error: e.to_string(),
                field: None,
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

/// Runs a change of an app; answered once it is durable (the actions it leads to are
/// carried out afterwards: the answer does not wait for the master).
async fn change_app(framework: &FrameworkHandle, call: AppCall) -> Result<AppView, Failure> {
    match framework.call(call).await? {
        Answer::App(view) => Ok(*view),
        Answer::Task(_) => Err(mismatch()),
    }
}

/// A call answered with the wrong kind of view: a bug, reported rather than panicked.
fn mismatch() -> Failure {
    Failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorBody {
            error: "internal error: the framework answered with the wrong kind of view".into(),
            field: None,
        },
    )
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

async fn info(State(f): Handle) -> Reply<InfoView> {
    let master = f.master.clone();
    Ok(Json(
        f.read(move |c: &Engine, connected| InfoView {
            framework_id: c.framework_id().map(str::to_string),
            master,
            connected,
            apps: c.app_ids().len() as u32,
            tasks: c.task_count() as u32,
            deployments: c.deployments(now()).len() as u32,
            labels: Default::default(),
        })
        .await?,
    ))
}

async fn list_apps(State(f): Handle) -> Reply<Vec<AppView>> {
    Ok(Json(f.read(|c, _| c.apps(now())).await?))
}

async fn get_app(State(f): Handle, Path(id): Path<String>) -> Reply<AppView> {
    let read = id.clone();
    f.read(move |c, _| c.app_view(&read, now()))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::AppNotFound(id).into())
}

async fn create_app(
    State(f): Handle,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<AppView>), Failure> {
    let spec = parse_spec(&body)?;
    let view = change_app(
        &f,
        AppCall::Deploy {
            spec: Box::new(spec),
            create_only: true,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn put_app(
    State(f): Handle,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Reply<AppView> {
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
    let call = AppCall::Deploy {
        spec: Box::new(spec),
        create_only: false,
    };
    Ok(Json(change_app(&f, call).await?))
}

async fn delete_app(State(f): Handle, Path(id): Path<String>) -> Reply<AppView> {
    Ok(Json(change_app(&f, AppCall::Destroy { id }).await?))
}

async fn scale_app(
    State(f): Handle,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Reply<AppView> {
    let read = id.clone();
    if f.read(move |c, _| c.app_view(&read, now()).is_none())
        .await?
    {
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
    let call = AppCall::Scale {
        id,
        instances: req.instances,
    };
    Ok(Json(change_app(&f, call).await?))
}

async fn restart_app(State(f): Handle, Path(id): Path<String>) -> Reply<AppView> {
    Ok(Json(change_app(&f, AppCall::Restart { id }).await?))
}

async fn app_tasks(State(f): Handle, Path(id): Path<String>) -> Reply<Vec<AppTaskView>> {
    Ok(Json(f.read(move |c, _| c.tasks(Some(&id))).await??))
}

#[derive(Deserialize)]
struct TaskQuery {
    app: Option<String>,
}

async fn list_tasks(State(f): Handle, Query(q): Query<TaskQuery>) -> Reply<Vec<AppTaskView>> {
    Ok(Json(f.read(move |c, _| c.tasks(q.app.as_deref())).await??))
}

async fn get_task(State(f): Handle, Path(id): Path<String>) -> Reply<AppTaskView> {
    Ok(Json(f.read(move |c, _| c.task(&id)).await??))
}

async fn kill_task(State(f): Handle, Path(id): Path<String>) -> Reply<AppTaskView> {
    match f.call(AppCall::KillTask { id }).await? {
        Answer::Task(view) => Ok(Json(*view)),
        Answer::App(_) => Err(mismatch()),
    }
}

async fn deployments(State(f): Handle) -> Reply<Vec<DeploymentView>> {
    Ok(Json(f.read(|c, _| c.deployments(now())).await?))
}
