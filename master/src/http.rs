//! The HTTP endpoints, served on the gRPC port (HTTP/1.1 or h2c):
//!
//! - `GET /state`: JSON of the core's [`StateSnapshot`](crate::core::StateSnapshot).
//! - `GET /health`: `200 ok` while the driver runs, `503` once it has stopped.
//! - `GET /metrics`: Prometheus text exposition of [`Metrics`], names
//!   `strata_master_<field>`; fields ending in `_total` are counters, others gauges.
//! - `GET /weights`: `[{"role": R, "weight": W}]` for every role; `PUT /weights` with
//!   the same shape sets the roles named (kept in the registry).
//! - `POST /maintenance/deactivate`, `/maintenance/drain`, `/maintenance/reactivate`,
//!   `/maintenance/gone`
//!   with `{"agent_id": ID}` (drain also takes `"max_grace_period_seconds"`): see
//!   [`OperatorCall`]. Kept in the registry.
//!
//! Operator calls answer `200 {}` once what they changed is durable, `400` for a
//! malformed or invalid request, `404` for an unknown agent, `409` when the agent is
//! not in a state the call applies to; the body says why.
//!
//! [`router`] builds one axum router holding these and the gRPC services, with
//! [`access`] in front of every request and a fallback that answers 404 to HTTP
//! clients and `UNIMPLEMENTED` to gRPC clients.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use strata_proto::v1;

use crate::core::{CallError, ErrorCode, Metrics, OperatorCall, grace_from_secs};
use crate::driver::DriverHandle;
use crate::grpc::{AgentLinkService, MAX_MESSAGE_BYTES, OperatorService, SchedulerService};

/// The one router for the master's port: gRPC services and HTTP endpoints.
pub fn router(driver: DriverHandle) -> tonic::service::Routes {
    let http = Router::new()
        .route("/state", get(state))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/weights", get(weights).put(update_weights))
        .route("/maintenance/deactivate", post(deactivate))
        .route("/maintenance/drain", post(drain))
        .route("/maintenance/reactivate", post(reactivate))
        .route("/maintenance/gone", post(gone))
        .with_state(driver.clone());
    let mut routes = tonic::service::Routes::from(http)
        .add_service(
            v1::scheduler_server::SchedulerServer::new(SchedulerService::new(driver.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            v1::agent_link_server::AgentLinkServer::new(AgentLinkService::new(driver.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(v1::operator_server::OperatorServer::new(
            OperatorService::new(driver),
        ));
    let router = std::mem::take(routes.axum_router_mut())
        .fallback(fallback)
        .layer(axum::middleware::from_fn(access));
    *routes.axum_router_mut() = router;
    routes
}

/// The one place every request (gRPC and HTTP) passes before it is served: where
/// authentication of principals and ACLs will be checked. Lets everything through
/// for now.
pub async fn access(request: Request, next: Next) -> Response {
    next.run(request).await
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
            "no such endpoint {}: try /state, /health, /metrics, /weights or /maintenance/*\n",
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

async fn state(State(driver): State<DriverHandle>) -> Response {
    match driver.snapshot().await {
        Ok(snapshot) => axum::Json(snapshot).into_response(),
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
    State(driver): State<DriverHandle>,
    body: Result<axum::Json<Vec<RoleWeight>>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let weights = match body {
        Ok(axum::Json(w)) => w.into_iter().map(|w| (w.role, w.weight)).collect(),
        Err(e) => return bad_body(e, r#"[{"role": "web", "weight": 2}]"#),
    };
    operate(&driver, OperatorCall::UpdateWeights(weights)).await
}

async fn deactivate(State(driver): State<DriverHandle>, body: MaintenanceBody) -> Response {
    maintain(&driver, body, Action::Deactivate).await
}

async fn reactivate(State(driver): State<DriverHandle>, body: MaintenanceBody) -> Response {
    maintain(&driver, body, Action::Reactivate).await
}

async fn drain(State(driver): State<DriverHandle>, body: MaintenanceBody) -> Response {
    maintain(&driver, body, Action::Drain).await
}

async fn gone(State(driver): State<DriverHandle>, body: MaintenanceBody) -> Response {
    maintain(&driver, body, Action::Gone).await
}

type MaintenanceBody =
    Result<axum::Json<MaintenanceRequest>, axum::extract::rejection::JsonRejection>;

#[derive(Clone, Copy, PartialEq)]
enum Action {
    Deactivate,
    Drain,
    Reactivate,
    Gone,
}

/// One `/maintenance/*` call: the body checked, then the operator call.
async fn maintain(driver: &DriverHandle, body: MaintenanceBody, action: Action) -> Response {
    let drain = action == Action::Drain;
    let r = match body {
        Ok(axum::Json(r)) => r,
        Err(e) => {
            let example = if drain {
                r#"{"agent_id": "ID", "max_grace_period_seconds": 10}"#
            } else {
                r#"{"agent_id": "ID"}"#
            };
            return bad_body(e, example);
        }
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
    operate(driver, call).await
}

fn bad_body(e: axum::extract::rejection::JsonRejection, example: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        format!("{}: send JSON like {example}\n", e.body_text()),
    )
        .into_response()
}

async fn operate(driver: &DriverHandle, call: OperatorCall) -> Response {
    match driver.operator(call).await {
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
    };
    (status, format!("{e}\n")).into_response()
}

/// The Prometheus text exposition of `m`: for each field, `# HELP`, `# TYPE` and the
/// sample `strata_master_<field> <value>`.
pub fn prometheus_text(m: &Metrics) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let serde_json::Value::Object(fields) = serde_json::to_value(m).unwrap_or_default() else {
        return out;
    };
    for (field, value) in fields {
        let name = format!("strata_master_{field}");
        let kind = if field.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let value = match value {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => u8::from(b).to_string(),
            // serde_json writes NaN and infinities as null.
            _ => "NaN".to_string(),
        };
        let _ = writeln!(out, "# HELP {name} {}", help(&field));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

fn help(field: &str) -> String {
    let text = match field {
        "agents_active" => "Agents registered and connected.",
        "agents_disconnected" => "Agents whose stream closed, within their timeout.",
        "agents_unreachable" => "Agents marked unreachable.",
        "agents_gone" => "Agents an operator marked gone.",
        "frameworks_connected" => "Frameworks with an open subscription.",
        "frameworks_disconnected" => {
            "Frameworks without a subscription, within their failover timeout."
        }
        "tasks_staging" => "Tasks launched and not yet running.",
        "tasks_running" => "Tasks running.",
        "tasks_finished_total" => "Tasks that finished.",
        "tasks_failed_total" => "Tasks that failed.",
        "tasks_killed_total" => "Tasks that were killed.",
        "tasks_lost_total" => "Tasks lost.",
        "tasks_error_total" => "Tasks refused as invalid (TASK_ERROR).",
        "outstanding_offers" => "Offers sent and not yet answered.",
        "offers_sent_total" => "Offers sent to frameworks.",
        "offers_declined_total" => "Offers declined by frameworks.",
        "offers_rescinded_total" => "Offers rescinded by the master.",
        "calls_refused_total" => "Scheduler calls refused.",
        "allocation_runs_total" => "Batch allocation runs.",
        "allocation_run_ms" => {
            "Longest master tick (batch allocation and timers) in the latest allocation interval, milliseconds."
        }
        "cpus_total" => "CPUs of all active agents.",
        "cpus_used" => "CPUs used by tasks.",
        "cpus_offered" => "CPUs in outstanding offers.",
        "mem_total" => "Memory of all active agents, MiB.",
        "mem_used" => "Memory used by tasks, MiB.",
        "mem_offered" => "Memory in outstanding offers, MiB.",
        other => return format!("Strata master {}.", other.replace('_', " ")),
    };
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_has_help_type_and_value_for_every_field() {
        let m = Metrics {
            agents_active: 3,
            allocation_run_ms: 1.5,
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
        assert!(text.contains("strata_master_allocation_run_ms 1.5\n"));
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        let fields = serde_json::to_value(&m).unwrap().as_object().unwrap().len();
        assert_eq!(samples, fields);
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# HELP")).count(),
            fields
        );
    }

    #[test]
    fn nan_gauges_are_written_as_nan() {
        let m = Metrics {
            cpus_total: f64::NAN,
            ..Metrics::default()
        };
        assert!(prometheus_text(&m).contains("strata_master_cpus_total NaN\n"));
    }
}
