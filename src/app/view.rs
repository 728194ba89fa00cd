//! The App API's JSON bodies: what the server answers and the CLI reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::spec::AppSpec;

/// An error answer: `{"error": "...", "field": "..."}` with a 4xx/5xx status. The
/// answer to a YAML body also has `"line": N` (1-based) when the line at fault is
/// known (added by the App API, `api::Failure`: this type is read by clients, which
/// ignore it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// For a refused spec: the field at fault, e.g. `health_checks[0].port_index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `GET /v1/apps`, `GET /v1/apps/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    pub id: String,
    pub spec: AppSpec,
    /// The current version: an RFC 3339 timestamp of the change that made it.
    pub version: String,
    /// Desired instances (`spec.instances`, 0 while the app is being destroyed).
    pub instances: u32,
    /// Tasks not yet running (STAGING, STARTING).
    pub tasks_staged: u32,
    pub tasks_running: u32,
    /// Running tasks whose health checks pass (all running tasks when there are none).
    pub tasks_healthy: u32,
    pub tasks_unhealthy: u32,
    /// Running tasks of an older version (during a rolling update).
    pub tasks_old_version: u32,
    /// The deployment in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentView>,
    /// The latest task failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<TaskFailureView>,
    /// Seconds until the next launch is allowed (restart backoff), if waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_seconds: Option<f64>,
    /// The app's ports as published for discovery, in the spec's order: name,
    /// protocol and the service port assigned (issue 15).
    #[serde(default)]
    pub ports: Vec<PortView>,
    /// The app's running instances: where its service ports lead.
    #[serde(default)]
    pub endpoints: Vec<EndpointView>,
    /// The version of each config and secret the current version's tasks get, by
    /// `secret/NAME` and `config/NAME` (issue 16); 0: the latest at launch, not yet
    /// learned. Versions only, never values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, u64>,
    /// Why the framework made the current version itself, if it did: e.g. `secret
    /// db-pass version 4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_cause: Option<String>,
    /// A resident app's instances: where each keeps its data (issue 17).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub residents: Vec<ResidentView>,
}

/// One instance of a resident app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResidentView {
    /// `<app>_<n>`.
    pub instance: String,
    pub agent_id: String,
    pub hostname: String,
    /// Its volumes' persistence ids.
    pub volumes: Vec<String>,
    /// The live task running as it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Its agent is gone, its data with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
    /// What a lost instance waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One port of an app (`AppView.ports`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortView {
    /// Its index in the spec's `ports` (`$PORT0`, `$PORT1`, ...).
    pub index: usize,
    /// Its name in the tasks' discovery info (the spec's name lower-cased, else
    /// `portN`): the PORTNAME of SRV records.
    pub name: String,
    /// tcp or udp.
    pub protocol: String,
    /// The service port assigned (`ports[i].service_port`); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u16>,
}

/// One running instance of an app (`AppView.endpoints`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointView {
    pub task_id: String,
    /// The agent's hostname.
    pub host: String,
    /// Its host ports, in the spec's order: `host:ports[i]` serves `AppView.ports[i]`.
    pub ports: Vec<u16>,
    /// TASK_RUNNING, or TASK_KILLING while it is being stopped.
    pub state: String,
    /// The latest health check result; unset without health checks or before one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// In the service proxies' rotation: running, reachable, not being killed, and
    /// healthy when the app has a health check.
    pub ready: bool,
}

impl EndpointView {
    /// `host:port` of the app's port `index`, if the task has it.
    pub fn address(&self, index: usize) -> Option<String> {
        self.ports.get(index).map(|p| format!("{}:{p}", self.host))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailureView {
    pub task_id: String,
    pub state: String,
    pub message: String,
    pub timestamp: String,
}

/// `GET /v1/tasks`, `GET /v1/tasks/{id}`, `GET /v1/apps/{id}/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppTaskView {
    pub id: String,
    pub app_id: String,
    /// The app version the task was launched with.
    pub version: String,
    pub agent_id: String,
    pub hostname: String,
    /// host:port of the agent's HTTP endpoint (sandbox files: `/files/read`).
    pub agent_address: String,
    /// The Mesos-style state name, e.g. `TASK_RUNNING`.
    pub state: String,
    /// Unset when the app has no health checks or no result arrived yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    pub ports: Vec<u16>,
    /// RFC 3339.
    pub staged_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `GET /v1/deployments`, and the answer to every call that changes an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentView {
    pub id: String,
    pub app_id: String,
    /// create, update, scale, restart or destroy.
    pub kind: String,
    /// The app version being deployed.
    pub version: String,
    /// RFC 3339.
    pub started_at: String,
    /// Instances asked for, instances of the new version running (and healthy).
    pub target_instances: u32,
    pub ready_instances: u32,
    /// Why the deployment is not progressing right now, e.g.
    /// `no offer fits: needs cpus 2, largest offer has cpus 1.5`, or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub waiting: String,
    /// What started it when not the App API: e.g. `secret db-pass version 4` (a newer
    /// version of an object the app uses, issue 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfoView {
    pub framework_id: Option<String>,
    pub master: String,
    pub connected: bool,
    pub apps: u32,
    pub tasks: u32,
    pub deployments: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `GET /v1/apps/{id}/versions`: the app's versions, newest first (at most 20).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppVersionsView {
    pub app_id: String,
    pub versions: Vec<AppVersionView>,
}

/// One version of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppVersionView {
    /// An RFC 3339 timestamp of the change that made it.
    pub version: String,
    /// Why the framework made it, if it did (`secret db-pass version 4`, `rollback
    /// to V`); null for an App API change.
    pub cause: Option<String>,
    /// The version the app runs now.
    pub current: bool,
    /// The version of each config and secret its tasks are launched with, by
    /// `secret/NAME` or `config/NAME` (0: the latest at launch): what a rollback to
    /// it launches again.
    #[serde(default)]
    pub objects: BTreeMap<String, u64>,
    /// The spec of that version, as `GET /v1/apps/{id}` shows it (the current one:
    /// the app's spec now, its `instances` included).
    pub spec: AppSpec,
}

/// `POST /v1/apps/{id}/rollback` (optional): the version to go back to; without it,
/// the one before the current one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `POST /v1/apps/{id}/scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub instances: u32,
}

/// One app's live numbers, as the dashboards' feed (`GET /ui/events`, `apps` events)
/// sends them by app id: only what changes when something real does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppNumbers {
    pub running: u32,
    pub healthy: u32,
    pub desired: u32,
    pub staged: u32,
    pub version: String,
    /// The deployment in progress (`update 0/2`), or `—`.
    pub deployment: String,
    /// Why it does not progress, or empty: in a form that does not count down
    /// (`restart backoff: next launch at 18:51:24 UTC`).
    pub waiting: String,
}
