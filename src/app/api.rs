//! The App API: JSON over HTTP (`/v1/apps`, `/v1/tasks`, `/v1/deployments`,
//! `/v1/info`, `/ping`; app specs also as YAML), served by `strata serve`. See
//! docs/app-api.md.
//!
//! ```text
//!  request ─▶ authn::authenticate (401 without a valid credential; /ping is public)
//!          ─▶ users only (403 for an agent's certificate)
//!          ─▶ guard (changes only as JSON/YAML, never from a web page: CSRF)
//!          ─▶ handler ─▶ the one Authorizer, with the request's Principal:
//!               lists, /v1/info      only the apps it `permits` view_apps on
//!               reads of an app      view_apps (app id)          else 403
//!               (its versions too)
//!               or of a task         (the task's app)
//!               every change         manage_apps (app id)        else 403
//!               a deploy, also       run_tasks (spec.user), use_images (spec.image)
//!               a rollback, also     what a deploy of the version's spec asks
//! ```
//!
//! A deploy runs its tasks under the framework's own principal at the master, so the
//! App API asks for the caller what the master would ask for the framework: an App API
//! user gets no user (root) or image through the framework that the ACLs refuse them.
//! Everything is asked before the change is made: a refusal changes nothing.

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use strata_security::{Action, Authenticator, Authorizer, Denied, Principal};

use super::engine::{ApiError, Engine};
use super::records::now;
use super::service::{Answer, AppCall, CallError, FrameworkGone, FrameworkHandle};
use super::spec::{AppSpec, SpecError};
use super::view::{
    AppTaskView, AppVersionsView, AppView, DeploymentView, ErrorBody, InfoView, RollbackRequest,
    ScaleRequest,
};

/// What every handler has: the framework and the one authorizer.
#[derive(Clone)]
struct Api {
    framework: FrameworkHandle,
    authz: Authorizer,
}

type Handle = State<Api>;

/// The caller, as the authentication layer put it in the request (anonymous if no
/// layer did: allowed only by `ANY` rules).
struct Caller(Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, Infallible> {
        Ok(Caller(
            parts
                .extensions
                .get::<Principal>()
                .cloned()
                .unwrap_or(Principal::Anonymous),
        ))
    }
}

/// The paths served without a credential: the liveness check.
pub const PUBLIC: &[&str] = &["/ping"];

/// The App API, behind `authn` ([`Authenticator::insecure`] lets everyone in), with
/// the default ACLs of its mode: [`strata_security::Acls::secure_default`] behind
/// credentials, [`strata_security::Acls::insecure_default`] without. For tests;
/// `strata serve` uses [`router_with_acls`].
#[cfg(test)]
pub fn router(framework: FrameworkHandle, authn: Authenticator) -> Router {
    let authz = if authn.is_secure() {
        Authorizer::new(strata_security::Acls::secure_default())
    } else {
        Authorizer::insecure()
    };
    router_with_acls(framework, authn, authz)
}

/// The App API, behind `authn`, asking `authz` (`strata serve --acls`) about every
/// request.
pub fn router_with_acls(
    framework: FrameworkHandle,
    authn: Authenticator,
    authz: Authorizer,
) -> Router {
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
        .route("/v1/apps/{id}/versions", get(app_versions))
        .route("/v1/apps/{id}/rollback", post(rollback_app))
        .route("/v1/apps/{id}/tasks", get(app_tasks))
        .route("/v1/tasks", get(list_tasks))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/kill", post(kill_task))
        .route("/v1/deployments", get(deployments))
        // Changes come from programs, never from a web page (CSRF): see the guard.
        .route_layer(axum::middleware::from_fn(guard))
        .with_state(Api { framework, authz })
        // Layers run outside in: authentication first, for every path (unknown ones too).
        .layer(axum::middleware::from_fn(users_only))
        .layer(axum::middleware::from_fn_with_state(
            authn,
            strata_security::authn::authenticate,
        ))
}

/// Refuses agents (and the master's own certificate): a cluster certificate is an
/// identity of the cluster, but the App API and its dashboard are for people and
/// programs with a credential (or a user certificate).
pub(super) async fn users_only(request: Request, next: Next) -> Response {
    if let Some(principal @ (Principal::Agent(_) | Principal::Master)) =
        request.extensions().get::<Principal>()
    {
        let reason = "agents may not call the App API or use its dashboard";
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
            None,
        )
        .into_response();
    }
    next.run(request).await
}

/// An error answer with its status code, and the line at fault of a YAML body (the
/// answer's `line`, 1-based) when known.
pub struct Failure(StatusCode, ErrorBody, Option<usize>);

/// [`ErrorBody`] with the line of a YAML body: `{"error", "field", "line"}`.
#[derive(serde::Serialize)]
struct LocatedErrorBody {
    #[serde(flatten)]
    body: ErrorBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = LocatedErrorBody {
            body: self.1,
            line: self.2,
        };
        (self.0, Json(body)).into_response()
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        let code = match e {
            ApiError::AppNotFound(_)
            | ApiError::TaskNotFound(_)
            | ApiError::VersionNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::AppExists(_)
            | ApiError::Destroying(_)
            | ApiError::NoEarlierVersion(_)
            | ApiError::PinnedObjectGone { .. } => StatusCode::CONFLICT,
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
            None,
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
                None,
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
            None,
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
            None,
        )
    }
}

impl From<Denied> for Failure {
    fn from(e: Denied) -> Failure {
        Failure(
            StatusCode::FORBIDDEN,
            ErrorBody {
                error: e.to_string(),
                field: None,
            },
            None,
        )
    }
}

type Reply<T> = Result<Json<T>, Failure>;

/// What deploying `spec` asks of the ACLs besides `manage_apps` on its id: what the
/// master would ask of the framework's principal for its tasks (the spec's user, its
/// image, each secret it references: `use_secrets`, issue 16; configs are usable by
/// anyone; each Docker named volume: `use_docker_volumes`, issue 17). Specs have no
/// host path volumes yet; `use_host_volumes` joins here when they do.
pub fn deploy_permissions(spec: &AppSpec) -> Vec<(Action, String)> {
    let mut asks = Vec::new();
    if let Some(user) = &spec.user {
        asks.push((Action::RunTasks, user.clone()));
    }
    if let Some(image) = &spec.image {
        asks.push((Action::UseImages, image.clone()));
    }
    for secret in spec.secret_names() {
        asks.push((Action::UseSecrets, secret));
    }
    for volume in spec.docker_volume_names() {
        asks.push((Action::UseDockerVolumes, volume));
    }
    asks
}

/// Asks everything a deploy of `spec` needs (the first refusal is the answer).
fn authorize_deploy(authz: &Authorizer, caller: &Principal, spec: &AppSpec) -> Result<(), Denied> {
    authz.authorize(caller, Action::ManageApps, &spec.id)?;
    for (action, object) in deploy_permissions(spec) {
        authz.authorize(caller, action, &object)?;
    }
    Ok(())
}

/// Whether the caller may see `app` (no audit: for filtering lists).
fn visible(api: &Api, caller: &Principal, app: &str) -> bool {
    api.authz.permits(caller, Action::ViewApps, app)
}

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
        None,
    )
}

/// The content types the App API takes bodies in: JSON, and app specs in YAML too.
/// None is a type a web page may send without a CORS preflight, so the guard's CSRF
/// protection holds.
pub const ACCEPTED: &[&str] = &["application/json", "application/yaml", "application/x-yaml"];

/// The guard of every Strata API that changes something ([`strata_master::guard`]):
/// changes come from programs, never from a web page (CSRF), as JSON or YAML.
async fn guard(request: Request, next: Next) -> Response {
    let authority = request.uri().authority().map(|a| a.as_str().to_string());
    match strata_master::guard::check_at(
        request.method(),
        request.headers(),
        authority.as_deref(),
        ACCEPTED,
    ) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::warn!(method = %request.method(), path = %request.uri().path(), reason = %refusal.message, "HTTP request refused");
            Failure(
                refusal.status,
                ErrorBody {
                    error: refusal.message,
                    field: None,
                },
                None,
            )
            .into_response()
        }
    }
}

/// Whether the request's body is YAML (`Content-Type: application/yaml` or
/// `application/x-yaml`).
fn is_yaml(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .is_some_and(|t| t == "application/yaml" || t == "application/x-yaml")
}

/// The body of a create or update: YAML when its Content-Type says so, else JSON;
/// checked field by field.
fn parse_body(
    headers: &axum::http::HeaderMap,
    body: &axum::body::Bytes,
) -> Result<AppSpec, Failure> {
    if is_yaml(headers) {
        parse_yaml(body)
    } else {
        parse_spec(body)
    }
}

/// A YAML body: a refusal names the field and the line, when known.
fn parse_yaml(body: &axum::body::Bytes) -> Result<AppSpec, Failure> {
    let text = std::str::from_utf8(body).map_err(|e| {
        Failure(
            StatusCode::BAD_REQUEST,
            ErrorBody {
                error: format!("the body is not UTF-8 text: {e}"),
                field: None,
            },
            None,
        )
    })?;
    AppSpec::from_yaml(text).map_err(|e| {
        if e.syntax {
            Failure(
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    error: format!("the body is not YAML: {}", e.error.reason),
                    field: None,
                },
                e.line,
            )
        } else {
            let Failure(code, body, _) = Failure::from(e.error);
            Failure(code, body, e.line)
        }
    })
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
            None,
        )
    })?;
    Ok(AppSpec::from_json(value)?)
}

async fn info(State(api): Handle, Caller(caller): Caller) -> Reply<InfoView> {
    let master = api.framework.master.clone();
    let authz = api.authz.clone();
    // Counts of what the caller may see.
    Ok(Json(
        api.framework
            .read(move |c: &Engine, connected| {
                let see = |app: &str| authz.permits(&caller, Action::ViewApps, app);
                let apps = c.app_ids();
                let visible_apps = apps.iter().filter(|a| see(a)).count();
                let tasks = if visible_apps == apps.len() {
                    // Every app is visible (the default ACLs): so is every task.
                    c.task_count()
                } else {
                    let tasks = c.tasks(None).unwrap_or_default();
                    tasks.iter().filter(|t| see(&t.app_id)).count()
                };
                let deployments = c.deployments(now());
                InfoView {
                    framework_id: c.framework_id().map(str::to_string),
                    master,
                    connected,
                    apps: visible_apps as u32,
                    tasks: tasks as u32,
                    deployments: deployments.iter().filter(|d| see(&d.app_id)).count() as u32,
                    labels: Default::default(),
                }
            })
            .await?,
    ))
}

async fn list_apps(State(api): Handle, Caller(caller): Caller) -> Reply<Vec<AppView>> {
    let mut apps = api.framework.read(|c, _| c.apps(now())).await?;
    apps.retain(|a| visible(&api, &caller, &a.id));
    Ok(Json(apps))
}

async fn get_app(
    State(api): Handle,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Reply<AppView> {
    api.authz.authorize(&caller, Action::ViewApps, &id)?;
    let read = id.clone();
    api.framework
        .read(move |c, _| c.app_view(&read, now()))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::AppNotFound(id).into())
}

async fn create_app(
    State(api): Handle,
    Caller(caller): Caller,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<AppView>), Failure> {
    let spec = parse_body(&headers, &body)?;
    authorize_deploy(&api.authz, &caller, &spec)?;
    let view = change_app(
        &api.framework,
        AppCall::Deploy {
            spec: Box::new(spec),
            create_only: true,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn put_app(
    State(api): Handle,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Reply<AppView> {
    api.authz.authorize(&caller, Action::ManageApps, &id)?;
    let spec = parse_body(&headers, &body)?;
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
            None,
        ));
    }
    authorize_deploy(&api.authz, &caller, &spec)?;
    let call = AppCall::Deploy {
        spec: Box::new(spec),
        create_only: false,
    };
    Ok(Json(change_app(&api.framework, call).await?))
}

/// `DELETE /v1/apps/{id}?wipe=true`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    /// Destroy a resident app's volumes (their data) and release its reservations.
    #[serde(default)]
    wipe: bool,
}

async fn delete_app(
    State(api): Handle,
    Caller(caller): Caller,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Reply<AppView> {
    api.authz.authorize(&caller, Action::ManageApps, &id)?;
    Ok(Json(
        change_app(&api.framework, AppCall::Destroy { id, wipe: q.wipe }).await?,
    ))
}

async fn scale_app(
    State(api): Handle,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Reply<AppView> {
    api.authz.authorize(&caller, Action::ManageApps, &id)?;
    let read = id.clone();
    if api
        .framework
        .read(move |c, _| c.app_view(&read, now()).is_none())
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
            None,
        )
    })?;
    let call = AppCall::Scale {
        id,
        instances: req.instances,
    };
    Ok(Json(change_app(&api.framework, call).await?))
}

async fn restart_app(
    State(api): Handle,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Reply<AppView> {
    api.authz.authorize(&caller, Action::ManageApps, &id)?;
    Ok(Json(
        change_app(&api.framework, AppCall::Restart { id }).await?,
    ))
}

async fn app_versions(
    State(api): Handle,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Reply<AppVersionsView> {
    api.authz.authorize(&caller, Action::ViewApps, &id)?;
    Ok(Json(
        api.framework
            .read(move |c, _| c.app_versions(&id))
            .await??,
    ))
}

/// `POST /v1/apps/{id}/rollback` with `{"version": "V"}`, or no body (or `{}`): the
/// version before the current one. Asked like a deploy of the version's spec.
async fn rollback_app(
    State(api): Handle,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Reply<AppView> {
    api.authz.authorize(&caller, Action::ManageApps, &id)?;
    let req: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            Failure(
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    error: format!("the body must be {{\"version\": \"V\"}} or empty: {e}"),
                    field: None,
                },
                None,
            )
        })?
    };
    let read = id.clone();
    let (spec, version) = api
        .framework
        .read(move |c, _| c.rollback_target(&read, req.version.as_deref(), now()))
        .await??;
    // What the rollback deploys may name a user, an image, secrets: asked as a deploy.
    authorize_deploy(&api.authz, &caller, &spec)?;
    // The version resolved above: what was authorized is what is deployed.
    let call = AppCall::Rollback {
        id,
        version: Some(version),
    };
    Ok(Json(change_app(&api.framework, call).await?))
}

async fn app_tasks(
    State(api): Handle,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Reply<Vec<AppTaskView>> {
    api.authz.authorize(&caller, Action::ViewApps, &id)?;
    Ok(Json(
        api.framework.read(move |c, _| c.tasks(Some(&id))).await??,
    ))
}

#[derive(Deserialize)]
struct TaskQuery {
    app: Option<String>,
}

async fn list_tasks(
    State(api): Handle,
    Caller(caller): Caller,
    Query(q): Query<TaskQuery>,
) -> Reply<Vec<AppTaskView>> {
    if let Some(app) = &q.app {
        api.authz.authorize(&caller, Action::ViewApps, app)?;
    }
    let mut tasks = api
        .framework
        .read(move |c, _| c.tasks(q.app.as_deref()))
        .await??;
    tasks.retain(|t| visible(&api, &caller, &t.app_id));
    Ok(Json(tasks))
}

async fn get_task(
    State(api): Handle,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Reply<AppTaskView> {
    let task = api.framework.read(move |c, _| c.task(&id)).await??;
    api.authz
        .authorize(&caller, Action::ViewApps, &task.app_id)?;
    Ok(Json(task))
}

async fn kill_task(
    State(api): Handle,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Reply<AppTaskView> {
    let read = id.clone();
    let app = api
        .framework
        .read(move |c, _| c.task(&read).map(|t| t.app_id))
        .await??;
    api.authz.authorize(&caller, Action::ManageApps, &app)?;
    match api.framework.call(AppCall::KillTask { id }).await? {
        Answer::Task(view) => Ok(Json(*view)),
        Answer::App(_) => Err(mismatch()),
    }
}

async fn deployments(State(api): Handle, Caller(caller): Caller) -> Reply<Vec<DeploymentView>> {
    let mut deployments = api.framework.read(|c, _| c.deployments(now())).await?;
    deployments.retain(|d| visible(&api, &caller, &d.app_id));
    Ok(Json(deployments))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::Method;
    use serde_json::{Value, json};
    use strata_proto::{Resources, v1};
    use strata_security::{Acls, Credentials};

    use super::*;
    use crate::app::engine::Persisted;
    use crate::app::service::{Event, Framework};
    use crate::app::store::StateStore;

    /// The App API's callers: `ops` and `dev` are named by the docs' ACLs, `eve` is not.
    const CALLERS: [(&str, &str); 3] = [
        ("ops", "the-operators-secret-0123"),
        ("dev", "the-developers-secret-0123"),
        ("eve", "somebody-elses-secret-0123"),
    ];

    /// The ACL example of docs/app-api.md's Authorization section: the tests apply
    /// what the page shows.
    fn docs_acls() -> String {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/app-api.md"))
            .expect("docs/app-api.md");
        let section = &doc[doc
            .find("## Authorization")
            .expect("docs/app-api.md has an Authorization section")..];
        let start = section
            .find("```json\n")
            .expect("the Authorization section shows an ACL file")
            + "```json\n".len();
        let end = start + section[start..].find("```").expect("the block ends");
        section[start..end].to_string()
    }

    /// A framework without a master and its App API on 127.0.0.1, plain HTTP behind
    /// the credentials of [`CALLERS`] (or none: insecure).
    struct Server {
        base: String,
        framework: FrameworkHandle,
        stop: tokio::sync::watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    impl Server {
        async fn start(authn: Authenticator, authz: Option<Authorizer>) -> Server {
            let dir = tempfile::tempdir().unwrap();
            let store = StateStore::open(&dir.path().join("state")).unwrap();
            let (framework, handle) = Framework::new(
                Engine::default(),
                store,
                Persisted::default(),
                "127.0.0.1:5050".into(),
                Duration::from_secs(1),
            );
            let (stop, mut stopped) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(framework.run(None, async move {
                let _ = stopped.wait_for(|s| *s).await;
            }));
            let app = match authz {
                Some(authz) => router_with_acls(handle.clone(), authn, authz),
                None => router(handle.clone(), authn),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            Server {
                base,
                framework: handle,
                stop,
                task,
                _dir: dir,
            }
        }

        /// `who` calls; `None`: without a credential.
        async fn call(
            &self,
            who: Option<&str>,
            method: Method,
            path: &str,
            body: Option<Value>,
        ) -> (u16, Value) {
            let mut request =
                reqwest::Client::new().request(method, format!("{}{path}", self.base));
            if let Some(who) = who {
                let (_, secret) = CALLERS.iter().find(|(p, _)| *p == who).unwrap();
                request = request.basic_auth(who, Some(secret));
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.expect("the App API answers");
            let code = response.status().as_u16();
            let text = response.text().await.unwrap();
            (
                code,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }

        /// `who` sends `body` as it is, with `headers` (a Content-Type, an Origin).
        async fn send(
            &self,
            who: Option<&str>,
            method: Method,
            path: &str,
            headers: &[(&str, &str)],
            body: &str,
        ) -> (u16, Value) {
            let mut request = reqwest::Client::new()
                .request(method, format!("{}{path}", self.base))
                .body(body.to_string());
            if let Some(who) = who {
                let (_, secret) = CALLERS.iter().find(|(p, _)| *p == who).unwrap();
                request = request.basic_auth(who, Some(secret));
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.expect("the App API answers");
            let code = response.status().as_u16();
            let text = response.text().await.unwrap();
            (
                code,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }

        async fn get(&self, who: &str, path: &str) -> (u16, Value) {
            self.call(Some(who), Method::GET, path, None).await
        }

        async fn deploy(&self, who: &str, spec: Value) -> (u16, Value) {
            let path = format!("/v1/apps/{}", spec["id"].as_str().unwrap());
            self.call(Some(who), Method::PUT, &path, Some(spec)).await
        }

        /// The ids of the apps `who` lists.
        async fn apps(&self, who: &str) -> Vec<String> {
            let (code, apps) = self.get(who, "/v1/apps").await;
            assert_eq!(code, 200, "{who}: GET /v1/apps: {apps}");
            ids(&apps, "id")
        }

        async fn stop(self) {
            let _ = self.stop.send(true);
            self.task.await.unwrap();
        }
    }

    fn ids(list: &Value, key: &str) -> Vec<String> {
        let mut ids: Vec<String> = list
            .as_array()
            .unwrap_or_else(|| panic!("a list: {list}"))
            .iter()
            .map(|a| a[key].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    fn secure() -> Authenticator {
        let entries: Vec<Value> = CALLERS
            .iter()
            .map(|(p, s)| json!({"principal": p, "secret": s}))
            .collect();
        let credentials =
            Credentials::parse(&json!({ "credentials": entries }).to_string(), "test").unwrap();
        Authenticator::new(credentials, PUBLIC)
    }

    fn app(id: &str) -> Value {
        json!({"id": id, "cmd": "sleep 1000", "instances": 1, "cpus": 0.1})
    }

    /// A 403 whose error names every one of `names`.
    fn refused(answer: &(u16, Value), names: &[&str]) {
        assert_eq!(answer.0, 403, "{}", answer.1);
        let error = answer.1["error"].as_str().unwrap_or_default();
        for name in names {
            assert!(error.contains(name), "{name} not in {}", answer.1);
        }
    }

    /// The docs' ACLs: `ops` may change the `web*` apps and `dev` may only look. The
    /// attacker's side beside the user's: `dev` deploying, scaling, restarting,
    /// removing or killing is refused and changes nothing; `ops` cannot go past its
    /// apps, to root, or to another registry's image; `eve`, who is not named, sees
    /// nothing at all. A changed ACL file applies once reloaded (what SIGHUP does), a
    /// bad one keeps the ACLs in force.
    #[tokio::test]
    async fn the_acls_decide_who_sees_and_changes_which_app() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("acls.json");
        let acls = docs_acls();
        Acls::parse(&acls).expect("the docs' ACL example is valid");
        std::fs::write(&file, &acls).unwrap();
        let authz = Authorizer::load(Some(&file), Acls::secure_default()).unwrap();
        let server = Server::start(secure(), Some(authz.clone())).await;

        // The user: ops deploys web-1 (PUT) and web-4 (POST).
        let (code, body) = server.deploy("ops", app("web-1")).await;
        assert_eq!(code, 200, "{body}");
        let (code, body) = server
            .call(Some("ops"), Method::POST, "/v1/apps", Some(app("web-4")))
            .await;
        assert_eq!(code, 201, "{body}");

        // The attacker: dev, who may only look.
        let answer = server.deploy("dev", app("web-2")).await;
        refused(&answer, &["dev", "web-2"]);
        // As docs/app-api.md quotes it.
        assert_eq!(
            answer.1,
            json!({"error": "dev is not authorized to change app 'web-2': no rule of manage_apps allows it and the ACLs are not permissive"})
        );
        refused(
            &server
                .call(Some("dev"), Method::POST, "/v1/apps", Some(app("web-2")))
                .await,
            &["dev", "web-2"],
        );
        let (code, body) = server.get("ops", "/v1/apps/web-2").await;
        assert_eq!(code, 404, "nothing was created: {body}");
        for (method, path, body) in [
            (
                Method::POST,
                "/v1/apps/web-1/scale",
                Some(json!({"instances": 0})),
            ),
            (Method::POST, "/v1/apps/web-1/restart", None),
            (Method::DELETE, "/v1/apps/web-1", None),
            (
                Method::PUT,
                "/v1/apps/web-1",
                Some(json!({"id": "web-1", "cmd": "id", "cpus": 0.1})),
            ),
        ] {
            let answer = server.call(Some("dev"), method.clone(), path, body).await;
            refused(&answer, &["dev", "web-1"]);
        }
        let (code, web1) = server.get("dev", "/v1/apps/web-1").await;
        assert_eq!(code, 200, "dev may look: {web1}");
        assert_eq!(web1["instances"], 1, "unchanged: {web1}");
        assert_eq!(web1["spec"]["cmd"], "sleep 1000", "unchanged: {web1}");
        assert_eq!(server.apps("dev").await, ["web-1", "web-4"]);

        // ops, past what it may do: another app, root, another registry's image.
        refused(&server.deploy("ops", app("db-1")).await, &["ops", "db-1"]);
        let mut root = app("web-3");
        root["user"] = json!("root");
        refused(&server.deploy("ops", root).await, &["ops", "root"]);
        let mut image = app("web-3");
        image["image"] = json!("evil.example/miner:latest");
        refused(
            &server.deploy("ops", image).await,
            &["ops", "evil.example/miner:latest"],
        );
        assert_eq!(server.apps("ops").await, ["web-1", "web-4"], "nothing made");
        let mut image = app("web-3");
        image["image"] = json!("registry.example/web:1");
        let (code, body) = server.deploy("ops", image).await;
        assert_eq!(code, 200, "{body}");

        // A task of web-1 (an offer, as the master would send it).
        server
            .framework
            .event(Event::Subscribed("fw".into()))
            .await
            .unwrap()
            .unwrap();
        let offer = v1::Offer {
            id: "o1".into(),
            framework_id: "fw".into(),
            agent_id: "ag1".into(),
            hostname: "h1".into(),
            role: "*".into(),
            resources: Resources::parse("cpus:4;mem:4096;ports:[31000-31010]")
                .unwrap()
                .to_proto(),
            attributes: vec![],
            agent_address: "h1:5051".into(),
        };
        server
            .framework
            .event(Event::Offers(vec![offer]))
            .await
            .unwrap()
            .unwrap();
        let (code, tasks) = server.get("dev", "/v1/tasks?app=web-1").await;
        assert_eq!(code, 200, "{tasks}");
        let task = tasks[0]["id"]
            .as_str()
            .expect("web-1 has a task")
            .to_string();
        let (code, body) = server.get("dev", &format!("/v1/tasks/{task}")).await;
        assert_eq!(code, 200, "{body}");
        refused(
            &server
                .call(
                    Some("dev"),
                    Method::POST,
                    &format!("/v1/tasks/{task}/kill"),
                    None,
                )
                .await,
            &["dev", "web-1"],
        );

        // eve is not named: sees nothing, and is told so when asking for an app.
        assert!(server.apps("eve").await.is_empty());
        for path in ["/v1/tasks", "/v1/deployments"] {
            let (code, list) = server.get("eve", path).await;
            assert_eq!((code, list), (200, json!([])), "{path}");
        }
        let (code, info) = server.get("eve", "/v1/info").await;
        assert_eq!(code, 200, "{info}");
        assert_eq!(
            (info["apps"].clone(), info["tasks"].clone()),
            (json!(0), json!(0))
        );
        let (_, info) = server.get("ops", "/v1/info").await;
        assert_eq!(info["apps"], 3, "{info}");
        for path in [
            "/v1/apps/web-1".to_string(),
            "/v1/apps/web-1/tasks".to_string(),
            "/v1/tasks?app=web-1".to_string(),
            format!("/v1/tasks/{task}"),
        ] {
            refused(&server.get("eve", &path).await, &["eve", "web-1"]);
        }

        // ops kills the task (its app replaces it).
        let (code, body) = server
            .call(
                Some("ops"),
                Method::POST,
                &format!("/v1/tasks/{task}/kill"),
                None,
            )
            .await;
        assert_eq!(code, 200, "{body}");

        // The file changes: eve may look now, once reloaded.
        std::fs::write(
            &file,
            acls.replace(r#"["ops", "dev"]"#, r#"["ops", "dev", "eve"]"#),
        )
        .unwrap();
        assert!(server.apps("eve").await.is_empty(), "not before the reload");
        assert!(authz.reload().unwrap());
        assert_eq!(server.apps("eve").await, ["web-1", "web-3", "web-4"]);
        // A bad file keeps the ACLs in force.
        std::fs::write(&file, "{\"view_apps\": [").unwrap();
        assert!(authz.reload().is_err());
        assert_eq!(server.apps("eve").await, ["web-1", "web-3", "web-4"]);
        refused(&server.deploy("eve", app("web-9")).await, &["eve", "web-9"]);
        server.stop().await;
    }

    /// Without `--acls`: anyone with a credential uses the App API, but nobody gets
    /// root through the framework (secure, and `--insecure` too); a refused deploy
    /// makes nothing.
    #[tokio::test]
    async fn the_default_acls_refuse_root() {
        let server = Server::start(secure(), None).await;
        let mut root = app("web");
        root["user"] = json!("root");
        let answer = server.deploy("ops", root.clone()).await;
        // As docs/app-api.md quotes it.
        assert_eq!(
            answer,
            (
                403,
                json!({"error": "ops is not authorized to run tasks as user 'root': rule run_tasks[0] refuses it"})
            )
        );
        refused(&server.deploy("eve", root.clone()).await, &["eve", "root"]);
        assert!(server.apps("eve").await.is_empty(), "nothing made");
        let mut nobody = app("web");
        nobody["user"] = json!("nobody");
        let (code, body) = server.deploy("eve", nobody).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(server.apps("ops").await, ["web"]);
        server.stop().await;

        let server = Server::start(Authenticator::insecure(), None).await;
        let answer = server
            .call(None, Method::PUT, "/v1/apps/web", Some(root))
            .await;
        refused(&answer, &["anonymous", "root"]);
        let (code, body) = server
            .call(None, Method::PUT, "/v1/apps/web", Some(app("web")))
            .await;
        assert_eq!(code, 200, "{body}");
        server.stop().await;
    }

    /// A spec that references secrets (issue 16) also asks `use_secrets` on each one,
    /// for the caller: nobody gets a secret into a task through the framework that the
    /// ACLs do not let them use. Configs are usable by anyone.
    #[tokio::test]
    async fn a_deploy_that_references_a_secret_needs_use_secrets_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("acls.json");
        std::fs::write(
            &file,
            r#"{"permissive": false,
                "view_apps": [{"principals": {"type": "ANY"}, "apps": {"type": "ANY"}}],
                "manage_apps": [{"principals": {"type": "ANY"}, "apps": {"type": "ANY"}}],
                "use_secrets": [{"principals": {"values": ["ops"]}, "secrets": {"values": ["db-pass"]}}]}"#,
        )
        .unwrap();
        let authz = Authorizer::load(Some(&file), Acls::secure_default()).unwrap();
        let server = Server::start(secure(), Some(authz)).await;
        let with = |id: &str, objects: Value| {
            let mut spec = app(id);
            for (k, v) in objects.as_object().unwrap() {
                spec[k] = v.clone();
            }
            spec
        };

        let web = with(
            "web",
            json!({"secrets": [{"source": "db-pass"}], "configs": [{"source": "nginx-conf"}],
                   "env": {"LEVEL": {"config": "log-level"}}}),
        );
        let (code, body) = server.deploy("ops", web.clone()).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["spec"]["secrets"], json!([{"source": "db-pass"}]));
        // dev may not use db-pass: nothing is made.
        let answer = server
            .deploy(
                "dev",
                with("web-2", json!({"secrets": [{"source": "db-pass"}]})),
            )
            .await;
        refused(&answer, &["dev", "secret 'db-pass'"]);
        assert_eq!(
            answer.1["error"],
            "dev is not authorized to use secret 'db-pass': no rule of use_secrets allows it \
             and the ACLs are not permissive"
        );
        // Nor may ops use another secret, as a file or as a variable, on create or update.
        let answer = server
            .deploy(
                "ops",
                with("web-3", json!({"env": {"TOKEN": {"secret": "api-token"}}})),
            )
            .await;
        refused(&answer, &["ops", "secret 'api-token'"]);
        let mut more = web.clone();
        more["secrets"] = json!([{"source": "db-pass"}, {"source": "api-token"}]);
        let answer = server.deploy("ops", more.clone()).await;
        refused(&answer, &["ops", "secret 'api-token'"]);
        let answer = server
            .call(
                Some("ops"),
                Method::POST,
                "/v1/apps",
                Some(with("web-4", json!({"secrets": [{"source": "api-token"}]}))),
            )
            .await;
        refused(&answer, &["ops", "secret 'api-token'"]);
        assert_eq!(server.apps("ops").await, ["web"]);
        let (_, shown) = server.get("ops", "/v1/apps/web").await;
        assert_eq!(
            shown["spec"]["secrets"],
            json!([{"source": "db-pass"}]),
            "unchanged"
        );
        server.stop().await;
    }

    #[test]
    fn a_deploy_asks_for_its_user_and_image() {
        let spec = AppSpec::from_json(json!({
            "id": "web", "image": "registry.example/web:1", "user": "www", "cpus": 0.1
        }))
        .unwrap();
        assert_eq!(
            deploy_permissions(&spec),
            [
                (Action::RunTasks, "www".to_string()),
                (Action::UseImages, "registry.example/web:1".to_string())
            ]
        );
        assert!(deploy_permissions(&AppSpec::from_json(app("web")).unwrap()).is_empty());
        let mut spec = app("web");
        spec["secrets"] = json!([{"source": "tls.key"}, {"source": "db-pass", "target": "db"}]);
        spec["configs"] = json!([{"source": "nginx-conf"}]);
        spec["env"] = json!({"DB_PASS": {"secret": "db-pass"}, "LEVEL": {"config": "level"}});
        assert_eq!(
            deploy_permissions(&AppSpec::from_json(spec).unwrap()),
            [
                (Action::UseSecrets, "db-pass".to_string()),
                (Action::UseSecrets, "tls.key".to_string())
            ]
        );
        let mut spec = app("web");
        spec["image"] = json!("busybox:1");
        spec["volumes"] = json!([{"docker_volume": "web-cache", "container_path": "/cache"}]);
        assert!(
            deploy_permissions(&AppSpec::from_json(spec).unwrap())
                .contains(&(Action::UseDockerVolumes, "web-cache".to_string()))
        );
    }

    /// (version, cause, current, cmd) of each version `who` lists, newest first.
    async fn versions(server: &Server, who: &str, id: &str) -> Vec<(String, Value, bool, String)> {
        let (code, body) = server.get(who, &format!("/v1/apps/{id}/versions")).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["app_id"], id, "{body}");
        body["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["version"].as_str().unwrap().to_string(),
                    v["cause"].clone(),
                    v["current"].as_bool().unwrap(),
                    v["spec"]["cmd"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The versions of an app are read like the app (view_apps), and a rollback is
    /// asked like a deploy of the old spec (manage_apps, and its user, image,
    /// secrets): `dev` may list but not roll back, `eve` neither, `ops` rolls back
    /// but not to a version that runs as root. A refusal changes nothing.
    #[tokio::test]
    async fn versions_are_read_like_the_app_and_a_rollback_is_asked_like_a_deploy() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("acls.json");
        std::fs::write(&file, docs_acls()).unwrap();
        let authz = Authorizer::load(Some(&file), Acls::secure_default()).unwrap();
        let server = Server::start(secure(), Some(authz)).await;

        let (code, one) = server.deploy("ops", app("web-1")).await;
        assert_eq!(code, 200, "{one}");
        let v1 = one["version"].as_str().unwrap().to_string();
        // No earlier version yet: 409 with the reason.
        let answer = server
            .call(Some("ops"), Method::POST, "/v1/apps/web-1/rollback", None)
            .await;
        assert_eq!(
            answer,
            (
                409,
                json!({"error": "app \"web-1\" has no earlier version to roll back to"})
            )
        );
        let mut two = app("web-1");
        two["cmd"] = json!("sleep 2000");
        let (code, two) = server.deploy("ops", two).await;
        assert_eq!(code, 200, "{two}");
        let v2 = two["version"].as_str().unwrap().to_string();

        let listed = versions(&server, "dev", "web-1").await;
        assert_eq!(
            listed,
            [
                (v2.clone(), Value::Null, true, "sleep 2000".into()),
                (v1.clone(), Value::Null, false, "sleep 1000".into()),
            ]
        );
        let (_, body) = server.get("dev", "/v1/apps/web-1/versions").await;
        let (_, shown) = server.get("dev", "/v1/apps/web-1").await;
        assert_eq!(
            body["versions"][0]["spec"], shown["spec"],
            "as the app shows it"
        );
        refused(
            &server.get("eve", "/v1/apps/web-1/versions").await,
            &["eve", "web-1"],
        );
        let (code, body) = server.get("ops", "/v1/apps/web-9/versions").await;
        assert_eq!(
            (code, body),
            (404, json!({"error": "app \"web-9\" not found"}))
        );

        // dev may not roll back; eve neither.
        for who in ["dev", "eve"] {
            refused(
                &server
                    .call(Some(who), Method::POST, "/v1/apps/web-1/rollback", None)
                    .await,
                &[who, "web-1"],
            );
        }
        assert_eq!(
            versions(&server, "ops", "web-1").await.len(),
            2,
            "unchanged"
        );

        // ops: an unknown version is 404, a bad body 400.
        let (code, body) = server
            .call(
                Some("ops"),
                Method::POST,
                "/v1/apps/web-1/rollback",
                Some(json!({"version": "2001-01-01T00:00:00.000Z"})),
            )
            .await;
        assert_eq!(code, 404, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("no version \"2001-01-01T00:00:00.000Z\""),
            "{body}"
        );
        let (code, body) = server
            .call(
                Some("ops"),
                Method::POST,
                "/v1/apps/web-1/rollback",
                Some(json!({"to": v1})),
            )
            .await;
        assert_eq!(code, 400, "{body}");

        // ops rolls back to the version before (no body, then `{}`).
        let (code, back) = server
            .call(Some("ops"), Method::POST, "/v1/apps/web-1/rollback", None)
            .await;
        assert_eq!(code, 200, "{back}");
        assert_eq!(back["spec"]["cmd"], "sleep 1000", "{back}");
        assert_eq!(back["version_cause"], format!("rollback to {v1}"));
        assert_eq!(
            back["deployment"]["kind"], "update",
            "a rolling update: {back}"
        );
        let v3 = back["version"].as_str().unwrap().to_string();
        let (code, back) = server
            .call(
                Some("ops"),
                Method::POST,
                "/v1/apps/web-1/rollback",
                Some(json!({})),
            )
            .await;
        assert_eq!(code, 200, "{back}");
        assert_eq!(back["spec"]["cmd"], "sleep 2000", "{back}");
        let v4 = back["version"].as_str().unwrap().to_string();
        // And to a named one.
        let (code, back) = server
            .call(
                Some("ops"),
                Method::POST,
                "/v1/apps/web-1/rollback",
                Some(json!({"version": v3})),
            )
            .await;
        assert_eq!(code, 200, "{back}");
        assert_eq!(back["spec"]["cmd"], "sleep 1000", "{back}");
        let v5 = back["version"].as_str().unwrap().to_string();
        let listed: Vec<(String, Value)> = versions(&server, "ops", "web-1")
            .await
            .into_iter()
            .map(|(v, cause, _, _)| (v, cause))
            .collect();
        assert_eq!(
            listed,
            [
                (v5, json!(format!("rollback to {v3}"))),
                (v4, json!(format!("rollback to {v2}"))),
                (v3, json!(format!("rollback to {v1}"))),
                (v2, Value::Null),
                (v1, Value::Null),
            ]
        );

        // A version that runs as root (made before ops could be asked, e.g. under
        // other ACLs): ops may not roll back to it, and nothing changes.
        let mut root = AppSpec::from_json(app("web-5")).unwrap();
        root.user = Some("root".into());
        change_app(
            &server.framework,
            AppCall::Deploy {
                spec: Box::new(root),
                create_only: false,
            },
        )
        .await
        .unwrap_or_else(|f| panic!("{}", f.1.error));
        let (code, body) = server.deploy("ops", app("web-5")).await;
        assert_eq!(code, 200, "{body}");
        let answer = server
            .call(Some("ops"), Method::POST, "/v1/apps/web-5/rollback", None)
            .await;
        refused(&answer, &["ops", "root"]);
        let listed = versions(&server, "ops", "web-5").await;
        assert_eq!(listed.len(), 2, "unchanged: {listed:?}");
        let (_, shown) = server.get("ops", "/v1/apps/web-5").await;
        assert!(shown["spec"].get("user").is_none(), "unchanged: {shown}");
        server.stop().await;
    }

    const YAML: &[(&str, &str)] = &[("content-type", "application/yaml")];

    /// Specs may come as YAML (`application/yaml`, `application/x-yaml`); a refused
    /// one names its field, as JSON does, and its line. Other content types are still
    /// refused (415), and so is a page of another site (403).
    #[tokio::test]
    async fn yaml_bodies_are_taken_and_their_errors_name_the_field_and_the_line() {
        let server = Server::start(Authenticator::insecure(), None).await;
        let spec = "id: web\ncmd: sleep 10\ncpus: 0.1\n";
        let (code, body) = server
            .send(None, Method::POST, "/v1/apps", YAML, spec)
            .await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(body["spec"]["cmd"], "sleep 10");
        let (code, body) = server
            .send(
                None,
                Method::PUT,
                "/v1/apps/web",
                &[("content-type", "application/x-yaml; charset=utf-8")],
                "# the web app\nid: web\ncmd: sleep 20\ncpus: 0.1\n",
            )
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["spec"]["cmd"], "sleep 20");

        // Refused specs: the same status and field as JSON, and the line.
        let json_of = |yaml: &str| -> String {
            let value: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
            serde_json::to_string(&value).unwrap()
        };
        for (yaml, field, line) in [
            (
                "id: web\ncmd: sleep 10\ninstances: -1\ncpus: 0.1\n",
                "instances",
                3,
            ),
            ("id: web\ncmd: sleep 10\ncpus: 0.1\nbogus: 1\n", "bogus", 4),
            ("id: web\ncmd: sleep 10\n\ncpus: 0\n", "cpus", 4),
            (
                "id: web\ncmd: sleep 10\ncpus: 0.1\nports: [80]\nhealth_checks:\n  - protocol: http\n    port_index: 3\n",
                "health_checks[0].port_index",
                7,
            ),
        ] {
            let (code, body) = server
                .send(None, Method::PUT, "/v1/apps/web", YAML, yaml)
                .await;
            let (json_code, json_body) = server
                .send(
                    None,
                    Method::PUT,
                    "/v1/apps/web",
                    &[("content-type", "application/json")],
                    &json_of(yaml),
                )
                .await;
            assert_eq!(code, json_code, "{yaml}: {body} / {json_body}");
            assert_eq!(code, 422, "{yaml}: {body}");
            assert_eq!(body["field"], field, "{yaml}: {body}");
            assert_eq!(body["line"], line, "{yaml}: {body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("spec refused: {field}: ")),
                "{yaml}: {body}"
            );
            assert_eq!(json_body["field"], field, "{json_body}");
            assert!(
                json_body.get("line").is_none(),
                "JSON answers unchanged: {json_body}"
            );
        }
        // Not YAML at all: 400, with the line.
        let (code, body) = server
            .send(
                None,
                Method::POST,
                "/v1/apps",
                YAML,
                "id: web\ncmd: [sleep\n",
            )
            .await;
        assert_eq!(code, 400, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("the body is not YAML"),
            "{body}"
        );
        assert!(body["line"].as_u64().is_some(), "{body}");
        let (_, shown) = server.call(None, Method::GET, "/v1/apps/web", None).await;
        assert_eq!(shown["spec"]["cmd"], "sleep 20", "nothing changed");

        // Still refused: text/plain (a type pages send without a preflight), and a
        // page of another site even with a YAML body.
        let (code, body) = server
            .send(
                None,
                Method::POST,
                "/v1/apps",
                &[("content-type", "text/plain")],
                spec,
            )
            .await;
        assert_eq!(code, 415, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("application/yaml"),
            "{body}"
        );
        let (code, body) = server
            .send(
                None,
                Method::PUT,
                "/v1/apps/web",
                &[
                    ("content-type", "application/yaml"),
                    ("origin", "http://evil.example"),
                ],
                spec,
            )
            .await;
        assert_eq!(code, 403, "{body}");
        let (code, body) = server
            .send(
                None,
                Method::POST,
                "/v1/apps/web/rollback",
                &[("sec-fetch-site", "cross-site")],
                "",
            )
            .await;
        assert_eq!(code, 403, "{body}");
        let (_, shown) = server.call(None, Method::GET, "/v1/apps/web", None).await;
        assert_eq!(shown["spec"]["cmd"], "sleep 20", "nothing changed");
        server.stop().await;
    }

    /// The fenced block of `lang` that follows `heading` in docs/app-api.md.
    fn docs_block(heading: &str, lang: &str, nth: usize) -> String {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/app-api.md"))
            .expect("docs/app-api.md");
        let mut section = &doc[doc
            .find(heading)
            .unwrap_or_else(|| panic!("docs/app-api.md has {heading}"))..];
        let fence = format!("```{lang}\n");
        for _ in 0..nth {
            let at = section.find(&fence).expect("the block") + fence.len();
            section = &section[at..];
        }
        let start = section.find(&fence).expect("the block") + fence.len();
        let end = start + section[start..].find("```").expect("the block ends");
        section[start..end].to_string()
    }

    /// What docs/app-api.md shows of versions and YAML bodies is what the server does.
    #[tokio::test]
    async fn the_docs_examples_of_versions_and_yaml_bodies_hold() {
        let example: AppVersionsView =
            serde_json::from_str(&docs_block("### Versions and rollback", "json", 0))
                .expect("the versions example is an AppVersionsView");
        assert_eq!(example.versions.len(), 3);
        assert!(example.versions[0].current && !example.versions[1].current);

        let server = Server::start(Authenticator::insecure(), None).await;
        let yaml = docs_block("### YAML bodies", "yaml", 0);
        let answer = server
            .send(None, Method::PUT, "/v1/apps/web", YAML, &yaml)
            .await;
        let quoted: Value = serde_json::from_str(&docs_block("### YAML bodies", "json", 0))
            .expect("the quoted answer is JSON");
        assert_eq!(answer, (422, quoted));
        server.stop().await;
    }
}
