//! The HTTP endpoints, served on the gRPC port (HTTP/1.1 or h2c):
//!
//! - `GET /`, `/ui/*`: the dashboard ([`crate::ui`]).
//! - `GET /state`: JSON of the core's [`StateSnapshot`](crate::core::StateSnapshot).
//! - `GET /health`: `200 ok` while the driver runs, `503` once it has stopped.
//! - `GET /metrics`: Prometheus text exposition of [`Metrics`] as
//!   [`METRIC_FAMILIES`] names it: `strata_master_*`, counters (and only counters)
//!   ending in `_total`, units in seconds and bytes.
//! - `GET /weights`: `[{"role": R, "weight": W}]` for every role; `PUT /weights` with
//!   the same shape sets the roles named (kept in the registry).
//! - `POST /maintenance/deactivate`, `/maintenance/drain`, `/maintenance/reactivate`,
//!   `/maintenance/gone`
//!   with `{"agent_id": ID}` (drain also takes `"max_grace_period_seconds"`): see
//!   [`OperatorCall`]. Kept in the registry.
//!
//! - `POST /teardown` with `{"framework_id": ID}`: removes the framework and kills its
//!   tasks (Mesos' operator teardown).
//! - `POST /security/reload`: reads the credentials and ACL files again (as SIGHUP
//!   does); `GET /security/acls`: the ACLs in force.
//!
//! Every call is asked of the one authorizer ([`crate::authorize`]): operator calls
//! need their ACL (`update_weights`, `drain_agents`, ..., `teardown_frameworks`,
//! `reload_security`) and answer `403` with the reason when refused; `/state` shows
//! only the frameworks and tasks the caller may view.
//!
//! The bodies of `PUT /weights` and `POST /maintenance/*` are JSON
//! (`Content-Type: application/json`), up to axum's default limit of 2 MB. Operator calls answer `200 {}` once what they changed is durable, `400` for a
//! malformed or invalid request, `404` for an unknown agent, `409` when the agent is
//! not in a state the call applies to; the body says why.
//!
//! [`router`] builds one axum router holding these and the gRPC services, with the
//! authentication layer ([`crate::security`]) in front of every request and a fallback that answers 404 to HTTP
//! clients and `UNIMPLEMENTED` to gRPC clients.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, FromRef, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use strata_proto::limits::MAX_OPERATOR_ANSWER_BYTES;
use strata_proto::v1;

use crate::core::{CallError, ErrorCode, Metrics, OperatorCall, grace_from_secs};
use crate::driver::DriverHandle;
use crate::grpc::{AgentLinkService, MAX_MESSAGE_BYTES, OperatorService, SchedulerService};
use crate::security::MasterSecurity;
use strata_security::{Authorizer, Principal};

/// What the HTTP handlers share: the driver, the one authorizer, the dashboard's feed.
#[derive(Clone)]
struct Api {
    driver: DriverHandle,
    security: MasterSecurity,
    feed: crate::ui::OverviewFeed,
    relay: crate::ui::Relay,
}

impl FromRef<Api> for crate::ui::Relay {
    fn from_ref(api: &Api) -> crate::ui::Relay {
        api.relay.clone()
    }
}

impl FromRef<Api> for crate::ui::OverviewFeed {
    fn from_ref(api: &Api) -> crate::ui::OverviewFeed {
        api.feed.clone()
    }
}

impl FromRef<Api> for DriverHandle {
    fn from_ref(api: &Api) -> DriverHandle {
        api.driver.clone()
    }
}

impl FromRef<Api> for Authorizer {
    fn from_ref(api: &Api) -> Authorizer {
        api.security.authz.clone()
    }
}

/// The one router for the master's port: gRPC services and HTTP endpoints.
pub fn router(
    driver: DriverHandle,
    security: &MasterSecurity,
    limits: crate::rate::RateLimits,
    key: std::sync::Arc<crate::secrets::SecretsKey>,
) -> tonic::service::Routes {
    let api = Api {
        driver: driver.clone(),
        security: security.clone(),
        feed: crate::ui::OverviewFeed::default(),
        relay: crate::ui::Relay::new(&security.agent_client_tls()),
    };
    let http = Router::new()
        // The dashboard (issue 18).
        .route("/", get(crate::ui::overview))
        .route("/ui/agents", get(crate::ui::agents))
        .route("/ui/agents/rows", get(crate::ui::agent_rows))
        .route("/ui/frameworks", get(crate::ui::frameworks))
        .route("/ui/tasks", get(crate::ui::tasks))
        .route("/ui/tasks/{id}", get(crate::ui::task_page))
        .route("/ui/tasks/{id}/files/browse", get(crate::ui::task_browse))
        .route("/ui/tasks/{id}/files/read", get(crate::ui::task_read))
        .route("/ui/events", get(crate::ui::events))
        .route("/ui/app.css", get(crate::ui::css))
        .route("/ui/app.js", get(crate::ui::js))
        .route("/ui/favicon.svg", get(crate::ui::icon))
        .route("/favicon.ico", get(crate::ui::icon))
        .route("/state", get(state))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/weights", get(weights).put(update_weights))
        .route("/maintenance/deactivate", post(deactivate))
        .route("/maintenance/drain", post(drain))
        .route("/maintenance/reactivate", post(reactivate))
        .route("/maintenance/gone", post(gone))
        .route("/teardown", post(teardown))
        .route("/security/reload", post(reload))
        .route("/security/acls", get(acls))
        // Only the HTTP endpoints: gRPC (POST, application/grpc) has its own rules.
        .route_layer(axum::middleware::from_fn(crate::guard::json))
        .with_state(api)
        .merge(security.routes(driver.clone()));
    let mut routes = tonic::service::Routes::from(http)
        .add_service(
            v1::scheduler_server::SchedulerServer::new(SchedulerService::new(
                driver.clone(),
                limits,
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            v1::agent_link_server::AgentLinkServer::new(AgentLinkService::new(
                driver.clone(),
                key.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            // Answers grow with the cluster (GetState of 10,000 agents), not with a
            // request: they have a larger limit of their own, which the CLI shares.
            v1::operator_server::OperatorServer::new(OperatorService::new(
                driver,
                security.authz.clone(),
                key,
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_OPERATOR_ANSWER_BYTES),
        );
    let router = std::mem::take(routes.axum_router_mut())
        .fallback(fallback)
        // Outermost last: authenticate, then keep agents and users to their own APIs.
        .layer(axum::middleware::from_fn(crate::security::separate))
        .layer(axum::middleware::from_fn_with_state(
            security.authn.clone(),
            strata_security::authn::authenticate,
        ));
    *routes.axum_router_mut() = router;
    routes
}

async fn fallback(request: Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let status =
            tonic::Status::unimplemented(format!("no gRPC method {}", request.uri().path()));
        return status.into_http::<axum::body::Body>();
    }
    (
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint {}: try / (the dashboard), /state, /health, /metrics, /weights, /maintenance/*, /teardown or /security/*\n",
            request.uri().path()
        ),
    )
        .into_response()
}

async fn health(State(driver): State<DriverHandle>) -> Response {
    if driver.is_running() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    }
}

async fn state(
    State(driver): State<DriverHandle>,
    State(authz): State<Authorizer>,
    Extension(principal): Extension<Principal>,
) -> Response {
    match driver.snapshot().await {
        Ok(snapshot) => {
            axum::Json(crate::authorize::visible(&authz, &principal, snapshot)).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn metrics(State(driver): State<DriverHandle>) -> Response {
    match driver.metrics().await {
        Ok(m) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            prometheus_text(&m),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// One role's weight, as `/weights` reads and writes it (Mesos' shape).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleWeight {
    pub role: String,
    pub weight: f64,
}

/// The body of `/maintenance/*`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    pub agent_id: String,
    /// Drain only: the longest grace period between SIGTERM and SIGKILL.
    #[serde(default)]
    pub max_grace_period_seconds: Option<f64>,
}

async fn weights(State(driver): State<DriverHandle>) -> Response {
    match driver.snapshot().await {
        Ok(snapshot) => {
            let weights: Vec<RoleWeight> = snapshot
                .roles
                .into_iter()
                .map(|r| RoleWeight {
                    role: r.name,
                    weight: r.weight,
                })
                .collect();
            axum::Json(weights).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn update_weights(
    State(api): State<Api>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    let weights: Vec<RoleWeight> = match json_body(&body, r#"[{"role": "web", "weight": 2}]"#) {
        Ok(w) => w,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let weights = weights.into_iter().map(|w| (w.role, w.weight)).collect();
    operate(&api, &principal, OperatorCall::UpdateWeights(weights)).await
}

async fn deactivate(
    State(api): State<Api>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    maintain(&api, &principal, body, Action::Deactivate).await
}

async fn reactivate(
    State(api): State<Api>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    maintain(&api, &principal, body, Action::Reactivate).await
}

async fn drain(
    State(api): State<Api>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    maintain(&api, &principal, body, Action::Drain).await
}

async fn gone(
    State(api): State<Api>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    maintain(&api, &principal, body, Action::Gone).await
}

/// The body of `POST /teardown`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeardownRequest {
    pub framework_id: String,
}

async fn teardown(
    State(api): State<Api>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Response {
    let r: TeardownRequest = match json_body(&body, r#"{"framework_id": "ID"}"#) {
        Ok(r) => r,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let call = OperatorCall::TeardownFramework {
        framework_id: r.framework_id,
    };
    operate(&api, &principal, call).await
}

/// `POST /security/reload`: the credentials and ACL files read again, both or neither.
async fn reload(State(api): State<Api>, Extension(principal): Extension<Principal>) -> Response {
    let authz = &api.security.authz;
    if let Err(denied) = authz.authorize(
        &principal,
        strata_security::Action::ReloadSecurity,
        "credentials and acls",
    ) {
        return forbidden(&denied);
    }
    match api.security.reload() {
        Ok(reloaded) => axum::Json(serde_json::json!({ "reloaded": reloaded })).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "error": format!("nothing reloaded: {e}")
            })),
        )
            .into_response(),
    }
}

/// `GET /security/acls`: the ACLs in force (for those who may reload them).
async fn acls(
    State(authz): State<Authorizer>,
    Extension(principal): Extension<Principal>,
) -> Response {
    if let Err(denied) =
        authz.authorize(&principal, strata_security::Action::ReloadSecurity, "acls")
    {
        return forbidden(&denied);
    }
    axum::Json(serde_json::json!({
        "file": authz.path().map(|p| p.display().to_string()),
        "acls": authz.acls().to_json(),
    }))
    .into_response()
}

fn forbidden(denied: &strata_security::Denied) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({ "error": denied.to_string() })),
    )
        .into_response()
}

#[derive(Clone, Copy, PartialEq)]
enum Action {
    Deactivate,
    Drain,
    Reactivate,
    Gone,
}

/// One `/maintenance/*` call: the body checked, then the operator call.
async fn maintain(api: &Api, principal: &Principal, body: Bytes, action: Action) -> Response {
    let drain = action == Action::Drain;
    let example = if drain {
        r#"{"agent_id": "ID", "max_grace_period_seconds": 10}"#
    } else {
        r#"{"agent_id": "ID"}"#
    };
    let r: MaintenanceRequest = match json_body(&body, example) {
        Ok(r) => r,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    if !drain && r.max_grace_period_seconds.is_some() {
        return (
            StatusCode::BAD_REQUEST,
            "max_grace_period_seconds applies to /maintenance/drain only\n",
        )
            .into_response();
    }
    let agent_id = r.agent_id;
    let call = match action {
        Action::Deactivate => OperatorCall::DeactivateAgent { agent_id },
        Action::Reactivate => OperatorCall::ReactivateAgent { agent_id },
        Action::Gone => OperatorCall::MarkAgentGone { agent_id },
        Action::Drain => match grace_from_secs(r.max_grace_period_seconds) {
            Ok(max_grace_period) => OperatorCall::DrainAgent {
                agent_id,
                max_grace_period,
            },
            Err(e) => return refused(&e),
        },
    };
    operate(api, principal, call).await
}

/// The request body parsed as JSON (the guard in front, [`crate::guard::json`], has
/// already required `Content-Type: application/json` and refused cross-site requests),
/// or the text of a `400`: what is wrong, and `example`.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], example: &str) -> Result<T, String> {
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        "the request has no body".to_string()
    } else {
        match serde_json::from_slice(body) {
            Ok(value) => return Ok(value),
            Err(e) if e.is_syntax() || e.is_eof() => format!("the body is not valid JSON ({e})"),
            Err(e) => format!("the body is not what this endpoint takes ({e})"),
        }
    };
    Err(format!("{reason}: send JSON like {example}\n"))
}

/// Asks the authorizer, then the core.
async fn operate(api: &Api, principal: &Principal, call: OperatorCall) -> Response {
    let authz = &api.security.authz;
    match crate::authorize::authorize_operator(&api.driver, authz, principal, &call).await {
        Ok(Ok(())) => {}
        Ok(Err(denied)) => return forbidden(&denied),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
    match api.driver.operator(call).await {
        Ok(Ok(())) => axum::Json(serde_json::json!({})).into_response(),
        Ok(Err(e)) => refused(&e),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

fn refused(e: &CallError) -> Response {
    let status = match e.code() {
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::FailedPrecondition => StatusCode::CONFLICT,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
    };
    (status, format!("{e}\n")).into_response()
}

/// Whether a metric only ever grows (until the master restarts) or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonically increasing total; its name ends in `_total`.
    Counter,
    /// A current value; its name never ends in `_total`.
    Gauge,
}

/// How one field of [`Metrics`] is exposed: the Prometheus name is not always the
/// field's (`cpus_total` is a gauge, so it is `strata_master_cpus_capacity`; units are
/// Prometheus' base units, seconds and bytes).
#[derive(Debug)]
pub struct MetricFamily {
    /// The [`Metrics`] field it reads.
    pub field: &'static str,
    /// The full metric name.
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    /// The sample's value, in the unit `name` says.
    pub value: fn(&Metrics) -> f64,
}

const MIB: f64 = 1024.0 * 1024.0;

macro_rules! family {
    ($field:ident, $name:literal, $kind:ident, $help:literal) => {
        family!($field * 1.0, $name, $kind, $help)
    };
    ($field:ident * $scale:expr, $name:literal, $kind:ident, $help:literal) => {
        MetricFamily {
            field: stringify!($field),
            name: concat!("strata_master_", $name),
            kind: MetricKind::$kind,
            help: $help,
            // Counters stay far below 2^53, where f64 would round them.
            value: |m| m.$field as f64 * $scale,
        }
    };
}

/// Every metric of `GET /metrics`, in the order it is written. A test checks that every
/// [`Metrics`] field is here, and `promtool check metrics` checks the names and types.
pub const METRIC_FAMILIES: &[MetricFamily] = &[
    family!(
        agents_active,
        "agents_active",
        Gauge,
        "Agents registered and connected."
    ),
    family!(
        agents_disconnected,
        "agents_disconnected",
        Gauge,
        "Agents whose stream closed, within their timeout."
    ),
    family!(
        agents_unreachable,
        "agents_unreachable",
        Gauge,
        "Agents marked unreachable."
    ),
    family!(
        agents_gone,
        "agents_gone",
        Gauge,
        "Agents an operator marked gone."
    ),
    family!(
        agents_in_maintenance,
        "agents_in_maintenance",
        Gauge,
        "Agents an operator deactivated or is draining (not gone)."
    ),
    family!(
        frameworks_connected,
        "frameworks_connected",
        Gauge,
        "Frameworks with an open subscription."
    ),
    family!(
        frameworks_disconnected,
        "frameworks_disconnected",
        Gauge,
        "Frameworks without a subscription, within their failover timeout."
    ),
    family!(
        tasks_staging,
        "tasks_staging",
        Gauge,
        "Tasks launched and not yet running."
    ),
    family!(tasks_running, "tasks_running", Gauge, "Tasks running."),
    family!(
        tasks_finished_total,
        "tasks_finished_total",
        Counter,
        "Tasks that finished."
    ),
    family!(
        tasks_failed_total,
        "tasks_failed_total",
        Counter,
        "Tasks that failed."
    ),
    family!(
        tasks_killed_total,
        "tasks_killed_total",
        Counter,
        "Tasks that were killed."
    ),
    family!(tasks_lost_total, "tasks_lost_total", Counter, "Tasks lost."),
    family!(
        tasks_error_total,
        "tasks_error_total",
        Counter,
        "Tasks refused as invalid (TASK_ERROR)."
    ),
    family!(
        outstanding_offers,
        "outstanding_offers",
        Gauge,
        "Offers sent and not yet answered."
    ),
    family!(
        offers_sent_total,
        "offers_sent_total",
        Counter,
        "Offers sent to frameworks."
    ),
    family!(
        offers_declined_total,
        "offers_declined_total",
        Counter,
        "Offers declined by frameworks."
    ),
    family!(
        offers_rescinded_total,
        "offers_rescinded_total",
        Counter,
        "Offers rescinded by the master."
    ),
    family!(
        calls_refused_total,
        "calls_refused_total",
        Counter,
        "Scheduler calls refused."
    ),
    family!(
        allocation_runs_total,
        "allocation_runs_total",
        Counter,
        "Batch allocation runs."
    ),
    family!(secrets, "secrets", Gauge, "Secrets kept (issue 16)."),
    family!(configs, "configs", Gauge, "Configs kept (issue 16)."),
    family!(
        objects_stored_bytes,
        "objects_stored_bytes",
        Gauge,
        "Bytes of the kept versions of configs and secrets (secrets sealed)."
    ),
    family!(
        object_fetches_total,
        "object_fetches_total",
        Counter,
        "Agents' fetches of the configs and secrets of a task launched on them."
    ),
    family!(
        object_fetches_refused_total,
        "object_fetches_refused_total",
        Counter,
        "Fetches of configs and secrets refused (not the caller's task, or removed)."
    ),
    family!(
        allocation_run_ms * 1e-3,
        "allocation_run_seconds",
        Gauge,
        "Longest master tick (batch allocation and timers) in the latest allocation interval, seconds."
    ),
    family!(
        cpus_total,
        "cpus_capacity",
        Gauge,
        "CPUs of active agents and of disconnected ones within their timeout."
    ),
    family!(cpus_used, "cpus_used", Gauge, "CPUs used by tasks."),
    family!(
        cpus_offered,
        "cpus_offered",
        Gauge,
        "CPUs in outstanding offers."
    ),
    family!(
        mem_total * MIB,
        "mem_capacity_bytes",
        Gauge,
        "Memory of active agents and of disconnected ones within their timeout, bytes."
    ),
    family!(
        mem_used * MIB,
        "mem_used_bytes",
        Gauge,
        "Memory used by tasks, bytes."
    ),
    family!(
        mem_offered * MIB,
        "mem_offered_bytes",
        Gauge,
        "Memory in outstanding offers, bytes."
    ),
    family!(
        disk_total * MIB,
        "disk_capacity_bytes",
        Gauge,
        "Disk of active agents and of disconnected ones within their timeout, bytes."
    ),
    family!(
        disk_used * MIB,
        "disk_used_bytes",
        Gauge,
        "Disk used by tasks (their disk resources and volumes), bytes."
    ),
    family!(
        reserved_cpus,
        "reserved_cpus",
        Gauge,
        "CPUs dynamically reserved for roles (RESERVE), on agents not gone."
    ),
    family!(
        reserved_mem * MIB,
        "reserved_mem_bytes",
        Gauge,
        "Memory dynamically reserved for roles, bytes."
    ),
    family!(
        reserved_disk * MIB,
        "reserved_disk_bytes",
        Gauge,
        "Disk dynamically reserved for roles (persistent volumes included), bytes."
    ),
    family!(volumes, "volumes", Gauge, "Persistent volumes (CREATE)."),
    family!(
        volumes_disk * MIB,
        "volumes_disk_bytes",
        Gauge,
        "Disk of persistent volumes, bytes."
    ),
];

/// The Prometheus text exposition of `m`: for each of [`METRIC_FAMILIES`], `# HELP`,
/// `# TYPE` and the sample.
pub fn prometheus_text(m: &Metrics) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for f in METRIC_FAMILIES {
        let kind = match f.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        let _ = writeln!(out, "{} {}", f.name, sample_value((f.value)(m)));
    }
    out
}

/// A sample value as Prometheus' text format spells it (`NaN`, `+Inf`, `-Inf`).
fn sample_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_has_help_type_and_value_for_every_field() {
        let m = Metrics {
            agents_active: 3,
            allocation_run_ms: 1.5,
            mem_total: 2.0,
            ..Metrics::default()
        };
        let text = prometheus_text(&m);
        assert!(
            text.contains("# HELP strata_master_agents_active Agents registered and connected.\n")
        );
        assert!(
            text.contains(
                "# TYPE strata_master_agents_active gauge\nstrata_master_agents_active 3\n"
            )
        );
        assert!(text.contains("# TYPE strata_master_offers_sent_total counter\n"));
        assert!(text.contains("strata_master_allocation_run_seconds 0.0015\n"));
        assert!(text.contains("# TYPE strata_master_cpus_capacity gauge\n"));
        assert!(text.contains("strata_master_mem_capacity_bytes 2097152\n"));
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        let fields = serde_json::to_value(&m).unwrap().as_object().unwrap().len();
        assert_eq!(samples, fields);
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# HELP")).count(),
            fields
        );
    }

    #[test]
    fn every_metrics_field_is_exposed_once_and_only_counters_end_in_total() {
        let fields: Vec<String> = serde_json::to_value(Metrics::default())
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut exposed: Vec<&str> = METRIC_FAMILIES.iter().map(|f| f.field).collect();
        exposed.sort_unstable();
        let mut sorted = fields.clone();
        sorted.sort_unstable();
        assert_eq!(
            exposed, sorted,
            "a Metrics field without a METRIC_FAMILIES entry"
        );
        for f in METRIC_FAMILIES {
            assert_eq!(
                f.name.ends_with("_total"),
                f.kind == MetricKind::Counter,
                "{}: counters and only counters end in _total",
                f.name
            );
        }
    }

    #[test]
    fn nan_and_infinite_gauges_are_written_as_prometheus_spells_them() {
        let m = Metrics {
            cpus_total: f64::NAN,
            mem_used: f64::INFINITY,
            ..Metrics::default()
        };
        let text = prometheus_text(&m);
        assert!(text.contains("strata_master_cpus_capacity NaN\n"), "{text}");
        assert!(
            text.contains("strata_master_mem_used_bytes +Inf\n"),
            "{text}"
        );
    }
}
